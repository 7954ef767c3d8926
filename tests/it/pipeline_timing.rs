//! The timing of one reset (SPEC §2 steps 3–7) on a paused tokio clock: `reset::run`
//! against the simulator, asserting the exact virtual instant of every device call, the
//! steps reported and the outcome. One test at the end runs the pipeline thread on real
//! time to check that it derives the same timings from the spec (hispeed, the 5000 ms of
//! guests, the iPDU timeout and recovery time).

use crate::support::pipeline as pipeline_harness;

use std::sync::Arc;
use std::time::Duration;

use haconn::backend::Backends;
use haconn::backend::sim::{Behavior, DeviceId, Sim, SimEvent};
use haconn::pipeline::reset::{self, Outcome, Step, Target, Timing};
use haconn::spec::model::{HISPEED_OFF, PhysicalServer, Spec};
use pipeline_harness::{Lab, Op, ip};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A spec with one iPDU server on two PDUs (three outlets), one plain server and one
/// ESXi host with a guest. Loopback addresses only.
fn lab_spec(hispeed: &str, recovery: u32, ipdu_enabled: bool) -> Spec {
    pipeline_harness::spec(&format!(
        r#"
apiVersion: haconn/v1
mode: single
resetPath: {{address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: {{key: "0123456789abcdef0123"}}}}
hispeed: {hispeed}
snmp: {{community: lab}}
pdus:
  - {{address: 127.0.0.21, model: IBM_PDU}}
  - {{address: 127.0.0.22, model: IBM_PDU}}
managementServers:
  - name: ms01
    bmc: {{address: 127.0.0.2, username: admin, password: labpassw0rd}}
    mlan: {{address: 127.0.0.1, port: 15002}}
servers:
  - name: node01
    bmc: {{address: 127.0.0.11, username: admin, password: labpassw0rd}}
    cluster: true
    ipdu:
      enabled: {ipdu_enabled}
      timeout: 5
      recoveryTime: {recovery}
      outlets:
        - {{pdu: 127.0.0.21, outlet: 1}}
        - {{pdu: 127.0.0.21, outlet: 2}}
        - {{pdu: 127.0.0.22, outlet: 1}}
  - name: node02
    bmc: {{address: 127.0.0.12, username: admin, password: labpassw0rd}}
  - name: esx01
    bmc: {{address: 127.0.0.13, username: admin, password: labpassw0rd}}
    esxi:
      address: 127.0.0.113
      username: root
      password: labpassw0rd
      trustOnFirstUse: true
      guests: [vm01]
"#
    ))
}

fn server<'a>(spec: &'a Spec, name: &str) -> &'a PhysicalServer {
    spec.servers
        .values()
        .find(|s| s.name.as_str() == name)
        .expect("server in the test spec")
}

/// node01's reset as the pipeline builds it.
fn physical(spec: &Spec, name: &str) -> (Target, Timing) {
    reset::physical(spec, server(spec, name))
}

/// vm01 on esx01's reset as the pipeline builds it.
fn guest(spec: &Spec) -> (Target, Timing) {
    let host = server(spec, "esx01").esxi.as_ref().expect("a vserver");
    reset::guest(host, "vm01")
}

fn node01() -> DeviceId {
    DeviceId::Bmc(ip("127.0.0.11"))
}

fn node02() -> DeviceId {
    DeviceId::Bmc(ip("127.0.0.12"))
}

fn vm01() -> DeviceId {
    DeviceId::Vm(ip("127.0.0.113"), "vm01".into())
}

fn sim_backends(sim: &Arc<Sim>) -> Backends {
    Backends {
        bmc: sim.clone(),
        pdu: sim.clone(),
        hypervisor: sim.clone(),
    }
}

/// When the node's dump agent reports "stopped", relative to the start of the reset.
#[derive(Clone, Copy)]
enum Agent {
    Silent,
    StoppedAfter(Duration),
    /// The notifier goes away without reporting (its sender is dropped at once).
    Gone,
}

/// One finished reset: what it returned, when, and the steps reported so far.
struct Ran {
    t0: Instant,
    returned: Instant,
    outcome: Outcome,
    steps: mpsc::UnboundedReceiver<Step>,
}

impl Ran {
    /// The steps reported up to now.
    fn steps(&mut self) -> Vec<Step> {
        let mut v = Vec::new();
        while let Ok(s) = self.steps.try_recv() {
            v.push(s);
        }
        v
    }

    fn took(&self) -> Duration {
        self.returned - self.t0
    }
}

async fn run(target: Target, timing: Timing, backends: Backends, agent: Agent) -> Ran {
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let mut keep = None;
    match agent {
        Agent::Silent => keep = Some(stopped_tx),
        Agent::StoppedAfter(d) => {
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let _ = stopped_tx.send(());
            });
        }
        Agent::Gone => drop(stopped_tx),
    }
    let (steps_tx, steps) = mpsc::unbounded_channel();
    let t0 = Instant::now();
    let outcome = reset::run(target, timing, backends, stopped_rx, steps_tx).await;
    let returned = Instant::now();
    drop(keep);
    Ran {
        t0,
        returned,
        outcome,
        steps,
    }
}

/// Every simulator call so far, as offsets from `t0`.
fn calls(sim: &Sim, t0: Instant) -> Vec<(Duration, SimEvent)> {
    sim.calls().into_iter().map(|(t, e)| (t - t0, e)).collect()
}

fn at(calls: &[(Duration, SimEvent)], want: &SimEvent) -> Vec<Duration> {
    calls
        .iter()
        .filter(|(_, e)| e == want)
        .map(|(t, _)| *t)
        .collect()
}

fn outlet(pdu: &str, outlet: u16, on: bool) -> SimEvent {
    SimEvent::Outlet {
        pdu: ip(pdu),
        outlet,
        on,
    }
}

fn outlet_events(calls: &[(Duration, SimEvent)]) -> Vec<(Duration, SimEvent)> {
    calls
        .iter()
        .filter(|(_, e)| matches!(e, SimEvent::Outlet { .. }))
        .cloned()
        .collect()
}

const NODE01_OUTLETS: [(&str, u16); 3] = [("127.0.0.21", 1), ("127.0.0.21", 2), ("127.0.0.22", 1)];

fn no_delay(sim: &Sim, ids: &[DeviceId]) {
    for id in ids {
        sim.set(id.clone(), |d| d.delay = Duration::ZERO);
    }
}

fn pdus() -> [DeviceId; 2] {
    [
        DeviceId::Pdu(ip("127.0.0.21")),
        DeviceId::Pdu(ip("127.0.0.22")),
    ]
}

fn soft_then_hard_acked() -> Vec<Step> {
    vec![
        Step::NmiIssued,
        Step::SoftAcked,
        Step::HardSent,
        Step::HardAcked,
    ]
}

#[tokio::test(start_paused = true)]
async fn power_already_off_is_poff_without_nmi() {
    let spec = lab_spec("1000", 30, true);
    let sim = Arc::new(Sim::default());
    sim.set(node01(), |d| d.power = haconn::backend::PowerState::Off);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::PowerOff);
    assert_eq!(r.steps(), vec![Step::PowerOff]);
    assert_eq!(r.took(), ms(1), "one power query of the BMC's delay");
    tokio::time::sleep(secs(60)).await;
    assert_eq!(
        calls(&sim, r.t0),
        vec![(ms(0), SimEvent::PowerQuery(node01()))],
        "nothing but the power query: no NMI, no hard reset, no outlet"
    );
}

#[tokio::test(start_paused = true)]
async fn stopped_at_300_ms_is_dumped_without_hard_reset() {
    let spec = lab_spec("1000", 30, true);
    let sim = Arc::new(Sim::default());
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(
        target,
        timing,
        sim_backends(&sim),
        Agent::StoppedAfter(ms(300)),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Dumped);
    assert_eq!(r.took(), ms(300), "done the instant the agent reports");
    assert_eq!(
        r.steps(),
        vec![Step::NmiIssued, Step::SoftAcked, Step::Stopped]
    );
    tokio::time::sleep(secs(60)).await;
    let c = calls(&sim, r.t0);
    assert_eq!(
        c,
        vec![
            (ms(0), SimEvent::PowerQuery(node01())),
            (ms(1), SimEvent::Nmi(node01())),
        ],
        "no hard reset and no outlet after a dump"
    );
}

/// The hard reset follows the NMI after exactly the hard-reset issue time: hispeed for a
/// physical server, 5000 ms when hispeed is off.
#[tokio::test(start_paused = true)]
async fn no_stopped_hard_reset_exactly_at_hispeed() {
    for (hispeed, expect) in [
        ("1000", ms(1000)),
        ("2500", ms(2500)),
        ("5000", ms(5000)),
        ("off", ms(5000)),
    ] {
        let spec = lab_spec(hispeed, 30, true);
        assert_eq!(spec.hard_reset_after(), expect, "hispeed {hispeed}");
        let sim = Arc::new(Sim::default());
        no_delay(&sim, &[node01()]);
        let (target, timing) = physical(&spec, "node01");
        let mut r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
        assert_eq!(r.outcome, Outcome::Rebooted, "hispeed {hispeed}");
        assert_eq!(r.steps(), soft_then_hard_acked(), "hispeed {hispeed}");
        let c = calls(&sim, r.t0);
        let nmi = at(&c, &SimEvent::Nmi(node01()));
        let hard = at(&c, &SimEvent::HardReset(node01()));
        assert_eq!(nmi.len(), 1, "hispeed {hispeed}: {c:?}");
        assert_eq!(hard.len(), 1, "hispeed {hispeed}: {c:?}");
        assert_eq!(hard[0] - nmi[0], expect, "hispeed {hispeed}");
        assert!(outlet_events(&c).is_empty(), "acknowledged: no PDU cut");
    }
    assert_eq!(HISPEED_OFF, ms(5000));
}

/// A stop report one millisecond before the hard-reset issue time still wins.
#[tokio::test(start_paused = true)]
async fn stopped_just_before_the_issue_time_wins() {
    let spec = lab_spec("1000", 30, true);
    let sim = Arc::new(Sim::default());
    no_delay(&sim, &[node01()]);
    let (target, timing) = physical(&spec, "node01");
    let r = run(
        target,
        timing,
        sim_backends(&sim),
        Agent::StoppedAfter(ms(999)),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Dumped);
    assert!(at(&calls(&sim, r.t0), &SimEvent::HardReset(node01())).is_empty());
}

/// Guests wait 5000 ms between NMI and reset whatever hispeed says, through ESXi.
#[tokio::test(start_paused = true)]
async fn guest_uses_5000_ms_and_the_hypervisor() {
    assert_eq!(reset::GUEST_HARD_RESET_AFTER, ms(5000));
    let spec = lab_spec("1000", 30, true);
    let sim = Arc::new(Sim::default());
    no_delay(&sim, &[vm01()]);
    let (target, timing) = guest(&spec);
    let mut r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    assert_eq!(r.steps(), soft_then_hard_acked());
    assert_eq!(
        calls(&sim, r.t0),
        vec![
            (ms(0), SimEvent::PowerQuery(vm01())),
            (ms(0), SimEvent::Nmi(vm01())),
            (ms(5000), SimEvent::HardReset(vm01())),
        ],
        "vm_power_state, vm_nmi, vm_reset; nothing on the host's BMC or PDUs"
    );

    // Stopped: dumped through vm_nmi alone. Powered off: POFF from vm_power_state.
    let sim = Arc::new(Sim::default());
    let (target, timing) = guest(&spec);
    let r = run(
        target,
        timing,
        sim_backends(&sim),
        Agent::StoppedAfter(ms(4000)),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Dumped);
    assert_eq!(r.took(), ms(4000));
    assert_eq!(
        calls(&sim, r.t0)
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>(),
        vec![SimEvent::PowerQuery(vm01()), SimEvent::Nmi(vm01())]
    );
    let sim = Arc::new(Sim::default());
    sim.set(vm01(), |d| d.power = haconn::backend::PowerState::Off);
    let (target, timing) = guest(&spec);
    let r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::PowerOff);
    assert_eq!(calls(&sim, r.t0).len(), 1);
}

/// A guest whose VM hangs on reset: FAIL after the default acknowledgement wait; a
/// guest's reset never touches PDUs.
#[tokio::test(start_paused = true)]
async fn guest_reset_hanging_fails_without_pdu() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &[vm01()]);
    lab.rule(vm01(), Op::Hard, Behavior::Hangs);
    let (target, timing) = guest(&spec);
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert!(matches!(r.outcome, Outcome::Failed(_)), "{:?}", r.outcome);
    assert_eq!(r.took(), ms(5000) + reset::DEFAULT_HARD_RESET_TIMEOUT);
    assert!(matches!(
        r.steps().as_slice(),
        [
            Step::NmiIssued,
            Step::SoftAcked,
            Step::HardSent,
            Step::HardFailed(_)
        ]
    ));
    assert!(outlet_events(&calls(&lab.sim, r.t0)).is_empty());
}

/// An NMI the BMC refuses cannot make the node dump: the hard reset goes out at once.
#[tokio::test(start_paused = true)]
async fn nmi_refused_hard_reset_immediately() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    lab.sim.set(node01(), |d| d.delay = ms(40));
    lab.rule(node01(), Op::Nmi, Behavior::Refuses);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    let steps = r.steps();
    assert!(
        matches!(
            steps.as_slice(),
            [
                Step::NmiIssued,
                Step::SoftFailed(_),
                Step::HardSent,
                Step::HardAcked
            ]
        ),
        "{steps:?}"
    );
    assert_eq!(
        calls(&lab.sim, r.t0),
        vec![
            (ms(0), SimEvent::PowerQuery(node01())),
            (ms(40), SimEvent::Nmi(node01())),
            // The refusal comes after the BMC's 40 ms; the hard reset follows it at once.
            (ms(80), SimEvent::HardReset(node01())),
        ]
    );
    assert_eq!(r.took(), ms(120));
}

/// The hard reset hangs: after the server's iPDU timeout (5 s) every outlet feeding it,
/// on every PDU, is cut at the same instant; REBOOT once all acknowledge.
#[tokio::test(start_paused = true)]
async fn hard_reset_hangs_cuts_every_outlet_in_parallel() {
    let spec = lab_spec("1000", 0, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &[node01()]);
    for p in pdus() {
        lab.sim.set(p, |d| d.delay = ms(250));
    }
    lab.rule(node01(), Op::Hard, Behavior::Hangs);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    let c = calls(&lab.sim, r.t0);
    let nmi = at(&c, &SimEvent::Nmi(node01()))[0];
    let hard = at(&c, &SimEvent::HardReset(node01()))[0];
    assert_eq!(hard - nmi, ms(1000));
    let cut = nmi + ms(1000) + secs(5);
    let mut want: Vec<(Duration, SimEvent)> = NODE01_OUTLETS
        .iter()
        .map(|(p, o)| (cut, outlet(p, *o, false)))
        .collect();
    let mut got = outlet_events(&c);
    want.sort_by_key(|(_, e)| format!("{e:?}"));
    got.sort_by_key(|(_, e)| format!("{e:?}"));
    assert_eq!(got, want, "all three outlets, both PDUs, the same instant");
    assert_eq!(
        r.took(),
        nmi + ms(1000) + secs(5) + ms(250),
        "one PDU delay, not three: the cuts run in parallel"
    );
    let steps = r.steps();
    assert!(matches!(
        &steps[..4],
        [
            Step::NmiIssued,
            Step::SoftAcked,
            Step::HardSent,
            Step::HardFailed(_)
        ]
    ));
    // Each cut is announced (OutletSending) before it goes out, then confirmed.
    let sending = steps[4..]
        .iter()
        .filter(|s| matches!(s, Step::OutletSending { on: false, .. }))
        .count();
    assert_eq!(sending, 3, "{steps:?}");
    let offs: Vec<_> = steps[4..]
        .iter()
        .filter(|s| !matches!(s, Step::OutletSending { .. }))
        .map(|s| match s {
            Step::OutletOff { link, result } => {
                assert_eq!(result, &Ok(()));
                (link.pdu.to_string(), link.outlet)
            }
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert_eq!(offs.len(), 3);
    for (p, o) in NODE01_OUTLETS {
        assert!(offs.contains(&(p.to_string(), o)));
        assert!(!lab.sim.outlet_on(ip(p), o), "{p}#{o} is off");
    }
}

/// One outlet the PDU refuses to switch: the server may still have power, so the reset
/// failed — never REBOOT.
#[tokio::test(start_paused = true)]
async fn one_outlet_refused_is_failed() {
    let spec = lab_spec("1000", 0, true);
    let lab = Lab::new();
    lab.rule(node01(), Op::Hard, Behavior::Hangs);
    lab.rule(
        DeviceId::Pdu(ip("127.0.0.21")),
        Op::Outlet {
            outlet: 2,
            on: false,
        },
        Behavior::Refuses,
    );
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert!(
        matches!(&r.outcome, Outcome::Failed(why) if why.contains("outlet")),
        "{:?}",
        r.outcome
    );
    let steps = r.steps();
    assert!(!steps.contains(&Step::HardAcked));
    let refused: Vec<_> = steps
        .iter()
        .filter(|s| matches!(s, Step::OutletOff { result: Err(_), .. }))
        .collect();
    assert_eq!(refused.len(), 1, "{steps:?}");
    // Recovery 0: the two outlets that were cut stay off.
    tokio::time::sleep(secs(300)).await;
    let c = calls(&lab.sim, r.t0);
    assert!(
        !outlet_events(&c)
            .iter()
            .any(|(_, e)| matches!(e, SimEvent::Outlet { on: true, .. })),
        "{c:?}"
    );
}

/// A PDU that hangs on the cut: FAIL after the timeout, and the other outlets' cut still
/// happened at the same instant.
#[tokio::test(start_paused = true)]
async fn pdu_hangs_is_failed_after_the_timeout() {
    let spec = lab_spec("1000", 0, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &[node01()]);
    lab.rule(node01(), Op::Hard, Behavior::Hangs);
    lab.sim.set(DeviceId::Pdu(ip("127.0.0.22")), |d| {
        d.behavior = Behavior::Hangs
    });
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert!(matches!(r.outcome, Outcome::Failed(_)), "{:?}", r.outcome);
    assert_eq!(r.took(), ms(1000) + secs(5) + secs(5));
    let c = calls(&lab.sim, r.t0);
    assert!(
        outlet_events(&c)
            .iter()
            .all(|(t, _)| *t == ms(1000) + secs(5))
    );
}

/// Recovery time 0: the outlets stay off for good.
#[tokio::test(start_paused = true)]
async fn recovery_zero_leaves_outlets_off() {
    let spec = lab_spec("1000", 0, true);
    let lab = Lab::new();
    lab.rule(node01(), Op::Hard, Behavior::Refuses);
    let (target, timing) = physical(&spec, "node01");
    assert_eq!(timing.recovery, None);
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    tokio::time::sleep(secs(3600)).await;
    let c = calls(&lab.sim, r.t0);
    assert_eq!(
        outlet_events(&c).len(),
        3,
        "three cuts, nothing else: {c:?}"
    );
    for (p, o) in NODE01_OUTLETS {
        assert!(!lab.sim.outlet_on(ip(p), o));
    }
    assert!(!r.steps().iter().any(|s| matches!(s, Step::OutletOn { .. })));
}

/// Recovery time 30 s: every outlet goes back on exactly 30 s after it was cut, and the
/// reset reported REBOOT at the cut (it does not wait for the recovery).
#[tokio::test(start_paused = true)]
async fn recovery_30_s_switches_back_on_after_exactly_30_s() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &pdus());
    lab.rule(node01(), Op::Hard, Behavior::Refuses);
    let (target, timing) = physical(&spec, "node01");
    assert_eq!(timing.recovery, Some(secs(30)));
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    let cut_at = r.took();
    let before: Vec<_> = r.steps();
    assert!(!before.iter().any(|s| matches!(s, Step::OutletOn { .. })));
    tokio::time::sleep(secs(29) + ms(999)).await;
    assert!(
        !outlet_events(&calls(&lab.sim, r.t0))
            .iter()
            .any(|(_, e)| matches!(e, SimEvent::Outlet { on: true, .. })),
        "still off 29.999 s after the cut"
    );
    tokio::time::sleep(secs(60)).await;
    let c = calls(&lab.sim, r.t0);
    for (p, o) in NODE01_OUTLETS {
        assert_eq!(at(&c, &outlet(p, o, false)), vec![cut_at]);
        assert_eq!(at(&c, &outlet(p, o, true)), vec![cut_at + secs(30)]);
        assert!(lab.sim.outlet_on(ip(p), o));
    }
    let ons = r
        .steps()
        .into_iter()
        .filter(|s| matches!(s, Step::OutletOn { result: Ok(()), .. }))
        .count();
    assert_eq!(ons, 3, "each switch-on is reported");
}

/// With recovery, an outlet that could not be cut is not switched, and the ones that were
/// cut come back on even though the reset failed.
#[tokio::test(start_paused = true)]
async fn recovery_after_a_partial_cut_restores_what_was_cut() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &pdus());
    lab.rule(node01(), Op::Hard, Behavior::Refuses);
    lab.rule(
        DeviceId::Pdu(ip("127.0.0.22")),
        Op::Outlet {
            outlet: 1,
            on: false,
        },
        Behavior::Refuses,
    );
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert!(matches!(r.outcome, Outcome::Failed(_)));
    tokio::time::sleep(secs(60)).await;
    let c = calls(&lab.sim, r.t0);
    let cut_at = r.took();
    assert_eq!(
        at(&c, &outlet("127.0.0.21", 1, true)),
        vec![cut_at + secs(30)]
    );
    assert_eq!(
        at(&c, &outlet("127.0.0.21", 2, true)),
        vec![cut_at + secs(30)]
    );
    assert!(at(&c, &outlet("127.0.0.22", 1, true)).is_empty());
}

/// One PDU hanging on the switch-on must not keep the server's other supplies dark:
/// every cut outlet comes back on at cut + recovery time.
#[tokio::test(start_paused = true)]
async fn recovery_switches_outlets_on_in_parallel() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &pdus());
    lab.rule(node01(), Op::Hard, Behavior::Refuses);
    lab.rule(
        DeviceId::Pdu(ip("127.0.0.21")),
        Op::Outlet {
            outlet: 1,
            on: true,
        },
        Behavior::Hangs,
    );
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    tokio::time::sleep(secs(120)).await;
    let c = calls(&lab.sim, r.t0);
    let cut_at = r.took();
    for (p, o) in NODE01_OUTLETS {
        assert_eq!(
            at(&c, &outlet(p, o, true)),
            vec![cut_at + secs(30)],
            "{p}#{o}: {c:?}"
        );
    }
}

/// Hard reset refused and iPDU off (the block present but disabled): FAIL, nothing cut.
#[tokio::test(start_paused = true)]
async fn hard_reset_refused_without_ipdu_is_failed() {
    for ipdu_server in [true, false] {
        let spec = lab_spec("1000", 30, false);
        let lab = Lab::new();
        let (name, dev) = if ipdu_server {
            ("node01", node01())
        } else {
            ("node02", node02())
        };
        lab.rule(dev.clone(), Op::Hard, Behavior::Refuses);
        let (target, timing) = physical(&spec, name);
        let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
        assert!(
            matches!(&r.outcome, Outcome::Failed(why) if why.contains("PDU forced reset is off")),
            "{name}: {:?}",
            r.outcome
        );
        let steps = r.steps();
        assert!(matches!(
            steps.as_slice(),
            [
                Step::NmiIssued,
                Step::SoftAcked,
                Step::HardSent,
                Step::HardFailed(_)
            ]
        ));
        tokio::time::sleep(secs(120)).await;
        let c = calls(&lab.sim, r.t0);
        assert!(outlet_events(&c).is_empty(), "{name}: {c:?}");
        assert_eq!(at(&c, &SimEvent::HardReset(dev)).len(), 1);
    }
}

/// A BMC that answers nothing at all "cannot be reached" (SPEC §2.6). With iPDU: every
/// outlet is cut as soon as the power query has timed out, with no NMI or hard reset
/// sent into the void first; REBOOT. Without iPDU: FAIL, within the sum of the bounded
/// waits (power query, NMI, acknowledgement).
#[tokio::test(start_paused = true)]
async fn bmc_hangs_on_everything_is_bounded() {
    let spec = lab_spec("1000", 0, true);
    let sim = Arc::new(Sim::default());
    no_delay(&sim, &pdus());
    sim.set(node01(), |d| d.behavior = Behavior::Hangs);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    let c = calls(&sim, r.t0);
    let mut want: Vec<(Duration, SimEvent)> = vec![(ms(0), SimEvent::PowerQuery(node01()))];
    want.extend(
        NODE01_OUTLETS
            .iter()
            .map(|(p, o)| (reset::OPERATION_TIMEOUT, outlet(p, *o, false))),
    );
    assert_eq!(c, want);
    assert_eq!(r.took(), reset::OPERATION_TIMEOUT);
    let steps = r.steps();
    assert!(
        matches!(steps.first(), Some(Step::HardFailed(_))),
        "{steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::OutletOff { result: Ok(()), .. }))
            .count(),
        3
    );

    let spec = lab_spec("1000", 0, false);
    let sim = Arc::new(Sim::default());
    sim.set(node01(), |d| d.behavior = Behavior::Hangs);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, sim_backends(&sim), Agent::Silent).await;
    assert!(matches!(r.outcome, Outcome::Failed(_)), "{:?}", r.outcome);
    assert!(r.took() <= reset::OPERATION_TIMEOUT * 2 + reset::DEFAULT_HARD_RESET_TIMEOUT);
    assert!(!r.steps().contains(&Step::HardAcked));
    assert!(outlet_events(&calls(&sim, r.t0)).is_empty());
}

/// A BMC that answers the power query with a refusal is reachable: the reset carries on
/// with the NMI (no PDU cut because of it).
#[tokio::test(start_paused = true)]
async fn power_query_refused_carries_on_with_the_nmi() {
    let spec = lab_spec("1000", 0, true);
    let lab = Lab::new();
    no_delay(&lab.sim, &[node01()]);
    lab.rule(node01(), Op::Power, Behavior::Refuses);
    let (target, timing) = physical(&spec, "node01");
    let mut r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    assert_eq!(r.steps(), soft_then_hard_acked());
    assert_eq!(
        calls(&lab.sim, r.t0),
        vec![
            (ms(0), SimEvent::PowerQuery(node01())),
            (ms(0), SimEvent::Nmi(node01())),
            (ms(1000), SimEvent::HardReset(node01())),
        ]
    );
}

/// The hard-reset issue time counts from the soft reset *request* (seed 001: "the time
/// from the start of the software reset request until the hardware reset is requested"),
/// so a BMC slow to acknowledge the NMI must not push the hard reset later.
#[tokio::test(start_paused = true)]
async fn hispeed_counts_from_the_nmi_request() {
    let spec = lab_spec("1000", 30, true);
    let lab = Lab::new();
    lab.sim.set(node01(), |d| d.delay = ms(300));
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, lab.backends(), Agent::Silent).await;
    assert_eq!(r.outcome, Outcome::Rebooted);
    let c = calls(&lab.sim, r.t0);
    let nmi = at(&c, &SimEvent::Nmi(node01()))[0];
    let hard = at(&c, &SimEvent::HardReset(node01()))[0];
    assert_eq!(hard - nmi, ms(1000), "slow NMI acknowledgement: {c:?}");

    // An NMI that is never acknowledged: still a hard reset at NMI + hispeed, not after
    // the 5 s operation timeout.
    let lab = Lab::new();
    no_delay(&lab.sim, &[node01()]);
    lab.rule(node01(), Op::Nmi, Behavior::Hangs);
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, lab.backends(), Agent::Silent).await;
    let c = calls(&lab.sim, r.t0);
    let nmi = at(&c, &SimEvent::Nmi(node01()))[0];
    let hard = at(&c, &SimEvent::HardReset(node01()))[0];
    assert_eq!(hard - nmi, ms(1000), "NMI never acknowledged: {c:?}");
}

/// A notifier that goes away is not a stop report and must not cut the dump window short.
#[tokio::test(start_paused = true)]
async fn lost_notifier_does_not_shorten_the_dump_window() {
    let spec = lab_spec("1000", 30, true);
    let sim = Arc::new(Sim::default());
    no_delay(&sim, &[node01()]);
    let (target, timing) = physical(&spec, "node01");
    let r = run(target, timing, sim_backends(&sim), Agent::Gone).await;
    let c = calls(&sim, r.t0);
    let nmi = at(&c, &SimEvent::Nmi(node01()))[0];
    let hard = at(&c, &SimEvent::HardReset(node01()))[0];
    assert_eq!(hard - nmi, ms(1000), "{c:?}");
}

mod real_time {
    //! The pipeline thread runs on its own (unpaused) runtime, so this part runs on real
    //! time with tolerances: several resets at once, so the whole takes about 11 s.

    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    use haconn::backend::sim::{Behavior, DeviceId, SimEvent};
    use haconn::log::LogSink;
    use haconn::pipeline::{Pipeline, PipelineConfig};
    use haconn::resetpath::codec::{Message, ResetResult};

    use super::{ms, secs};
    use crate::support::pipeline::{self as pipeline_harness, Lab, Net, Op, ip};

    fn spec_yaml(hispeed: &str) -> String {
        format!(
            r#"
apiVersion: haconn/v1
mode: single
resetPath: {{address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: {{key: "0123456789abcdef0123"}}}}
hispeed: {hispeed}
snmp: {{community: lab}}
pdus:
  - {{address: 127.0.0.21, model: IBM_PDU}}
managementServers:
  - name: ms01
    bmc: {{address: 127.0.0.2, username: admin, password: labpassw0rd}}
    mlan: {{address: 127.0.0.1, port: 15002}}
servers:
  - {{name: req01, bmc: {{address: 127.0.0.10, username: admin, password: labpassw0rd}}}}
  - {{name: plain01, bmc: {{address: 127.0.0.11, username: admin, password: labpassw0rd}}}}
  - name: ipdu01
    bmc: {{address: 127.0.0.12, username: admin, password: labpassw0rd}}
    ipdu: {{timeout: 5, recoveryTime: 5, outlets: [{{pdu: 127.0.0.21, outlet: 1}}, {{pdu: 127.0.0.21, outlet: 2}}]}}
  - name: off01
    bmc: {{address: 127.0.0.14, username: admin, password: labpassw0rd}}
    ipdu: {{enabled: false, timeout: 5, recoveryTime: 5, outlets: [{{pdu: 127.0.0.21, outlet: 3}}]}}
  - name: esx01
    bmc: {{address: 127.0.0.13, username: admin, password: labpassw0rd}}
    esxi: {{address: 127.0.0.113, username: root, password: labpassw0rd, trustOnFirstUse: true, guests: [vm01]}}
"#
        )
    }

    struct Running {
        lab: std::sync::Arc<Lab>,
        net: Net,
        pipeline: Option<Pipeline>,
        thread: Option<haconn::pipeline::PipelineThread>,
    }

    impl Drop for Running {
        fn drop(&mut self) {
            drop(self.pipeline.take());
            if let Some(t) = self.thread.take() {
                t.join();
            }
        }
    }

    fn start(hispeed: &str, lab: std::sync::Arc<Lab>) -> Running {
        let spec = pipeline_harness::spec(&spec_yaml(hispeed));
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let config = PipelineConfig {
            backends: lab.backends(),
            reset_path: Some(sock),
            fence_kdump: None,
            reset_log: LogSink::discard(),
            error_log: LogSink::discard(),
            monitor_expiry: secs(60),
            watch: None,
            state_dir: None,
            standing_by: false,
        };
        let (pipeline, thread) = Pipeline::start(spec, config).unwrap();
        let mut net = Net::new(addr);
        net.open("req01");
        // The requester checks in first: the connector acts only for registered monitors.
        net.send(
            "req01",
            Message::Check {
                system: "req01".into(),
                subsystem: 10,
                port: net.port("req01"),
                pair: None,
            },
        );
        net.wait_for(secs(2), |m| matches!(&m.msg, Message::CheckReply { .. }))
            .expect("a check reply");
        Running {
            lab,
            net,
            pipeline: Some(pipeline),
            thread: Some(thread),
        }
    }

    /// req01 asks for `target`'s reset; returns when it was accepted.
    fn request(r: &Running, req: u32, target: &str, sub: u32) {
        r.net.send(
            "req01",
            Message::Reset {
                req,
                system: "req01".into(),
                subsystem: 10,
                port: r.net.port("req01"),
                target_system: target.into(),
                target_subsystem: sub,
            },
        );
        let first = r
            .net
            .wait_for(
                secs(2),
                |m| matches!(&m.msg, Message::ResetReply { req: q, .. } if *q == req),
            )
            .expect("a reply");
        assert!(
            matches!(
                first.msg,
                Message::ResetReply {
                    result: ResetResult::Accepted,
                    ..
                }
            ),
            "{first:?}"
        );
    }

    fn final_reply(r: &Running, req: u32, limit: Duration) -> ResetResult {
        let got = r
            .net
            .wait_for(limit, |m| {
                matches!(&m.msg, Message::ResetReply { req: q, result, .. }
                    if *q == req && *result != ResetResult::Accepted)
            })
            .unwrap_or_else(|| panic!("a final reply to request {req}"));
        match got.msg {
            Message::ResetReply { result, .. } => result,
            _ => unreachable!(),
        }
    }

    /// When each simulator event happened, as a std Instant.
    fn when(r: &Running, want: &SimEvent) -> Vec<Instant> {
        r.lab
            .sim
            .calls()
            .into_iter()
            .filter(|(_, e)| e == want)
            .map(|(t, _)| t.into_std())
            .collect()
    }

    fn assert_close(what: &str, got: Duration, want: Duration) {
        // Timers never fire early; the pipeline and the simulator add a few milliseconds.
        assert!(
            got + ms(2) >= want && got <= want + ms(300),
            "{what}: {got:?}, expected {want:?}"
        );
    }

    /// hispeed 1000 for a physical server, 5000 ms for a guest, the iPDU timeout before
    /// the cut and the recovery time before the switch-on, a disabled iPDU block ignored,
    /// and (on a second pipeline) hispeed off = 5000 ms.
    #[test]
    fn pipeline_derives_timings_from_the_spec() {
        let lab = Lab::new();
        lab.rule(DeviceId::Bmc(ip("127.0.0.12")), Op::Hard, Behavior::Hangs);
        lab.rule(DeviceId::Bmc(ip("127.0.0.14")), Op::Hard, Behavior::Refuses);
        let fast = start("1000", lab);
        let slow = start("off", Lab::new());
        let t0 = Instant::now();
        request(&fast, 1, "plain01", 11);
        request(&fast, 2, "ipdu01", 12);
        request(&fast, 3, "vm01", 21);
        request(&fast, 4, "off01", 14);
        request(&slow, 5, "plain01", 11);

        assert_eq!(final_reply(&fast, 4, secs(3)), ResetResult::Fail);
        assert_eq!(final_reply(&fast, 1, secs(3)), ResetResult::Dump);
        assert_eq!(final_reply(&slow, 5, secs(7)), ResetResult::Dump);
        assert_eq!(final_reply(&fast, 3, secs(7)), ResetResult::Dump);
        assert_eq!(final_reply(&fast, 2, secs(8)), ResetResult::Dump);

        let plain = DeviceId::Bmc(ip("127.0.0.11"));
        let nmi = when(&fast, &SimEvent::Nmi(plain.clone()))[0];
        let hard = when(&fast, &SimEvent::HardReset(plain.clone()))[0];
        assert_close("plain01 hispeed 1000", hard - nmi, ms(1000));

        let nmi = when(&slow, &SimEvent::Nmi(plain.clone()))[0];
        let hard = when(&slow, &SimEvent::HardReset(plain))[0];
        assert_close("plain01 hispeed off", hard - nmi, ms(5000));

        let vm = DeviceId::Vm(ip("127.0.0.113"), "vm01".into());
        let nmi = when(&fast, &SimEvent::Nmi(vm.clone()))[0];
        let hard = when(&fast, &SimEvent::HardReset(vm))[0];
        assert_close("vm01 (guest, hispeed 1000)", hard - nmi, ms(5000));

        let ipdu = DeviceId::Bmc(ip("127.0.0.12"));
        let nmi = when(&fast, &SimEvent::Nmi(ipdu.clone()))[0];
        let hard = when(&fast, &SimEvent::HardReset(ipdu))[0];
        assert_close("ipdu01 hispeed", hard - nmi, ms(1000));
        let off = |o| SimEvent::Outlet {
            pdu: ip("127.0.0.21"),
            outlet: o,
            on: false,
        };
        let cut1 = when(&fast, &off(1))[0];
        let cut2 = when(&fast, &off(2))[0];
        assert_close("ipdu01 timeout", cut1 - hard, secs(5));
        assert_close(
            "ipdu01 cuts together",
            cut2.max(cut1) - cut1.min(cut2),
            ms(0),
        );

        // off01: its iPDU block is disabled, so a refused hard reset is FAIL, no cut.
        assert!(when(&fast, &off(3)).is_empty());

        // Recovery: back on 5 s after the cut; the pipeline keeps running it after DUMP.
        let on = |o| SimEvent::Outlet {
            pdu: ip("127.0.0.21"),
            outlet: o,
            on: true,
        };
        let deadline = Instant::now() + secs(7);
        while when(&fast, &on(2)).is_empty() && Instant::now() < deadline {
            std::thread::sleep(ms(50));
        }
        for o in [1, 2] {
            let back = when(&fast, &on(o));
            assert_eq!(back.len(), 1, "outlet {o} switched on once");
            assert_close(
                "ipdu01 recovery",
                back[0] - when(&fast, &off(o))[0],
                secs(5),
            );
        }
        assert!(t0.elapsed() < secs(15), "took {:?}", t0.elapsed());
    }
}

/// An operator's test soft reset (`haconn server reset`): the NMI, then up to 60 s for the
/// node's stop notice — one at 59 s still counts — and never a hard reset or a PDU cut,
/// whatever the hard-reset issue time.
#[tokio::test(start_paused = true)]
async fn an_operators_test_waits_60_s_for_the_stop_and_never_hard_resets() {
    let spec = lab_spec("1000", 30, true);
    for (agent, want) in [
        (Some(secs(59)), Outcome::Dumped),
        (
            None,
            Outcome::Failed("test soft reset: no stopped notification within 60000 ms".into()),
        ),
    ] {
        let sim = Arc::new(Sim::default());
        let (target, _) = physical(&spec, "node01");
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let keep = match agent {
            Some(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = stopped_tx.send(());
                });
                None
            }
            None => Some(stopped_tx),
        };
        let (steps_tx, _steps) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let outcome = reset::soft_test(
            target,
            reset::TEST_STOP_WINDOW,
            sim_backends(&sim),
            stopped_rx,
            steps_tx,
        )
        .await;
        drop(keep);
        assert_eq!(outcome, want);
        tokio::time::sleep(secs(120)).await;
        assert!(
            calls(&sim, t0)
                .iter()
                .all(|(_, e)| !matches!(e, SimEvent::HardReset(_) | SimEvent::Outlet { .. })),
            "{:?}",
            calls(&sim, t0)
        );
    }
}
