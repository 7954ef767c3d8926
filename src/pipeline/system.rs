//! The per-system table of the reset core: one entry per HA monitor system of the live
//! spec, holding its monitor registration (if any) and **one** state.
//!
//! The state is an enum whose variants carry only what that state needs, so "being reset
//! and already reset", "failed and dumped" and the like cannot be represented. Names that
//! are not systems of the spec are never stored here: the table is bounded by the spec.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::resetpath::codec::AttentionState;
use crate::spec::model::{Name, OutletLink};

use super::resetlog::{Kind, Peer};

/// Identifies one reset (one run of the hardware sequence); never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResetId(pub u64);

impl std::fmt::Display for ResetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An HA monitor as its last accepted check registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub subsystem: u32,
    /// The check's source IP and its `port` field.
    pub addr: SocketAddr,
    pub pair: Option<u32>,
    pub last_seen: Instant,
}

/// Who asked for a reset. A test command has no system, address or request number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub system: Option<Name>,
    /// Where replies go: the request's source IP and its `port` field.
    pub addr: Option<SocketAddr>,
    pub req: Option<u32>,
    pub subsystem: Option<u32>,
}

impl Requester {
    pub fn test() -> Requester {
        Requester {
            system: None,
            addr: None,
            req: None,
            subsystem: None,
        }
    }

    /// The reset-log fields of this requester (`<req#>` is its subsystem number).
    pub fn peer(&self) -> Peer {
        Peer {
            ip: self.addr.map(|a| a.ip()),
            port: self.addr.map(|a| a.port()),
            req: self.subsystem,
        }
    }
}

/// How far a reset has come, as its task reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Started: reading the power state.
    Started,
    /// The NMI was issued: from now on a stop notice is evidence of a dump.
    NmiIssued,
    /// The hard reset was issued: a stop notice no longer decides anything.
    HardIssued,
}

/// What this reset has proven, from the events the core itself received during it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// A power query during this reset read "off".
    pub power_off: bool,
    /// A stop notice accepted after this reset's NMI was issued: who sent it.
    pub stop: Option<Peer>,
    /// The BMC or ESXi acknowledged this reset's hard reset.
    pub hard_acked: bool,
    /// Outlets this reset confirmed cut.
    pub cut: Vec<OutletLink>,
    /// The BMC or ESXi acknowledged this reset's NMI.
    pub nmi_acked: bool,
    /// This reset's NMI failed: why (an operator's test reports it).
    pub nmi_failed: Option<String>,
}

/// A reset in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resetting {
    pub id: ResetId,
    pub kind: Kind,
    pub subsystem: u32,
    /// An operator's test soft reset: NMI only.
    pub test: bool,
    pub stage: Stage,
    /// The soft-reset window (hispeed, or 5 s for a guest).
    pub soft_window: Duration,
    /// When the soft-reset window ends, once the NMI was issued (here, or by the old
    /// active of a pair for a reset carried on here).
    pub soft_until: Option<Instant>,
    /// Past this instant the core ends the reset itself (FAIL) and cancels its task.
    pub deadline: Instant,
    pub requesters: Vec<Requester>,
    /// Every outlet whose cut would count as the reset done (PDU forced reset on).
    pub outlets: Vec<OutletLink>,
    pub evidence: Evidence,
}

/// One system's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not being reset, nothing pending.
    Normal,
    Resetting(Box<Resetting>),
    /// Stopped by reset `id` (or seen powered off by the watch, with no reset), and not
    /// back yet: it returns to normal when its monitor checks in, or at `until`.
    Done {
        id: Option<ResetId>,
        state: AttentionState,
        until: Instant,
    },
    /// Its last reset failed: it may be half-stopped. Normal again when its monitor checks
    /// in, or at `until`.
    Failed {
        until: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    pub monitor: Option<Monitor>,
    pub state: State,
    /// When an unexpected stop notice for it was last logged.
    pub stop_logged: Option<Instant>,
    /// Counts its accepted check-ins: a remembered request for it is a retransmission
    /// only while this has not moved.
    pub epoch: u64,
}

impl System {
    pub fn new() -> System {
        System {
            monitor: None,
            state: State::Normal,
            stop_logged: None,
            epoch: 0,
        }
    }

    pub fn resetting(&self) -> Option<&Resetting> {
        match &self.state {
            State::Resetting(r) => Some(r),
            _ => None,
        }
    }

    /// Being reset, reset and not back, or its reset failed: nothing may be reset at
    /// its request or from its address.
    pub fn is_down(&self) -> bool {
        !matches!(self.state, State::Normal)
    }
}

impl Default for System {
    fn default() -> Self {
        System::new()
    }
}
