//! `haconn act ...` / `haconn sby ...`: actions on the active or standby management server.
//!
//! The PDU-cut test of a management server (SPEC §8) is run by the *other* one: a server
//! cannot switch its own power back on. A single management server (`mode: single`) may
//! test its own outlets one at a time (`--mode serial`: it runs on through its other
//! supply); everything else is refused with the reason until duplication exists.

use super::server::{PduTest, pdu_job};
use super::{Outcome, OutputArg, QuietArg, SocketArg};
use crate::daemon::protocol::{PairAction, PairReply, Request, VERSION};

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
    /// `act restart`: hand the reset path over to the standby without fencing; this
    /// server stops serving first and stays on as the standby. Run it on the active.
    Restart,
    /// `sby takeover --confirm-peer-down`: make this standby active without fencing its
    /// peer, because an operator has made sure the peer is down (powered off, its
    /// daemon stopped). Refused while the peer's heartbeat is heard. Run it on the standby.
    Takeover {
        /// Confirm that the peer management server is down (required).
        #[arg(long)]
        confirm_peer_down: bool,
    },
}

pub fn run(args: &Args, role: &str) -> Outcome {
    let test = match &args.action {
        Action::Ipdusd { test } => test,
        Action::Restart => return pair(args, role, "restart", "active", PairAction::Handover),
        Action::Takeover { confirm_peer_down } => {
            if !confirm_peer_down {
                super::print_error(
                    args.output.is_json(),
                    &format!("{} takeover", short(role)),
                    "usage",
                    "--confirm-peer-down is required: say that you made sure the peer is down",
                );
                return Outcome::Trouble;
            }
            return pair(
                args,
                role,
                "takeover",
                "standby",
                PairAction::ConfirmPeerDown,
            );
        }
    };
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

fn short(role: &str) -> &'static str {
    if role == "active" { "act" } else { "sby" }
}

/// A pair command; `expected` is the role the command is meant for (`act restart` on
/// the active, `sby takeover` on the standby): the daemon refuses it on the other.
fn pair(args: &Args, role: &str, verb: &str, expected: &str, action: PairAction) -> Outcome {
    let what = format!("{} {verb}", short(role));
    if role != expected {
        super::print_error(
            args.output.is_json(),
            &what,
            "usage",
            &format!("`{verb}` is a command of the {expected} management server"),
        );
        return Outcome::Trouble;
    }
    let req = Request::Pair { v: VERSION, action };
    match crate::daemon::client::request::<PairReply>(&args.socket.control_socket, &req) {
        Ok(reply) => {
            if args.output.is_json() {
                super::print_json(&reply);
            } else if !args.quiet.quiet {
                outln!("{}", reply.message);
            }
            Outcome::Ok
        }
        Err(e) => super::client_error(args.output.is_json(), &what, &e),
    }
}
