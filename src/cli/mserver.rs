//! `haconn act ...` / `haconn sby ...`: actions on the active or standby management server.
//!
//! The PDU-cut test of a management server (SPEC §8) is run by the *other* one: a server
//! cannot switch its own power back on. A single management server (`mode: single`) may
//! test its own outlets one at a time (`--mode serial`: it runs on through its other
//! supply); everything else is refused with the reason until duplication exists.

use super::server::{PduTest, pdu_job};
use super::{Outcome, OutputArg, QuietArg, SocketArg};
use crate::daemon::protocol::{Request, VERSION};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: OutputArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// PDU-cut test of the management server's outlets.
    Ipdusd {
        #[command(flatten)]
        test: PduTest,
    },
}

pub fn run(args: &Args, role: &str) -> Outcome {
    let Action::Ipdusd { test } = &args.action;
    let what = if role == "active" {
        "act ipdusd"
    } else {
        "sby ipdusd"
    };
    if !test.confirmed(&format!("the {role} management server")) {
        errln!("haconn {what}: cancelled; nothing was switched");
        return Outcome::Failed;
    }
    let req = Request::MserverIpdu {
        v: VERSION,
        role: role.to_string(),
        mode: test.mode(),
        off_time: Some(test.offtime),
        wait_time: Some(test.wtime),
    };
    pdu_job(&args.socket, &args.output, args.quiet, what, &req)
}
