//! The reset core: SPEC §2 as a pure state machine.
//!
//! [`Core::handle`] takes the time and one [`Input`] — an authenticated datagram with its
//! source, a step or the end of a reset task, the end of a task, a power loss seen by the
//! watch, a timer tick — and appends the [`Effect`]s the shell must carry out: replies,
//! attention fan-outs, reset-log and error-log lines, starting, signalling or cancelling
//! a reset task, and the end of an operator's test reset (for whoever waits for it). It holds no socket, no runtime and no clock, so it is tested
//! with tables of inputs and explored exhaustively (`core_tests.rs`).
//!
//! It owns the per-system table ([`super::system`]): one state per system of the live
//! spec. The rules it enforces:
//! - a reset starts only on an admitted request ([`super::admission`]) or an operator's
//!   test;
//! - DUMP, REBOOT and POFF are reported only from evidence the core itself received
//!   during **this** reset: a power query that read off, a stop notice after this reset's
//!   NMI was issued, the hard reset's acknowledgement, every feeding outlet confirmed cut.
//!   A task that claims an outcome without its evidence ends in FAIL;
//! - a retransmission (same requester, req#, target and address) is answered again only
//!   while its reset is in flight or for [`RETRANSMIT_WINDOW`] after the final reply, and
//!   never after the target checked in again; any other request acts on the hardware;
//! - a reset that has not ended by its deadline is ended by the core (FAIL) and its task
//!   cancelled, so every accepted request gets its final reply in bounded time;
//! - a reset or stopped system is back to normal when its monitor checks in, or after
//!   [`CoreConfig::away_expiry`];
//! - a stop notice counts only for a reset whose NMI was issued and whose hard reset was
//!   not, from the system's registered address; anything else changes nothing and is
//!   logged at most once per system per minute;
//! - replies go only to a registered monitor's address, or for a check to its source: a
//!   refusal or stop acknowledgement for a datagram from any other address is counted and
//!   not sent (an admitted request always comes from its requester's registered address);
//! - everything kept is keyed by systems of the spec; every log line caused by the
//!   network is capped ([`super::limits`]) and names are shown only once they are known
//!   to be safe to print.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::plan::LiveFacts;
use crate::plan::merge::Guard;
use crate::resetpath::codec::{AttentionState, Message, ResetResult};
use crate::spec::model::{Auth, KeyMode, Mode, Name, Spec, SystemRef};

use super::admission::{self, Refusal, Request};
use super::limits::{LogBudget, with_suppressed};
use super::notifier::{Dest, Fanout};
pub use super::requests::RETRANSMIT_WINDOW;
use super::requests::{Key, Repeat, RequestCache};
use super::reset::{self, Outcome, Resume, Step, Target, Timing};
use super::resetlog::{self, Dir, Kind, Peer};
use super::system::{Evidence, Monitor, Requester, ResetId, Resetting, Stage, State, System};
use super::watch::Verdict;
use super::{Counters, MonitorView};

/// A monitor registration as the active of a pair sends it to its standby.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncedMonitor {
    pub system: String,
    pub subsystem: u32,
    pub addr: SocketAddr,
    pub pair: Option<u32>,
    /// Milliseconds since its last check.
    pub age_ms: u64,
}

/// A system that is not in its normal state, as the active of a pair sends it to its
/// standby: after a takeover the new active refuses requests from it (never both of a
/// pair) and a request for it acts anew on the hardware (a reset the old active had in
/// flight is never lost: its requester's retransmission starts it again).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncedBusy {
    pub system: String,
    /// `resetting` (in flight on the active), `done` (reset and away) or `failed`.
    pub state: String,
    /// For `done`: what it was reported as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<AttentionState>,
    /// Milliseconds until it is normal again by itself.
    pub left_ms: u64,
    /// For `resetting`: its subsystem and who asked (an operator's test is not carried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requesters: Vec<SyncedRequester>,
    /// For `resetting`: how far the active had brought it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<SyncedStage>,
}

/// How far a reset in flight on the active had come, as its standby carries it on after a
/// takeover: never a second NMI once one was issued (the node may be dumping), and never
/// a stage skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "at", deny_unknown_fields)]
pub enum SyncedStage {
    /// No NMI yet: the new active starts it again from the power check.
    Started,
    /// The NMI was issued; `windowLeftMs` of its soft-reset window were left.
    NmiIssued {
        #[serde(rename = "windowLeftMs")]
        window_left_ms: u64,
    },
    /// The hard reset was issued (or the window was over): the new active hard-resets.
    HardIssued,
}

/// Who asked for a reset in flight on the active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncedRequester {
    pub system: String,
    pub addr: SocketAddr,
    pub req: u32,
    pub subsystem: u32,
}

/// Timings of the core that are not in the spec.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// A monitor that has not checked for this long no longer counts as active.
    pub monitor_expiry: Duration,
    /// A system reset (or seen powered off, or whose reset failed) whose monitor does not
    /// check in is back to normal after this long.
    pub away_expiry: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            monitor_expiry: Duration::from_secs(60),
            away_expiry: AWAY_EXPIRY,
        }
    }
}

/// How long a reset system stays "reset and away" without checking in: long enough for
/// a dump and a reboot, short enough that a node whose monitor never returns does not
/// stay marked for ever.
pub const AWAY_EXPIRY: Duration = Duration::from_secs(600);
/// Unexpected stop notices are logged at most once per system in this time.
pub const STOP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One input of the core. Datagrams arrive authenticated and fresh (the shell checks
/// framing, the tag and replays); their fields are still untrusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Check {
        from: SocketAddr,
        system: String,
        subsystem: u32,
        port: u16,
        pair: Option<u32>,
        /// Whether the hardware can reset it now, from the watch.
        verdict: Verdict,
    },
    Reset {
        from: SocketAddr,
        req: u32,
        system: String,
        subsystem: u32,
        port: u16,
        target: String,
        target_subsystem: u32,
    },
    Stopped {
        from: SocketAddr,
        system: String,
        subsystem: u32,
    },
    /// A well-formed fence_kdump message: its source address is all it says.
    FenceKdump { from: SocketAddr },
    /// A reset task reports a step.
    Step { id: ResetId, step: Step },
    /// A reset task ended the reset with this claim.
    Done { id: ResetId, outcome: Outcome },
    /// A reset task is gone (after its outlet recovery too).
    TaskEnded { id: ResetId },
    /// The watch read a pon→poff transition of this system.
    PowerLoss { system: String, what: String },
    /// Time passed: deadlines and expiries.
    Tick,
    /// This management server just became the active of its pair: the resets the old
    /// active had in flight (as synced, [`Core::adopt_busy`]) are carried on, their final
    /// replies going to the original requesters.
    TakeOver,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Reply {
        to: SocketAddr,
        /// The system the reply is for (the checking monitor, the requester, the stopped
        /// system): with per-node keys, its key signs the reply.
        signer: String,
        msg: Message,
    },
    Attention(Fanout),
    ResetLog(String),
    ErrorLog(String),
    /// Run a reset task for `system`, from `resume`'s stage.
    Start {
        id: ResetId,
        system: String,
        target: Target,
        timing: Timing,
        test: bool,
        resume: Resume,
    },
    /// Tell reset `id`'s task that the node reported it stopped.
    Stopped {
        id: ResetId,
    },
    /// Stop reset `id`'s task: the core has ended that reset.
    Cancel {
        id: ResetId,
    },
    /// Reset `id` of `system` ended (every reset, tests included): proven as `verdict`, or
    /// failed with why. For whoever waits for it (a fence agent) and the history.
    Ended {
        id: ResetId,
        system: String,
        verdict: Result<AttentionState, String>,
    },
    /// An operator's test reset `id` ended: tell whoever waits for it (`haconn server
    /// reset`).
    TestEnded {
        id: ResetId,
        outcome: TestOutcome,
    },
}

/// How an operator's test soft reset ended, as the core's own evidence shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// The node's stop notice came after the NMI (from this address): it is dumping.
    Stopped { from: Option<IpAddr> },
    /// The node was already powered off: no NMI was sent, nothing was tested.
    PoweredOff,
    /// The BMC or ESXi did not carry out the NMI.
    NmiFailed(String),
    /// The NMI was acknowledged, but no stop notice came within the test's window.
    NoStopNotice,
    /// Ended otherwise (its deadline passed, its task stopped).
    Failed(String),
}

impl TestOutcome {
    /// The outcome's name in the control protocol (`outcome`).
    pub fn code(&self) -> &'static str {
        match self {
            TestOutcome::Stopped { .. } => "stopped",
            TestOutcome::PoweredOff => "powered-off",
            TestOutcome::NmiFailed(_) => "nmi-failed",
            TestOutcome::NoStopNotice => "no-stop-notice",
            TestOutcome::Failed(_) => "failed",
        }
    }

    /// Only a stop notice after the NMI shows the soft reset works.
    pub fn is_success(&self) -> bool {
        matches!(self, TestOutcome::Stopped { .. })
    }

    /// What the operator reads.
    pub fn message(&self) -> String {
        match self {
            TestOutcome::Stopped { from: Some(ip) } => {
                format!("stopped (dump): NMI acknowledged, stop notice from {ip}")
            }
            TestOutcome::Stopped { from: None } => {
                "stopped (dump): NMI acknowledged, stop notice received".into()
            }
            TestOutcome::PoweredOff => {
                "not tested: the node is powered off, no NMI was sent".into()
            }
            TestOutcome::NmiFailed(e) => format!("NMI failed: {e}"),
            TestOutcome::NoStopNotice => format!(
                "NMI acknowledged, but no stop notice within {} s: the node's dump agent \
                 did not report (is it installed and configured for this connector?)",
                reset::TEST_STOP_WINDOW.as_secs()
            ),
            TestOutcome::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// What log lines about a reset need after it ended (its outlets' recovery).
#[derive(Debug, Clone)]
struct TaskCtx {
    system: Name,
    kind: Kind,
    subsystem: u32,
    peer: Peer,
}

#[derive(Clone)]
pub struct Core {
    spec: Arc<Spec>,
    config: CoreConfig,
    counters: Arc<Counters>,
    systems: HashMap<Name, System>,
    /// Systems whose state is not normal: the only ones a tick looks at.
    busy: BTreeSet<Name>,
    tasks: HashMap<ResetId, TaskCtx>,
    next_id: u64,
    requests: RequestCache,
    /// Error-log lines caused by datagrams.
    net_log: LogBudget,
    /// Reset-log lines of refused requests.
    refusal_log: LogBudget,
    simulated_monitors: BTreeSet<String>,
    simulated_resets: BTreeSet<String>,
    /// Moves whenever a monitor registers at a new address or an entry goes.
    registrations: u64,
    /// How many monitors are registered at each address: where replies may go.
    monitor_at: HashMap<IpAddr, u32>,
    /// Moves whenever what [`Core::facts`] reports may change other than by time.
    facts_gen: u64,
    /// The last facts, with when and at which `facts_gen` they were built.
    facts_cache: Option<(Instant, u64, Arc<FactsSnapshot>)>,
    /// In a pair, why the service is not redundant now (`None`: a healthy standby is
    /// behind this active), as the pair task last said ([`Core::set_pair_note`]).
    pair_note: Option<String>,
    /// On a standby: the resets the active has in flight, carried on at a takeover
    /// ([`Input::TakeOver`]).
    carried: HashMap<Name, Carried>,
}

/// A reset the active of a pair has in flight, as its standby would carry it on.
#[derive(Debug, Clone)]
struct Carried {
    subsystem: u32,
    requesters: Vec<Requester>,
    stage: CarriedStage,
}

#[derive(Debug, Clone, Copy)]
enum CarriedStage {
    Started,
    NmiIssued { soft_until: Instant },
    HardIssued,
}

/// How old cached facts may be: a reload plans from them, and the commit checks its guards
/// against the table at that instant anyway.
const FACTS_MAX_AGE: Duration = Duration::from_secs(1);

/// The longest soft-reset window (hispeed is 1–5 s, a guest's 5 s): a synced window left
/// is never taken as more.
const MAX_WINDOW: Duration = Duration::from_secs(5);

/// A system an operator or a fence agent may act on: in the spec, and not a guest of a
/// host whose ESXi management is off.
fn operable<'a>(spec: &'a Spec, system: &str) -> Result<SystemRef<'a>, String> {
    let target = spec
        .system(system)
        .ok_or_else(|| format!("no system named {system} in the live spec"))?;
    if let SystemRef::Guest { host, .. } = target
        && !host.enabled
    {
        return Err("ESXi management is disabled for this host".into());
    }
    Ok(target)
}

/// A name from the network as it may be printed: a spec-shaped name as it is, anything
/// else (control characters, spaces, overlong) as a placeholder.
pub fn shown(name: &str) -> &str {
    if Name::is_valid(name) {
        name
    } else {
        "<invalid-name>"
    }
}

/// Whether two specs hold the same systems (same servers, same guests): a reload that
/// changes none leaves every entry of the table valid.
/// The live facts as the pipeline thread hands them out: names in no order.
#[derive(Debug, Clone, Default)]
pub struct FactsSnapshot {
    monitors_active: Vec<Name>,
    resetting: Vec<Name>,
}

impl FactsSnapshot {
    /// The planner's facts (sorted sets), built on the caller's thread.
    pub fn live(&self) -> LiveFacts {
        LiveFacts {
            monitors_active: self.monitors_active.iter().cloned().collect(),
            resetting: self.resetting.iter().cloned().collect(),
            active: None,
        }
    }
}

fn same_systems(a: &Spec, b: &Spec) -> bool {
    a.servers.len() == b.servers.len()
        && a.servers
            .iter()
            .zip(&b.servers)
            .all(|((na, sa), (nb, sb))| {
                na == nb
                    && sa.esxi.as_ref().map(|e| &e.guests) == sb.esxi.as_ref().map(|e| &e.guests)
            })
}

/// One monitor fewer registered at `ip`.
fn forget_address(at: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = at.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            at.remove(&ip);
        }
    }
}

pub fn result_word(r: ResetResult) -> &'static str {
    match r {
        ResetResult::Accepted => "ACCEPTED",
        ResetResult::Dump => "DUMP",
        ResetResult::Poff => "POFF",
        ResetResult::Fail => "FAIL",
        ResetResult::Error => "ERROR",
    }
}

impl Core {
    /// What check replies say of the pair: `None` while a healthy standby is behind.
    pub fn set_pair_note(&mut self, note: Option<String>) {
        self.pair_note = note;
    }

    pub fn new(spec: Arc<Spec>, config: CoreConfig, counters: Arc<Counters>) -> Core {
        Core {
            pair_note: Some("the management-server pair has not decided yet".into()),
            carried: HashMap::new(),
            spec,
            config,
            counters,
            systems: HashMap::new(),
            busy: BTreeSet::new(),
            tasks: HashMap::new(),
            next_id: 1,
            requests: RequestCache::default(),
            net_log: LogBudget::new(20, Duration::from_secs(3)),
            refusal_log: LogBudget::new(100, Duration::from_millis(200)),
            simulated_monitors: BTreeSet::new(),
            simulated_resets: BTreeSet::new(),
            registrations: 0,
            monitor_at: HashMap::new(),
            facts_gen: 0,
            facts_cache: None,
        }
    }

    /// A number that moves whenever the set of registered monitor addresses may have.
    pub fn registrations(&self) -> u64 {
        self.registrations
    }

    /// Every monitor registration with its age, for the standby of a pair, and the
    /// registration count it goes with (it moves whenever one is added or moves).
    pub fn synced_monitors(&self, now: Instant) -> (u64, Vec<SyncedMonitor>) {
        let list = self
            .systems
            .iter()
            .filter_map(|(name, sys)| {
                let m = sys.monitor.as_ref()?;
                Some(SyncedMonitor {
                    system: name.to_string(),
                    subsystem: m.subsystem,
                    addr: m.addr,
                    pair: m.pair,
                    age_ms: now.saturating_duration_since(m.last_seen).as_millis() as u64,
                })
            })
            .collect();
        (self.registrations, list)
    }

    /// The systems this core holds an entry for, and `more`, each once.
    fn known_and<'a>(&self, more: impl Iterator<Item = &'a Name>) -> BTreeSet<Name> {
        let mut names: BTreeSet<Name> = more.cloned().collect();
        names.extend(self.systems.keys().cloned());
        names
    }

    /// Moves whenever anything a standby must know may have changed (registrations, resets
    /// started or ended).
    pub fn generation(&self) -> u64 {
        self.facts_gen
    }

    /// Every system that is not normal, for the standby of a pair.
    pub fn synced_busy(&self, now: Instant) -> Vec<SyncedBusy> {
        let left = |until: &Instant| until.saturating_duration_since(now).as_millis() as u64;
        self.systems
            .iter()
            .filter_map(|(name, sys)| {
                let mut subsystem = None;
                let mut requesters = Vec::new();
                let mut stage = None;
                let (state, attention, left_ms) = match &sys.state {
                    State::Normal => return None,
                    State::Resetting(r) => {
                        // Who asked: an operator's test is not carried on, the HA monitors
                        // whose requests joined it are.
                        requesters = r
                            .requesters
                            .iter()
                            .filter_map(|q| {
                                Some(SyncedRequester {
                                    system: q.system.as_ref()?.to_string(),
                                    addr: q.addr?,
                                    req: q.req?,
                                    subsystem: q.subsystem?,
                                })
                            })
                            .collect::<Vec<_>>();
                        if !requesters.is_empty() {
                            subsystem = Some(r.subsystem);
                            stage = Some(match r.stage {
                                Stage::Started => SyncedStage::Started,
                                Stage::NmiIssued => SyncedStage::NmiIssued {
                                    window_left_ms: r.soft_until.as_ref().map_or(0, left),
                                },
                                Stage::HardIssued => SyncedStage::HardIssued,
                            });
                        }
                        (
                            "resetting",
                            None,
                            self.config.away_expiry.as_millis() as u64,
                        )
                    }
                    State::Done { state, until, .. } => ("done", Some(*state), left(until)),
                    State::Failed { until } => ("failed", None, left(until)),
                };
                Some(SyncedBusy {
                    system: name.to_string(),
                    state: state.into(),
                    attention,
                    left_ms,
                    subsystem,
                    requesters,
                    stage,
                })
            })
            .collect()
    }

    /// On a standby: the states of the active's systems that are not normal (`list`).
    /// A system the active is resetting becomes `Failed` here (it may be half-stopped:
    /// requests from it are refused, a request for it acts anew); one it reset is `Done`;
    /// every other system this standby holds as done or failed is normal again. A reset
    /// of this server's own (it has none while standby) is never touched.
    pub fn adopt_busy(&mut self, now: Instant, list: Vec<SyncedBusy>) {
        let mut wanted: HashMap<Name, State> = HashMap::new();
        self.carried.clear();
        for b in list {
            let Some(found) = self.spec.system(&b.system) else {
                continue;
            };
            if let (Some(subsystem), false) = (b.subsystem, b.requesters.is_empty()) {
                let requesters: Vec<Requester> = b
                    .requesters
                    .iter()
                    .filter_map(|q| {
                        Some(Requester {
                            system: Some(self.spec.system(&q.system)?.name().clone()),
                            addr: Some(q.addr),
                            req: Some(q.req),
                            subsystem: Some(q.subsystem),
                        })
                    })
                    .collect();
                let stage = match b.stage {
                    None | Some(SyncedStage::Started) => CarriedStage::Started,
                    Some(SyncedStage::NmiIssued { window_left_ms }) => CarriedStage::NmiIssued {
                        soft_until: now + Duration::from_millis(window_left_ms).min(MAX_WINDOW),
                    },
                    Some(SyncedStage::HardIssued) => CarriedStage::HardIssued,
                };
                if !requesters.is_empty() {
                    self.carried.insert(
                        found.name().clone(),
                        Carried {
                            subsystem,
                            requesters,
                            stage,
                        },
                    );
                }
            }
            let until = now + Duration::from_millis(b.left_ms).min(self.config.away_expiry);
            let state = match (b.state.as_str(), b.attention) {
                ("done", Some(state)) => State::Done {
                    id: None,
                    state,
                    until,
                },
                _ => State::Failed { until },
            };
            wanted.insert(found.name().clone(), state);
        }
        for name in self.known_and(wanted.keys()) {
            let sys = self.systems.entry(name.clone()).or_default();
            if matches!(sys.state, State::Resetting(_)) {
                continue;
            }
            let new = wanted.remove(name.as_str()).unwrap_or(State::Normal);
            if new != sys.state {
                if matches!(new, State::Normal) {
                    self.busy.remove(name.as_str());
                } else {
                    self.busy.insert(name.clone());
                }
                sys.state = new;
                self.facts_gen += 1;
            }
        }
    }

    /// At a takeover: every reset the old active had in flight is carried on here from
    /// its last synced stage, for its original requesters, whose retransmissions join it
    /// and who get its final reply. Before the NMI it starts again from the power check;
    /// after the NMI there is no second one (the node may be dumping): a stop notice
    /// counts for what was left of the soft-reset window, then the hard reset; past the
    /// window, the hard reset. Evidence is only what this server sees: the old active's
    /// acknowledgements count for nothing here. A target no longer held as failed (its
    /// monitor checked in since) is not reset.
    fn take_over(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let spec = self.spec.clone();
        for (name, carried) in std::mem::take(&mut self.carried) {
            let Carried {
                subsystem,
                requesters,
                stage,
            } = carried;
            let Some(target) = spec.system(name.as_str()) else {
                continue;
            };
            if !matches!(
                self.systems.get(name.as_str()).map(|s| &s.state),
                Some(State::Failed { .. })
            ) {
                continue;
            }
            let mut iter = requesters.into_iter();
            let Some(first) = iter.next() else { continue };
            let resume = match stage {
                CarriedStage::Started => Resume::Fresh,
                CarriedStage::NmiIssued { soft_until } => Resume::AfterNmi {
                    window: soft_until.saturating_duration_since(now),
                },
                CarriedStage::HardIssued => Resume::Hard,
            };
            let id = self.start_from(now, target, subsystem, first.clone(), false, resume, out);
            let epoch = self.systems.get(name.as_str()).map_or(0, |s| s.epoch);
            let mut all = vec![first];
            if let Some(State::Resetting(r)) =
                self.systems.get_mut(name.as_str()).map(|s| &mut s.state)
            {
                for q in iter {
                    r.requesters.push(q.clone());
                    all.push(q);
                }
            }
            for q in all {
                let (Some(system), Some(addr), Some(req)) = (q.system, q.addr, q.req) else {
                    continue;
                };
                let key = Key {
                    requester: system.as_str(),
                    req,
                    target: name.as_str(),
                    from: addr.ip(),
                    target_epoch: epoch,
                };
                self.requests.insert(system.clone(), key, name.clone(), id);
            }
        }
    }

    /// On a standby: the registrations become the active's (`list`), for the systems of
    /// this spec in their normal state; so that after a takeover a registered monitor's
    /// request is admitted at once. Entries for unknown systems are ignored.
    pub fn adopt_monitors(&mut self, now: Instant, list: Vec<SyncedMonitor>) {
        let mut wanted: HashMap<Name, SyncedMonitor> = HashMap::new();
        for m in list {
            if let Some(found) = self.spec.system(&m.system) {
                wanted.insert(found.name().clone(), m);
            }
        }
        for name in self.known_and(wanted.keys()) {
            let sys = self.systems.entry(name.clone()).or_default();
            if !matches!(sys.state, State::Normal) {
                continue;
            }
            let new = wanted.get(name.as_str()).map(|m| Monitor {
                subsystem: m.subsystem,
                addr: m.addr,
                pair: m.pair,
                last_seen: now
                    .checked_sub(Duration::from_millis(m.age_ms))
                    .unwrap_or(now),
            });
            let before = sys.monitor.as_ref().map(|m| m.addr.ip());
            let after = new.as_ref().map(|m| m.addr.ip());
            if before != after {
                if let Some(ip) = before {
                    forget_address(&mut self.monitor_at, ip);
                }
                if let Some(ip) = after {
                    *self.monitor_at.entry(ip).or_default() += 1;
                }
                self.registrations += 1;
                self.facts_gen += 1;
            }
            if new != sys.monitor {
                sys.epoch += 1;
                sys.monitor = new;
            }
        }
    }

    /// The addresses of every registered monitor (cheap: no names, no sorting).
    pub fn monitor_ips(&self) -> std::collections::HashSet<IpAddr> {
        self.monitor_at.keys().copied().collect()
    }

    /// Whether a monitor is registered at `ip`: a reply other than a check's may go
    /// there.
    pub fn is_monitor_address(&self, ip: IpAddr) -> bool {
        self.monitor_at.contains_key(&ip)
    }

    /// Counts a reply that is not sent: its destination is no registered monitor's address.
    fn unaddressed(&self) {
        self.counters
            .replies_unregistered
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn spec(&self) -> &Arc<Spec> {
        &self.spec
    }

    /// The state of a system, if it has an entry (registered, or touched by a reset).
    /// The reset in flight with id `id`, and its system.
    pub fn resetting_by_id(&self, id: ResetId) -> Option<(&Name, &Resetting)> {
        let name = &self.tasks.get(&id)?.system;
        let (n, sys) = self.systems.get_key_value(name.as_str())?;
        sys.resetting().filter(|r| r.id == id).map(|r| (n, r))
    }

    pub fn system(&self, name: &str) -> Option<&System> {
        self.systems.get(name)
    }

    /// Remembered requests (for tests of the bounds).
    pub fn remembered_requests(&self) -> usize {
        self.requests.len()
    }

    /// Systems with an entry (for tests of the bounds).
    pub fn entries(&self) -> usize {
        self.systems.len()
    }

    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Check {
                from,
                system,
                subsystem,
                port,
                pair,
                verdict,
            } => self.check(now, from, system, subsystem, port, pair, verdict, out),
            Input::Reset {
                from,
                req,
                system,
                subsystem,
                port,
                target,
                target_subsystem,
            } => {
                let r = Request {
                    from: from.ip(),
                    system: &system,
                    subsystem,
                    target: &target,
                    target_subsystem,
                };
                self.reset(now, r, req, SocketAddr::new(from.ip(), port), out)
            }
            Input::Stopped {
                from,
                system,
                subsystem,
            } => {
                self.counters.stopped.fetch_add(1, Ordering::Relaxed);
                if self.is_monitor_address(from.ip()) {
                    out.push(Effect::Reply {
                        to: from,
                        signer: system.clone(),
                        msg: Message::StoppedAck {
                            system: system.clone(),
                            subsystem,
                        },
                    });
                } else {
                    self.unaddressed();
                }
                self.stop_notice(now, &system, Some(subsystem), from, out);
            }
            Input::FenceKdump { from } => {
                self.counters.stopped.fetch_add(1, Ordering::Relaxed);
                self.fence_kdump(now, from, out)
            }
            Input::Step { id, step } => self.step(now, id, step, out),
            Input::Done { id, outcome } => self.done(now, id, outcome, out),
            Input::TaskEnded { id } => {
                // A task that ends before its outcome (it panicked, or was dropped) ends
                // its reset now rather than at the deadline.
                if let Some(r) = self.running(id).cloned() {
                    let name = self.tasks[&id].system.clone();
                    let why = "the reset task stopped without an outcome".to_string();
                    self.finish(now, &name, r, Err(why), out);
                }
                self.tasks.remove(&id);
            }
            Input::PowerLoss { system, what } => self.power_loss(now, &system, &what, out),
            Input::Tick => self.tick(now, out),
            Input::TakeOver => self.take_over(now, out),
        }
    }

    // --- checks -------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn check(
        &mut self,
        now: Instant,
        from: SocketAddr,
        system: String,
        subsystem: u32,
        port: u16,
        pair: Option<u32>,
        verdict: Verdict,
        out: &mut Vec<Effect>,
    ) {
        self.counters.checks.fetch_add(1, Ordering::Relaxed);
        let spec = self.spec.clone();
        let known = match spec.system(&system) {
            Some(SystemRef::Guest { host, .. }) if !host.enabled => None,
            other => other,
        };
        let Verdict {
            resettable,
            via,
            problem,
            warning,
        } = verdict;
        let mut problem = problem;
        if let Some(found) = known {
            let sys = match self.systems.get_mut(system.as_str()) {
                Some(s) => s,
                None => self.systems.entry(found.name().clone()).or_default(),
            };
            let moved = sys
                .monitor
                .as_ref()
                .is_some_and(|m| m.addr.ip() != from.ip());
            if moved && matches!(sys.state, State::Resetting(_)) {
                // A system being reset keeps the address it was registered at: its stop
                // notices and the attention about it must not move to someone else.
                let registered = sys.monitor.as_ref().map(|m| m.addr.ip());
                problem = Some(format!("{system} is being reset; registration not moved"));
                if let Some(s) = self.net_log.allow(now) {
                    out.push(Effect::ErrorLog(with_suppressed(
                        format!(
                            "reset path: check for {system} from {from} ignored: it is being \
                             reset and registered at {}",
                            registered.map_or_else(String::new, |i| i.to_string())
                        ),
                        s,
                    )));
                }
            } else {
                let before = sys.monitor.as_ref().map(|m| m.addr.ip());
                if before != Some(from.ip()) {
                    self.registrations += 1;
                    self.facts_gen += 1;
                    if let Some(ip) = before {
                        forget_address(&mut self.monitor_at, ip);
                    }
                    *self.monitor_at.entry(from.ip()).or_default() += 1;
                }
                sys.monitor = Some(Monitor {
                    subsystem,
                    addr: SocketAddr::new(from.ip(), port),
                    pair,
                    last_seen: now,
                });
                sys.epoch += 1;
                if matches!(sys.state, State::Done { .. } | State::Failed { .. }) {
                    // Its node is back: it may ask for resets again, and a request for it
                    // acts anew.
                    sys.state = State::Normal;
                    self.busy.remove(system.as_str());
                }
            }
        }
        let (redundant, reason) = match (self.spec.mode, problem) {
            (_, Some(r)) if known.is_none() => (false, Some(r)),
            (Mode::Single, Some(r)) => (
                false,
                Some(format!("{r}; single management server: not redundant")),
            ),
            (_, Some(r)) => (false, Some(r)),
            (Mode::Single, None) => (
                false,
                Some("single management server: not redundant".into()),
            ),
            (Mode::Pair, None) => (self.pair_note.is_none(), self.pair_note.clone()),
        };
        out.push(Effect::Reply {
            to: SocketAddr::new(from.ip(), port),
            signer: system.clone(),
            msg: Message::CheckReply {
                system,
                subsystem,
                resettable: resettable && known.is_some(),
                via: via.into(),
                redundant,
                reason,
                warning: warning.filter(|_| known.is_some()),
            },
        });
    }

    // --- reset requests -----------------------------------------------------------------

    /// A system registered at `ip` that is being reset, reset and away, or failed.
    fn down_at(&self, ip: IpAddr) -> Option<Name> {
        self.busy
            .iter()
            .find(|n| {
                self.systems.get(*n).is_some_and(|s| {
                    s.is_down() && s.monitor.as_ref().is_some_and(|m| m.addr.ip() == ip)
                })
            })
            .cloned()
    }

    fn reset(
        &mut self,
        now: Instant,
        r: Request<'_>,
        req: u32,
        reply_to: SocketAddr,
        out: &mut Vec<Effect>,
    ) {
        self.counters.resets.fetch_add(1, Ordering::Relaxed);
        // Replies go only to a registered monitor's address. An admitted request comes
        // from its requester's registered address, so only refusals (and repeats) of
        // datagrams from elsewhere go unanswered: counted, and logged as refusals are.
        let to_monitor = self.is_monitor_address(r.from);
        let counters = self.counters.clone();
        let answer = |out: &mut Vec<Effect>, result, reason| {
            if !to_monitor {
                counters
                    .replies_unregistered
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            out.push(Effect::Reply {
                to: reply_to,
                signer: r.system.to_string(),
                msg: Message::ResetReply {
                    req,
                    target_system: r.target.to_string(),
                    target_subsystem: r.target_subsystem,
                    result,
                    reason,
                },
            });
        };
        let key = Key {
            requester: r.system,
            req,
            target: r.target,
            from: r.from,
            target_epoch: self.systems.get(r.target).map_or(0, |s| s.epoch),
        };
        match self.requests.lookup(now, key) {
            Some(Repeat::InFlight(_)) => {
                answer(out, ResetResult::Accepted, None);
                return;
            }
            Some(Repeat::Final(result, reason)) => {
                answer(out, result, reason);
                return;
            }
            None => {}
        }
        let spec = self.spec.clone();
        let kind = match spec.system(r.target) {
            Some(t) if t.is_guest() => Kind::V,
            _ => Kind::P,
        };
        let peer = Peer {
            ip: Some(reply_to.ip()),
            port: Some(reply_to.port()),
            req: Some(r.subsystem),
        };
        let verdict = admission::admit(&spec, &self.systems, |ip| self.down_at(ip), r);
        let admitted = match verdict {
            Ok(a) => a,
            Err(refusal) => {
                self.refuse(now, r, req, peer, kind, &refusal, out);
                answer(out, refusal.result(), Some(refusal.to_string()));
                return;
            }
        };
        let requester_name = admitted.requester.clone();
        let target = admitted.target;
        let target_name = target.name().clone();
        out.push(Effect::ResetLog(resetlog::rm_reset(
            target_name.as_str(),
            r.target_subsystem,
            Dir::Recv,
            peer,
            kind,
            None,
        )));
        let requester = Requester {
            system: Some(requester_name.clone()),
            addr: Some(reply_to),
            req: Some(req),
            subsystem: Some(r.subsystem),
        };
        let joined = match self
            .systems
            .get_mut(target_name.as_str())
            .map(|s| &mut s.state)
        {
            Some(State::Resetting(running)) => {
                // The same request again (its cache entry went with a check-in of the
                // target) joins once: one final reply per request.
                if !running.requesters.contains(&requester) {
                    running.requesters.push(requester.clone());
                }
                Some(running.id)
            }
            _ => None,
        };
        let id = match joined {
            Some(id) => id,
            None => self.start(now, target, r.target_subsystem, requester, false, out),
        };
        self.requests.insert(requester_name, key, target_name, id);
        debug_assert!(
            to_monitor,
            "admitted from the requester's registered address"
        );
        answer(out, ResetResult::Accepted, None);
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        now: Instant,
        r: Request<'_>,
        req: u32,
        peer: Peer,
        kind: Kind,
        refusal: &Refusal,
        out: &mut Vec<Effect>,
    ) {
        let Some(suppressed) = self.refusal_log.allow(now) else {
            return;
        };
        let target = shown(r.target);
        let word = result_word(refusal.result());
        for (dir, result) in [(Dir::Recv, None), (Dir::Send, Some(word))] {
            out.push(Effect::ResetLog(resetlog::rm_reset(
                target,
                r.target_subsystem,
                dir,
                peer,
                kind,
                result,
            )));
        }
        out.push(Effect::ErrorLog(with_suppressed(
            format!(
                "reset request {req} of {} (subsystem {}) from {} for {target} refused ({word}): {refusal}",
                shown(r.system),
                r.subsystem,
                r.from,
            ),
            suppressed,
        )));
    }

    /// Starts a reset of `target`; the caller has checked that none is in flight.
    fn start(
        &mut self,
        now: Instant,
        target: SystemRef<'_>,
        subsystem: u32,
        requester: Requester,
        test: bool,
        out: &mut Vec<Effect>,
    ) -> ResetId {
        self.start_from(now, target, subsystem, requester, test, Resume::Fresh, out)
    }

    /// [`Core::start`] from a stage a takeover carries a reset on from.
    #[allow(clippy::too_many_arguments)]
    fn start_from(
        &mut self,
        now: Instant,
        target: SystemRef<'_>,
        subsystem: u32,
        requester: Requester,
        test: bool,
        resume: Resume,
        out: &mut Vec<Effect>,
    ) -> ResetId {
        let id = ResetId(self.next_id);
        self.next_id += 1;
        let (what, timing, kind) = match target {
            SystemRef::Physical(server) => {
                let (t, timing) = reset::physical(&self.spec, server);
                (t, timing, Kind::P)
            }
            SystemRef::Guest { host, vm, .. } => {
                let (t, timing) = reset::guest(host, vm.as_str());
                (t, timing, Kind::V)
            }
        };
        let outlets = match &what {
            Target::Physical { pdus, .. } => pdus.iter().map(|(l, _)| *l).collect(),
            Target::Guest { .. } => Vec::new(),
        };
        let budget = if test {
            reset::test_budget(&timing)
        } else {
            reset::budget(&timing)
        };
        let name = target.name().clone();
        self.tasks.insert(
            id,
            TaskCtx {
                system: name.clone(),
                kind,
                subsystem,
                peer: requester.peer(),
            },
        );
        // Capped by this target's own window: a synced figure never stretches it.
        let resume = match resume {
            Resume::AfterNmi { window } => Resume::AfterNmi {
                window: window.min(timing.hard_reset_after),
            },
            other => other,
        };
        let (stage, soft_until) = match resume {
            Resume::Fresh => (Stage::Started, None),
            Resume::AfterNmi { window } => (Stage::NmiIssued, Some(now + window)),
            Resume::Hard => (Stage::HardIssued, None),
        };
        let sys = self.systems.entry(name.clone()).or_default();
        sys.state = State::Resetting(Box::new(Resetting {
            id,
            kind,
            subsystem,
            test,
            stage,
            soft_window: timing.hard_reset_after,
            soft_until,
            deadline: now + budget,
            requesters: vec![requester],
            outlets,
            evidence: Evidence::default(),
        }));
        self.busy.insert(name.clone());
        self.facts_gen += 1;
        out.push(Effect::Start {
            id,
            system: name.to_string(),
            target: what,
            timing,
            test,
            resume,
        });
        id
    }

    /// An operator's test soft reset of a system (`haconn server reset`).
    pub fn test_reset(
        &mut self,
        now: Instant,
        system: &str,
        subsystem: u32,
        out: &mut Vec<Effect>,
    ) -> Result<ResetId, String> {
        let spec = self.spec.clone();
        let target = operable(&spec, system)?;
        if let Some(s) = self.systems.get(system) {
            if let Some(m) = &s.monitor
                && m.subsystem != subsystem
            {
                return Err(format!(
                    "{system} is registered as subsystem {}, not {subsystem}",
                    m.subsystem
                ));
            }
            if matches!(s.state, State::Resetting(_)) {
                return Err(format!("{system} is being reset"));
            }
        }
        Ok(self.start(now, target, subsystem, Requester::test(), true, out))
    }

    /// A fence agent's (Pacemaker's) reboot of a system, through the control socket: the
    /// full reset (NMI, dump or hard reset, PDU cut), as for an HA monitor's request but
    /// with no requester on the reset path (the reset log says `----`). A reset of it in
    /// flight is joined (its id is returned); an operator's test in flight is refused. The
    /// subsystem is its monitor's, else 0 (none registered).
    pub fn fence_reset(
        &mut self,
        now: Instant,
        system: &str,
        out: &mut Vec<Effect>,
    ) -> Result<ResetId, String> {
        let spec = self.spec.clone();
        let target = operable(&spec, system)?;
        let s = self.systems.get(system);
        match s.map(|s| &s.state) {
            Some(State::Resetting(r)) if r.test => {
                return Err(format!(
                    "an operator's test soft reset of {system} is running; try again when it has ended"
                ));
            }
            Some(State::Resetting(r)) => return Ok(r.id),
            _ => {}
        }
        let subsystem = s
            .and_then(|s| s.monitor.as_ref())
            .map_or(0, |m| m.subsystem);
        Ok(self.start(now, target, subsystem, Requester::test(), false, out))
    }

    // --- stop notices -------------------------------------------------------------------

    /// A stop notice for `system` from `from` (`subsystem` is `None` for fence_kdump).
    fn stop_notice(
        &mut self,
        now: Instant,
        system: &str,
        subsystem: Option<u32>,
        from: SocketAddr,
        out: &mut Vec<Effect>,
    ) {
        let Some(sys) = self.systems.get_mut(system) else {
            let why = if self.spec.system(system).is_some() {
                "it is not being reset"
            } else {
                "no such system"
            };
            if let Some(s) = self.net_log.allow(now) {
                out.push(Effect::ErrorLog(with_suppressed(
                    format!(
                        "stop notice for {} from {from} changes nothing: {why}",
                        shown(system)
                    ),
                    s,
                )));
            }
            return;
        };
        let registered = sys.monitor.as_ref().map(|m| m.addr.ip());
        let mut peer = Peer {
            ip: Some(from.ip()),
            port: Some(from.port()),
            req: subsystem,
        };
        let refused = match &mut sys.state {
            State::Resetting(r) => {
                if r.stage < Stage::NmiIssued {
                    Some("its NMI has not been issued yet")
                } else if r.stage > Stage::NmiIssued {
                    Some("its hard reset was already issued")
                } else if subsystem.is_some_and(|n| n != r.subsystem) {
                    Some("wrong subsystem number")
                } else if registered.is_some_and(|ip| ip != from.ip()) {
                    Some("not from its registered address")
                } else if r.evidence.stop.is_some() {
                    Some("already received")
                } else {
                    // fence_kdump names nobody: the agent is the node's, its subsystem#.
                    peer.req = Some(subsystem.unwrap_or(r.subsystem));
                    r.evidence.stop = Some(peer);
                    out.push(Effect::Stopped { id: r.id });
                    out.push(Effect::ResetLog(resetlog::attention(
                        system,
                        r.subsystem,
                        Dir::Recv,
                        peer,
                        r.kind,
                        "DUMP",
                    )));
                    None
                }
            }
            _ => Some("it is not being reset"),
        };
        if let Some(why) = refused
            && sys
                .stop_logged
                .is_none_or(|at| now.duration_since(at) >= STOP_LOG_INTERVAL)
        {
            sys.stop_logged = Some(now);
            out.push(Effect::ErrorLog(format!(
                "stop notice for {system} from {from} changes nothing: {why} \
                 (logged at most once a minute per system)"
            )));
        }
    }

    /// fence_kdump names nobody: the one system being reset at the sender's address.
    fn fence_kdump(&mut self, now: Instant, from: SocketAddr, out: &mut Vec<Effect>) {
        let at: Vec<Name> = self
            .busy
            .iter()
            .filter(|n| {
                self.systems.get(*n).is_some_and(|s| {
                    matches!(s.state, State::Resetting(_))
                        && s.monitor.as_ref().is_some_and(|m| m.addr.ip() == from.ip())
                })
            })
            .cloned()
            .collect();
        match at.as_slice() {
            [one] => self.stop_notice(now, one.as_str(), None, from, out),
            others => {
                let why = if others.is_empty() {
                    "no system being reset is registered at that address".to_string()
                } else {
                    format!(
                        "ambiguous: {} are being reset at that address",
                        others
                            .iter()
                            .map(Name::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                if let Some(s) = self.net_log.allow(now) {
                    out.push(Effect::ErrorLog(with_suppressed(
                        format!("fence_kdump message from {from} ignored: {why}"),
                        s,
                    )));
                }
            }
        }
    }

    // --- reset tasks --------------------------------------------------------------------

    fn running(&mut self, id: ResetId) -> Option<&mut Resetting> {
        let name = &self.tasks.get(&id)?.system;
        match &mut self.systems.get_mut(name)?.state {
            State::Resetting(r) if r.id == id => Some(r),
            _ => None,
        }
    }

    fn step(&mut self, now: Instant, id: ResetId, step: Step, out: &mut Vec<Effect>) {
        let Some(ctx) = self.tasks.get(&id).cloned() else {
            return;
        };
        let system = ctx.system.as_str();
        let (kind, target, peer) = (ctx.kind, ctx.subsystem, ctx.peer);
        let running = self.running(id);
        match step {
            Step::PowerOff => {
                if let Some(r) = running {
                    r.evidence.power_off = true;
                }
            }
            Step::NmiIssued => {
                if let Some(r) = running {
                    if r.stage < Stage::NmiIssued {
                        r.stage = Stage::NmiIssued;
                        r.soft_until = Some(now + r.soft_window);
                    }
                    // The standby of a pair learns the stage (a takeover sends no second
                    // NMI).
                    self.facts_gen += 1;
                }
                out.push(Effect::ResetLog(resetlog::soft_reset(
                    system,
                    target,
                    Dir::Send,
                    peer,
                    kind,
                )));
            }
            Step::SoftAcked => {
                if let Some(r) = running {
                    r.evidence.nmi_acked = true;
                }
                out.push(Effect::ResetLog(resetlog::soft_reset(
                    system,
                    target,
                    Dir::Recv,
                    peer,
                    kind,
                )))
            }
            Step::SoftFailed(e) => {
                out.push(Effect::ErrorLog(format!(
                    "soft reset of {system} failed: {e}"
                )));
                if let Some(r) = running {
                    r.evidence.nmi_failed = Some(e);
                }
            }
            Step::Stopped => {}
            Step::HardSent => {
                if let Some(r) = running {
                    r.stage = Stage::HardIssued;
                    self.facts_gen += 1;
                }
                out.push(Effect::ResetLog(resetlog::hard_reset(
                    system,
                    target,
                    Dir::Send,
                    peer,
                    kind,
                )));
            }
            Step::HardAcked => {
                if let Some(r) = running {
                    r.evidence.hard_acked = true;
                }
                out.push(Effect::ResetLog(resetlog::hard_reset(
                    system,
                    target,
                    Dir::Recv,
                    peer,
                    kind,
                )));
            }
            Step::HardFailed(e) => out.push(Effect::ErrorLog(format!(
                "hard reset of {system} failed: {e}"
            ))),
            Step::OutletSending { link, on } => out.push(Effect::ResetLog(resetlog::ipdusd(
                system,
                Some(target),
                Dir::Send,
                peer,
                link.pdu,
                link.outlet,
                on,
            ))),
            Step::OutletOff {
                link,
                result: Err(e),
            } => out.push(Effect::ErrorLog(format!(
                "PDU {} outlet {} OFF for {system} failed: {e}",
                link.pdu, link.outlet
            ))),
            Step::OutletOn {
                link,
                result: Err(e),
            } => out.push(Effect::ErrorLog(format!(
                "PDU {} outlet {} ON for {system} failed: {e}",
                link.pdu, link.outlet
            ))),
            Step::OutletOff {
                link,
                result: Ok(()),
            } => {
                if let Some(r) = running
                    && r.outlets.contains(&link)
                    && !r.evidence.cut.contains(&link)
                {
                    r.evidence.cut.push(link);
                }
                out.push(Effect::ResetLog(resetlog::ipdusd(
                    system,
                    Some(target),
                    Dir::Recv,
                    peer,
                    link.pdu,
                    link.outlet,
                    false,
                )));
            }
            Step::OutletOn {
                link,
                result: Ok(()),
            } => out.push(Effect::ResetLog(resetlog::ipdusd(
                system,
                Some(target),
                Dir::Recv,
                peer,
                link.pdu,
                link.outlet,
                true,
            ))),
        }
    }

    /// The task ended the reset claiming `outcome`: the core's own evidence decides.
    fn done(&mut self, now: Instant, id: ResetId, outcome: Outcome, out: &mut Vec<Effect>) {
        let Some(r) = self.running(id) else {
            // Ended already (its deadline passed): the late claim changes nothing.
            return;
        };
        let r = r.clone();
        let name = self.tasks[&id].system.clone();
        let ev = &r.evidence;
        let proven = match &outcome {
            Outcome::PowerOff => ev.power_off.then_some(AttentionState::Poff),
            Outcome::Dumped => ev.stop.is_some().then_some(AttentionState::Dump),
            Outcome::Rebooted => (ev.hard_acked
                || (!r.outlets.is_empty() && r.outlets.iter().all(|o| ev.cut.contains(o))))
            .then_some(AttentionState::Reboot),
            Outcome::Failed(_) => None,
        };
        let verdict = match (&outcome, proven) {
            (_, Some(state)) => Ok(state),
            (Outcome::Failed(why), None) => Err(why.clone()),
            (claim, None) => {
                out.push(Effect::ErrorLog(format!(
                    "internal error: reset {id} of {} claimed {claim:?} without the event that \
                     proves it; answered FAIL",
                    self.tasks.get(&id).map_or("?", |c| c.system.as_str())
                )));
                Err("the reset could not be confirmed".to_string())
            }
        };
        self.finish(now, &name, r, verdict, out);
    }

    /// Ends reset `r`: final replies, reset-log lines, the cache, attention, the state.
    fn finish(
        &mut self,
        now: Instant,
        name: &Name,
        r: Resetting,
        verdict: Result<AttentionState, String>,
        out: &mut Vec<Effect>,
    ) {
        if r.test {
            let ev = &r.evidence;
            let outcome = match &verdict {
                Ok(AttentionState::Dump) => TestOutcome::Stopped {
                    from: ev.stop.and_then(|p| p.ip),
                },
                Ok(AttentionState::Poff) => TestOutcome::PoweredOff,
                Ok(other) => TestOutcome::Failed(format!("ended as {other:?}, not a dump")),
                Err(_) if ev.nmi_failed.is_some() => {
                    TestOutcome::NmiFailed(ev.nmi_failed.clone().unwrap_or_default())
                }
                Err(_) if ev.nmi_acked => TestOutcome::NoStopNotice,
                Err(why) => TestOutcome::Failed(why.clone()),
            };
            out.push(Effect::TestEnded { id: r.id, outcome });
        }
        out.push(Effect::Ended {
            id: r.id,
            system: name.to_string(),
            verdict: verdict.clone(),
        });
        let (result, reason) = match &verdict {
            Ok(AttentionState::Poff) => (ResetResult::Poff, None),
            Ok(_) => (ResetResult::Dump, None),
            Err(why) => (ResetResult::Fail, Some(why.clone())),
        };
        for q in &r.requesters {
            out.push(Effect::ResetLog(resetlog::rm_reset(
                name.as_str(),
                r.subsystem,
                Dir::Send,
                q.peer(),
                r.kind,
                Some(result_word(result)),
            )));
            if let (Some(addr), Some(req), Some(signer)) = (q.addr, q.req, &q.system) {
                out.push(Effect::Reply {
                    to: addr,
                    signer: signer.to_string(),
                    msg: Message::ResetReply {
                        req,
                        target_system: name.to_string(),
                        target_subsystem: r.subsystem,
                        result,
                        reason: reason.clone(),
                    },
                });
            }
        }
        self.requests.finish(
            r.id,
            r.requesters
                .iter()
                .filter_map(|q| Some((q.system.clone()?, q.req?))),
            result,
            reason.as_deref(),
            now,
        );
        let until = now + self.config.away_expiry;
        let state = match verdict {
            Ok(state) => {
                self.attention(
                    name.as_str(),
                    r.kind,
                    r.subsystem,
                    state,
                    &r.requesters,
                    out,
                );
                State::Done {
                    id: Some(r.id),
                    state,
                    until,
                }
            }
            Err(why) => {
                out.push(Effect::ErrorLog(format!("reset of {name} failed: {why}")));
                State::Failed { until }
            }
        };
        if let Some(sys) = self.systems.get_mut(name) {
            sys.state = state;
        }
        self.facts_gen += 1;
    }

    /// Tells the cluster: every requester (with its req#), every registered monitor but
    /// the system's own, and the broadcast address at each monitor's port — except with
    /// per-node keys, where no key is every node's: a broadcast copy would verify at one
    /// node and be noise at all the others, and each monitor has its unicast copy.
    fn attention(
        &self,
        system: &str,
        kind: Kind,
        subsystem: u32,
        state: AttentionState,
        requesters: &[Requester],
        out: &mut Vec<Effect>,
    ) {
        let per_node = matches!(self.spec.reset_path.auth, Auth::Hmac(_, KeyMode::PerNode));
        let broadcast = self.spec.attention_broadcast().filter(|_| !per_node);
        let mut to = Vec::with_capacity(requesters.len() + 2 * self.systems.len());
        to.extend(requesters.iter().filter_map(|q| {
            Some(Dest {
                addr: q.addr?,
                req: q.req,
                system: q.system.clone()?,
            })
        }));
        for (name, s) in &self.systems {
            let Some(m) = &s.monitor else { continue };
            if name.as_str() == system {
                continue;
            }
            to.push(Dest {
                addr: m.addr,
                req: None,
                system: name.clone(),
            });
            if let Some(b) = broadcast {
                to.push(Dest {
                    addr: SocketAddr::new(b, m.addr.port()),
                    req: None,
                    system: name.clone(),
                });
            }
        }
        out.push(Effect::Attention(Fanout {
            system: system.to_string(),
            subsystem,
            kind,
            state,
            to,
        }));
    }

    // --- the watch and time -------------------------------------------------------------

    fn power_loss(&mut self, now: Instant, system: &str, what: &str, out: &mut Vec<Effect>) {
        let Some(guest) = self.spec.system(system).map(|s| s.is_guest()) else {
            return;
        };
        let expiry = self.config.monitor_expiry;
        let until = now + self.config.away_expiry;
        let Some(sys) = self.systems.get_mut(system) else {
            return;
        };
        let Some(m) = &sys.monitor else { return };
        if now.duration_since(m.last_seen) > expiry || !matches!(sys.state, State::Normal) {
            return;
        }
        let subsystem = m.subsystem;
        sys.state = State::Done {
            id: None,
            state: AttentionState::Poff,
            until,
        };
        if let Some(name) = self.systems.get_key_value(system).map(|(n, _)| n.clone()) {
            self.busy.insert(name);
        }
        out.push(Effect::ErrorLog(format!(
            "{what}: {system} lost power; POFF attention sent"
        )));
        let kind = if guest { Kind::V } else { Kind::P };
        self.attention(system, kind, subsystem, AttentionState::Poff, &[], out);
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
        self.requests.expire(now);
        let mut overdue = Vec::new();
        let mut back = Vec::new();
        for name in &self.busy {
            match self.systems.get(name).map(|s| &s.state) {
                Some(State::Resetting(r)) if now >= r.deadline => overdue.push(name.clone()),
                Some(State::Done { until, .. } | State::Failed { until }) if now >= *until => {
                    back.push(name.clone())
                }
                Some(State::Normal) | None => back.push(name.clone()),
                _ => {}
            }
        }
        for name in back {
            if let Some(s) = self.systems.get_mut(&name) {
                s.state = State::Normal;
            }
            self.busy.remove(&name);
        }
        for name in overdue {
            let Some(State::Resetting(r)) = self.systems.get(&name).map(|s| s.state.clone()) else {
                continue;
            };
            out.push(Effect::Cancel { id: r.id });
            let why = "no outcome by the reset's deadline: abandoned".to_string();
            let id = r.id;
            self.finish(now, &name, *r, Err(why), out);
            self.tasks.remove(&id);
        }
    }

    // --- reloads and views --------------------------------------------------------------

    /// Swaps in a new spec if every guard holds; returns the replaced one, or the changes
    /// whose guard no longer holds.
    pub fn commit(
        &mut self,
        now: Instant,
        spec: Arc<Spec>,
        guards: &[Guard],
    ) -> Result<Arc<Spec>, Vec<usize>> {
        let violated: Vec<usize> = guards
            .iter()
            .filter(|g| !self.holds(now, g))
            .map(|g| g.change)
            .collect();
        if !violated.is_empty() {
            return Err(violated);
        }
        let old = std::mem::replace(&mut self.spec, spec);
        let spec = self.spec.clone();
        if same_systems(&old, &spec) {
            return Ok(old);
        }
        self.facts_gen += 1;
        let gone: Vec<Name> = self
            .systems
            .iter()
            .filter(|(n, s)| spec.system(n.as_str()).is_none() && s.resetting().is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.registrations += 1;
            if let Some(m) = self.systems.get(&n).and_then(|s| s.monitor.as_ref()) {
                forget_address(&mut self.monitor_at, m.addr.ip());
            }
            self.systems.remove(&n);
            self.busy.remove(&n);
            self.requests.forget(n.as_str());
        }
        Ok(old)
    }

    fn monitor_active(&self, now: Instant, system: &str) -> bool {
        self.systems
            .get(system)
            .and_then(|s| s.monitor.as_ref())
            .is_some_and(|m| now.duration_since(m.last_seen) <= self.config.monitor_expiry)
            || self.simulated_monitors.contains(system)
    }

    pub fn is_resetting(&self, system: &str) -> bool {
        self.systems
            .get(system)
            .is_some_and(|s| s.resetting().is_some())
            || self.simulated_resets.contains(system)
    }

    /// Whether an HA monitor of any of `systems` is active.
    pub fn active_monitors<'a>(&self, now: Instant, systems: &'a [String]) -> Vec<&'a str> {
        systems
            .iter()
            .filter(|s| self.monitor_active(now, s))
            .map(String::as_str)
            .collect()
    }

    /// Whether a guard of a reload still holds: none of its systems is being reset, and,
    /// where the change needs it, none has an active HA monitor.
    fn holds(&self, now: Instant, g: &Guard) -> bool {
        g.systems
            .iter()
            .all(|s| !(self.is_resetting(s) || g.needs_no_monitor && self.monitor_active(now, s)))
    }

    pub fn simulate_monitor(&mut self, system: String, up: bool) {
        self.facts_gen += 1;
        if up {
            self.simulated_monitors.insert(system);
        } else {
            self.simulated_monitors.remove(&system);
        }
    }

    pub fn simulate_reset(&mut self, system: String, started: bool) {
        self.facts_gen += 1;
        if started {
            self.simulated_resets.insert(system);
        } else {
            self.simulated_resets.remove(&system);
        }
    }

    /// Monitors that checked recently, and resets in flight (plus simulated ones), built
    /// at most once a [`FACTS_MAX_AGE`] while nothing but time moved.
    pub fn facts(&mut self, now: Instant) -> Arc<FactsSnapshot> {
        if let Some((at, generation, facts)) = &self.facts_cache
            && *generation == self.facts_gen
            && now.saturating_duration_since(*at) < FACTS_MAX_AGE
        {
            return facts.clone();
        }
        let facts = Arc::new(self.build_facts(now));
        self.facts_cache = Some((now, self.facts_gen, facts.clone()));
        facts
    }

    /// One pass over the table, copying names (inline, no allocation); the sorting into
    /// the planner's sets is left to the caller's thread ([`FactsSnapshot::live`]).
    fn build_facts(&self, now: Instant) -> FactsSnapshot {
        let expiry = self.config.monitor_expiry;
        let mut monitors_active = Vec::with_capacity(self.systems.len());
        let mut resetting = Vec::new();
        for (name, s) in &self.systems {
            if s.monitor
                .as_ref()
                .is_some_and(|m| now.duration_since(m.last_seen) <= expiry)
            {
                monitors_active.push(name.clone());
            }
            if s.resetting().is_some() {
                resetting.push(name.clone());
            }
        }
        let simulated = |set: &BTreeSet<String>| {
            set.iter()
                .filter_map(|s| Name::parse(s).ok())
                .collect::<Vec<_>>()
        };
        monitors_active.extend(simulated(&self.simulated_monitors));
        resetting.extend(simulated(&self.simulated_resets));
        FactsSnapshot {
            monitors_active,
            resetting,
        }
    }

    /// Registered monitors as `show hamonitor` lists them, in the manual's states (SPEC §8).
    /// `unresettable` is the watch's word on a system: why it cannot be reset now (its
    /// BMC or ESXi link NG and no PDU path), `None` when it can. A reset in flight or a
    /// recent outcome wins over it; a failed reset is no state of its own (the reset log
    /// and `detail` say it): the system then shows what the links and its monitor say.
    pub fn monitor_views(
        &self,
        now: Instant,
        unresettable: impl Fn(&str) -> Option<String>,
    ) -> Vec<MonitorView> {
        let mut v: Vec<MonitorView> = self
            .systems
            .iter()
            .filter_map(|(name, s)| {
                let m = s.monitor.as_ref()?;
                let expired = now.duration_since(m.last_seen) > self.config.monitor_expiry;
                // The outcome of a reset in flight or just done, as the manual shows it;
                // `None`: the links and the monitor's checks say the state.
                let (detail, outcome) = match &s.state {
                    State::Resetting(_) => ("reset", Some("reset")),
                    State::Done {
                        state: AttentionState::Dump,
                        ..
                    } => ("dump", Some("dump")),
                    // The manual's dump covers a completed hard reset too.
                    State::Done {
                        state: AttentionState::Reboot,
                        ..
                    } => ("reboot", Some("dump")),
                    State::Done {
                        state: AttentionState::Poff,
                        ..
                    } => ("poff", Some("poff")),
                    State::Failed { .. } => ("failed", None),
                    State::Normal if expired => ("expired", None),
                    State::Normal => ("normal", None),
                };
                let why = outcome
                    .is_none()
                    .then(|| unresettable(name.as_str()))
                    .flatten();
                let state = match (outcome, &why) {
                    (Some(o), _) => o,
                    (None, Some(_)) => "error",
                    (None, None) if expired => "----",
                    (None, None) => "normal",
                };
                let cluster = self
                    .spec
                    .system(name.as_str())
                    .is_some_and(|r| r.server().cluster);
                Some(MonitorView {
                    system: name.to_string(),
                    subsystem: m.subsystem,
                    ip: m.addr.ip(),
                    port: m.addr.port(),
                    pair: m.pair.filter(|_| cluster),
                    state,
                    detail,
                    unresettable: why,
                    warning: None,
                    last_check_ms_ago: now.duration_since(m.last_seen).as_millis() as u64,
                })
            })
            .collect();
        v.sort_by(|a, b| a.system.cmp(&b.system));
        v
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
