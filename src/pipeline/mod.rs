//! The reset pipeline's home: a dedicated OS thread with its own single-threaded tokio
//! runtime, so reloads, file watching, status queries and control-socket traffic on the
//! main runtime can never take its turn.
//!
//! It owns the facts a reload must respect (which systems have an active HA monitor,
//! which are being reset) and the live configuration snapshot (`ArcSwap<Spec>`), which
//! it alone stores into: a reload sends a [`PipelineMsg::Commit`] holding the merged
//! spec and the conditions each accepted change relied on; the pipeline checks them
//! against its state at that instant and swaps the snapshot only if they all still
//! hold. Checking and swapping are a few set lookups and one pointer store; the old
//! snapshot is handed back so its memory is freed off this thread.
//!
//! Resets themselves arrive with the reset path; until then, monitor and reset states
//! can be driven through [`Simulation`] (the daemon's `--test-hooks`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::plan::LiveFacts;
use crate::plan::merge::Guard;
use crate::spec::model::Spec;

/// The pipeline's answer to a commit.
#[derive(Debug)]
pub struct CommitReply {
    /// Changes whose guard no longer holds; empty when the snapshot was swapped.
    pub violated: Vec<usize>,
    /// The replaced snapshot, to be dropped by the caller.
    pub replaced: Option<Arc<Spec>>,
}

/// Monitor and reset states to set by hand until the reset path drives them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum Simulation {
    MonitorUp { system: String },
    MonitorDown { system: String },
    ResetStarted { system: String },
    ResetFinished { system: String },
}

/// Messages the pipeline thread accepts.
#[derive(Debug)]
pub enum PipelineMsg {
    Facts(oneshot::Sender<LiveFacts>),
    Commit {
        spec: Arc<Spec>,
        guards: Vec<Guard>,
        reply: oneshot::Sender<CommitReply>,
    },
    /// Liveness probe: answered with how long the message waited to be handled.
    Ping {
        sent: Instant,
        reply: oneshot::Sender<Duration>,
    },
    Simulate(Simulation),
}

/// The main runtime's handle on the pipeline thread.
#[derive(Debug, Clone)]
pub struct Pipeline {
    tx: mpsc::Sender<PipelineMsg>,
    live: Arc<ArcSwap<Spec>>,
}

/// Why the pipeline could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the reset pipeline thread is not running")]
pub struct PipelineGone;

/// The running thread; dropping every `Pipeline` handle stops it, [`PipelineThread::join`] waits for it.
#[derive(Debug)]
pub struct PipelineThread {
    handle: thread::JoinHandle<()>,
}

impl PipelineThread {
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

impl Pipeline {
    /// Starts the pipeline thread with `spec` as the live configuration.
    pub fn start(spec: Spec) -> std::io::Result<(Pipeline, PipelineThread)> {
        let live = Arc::new(ArcSwap::from_pointee(spec));
        let (tx, rx) = mpsc::channel(1024);
        let state = State {
            live: live.clone(),
            monitors_active: BTreeSet::new(),
            resetting: BTreeSet::new(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = thread::Builder::new()
            .name("haconn-pipeline".into())
            .spawn(move || runtime.block_on(state.run(rx)))?;
        Ok((Pipeline { tx, live }, PipelineThread { handle }))
    }

    /// The live configuration snapshot (lock-free read).
    pub fn live(&self) -> Arc<Spec> {
        self.live.load_full()
    }

    async fn ask<T>(
        &self,
        msg: impl FnOnce(oneshot::Sender<T>) -> PipelineMsg,
    ) -> Result<T, PipelineGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).await.map_err(|_| PipelineGone)?;
        rx.await.map_err(|_| PipelineGone)
    }

    pub async fn facts(&self) -> Result<LiveFacts, PipelineGone> {
        self.ask(PipelineMsg::Facts).await
    }

    pub async fn commit(
        &self,
        spec: Arc<Spec>,
        guards: Vec<Guard>,
    ) -> Result<CommitReply, PipelineGone> {
        self.ask(|reply| PipelineMsg::Commit {
            spec,
            guards,
            reply,
        })
        .await
    }

    /// How long a message waited in the pipeline's queue before being handled.
    pub async fn ping(&self) -> Result<Duration, PipelineGone> {
        let sent = Instant::now();
        self.ask(|reply| PipelineMsg::Ping { sent, reply }).await
    }

    pub async fn simulate(&self, s: Simulation) -> Result<(), PipelineGone> {
        self.tx
            .send(PipelineMsg::Simulate(s))
            .await
            .map_err(|_| PipelineGone)
    }
}

struct State {
    live: Arc<ArcSwap<Spec>>,
    monitors_active: BTreeSet<String>,
    resetting: BTreeSet<String>,
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<PipelineMsg>) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg);
        }
    }

    fn handle(&mut self, msg: PipelineMsg) {
        match msg {
            PipelineMsg::Facts(reply) => {
                let _ = reply.send(LiveFacts {
                    monitors_active: self.monitors_active.clone(),
                    resetting: self.resetting.clone(),
                    active: None,
                });
            }
            PipelineMsg::Commit {
                spec,
                guards,
                reply,
            } => {
                let violated: Vec<usize> = guards
                    .iter()
                    .filter(|g| !self.holds(g))
                    .map(|g| g.change)
                    .collect();
                let replaced = violated.is_empty().then(|| self.live.swap(spec));
                let _ = reply.send(CommitReply { violated, replaced });
            }
            PipelineMsg::Ping { sent, reply } => {
                let _ = reply.send(sent.elapsed());
            }
            PipelineMsg::Simulate(s) => match s {
                Simulation::MonitorUp { system } => {
                    self.monitors_active.insert(system);
                }
                Simulation::MonitorDown { system } => {
                    self.monitors_active.remove(&system);
                }
                Simulation::ResetStarted { system } => {
                    self.resetting.insert(system);
                }
                Simulation::ResetFinished { system } => {
                    self.resetting.remove(&system);
                }
            },
        }
    }

    fn holds(&self, g: &Guard) -> bool {
        g.systems.iter().all(|s| {
            !(self.resetting.contains(s) || g.needs_no_monitor && self.monitors_active.contains(s))
        })
    }
}
