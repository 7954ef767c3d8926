//! The rest of the daemon's side of the pipeline: the messages the pipeline thread
//! accepts ([`PipelineMsg`]), what it needs to start ([`PipelineConfig`]), and the
//! [`Pipeline`] handle the main runtime holds.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::backend::Backends;
use crate::log::LogSink;
use crate::plan::LiveFacts;
use crate::plan::merge::Guard;
use crate::spec::model::Spec;

use super::core::FactsSnapshot;
use super::pdutest;

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
    /// The monitor pair's subsystem number; `None` when the server's `cluster` flag is off
    /// (pairs are not managed then, as the manual shows `----`) or no pair was learned.
    pub pair: Option<u32>,
    /// The manual's state: `normal`, `reset`, `dump` (stop notice received, or hard reset
    /// or PDU cut done), `poff`, `error` (cannot be reset now: its BMC or ESXi link is NG
    /// and no PDU path) or `----` (its monitor stopped checking).
    pub state: &'static str,
    /// The finer state behind it: `normal`, `expired`, `reset`, `dump`, `reboot`, `poff`
    /// or `failed` (the last reset failed; the state follows the links and the monitor).
    pub detail: &'static str,
    /// Why the system cannot be reset now (state `error`).
    pub unresettable: Option<String>,
    /// A failure warning of its server (`predictiveFailure: …`, `degradation: …`).
    pub warning: Option<String>,
    pub last_check_ms_ago: u64,
}

/// A hardware alert about a server of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The server's name in the live spec.
    pub server: String,
    pub kind: crate::spec::model::AlertKind,
    /// What it said, for the logs and the warning.
    pub detail: String,
}

/// What the pipeline made of an alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum AlertOutcome {
    /// Its BMC read "off": POFF goes to the cluster for these systems (those whose HA
    /// monitor is registered).
    PowerOff { systems: Vec<String> },
    /// Its BMC read "off", as the watch already knew: reported before.
    AlreadyOff,
    /// Its BMC did not read "off": nobody is told; the BMC is polled every
    /// [`super::FAST_POLL`] for [`super::FAST_POLL_FOR`].
    NotConfirmed { why: String },
    /// The server is marked with this failure warning.
    Warned { warning: String },
    /// Logged only (the server does not take warnings of that kind, or no such server).
    Ignored { why: String },
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
    /// Writes of the replay high-water mark that failed (replay protection across a
    /// restart is weakened until one succeeds).
    pub high_water_errors: AtomicU64,
    /// Replies not sent because they would have been longer than their request.
    pub replies_withheld: AtomicU64,
    /// Refusals and stop acknowledgements not sent because their source (where they
    /// would go) is no registered monitor's address.
    pub replies_unregistered: AtomicU64,
    /// Datagrams over their source's rate (registered monitors have none), dropped unread.
    pub rate_limited: AtomicU64,
    /// Valid datagrams from sources other than registered monitors, dropped because the
    /// pipeline thread was behind.
    pub busy_dropped: AtomicU64,
    /// Datagrams the kernel dropped at the reset-path socket (its buffer was full).
    pub socket_drops: AtomicU64,
    /// The reset-path socket's receive buffer, as the kernel granted it.
    pub receive_buffer: AtomicU64,
    /// Set while this management server is not the active one of its pair: the reset
    /// path and fence_kdump datagrams are dropped unread and no attention goes out.
    pub standing_by: std::sync::atomic::AtomicBool,
    /// Datagrams dropped because this management server was not active.
    pub standby_dropped: AtomicU64,
    /// The core's generation ([`super::core::Core::generation`]) after each input: the
    /// pair task sends the registrations and states to the standby when it moves.
    pub sync_generation: AtomicU64,
    /// Set by the pair task while this server is active with a healthy standby: the end
    /// of a reset (final replies, attention, their log lines) is held until the standby
    /// has taken the state that ended it ([`Counters::standby_generation`]), at most
    /// [`super::HOLD_MAX`], so a takeover never does or reports a reset again.
    #[serde(skip)]
    pub hold_for_standby: std::sync::atomic::AtomicBool,
    /// The core's generation the standby last took.
    #[serde(skip)]
    pub standby_generation: AtomicU64,
    /// Asks the pair task to send the state now (something is held for it).
    #[serde(skip)]
    pub sync_now: tokio::sync::Notify,
    /// Ends of resets held for the standby; and of those, released after
    /// [`super::HOLD_MAX`] without its word.
    pub held_for_standby: AtomicU64,
    pub held_timed_out: AtomicU64,
    /// What the metrics count as it goes (resets by outcome, stage durations, reloads).
    #[serde(skip)]
    pub metrics: crate::metrics::Live,
}

/// What the active of a pair sends its standby of the reset core's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncedState {
    /// The core's generation when it was taken (not sent).
    #[serde(skip)]
    pub generation: u64,
    pub monitors: Vec<super::core::SyncedMonitor>,
    pub busy: Vec<super::core::SyncedBusy>,
}

/// Messages the pipeline thread accepts from the rest of the daemon.
#[derive(Debug)]
pub enum PipelineMsg {
    /// The facts a plan needs; shared, so a large set is copied off the pipeline thread.
    Facts(oneshot::Sender<Arc<FactsSnapshot>>),
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
    /// In a pair: why the service is not redundant now (`None`: it is), for check replies.
    PairNote(Option<String>),
    /// The monitor registrations and the systems not normal, for the standby, with the
    /// core's generation.
    SyncedState(oneshot::Sender<SyncedState>),
    /// On a standby: the active's registrations and states.
    AdoptState(SyncedState),
    /// This management server just became active: carry on the old active's resets.
    TakeOver,
    /// See [`Pipeline::standby_synced`].
    StandbySynced,
    Monitors(oneshot::Sender<Vec<MonitorView>>),
    /// A hardware alert about a server ([`Pipeline::alert`]).
    Alert {
        alert: Alert,
        reply: oneshot::Sender<AlertOutcome>,
    },
    /// A fence agent's reboot of a system: answered when the reset has ended
    /// ([`Pipeline::fence_reboot`]).
    FenceReboot {
        system: String,
        reply: oneshot::Sender<Result<crate::resetpath::codec::AttentionState, String>>,
    },
    /// A fence agent's power off (`on` false) or on of a physical server, confirmed
    /// ([`Pipeline::fence_power`]).
    FencePower {
        server: String,
        on: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A power read now of a system ([`Pipeline::power_now`]).
    PowerNow {
        system: String,
        reply: oneshot::Sender<Result<crate::backend::PowerState, String>>,
    },
    /// Every server's failure warning, by server name.
    Warnings(oneshot::Sender<std::collections::BTreeMap<String, String>>),
    /// An operator cleared a server's failure warning: whether it had one.
    ClearWarning {
        server: String,
        reply: oneshot::Sender<bool>,
    },
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
    /// An operator's test reset of a registered system (`haconn server reset`): refused
    /// at once (`Err`), or started, reporting its progress lines and then how it ended
    /// through `progress`.
    TestReset {
        system: String,
        subsystem: u32,
        progress: mpsc::UnboundedSender<TestEvent>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// A running test reset's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestEvent {
    Line(String),
    Done(super::core::TestOutcome),
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
    /// Where the reset path keeps its replay high-water mark across restarts; `None`
    /// (tests, the lab) keeps it in memory only.
    pub state_dir: Option<std::path::PathBuf>,
    /// Start with the gate closed (`Counters::standing_by`): a management server of a
    /// pair serves only once its pair task says it is active.
    pub standing_by: bool,
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
            state_dir: None,
            standing_by: false,
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
    /// Starts the pipeline thread with `spec` as the live configuration. Fails — it never
    /// runs a reset path half-armed — when the sockets cannot be set up or the reset-path
    /// key of an authenticated path cannot be read.
    pub fn start(
        spec: Spec,
        config: PipelineConfig,
    ) -> std::io::Result<(Pipeline, PipelineThread)> {
        let live = Arc::new(ArcSwap::from_pointee(spec));
        let counters = Arc::new(Counters::default());
        counters
            .standing_by
            .store(config.standing_by, std::sync::atomic::Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(1024);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (shell, sockets) = {
            let _in_runtime = runtime.enter();
            super::Shell::new(live.clone(), counters.clone(), config)?
        };
        let handle = thread::Builder::new()
            .name("haconn-pipeline".into())
            .spawn(move || {
                if !super::limits::nice_this_thread(super::limits::FENCING_NICE) {
                    tracing::warn!(
                        "the pipeline thread keeps the process's priority (nice {} needs \
                         CAP_SYS_NICE)",
                        super::limits::FENCING_NICE
                    );
                }
                runtime.block_on(shell.run(rx, sockets))
            })?;
        Ok((Pipeline { tx, live, counters }, PipelineThread { handle }))
    }

    /// The live configuration snapshot (lock-free read).
    pub fn live(&self) -> Arc<Spec> {
        self.live.load_full()
    }

    /// Whether this management server stands by (not the active of its pair).
    pub fn standing_by(&self) -> bool {
        self.counters
            .standing_by
            .load(std::sync::atomic::Ordering::Relaxed)
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
        // Sorted into sets here, on the caller's thread, not the pipeline's.
        self.ask(PipelineMsg::Facts).await.map(|f| f.live())
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

    /// Sends `msg`, which has no answer.
    async fn tell(&self, msg: PipelineMsg) -> Result<(), PipelineGone> {
        self.tx.send(msg).await.map_err(|_| PipelineGone)
    }

    pub async fn simulate(&self, s: Simulation) -> Result<(), PipelineGone> {
        self.tell(PipelineMsg::Simulate(s)).await
    }

    /// Tells the core what check replies say of the pair.
    pub async fn pair_note(&self, note: Option<String>) -> Result<(), PipelineGone> {
        self.tell(PipelineMsg::PairNote(note)).await
    }

    /// The monitor registrations and the systems not normal, for the standby of a pair.
    pub async fn synced_state(&self) -> Result<SyncedState, PipelineGone> {
        self.ask(PipelineMsg::SyncedState).await
    }

    /// The standby took a new state ([`Counters::standby_generation`]): what was held for
    /// it may go.
    pub async fn standby_synced(&self) -> Result<(), PipelineGone> {
        self.tell(PipelineMsg::StandbySynced).await
    }

    /// This management server just became active ([`super::core::Input::TakeOver`]).
    pub async fn take_over(&self) -> Result<(), PipelineGone> {
        self.tell(PipelineMsg::TakeOver).await
    }

    /// On a standby: take the active's registrations and states.
    pub async fn adopt_state(&self, state: SyncedState) -> Result<(), PipelineGone> {
        self.tell(PipelineMsg::AdoptState(state)).await
    }

    /// A hardware alert about a server: a power-off is confirmed by a power read over its
    /// BMC before anyone is told POFF; a failure warning marks the server when the spec
    /// says it takes that kind.
    pub async fn alert(&self, alert: Alert) -> Result<AlertOutcome, PipelineGone> {
        self.ask(|reply| PipelineMsg::Alert { alert, reply }).await
    }

    /// A fence agent's reboot of `system`: the full reset; the answer comes when it has
    /// ended: what proved it, or why it failed (or was refused).
    pub async fn fence_reboot(
        &self,
        system: String,
    ) -> Result<Result<crate::resetpath::codec::AttentionState, String>, PipelineGone> {
        self.ask(|reply| PipelineMsg::FenceReboot { system, reply })
            .await
    }

    /// A fence agent's power off (`on` false) or on of physical server `server`: done
    /// when a power read confirms it (for off: or every PDU outlet confirmed cut).
    pub async fn fence_power(
        &self,
        server: String,
        on: bool,
    ) -> Result<Result<String, String>, PipelineGone> {
        self.ask(|reply| PipelineMsg::FencePower { server, on, reply })
            .await
    }

    /// The power state of `system` read now (its BMC, or its ESXi host for a guest).
    pub async fn power_now(
        &self,
        system: String,
    ) -> Result<Result<crate::backend::PowerState, String>, PipelineGone> {
        self.ask(|reply| PipelineMsg::PowerNow { system, reply })
            .await
    }

    /// Every server's failure warning, by server name.
    pub async fn warnings(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, PipelineGone> {
        self.ask(PipelineMsg::Warnings).await
    }

    pub async fn clear_warning(&self, server: String) -> Result<bool, PipelineGone> {
        self.ask(|reply| PipelineMsg::ClearWarning { server, reply })
            .await
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

    /// Starts a test reset; its progress lines and outcome arrive on the returned channel.
    pub async fn test_reset(
        &self,
        system: String,
        subsystem: u32,
    ) -> Result<Result<mpsc::UnboundedReceiver<TestEvent>, String>, PipelineGone> {
        let (progress, rx) = mpsc::unbounded_channel();
        let started = self
            .ask(|reply| PipelineMsg::TestReset {
                system,
                subsystem,
                progress,
                reply,
            })
            .await?;
        Ok(started.map(|()| rx))
    }
}
