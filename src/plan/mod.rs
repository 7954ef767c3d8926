//! The plan: what changes between a live spec and a desired one, and what a reload may do
//! with each change (SPEC §6). Pure: specs and facts in, a plan out.
//!
//! Objects are compared by identity (management servers and physical servers by name,
//! PDUs by address, global settings by key), so reordering a file is not a change. A
//! physical server that disappears under one name and appears under another with the
//! same BMC address is a rename. Each object is one unit: a reload applies all of an
//! object's changes or none of them.

pub mod merge;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde_json::Value;

use crate::spec::model::{Fingerprinted, Name, PhysicalServer, SECRET_FINGERPRINT, Spec};

/// What the daemon knows about the running cluster that decides whether a change may go in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LiveFacts {
    /// Systems (physical server names or guest VM names) whose HA monitor is active.
    #[serde(default)]
    pub monitors_active: BTreeSet<Name>,
    /// Systems being reset right now.
    #[serde(default)]
    pub resetting: BTreeSet<Name>,
    /// The active management server (default: the first by name).
    pub active: Option<String>,
}

impl LiveFacts {
    fn touches(set: &BTreeSet<Name>, server: &PhysicalServer) -> bool {
        set.contains(server.name.as_str())
            || server
                .esxi
                .iter()
                .flat_map(|e| &e.guests)
                .any(|g| set.contains(g.as_str()))
    }

    pub fn monitor_active_on(&self, server: &PhysicalServer) -> bool {
        Self::touches(&self.monitors_active, server)
    }

    pub fn resetting(&self, server: &PhysicalServer) -> bool {
        Self::touches(&self.resetting, server)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Global,
    ManagementServer,
    PhysicalServer,
    Pdu,
}

impl ObjectKind {
    pub fn label(self) -> &'static str {
        match self {
            ObjectKind::Global => "global",
            ObjectKind::ManagementServer => "management server",
            ObjectKind::PhysicalServer => "physical server",
            ObjectKind::Pdu => "pdu",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Delete,
    Change,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Add => "Add",
            Operation::Delete => "Delete",
            Operation::Change => "Change",
        })
    }
}

/// What a reload may do with a change (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Applied at runtime, no HA monitor stop needed.
    Runtime,
    /// Applied at runtime only while no HA monitor on that server is active.
    RuntimeIfNoMonitor,
    /// Needs a restart of haconn; a reload reports it and applies nothing of it.
    NeedsRestart,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Runtime => "runtime",
            Class::RuntimeIfNoMonitor => "runtime if no HA monitor is active",
            Class::NeedsRestart => "needs restart",
        })
    }
}

/// Why an object change was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NeedsRestart,
    MonitorActive,
    ResetInProgress,
    /// Applying it next to the changes that were refused would break the spec's rules.
    Conflict(String),
    /// It needs another change (`on`: `snmp`, `pdu 192.0.2.1`, …) that was refused.
    DependsOn {
        on: String,
        why: Box<Refusal>,
    },
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NeedsRestart => f.write_str("needs restart"),
            Refusal::MonitorActive => f.write_str("HA monitor active"),
            Refusal::ResetInProgress => f.write_str("reset in progress"),
            Refusal::Conflict(why) => write!(f, "conflict: {why}"),
            Refusal::DependsOn { on, why } => write!(f, "depends on {on}: {why}"),
            Refusal::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// One changed field of an object. Secret values are never held here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub secret: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ObjectKind,
    /// The object's identity in the desired spec (the live one for a delete).
    pub name: String,
    pub op: Operation,
    pub renamed_from: Option<String>,
    pub class: Class,
    pub fields: Vec<FieldChange>,
    /// What a reload would answer for this object given the facts.
    pub predicted: Result<(), Refusal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn count(&self, op: Operation) -> usize {
        self.changes.iter().filter(|c| c.op == op).count()
    }
}

/// Plans `desired` against `live`.
pub fn plan(live: &Spec, desired: &Spec, facts: &LiveFacts) -> Plan {
    let view = Fingerprinted::default();
    let mut changes = Vec::new();

    // Global settings: every one needs a restart.
    let (lg, dg) = (live.globals_value(&view), desired.globals_value(&view));
    let keys: BTreeSet<&String> = object_keys(&lg).chain(object_keys(&dg)).collect();
    for key in keys {
        let (old, new) = (lg.get(key), dg.get(key));
        if old == new {
            continue;
        }
        let mut fields = Vec::new();
        diff_values(key, old, new, &mut fields);
        changes.push(Change {
            kind: ObjectKind::Global,
            name: key.clone(),
            op: op_of(old, new),
            renamed_from: None,
            class: Class::NeedsRestart,
            fields,
            predicted: Err(Refusal::NeedsRestart),
        });
    }

    // Management servers: PDU settings at runtime, the rest needs a restart.
    let lm: BTreeMap<_, _> = live
        .management_servers
        .iter()
        .map(|(n, m)| (n.to_string(), m.to_value(&view)))
        .collect();
    let dm: BTreeMap<_, _> = desired
        .management_servers
        .iter()
        .map(|(n, m)| (n.to_string(), m.to_value(&view)))
        .collect();
    for (name, op, fields) in keyed_changes(&lm, &dm) {
        let class = if op == Operation::Change && fields.iter().all(|f| under(&f.path, "ipdu")) {
            Class::Runtime
        } else {
            Class::NeedsRestart
        };
        let predicted = match class {
            Class::NeedsRestart => Err(Refusal::NeedsRestart),
            _ => Ok(()),
        };
        changes.push(Change {
            kind: ObjectKind::ManagementServer,
            name,
            op,
            renamed_from: None,
            class,
            fields,
            predicted,
        });
    }

    // Physical servers, with renames.
    changes.extend(server_changes(live, desired, facts, &view));

    // PDUs: all at runtime, unless a server they feed is being reset.
    let lp: BTreeMap<_, _> = live
        .pdus
        .iter()
        .map(|(a, p)| (a.to_string(), p.to_value()))
        .collect();
    let dp: BTreeMap<_, _> = desired
        .pdus
        .iter()
        .map(|(a, p)| (a.to_string(), p.to_value()))
        .collect();
    for (name, op, fields) in keyed_changes(&lp, &dp) {
        // Only a physical reset may cut outlets; a guest's reset never touches its host's PDUs.
        let feeds_resetting = [live, desired].iter().any(|spec| {
            spec.servers.values().any(|s| {
                facts.resetting.contains(s.name.as_str())
                    && s.outlets().iter().any(|o| o.pdu.to_string() == name)
            })
        });
        changes.push(Change {
            kind: ObjectKind::Pdu,
            name,
            op,
            renamed_from: None,
            class: Class::Runtime,
            fields,
            predicted: if feeds_resetting {
                Err(Refusal::ResetInProgress)
            } else {
                Ok(())
            },
        });
    }
    // A change that is fine alone may not be next to refused ones: the merge decides.
    let mut plan = Plan { changes };
    let merged = merge::merge(live, desired, &plan, |c| c.predicted.clone());
    for (c, r) in plan.changes.iter_mut().zip(merged.results) {
        c.predicted = r;
    }
    plan
}

fn server_changes(
    live: &Spec,
    desired: &Spec,
    facts: &LiveFacts,
    view: &Fingerprinted,
) -> Vec<Change> {
    let value = |s: &PhysicalServer| {
        let mut v = s.to_value(view);
        if let Value::Object(o) = &mut v {
            o.remove("name");
        }
        v
    };
    let deleted: Vec<&PhysicalServer> = live
        .servers
        .values()
        .filter(|s| !desired.servers.contains_key(&s.name))
        .collect();
    let added: Vec<&PhysicalServer> = desired
        .servers
        .values()
        .filter(|s| !live.servers.contains_key(&s.name))
        .collect();
    // A rename keeps the BMC: pair each deleted server with the added one on its BMC address.
    let mut renames: BTreeMap<String, &PhysicalServer> = BTreeMap::new();
    for d in &deleted {
        if let Some(a) = added.iter().find(|a| a.bmc.address == d.bmc.address) {
            renames.insert(a.name.to_string(), d);
        }
    }
    let renamed_old: BTreeSet<String> = renames.values().map(|d| d.name.to_string()).collect();

    let mut out = Vec::new();
    let names: BTreeSet<&Name> = live.servers.keys().chain(desired.servers.keys()).collect();
    for name in names {
        let name = name.as_str();
        if renamed_old.contains(name) {
            continue;
        }
        let new = desired
            .servers
            .values()
            .find(|s| s.name.as_str() == name)
            .filter(|_| true);
        let new = new.and_then(|s| desired.servers.get(&s.name));
        let old = match renames.get(name) {
            Some(d) => Some(*d),
            None => live
                .servers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, s)| s),
        };
        let (op, mut fields) = match (old, new) {
            (None, Some(_)) => (Operation::Add, vec![]),
            (Some(_), None) => (Operation::Delete, vec![]),
            // Most servers are unchanged: skip the field diff for them.
            (Some(o), Some(n)) if o == n => continue,
            (Some(o), Some(n)) => {
                let (ov, nv) = (value(o), value(n));
                let mut fields = Vec::new();
                diff_values("", Some(&ov), Some(&nv), &mut fields);
                (Operation::Change, fields)
            }
            (None, None) => continue,
        };
        let name = name.to_string();
        let renamed_from = renames.get(&name).map(|d| d.name.to_string());
        if let Some(from) = &renamed_from {
            fields.insert(
                0,
                FieldChange {
                    path: "name".into(),
                    old: Some(from.clone()),
                    new: Some(name.clone()),
                    secret: false,
                },
            );
        }
        if op == Operation::Change && fields.is_empty() {
            continue;
        }
        let class = match op {
            Operation::Add => Class::Runtime,
            // PDU settings and which failure warnings it takes touch nothing of a reset.
            Operation::Change
                if fields
                    .iter()
                    .all(|f| under(&f.path, "ipdu") || under(&f.path, "warnings")) =>
            {
                Class::Runtime
            }
            _ => Class::RuntimeIfNoMonitor,
        };
        let predicted = match old {
            Some(o) if facts.resetting(o) => Err(Refusal::ResetInProgress),
            Some(o) if class == Class::RuntimeIfNoMonitor && facts.monitor_active_on(o) => {
                Err(Refusal::MonitorActive)
            }
            _ => Ok(()),
        };
        out.push(Change {
            kind: ObjectKind::PhysicalServer,
            name,
            op,
            renamed_from,
            class,
            fields,
            predicted,
        });
    }
    out
}

fn object_keys(v: &Value) -> impl Iterator<Item = &String> {
    v.as_object().into_iter().flat_map(|o| o.keys())
}

fn op_of(old: Option<&Value>, new: Option<&Value>) -> Operation {
    match (old, new) {
        (None, Some(_)) => Operation::Add,
        (Some(_), None) => Operation::Delete,
        _ => Operation::Change,
    }
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Add / delete / change of objects keyed by identity, with their changed fields.
fn keyed_changes(
    live: &BTreeMap<String, Value>,
    desired: &BTreeMap<String, Value>,
) -> Vec<(String, Operation, Vec<FieldChange>)> {
    let names: BTreeSet<&String> = live.keys().chain(desired.keys()).collect();
    let mut out = Vec::new();
    for name in names {
        let (old, new) = (live.get(name), desired.get(name));
        if old == new {
            continue;
        }
        let op = op_of(old, new);
        let mut fields = Vec::new();
        if op == Operation::Change {
            diff_values("", old, new, &mut fields);
        }
        out.push((name.clone(), op, fields));
    }
    out
}

/// Collects the leaves that differ between two values. Lists are compared whole.
fn diff_values(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    if old == new {
        return;
    }
    if let (Some(Value::Object(o)), Some(Value::Object(n))) = (old, new) {
        let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
        for k in keys {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            diff_values(&p, o.get(k), n.get(k), out);
        }
        return;
    }
    let is_secret = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(SECRET_FINGERPRINT))
    };
    let (old_secret, new_secret) = (is_secret(old), is_secret(new));
    // An inline value is never shown; a reference ({env:}, {file:}) is not secret.
    let shown = |v: Option<&Value>, secret: bool| {
        if secret {
            Some("(inline secret)".to_string())
        } else {
            v.map(show)
        }
    };
    out.push(FieldChange {
        path: path.to_string(),
        old: shown(old, old_secret),
        new: shown(new, new_secret),
        secret: old_secret && new_secret,
    });
}

/// A value on one line: plain for scalars, compact JSON for the rest, with every inline
/// secret inside it shown as `(secret)` (never the comparison fingerprint).
fn show(v: &Value) -> String {
    fn mask(v: &Value) -> Value {
        match v {
            Value::String(s) if s.starts_with(SECRET_FINGERPRINT) => "(secret)".into(),
            Value::Array(a) => a.iter().map(mask).collect(),
            Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), mask(v))).collect(),
            other => other.clone(),
        }
    }
    match mask(v) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl Plan {
    /// The plan as JSON for `--output json`: one object per change (`kind`, `name`, `op`,
    /// `renamedFrom`, `class`, `fields` with `path`/`old`/`new`, `result`: `ok` or why it
    /// would be refused). Secrets are never shown, as in [`Plan::render`].
    pub fn to_value(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                let fields: Vec<Value> = c
                    .fields
                    .iter()
                    .map(|f| {
                        if f.secret {
                            serde_json::json!({"path": f.path, "secretChanged": true})
                        } else {
                            serde_json::json!({"path": f.path, "old": f.old, "new": f.new})
                        }
                    })
                    .collect();
                serde_json::json!({
                    "kind": c.kind.label(),
                    "name": c.name,
                    "op": c.op.to_string(),
                    "renamedFrom": c.renamed_from,
                    "class": c.class.to_string(),
                    "fields": fields,
                    "result": match &c.predicted {
                        Ok(()) => "ok".to_string(),
                        Err(r) => r.to_string(),
                    },
                })
            })
            .collect();
        Value::Array(changes)
    }

    /// The plan in `terraform plan` style: one line per object, its fields below.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if self.changes.is_empty() {
            s.push_str("No changes.\n");
            return s;
        }
        for c in &self.changes {
            let sign = match c.op {
                Operation::Add => '+',
                Operation::Delete => '-',
                Operation::Change => '~',
            };
            let _ = write!(s, "  {sign} {} {}", c.kind.label(), c.name);
            if let Some(from) = &c.renamed_from {
                let _ = write!(s, " (renamed from {from})");
            }
            let _ = write!(s, "  [{}]", c.class);
            if let Err(r) = &c.predicted {
                let _ = write!(s, "  => Error ({r})");
            }
            s.push('\n');
            for f in &c.fields {
                if f.secret {
                    let _ = writeln!(s, "      ~ {}: (secret changed, value hidden)", f.path);
                    continue;
                }
                match (&f.old, &f.new) {
                    (None, Some(n)) => {
                        let _ = writeln!(s, "      + {}: {n}", f.path);
                    }
                    (Some(o), None) => {
                        let _ = writeln!(s, "      - {}: {o}", f.path);
                    }
                    (Some(o), Some(n)) => {
                        let _ = writeln!(s, "      ~ {}: {o} -> {n}", f.path);
                    }
                    (None, None) => {}
                }
            }
        }
        let by_class = |k: Class| self.changes.iter().filter(|c| c.class == k).count();
        let refused = self.changes.iter().filter(|c| c.predicted.is_err()).count();
        let _ = writeln!(
            s,
            "\nPlan: {} to add, {} to change, {} to delete ({} runtime, {} runtime if no HA monitor is active, {} needs restart; {} would be refused now).",
            self.count(Operation::Add),
            self.count(Operation::Change),
            self.count(Operation::Delete),
            by_class(Class::Runtime),
            by_class(Class::RuntimeIfNoMonitor),
            by_class(Class::NeedsRestart),
            refused,
        );
        s
    }
}
