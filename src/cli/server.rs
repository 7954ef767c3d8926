//! `haconn server ...`: operator actions on a managed server through the daemon.
//!
//! `reset` is the test reset of SPEC §8: the pipeline runs the same sequence as for an HA
//! monitor's request (soft reset, then hard reset, then PDU cut as configured), logged
//! with `----` for the requester. Exit 0 when the pipeline accepted it, 1 when it was
//! refused, 2 when the daemon could not be reached.

use serde_json::json;

use super::{Outcome, SocketArg};
use crate::daemon::client::{ClientError, request};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub socket: SocketArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Test reset of a system (a physical server, or a guest of an ESXi host): the daemon
    /// answers once the pipeline has started it; follow it in the reset log.
    Reset {
        /// The system name (the HA monitor's partition name).
        name: String,
        /// Its subsystem number (the HA monitor's host address).
        #[arg(long, value_name = "N")]
        address: u32,
    },
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Action::Reset { name, address } => reset(args, name, *address),
    }
}

fn reset(args: &Args, name: &str, subsystem: u32) -> Outcome {
    let req = json!({"op": "serverReset", "system": name, "subsystem": subsystem});
    match request(&args.socket.control_socket, req) {
        Ok(_) => {
            println!(
                "test reset of {name} (subsystem {subsystem}) accepted; its steps go to the reset log"
            );
            Outcome::Ok
        }
        Err(ClientError::Refused { code, message }) => {
            let why = if code == "refused" {
                String::new()
            } else {
                format!(" ({code})")
            };
            eprintln!(
                "haconn server reset: {name} (subsystem {subsystem}) refused{why}: {message}"
            );
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("haconn server reset: {e}");
            Outcome::Trouble
        }
    }
}
