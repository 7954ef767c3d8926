//! The command line: argument parsing, one file per command, and the one place that maps
//! outcomes to exit codes (0 ok, 1 failed or invalid, 2 usage or I/O error; `diff`
//! follows `terraform plan -detailed-exitcode`: 0 no change, 2 changes, 1 error).
//! Output goes through [`out`]'s macros, never `println!`, so a closed pipe is no panic.

#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod out;

mod apply;
mod daemon;
mod diff;
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
    /// Actions on the active management server (PDU-cut test).
    Act(mserver::Args),
    /// Actions on the standby management server (PDU-cut test).
    Sby(mserver::Args),
    /// A self-contained demo on loopback: daemon, simulated hardware and HA monitors.
    Lab(lab::Args),
}

/// The control socket option, shared by the commands that talk to the daemon.
#[derive(Debug, Clone, clap::Args)]
pub struct SocketArg {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/haconn/haconn.sock",
        value_name = "PATH"
    )]
    pub control_socket: std::path::PathBuf,
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Invalid input or a failed operation.
    Failed,
    /// Usage or I/O error.
    Trouble,
    /// `diff` only: there are changes.
    Changes,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Trouble | Outcome::Changes => 2,
        }
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
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
        Command::Act(a) => mserver::run(&a, "active"),
        Command::Sby(a) => mserver::run(&a, "standby"),
        Command::Lab(a) => lab::run(&a),
    };
    ExitCode::from(outcome.code())
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

/// A diagnostic received as JSON from the daemon, in the local one-line form.
pub(crate) fn render_remote_diagnostic(file: &str, d: &serde_json::Value) -> String {
    let mut s = file.to_string();
    if let (Some(l), Some(c)) = (d["line"].as_u64(), d["column"].as_u64()) {
        s.push_str(&format!(":{l}:{c}"));
    }
    let path = d["path"].as_str().unwrap_or("");
    format!(
        "{s}: {}[{}]: {}{}{}",
        d["severity"].as_str().unwrap_or("error"),
        d["code"].as_str().unwrap_or("?"),
        path,
        if path.is_empty() { "" } else { ": " },
        d["message"].as_str().unwrap_or("")
    )
}
