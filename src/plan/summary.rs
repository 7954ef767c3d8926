//! The reload summary in the layout operators know from the seed product (SPEC §6).

use std::fmt::Write as _;

use super::{Change, ObjectKind, Operation, Plan, Refusal};
use crate::spec::model::Spec;

/// The three subjects of a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    ManagementServer,
    PhysicalServer,
    Ipdu,
}

impl Subject {
    fn of(kind: ObjectKind) -> Subject {
        match kind {
            ObjectKind::Global | ObjectKind::ManagementServer => Subject::ManagementServer,
            ObjectKind::PhysicalServer => Subject::PhysicalServer,
            ObjectKind::Pdu => Subject::Ipdu,
        }
    }
}

/// What became of one object in a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectResult {
    pub subject: Subject,
    pub name: String,
    pub op: Operation,
    pub result: Result<(), Refusal>,
}

impl ObjectResult {
    pub fn of(change: &Change, result: Result<(), Refusal>) -> Self {
        let name = match &change.renamed_from {
            Some(from) => format!("{} (was {from})", change.name),
            None => change.name.clone(),
        };
        ObjectResult {
            subject: Subject::of(change.kind),
            name,
            op: change.op,
            result,
        }
    }
}

/// Whether each management server took the new configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateStatus {
    Change,
    NoChange,
    /// The server could not be updated (unreachable, copy failed): the reload fails.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub results: Vec<ObjectResult>,
    pub update_status: Vec<(String, UpdateStatus)>,
}

impl ReloadOutcome {
    /// Completed: every object applied and no management server failed to update.
    pub fn completed(&self) -> bool {
        self.results.iter().all(|r| r.result.is_ok())
            && self
                .update_status
                .iter()
                .all(|(_, s)| !matches!(s, UpdateStatus::Error(_)))
    }

    /// The outcome a reload of `desired` over `live` would have, from the plan's
    /// predictions and the merge (which refuses changes that depend on refused ones).
    /// Every management server is shown as updated when anything applies.
    pub fn predicted(plan: &Plan, live: &Spec, desired: &Spec) -> Self {
        // The plan's predictions already come from the merge; an accepted change always
        // changes the live spec.
        let status = if plan.changes.iter().any(|c| c.predicted.is_ok()) {
            UpdateStatus::Change
        } else {
            UpdateStatus::NoChange
        };
        ReloadOutcome {
            results: plan
                .changes
                .iter()
                .map(|c| ObjectResult::of(c, c.predicted.clone()))
                .collect(),
            // Every management server running now or after a restart.
            update_status: live
                .management_servers
                .keys()
                .chain(desired.management_servers.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|m| (m.to_string(), status.clone()))
                .collect(),
        }
    }

    /// The summary text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let verdict = if self.completed() {
            "completed."
        } else {
            "failed."
        };
        let _ = writeln!(s, "-- HA monitor connector reload : {verdict} --");
        s.push_str("  - Summary\n");
        let _ = writeln!(s, "    {:<21}: <Success/Total> : <Result>", "<Subject>");
        let sections = [
            (
                Subject::ManagementServer,
                "Management Server",
                "<Name/Setting>",
            ),
            (Subject::PhysicalServer, "Physical Server", "<SystemName>"),
            (Subject::Ipdu, "iPDU", "<IP Address>"),
        ];
        for (subject, title, _) in sections {
            let rows: Vec<&ObjectResult> = self
                .results
                .iter()
                .filter(|r| r.subject == subject)
                .collect();
            let ok = rows.iter().filter(|r| r.result.is_ok()).count();
            let result = if ok == rows.len() {
                "Success"
            } else {
                "Failed"
            };
            let _ = writeln!(s, "    {title:<21}: {ok:>7} / {:<6} : {result}", rows.len());
        }
        for (subject, title, header) in sections {
            let rows: Vec<&ObjectResult> = self
                .results
                .iter()
                .filter(|r| r.subject == subject)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let width = rows
                .iter()
                .map(|r| r.name.len() + 1)
                .max()
                .unwrap_or(0)
                .max(22);
            let _ = writeln!(s, "\n  - {title} Configuration Change:");
            let _ = writeln!(s, "    {header:<width$}: {:<13}: <Result>", "<Operation>");
            for r in rows {
                let result = match &r.result {
                    Ok(()) => "Success".to_string(),
                    Err(why) => format!("Error ({why})"),
                };
                let _ = writeln!(
                    s,
                    "    {:<width$}: {:<13}: {result}",
                    r.name,
                    r.op.to_string()
                );
            }
        }
        s.push_str("\n    HA Connector Service Configuration Update Status\n");
        let _ = writeln!(s, "    {:<34}: <Result>", "<Management Server System Name>");
        for (name, status) in &self.update_status {
            let text = match status {
                UpdateStatus::Change => "Change".to_string(),
                UpdateStatus::NoChange => "No Change".to_string(),
                UpdateStatus::Error(why) => format!("Error ({why})"),
            };
            let _ = writeln!(s, "    {name:<34}: {text}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_seed() {
        let o = ReloadOutcome {
            results: vec![
                ObjectResult {
                    subject: Subject::PhysicalServer,
                    name: "ha8kn0003".into(),
                    op: Operation::Delete,
                    result: Err(Refusal::MonitorActive),
                },
                ObjectResult {
                    subject: Subject::PhysicalServer,
                    name: "ha8kn0005".into(),
                    op: Operation::Add,
                    result: Ok(()),
                },
            ],
            update_status: vec![("mserver01".into(), UpdateStatus::NoChange)],
        };
        let text = o.render();
        assert!(text.starts_with("-- HA monitor connector reload : failed. --\n"));
        assert!(text.contains("    Management Server    :       0 / 0      : Success\n"));
        assert!(text.contains("    Physical Server      :       1 / 2      : Failed\n"));
        assert!(
            text.contains("    ha8kn0003             : Delete       : Error (HA monitor active)\n")
        );
        assert!(text.contains("    mserver01                         : No Change\n"));
    }
}
