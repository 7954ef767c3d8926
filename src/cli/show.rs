//! `haconn show ...`: what the daemon knows, as tables or (`--output json`) as the typed
//! reply of the control protocol without its socket envelope.

use super::{Outcome, OutputArg, SocketArg, client_error, print_error, print_json};
use crate::daemon::client::request;
use crate::daemon::protocol::{
    GetReply, HamonitorReply, Hardware, IpduSettingReply, IpduSettingRow, LinkView, MonitorRow,
    PduHealth, Request, StatusReply, VERSION,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The daemon and the hardware: management servers (BMC address, act/sby, status, BMC,
    /// PDU), servers (power, BMC, PDU, VMware) as the watch last found them, the last reload.
    Status,
    /// The live spec (secrets masked): normalized YAML, or its JSON form.
    Settings,
    /// HA monitors per system: subsystem#, state, address, port and pair# as the reset
    /// path registered them, and how long ago its last check came.
    Hamonitor {
        /// Only this system, or the guests of this ESXi host.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// PDUs as the watch last found them: model, firmware, link, and per fed outlet its
    /// status (Enable powered, Disable cut, -- not known), P (server) or M (management
    /// server) and the server it feeds.
    Ipdu {
        /// Only this PDU (its address); `--addr` is an old spelling.
        #[arg(long = "pdu", alias = "addr", value_name = "IP")]
        addr: Option<std::net::IpAddr>,
    },
    /// PDU settings of every management server and server: PDU forced reset on/off,
    /// timeout, recovery time, outlets.
    IpduSetting,
}

/// `show ipdu`'s JSON: the PDUs as the watch last found them.
#[derive(serde::Serialize)]
struct PdusReply<'a> {
    pdus: Vec<&'a PduHealth>,
}

pub fn run(args: &Args) -> Outcome {
    let json = args.output.is_json();
    let socket = &args.socket.control_socket;
    let v = VERSION;
    macro_rules! ask {
        ($req:expr) => {
            match request(socket, &$req) {
                Ok(r) => r,
                Err(e) => return client_error(json, "show", &e),
            }
        };
    }
    match &args.what {
        What::Status => {
            let reply: StatusReply = ask!(Request::Status { v });
            if json {
                print_json(&reply);
            } else {
                print_status(&reply);
            }
        }
        What::Settings => {
            let reply: GetReply = ask!(Request::Get { v });
            if json {
                print_json(&reply.settings);
            } else {
                out!("{}", reply.spec);
            }
        }
        What::Hamonitor { name } => {
            let reply: HamonitorReply = ask!(Request::Hamonitor {
                v,
                name: name.clone()
            });
            if reply.monitors.is_empty()
                && let Some(n) = name
            {
                let msg = format!("no HA monitor system or ESXi host named {n}");
                print_error(json, "show hamonitor", "not-found", &msg);
                return Outcome::Failed;
            }
            if json {
                print_json(&reply);
            } else {
                print_monitors(&reply.monitors);
            }
        }
        What::Ipdu { addr } => {
            let reply: StatusReply = ask!(Request::Status { v });
            let pdus: Vec<&PduHealth> = reply
                .hardware
                .pdus
                .iter()
                .filter(|p| addr.is_none_or(|a| p.address == a.to_string()))
                .collect();
            if let Some(a) = addr
                && pdus.is_empty()
            {
                let msg = format!("no PDU {a} in the live spec");
                print_error(json, "show ipdu", "not-found", &msg);
                return Outcome::Failed;
            }
            if json {
                print_json(&PdusReply { pdus });
            } else if pdus.is_empty() {
                outln!("no PDU in the live spec");
            } else {
                print_pdus(&pdus);
            }
        }
        What::IpduSetting => {
            let reply: IpduSettingReply = ask!(Request::IpduSetting { v });
            if json {
                print_json(&reply);
            } else {
                print_ipdu_settings(&reply.settings);
            }
        }
    }
    Outcome::Ok
}

fn print_status(reply: &StatusReply) {
    let s = &reply.status;
    let l = &reply.live;
    if s.simulated_hardware {
        outln!("SIMULATED HARDWARE: no real BMC, PDU or ESXi host is touched");
    }
    outln!("management server : {}", s.local_management_server);
    outln!("spec file         : {}", s.spec_file);
    outln!("started from      : {}", s.started_from);
    if let Some(d) = &s.degraded {
        outln!("DEGRADED          : {d}");
    }
    outln!("watching          : {}", s.watching);
    outln!(
        "managing          : {} servers, {} systems, {} PDUs",
        l.servers,
        l.systems,
        l.pdus
    );
    outln!("reloads           : {}", s.reloads);
    let c = &reply.reset_path;
    outln!(
        "reset path        : {} checks, {} resets, {} stopped; refused: {} malformed, {} auth, {} replayed",
        c.checks,
        c.resets,
        c.stopped,
        c.malformed,
        c.rejected_auth,
        c.replayed
    );
    outln!(
        "reset-path flood  : {} over their source's rate, {} dropped while busy, {} dropped by the kernel (receive buffer {} bytes)",
        c.rate_limited,
        c.busy_dropped,
        c.socket_drops,
        c.receive_buffer
    );
    match &s.last_reload {
        Some(r) => outln!(
            "last reload       : {} ({}, {} changes) at {}",
            if r.success { "completed" } else { "failed" },
            serde_json::to_value(r.origin)
                .ok()
                .and_then(|o| o.as_str().map(str::to_string))
                .unwrap_or_default(),
            r.changes,
            r.at,
        ),
        None => outln!("last reload       : none"),
    }
    if let Some(i) = &s.last_invalid {
        outln!("last refused spec :\n{i}");
    }
    print_hardware(&reply.hardware);
}

/// A cell: the text, or `----` when there is none.
fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "----".to_string(), |v| v.to_string())
}

/// Prints aligned columns under a header, indented; `right` marks numeric columns.
fn print_table(header: &[&str], right: &[bool], rows: Vec<Vec<String>>) {
    let table: Vec<Vec<String>> = std::iter::once(header.iter().map(|h| h.to_string()).collect())
        .chain(rows)
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(right)
            .map(|((c, &w), &r)| {
                if r {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        outln!("    {}", cells.join("  ").trim_end());
    }
}

fn print_pdus(pdus: &[&PduHealth]) {
    for p in pdus {
        outln!(
            "PDU {}  model {}  firmware {}  outlets {}  link {}{}",
            p.address,
            p.model,
            cell(p.firmware.as_ref()),
            cell(p.outlet_count),
            p.link,
            p.reason
                .as_ref()
                .map_or(String::new(), |r| format!(" ({r})"))
        );
        let rows: Vec<Vec<String>> = p
            .outlets
            .iter()
            .map(|o| {
                vec![
                    o.outlet.to_string(),
                    o.status.clone(),
                    o.kind.clone(),
                    o.server.clone(),
                    format!(
                        "{}{}",
                        o.state,
                        if o.forced_reset {
                            ""
                        } else {
                            " (PDU forced reset off)"
                        }
                    ),
                ]
            })
            .collect();
        if rows.is_empty() {
            outln!("    (no outlet of this PDU feeds a server in the spec)");
        } else {
            print_table(
                &["<Con#>", "<Status>", "<P/M>", "<Server>", "<State>"],
                &[true, false, false, false, false],
                rows,
            );
        }
    }
}

fn print_ipdu_settings(rows: &[IpduSettingRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let outlets: Vec<String> = r
                .outlets
                .iter()
                .map(|o| format!("{}#{}", o.pdu, o.outlet))
                .collect();
            vec![
                r.name.clone(),
                r.kind.clone(),
                match r.ipdusd {
                    Some(true) => "on".into(),
                    Some(false) => "off".into(),
                    None => "--".into(),
                },
                cell(r.timeout),
                cell(r.recovery_time),
                if outlets.is_empty() {
                    "--".into()
                } else {
                    outlets.join(",")
                },
            ]
        })
        .collect();
    print_table(
        &[
            "<Name>",
            "<P/M>",
            "<ipdusd>",
            "<Timeout>",
            "<RecoveryTime>",
            "<Outlets>",
        ],
        &[false, false, false, true, true, false],
        rows,
    );
}

/// The SPEC §8 status tables, then every NG link's reason.
fn print_hardware(h: &Hardware) {
    let mut reasons = Vec::new();
    let mut note = |who: &str, what: &str, l: &LinkView| {
        if let Some(r) = &l.reason {
            reasons.push(format!("{who} {what}: {r}"));
        }
    };
    match h.interval_ms {
        Some(ms) => outln!(
            "hardware watch    : every {ms} ms, last poll {} ms ago",
            cell(h.last_poll_ago_ms)
        ),
        None => outln!("hardware watch    : off"),
    }
    outln!(
        "management servers: mode {}, link to the peer {}",
        h.mode,
        h.peer_link
    );
    let ms: Vec<Vec<String>> = h
        .mservers
        .iter()
        .map(|m| {
            note(&m.name, "BMC", &m.bmc);
            note(&m.name, "PDU", &m.pdu);
            vec![
                m.name.clone(),
                m.bmc_address.clone(),
                m.role.clone(),
                m.status.clone(),
                m.bmc.link.clone(),
                m.pdu.link.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "<Name>",
            "<BMC address>",
            "<Act/Sby>",
            "<Status>",
            "<BMC>",
            "<PDU>",
        ],
        &[false; 6],
        ms,
    );
    outln!("servers:");
    let servers: Vec<Vec<String>> = h
        .servers
        .iter()
        .map(|s| {
            note(&s.name, "BMC", &s.bmc);
            note(&s.name, "PDU", &s.pdu);
            note(&s.name, "VMware", &s.vmware);
            vec![
                s.name.clone(),
                s.power.clone(),
                s.bmc.link.clone(),
                s.pdu.link.clone(),
                s.vmware.link.clone(),
            ]
        })
        .collect();
    print_table(
        &["<Name>", "<Power>", "<BMC>", "<PDU>", "<VMware>"],
        &[false; 5],
        servers,
    );
    if !reasons.is_empty() {
        outln!("links not OK:");
        for r in reasons {
            outln!("    {r}");
        }
    }
}

/// The SPEC §8 table: one row per system; `----` where the reset path knows nothing.
fn print_monitors(rows: &[MonitorRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.system.clone(),
                cell(r.server.as_ref()),
                r.kind.clone(),
                cell(r.subsystem),
                r.state.clone(),
                cell(r.ip),
                cell(r.port),
                cell(r.pair),
                cell(r.last_check_ms_ago.map(|ms| format!("{}s", ms / 1000))),
            ]
        })
        .collect();
    print_table(
        &[
            "<SystemName>",
            "<Server>",
            "<P/V>",
            "<Subsystem#>",
            "<State>",
            "<IP Address>",
            "<Port>",
            "<Pair#>",
            "<LastCheck>",
        ],
        &[false, false, false, true, false, false, true, true, true],
        rows,
    );
}
