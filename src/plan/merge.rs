//! Building the next live spec from a plan and per-object decisions. Pure.
//!
//! A reload applies whole objects: an accepted change replaces the live object by the
//! desired one, a refused change leaves the live object as it was. Mixing old and new
//! objects can break a rule that held in both specs (a server kept with a link to a
//! PDU whose delete went in, an added server on an outlet a refused change still
//! holds, a limit passed because a delete was refused but an add was not, a PDU added
//! while the SNMP community it needs waits for a restart), so the merged spec is checked
//! and the accepted change responsible for each break is refused too, naming the refused
//! change it depends on where there is one ("depends on snmp: needs restart"), until the
//! merge is consistent. Last, the merged spec is rendered as the state file and validated
//! again: if that ever failed, every change would be refused rather than a spec the daemon
//! would refuse at its next start be kept. The result is always a valid spec.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::{Change, Class, ObjectKind, Operation, Plan, Refusal};
use crate::spec::model::{OutletLink, PhysicalServer, Spec};
use crate::spec::validate::Limits;

/// The merged spec and the final result of every change of the plan, in plan order.
#[derive(Debug, Clone)]
pub struct Merged {
    pub spec: Spec,
    pub results: Vec<Result<(), Refusal>>,
}

/// The start of the refusal given to every change when the merged spec, against every
/// expectation, does not validate (the property test in tests/it/merge.rs checks it never
/// happens).
pub const NOT_VALID: &str = "the merged spec would not validate";

/// Merges `desired` into `live` for the changes `decide` accepts. Changes that need a
/// restart are never accepted, whatever `decide` says.
pub fn merge(
    live: &Spec,
    desired: &Spec,
    plan: &Plan,
    decide: impl Fn(&Change) -> Result<(), Refusal>,
) -> Merged {
    let mut results: Vec<Result<(), Refusal>> = plan
        .changes
        .iter()
        .map(|c| match c.class {
            Class::NeedsRestart => Err(Refusal::NeedsRestart),
            _ => decide(c),
        })
        .collect();
    // Each round refuses at least one more change, so this ends.
    for _ in 0..=plan.changes.len() {
        let spec = build(live, desired, plan, &results);
        let breaks = conflicts(&spec, plan, &results);
        if breaks.is_empty() {
            if let Some(why) = revalidate(&spec, live, &results) {
                break_all(&mut results, &why);
                return Merged {
                    spec: live.clone(),
                    results,
                };
            }
            return Merged { spec, results };
        }
        for (i, why) in breaks {
            results[i] = Err(why);
        }
    }
    // Unreachable in practice: with every change refused the merge is the live spec.
    break_all(&mut results, "could not merge consistently");
    Merged {
        spec: live.clone(),
        results,
    }
}

fn break_all(results: &mut [Result<(), Refusal>], why: &str) {
    for r in results.iter_mut().filter(|r| r.is_ok()) {
        *r = Err(Refusal::Failed(why.to_string()));
    }
}

/// The state file of a merged spec must load as that same spec. When every change went in
/// the merge is the (validated) desired spec, and when none did it is the live one: only a
/// partial merge is checked, so a plain reload costs no second validation.
fn revalidate(spec: &Spec, live: &Spec, results: &[Result<(), Refusal>]) -> Option<String> {
    let partial = results.iter().any(|r| r.is_ok()) && results.iter().any(|r| r.is_err());
    if !partial || spec == live {
        return None;
    }
    let text = crate::spec::render::state_yaml(spec);
    let again = crate::spec::check_bytes(text.as_bytes(), crate::spec::CheckOptions::default());
    match again.spec {
        Some(s) if s == *spec => None,
        Some(_) => Some(format!(
            "{NOT_VALID} (its state file reads back differently)"
        )),
        None => {
            let first = again
                .diagnostics
                .iter()
                .find(|d| d.severity == crate::spec::diag::Severity::Error)
                .map(|d| format!("{}: {}", d.path, d.message))
                .unwrap_or_default();
            Some(format!("{NOT_VALID} ({first})"))
        }
    }
}

fn build(live: &Spec, desired: &Spec, plan: &Plan, results: &[Result<(), Refusal>]) -> Spec {
    let mut spec = live.clone();
    for (c, r) in plan.changes.iter().zip(results) {
        if r.is_err() {
            continue;
        }
        match c.kind {
            ObjectKind::Global => {}
            ObjectKind::ManagementServer => {
                let key = spec
                    .management_servers
                    .keys()
                    .find(|k| k.as_str() == c.name)
                    .cloned();
                let new = desired
                    .management_servers
                    .values()
                    .find(|m| m.name.as_str() == c.name);
                // Adds and deletes of management servers need a restart: only changes get here.
                if let (Some(k), Some(n)) = (key, new) {
                    spec.management_servers.insert(k, n.clone());
                }
            }
            ObjectKind::PhysicalServer => {
                let old_name = c.renamed_from.as_deref().unwrap_or(&c.name);
                spec.servers.retain(|n, _| n.as_str() != old_name);
                if c.op != Operation::Delete
                    && let Some(s) = desired.servers.values().find(|s| s.name.as_str() == c.name)
                {
                    spec.servers.insert(s.name.clone(), s.clone());
                }
            }
            ObjectKind::Pdu => {
                let Ok(addr) = c.name.parse::<IpAddr>() else {
                    continue;
                };
                match desired.pdus.get(&addr) {
                    Some(p) if c.op != Operation::Delete => {
                        spec.pdus.insert(addr, p.clone());
                    }
                    _ => {
                        spec.pdus.remove(&addr);
                    }
                }
            }
        }
    }
    spec.reindex();
    spec
}

/// The accepted changes that break a rule in the merged spec, with the reason.
fn conflicts(
    spec: &Spec,
    plan: &Plan,
    results: &[Result<(), Refusal>],
) -> BTreeMap<usize, Refusal> {
    let accepted = |kind: ObjectKind, name: &str| {
        plan.changes
            .iter()
            .zip(results)
            .position(|(c, r)| r.is_ok() && c.kind == kind && c.name == name)
    };
    // The refusal of a refused change of this object, if the plan has one.
    let refused = |kind: ObjectKind, name: &str| {
        plan.changes
            .iter()
            .zip(results)
            .find(|(c, _)| c.kind == kind && c.name == name)
            .and_then(|(_, r)| r.clone().err())
    };
    let conflict = |why: String| Refusal::Conflict(why);
    let mut out = BTreeMap::new();

    // PDUs need the SNMP community, a global setting that only changes with a restart.
    if spec.community.is_none() && !spec.pdus.is_empty() {
        let why = refused(ObjectKind::Global, "snmp").unwrap_or(Refusal::NeedsRestart);
        for addr in spec.pdus.keys() {
            if let Some(i) = accepted(ObjectKind::Pdu, &addr.to_string()) {
                out.insert(
                    i,
                    Refusal::DependsOn {
                        on: "snmp".into(),
                        why: Box::new(why.clone()),
                    },
                );
            }
        }
    }

    // A user-defined PDU model has one definition: PDUs kept from the live spec and PDUs
    // taken from the desired one may not disagree on it.
    let mut models: HashMap<&str, (IpAddr, &crate::spec::pdu_model::PduModel)> = HashMap::new();
    for p in spec.pdus.values().filter(|p| !p.model.builtin) {
        match models.get(p.model.name.as_str()) {
            Some((other, m)) if *m != &p.model => {
                let culprit = accepted(ObjectKind::Pdu, &p.address.to_string())
                    .map(|i| (i, *other))
                    .or_else(|| {
                        accepted(ObjectKind::Pdu, &other.to_string()).map(|i| (i, p.address))
                    });
                if let Some((i, kept)) = culprit {
                    out.insert(
                        i,
                        conflict(format!(
                            "PDU model {} is still defined differently for PDU {kept}",
                            p.model.name
                        )),
                    );
                }
            }
            Some(_) => {}
            None => {
                models.insert(&p.model.name, (p.address, &p.model));
            }
        }
    }

    // Outlet links: to a declared PDU, within its model, each outlet fed to one owner.
    let mut owners: HashMap<OutletLink, (ObjectKind, String)> = HashMap::new();
    let links = spec
        .management_servers
        .values()
        .map(|m| {
            let links = m.ipdu.as_ref().map_or(&[][..], |i| &i.outlets);
            (ObjectKind::ManagementServer, m.name.to_string(), links)
        })
        .chain(
            spec.servers
                .values()
                .map(|s| (ObjectKind::PhysicalServer, s.name.to_string(), s.outlets())),
        );
    for (kind, name, links) in links {
        for link in links {
            let fits = spec
                .pdus
                .get(&link.pdu)
                .is_some_and(|p| link.outlet <= p.model.outlets);
            if !fits {
                if let Some(i) = accepted(kind, &name) {
                    let why = match refused(ObjectKind::Pdu, &link.pdu.to_string()) {
                        Some(why) => Refusal::DependsOn {
                            on: format!("pdu {}", link.pdu),
                            why: Box::new(why),
                        },
                        None => conflict(format!(
                            "needs PDU {} whose change was not applied",
                            link.pdu
                        )),
                    };
                    out.insert(i, why);
                } else if let Some(i) = accepted(ObjectKind::Pdu, &link.pdu.to_string()) {
                    out.insert(
                        i,
                        conflict(format!("still feeds {name}, whose change was not applied")),
                    );
                }
                continue;
            }
            if let Some((other_kind, other)) = owners.get(link) {
                let culprit = accepted(kind, &name).or_else(|| accepted(*other_kind, other));
                if let Some(i) = culprit {
                    out.insert(
                        i,
                        conflict(format!("outlet {link} is still used by {other}")),
                    );
                }
                continue;
            }
            owners.insert(*link, (kind, name.clone()));
        }
    }

    // BMC addresses and system names stay unique. Either holder may be the accepted
    // change that brought the clash (the other one kept by a refusal).
    let clash = |out: &mut BTreeMap<usize, Refusal>, what: String, this: &str, other: &str| {
        let culprit = accepted(ObjectKind::PhysicalServer, this)
            .map(|i| (i, other))
            .or_else(|| accepted(ObjectKind::PhysicalServer, other).map(|i| (i, this)));
        if let Some((i, holder)) = culprit {
            out.insert(i, conflict(format!("{what} is still used by {holder}")));
        }
    };
    let mut bmcs: HashMap<IpAddr, String> = spec
        .management_servers
        .values()
        .map(|m| (m.bmc.address, m.name.to_string()))
        .collect();
    let mut systems: HashMap<String, String> = HashMap::new();
    for s in spec.servers.values() {
        let name = s.name.to_string();
        if let Some(other) = bmcs.insert(s.bmc.address, name.clone()) {
            clash(
                &mut out,
                format!("BMC address {}", s.bmc.address),
                &name,
                &other,
            );
        }
        let guests = s
            .esxi
            .iter()
            .flat_map(|e| e.guests.iter().map(|g| g.to_string()));
        for system in std::iter::once(name.clone()).chain(guests) {
            if let Some(other) = systems.insert(system.clone(), name.clone()) {
                clash(&mut out, format!("system name {system}"), &name, &other);
            }
        }
    }

    // Limits: refuse accepted adds when a refused delete keeps the count up.
    let limits = Limits::of(spec.scale);
    let over = [
        (
            spec.servers.len() > limits.servers || spec.systems() > limits.systems,
            ObjectKind::PhysicalServer,
        ),
        (spec.pdus.len() > limits.pdus, ObjectKind::Pdu),
    ];
    for (is_over, kind) in over {
        if !is_over {
            continue;
        }
        let add = plan
            .changes
            .iter()
            .zip(results)
            .rposition(|(c, r)| r.is_ok() && c.kind == kind && c.op != Operation::Delete);
        if let Some(i) = add {
            out.insert(
                i,
                conflict(
                    "would pass the limits of the live spec (a delete or a scale change was not applied)"
                        .into(),
                ),
            );
        }
    }
    out
}

/// What an accepted change relied on when it was decided: the pipeline re-checks these at
/// the instant it swaps in the merged spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// Index of the change in its plan.
    pub change: usize,
    /// Systems (server names and guest VM names) the change touches: none may be resetting.
    pub systems: Vec<String>,
    /// None of those systems may have an active HA monitor either.
    pub needs_no_monitor: bool,
}

fn systems_of(s: &PhysicalServer) -> impl Iterator<Item = String> + '_ {
    std::iter::once(s.name.to_string()).chain(
        s.esxi
            .iter()
            .flat_map(|e| e.guests.iter().map(|g| g.to_string())),
    )
}

/// The guards of every accepted change of a merge.
pub fn guards(
    live: &Spec,
    desired: &Spec,
    plan: &Plan,
    results: &[Result<(), Refusal>],
) -> Vec<Guard> {
    let mut out = Vec::new();
    for (i, (c, r)) in plan.changes.iter().zip(results).enumerate() {
        if r.is_err() {
            continue;
        }
        let mut systems: Vec<String> = match c.kind {
            ObjectKind::PhysicalServer => {
                let old_name = c.renamed_from.as_deref().unwrap_or(&c.name);
                let old = live
                    .servers
                    .values()
                    .filter(|s| s.name.as_str() == old_name);
                let new = desired
                    .servers
                    .values()
                    .filter(|s| s.name.as_str() == c.name);
                old.chain(new).flat_map(systems_of).collect()
            }
            // Only the server itself: a guest's reset never cuts its host's outlets.
            ObjectKind::Pdu => [live, desired]
                .iter()
                .flat_map(|spec| spec.servers.values())
                .filter(|s| s.outlets().iter().any(|o| o.pdu.to_string() == c.name))
                .map(|s| s.name.to_string())
                .collect(),
            ObjectKind::Global | ObjectKind::ManagementServer => Vec::new(),
        };
        systems.sort();
        systems.dedup();
        if systems.is_empty() {
            continue;
        }
        out.push(Guard {
            change: i,
            systems,
            needs_no_monitor: c.class == Class::RuntimeIfNoMonitor,
        });
    }
    out
}
