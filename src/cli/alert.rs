//! `haconn alert`: what a management tool runs on a power-off alert (the original's
//! PowerOffAlertTransfer with its `%I %D %T %A` arguments: the server's address, the
//! alert's date, time and id), or any monitoring system's action hook. The daemon reads
//! the server's power over its BMC and tells the cluster POFF only if the BMC says off;
//! `--kind` sends a failure warning instead. Exit 0: acted on (POFF sent, already off,
//! warning recorded); 1: not confirmed (the BMC says on or cannot be read; the BMC is
//! then polled fast for a few seconds) or not acted on (no server with that address, or
//! one that does not take that warning); 2: usage error, daemon unreachable or refusing
//! (a standby: send it to the active).

use std::net::IpAddr;

use super::{Outcome, OutputArg, SocketArg, client_error, print_json};
use crate::daemon::client::request;
use crate::daemon::protocol::{AlertReply, Request, VERSION};
use crate::pipeline::AlertOutcome;
use crate::spec::model::AlertKind;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's address (`%I`): its BMC's or its ESXi host's, as in the spec.
    #[arg(value_name = "ADDRESS", required_unless_present = "server")]
    pub address: Option<IpAddr>,
    /// The alert's date (`%D`), kept in the alert log.
    #[arg(value_name = "DATE")]
    pub date: Option<String>,
    /// The alert's time (`%T`), kept in the alert log.
    #[arg(value_name = "TIME")]
    pub time: Option<String>,
    /// The tool's alert id (`%A`, e.g. 0xFE91 for a power-off), kept in the alert log.
    #[arg(value_name = "ALERT_ID")]
    pub alert_id: Option<String>,
    /// The server by its name in the spec instead of its address.
    #[arg(long, value_name = "NAME", conflicts_with = "address")]
    pub server: Option<String>,
    /// What the alert says.
    #[arg(long, value_enum, default_value_t = KindArg::PowerOff)]
    pub kind: KindArg,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// The server lost power (confirmed over its BMC before POFF is sent).
    PowerOff,
    /// A part predicts its failure (a warning: nothing is reset).
    PredictiveFailure,
    /// Performance or redundancy degraded (a warning: nothing is reset).
    Degradation,
}

impl From<KindArg> for AlertKind {
    fn from(k: KindArg) -> AlertKind {
        match k {
            KindArg::PowerOff => AlertKind::PowerOff,
            KindArg::PredictiveFailure => AlertKind::PredictiveFailure,
            KindArg::Degradation => AlertKind::Degradation,
        }
    }
}

pub fn run(args: &Args) -> Outcome {
    let json = args.output.is_json();
    let req = Request::Alert {
        v: VERSION,
        address: args.address,
        server: args.server.clone(),
        kind: args.kind.into(),
        date: args.date.clone(),
        time: args.time.clone(),
        alert_id: args.alert_id.clone(),
    };
    let reply: AlertReply = match request(&args.socket.control_socket, &req) {
        Ok(r) => r,
        Err(e) => return client_error(json, "alert", &e),
    };
    if json {
        print_json(&reply);
    } else {
        outln!(
            "{}: {}",
            reply.server.as_deref().unwrap_or("no server"),
            reply.action
        );
    }
    match reply.outcome {
        AlertOutcome::PowerOff { .. } | AlertOutcome::AlreadyOff | AlertOutcome::Warned { .. } => {
            Outcome::Ok
        }
        AlertOutcome::NotConfirmed { .. } | AlertOutcome::Ignored { .. } => Outcome::Failed,
    }
}
