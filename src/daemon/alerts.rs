//! Hardware alerts in the daemon (SPEC §3, issue 15): the SNMP trap receiver, the path of
//! `haconn alert`, the alert log and the recent alerts `haconn show alerts` lists.
//!
//! Every alert takes one path: it names a server of the live spec (a trap by its source
//! address, which must be a server's BMC; `haconn alert` by the address or name it was
//! given) and a kind (a trap's IPMI PET or vendor OID, `alerts.traps` of the spec). A
//! power-off goes to the pipeline, which reads the server's power over its BMC and tells
//! the cluster POFF only if the BMC says off; a failure warning marks the server when it
//! takes that kind (`servers[].warnings`) and runs `alerts.warningCommand`. Nothing is
//! ever reset for an alert. Every alert gets an alert-log line with what was done
//! (capped: a flood of traps cannot rotate the log away), and the last
//! [`RECENT`] are kept for `show alerts`.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::alert::{self, VendorOid, trap};
use crate::log::LogFile;
use crate::pipeline::limits::{LogBudget, with_suppressed};
use crate::pipeline::{Alert, AlertOutcome, Pipeline};
use crate::spec::model::{AlertKind, Spec};

/// Alerts kept for `show alerts`.
pub const RECENT: usize = 1000;
/// Traps handled at once; more are dropped (and counted) until some end.
pub const IN_FLIGHT: usize = 256;
/// How long the warning command may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One alert as `show alerts` lists it and the alert log writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// Local time, `YYYY/MM/DD HH:MM:SS.ffffff`.
    pub at: String,
    pub at_unix_ms: i64,
    /// `trap v1`, `trap v2c`, `inform v2c` or `command`.
    pub via: String,
    /// Where it came from: the trap's source address, or the address `haconn alert` named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// `powerOff`, `predictiveFailure`, `degradation` or `other`.
    pub kind: String,
    /// What it said, decoded.
    pub detail: String,
    /// What haconn did.
    pub action: String,
}

/// Counts of the trap receiver.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertCounters {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    pub bad_community: AtomicU64,
    pub unknown_source: AtomicU64,
    pub informs_answered: AtomicU64,
    /// Dropped unread because [`IN_FLIGHT`] traps were being handled.
    pub busy_dropped: AtomicU64,
    pub commands: AtomicU64,
    pub log_suppressed: AtomicU64,
}

/// A snapshot of [`AlertCounters`] for the control protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertCounts {
    pub received: u64,
    pub malformed: u64,
    pub bad_community: u64,
    pub unknown_source: u64,
    pub informs_answered: u64,
    pub busy_dropped: u64,
    pub commands: u64,
    pub log_suppressed: u64,
}

/// The alerts side of the daemon, shared by the trap receiver and the control socket.
pub struct AlertDesk {
    log: LogFile,
    recent: Mutex<VecDeque<AlertRecord>>,
    pub counters: AlertCounters,
    /// Alert-log lines: a burst, then a steady rate; what is dropped is counted.
    budget: Mutex<LogBudget>,
    /// Refused traps (bad community, unknown source, malformed) in the event log.
    refusals: Mutex<LogBudget>,
    /// Servers whose power-off alert is being confirmed: another alert joins it.
    confirming: Mutex<HashSet<String>>,
    /// The resolved community of the spec it was read from.
    community: Mutex<Option<(usize, Vec<u8>)>>,
}

impl std::fmt::Debug for AlertDesk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertDesk")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl AlertDesk {
    pub fn new(log: LogFile) -> AlertDesk {
        AlertDesk {
            log,
            recent: Mutex::new(VecDeque::with_capacity(64)),
            counters: AlertCounters::default(),
            budget: Mutex::new(LogBudget::new(200, Duration::from_millis(50))),
            refusals: Mutex::new(LogBudget::new(10, Duration::from_secs(6))),
            confirming: Mutex::new(HashSet::new()),
            community: Mutex::new(None),
        }
    }

    pub fn counts(&self) -> AlertCounts {
        let c = &self.counters;
        AlertCounts {
            received: c.received.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            bad_community: c.bad_community.load(Relaxed),
            unknown_source: c.unknown_source.load(Relaxed),
            informs_answered: c.informs_answered.load(Relaxed),
            busy_dropped: c.busy_dropped.load(Relaxed),
            commands: c.commands.load(Relaxed),
            log_suppressed: c.log_suppressed.load(Relaxed),
        }
    }

    /// The recent alerts, oldest first, at or after `since_ms` (Unix ms) and of `server`.
    pub fn recent(&self, since_ms: Option<i64>, server: Option<&str>) -> Vec<AlertRecord> {
        lock(&self.recent)
            .iter()
            .filter(|r| since_ms.is_none_or(|s| r.at_unix_ms >= s))
            .filter(|r| server.is_none_or(|s| r.server.as_deref() == Some(s)))
            .cloned()
            .collect()
    }

    fn record(&self, r: AlertRecord) {
        let line = format!(
            "{} {} {} {}: {} => {}",
            r.via,
            r.from.as_deref().unwrap_or("----"),
            r.server.as_deref().unwrap_or("----"),
            r.kind,
            r.detail,
            r.action
        );
        let allowed = lock(&self.budget).allow(Instant::now());
        match allowed {
            Some(n) => {
                let _ = self.log.write(&with_suppressed(line, n));
            }
            None => {
                self.counters.log_suppressed.fetch_add(1, Relaxed);
            }
        }
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(r);
    }

    /// A refused trap: counted, and said in the event log at a capped rate.
    fn refused(&self, events: &LogFile, line: String) {
        if let Some(n) = lock(&self.refusals).allow(Instant::now()) {
            let _ = events.write(&with_suppressed(line, n));
        }
    }

    /// The community of the live spec's receiver, resolved once per spec.
    fn community(&self, spec: &Arc<Spec>) -> Option<Vec<u8>> {
        let key = Arc::as_ptr(spec) as usize;
        let mut c = lock(&self.community);
        if let Some((k, v)) = &*c
            && *k == key
        {
            return Some(v.clone());
        }
        let value = spec.alerts.as_ref()?.community.resolve().ok()?.into_bytes();
        *c = Some((key, value.clone()));
        Some(value)
    }

    /// One alert about `server` (or about no server of the spec): acted on, logged,
    /// kept. The outcome says what was done.
    pub async fn handle(
        self: &Arc<Self>,
        pipeline: &Pipeline,
        via: String,
        from: Option<String>,
        server: Option<String>,
        kind: Option<AlertKind>,
        detail: String,
    ) -> AlertOutcome {
        let now = chrono::Local::now();
        let outcome = match (&server, kind) {
            _ if pipeline.standing_by() => AlertOutcome::Ignored {
                why: "this management server is standby (the active acts)".into(),
            },
            (None, _) => AlertOutcome::Ignored {
                why: "no server of the spec has that address".into(),
            },
            (Some(_), None) => AlertOutcome::Ignored {
                why: "not a power-off or a failure warning".into(),
            },
            (Some(s), Some(AlertKind::PowerOff)) => {
                let first = lock(&self.confirming).insert(s.clone());
                if first {
                    let r = pipeline
                        .alert(Alert {
                            server: s.clone(),
                            kind: AlertKind::PowerOff,
                            detail: detail.clone(),
                        })
                        .await;
                    lock(&self.confirming).remove(s);
                    r.unwrap_or_else(|_| AlertOutcome::NotConfirmed {
                        why: "the pipeline is gone".into(),
                    })
                } else {
                    AlertOutcome::Ignored {
                        why: "joined the confirmation already in progress".into(),
                    }
                }
            }
            (Some(s), Some(k)) => pipeline
                .alert(Alert {
                    server: s.clone(),
                    kind: k,
                    detail: detail.clone(),
                })
                .await
                .unwrap_or_else(|_| AlertOutcome::Ignored {
                    why: "the pipeline is gone".into(),
                }),
        };
        if let (AlertOutcome::Warned { .. }, Some(s), Some(k)) = (&outcome, &server, kind) {
            self.run_warning_command(&pipeline.live(), s, k, &detail);
        }
        self.record(AlertRecord {
            at: now.format("%Y/%m/%d %H:%M:%S%.6f").to_string(),
            at_unix_ms: now.timestamp_millis(),
            via,
            from,
            server,
            kind: kind.map_or("other", AlertKind::as_str).to_string(),
            detail,
            action: action_text(&outcome),
        });
        outcome
    }

    /// Runs the spec's warning command for a warning, bounded; its end goes to the
    /// alert log.
    pub fn run_warning_command(
        self: &Arc<Self>,
        spec: &Spec,
        server: &str,
        kind: AlertKind,
        detail: &str,
    ) {
        let Some(cmd) = spec.alerts.as_ref().and_then(|a| a.warning_command.clone()) else {
            return;
        };
        self.counters.commands.fetch_add(1, Relaxed);
        let desk = self.clone();
        let (server, detail) = (server.to_string(), detail.to_string());
        tokio::spawn(async move {
            let mut c = tokio::process::Command::new(&cmd);
            c.args([server.as_str(), kind.as_str(), detail.as_str()])
                .env("HACONN_SERVER", &server)
                .env("HACONN_ALERT_KIND", kind.as_str())
                .env("HACONN_ALERT_DETAIL", &detail)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let result = match c.spawn() {
                Err(e) => format!("could not start: {e}"),
                Ok(mut child) => match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) => format!("ended: {status}"),
                    Ok(Err(e)) => format!("failed: {e}"),
                    Err(_) => format!("killed after {} s", COMMAND_TIMEOUT.as_secs()),
                },
            };
            let _ = desk.log.write(&format!(
                "command {} {server} {}: {result}",
                cmd.display(),
                kind.as_str()
            ));
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What was done, in the alert log's words.
pub fn action_text(o: &AlertOutcome) -> String {
    match o {
        AlertOutcome::PowerOff { systems } => {
            format!(
                "BMC reads off: POFF to the cluster for {}",
                systems.join(", ")
            )
        }
        AlertOutcome::AlreadyOff => "BMC reads off, as already known and reported".into(),
        AlertOutcome::NotConfirmed { why } => {
            format!("not confirmed ({why}): no POFF; its BMC is polled fast for a while")
        }
        AlertOutcome::Warned { warning } => format!("marked with a warning: {warning}"),
        AlertOutcome::Ignored { why } => format!("logged only: {why}"),
    }
}

/// The server of the live spec whose BMC (or ESXi host) is at `ip`.
pub fn server_at(spec: &Spec, ip: IpAddr) -> Option<String> {
    spec.servers
        .values()
        .find(|s| s.bmc.address == ip || s.esxi.as_ref().is_some_and(|e| e.address == ip))
        .map(|s| s.name.to_string())
}

/// What a trap means for fencing, by its PET or the spec's vendor OIDs.
pub fn kind_of(t: &trap::Trap, spec: &Spec) -> Option<AlertKind> {
    let vendor: Vec<VendorOid> = spec.alerts.as_ref().map_or_else(Vec::new, |a| {
        a.traps
            .iter()
            .map(|(oid, k)| VendorOid {
                oid_prefix: oid.clone(),
                meaning: (*k).into(),
            })
            .collect()
    });
    alert::classify(t, &vendor).kind()
}

/// A trap in a line: its OID, and for a PET its sensor, event, severity and sequence.
pub fn describe(t: &trap::Trap) -> String {
    match &t.pet {
        Some(Ok(p)) => format!(
            "IPMI PET sensor type 0x{:02x} #{} event type 0x{:02x} offset {}{} severity {:?} seq {}",
            p.specific.sensor_type,
            p.sensor_number,
            p.specific.event_type,
            p.specific.offset,
            if p.specific.deassertion {
                " (deasserted)"
            } else {
                ""
            },
            p.severity,
            p.sequence
        ),
        Some(Err(e)) => format!("IPMI PET {} unreadable: {e}", t.trap_oid),
        None => format!("trap {}", t.trap_oid),
    }
}

/// Whether two byte strings are equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds the trap receiver's socket (with `IP_FREEBIND`, so the reset path's moving
/// address can be named on a standby that does not hold it yet).
pub fn bind(at: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
    if at.is_ipv4() {
        s.set_freebind_v4(true)?;
    } else {
        s.set_freebind_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&at.into())?;
    let s: std::net::UdpSocket = s.into();
    // A burst of traps (a rack losing power, a storm) waits in the kernel rather than
    // being dropped there.
    if let Err(e) = crate::pipeline::receive::size_buffer(&s) {
        tracing::warn!("trap receiver: no larger receive buffer: {e}");
    }
    tokio::net::UdpSocket::from_std(s)
}

/// Receives traps on `sock` until the daemon stops: each is checked (community, source)
/// and handled in a task of its own, at most [`IN_FLIGHT`] at once.
pub async fn receive(
    sock: tokio::net::UdpSocket,
    desk: Arc<AlertDesk>,
    pipeline: Pipeline,
    events: Arc<LogFile>,
) {
    let sock = Arc::new(sock);
    let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut buf = vec![0u8; trap::MAX_DATAGRAM];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("trap receiver: {e}");
                continue;
            }
        };
        desk.counters.received.fetch_add(1, Relaxed);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            desk.counters.busy_dropped.fetch_add(1, Relaxed);
            continue;
        };
        let raw = buf[..n].to_vec();
        let (desk, pipeline, events, sock) =
            (desk.clone(), pipeline.clone(), events.clone(), sock.clone());
        tokio::spawn(async move {
            one(&raw, from, &desk, &pipeline, &events, &sock).await;
            drop(permit);
        });
    }
}

async fn one(
    raw: &[u8],
    from: SocketAddr,
    desk: &Arc<AlertDesk>,
    pipeline: &Pipeline,
    events: &LogFile,
    sock: &tokio::net::UdpSocket,
) {
    let t = match trap::decode(raw) {
        Ok(t) => t,
        Err(e) => {
            desk.counters.malformed.fetch_add(1, Relaxed);
            desk.refused(events, format!("trap from {from} refused: {e}"));
            return;
        }
    };
    let spec = pipeline.live();
    let community_ok = desk
        .community(&spec)
        .is_some_and(|c| same(&c, &t.community));
    if !community_ok {
        desk.counters.bad_community.fetch_add(1, Relaxed);
        desk.refused(events, format!("trap from {from} refused: wrong community"));
        return;
    }
    if t.kind == trap::Kind::Inform
        && let Some(response) = trap::inform_response(&t, raw)
        && sock.send_to(&response, from).await.is_ok()
    {
        desk.counters.informs_answered.fetch_add(1, Relaxed);
    }
    let server = server_at(&spec, from.ip());
    if server.is_none() && !pipeline.standing_by() {
        desk.counters.unknown_source.fetch_add(1, Relaxed);
        desk.refused(
            events,
            format!("trap from {from}, which is no server's BMC: logged only"),
        );
    }
    let kind = kind_of(&t, &spec);
    let via = match (t.kind, t.version) {
        (trap::Kind::Inform, _) => "inform v2c",
        (_, trap::Version::V1) => "trap v1",
        (_, trap::Version::V2c) => "trap v2c",
    };
    desk.handle(
        pipeline,
        via.into(),
        Some(from.ip().to_string()),
        server,
        kind,
        describe(&t),
    )
    .await;
}
