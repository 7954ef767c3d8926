//! Properties of the running pipeline over random interleavings (real UDP on 127.0.0.1,
//! simulated hardware, hispeed 1000 ms): checks, reset requests among four systems plus
//! an unknown one (crossing pairs with the same pair#, wrong subsystems, self-resets),
//! stop reports, devices that refuse (or hang, in the second test), powered-off nodes,
//! and reloads through the daemon's own plan → merge → guards → commit path.
//!
//! Everything is timestamped on one clock: when each datagram left and arrived, and when
//! each device call started and ended. The pipeline's internal instants (when it admitted
//! a request, when a reset ended) are only known to lie between such timestamps, so each
//! check flags only what is certainly wrong whatever the exact instants were.
//!
//! Properties, per case:
//! - replies: every reset request gets exactly one ACCEPTED-or-refusal reply and, when
//!   accepted, exactly one final reply (within a bounded wait); refusals that follow
//!   from the request alone (unknown system, own reset, wrong subsystem) are ERROR;
//! - no reset without a request: every NMI, hard reset or outlet cut of a system follows
//!   an accepted request for it, and it is reset no more times than it was asked;
//! - pairs: a system being reset, or reset and not yet back (no check since), never gets
//!   a reset admitted — so of a crossing pair only the first request is carried out;
//! - no report without the event: DUMP needs a stop report (during the reset, or before
//!   it while no reset of that system ran) and an acknowledged NMI, REBOOT an
//!   acknowledged hard reset or every outlet of the server cut, POFF a power query that
//!   said off — for attention notifications and final replies alike; a requester told
//!   DUMP or POFF is sent the matching attention (one per address and reset, carrying
//!   one of its request numbers), and an attention never names a request it does not
//!   answer;
//! - reloads: a refused commit changes nothing; a swapped one leaves every server that
//!   was being reset across it (and the PDUs feeding it) as it was.

mod pipeline_harness;

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use haconn::backend::PowerState;
use haconn::backend::sim::{Behavior, DeviceId};
use haconn::log::LogSink;
use haconn::pipeline::{Pipeline, PipelineConfig};
use haconn::plan::merge::{guards, merge};
use haconn::plan::plan;
use haconn::resetpath::codec::{AttentionState, Message, ResetResult};
use haconn::spec::model::Spec;
use pipeline_harness::{Answer, Call, Lab, Net, Op, ip};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// node01..node05 and a name no spec holds.
const SYSTEMS: [&str; 6] = ["node01", "node02", "node03", "node04", "node05", "ghost01"];
const GHOST: usize = 5;
/// The dump agents' socket.
const AGENT: &str = "agent";

fn subsystem(i: usize) -> u32 {
    if i == GHOST { 99 } else { i as u32 + 1 }
}

/// pair#: node01/node02 and node03/node04 are mutual-standby pairs.
fn pair(i: usize) -> Option<u32> {
    match i {
        0 | 1 => Some(1),
        2 | 3 => Some(2),
        4 => Some(3),
        _ => None,
    }
}

fn bmc_of(system: &str) -> Option<DeviceId> {
    let n: u8 = system.strip_prefix("node0")?.parse().ok()?;
    Some(DeviceId::Bmc(ip(&format!("127.0.0.1{n}"))))
}

/// Every outlet feeding a server (the same in every variant; only `enabled` changes).
fn outlets_of(system: &str) -> &'static [(&'static str, u16)] {
    match system {
        "node01" => &[("127.0.0.21", 1), ("127.0.0.22", 1)],
        "node02" => &[("127.0.0.21", 2), ("127.0.0.22", 2)],
        "node04" => &[("127.0.0.21", 3)],
        _ => &[],
    }
}

/// Which system a device call touches.
fn system_of(call: &Call) -> Option<&'static str> {
    match (&call.device, call.op) {
        (DeviceId::Bmc(_), _) => SYSTEMS[..5]
            .iter()
            .find(|s| bmc_of(s).as_ref() == Some(&call.device))
            .copied(),
        (DeviceId::Pdu(a), Op::Outlet { outlet, .. }) => SYSTEMS[..5]
            .iter()
            .find(|s| {
                outlets_of(s)
                    .iter()
                    .any(|(p, o)| ip(p) == *a && *o == outlet)
            })
            .copied(),
        _ => None,
    }
}

/// The spec variants reloads move between. 0 is the start.
fn variant(v: usize) -> Spec {
    let (timeout01, cluster03, ipdu04, pdu22_port, node05) = match v {
        0 => (5, true, true, 161, false),
        1 => (6, true, true, 161, false),
        2 => (5, true, false, 161, false),
        3 => (5, false, true, 161, false),
        4 => (5, true, true, 161, true),
        _ => (5, true, true, 1161, false),
    };
    let node05 = if node05 {
        "  - {name: node05, bmc: {address: 127.0.0.15, username: admin, password: labpassw0rd}, cluster: true}\n"
    } else {
        ""
    };
    pipeline_harness::spec(&format!(
        r#"
apiVersion: haconn/v1
mode: single
resetPath: {{address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: {{key: "0123456789abcdef0123"}}}}
hispeed: 1000
snmp: {{community: lab}}
pdus:
  - {{address: 127.0.0.21, model: IBM_PDU}}
  - {{address: 127.0.0.22, model: IBM_PDU, port: {pdu22_port}}}
managementServers:
  - name: ms01
    bmc: {{address: 127.0.0.2, username: admin, password: labpassw0rd}}
    mlan: {{address: 127.0.0.1, port: 15002}}
servers:
  - name: node01
    bmc: {{address: 127.0.0.11, username: admin, password: labpassw0rd}}
    cluster: true
    ipdu: {{timeout: {timeout01}, recoveryTime: 0, outlets: [{{pdu: 127.0.0.21, outlet: 1}}, {{pdu: 127.0.0.22, outlet: 1}}]}}
  - name: node02
    bmc: {{address: 127.0.0.12, username: admin, password: labpassw0rd}}
    cluster: true
    ipdu: {{timeout: 5, recoveryTime: 5, outlets: [{{pdu: 127.0.0.21, outlet: 2}}, {{pdu: 127.0.0.22, outlet: 2}}]}}
  - name: node03
    bmc: {{address: 127.0.0.13, username: admin, password: labpassw0rd}}
    cluster: {cluster03}
  - name: node04
    bmc: {{address: 127.0.0.14, username: admin, password: labpassw0rd}}
    cluster: true
    ipdu: {{enabled: {ipdu04}, timeout: 5, recoveryTime: 0, outlets: [{{pdu: 127.0.0.21, outlet: 3}}]}}
{node05}"#
    ))
}

const VARIANTS: usize = 6;

#[derive(Debug, Clone, Copy)]
enum BmcMode {
    Works,
    Refuses,
    PowerOff,
    PowerOn,
}

/// Which subsystem# of a reset request is wrong, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrong {
    Neither,
    Requester,
    Target,
}

#[derive(Debug, Clone)]
enum Act {
    Check(usize),
    Reset {
        from: usize,
        to: usize,
        wrong: Wrong,
    },
    /// Both systems of a pair ask for each other's reset, back to back.
    Cross(usize),
    Stopped(usize),
    /// The dump agent of the latest accepted request's target reports.
    StoppedLatest,
    Bmc(usize, BmcMode),
    PduRefuses(usize, bool),
    /// The BMC stops answering hard resets (or answers again).
    HardHangs(usize, bool),
    Reload(usize),
    /// Waits until every accepted request has its final reply.
    Settle,
    /// A reload to a variant that changes the latest accepted request's target (or a
    /// PDU feeding it), most likely while it is being reset.
    ReloadLatest,
    Pause(u64),
}

/// A system for a request: mostly the four nodes, sometimes node05 (known only after a
/// reload adds it) or a name no spec holds.
fn someone() -> impl Strategy<Value = usize> {
    prop_oneof![
        16 => 0..4usize,
        1 => Just(4usize),
        1 => Just(GHOST),
    ]
}

fn wrong() -> impl Strategy<Value = Wrong> {
    prop_oneof![
        18 => Just(Wrong::Neither),
        1 => Just(Wrong::Requester),
        1 => Just(Wrong::Target),
    ]
}

fn acts(hangs: bool) -> BoxedStrategy<Act> {
    let bmc = prop_oneof![
        2 => Just(BmcMode::Works),
        2 => Just(BmcMode::Refuses),
        2 => Just(BmcMode::PowerOff),
        1 => Just(BmcMode::PowerOn),
    ];
    let common = prop_oneof![
        3 => (0..SYSTEMS.len()).prop_map(Act::Check),
        8 => (someone(), someone(), wrong()).prop_map(|(from, to, wrong)| Act::Reset {
            from,
            to,
            wrong,
        }),
        3 => (0..2usize).prop_map(Act::Cross),
        1 => (0..5usize).prop_map(Act::Stopped),
        3 => Just(Act::StoppedLatest),
        3 => (0..4usize, bmc).prop_map(|(i, m)| Act::Bmc(i, m)),
        1 => (0..2usize, any::<bool>()).prop_map(|(p, r)| Act::PduRefuses(p, r)),
        2 => (0..VARIANTS).prop_map(Act::Reload),
        2 => Just(Act::ReloadLatest),
        1 => Just(Act::Settle),
        3 => (0..200u64).prop_map(Act::Pause),
    ];
    if !hangs {
        return common.boxed();
    }
    let hang = (0..2usize, prop::bool::weighted(0.7)).prop_map(|(i, h)| Act::HardHangs(i, h));
    prop_oneof![10 => common, 1 => hang].boxed()
}

#[derive(Debug)]
struct Case {
    /// Systems whose monitor checks before anything else.
    registered: Vec<bool>,
    /// Per BMC (node01..node05) and PDU: the simulated answer delay, ms.
    bmc_delay: Vec<u64>,
    pdu_delay: Vec<u64>,
    /// Per BMC of node01..node04: refuses everything from the start.
    bmc_refuses: Vec<bool>,
    /// Per PDU: refuses to switch outlets from the start.
    pdu_refuses: Vec<bool>,
    /// Per BMC of node01, node02: hard resets hang from the start.
    hard_hangs: Vec<bool>,
    acts: Vec<Act>,
}

fn cases(hangs: bool, max_acts: usize) -> impl Strategy<Value = Case> {
    let hard_hangs = if hangs {
        // At least one of the two iPDU servers hangs on hard resets.
        prop_oneof![
            Just(vec![true, false]),
            Just(vec![false, true]),
            Just(vec![true, true]),
        ]
        .boxed()
    } else {
        Just(vec![false, false]).boxed()
    };
    (
        prop::collection::vec(prop::bool::weighted(0.7), 5),
        prop::collection::vec(0..20u64, 5),
        prop::collection::vec(0..20u64, 2),
        prop::collection::vec(prop::bool::weighted(0.2), 4),
        prop::collection::vec(prop::bool::weighted(0.2), 2),
        hard_hangs,
        prop::collection::vec(acts(hangs), 1..=max_acts),
    )
        .prop_map(
            |(registered, bmc_delay, pdu_delay, bmc_refuses, pdu_refuses, hard_hangs, mut acts)| {
                // Make sure a reset meets the hang: node03 asks for the first hanging node's.
                if let Some(to) = hard_hangs.iter().position(|h| *h) {
                    acts.insert(
                        0,
                        Act::Reset {
                            from: 2,
                            to,
                            wrong: Wrong::Neither,
                        },
                    );
                }
                Case {
                    registered,
                    bmc_delay,
                    pdu_delay,
                    bmc_refuses,
                    pdu_refuses,
                    hard_hangs,
                    acts,
                }
            },
        )
}

/// A reset request as sent.
#[derive(Debug, Clone)]
struct Req {
    req: u32,
    from: usize,
    to: usize,
    wrong: Wrong,
    /// Whether `from` had a resettable check answered before this was sent (a registered
    /// monitor's subsystem is checked).
    from_registered: bool,
    to_registered: bool,
    sent: Instant,
}

#[derive(Debug, Clone)]
struct CheckRec {
    system: usize,
    sent: Instant,
    answered: Instant,
    resettable: bool,
}

#[derive(Debug, Clone)]
struct StoppedRec {
    system: usize,
    sent: Instant,
    acked: Instant,
}

#[derive(Debug, Clone)]
struct ReloadRec {
    to: usize,
    start: Instant,
    end: Instant,
    before: Arc<Spec>,
    after: Arc<Spec>,
    violated: Vec<usize>,
    swapped: bool,
}

/// Everything a case did and saw.
#[derive(Debug, Default)]
struct Trace {
    reqs: Vec<Req>,
    checks: Vec<CheckRec>,
    stopped: Vec<StoppedRec>,
    reloads: Vec<ReloadRec>,
    calls: Vec<Call>,
    sim_calls: Vec<(Instant, haconn::backend::sim::SimEvent)>,
    received: Vec<pipeline_harness::Received>,
    /// Final replies that did not come within the wait, by request.
    unanswered: Vec<u32>,
}

struct Driver {
    lab: Arc<Lab>,
    net: Net,
    pipeline: Option<Pipeline>,
    thread: Option<haconn::pipeline::PipelineThread>,
    rt: tokio::runtime::Runtime,
    variants: Vec<Arc<Spec>>,
    next_req: u32,
    /// How long a reset may take here.
    settle_limit: Duration,
    trace: Trace,
}

const REPLY_WAIT: Duration = Duration::from_secs(2);

impl Driver {
    fn start(case: &Case, variants: &[Arc<Spec>], settle_limit: Duration) -> Driver {
        let lab = Lab::new();
        for (i, d) in case.bmc_delay.iter().enumerate() {
            let dev = bmc_of(SYSTEMS[i]).unwrap();
            lab.sim.set(dev, |s| s.delay = Duration::from_millis(*d));
        }
        for (i, r) in case.bmc_refuses.iter().enumerate() {
            if *r {
                let dev = bmc_of(SYSTEMS[i]).unwrap();
                lab.sim.set(dev, |s| s.behavior = Behavior::Refuses);
            }
        }
        for (i, h) in case.hard_hangs.iter().enumerate() {
            if *h {
                lab.rule(bmc_of(SYSTEMS[i]).unwrap(), Op::Hard, Behavior::Hangs);
            }
        }
        for (i, (d, r)) in case.pdu_delay.iter().zip(&case.pdu_refuses).enumerate() {
            let dev = DeviceId::Pdu(ip(&format!("127.0.0.2{}", i + 1)));
            lab.sim.set(dev, |s| {
                s.delay = Duration::from_millis(*d);
                if *r {
                    s.behavior = Behavior::Refuses;
                }
            });
        }
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let config = PipelineConfig {
            backends: lab.backends(),
            reset_path: Some(sock),
            fence_kdump: None,
            reset_log: LogSink::discard(),
            error_log: LogSink::discard(),
            monitor_expiry: Duration::from_secs(60),
            watch: None,
        };
        let (pipeline, thread) = Pipeline::start((*variants[0]).clone(), config).unwrap();
        let mut net = Net::new(addr);
        for s in SYSTEMS {
            net.open(s);
        }
        net.open(AGENT);
        Driver {
            lab,
            net,
            pipeline: Some(pipeline),
            thread: Some(thread),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            variants: variants.to_vec(),
            next_req: 1,
            settle_limit,
            trace: Trace::default(),
        }
    }

    fn pipeline(&self) -> &Pipeline {
        self.pipeline.as_ref().expect("running")
    }

    fn count(&self, socket: &str, pred: impl Fn(&Message) -> bool) -> usize {
        self.net
            .received()
            .iter()
            .filter(|r| r.socket == socket && pred(&r.msg))
            .count()
    }

    fn registered(&self, i: usize) -> bool {
        self.trace
            .checks
            .iter()
            .any(|c| c.system == i && c.resettable)
    }

    /// The target of the latest accepted reset request.
    fn latest_target(&self) -> Option<usize> {
        let received = self.net.received();
        self.trace
            .reqs
            .iter()
            .rev()
            .find(|q| {
                received.iter().any(|r| {
                    matches!(&r.msg, Message::ResetReply { req, result: ResetResult::Accepted, .. }
                        if *req == q.req)
                })
            })
            .map(|q| q.to)
    }

    fn check(&mut self, i: usize) -> Result<(), TestCaseError> {
        let name = SYSTEMS[i];
        let is_reply =
            |m: &Message| matches!(m, Message::CheckReply { system, .. } if system == name);
        let seen = self.count(name, is_reply);
        let sent = self.net.send(
            name,
            Message::Check {
                system: name.into(),
                subsystem: subsystem(i),
                port: self.net.port(name),
                pair: pair(i),
            },
        );
        let got = self
            .net
            .wait_for_nth(REPLY_WAIT, seen, |r| r.socket == name && is_reply(&r.msg));
        let Some(got) = got else {
            return Err(TestCaseError::fail(format!("no check reply for {name}")));
        };
        let resettable = matches!(
            got.msg,
            Message::CheckReply {
                resettable: true,
                ..
            }
        );
        self.trace.checks.push(CheckRec {
            system: i,
            sent,
            answered: got.at,
            resettable,
        });
        Ok(())
    }

    fn send_reset(&mut self, from: usize, to: usize, wrong: Wrong) -> u32 {
        let req = self.next_req;
        self.next_req += 1;
        let subsystem_of = |i: usize, w: Wrong| subsystem(i) + if w == wrong { 100 } else { 0 };
        let (from_registered, to_registered) = (self.registered(from), self.registered(to));
        let sent = self.net.send(
            SYSTEMS[from],
            Message::Reset {
                req,
                system: SYSTEMS[from].into(),
                subsystem: subsystem_of(from, Wrong::Requester),
                port: self.net.port(SYSTEMS[from]),
                target_system: SYSTEMS[to].into(),
                target_subsystem: subsystem_of(to, Wrong::Target),
            },
        );
        self.trace.reqs.push(Req {
            req,
            from,
            to,
            wrong,
            from_registered,
            to_registered,
            sent,
        });
        req
    }

    fn first_reply(&self, req: u32) -> Result<(), TestCaseError> {
        self.net
            .wait_for(
                REPLY_WAIT,
                |r| matches!(&r.msg, Message::ResetReply { req: q, .. } if *q == req),
            )
            .map(drop)
            .ok_or_else(|| TestCaseError::fail(format!("no reply to request {req}")))
    }

    fn stopped(&mut self, i: usize) -> Result<(), TestCaseError> {
        let is_ack = |m: &Message| matches!(m, Message::StoppedAck { .. });
        let seen = self.count(AGENT, is_ack);
        let sent = self.net.send(
            AGENT,
            Message::Stopped {
                system: SYSTEMS[i].into(),
                subsystem: subsystem(i),
            },
        );
        let got = self
            .net
            .wait_for_nth(REPLY_WAIT, seen, |r| r.socket == AGENT && is_ack(&r.msg))
            .ok_or_else(|| TestCaseError::fail("no stopped-ack"))?;
        self.trace.stopped.push(StoppedRec {
            system: i,
            sent,
            acked: got.at,
        });
        Ok(())
    }

    /// A reload as the daemon does one: plan against the pipeline's facts, merge, commit
    /// with the guards.
    fn reload(&mut self, v: usize) -> Result<(), TestCaseError> {
        let desired = self.variants[v].clone();
        let pipeline = self.pipeline().clone();
        let start = Instant::now();
        let before = pipeline.live();
        let facts = self
            .rt
            .block_on(pipeline.facts())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let p = plan(&before, &desired, &facts);
        let merged = merge(&before, &desired, &p, |c| c.predicted.clone());
        let g = guards(&before, &desired, &p, &merged.results);
        let reply = self
            .rt
            .block_on(pipeline.commit(Arc::new(merged.spec.clone()), g))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let end = Instant::now();
        let after = pipeline.live();
        prop_assert_eq!(
            reply.replaced.is_some(),
            reply.violated.is_empty(),
            "a commit swaps exactly when no guard is violated"
        );
        if reply.replaced.is_some() {
            prop_assert_eq!(&*after, &merged.spec, "the merged spec is live");
        }
        self.trace.reloads.push(ReloadRec {
            to: v,
            start,
            end,
            before,
            after,
            swapped: reply.replaced.is_some(),
            violated: reply.violated,
        });
        Ok(())
    }

    fn act(&mut self, a: &Act) -> Result<(), TestCaseError> {
        match *a {
            Act::Check(i) => self.check(i)?,
            Act::Reset { from, to, wrong } => {
                let req = self.send_reset(from, to, wrong);
                self.first_reply(req)?;
            }
            Act::Cross(p) => {
                let (a, b) = (2 * p, 2 * p + 1);
                let r1 = self.send_reset(a, b, Wrong::Neither);
                let r2 = self.send_reset(b, a, Wrong::Neither);
                self.first_reply(r1)?;
                self.first_reply(r2)?;
            }
            Act::Stopped(i) => self.stopped(i)?,
            Act::StoppedLatest => {
                if let Some(to) = self.latest_target() {
                    self.stopped(to)?;
                }
            }
            Act::ReloadLatest => {
                if let Some(to) = self.latest_target() {
                    let live = self.pipeline().live();
                    let touches = |v: &Spec| {
                        let server = |spec: &Spec| {
                            spec.servers
                                .values()
                                .find(|x| x.name.as_str() == SYSTEMS[to])
                                .cloned()
                        };
                        server(v) != server(&live)
                            || outlets_of(SYSTEMS[to])
                                .iter()
                                .any(|(p, _)| v.pdus.get(&ip(p)) != live.pdus.get(&ip(p)))
                    };
                    if let Some(v) = (0..VARIANTS).find(|v| touches(&self.variants[*v])) {
                        self.reload(v)?;
                    }
                }
            }
            Act::Bmc(i, mode) => {
                let dev = bmc_of(SYSTEMS[i]).unwrap();
                self.lab.sim.set(dev, |d| match mode {
                    BmcMode::Works => d.behavior = Behavior::Works,
                    BmcMode::Refuses => d.behavior = Behavior::Refuses,
                    BmcMode::PowerOff => d.power = PowerState::Off,
                    BmcMode::PowerOn => d.power = PowerState::On,
                });
            }
            Act::PduRefuses(p, refuses) => {
                let dev = DeviceId::Pdu(ip(&format!("127.0.0.2{}", p + 1)));
                self.lab.sim.set(dev, |d| {
                    d.behavior = if refuses {
                        Behavior::Refuses
                    } else {
                        Behavior::Works
                    }
                });
            }
            Act::HardHangs(i, hangs) => {
                let dev = bmc_of(SYSTEMS[i]).unwrap();
                let b = if hangs {
                    Behavior::Hangs
                } else {
                    Behavior::Works
                };
                self.lab.rule(dev, Op::Hard, b);
            }
            Act::Reload(v) => self.reload(v)?,
            Act::Settle => {
                // Unanswered requests are reported by the final check.
                self.settle(self.settle_limit);
            }
            Act::Pause(ms) => std::thread::sleep(Duration::from_millis(ms)),
        }
        Ok(())
    }

    /// Waits (up to `limit`) for every accepted request's final reply; returns the
    /// requests left without one.
    fn settle(&self, limit: Duration) -> Vec<u32> {
        let deadline = Instant::now() + limit;
        let accepted: Vec<u32> = self
            .net
            .received()
            .iter()
            .filter_map(|r| match r.msg {
                Message::ResetReply {
                    req,
                    result: ResetResult::Accepted,
                    ..
                } => Some(req),
                _ => None,
            })
            .collect();
        accepted
            .into_iter()
            .filter(|req| {
                let left = deadline.saturating_duration_since(Instant::now());
                let got = self.net.wait_for(left, |r| {
                    matches!(&r.msg, Message::ResetReply { req: q, result, .. }
                        if q == req && *result != ResetResult::Accepted)
                });
                got.is_none()
            })
            .collect()
    }

    /// Waits for the final replies (see [`Driver::settle`]), lets stray datagrams
    /// arrive, stops the pipeline and collects the trace.
    fn finish(mut self) -> Trace {
        self.trace.unanswered = self.settle(self.settle_limit);
        // The attention to each requester follows its final reply; wait for it too (its
        // absence is reported by the final check).
        let deadline = Instant::now() + REPLY_WAIT;
        for q in &self.trace.reqs {
            let done = self.net.received().iter().any(|r| {
                matches!(&r.msg, Message::ResetReply { req, result: ResetResult::Dump | ResetResult::Poff, .. }
                    if *req == q.req)
            });
            if done {
                let left = deadline.saturating_duration_since(Instant::now());
                let from = SYSTEMS[q.from];
                self.net.wait_for(left, |r| {
                    r.socket == from
                        && matches!(&r.msg, Message::Attention { req: Some(n), .. } if *n == q.req)
                });
            }
        }
        // Whatever is still on its way (attention behind a final reply, a duplicate).
        self.net
            .wait_quiet(Duration::from_millis(150), Duration::from_secs(2));
        drop(self.pipeline.take());
        if let Some(t) = self.thread.take() {
            t.join();
        }
        let mut trace = std::mem::take(&mut self.trace);
        trace.calls = self.lab.calls();
        trace.sim_calls = self
            .lab
            .sim
            .calls()
            .into_iter()
            .map(|(t, e)| (t.into_std(), e))
            .collect();
        trace.received = self.net.received();
        trace
    }
}

/// One reset of one system as the device calls show it: from its power query (every
/// reset starts with one; nothing else queries power here) up to the next one.
#[derive(Debug)]
struct Run<'a> {
    start: Instant,
    calls: Vec<&'a Call>,
    /// No reset step of this run happened after the pipeline ended it, so it surely
    /// lasted until at least here (switch-ons after the recovery time excluded).
    lasted_until: Instant,
}

fn runs<'a>(trace: &'a Trace, system: &str) -> Vec<Run<'a>> {
    let mut out: Vec<Run> = Vec::new();
    for c in trace.calls.iter().filter(|c| system_of(c) == Some(system)) {
        if c.op == Op::Power {
            out.push(Run {
                start: c.start,
                calls: Vec::new(),
                lasted_until: c.start,
            });
        }
        let Some(run) = out.last_mut() else {
            // A call before any power query would be a reset step outside a reset.
            out.push(Run {
                start: c.start,
                calls: vec![c],
                lasted_until: c.start,
            });
            continue;
        };
        if matches!(c.op, Op::Outlet { on: true, .. }) {
            continue;
        }
        run.calls.push(c);
        run.lasted_until = run
            .lasted_until
            .max(c.end.as_ref().map_or(c.start, |(t, _)| *t));
    }
    out
}

fn ended_ok_before(c: &Call, t: Instant) -> bool {
    matches!(&c.end, Some((e, Answer::Done)) if *e < t)
}

/// What a run did that can justify a report.
struct Evidence {
    /// An acknowledged NMI and a stop report (before or after the acknowledgement: the
    /// node is stopped either way).
    dumped: bool,
    /// An acknowledged hard reset, or every outlet feeding the server cut.
    rebooted: bool,
    /// A power query that said off.
    power_off: bool,
}

/// The evidence of `run` for a report received at `t`. `created_after` bounds when the
/// pipeline can have started the run: a stop report acknowledged before then cannot
/// belong to it.
fn evidence(
    trace: &Trace,
    system: &str,
    run: &Run,
    created_after: Option<Instant>,
    t: Instant,
) -> Evidence {
    let idx = SYSTEMS.iter().position(|s| *s == system).unwrap();
    let nmi_ok = run
        .calls
        .iter()
        .any(|c| c.op == Op::Nmi && ended_ok_before(c, t));
    let stop_report = trace.stopped.iter().any(|s| {
        s.system == idx && s.sent < t && created_after.is_none_or(|after| s.acked > after)
    });
    let hard_ok = run
        .calls
        .iter()
        .any(|c| c.op == Op::Hard && ended_ok_before(c, t));
    let outlets = outlets_of(system);
    let all_cut = !outlets.is_empty()
        && outlets.iter().all(|(p, o)| {
            run.calls.iter().any(|c| {
                c.device == DeviceId::Pdu(ip(p))
                    && c.op
                        == Op::Outlet {
                            outlet: *o,
                            on: false,
                        }
                    && ended_ok_before(c, t)
            })
        });
    let power_off = run.calls.iter().any(|c| {
        c.op == Op::Power && matches!(&c.end, Some((e, Answer::Power(PowerState::Off))) if *e < t)
    });
    Evidence {
        dumped: nmi_ok && stop_report,
        rebooted: hard_ok || all_cut,
        power_off,
    }
}

/// Whether a run of `system` begun before `t` has the evidence for a report received at
/// `t`. Any such run, not just the latest: a datagram's arrival time is only an upper
/// bound of when it was sent (a busy machine may run the receiving thread late).
fn justified(trace: &Trace, system: &str, t: Instant, ok: impl Fn(&Evidence) -> bool) -> bool {
    let rs = runs(trace, system);
    let n = rs.iter().filter(|r| r.start < t).count();
    (0..n).any(|i| {
        let created_after = i.checked_sub(1).map(|j| rs[j].lasted_until);
        ok(&evidence(trace, system, &rs[i], created_after, t))
    })
}

/// Per request: its replies in order of arrival, and when.
fn replies(trace: &Trace) -> BTreeMap<u32, Vec<(Instant, ResetResult)>> {
    let mut out: BTreeMap<u32, Vec<(Instant, ResetResult)>> = BTreeMap::new();
    for r in &trace.received {
        if let Message::ResetReply { req, result, .. } = &r.msg {
            out.entry(*req).or_default().push((r.at, *result));
        }
    }
    out
}

fn check_properties(trace: &Trace) -> Result<(), TestCaseError> {
    let replies = replies(trace);
    let mut accepted_for: BTreeMap<usize, usize> = BTreeMap::new();
    let mut final_of: BTreeMap<u32, (Instant, ResetResult)> = BTreeMap::new();

    // Replies: exactly one first answer; exactly one final after ACCEPTED.
    prop_assert!(
        trace.unanswered.is_empty(),
        "no final reply to {:?}",
        trace.unanswered
    );
    for q in &trace.reqs {
        let got = replies.get(&q.req).cloned().unwrap_or_default();
        let results: Vec<ResetResult> = got.iter().map(|(_, r)| *r).collect();
        match results.as_slice() {
            [ResetResult::Error] | [ResetResult::Fail] => {}
            [
                ResetResult::Accepted,
                ResetResult::Dump | ResetResult::Poff | ResetResult::Fail,
            ] => {
                *accepted_for.entry(q.to).or_default() += 1;
                final_of.insert(q.req, got[1]);
            }
            other => prop_assert!(false, "request {} ({q:?}) got {:?}", q.req, other),
        }
        let static_error = q.from == GHOST
            || q.to == GHOST
            || q.from == q.to
            || (q.wrong == Wrong::Requester && q.from_registered)
            || (q.wrong == Wrong::Target && q.to_registered);
        if static_error {
            prop_assert_eq!(&results, &vec![ResetResult::Error], "request {:?}", q);
        }
    }
    let accepted = |q: &Req| final_of.contains_key(&q.req);
    let accept_time = |q: &Req| replies[&q.req][0].0;

    // No reset without a request (the simulator's own record, then runs per system).
    for (t, e) in &trace.sim_calls {
        use haconn::backend::sim::SimEvent;
        let touched: Vec<&str> = match e {
            SimEvent::Nmi(d) | SimEvent::HardReset(d) => SYSTEMS[..5]
                .iter()
                .filter(|s| bmc_of(s).as_ref() == Some(d))
                .copied()
                .collect(),
            SimEvent::Outlet {
                pdu,
                outlet,
                on: false,
            } => SYSTEMS[..5]
                .iter()
                .filter(|s| {
                    outlets_of(s)
                        .iter()
                        .any(|(p, o)| ip(p) == *pdu && o == outlet)
                })
                .copied()
                .collect(),
            _ => Vec::new(),
        };
        for s in touched {
            prop_assert!(
                trace
                    .reqs
                    .iter()
                    .any(|q| SYSTEMS[q.to] == s && accepted(q) && q.sent < *t),
                "{e:?} at {t:?}: nobody asked for {s}'s reset before"
            );
        }
    }
    for (i, s) in SYSTEMS[..5].iter().enumerate() {
        let rs = runs(trace, s);
        let asked = accepted_for.get(&i).copied().unwrap_or(0);
        prop_assert!(
            rs.len() <= asked,
            "{s}: {} resets for {asked} accepted requests",
            rs.len()
        );
        for r in &rs {
            prop_assert!(
                r.calls.first().is_some_and(|c| c.op == Op::Power),
                "{s}: a reset step outside a reset: {:?}",
                r.calls
            );
        }
    }

    // A system under reset, or reset and not back, has no reset admitted: the pair rule.
    for q in trace.reqs.iter().filter(|q| accepted(q)) {
        let requester = SYSTEMS[q.from];
        let (s, a) = (q.sent, accept_time(q));
        for r in runs(trace, requester) {
            prop_assert!(
                !(r.start < s && r.lasted_until > a),
                "request {} ({requester} → {}) admitted while {requester} was being reset \
                 (reset from {:?} to at least {:?}; request {:?}..{:?})",
                q.req,
                SYSTEMS[q.to],
                r.start,
                r.lasted_until,
                s,
                a
            );
        }
        for earlier in trace.reqs.iter().filter(|e| e.to == q.from) {
            let Some(&(f, result)) = final_of.get(&earlier.req) else {
                continue;
            };
            if f >= s || result == ResetResult::Fail {
                continue;
            }
            // The reset that answered `earlier` ended after it was admitted and after the
            // last power query before its acceptance reached us.
            let ended_after = runs(trace, requester)
                .iter()
                .filter(|r| r.start < accept_time(earlier))
                .map(|r| r.start)
                .max()
                .map_or(earlier.sent, |t| t.max(earlier.sent));
            let came_back = trace.checks.iter().any(|c| {
                c.system == q.from && c.resettable && c.answered >= ended_after && c.sent < s
            });
            prop_assert!(
                came_back,
                "request {} ({requester} → {}) admitted although {requester} was reset \
                 ({result:?} to request {}) and has not checked since",
                q.req,
                SYSTEMS[q.to],
                earlier.req
            );
        }
    }

    // No report without the event.
    for q in trace.reqs.iter().filter(|q| accepted(q)) {
        let (f, result) = final_of[&q.req];
        let target = SYSTEMS[q.to];
        match result {
            ResetResult::Dump => prop_assert!(
                justified(trace, target, f, |e| e.dumped || e.rebooted),
                "DUMP to request {} for {target} without a dump or a reboot",
                q.req
            ),
            ResetResult::Poff => prop_assert!(
                justified(trace, target, f, |e| e.power_off),
                "POFF to request {} for {target} without a power-off",
                q.req
            ),
            _ => {}
        }
        // One attention per address and reset: a requester that asked twice for the
        // same reset gets one, carrying one of its request numbers.
        let fits = |state: AttentionState| match result {
            ResetResult::Dump => matches!(state, AttentionState::Dump | AttentionState::Reboot),
            _ => state == AttentionState::Poff,
        };
        if result != ResetResult::Fail {
            let told = trace.received.iter().any(|r| {
                r.socket == SYSTEMS[q.from]
                    && matches!(&r.msg, Message::Attention { system, state, req: Some(n), .. }
                        if system == target
                            && fits(*state)
                            && trace.reqs.iter().any(|o| o.req == *n && o.from == q.from && o.to == q.to))
            });
            prop_assert!(
                told,
                "request {}: final {result:?} without an attention to the requester",
                q.req
            );
        }
    }
    // An attention carrying a request number answers that request, with its outcome.
    for r in &trace.received {
        let Message::Attention {
            system,
            state,
            req: Some(n),
            ..
        } = &r.msg
        else {
            continue;
        };
        let q = trace.reqs.iter().find(|q| q.req == *n);
        let fits = q.is_some_and(|q| {
            SYSTEMS[q.from] == r.socket
                && SYSTEMS[q.to] == system
                && matches!(
                    (state, final_of.get(&q.req).map(|(_, f)| *f)),
                    (
                        AttentionState::Dump | AttentionState::Reboot,
                        Some(ResetResult::Dump)
                    ) | (AttentionState::Poff, Some(ResetResult::Poff))
                )
        });
        prop_assert!(
            fits,
            "attention {state:?} for {system} to {} with request {n} ({q:?}, final {:?})",
            r.socket,
            final_of.get(n)
        );
    }
    for r in &trace.received {
        let Message::Attention { system, state, .. } = &r.msg else {
            continue;
        };
        let ok = justified(trace, system, r.at, |e| match state {
            AttentionState::Dump => e.dumped,
            AttentionState::Reboot => e.rebooted,
            AttentionState::Poff => e.power_off,
        });
        prop_assert!(
            ok,
            "attention {state:?} for {system} at {:?} without the event",
            r.at
        );
    }

    // Reloads: refused changes nothing; swapped never touches a server being reset.
    for rl in &trace.reloads {
        if !rl.swapped {
            prop_assert_eq!(
                &*rl.before,
                &*rl.after,
                "refused commit to variant {}",
                rl.to
            );
            continue;
        }
        for s in &SYSTEMS[..5] {
            let resetting = runs(trace, s)
                .iter()
                .any(|r| r.start < rl.start && r.lasted_until > rl.end);
            if !resetting {
                continue;
            }
            let server = |spec: &Spec| {
                spec.servers
                    .values()
                    .find(|x| x.name.as_str() == *s)
                    .cloned()
            };
            prop_assert_eq!(
                server(&rl.before),
                server(&rl.after),
                "reload to variant {} changed {} mid-reset",
                rl.to,
                s
            );
            for (p, _) in outlets_of(s) {
                prop_assert_eq!(
                    rl.before.pdus.get(&ip(p)),
                    rl.after.pdus.get(&ip(p)),
                    "reload to variant {} changed PDU {} feeding {} mid-reset",
                    rl.to,
                    p,
                    s
                );
            }
        }
    }
    Ok(())
}

fn run_case(
    case: &Case,
    variants: &[Arc<Spec>],
    settle_limit: Duration,
) -> Result<(), TestCaseError> {
    let mut d = Driver::start(case, variants, settle_limit);
    for (i, r) in case.registered.iter().enumerate() {
        if *r {
            d.check(i)?;
        }
    }
    for a in &case.acts {
        d.act(a)?;
    }
    let trace = d.finish();
    if std::env::var_os("HACONN_PROPS_STATS").is_some() {
        eprintln!("{}", coverage(&trace, variants));
    }
    check_properties(&trace).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\nacts: {:#?}\nreloads: {:?}\ncalls: {:#?}",
            case.acts,
            trace
                .reloads
                .iter()
                .map(|r| (r.to, r.swapped, &r.violated))
                .collect::<Vec<_>>(),
            trace.calls
        ))
    })
}

/// What a case exercised (printed with `HACONN_PROPS_STATS=1`, to tune the generators).
fn coverage(trace: &Trace, variants: &[Arc<Spec>]) -> String {
    let mut replies_seen: BTreeMap<String, usize> = BTreeMap::new();
    for v in replies(trace).values() {
        let k = format!("{:?}", v.iter().map(|(_, r)| *r).collect::<Vec<_>>());
        *replies_seen.entry(k).or_default() += 1;
    }
    let mut attention: BTreeMap<String, usize> = BTreeMap::new();
    for r in &trace.received {
        if let Message::Attention { state, .. } = &r.msg {
            *attention.entry(format!("{state:?}")).or_default() += 1;
        }
    }
    let cuts = trace
        .calls
        .iter()
        .filter(|c| matches!(c.op, Op::Outlet { on: false, .. }))
        .count();
    let hung = trace.calls.iter().filter(|c| c.end.is_none()).count();
    let mut mid_reset_reloads = 0;
    for rl in &trace.reloads {
        for s in &SYSTEMS[..5] {
            let server = |spec: &Spec| {
                spec.servers
                    .values()
                    .find(|x| x.name.as_str() == *s)
                    .cloned()
            };
            let resetting = runs(trace, s)
                .iter()
                .any(|r| r.start < rl.start && r.lasted_until > rl.end);
            if resetting && server(&rl.before) != server(&variants[rl.to]) {
                mid_reset_reloads += 1;
            }
        }
    }
    format!(
        "coverage: replies {replies_seen:?} attention {attention:?} cuts {cuts} hung {hung} \
         stopped {} reloads {} (swapped {}, mid-reset {mid_reset_reloads})",
        trace.stopped.len(),
        trace.reloads.len(),
        trace.reloads.iter().filter(|r| r.swapped).count()
    )
}

fn all_variants() -> Vec<Arc<Spec>> {
    (0..VARIANTS).map(|v| Arc::new(variant(v))).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 20,
        max_shrink_iters: 48,
        ..ProptestConfig::default()
    })]

    /// Refusing BMCs and PDUs, powered-off nodes, stop reports, reloads: every reset is
    /// over within about a second (hispeed 1000 ms plus small device delays).
    #[test]
    fn random_interleavings_keep_the_reset_invariants(case in cases(false, 16)) {
        let variants = all_variants();
        run_case(&case, &variants, Duration::from_secs(4))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3,
        max_shrink_iters: 8,
        ..ProptestConfig::default()
    })]

    /// Hard resets that hang: the PDU fallback after the iPDU timeout (5–6 s) keeps
    /// every property; fewer cases, as each may last the timeout.
    #[test]
    fn hanging_hard_resets_keep_the_reset_invariants(case in cases(true, 12)) {
        let variants = all_variants();
        run_case(&case, &variants, Duration::from_secs(15))?;
    }
}

/// A stop report remembered from before a reset must not outlive the node's return: once
/// its HA monitor checks again, the node is running, and a later reset of it needs a new
/// stop report (or the hard reset) before anyone is told DUMP.
#[test]
fn a_stop_report_before_the_monitor_came_back_is_stale() {
    let case = Case {
        registered: vec![false; 5],
        bmc_delay: vec![0; 5],
        pdu_delay: vec![0; 2],
        bmc_refuses: vec![false; 4],
        pdu_refuses: vec![false; 2],
        hard_hangs: vec![false; 2],
        acts: vec![
            // node02 panics and dumps, reboots, and its monitor checks in again.
            Act::Stopped(1),
            Act::Check(1),
            // Later node02 hangs (no dump agent report) and node01 asks for its reset.
            Act::Reset {
                from: 0,
                to: 1,
                wrong: Wrong::Neither,
            },
        ],
    };
    let variants = all_variants();
    let mut d = Driver::start(&case, &variants, Duration::from_secs(4));
    for a in &case.acts {
        d.act(a).unwrap();
    }
    let trace = d.finish();
    let states: Vec<AttentionState> = trace
        .received
        .iter()
        .filter_map(|r| match &r.msg {
            Message::Attention { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    let hard = trace.calls.iter().any(|c| c.op == Op::Hard);
    assert!(
        hard && states == [AttentionState::Reboot],
        "hard reset issued: {hard}; attention: {states:?}"
    );
}
