//! The supervisor: one task on the main runtime that takes a closed set of commands and
//! runs them one at a time, so reloads are serialized by construction (a reload that
//! arrives during another waits in the queue). Status queries do not come here: they read
//! shared snapshots directly and never wait behind a reload.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::log::LogFile;
use crate::pipeline::Pipeline;
use crate::plan::merge::{guards, merge};
use crate::plan::summary::{ObjectResult, ReloadOutcome, UpdateStatus};
use crate::plan::{Plan, plan};
use crate::spec::diag::Diagnostic;
use crate::spec::model::Spec;
use crate::spec::{CheckOptions, check_bytes};
use crate::watch::FileEvent;

use super::state::StateDir;

/// Where a reload came from; shown in logs and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Origin {
    /// `haconn apply` over the control socket.
    Apply,
    /// The file watcher saw the spec change.
    Watch,
    /// SIGHUP.
    Signal,
    /// The active management server of the pair sent its spec (to this standby).
    Peer,
}

/// Commands the supervisor runs, one at a time.
#[derive(Debug)]
pub enum Command {
    Reload {
        spec: Vec<u8>,
        origin: Origin,
        dry_run: bool,
        reply: Option<oneshot::Sender<ReloadReply>>,
    },
    /// Re-read the spec file and reload it (SIGHUP).
    ReloadFromFile,
    File(FileEvent),
    /// Liveness: answered once the pipeline thread has answered too (feeds systemd's watchdog).
    Heartbeat(oneshot::Sender<()>),
    Stop,
    /// Stop, then start again in place (`sby restart`, the second half of `act restart`).
    Restart,
}

/// The answer to a reload request.
#[derive(Debug, Clone)]
pub enum ReloadReply {
    Invalid(Vec<Diagnostic>),
    /// Dry run: what would happen.
    Planned {
        diff: String,
        plan: String,
        summary: String,
        changes: usize,
        /// Whether the reload would complete (its summary says `completed.`).
        completed: bool,
        /// The plan as JSON ([`Plan::to_value`]).
        plan_changes: serde_json::Value,
    },
    Applied {
        plan: String,
        summary: String,
        completed: bool,
        changes: usize,
    },
    Failed(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastReload {
    pub at: String,
    pub origin: Origin,
    pub success: bool,
    pub changes: usize,
}

/// What `status` shows; updated by the supervisor, read by anyone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub spec_file: String,
    pub local_management_server: String,
    /// `spec file` or `state dir`.
    pub started_from: String,
    /// Set when haconn runs on a fallback (the spec file was invalid at start).
    pub degraded: Option<String>,
    pub watching: bool,
    /// The daemon drives simulated BMCs, PDUs and ESXi hosts (`--simulate-hardware`, labs):
    /// nothing it shows or does touches real hardware.
    #[serde(default)]
    pub simulated_hardware: bool,
    pub reloads: u64,
    pub last_reload: Option<LastReload>,
    /// The last spec content the file watcher or SIGHUP saw that was refused, and why.
    pub last_invalid: Option<String>,
}

/// State shared by the supervisor and the control socket.
#[derive(Debug)]
pub struct Shared {
    pub pipeline: Pipeline,
    pub status: Mutex<Status>,
    pub events: Arc<LogFile>,
    pub state: StateDir,
    pub spec_path: std::path::PathBuf,
    pub local: String,
    /// The pair task (`mode: pair`); `None` with one management server.
    pub pair: Option<crate::pair::task::PairHandle>,
    /// Set by `Command::Restart`: the daemon execs itself again once stopped.
    pub restart: std::sync::atomic::AtomicBool,
    /// Cleared by `act shutdown` (both stop): no handover to the standby on the way out.
    pub handover_on_stop: std::sync::atomic::AtomicBool,
    /// Hardware alerts: the alert log, recent alerts, the trap receiver's counts.
    pub alerts: Arc<super::alerts::AlertDesk>,
}

impl Shared {
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn event(&self, text: &str) {
        if let Err(e) = self.events.write(text) {
            tracing::error!(error = %e, "cannot write the event log");
        }
    }
}

/// Runs commands until `Stop` or until every sender is gone.
pub async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Command>) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Command::Stop => break,
            Command::Restart => {
                shared
                    .restart
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                break;
            }
            Command::Heartbeat(reply) => {
                if shared.pipeline.ping().await.is_ok() {
                    let _ = reply.send(());
                }
            }
            Command::Reload {
                spec,
                origin,
                dry_run,
                reply,
            } => {
                let r = reload(&shared, &spec, origin, dry_run).await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Command::ReloadFromFile => match tokio::fs::read(&shared.spec_path).await {
                Ok(bytes) => {
                    reload(&shared, &bytes, Origin::Signal, false).await;
                }
                Err(e) => {
                    let msg = format!(
                        "reload requested but the spec file {} cannot be read: {e}; live configuration kept",
                        shared.spec_path.display()
                    );
                    tracing::error!("{msg}");
                    shared.event(&msg);
                }
            },
            Command::File(FileEvent::Changed(bytes)) => {
                reload(&shared, &bytes, Origin::Watch, false).await;
            }
            Command::File(FileEvent::Unreadable(why)) => {
                let msg = format!(
                    "spec file {} cannot be read ({why}); live configuration kept until it is back",
                    shared.spec_path.display()
                );
                tracing::warn!("{msg}");
                shared.event(&msg);
            }
        }
    }
}

/// Validates, plans and (unless a dry run) applies a spec text.
pub async fn reload(shared: &Shared, text: &[u8], origin: Origin, dry_run: bool) -> ReloadReply {
    let opts = CheckOptions {
        resolve_secrets: true,
        ..CheckOptions::default()
    };
    let checked = check_bytes(text, opts);
    if let Some(why) = standby_refuses(shared, origin, dry_run) {
        if origin != Origin::Apply {
            shared.event(&format!("reload ({origin:?}) not done: {why}"));
        }
        return ReloadReply::Failed(why);
    }
    let Some(desired) = checked.spec else {
        let errors: Vec<String> = checked
            .diagnostics
            .iter()
            .map(|d| d.render(&shared.spec_path.display().to_string()))
            .collect();
        let msg = format!(
            "reload ({origin:?}) refused: the spec is invalid; nothing changed\n{}",
            errors.join("\n")
        );
        tracing::error!("{msg}");
        if !dry_run {
            shared.event(&msg);
            shared.pipeline.counters().metrics.reloaded(false);
            if origin != Origin::Apply {
                shared.update(|s| s.last_invalid = Some(msg.clone()));
            }
        }
        return ReloadReply::Invalid(checked.diagnostics);
    };
    if !dry_run && origin != Origin::Apply {
        // The spec file is valid again: no longer running on a fallback.
        shared.update(|s| {
            if s.degraded.take().is_some() {
                s.started_from = "spec file (after a fallback start)".into();
            }
            s.last_invalid = None;
        });
    }
    let facts = match shared.pipeline.facts().await {
        Ok(f) => f,
        Err(e) => return ReloadReply::Failed(e.to_string()),
    };
    let live = shared.pipeline.live();
    let p = plan(&live, &desired, &facts);
    if dry_run {
        let outcome = predicted(&p, &live, &desired, &shared.local);
        return ReloadReply::Planned {
            diff: crate::spec::render::unified_diff(&live, &desired, "live", "desired"),
            plan: p.render(),
            summary: outcome.render(),
            changes: p.changes.len(),
            completed: outcome.completed(),
            plan_changes: p.to_value(),
        };
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Reloading,
        sd_notify::NotifyState::monotonic_usec_now()
            .unwrap_or(sd_notify::NotifyState::MonotonicUsec(0)),
    ]);
    let (p, mut outcome) = apply(shared, &live, &desired, p).await;
    sync_peer(shared, origin, &mut outcome).await;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let completed = outcome.completed();
    let summary = outcome.render();
    shared.event(&format!("reload ({origin:?}):\n{}{summary}", p.render()));
    tracing::info!(
        ?origin,
        completed,
        changes = p.changes.len(),
        "reload finished"
    );
    let metrics = &shared.pipeline.counters().metrics;
    metrics.reloaded(completed);
    if !p.changes.is_empty() {
        metrics.applied();
    }
    shared.update(|s| {
        s.reloads += 1;
        s.last_reload = Some(LastReload {
            at: chrono::Local::now().to_rfc3339(),
            origin,
            success: completed,
            changes: p.changes.len(),
        });
    });
    ReloadReply::Applied {
        plan: p.render(),
        summary,
        completed,
        changes: p.changes.len(),
    }
}

/// What a standby tells the active about the spec it sent.
pub fn peer_ack(reply: Option<ReloadReply>, live: &Spec) -> crate::pair::sync::SpecAck {
    use crate::pair::sync::SpecAck;
    let checksum = Some(crate::pair::sync::checksum(
        &crate::spec::render::state_yaml(live),
    ));
    match reply {
        Some(ReloadReply::Applied {
            completed, changes, ..
        }) => SpecAck {
            ok: completed,
            changed: changes > 0,
            checksum,
            archive: None,
            message: if completed {
                format!("applied ({changes} changes)")
            } else {
                "applied in part: see the standby's event log".into()
            },
        },
        Some(ReloadReply::Invalid(d)) => SpecAck {
            ok: false,
            changed: false,
            checksum,
            archive: None,
            message: format!(
                "invalid there: {}",
                d.first()
                    .map_or(String::new(), |d| d.render("the active's spec"))
            ),
        },
        Some(ReloadReply::Failed(why)) => SpecAck {
            ok: false,
            changed: false,
            checksum,
            archive: None,
            message: why,
        },
        Some(ReloadReply::Planned { .. }) | None => SpecAck {
            ok: false,
            changed: false,
            checksum,
            archive: None,
            message: "the reload did not answer".into(),
        },
    }
}

/// In a pair, a server that is not active takes its spec only from the active (dry runs
/// excepted): the file watcher, SIGHUP and `apply` are refused, saying where to go.
fn standby_refuses(shared: &Shared, origin: Origin, dry_run: bool) -> Option<String> {
    let pair = shared.pair.as_ref()?;
    let s = pair.status();
    if dry_run || origin == Origin::Peer || s.role == "active" {
        return None;
    }
    Some(if s.role == "standby" {
        format!(
            "{} is the standby of its pair: it takes its spec from the active ({}), which \
             sends it on every reload; apply the spec there; nothing changed",
            s.me, s.peer
        )
    } else {
        format!(
            "{} is {} in its pair (not serving): a spec is applied on the active, which sends \
             it to its standby; nothing changed",
            s.me, s.role
        )
    })
}

/// The management-server rows of a reload: on the active of a pair, the applied spec is
/// sent to the standby and its row is the standby's own result; on a standby taking the
/// active's spec, the active's row is no change (it is the source).
async fn sync_peer(shared: &Shared, origin: Origin, outcome: &mut ReloadOutcome) {
    let Some(pair) = &shared.pair else {
        return;
    };
    let peer = pair.status().peer;
    let row = if origin == Origin::Peer {
        UpdateStatus::NoChange
    } else {
        let spec = crate::spec::render::state_yaml(&shared.pipeline.live());
        match pair.push_spec(spec).await {
            Ok(ack) if ack.changed => UpdateStatus::Change,
            Ok(_) => UpdateStatus::NoChange,
            Err(why) => {
                shared.event(&format!("the spec was not sent to {peer}: {why}"));
                UpdateStatus::Error("standby not updated".into())
            }
        }
    };
    for (name, status) in &mut outcome.update_status {
        if *name == peer {
            *status = row.clone();
        }
    }
}

/// Applies a plan: merge, commit through the pipeline (re-planning if the facts moved
/// under us), persist. Returns the plan finally applied and the outcome.
async fn apply(
    shared: &Shared,
    live: &Arc<Spec>,
    desired: &Spec,
    mut p: Plan,
) -> (Plan, ReloadOutcome) {
    // A commit is refused only when a reset or monitor started between planning and
    // committing; a few rounds settle it, after which the remaining changes are refused.
    for _ in 0..3 {
        let merged = merge(live, desired, &p, |c| c.predicted.clone());
        let g = guards(live, desired, &p, &merged.results);
        let changed = merged.spec != **live;
        let committed = if changed {
            match shared
                .pipeline
                .commit(Arc::new(merged.spec.clone()), g)
                .await
            {
                Ok(reply) if reply.violated.is_empty() => Ok(()),
                Ok(_) => Err(true),
                Err(e) => {
                    tracing::error!(error = %e, "reload could not reach the pipeline");
                    Err(false)
                }
            }
        } else {
            Ok(())
        };
        match committed {
            Ok(()) => {
                if changed && let Err(e) = shared.state.save(&merged.spec) {
                    tracing::error!(error = %e, "cannot save the applied spec in the state dir");
                    shared.event(&format!("cannot save the applied spec: {e}"));
                }
                let results = p
                    .changes
                    .iter()
                    .zip(merged.results)
                    .map(|(c, r)| ObjectResult::of(c, r))
                    .collect();
                return (p, outcome(results, changed, &merged.spec, &shared.local));
            }
            Err(true) => {
                let Ok(facts) = shared.pipeline.facts().await else {
                    break;
                };
                p = plan(live, desired, &facts);
            }
            Err(false) => break,
        }
    }
    let results = p
        .changes
        .iter()
        .map(|c| {
            ObjectResult::of(
                c,
                Err(crate::plan::Refusal::Failed(
                    "the pipeline did not take the change".into(),
                )),
            )
        })
        .collect();
    (p, outcome(results, false, live, &shared.local))
}

fn outcome(results: Vec<ObjectResult>, changed: bool, spec: &Spec, local: &str) -> ReloadOutcome {
    ReloadOutcome {
        results,
        update_status: update_status(spec, local, changed),
    }
}

/// This management server took the change or had none. Its peer's row starts as not
/// updated (SPEC §6 counts that as a failed reload); in a pair, [`sync_peer`] replaces it
/// with the standby's own result once the spec was sent.
fn update_status(spec: &Spec, local: &str, changed: bool) -> Vec<(String, UpdateStatus)> {
    spec.management_servers
        .keys()
        .map(|name| {
            let status = match (name.as_str() == local, changed) {
                (_, false) => UpdateStatus::NoChange,
                (true, true) => UpdateStatus::Change,
                (false, true) => UpdateStatus::Error("standby not updated".into()),
            };
            (name.to_string(), status)
        })
        .collect()
}

/// What a reload would report, for a dry run.
fn predicted(p: &Plan, live: &Spec, desired: &Spec, local: &str) -> ReloadOutcome {
    let mut o = ReloadOutcome::predicted(p, live, desired);
    let changed = o
        .update_status
        .iter()
        .any(|(_, s)| *s == UpdateStatus::Change);
    o.update_status = update_status(desired, local, changed);
    o
}
