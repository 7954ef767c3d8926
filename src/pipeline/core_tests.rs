//! Tests of the reset core, in-process and in virtual time:
//! - tables of (state, input) → effects for every SPEC §2 branch and every rule of
//!   `core.rs`, including the five holes of issue 11 (each named where it is caught);
//! - an [`Oracle`] that checks the four fencing invariants of SPEC §2 on every step,
//!   from the inputs and effects alone (it keeps its own account of registrations,
//!   evidence and deadlines, and never reads the core's state);
//! - a property test over random event sequences whose generator includes wrong
//!   requester names, foreign source addresses, reused and repeated req#, stop notices
//!   before, during and after resets, fence_kdump from shared addresses, lying and late
//!   reset tasks, check-ins, restarts and reloads;
//! - an exhaustive breadth-first exploration of a small world (three systems, one pair,
//!   bounded event sequences), checking the oracle on every transition.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::pipeline::Counters;
use crate::pipeline::core::SyncedBusy;
use crate::pipeline::reset::Resume;
use crate::spec::model::OutletLink;
use crate::spec::{CheckOptions, check_bytes};

// --- the world ----------------------------------------------------------------------------

/// node01/node02: a mutual-standby pair (cluster on), node02 with PDU forced reset on two
/// outlets; node03 alone; esxi01 hosts vm01 (enabled); esxi02 hosts vm02 (disabled).
const SPEC: &str = "apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: none}
hispeed: 1000
snmp: {community: lab}
pdus:
  - {address: 127.0.2.1, model: IBM_PDU}
managementServers:
  - name: ms1
    bmc: {address: 127.0.0.2, username: admin, password: passw0rd}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - name: node01
    bmc: {address: 127.0.1.1, username: admin, password: passw0rd}
    cluster: true
  - name: node02
    bmc: {address: 127.0.1.2, username: admin, password: passw0rd}
    cluster: true
    ipdu: {timeout: 10, recoveryTime: 0, outlets: [{pdu: 127.0.2.1, outlet: 1}, {pdu: 127.0.2.1, outlet: 2}]}
  - name: node03
    bmc: {address: 127.0.1.3, username: admin, password: passw0rd}
  - name: esxi01
    bmc: {address: 127.0.1.4, username: admin, password: passw0rd}
    esxi: {address: 127.0.3.1, username: root, password: esxipass, hostKey: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', guests: [vm01]}
  - name: esxi02
    bmc: {address: 127.0.1.5, username: admin, password: passw0rd}
    esxi: {address: 127.0.3.2, username: root, password: esxipass, enabled: false, hostKey: 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA', guests: [vm02]}
";

fn spec_of(text: &str) -> Arc<Spec> {
    let c = check_bytes(text.as_bytes(), CheckOptions::default());
    Arc::new(
        c.spec
            .unwrap_or_else(|| panic!("test spec invalid: {:?}", c.diagnostics)),
    )
}

fn spec() -> Arc<Spec> {
    thread_local! {
        static SPEC_CACHE: Arc<Spec> = spec_of(SPEC);
    }
    SPEC_CACHE.with(Arc::clone)
}

/// The world's other spec, for reloads: node01's cluster flag, node02's PDU timeout and
/// node03's BMC password change.
fn spec_b() -> Arc<Spec> {
    thread_local! {
        static SPEC_B: Arc<Spec> = spec_of(
            &SPEC
                .replace("ipdu: {timeout: 10,", "ipdu: {timeout: 20,")
                .replacen("    cluster: true\n  - name: node02", "    cluster: false\n  - name: node02", 1)
                .replace(
                    "bmc: {address: 127.0.1.3, username: admin, password: passw0rd}",
                    "bmc: {address: 127.0.1.3, username: admin, password: passw0rd2}",
                ),
        );
    }
    SPEC_B.with(Arc::clone)
}

/// The node of each system has its own address: node0N at 127.0.10.N, vm01 at .4.
fn ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 10, n))
}

fn home(system: &str) -> u8 {
    match system {
        "node01" => 1,
        "node02" => 2,
        "node03" => 3,
        "vm01" => 4,
        "vm02" => 5,
        _ => 9,
    }
}

fn subsystem_of(system: &str) -> u32 {
    u32::from(home(system))
}

/// Where a monitor listens.
fn port_of(n: u8) -> u16 {
    20_000 + u16::from(n)
}

fn from(n: u8) -> SocketAddr {
    SocketAddr::new(ip(n), 40_000 + u16::from(n))
}

fn ok_verdict() -> Verdict {
    Verdict {
        resettable: true,
        via: "bmc",
        problem: None,
        warning: None,
    }
}

fn outlet(n: u16) -> OutletLink {
    OutletLink {
        pdu: "127.0.2.1".parse().unwrap(),
        outlet: n,
    }
}

fn check_input(system: &str, at: u8) -> Input {
    Input::Check {
        from: from(at),
        system: system.into(),
        subsystem: subsystem_of(system),
        port: port_of(at),
        pair: match system {
            "node01" | "node02" => Some(1),
            _ => None,
        },
        verdict: ok_verdict(),
    }
}

fn reset_input(at: u8, req: u32, system: &str, target: &str) -> Input {
    Input::Reset {
        from: from(at),
        req,
        system: system.into(),
        subsystem: subsystem_of(system),
        port: port_of(at),
        target: target.into(),
        target_subsystem: subsystem_of(target),
    }
}

fn stopped_input(at: u8, system: &str) -> Input {
    Input::Stopped {
        from: from(at),
        system: system.into(),
        subsystem: subsystem_of(system),
    }
}

/// A core in virtual time.
struct World {
    core: Core,
    t0: Instant,
    now: Instant,
}

impl World {
    fn new() -> World {
        let t0 = Instant::now();
        World {
            core: Core::new(spec(), CoreConfig::default(), Arc::new(Counters::default())),
            t0,
            now: t0,
        }
    }

    fn input(&mut self, i: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.core.handle(self.now, i, &mut out);
        out
    }

    fn check(&mut self, system: &str) -> Vec<Effect> {
        self.input(check_input(system, home(system)))
    }

    fn reset(&mut self, req: u32, system: &str, target: &str) -> Vec<Effect> {
        self.input(reset_input(home(system), req, system, target))
    }

    fn step(&mut self, id: ResetId, step: Step) -> Vec<Effect> {
        self.input(Input::Step { id, step })
    }

    fn done(&mut self, id: ResetId, outcome: Outcome) -> Vec<Effect> {
        self.input(Input::Done { id, outcome })
    }

    fn advance(&mut self, d: Duration) -> Vec<Effect> {
        self.now += d;
        self.input(Input::Tick)
    }

    /// node01 and node02 checked in; node01 asks for node02's reset, req 7.
    fn node02_reset_started() -> (World, ResetId) {
        let mut w = World::new();
        w.check("node01");
        w.check("node02");
        w.check("node03");
        let e = w.reset(7, "node01", "node02");
        assert_eq!(results(&e), vec![ResetResult::Accepted]);
        (w, started(&e).expect("a reset started").0)
    }
}

fn results(e: &[Effect]) -> Vec<ResetResult> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Reply {
                msg: Message::ResetReply { result, .. },
                ..
            } => Some(*result),
            _ => None,
        })
        .collect()
}

fn reasons(e: &[Effect]) -> Vec<String> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Reply {
                msg: Message::ResetReply { reason, .. },
                ..
            } => reason.clone(),
            _ => None,
        })
        .collect()
}

fn started(e: &[Effect]) -> Option<(ResetId, String)> {
    e.iter().find_map(|e| match e {
        Effect::Start { id, system, .. } => Some((*id, system.clone())),
        _ => None,
    })
}

fn attentions(e: &[Effect]) -> Vec<AttentionState> {
    e.iter()
        .filter_map(|e| match e {
            Effect::Attention(f) => Some(f.state),
            _ => None,
        })
        .collect()
}

fn logs(e: &[Effect]) -> Vec<&str> {
    e.iter()
        .filter_map(|e| match e {
            Effect::ResetLog(l) | Effect::ErrorLog(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}

fn signalled(e: &[Effect]) -> bool {
    e.iter().any(|e| matches!(e, Effect::Stopped { .. }))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// node02's reset through NMI, a stop notice from node02's address, and the claim.
fn dump_node02(w: &mut World, id: ResetId) -> Vec<Effect> {
    w.step(id, Step::NmiIssued);
    let e = w.input(stopped_input(2, "node02"));
    assert!(signalled(&e), "{e:#?}");
    w.done(id, Outcome::Dumped)
}

// --- table tests: SPEC §2 -----------------------------------------------------------------

#[test]
fn spec_2_step_1_refusals_fail_or_error_and_start_nothing() {
    use ResetResult::Error;
    struct Case {
        name: &'static str,
        input: Input,
        want: ResetResult,
        reason: &'static str,
    }
    let cases = [
        Case {
            name: "unknown requester",
            input: reset_input(9, 1, "ghost01", "node02"),
            want: Error,
            reason: "unknown requester",
        },
        Case {
            name: "requester never checked in",
            input: reset_input(3, 1, "node03", "node02"),
            want: Error,
            reason: "has not registered",
        },
        Case {
            name: "requester speaking from another node's address",
            input: reset_input(2, 1, "node01", "node03"),
            want: Error,
            reason: "registered at 127.0.10.1",
        },
        Case {
            name: "requester with the wrong subsystem#",
            input: Input::Reset {
                from: from(1),
                req: 1,
                system: "node01".into(),
                subsystem: 9,
                port: port_of(1),
                target: "node02".into(),
                target_subsystem: 2,
            },
            want: Error,
            reason: "requester is registered as subsystem 1, not 9",
        },
        Case {
            name: "unknown target",
            input: reset_input(1, 1, "node01", "ghost01"),
            want: Error,
            reason: "unknown target",
        },
        Case {
            name: "own reset",
            input: reset_input(1, 1, "node01", "node01"),
            want: Error,
            reason: "its own reset",
        },
        Case {
            name: "target with the wrong subsystem#",
            input: Input::Reset {
                from: from(1),
                req: 1,
                system: "node01".into(),
                subsystem: 1,
                port: port_of(1),
                target: "node02".into(),
                target_subsystem: 5,
            },
            want: Error,
            reason: "target is registered as subsystem 2, not 5",
        },
        Case {
            name: "guest whose ESXi management is disabled",
            input: reset_input(1, 1, "node01", "vm02"),
            want: Error,
            reason: "ESXi management is disabled",
        },
        Case {
            name: "a name that is not a name",
            input: reset_input(
                1,
                1,
                "node01",
                "node02\n[2026/01/01 00:00:00:000000] RM-RESET x",
            ),
            want: Error,
            reason: "unknown target",
        },
    ];
    for c in cases {
        let mut w = World::new();
        w.check("node01");
        w.check("node02");
        let Input::Reset { from, .. } = &c.input else {
            unreachable!()
        };
        // Only node01's and node02's addresses are registered: a refusal of a datagram
        // from anywhere else is logged, not sent (see the reply-address table).
        let to_monitor = [ip(1), ip(2)].contains(&from.ip());
        let e = w.input(c.input);
        if to_monitor {
            assert_eq!(results(&e), vec![c.want], "{}: {e:#?}", c.name);
            assert!(
                reasons(&e)[0].contains(c.reason),
                "{}: reason {:?}",
                c.name,
                reasons(&e)
            );
        } else {
            assert!(results(&e).is_empty(), "{}: {e:#?}", c.name);
        }
        let word = format!("({})", result_word(c.want));
        assert!(
            logs(&e)
                .iter()
                .any(|l| l.contains(c.reason) && l.contains(&word)),
            "{}: the refusal is logged: {e:#?}",
            c.name
        );
        assert!(started(&e).is_none(), "{}: nothing may start", c.name);
        for l in logs(&e) {
            assert!(
                !l.contains('\n'),
                "{}: a log line holds a newline: {l:?}",
                c.name
            );
        }
    }
}

/// Issue 12 item 5: replies go only to registered monitors' addresses, or to a check's
/// source. A refusal or a stop acknowledgement for a datagram from any other address is
/// counted and not sent; a legitimate monitor (registered, speaking from its address) is
/// always answered.
#[test]
fn replies_go_only_to_registered_monitors_or_to_a_checks_source() {
    struct Case {
        name: &'static str,
        input: Input,
        /// Where the one reply goes; `None`: no reply.
        to: Option<SocketAddr>,
        signer: &'static str,
    }
    let stranger = SocketAddr::new(ip(7), 40_007);
    let cases = [
        Case {
            name: "check of a known system from anywhere",
            input: check_input("node03", 7),
            to: Some(SocketAddr::new(ip(7), port_of(7))),
            signer: "node03",
        },
        Case {
            name: "check of an unknown system: answered at its source",
            input: check_input("ghost01", 7),
            to: Some(SocketAddr::new(ip(7), port_of(7))),
            signer: "ghost01",
        },
        Case {
            name: "admitted request from the requester's registered address",
            input: reset_input(1, 1, "node01", "node03"),
            to: Some(SocketAddr::new(ip(1), port_of(1))),
            signer: "node01",
        },
        Case {
            name: "refusal at a registered address (another system's)",
            input: reset_input(2, 1, "node01", "node03"),
            to: Some(SocketAddr::new(ip(2), port_of(2))),
            signer: "node01",
        },
        Case {
            name: "refusal to a foreign source: requester registered elsewhere",
            input: reset_input(7, 1, "node01", "node03"),
            to: None,
            signer: "",
        },
        Case {
            name: "refusal to a foreign source: requester never registered",
            input: reset_input(7, 1, "node03", "node01"),
            to: None,
            signer: "",
        },
        Case {
            name: "refusal to a foreign source: unknown requester",
            input: reset_input(7, 1, "ghost01", "node01"),
            to: None,
            signer: "",
        },
        Case {
            name: "stop notice from a registered address: acknowledged",
            input: stopped_input(2, "node02"),
            to: Some(from(2)),
            signer: "node02",
        },
        Case {
            name: "stop notice from a foreign source: not acknowledged",
            input: Input::Stopped {
                from: stranger,
                system: "node02".into(),
                subsystem: 2,
            },
            to: None,
            signer: "",
        },
    ];
    for c in cases {
        let mut w = World::new();
        w.check("node01");
        w.check("node02");
        let before = w.core.counters.replies_unregistered.load(Ordering::Relaxed);
        let e = w.input(c.input);
        let replies: Vec<(SocketAddr, &str)> = e
            .iter()
            .filter_map(|e| match e {
                Effect::Reply { to, signer, .. } => Some((*to, signer.as_str())),
                _ => None,
            })
            .collect();
        let unsent = w.core.counters.replies_unregistered.load(Ordering::Relaxed) - before;
        match c.to {
            Some(to) => {
                assert_eq!(replies, vec![(to, c.signer)], "{}", c.name);
                assert_eq!(unsent, 0, "{}", c.name);
            }
            None => {
                assert!(replies.is_empty(), "{}: {replies:?}", c.name);
                assert_eq!(unsent, 1, "{}: counted", c.name);
                assert!(started(&e).is_none(), "{}", c.name);
            }
        }
    }
}

#[test]
fn spec_2_step_2_crossing_requests_of_a_pair_exactly_one_runs() {
    let (mut w, _) = World::node02_reset_started();
    let e = w.reset(8, "node02", "node01");
    assert_eq!(results(&e), vec![ResetResult::Fail]);
    assert!(
        reasons(&e)[0].contains("pair partner's reset won"),
        "{e:#?}"
    );
    assert!(started(&e).is_none());
}

#[test]
fn spec_2_step_3_power_off_is_poff_only_with_the_power_read_of_this_reset() {
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::PowerOff);
    let e = w.done(id, Outcome::PowerOff);
    assert_eq!(results(&e), vec![ResetResult::Poff]);
    assert_eq!(attentions(&e), vec![AttentionState::Poff]);
}

#[test]
fn spec_2_step_4_stop_after_the_nmi_is_dump() {
    let (mut w, id) = World::node02_reset_started();
    let e = dump_node02(&mut w, id);
    assert_eq!(results(&e), vec![ResetResult::Dump]);
    assert_eq!(attentions(&e), vec![AttentionState::Dump]);
    // The attention goes to the requester with its req#, and to node03; not to node02.
    let Some(Effect::Attention(f)) = e.iter().find(|e| matches!(e, Effect::Attention(_))) else {
        unreachable!()
    };
    assert_eq!(f.to[0].req, Some(7));
    assert!(f.to.iter().any(|d| d.addr.ip() == ip(3)));
    assert!(!f.to.iter().any(|d| d.addr.ip() == ip(2)));
}

#[test]
fn spec_2_step_5_and_6_reboot_needs_the_ack_or_every_outlet_cut() {
    // Hard reset acknowledged.
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::NmiIssued);
    w.step(id, Step::HardSent);
    w.step(id, Step::HardAcked);
    let e = w.done(id, Outcome::Rebooted);
    assert_eq!(results(&e), vec![ResetResult::Dump]);
    assert_eq!(attentions(&e), vec![AttentionState::Reboot]);

    // Every outlet cut.
    let (mut w, id) = World::node02_reset_started();
    for o in [1, 2] {
        w.step(
            id,
            Step::OutletOff {
                link: outlet(o),
                result: Ok(()),
            },
        );
    }
    let e = w.done(id, Outcome::Rebooted);
    assert_eq!(results(&e), vec![ResetResult::Dump]);

    // One outlet of two: the task's claim is not believed.
    let (mut w, id) = World::node02_reset_started();
    w.step(
        id,
        Step::OutletOff {
            link: outlet(1),
            result: Ok(()),
        },
    );
    w.step(
        id,
        Step::OutletOff {
            link: outlet(2),
            result: Err("timeout".into()),
        },
    );
    let e = w.done(id, Outcome::Rebooted);
    assert_eq!(results(&e), vec![ResetResult::Fail]);
    assert!(attentions(&e).is_empty());
}

#[test]
fn spec_2_step_7_failure_is_fail_and_no_attention() {
    let (mut w, id) = World::node02_reset_started();
    let e = w.done(id, Outcome::Failed("hard reset failed".into()));
    assert_eq!(results(&e), vec![ResetResult::Fail]);
    assert!(attentions(&e).is_empty());
    let v = &w.core.monitor_views(w.now, |_| None)[1];
    assert_eq!((v.state, v.detail), ("normal", "failed"));
}

#[test]
fn a_task_that_claims_an_outcome_without_its_evidence_gets_fail() {
    for (prep, claim) in [
        (vec![Step::NmiIssued], Outcome::Dumped),
        (vec![], Outcome::PowerOff),
        (vec![Step::NmiIssued, Step::HardSent], Outcome::Rebooted),
    ] {
        let (mut w, id) = World::node02_reset_started();
        for s in prep {
            w.step(id, s);
        }
        let e = w.done(id, claim.clone());
        assert_eq!(results(&e), vec![ResetResult::Fail], "claim {claim:?}");
        assert!(attentions(&e).is_empty());
        assert!(logs(&e).iter().any(|l| l.contains("without the event")));
    }
}

#[test]
fn every_accepted_request_is_answered_by_the_reset_deadline() {
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::NmiIssued);
    // 5 s power + 1 s hispeed + 2 × 10 s + 5 s margin = 31 s.
    assert!(results(&w.advance(secs(30))).is_empty());
    let e = w.advance(secs(1));
    assert_eq!(results(&e), vec![ResetResult::Fail]);
    assert!(e.contains(&Effect::Cancel { id }));
    // The task's late claim changes nothing.
    w.step(id, Step::HardSent);
    w.step(id, Step::HardAcked);
    assert!(results(&w.done(id, Outcome::Rebooted)).is_empty());
}

// --- table tests: SPEC §8, `show hamonitor` ----------------------------------------------

/// The manual's monitor states: `error` only when the system cannot be reset now (the
/// watch's word), never for a failed last reset; a completed hard reset is `dump`, its
/// finer state kept in `detail`; a reset in flight or just done wins over the links.
#[test]
fn spec_8_monitor_states_follow_the_manual() {
    struct Case {
        name: &'static str,
        world: fn() -> World,
        ng: bool,
        want: (&'static str, &'static str),
    }
    fn checked() -> World {
        let mut w = World::new();
        w.check("node01");
        w.check("node02");
        w
    }
    fn expired() -> World {
        let mut w = checked();
        w.advance(secs(61));
        w
    }
    fn resetting() -> World {
        World::node02_reset_started().0
    }
    fn dumped() -> World {
        let (mut w, id) = World::node02_reset_started();
        dump_node02(&mut w, id);
        w
    }
    fn rebooted() -> World {
        let (mut w, id) = World::node02_reset_started();
        w.step(id, Step::NmiIssued);
        w.step(id, Step::HardSent);
        w.step(id, Step::HardAcked);
        w.done(id, Outcome::Rebooted);
        w
    }
    fn powered_off() -> World {
        let (mut w, id) = World::node02_reset_started();
        w.step(id, Step::PowerOff);
        w.done(id, Outcome::PowerOff);
        w
    }
    fn failed() -> World {
        let (mut w, id) = World::node02_reset_started();
        w.done(id, Outcome::Failed("hard reset failed".into()));
        w
    }
    let cases = [
        Case {
            name: "checking, links OK",
            world: checked,
            ng: false,
            want: ("normal", "normal"),
        },
        Case {
            name: "checking, BMC NG, no PDU path",
            world: checked,
            ng: true,
            want: ("error", "normal"),
        },
        Case {
            name: "monitor stopped checking",
            world: expired,
            ng: false,
            want: ("----", "expired"),
        },
        Case {
            name: "monitor stopped, BMC NG",
            world: expired,
            ng: true,
            want: ("error", "expired"),
        },
        Case {
            name: "being reset",
            world: resetting,
            ng: false,
            want: ("reset", "reset"),
        },
        Case {
            name: "being reset, BMC NG",
            world: resetting,
            ng: true,
            want: ("reset", "reset"),
        },
        Case {
            name: "stop notice received",
            world: dumped,
            ng: false,
            want: ("dump", "dump"),
        },
        Case {
            name: "hard reset done",
            world: rebooted,
            ng: false,
            want: ("dump", "reboot"),
        },
        Case {
            name: "hard reset done, BMC NG",
            world: rebooted,
            ng: true,
            want: ("dump", "reboot"),
        },
        Case {
            name: "power off",
            world: powered_off,
            ng: false,
            want: ("poff", "poff"),
        },
        Case {
            name: "last reset failed, links OK",
            world: failed,
            ng: false,
            want: ("normal", "failed"),
        },
        Case {
            name: "last reset failed, BMC NG",
            world: failed,
            ng: true,
            want: ("error", "failed"),
        },
    ];
    for c in cases {
        let w = (c.world)();
        let views = w.core.monitor_views(w.now, |s| {
            (c.ng && s == "node02").then(|| "BMC: timeout".to_string())
        });
        let v = views
            .iter()
            .find(|v| v.system == "node02")
            .unwrap_or_else(|| panic!("{}: no view of node02", c.name));
        assert_eq!((v.state, v.detail), c.want, "{}", c.name);
        assert_eq!(
            v.unresettable.as_deref(),
            (c.want.0 == "error").then_some("BMC: timeout"),
            "{}",
            c.name
        );
        assert!(views.iter().all(|v| v.state != "reboot"), "{}", c.name);
    }
}

/// pair# is shown only when the server's `cluster` flag is on: node03 (cluster off)
/// reports a pair in its check, and it is not shown.
#[test]
fn spec_8_pair_shows_only_with_the_cluster_flag() {
    let mut w = World::new();
    w.check("node02");
    let Input::Check {
        from,
        system,
        subsystem,
        port,
        verdict,
        ..
    } = check_input("node03", home("node03"))
    else {
        unreachable!()
    };
    w.input(Input::Check {
        from,
        system,
        subsystem,
        port,
        pair: Some(9),
        verdict,
    });
    let views = w.core.monitor_views(w.now, |_| None);
    let pair = |s: &str| views.iter().find(|v| v.system == s).map(|v| v.pair);
    assert_eq!(pair("node02"), Some(Some(1)));
    assert_eq!(pair("node03"), Some(None));
}

// --- table tests: the holes of issue 11 ---------------------------------------------------

/// Issue 11 item 1: a request number used again after the target came back acts anew.
#[test]
fn item1_a_reused_req_after_the_target_checked_in_resets_again() {
    let (mut w, id) = World::node02_reset_started();
    dump_node02(&mut w, id);
    w.advance(secs(2));
    w.check("node02"); // node02 rebooted, its monitor is back
    let e = w.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    let (id2, _) = started(&e).expect("a new reset, not DUMP from memory");
    assert_ne!(id, id2);
}

/// Issue 11 item 2: "already reset" never answers from memory.
#[test]
fn item2_a_new_request_after_a_reset_acts_on_the_hardware() {
    let (mut w, id) = World::node02_reset_started();
    dump_node02(&mut w, id);
    // node02's monitor never comes back; a day later, another request.
    w.advance(secs(86_400));
    let e = w.reset(9, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted]);
    assert!(started(&e).is_some(), "it acts: {e:#?}");
    assert!(attentions(&e).is_empty());
    // And a minute after a reset, a new req# acts too.
    let (mut w, id) = World::node02_reset_started();
    dump_node02(&mut w, id);
    w.advance(secs(60));
    let e = w.reset(8, "node01", "node02");
    assert!(started(&e).is_some());
}

#[test]
fn a_retransmission_is_answered_again_only_in_the_window() {
    let (mut w, id) = World::node02_reset_started();
    // In flight: ACCEPTED again, nothing more.
    let e = w.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted]);
    assert!(started(&e).is_none());
    dump_node02(&mut w, id);
    w.advance(secs(10));
    let e = w.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Dump], "within 10 s");
    assert!(started(&e).is_none() && attentions(&e).is_empty());
    w.advance(secs(1));
    let e = w.reset(7, "node01", "node02");
    assert!(
        started(&e).is_some(),
        "after the window it is a new request"
    );
}

/// Issue 11 item 3: a stop notice counts only after this reset's NMI was issued.
#[test]
fn item3_a_stop_notice_before_the_reset_changes_nothing() {
    let mut w = World::new();
    w.check("node01");
    w.check("node02");
    let e = w.input(stopped_input(2, "node02"));
    assert!(matches!(
        e[0],
        Effect::Reply {
            msg: Message::StoppedAck { .. },
            ..
        }
    ));
    let e = w.reset(7, "node01", "node02");
    let (id, _) = started(&e).unwrap();
    w.step(id, Step::NmiIssued);
    let e = w.done(id, Outcome::Dumped);
    assert_eq!(
        results(&e),
        vec![ResetResult::Fail],
        "no DUMP from an early notice"
    );
}

#[test]
fn a_stop_notice_counts_only_between_the_nmi_and_the_hard_reset_from_its_address() {
    // Before the NMI.
    let (mut w, id) = World::node02_reset_started();
    assert!(!signalled(&w.input(stopped_input(2, "node02"))));
    // From another node's address.
    w.step(id, Step::NmiIssued);
    assert!(!signalled(&w.input(stopped_input(3, "node02"))));
    // Wrong subsystem.
    let e = w.input(Input::Stopped {
        from: from(2),
        system: "node02".into(),
        subsystem: 3,
    });
    assert!(!signalled(&e));
    // After the hard reset was issued.
    w.step(id, Step::HardSent);
    assert!(!signalled(&w.input(stopped_input(2, "node02"))));
    // The right one, in time.
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::NmiIssued);
    let e = w.input(stopped_input(2, "node02"));
    assert!(e.contains(&Effect::Stopped { id }));
    assert!(
        logs(&e)
            .iter()
            .any(|l| l.starts_with("ATTENTION node02 2 RECV 127.0.10.2 "))
    );
}

#[test]
fn unexpected_stop_notices_are_logged_once_a_minute_per_system() {
    let mut w = World::new();
    w.check("node02");
    let mut lines = 0;
    for _ in 0..1000 {
        lines += logs(&w.input(stopped_input(2, "node02"))).len();
        w.now += Duration::from_millis(50);
    }
    assert_eq!(lines, 1, "50 s of notices");
    w.now += secs(11);
    assert_eq!(logs(&w.input(stopped_input(2, "node02"))).len(), 1);
}

/// Issue 11 item 4: the requester is bound to its registration, and a node being reset
/// gets nothing reset under any name.
#[test]
fn item4_a_node_being_reset_cannot_reset_its_partner_under_another_name() {
    let (mut w, _) = World::node02_reset_started();
    // node02 (being reset) names node03 as the requester, from node02's address.
    let e = w.input(reset_input(2, 1, "node03", "node01"));
    assert_ne!(results(&e), vec![ResetResult::Accepted]);
    assert!(started(&e).is_none());
    // node02 registers node03 at its own address, then asks as node03.
    w.input(check_input("node03", 2));
    let e = w.input(reset_input(2, 2, "node03", "node01"));
    assert_eq!(results(&e), vec![ResetResult::Fail], "{e:#?}");
    assert!(reasons(&e)[0].contains("node02, which is being reset"));
    assert!(started(&e).is_none());
}

#[test]
fn a_node_being_reset_keeps_its_registered_address() {
    let (mut w, id) = World::node02_reset_started();
    w.input(check_input("node02", 3)); // someone re-registers node02 at node03's address
    w.step(id, Step::NmiIssued);
    assert!(!signalled(&w.input(stopped_input(3, "node02"))));
    assert!(signalled(&w.input(stopped_input(2, "node02"))));
}

#[test]
fn fence_kdump_maps_to_the_one_system_being_reset_at_its_address() {
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::NmiIssued);
    // From node03's address: nobody being reset there.
    assert!(!signalled(&w.input(Input::FenceKdump { from: from(3) })));
    let e = w.input(Input::FenceKdump { from: from(2) });
    assert!(e.contains(&Effect::Stopped { id }));

    // Two systems being reset at one address: ambiguous, refused.
    let mut w = World::new();
    w.check("node01");
    w.input(check_input("node02", 5));
    w.input(check_input("node03", 5));
    let a = started(&w.reset(1, "node01", "node02")).unwrap().0;
    let b = started(&w.reset(2, "node01", "node03")).unwrap().0;
    w.step(a, Step::NmiIssued);
    w.step(b, Step::NmiIssued);
    let e = w.input(Input::FenceKdump { from: from(5) });
    assert!(!signalled(&e));
    assert!(logs(&e).iter().any(|l| l.contains("ambiguous")));
}

/// Issue 11 item 5: what the network can make the core keep or log is bounded.
#[test]
fn item5_network_input_is_never_stored_and_its_log_lines_are_capped() {
    let mut w = World::new();
    w.check("node01");
    let mut lines = 0;
    for i in 0..20_000u32 {
        let name = format!("ghost{i}");
        let mut e = w.input(Input::Check {
            from: from(9),
            system: name.clone(),
            subsystem: i,
            port: 1,
            pair: None,
            verdict: ok_verdict(),
        });
        e.extend(w.input(reset_input(1, i, "node01", &name)));
        e.extend(w.input(reset_input(9, i, &name, "node01")));
        e.extend(w.input(Input::Stopped {
            from: from(9),
            system: format!("{name}\nforged line"),
            subsystem: 1,
        }));
        lines += logs(&e).len();
        assert!(logs(&e).iter().all(|l| !l.contains('\n')));
        w.now += Duration::from_micros(100);
    }
    assert_eq!(w.core.entries(), 1, "only node01 has an entry");
    assert_eq!(w.core.remembered_requests(), 0);
    // 2 s of flood: each budget's burst plus what refills in that time.
    assert!(lines < 500, "{lines} log lines for 80 000 datagrams");
}

#[test]
fn the_request_cache_is_bounded_per_requester() {
    let mut w = World::new();
    w.check("node01");
    w.check("node03");
    for req in 0..1000 {
        w.reset(req, "node01", "node03");
        w.reset(req, "node01", "node02");
    }
    assert!(w.core.remembered_requests() <= crate::pipeline::requests::PER_REQUESTER);
}

#[test]
fn a_reset_node_is_back_when_it_checks_in_or_after_the_away_time() {
    let (mut w, id) = World::node02_reset_started();
    dump_node02(&mut w, id);
    // Reset and away: it may not ask for resets.
    let e = w.reset(1, "node02", "node01");
    assert_eq!(results(&e), vec![ResetResult::Error]);
    w.advance(AWAY_EXPIRY);
    let e = w.reset(2, "node02", "node01");
    assert_eq!(results(&e), vec![ResetResult::Accepted]);
}

#[test]
fn reload_guards_and_the_table_follow_the_spec() {
    let (mut w, _) = World::node02_reset_started();
    let guard = Guard {
        change: 0,
        systems: vec!["node02".into()],
        needs_no_monitor: false,
    };
    assert_eq!(w.core.commit(w.now, spec(), &[guard]).unwrap_err(), vec![0]);
    // node03 leaves the spec: its entry goes.
    let smaller = spec_of(&SPEC.replace(
        "  - name: node03\n    bmc: {address: 127.0.1.3, username: admin, password: passw0rd}\n",
        "",
    ));
    assert!(w.core.commit(w.now, smaller, &[]).is_ok());
    assert!(w.core.system("node03").is_none());
    assert!(w.core.system("node02").is_some(), "being reset: kept");
}

#[test]
fn an_operator_test_is_a_soft_reset_of_a_known_idle_system() {
    let mut w = World::new();
    w.check("node03");
    let mut out = Vec::new();
    assert!(w.core.test_reset(w.now, "ghost", 1, &mut out).is_err());
    assert!(w.core.test_reset(w.now, "node03", 9, &mut out).is_err());
    let id = w.core.test_reset(w.now, "node03", 3, &mut out).unwrap();
    assert!(matches!(&out[0], Effect::Start { test: true, .. }));
    assert!(w.core.test_reset(w.now, "node03", 3, &mut out).is_err());
    w.step(id, Step::NmiIssued);
    w.input(stopped_input(3, "node03"));
    let e = w.done(id, Outcome::Dumped);
    assert_eq!(attentions(&e), vec![AttentionState::Dump]);
}

fn test_ended(e: &[Effect]) -> Vec<(ResetId, TestOutcome)> {
    e.iter()
        .filter_map(|e| match e {
            Effect::TestEnded { id, outcome } => Some((*id, outcome.clone())),
            _ => None,
        })
        .collect()
}

/// Issue 18.4: an operator's test reset ends with exactly one `TestEnded`, whose outcome
/// comes from the core's evidence (a task's claim without it is not believed), and a
/// monitor's request never has one.
#[test]
fn an_operator_test_reports_how_it_ended_from_the_evidence() {
    enum Do {
        Task(Step),
        /// node03's stop notice from its registered address.
        StopNotice,
        Done(Outcome),
        After(u64),
        TaskEnded,
    }
    use Do::*;
    let nmi_error = "BMC 127.0.1.3: no answer in 5 s".to_string();
    let no_stop = || Outcome::Failed("test soft reset: no stopped notification".into());
    let cases: Vec<(&str, Vec<Do>, TestOutcome)> = vec![
        (
            "NMI acknowledged, then the stop notice",
            vec![
                Task(Step::NmiIssued),
                Task(Step::SoftAcked),
                StopNotice,
                Task(Step::Stopped),
                Done(Outcome::Dumped),
            ],
            TestOutcome::Stopped { from: Some(ip(3)) },
        ),
        (
            "already powered off",
            vec![Task(Step::PowerOff), Done(Outcome::PowerOff)],
            TestOutcome::PoweredOff,
        ),
        (
            "the NMI failed",
            vec![
                Task(Step::NmiIssued),
                Task(Step::SoftFailed(nmi_error.clone())),
                Done(Outcome::Failed(format!(
                    "test soft reset: NMI failed: {nmi_error}"
                ))),
            ],
            TestOutcome::NmiFailed(nmi_error.clone()),
        ),
        (
            "NMI acknowledged, no stop notice in the window",
            vec![
                Task(Step::NmiIssued),
                Task(Step::SoftAcked),
                After(60),
                Done(no_stop()),
            ],
            TestOutcome::NoStopNotice,
        ),
        (
            "a stop notice before the NMI does not count",
            vec![
                StopNotice,
                Task(Step::NmiIssued),
                Task(Step::SoftAcked),
                Done(no_stop()),
            ],
            TestOutcome::NoStopNotice,
        ),
        (
            "a claimed dump without the stop notice",
            vec![
                Task(Step::NmiIssued),
                Task(Step::SoftAcked),
                Done(Outcome::Dumped),
            ],
            TestOutcome::NoStopNotice,
        ),
        (
            "a claimed power off without the power read",
            vec![Done(Outcome::PowerOff)],
            TestOutcome::Failed("the reset could not be confirmed".into()),
        ),
        (
            "nothing by the deadline",
            vec![Task(Step::NmiIssued), After(80)],
            TestOutcome::Failed("no outcome by the reset's deadline: abandoned".into()),
        ),
        (
            "the task stopped before the NMI",
            vec![TaskEnded],
            TestOutcome::Failed("the reset task stopped without an outcome".into()),
        ),
    ];
    for (name, script, expected) in cases {
        let mut w = World::new();
        w.check("node03");
        let mut out = Vec::new();
        let id = w.core.test_reset(w.now, "node03", 3, &mut out).unwrap();
        let mut ended = test_ended(&out);
        for d in script {
            let e = match d {
                Task(s) => w.step(id, s),
                StopNotice => w.input(stopped_input(3, "node03")),
                Done(o) => w.done(id, o),
                After(s) => w.advance(secs(s)),
                TaskEnded => w.input(Input::TaskEnded { id }),
            };
            ended.extend(test_ended(&e));
        }
        // Whatever comes later (the task's end, time) reports nothing more.
        ended.extend(test_ended(&w.input(Input::TaskEnded { id })));
        ended.extend(test_ended(&w.advance(secs(120))));
        assert_eq!(ended, vec![(id, expected)], "{name}");
    }

    // A monitor's request, dumped or failed, never reports a test outcome.
    let (mut w, id) = World::node02_reset_started();
    assert!(test_ended(&dump_node02(&mut w, id)).is_empty());
    let (mut w, id) = World::node02_reset_started();
    w.step(id, Step::NmiIssued);
    assert!(test_ended(&w.done(id, Outcome::Failed("x".into()))).is_empty());
    assert!(test_ended(&w.advance(secs(600))).is_empty());
}

// --- the oracle ---------------------------------------------------------------------------

/// One reset as the oracle saw it.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Run {
    system: String,
    subsystem: Option<u32>,
    started: Duration,
    budget: Duration,
    outlets: Vec<OutletLink>,
    nmi: bool,
    hard_issued: bool,
    stop: bool,
    hard_acked: bool,
    cut: BTreeSet<OutletLink>,
    off: bool,
    ended: bool,
}

impl Run {
    fn proves(&self, state: AttentionState) -> bool {
        match state {
            AttentionState::Dump => self.stop,
            AttentionState::Reboot => {
                self.hard_acked
                    || (!self.outlets.is_empty()
                        && self.outlets.iter().all(|o| self.cut.contains(o)))
            }
            AttentionState::Poff => self.off,
        }
    }

    fn proves_result(&self, r: ResetResult) -> bool {
        match r {
            ResetResult::Dump => {
                self.proves(AttentionState::Dump) || self.proves(AttentionState::Reboot)
            }
            ResetResult::Poff => self.off,
            _ => true,
        }
    }
}

/// The four invariants of SPEC §2, checked from inputs and effects only. Times are kept
/// relative to the world's start.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct Oracle {
    /// Registration as the oracle understands it: checks from anywhere, except that a
    /// system being reset keeps its address.
    reg: BTreeMap<String, IpAddr>,
    checkins: BTreeMap<String, u64>,
    runs: BTreeMap<ResetId, Run>,
    /// The reset in flight per system.
    current: BTreeMap<String, ResetId>,
    /// Systems reset (or being reset) and not back: since when they ended (`None` while
    /// in flight).
    down: BTreeMap<String, Option<Duration>>,
    /// Accepted requests waiting for their final reply: (reply address, req, target,
    /// requester). Two systems may share a reply address and number their requests
    /// alike: each gets its own final reply.
    pending: BTreeMap<(SocketAddr, u32, String, String), ResetId>,
    /// Final replies: (result, when, the target's check-ins at that time).
    finals: BTreeMap<(SocketAddr, u32, String), (ResetResult, Duration, u64)>,
}

type Violation = String;

impl Oracle {
    fn running(&self, system: &str) -> Option<ResetId> {
        self.current
            .get(system)
            .copied()
            .filter(|id| !self.runs[id].ended)
    }

    fn end(&mut self, id: ResetId, at: Duration) {
        if let Some(r) = self.runs.get_mut(&id)
            && !r.ended
        {
            r.ended = true;
            self.down.insert(r.system.clone(), Some(at));
        }
    }

    /// One step: `input` at `at` (since the start) produced `effects`. `test` names the
    /// system of an operator's test reset when the step was one.
    fn observe(
        &mut self,
        spec: &Spec,
        at: Duration,
        input: &Input,
        test: Option<&str>,
        effects: &[Effect],
    ) -> Result<(), Violation> {
        // Expiry of "reset and away" happens on the core's tick, as the spec bounds it.
        if matches!(input, Input::Tick) {
            self.down
                .retain(|_, since| since.is_none_or(|t| at < t + AWAY_EXPIRY));
        }
        let starts: Vec<(ResetId, &String, &reset::Target, &reset::Timing)> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Start {
                    id,
                    system,
                    target,
                    timing,
                    ..
                } => Some((*id, system, target, timing)),
                _ => None,
            })
            .collect();
        if starts.len() > 1 {
            return Err("two resets started by one input".into());
        }
        // Invariant 1: a reset only on a request (or an operator's test) naming it.
        if let Some((id, system, target, timing)) = starts.first() {
            let asked = match input {
                Input::Reset { target: t, .. } => t == *system,
                _ => test == Some(system.as_str()),
            };
            if !asked {
                return Err(format!("reset of {system} started by {input:?}"));
            }
            if self.running(system).is_some() {
                return Err(format!("a second reset of {system} while one runs"));
            }
            // Invariant 2: never at the request of a node that is down, or from its address.
            if let Input::Reset {
                from, system: r, ..
            } = input
            {
                if self.down.contains_key(r.as_str()) {
                    return Err(format!("{r} is down and got {system} reset"));
                }
                if self.reg.get(r.as_str()) != Some(&from.ip()) {
                    return Err(format!("{r} is not registered at {from}"));
                }
                if let Some((d, _)) = self
                    .down
                    .iter()
                    .find(|(d, _)| self.reg.get(d.as_str()) == Some(&from.ip()))
                {
                    return Err(format!(
                        "{d} is down and its address {from} got {system} reset"
                    ));
                }
            }
            let outlets = match target {
                reset::Target::Physical { pdus, .. } => pdus.iter().map(|(l, _)| *l).collect(),
                reset::Target::Guest { .. } => Vec::new(),
            };
            let budget = if test.is_some() {
                reset::test_budget(timing)
            } else {
                reset::budget(timing)
            };
            self.runs.insert(
                *id,
                Run {
                    system: system.to_string(),
                    subsystem: match input {
                        Input::Reset {
                            target_subsystem, ..
                        } => Some(*target_subsystem),
                        _ => None,
                    },
                    started: at,
                    budget,
                    outlets,
                    nmi: false,
                    hard_issued: false,
                    stop: false,
                    hard_acked: false,
                    cut: BTreeSet::new(),
                    off: false,
                    ended: false,
                },
            );
            self.current.insert(system.to_string(), *id);
            self.down.insert(system.to_string(), None);
        }
        // Evidence, from the inputs.
        match input {
            Input::Step { id, step } => {
                if let Some(r) = self.runs.get_mut(id).filter(|r| !r.ended) {
                    match step {
                        Step::PowerOff => r.off = true,
                        Step::NmiIssued => r.nmi = true,
                        Step::HardSent => r.hard_issued = true,
                        Step::HardAcked => r.hard_acked = true,
                        Step::OutletOff {
                            link,
                            result: Ok(()),
                        } => {
                            r.cut.insert(*link);
                        }
                        _ => {}
                    }
                }
            }
            Input::Stopped {
                from,
                system,
                subsystem,
            } => self.stop(system, Some(*subsystem), *from),
            Input::FenceKdump { from } => {
                let at_addr: Vec<String> = self
                    .current
                    .iter()
                    .filter(|(s, id)| {
                        !self.runs[*id].ended && self.reg.get(s.as_str()) == Some(&from.ip())
                    })
                    .map(|(s, _)| s.clone())
                    .collect();
                if let [one] = at_addr.as_slice() {
                    self.stop(one, None, *from);
                }
            }
            _ => {}
        }
        let signals: Vec<ResetId> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Stopped { id } => Some(*id),
                _ => None,
            })
            .collect();
        for id in signals {
            if !self.runs.get(&id).is_some_and(|r| r.stop && !r.ended) {
                return Err(format!(
                    "reset {id} signalled stopped without a valid notice"
                ));
            }
        }
        // Replies go only to registered monitors' addresses, or to a check's source
        // (issue 12 item 5: no reflection towards a stranger's address).
        let monitor_address = |ip: IpAddr| self.reg.values().any(|r| *r == ip);
        for e in effects {
            if let Effect::Reply { to, signer, msg } = e {
                let ok = match (input, msg) {
                    (Input::Check { from, system, .. }, Message::CheckReply { .. }) => {
                        to.ip() == from.ip() && signer == system
                    }
                    (Input::Stopped { from, system, .. }, Message::StoppedAck { .. }) => {
                        *to == *from && signer == system && monitor_address(from.ip())
                    }
                    (Input::Reset { from, system, .. }, Message::ResetReply { .. }) => {
                        to.ip() == from.ip() && signer == system && monitor_address(from.ip())
                    }
                    // Final replies: checked against the accepted requests below.
                    (_, Message::ResetReply { .. }) => true,
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "reply {msg:?} to {to} (for {signer}) after {input:?}"
                    ));
                }
            }
        }
        let replies: Vec<(SocketAddr, u32, &String, ResetResult)> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Reply {
                    to,
                    msg:
                        Message::ResetReply {
                            req,
                            target_system,
                            result,
                            ..
                        },
                    ..
                } => Some((*to, *req, target_system, *result)),
                _ => None,
            })
            .collect();
        if let Input::Reset { from, .. } = input
            && !monitor_address(from.ip())
        {
            // No registered monitor there: no answer, and nothing may start (admission
            // needs the requester's registered address).
            if !replies.is_empty() || !starts.is_empty() {
                return Err(format!("a request from {from} was answered: {replies:?}"));
            }
        } else if let Input::Reset {
            from,
            req,
            port,
            target,
            system: requester,
            ..
        } = input
        {
            // Invariant 4, first half: one immediate answer to a registered monitor.
            let to = SocketAddr::new(from.ip(), *port);
            let mine: Vec<_> = replies
                .iter()
                .filter(|(a, r, t, _)| *a == to && r == req && *t == target)
                .collect();
            if mine.len() != 1 || replies.len() != 1 {
                return Err(format!(
                    "request answered {} times: {replies:?}",
                    mine.len()
                ));
            }
            let key = (to, *req, target.clone());
            match mine[0].3 {
                ResetResult::Accepted => {
                    let id = match starts.first() {
                        Some((id, ..)) => *id,
                        None => self.running(target).ok_or_else(|| {
                            format!("ACCEPTED for {target} with no reset in flight")
                        })?,
                    };
                    let (a, r, t) = key;
                    self.pending
                        .entry((a, r, t, requester.clone()))
                        .or_insert(id);
                }
                // Invariant 3 for answers from memory: the same final answer of this
                // request, within the window, with no check-in of the target since.
                r @ (ResetResult::Dump | ResetResult::Poff) => {
                    let ok = self.finals.get(&key).is_some_and(|(fr, t, c)| {
                        *fr == r
                            && at <= *t + RETRANSMIT_WINDOW
                            && self.checkins.get(target.as_str()).copied().unwrap_or(0) == *c
                    });
                    if !ok {
                        return Err(format!("{r:?} for {target} from memory"));
                    }
                }
                _ => {}
            }
        } else {
            // Final replies, from the reset each request joined.
            for (to, req, target, result) in replies {
                let key = (to, req, target.clone());
                let waiting = self
                    .pending
                    .keys()
                    .find(|(a, r, t, _)| (*a, *r, t) == (to, req, target))
                    .cloned()
                    .ok_or_else(|| format!("final reply {result:?} to {key:?} never accepted"))?;
                let id = self.pending.remove(&waiting).expect("just found");
                if !self.runs[&id].proves_result(result) {
                    return Err(format!(
                        "{result:?} for {target} without its event: {:?}",
                        self.runs[&id]
                    ));
                }
                let c = self.checkins.get(target.as_str()).copied().unwrap_or(0);
                self.finals.insert(key, (result, at, c));
            }
        }
        // Attention: only as the end of a reset that proved it, or a power loss the watch read.
        for e in effects {
            if let Effect::Attention(f) = e {
                let ok = match input {
                    Input::PowerLoss { system, .. } => {
                        f.state == AttentionState::Poff && *system == f.system
                    }
                    Input::Done { id, .. } => self
                        .runs
                        .get(id)
                        .is_some_and(|r| r.system == f.system && r.proves(f.state)),
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "attention {:?} {} after {input:?}",
                        f.state, f.system
                    ));
                }
            }
        }
        // Ends of resets: every request that joined one has had its final reply.
        let mut ended: Vec<ResetId> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Cancel { id } => Some(*id),
                _ => None,
            })
            .collect();
        if let Input::Done { id, .. } | Input::TaskEnded { id } = input {
            ended.push(*id);
        }
        for id in ended {
            self.end(id, at);
            if let Some((k, _)) = self.pending.iter().find(|(_, p)| **p == id) {
                return Err(format!("{k:?} unanswered when its reset {id} ended"));
            }
        }
        // Check-ins.
        if let Input::Check { from, system, .. } = input
            && spec
                .system(system)
                .is_some_and(|s| !matches!(s, SystemRef::Guest { host, .. } if !host.enabled))
        {
            let running = self.running(system).is_some();
            let same = self.reg.get(system.as_str()) == Some(&from.ip());
            if !running || same || !self.reg.contains_key(system.as_str()) {
                self.reg.insert(system.clone(), from.ip());
                *self.checkins.entry(system.clone()).or_default() += 1;
                if !running {
                    self.down.remove(system.as_str());
                }
            }
        }
        // Invariant 4, second half: no accepted request outlives its reset's deadline.
        if matches!(input, Input::Tick) {
            for (key, id) in &self.pending {
                let r = &self.runs[id];
                if at >= r.started + r.budget {
                    return Err(format!("{key:?} unanswered past the deadline of {id}"));
                }
            }
        }
        Ok(())
    }

    /// A takeover: each reset in flight that someone waits for goes on as a new run on the
    /// new active, which knows only that the old one's NMI (or hard reset) was issued: none
    /// of its evidence. A takeover starts nothing else, answers nothing and notifies no one.
    fn take_over(&mut self, at: Duration, effects: &[Effect]) -> Result<(), Violation> {
        let mut starts: BTreeMap<String, (ResetId, &reset::Target, &reset::Timing, Resume)> =
            BTreeMap::new();
        for e in effects {
            match e {
                Effect::Start {
                    id,
                    system,
                    target,
                    timing,
                    test,
                    resume,
                } => {
                    if *test {
                        return Err(format!("an operator's test of {system} carried on"));
                    }
                    if starts
                        .insert(system.clone(), (*id, target, timing, *resume))
                        .is_some()
                    {
                        return Err(format!("two resets of {system} at a takeover"));
                    }
                }
                Effect::Reply { .. } | Effect::Attention(_) => {
                    return Err(format!("a takeover said {e:?}"));
                }
                _ => {}
            }
        }
        for (system, old) in self.current.clone() {
            let run = self.runs[&old].clone();
            if run.ended {
                continue;
            }
            let waiting = self.pending.values().any(|id| *id == old);
            let Some((id, target, timing, resume)) = starts.remove(&system) else {
                if waiting {
                    return Err(format!("{system}'s reset, awaited, lost at the takeover"));
                }
                // An operator's test: it ended with the old active.
                self.end(old, at);
                continue;
            };
            // Never a second NMI after the old one, never a stage skipped.
            let ok = match resume {
                Resume::Fresh => !run.nmi && !run.hard_issued,
                Resume::AfterNmi { .. } => run.nmi && !run.hard_issued,
                Resume::Hard => run.hard_issued,
            };
            if !ok {
                return Err(format!("{system} carried on as {resume:?} after {run:?}"));
            }
            self.runs.get_mut(&old).expect("known").ended = true;
            self.runs.insert(
                id,
                Run {
                    system: system.clone(),
                    subsystem: run.subsystem,
                    started: at,
                    budget: reset::budget(timing),
                    outlets: match target {
                        reset::Target::Physical { pdus, .. } => {
                            pdus.iter().map(|(l, _)| *l).collect()
                        }
                        reset::Target::Guest { .. } => Vec::new(),
                    },
                    nmi: run.nmi,
                    hard_issued: run.hard_issued,
                    stop: false,
                    hard_acked: false,
                    cut: BTreeSet::new(),
                    off: false,
                    ended: false,
                },
            );
            for p in self.pending.values_mut() {
                if *p == old {
                    *p = id;
                }
            }
            self.current.insert(system, id);
        }
        if let Some(system) = starts.keys().next() {
            return Err(format!(
                "a takeover started a reset of {system} nobody waits for"
            ));
        }
        Ok(())
    }

    fn stop(&mut self, system: &str, subsystem: Option<u32>, from: SocketAddr) {
        let Some(id) = self.running(system) else {
            return;
        };
        let reg = self.reg.get(system).copied();
        let r = self.runs.get_mut(&id).expect("running");
        let subsystem_ok = match (subsystem, r.subsystem) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if r.nmi && !r.hard_issued && subsystem_ok && reg.is_none_or(|ip| ip == from.ip()) {
            r.stop = true;
        }
    }
}

// --- events of the property test and the exploration -------------------------------------

/// An event of a random or explored world. Task events name a system: they go to its
/// reset in flight, or to its last one (a late task), or nowhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Ev {
    Check {
        system: &'static str,
        at: u8,
    },
    Reset {
        at: u8,
        req: u32,
        system: &'static str,
        target: &'static str,
    },
    Stopped {
        at: u8,
        system: &'static str,
    },
    FenceKdump {
        at: u8,
    },
    Task {
        system: &'static str,
        what: TaskEv,
    },
    PowerLoss {
        system: &'static str,
    },
    Advance(u64),
    Test {
        system: &'static str,
    },
    Reload,
    /// The active of a pair dies; its standby, holding the state the active last sent it
    /// (up to date: the end of a reset waits for the standby), takes over.
    TakeOver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TaskEv {
    PowerOff,
    Nmi,
    HardSent,
    HardAcked,
    Cut(u16),
    CutFailed(u16),
    Claim(u8),
    Ended,
}

/// Runs events against a core and the oracle. `restart` replaces the core (a daemon
/// restart: nothing survives), and the oracle forgets the tasks and requests with it.
struct Run2 {
    w: World,
    oracle: Oracle,
    /// Last reset id per system, for task events.
    last: HashMap<&'static str, ResetId>,
    /// The facts the previous reload planned with: a reload plans from a snapshot that
    /// may be stale by the time it commits, as the daemon's supervisor does.
    stale_facts: Option<crate::plan::LiveFacts>,
}

impl Run2 {
    fn new() -> Run2 {
        Run2 {
            w: World::new(),
            oracle: Oracle::default(),
            last: HashMap::new(),
            stale_facts: None,
        }
    }

    fn at(&self) -> Duration {
        self.w.now.duration_since(self.w.t0)
    }

    fn apply(&mut self, ev: &Ev) -> Result<(), Violation> {
        let mut test = None;
        let input = match ev {
            Ev::Check { system, at } => check_input(system, *at),
            Ev::Reset {
                at,
                req,
                system,
                target,
            } => reset_input(*at, *req, system, target),
            Ev::Stopped { at, system } => stopped_input(*at, system),
            Ev::FenceKdump { at } => Input::FenceKdump { from: from(*at) },
            Ev::PowerLoss { system } => Input::PowerLoss {
                system: system.to_string(),
                what: "watch".into(),
            },
            Ev::Advance(ms) => {
                self.w.now += Duration::from_millis(*ms);
                Input::Tick
            }
            Ev::Reload => return self.reload(),
            Ev::TakeOver => return self.take_over(),
            Ev::Test { system } => {
                let mut out = Vec::new();
                if let Ok(id) =
                    self.w
                        .core
                        .test_reset(self.w.now, system, subsystem_of(system), &mut out)
                {
                    self.last.insert(system, id);
                }
                test = Some(*system);
                let at = self.at();
                return self
                    .oracle
                    .observe(&spec(), at, &Input::Tick, test, &out)
                    .map_err(|v| format!("{v}\nafter {ev:?}"));
            }
            Ev::Task { system, what } => {
                let Some(&id) = self.last.get(system) else {
                    return Ok(());
                };
                match what {
                    TaskEv::PowerOff => Input::Step {
                        id,
                        step: Step::PowerOff,
                    },
                    TaskEv::Nmi => Input::Step {
                        id,
                        step: Step::NmiIssued,
                    },
                    TaskEv::HardSent => Input::Step {
                        id,
                        step: Step::HardSent,
                    },
                    TaskEv::HardAcked => Input::Step {
                        id,
                        step: Step::HardAcked,
                    },
                    TaskEv::Cut(o) => Input::Step {
                        id,
                        step: Step::OutletOff {
                            link: outlet(*o),
                            result: Ok(()),
                        },
                    },
                    TaskEv::CutFailed(o) => Input::Step {
                        id,
                        step: Step::OutletOff {
                            link: outlet(*o),
                            result: Err("no answer".into()),
                        },
                    },
                    TaskEv::Claim(c) => Input::Done {
                        id,
                        outcome: match c % 4 {
                            0 => Outcome::Dumped,
                            1 => Outcome::Rebooted,
                            2 => Outcome::PowerOff,
                            _ => Outcome::Failed("nothing worked".into()),
                        },
                    },
                    TaskEv::Ended => Input::TaskEnded { id },
                }
            }
        };
        let effects = self.w.input(input.clone());
        if let Some((id, system)) = started(&effects) {
            let key = ["node01", "node02", "node03", "vm01"]
                .into_iter()
                .find(|s| *s == system)
                .expect("a system of the world");
            self.last.insert(key, id);
        }
        let at = self.at();
        self.oracle
            .observe(&spec(), at, &input, test, &effects)
            .map_err(|v| format!("{v}\nafter {ev:?}\neffects {effects:#?}"))
    }
}

const NAMES: [&str; 5] = ["node01", "node02", "node03", "vm01", "ghost01"];

fn arb_ev() -> impl Strategy<Value = Ev> {
    let name = prop::sample::select(&NAMES[..]);
    let sys = prop::sample::select(&NAMES[..4]);
    // Addresses 1–4 are the nodes', 5 is shared by no one, 9 a stranger's.
    let at = prop::sample::select(&[1u8, 2, 3, 4, 5, 9][..]);
    let task = prop_oneof![
        Just(TaskEv::PowerOff),
        Just(TaskEv::Nmi),
        Just(TaskEv::HardSent),
        Just(TaskEv::HardAcked),
        (1u16..=2).prop_map(TaskEv::Cut),
        (1u16..=2).prop_map(TaskEv::CutFailed),
        (0u8..4).prop_map(TaskEv::Claim),
        Just(TaskEv::Ended),
    ];
    prop_oneof![
        4 => (sys.clone(), prop::bool::weighted(0.8), at.clone()).prop_map(|(system, home_addr, at)| Ev::Check {
            system,
            at: if home_addr { home(system) } else { at },
        }),
        6 => (prop::bool::weighted(0.7), at.clone(), 0u32..4, name.clone(), name.clone()).prop_map(
            |(home_addr, at, req, system, target)| Ev::Reset {
                at: if home_addr { home(system) } else { at },
                req,
                system,
                target,
            }
        ),
        3 => (prop::bool::weighted(0.7), at.clone(), name.clone()).prop_map(|(home_addr, at, system)| Ev::Stopped {
            at: if home_addr { home(system) } else { at },
            system,
        }),
        1 => at.clone().prop_map(|at| Ev::FenceKdump { at }),
        8 => (sys.clone(), task).prop_map(|(system, what)| Ev::Task { system, what }),
        1 => sys.clone().prop_map(|system| Ev::PowerLoss { system }),
        3 => prop::sample::select(&[100u64, 1_000, 9_000, 11_000, 40_000, 700_000][..]).prop_map(Ev::Advance),
        1 => sys.prop_map(|system| Ev::Test { system }),
        2 => Just(Ev::Reload),
        1 => Just(Ev::TakeOver),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    /// The four invariants hold over random interleavings of everything a node, a task
    /// or the clock can do, including a restart of the daemon in the middle.
    #[test]
    fn the_four_invariants_hold_for_random_worlds(
        evs in prop::collection::vec(arb_ev(), 1..60),
        restart_at in prop::option::of(0usize..60),
    ) {
        let mut run = Run2::new();
        for (i, ev) in evs.iter().enumerate() {
            if restart_at == Some(i) {
                // A restart: a new core; the tasks of the old one died with it. The
                // oracle keeps who is down (a node reset before the restart is still
                // down for the requester rule) but forgets requests and tasks.
                let now = run.w.now;
                run.w.core = Core::new(spec(), CoreConfig::default(), Arc::new(Counters::default()));
                run.w.now = now;
                run.last.clear();
                run.oracle = Oracle::default();
            }
            if let Err(v) = run.apply(ev) {
                return Err(TestCaseError::fail(format!("{v}\nevents: {evs:#?}")));
            }
        }
    }
}

// --- exhaustive exploration --------------------------------------------------------------

/// The events of the small world: node01/node02 (a pair) and node03; addresses 1–3 the
/// nodes', 3 also used by a stranger to speak for others.
fn small_world_events() -> Vec<Ev> {
    let mut v = vec![
        Ev::Check {
            system: "node01",
            at: 1,
        },
        Ev::Check {
            system: "node02",
            at: 2,
        },
        Ev::Check {
            system: "node03",
            at: 3,
        },
        Ev::Check {
            system: "node02",
            at: 3,
        },
        Ev::Reset {
            at: 1,
            req: 1,
            system: "node01",
            target: "node02",
        },
        Ev::Reset {
            at: 2,
            req: 1,
            system: "node02",
            target: "node01",
        },
        Ev::Reset {
            at: 3,
            req: 1,
            system: "node03",
            target: "node02",
        },
        Ev::Reset {
            at: 2,
            req: 2,
            system: "node03",
            target: "node01",
        },
        Ev::Stopped {
            at: 2,
            system: "node02",
        },
        Ev::Stopped {
            at: 1,
            system: "node01",
        },
        Ev::Stopped {
            at: 3,
            system: "node02",
        },
        Ev::FenceKdump { at: 2 },
        Ev::Advance(11_000),
        Ev::Advance(700_000),
        Ev::TakeOver,
    ];
    for system in ["node01", "node02"] {
        for what in [
            TaskEv::PowerOff,
            TaskEv::Nmi,
            TaskEv::HardSent,
            TaskEv::HardAcked,
            TaskEv::Claim(0),
            TaskEv::Claim(1),
            TaskEv::Claim(2),
        ] {
            v.push(Ev::Task { system, what });
        }
    }
    v.push(Ev::Task {
        system: "node02",
        what: TaskEv::Cut(1),
    });
    v.push(Ev::Task {
        system: "node02",
        what: TaskEv::Cut(2),
    });
    v
}

/// A canonical text of everything that decides the future of a run: the core's table
/// and cache, the oracle's account, with reset ids renumbered in order of appearance and
/// times relative to now (capped).
fn fingerprint(run: &Run2) -> String {
    use std::fmt::Write;
    let now = run.w.now;
    let at = run.at();
    let mut ids: BTreeMap<ResetId, usize> = BTreeMap::new();
    let canon = |id: ResetId, ids: &mut BTreeMap<ResetId, usize>| {
        let n = ids.len();
        *ids.entry(id).or_insert(n)
    };
    let rel = |t: Instant| now.saturating_duration_since(t).as_secs().min(1000);
    let ahead = |t: Instant| t.saturating_duration_since(now).as_secs().min(1000);
    let mut s = String::new();
    let mut names: Vec<&Name> = run.w.core.systems.keys().collect();
    names.sort();
    for n in names {
        let sys = &run.w.core.systems[n];
        let _ = write!(s, "{n}:");
        if let Some(m) = &sys.monitor {
            let _ = write!(
                s,
                "m{}@{}/{:?}/{}",
                m.subsystem,
                m.addr,
                m.pair,
                rel(m.last_seen) > 60
            );
        }
        match &sys.state {
            State::Normal => s.push_str(" N"),
            State::Resetting(r) => {
                let c = canon(r.id, &mut ids);
                let _ = write!(
                    s,
                    " R{c} {:?} {} {:?} {:?} {:?}",
                    r.stage,
                    ahead(r.deadline),
                    r.requesters,
                    r.evidence,
                    r.soft_until.map(ahead)
                );
            }
            State::Done { id, state, until } => {
                let c = id.map(|i| canon(i, &mut ids));
                let _ = write!(s, " D{c:?} {state:?} {}", ahead(*until));
            }
            State::Failed { until } => {
                let _ = write!(s, " F {}", ahead(*until));
            }
        }
        s.push(';');
    }
    for (requester, req, target, from, epoch, reset, answer) in run.w.core.requests.entries() {
        let fresh = run.w.core.systems.get(target).map_or(0, |t| t.epoch) == epoch;
        let c = canon(reset, &mut ids);
        let _ = write!(
            s,
            "|{requester}:{req}>{target}@{from}/{fresh}/{c}/{:?}",
            answer.map(|(r, t)| (r, rel(t) > RETRANSMIT_WINDOW.as_secs()))
        );
    }
    let mut tasks: Vec<_> = run.w.core.tasks.keys().copied().collect();
    tasks.sort();
    for id in tasks {
        let c = canon(id, &mut ids);
        let _ = write!(s, "|t{c}");
    }
    for (system, id) in &run.last {
        let c = canon(*id, &mut ids);
        let _ = write!(s, "|l{system}={c}");
    }
    // The oracle, relative to now.
    let o = &run.oracle;
    let _ = write!(s, "||{:?}", o.reg);
    for (id, r) in &o.runs {
        if let Some(c) = ids.get(id) {
            let _ = write!(
                s,
                "|r{c}:{}{}{}{}{}{:?}{}{}",
                r.nmi,
                r.hard_issued,
                r.stop,
                r.hard_acked,
                r.off,
                r.cut,
                r.ended,
                (at.saturating_sub(r.started)).as_secs().min(1000)
            );
        }
    }
    for (sys, since) in &o.down {
        let _ = write!(
            s,
            "|d{sys}:{:?}",
            since.map(|t| at.saturating_sub(t).as_secs().min(1000))
        );
    }
    for (k, id) in &o.pending {
        let _ = write!(s, "|p{k:?}={:?}", ids.get(id));
    }
    for (k, (r, t, c)) in &o.finals {
        let fresh = o.checkins.get(k.2.as_str()).copied().unwrap_or(0) == *c;
        let recent = at.saturating_sub(*t) <= RETRANSMIT_WINDOW;
        if recent {
            let _ = write!(s, "|f{k:?}{r:?}{fresh}");
        }
    }
    s
}

/// Every sequence of up to `depth` events of the small world, with states already seen
/// (by fingerprint) not explored again; the oracle checked on every transition.
fn explore(events: &[Ev], depth: usize, max_states: usize) -> (usize, usize) {
    let mut seen: HashSet<String> = HashSet::new();
    let mut queue: VecDeque<(Run2, Vec<Ev>)> = VecDeque::new();
    let start = Run2::new();
    seen.insert(fingerprint(&start));
    queue.push_back((start, Vec::new()));
    let mut transitions = 0;
    while let Some((run, path)) = queue.pop_front() {
        if path.len() >= depth {
            continue;
        }
        for ev in events {
            let mut next = run.clone_run();
            transitions += 1;
            if let Err(v) = next.apply(ev) {
                panic!("invariant violated after {:?} then {ev:?}:\n{v}", path);
            }
            let f = fingerprint(&next);
            if seen.len() < max_states && seen.insert(f) {
                let mut p = path.clone();
                p.push(ev.clone());
                queue.push_back((next, p));
            }
        }
    }
    (seen.len(), transitions)
}

impl Run2 {
    /// A reload through the daemon's own path: plan from (possibly stale) facts, merge,
    /// guards, commit. A refused commit changes nothing; a swapped one leaves every server
    /// being reset (and the PDUs feeding it) as it was.
    fn reload(&mut self) -> Result<(), Violation> {
        use crate::plan::merge::{guards, merge};
        let live = self.w.core.spec().clone();
        let desired = if *live == *spec() { spec_b() } else { spec() };
        let now_facts = self.w.core.facts(self.w.now).live();
        let facts = self
            .stale_facts
            .replace(now_facts.clone())
            .unwrap_or(now_facts);
        let p = crate::plan::plan(&live, &desired, &facts);
        let merged = merge(&live, &desired, &p, |c| c.predicted.clone());
        let g = guards(&live, &desired, &p, &merged.results);
        let next = Arc::new(merged.spec);
        match self.w.core.commit(self.w.now, next.clone(), &g) {
            Err(_) => {
                if !Arc::ptr_eq(self.w.core.spec(), &live) {
                    return Err("a refused commit changed the spec".into());
                }
            }
            Ok(_) => {
                for (system, id) in &self.oracle.current {
                    if self.oracle.runs[id].ended {
                        continue;
                    }
                    let before = live.system(system).map(|s| s.server().clone());
                    let after = next.system(system).map(|s| s.server().clone());
                    if before != after {
                        return Err(format!("{system} changed by a reload during its reset"));
                    }
                    let pdus = |s: &Spec| {
                        before
                            .iter()
                            .flat_map(|b| b.outlets())
                            .map(|l| s.pdus.get(&l.pdu).cloned())
                            .collect::<Vec<_>>()
                    };
                    if pdus(&live) != pdus(&next) {
                        return Err(format!("a PDU of {system} changed during its reset"));
                    }
                }
            }
        }
        Ok(())
    }

    /// The standby of a pair takes the active's state (as the mlan carries it) and takes
    /// over; the old core and its tasks are gone.
    fn take_over(&mut self) -> Result<(), Violation> {
        let now = self.w.now;
        let (_, monitors) = self.w.core.synced_monitors(now);
        let busy: Vec<SyncedBusy> = serde_json::from_value(
            serde_json::to_value(self.w.core.synced_busy(now)).expect("serializes"),
        )
        .expect("what the mlan carries decodes");
        let mut core = Core::new(
            self.w.core.spec().clone(),
            CoreConfig::default(),
            Arc::new(Counters::default()),
        );
        core.adopt_monitors(now, monitors);
        core.adopt_busy(now, busy);
        // Another process numbers its resets from 1 again: here they stay apart from the
        // old core's, which the oracle still holds.
        core.next_id = self.w.core.next_id;
        self.w.core = core;
        let effects = self.w.input(Input::TakeOver);
        self.last.clear();
        for e in &effects {
            if let Effect::Start { id, system, .. } = e {
                let key = ["node01", "node02", "node03", "vm01"]
                    .into_iter()
                    .find(|s| *s == system)
                    .expect("a system of the world");
                self.last.insert(key, *id);
            }
        }
        let at = self.at();
        self.oracle
            .take_over(at, &effects)
            .map_err(|v| format!("{v}\nafter a takeover\neffects {effects:#?}"))
    }

    fn clone_run(&self) -> Run2 {
        Run2 {
            w: World {
                core: self.w.core.clone(),
                t0: self.w.t0,
                now: self.w.now,
            },
            oracle: self.oracle.clone(),
            last: self.last.clone(),
            stale_facts: self.stale_facts.clone(),
        }
    }
}

/// Small worlds, explored exhaustively: three systems, one pair, every sequence of up to
/// eight events (states reached twice are explored once).
#[test]
fn the_four_invariants_hold_in_every_reachable_state_of_a_small_world() {
    let (states, transitions) = explore(&small_world_events(), 7, 40_000);
    eprintln!("explored {states} states, {transitions} transitions");
    assert!(
        states > 1000,
        "the exploration reached {states} states only"
    );
}

#[test]
fn a_reload_planned_before_a_reset_started_is_refused_and_changes_nothing() {
    let mut run = Run2::new();
    for ev in [
        Ev::Check {
            system: "node01",
            at: 1,
        },
        Ev::Check {
            system: "node02",
            at: 2,
        },
        // The monitors stop checking: no longer active, still registered.
        Ev::Advance(70_000),
    ] {
        run.apply(&ev).unwrap();
    }
    // The reload plans with facts from before node02's reset started.
    run.stale_facts = Some(run.w.core.facts(run.w.now).live());
    run.apply(&Ev::Reset {
        at: 1,
        req: 1,
        system: "node01",
        target: "node02",
    })
    .unwrap();
    run.apply(&Ev::Reload).unwrap();
    assert!(
        Arc::ptr_eq(run.w.core.spec(), &spec()),
        "refused: unchanged"
    );
    // Once the reset ended, the same reload applies.
    run.apply(&Ev::Task {
        system: "node02",
        what: TaskEv::Claim(3),
    })
    .unwrap();
    run.stale_facts = None;
    run.apply(&Ev::Reload).unwrap();
    assert!(*run.w.core.spec().clone() == *spec_b(), "applied");
}

/// Issue 14.3: a standby that took the active's registrations admits a registered
/// monitor's request after a takeover without a new check; only from the registered
/// address, and an unknown system in the list is not kept.
#[test]
fn registrations_synced_from_the_active_admit_requests_after_a_takeover() {
    let mut active = World::new();
    active.check("node01");
    active.check("node02");
    let (_, mut list) = active.core.synced_monitors(active.now);
    assert_eq!(list.len(), 2);
    list.push(crate::pipeline::core::SyncedMonitor {
        system: "nosuchnode".into(),
        subsystem: 1,
        addr: from(9),
        pair: None,
        age_ms: 0,
    });
    let mut standby = World::new();
    standby.core.adopt_monitors(standby.now, list);
    let (_, kept) = standby.core.synced_monitors(standby.now);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(standby.core.is_monitor_address(ip(home("node01"))));
    let e = standby.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    assert!(started(&e).is_some());
    // Without the synced registrations the same request is refused.
    let mut cold = World::new();
    let e = cold.reset(7, "node01", "node02");
    assert_ne!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    assert!(started(&e).is_none());
}

/// Issue 14.3, never both of a pair across a takeover: the standby takes the active's
/// systems that are not normal. node02, which the old active was resetting, cannot get
/// its partner reset on the new active; node01's request for node02 (its retransmission)
/// acts anew on the hardware; once node02 checks in it is normal again.
#[test]
fn states_synced_from_the_active_keep_a_pair_from_resetting_each_other_after_a_takeover() {
    let (active, _) = World::node02_reset_started();
    let (_, monitors) = active.core.synced_monitors(active.now);
    let busy = active.core.synced_busy(active.now);
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(
        (busy[0].system.as_str(), busy[0].state.as_str()),
        ("node02", "resetting")
    );
    let mut standby = World::new();
    standby.core.adopt_monitors(standby.now, monitors);
    standby.core.adopt_busy(standby.now, busy);
    let e = standby.reset(8, "node02", "node01");
    assert_ne!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    assert!(started(&e).is_none(), "both of a pair: {e:#?}");
    let e = standby.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    assert!(
        started(&e).is_some(),
        "the reset in flight is not lost: {e:#?}"
    );

    // A later sync without node02 (it checked in on the active) makes it normal here.
    let mut standby = World::new();
    standby.core.adopt_busy(
        standby.now,
        vec![crate::pipeline::core::SyncedBusy {
            system: "node02".into(),
            state: "done".into(),
            attention: Some(AttentionState::Dump),
            left_ms: 60_000,
            subsystem: None,
            requesters: Vec::new(),
            stage: None,
        }],
    );
    standby.check("node01");
    assert!(started(&standby.reset(9, "node02", "node01")).is_none());
    standby.core.adopt_busy(standby.now, Vec::new());
    standby.check("node02");
    let e = standby.reset(10, "node02", "node01");
    assert!(started(&e).is_some(), "{e:#?}");
}

/// Issue 14.3, a reset in flight is never lost: at the takeover the new active starts
/// the reset the old one had in flight, for its requester; the requester's retransmission
/// joins it (no second reset) and the final reply goes to it.
#[test]
fn a_reset_in_flight_on_the_old_active_is_carried_on_at_the_takeover() {
    let (active, _) = World::node02_reset_started();
    let (_, monitors) = active.core.synced_monitors(active.now);
    let busy = active.core.synced_busy(active.now);
    assert_eq!(busy[0].requesters.len(), 1, "{busy:?}");
    let mut standby = World::new();
    standby.core.adopt_monitors(standby.now, monitors);
    standby.core.adopt_busy(standby.now, busy);
    let e = standby.input(Input::TakeOver);
    let (id, system) = started(&e).expect("the reset is carried on");
    assert_eq!(system, "node02");
    // The requester's retransmission (same req) joins it: ACCEPTED, nothing new started.
    let e = standby.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    assert!(started(&e).is_none(), "a second reset: {e:#?}");
    // Its stop notice after the NMI ends it: DUMP to node01.
    let e = dump_node02(&mut standby, id);
    assert!(results(&e).contains(&ResetResult::Dump), "{e:#?}");
    // A takeover with nothing carried starts nothing; an operator's test is not carried.
    let mut idle = World::new();
    assert!(started(&idle.input(Input::TakeOver)).is_none());
}

/// Carries `active`'s state to a new standby and takes over: the effects of the takeover.
fn take_over_from(active: &World) -> (World, Vec<Effect>) {
    let (_, monitors) = active.core.synced_monitors(active.now);
    let busy = active.core.synced_busy(active.now);
    let mut standby = World::new();
    standby.core.adopt_monitors(standby.now, monitors);
    standby.core.adopt_busy(standby.now, busy);
    let e = standby.input(Input::TakeOver);
    (standby, e)
}

fn resume_of(e: &[Effect]) -> Option<Resume> {
    e.iter().find_map(|e| match e {
        Effect::Start { resume, .. } => Some(*resume),
        _ => None,
    })
}

/// Issue 14.3, carried on from its last synced stage: before the old active's NMI the new
/// active starts from the power check; after it, no second NMI (the node may be dumping)
/// and only the rest of the soft-reset window; past the hard reset, the hard reset.
#[test]
fn a_reset_in_flight_is_carried_on_from_its_last_synced_stage() {
    use crate::pipeline::core::SyncedStage;
    // Before the NMI.
    let (active, _) = World::node02_reset_started();
    assert_eq!(
        active.core.synced_busy(active.now)[0].stage,
        Some(SyncedStage::Started)
    );
    let (_, e) = take_over_from(&active);
    assert_eq!(resume_of(&e), Some(Resume::Fresh), "{e:#?}");

    // 400 ms after the NMI: what is left of the window, no second NMI.
    let (mut active, id) = World::node02_reset_started();
    let before = active.core.generation();
    active.step(id, Step::NmiIssued);
    assert!(
        active.core.generation() > before,
        "the standby is told of the NMI"
    );
    active.advance(Duration::from_millis(400));
    let Some(SyncedStage::NmiIssued { window_left_ms }) =
        active.core.synced_busy(active.now)[0].stage
    else {
        panic!("{:?}", active.core.synced_busy(active.now));
    };
    let window = spec().hard_reset_after();
    assert_eq!(window_left_ms, window.as_millis() as u64 - 400);
    let (mut standby, e) = take_over_from(&active);
    let (id, _) = started(&e).expect("carried on");
    assert_eq!(
        resume_of(&e),
        Some(Resume::AfterNmi {
            window: window - Duration::from_millis(400)
        }),
        "{e:#?}"
    );
    // The node's stop notice counts at once (the NMI was this reset's, issued by the old
    // active): DUMP to the requester, with no NMI step here.
    let e = standby.input(stopped_input(2, "node02"));
    assert!(signalled(&e), "{e:#?}");
    let e = standby.done(id, Outcome::Dumped);
    assert!(results(&e).contains(&ResetResult::Dump), "{e:#?}");

    // A window left that is longer than the target's own is never taken as it is.
    let (mut active, id) = World::node02_reset_started();
    active.step(id, Step::NmiIssued);
    let mut busy = active.core.synced_busy(active.now);
    busy[0].stage = Some(SyncedStage::NmiIssued {
        window_left_ms: 3_600_000,
    });
    let mut standby = World::new();
    standby.core.adopt_busy(standby.now, busy);
    let e = standby.input(Input::TakeOver);
    assert_eq!(resume_of(&e), Some(Resume::AfterNmi { window }), "{e:#?}");

    // After the hard reset was sent: the hard reset again, and a stop notice now decides
    // nothing; the old active's acknowledgement counts for nothing here.
    let (mut active, id) = World::node02_reset_started();
    active.step(id, Step::NmiIssued);
    active.advance(window);
    active.step(id, Step::HardSent);
    active.step(id, Step::HardAcked);
    assert_eq!(
        active.core.synced_busy(active.now)[0].stage,
        Some(SyncedStage::HardIssued)
    );
    let (mut standby, e) = take_over_from(&active);
    let (id, _) = started(&e).expect("carried on");
    assert_eq!(resume_of(&e), Some(Resume::Hard), "{e:#?}");
    let e = standby.input(stopped_input(2, "node02"));
    assert!(!signalled(&e), "{e:#?}");
    // A task claiming REBOOT without this server's acknowledgement is not believed.
    let e = standby.done(id, Outcome::Rebooted);
    assert!(!results(&e).contains(&ResetResult::Dump), "{e:#?}");
    assert!(attentions(&e).is_empty(), "{e:#?}");
}

/// Found by the property test with takeovers: an HA monitor's request that joined an
/// operator's test soft reset is carried on at a takeover (as a real reset, from the
/// test's NMI on); the test itself is not.
#[test]
fn a_request_that_joined_an_operators_test_is_carried_on_at_a_takeover() {
    let mut active = World::new();
    active.check("node01");
    let mut out = Vec::new();
    let id = active
        .core
        .test_reset(active.now, "node02", subsystem_of("node02"), &mut out)
        .expect("a test reset");
    active.step(id, Step::NmiIssued);
    let e = active.reset(7, "node01", "node02");
    assert_eq!(results(&e), vec![ResetResult::Accepted], "{e:#?}");
    let (_, e) = take_over_from(&active);
    assert!(
        matches!(
            e.as_slice(),
            [Effect::Start {
                test: false,
                resume: Resume::AfterNmi { .. },
                ..
            }]
        ),
        "{e:#?}"
    );
    // A test alone is not carried on.
    let mut active = World::new();
    let id = active
        .core
        .test_reset(active.now, "node02", subsystem_of("node02"), &mut out)
        .expect("a test reset");
    active.step(id, Step::NmiIssued);
    let (_, e) = take_over_from(&active);
    assert!(started(&e).is_none(), "{e:#?}");
}

/// Issue 16: a fence agent's reboot is a real reset (no requester on the reset path, the
/// reset log says `----`), joins a reset in flight, and is refused during an operator's
/// test; its end is an `Ended` effect with what proved it.
#[test]
fn a_fence_agents_reboot_is_the_full_reset_and_ends_with_its_evidence() {
    let mut w = World::new();
    w.check("node02");
    let mut out = Vec::new();
    let id = w
        .core
        .fence_reset(w.now, "node02", &mut out)
        .expect("started");
    assert!(
        matches!(
            out.as_slice(),
            [Effect::Start {
                test: false,
                resume: Resume::Fresh,
                ..
            }]
        ),
        "{out:#?}"
    );
    // A second fence of the same node joins it.
    let mut again = Vec::new();
    assert_eq!(w.core.fence_reset(w.now, "node02", &mut again), Ok(id));
    assert!(again.is_empty(), "{again:#?}");
    // A requester's check-in cannot make it a test: the NMI, no stop notice, the hard reset.
    w.step(id, Step::NmiIssued);
    w.advance(Duration::from_millis(1500));
    w.step(id, Step::HardSent);
    w.step(id, Step::HardAcked);
    let e = w.done(id, Outcome::Rebooted);
    assert!(
        e.iter().any(|e| matches!(e, Effect::Ended { id: i, verdict: Ok(AttentionState::Reboot), .. } if *i == id)),
        "{e:#?}"
    );
    assert!(
        e.iter().any(|e| matches!(e, Effect::ResetLog(l) if l == "RM-RESET node02 2 SEND ---- ---- ---- P DUMP")),
        "{e:#?}"
    );
    assert_eq!(
        attentions(&e),
        vec![AttentionState::Reboot; attentions(&e).len()]
    );
    // A claim without its event is not believed: FAIL, and the Ended says why.
    let mut w = World::new();
    let mut out = Vec::new();
    let id = w.core.fence_reset(w.now, "node01", &mut out).unwrap();
    let e = w.done(id, Outcome::Dumped);
    assert!(
        e.iter().any(|e| matches!(
            e,
            Effect::Ended {
                verdict: Err(_),
                ..
            }
        )),
        "{e:#?}"
    );
    // Refused during an operator's test; unknown systems refused.
    let mut w = World::new();
    w.core
        .test_reset(w.now, "node03", subsystem_of("node03"), &mut out)
        .unwrap();
    assert!(w.core.fence_reset(w.now, "node03", &mut out).is_err());
    assert!(w.core.fence_reset(w.now, "nosuch", &mut out).is_err());
}
