//! The command line: argument parsing, one file per command, and the one place that maps
//! outcomes to exit codes (0 ok, 1 failed or invalid, 2 usage or I/O error; `diff`
//! follows `terraform plan -detailed-exitcode`: 0 no change, 2 changes, 1 error).
//! Output goes through [`out`]'s macros, never `println!`, so a closed pipe is no panic.

#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;

mod alert;
mod apply;
mod daemon;
mod diff;
pub(crate) mod dump;
pub mod fence_agent;
mod history;
mod lab;
mod mserver;
mod node;
mod schema;
mod server;
mod show;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// haconn: resets failed HA cluster nodes through their BMC, PDU or ESXi host.
#[derive(Debug, Parser)]
#[command(name = "haconn", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check cluster spec files and report every problem with its path and line.
    Validate(validate::Args),
    /// Print the JSON Schema of the cluster spec.
    Schema,
    /// Compare specs: two files, or a file with the daemon's live state; a unified diff of
    /// the normalized specs, then the plan.
    Diff(diff::Args),
    /// Run the haconn service.
    Daemon(daemon::Args),
    /// Send a spec to the daemon as a reload and print the summary.
    Apply(apply::Args),
    /// Show what the daemon knows.
    Show(show::Args),
    /// Node-side tools: what HA monitors and dump agents send over the reset path.
    Node(node::Args),
    /// Operator actions on a managed server: test soft reset, PDU-cut test, PDU power
    /// restore.
    Server(server::Args),
    /// Actions on the active management server (PDU-cut test, handover).
    Act(mserver::ActArgs),
    /// Actions on the standby management server (PDU-cut test, takeover).
    Sby(mserver::SbyArgs),
    /// A self-contained demo on loopback: daemon, simulated hardware and HA monitors.
    Lab(lab::Args),
    /// A hardware alert from a management tool (`ADDRESS DATE TIME ALERT_ID`, the
    /// original's `%I %D %T %A`): a power-off is confirmed over the server's BMC before the
    /// cluster is told POFF; `--kind` sends a failure warning.
    Alert(alert::Args),
    /// Every reset in the fence history (the state dir): who asked, each stage with its
    /// time, the outcome and its evidence. Works whether the daemon runs or not.
    History(history::Args),
    /// Print the shell completion script (`haconn completions bash >
    /// /usr/share/bash-completion/completions/haconn`).
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for haconn and each of its commands into DIR (`haconn.1`,
    /// `haconn-show.1`, `haconn-show-status.1`, …).
    Man {
        /// The directory to write into (created when missing).
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
    /// One tar.gz for a support case: every log generation, the state dir, the applied
    /// spec normalized with every secret masked, the daemon's `show` outputs and versions
    /// (when it answers; the archive says when it did not), and host facts. No secret of
    /// the spec goes in.
    Dump(dump::Args),
}

/// `haconn man DIR`: one page per command, named by its path.
fn write_man_pages(dir: &std::path::Path) -> Outcome {
    fn write(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> std::io::Result<usize> {
        let cmd = cmd
            .clone()
            .display_name(name.to_string())
            .bin_name(name.replace('-', " "));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)?;
        let mut n = 1;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            n += write(sub, &format!("{name}-{}", sub.get_name()), dir)?;
        }
        Ok(n)
    }
    let mut cmd = command();
    cmd.build();
    match std::fs::create_dir_all(dir).and_then(|()| write(&cmd, "haconn", dir)) {
        Ok(n) => {
            outln!("{n} man pages written to {}", dir.display());
            Outcome::Ok
        }
        Err(e) => {
            errln!("haconn man: {}: {e}", dir.display());
            Outcome::Trouble
        }
    }
}

/// The control socket option, shared by the commands that talk to the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        env = "HACONN_CONTROL_SOCKET",
        default_value = "/run/haconn/haconn.sock",
        value_name = "PATH"
    )]
    pub control_socket: std::path::PathBuf,
}

/// `--quiet` of the commands that act through the daemon (`server …`, `act`/`sby`).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct QuietArg {
    /// No progress lines and nothing on success; a failure or refusal still prints (on
    /// stderr), and the exit code tells. No effect with `--output json`.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// How a command ended, in the operator's terms. [`Outcome::code`] is the one place that
/// turns it into an exit code, and [`EXIT_CODES`] says what each code means per command
/// (README.md's table is generated from it and checked by `tests/it/cli.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Invalid input, a failed operation, or a refusal.
    Failed,
    /// A usage or I/O error, or the daemon could not be reached or would not serve.
    Trouble,
    /// `diff` only: there are changes.
    Changes,
}

/// Which exit-code convention a command follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStyle {
    /// 0 ok, 1 failed, invalid or refused, 2 usage or I/O error or daemon unreachable.
    Standard,
    /// `terraform plan -detailed-exitcode`: 0 no changes, 2 changes, 1 any error.
    Terraform,
}

impl Outcome {
    pub fn code(self, style: ExitStyle) -> u8 {
        match (self, style) {
            (Outcome::Ok, _) => 0,
            (Outcome::Failed, _) => 1,
            (Outcome::Trouble, ExitStyle::Standard) => 2,
            (Outcome::Trouble, ExitStyle::Terraform) => 1,
            (Outcome::Changes, _) => 2,
        }
    }

    /// What a failed control-socket request means: the daemon's refusal of the operation
    /// (`refused`, `failed`) is a failure; not reaching it, or its refusal to serve at all
    /// (`forbidden`, `busy`, `version`, …), is trouble.
    pub fn of_client_error(e: &crate::daemon::client::ClientError) -> Outcome {
        use crate::daemon::client::ClientError;
        match e {
            ClientError::Refused { code, .. }
                if code == "refused" || code == "failed" || code == "not-found" =>
            {
                Outcome::Failed
            }
            _ => Outcome::Trouble,
        }
    }
}

/// What each exit code means, per command.
pub struct CommandCodes {
    pub command: &'static str,
    pub style: ExitStyle,
    pub meanings: &'static [(Outcome, &'static str)],
}

const USAGE_UNREACHABLE: &str = "usage error, daemon unreachable or not serving";

pub const EXIT_CODES: &[CommandCodes] = &[
    CommandCodes {
        command: "validate",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "valid"),
            (Outcome::Failed, "invalid"),
            (Outcome::Trouble, "usage or I/O error"),
        ],
    },
    CommandCodes {
        command: "schema",
        style: ExitStyle::Standard,
        meanings: &[(Outcome::Ok, "printed"), (Outcome::Trouble, "usage error")],
    },
    CommandCodes {
        command: "diff",
        style: ExitStyle::Terraform,
        meanings: &[
            (Outcome::Ok, "no changes"),
            (
                Outcome::Failed,
                "any error: invalid or unreadable spec, usage error, daemon error",
            ),
            (Outcome::Changes, "changes"),
        ],
    },
    CommandCodes {
        command: "daemon",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "clean stop (SIGTERM)"),
            (Outcome::Failed, "could not start"),
            (Outcome::Trouble, "usage error"),
        ],
    },
    CommandCodes {
        command: "apply",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "`completed.` (`--dry-run`: would complete)"),
            (
                Outcome::Failed,
                "`failed.` or invalid (`--dry-run`: would fail)",
            ),
            (
                Outcome::Trouble,
                "usage or I/O error, daemon unreachable or not serving",
            ),
        ],
    },
    CommandCodes {
        command: "show",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "shown"),
            (Outcome::Failed, "no such system, host or PDU"),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "server reset",
        style: ExitStyle::Standard,
        meanings: &[
            (
                Outcome::Ok,
                "`stopped (dump)`: NMI acknowledged, then the node's stop notice",
            ),
            (
                Outcome::Failed,
                "refused (e.g. BMC known NG), NMI failed, no stop notice within 60 s, or \
                 powered off (nothing tested)",
            ),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "server ipdusd, server acrecovery, act ipdusd, sby ipdusd",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "every switch confirmed"),
            (Outcome::Failed, "refused, or a switch failed"),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "act restart, act copy, act shutdown, sby restart, sby shutdown, sby takeover",
        style: ExitStyle::Standard,
        meanings: &[
            (
                Outcome::Ok,
                "done: the peer took over, or this server is active",
            ),
            (
                Outcome::Failed,
                "refused (wrong role, the peer not a healthy standby, or its heartbeat still \
                 heard), or the peer did not take over in time",
            ),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "alert",
        style: ExitStyle::Standard,
        meanings: &[
            (
                Outcome::Ok,
                "acted on: POFF sent (BMC reads off), already off, or warning recorded",
            ),
            (
                Outcome::Failed,
                "not confirmed (BMC reads on or cannot be read), or not acted on (no server \
                 with that address, or it does not take that warning)",
            ),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "server clear-warning",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "cleared (or there was none)"),
            (Outcome::Failed, "no such server"),
            (Outcome::Trouble, USAGE_UNREACHABLE),
        ],
    },
    CommandCodes {
        command: "completions, man",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "written"),
            (Outcome::Trouble, "usage error, the directory not writable"),
        ],
    },
    CommandCodes {
        command: "history",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "shown (none is an empty list)"),
            (Outcome::Trouble, "usage error, the state dir unreadable"),
        ],
    },
    CommandCodes {
        command: "dump",
        style: ExitStyle::Standard,
        meanings: &[
            (
                Outcome::Ok,
                "archive written (what it lacks is said in its README.txt; a daemon that did \
                 not answer also on stderr)",
            ),
            (
                Outcome::Trouble,
                "usage error, the archive cannot be written (the file exists, or I/O error)",
            ),
        ],
    },
    CommandCodes {
        command: "node",
        style: ExitStyle::Standard,
        meanings: &[
            (
                Outcome::Ok,
                "answered as hoped (resettable, reset done, notified)",
            ),
            (
                Outcome::Failed,
                "answered otherwise (not resettable, FAIL, ERROR, too few notifications)",
            ),
            (Outcome::Trouble, "usage or I/O error, no answer"),
        ],
    },
    CommandCodes {
        command: "lab",
        style: ExitStyle::Standard,
        meanings: &[
            (Outcome::Ok, "every scenario had its expected outcome"),
            (Outcome::Failed, "a scenario did not"),
            (Outcome::Trouble, "usage error, could not run"),
        ],
    },
];

/// The exit-code table as Markdown (README.md holds exactly this).
pub fn exit_code_table() -> String {
    let mut s = String::from("| command | 0 | 1 | 2 |\n|---|---|---|---|\n");
    for c in EXIT_CODES {
        let cell = |code: u8| {
            c.meanings
                .iter()
                .filter(|(o, _)| o.code(c.style) == code)
                .map(|(_, m)| *m)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let names: Vec<String> = c.command.split(", ").map(|n| format!("`{n}`")).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            names.join(", "),
            cell(0),
            cell(1),
            cell(2)
        ));
    }
    s
}

/// The convention of the command named by the arguments (for clap's own usage errors).
fn style_of_args() -> ExitStyle {
    match std::env::args().nth(1).as_deref() {
        Some("diff") => ExitStyle::Terraform,
        _ => ExitStyle::Standard,
    }
}

/// The command line with each command's exit codes (from [`EXIT_CODES`]) at the end of
/// its help, and of its subcommands'.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    fn with_codes(cmd: clap::Command, text: &str) -> clap::Command {
        let subs: Vec<String> = cmd
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        let mut cmd = cmd.after_help(text.to_string());
        for name in subs {
            cmd = cmd.mut_subcommand(name, |c| with_codes(c, text));
        }
        cmd
    }
    let mut cli = Cli::command();
    for codes in EXIT_CODES {
        let mut text = String::from("Exit codes:");
        for code in [0u8, 1, 2] {
            let meaning: Vec<&str> = codes
                .meanings
                .iter()
                .filter(|(o, _)| o.code(codes.style) == code)
                .map(|(_, m)| *m)
                .collect();
            if !meaning.is_empty() {
                text.push_str(&format!(
                    "\n  {code}  {}",
                    meaning.join("; ").replace('`', "")
                ));
            }
        }
        for path in codes.command.split(", ") {
            let mut words = path.split(' ');
            let top = words.next().expect("a command name");
            let sub = words.next();
            cli = cli.mut_subcommand(top, |c| match sub {
                None => with_codes(c, &text),
                Some(sub) => c.mut_subcommand(sub, |c| with_codes(c, &text)),
            });
        }
    }
    cli
}

pub fn main() -> ExitCode {
    use clap::FromArgMatches;
    // `fence_haconn` (a symlink to haconn) and `haconn fence-agent` follow the Fence Agent
    // API, not this parser: parameters on stdin or as the agents' options, its exit codes.
    if let Some(args) = fence_agent::agent_args(std::env::args_os()) {
        return ExitCode::from(fence_agent::run(args));
    }
    let cli = match command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let outcome = if e.use_stderr() {
                Outcome::Trouble
            } else {
                Outcome::Ok
            };
            return ExitCode::from(outcome.code(style_of_args()));
        }
    };
    let style = match cli.command {
        Command::Diff(_) => ExitStyle::Terraform,
        _ => ExitStyle::Standard,
    };
    let outcome = match cli.command {
        Command::Validate(a) => validate::run(&a),
        Command::Schema => schema::run(),
        Command::Diff(a) => diff::run(&a),
        Command::Daemon(a) => daemon::run_daemon(&a),
        Command::Apply(a) => apply::run(&a),
        Command::Show(a) => show::run(&a),
        Command::Node(a) => node::run(&a),
        Command::Server(a) => server::run(&a),
        Command::Act(a) => mserver::run_act(&a),
        Command::Sby(a) => mserver::run_sby(&a),
        Command::Lab(a) => lab::run(&a),
        Command::Alert(a) => alert::run(&a),
        Command::History(a) => history::run(&a),
        Command::Dump(a) => dump::run(&a),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut command(), "haconn", &mut out);
            out!("{}", String::from_utf8_lossy(&out));
            Outcome::Ok
        }
        Command::Man { dir } => write_man_pages(&dir),
    };
    ExitCode::from(outcome.code(style))
}

/// Reads a spec file (`-` is standard input).
pub(crate) fn read_input(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(crate::spec::yaml::MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut buf)?;
        return Ok(buf);
    }
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(crate::spec::yaml::MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// Text for people or JSON for scripts; one spelling for every command (`--output json`),
/// the older spellings (`--json`, `validate --format`) kept as hidden aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct OutputArg {
    /// `text` for people, `json` for scripts (stable field names; errors as
    /// `{"error": {"code", "message"}}` on stdout).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

impl OutputArg {
    pub fn is_json(&self) -> bool {
        self.json || self.output == Output::Json
    }
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(v: &impl serde::Serialize) {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).expect("json serializes")
    );
}

/// Prints an error: `{"error": {"code", "message"}}` on stdout when JSON was asked for,
/// else `haconn WHAT: message` on stderr.
pub(crate) fn print_error(json: bool, what: &str, code: &str, message: &str) {
    if json {
        print_json(&serde_json::json!({"error": {"code": code, "message": message}}));
    } else {
        errln!("haconn {what}: {message}");
    }
}

/// A daemon client error, as [`print_error`] says it; returns its outcome.
pub(crate) fn client_error(
    json: bool,
    what: &str,
    e: &crate::daemon::client::ClientError,
) -> Outcome {
    if json {
        print_json(&serde_json::json!({"error": e.body()}));
    } else {
        errln!("haconn {what}: {e}");
    }
    Outcome::of_client_error(e)
}
