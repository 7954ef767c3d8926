//! `haconn act ...` / `haconn sby ...`: actions on the active or standby management server.
//!
//! `act restart` hands the reset path over to the standby; `sby takeover
//! --confirm-peer-down` makes a standby that cannot fence its lost peer active on an
//! operator's word. Both go to this host's daemon, whose pair task refuses them in the
//! wrong role.
//!
//! The PDU-cut test of a management server (SPEC §8) is run by the *other* one: a server
//! cannot switch its own power back on. A single management server (`mode: single`) may
//! test its own outlets one at a time (`--mode serial`: it runs on through its other
//! supply). In a pair the active tests the standby's outlets (`sby ipdusd`); `act
//! ipdusd` hands over first, then the new active tests the old one's outlets.

use super::server::{PduTest, pdu_job};
use super::{Outcome, OutputArg, QuietArg, SocketArg};
use crate::daemon::protocol::{PairAction, PairReply, Request, VERSION};

#[derive(Debug, clap::Args)]
pub struct ActArgs {
    #[command(subcommand)]
    pub action: ActAction,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct SbyArgs {
    #[command(subcommand)]
    pub action: SbyAction,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: OutputArg,
    #[command(flatten)]
    pub quiet: QuietArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum ActAction {
    /// PDU-cut test of the active management server's outlets.
    Ipdusd {
        #[command(flatten)]
        test: PduTest,
    },
    /// Hand the reset path over to the standby without fencing (this server stops serving
    /// first), then restart this daemon, which comes back as the standby. Run it on the
    /// active.
    Restart,
    /// Send the active's applied spec to the standby now (every reload does it too).
    Copy,
    /// Stop both daemons: the standby first (so it does not fence the active), then the
    /// active. Run it on the active.
    Shutdown,
}

#[derive(Debug, clap::Subcommand)]
pub enum SbyAction {
    /// PDU-cut test of the standby management server's outlets.
    Ipdusd {
        #[command(flatten)]
        test: PduTest,
    },
    /// Restart the standby's daemon (this one, or the peer's when run on the active).
    Restart,
    /// Stop the standby's daemon (this one, or the peer's when run on the active); the
    /// active goes on alone, not redundant.
    Shutdown,
    /// Make this standby active without fencing its peer, because an operator has made
    /// sure the peer is down (powered off, or its daemon stopped and its address gone).
    /// Refused while the peer's heartbeat is heard. Run it on the standby.
    Takeover {
        /// Confirm that the peer management server is down (required).
        #[arg(long)]
        confirm_peer_down: bool,
    },
}

pub fn run_act(args: &ActArgs) -> Outcome {
    match &args.action {
        ActAction::Ipdusd { test } => ipdusd(&args.common, test, "active"),
        ActAction::Restart => pair(&args.common, "act restart", PairAction::Handover),
        ActAction::Copy => pair(&args.common, "act copy", PairAction::Copy),
        ActAction::Shutdown => pair(&args.common, "act shutdown", PairAction::Shutdown),
    }
}

pub fn run_sby(args: &SbyArgs) -> Outcome {
    match &args.action {
        SbyAction::Ipdusd { test } => ipdusd(&args.common, test, "standby"),
        SbyAction::Restart => pair(&args.common, "sby restart", PairAction::StandbyRestart),
        SbyAction::Shutdown => pair(&args.common, "sby shutdown", PairAction::StandbyShutdown),
        SbyAction::Takeover { confirm_peer_down } => {
            if !confirm_peer_down {
                super::print_error(
                    args.common.output.is_json(),
                    "sby takeover",
                    "usage",
                    "--confirm-peer-down is required: say that you made sure the peer is down",
                );
                return Outcome::Trouble;
            }
            pair(&args.common, "sby takeover", PairAction::ConfirmPeerDown)
        }
    }
}

fn ipdusd(args: &Common, test: &PduTest, role: &str) -> Outcome {
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

/// A pair command, sent to this host's daemon (which refuses it in the wrong role).
fn pair(args: &Common, what: &str, action: PairAction) -> Outcome {
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
        Err(e) => super::client_error(args.output.is_json(), what, &e),
    }
}
