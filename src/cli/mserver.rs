//! `haconn act ...` / `haconn sby ...`: actions on the active or standby management server.
//!
//! The PDU-cut test of a management server (SPEC §8) is run by the *other* one: a server
//! cannot switch its own power back on. A single management server (`mode: single`) may
//! test its own outlets one at a time (`--mode serial`: it runs on through its other
//! supply); everything else is refused with the reason until duplication exists.

use serde_json::json;

use super::server::ModeArg;
use super::{Outcome, SocketArg};
use crate::daemon::client::{ClientError, request_with_progress};
use crate::pipeline::pdutest::Mode;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// PDU-cut test of the management server's outlets.
    Ipdusd {
        #[arg(long, value_enum)]
        mode: ModeArg,
        /// Seconds each outlet stays off (5–60).
        #[arg(long, value_name = "S", default_value_t = 5)]
        offtime: u64,
        /// Seconds between outlets in serial mode (5–60).
        #[arg(long, value_name = "S", default_value_t = 5)]
        wtime: u64,
    },
}

pub fn run(args: &Args, role: &str) -> Outcome {
    let Action::Ipdusd {
        mode,
        offtime,
        wtime,
    } = args.action;
    let mode = match mode {
        ModeArg::Same => Mode::Same,
        ModeArg::Serial => Mode::Serial,
    };
    let req = json!({
        "op": "mserverIpdu", "role": role, "mode": mode, "offTime": offtime, "waitTime": wtime,
    });
    let progress = |line: &str| {
        println!("[{}] {line}", chrono::Local::now().format("%H:%M:%S"));
    };
    match request_with_progress(&args.socket.control_socket, req, progress) {
        Ok(reply) => {
            println!("{}", reply["summary"].as_str().unwrap_or("done"));
            Outcome::Ok
        }
        Err(ClientError::Refused { message, .. }) => {
            eprintln!(
                "haconn {}: {message}",
                if role == "active" { "act" } else { "sby" }
            );
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("haconn: {e}");
            Outcome::Trouble
        }
    }
}
