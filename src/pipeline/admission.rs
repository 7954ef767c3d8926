//! SPEC §2 steps 1–2: whether a reset request may act, as a pure function of the live
//! spec, the per-system table and the request. A refusal is a typed value; its result
//! (FAIL or ERROR) and its reason come from the type, in one place.
//!
//! The rules, in the order they are applied:
//! 1. the requester is a system of the spec, has registered (a check was accepted from
//!    it), and the request comes from its registered IP with its registered subsystem#;
//! 2. the requester is not being reset (FAIL; with `cluster` on and a shared pair#, its
//!    partner's crossing request won), not reset and still away (ERROR), and its own
//!    reset has not failed (FAIL);
//! 3. no system that is being reset, reset and away, or failed is registered at the
//!    request's source IP: a node being reset gets nothing reset under any name (FAIL);
//! 4. the target is a system of the spec other than the requester, its subsystem# agrees
//!    with its registration, and it can be reset at all (ERROR).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use crate::resetpath::codec::ResetResult;
use crate::spec::model::{Name, Spec, SystemRef};

use super::system::{State, System};

/// Why a reset request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The names are as they may be printed ([`super::core::shown`]).
    UnknownRequester(String),
    NotRegistered,
    WrongAddress {
        registered: IpAddr,
        from: IpAddr,
    },
    SubsystemMismatch {
        target: bool,
        registered: u32,
        got: u32,
    },
    RequesterBeingReset {
        pair_won: bool,
    },
    RequesterWasReset,
    RequesterResetFailed,
    SharedAddress {
        system: Name,
        addr: IpAddr,
    },
    UnknownTarget(String),
    OwnReset,
    EsxiDisabled,
}

impl Refusal {
    /// FAIL: the reset must not happen now; ERROR: the request itself is wrong.
    pub fn result(&self) -> ResetResult {
        match self {
            Refusal::RequesterBeingReset { .. }
            | Refusal::RequesterResetFailed
            | Refusal::SharedAddress { .. } => ResetResult::Fail,
            _ => ResetResult::Error,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownRequester(name) => write!(f, "unknown requester {name}"),
            Refusal::NotRegistered => {
                f.write_str("the requester has not registered (no check accepted from it)")
            }
            Refusal::WrongAddress { registered, from } => write!(
                f,
                "the requester is registered at {registered}, the request came from {from}"
            ),
            Refusal::SubsystemMismatch {
                target,
                registered,
                got,
            } => write!(
                f,
                "{} is registered as subsystem {registered}, not {got}",
                if *target {
                    "the target"
                } else {
                    "the requester"
                }
            ),
            Refusal::RequesterBeingReset { pair_won: true } => {
                f.write_str("the requester is being reset: its monitor pair partner's reset won")
            }
            Refusal::RequesterBeingReset { pair_won: false } => {
                f.write_str("the requester is being reset")
            }
            Refusal::RequesterWasReset => {
                f.write_str("the requester was reset and has not checked in since")
            }
            Refusal::RequesterResetFailed => {
                f.write_str("the requester's own reset failed; waiting for its monitor to check in")
            }
            Refusal::SharedAddress { system, addr } => write!(
                f,
                "{addr} is the address of {system}, which is being reset or was reset"
            ),
            Refusal::UnknownTarget(name) => write!(f, "unknown target {name}"),
            Refusal::OwnReset => f.write_str("a system cannot ask for its own reset"),
            Refusal::EsxiDisabled => f.write_str("ESXi management is disabled for this host"),
        }
    }
}

/// A reset request as admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub from: IpAddr,
    pub system: &'a str,
    pub subsystem: u32,
    pub target: &'a str,
    pub target_subsystem: u32,
}

/// What admission found: the requester's and the target's names as the spec spells them.
#[derive(Debug, Clone)]
pub struct Admitted<'s> {
    pub requester: &'s Name,
    pub target: SystemRef<'s>,
}

/// Applies the rules above. `down_at` names a system registered at an IP that is being
/// reset, reset and away, or failed.
pub fn admit<'s>(
    spec: &'s Spec,
    systems: &HashMap<Name, System>,
    down_at: impl Fn(IpAddr) -> Option<Name>,
    r: Request<'_>,
) -> Result<Admitted<'s>, Refusal> {
    let requester = spec
        .system(r.system)
        .ok_or_else(|| Refusal::UnknownRequester(super::core::shown(r.system).into()))?;
    let me = systems.get(r.system);
    let monitor = me
        .and_then(|s| s.monitor.as_ref())
        .ok_or(Refusal::NotRegistered)?;
    if monitor.addr.ip() != r.from {
        return Err(Refusal::WrongAddress {
            registered: monitor.addr.ip(),
            from: r.from,
        });
    }
    if monitor.subsystem != r.subsystem {
        return Err(Refusal::SubsystemMismatch {
            target: false,
            registered: monitor.subsystem,
            got: r.subsystem,
        });
    }
    match me.map(|s| &s.state) {
        Some(State::Resetting(_)) => {
            return Err(Refusal::RequesterBeingReset {
                pair_won: pair_partners(spec, systems, r.system, r.target),
            });
        }
        Some(State::Done { .. }) => return Err(Refusal::RequesterWasReset),
        Some(State::Failed { .. }) => return Err(Refusal::RequesterResetFailed),
        Some(State::Normal) | None => {}
    }
    if let Some(system) = down_at(r.from) {
        return Err(Refusal::SharedAddress {
            system,
            addr: r.from,
        });
    }
    let target = spec
        .system(r.target)
        .ok_or_else(|| Refusal::UnknownTarget(super::core::shown(r.target).into()))?;
    if r.target == r.system {
        return Err(Refusal::OwnReset);
    }
    if let Some(m) = systems.get(r.target).and_then(|s| s.monitor.as_ref())
        && m.subsystem != r.target_subsystem
    {
        return Err(Refusal::SubsystemMismatch {
            target: true,
            registered: m.subsystem,
            got: r.target_subsystem,
        });
    }
    if let SystemRef::Guest { host, .. } = target
        && !host.enabled
    {
        return Err(Refusal::EsxiDisabled);
    }
    Ok(Admitted {
        requester: requester.name(),
        target,
    })
}

/// Whether `a` and `b` are a monitor pair (same registered pair#) and `b`'s server has
/// `cluster` on.
pub fn pair_partners(spec: &Spec, systems: &HashMap<Name, System>, a: &str, b: &str) -> bool {
    let pair = |s: &str| {
        systems
            .get(s)
            .and_then(|s| s.monitor.as_ref())
            .and_then(|m| m.pair)
    };
    let cluster = spec.system(b).is_some_and(|s| s.server().cluster);
    cluster && pair(a).is_some() && pair(a) == pair(b)
}
