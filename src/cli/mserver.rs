//! `haconn act ...` / `haconn sby ...`: actions on the active or standby management server.
//!
//! The PDU-cut test of a management server (SPEC §8) is run by the *other* one: a server
//! cannot switch its own power back on. Until management-server duplication exists the
//! daemon refuses it with the reason (single mode: there is no other server).

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
    /// PDU-cut test of this management server's outlets, run by its peer.
    Ipdusd,
}

pub fn run(args: &Args, role: &str) -> Outcome {
    let Action::Ipdusd = args.action;
    match request(
        &args.socket.control_socket,
        json!({"op": "mserverIpdu", "role": role}),
    ) {
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
