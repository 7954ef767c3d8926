//! The reset pipeline's home: a dedicated OS thread with its own single-threaded tokio
//! runtime, so reloads, file watching, status queries and control-socket traffic on the
//! main runtime can never take its turn.
//!
//! It owns everything a reset needs and everything a reload must respect: the live
//! configuration snapshot (`ArcSwap<Spec>`, which it alone stores into), the HA monitors
//! registered by reset-path checks, and the resets in flight. It reads the reset-path
//! socket itself, so a reset request goes from the socket to the backend without leaving
//! this thread. Each reset runs as its own task ([`reset::run`]), so a slow BMC delays
//! only its own reset. Log lines go to writer threads ([`crate::log::LogSink`]).
//!
//! A reload sends a [`PipelineMsg::Commit`] with the merged spec and the guards each
//! accepted change relied on; they are checked against the state at that instant and the
//! snapshot is swapped only if they all hold. The replaced snapshot is handed back so its
//! memory is freed off this thread.

pub mod pdutest;
pub mod reset;
pub mod resetlog;
pub mod watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::backend::Backends;
use crate::log::LogSink;
use crate::plan::LiveFacts;
use crate::plan::merge::Guard;
use crate::resetpath::codec::{
    self, AttentionState, DecodeError, Envelope, Key, MAX_DATAGRAM, Message, ReplayGuard,
    ResetResult,
};
use crate::spec::model::{Auth, Spec};
use reset::{Outcome, Step};
use resetlog::{Dir, Kind, Peer};

/// The pipeline's answer to a commit.
#[derive(Debug)]
pub struct CommitReply {
    /// Changes whose guard no longer holds; empty when the snapshot was swapped.
    pub violated: Vec<usize>,
    /// The replaced snapshot, to be dropped by the caller.
    pub replaced: Option<Arc<Spec>>,
}

/// Monitor and reset states to set by hand (tests of reload refusals).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum Simulation {
    MonitorUp { system: String },
    MonitorDown { system: String },
    ResetStarted { system: String },
    ResetFinished { system: String },
}

/// A registered HA monitor, as `show hamonitor` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonitorView {
    pub system: String,
    pub subsystem: u32,
    pub ip: IpAddr,
    pub port: u16,
    pub pair: Option<u32>,
    /// `normal`, `reset`, `dump`, `reboot`, `poff` or `error`.
    pub state: String,
    pub last_check_ms_ago: u64,
}

/// Counters of the reset path (checks are counted, not logged).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub checks: AtomicU64,
    pub resets: AtomicU64,
    pub stopped: AtomicU64,
    pub malformed: AtomicU64,
    pub rejected_auth: AtomicU64,
    pub replayed: AtomicU64,
    pub send_errors: AtomicU64,
}

/// Messages the pipeline thread accepts from the rest of the daemon.
#[derive(Debug)]
pub enum PipelineMsg {
    Facts(oneshot::Sender<LiveFacts>),
    Commit {
        spec: Arc<Spec>,
        guards: Vec<Guard>,
        reply: oneshot::Sender<CommitReply>,
    },
    /// Liveness probe: answered with how long the message waited to be handled.
    Ping {
        sent: Instant,
        reply: oneshot::Sender<Duration>,
    },
    Simulate(Simulation),
    Monitors(oneshot::Sender<Vec<MonitorView>>),
    /// What the watch knows, as `show status` prints it.
    Health(oneshot::Sender<serde_json::Value>),
    /// An operator's PDU-cut test or power restore of a server (`haconn server ipdusd`,
    /// `haconn server acrecovery`): refused at once (`Err`), or started, reporting its
    /// progress lines and then its end through `progress`.
    PduJob {
        request: PduRequest,
        progress: mpsc::UnboundedSender<PduJobEvent>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// An operator's test reset of a registered system (`haconn server reset`).
    TestReset {
        system: String,
        subsystem: u32,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// An operator's PDU action on a server.
#[derive(Debug, Clone)]
pub struct PduRequest {
    /// A server, or with `mserver` a management server.
    pub server: String,
    pub mserver: bool,
    /// Only the outlets on this PDU.
    pub pdu: Option<IpAddr>,
    /// `None` restores power (acrecovery).
    pub test: Option<(pdutest::Mode, Duration, Duration)>,
    /// Run even though the server's HA monitor is active.
    pub force: bool,
}

/// A running PDU job's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PduJobEvent {
    Line(String),
    Done(Result<String, String>),
}

/// What the pipeline thread needs besides the spec.
#[derive(Debug)]
pub struct PipelineConfig {
    pub backends: Backends,
    /// The bound reset-path socket; `None` runs without a reset path (tests of reloads).
    pub reset_path: Option<std::net::UdpSocket>,
    /// A bound socket for fence_kdump_send notifications.
    pub fence_kdump: Option<std::net::UdpSocket>,
    pub reset_log: LogSink,
    pub error_log: LogSink,
    /// A monitor that has not checked for this long no longer counts as active.
    pub monitor_expiry: Duration,
    /// How often every BMC, PDU and ESXi guest is polled; `None` watches nothing.
    pub watch: Option<Duration>,
}

impl PipelineConfig {
    /// No sockets, simulated hardware, no logs: for tests of the reload machinery.
    pub fn detached() -> Self {
        let sim = Arc::new(crate::backend::sim::Sim::default());
        PipelineConfig {
            backends: Backends {
                bmc: sim.clone(),
                pdu: sim.clone(),
                hypervisor: sim,
            },
            reset_path: None,
            fence_kdump: None,
            reset_log: LogSink::discard(),
            error_log: LogSink::discard(),
            monitor_expiry: Duration::from_secs(60),
            watch: None,
        }
    }
}

/// The main runtime's handle on the pipeline thread.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<PipelineMsg>,
    live: Arc<ArcSwap<Spec>>,
    counters: Arc<Counters>,
}

/// Why the pipeline could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the reset pipeline thread is not running")]
pub struct PipelineGone;

/// The running thread; dropping every `Pipeline` handle stops it, [`PipelineThread::join`] waits for it.
#[derive(Debug)]
pub struct PipelineThread {
    handle: thread::JoinHandle<()>,
}

impl PipelineThread {
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

impl Pipeline {
    /// Starts the pipeline thread with `spec` as the live configuration.
    pub fn start(
        spec: Spec,
        config: PipelineConfig,
    ) -> std::io::Result<(Pipeline, PipelineThread)> {
        let live = Arc::new(ArcSwap::from_pointee(spec));
        let counters = Arc::new(Counters::default());
        let (tx, rx) = mpsc::channel(1024);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let live2 = live.clone();
        let counters2 = counters.clone();
        let handle = thread::Builder::new()
            .name("haconn-pipeline".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match State::new(live2, counters2, config) {
                        Ok((state, sockets)) => state.run(rx, sockets).await,
                        Err(e) => tracing::error!(error = %e, "the pipeline could not start"),
                    }
                })
            })?;
        Ok((Pipeline { tx, live, counters }, PipelineThread { handle }))
    }

    /// The live configuration snapshot (lock-free read).
    pub fn live(&self) -> Arc<Spec> {
        self.live.load_full()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> PipelineMsg,
    ) -> Result<T, PipelineGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).await.map_err(|_| PipelineGone)?;
        rx.await.map_err(|_| PipelineGone)
    }

    pub async fn facts(&self) -> Result<LiveFacts, PipelineGone> {
        self.ask(PipelineMsg::Facts).await
    }

    pub async fn commit(
        &self,
        spec: Arc<Spec>,
        guards: Vec<Guard>,
    ) -> Result<CommitReply, PipelineGone> {
        self.ask(|reply| PipelineMsg::Commit {
            spec,
            guards,
            reply,
        })
        .await
    }

    /// How long a message waited in the pipeline's queue before being handled.
    pub async fn ping(&self) -> Result<Duration, PipelineGone> {
        let sent = Instant::now();
        self.ask(|reply| PipelineMsg::Ping { sent, reply }).await
    }

    pub async fn simulate(&self, s: Simulation) -> Result<(), PipelineGone> {
        self.tx
            .send(PipelineMsg::Simulate(s))
            .await
            .map_err(|_| PipelineGone)
    }

    pub async fn monitors(&self) -> Result<Vec<MonitorView>, PipelineGone> {
        self.ask(PipelineMsg::Monitors).await
    }

    /// The watch's view of every device (`show status`).
    pub async fn health(&self) -> Result<serde_json::Value, PipelineGone> {
        self.ask(PipelineMsg::Health).await
    }

    /// Starts a PDU job; its lines and end arrive on the returned channel.
    pub async fn pdu_job(
        &self,
        request: PduRequest,
    ) -> Result<Result<mpsc::UnboundedReceiver<PduJobEvent>, String>, PipelineGone> {
        let (progress, rx) = mpsc::unbounded_channel();
        let started = self
            .ask(|reply| PipelineMsg::PduJob {
                request,
                progress,
                reply,
            })
            .await?;
        Ok(started.map(|()| rx))
    }

    pub async fn test_reset(
        &self,
        system: String,
        subsystem: u32,
    ) -> Result<Result<(), String>, PipelineGone> {
        self.ask(|reply| PipelineMsg::TestReset {
            system,
            subsystem,
            reply,
        })
        .await
    }
}

/// Who asked for a reset; `None` fields are a test command's `----`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requester {
    /// The requesting system; `None` for a test command.
    system: Option<String>,
    addr: Option<SocketAddr>,
    req: Option<u32>,
}

impl Requester {
    fn peer(&self) -> Peer {
        Peer {
            ip: self.addr.map(|a| a.ip()),
            port: self.addr.map(|a| a.port()),
            req: self.req,
        }
    }
}

#[derive(Debug)]
struct Monitor {
    subsystem: u32,
    addr: SocketAddr,
    pair: Option<u32>,
    last_seen: Instant,
}

#[derive(Debug)]
struct InFlight {
    kind: Kind,
    subsystem: u32,
    requesters: Vec<Requester>,
    stopped: Option<oneshot::Sender<()>>,
}

/// One attention notification to many destinations, sent off the pipeline thread.
struct Fanout {
    system: String,
    subsystem: u32,
    kind: Kind,
    state: AttentionState,
    to: Vec<(SocketAddr, Option<u32>)>,
}

/// Sends attention fan-outs from their own thread: telling thousands of monitors must not
/// hold up the next reset request.
fn spawn_notifier(
    sock: std::net::UdpSocket,
    key: Key,
    reset_log: LogSink,
    counters: Arc<Counters>,
) -> std::io::Result<std::sync::mpsc::Sender<Fanout>> {
    let (tx, rx) = std::sync::mpsc::channel::<Fanout>();
    thread::Builder::new()
        .name("haconn-notify".into())
        .spawn(move || {
            for f in rx {
                let word = match f.state {
                    AttentionState::Dump => "DUMP",
                    AttentionState::Reboot => "REBOOT",
                    AttentionState::Poff => "POFF",
                };
                for (addr, req) in f.to {
                    let msg = Message::Attention {
                        system: f.system.clone(),
                        subsystem: f.subsystem,
                        state: f.state,
                        req,
                    };
                    let bytes = codec::encode(&Envelope::new(msg), &key);
                    // The socket is shared with the pipeline's non-blocking reads: when
                    // the send buffer is full, wait a little here (this is our own thread).
                    let mut sent = sock.send_to(&bytes, addr);
                    for _ in 0..50 {
                        match &sent {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(1));
                                sent = sock.send_to(&bytes, addr);
                            }
                            _ => break,
                        }
                    }
                    if sent.is_err() {
                        counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let peer = Peer {
                        ip: Some(addr.ip()),
                        port: Some(addr.port()),
                        req,
                    };
                    reset_log.line(resetlog::attention(
                        &f.system,
                        f.subsystem,
                        Dir::Send,
                        peer,
                        f.kind,
                        word,
                    ));
                }
            }
        })?;
    Ok(tx)
}

/// How long a request number and an early stop notification are remembered.
const REMEMBER: Duration = Duration::from_secs(60);
/// How long a stop notification with no reset yet stays valid (cleared sooner when the
/// system's monitor checks again).
const EARLY_STOP: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Remembered {
    at: Instant,
    target: String,
    /// The final answer once there is one.
    reply: Option<(ResetResult, Option<String>)>,
}

/// Reports from reset tasks, handled on the pipeline thread in order.
#[derive(Debug)]
enum Internal {
    Step {
        system: String,
        step: Step,
    },
    Done {
        system: String,
        outcome: Outcome,
    },
    Polled {
        probe: watch::Probe,
        answer: Option<watch::Answer>,
    },
    PduJobDone {
        server: String,
    },
}

struct Sockets {
    reset_path: Option<UdpSocket>,
    fence_kdump: Option<UdpSocket>,
}

struct State {
    live: Arc<ArcSwap<Spec>>,
    counters: Arc<Counters>,
    backends: Backends,
    reset_log: LogSink,
    error_log: LogSink,
    monitor_expiry: Duration,
    /// The reset-path key, resolved once: changing it needs a restart.
    key: Key,
    /// Sends replies (a plain non-blocking socket: a UDP send never waits).
    send: Option<std::net::UdpSocket>,
    /// Queues attention fan-outs for the notifier thread.
    notify: Option<std::sync::mpsc::Sender<Fanout>>,
    monitors: HashMap<String, Monitor>,
    resets: HashMap<String, InFlight>,
    /// Systems reset and not yet back (their monitor has not checked since).
    reset_done: HashMap<String, AttentionState>,
    simulated_monitors: BTreeSet<String>,
    simulated_resets: BTreeSet<String>,
    replay: ReplayGuard,
    /// Recent requests by (requester, req#): a retransmitted request gets the same answer
    /// instead of a second reset.
    requests: HashMap<(String, u32), Remembered>,
    /// The context of recently ended resets, for the outlet-recovery lines that follow them.
    finished: HashMap<String, (Instant, Kind, u32, Peer)>,
    /// Systems whose last reset failed (`error` in `show hamonitor`) until they check again.
    failed: HashSet<String>,
    /// Stop notifications that arrived before any reset of their system.
    early_stops: HashMap<String, (Instant, Option<SocketAddr>)>,
    /// Refusals already logged, so a flood is logged once per sender and reason.
    logged_refusals: HashSet<(IpAddr, String)>,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: Option<mpsc::UnboundedReceiver<Internal>>,
    watch_interval: Option<Duration>,
    health: watch::Health,
    /// Servers with an operator PDU job running.
    pdu_jobs: HashSet<String>,
}

impl State {
    fn new(
        live: Arc<ArcSwap<Spec>>,
        counters: Arc<Counters>,
        config: PipelineConfig,
    ) -> std::io::Result<(State, Sockets)> {
        let to_tokio = |s: Option<std::net::UdpSocket>| -> std::io::Result<Option<UdpSocket>> {
            s.map(|s| {
                s.set_nonblocking(true)?;
                UdpSocket::from_std(s)
            })
            .transpose()
        };
        let send = config
            .reset_path
            .as_ref()
            .map(|s| s.try_clone())
            .transpose()?;
        let reset_path = to_tokio(config.reset_path)?;
        let fence_kdump = to_tokio(config.fence_kdump)?;
        // Replies leave from the reset-path socket itself, so monitors see them come from
        // the address and port they sent to.
        if let Some(s) = &send {
            s.set_broadcast(true)?;
            s.set_nonblocking(true)?;
        }
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let key = reset_key(&live.load());
        let notify = match &send {
            Some(s) => Some(spawn_notifier(
                s.try_clone()?,
                key.clone(),
                config.reset_log.clone(),
                counters.clone(),
            )?),
            None => None,
        };
        Ok((
            State {
                key,
                notify,
                live,
                counters,
                backends: config.backends,
                reset_log: config.reset_log,
                error_log: config.error_log,
                monitor_expiry: config.monitor_expiry,
                send,
                monitors: HashMap::new(),
                resets: HashMap::new(),
                reset_done: HashMap::new(),
                simulated_monitors: BTreeSet::new(),
                simulated_resets: BTreeSet::new(),
                replay: ReplayGuard::default(),
                requests: HashMap::new(),
                finished: HashMap::new(),
                failed: HashSet::new(),
                early_stops: HashMap::new(),
                logged_refusals: HashSet::new(),
                internal,
                internal_rx: Some(internal_rx),
                watch_interval: config.watch,
                health: watch::Health::default(),
                pdu_jobs: HashSet::new(),
            },
            Sockets {
                reset_path,
                fence_kdump,
            },
        ))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<PipelineMsg>, sockets: Sockets) {
        let mut internal = self.internal_rx.take().expect("taken once");
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut kbuf = vec![0u8; 512];
        let mut tick = self.watch_interval.map(|i| {
            let mut t = tokio::time::interval(i);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                _ = async {
                    match &mut tick {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => self.watch_tick(),
                Some(ev) = internal.recv() => self.internal(ev),
                r = recv(sockets.reset_path.as_ref(), &mut buf) => {
                    if let Ok((n, from)) = r {
                        self.datagram(&buf[..n], from);
                    }
                }
                r = recv(sockets.fence_kdump.as_ref(), &mut kbuf) => {
                    if let Ok((n, from)) = r {
                        self.fence_kdump(&kbuf[..n], from);
                    }
                }
            }
        }
        // The daemon is stopping: close what the backends keep open (IPMI sessions, SSH
        // connections), bounded so a dead device cannot hold the exit up.
        let b = &self.backends;
        let close = async {
            futures_util::future::join3(b.bmc.shutdown(), b.pdu.shutdown(), b.hypervisor.shutdown())
                .await
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), close).await;
    }

    /// Checks and starts an operator PDU job on a server's outlets.
    fn pdu_job(
        &mut self,
        req: PduRequest,
        progress: mpsc::UnboundedSender<PduJobEvent>,
    ) -> Result<(), String> {
        let spec = self.live.load_full();
        let (links, systems): (&[crate::spec::model::OutletLink], Vec<String>) = if req.mserver {
            let m = spec
                .management_servers
                .values()
                .find(|m| m.name.as_str() == req.server)
                .ok_or_else(|| format!("no management server named {}", req.server))?;
            (m.ipdu.as_ref().map_or(&[], |i| &i.outlets), Vec::new())
        } else {
            let server = spec
                .servers
                .values()
                .find(|s| s.name.as_str() == req.server)
                .ok_or_else(|| format!("no server named {} in the live spec", req.server))?;
            let systems = match &server.esxi {
                None => vec![server.name.to_string()],
                Some(e) => e.guests.iter().map(|g| g.to_string()).collect(),
            };
            (server.outlets(), systems)
        };
        let outlets: Vec<_> = links
            .iter()
            .filter(|l| req.pdu.is_none_or(|p| p == l.pdu))
            .filter_map(|l| spec.pdus.get(&l.pdu).map(|p| (*l, p.clone())))
            .collect();
        if outlets.is_empty() {
            return Err(match req.pdu {
                Some(p) => format!("{} has no outlet on PDU {p}", req.server),
                None => format!("{} has no PDU outlets in the spec", req.server),
            });
        }
        if let Some(s) = systems.iter().find(|s| self.resets.contains_key(*s)) {
            return Err(format!("{s} is being reset; try again when it is done"));
        }
        if self.pdu_jobs.contains(&req.server) {
            return Err(format!("a PDU job on {} is already running", req.server));
        }
        if req.test.is_some() && !req.force {
            let now = Instant::now();
            let active: Vec<&String> = systems
                .iter()
                .filter(|s| {
                    self.monitors
                        .get(*s)
                        .is_some_and(|m| now.duration_since(m.last_seen) <= self.monitor_expiry)
                        || self.simulated_monitors.contains(*s)
                })
                .collect();
            if !active.is_empty() {
                return Err(format!(
                    "the HA monitor of {} is active: cutting its power would take it down \
                     (stop it first, or --force)",
                    active
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let action = match req.test {
            Some((mode, off_time, wait_time)) => pdutest::Action::Test {
                mode,
                off_time,
                wait_time,
            },
            None => pdutest::Action::Recover,
        };
        let job = pdutest::Job {
            target: req.server.clone(),
            outlets,
            action,
        };
        self.pdu_jobs.insert(req.server.clone());
        let backends = self.backends.clone();
        let reset_log = self.reset_log.clone();
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let run = pdutest::run(job, backends, reset_log, tx);
            tokio::pin!(run);
            let end = loop {
                tokio::select! {
                    biased;
                    Some(p) = rx.recv() => {
                        let _ = progress.send(PduJobEvent::Line(p.line));
                    }
                    end = &mut run => break end,
                }
            };
            while let Ok(p) = rx.try_recv() {
                let _ = progress.send(PduJobEvent::Line(p.line));
            }
            let _ = progress.send(PduJobEvent::Done(end));
            let _ = internal.send(Internal::PduJobDone { server: req.server });
        });
        Ok(())
    }

    /// Starts a poll of every device that has none in flight.
    fn watch_tick(&mut self) {
        let spec = self.live.load_full();
        for probe in self.health.due(&spec) {
            let spec = spec.clone();
            let backends = self.backends.clone();
            let internal = self.internal.clone();
            tokio::spawn(async move {
                let answer = watch::poll(&spec, &probe, &backends).await;
                let _ = internal.send(Internal::Polled { probe, answer });
            });
        }
    }

    /// A poll came back; a pon→poff transition of a system whose HA monitor is registered
    /// is told to the cluster at once (SPEC §3).
    fn polled(&mut self, probe: watch::Probe, answer: Option<watch::Answer>) {
        let spec = self.live.load_full();
        let Some(answer) = answer else {
            self.health.forget(&probe);
            return;
        };
        let Some(loss) = self.health.record(&spec, probe, answer) else {
            return;
        };
        let now = Instant::now();
        for (system, guest) in loss.systems {
            let Some(m) = self.monitors.get(&system) else {
                continue;
            };
            if now.duration_since(m.last_seen) > self.monitor_expiry
                || self.resets.contains_key(&system)
                || self.reset_done.contains_key(&system)
            {
                continue;
            }
            self.error_log.line(format!(
                "{}: {system} lost power; POFF attention sent",
                loss.what
            ));
            let inflight = InFlight {
                kind: if guest { Kind::V } else { Kind::P },
                subsystem: m.subsystem,
                requesters: Vec::new(),
                stopped: None,
            };
            self.reset_done.insert(system.clone(), AttentionState::Poff);
            self.attention(&system, &inflight, AttentionState::Poff);
        }
    }

    fn handle(&mut self, msg: PipelineMsg) {
        match msg {
            PipelineMsg::Facts(reply) => {
                let _ = reply.send(self.facts());
            }
            PipelineMsg::Commit {
                spec,
                guards,
                reply,
            } => {
                let violated: Vec<usize> = guards
                    .iter()
                    .filter(|g| !self.holds(g))
                    .map(|g| g.change)
                    .collect();
                let replaced = violated.is_empty().then(|| self.live.swap(spec));
                let _ = reply.send(CommitReply { violated, replaced });
            }
            PipelineMsg::Ping { sent, reply } => {
                let _ = reply.send(sent.elapsed());
            }
            PipelineMsg::Simulate(s) => match s {
                Simulation::MonitorUp { system } => {
                    self.simulated_monitors.insert(system);
                }
                Simulation::MonitorDown { system } => {
                    self.simulated_monitors.remove(&system);
                }
                Simulation::ResetStarted { system } => {
                    self.simulated_resets.insert(system);
                }
                Simulation::ResetFinished { system } => {
                    self.simulated_resets.remove(&system);
                }
            },
            PipelineMsg::Monitors(reply) => {
                let _ = reply.send(self.monitor_views());
            }
            PipelineMsg::PduJob {
                request,
                progress,
                reply,
            } => {
                let _ = reply.send(self.pdu_job(request, progress));
            }
            PipelineMsg::Health(reply) => {
                let spec = self.live.load();
                let _ = reply.send(self.health.view(&spec, self.watch_interval));
            }
            PipelineMsg::TestReset {
                system,
                subsystem,
                reply,
            } => {
                let requester = Requester {
                    system: None,
                    addr: None,
                    req: None,
                };
                // SPEC §8: a test soft reset; never escalates to a hard reset or PDU cut.
                let r = self.start_reset(&system, subsystem, requester, true);
                let _ = reply.send(r);
            }
        }
    }

    /// Monitors that checked recently, and resets in flight (plus simulated ones).
    fn facts(&self) -> LiveFacts {
        let now = Instant::now();
        let mut monitors_active: BTreeSet<String> = self
            .monitors
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) <= self.monitor_expiry)
            .map(|(s, _)| s.clone())
            .collect();
        monitors_active.extend(self.simulated_monitors.iter().cloned());
        let mut resetting: BTreeSet<String> = self.resets.keys().cloned().collect();
        resetting.extend(self.simulated_resets.iter().cloned());
        LiveFacts {
            monitors_active,
            resetting,
            active: None,
        }
    }

    fn monitor_views(&self) -> Vec<MonitorView> {
        let now = Instant::now();
        let mut v: Vec<MonitorView> = self
            .monitors
            .iter()
            .map(|(system, m)| {
                let state = if self.resets.contains_key(system) {
                    "reset"
                } else {
                    match self.reset_done.get(system) {
                        None if self.failed.contains(system) => "error",
                        Some(AttentionState::Dump) => "dump",
                        Some(AttentionState::Reboot) => "reboot",
                        Some(AttentionState::Poff) => "poff",
                        None if now.duration_since(m.last_seen) > self.monitor_expiry => "----",
                        None => "normal",
                    }
                };
                MonitorView {
                    system: system.clone(),
                    subsystem: m.subsystem,
                    ip: m.addr.ip(),
                    port: m.addr.port(),
                    pair: m.pair,
                    state: state.into(),
                    last_check_ms_ago: now.duration_since(m.last_seen).as_millis() as u64,
                }
            })
            .collect();
        v.sort_by(|a, b| a.system.cmp(&b.system));
        v
    }

    /// Logs a refused datagram once per sender and reason; always counted.
    fn refuse(&mut self, from: SocketAddr, reason: String) {
        if self.logged_refusals.len() < 10_000
            && self.logged_refusals.insert((from.ip(), reason.clone()))
        {
            self.error_log.line(format!(
                "reset path: refused datagrams from {from}: {reason} (logged once)"
            ));
        }
    }

    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let env = match codec::decode(bytes, &self.key) {
            Ok(env) => env,
            Err(e) => {
                let counter = match e {
                    DecodeError::BadTag
                    | DecodeError::Unsigned
                    | DecodeError::UnexpectedSignature => &self.counters.rejected_auth,
                    _ => &self.counters.malformed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, e.to_string());
                return;
            }
        };
        if let Err(e) = self.replay.check(from.ip(), &env, codec::now_ms()) {
            self.counters.replayed.fetch_add(1, Ordering::Relaxed);
            self.refuse(from, e.to_string());
            return;
        }
        match env.msg {
            Message::Check { port: 0, .. } | Message::Reset { port: 0, .. } => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, "reply port 0".into());
            }
            Message::Check {
                system,
                subsystem,
                port,
                pair,
            } => self.check(from, system, subsystem, port, pair),
            Message::Reset {
                req,
                system,
                subsystem,
                port,
                target_system,
                target_subsystem,
            } => self.reset_request(
                from,
                req,
                system,
                subsystem,
                port,
                target_system,
                target_subsystem,
            ),
            Message::Stopped { system, subsystem } => {
                self.stopped(&system, Some(from));
                self.reply(from, Message::StoppedAck { system, subsystem });
            }
            // Replies and notifications are for HA monitors, not for us.
            _ => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, "unexpected message type".into());
            }
        }
    }

    fn reply(&self, to: SocketAddr, msg: Message) {
        let Some(sock) = &self.send else { return };
        let bytes = codec::encode(&Envelope::new(msg), &self.key);
        if sock.send_to(&bytes, to).is_err() {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check(
        &mut self,
        from: SocketAddr,
        system: String,
        subsystem: u32,
        port: u16,
        pair: Option<u32>,
    ) {
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        let spec = self.live.load_full();
        let (known, verdict) = match find_system(&spec, &system) {
            None => (
                false,
                watch::Verdict {
                    resettable: false,
                    via: "none",
                    problem: Some(format!("unknown system {system}")),
                },
            ),
            Some(Found::Guest { host, .. }) if !host.enabled => (
                false,
                watch::Verdict {
                    resettable: false,
                    via: "none",
                    problem: Some("ESXi management is disabled for this host".into()),
                },
            ),
            Some(Found::Guest { server, vm, .. }) => {
                (true, self.health.resettable(server, Some(vm)))
            }
            Some(Found::Physical(server)) => (true, self.health.resettable(server, None)),
        };
        let watch::Verdict {
            resettable,
            via,
            problem: reason,
        } = verdict;
        // A known system's monitor registers even while its BMC is down: it must still
        // hear attention notifications, and it may ask for a reset through the PDU.
        if known {
            // A monitor that checks again is back: it may ask for resets again.
            if !self.resets.contains_key(&system) {
                self.reset_done.remove(&system);
                self.failed.remove(&system);
                // A stop it reported before coming back is stale now.
                self.early_stops.remove(&system);
            }
            self.monitors.insert(
                system.clone(),
                Monitor {
                    subsystem,
                    addr: SocketAddr::new(from.ip(), port),
                    pair,
                    last_seen: Instant::now(),
                },
            );
        }
        let (redundant, reason) = match (spec.mode, reason) {
            (_, Some(r)) if !known => (false, Some(r)),
            (crate::spec::model::Mode::Single, Some(r)) => (
                false,
                Some(format!("{r}; single management server: not redundant")),
            ),
            (_, Some(r)) => (false, Some(r)),
            (crate::spec::model::Mode::Single, None) => (
                false,
                Some("single management server: not redundant".into()),
            ),
            (crate::spec::model::Mode::Pair, None) => (
                false,
                Some("standby management server not synchronized".into()),
            ),
        };
        self.reply(
            SocketAddr::new(from.ip(), port),
            Message::CheckReply {
                system,
                subsystem,
                resettable,
                via: via.into(),
                redundant,
                reason,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn reset_request(
        &mut self,
        from: SocketAddr,
        req: u32,
        system: String,
        subsystem: u32,
        port: u16,
        target_system: String,
        target_subsystem: u32,
    ) {
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        let reply_to = SocketAddr::new(from.ip(), port);
        let requester = Requester {
            system: Some(system.clone()),
            addr: Some(reply_to),
            req: Some(req),
        };
        let spec = self.live.load_full();
        let kind = match find_system(&spec, &target_system) {
            Some(Found::Guest { .. }) => Kind::V,
            _ => Kind::P,
        };
        self.reset_log.line(resetlog::rm_reset(
            &target_system,
            target_subsystem,
            Dir::Recv,
            requester.peer(),
            kind,
            None,
        ));
        let answer = |result, reason: Option<String>| Message::ResetReply {
            req,
            target_system: target_system.clone(),
            target_subsystem,
            result,
            reason,
        };
        let now = Instant::now();
        self.requests
            .retain(|_, r| now.duration_since(r.at) <= REMEMBER);
        let key = (system.clone(), req);
        if let Some(r) = self
            .requests
            .get(&key)
            .filter(|r| r.target == target_system)
        {
            // A retransmission: the same answer, never a second reset.
            let (result, reason) = r.reply.clone().unwrap_or((ResetResult::Accepted, None));
            self.reply(reply_to, answer(result, reason));
            return;
        }
        let verdict = self.admit(&spec, &system, subsystem, &target_system, target_subsystem);
        if let (Ok(()), Some(state)) = (&verdict, self.reset_done.get(&target_system)) {
            // Already reset and not back (it may be dumping): answer from that reset rather
            // than interrupt it with another NMI or hard reset.
            let result = match state {
                AttentionState::Poff => ResetResult::Poff,
                AttentionState::Dump | AttentionState::Reboot => ResetResult::Dump,
            };
            let reason = Some(format!("{target_system} was already reset"));
            self.requests.insert(
                (system.clone(), req),
                Remembered {
                    at: now,
                    target: target_system.clone(),
                    reply: Some((result, reason.clone())),
                },
            );
            self.reset_log.line(resetlog::rm_reset(
                &target_system,
                target_subsystem,
                Dir::Send,
                requester.peer(),
                kind,
                Some(result_word(result)),
            ));
            let state = *state;
            self.reply(reply_to, answer(ResetResult::Accepted, None));
            self.reply(reply_to, answer(result, reason));
            // The requester hears the state as it would from the reset itself.
            if let Some(n) = &self.notify {
                let _ = n.send(Fanout {
                    system: target_system.clone(),
                    subsystem: target_subsystem,
                    kind,
                    state,
                    to: vec![(reply_to, Some(req))],
                });
            }
            return;
        }
        self.requests.insert(
            key,
            Remembered {
                at: now,
                target: target_system.clone(),
                reply: verdict.clone().err().map(|(r, why)| (r, Some(why))),
            },
        );
        match verdict {
            Err((result, reason)) => {
                let word = result_word(result);
                self.reset_log.line(resetlog::rm_reset(
                    &target_system,
                    target_subsystem,
                    Dir::Send,
                    requester.peer(),
                    kind,
                    Some(word),
                ));
                self.reply(reply_to, answer(result, Some(reason)));
            }
            Ok(()) => match self.start_reset(&target_system, target_subsystem, requester, false) {
                Ok(()) => self.reply(reply_to, answer(ResetResult::Accepted, None)),
                Err(reason) => {
                    self.reset_log.line(resetlog::rm_reset(
                        &target_system,
                        target_subsystem,
                        Dir::Send,
                        Peer {
                            ip: Some(reply_to.ip()),
                            port: Some(reply_to.port()),
                            req: Some(req),
                        },
                        kind,
                        Some("ERROR"),
                    ));
                    if let Some(r) = self.requests.get_mut(&(system.clone(), req)) {
                        r.reply = Some((ResetResult::Error, Some(reason.clone())));
                    }
                    self.reply(reply_to, answer(ResetResult::Error, Some(reason)));
                }
            },
        }
    }

    /// SPEC §2 steps 1–2: whether a requester may have a target reset.
    fn admit(
        &self,
        spec: &Spec,
        system: &str,
        subsystem: u32,
        target: &str,
        target_subsystem: u32,
    ) -> Result<(), (ResetResult, String)> {
        let error = |why: String| Err((ResetResult::Error, why));
        for (role, name, number) in [
            ("requester", system, subsystem),
            ("target", target, target_subsystem),
        ] {
            if find_system(spec, name).is_none() {
                return error(format!("unknown {role} {name}"));
            }
            if let Some(m) = self.monitors.get(name)
                && m.subsystem != number
            {
                return error(format!(
                    "{role} {name} is registered as subsystem {}, not {number}",
                    m.subsystem
                ));
            }
        }
        if system == target {
            return error("a system cannot ask for its own reset".into());
        }
        if self.resets.contains_key(system) {
            // Never both of a pair: the one being reset may not reset anyone.
            let pair_won = self.cluster_pair(spec, system, target);
            let why = if pair_won {
                format!("{system} is being reset: its monitor pair partner's reset won")
            } else {
                format!("{system} is being reset")
            };
            return Err((ResetResult::Fail, why));
        }
        if self.reset_done.contains_key(system) {
            return error(format!("{system} was reset and has not come back"));
        }
        if self.failed.contains(system) {
            // Its own reset failed: it may be half-stopped; it asks again once its monitor checks.
            return Err((
                ResetResult::Fail,
                format!("{system}'s own reset failed; waiting for its monitor to check again"),
            ));
        }
        Ok(())
    }

    /// Whether `a` and `b` are a monitor pair (same pair#) on a server with `cluster` on.
    fn cluster_pair(&self, spec: &Spec, a: &str, b: &str) -> bool {
        let cluster = |s: &str| match find_system(spec, s) {
            Some(Found::Physical(p)) => p.cluster,
            Some(Found::Guest { server, .. }) => server.cluster,
            None => false,
        };
        let pair = |s: &str| self.monitors.get(s).and_then(|m| m.pair);
        cluster(b) && pair(a).is_some() && pair(a) == pair(b)
    }

    /// Starts (or joins) the reset of `system`.
    fn start_reset(
        &mut self,
        system: &str,
        subsystem: u32,
        requester: Requester,
        soft_only: bool,
    ) -> Result<(), String> {
        if let Some(inflight) = self.resets.get_mut(system) {
            inflight.requesters.push(requester);
            return Ok(());
        }
        let spec = self.live.load_full();
        let (target, timing, kind) = match find_system(&spec, system) {
            None => return Err(format!("unknown system {system}")),
            Some(Found::Guest { host, .. }) if !host.enabled => {
                return Err("ESXi management is disabled for this host".into());
            }
            Some(Found::Guest { host, vm, .. }) => {
                let (target, timing) = reset::guest(host, vm);
                (target, timing, Kind::V)
            }
            Some(Found::Physical(server)) => {
                let (target, timing) = reset::physical(&spec, server);
                (target, timing, Kind::P)
            }
        };
        let (stopped_tx, stopped_rx) = oneshot::channel();
        self.resets.insert(
            system.to_string(),
            InFlight {
                kind,
                subsystem,
                requesters: vec![requester],
                stopped: Some(stopped_tx),
            },
        );
        if let Some((at, from)) = self.early_stops.remove(system)
            && at.elapsed() <= EARLY_STOP
        {
            self.stopped(system, from);
        }
        let (steps_tx, mut steps_rx) = mpsc::unbounded_channel();
        let internal = self.internal.clone();
        let backends = self.backends.clone();
        let name = system.to_string();
        tokio::spawn(async move {
            let run: std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send>> =
                if soft_only {
                    Box::pin(reset::soft_test(
                        target,
                        timing.hard_reset_after,
                        backends,
                        stopped_rx,
                        steps_tx,
                    ))
                } else {
                    Box::pin(reset::run(target, timing, backends, stopped_rx, steps_tx))
                };
            let mut run = run;
            // Forward steps as they happen, then the outcome; the recovery of outlets may
            // report steps after the outcome, so keep forwarding until the channel closes.
            let outcome = loop {
                tokio::select! {
                    biased;
                    Some(step) = steps_rx.recv() => {
                        let _ = internal.send(Internal::Step { system: name.clone(), step });
                    }
                    outcome = &mut run => break outcome,
                }
            };
            while let Ok(step) = steps_rx.try_recv() {
                let _ = internal.send(Internal::Step {
                    system: name.clone(),
                    step,
                });
            }
            let _ = internal.send(Internal::Done {
                system: name.clone(),
                outcome,
            });
            while let Some(step) = steps_rx.recv().await {
                let _ = internal.send(Internal::Step {
                    system: name.clone(),
                    step,
                });
            }
        });
        Ok(())
    }

    /// The node's dump agent says it stopped: the soft reset worked.
    fn stopped(&mut self, system: &str, from: Option<SocketAddr>) {
        self.counters.stopped.fetch_add(1, Ordering::Relaxed);
        let Some(inflight) = self.resets.get_mut(system) else {
            // The node stopped on its own (a panic): if a reset is asked for soon, the
            // soft reset has already done its work.
            self.early_stops
                .insert(system.to_string(), (Instant::now(), from));
            self.error_log.line(format!(
                "stopped notification for {system} before any reset; remembered for {} s",
                EARLY_STOP.as_secs()
            ));
            return;
        };
        if let Some(tx) = inflight.stopped.take() {
            let _ = tx.send(());
            let peer = Peer {
                ip: from.map(|a| a.ip()),
                port: from.map(|a| a.port()),
                req: None,
            };
            self.reset_log.line(resetlog::soft_reset(
                system,
                inflight.subsystem,
                Dir::Recv,
                peer,
                inflight.kind,
            ));
        }
    }

    /// A fence_kdump_send message: the sender's address names the system (its registered monitor).
    fn fence_kdump(&mut self, bytes: &[u8], from: SocketAddr) {
        if let Err(e) = crate::resetpath::fence_kdump::decode(bytes) {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            self.refuse(from, format!("not a fence_kdump message: {e}"));
            return;
        }
        let system = self
            .monitors
            .iter()
            .find(|(s, m)| m.addr.ip() == from.ip() && self.resets.contains_key(*s))
            .or_else(|| self.monitors.iter().find(|(_, m)| m.addr.ip() == from.ip()))
            .map(|(s, _)| s.clone());
        match system {
            Some(s) => self.stopped(&s, Some(from)),
            None => self.refuse(
                from,
                "fence_kdump message from an address no HA monitor registered".into(),
            ),
        }
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Step { system, step } => self.step(&system, step),
            Internal::Done { system, outcome } => self.done(&system, outcome),
            Internal::Polled { probe, answer } => self.polled(probe, answer),
            Internal::PduJobDone { server } => {
                self.pdu_jobs.remove(&server);
            }
        }
    }

    fn step(&mut self, system: &str, step: Step) {
        // Outlet recovery reports after the reset ended: its context is remembered.
        let (kind, subsystem, peer) = match self.resets.get(system) {
            Some(f) => (
                f.kind,
                Some(f.subsystem),
                f.requesters
                    .first()
                    .map(Requester::peer)
                    .unwrap_or_default(),
            ),
            None => match self.finished.get(system) {
                Some(&(_, kind, subsystem, peer)) => (kind, Some(subsystem), peer),
                None => (Kind::P, None, Peer::default()),
            },
        };
        let target = subsystem.unwrap_or(0);
        let on = matches!(step, Step::OutletOn { .. });
        match step {
            Step::SoftSent => {
                self.reset_log
                    .line(resetlog::soft_reset(system, target, Dir::Send, peer, kind))
            }
            Step::SoftFailed(e) => self
                .error_log
                .line(format!("soft reset of {system} failed: {e}")),
            Step::HardSent => {
                self.reset_log
                    .line(resetlog::hard_reset(system, target, Dir::Send, peer, kind))
            }
            Step::HardAcked => {
                self.reset_log
                    .line(resetlog::hard_reset(system, target, Dir::Recv, peer, kind))
            }
            Step::HardFailed(e) => self
                .error_log
                .line(format!("hard reset of {system} failed: {e}")),
            Step::OutletOff { link, result } | Step::OutletOn { link, result } => match &result {
                Ok(()) => self.reset_log.line(resetlog::ipdusd(
                    system,
                    subsystem,
                    Dir::Send,
                    peer,
                    link.pdu,
                    link.outlet,
                    on,
                )),
                Err(e) => self.error_log.line(format!(
                    "PDU {} outlet {} {} for {system} failed: {e}",
                    link.pdu,
                    link.outlet,
                    if on { "ON" } else { "OFF" }
                )),
            },
            Step::PowerOff | Step::Stopped => {}
        }
    }

    fn done(&mut self, system: &str, outcome: Outcome) {
        let Some(inflight) = self.resets.remove(system) else {
            return;
        };
        let now = Instant::now();
        self.finished
            .retain(|_, (at, ..)| now.duration_since(*at) < Duration::from_secs(300));
        let first = inflight
            .requesters
            .first()
            .map(Requester::peer)
            .unwrap_or_default();
        self.finished.insert(
            system.to_string(),
            (now, inflight.kind, inflight.subsystem, first),
        );
        let (result, attention) = match &outcome {
            Outcome::PowerOff => (ResetResult::Poff, Some(AttentionState::Poff)),
            Outcome::Dumped => (ResetResult::Dump, Some(AttentionState::Dump)),
            Outcome::Rebooted => (ResetResult::Dump, Some(AttentionState::Reboot)),
            Outcome::Failed(why) => {
                self.error_log
                    .line(format!("reset of {system} failed: {why}"));
                self.failed.insert(system.to_string());
                (ResetResult::Fail, None)
            }
        };
        let reason = match &outcome {
            Outcome::Failed(why) => Some(why.clone()),
            _ => None,
        };
        for r in &inflight.requesters {
            if let (Some(sys), Some(req)) = (&r.system, r.req)
                && let Some(m) = self.requests.get_mut(&(sys.clone(), req))
            {
                m.reply = Some((result, reason.clone()));
            }
            self.reset_log.line(resetlog::rm_reset(
                system,
                inflight.subsystem,
                Dir::Send,
                r.peer(),
                inflight.kind,
                Some(result_word(result)),
            ));
            if let (Some(addr), Some(req)) = (r.addr, r.req) {
                self.reply(
                    addr,
                    Message::ResetReply {
                        req,
                        target_system: system.to_string(),
                        target_subsystem: inflight.subsystem,
                        result,
                        reason: reason.clone(),
                    },
                );
            }
        }
        if let Some(state) = attention {
            self.reset_done.insert(system.to_string(), state);
            self.attention(system, &inflight, state);
        }
    }

    /// Tells the cluster: broadcast on the reset-path subnet (to every registered monitor
    /// port), and unicast to each requester and registered monitor.
    fn attention(&self, system: &str, inflight: &InFlight, state: AttentionState) {
        let spec = self.live.load();
        // One notification per address; a requester's carries its request number.
        let mut to: std::collections::BTreeMap<SocketAddr, Option<u32>> = Default::default();
        for r in &inflight.requesters {
            if let Some(a) = r.addr {
                to.insert(a, r.req);
            }
        }
        let broadcast = spec.reset_path.broadcast.or_else(|| {
            crate::spec::validate::derived_broadcast(
                spec.reset_path.address,
                spec.reset_path.prefix_len,
            )
        });
        for (s, m) in &self.monitors {
            if s != system {
                to.entry(m.addr).or_insert(None);
                if let Some(b) = broadcast {
                    to.entry(SocketAddr::new(b, m.addr.port())).or_insert(None);
                }
            }
        }
        if let Some(n) = &self.notify {
            let _ = n.send(Fanout {
                system: system.to_string(),
                subsystem: inflight.subsystem,
                kind: inflight.kind,
                state,
                to: to.into_iter().collect(),
            });
        }
    }

    /// Whether a guard of a reload still holds: none of its systems is being reset, and,
    /// where the change needs it, none has an active HA monitor.
    fn holds(&self, g: &Guard) -> bool {
        let now = Instant::now();
        g.systems.iter().all(|s| {
            let resetting = self.resets.contains_key(s) || self.simulated_resets.contains(s);
            let monitor = self
                .monitors
                .get(s)
                .is_some_and(|m| now.duration_since(m.last_seen) <= self.monitor_expiry)
                || self.simulated_monitors.contains(s);
            !(resetting || g.needs_no_monitor && monitor)
        })
    }
}

fn result_word(r: ResetResult) -> &'static str {
    match r {
        ResetResult::Accepted => "ACCEPTED",
        ResetResult::Dump => "DUMP",
        ResetResult::Poff => "POFF",
        ResetResult::Fail => "FAIL",
        ResetResult::Error => "ERROR",
    }
}

/// The reset-path key of a spec. The daemon resolved every secret when it loaded the
/// spec; should the reference have gone since, the key is empty and every datagram fails
/// authentication (never accepted unsigned).
pub fn reset_key(spec: &Spec) -> Key {
    match &spec.reset_path.auth {
        Auth::None => Key::None,
        Auth::Hmac(secret) => Key::Hmac(secret.resolve().unwrap_or_default().into_bytes()),
    }
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

enum Found<'a> {
    Physical(&'a crate::spec::model::PhysicalServer),
    Guest {
        server: &'a crate::spec::model::PhysicalServer,
        host: &'a crate::spec::model::Esxi,
        vm: &'a str,
    },
}

/// A system of the spec by name: a physical server without ESXi, or a guest.
fn find_system<'a>(spec: &'a Spec, name: &str) -> Option<Found<'a>> {
    for s in spec.servers.values() {
        match &s.esxi {
            None if s.name.as_str() == name => return Some(Found::Physical(s)),
            Some(e) => {
                if let Some(g) = e.guests.iter().find(|g| g.as_str() == name) {
                    return Some(Found::Guest {
                        server: s,
                        host: e,
                        vm: g.as_str(),
                    });
                }
            }
            None => {}
        }
    }
    None
}
