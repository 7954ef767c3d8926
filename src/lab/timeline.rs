//! What the lab saw, in order: every datagram its monitors and dump agents sent and got,
//! every call the simulated hardware took, what the management servers of a pair did
//! (`takeover`), and the pipeline's log lines, each stamped
//! with when it happened. Events from different sources arrive a little out of order, so
//! they wait [`REORDER`] in a heap before they are printed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use crate::backend::sim::{DeviceId, SimEvent};
use crate::resetpath::codec::{AttentionState, Message, ResetResult};

use super::cast::Cast;
use super::pair::PairEvent;

/// How long an event waits for earlier ones from slower sources.
pub const REORDER: Duration = Duration::from_millis(25);

/// Who in the lab sent or got a datagram: the HA monitor or the dump agent of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Monitor(usize),
    Agent(usize),
}

#[derive(Debug, Clone)]
pub enum What {
    Sent {
        from: Actor,
        msg: Message,
    },
    Got {
        to: Actor,
        msg: Message,
    },
    Hardware(SimEvent),
    ResetLog(chrono::DateTime<chrono::Local>, String),
    ErrorLog(chrono::DateTime<chrono::Local>, String),
    /// Something the lab did to a node (who, what).
    Note(String, String),
    /// What management server `i` of the cast did.
    Pair(usize, PairEvent),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub what: What,
}

/// Holds events until they are old enough to be printed in order.
#[derive(Debug, Default)]
pub struct Reorder {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: std::collections::HashMap<u64, Event>,
    next: u64,
}

impl Reorder {
    pub fn push(&mut self, ev: Event) {
        self.heap.push(Reverse((ev.at, self.next)));
        self.events.insert(self.next, ev);
        self.next += 1;
    }

    /// The oldest event, if it is older than `REORDER` at `now` (or at all, when flushing).
    pub fn pop(&mut self, now: Option<Instant>) -> Option<Event> {
        let Reverse((at, id)) = *self.heap.peek()?;
        if now.is_some_and(|now| at + REORDER > now) {
            return None;
        }
        self.heap.pop();
        self.events.remove(&id)
    }
}

/// Renders one event as `(who, what)`, or `None` for events the reset log shows better.
pub fn describe(ev: &What, cast: &Cast, hispeed_ms: u32) -> Option<(String, String)> {
    let name = |a: Actor| match a {
        Actor::Monitor(i) => format!("{} HA monitor", cast.nodes[i].system),
        Actor::Agent(i) => format!("{} dump agent", cast.nodes[i].system),
    };
    let short = |a: Actor| match a {
        Actor::Monitor(i) | Actor::Agent(i) => cast.nodes[i].system.clone(),
    };
    let device = |d: &DeviceId| match cast.node_of(d) {
        Some(n) => n.device_label(),
        None => match d {
            DeviceId::Bmc(a) => format!("BMC {a}"),
            DeviceId::Pdu(a) => format!("PDU {a}"),
            DeviceId::Vm(h, vm) => format!("ESXi {h} (VM {vm})"),
        },
    };
    Some(match ev {
        What::Sent { from, msg } => (
            format!("{} → haconn", name(*from)),
            match msg {
                Message::Check {
                    subsystem, pair, ..
                } => format!(
                    "check (subsystem {subsystem}{})",
                    pair.map_or(String::new(), |p| format!(", pair {p}"))
                ),
                Message::Reset {
                    req,
                    target_system,
                    target_subsystem,
                    ..
                } => format!("RESET {target_system} (subsystem {target_subsystem}), req {req}"),
                Message::Stopped { .. } => "STOPPED: system stopped, dump started".into(),
                other => format!("{other:?}"),
            },
        ),
        What::Got { to, msg } => (
            format!("haconn → {}", name(*to)),
            match msg {
                Message::CheckReply {
                    resettable, via, ..
                } => {
                    if *resettable {
                        format!("check reply: resettable via {via}")
                    } else {
                        "check reply: NOT resettable".into()
                    }
                }
                Message::ResetReply {
                    req,
                    result,
                    reason,
                    ..
                } => {
                    let what = match result {
                        ResetResult::Accepted => "ACCEPTED (the reset is under way)",
                        ResetResult::Dump => "DUMP (reset done)",
                        ResetResult::Poff => "POFF (already powered off)",
                        ResetResult::Fail => "FAIL",
                        ResetResult::Error => "ERROR",
                    };
                    match reason {
                        Some(r) => format!("req {req}: {what}: {r}"),
                        None => format!("req {req}: {what}"),
                    }
                }
                Message::Attention {
                    system, state, req, ..
                } => format!(
                    "ATTENTION {system} {}{}",
                    attention_word(*state),
                    req.map_or(String::new(), |r| format!(" (req {r})"))
                ),
                Message::StoppedAck { .. } => "STOPPED acknowledged".into(),
                other => format!("{other:?} for {}", short(*to)),
            },
        ),
        // The watch asks every BMC every poll: too many to show.
        What::Hardware(SimEvent::PowerQuery(_)) if cast.loses_power.is_some() => return None,
        What::Note(who, what) => (who.clone(), what.clone()),
        What::Pair(i, ev) => {
            let me = cast.mservers[*i].name;
            let peer = cast.mservers[1 - *i].name;
            let what = match ev {
                PairEvent::HeartbeatLost { after } => format!(
                    "HEARTBEAT LOST: nothing from {peer} for {} ms",
                    after.as_millis()
                ),
                PairEvent::Serving(reason) => format!(
                    "ACTIVE: {}; serves the reset path (the lab opens the pipeline's gate)",
                    reason.as_str()
                ),
                PairEvent::StoppedServing => {
                    "stops serving (the lab closes the pipeline's gate)".into()
                }
                PairEvent::Died { served: true } => {
                    "DIES: its heartbeats stop; nobody serves the reset path (the lab closes the pipeline's gate)".into()
                }
                PairEvent::Died { served: false } => "DIES: its heartbeats stop".into(),
                PairEvent::Log(line) => line.clone(),
                // The core's log lines say these.
                PairEvent::Fencing | PairEvent::FenceDone(_) => return None,
            };
            (me.to_string(), what)
        }
        What::Hardware(SimEvent::HardReset(DeviceId::Bmc(a))) if cast.mserver_of(*a).is_some() => {
            let fenced = cast.mserver_of(*a).map_or("", |m| m.name);
            let by = cast
                .mservers
                .iter()
                .find(|m| m.name != fenced)
                .map_or("haconn", |m| m.name);
            (
                format!("{by} → {fenced}'s BMC {a}"),
                format!("HARD RESET (fencing {fenced})"),
            )
        }
        What::Hardware(h) => match h {
            SimEvent::PowerQuery(d) => (format!("haconn → {}", device(d)), "power status?".into()),
            SimEvent::Nmi(d) => (
                format!("haconn → {}", device(d)),
                "NMI (soft reset: the node may dump)".into(),
            ),
            SimEvent::HardReset(d) => {
                let after = match d {
                    DeviceId::Vm(..) => crate::pipeline::reset::GUEST_HARD_RESET_AFTER.as_millis(),
                    _ => u128::from(hispeed_ms),
                };
                (
                    format!("haconn → {}", device(d)),
                    format!("HARD RESET (no stopped notification within {after} ms)"),
                )
            }
            SimEvent::Outlet { pdu, outlet, on } => (
                format!("haconn → PDU {pdu}"),
                format!("outlet {outlet} {}", if *on { "ON" } else { "OFF" }),
            ),
            SimEvent::OutletQuery { pdu, outlet } => (
                format!("haconn → PDU {pdu}"),
                format!("outlet {outlet} status?"),
            ),
            SimEvent::PduInfo(pdu) => (format!("haconn → PDU {pdu}"), "firmware version?".into()),
            SimEvent::Power { id, on } => (
                format!("haconn → {}", device(id)),
                format!("POWER {}", if *on { "UP" } else { "DOWN" }),
            ),
        },
        What::ResetLog(_, line) => {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f.as_slice() {
                ["HARDRESET", system, _, "RECV", ..] => {
                    let who = cast
                        .nodes
                        .iter()
                        .find(|n| n.system == *system)
                        .map_or_else(|| system.to_string(), |n| n.device_label());
                    (who, "hard reset acknowledged".into())
                }
                ["IPDUSD", _, _, "RECV", .., pdu, outlet, state] => (
                    format!("PDU {pdu}"),
                    format!("outlet {outlet} is {state} (acknowledged)"),
                ),
                _ => return None,
            }
        }
        What::ErrorLog(_, line) => ("haconn error log".into(), line.clone()),
    })
}

/// `+   301.2 ms` from `t0`; events before `t0` show as negative.
pub fn stamp(at: Instant, t0: Instant) -> String {
    let ms = if at >= t0 {
        (at - t0).as_secs_f64() * 1000.0
    } else {
        -((t0 - at).as_secs_f64() * 1000.0)
    };
    format!("{ms:>+9.1} ms")
}

pub fn attention_word(s: AttentionState) -> &'static str {
    match s {
        AttentionState::Dump => "DUMP",
        AttentionState::Reboot => "REBOOT",
        AttentionState::Poff => "POFF",
    }
}
