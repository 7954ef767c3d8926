//! `haconn apply`: send the spec to the daemon as a reload and print its summary.

use super::{Outcome, OutputArg, SocketArg, client_error, print_json, read_input};
use crate::daemon::client::request;
use crate::daemon::protocol::{ReloadReply, RemoteDiagnostic, Request, VERSION};
use crate::spec::diag::Diagnostic;
use crate::spec::{CheckOptions, check_bytes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec to apply.
    #[arg(long, env = "HACONN_SPEC", default_value = "/etc/haconn/cluster.yaml")]
    pub spec: String,
    /// Print the plan the daemon would execute against its live state, and change nothing
    /// (exit 1 when that reload would fail).
    #[arg(long)]
    pub dry_run: bool,
    /// Apply even though FILE is not the spec file the daemon watches (its watcher will
    /// apply that file again at its next change, undoing this reload).
    #[arg(long)]
    pub force: bool,
    /// Print nothing when the reload completes (or, with --dry-run, would complete); when
    /// it fails, only the summary that says which object failed and why. Errors still
    /// print. No effect with `--output json`.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: OutputArg,
}

pub fn run(args: &Args) -> Outcome {
    let json = args.output.is_json();
    let bytes = match read_input(&args.spec) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!("{}: cannot read: {e}", args.spec);
            if json {
                super::print_error(true, "apply", "io", &msg);
            } else {
                errln!("{}: error[io]: cannot read: {e}", args.spec);
            }
            return Outcome::Trouble;
        }
    };
    // Check locally first: a broken file never reaches the daemon.
    let checked = check_bytes(&bytes, CheckOptions::default());
    if checked.spec.is_none() {
        if json {
            print_json(&ReloadReply {
                valid: false,
                diagnostics: checked
                    .diagnostics
                    .iter()
                    .map(RemoteDiagnostic::of)
                    .collect(),
                dry_run: args.dry_run,
                ..Default::default()
            });
        } else {
            print_diagnostics(&args.spec, &checked.diagnostics);
        }
        return Outcome::Failed;
    }
    let text = String::from_utf8(bytes).expect("checked as UTF-8");
    let file = match args.spec.as_str() {
        "-" => None,
        f => Some(
            std::fs::canonicalize(f).map_or_else(|_| f.to_string(), |p| p.display().to_string()),
        ),
    };
    let req = Request::Apply {
        v: VERSION,
        spec: text,
        dry_run: args.dry_run,
        file,
        force: args.force,
    };
    let reply: ReloadReply = match request(&args.socket.control_socket, &req) {
        Ok(r) => r,
        Err(e) => return client_error(json, "apply", &e),
    };
    let outcome = if reply.valid && reply.completed {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    if json {
        print_json(&reply);
        return outcome;
    }
    if !reply.valid {
        errln!("{}: the daemon refused the spec:", args.spec);
        for d in &reply.diagnostics {
            errln!("{}", d.render(&args.spec));
        }
        return outcome;
    }
    if args.quiet {
        if outcome != Outcome::Ok {
            out!("{}", reply.summary);
        }
        return outcome;
    }
    if let Some(diff) = &reply.diff {
        out!("{diff}");
    }
    out!("{}", reply.plan);
    outln!();
    out!("{}", reply.summary);
    outcome
}

pub(crate) fn print_diagnostics(file: &str, diags: &[Diagnostic]) {
    for d in diags {
        errln!("{}", d.render(file));
    }
}
