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
    if let Some(why) = test.refused(None) {
        super::print_error(args.output.is_json(), what, "usage", &why);
        return Outcome::Trouble;
    }
    let advised = crate::pipeline::pdutest::MSERVER_SERIAL_OFF_ADVISED;
    if test.mode() == crate::pipeline::pdutest::Mode::Serial
        && test
            .offtime
            .unwrap_or(crate::pipeline::pdutest::DEFAULT_SECONDS)
            < advised
    {
        errln!(
            "haconn {what}: note: for a management server's serial test the original's manual \
             asks for an off time of {advised} s or more (--offtime {advised})"
        );
    }
    if !test.confirmed(&format!("the {role} management server")) {
        errln!("haconn {what}: cancelled; nothing was switched");
        return Outcome::Failed;
    }
    let req = Request::MserverIpdu {
        v: VERSION,
        role: role.to_string(),
        mode: test.mode(),
        off_time: test.offtime,
        wait_time: test.wtime,
    };
    pdu_job(&args.socket, &args.output, args.quiet, what, &req)
}
