//! The reset pipeline's home: a dedicated OS thread with its own single-threaded tokio
//! runtime, so reloads, file watching, status queries and control-socket traffic on the
//! main runtime can never take its turn.
//!
//! The thread is a thin shell around the pure reset core ([`core::Core`]): it takes the
//! reset-path datagrams its receive thread ([`receive`]) accepted (well-formed,
//! authenticated, fresh) and reads the fence_kdump socket, feeds them to the core with the
//! time, and carries out the effects the core returns — replies (never longer than their
//! request), attention fan-outs ([`notifier`]), log lines, and reset tasks
//! ([`reset::run`], one tokio task each, so a slow BMC delays only its own reset). It also
//! runs the hardware watch ([`watch`]) and the operator's PDU jobs ([`pdutest`]).
//!
//! A reload sends a [`PipelineMsg::Commit`] with the merged spec and the guards each
//! accepted change relied on; the core checks them at that instant and the snapshot is
//! swapped only if they all hold. The replaced snapshot is handed back so its memory is
//! freed off this thread.
//!
//! Files: `handle.rs` (the daemon's handle and messages), `core.rs` (the state machine),
//! `system.rs` (its per-system table), `admission.rs` (SPEC §2 steps 1–2),
//! `requests.rs` (the retransmission cache), `limits.rs` (log caps), `notifier.rs`,
//! `receive.rs` (the reset path's receive thread),
//! `reset.rs` (one reset's hardware sequence), `resetlog.rs`, `watch.rs`, `pdutest.rs`.

pub mod admission;
pub mod core;
mod handle;
pub mod history;
pub mod limits;
pub mod notifier;
pub mod pdutest;
pub mod receive;
pub mod requests;
pub mod reset;
pub mod resetlog;
pub mod system;
pub mod watch;

pub use handle::{
    Alert, AlertOutcome, CommitReply, Counters, MonitorView, PduJobEvent, PduRequest, Pipeline,
    PipelineConfig, PipelineGone, PipelineMsg, PipelineThread, Simulation, SyncedState, TestEvent,
};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use self::core::{Core, CoreConfig, Effect, Input, TestOutcome};
use crate::backend::Backends;
use crate::log::LogSink;
use crate::metrics::{Outcome as Ended, Stage};
use crate::resetpath::codec::{self, Envelope, Message, REQUEST_MIN_LEN, ResetResult};
use crate::resetpath::keys::KeyRing;
use crate::resetpath::replay::{HighWater, ReplayGuard};
use crate::spec::model::{Auth, Spec, SystemRef};
use limits::{LogBudget, with_suppressed};
use notifier::Fanout;
use receive::Accepted;
use reset::{Outcome, Step};
use system::ResetId;

/// Most reset requests whose length is kept for their final reply (beyond it, the final
/// reply is bounded by [`REQUEST_MIN_LEN`]).
const MAX_PENDING_LENS: usize = 4096;

/// Resets whose stage times are kept for the metrics at most (a reset's are dropped at
/// its end; past this, all are, and a few stage durations go unmeasured).
const MAX_MARKS: usize = 4096;

/// The reset path's replay high-water mark, in the state dir.
pub const HIGH_WATER_FILE: &str = "resetpath-highwater";

/// How often the core is given the time (deadlines and expiries are seconds long).
const TICK: Duration = Duration::from_millis(100);

/// A BMC whose power-off alert was not confirmed is read this often …
pub const FAST_POLL: Duration = Duration::from_millis(200);
/// … for this long after the alert.
pub const FAST_POLL_FOR: Duration = Duration::from_secs(5);

/// The longest the end of a reset waits for the standby of a pair to take the state that
/// ended it (one mlan round trip, normally); past it, it goes all the same.
pub const HOLD_MAX: Duration = Duration::from_secs(1);
/// How much older than one watch interval a power reading may be and still count as the
/// watch's latest.
const WATCH_SLACK: Duration = Duration::from_millis(250);

/// Reports from reset tasks, PDU jobs and watch polls, handled on the pipeline thread in
/// order.
#[derive(Debug)]
enum Internal {
    Step {
        id: ResetId,
        step: Step,
    },
    Done {
        id: ResetId,
        outcome: Outcome,
    },
    TaskEnded {
        id: ResetId,
    },
    Polled {
        probe: watch::Probe,
        answer: Option<watch::Answer>,
    },
    /// The power read made for a power-off alert (`answer` `None`: the server left the
    /// spec meanwhile).
    AlertRead {
        probe: watch::Probe,
        answer: Option<watch::Answer>,
        reply: oneshot::Sender<AlertOutcome>,
    },
    /// A fence agent's power off, confirmed (a power read, or every outlet cut).
    PoweredOff {
        probe: watch::Probe,
    },
    /// A fast poll after an unconfirmed power-off alert.
    FastPolled {
        probe: watch::Probe,
        answer: Option<watch::Answer>,
    },
    PduJobDone {
        server: String,
    },
}

struct Sockets {
    /// What the receive thread let through from the reset-path socket: registered
    /// monitors' datagrams, and everyone else's.
    reset_path: Option<(mpsc::Receiver<Accepted>, mpsc::Receiver<Accepted>)>,
    fence_kdump: Option<UdpSocket>,
}

/// A reset task's step sink: each step goes straight to the pipeline's queue, tagged with
/// its reset, so it is queued before the call it announces is made. When the last clone
/// goes (the task and its outlet recovery are done), the task's end is queued.
#[derive(Clone)]
struct TaskSink(Arc<TaskSinkInner>);

struct TaskSinkInner {
    id: ResetId,
    tx: mpsc::UnboundedSender<Internal>,
}

impl TaskSink {
    fn new(id: ResetId, tx: mpsc::UnboundedSender<Internal>) -> TaskSink {
        TaskSink(Arc::new(TaskSinkInner { id, tx }))
    }
}

impl reset::StepSink for TaskSink {
    fn step(&self, step: Step) {
        let _ = self.0.tx.send(Internal::Step {
            id: self.0.id,
            step,
        });
    }
}

impl Drop for TaskSinkInner {
    fn drop(&mut self) {
        let _ = self.tx.send(Internal::TaskEnded { id: self.id });
    }
}

/// A running reset task.
struct Task {
    stopped: Option<oneshot::Sender<()>>,
    abort: tokio::task::AbortHandle,
}

struct Shell {
    core: Core,
    live: Arc<ArcSwap<Spec>>,
    counters: Arc<Counters>,
    backends: Backends,
    reset_log: LogSink,
    error_log: LogSink,
    /// The reset-path keys of the live spec: the cluster key is resolved once (changing
    /// it needs a restart); per-node keys are derived when a spec is committed, before
    /// the spec is swapped in. Read by the receive and notifier threads too.
    keys: Arc<ArcSwap<KeyRing>>,
    /// Sends replies (a plain non-blocking socket: a UDP send never waits).
    send: Option<std::net::UdpSocket>,
    /// Queues attention fan-outs for the notifier thread.
    notify: Option<std::sync::mpsc::Sender<Fanout>>,
    /// Addresses of registered monitors, for the receive thread to serve first.
    monitor_ips: Arc<ArcSwap<HashSet<IpAddr>>>,
    /// The core's registration count when `monitor_ips` was last built.
    monitor_ips_at: u64,
    /// The length of the datagram being handled: no reply to it may be longer.
    request_len: Option<usize>,
    /// Lengths of reset requests still to be answered finally, by where their replies go
    /// and `req`: a later reply is no longer than the request it answers.
    reset_lens: HashMap<(SocketAddr, u32), usize>,
    tasks: HashMap<ResetId, Task>,
    /// Refusals already logged (once per sender and reason, at most 10 000 kept).
    logged_refusals: HashSet<(IpAddr, String)>,
    refusal_log: LogBudget,
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: Option<mpsc::UnboundedReceiver<Internal>>,
    watch_interval: Option<Duration>,
    health: watch::Health,
    /// Servers with an operator PDU job running.
    pdu_jobs: HashSet<String>,
    /// Operators waiting for their test resets, with the device each one's NMI goes to.
    test_waiters: HashMap<ResetId, (String, mpsc::UnboundedSender<TestEvent>)>,
    effects: Vec<Effect>,
    /// The rest of an input's effects after it started a reset task, with the length of
    /// the request they answer: carried out once the loop has yielded, so that the task
    /// has sent its first command (the NMI) before replies, fan-outs and log lines.
    deferred: Vec<(Option<usize>, Vec<Effect>)>,
    /// Ends of resets waiting for the standby of a pair ([`Counters::hold_for_standby`]):
    /// the core's generation it must have taken, since when, and what to carry out.
    held: std::collections::VecDeque<(u64, Instant, Vec<Effect>)>,
    /// BMCs polled every [`FAST_POLL`] after an unconfirmed power-off alert, until when;
    /// and those with a fast poll in flight.
    fast: HashMap<watch::Probe, Instant>,
    fast_in_flight: HashSet<watch::Probe>,
    /// Fence agents waiting for the end of a reset.
    fence_waiters: HashMap<ResetId, Vec<FenceWaiter>>,
    /// The fence history in the state dir.
    history: history::HistorySink,
    /// Who is asking for the resets about to start, when it is not on the reset path
    /// (`fence agent`, `carried on after a takeover`).
    asking: Option<&'static str>,
    /// Resets started whose start the history has not had yet (who asked): written once
    /// the loop has let their tasks send their first command, off the reset's hot path.
    history_starts: Vec<(ResetId, bool, Option<&'static str>)>,
    /// Fence agents' power actions so far (their history keys).
    power_actions: u64,
    /// When each reset's timed stages began, for the metrics (removed at its end).
    marks: HashMap<ResetId, Marks>,
}

/// When a reset's stages began ([`crate::metrics::Stage`]).
struct Marks {
    test: bool,
    started: Instant,
    nmi: Option<Instant>,
    hard: Option<Instant>,
    outlets_off: Option<Instant>,
}

type FenceWaiter = oneshot::Sender<Result<crate::resetpath::codec::AttentionState, String>>;

/// A power read now of `system`: its BMC, or its ESXi host for a guest.
async fn power_now(
    spec: &Spec,
    system: &str,
    b: &Backends,
) -> Result<crate::backend::PowerState, String> {
    let found = spec
        .system(system)
        .ok_or_else(|| format!("no system named {system} in the live spec"))?;
    let read = async {
        match found {
            SystemRef::Physical(s) => b.bmc.power_state(&s.bmc).await,
            SystemRef::Guest { host, vm, .. } => {
                b.hypervisor.vm_power_state(host, vm.as_str()).await
            }
        }
    };
    let device = match found {
        SystemRef::Physical(s) => crate::backend::device("BMC", s.bmc.address),
        SystemRef::Guest { host, .. } => crate::backend::device("ESXi", host.address),
    };
    crate::backend::bounded(device, reset::OPERATION_TIMEOUT, read)
        .await
        .map_err(|e| e.to_string())
}

/// See [`Shell::fence_power`].
async fn fence_power(
    spec: &Spec,
    s: &crate::spec::model::PhysicalServer,
    on: bool,
    b: &Backends,
) -> Result<String, String> {
    use crate::backend::{PowerState, bounded, device};
    let want = if on { PowerState::On } else { PowerState::Off };
    let dev = device("BMC", s.bmc.address);
    let bmc_result = async {
        bounded(
            dev.clone(),
            reset::OPERATION_TIMEOUT,
            b.bmc.power(&s.bmc, on),
        )
        .await
        .map_err(|e| e.to_string())?;
        // The BMC acknowledged; the power follows within a few seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let read = bounded(
                dev.clone(),
                reset::OPERATION_TIMEOUT,
                b.bmc.power_state(&s.bmc),
            )
            .await
            .map_err(|e| e.to_string())?;
            if read == want {
                return Ok(format!(
                    "{dev} reads the power {}",
                    if on { "on" } else { "off" }
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{dev} acknowledged, but still reads the power {read:?} after 20 s"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    .await;
    let bmc_error = match bmc_result {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    let outlets = s
        .ipdu
        .as_ref()
        .filter(|i| i.enabled)
        .map(|i| i.outlets.clone())
        .unwrap_or_default();
    if on || outlets.is_empty() {
        return Err(bmc_error);
    }
    let errors = crate::backend::cut_outlets(
        &spec.pdus,
        &outlets,
        b.pdu.as_ref(),
        reset::OPERATION_TIMEOUT,
        &|_, _| {},
    )
    .await;
    if errors.is_empty() {
        let list: Vec<String> = outlets.iter().map(ToString::to_string).collect();
        Ok(format!(
            "{bmc_error}; outlets {} confirmed off",
            list.join(", ")
        ))
    } else {
        Err(format!("{bmc_error}; PDU: {}", errors.join("; ")))
    }
}

/// A final DUMP or POFF answered to a request (a retransmission, from the request cache).
fn repeats_a_final(e: &Effect) -> bool {
    use crate::resetpath::codec::{Message, ResetResult};
    matches!(
        e,
        Effect::Reply {
            msg: Message::ResetReply {
                result: ResetResult::Dump | ResetResult::Poff,
                ..
            },
            ..
        }
    )
}

/// A final reply or an attention: what a takeover must never repeat.
fn ends_a_reset(e: &Effect) -> bool {
    matches!(
        e,
        Effect::Reply {
            msg: crate::resetpath::codec::Message::ResetReply { .. },
            ..
        } | Effect::Attention(_)
    )
}

/// The reset-path keys of a spec, with its cluster key read now. `Err` when an
/// authenticated path's key cannot be read: the caller must not run the reset path (an
/// empty key would be one anyone can compute).
pub fn reset_keys(spec: &Spec) -> std::io::Result<KeyRing> {
    match &spec.reset_path.auth {
        Auth::None => Ok(KeyRing::unsigned()),
        Auth::Hmac(secret, mode) => match secret.resolve() {
            Ok(k) if !k.is_empty() => Ok(KeyRing::new(k.as_bytes(), *mode, spec)),
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the reset-path key (resetPath.auth.key) is empty: refusing to run the reset path",
            )),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "the reset-path key (resetPath.auth.key) cannot be read: {e}; refusing to \
                     run the reset path"
                ),
            )),
        },
    }
}

impl Shell {
    fn new(
        live: Arc<ArcSwap<Spec>>,
        counters: Arc<Counters>,
        config: PipelineConfig,
    ) -> std::io::Result<(Shell, Sockets)> {
        let spec = live.load_full();
        // Without a reset path there is nothing to authenticate; with one, a key that
        // cannot be read stops the start.
        let keys = Arc::new(ArcSwap::from_pointee(match &config.reset_path {
            Some(_) => reset_keys(&spec)?,
            None => KeyRing::unsigned(),
        }));
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
        let fence_kdump = to_tokio(config.fence_kdump)?;
        // Replies leave from the reset-path socket itself, so monitors see them come from
        // the address and port they sent to.
        if let Some(s) = &send {
            s.set_broadcast(true)?;
            s.set_nonblocking(true)?;
        }
        // Nothing accepted before a restart is accepted again: the guard starts above the
        // high-water mark the last run left in the state dir.
        let now = codec::now_ms();
        let high_water = match (&config.reset_path, &config.state_dir) {
            (Some(_), Some(dir)) => Some(HighWater::open(&dir.join(HIGH_WATER_FILE), now)?),
            _ => None,
        };
        let floor = high_water.as_ref().map_or(
            now.saturating_sub(crate::resetpath::replay::START_SKEW_MS),
            HighWater::mark_ms,
        );
        let history = match &config.state_dir {
            Some(dir) => history::HistorySink::spawn(dir)?,
            None => history::HistorySink::discard(),
        };
        let monitor_ips = Arc::new(ArcSwap::from_pointee(HashSet::new()));
        let reset_path = match config.reset_path {
            None => None,
            Some(sock) => {
                receive::attach_filter(&sock)?;
                let granted = receive::size_buffer(&sock)?;
                counters
                    .receive_buffer
                    .store(granted as u64, Ordering::Relaxed);
                if granted < receive::RCVBUF {
                    config.error_log.line(format!(
                        "reset path: the kernel granted a receive buffer of {granted} bytes, \
                         not {} (raise net.core.rmem_max, or run with CAP_NET_ADMIN): a \
                         datagram flood may drop requests",
                        receive::RCVBUF
                    ));
                }
                let (monitor_tx, monitor_rx) = mpsc::channel(receive::CHANNEL);
                let (other_tx, other_rx) = mpsc::channel(receive::CHANNEL);
                receive::spawn(receive::Receiver {
                    sock,
                    keys: keys.clone(),
                    live: live.clone(),
                    counters: counters.clone(),
                    error_log: config.error_log.clone(),
                    replay: ReplayGuard::new(floor),
                    high_water,
                    monitors: monitor_ips.clone(),
                    monitor_tx,
                    other_tx,
                })?;
                Some((monitor_rx, other_rx))
            }
        };
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let notify = match &send {
            Some(s) => Some(notifier::spawn(
                s.try_clone()?,
                keys.clone(),
                config.reset_log.clone(),
                counters.clone(),
            )?),
            None => None,
        };
        let core = Core::new(
            spec,
            CoreConfig {
                monitor_expiry: config.monitor_expiry,
                ..CoreConfig::default()
            },
            counters.clone(),
        );
        Ok((
            Shell {
                core,
                keys,
                notify,
                live,
                counters,
                backends: config.backends,
                reset_log: config.reset_log,
                error_log: config.error_log,
                send,
                monitor_ips,
                monitor_ips_at: u64::MAX,
                request_len: None,
                reset_lens: HashMap::new(),
                tasks: HashMap::new(),
                logged_refusals: HashSet::new(),
                refusal_log: LogBudget::new(20, Duration::from_secs(3)),
                internal,
                internal_rx: Some(internal_rx),
                watch_interval: config.watch,
                health: watch::Health::default(),
                pdu_jobs: HashSet::new(),
                test_waiters: HashMap::new(),
                effects: Vec::new(),
                deferred: Vec::new(),
                held: std::collections::VecDeque::new(),
                fast: HashMap::new(),
                fast_in_flight: HashSet::new(),
                fence_waiters: HashMap::new(),
                history,
                asking: None,
                history_starts: Vec::new(),
                power_actions: 0,
                marks: HashMap::new(),
            },
            Sockets {
                reset_path,
                fence_kdump,
            },
        ))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<PipelineMsg>, sockets: Sockets) {
        let mut internal = self.internal_rx.take().expect("taken once");
        let (mut from_monitors, mut from_others) = match sockets.reset_path {
            Some((m, o)) => (Some(m), Some(o)),
            None => (None, None),
        };
        let mut kbuf = vec![0u8; 512];
        let mut watch_tick = self.watch_interval.map(|i| {
            let mut t = tokio::time::interval(i);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut core_tick = tokio::time::interval(TICK);
        core_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fast_tick = tokio::time::interval(FAST_POLL);
        fast_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Reports of reset tasks first: a step is queued before the call it announces
            // is made, so a datagram caused by that call (a stop notice after the NMI) is
            // always handled after the step.
            tokio::select! {
                biased;
                Some(ev) = internal.recv() => self.internal(ev),
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
                // Timers before the sockets: a flood of datagrams must not hold off the
                // deadlines of resets or the watch.
                _ = core_tick.tick() => self.tick(),
                _ = fast_tick.tick(), if !self.fast.is_empty() => self.fast_tick(),
                _ = async {
                    match &mut watch_tick {
                        Some(t) => {
                            t.tick().await;
                        }
                        None => std::future::pending().await,
                    }
                } => self.watch_tick(),
                // Registered monitors' datagrams before anyone else's.
                Some(a) = lane(&mut from_monitors) => self.datagram(a),
                Some(a) = lane(&mut from_others) => self.datagram(a),
                r = recv(sockets.fence_kdump.as_ref(), &mut kbuf) => {
                    if let Ok((n, from)) = r {
                        self.fence_kdump(&kbuf[..n], from);
                    }
                }
            }
            if !self.deferred.is_empty() {
                // A reset task was just spawned: let it run up to its first await (the
                // NMI is sent by then), then carry out the rest of what its input said.
                tokio::task::yield_now().await;
                for (len, mut rest) in std::mem::take(&mut self.deferred) {
                    self.request_len = len;
                    self.execute(&mut rest);
                }
                self.request_len = None;
            }
            for (id, test, asking) in std::mem::take(&mut self.history_starts) {
                self.record_start(id, test, asking);
            }
            if !self.held.is_empty() {
                self.release_held();
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

    /// Gives the core one input and carries out what it says: hardware first. When the
    /// input starts a reset, the task is spawned before anything else and the rest waits
    /// until the loop has let it send its first command (see [`Shell::run`]): the reply,
    /// log lines and fan-outs of the same input are not worth a later NMI. Nothing else
    /// depends on their order: a task only runs when the loop yields.
    fn feed(&mut self, input: Input) {
        let mut effects = std::mem::take(&mut self.effects);
        // Answers to a datagram go at once; the end of a reset may wait for the standby,
        // and so does a final answer repeated from memory to a retransmission (it must not
        // overtake the final it repeats).
        let may_hold = !matches!(input, Input::Check { .. } | Input::Stopped { .. });
        let is_request = matches!(input, Input::Reset { .. });
        self.core.handle(Instant::now(), input, &mut effects);
        let generation = self.core.generation();
        self.counters
            .sync_generation
            .store(generation, Ordering::Relaxed);
        if may_hold
            && self.counters.hold_for_standby.load(Ordering::Relaxed)
            && effects.iter().any(|e| {
                if is_request {
                    repeats_a_final(e)
                } else {
                    ends_a_reset(e)
                }
            })
        {
            let held: Vec<Effect> = effects
                .extract_if(.., |e| {
                    !matches!(
                        e,
                        Effect::Start { .. } | Effect::Stopped { .. } | Effect::Cancel { .. }
                    )
                })
                .collect();
            self.counters
                .held_for_standby
                .fetch_add(1, Ordering::Relaxed);
            self.held.push_back((generation, Instant::now(), held));
            self.counters.sync_now.notify_one();
        }
        let mut started = false;
        for e in effects.extract_if(.., |e| matches!(e, Effect::Start { .. })) {
            started |= self.spawn_started(e);
        }
        if started || !self.deferred.is_empty() {
            // Later inputs before the loop yields wait behind the first, in order.
            self.deferred.push((self.request_len, effects));
        } else {
            self.execute(&mut effects);
            self.effects = effects;
        }
    }

    /// The history's start of reset `id`: its system and who asked.
    fn record_start(&mut self, id: ResetId, test: bool, asking: Option<&'static str>) {
        let Some((system, r)) = self.core.resetting_by_id(id) else {
            return;
        };
        let mut by = if test {
            "operator (test soft reset)".to_string()
        } else {
            let asked: Vec<String> = r
                .requesters
                .iter()
                .filter_map(|q| {
                    Some(format!(
                        "HA monitor {} ({}, req {})",
                        q.system.as_ref()?,
                        q.addr?,
                        q.req?
                    ))
                })
                .collect();
            if asked.is_empty() {
                asking.unwrap_or("fence agent").to_string()
            } else {
                asked.join(", ")
            }
        };
        if let Some(a) = asking.filter(|a| a.starts_with("carried")) {
            by.push_str(", ");
            by.push_str(a);
        }
        let kind = match r.kind {
            resetlog::Kind::P => "P",
            resetlog::Kind::V => "V",
        };
        self.history.record(
            id.0,
            history::What::Start {
                system: system.to_string(),
                kind: kind.into(),
                by,
            },
        );
    }

    /// The metrics' stage durations: marks a stage's start, or measures its end.
    fn time_stage(&mut self, id: ResetId, step: &Step) {
        let Some(m) = self.marks.get_mut(&id) else {
            return;
        };
        let now = Instant::now();
        let (stage, since) = match step {
            Step::NmiIssued => {
                m.nmi = Some(now);
                return;
            }
            Step::HardSent => {
                m.hard = Some(now);
                return;
            }
            Step::OutletSending { on: false, .. } => {
                m.outlets_off.get_or_insert(now);
                return;
            }
            Step::HardAcked => (Stage::HardResetAck, m.hard),
            Step::OutletOff { result: Ok(()), .. } => (Stage::PduCut, m.outlets_off),
            _ => return,
        };
        if let Some(since) = since {
            self.counters
                .metrics
                .stage(stage, now.saturating_duration_since(since));
        }
    }

    /// A stage of reset `id` in the history.
    fn record_stage(&self, id: ResetId, step: &Step) {
        let on_off = |on: bool| if on { "ON" } else { "OFF" };
        let stage = match step {
            Step::PowerOff => "power read: off".to_string(),
            Step::NmiIssued => "NMI issued".into(),
            Step::SoftAcked => "NMI acknowledged".into(),
            Step::SoftFailed(e) => format!("NMI failed: {e}"),
            Step::Stopped => return,
            Step::HardSent => "hard reset sent".into(),
            Step::HardAcked => "hard reset acknowledged".into(),
            Step::HardFailed(e) => format!("hard reset failed: {e}"),
            Step::OutletSending { link, on } => format!("PDU outlet {link} {} sent", on_off(*on)),
            Step::OutletOff { link, result } | Step::OutletOn { link, result } => {
                let on = matches!(step, Step::OutletOn { .. });
                match result {
                    Ok(()) => format!("PDU outlet {link} {} confirmed", on_off(on)),
                    Err(e) => format!("PDU outlet {link} {} failed: {e}", on_off(on)),
                }
            }
        };
        self.history.record(id.0, history::What::Stage { stage });
    }

    /// Carries out the held ends of resets the standby has taken (or that waited
    /// [`HOLD_MAX`], or all once there is no healthy standby), in order.
    fn release_held(&mut self) {
        let taken = self.counters.standby_generation.load(Ordering::Relaxed);
        let holding = self.counters.hold_for_standby.load(Ordering::Relaxed);
        while let Some((needs, since, _)) = self.held.front() {
            let waited = since.elapsed() >= HOLD_MAX;
            if holding && taken < *needs && !waited {
                break;
            }
            if holding && taken < *needs {
                self.counters.held_timed_out.fetch_add(1, Ordering::Relaxed);
            }
            let (_, _, mut effects) = self.held.pop_front().expect("just seen");
            self.execute(&mut effects);
        }
    }

    fn execute(&mut self, effects: &mut Vec<Effect>) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Reply { to, signer, msg } => self.reply(to, &signer, msg),
                Effect::Attention(f) => {
                    // A standby of a pair says nothing on the reset path: the active does.
                    if let Some(n) = &self.notify
                        && !self.counters.standing_by.load(Ordering::Relaxed)
                    {
                        let _ = n.send(f);
                    }
                }
                Effect::ResetLog(line) => self.reset_log.line(line),
                Effect::ErrorLog(line) => self.error_log.line(line),
                e @ Effect::Start { .. } => {
                    self.spawn_started(e);
                }
                Effect::Stopped { id } => {
                    if let Some(at) = self.marks.get(&id).and_then(|m| m.nmi) {
                        self.counters
                            .metrics
                            .stage(Stage::NmiToStopped, at.elapsed());
                    }
                    self.history.record(
                        id.0,
                        history::What::Stage {
                            stage: "stop notice accepted (the node is dumping)".into(),
                        },
                    );
                    if let Some(tx) = self.tasks.get_mut(&id).and_then(|t| t.stopped.take()) {
                        let _ = tx.send(());
                    }
                }
                Effect::Cancel { id } => {
                    if let Some(t) = self.tasks.remove(&id) {
                        t.abort.abort();
                    }
                }
                Effect::Ended {
                    id,
                    system,
                    verdict,
                } => {
                    use crate::resetpath::codec::AttentionState as A;
                    let marks = self.marks.remove(&id);
                    if !marks.as_ref().is_some_and(|m| m.test) {
                        let m = &self.counters.metrics;
                        let physical = !matches!(
                            self.core.spec().system(&system),
                            Some(SystemRef::Guest { .. })
                        );
                        m.reset_ended(
                            physical,
                            match &verdict {
                                Ok(A::Dump) => Ended::Dump,
                                Ok(A::Reboot) => Ended::Reboot,
                                Ok(A::Poff) => Ended::Poff,
                                Err(_) => Ended::Fail,
                            },
                        );
                        if let Some(marks) = marks {
                            m.stage(Stage::Whole, marks.started.elapsed());
                        }
                    }
                    let (outcome, evidence) = match &verdict {
                        Ok(A::Dump) => (
                            "DUMP",
                            "its stop notice, after this reset's NMI".to_string(),
                        ),
                        Ok(A::Reboot) => (
                            "REBOOT",
                            "the hard reset acknowledged, or every feeding outlet confirmed cut"
                                .into(),
                        ),
                        Ok(A::Poff) => ("POFF", "a power read of off during this reset".into()),
                        Err(why) => ("FAIL", why.clone()),
                    };
                    self.history.record(
                        id.0,
                        history::What::End {
                            outcome: outcome.into(),
                            evidence,
                        },
                    );
                    for w in self.fence_waiters.remove(&id).unwrap_or_default() {
                        let _ = w.send(verdict.clone());
                    }
                }
                Effect::TestEnded { id, outcome } => {
                    self.counters.metrics.test_ended(match &outcome {
                        TestOutcome::Stopped { .. } => "stopped",
                        TestOutcome::PoweredOff => "powered_off",
                        _ => "fail",
                    });
                    if let Some((_, tx)) = self.test_waiters.remove(&id) {
                        let _ = tx.send(TestEvent::Done(outcome));
                    }
                }
            }
        }
    }

    /// Spawns the task of an `Effect::Start`; whether it was one.
    fn spawn_started(&mut self, e: Effect) -> bool {
        let Effect::Start {
            id,
            target,
            timing,
            test,
            resume,
            ..
        } = e
        else {
            return false;
        };
        self.spawn_reset(id, target, timing, test, resume);
        true
    }

    fn spawn_reset(
        &mut self,
        id: ResetId,
        target: reset::Target,
        timing: reset::Timing,
        test: bool,
        resume: reset::Resume,
    ) {
        self.history_starts.push((id, test, self.asking));
        if self.marks.len() >= MAX_MARKS {
            self.marks.clear();
        }
        self.marks.insert(
            id,
            Marks {
                test,
                started: Instant::now(),
                nmi: None,
                hard: None,
                outlets_off: None,
            },
        );
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let sink = TaskSink::new(id, self.internal.clone());
        let backends = self.backends.clone();
        // A power state the watch read within its last interval spares the query before
        // the NMI (the reset's own read is needed only to answer POFF).
        let seen_on = match (&target, self.watch_interval) {
            (reset::Target::Physical { server, .. }, Some(every)) => {
                let since = Instant::now().checked_sub(every + WATCH_SLACK);
                since.is_some_and(|t| self.health.power_on_since(server, t))
            }
            _ => false,
        };
        let task = tokio::spawn(async move {
            let steps = sink.clone();
            let outcome = if test {
                reset::soft_test(target, reset::TEST_STOP_WINDOW, backends, stopped_rx, steps).await
            } else {
                reset::run_from(target, timing, backends, stopped_rx, steps, seen_on, resume).await
            };
            let _ = sink.0.tx.send(Internal::Done { id, outcome });
            // The task's end (`TaskEnded`) is queued when the last sink goes: here, or
            // after the outlet recovery the reset started.
        });
        self.tasks.insert(
            id,
            Task {
                stopped: Some(stopped_tx),
                abort: task.abort_handle(),
            },
        );
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
                .get(req.server.as_str())
                .ok_or_else(|| format!("no management server named {}", req.server))?;
            (m.ipdu.as_ref().map_or(&[], |i| &i.outlets), Vec::new())
        } else {
            let server = spec
                .servers
                .get(req.server.as_str())
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
        if let Some(s) = systems.iter().find(|s| self.core.is_resetting(s)) {
            return Err(format!("{s} is being reset; try again when it is done"));
        }
        if self.pdu_jobs.contains(&req.server) {
            return Err(format!("a PDU job on {} is already running", req.server));
        }
        // `same` cuts every outlet at once and takes the server down; `serial` keeps it
        // powered through its other supplies and is what a server in service is tested with.
        if matches!(req.test, Some((pdutest::Mode::Same, ..))) && !req.force {
            let active = self.core.active_monitors(Instant::now(), &systems);
            if !active.is_empty() {
                return Err(format!(
                    "the HA monitor of {} is active: cutting its power would take it down \
                     (stop it first, or --force)",
                    active.join(", ")
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
        let logs = (self.reset_log.clone(), self.error_log.clone());
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel();
            let run = pdutest::run(job, backends, logs, tx);
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

    /// A poll came back; a pon→poff transition of a system is given to the core, which
    /// tells the cluster when its HA monitor is registered (SPEC §3).
    fn polled(&mut self, probe: watch::Probe, answer: Option<watch::Answer>) {
        let spec = self.live.load_full();
        let Some(answer) = answer else {
            self.health.forget(&probe);
            return;
        };
        let loss = self.health.record(&spec, probe, answer);
        // Link changes and lost fencing ability: once per change, to the error log and
        // the system log (stderr, journald under systemd).
        for note in self.health.take_notes(&spec) {
            match note.level {
                tracing::Level::ERROR => tracing::error!("{}", note.text),
                tracing::Level::WARN => tracing::warn!("{}", note.text),
                _ => tracing::info!("{}", note.text),
            }
            self.error_log.line(note.text);
        }
        let Some(loss) = loss else {
            return;
        };
        self.power_loss(loss);
    }

    fn power_loss(&mut self, loss: watch::PowerLoss) {
        for (system, _guest) in loss.systems {
            self.feed(Input::PowerLoss {
                system,
                what: loss.what.clone(),
            });
        }
    }

    /// A fence agent's power off or on of a physical server, in a task: the BMC's power
    /// control, then a power read to confirm it; for off, if the BMC cannot do it, every
    /// PDU outlet of the server cut and confirmed. A confirmed off is a power loss the
    /// cluster is told of (POFF), as when the watch reads it.
    fn fence_power(
        &mut self,
        server: String,
        on: bool,
        reply: oneshot::Sender<Result<String, String>>,
    ) {
        let spec = self.live.load_full();
        let Some(s) = spec.servers.get(server.as_str()).cloned() else {
            let _ = reply.send(Err(format!(
                "no physical server named {server} in the live spec"
            )));
            return;
        };
        let backends = self.backends.clone();
        let internal = self.internal.clone();
        let history = self.history.clone();
        self.power_actions += 1;
        let key = format!("power{}", self.power_actions);
        let word = if on { "ON" } else { "OFF" };
        history.record_as(
            &key,
            history::What::Start {
                system: s.name.to_string(),
                kind: "P".into(),
                by: format!("fence agent (power {word})"),
            },
        );
        tokio::spawn(async move {
            let r = fence_power(&spec, &s, on, &backends).await;
            history.record_as(
                &key,
                match &r {
                    Ok(how) => history::What::End {
                        outcome: format!("POWER {word}"),
                        evidence: how.clone(),
                    },
                    Err(why) => history::What::End {
                        outcome: "FAIL".into(),
                        evidence: why.clone(),
                    },
                },
            );
            if r.is_ok() && !on {
                // Told like a power-off the watch reads: by the pipeline thread.
                let _ = internal.send(Internal::PoweredOff {
                    probe: watch::Probe::ServerBmc(s.name.to_string()),
                });
            }
            let _ = reply.send(r);
        });
    }

    /// A hardware alert: a power-off is read back from the server's BMC at once (the
    /// answer comes with the read); a failure warning marks the server if it takes that
    /// kind. Nothing is reset for an alert.
    fn alert(&mut self, alert: Alert, reply: oneshot::Sender<AlertOutcome>) {
        use crate::spec::model::AlertKind;
        let spec = self.live.load_full();
        let Some(server) = spec.servers.get(alert.server.as_str()) else {
            let _ = reply.send(AlertOutcome::Ignored {
                why: format!("no server named {} in the live spec", alert.server),
            });
            return;
        };
        match alert.kind {
            AlertKind::PowerOff => {
                let probe = watch::Probe::ServerBmc(server.name.to_string());
                let backends = self.backends.clone();
                let internal = self.internal.clone();
                tokio::spawn(async move {
                    let answer = watch::poll(&spec, &probe, &backends).await;
                    let _ = internal.send(Internal::AlertRead {
                        probe,
                        answer,
                        reply,
                    });
                });
            }
            kind if server.warnings.takes(kind) => {
                self.health.set_warning(
                    server.name.as_str(),
                    watch::ServerWarning {
                        kind,
                        reason: alert.detail,
                        at: chrono::Local::now(),
                    },
                );
                let warning = self
                    .health
                    .warning(server.name.as_str())
                    .unwrap_or_default();
                let _ = reply.send(AlertOutcome::Warned { warning });
            }
            kind => {
                let _ = reply.send(AlertOutcome::Ignored {
                    why: format!(
                        "{} does not take {} warnings (servers[].warnings)",
                        server.name,
                        kind.as_str()
                    ),
                });
            }
        }
    }

    /// The power read of a power-off alert came back.
    fn alert_read(&mut self, probe: watch::Probe, answer: Option<watch::Answer>) -> AlertOutcome {
        let Some(answer) = answer else {
            return AlertOutcome::Ignored {
                why: "the server left the spec".into(),
            };
        };
        match self.confirm(probe.clone(), answer) {
            watch::Confirmed::Lost(loss) => AlertOutcome::PowerOff {
                systems: loss.systems.into_iter().map(|(s, _)| s).collect(),
            },
            watch::Confirmed::AlreadyOff => AlertOutcome::AlreadyOff,
            watch::Confirmed::On => {
                self.fast.insert(probe, Instant::now() + FAST_POLL_FOR);
                AlertOutcome::NotConfirmed {
                    why: "its BMC reads the power on".into(),
                }
            }
            watch::Confirmed::Unknown(e) => {
                self.fast.insert(probe, Instant::now() + FAST_POLL_FOR);
                AlertOutcome::NotConfirmed {
                    why: format!("its BMC could not be read: {e}"),
                }
            }
        }
    }

    /// A power read beyond the watch's polls (an alert's, a fast poll's, a fence agent's):
    /// recorded, and a power-off it confirms is told to the cluster (and ends any fast
    /// poll of that BMC).
    fn confirm(&mut self, probe: watch::Probe, answer: watch::Answer) -> watch::Confirmed {
        let spec = self.live.load_full();
        let c = self.health.confirm(&spec, probe.clone(), answer);
        if let watch::Confirmed::Lost(loss) = &c {
            self.fast.remove(&probe);
            self.power_loss(loss.clone());
        }
        c
    }

    /// Reads the BMCs of unconfirmed power-off alerts again (one read in flight each).
    fn fast_tick(&mut self) {
        let now = Instant::now();
        self.fast.retain(|_, until| *until > now);
        let spec = self.live.load_full();
        let due: Vec<watch::Probe> = self
            .fast
            .keys()
            .filter(|p| !self.fast_in_flight.contains(*p))
            .cloned()
            .collect();
        for probe in due {
            self.fast_in_flight.insert(probe.clone());
            let spec = spec.clone();
            let backends = self.backends.clone();
            let internal = self.internal.clone();
            tokio::spawn(async move {
                let answer = watch::poll(&spec, &probe, &backends).await;
                let _ = internal.send(Internal::FastPolled { probe, answer });
            });
        }
    }

    fn handle(&mut self, msg: PipelineMsg) {
        match msg {
            PipelineMsg::Facts(reply) => {
                let _ = reply.send(self.core.facts(Instant::now()));
            }
            PipelineMsg::Commit {
                spec,
                guards,
                reply,
            } => {
                let r = match self.core.commit(Instant::now(), spec.clone(), &guards) {
                    Ok(_) => {
                        // Keys first: a datagram of a new system is verified as soon as
                        // the receive thread sees the system in the spec.
                        if let Some(keys) = self.keys.load().for_spec(&spec) {
                            self.keys.store(Arc::new(keys));
                        }
                        CommitReply {
                            violated: Vec::new(),
                            replaced: Some(self.live.swap(spec)),
                        }
                    }
                    Err(violated) => CommitReply {
                        violated,
                        replaced: None,
                    },
                };
                let _ = reply.send(r);
            }
            PipelineMsg::Ping { sent, reply } => {
                let _ = reply.send(sent.elapsed());
            }
            PipelineMsg::Simulate(s) => match s {
                Simulation::MonitorUp { system } => self.core.simulate_monitor(system, true),
                Simulation::MonitorDown { system } => self.core.simulate_monitor(system, false),
                Simulation::ResetStarted { system } => self.core.simulate_reset(system, true),
                Simulation::ResetFinished { system } => self.core.simulate_reset(system, false),
            },
            PipelineMsg::Alert { alert, reply } => self.alert(alert, reply),
            PipelineMsg::FenceReboot { system, reply } => {
                let mut effects = Vec::new();
                self.asking = Some("fence agent");
                let started = self.core.fence_reset(Instant::now(), &system, &mut effects);
                match started {
                    Err(why) => {
                        let _ = reply.send(Err(why));
                    }
                    Ok(id) => {
                        self.fence_waiters.entry(id).or_default().push(reply);
                        for e in effects {
                            self.spawn_started(e);
                        }
                        self.counters
                            .sync_generation
                            .store(self.core.generation(), Ordering::Relaxed);
                    }
                }
                self.asking = None;
            }
            PipelineMsg::FencePower { server, on, reply } => self.fence_power(server, on, reply),
            PipelineMsg::PowerNow { system, reply } => {
                let spec = self.live.load_full();
                let backends = self.backends.clone();
                tokio::spawn(async move {
                    let _ = reply.send(power_now(&spec, &system, &backends).await);
                });
            }
            PipelineMsg::Warnings(reply) => {
                let _ = reply.send(
                    self.health
                        .warnings()
                        .keys()
                        .filter_map(|s| Some((s.clone(), self.health.warning(s)?)))
                        .collect(),
                );
            }
            PipelineMsg::ClearWarning { server, reply } => {
                let _ = reply.send(self.health.clear_warning(&server));
            }
            PipelineMsg::Monitors(reply) => {
                let mut views = self.core.monitor_views(Instant::now(), |system| {
                    let v = self.verdict(system);
                    (!v.resettable).then(|| v.problem.unwrap_or_else(|| "not resettable".into()))
                });
                for v in &mut views {
                    v.warning = self.verdict(&v.system).warning;
                }
                let _ = reply.send(views);
            }
            PipelineMsg::PduJob {
                request,
                progress,
                reply,
            } => {
                let _ = reply.send(self.pdu_job(request, progress));
            }
            PipelineMsg::PairNote(note) => self.core.set_pair_note(note),
            PipelineMsg::SyncedState(reply) => {
                let now = Instant::now();
                let (_, monitors) = self.core.synced_monitors(now);
                let _ = reply.send(SyncedState {
                    generation: self.core.generation(),
                    monitors,
                    busy: self.core.synced_busy(now),
                });
            }
            PipelineMsg::TakeOver => {
                self.asking = Some("carried on after a takeover");
                self.feed(Input::TakeOver);
                self.asking = None;
            }
            // The loop releases what the standby has taken after every message.
            PipelineMsg::StandbySynced => {}
            PipelineMsg::AdoptState(state) => {
                let now = Instant::now();
                self.core.adopt_monitors(now, state.monitors);
                self.core.adopt_busy(now, state.busy);
                // The receive thread serves registered monitors first: it needs their
                // addresses at once after a takeover, not at the next tick.
                self.monitor_ips_at = self.core.registrations();
                self.monitor_ips.store(Arc::new(self.core.monitor_ips()));
            }
            PipelineMsg::Health(reply) => {
                let spec = self.live.load();
                let _ = reply.send(self.health.view(&spec, self.watch_interval));
            }
            PipelineMsg::TestReset {
                system,
                subsystem,
                progress,
                reply,
            } => {
                // SPEC §8: a test soft reset; never escalates to a hard reset or PDU cut.
                let mut effects = std::mem::take(&mut self.effects);
                let r = self
                    .core
                    .test_reset(Instant::now(), &system, subsystem, &mut effects);
                if let Ok(id) = r {
                    let device = effects.iter().find_map(|e| match e {
                        Effect::Start { id: i, target, .. } if *i == id => Some(target.device()),
                        _ => None,
                    });
                    self.test_waiters
                        .insert(id, (device.unwrap_or_default(), progress));
                }
                self.execute(&mut effects);
                self.effects = effects;
                let _ = reply.send(r.map(|_| ()));
            }
        }
    }

    /// Logs a refused datagram once per sender and reason (and within the log cap);
    /// always counted by the caller.
    fn refuse(&mut self, from: SocketAddr, reason: String) {
        if self.logged_refusals.len() < 10_000
            && self.logged_refusals.insert((from.ip(), reason.clone()))
            && let Some(s) = self.refusal_log.allow(Instant::now())
        {
            self.error_log.line(with_suppressed(
                format!("reset path: refused datagrams from {from}: {reason} (logged once)"),
                s,
            ));
        }
    }

    /// The core's time, and every second the registered monitors' addresses for the
    /// receive thread.
    fn tick(&mut self) {
        self.feed(Input::Tick);
        // The receive thread's set of registered addresses, rebuilt on the next tick after
        // it may have changed (with thousands of monitors a rebuild is not free; until it
        // is, a monitor that just registered is held to a stranger's rate, whose burst
        // covers a tick).
        let registrations = self.core.registrations();
        if registrations != self.monitor_ips_at {
            self.monitor_ips_at = registrations;
            self.monitor_ips.store(Arc::new(self.core.monitor_ips()));
        }
    }

    /// A well-formed, authenticated, fresh datagram from the receive thread.
    fn datagram(&mut self, a: Accepted) {
        let Accepted { from, len, env, at } = a;
        self.counters
            .metrics
            .queued(Instant::now().saturating_duration_since(at));
        let input = match env.msg {
            Message::Check { port: 0, .. } | Message::Reset { port: 0, .. } => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, "reply port 0".into());
                return;
            }
            Message::Check {
                system,
                subsystem,
                port,
                pair,
            } => {
                let verdict = self.verdict(&system);
                Input::Check {
                    from,
                    system,
                    subsystem,
                    port,
                    pair,
                    verdict,
                }
            }
            Message::Reset {
                req,
                system,
                subsystem,
                port,
                target_system,
                target_subsystem,
            } => {
                if self.reset_lens.len() < MAX_PENDING_LENS {
                    let to = SocketAddr::new(from.ip(), port);
                    self.reset_lens.insert((to, req), len);
                }
                Input::Reset {
                    from,
                    req,
                    system,
                    subsystem,
                    port,
                    target: target_system,
                    target_subsystem,
                }
            }
            Message::Stopped { system, subsystem } => Input::Stopped {
                from,
                system,
                subsystem,
            },
            // Replies and notifications are for HA monitors, not for us.
            _ => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, "unexpected message type".into());
                return;
            }
        };
        self.request_len = Some(len);
        self.feed(input);
        self.request_len = None;
    }

    /// What a check reply says about `system`, from the watch.
    fn verdict(&self, system: &str) -> watch::Verdict {
        let Some(found) = self.core.spec().system(system) else {
            return watch::Verdict {
                resettable: false,
                via: "none",
                problem: Some(format!("unknown system {}", core::shown(system))),
                warning: None,
            };
        };
        let mut v = match found {
            SystemRef::Guest { host, .. } if !host.enabled => watch::Verdict {
                resettable: false,
                via: "none",
                problem: Some("ESXi management is disabled for this host".into()),
                warning: None,
            },
            SystemRef::Guest { server, vm, .. } => {
                self.health.resettable(server, Some(vm.as_str()))
            }
            SystemRef::Physical(server) => self.health.resettable(server, None),
        };
        v.warning = self.health.warning(found.server().name.as_str());
        v
    }

    /// Sends a reply no longer than the request that caused it (no amplification towards
    /// a spoofed source): the datagram being handled, or for a reset's later replies the
    /// reset request; [`REQUEST_MIN_LEN`] when that is no longer known. A reason that does
    /// not fit is cut; a reply that does not fit even without it is not sent.
    fn reply(&mut self, to: SocketAddr, signer: &str, msg: Message) {
        let reset = match &msg {
            Message::ResetReply { req, result, .. } => Some((*req, *result)),
            _ => None,
        };
        let limit = match (self.request_len, reset) {
            (Some(n), _) => n,
            (None, Some((req, _))) => self
                .reset_lens
                .get(&(to, req))
                .copied()
                .unwrap_or(REQUEST_MIN_LEN),
            (None, None) => REQUEST_MIN_LEN,
        };
        if let Some((req, result)) = reset
            && result != ResetResult::Accepted
        {
            self.reset_lens.remove(&(to, req));
        }
        let Some(sock) = &self.send else { return };
        let keys = self.keys.load();
        // Per-node keys: signed with the key of the monitor it is for. A system a reload
        // removed meanwhile has none: nothing is sent.
        let Some(key) = keys.key_for(signer) else {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(bytes) = codec::encode_within(Envelope::new(msg), key, limit) else {
            self.counters
                .replies_withheld
                .fetch_add(1, Ordering::Relaxed);
            self.refuse(
                to,
                format!(
                    "reply withheld: longer than the {limit}-byte request (pad requests to \
                     {REQUEST_MIN_LEN} bytes)"
                ),
            );
            return;
        };
        if sock.send_to(&bytes, to).is_err() {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A fence_kdump_send message: well-formed ones go to the core, which maps the
    /// sender's address to the one system being reset there.
    fn fence_kdump(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.counters.standing_by.load(Ordering::Relaxed) {
            self.counters
                .standby_dropped
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) = crate::resetpath::fence_kdump::decode(bytes) {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            self.refuse(from, format!("not a fence_kdump message: {e}"));
            return;
        }
        self.feed(Input::FenceKdump { from });
    }

    /// A progress line for the operator waiting for test reset `id`, if any; what counts
    /// (a stop notice, the outcome) is the core's, reported by `Effect::TestEnded`.
    fn test_progress(&self, id: ResetId, step: &Step) {
        let Some((device, tx)) = self.test_waiters.get(&id) else {
            return;
        };
        let line = match step {
            Step::PowerOff => format!("{device} reports the power off"),
            Step::NmiIssued => format!("NMI sent to {device}"),
            Step::SoftAcked => format!(
                "NMI acknowledged by {device}; waiting up to {} s for the node's stop notice",
                reset::TEST_STOP_WINDOW.as_secs()
            ),
            Step::SoftFailed(e) => format!("NMI failed: {e}"),
            _ => return,
        };
        let _ = tx.send(TestEvent::Line(line));
    }

    fn internal(&mut self, ev: Internal) {
        match ev {
            Internal::Step { id, step } => {
                self.time_stage(id, &step);
                self.record_stage(id, &step);
                self.test_progress(id, &step);
                self.feed(Input::Step { id, step })
            }
            Internal::Done { id, outcome } => self.feed(Input::Done { id, outcome }),
            Internal::TaskEnded { id } => {
                self.tasks.remove(&id);
                self.feed(Input::TaskEnded { id });
            }
            Internal::Polled { probe, answer } => self.polled(probe, answer),
            Internal::AlertRead {
                probe,
                answer,
                reply,
            } => {
                let outcome = self.alert_read(probe, answer);
                let _ = reply.send(outcome);
            }
            Internal::PoweredOff { probe } => {
                let off = watch::Answer::Power(Ok(crate::backend::PowerState::Off));
                self.confirm(probe, off);
            }
            Internal::FastPolled { probe, answer } => {
                self.fast_in_flight.remove(&probe);
                if let Some(answer) = answer {
                    self.confirm(probe, answer);
                }
            }
            Internal::PduJobDone { server } => {
                self.pdu_jobs.remove(&server);
            }
        }
    }
}

/// The next datagram of a receive-thread lane; never, without a reset path.
async fn lane(rx: &mut Option<mpsc::Receiver<Accepted>>) -> Option<Accepted> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}
