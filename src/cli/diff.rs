//! `haconn diff OLD NEW`: the normalized specs as a unified diff, then the plan.

use super::{Outcome, read_input};
use crate::daemon::protocol::{ReloadReply, Request, VERSION};
use crate::plan::{LiveFacts, plan};
use crate::spec::model::Spec;
use crate::spec::render::unified_diff;
use crate::spec::{CheckOptions, check_bytes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// OLD and NEW spec files; with none, `--spec` is compared with the daemon's live state.
    #[arg(value_name = "OLD NEW", num_args = 0..=2)]
    pub files: Vec<String>,
    /// With no files: the spec to compare with the live state.
    #[arg(long, env = "HACONN_SPEC", default_value = "/etc/haconn/cluster.yaml")]
    pub spec: String,
    /// With no files, when the daemon is down: where its last applied spec is.
    #[arg(long, env = "HACONN_STATE_DIR", default_value = "/var/lib/haconn")]
    pub state_dir: std::path::PathBuf,
    #[command(flatten)]
    pub socket: super::SocketArg,
    #[command(flatten)]
    pub output: super::OutputArg,
    /// Facts about the running cluster (YAML: monitorsActive, resetting, active) to predict refusals.
    #[arg(long, value_name = "FILE")]
    pub facts: Option<String>,
    /// Print nothing but errors; the exit code says whether there are changes (as `git
    /// diff --quiet`). No effect with `--output json`.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Loads and validates a spec, printing its errors; `Err` carries the outcome to exit with.
pub(crate) fn load(file: &str) -> Result<Spec, Outcome> {
    let bytes = read_input(file).map_err(|e| {
        errln!("{file}: error[io]: cannot read: {e}");
        Outcome::Failed
    })?;
    let checked = check_bytes(&bytes, CheckOptions::default());
    checked.spec.ok_or_else(|| {
        for d in &checked.diagnostics {
            errln!("{}", d.render(file));
        }
        errln!("{file}: invalid; nothing to compare");
        Outcome::Failed
    })
}

pub(crate) fn load_facts(file: &str) -> Result<LiveFacts, Outcome> {
    let bytes = read_input(file).map_err(|e| {
        errln!("{file}: error[io]: cannot read: {e}");
        Outcome::Failed
    })?;
    let doc = crate::spec::yaml::load_bytes(&bytes).map_err(|e| {
        errln!("{file}: error[yaml]: {e}");
        Outcome::Failed
    })?;
    serde_json::from_value(doc.value).map_err(|e| {
        errln!("{file}: error[facts]: {e}");
        Outcome::Failed
    })
}

pub fn run(args: &Args) -> Outcome {
    let (old_name, new_name) = match args.files.as_slice() {
        [] => return live(args),
        [old, new] => (old, new),
        _ => {
            errln!(
                "haconn diff: give two files (OLD NEW), or none to compare --spec with the daemon"
            );
            return Outcome::Trouble;
        }
    };
    let (old, new) = match (load(old_name), load(new_name)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(_), _) | (_, Err(_)) => {
            return failed(
                args,
                "invalid",
                "a spec is invalid or unreadable; nothing to compare",
            );
        }
    };
    let facts = match &args.facts {
        None => LiveFacts::default(),
        Some(f) => match load_facts(f) {
            Ok(f) => f,
            Err(e) => return e,
        },
    };
    let p = plan(&old, &new, &facts);
    show(args, &unified_diff(&old, &new, old_name, new_name), &p)
}

/// Prints the unified diff and the plan (as text, or as one JSON object); the outcome.
fn show(args: &Args, diff: &str, p: &crate::plan::Plan) -> Outcome {
    if args.output.is_json() {
        super::print_json(&serde_json::json!({
            "diff": diff,
            "changes": p.to_value(),
        }));
    } else if !args.quiet {
        out!("{diff}");
        out!("{}", p.render());
    }
    if p.is_empty() {
        Outcome::Ok
    } else {
        Outcome::Changes
    }
}

/// In JSON mode, an error is also `{"error": …}` on stdout (diagnostics stay on stderr).
fn failed(args: &Args, code: &str, message: &str) -> Outcome {
    if args.output.is_json() {
        super::print_error(true, "diff", code, message);
    }
    Outcome::Failed
}

/// `haconn diff` with no files: the spec file against the daemon's live state, or against
/// the last applied spec in the state dir when the daemon is down.
fn live(args: &Args) -> Outcome {
    let new = match load(&args.spec) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let text = match std::fs::read_to_string(&args.spec) {
        Ok(t) => t,
        Err(e) => {
            errln!("{}: error[io]: cannot read: {e}", args.spec);
            return Outcome::Failed;
        }
    };
    let req = Request::Plan {
        v: VERSION,
        spec: text,
    };
    match crate::daemon::client::request::<ReloadReply>(&args.socket.control_socket, &req) {
        Ok(reply) => {
            if !reply.valid {
                for d in &reply.diagnostics {
                    errln!("{}", d.render(&args.spec));
                }
                return Outcome::Failed;
            }
            if args.output.is_json() {
                super::print_json(&serde_json::json!({
                    "diff": reply.diff.unwrap_or_default(),
                    "changes": reply.plan_changes,
                }));
            } else if !args.quiet {
                out!("{}", reply.diff.unwrap_or_default());
                out!("{}", reply.plan);
            }
            if reply.changes == 0 {
                Outcome::Ok
            } else {
                Outcome::Changes
            }
        }
        Err(crate::daemon::client::ClientError::Unreachable { source, .. }) => {
            let state = args.state_dir.join("applied.yaml");
            if !args.quiet {
                errln!(
                    "haconn diff: the daemon is not reachable ({source}); comparing with the last applied spec {}",
                    state.display()
                );
            }
            let old = match load(&state.display().to_string()) {
                Ok(s) => s,
                Err(e) => return e,
            };
            let diff = unified_diff(&old, &new, "last-applied", &args.spec);
            // The daemon is down: its next start takes the whole spec, so a change that
            // needs a restart is no error here.
            let mut p = plan(&old, &new, &LiveFacts::default());
            for c in &mut p.changes {
                if c.predicted == Err(crate::plan::Refusal::NeedsRestart) {
                    c.predicted = Ok(());
                }
            }
            show(args, &diff, &p)
        }
        Err(e) => {
            errln!("haconn diff: {e}");
            Outcome::Failed
        }
    }
}
