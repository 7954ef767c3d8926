//! `haconn server ...`: operator actions on a managed server through the daemon.
//!
//! `reset` is the test soft reset of SPEC §8: the NMI only (never a hard reset or a PDU
//! cut), logged with `----` for the requester. Like `stonith_admin`, it waits for the
//! outcome and prints it: exit 0 only when the NMI was acknowledged and the node's stop
//! notice came (it is dumping), 1 when it was refused or the soft reset did not work, 2
//! when the daemon could not be reached.
//!
//! `ipdusd` is the PDU-cut test (SPEC §8) and `acrecovery` switches a server's outlets back
//! on; both print each outlet switch as it happens and exit 0 only when every switch was
//! confirmed by its PDU.

use std::net::IpAddr;

use super::{Outcome, OutputArg, QuietArg, SocketArg, print_json};
use crate::daemon::client::{ClientError, request_with_progress};
use crate::daemon::protocol::{PduJobReply, Request, ServerResetReply, VERSION};
use crate::pipeline::pdutest::Mode;

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
    /// Test soft reset of a system (a physical server, or a guest of an ESXi host): an NMI
    /// through its BMC (or ESXi host), then up to 60 s for the node's stop notice; never a
    /// hard reset or a PDU cut. Waits for the outcome and prints it (`stopped (dump)`,
    /// NMI failed, no stop notice within 60 s, powered off); refused at once when the
    /// hardware watch knows the BMC (ESXi host) is NG.
    Reset {
        /// The system name (the HA monitor's partition name).
        name: String,
        /// Its subsystem number (the HA monitor's host address); `--address` is an old
        /// spelling.
        #[arg(long = "subsystem", alias = "address", value_name = "N")]
        address: u32,
    },
    /// PDU-cut test: switch the server's outlets off and on again (`same`: all at once,
    /// refused while its HA monitor is active unless --force; `serial`: one at a time,
    /// for a server in service).
    Ipdusd {
        /// The server (as named in the spec).
        name: String,
        #[command(flatten)]
        test: PduTest,
        /// Only the outlets on this PDU (its address), `--mode serial` only; `--addr` is an
        /// old spelling.
        #[arg(long = "pdu", alias = "addr", value_name = "IP")]
        addr: Option<IpAddr>,
        /// Run even though the server's HA monitor is active (it will go down).
        #[arg(long)]
        force: bool,
    },
    /// Clear a server's failure warning (from a predictive-failure or degradation alert)
    /// once it has been dealt with.
    ClearWarning {
        /// The server (as named in the spec).
        name: String,
    },
    /// Restore PDU power: switch every outlet of the server on (after a PDU forced reset
    /// with `recoveryTime: 0`, or a test that failed half way).
    Acrecovery {
        /// The server (as named in the spec).
        name: String,
        /// Only the outlets on this PDU (its address); `--addr` is an old spelling.
        #[arg(long = "pdu", alias = "addr", value_name = "IP")]
        addr: Option<IpAddr>,
    },
}

/// How a PDU-cut test runs; shared by `server ipdusd` and `act`/`sby ipdusd`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct PduTest {
    /// `same`: every outlet off at once; `serial`: one outlet at a time.
    #[arg(long, value_enum)]
    mode: ModeArg,
    /// Seconds each outlet stays off (5–60; default 5).
    #[arg(long, value_name = "S")]
    pub offtime: Option<u64>,
    /// Seconds between outlets, `--mode serial` only (5–60; default 5).
    #[arg(long, value_name = "S")]
    pub wtime: Option<u64>,
    /// Do not ask for confirmation (asked only when standard input is a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

impl PduTest {
    /// On a terminal, asks before cutting `whose` power; `false` when the operator says no.
    pub fn confirmed(&self, whose: &str) -> bool {
        use std::io::{BufRead, IsTerminal};
        if self.yes || !std::io::stdin().is_terminal() {
            return true;
        }
        let default = crate::pipeline::pdutest::DEFAULT_SECONDS;
        errln!(
            "This cuts the power of {whose}'s PDU outlets ({} s off{}). Continue? [y/N]",
            self.offtime.unwrap_or(default),
            match self.mode {
                ModeArg::Same => ", all at once".to_string(),
                ModeArg::Serial =>
                    format!(", one at a time, {} s apart", self.wtime.unwrap_or(default)),
            }
        );
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES")
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Same,
    Serial,
}

impl PduTest {
    /// A usage error before anything is asked: `--mode same` with options of `serial`.
    pub fn refused(&self, pdu: Option<IpAddr>) -> Option<String> {
        crate::pipeline::pdutest::same_refuses(self.mode(), pdu, self.wtime)
    }

    pub fn mode(&self) -> Mode {
        match self.mode {
            ModeArg::Same => Mode::Same,
            ModeArg::Serial => Mode::Serial,
        }
    }
}

pub fn run(args: &Args) -> Outcome {
    match &args.action {
        Action::ClearWarning { name } => {
            let json = args.output.is_json();
            let req = Request::ClearWarning {
                v: VERSION,
                server: name.clone(),
            };
            match crate::daemon::client::request::<crate::daemon::protocol::ClearWarningReply>(
                &args.socket.control_socket,
                &req,
            ) {
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else if !args.quiet.quiet {
                        outln!(
                            "{}: {}",
                            r.server,
                            if r.cleared {
                                "warning cleared"
                            } else {
                                "had no warning"
                            }
                        );
                    }
                    Outcome::Ok
                }
                Err(e) => super::client_error(json, "server clear-warning", &e),
            }
        }
        Action::Reset { name, address } => reset(args, name, *address),
        Action::Ipdusd {
            name,
            test,
            addr,
            force,
        } => {
            if let Some(why) = test.refused(*addr) {
                super::print_error(args.output.is_json(), "server ipdusd", "usage", &why);
                return Outcome::Trouble;
            }
            if !test.confirmed(name) {
                errln!("haconn server ipdusd: cancelled; nothing was switched");
                return Outcome::Failed;
            }
            let req = Request::ServerIpdu {
                v: VERSION,
                server: name.clone(),
                pdu: *addr,
                mode: Some(test.mode()),
                off_time: test.offtime,
                wait_time: test.wtime,
                force: *force,
            };
            pdu_job(
                &args.socket,
                &args.output,
                args.quiet,
                "server ipdusd",
                &req,
            )
        }
        Action::Acrecovery { name, addr } => {
            let req = Request::ServerIpdu {
                v: VERSION,
                server: name.clone(),
                pdu: *addr,
                mode: None,
                off_time: None,
                wait_time: None,
                force: false,
            };
            pdu_job(
                &args.socket,
                &args.output,
                args.quiet,
                "server acrecovery",
                &req,
            )
        }
    }
}

/// Prints a progress line as it comes, with the time; in JSON an object of its own:
/// `{"progress": TEXT, "at": TIME}`; nothing in text with `--quiet`.
fn progress(json: bool, quiet: QuietArg) -> impl FnMut(&str) {
    move |line: &str| {
        let at = chrono::Local::now();
        if quiet.quiet && !json {
            return;
        }
        if json {
            outln!(
                "{}",
                serde_json::json!({"progress": line, "at": at.to_rfc3339()})
            );
        } else {
            outln!("[{}] {line}", at.format("%H:%M:%S"));
        }
    }
}

/// Runs a PDU job through the daemon, printing its progress lines as they come; `what`
/// names the command in messages.
pub(super) fn pdu_job(
    socket: &SocketArg,
    output: &OutputArg,
    quiet: QuietArg,
    what: &str,
    req: &Request,
) -> Outcome {
    let json = output.is_json();
    match request_with_progress::<PduJobReply>(&socket.control_socket, req, progress(json, quiet)) {
        Ok(reply) => {
            if json {
                print_json(&reply);
            } else if !quiet.quiet {
                outln!("{}", reply.summary);
            }
            Outcome::Ok
        }
        Err(e) if json => super::client_error(true, what, &e),
        Err(e) => {
            match &e {
                ClientError::Refused { code, message } => {
                    errln!("haconn {what}: {message} ({code})")
                }
                _ => errln!("haconn {what}: {e}"),
            }
            Outcome::of_client_error(&e)
        }
    }
}

fn reset(args: &Args, name: &str, subsystem: u32) -> Outcome {
    let req = Request::ServerReset {
        v: VERSION,
        system: name.to_string(),
        subsystem,
    };
    let json = args.output.is_json();
    match request_with_progress::<ServerResetReply>(
        &args.socket.control_socket,
        &req,
        progress(json, args.quiet),
    ) {
        Ok(reply) => {
            let ok = reply.succeeded();
            if json {
                print_json(&reply);
            } else if !ok {
                errln!(
                    "haconn server reset: {name} (subsystem {subsystem}): {}",
                    reply.message
                );
            } else if !args.quiet.quiet {
                outln!("{name} (subsystem {subsystem}): {}", reply.message);
            }
            if ok { Outcome::Ok } else { Outcome::Failed }
        }
        Err(e) if args.output.is_json() => super::client_error(true, "server reset", &e),
        Err(e) => {
            match &e {
                ClientError::Refused { code, message } => {
                    let why = if code == "refused" {
                        String::new()
                    } else {
                        format!(" ({code})")
                    };
                    errln!(
                        "haconn server reset: {name} (subsystem {subsystem}) refused{why}: {message}"
                    );
                }
                _ => errln!("haconn server reset: {e}"),
            }
            Outcome::of_client_error(&e)
        }
    }
}
