//! One reset, SPEC §2 steps 3–7: power check → soft reset (NMI) → wait for the node's
//! "stopped" → hard reset → wait for the acknowledgement → PDU cut → outlets back on.
//!
//! The sequence is an async function over the backend traits and tokio time, so it runs
//! the same against simulators with a paused clock as against real hardware. It reports
//! each step through a channel (the pipeline turns steps into reset-log lines and
//! attention notifications) and returns how the reset ended. It never reports a reset that
//! did not happen: `Dump` needs a stopped notification, `Reboot` an acknowledgement from
//! the BMC/hypervisor or from every PDU outlet.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendError, Backends, PowerState};
use crate::spec::model::{Esxi, OutletLink, Pdu, PhysicalServer, Spec};

/// How long one power query or NMI may take before it counts as failed.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Hard-reset acknowledgement wait when the server sets no iPDU timeout.
pub const DEFAULT_HARD_RESET_TIMEOUT: Duration = Duration::from_secs(10);
/// Hard-reset issue time for VMware guests (hispeed applies to physical servers only).
pub const GUEST_HARD_RESET_AFTER: Duration = Duration::from_millis(5000);

/// What is being reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Physical {
        server: Box<PhysicalServer>,
        /// The PDUs of its outlet links (only when PDU forced reset is on).
        pdus: Vec<(OutletLink, Pdu)>,
    },
    Guest {
        host: Esxi,
        vm: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Soft → hard: hispeed for physical servers, 5000 ms for guests.
    pub hard_reset_after: Duration,
    /// How long to wait for the hard reset's acknowledgement.
    pub hard_reset_timeout: Duration,
    /// Outlets back on after this long; `None` leaves them off.
    pub recovery: Option<Duration>,
}

/// What resetting a physical server touches, and its timings from the spec: hispeed,
/// the iPDU timeout, the recovery time (0 = stay off), and every outlet link when PDU
/// forced reset is on.
pub fn physical(spec: &Spec, server: &PhysicalServer) -> (Target, Timing) {
    let ipdu = server.ipdu.as_ref().filter(|i| i.enabled);
    let pdus = ipdu
        .map(|i| {
            i.outlets
                .iter()
                .filter_map(|l| spec.pdus.get(&l.pdu).map(|p| (*l, p.clone())))
                .collect()
        })
        .unwrap_or_default();
    let timing = Timing {
        hard_reset_after: spec.hard_reset_after(),
        hard_reset_timeout: ipdu
            .and_then(|i| i.timeout)
            .map_or(DEFAULT_HARD_RESET_TIMEOUT, |t| t.duration()),
        recovery: ipdu
            .and_then(|i| i.recovery_time)
            .filter(|r| r.get() > 0)
            .map(|r| r.duration()),
    };
    (
        Target::Physical {
            server: Box::new(server.clone()),
            pdus,
        },
        timing,
    )
}

/// What resetting a VMware guest touches, and its timings (hispeed is for physical
/// servers only).
pub fn guest(host: &Esxi, vm: &str) -> (Target, Timing) {
    (
        Target::Guest {
            host: host.clone(),
            vm: vm.to_string(),
        },
        Timing {
            hard_reset_after: GUEST_HARD_RESET_AFTER,
            hard_reset_timeout: DEFAULT_HARD_RESET_TIMEOUT,
            recovery: None,
        },
    )
}

/// A step of a reset, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    PowerOff,
    /// The NMI is being sent (reported just before the call): from now on a stop notice
    /// counts as the node dumping.
    NmiIssued,
    /// The BMC or ESXi acknowledged the NMI.
    SoftAcked,
    SoftFailed(String),
    Stopped,
    HardSent,
    HardAcked,
    HardFailed(String),
    /// An outlet is being switched (reported just before the request goes to the PDU).
    OutletSending {
        link: OutletLink,
        on: bool,
    },
    OutletOff {
        link: OutletLink,
        result: Result<(), String>,
    },
    OutletOn {
        link: OutletLink,
        result: Result<(), String>,
    },
}

/// The longest a reset can take with these timings: the power query, the soft-reset
/// window, the hard reset's acknowledgement and the PDU cut, plus a margin. The core ends
/// a reset that has not ended by then.
pub fn budget(t: &Timing) -> Duration {
    OPERATION_TIMEOUT + t.hard_reset_after + 2 * t.hard_reset_timeout + DEADLINE_MARGIN
}

/// How long an operator's test soft reset waits for the node's stop notice: long enough
/// for a real dump agent to start (the NMI handler, then the crash kernel's network).
pub const TEST_STOP_WINDOW: Duration = Duration::from_secs(60);

/// The longest an operator's test soft reset can take.
pub fn test_budget(_: &Timing) -> Duration {
    2 * OPERATION_TIMEOUT + TEST_STOP_WINDOW + DEADLINE_MARGIN
}

/// Slack for the scheduling of a loaded machine on top of every bounded wait.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// How a reset ended, as its task claims it (the core checks the claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already powered off.
    PowerOff,
    /// The node reported it stopped and is dumping.
    Dumped,
    /// Hard reset acknowledged, or every feeding outlet cut.
    Rebooted,
    Failed(String),
}

/// Where a reset reports its steps. A step must be delivered by the time `step` returns
/// (the pipeline relies on `NmiIssued` arriving before the NMI leaves the machine). A
/// plain channel is one; the pipeline's own tags each step with its reset.
pub trait StepSink: Clone + Send + Sync + 'static {
    fn step(&self, step: Step);
}

impl StepSink for mpsc::UnboundedSender<Step> {
    fn step(&self, step: Step) {
        let _ = self.send(step);
    }
}

/// Where a reset starts: at the beginning, or where the old active of a pair had
/// brought it when this server took over (as last synced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Resume {
    /// Power check, NMI, soft-reset window, hard reset, PDU cut.
    #[default]
    Fresh,
    /// The old active issued the NMI: no second NMI (the node may be dumping); wait what
    /// was left of the soft-reset window for the stop notice, then the hard reset.
    AfterNmi { window: Duration },
    /// The old active's soft-reset window was over: straight to the hard reset.
    Hard,
}

/// Runs one reset. `stopped` fires when the node's dump agent reports it stopped.
pub async fn run(
    target: Target,
    timing: Timing,
    backends: Backends,
    stopped: oneshot::Receiver<()>,
    steps: impl StepSink,
) -> Outcome {
    run_seen(target, timing, backends, stopped, steps, false).await
}

/// [`run`], where `seen_on` says the hardware watch read the target's power as on within
/// its last poll: the power query before the NMI is skipped, and the NMI goes out one BMC
/// round trip sooner. A node that went off since is still stopped (the NMI and the hard
/// reset of an off node change nothing; the PDU cut follows an unacknowledged hard
/// reset); it is only not answered POFF, which needs a read during this reset.
pub async fn run_seen(
    target: Target,
    timing: Timing,
    backends: Backends,
    stopped: oneshot::Receiver<()>,
    steps: impl StepSink,
    seen_on: bool,
) -> Outcome {
    run_from(
        target,
        timing,
        backends,
        stopped,
        steps,
        seen_on,
        Resume::Fresh,
    )
    .await
}

/// [`run_seen`] from where `resume` says: a reset carried on after a takeover skips what
/// the old active already did. The core knows the stage it starts at (a stop notice
/// counts at once after an NMI the old active issued).
pub async fn run_from(
    target: Target,
    timing: Timing,
    backends: Backends,
    mut stopped: oneshot::Receiver<()>,
    steps: impl StepSink,
    seen_on: bool,
    resume: Resume,
) -> Outcome {
    let step = |s: Step| steps.step(s);
    match resume {
        Resume::Fresh => {}
        Resume::AfterNmi { window } => {
            let until = tokio::time::Instant::now() + window;
            if wait_stopped(&mut stopped, until).await {
                step(Step::Stopped);
                return Outcome::Dumped;
            }
            return hard_then_cut(&target, &timing, &backends, &steps).await;
        }
        Resume::Hard => return hard_then_cut(&target, &timing, &backends, &steps).await,
    }
    let power = if seen_on {
        Ok(PowerState::On)
    } else {
        power(&target, &backends).await
    };
    match power {
        Ok(PowerState::Off) => {
            step(Step::PowerOff);
            return Outcome::PowerOff;
        }
        Ok(PowerState::On) => {}
        // SPEC §2.6: a BMC that cannot be reached at all goes straight to the PDU cut.
        Err(Unreachable(e)) => {
            if let Target::Physical { pdus, .. } = &target
                && !pdus.is_empty()
            {
                step(Step::HardFailed(format!("BMC unreachable: {e}")));
                return cut(pdus, &timing, &backends, &steps, &e).await;
            }
        }
        // It answered, only not with a power state: carry on with the reset.
        Err(_) => {}
    }

    // The hard-reset issue time runs from the soft-reset request, not its acknowledgement.
    match soft_window(
        &target,
        &backends,
        &mut stopped,
        timing.hard_reset_after,
        &steps,
    )
    .await
    {
        Window::Stopped => return Outcome::Dumped,
        // The node cannot dump without the NMI: straight to the hard reset.
        Window::NmiFailed(_) | Window::Elapsed { acked: true } => {}
        Window::Elapsed { acked: false } => step(Step::SoftFailed(format!(
            "NMI not acknowledged within {} ms",
            timing.hard_reset_after.as_millis()
        ))),
    }
    hard_then_cut(&target, &timing, &backends, &steps).await
}

/// Waits until `until` for the core's stop signal; whether it came.
async fn wait_stopped(stopped: &mut oneshot::Receiver<()>, until: tokio::time::Instant) -> bool {
    tokio::select! {
        r = stopped => {
            if r.is_ok() {
                return true;
            }
            // No one can report a stop any more: wait the window out all the same.
            tokio::time::sleep_until(until).await;
            false
        }
        _ = tokio::time::sleep_until(until) => false,
    }
}

/// The hard reset, and the PDU cut if it is not acknowledged.
async fn hard_then_cut(
    target: &Target,
    timing: &Timing,
    backends: &Backends,
    steps: &impl StepSink,
) -> Outcome {
    steps.step(Step::HardSent);
    let hard_error = match bounded(target, timing.hard_reset_timeout, hard(target, backends)).await
    {
        Ok(()) => {
            steps.step(Step::HardAcked);
            return Outcome::Rebooted;
        }
        Err(e) => {
            steps.step(Step::HardFailed(e.clone()));
            e
        }
    };

    let Target::Physical { pdus, .. } = target else {
        return Outcome::Failed(format!("hard reset failed: {hard_error}"));
    };
    if pdus.is_empty() {
        return Outcome::Failed(format!(
            "hard reset failed ({hard_error}) and PDU forced reset is off"
        ));
    }
    cut(pdus, timing, backends, steps, &hard_error).await
}

/// Cuts every feeding outlet on every PDU at once; schedules their recovery.
async fn cut(
    pdus: &[(OutletLink, Pdu)],
    timing: &Timing,
    backends: &Backends,
    steps: &impl StepSink,
    why: &str,
) -> Outcome {
    let step = |s: Step| steps.step(s);
    let cuts = pdus.iter().map(|(link, pdu)| {
        let backends = backends.clone();
        steps.step(Step::OutletSending {
            link: *link,
            on: false,
        });
        async move {
            let r = crate::backend::bounded(
                crate::backend::device("PDU", link.pdu),
                timing.hard_reset_timeout,
                backends.pdu.set_outlet(pdu, link.outlet, false),
            )
            .await
            .map_err(|e| e.to_string());
            (*link, r)
        }
    });
    let results = futures_util::future::join_all(cuts).await;
    let mut all_cut = true;
    for (link, r) in &results {
        all_cut &= r.is_ok();
        step(Step::OutletOff {
            link: *link,
            result: r.clone(),
        });
    }
    if let Some(after) = timing.recovery {
        // Switch back on what was cut, whatever the outcome, so a server is not left dark
        // by a half-done cut; this runs on after the reply, all outlets at once.
        let cut: Vec<(OutletLink, Pdu)> = pdus
            .iter()
            .filter(|(l, _)| results.iter().any(|(rl, r)| rl == l && r.is_ok()))
            .cloned()
            .collect();
        let steps = steps.clone();
        let backends = backends.clone();
        let limit = timing.hard_reset_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let ons = cut.iter().map(|(link, pdu)| {
                let backends = backends.clone();
                steps.step(Step::OutletSending {
                    link: *link,
                    on: true,
                });
                async move {
                    let r = crate::backend::bounded(
                        crate::backend::device("PDU", link.pdu),
                        limit,
                        backends.pdu.set_outlet(pdu, link.outlet, true),
                    )
                    .await
                    .map_err(|e| e.to_string());
                    (*link, r)
                }
            });
            for (link, result) in futures_util::future::join_all(ons).await {
                steps.step(Step::OutletOn { link, result });
            }
        });
    }
    if all_cut {
        Outcome::Rebooted
    } else {
        Outcome::Failed(format!(
            "hard reset failed ({why}) and not every PDU outlet could be cut"
        ))
    }
}

/// An operator's test soft reset (SPEC §8): a soft reset only — the NMI, then up to `wait`
/// ([`TEST_STOP_WINDOW`] from the daemon) for the node's stop notice; never a hard reset
/// or a PDU cut.
pub async fn soft_test(
    target: Target,
    wait: Duration,
    backends: Backends,
    mut stopped: oneshot::Receiver<()>,
    steps: impl StepSink,
) -> Outcome {
    let step = |s: Step| steps.step(s);
    if let Ok(PowerState::Off) = power(&target, &backends).await {
        step(Step::PowerOff);
        return Outcome::PowerOff;
    }
    match soft_window(
        &target,
        &backends,
        &mut stopped,
        OPERATION_TIMEOUT + wait,
        &steps,
    )
    .await
    {
        Window::Stopped => return Outcome::Dumped,
        Window::NmiFailed(e) => {
            return Outcome::Failed(format!("test soft reset: NMI failed: {e}"));
        }
        Window::Elapsed { .. } => {}
    }
    Outcome::Failed(format!(
        "test soft reset: no stopped notification within {} ms",
        wait.as_millis()
    ))
}

/// How the soft-reset window ended.
enum Window {
    /// The core signalled the node's stop notice.
    Stopped,
    /// The NMI failed (reported as `SoftFailed`).
    NmiFailed(String),
    /// Time ran out; whether the NMI was acknowledged.
    Elapsed { acked: bool },
}

/// Issues the NMI (reported as issued before the call) and waits `window` from then for
/// the core's stop signal, which it sends only once the NMI was issued and before any hard
/// reset, so it counts as soon as it comes. The window starts when the NMI is issued,
/// never before: the hard reset that may follow is at least `window` after it.
async fn soft_window(
    target: &Target,
    backends: &Backends,
    stopped: &mut oneshot::Receiver<()>,
    window: Duration,
    steps: &impl StepSink,
) -> Window {
    steps.step(Step::NmiIssued);
    let until = tokio::time::Instant::now() + window;
    let nmi = bounded(target, OPERATION_TIMEOUT, soft(target, backends));
    tokio::pin!(nmi);
    let mut acked = false;
    let mut notifier = true;
    loop {
        tokio::select! {
            biased;
            r = &mut *stopped, if notifier => match r {
                Ok(()) => {
                    steps.step(Step::Stopped);
                    return Window::Stopped;
                }
                // No one can report a stop any more: wait the window out all the same.
                Err(_) => notifier = false,
            },
            r = &mut nmi, if !acked => match r {
                Ok(()) => {
                    acked = true;
                    steps.step(Step::SoftAcked);
                }
                Err(e) => {
                    steps.step(Step::SoftFailed(e.clone()));
                    return Window::NmiFailed(e);
                }
            },
            _ = tokio::time::sleep_until(until) => return Window::Elapsed { acked },
        }
    }
}

/// A call of this reset under `limit`, its error as text for the steps and the log.
async fn bounded<T>(
    target: &Target,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, String> {
    crate::backend::bounded(target.device(), limit, f)
        .await
        .map_err(|e| e.to_string())
}

impl Target {
    /// The device a call about this target goes to, as messages name it.
    pub fn device(&self) -> String {
        match self {
            Target::Physical { server, .. } => crate::backend::device("BMC", server.bmc.address),
            Target::Guest { host, vm } => {
                format!("{} (VM {vm})", crate::backend::device("ESXi", host.address))
            }
        }
    }
}

/// Why the power state is unknown: the device could not be reached (or did not answer in
/// time), or it answered with a refusal.
enum PowerError {
    Unreachable(String),
    Refused,
}
use PowerError::Unreachable;

async fn power(target: &Target, b: &Backends) -> Result<PowerState, PowerError> {
    let query = async {
        match target {
            Target::Physical { server, .. } => b.bmc.power_state(&server.bmc).await,
            Target::Guest { host, vm } => b.hypervisor.vm_power_state(host, vm).await,
        }
    };
    match crate::backend::bounded(target.device(), OPERATION_TIMEOUT, query).await {
        Ok(p) => Ok(p),
        Err(e @ (BackendError::Unreachable { .. } | BackendError::Timeout { .. })) => {
            Err(Unreachable(e.to_string()))
        }
        Err(BackendError::Refused { .. }) => Err(PowerError::Refused),
    }
}

async fn soft(target: &Target, b: &Backends) -> Result<(), BackendError> {
    match target {
        Target::Physical { server, .. } => b.bmc.nmi(&server.bmc).await,
        Target::Guest { host, vm } => b.hypervisor.vm_nmi(host, vm).await,
    }
}

async fn hard(target: &Target, b: &Backends) -> Result<(), BackendError> {
    match target {
        Target::Physical { server, .. } => b.bmc.hard_reset(&server.bmc).await,
        Target::Guest { host, vm } => b.hypervisor.vm_reset(host, vm).await,
    }
}
