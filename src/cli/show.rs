//! `haconn show ...`: what the daemon knows, as tables or (`--output json`) as the typed
//! reply of the control protocol without its socket envelope.
//!
//! The setting displays (`settings`, `mserver-settings`, `ipdu-setting`) follow the
//! original product's manual, section by section and column by column (its "display
//! commands": `haconnshow setting`, `mserversetting`, `ipdusetting`); haconn's additions
//! (the reset path's broadcast and auth, the guests of each ESXi host) come as extra lines
//! or sections, never as changed columns. The text is built by pure functions
//! (`render_*`), pinned by the golden files in `tests/golden/show/`.

use std::fmt::Write as _;

use super::{Outcome, SocketArg, client_error, print_error, print_json};
use crate::daemon::client::request;
use crate::daemon::protocol::{
    GetReply, HamonitorReply, Hardware, IpduSettingReply, LinkView, MonitorRow, MserverSetting,
    PduHealth, Request, SettingsView, StatusReply, VERSION, VersionReply,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
    #[command(flatten)]
    pub socket: SocketArg,
    #[command(flatten)]
    pub output: ShowOutputArg,
}

/// `show`'s output: `text`, `json`, or (`show settings` only) the normalized `yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ShowOutput {
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShowOutputArg {
    /// `text` for people (the original's layouts), `json` for scripts (stable field names;
    /// errors as `{"error": {"code", "message"}}` on stdout), `yaml` (`show settings`
    /// only: the live spec as normalized YAML, secrets masked).
    #[arg(long, global = true, value_enum, default_value_t = ShowOutput::Text)]
    pub output: ShowOutput,
    /// Same as `--output json`.
    #[arg(long, global = true, hide = true)]
    pub json: bool,
}

impl ShowOutputArg {
    fn get(&self) -> ShowOutput {
        if self.json {
            ShowOutput::Json
        } else {
            self.output
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// The daemon and the hardware: management servers (BMC address, act/sby, status, BMC,
    /// PDU), servers (power, BMC, PDU, VMware) as the watch last found them, the last reload.
    Status,
    /// The service settings in the original's sections: mode, reset path, physical
    /// servers, virtual servers (and their guests), hispeed. `--output yaml`: the live
    /// spec as normalized YAML; `--output json`: its JSON form (secrets masked).
    Settings,
    /// The management servers' settings: BMC, PDU forced reset, management LAN.
    MserverSettings,
    /// HA monitors per system: subsystem#, state (normal, reset, dump, poff, error = cannot
    /// be reset now, ---- = no monitor), address, port, pair# (cluster flag on only) as the
    /// reset path registered them, and how long ago its last check came.
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
    /// PDU settings: the SNMP community (masked), the PDUs with their models, and the
    /// outlets feeding every management server and server.
    IpduSetting,
    /// Hardware alerts received (BMC traps, `haconn alert`), oldest first, with what was
    /// done for each, and the trap receiver's counts. The daemon keeps the last 1000; the
    /// alert log keeps them all.
    Alerts {
        /// Only alerts at or after this time: `30m`, `2h`, `1d` ago, or a local time
        /// (`2026-11-30 14:00`, `2026/11/30 14:00:05`, RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_since)]
        since: Option<i64>,
        /// Only alerts about this server.
        #[arg(long, value_name = "NAME")]
        server: Option<String>,
    },
    /// The daemon's version, the protocols it speaks (control socket, reset path, mlan)
    /// and its build (commit, target, profile, compiler), this client's, and a warning
    /// when the two differ.
    Version,
}

/// `show version`'s JSON (and the dump's `versions.json`): the client, the daemon (`null`
/// when it did not answer), and `warning` when they differ in version, protocols or
/// commit.
#[derive(Debug, serde::Serialize)]
pub struct Versions {
    pub client: VersionReply,
    pub daemon: Option<VersionReply>,
    /// The client and the daemon differ.
    pub differ: bool,
    pub warning: Option<String>,
}

impl Versions {
    pub fn of(client: VersionReply, daemon: Option<VersionReply>) -> Versions {
        let warning = daemon
            .as_ref()
            .and_then(|d| client.differences(d))
            .map(|d| {
                format!(
                    "the client and the daemon differ ({d}): the daemon runs another build than \
                 this command (restart it after an upgrade, or use the client of its build)"
                )
            });
        Versions {
            client,
            daemon,
            differ: warning.is_some(),
            warning,
        }
    }

    /// The text `show version` prints.
    pub fn render(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "client    : {}", self.client.line());
        match &self.daemon {
            Some(d) => {
                let _ = writeln!(t, "daemon    : {}", d.line());
                let p = &d.protocols;
                let _ = writeln!(
                    t,
                    "protocols : control socket v{}, reset path {}, mlan {}",
                    p.control, p.reset_path, p.mlan
                );
            }
            None => t.push_str("daemon    : did not answer\n"),
        }
        if let Some(w) = &self.warning {
            let _ = writeln!(t, "WARNING: {w}");
        }
        t
    }
}

/// `--since`: Unix milliseconds from an age (`30s`, `30m`, `2h`, `1d`) or a local time.
pub fn parse_since(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let now = chrono::Local::now();
    if let Some(unit) = s.chars().last().filter(|c| c.is_ascii_alphabetic())
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        let secs = match unit {
            's' => Some(n),
            'm' => n.checked_mul(60),
            'h' => n.checked_mul(3600),
            'd' => n.checked_mul(86_400),
            _ => None,
        };
        if let Some(secs) = secs.filter(|s| *s >= 0) {
            return Ok(now.timestamp_millis() - secs.saturating_mul(1000));
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y/%m/%d %H:%M:%S",
        "%Y/%m/%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f)
            && let Some(l) = t.and_local_timezone(chrono::Local).earliest()
        {
            return Ok(l.timestamp_millis());
        }
    }
    for f in ["%Y-%m-%d", "%Y/%m/%d"] {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, f)
            && let Some(l) = d
                .and_hms_opt(0, 0, 0)
                .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
        {
            return Ok(l.timestamp_millis());
        }
    }
    Err(format!(
        "`{s}` is neither an age (30m, 2h, 1d) nor a time (2026-11-30 14:00, RFC 3339)"
    ))
}

/// `show ipdu`'s JSON: the PDUs as the watch last found them.
#[derive(serde::Serialize)]
pub(super) struct PdusReply<'a> {
    pub pdus: Vec<&'a PduHealth>,
}

/// `show mserver-settings`' JSON: the management servers' settings.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MserverSettingsReply<'a> {
    pub management_servers: &'a [MserverSetting],
}

pub fn run(args: &Args) -> Outcome {
    let output = args.output.get();
    let json = output == ShowOutput::Json;
    if output == ShowOutput::Yaml && !matches!(args.what, What::Settings) {
        errln!("haconn show: --output yaml is for `show settings` only (use text or json)");
        return Outcome::Trouble;
    }
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
            match output {
                ShowOutput::Json => print_json(&reply.settings),
                ShowOutput::Yaml => out!("{}", reply.spec),
                ShowOutput::Text => out!("{}", render_settings(&reply.view)),
            }
        }
        What::MserverSettings => {
            let reply: GetReply = ask!(Request::Get { v });
            if json {
                print_json(&MserverSettingsReply {
                    management_servers: &reply.view.management_servers,
                });
            } else {
                out!("{}", render_mserver_settings(&reply.view));
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
                out!("{}", render_monitors(&reply.monitors));
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
        What::Alerts { since, server } => {
            let reply: crate::daemon::protocol::AlertsReply = ask!(Request::Alerts {
                v,
                since_ms: *since,
                server: server.clone(),
            });
            if json {
                print_json(&reply);
            } else {
                out!("{}", render_alerts(&reply));
            }
        }
        What::Version => {
            let client = VersionReply::this_build();
            let daemon: VersionReply = match request(socket, &Request::Version { v }) {
                Ok(r) => r,
                Err(e) => {
                    if !json {
                        outln!("client    : {}", client.line());
                    }
                    return client_error(json, "show version", &e);
                }
            };
            let versions = Versions::of(client, Some(daemon));
            if json {
                print_json(&versions);
            } else {
                out!("{}", versions.render());
            }
        }
        What::IpduSetting => {
            let reply: IpduSettingReply = ask!(Request::IpduSetting { v });
            if json {
                print_json(&reply);
            } else {
                out!("{}", render_ipdu_settings(&reply));
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
        "reset path        : {} checks, {} resets, {} stopped; refused: {} malformed, {} auth, {} replayed; replies not sent: {} to an address with no registered monitor, {} longer than their request",
        c.checks,
        c.resets,
        c.stopped,
        c.malformed,
        c.rejected_auth,
        c.replayed,
        c.replies_unregistered,
        c.replies_withheld
    );
    outln!(
        "reset-path flood  : {} over their source's rate, {} dropped while busy, {} dropped by the kernel (not the magic, or the buffer full; buffer {} bytes)",
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
    if let Some(p) = &reply.pair {
        outln!(
            "pair              : {} is {}{}; peer {} {} (link {}, {}); {}; reset path address {}; {} takeover(s)",
            p.me,
            p.role,
            if p.fencing { ", fencing its peer" } else { "" },
            p.peer,
            p.peer_role,
            p.peer_link,
            p.peer_state,
            if p.redundant {
                "redundant"
            } else {
                "NOT redundant"
            },
            p.address,
            p.takeovers
        );
        outln!(
            "pair spec         : {} here; on the peer: {}",
            p.spec_checksum,
            p.peer_spec
        );
        outln!(
            "pair state sync   : generation {} here, {} taken by the standby; {} reset end(s) held for it, {} sent after 1 s without its word",
            c.sync_generation,
            c.standby_generation,
            c.held_for_standby,
            c.held_timed_out
        );
        if let Some(b) = &p.blocked {
            outln!("CANNOT TAKE OVER  : the peer is lost and not fenced: {b}");
        }
        if c.standby_dropped > 0 {
            outln!(
                "standby drops     : {} reset-path datagrams dropped while not active",
                c.standby_dropped
            );
        }
    }
    print_hardware(&reply.hardware);
}

/// A cell: the text, or `----` when there is none.
fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "----".to_string(), |v| v.to_string())
}

/// Prints aligned columns under a header, indented; `right` marks numeric columns.
fn print_table(header: &[&str], right: &[bool], rows: Vec<Vec<String>>) {
    let mut text = String::new();
    write_table(&mut text, "    ", header, right, rows);
    out!("{text}");
}

/// Aligned columns under a header, each line after `indent`, two spaces apart; `right`
/// marks numeric columns. Trailing spaces are trimmed.
fn write_table(
    text: &mut String,
    indent: &str,
    header: &[&str],
    right: &[bool],
    rows: Vec<Vec<String>>,
) {
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
        let _ = writeln!(text, "{indent}{}", cells.join("  ").trim_end());
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
    let warned: Vec<String> = h
        .servers
        .iter()
        .filter_map(|s| {
            let w = s.warning.as_ref()?;
            Some(format!(
                "    {}: {} since {}: {}",
                s.name, w.kind, w.at, w.reason
            ))
        })
        .collect();
    if !warned.is_empty() {
        outln!("failure warnings (haconn alert clear SERVER when dealt with):");
        for w in warned {
            outln!("{w}");
        }
    }
    if !reasons.is_empty() {
        outln!("links not OK:");
        for r in reasons {
            outln!("    {r}");
        }
    }
}

/// The SPEC §8 table: one row per system; `----` where the reset path knows nothing;
/// then why each system in state `error` cannot be reset now.
pub(crate) fn render_monitors(rows: &[MonitorRow]) -> String {
    let mut text = String::new();
    let cells: Vec<Vec<String>> = rows
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
    write_table(
        &mut text,
        "    ",
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
        cells,
    );
    let why: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("    {}: {}", r.system, r.reason.as_ref()?)))
        .collect();
    if !why.is_empty() {
        text.push_str("cannot be reset now:\n");
        for w in why {
            let _ = writeln!(text, "{w}");
        }
    }
    let warned: Vec<String> = rows
        .iter()
        .filter_map(|r| Some(format!("    {}: {}", r.system, r.warning.as_ref()?)))
        .collect();
    if !warned.is_empty() {
        text.push_str("warning (its server may fail soon):\n");
        for w in warned {
            let _ = writeln!(text, "{w}");
        }
    }
    text
}

/// `show alerts`: where traps are received and what was refused, then one block per
/// alert.
pub(crate) fn render_alerts(r: &crate::daemon::protocol::AlertsReply) -> String {
    let mut t = String::new();
    let c = &r.counts;
    let _ = writeln!(
        t,
        "trap receiver: {}",
        r.listening
            .as_deref()
            .map_or("off (no `alerts` in the spec)".to_string(), |l| format!(
                "on {l}; {} received, refused: {} malformed, {} wrong community, {} from no server's BMC, {} while busy; {} informs answered; {} warning commands run; {} alert-log lines suppressed",
                c.received,
                c.malformed,
                c.bad_community,
                c.unknown_source,
                c.busy_dropped,
                c.informs_answered,
                c.commands,
                c.log_suppressed
            ))
    );
    if r.alerts.is_empty() {
        t.push_str("no alerts\n");
    }
    for a in &r.alerts {
        let _ = writeln!(
            t,
            "[{}] {} from {} about {}: {}\n    {}\n    => {}",
            a.at,
            a.via,
            a.from.as_deref().unwrap_or("----"),
            a.server.as_deref().unwrap_or("----"),
            a.kind,
            a.detail,
            a.action
        );
    }
    t
}

/// `on` / `off`.
fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

/// A setting in seconds, or `--` when not set (the manual's unset timeout).
fn secs(v: Option<u32>) -> String {
    v.map_or_else(|| "--".into(), |v| v.to_string())
}

/// The manual's mask column: a dotted mask for IPv4, `/LEN` for IPv6.
fn mask(address: std::net::IpAddr, prefix_len: u8) -> String {
    match address {
        std::net::IpAddr::V4(_) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            std::net::Ipv4Addr::from(bits).to_string()
        }
        std::net::IpAddr::V6(_) => format!("/{prefix_len}"),
    }
}

/// `show settings`: the manual's `haconnshow setting` (sections <mode>, <resetpath>,
/// <physical server>, <virtual server>, <hispeed failover>); haconn adds the reset path's
/// broadcast and auth as a second <resetpath> line and the guests of each ESXi host as a
/// <virtual server guest> section (left out when no server runs ESXi).
pub(crate) fn render_settings(v: &SettingsView) -> String {
    let mut t = String::new();
    t.push_str("-- HA monitor connector service setting --\n\n");
    t.push_str("<mode>\n");
    t.push_str(match v.mode.as_str() {
        "pair" => " 2:server duplication\n",
        _ => " 1:single server (not redundant)\n",
    });
    let rp = &v.reset_path;
    let _ = writeln!(
        t,
        "\n<resetpath>\n addr:{}    mask:{}    port number:{}",
        rp.address,
        mask(rp.address, rp.prefix_len),
        rp.port
    );
    let _ = writeln!(t, " broadcast:{}    auth:{}", cell(rp.broadcast), rp.auth);
    t.push_str("\n<physical server>\n");
    let rows = v
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut row = bmc_columns(i, &s.name, s.bmc_address, &s.account, s.ipdusd, s.timeout);
            row.extend([secs(s.recovery_time), on_off(s.cluster).into()]);
            row
        })
        .collect();
    write_table(
        &mut t,
        " ",
        &[
            "#", "name", "bmc addr", "account", "ipdusd", "timeout", "rc time", "cluster",
        ],
        &[true, false, false, false, false, true, true, false],
        rows,
    );
    t.push_str("\n<virtual server>\n");
    let rows = v
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (addr, port, account, enabled) = match &s.esxi {
                Some(e) => (
                    e.address.to_string(),
                    e.port.to_string(),
                    e.account.clone(),
                    e.enabled,
                ),
                None => ("----".into(), "----".into(), "----".into(), false),
            };
            vec![
                (i + 1).to_string(),
                s.name.clone(),
                addr,
                port,
                account,
                if enabled { "Enable" } else { "Disable" }.into(),
            ]
        })
        .collect();
    write_table(
        &mut t,
        " ",
        &["#", "name", "VMware addr", "port", "account", "VMware"],
        &[true, false, false, true, false, false],
        rows,
    );
    let mut rows = Vec::new();
    for (i, s) in v.servers.iter().enumerate() {
        let Some(e) = &s.esxi else { continue };
        if e.guests.is_empty() {
            rows.push(vec![(i + 1).to_string(), s.name.clone(), "----".into()]);
        }
        for (k, g) in e.guests.iter().enumerate() {
            rows.push(if k == 0 {
                vec![(i + 1).to_string(), s.name.clone(), g.clone()]
            } else {
                vec![String::new(), String::new(), g.clone()]
            });
        }
    }
    if !rows.is_empty() {
        t.push_str("\n<virtual server guest>\n");
        write_table(
            &mut t,
            " ",
            &["#", "name", "VM name"],
            &[true, false, false],
            rows,
        );
    }
    t.push_str("\n<hispeed failover>\n");
    let _ = writeln!(t, " status   :{}", on_off(v.hispeed.is_some()));
    match v.hispeed {
        Some(ms) => {
            let _ = writeln!(t, " resettime: {ms} msec");
        }
        None => t.push_str(" resettime: ----\n"),
    }
    t
}

/// The columns the manual's server and management server tables share: #, name, bmc addr,
/// account, ipdusd, timeout.
fn bmc_columns(
    i: usize,
    name: &str,
    bmc: std::net::IpAddr,
    account: &str,
    ipdusd: bool,
    timeout: Option<u32>,
) -> Vec<String> {
    vec![
        (i + 1).to_string(),
        name.to_string(),
        bmc.to_string(),
        account.to_string(),
        on_off(ipdusd).into(),
        secs(timeout),
    ]
}

/// `show mserver-settings`: the manual's `haconnshow mserversetting` (<management
/// server>, <management LAN>).
pub(crate) fn render_mserver_settings(v: &SettingsView) -> String {
    let mut t = String::new();
    t.push_str("-- HA monitor connector management server setting --\n\n");
    t.push_str("<management server>\n");
    let rows = v
        .management_servers
        .iter()
        .enumerate()
        .map(|(i, m)| bmc_columns(i, &m.name, m.bmc_address, &m.account, m.ipdusd, m.timeout))
        .collect();
    write_table(
        &mut t,
        " ",
        &["#", "name", "bmc addr", "account", "ipdusd", "timeout"],
        &[true, false, false, false, false, true],
        rows,
    );
    t.push_str("\n<management LAN>\n");
    let rows = v
        .management_servers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            vec![
                (i + 1).to_string(),
                m.name.clone(),
                m.mlan_address.to_string(),
                m.mlan_port.to_string(),
            ]
        })
        .collect();
    write_table(
        &mut t,
        " ",
        &["#", "name", "LAN addr", "port"],
        &[true, false, false, true],
        rows,
    );
    t
}

/// `show ipdu-setting`: the manual's `haconnshow ipdusetting` (<ipdu> with the SNMP
/// community, masked, and the PDUs with their models; <management server> and <physical
/// server> with two outlets a line, continued on the next lines). A server without
/// outlets shows `----`.
pub(crate) fn render_ipdu_settings(r: &IpduSettingReply) -> String {
    let mut t = String::new();
    t.push_str("-- HA monitor connector ipdu setting --\n\n");
    t.push_str("<ipdu>\n");
    let _ = writeln!(t, "SNMP Community : {}", cell(r.community.as_ref()));
    let rows = r
        .pdus
        .iter()
        .enumerate()
        .map(|(i, p)| vec![(i + 1).to_string(), p.address.to_string(), p.model.clone()])
        .collect();
    write_table(
        &mut t,
        " ",
        &["#", "ipdu addr", "model"],
        &[true, false, false],
        rows,
    );
    for (kind, title) in [("M", "management server"), ("P", "physical server")] {
        let _ = writeln!(t, "\n<{title}>");
        let mut rows = Vec::new();
        for (i, s) in r.settings.iter().filter(|s| s.kind == kind).enumerate() {
            let mut pairs: Vec<[String; 2]> = s
                .outlets
                .iter()
                .map(|o| [o.pdu.to_string(), o.outlet.to_string()])
                .collect();
            if pairs.is_empty() {
                pairs.push(["----".into(), "----".into()]);
            }
            for (k, two) in pairs.chunks(2).enumerate() {
                let mut row = if k == 0 {
                    vec![(i + 1).to_string(), s.name.clone()]
                } else {
                    vec![String::new(), String::new()]
                };
                for p in two {
                    row.extend(p.iter().cloned());
                }
                row.resize(6, String::new());
                rows.push(row);
            }
        }
        write_table(
            &mut t,
            " ",
            &["#", "name", "ipdu addr", "con#", "ipdu addr", "con#"],
            &[true, false, false, true, false, true],
            rows,
        );
    }
    t
}

#[cfg(test)]
#[path = "show_tests.rs"]
mod tests;
