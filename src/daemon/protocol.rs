//! The control-socket protocol, version 1: one JSON object per line each way, typed on
//! both ends. The daemon ([`super::control`]) parses [`Request`] and answers with the
//! reply struct of that operation; the CLI ([`super::client`]) sends the same [`Request`]
//! and reads the same reply struct, so a field renamed on one side is a compile error or a
//! failing test, never a silently empty column.
//!
//! Request: `{"v": 1, "op": "...", ...}`; response: `{"v": 1, "ok": true, ...}` or
//! `{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}`. Operations and
//! their fields are documented in README.md ("Control socket"). The `v`/`ok` envelope
//! belongs to the socket: `haconn … --output json` prints the reply struct without it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::pipeline::Simulation;
use crate::spec::model::Spec;

pub const VERSION: u64 = 1;
/// Longest request line accepted: a spec file is at most 8 MiB
/// ([`crate::spec::yaml::MAX_FILE_BYTES`]) and a valid one escapes to at most twice that
/// as a JSON string (YAML allows no control character but tab, CR and LF, each escaped
/// in two bytes; other characters are sent as they are, not as `\uXXXX`), plus 1 MiB for
/// the rest of the request: 17 MiB.
pub const MAX_LINE: usize = 2 * crate::spec::yaml::MAX_FILE_BYTES + 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", deny_unknown_fields)]
pub enum Request {
    /// Daemon status: start source, last reload, counts.
    Status { v: u64 },
    /// The live spec (secrets masked) and the live facts.
    Get { v: u64 },
    /// The plan and predicted summary for a spec text, touching nothing.
    Plan { v: u64, spec: String },
    /// Apply a spec text as a reload; `dryRun` is `plan`. While the daemon watches its
    /// spec file, a text other than that file's is refused (the watcher would undo it at
    /// the file's next change) unless `force`; `file` names where the text came from.
    Apply {
        v: u64,
        spec: String,
        #[serde(default, rename = "dryRun")]
        dry_run: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        #[serde(default)]
        force: bool,
    },
    /// Set a monitor or reset state in the pipeline (only with `--test-hooks`).
    Simulate { v: u64, simulation: Simulation },
    /// Every HA monitor system of the live spec with what the reset path knows of it;
    /// `name` keeps one system (or the guests of one ESXi host).
    Hamonitor {
        v: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An operator's test soft reset of a system (`haconn server reset`). Answered with
    /// progress lines as the NMI goes out and is acknowledged, then, when the test ended
    /// (at most about 75 s), the response with its `outcome`.
    ServerReset {
        v: u64,
        system: String,
        subsystem: u32,
    },
    /// A PDU-cut test of a server's outlets (`mode` given) or the restore of its PDU power
    /// (no `mode`). Answered with progress lines `{"v": 1, "progress": "..."}` as the
    /// outlets switch, then the response.
    ServerIpdu {
        v: u64,
        server: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pdu: Option<std::net::IpAddr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<crate::pipeline::pdutest::Mode>,
        #[serde(default, rename = "offTime", skip_serializing_if = "Option::is_none")]
        off_time: Option<u64>,
        #[serde(default, rename = "waitTime", skip_serializing_if = "Option::is_none")]
        wait_time: Option<u64>,
        #[serde(default)]
        force: bool,
    },
    /// The PDU settings of every server and management server.
    IpduSetting { v: u64 },
    /// A command to the management-server pair: `handover` (`act restart`) or
    /// `confirm-peer-down` (`sby takeover --confirm-peer-down`).
    Pair { v: u64, action: PairAction },
    /// A hardware alert from a management tool (`haconn alert`): the server by `address`
    /// (its BMC's or ESXi host's) or by `server`; `kind` (default `powerOff`); the tool's
    /// `date`, `time` and `alertId` as it gave them, for the alert log.
    Alert {
        v: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<IpAddr>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        kind: crate::spec::model::AlertKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        date: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time: Option<String>,
        #[serde(default, rename = "alertId", skip_serializing_if = "Option::is_none")]
        alert_id: Option<String>,
    },
    /// The recent alerts (at or after `sinceMs`, Unix ms; of `server`) and the trap
    /// receiver's counts (`haconn show alerts`).
    Alerts {
        v: u64,
        #[serde(default, rename = "sinceMs", skip_serializing_if = "Option::is_none")]
        since_ms: Option<i64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
    },
    /// Clears a server's failure warning (`haconn server clear-warning`).
    ClearWarning { v: u64, server: String },
    /// A fence agent's action (`fence_haconn`, Pacemaker): `reboot` (the full reset,
    /// answered when it has ended), `off`/`on` (confirmed by a power read, or for `off`
    /// every PDU outlet cut), `status` (a power read now), `list`, `monitor`.
    Fence {
        v: u64,
        action: FenceAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
    },
    /// What this daemon is: its version, the protocols it speaks and how it was built
    /// (`haconn show version`).
    Version { v: u64 },
    /// The peer's support archive, packed there and fetched over the mlan (`haconn dump`
    /// in a pair).
    PeerDump { v: u64 },
    /// The PDU-cut test of the `active` or `standby` management server; streams progress
    /// like `serverIpdu`.
    MserverIpdu {
        v: u64,
        role: String,
        mode: crate::pipeline::pdutest::Mode,
        #[serde(default, rename = "offTime", skip_serializing_if = "Option::is_none")]
        off_time: Option<u64>,
        #[serde(default, rename = "waitTime", skip_serializing_if = "Option::is_none")]
        wait_time: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairAction {
    Handover,
    ConfirmPeerDown,
    /// `act copy`: send the active's applied spec to the standby now.
    Copy,
    /// `sby restart`: the standby's daemon restarts (here, or on the peer).
    StandbyRestart,
    /// `sby shutdown`: the standby's daemon stops (here, or on the peer).
    StandbyShutdown,
    /// `act shutdown`: both daemons stop, the standby first.
    Shutdown,
}

impl Request {
    /// An operator's action, as the operator-command log says it (secrets never: a spec
    /// is named by its file and checksum, not quoted); `None` for what only reads.
    pub fn operation(&self) -> Option<String> {
        let spec_id = |spec: &str| crate::pair::sync::checksum(spec);
        Some(match self {
            Request::Status { .. }
            | Request::Get { .. }
            | Request::Plan { .. }
            | Request::Hamonitor { .. }
            | Request::IpduSetting { .. }
            | Request::Alerts { .. }
            | Request::Version { .. }
            | Request::PeerDump { .. } => return None,
            Request::Apply {
                spec,
                dry_run,
                file,
                force,
                ..
            } => format!(
                "apply{}{} file={} spec=sha256:{}",
                if *dry_run { " --dry-run" } else { "" },
                if *force { " --force" } else { "" },
                file.as_deref().unwrap_or("-"),
                spec_id(spec)
            ),
            Request::Simulate { simulation, .. } => format!("simulate {simulation:?}"),
            Request::ServerReset {
                system, subsystem, ..
            } => format!("server reset {system} --subsystem {subsystem}"),
            Request::ServerIpdu {
                server,
                pdu,
                mode,
                off_time,
                wait_time,
                force,
                ..
            } => match mode {
                None => format!(
                    "server acrecovery {server}{}",
                    pdu.map(|p| format!(" --pdu {p}")).unwrap_or_default()
                ),
                Some(m) => format!(
                    "server ipdusd {server} --mode {m:?}{}{}{}{}",
                    pdu.map(|p| format!(" --pdu {p}")).unwrap_or_default(),
                    off_time
                        .map(|t| format!(" --offtime {t}"))
                        .unwrap_or_default(),
                    wait_time
                        .map(|t| format!(" --wtime {t}"))
                        .unwrap_or_default(),
                    if *force { " --force" } else { "" }
                ),
            },
            Request::MserverIpdu {
                role,
                mode,
                off_time,
                wait_time,
                ..
            } => format!(
                "{} ipdusd --mode {mode:?}{}{}",
                if role == "active" { "act" } else { "sby" },
                off_time
                    .map(|t| format!(" --offtime {t}"))
                    .unwrap_or_default(),
                wait_time
                    .map(|t| format!(" --wtime {t}"))
                    .unwrap_or_default()
            ),
            Request::Pair { action, .. } => format!("pair {action:?}"),
            Request::Alert {
                address,
                server,
                kind,
                alert_id,
                ..
            } => format!(
                "alert {} --kind {} id={}",
                address.map_or_else(
                    || format!("--server {}", server.as_deref().unwrap_or("-")),
                    |a| a.to_string()
                ),
                kind.as_str(),
                alert_id.as_deref().unwrap_or("-")
            ),
            Request::ClearWarning { server, .. } => format!("server clear-warning {server}"),
            Request::Fence { action, target, .. } => {
                format!("fence {action:?} {}", target.as_deref().unwrap_or("-"))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FenceAction {
    Reboot,
    Off,
    On,
    Status,
    List,
    Monitor,
}

/// What a fence action did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FenceReply {
    pub action: FenceAction,
    pub target: Option<String>,
    /// `done` (reboot, list, monitor), `on` or `off` (on, off, status).
    pub result: String,
    pub message: String,
    /// `list`: every system of the live spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub systems: Vec<String>,
}

/// `peerDump`: the peer's `haconn dump` archive (tar.gz, base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerDumpReply {
    pub peer: String,
    pub archive: String,
}

/// `version`: what a haconn build is, the protocols it speaks and how it was built. The
/// CLI makes the same for itself ([`VersionReply::this_build`]) and compares the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionReply {
    /// The package version (`0.1.0`).
    pub version: String,
    pub protocols: Protocols,
    pub build: BuildInfo,
}

/// The versions of haconn's protocols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Protocols {
    /// The control socket's `v` ([`VERSION`]).
    pub control: u64,
    /// The reset path's magic, which carries its version (`HCN1`, PROTOCOL.md).
    pub reset_path: String,
    /// The mlan heartbeat's magic (`HCM1`).
    pub mlan: String,
}

/// How a binary was built; `null` where the build did not know (no git at build time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// The git commit built (12 hex digits).
    pub commit: Option<String>,
    /// The target triple.
    pub target: Option<String>,
    /// `release` or `debug`.
    pub profile: Option<String>,
    /// The compiler (`rustc -V`).
    pub rustc: Option<String>,
}

impl VersionReply {
    /// This binary's version, protocols and build (from `build.rs`).
    pub fn this_build() -> VersionReply {
        let magic = |m: &[u8; 4]| String::from_utf8_lossy(m).into_owned();
        VersionReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocols: Protocols {
                control: VERSION,
                reset_path: magic(crate::resetpath::codec::MAGIC),
                mlan: magic(crate::pair::wire::MAGIC),
            },
            build: BuildInfo {
                commit: option_env!("HACONN_BUILD_COMMIT").map(str::to_string),
                target: option_env!("HACONN_BUILD_TARGET").map(str::to_string),
                profile: option_env!("HACONN_BUILD_PROFILE").map(str::to_string),
                rustc: option_env!("HACONN_BUILD_RUSTC").map(str::to_string),
            },
        }
    }

    /// How `other` differs from this one in what matters between a client and a daemon
    /// (version, protocols, commit), as a sentence; `None` when it does not.
    pub fn differences(&self, other: &VersionReply) -> Option<String> {
        let mut d = Vec::new();
        if self.version != other.version {
            d.push(format!("version {} vs {}", self.version, other.version));
        }
        if self.protocols != other.protocols {
            let p =
                |p: &Protocols| format!("control {} / {} / {}", p.control, p.reset_path, p.mlan);
            d.push(format!(
                "protocols {} vs {}",
                p(&self.protocols),
                p(&other.protocols)
            ));
        }
        if self.build.commit != other.build.commit {
            let c = |c: &Option<String>| c.clone().unwrap_or_else(|| "unknown".into());
            d.push(format!(
                "commit {} vs {}",
                c(&self.build.commit),
                c(&other.build.commit)
            ));
        }
        (!d.is_empty()).then(|| d.join(", "))
    }

    /// One line: `haconn 0.1.0 (commit …, target, profile, rustc …)`.
    pub fn line(&self) -> String {
        let b = &self.build;
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        format!(
            "haconn {} (commit {}, {}, {}, {})",
            self.version,
            or(&b.commit),
            or(&b.target),
            or(&b.profile),
            or(&b.rustc)
        )
    }
}

/// What the daemon did with `haconn alert`'s alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertReply {
    /// The server it was about (`null`: no server has that address).
    pub server: Option<String>,
    pub outcome: crate::pipeline::AlertOutcome,
    /// The outcome as the alert log says it.
    pub action: String,
}

/// `haconn show alerts`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertsReply {
    /// Where the trap receiver listens (`null`: no `alerts` in the spec).
    pub listening: Option<String>,
    pub counts: crate::daemon::alerts::AlertCounts,
    pub alerts: Vec<crate::daemon::alerts::AlertRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearWarningReply {
    pub server: String,
    /// Whether it had a warning.
    pub cleared: bool,
}

/// What a pair command did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairReply {
    pub message: String,
    pub pair: crate::pair::task::PairStatus,
}

/// An error reply's body (`{"ok": false, "error": …}`), also what `--output json` prints
/// for any error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// A progress line of a PDU job (`{"v": 1, "progress": TEXT}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub progress: String,
}

/// `status`: the daemon, the reset path's counters, the live spec's size, the hardware.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReply {
    pub status: super::supervisor::Status,
    pub reset_path: ResetPathCounters,
    pub live: LiveCounts,
    pub hardware: Hardware,
    /// The pair as this management server sees it (`mode: pair`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<crate::pair::task::PairStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetPathCounters {
    pub checks: u64,
    pub resets: u64,
    pub stopped: u64,
    pub malformed: u64,
    pub rejected_auth: u64,
    pub replayed: u64,
    pub send_errors: u64,
    pub high_water_errors: u64,
    pub replies_withheld: u64,
    #[serde(default)]
    pub replies_unregistered: u64,
    pub rate_limited: u64,
    pub busy_dropped: u64,
    pub socket_drops: u64,
    pub receive_buffer: u64,
    /// Dropped unread because this management server was not the active one.
    #[serde(default)]
    pub standby_dropped: u64,
    /// In a pair: the reset core's state generation, the one the standby last took, and
    /// ends of resets held for it (and of those, released after a second without its
    /// word).
    #[serde(default)]
    pub sync_generation: u64,
    #[serde(default)]
    pub standby_generation: u64,
    #[serde(default)]
    pub held_for_standby: u64,
    #[serde(default)]
    pub held_timed_out: u64,
}

impl From<&crate::pipeline::Counters> for ResetPathCounters {
    fn from(c: &crate::pipeline::Counters) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        ResetPathCounters {
            checks: c.checks.load(Relaxed),
            resets: c.resets.load(Relaxed),
            stopped: c.stopped.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            rejected_auth: c.rejected_auth.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            send_errors: c.send_errors.load(Relaxed),
            high_water_errors: c.high_water_errors.load(Relaxed),
            replies_withheld: c.replies_withheld.load(Relaxed),
            replies_unregistered: c.replies_unregistered.load(Relaxed),
            rate_limited: c.rate_limited.load(Relaxed),
            busy_dropped: c.busy_dropped.load(Relaxed),
            socket_drops: c.socket_drops.load(Relaxed),
            receive_buffer: c.receive_buffer.load(Relaxed),
            standby_dropped: c.standby_dropped.load(Relaxed),
            sync_generation: c.sync_generation.load(Relaxed),
            standby_generation: c.standby_generation.load(Relaxed),
            held_for_standby: c.held_for_standby.load(Relaxed),
            held_timed_out: c.held_timed_out.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveCounts {
    pub management_servers: usize,
    pub servers: usize,
    pub systems: usize,
    pub pdus: usize,
}

/// The hardware watch's view (SPEC §8 status tables). The pipeline builds it as JSON; the
/// daemon reads it into this type before answering (unknown fields refused), so the shape
/// on the wire is this one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hardware {
    pub mode: String,
    pub peer_link: String,
    pub interval_ms: Option<u64>,
    pub rounds: u64,
    pub last_poll_ago_ms: Option<u64>,
    pub mservers: Vec<MserverHealth>,
    pub servers: Vec<ServerHealth>,
    pub pdus: Vec<PduHealth>,
    /// Polls that found a device's link NG since the daemon started (or since the device
    /// came into the spec), per device that had any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub link_errors: Vec<LinkErrors>,
}

/// Failed polls of one device: `device` is `bmc` (a server's), `mserverBmc`, `pdu` (by
/// address) or `esxi` (a server's host).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkErrors {
    pub device: String,
    pub name: String,
    pub errors: u64,
}

impl Hardware {
    /// The act/sby column with one management server (`mode: single`): this daemon's own
    /// is `active`; any other `----`, the manual's "not decided". In a pair,
    /// [`Hardware::assign_pair`] says what each is.
    pub fn assign_roles(&mut self, local: &str) {
        for m in &mut self.mservers {
            m.role = if m.name == local { "active" } else { "----" }.to_string();
        }
    }

    /// The act/sby column and the peer's link and state from the pair task: this
    /// server's role; the peer's as last heard while its heartbeat is current, else
    /// `----`; the peer's status `poff` from the watch, else normal/reset/error.
    pub fn assign_pair(&mut self, pair: &crate::pair::task::PairStatus) {
        self.peer_link = pair.peer_link.clone();
        for m in &mut self.mservers {
            if m.name == pair.me {
                m.role = pair.role.clone();
            } else if m.name == pair.peer {
                m.role = if pair.peer_link == "OK" {
                    pair.peer_role.clone()
                } else {
                    "----".to_string()
                };
                // The watch's `poff` (its BMC reports power off) says more than the pair's
                // word; otherwise the pair's: normal, reset (fenced), error (lost).
                if m.status != "poff" && pair.peer_state != "----" {
                    m.status = pair.peer_state.clone();
                }
            }
        }
    }
}

/// A link: `OK`, `NG` (with the reason) or `--` (not configured, or not polled yet).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkView {
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MserverHealth {
    pub name: String,
    pub bmc_address: String,
    /// `active` (the management server this daemon runs on) or `----` (not decided).
    pub role: String,
    pub status: String,
    pub bmc: LinkView,
    pub pdu: LinkView,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerHealth {
    pub name: String,
    pub power: String,
    pub bmc: LinkView,
    pub pdu: LinkView,
    pub vmware: LinkView,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests: Option<Vec<GuestHealth>>,
    /// A failure warning from an alert, until an operator clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<WarningView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarningView {
    /// `predictiveFailure` or `degradation`.
    pub kind: String,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestHealth {
    pub name: String,
    pub power: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PduHealth {
    pub address: String,
    pub model: String,
    pub firmware: Option<String>,
    pub outlet_count: Option<u64>,
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub outlets: Vec<OutletHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutletHealth {
    pub outlet: u16,
    /// `Enable` (powered), `Disable` (cut) or `--`.
    pub status: String,
    /// `on`, `off`, `changing`, `NG` or `--`.
    pub state: String,
    /// `P` (a server) or `M` (a management server).
    pub kind: String,
    pub server: String,
    pub forced_reset: bool,
}

/// `get`: the live spec, masked, as YAML text and as JSON, the settings views, and the
/// live facts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetReply {
    /// Normalized YAML, secrets masked.
    pub spec: String,
    /// The same spec as JSON (its normalized form, secrets masked).
    pub settings: Value,
    /// What `show settings` and `show mserver-settings` print, in the manual's sections.
    pub view: SettingsView,
    pub facts: FactsView,
}

/// The live spec as the original's setting displays group it: the service settings
/// (`show settings`: mode, reset path, physical servers, virtual servers, hispeed) and
/// the management servers (`show mserver-settings`). No secret is in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettingsView {
    /// `pair` (the manual's "2:server duplication") or `single`.
    pub mode: String,
    pub reset_path: ResetPathSetting,
    pub servers: Vec<ServerSetting>,
    /// The hard-reset issue time in ms; null when hispeed is off (5000 ms).
    pub hispeed: Option<u32>,
    pub management_servers: Vec<MserverSetting>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetPathSetting {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub port: u16,
    /// Where attention notices go (the spec's, or the one derived from the prefix).
    pub broadcast: Option<IpAddr>,
    /// `hmac (per-node keys)`, `hmac (shared key)` (keys are never shown) or `none`.
    pub auth: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerSetting {
    pub name: String,
    pub bmc_address: IpAddr,
    pub account: String,
    pub cluster: bool,
    /// PDU forced reset on (false without an `ipdu` block).
    pub ipdusd: bool,
    pub timeout: Option<u32>,
    pub recovery_time: Option<u32>,
    pub esxi: Option<EsxiSetting>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EsxiSetting {
    pub address: IpAddr,
    pub port: u16,
    pub account: String,
    pub enabled: bool,
    pub guests: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MserverSetting {
    pub name: String,
    pub bmc_address: IpAddr,
    pub account: String,
    pub ipdusd: bool,
    pub timeout: Option<u32>,
    pub mlan_address: IpAddr,
    pub mlan_port: u16,
}

impl SettingsView {
    pub fn of(spec: &Spec) -> SettingsView {
        use crate::spec::model::{Auth, KeyMode, Mode};
        let rp = &spec.reset_path;
        SettingsView {
            mode: match spec.mode {
                Mode::Pair => "pair",
                Mode::Single => "single",
            }
            .into(),
            reset_path: ResetPathSetting {
                address: rp.address,
                prefix_len: rp.prefix_len,
                port: rp.port.get(),
                broadcast: rp.broadcast_resolved,
                auth: match rp.auth {
                    Auth::None => "none",
                    Auth::Hmac(_, KeyMode::PerNode) => "hmac (per-node keys)",
                    Auth::Hmac(_, KeyMode::Shared) => "hmac (shared key)",
                }
                .into(),
            },
            servers: spec
                .servers
                .values()
                .map(|s| {
                    let i = s.ipdu.as_ref();
                    ServerSetting {
                        name: s.name.to_string(),
                        bmc_address: s.bmc.address,
                        account: s.bmc.username.clone(),
                        cluster: s.cluster,
                        ipdusd: i.is_some_and(|i| i.enabled),
                        timeout: i.and_then(|i| i.timeout).map(|t| t.get()),
                        recovery_time: i.and_then(|i| i.recovery_time).map(|t| t.get()),
                        esxi: s.esxi.as_ref().map(|e| EsxiSetting {
                            address: e.address,
                            port: e.port,
                            account: e.username.clone(),
                            enabled: e.enabled,
                            guests: e.guests.iter().map(|g| g.to_string()).collect(),
                        }),
                    }
                })
                .collect(),
            hispeed: spec.hispeed.map(|h| h.get()),
            management_servers: spec
                .management_servers
                .values()
                .map(|m| {
                    let i = m.ipdu.as_ref();
                    MserverSetting {
                        name: m.name.to_string(),
                        bmc_address: m.bmc.address,
                        account: m.bmc.username.clone(),
                        ipdusd: i.is_some_and(|i| i.enabled),
                        timeout: i.and_then(|i| i.timeout).map(|t| t.get()),
                        mlan_address: m.mlan.address,
                        mlan_port: m.mlan.port.get(),
                    }
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FactsView {
    pub monitors_active: BTreeSet<String>,
    pub resetting: BTreeSet<String>,
}

/// `plan` / `apply`: a spec refused as invalid, a dry run, or an applied reload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadReply {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<RemoteDiagnostic>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub changes: usize,
    /// The reload completed (for a dry run: would complete).
    #[serde(default)]
    pub completed: bool,
    /// A dry run's plan as JSON: one object per change (`haconn diff --output json`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub plan_changes: Value,
}

/// A diagnostic as the daemon sends it (`validate --format json`'s shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteDiagnostic {
    pub severity: String,
    pub code: String,
    pub path: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
    pub message: String,
}

impl RemoteDiagnostic {
    pub fn of(d: &crate::spec::diag::Diagnostic) -> RemoteDiagnostic {
        RemoteDiagnostic {
            severity: match d.severity {
                crate::spec::diag::Severity::Error => "error",
                crate::spec::diag::Severity::Warning => "warning",
            }
            .to_string(),
            code: d.code.to_string(),
            path: d.path.to_string(),
            line: d.pos.map(|p| p.line as u64),
            column: d.pos.map(|p| p.column as u64),
            message: d.message.clone(),
        }
    }

    /// The local one-line form: `FILE:LINE:COL: severity[code]: path: message`.
    pub fn render(&self, file: &str) -> String {
        let mut s = file.to_string();
        if let (Some(l), Some(c)) = (self.line, self.column) {
            s.push_str(&format!(":{l}:{c}"));
        }
        let sep = if self.path.is_empty() { "" } else { ": " };
        format!(
            "{s}: {}[{}]: {}{sep}{}",
            self.severity, self.code, self.path, self.message
        )
    }
}

/// `hamonitor`: one row per system of the live spec (or of the name asked for).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HamonitorReply {
    pub monitors: Vec<MonitorRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorRow {
    pub system: String,
    /// The server it runs on; null for a monitor of a system a reload removed.
    pub server: Option<String>,
    /// `P` (physical), `V` (guest) or `-` (not in the live spec).
    pub kind: String,
    pub subsystem: Option<u32>,
    /// The manual's state: normal / reset / dump / poff / error (cannot be reset now), or
    /// `----` (no monitor, or it stopped checking).
    pub state: String,
    /// The finer state: normal / expired / reset / dump / reboot (hard reset or PDU cut
    /// done; `dump` in `state`) / poff / failed (the last reset failed); null with no
    /// monitor.
    pub detail: Option<String>,
    /// Why the system cannot be reset now (state `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A failure warning of its server (`predictiveFailure: …`, `degradation: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// The monitor pair's subsystem#; null when the server's `cluster` flag is off or no
    /// pair was learned yet.
    pub pair: Option<u32>,
    pub last_check_ms_ago: Option<u64>,
}

/// `serverReset`: how the test soft reset ended (sent when it ended; progress lines
/// before).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerResetReply {
    pub system: String,
    pub subsystem: u32,
    /// `stopped` (NMI acknowledged, then the node's stop notice: it is dumping; the only
    /// success), `powered-off` (no NMI sent), `nmi-failed`, `no-stop-notice` (none within
    /// the 60 s window), `failed` (anything else).
    pub outcome: String,
    /// The outcome in words.
    pub message: String,
    /// Where the stop notice came from (`stopped` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_notice_from: Option<IpAddr>,
}

impl ServerResetReply {
    pub fn succeeded(&self) -> bool {
        self.outcome == "stopped"
    }
}

/// `serverIpdu` / `mserverIpdu`: every switch was confirmed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PduJobReply {
    pub server: String,
    pub summary: String,
}

/// `ipduSetting`: the PDU settings of every management server and server, the SNMP
/// community (masked: `********` inline, or its reference) and the declared PDUs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpduSettingReply {
    pub settings: Vec<IpduSettingRow>,
    /// The SNMP community as secrets are shown: `********`, or `{env: NAME}` /
    /// `{file: PATH}`; null when the spec has none.
    pub community: Option<String>,
    pub pdus: Vec<PduSetting>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PduSetting {
    pub address: IpAddr,
    pub model: String,
}

impl IpduSettingReply {
    pub fn of(live: &Spec) -> IpduSettingReply {
        let outlets = |o: &[crate::spec::model::OutletLink]| -> Vec<OutletRef> {
            o.iter()
                .map(|l| OutletRef {
                    pdu: l.pdu,
                    outlet: l.outlet,
                })
                .collect()
        };
        let mut rows: Vec<IpduSettingRow> = Vec::new();
        for m in live.management_servers.values() {
            let i = m.ipdu.as_ref();
            rows.push(IpduSettingRow {
                name: m.name.to_string(),
                kind: "M".into(),
                ipdusd: i.map(|i| i.enabled),
                timeout: i.and_then(|i| i.timeout).map(|t| t.get().into()),
                recovery_time: None,
                outlets: i.map_or_else(Vec::new, |i| outlets(&i.outlets)),
            });
        }
        for s in live.servers.values() {
            let i = s.ipdu.as_ref();
            rows.push(IpduSettingRow {
                name: s.name.to_string(),
                kind: "P".into(),
                ipdusd: i.map(|i| i.enabled),
                timeout: i.and_then(|i| i.timeout).map(|t| t.get().into()),
                recovery_time: i.and_then(|i| i.recovery_time).map(|t| t.get().into()),
                outlets: i.map_or_else(Vec::new, |i| outlets(&i.outlets)),
            });
        }
        IpduSettingReply {
            settings: rows,
            // `Secret`'s Display masks an inline value and shows only a reference.
            community: live.community.as_ref().map(|c| c.to_string()),
            pdus: live
                .pdus
                .values()
                .map(|p| PduSetting {
                    address: p.address,
                    model: p.model.name.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpduSettingRow {
    pub name: String,
    /// `P` (server) or `M` (management server).
    pub kind: String,
    /// PDU forced reset on or off; null when the object has no `ipdu` block.
    pub ipdusd: Option<bool>,
    pub timeout: Option<u64>,
    pub recovery_time: Option<u64>,
    pub outlets: Vec<OutletRef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutletRef {
    pub pdu: IpAddr,
    pub outlet: u16,
}

/// An empty `ok` reply (`simulate`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Empty {}

/// Parses one request line; `Err` is the error response to send.
pub fn parse(line: &[u8]) -> Result<Request, Value> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| error("bad-request", &format!("not a JSON object: {e}")))?;
    match value.get("v").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(error(
                "version",
                &format!("protocol version {v} is not supported; this daemon speaks {VERSION}"),
            ));
        }
        None => return Err(error("bad-request", "missing protocol version `v`")),
    }
    serde_json::from_value(value).map_err(|e| error("bad-request", &e.to_string()))
}

pub fn error(code: &str, message: &str) -> Value {
    json!({"v": VERSION, "ok": false, "error": {"code": code, "message": message}})
}

/// An `ok` reply carrying `body`'s fields.
pub fn ok(body: &impl Serialize) -> Value {
    let mut fields = serde_json::to_value(body).expect("reply serializes");
    fields["v"] = VERSION.into();
    fields["ok"] = true.into();
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest spec file, made of the characters JSON escapes (the only ones a valid
    /// spec can hold: tab, CR, LF, quote, backslash), fits in one request line, and the
    /// cap is no larger than that needs.
    #[test]
    fn the_largest_spec_fits_the_line_cap() {
        let max = crate::spec::yaml::MAX_FILE_BYTES;
        let spec: String = "\"\\\n\t\r".chars().cycle().take(max).collect();
        let line =
            serde_json::to_vec(&json!({"v": 1, "op": "apply", "spec": spec, "dryRun": true}))
                .unwrap();
        assert!(line.len() <= MAX_LINE, "{} > {MAX_LINE}", line.len());
        assert!(MAX_LINE <= line.len() + 1024 * 1024 + 64);
    }

    #[test]
    fn parses_and_refuses() {
        assert!(matches!(
            parse(br#"{"v":1,"op":"status"}"#),
            Ok(Request::Status { .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"apply","spec":"x","dryRun":true}"#),
            Ok(Request::Apply { dry_run: true, .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"hamonitor","name":"node01"}"#),
            Ok(Request::Hamonitor { name: Some(n), .. }) if n == "node01"
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"hamonitor"}"#),
            Ok(Request::Hamonitor { name: None, .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"op":"serverReset","system":"node02","subsystem":2}"#),
            Ok(Request::ServerReset { subsystem: 2, .. })
        ));
        assert_eq!(
            parse(br#"{"v":1,"op":"serverReset","system":"node02"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"v":2,"op":"status"}"#).unwrap_err()["error"]["code"],
            "version"
        );
        assert_eq!(
            parse(b"garbage").unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"v":1,"op":"explode"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
        assert_eq!(
            parse(br#"{"op":"status"}"#).unwrap_err()["error"]["code"],
            "bad-request"
        );
    }
}
