//! The pair's I/O shell: a task on the daemon's main runtime around the role core.
//!
//! It owns the mlan socket (heartbeats out every interval and at once on a change of
//! role; heartbeats in, checked by [`super::wire`]), carries out the core's effects —
//! fencing the peer through its BMC, else its PDU outlets; taking and giving up the
//! reset path's address ([`super::addr`]); opening and closing the pipeline's gate
//! (`Counters::standing_by`) — and publishes what the views show ([`PairStatus`]).
//!
//! Order matters and is fixed here: a server serves only after the fence is confirmed
//! (the core's rule); it adds the address, announces it, then opens the gate; it stops
//! serving by closing the gate first, then removing the address. The gate is closed from
//! the start in pair mode, before the pipeline reads a datagram.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::addr;
use super::role::{Effect, Heartbeat, Input, Reason, Role, RoleCore, Timing};
use super::sync::{self, PushBody, PushGuard, SpecAck};
use super::wire::{self, MlanKey};
use crate::backend::{Bmc, Pdu, bounded};
use crate::pipeline::Pipeline;
use crate::spec::model::{ManagementServer, Name, PairSettings, Pdu as PduSpec};

/// How long the peer's BMC may take to acknowledge a hard reset when its `ipdu` sets no
/// timeout.
pub const FENCE_BMC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long cutting one outlet may take (the SNMP backend confirms the new state).
pub const FENCE_OUTLET_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon a fence that failed is tried again while the peer stays lost.
pub const FENCE_RETRY: Duration = Duration::from_secs(5);
/// How often the active sends its registrations to the standby even when none changed
/// (their ages move).
pub const MONITORS_REFRESH: Duration = Duration::from_secs(10);

/// Everything the pair task needs, from the spec and the daemon.
pub struct PairSetup {
    pub me: Name,
    pub local_mlan: SocketAddr,
    pub peer: ManagementServer,
    /// The PDUs of the spec (the peer's outlets are found here).
    pub pdus: std::collections::BTreeMap<std::net::IpAddr, PduSpec>,
    pub settings: PairSettings,
    pub key: MlanKey,
    /// The reset path's address and prefix length.
    pub reset_path: (IpAddr, u8),
    /// Whether to add and remove the address (`false` on loopback, where there is
    /// nothing to move, and in labs).
    pub move_address: bool,
    pub bmc: Arc<dyn Bmc>,
    pub pdu: Arc<dyn Pdu>,
    pub pipeline: Pipeline,
    /// Writes a line to the event log.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
    /// Writes a line to the reset log (the fence of the peer: `HARDRESET`/`IPDUSD` lines
    /// for the management server).
    pub reset_log: Arc<dyn Fn(String) + Send + Sync>,
    /// Where a spec pushed by the active goes to be applied (the supervisor, as a
    /// reload); its answer goes back to the active.
    pub specs: mpsc::Sender<(String, oneshot::Sender<SpecAck>)>,
    /// Where the peer's lifecycle request goes (`true`: restart, `false`: stop).
    pub lifecycle: mpsc::Sender<bool>,
    /// Packs this server's support archive for the peer's `haconn dump` (blocking: run
    /// on a blocking thread).
    pub dump: DumpFn,
}

/// Makes this server's support archive (tar.gz bytes), or says why not.
pub type DumpFn = Arc<dyn Fn() -> Result<Vec<u8>, String> + Send + Sync>;

/// What `show status` shows of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PairStatus {
    pub me: String,
    pub peer: String,
    /// `undecided`, `standby`, `active` or `leaving`.
    pub role: String,
    /// The peer's role as last heard; `----` when never heard.
    pub peer_role: String,
    /// `OK` while the peer's heartbeat is current, else `NG`.
    pub peer_link: String,
    /// `normal`, `reset` (fenced by this server), `error` (lost and not fenced) or
    /// `----` (never heard).
    pub peer_state: String,
    pub fencing: bool,
    /// Why this standby cannot take over (the last fence's failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    pub redundant: bool,
    /// The reset path's address here: `held on IF`, `not held`, `not moved (loopback)` or
    /// the last error.
    pub address: String,
    pub takeovers: u64,
    /// The spec on the peer: `in sync (CHECKSUM)` (the standby applied this server's
    /// spec and its checksum is the same), `DIFFERS: …`, `not synchronized: why`, or
    /// `----` (nothing sent yet, or this server is not active).
    pub peer_spec: String,
    /// This server's applied spec's checksum ([`sync::checksum`]).
    pub spec_checksum: String,
}

/// An operator's command to the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `haconn act restart`'s first half: hand over to the standby.
    Handover,
    /// `haconn sby takeover --confirm-peer-down`.
    ConfirmPeerDown,
    /// The daemon stops: close the gate and give up the address (it exits right after).
    Shutdown,
}

/// The daemon's handle on the pair task.
#[derive(Clone, Debug)]
pub struct PairHandle {
    status: watch::Receiver<PairStatus>,
    commands: mpsc::Sender<(Command, oneshot::Sender<Result<String, String>>)>,
    sync: Arc<SyncTarget>,
}

/// Where and how the active sends its spec, and what came of the last push.
#[derive(Debug)]
struct SyncTarget {
    me: Name,
    peer: SocketAddr,
    key: MlanKey,
    last: std::sync::Mutex<String>,
}

impl SyncTarget {
    /// Sends `body` to the peer and waits (at most `limit`) for an answer that says ok;
    /// `Err` says why not.
    async fn send(&self, body: PushBody, limit: Duration) -> Result<SpecAck, String> {
        sync::push_within(self.peer, &self.me, &self.key, body, wall_ms(), limit)
            .await
            .map_err(|e| e.to_string())
            .and_then(|a| if a.ok { Ok(a) } else { Err(a.message) })
    }

    /// Sends the spec and records what came of it for the views.
    async fn push(&self, spec: String) -> Result<SpecAck, String> {
        let here = sync::checksum(&spec);
        let r = self.send(PushBody::Spec { spec }, sync::PUSH_TIMEOUT).await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = match &r {
            Ok(ack) if ack.checksum.as_deref() == Some(here.as_str()) => {
                format!("in sync ({here})")
            }
            Ok(ack) => format!(
                "DIFFERS: the standby's spec is {}, this one's {here}",
                ack.checksum.as_deref().unwrap_or("unknown")
            ),
            Err(why) => format!("not synchronized: {why}"),
        };
        r
    }
}

impl PairHandle {
    pub fn status(&self) -> PairStatus {
        self.status.borrow().clone()
    }

    /// Waits until the status satisfies `f` (for tests and `act restart`), at most `limit`.
    pub async fn wait_for(&self, limit: Duration, f: impl Fn(&PairStatus) -> bool) -> bool {
        let mut rx = self.status.clone();
        tokio::time::timeout(limit, rx.wait_for(|s| f(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends this server's applied spec to the standby and returns its answer: only while
    /// this server is active and hears a standby.
    pub async fn push_spec(&self, spec: String) -> Result<SpecAck, String> {
        let s = self.status();
        if s.role != "active" {
            return Err(format!("{} is {}, not active", s.me, s.role));
        }
        if s.peer_link != "OK" || s.peer_role != "standby" {
            let why = format!("{} is not a standby heard now", s.peer);
            *self.sync.last.lock().unwrap_or_else(|p| p.into_inner()) =
                format!("not synchronized: {why}");
            return Err(why);
        }
        self.sync.push(spec).await
    }

    /// Asks the peer, which must be active now (after a handover), to run the PDU-cut test
    /// of this server's outlets; waits for its end (bounded by `limit`).
    pub async fn peer_pdu_test(
        &self,
        mode: crate::pipeline::pdutest::Mode,
        off_time: Option<u64>,
        wait_time: Option<u64>,
        limit: Duration,
    ) -> Result<SpecAck, String> {
        let body = PushBody::PduTest {
            mode,
            off_time,
            wait_time,
        };
        self.sync.send(body, limit).await
    }

    /// Asks the peer's daemon to restart or stop (it must not be active).
    pub async fn peer_lifecycle(&self, restart: bool) -> Result<SpecAck, String> {
        let s = self.status();
        if s.peer_link != "OK" {
            return Err(format!("{} is not heard now", s.peer));
        }
        self.sync
            .send(PushBody::Lifecycle { restart }, sync::PUSH_TIMEOUT)
            .await
    }

    /// The peer's support archive (tar.gz bytes), packed there for this server's `haconn
    /// dump` and sent over the mlan; at most `limit`.
    pub async fn peer_dump(&self, limit: Duration) -> Result<Vec<u8>, String> {
        use base64ct::Encoding;
        let s = self.status();
        if s.peer_link != "OK" {
            return Err(format!("{} is not heard now", s.peer));
        }
        let ack = self.sync.send(PushBody::Dump {}, limit).await?;
        let text = ack
            .archive
            .ok_or_else(|| format!("{} sent no archive", s.peer))?;
        base64ct::Base64::decode_vec(&text).map_err(|e| format!("the archive is not base64: {e}"))
    }

    pub async fn command(&self, c: Command) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((c, tx))
            .await
            .map_err(|_| "the pair task is not running".to_string())?;
        rx.await
            .map_err(|_| "the pair task is not running".to_string())?
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Binds the mlan socket, closes the pipeline's gate and starts the task on the current
/// runtime.
pub fn spawn(setup: PairSetup) -> std::io::Result<PairHandle> {
    let std_sock = std::net::UdpSocket::bind(setup.local_mlan)?;
    std_sock.set_nonblocking(true)?;
    let sock = UdpSocket::from_std(std_sock)?;
    let std_listener = std::net::TcpListener::bind(setup.local_mlan)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    setup
        .pipeline
        .counters()
        .standing_by
        .store(true, Ordering::SeqCst);
    let now = Instant::now();
    let incarnation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let timing = Timing {
        interval: setup.settings.heartbeat_interval,
        misses: setup.settings.heartbeat_misses,
        startup_grace: setup.settings.startup_grace,
        fence_retry: FENCE_RETRY,
    };
    let core = RoleCore::new(
        setup.me.clone(),
        incarnation,
        setup.peer.name.clone(),
        timing,
        now,
    );
    let address = if setup.move_address {
        "not held".to_string()
    } else {
        "not moved (loopback or lab)".to_string()
    };
    let (status_tx, status) = watch::channel(PairStatus {
        me: setup.me.to_string(),
        peer: setup.peer.name.to_string(),
        role: Role::Undecided.as_str().into(),
        peer_role: "----".into(),
        peer_link: "NG".into(),
        peer_state: "----".into(),
        fencing: false,
        blocked: None,
        redundant: false,
        address,
        takeovers: 0,
        peer_spec: "----".into(),
        spec_checksum: String::new(),
    });
    let (commands, command_rx) = mpsc::channel(8);
    let setup_live = setup.pipeline.live();
    let sync_target = Arc::new(SyncTarget {
        me: setup.me.clone(),
        peer: SocketAddr::new(setup.peer.mlan.address, setup.peer.mlan.port.get()),
        key: setup.key.clone(),
        last: std::sync::Mutex::new("----".into()),
    });
    tokio::spawn(accept_specs(
        listener,
        SyncReceiver {
            peer: setup.peer.name.clone(),
            key: setup.key.clone(),
            status: status.clone(),
            specs: setup.specs.clone(),
            log: setup.log.clone(),
            pipeline: setup.pipeline.clone(),
            lifecycle: setup.lifecycle.clone(),
            dump: setup.dump.clone(),
        },
    ));
    let task = Task {
        setup,
        sock,
        core,
        seq: 0,
        status_tx,
        held: None,
        fenced_peer: false,
        takeovers: 0,
        note: None,
        sync: sync_target.clone(),
        synced_run: None,
        monitors_sent: (None, None),
        monitors_acked: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
        monitors_in_flight: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        checksummed: {
            let live = setup_live;
            let sum = sync::checksum(&crate::spec::render::state_yaml(&live));
            (live, sum)
        },
    };
    tokio::spawn(task.run(command_rx));
    Ok(PairHandle {
        status,
        commands,
        sync: sync_target,
    })
}

/// Runs the PDU-cut test of the peer management server's outlets on this (active) server's
/// pipeline and returns its summary when it has ended.
async fn peer_pdu_test(
    pipeline: &Pipeline,
    peer: &Name,
    mode: crate::pipeline::pdutest::Mode,
    off_time: Option<u64>,
    wait_time: Option<u64>,
) -> Result<String, String> {
    use crate::pipeline::pdutest::{DEFAULT_SECONDS, SECONDS};
    use crate::pipeline::{PduJobEvent, PduRequest};
    let seconds = |v: Option<u64>| {
        let s = v.unwrap_or(DEFAULT_SECONDS);
        SECONDS
            .contains(&s)
            .then(|| Duration::from_secs(s))
            .ok_or_else(|| format!("{s} s is outside {}–{} s", SECONDS.start(), SECONDS.end()))
    };
    let request = PduRequest {
        server: peer.to_string(),
        mserver: true,
        pdu: None,
        test: Some((mode, seconds(off_time)?, seconds(wait_time)?)),
        force: false,
    };
    let mut rx = pipeline
        .pdu_job(request)
        .await
        .map_err(|e| e.to_string())??;
    while let Some(ev) = rx.recv().await {
        if let PduJobEvent::Done(result) = ev {
            return result;
        }
    }
    Err("the PDU job ended without a result".into())
}

/// What the standby side of state sync needs (cloned into each connection's task).
#[derive(Clone)]
struct SyncReceiver {
    peer: Name,
    key: MlanKey,
    status: watch::Receiver<PairStatus>,
    specs: mpsc::Sender<(String, oneshot::Sender<SpecAck>)>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    pipeline: Pipeline,
    lifecycle: mpsc::Sender<bool>,
    dump: DumpFn,
}

/// Takes what the active pushes: only from the peer (signed, fresh, new), only while this
/// server is not active; a spec is applied by the supervisor, registrations by the
/// pipeline, a lifecycle request by the daemon; the result goes back.
async fn accept_specs(listener: tokio::net::TcpListener, r: SyncReceiver) {
    let guard = Arc::new(std::sync::Mutex::new(PushGuard::default()));
    // One push at a time: a second connection waits for the first to be answered.
    let one = Arc::new(tokio::sync::Semaphore::new(1));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            continue;
        };
        let (guard, one) = (guard.clone(), one.clone());
        let SyncReceiver {
            peer,
            key,
            status,
            specs,
            log,
            pipeline,
            lifecycle,
            dump,
        } = r.clone();
        tokio::spawn(async move {
            let Ok(_turn) = one.acquire().await else {
                return;
            };
            let refuse = |message: String| SpecAck {
                ok: false,
                changed: false,
                message,
                checksum: None,
                archive: None,
            };
            let r = sync::serve_one(stream, &key, |push| {
                let role = status.borrow().role.clone();
                let for_any_role = matches!(
                    push.body,
                    PushBody::Lifecycle { .. } | PushBody::PduTest { .. } | PushBody::Dump {}
                );
                if role == Role::Active.as_str() && !for_any_role {
                    return Err(refuse(format!(
                        "this server is active: it takes no spec from {peer}"
                    )));
                }
                if let Err(why) =
                    guard
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .check(&push, &peer, wall_ms())
                {
                    return Err(refuse(why));
                }
                Ok(move || async move {
                    match push.body {
                        PushBody::Spec { spec } => {
                            let (tx, rx) = oneshot::channel();
                            if specs.send((spec, tx)).await.is_err() {
                                return refuse("the daemon is stopping".into());
                            }
                            rx.await
                                .unwrap_or_else(|_| refuse("the reload did not answer".into()))
                        }
                        PushBody::PduTest {
                            mode,
                            off_time,
                            wait_time,
                        } => {
                            if role != Role::Active.as_str() {
                                return refuse(format!(
                                    "this server is {role}: only the active runs PDU-cut tests"
                                ));
                            }
                            match peer_pdu_test(&pipeline, &peer, mode, off_time, wait_time).await {
                                Ok(summary) => SpecAck {
                                    ok: true,
                                    changed: true,
                                    message: summary,
                                    checksum: None,
                                    archive: None,
                                },
                                Err(why) => refuse(why),
                            }
                        }
                        PushBody::Lifecycle { restart } => {
                            if role == Role::Active.as_str() {
                                return refuse(
                                    "this server is active: it is not stopped from its peer".into(),
                                );
                            }
                            if lifecycle.send(restart).await.is_err() {
                                return refuse("the daemon is stopping".into());
                            }
                            SpecAck {
                                ok: true,
                                changed: true,
                                message: if restart { "restarting" } else { "stopping" }.into(),
                                checksum: None,
                                archive: None,
                            }
                        }
                        PushBody::Dump {} => {
                            let packed = tokio::task::spawn_blocking(move || dump()).await;
                            match packed {
                                Ok(Ok(bytes)) if bytes.len() > sync::MAX_PEER_ARCHIVE => {
                                    refuse(format!(
                                        "the archive is {} bytes, more than the {} the mlan \
                                         carries: run haconn dump on this server",
                                        bytes.len(),
                                        sync::MAX_PEER_ARCHIVE
                                    ))
                                }
                                Ok(Ok(bytes)) => {
                                    use base64ct::Encoding;
                                    SpecAck {
                                        ok: true,
                                        changed: false,
                                        message: format!("{} bytes", bytes.len()),
                                        checksum: None,
                                        archive: Some(base64ct::Base64::encode_string(&bytes)),
                                    }
                                }
                                Ok(Err(why)) => refuse(why),
                                Err(e) => refuse(format!("packing the archive failed: {e}")),
                            }
                        }
                        PushBody::State { state } => {
                            let (n, b) = (state.monitors.len(), state.busy.len());
                            match pipeline.adopt_state(state).await {
                                Ok(()) => SpecAck {
                                    ok: true,
                                    changed: true,
                                    message: format!(
                                        "{n} monitor registrations and {b} systems not normal taken"
                                    ),
                                    checksum: None,
                                    archive: None,
                                },
                                Err(e) => refuse(e.to_string()),
                            }
                        }
                    }
                })
            })
            .await;
            if let Err(e) = r {
                tracing::warn!(%from, "mlan spec push refused: {e}");
                log(&format!("pair: a spec push from {from} was refused: {e}"));
            }
        });
    }
}

struct Task {
    setup: PairSetup,
    sock: UdpSocket,
    core: RoleCore,
    seq: u64,
    status_tx: watch::Sender<PairStatus>,
    /// Where this server holds the address, and whether it added it (only an address it
    /// added is ever removed).
    held: Option<(addr::Interface, bool)>,
    /// This server fenced the peer and has not heard it since.
    fenced_peer: bool,
    takeovers: u64,
    /// What check replies were last told.
    note: Option<Option<String>>,
    sync: Arc<SyncTarget>,
    /// The run of the peer this active last sent its spec to.
    synced_run: Option<u64>,
    /// The standby run the registrations last went to, and when.
    monitors_sent: (Option<u64>, Option<Instant>),
    /// The core generation the standby last acknowledged (`u64::MAX`: none).
    monitors_acked: Arc<std::sync::atomic::AtomicU64>,
    monitors_in_flight: Arc<std::sync::atomic::AtomicBool>,
    /// The live spec last checksummed, and its checksum.
    checksummed: (Arc<crate::spec::model::Spec>, String),
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<(Command, oneshot::Sender<Result<String, String>>)>,
    ) {
        let (fence_tx, mut fence_rx) = mpsc::channel::<Result<String, String>>(2);
        let mut tick = tokio::time::interval(self.core.timing().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = [0u8; 512];
        let pipeline = self.setup.pipeline.clone();
        let peer_mlan = SocketAddr::new(
            self.setup.peer.mlan.address,
            self.setup.peer.mlan.port.get(),
        );
        self.log(&format!(
            "pair: {} starts undecided; peer {} at {peer_mlan}; heartbeat every {} ms, lost after {}",
            self.setup.me,
            self.setup.peer.name,
            self.core.timing().interval.as_millis(),
            self.core.timing().misses
        ));
        loop {
            let mut out = Vec::new();
            let mut reply = None;
            let before = self.core.role();
            tokio::select! {
                _ = tick.tick() => {
                    self.core.handle(Instant::now(), Input::Tick, &mut out);
                    self.send_heartbeat(peer_mlan).await;
                    self.sync_monitors(Instant::now());
                }
                // The pipeline holds the end of a reset until the standby has its state.
                _ = pipeline.counters().sync_now.notified() => self.sync_monitors(Instant::now()),
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    match wire::decode(&buf[..n], &self.setup.peer.name, wall_ms(), &self.setup.key) {
                        Ok(beat) => {
                            self.fenced_peer = false;
                            self.core.handle(Instant::now(), Input::Heartbeat(beat), &mut out);
                        }
                        Err(e) => tracing::debug!(%from, "mlan datagram refused: {e}"),
                    }
                }
                Some(result) = fence_rx.recv() => {
                    self.fenced_peer |= result.is_ok();
                    self.core.handle(Instant::now(), Input::FenceDone(result), &mut out);
                }
                c = commands.recv() => {
                    let Some((c, tx)) = c else { return };
                    let input = match c {
                        Command::Handover => Input::Handover,
                        Command::ConfirmPeerDown => Input::ConfirmPeerDown,
                        Command::Shutdown => {
                            if self.core.serving() {
                                self.stop_serving().await;
                            }
                            let _ = tx.send(Ok("stopped".into()));
                            return;
                        }
                    };
                    self.core.handle(Instant::now(), input, &mut out);
                    reply = Some(tx);
                }
            }
            let mut refused = None;
            for e in out {
                match e {
                    Effect::Serve(reason) => self.serve(reason).await,
                    Effect::StopServing => self.stop_serving().await,
                    Effect::Fence(reason) => self.fence(reason, fence_tx.clone()),
                    Effect::Log(line) => self.log(&format!("pair: {line}")),
                    Effect::Refused(why) => refused = Some(why),
                }
            }
            if let Some(tx) = reply {
                let _ = tx.send(match refused {
                    Some(why) => Err(why),
                    None => Ok(format!(
                        "{} is {}",
                        self.setup.me,
                        self.core.role().as_str()
                    )),
                });
            }
            if self.core.role() != before {
                self.send_heartbeat(peer_mlan).await;
            }
            if self.held.is_none() && self.core.serving() && self.setup.move_address {
                // The address could not be taken yet: try again at every tick.
                self.take_address().await;
            }
            self.publish().await;
        }
    }

    fn log(&self, line: &str) {
        tracing::info!("{line}");
        (self.setup.log)(line);
    }

    async fn send_heartbeat(&mut self, to: SocketAddr) {
        self.seq += 1;
        let beat: Heartbeat = self.core.heartbeat(self.seq);
        let bytes = wire::encode(&self.setup.me, &beat, wall_ms(), &self.setup.key);
        if let Err(e) = self.sock.send_to(&bytes, to).await {
            tracing::debug!(%to, "mlan heartbeat not sent: {e}");
        }
    }

    async fn serve(&mut self, reason: Reason) {
        self.takeovers += 1;
        if self.setup.move_address {
            self.take_address().await;
        }
        self.setup
            .pipeline
            .counters()
            .standing_by
            .store(false, Ordering::SeqCst);
        // The resets the old active had in flight go on here.
        let _ = self.setup.pipeline.take_over().await;
        self.log(&format!(
            "pair: {} ACTIVE ({}): serving the reset path",
            self.setup.me,
            reason.as_str()
        ));
    }

    async fn take_address(&mut self) {
        let (ip, prefix) = self.setup.reset_path;
        let iface = match addr::find_interface(ip, prefix, None) {
            Ok(i) => i,
            Err(e) => {
                self.address_error(format!("{e}"));
                return;
            }
        };
        match addr::add(&iface, ip, prefix).await {
            Ok(added) => {
                if let Err(e) = addr::announce(&iface, ip) {
                    self.log(&format!("pair: announcing {ip} on {iface}: {e}"));
                }
                let ours = matches!(added, addr::Added::New);
                if ours {
                    self.log(&format!(
                        "pair: reset path address {ip}/{prefix} added on {iface}"
                    ));
                } else {
                    self.log(&format!(
                        "pair: reset path address {ip} was already on {iface}; this server will not remove it"
                    ));
                }
                self.held = Some((iface, ours));
            }
            Err(e) => self.address_error(format!("{e}")),
        }
    }

    fn address_error(&self, why: String) {
        self.status_tx
            .send_modify(|s| s.address = format!("error: {why}"));
        tracing::error!("pair: the reset path address cannot be taken: {why}");
    }

    async fn stop_serving(&mut self) {
        let counters = self.setup.pipeline.counters();
        counters.standing_by.store(true, Ordering::SeqCst);
        counters.hold_for_standby.store(false, Ordering::SeqCst);
        if let Some((iface, true)) = self.held.take() {
            let (ip, prefix) = self.setup.reset_path;
            match addr::remove(&iface, ip, prefix).await {
                Ok(()) => self.log(&format!(
                    "pair: reset path address {ip} removed from {iface}"
                )),
                Err(e) => self.log(&format!("pair: removing {ip} from {iface} failed: {e}")),
            }
        }
        self.log(&format!("pair: {} stopped serving", self.setup.me));
    }

    /// An active with a standby sends it the monitor registrations and the systems that
    /// are not normal when the core's generation moves (and every [`MONITORS_REFRESH`]
    /// for the ages), one send at a time.
    fn sync_monitors(&mut self, now: Instant) {
        use std::sync::atomic::Ordering::SeqCst;
        let Some(run) = self.core.peer_run(now) else {
            return;
        };
        if !self.core.serving() || self.monitors_in_flight.load(SeqCst) {
            return;
        }
        let count = self.setup.pipeline.counters().sync_generation.load(SeqCst);
        let (sent_run, at) = self.monitors_sent;
        let stale = at.is_none_or(|t| now.saturating_duration_since(t) >= MONITORS_REFRESH);
        if self.monitors_acked.load(SeqCst) == count && sent_run == Some(run) && !stale {
            return;
        }
        self.monitors_sent = (Some(run), Some(now));
        self.monitors_in_flight.store(true, SeqCst);
        let (pipeline, sync, flag, acked) = (
            self.setup.pipeline.clone(),
            self.sync.clone(),
            self.monitors_in_flight.clone(),
            self.monitors_acked.clone(),
        );
        tokio::spawn(async move {
            if let Ok(state) = pipeline.synced_state().await {
                let count = state.generation;
                match sync
                    .send(PushBody::State { state }, sync::PUSH_TIMEOUT)
                    .await
                {
                    Ok(_) => {
                        acked.store(count, SeqCst);
                        let counters = pipeline.counters();
                        counters.standby_generation.store(count, SeqCst);
                        let _ = pipeline.standby_synced().await;
                        if counters.sync_generation.load(SeqCst) > count {
                            // It moved meanwhile: send again without waiting for a tick.
                            counters.sync_now.notify_one();
                        }
                    }
                    Err(why) => {
                        tracing::warn!("the standby did not take the reset core's state: {why}")
                    }
                }
            }
            flag.store(false, SeqCst);
        });
    }

    /// An active that hears a new run of its peer as standby sends it the spec.
    fn sync_new_standby(&mut self, now: Instant) {
        let Some(run) = self.core.peer_run(now) else {
            return;
        };
        if !self.core.serving() || self.synced_run == Some(run) {
            return;
        }
        self.synced_run = Some(run);
        let spec = crate::spec::render::state_yaml(&self.setup.pipeline.live());
        let sync = self.sync.clone();
        let log = self.setup.log.clone();
        let peer = self.setup.peer.name.clone();
        tokio::spawn(async move {
            match sync.push(spec).await {
                Ok(ack) => log(&format!("pair: spec sent to {peer}: {}", ack.message)),
                Err(why) => log(&format!("pair: spec not sent to {peer}: {why}")),
            }
        });
    }

    fn fence(&self, reason: Reason, done: mpsc::Sender<Result<String, String>>) {
        let peer = self.setup.peer.clone();
        let pdus = self.setup.pdus.clone();
        let bmc = self.setup.bmc.clone();
        let pdu = self.setup.pdu.clone();
        let reset_log = self.setup.reset_log.clone();
        tracing::info!(peer = %peer.name, ?reason, "fencing the peer through its BMC {}", peer.bmc.address);
        tokio::spawn(async move {
            let r = fence_peer(&peer, &pdus, bmc.as_ref(), pdu.as_ref(), reset_log.as_ref()).await;
            let _ = done.send(r).await;
        });
    }

    /// Publishes the status and tells the pipeline what check replies say of the pair.
    async fn publish(&mut self) {
        let now = Instant::now();
        let v = self.core.view(now);
        let peer_state = if self.fenced_peer {
            "reset"
        } else if v.peer_link {
            "normal"
        } else if v.peer_role.is_some() {
            "error"
        } else {
            "----"
        };
        let address = if !self.setup.move_address {
            None
        } else if let Some((i, ours)) = &self.held {
            Some(if *ours {
                format!("held on {i}")
            } else {
                format!("held on {i} (added by someone else)")
            })
        } else if self.core.serving() {
            None // the error set by take_address stands
        } else {
            Some("not held".to_string())
        };
        self.sync_new_standby(now);
        let live = self.setup.pipeline.live();
        if !Arc::ptr_eq(&live, &self.checksummed.0) {
            self.checksummed = (
                live.clone(),
                sync::checksum(&crate::spec::render::state_yaml(&live)),
            );
        }
        let checksum = self.checksummed.1.clone();
        let takeovers = self.takeovers;
        let peer_spec = if self.core.serving() {
            self.sync
                .last
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        } else {
            "----".to_string()
        };
        let peer = &self.setup.peer.name;
        self.status_tx.send_if_modified(|s| {
            let new = PairStatus {
                me: s.me.clone(),
                peer: s.peer.clone(),
                role: v.role.as_str().into(),
                peer_role: v.peer_role.map_or("----", Role::as_str).into(),
                peer_link: if v.peer_link { "OK" } else { "NG" }.into(),
                peer_state: peer_state.into(),
                fencing: v.fencing,
                blocked: v.blocked.clone(),
                redundant: v.redundant,
                address: address.clone().unwrap_or_else(|| s.address.clone()),
                takeovers,
                peer_spec: peer_spec.clone(),
                spec_checksum: checksum.clone(),
            };
            let changed = *s != new;
            *s = new;
            changed
        });
        // The end of a reset waits for the standby only while there is a healthy one.
        self.setup
            .pipeline
            .counters()
            .hold_for_standby
            .store(v.redundant && self.core.serving(), Ordering::SeqCst);
        let note = if v.redundant && self.core.serving() {
            None
        } else if !v.peer_link {
            Some(format!(
                "standby management server {peer} is lost: not redundant"
            ))
        } else {
            Some(format!(
                "management server {peer} is {}, not a standby: not redundant",
                v.peer_role.map_or("----", Role::as_str)
            ))
        };
        if self.note.as_ref() != Some(&note)
            && self.core.serving()
            && self.setup.pipeline.pair_note(note.clone()).await.is_ok()
        {
            self.note = Some(note);
        }
    }
}

/// Fences the peer: a hard reset its BMC acknowledges, else every outlet of its `ipdu`
/// confirmed off. `Ok` says how; `Err` why neither worked.
pub async fn fence_peer(
    peer: &ManagementServer,
    pdus: &std::collections::BTreeMap<std::net::IpAddr, PduSpec>,
    bmc: &dyn Bmc,
    pdu: &dyn Pdu,
    reset_log: &(dyn Fn(String) + Send + Sync),
) -> Result<String, String> {
    use crate::pipeline::resetlog::{self, Dir, Peer};
    let ipdu = peer.ipdu.as_ref().filter(|i| i.enabled);
    let limit = ipdu
        .and_then(|i| i.timeout)
        .map_or(FENCE_BMC_TIMEOUT, |t| t.duration());
    let device = format!("BMC {}", peer.bmc.address);
    let name = peer.name.as_str();
    reset_log(resetlog::mserver_hard_reset(name, Dir::Send));
    let bmc_error = match bounded(&device, limit, bmc.hard_reset(&peer.bmc)).await {
        Ok(()) => {
            reset_log(resetlog::mserver_hard_reset(name, Dir::Recv));
            return Ok(format!("{device} acknowledged the hard reset"));
        }
        Err(e) => e.to_string(),
    };
    let Some(ipdu) = ipdu.filter(|i| !i.outlets.is_empty()) else {
        return Err(format!("{bmc_error}; no PDU outlets to cut (ipdu off)"));
    };
    let note = |o: &crate::spec::model::OutletLink, confirmed: bool| {
        let dir = if confirmed { Dir::Recv } else { Dir::Send };
        reset_log(resetlog::ipdusd(
            name,
            None,
            dir,
            Peer::default(),
            o.pdu,
            o.outlet,
            false,
        ))
    };
    let errors =
        crate::backend::cut_outlets(pdus, &ipdu.outlets, pdu, FENCE_OUTLET_TIMEOUT, &note).await;
    if errors.is_empty() {
        let list: Vec<String> = ipdu.outlets.iter().map(ToString::to_string).collect();
        Ok(format!(
            "outlets {} confirmed off ({bmc_error})",
            list.join(", ")
        ))
    } else {
        Err(format!("{bmc_error}; PDU: {}", errors.join("; ")))
    }
}
