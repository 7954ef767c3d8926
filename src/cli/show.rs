//! `haconn show ...`: what the daemon knows.

use serde_json::json;

use super::{Outcome, SocketArg};
use crate::daemon::client::request;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    #[command(flatten)]
    pub socket: SocketArg,
    /// `text` (tables) or `json` (the daemon's answer as is, for scripts).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Same as `--output json`.
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The daemon and the hardware: management servers (BMC address, act/sby, status, BMC,
    /// PDU), servers (power, BMC, PDU, VMware) as the watch last found them, the last reload.
    Status,
    /// The live spec (secrets masked).
    Settings,
    /// HA monitors per system: subsystem#, state, address, port and pair# as the reset
    /// path registered them.
    Hamonitor {
        /// Only this system, or the guests of this ESXi host.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// PDUs as the watch last found them: model, firmware, link, and per fed outlet its
    /// status (Enable powered, Disable cut, -- not known), P (server) or M (management
    /// server) and the server it feeds.
    Ipdu {
        /// Only this PDU.
        #[arg(long, value_name = "IP")]
        addr: Option<std::net::IpAddr>,
    },
    /// PDU settings of every management server and server: PDU forced reset on/off,
    /// timeout, recovery time, outlets.
    IpduSetting,
}

pub fn run(args: &Args) -> Outcome {
    let req = match &args.what {
        What::Status => json!({"op": "status"}),
        What::Settings => json!({"op": "get"}),
        What::Hamonitor { name } => json!({"op": "hamonitor", "name": name}),
        What::Ipdu { .. } => json!({"op": "status"}),
        What::IpduSetting => json!({"op": "ipduSetting"}),
    };
    let reply = match request(&args.socket.control_socket, req) {
        Ok(r) => r,
        Err(e) => {
            errln!("haconn show: {e}");
            return Outcome::of_client_error(&e);
        }
    };
    let mut reply = reply;
    if let What::Ipdu { addr } = &args.what {
        let mut pdus = reply["hardware"]["pdus"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if let Some(a) = addr {
            pdus.retain(|p| p["address"] == a.to_string());
            if pdus.is_empty() {
                errln!("haconn show ipdu: no PDU {a} in the live spec");
                return Outcome::Failed;
            }
        }
        reply = json!({"v": reply["v"], "ok": true, "pdus": pdus});
    }
    if args.json || args.output == Output::Json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&reply).expect("json serializes")
        );
        return Outcome::Ok;
    }
    match &args.what {
        What::Hamonitor { name } => return print_monitors(&reply, name.as_deref()),
        What::Ipdu { .. } => print_pdus(&reply["pdus"]),
        What::IpduSetting => print_ipdu_settings(&reply["settings"]),
        What::Settings => out!("{}", reply["spec"].as_str().unwrap_or("")),
        What::Status => {
            let s = &reply["status"];
            let l = &reply["live"];
            outln!(
                "management server : {}",
                s["localManagementServer"].as_str().unwrap_or("?")
            );
            outln!(
                "spec file         : {}",
                s["specFile"].as_str().unwrap_or("?")
            );
            outln!(
                "started from      : {}",
                s["startedFrom"].as_str().unwrap_or("?")
            );
            if let Some(d) = s["degraded"].as_str() {
                outln!("DEGRADED          : {d}");
            }
            outln!("watching          : {}", s["watching"]);
            outln!(
                "managing          : {} servers, {} systems, {} PDUs",
                l["servers"],
                l["systems"],
                l["pdus"]
            );
            outln!("reloads           : {}", s["reloads"]);
            let c = &reply["resetPath"];
            outln!(
                "reset path        : {} checks, {} resets, {} stopped; refused: {} malformed, {} auth, {} replayed",
                c["checks"],
                c["resets"],
                c["stopped"],
                c["malformed"],
                c["rejectedAuth"],
                c["replayed"]
            );
            match s["lastReload"].as_object() {
                Some(r) => outln!(
                    "last reload       : {} ({}, {} changes) at {}",
                    if r["success"] == true {
                        "completed"
                    } else {
                        "failed"
                    },
                    r["origin"].as_str().unwrap_or("?"),
                    r["changes"],
                    r["at"].as_str().unwrap_or("?"),
                ),
                None => outln!("last reload       : none"),
            }
            if let Some(i) = s["lastInvalid"].as_str() {
                outln!("last refused spec :\n{i}");
            }
            print_hardware(&reply["hardware"]);
        }
    }
    Outcome::Ok
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "----".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

fn print_pdus(pdus: &serde_json::Value) {
    for p in pdus.as_array().map_or(&[][..], Vec::as_slice) {
        outln!(
            "PDU {}  model {}  firmware {}  outlets {}  link {}{}",
            cell(&p["address"]),
            cell(&p["model"]),
            cell(&p["firmware"]),
            cell(&p["outletCount"]),
            cell(&p["link"]),
            p["reason"]
                .as_str()
                .map_or(String::new(), |r| format!(" ({r})"))
        );
        let rows: Vec<Vec<String>> = p["outlets"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|o| {
                vec![
                    cell(&o["outlet"]),
                    cell(&o["status"]),
                    cell(&o["kind"]),
                    cell(&o["server"]),
                    format!(
                        "{}{}",
                        cell(&o["state"]),
                        if o["forcedReset"] == false {
                            " (PDU forced reset off)"
                        } else {
                            ""
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

fn print_ipdu_settings(rows: &serde_json::Value) {
    let rows: Vec<Vec<String>> = rows
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|r| {
            let outlets: Vec<String> = r["outlets"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .map(|o| format!("{}#{}", cell(&o["pdu"]), cell(&o["outlet"])))
                .collect();
            vec![
                cell(&r["name"]),
                cell(&r["kind"]),
                match r["ipdusd"].as_bool() {
                    Some(true) => "on".into(),
                    Some(false) => "off".into(),
                    None => "--".into(),
                },
                cell(&r["timeout"]),
                cell(&r["recoveryTime"]),
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
fn print_hardware(h: &serde_json::Value) {
    let rows = |k: &str| h[k].as_array().cloned().unwrap_or_default();
    let link = |v: &serde_json::Value| cell(&v["link"]);
    let mut reasons = Vec::new();
    let mut note = |who: String, what: &str, v: &serde_json::Value| {
        if let Some(r) = v["reason"].as_str() {
            reasons.push(format!("{who} {what}: {r}"));
        }
    };
    match h["intervalMs"].as_u64() {
        Some(ms) => outln!(
            "hardware watch    : every {ms} ms, last poll {} ms ago",
            cell(&h["lastPollAgoMs"])
        ),
        None => outln!("hardware watch    : off"),
    }
    outln!(
        "management servers: mode {}, link to the peer {}",
        cell(&h["mode"]),
        cell(&h["peerLink"])
    );
    let ms: Vec<Vec<String>> = rows("mservers")
        .iter()
        .map(|m| {
            let name = cell(&m["name"]);
            note(name.clone(), "BMC", &m["bmc"]);
            note(name.clone(), "PDU", &m["pdu"]);
            vec![
                name,
                cell(&m["bmcAddress"]),
                cell(&m["role"]),
                cell(&m["status"]),
                link(&m["bmc"]),
                link(&m["pdu"]),
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
    let servers: Vec<Vec<String>> = rows("servers")
        .iter()
        .map(|s| {
            let name = cell(&s["name"]);
            note(name.clone(), "BMC", &s["bmc"]);
            note(name.clone(), "PDU", &s["pdu"]);
            note(name.clone(), "VMware", &s["vmware"]);
            vec![
                name,
                cell(&s["power"]),
                link(&s["bmc"]),
                link(&s["pdu"]),
                link(&s["vmware"]),
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
fn print_monitors(reply: &serde_json::Value, name: Option<&str>) -> Outcome {
    let rows = reply["monitors"].as_array().map_or(&[][..], Vec::as_slice);
    if rows.is_empty()
        && let Some(n) = name
    {
        errln!("haconn show hamonitor: no HA monitor system or ESXi host named {n}");
        return Outcome::Failed;
    }
    let dash = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "----".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    const COLUMNS: [(&str, &str, bool); 8] = [
        ("<SystemName>", "system", false),
        ("<Server>", "server", false),
        ("<P/V>", "kind", false),
        ("<Subsystem#>", "subsystem", true),
        ("<State>", "state", false),
        ("<IP Address>", "ip", false),
        ("<Port>", "port", true),
        ("<Pair#>", "pair", true),
    ];
    let table: Vec<Vec<String>> =
        std::iter::once(COLUMNS.iter().map(|c| c.0.to_string()).collect())
            .chain(
                rows.iter()
                    .map(|r| COLUMNS.iter().map(|c| dash(&r[c.1])).collect()),
            )
            .collect();
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(COLUMNS)
            .map(|((cell, &w), (_, _, right))| {
                if right {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        outln!("    {}", cells.join("  ").trim_end());
    }
    Outcome::Ok
}
