//! Tests of the role core: tables of (history, input) → effects, and an exhaustive
//! exploration of a small world of two servers, a lossy mlan, BMCs that may be
//! unreachable, crashes, freezes, restarts and operators, checking on every reachable
//! state that at most one running server serves.

// The world is two servers indexed 0 and 1, each the other's peer (`1 - i`): index loops
// say that best.
#![allow(clippy::needless_range_loop)]

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::*;

fn name(s: &str) -> Name {
    Name::parse(s).unwrap()
}

const T: Timing = Timing {
    interval: Duration::from_millis(100),
    misses: 3,
    startup_grace: Duration::from_millis(1000),
    fence_retry: Duration::from_millis(500),
};

struct One {
    core: RoleCore,
    t0: Instant,
    now: Instant,
    seq: u64,
}

impl One {
    fn new(me: &str, peer: &str) -> One {
        let t0 = Instant::now();
        One {
            core: RoleCore::new(name(me), 100, name(peer), T, t0),
            t0,
            now: t0,
            seq: 0,
        }
    }

    fn at(&mut self, ms: u64) -> &mut Self {
        self.now = self.t0 + Duration::from_millis(ms);
        self
    }

    fn feed(&mut self, input: Input) -> Vec<Effect> {
        let mut out = Vec::new();
        self.core.handle(self.now, input, &mut out);
        out
    }

    fn beat(&mut self, role: Role, incarnation: u64) -> Vec<Effect> {
        self.seq += 1;
        self.feed(Input::Heartbeat(Heartbeat {
            role,
            incarnation,
            seq: self.seq,
            heard: Some(100),
        }))
    }
}

fn serves(out: &[Effect]) -> Option<Reason> {
    out.iter().find_map(|e| match e {
        Effect::Serve(r) => Some(*r),
        _ => None,
    })
}

fn fences(out: &[Effect]) -> Option<Reason> {
    out.iter().find_map(|e| match e {
        Effect::Fence(r) => Some(*r),
        _ => None,
    })
}

#[test]
fn two_undecided_servers_elect_the_lower_name() {
    let mut a = One::new("ms01", "ms02");
    assert_eq!(
        serves(&a.at(10).beat(Role::Undecided, 7)),
        Some(Reason::Elected)
    );
    assert!(a.core.serving());
    let mut b = One::new("ms02", "ms01");
    let out = b.at(10).beat(Role::Undecided, 7);
    assert!(out.is_empty(), "the higher name waits: {out:?}");
    assert_eq!(b.core.role(), Role::Undecided);
    b.at(20).beat(Role::Active, 7);
    assert_eq!(b.core.role(), Role::Standby);
    assert!(b.core.view(b.now).redundant);
    assert!(!b.core.view(b.now + T.lost_after()).redundant);
    assert!(a.at(30).beat(Role::Standby, 7).is_empty());
    assert!(a.core.view(a.now).redundant);
}

#[test]
fn an_election_needs_the_peers_word_given_after_it_heard_this_run() {
    // Found by the exploration: the peer's "undecided" sent before it heard this server
    // (here: before an operator made it active) must not elect this one.
    let mut a = One::new("ms01", "ms02");
    let out = a.at(10).feed(Input::Heartbeat(Heartbeat {
        role: Role::Undecided,
        incarnation: 7,
        seq: 1,
        heard: None,
    }));
    assert!(out.is_empty() && !a.core.serving(), "{out:?}");
    let out = a.at(20).feed(Input::Heartbeat(Heartbeat {
        role: Role::Undecided,
        incarnation: 7,
        seq: 2,
        heard: Some(99),
    }));
    assert!(out.is_empty(), "heard an older run of ms01: {out:?}");
    a.seq = 2;
    assert_eq!(
        serves(&a.at(30).beat(Role::Undecided, 7)),
        Some(Reason::Elected)
    );
}

#[test]
fn a_starting_server_follows_an_active_peer_whatever_its_name() {
    let mut a = One::new("ms01", "ms02");
    let out = a.at(10).beat(Role::Active, 3);
    assert!(serves(&out).is_none() && fences(&out).is_none(), "{out:?}");
    assert_eq!(a.core.role(), Role::Standby);
}

#[test]
fn silence_at_start_up_means_fencing_after_the_grace_never_before() {
    let mut a = One::new("ms02", "ms01");
    for ms in (0..1000).step_by(100) {
        let out = a.at(ms).feed(Input::Tick);
        assert!(out.is_empty(), "at {ms} ms: {out:?}");
    }
    let out = a.at(1000).feed(Input::Tick);
    assert_eq!(fences(&out), Some(Reason::NoPeerAtStart), "{out:?}");
    assert!(
        !a.core.serving(),
        "never serving before the fence is confirmed"
    );
    assert!(
        a.at(1100).feed(Input::Tick).is_empty(),
        "one fence at a time"
    );
    let out = a.at(1200).feed(Input::FenceDone(Ok("acknowledged".into())));
    assert_eq!(serves(&out), Some(Reason::NoPeerAtStart));
}

#[test]
fn a_lost_active_is_fenced_and_only_a_confirmed_fence_makes_this_one_active() {
    let mut b = One::new("ms02", "ms01");
    b.at(0).beat(Role::Active, 1);
    assert_eq!(b.core.role(), Role::Standby);
    // Lost after `misses` intervals: not one tick before.
    assert!(b.at(299).feed(Input::Tick).is_empty());
    let out = b.at(300).feed(Input::Tick);
    assert_eq!(fences(&out), Some(Reason::PeerLost), "{out:?}");
    let out = b
        .at(400)
        .feed(Input::FenceDone(Err("BMC 10.0.0.1: timed out".into())));
    assert!(serves(&out).is_none(), "{out:?}");
    assert_eq!(b.core.role(), Role::Standby);
    assert_eq!(b.core.blocked(), Some("BMC 10.0.0.1: timed out"));
    // Retried after fence_retry, not at every tick.
    assert!(b.at(800).feed(Input::Tick).is_empty());
    assert_eq!(fences(&b.at(900).feed(Input::Tick)), Some(Reason::PeerLost));
    let out = b.at(950).feed(Input::FenceDone(Ok("acknowledged".into())));
    assert_eq!(serves(&out), Some(Reason::PeerLost));
    assert_eq!(b.core.blocked(), None);
}

#[test]
fn a_standby_that_hears_its_active_again_stops_trying_to_fence() {
    let mut b = One::new("ms02", "ms01");
    b.at(0).beat(Role::Active, 1);
    b.at(300).feed(Input::Tick);
    b.at(400).feed(Input::FenceDone(Err("no answer".into())));
    b.at(500).beat(Role::Active, 1);
    assert_eq!(b.core.blocked(), None);
    assert!(b.at(700).feed(Input::Tick).is_empty());
}

#[test]
fn the_active_never_fences_and_never_gives_up_on_silence() {
    let mut a = One::new("ms01", "ms02");
    a.at(0).beat(Role::Undecided, 1);
    assert!(a.core.serving());
    for ms in (100..20_000).step_by(100) {
        let out = a.at(ms).feed(Input::Tick);
        assert!(out.is_empty(), "at {ms}: {out:?}");
    }
    assert!(a.core.serving());
    assert!(!a.core.view(a.now).redundant);
}

#[test]
fn handover_stops_serving_first_and_the_leaver_waits_for_the_new_active() {
    let mut a = One::new("ms01", "ms02");
    a.at(0).beat(Role::Undecided, 1);
    a.at(10).beat(Role::Standby, 1);
    let out = a.at(20).feed(Input::Handover);
    assert_eq!(out.first(), Some(&Effect::StopServing), "{out:?}");
    assert_eq!(a.core.role(), Role::Leaving);
    // The peer still says standby: the leaver does not take the role back.
    assert!(a.at(30).beat(Role::Standby, 1).is_empty());
    a.at(40).beat(Role::Active, 1);
    assert_eq!(a.core.role(), Role::Standby);

    let mut b = One::new("ms02", "ms01");
    b.at(0).beat(Role::Active, 1);
    assert_eq!(
        serves(&b.at(10).beat(Role::Leaving, 1)),
        Some(Reason::Handover)
    );
}

#[test]
fn a_leaver_whose_peer_dies_fences_it_before_serving_again() {
    let mut a = One::new("ms01", "ms02");
    a.at(0).beat(Role::Undecided, 1);
    a.at(10).beat(Role::Standby, 1);
    a.at(20).feed(Input::Handover);
    let out = a.at(310).feed(Input::Tick);
    assert_eq!(fences(&out), Some(Reason::PeerLost), "{out:?}");
    assert!(!a.core.serving());
}

#[test]
fn handover_and_confirmation_are_refused_when_unsafe() {
    let mut a = One::new("ms01", "ms02");
    let out = a.at(0).feed(Input::Handover);
    assert!(matches!(&out[..], [Effect::Refused(_)]), "{out:?}");
    a.at(10).beat(Role::Undecided, 1);
    assert!(a.core.serving());
    // Elected, but the peer is undecided, not standby yet.
    assert!(matches!(
        &a.at(20).feed(Input::Handover)[..],
        [Effect::Refused(_)]
    ));

    let mut b = One::new("ms02", "ms01");
    b.at(0).beat(Role::Active, 1);
    let out = b.at(10).feed(Input::ConfirmPeerDown);
    assert!(
        matches!(&out[..], [Effect::Refused(w)] if w.contains("alive")),
        "{out:?}"
    );
    let out = b.at(400).feed(Input::ConfirmPeerDown);
    assert_eq!(serves(&out), Some(Reason::Confirmed));
}

#[test]
fn two_actives_end_with_the_lower_name() {
    let mut b = One::new("ms02", "ms01");
    b.at(0).feed(Input::ConfirmPeerDown);
    assert!(b.core.serving());
    let out = b.at(10).beat(Role::Active, 4);
    assert_eq!(out.first(), Some(&Effect::StopServing), "{out:?}");
    assert!(!b.core.serving());
    let mut a = One::new("ms01", "ms02");
    a.at(0).beat(Role::Undecided, 1);
    assert!(a.at(10).beat(Role::Active, 1).is_empty());
    assert!(a.core.serving());
}

#[test]
fn an_older_heartbeat_of_the_same_run_is_ignored() {
    let mut a = One::new("ms01", "ms02");
    a.at(0).beat(Role::Undecided, 1);
    a.at(10).beat(Role::Standby, 1);
    a.at(20).feed(Input::Handover);
    a.seq = 10;
    a.at(30).beat(Role::Active, 1);
    assert_eq!(a.core.role(), Role::Standby);
    // A reordered standby from before (seq 5) must not look like "no active".
    a.seq = 4;
    let out = a.at(40).beat(Role::Standby, 1);
    assert!(out.is_empty() && !a.core.serving(), "{out:?}");
}

#[test]
fn heartbeats_in_flight_from_a_fenced_peer_do_not_demote_the_new_active() {
    let mut a = One::new("ms02", "ms01");
    a.at(0).beat(Role::Active, 1);
    a.at(300).feed(Input::Tick);
    a.at(350).feed(Input::FenceDone(Ok("acknowledged".into())));
    assert!(a.core.serving());
    assert!(a.at(360).beat(Role::Active, 1).is_empty());
    assert!(a.core.serving());
    // Much later the same run still speaks: the fence did not happen; it is said, and
    // the two-actives rule applies.
    let out = a.at(2000).beat(Role::Active, 1);
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::Log(l) if l.contains("STILL RUNS"))),
        "{out:?}"
    );
    assert!(!a.core.serving());
}

// --- exhaustive exploration ------------------------------------------------------------

/// The explored world's timing, coarse so that losses, start-up grace, retries and
/// reboots all happen within a few intervals.
const X: Timing = Timing {
    interval: Duration::from_millis(100),
    misses: 2,
    startup_grace: Duration::from_millis(400),
    fence_retry: Duration::from_millis(200),
};

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Proc {
    Running(RoleCore),
    Frozen(RoleCore),
    Dead,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct World {
    clock: u32,
    procs: [Proc; 2],
    incarnation: [u64; 2],
    seq: [u64; 2],
    /// Heartbeats sent this interval and not yet delivered, per direction (from i).
    wire: [Vec<Heartbeat>; 2],
    link_up: bool,
    /// Whether each server's BMC answers (fencing *that* server works).
    bmc_ok: [bool; 2],
    /// A fence asked for by server i of its peer, not yet ended.
    fencing: [bool; 2],
    budget: Budget,
    /// A rule of the world the cores broke (checked with the invariant).
    broken: Option<String>,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct Budget {
    crashes: u8,
    freezes: u8,
    boots: u8,
    link_toggles: u8,
    bmc_toggles: u8,
    operator: u8,
}

const NAMES: [&str; 2] = ["ms01", "ms02"];

impl World {
    fn new(t0: Instant, budget: Budget) -> World {
        let core = |i: usize| RoleCore::new(name(NAMES[i]), 1, name(NAMES[1 - i]), X, t0);
        World {
            clock: 0,
            procs: [Proc::Running(core(0)), Proc::Running(core(1))],
            incarnation: [1, 1],
            seq: [0, 0],
            wire: [Vec::new(), Vec::new()],
            link_up: true,
            bmc_ok: [true, true],
            fencing: [false, false],
            budget,
            broken: None,
        }
    }

    fn now(&self, t0: Instant) -> Instant {
        t0 + X.interval * self.clock
    }

    /// Feeds server i and applies what the world itself must do with the effects.
    fn feed(&mut self, i: usize, t0: Instant, input: Input) {
        let now = self.now(t0);
        let Proc::Running(core) = &mut self.procs[i] else {
            return;
        };
        let mut out = Vec::new();
        core.handle(now, input, &mut out);
        for e in out {
            match e {
                Effect::Fence(_) => {
                    if self.fencing[i] {
                        self.broken = Some(format!(
                            "{} asked for a second fence while one runs",
                            NAMES[i]
                        ));
                    }
                    self.fencing[i] = true;
                }
                Effect::Serve(_) | Effect::StopServing => {}
                Effect::Log(_) | Effect::Refused(_) => {}
            }
        }
    }

    fn serving(&self) -> Vec<usize> {
        (0..2)
            .filter(|&i| match &self.procs[i] {
                Proc::Running(c) | Proc::Frozen(c) => c.serving(),
                Proc::Dead => false,
            })
            .collect()
    }

    /// Every world one event away.
    fn next(&self, t0: Instant, max_clock: u32) -> Vec<(String, World)> {
        let mut out = Vec::new();
        if self.clock < max_clock {
            let mut w = self.clone();
            w.clock += 1;
            // A datagram is delivered within an interval or lost.
            w.wire = [Vec::new(), Vec::new()];
            for i in 0..2 {
                w.feed(i, t0, Input::Tick);
                if let Proc::Running(c) = &w.procs[i] {
                    w.seq[i] += 1;
                    if w.link_up {
                        w.wire[i].push(c.heartbeat(w.seq[i]));
                    }
                }
            }
            out.push(("tick".to_string(), w));
        }
        for from in 0..2 {
            for k in 0..self.wire[from].len() {
                let mut w = self.clone();
                let beat = w.wire[from].remove(k);
                w.feed(1 - from, t0, Input::Heartbeat(beat));
                out.push((format!("deliver {from}->{} {beat:?}", 1 - from), w));
            }
        }
        for i in 0..2 {
            let peer = 1 - i;
            // The fence is the running daemon's task: a frozen one finishes it on SIGCONT.
            if self.fencing[i] && matches!(self.procs[i], Proc::Running(_)) {
                let mut w = self.clone();
                w.fencing[i] = false;
                if w.bmc_ok[peer] {
                    w.procs[peer] = Proc::Dead;
                    w.fencing[peer] = false;
                    w.feed(i, t0, Input::FenceDone(Ok("acknowledged".into())));
                    out.push((format!("{} fenced {}", NAMES[i], NAMES[peer]), w));
                } else {
                    w.feed(i, t0, Input::FenceDone(Err("no answer".into())));
                    out.push((format!("{} failed to fence", NAMES[i]), w));
                }
            }
            if self.budget.crashes > 0 && !matches!(self.procs[i], Proc::Dead) {
                let mut w = self.clone();
                w.budget.crashes -= 1;
                w.procs[i] = Proc::Dead;
                w.fencing[i] = false;
                out.push((format!("kill -9 {}", NAMES[i]), w));
            }
            if let Proc::Running(c) = &self.procs[i]
                && self.budget.freezes > 0
            {
                let mut w = self.clone();
                w.budget.freezes -= 1;
                w.procs[i] = Proc::Frozen(c.clone());
                out.push((format!("SIGSTOP {}", NAMES[i]), w));
            }
            if let Proc::Frozen(c) = &self.procs[i] {
                let mut w = self.clone();
                w.procs[i] = Proc::Running(c.clone());
                w.feed(i, t0, Input::Tick);
                out.push((format!("SIGCONT {}", NAMES[i]), w));
            }
            if matches!(self.procs[i], Proc::Dead) && self.budget.boots > 0 {
                let mut w = self.clone();
                w.budget.boots -= 1;
                w.incarnation[i] += 1;
                w.seq[i] = 0;
                w.procs[i] = Proc::Running(RoleCore::new(
                    name(NAMES[i]),
                    w.incarnation[i],
                    name(NAMES[peer]),
                    X,
                    self.now(t0),
                ));
                out.push((format!("boot {}", NAMES[i]), w));
            }
            if self.budget.bmc_toggles > 0 {
                let mut w = self.clone();
                w.budget.bmc_toggles -= 1;
                w.bmc_ok[i] = !w.bmc_ok[i];
                out.push((format!("BMC of {} ok={}", NAMES[i], w.bmc_ok[i]), w));
            }
            if self.budget.operator > 0 && matches!(self.procs[i], Proc::Running(_)) {
                let mut w = self.clone();
                w.budget.operator -= 1;
                w.feed(i, t0, Input::Handover);
                out.push((format!("act restart on {}", NAMES[i]), w));
                // An operator confirms only a peer that is really down.
                if matches!(self.procs[peer], Proc::Dead) {
                    let mut w = self.clone();
                    w.budget.operator -= 1;
                    w.feed(i, t0, Input::ConfirmPeerDown);
                    out.push((format!("confirm {} down on {}", NAMES[peer], NAMES[i]), w));
                }
            }
        }
        if self.budget.link_toggles > 0 {
            let mut w = self.clone();
            w.budget.link_toggles -= 1;
            w.link_up = !w.link_up;
            if !w.link_up {
                w.wire = [Vec::new(), Vec::new()];
            }
            out.push((format!("mlan up={}", w.link_up), w));
        }
        out
    }
}

/// Breadth-first over every world reachable within `max_clock` intervals; returns how
/// many distinct worlds were seen, panicking with the path to the first that breaks
/// the invariant.
fn explore(
    max_clock: u32,
    budget: Budget,
    mut check: impl FnMut(&World, Instant) -> Result<(), String>,
) -> usize {
    let t0 = Instant::now();
    let start = World::new(t0, budget);
    let mut seen: HashSet<World> = HashSet::new();
    // How each world was first reached: (parent, step), for the report.
    let mut steps: Vec<(usize, String)> = vec![(0, String::new())];
    let mut queue: VecDeque<(World, usize)> = VecDeque::new();
    seen.insert(start.clone());
    queue.push_back((start, 0));
    let path = |steps: &[(usize, String)], mut at: usize| {
        let mut p = Vec::new();
        while at != 0 {
            p.push(steps[at].1.clone());
            at = steps[at].0;
        }
        p.reverse();
        p.join("\n  ")
    };
    while let Some((w, at)) = queue.pop_front() {
        if let Some(why) = &w.broken {
            panic!("{why}\nafter:\n  {}", path(&steps, at));
        }
        if let Err(why) = check(&w, t0) {
            panic!("{why}\nafter:\n  {}", path(&steps, at));
        }
        for (step, next) in w.next(t0, max_clock) {
            if !seen.contains(&next) {
                seen.insert(next.clone());
                steps.push((at, step));
                queue.push_back((next, steps.len() - 1));
            }
        }
    }
    seen.len()
}

fn at_most_one_serves(w: &World, _: Instant) -> Result<(), String> {
    if w.serving().len() > 1 {
        return Err(format!("both servers serve: {w:#?}"));
    }
    Ok(())
}

/// The worlds explored: each a budget of faults and a number of intervals, small enough
/// to run in seconds; `HACONN_DEEP_EXPLORE=1` adds two intervals to each (minutes).
fn budgets() -> [(u32, Budget); 3] {
    let deep = if std::env::var_os("HACONN_DEEP_EXPLORE").is_some() {
        2
    } else {
        0
    };
    let none = Budget {
        crashes: 0,
        freezes: 0,
        boots: 0,
        link_toggles: 0,
        bmc_toggles: 0,
        operator: 0,
    };
    [
        // Crash, reboot and an operator (handover or a confirmation) with a BMC that
        // may stop answering.
        (
            6 + deep,
            Budget {
                crashes: 1,
                boots: 1,
                operator: 1,
                bmc_toggles: 1,
                ..none.clone()
            },
        ),
        // The mlan cut and healed, a BMC that may stop answering, a reboot.
        (
            7 + deep,
            Budget {
                link_toggles: 2,
                bmc_toggles: 1,
                boots: 1,
                ..none.clone()
            },
        ),
        // A frozen server (SIGSTOP/SIGCONT), a crash, an mlan cut.
        (
            8 + deep,
            Budget {
                freezes: 1,
                crashes: 1,
                link_toggles: 1,
                ..none
            },
        ),
    ]
}

#[test]
fn exhaustively_never_two_running_servers_serve() {
    for (clock, budget) in budgets() {
        let t = std::time::Instant::now();
        let worlds = explore(clock, budget.clone(), at_most_one_serves);
        eprintln!("{worlds} worlds in {:?}", t.elapsed());
        assert!(worlds > 1000, "{budget:?}: too small: {worlds} worlds");
    }
}

#[test]
fn exhaustively_a_lone_live_server_with_a_working_fence_ends_up_serving() {
    // Liveness in the small: from every reachable world where one server runs, its peer
    // is dead for good and the peer's BMC answers, enough ticks make the live one serve.
    let (clock, budget) = budgets()[0].clone();
    explore(clock, budget, |w, t0| {
        for i in 0..2 {
            let peer = 1 - i;
            if matches!(w.procs[i], Proc::Running(_))
                && matches!(w.procs[peer], Proc::Dead)
                && w.bmc_ok[peer]
                && w.budget.boots == 0
            {
                let mut v = w.clone();
                v.budget.bmc_toggles = 0;
                for _ in 0..10 {
                    v = v
                        .next(t0, u32::MAX)
                        .into_iter()
                        .find(|(s, _)| s == "tick")
                        .expect("time can always pass")
                        .1;
                    if v.fencing[i] {
                        v.fencing[i] = false;
                        v.feed(i, t0, Input::FenceDone(Ok("acknowledged".into())));
                    }
                }
                if v.serving() != [i] {
                    return Err(format!("{} never took over: {v:#?}", NAMES[i]));
                }
            }
        }
        Ok(())
    });
}
