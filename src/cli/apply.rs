//! `haconn apply`: send the spec to the daemon as a reload and print its summary.

use serde_json::json;

use super::{Outcome, SocketArg, read_input};
use crate::daemon::client::request;
use crate::spec::diag::Diagnostic;
use crate::spec::{CheckOptions, check_bytes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec to apply.
    #[arg(long, default_value = "/etc/haconn/cluster.yaml")]
    pub spec: String,
    /// Print the plan the daemon would execute against its live state, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub socket: SocketArg,
}

pub fn run(args: &Args) -> Outcome {
    let bytes = match read_input(&args.spec) {
        Ok(b) => b,
        Err(e) => {
            errln!("{}: error[io]: cannot read: {e}", args.spec);
            return Outcome::Trouble;
        }
    };
    // Check locally first: a broken file never reaches the daemon.
    let checked = check_bytes(&bytes, CheckOptions::default());
    if checked.spec.is_none() {
        print_diagnostics(&args.spec, &checked.diagnostics);
        return Outcome::Failed;
    }
    let text = String::from_utf8(bytes).expect("checked as UTF-8");
    let req = json!({"op": "apply", "spec": text, "dryRun": args.dry_run});
    let reply = match request(&args.socket.control_socket, req) {
        Ok(r) => r,
        Err(e) => {
            errln!("haconn apply: {e}");
            return Outcome::of_client_error(&e);
        }
    };
    if reply["valid"] == false {
        errln!("{}: the daemon refused the spec:", args.spec);
        for d in reply["diagnostics"].as_array().into_iter().flatten() {
            errln!("{}", super::render_remote_diagnostic(&args.spec, d));
        }
        return Outcome::Failed;
    }
    if args.dry_run {
        out!("{}", reply["diff"].as_str().unwrap_or(""));
        out!("{}", reply["plan"].as_str().unwrap_or(""));
        outln!();
        out!("{}", reply["summary"].as_str().unwrap_or(""));
        return if reply["completed"] == true {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
    }
    out!("{}", reply["plan"].as_str().unwrap_or(""));
    outln!();
    out!("{}", reply["summary"].as_str().unwrap_or(""));
    if reply["completed"] == true {
        Outcome::Ok
    } else {
        Outcome::Failed
    }
}

pub(crate) fn print_diagnostics(file: &str, diags: &[Diagnostic]) {
    for d in diags {
        errln!("{}", d.render(file));
    }
}
