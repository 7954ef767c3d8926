//! The `takeover` scenario's management servers: two role cores ([`crate::pair::role`])
//! in this process, each driven by a small shell like the daemon's pair task, their
//! signed heartbeats ([`crate::pair::wire`]) on loopback UDP (127.0.20.1 and .2), the
//! peer fenced by the daemon's own [`fence_peer`] on the simulated BMCs.
//!
//! What is simulated: there is one pipeline, so "the reset path moves to the new active"
//! is its gate (`Counters::standing_by`): opened by a server's `Serve`, closed when that
//! server stops serving or dies. No address moves and no registrations travel (the one
//! pipeline keeps its monitors' registrations, as the standby's synced copy would).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use super::timeline::{Event, What};
use crate::backend::{Bmc, Pdu};
use crate::pair::role::{Effect, Input, Reason, Role, RoleCore, Timing};
use crate::pair::task::{FENCE_RETRY, fence_peer};
use crate::pair::wire::{self, MlanKey};
use crate::pipeline::Pipeline;
use crate::spec::model::{ManagementServer, Name, Pdu as PduSpec, Spec};

/// What a management server did, as the timeline and the checks see it.
#[derive(Debug, Clone)]
pub enum PairEvent {
    /// The peer's heartbeat has been missing for `after` (the core's `lost_after`).
    HeartbeatLost { after: Duration },
    /// The core asked to fence the peer.
    Fencing,
    /// The fence ended (the core logs how).
    FenceDone(Result<String, String>),
    /// It serves: the lab opened the pipeline's gate.
    Serving(Reason),
    /// It stopped serving: the lab closed the gate.
    StoppedServing,
    /// Its daemon stops: no more heartbeats; if it served, the lab closed the gate.
    Died { served: bool },
    /// A line of its event log (`pair: …` in the daemon).
    Log(String),
}

/// The two servers running; dropping it stops them.
pub struct LabPair {
    die: Vec<Option<oneshot::Sender<()>>>,
    roles: watch::Receiver<[Option<Role>; 2]>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LabPair {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts both servers on the current runtime, labms01 first. `mlan` are their bound
/// heartbeat sockets, in the spec's order; `cluster_key` the reset path's key, from which
/// the mlan key is derived as in the daemon.
pub fn start(
    spec: &Spec,
    mlan: Vec<std::net::UdpSocket>,
    cluster_key: &[u8],
    backends: (Arc<dyn Bmc>, Arc<dyn Pdu>),
    gate: Pipeline,
    tx: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<LabPair> {
    let servers: Vec<ManagementServer> = spec.management_servers.values().cloned().collect();
    anyhow::ensure!(
        servers.len() == 2 && mlan.len() == 2,
        "the takeover scenario needs two management servers"
    );
    gate.counters().standing_by.store(true, Ordering::SeqCst);
    let timing = Timing {
        interval: spec.pair.heartbeat_interval,
        misses: spec.pair.heartbeat_misses,
        startup_grace: spec.pair.startup_grace,
        fence_retry: FENCE_RETRY,
    };
    let key = MlanKey::derive(Some(cluster_key));
    let (roles_tx, roles) = watch::channel([None, None]);
    let roles_tx = Arc::new(roles_tx);
    let mut die = Vec::new();
    let mut tasks = Vec::new();
    for (i, sock) in mlan.into_iter().enumerate() {
        sock.set_nonblocking(true)?;
        let (me, peer) = (&servers[i], &servers[1 - i]);
        let now = Instant::now();
        let (die_tx, die_rx) = oneshot::channel();
        die.push(Some(die_tx));
        let server = Server {
            i,
            me: me.name.clone(),
            peer: peer.clone(),
            peer_mlan: SocketAddr::new(peer.mlan.address, peer.mlan.port.get()),
            sock: UdpSocket::from_std(sock)?,
            key: key.clone(),
            core: RoleCore::new(
                me.name.clone(),
                wall_us() + i as u64,
                peer.name.clone(),
                timing,
                now,
            ),
            seq: 0,
            linked: false,
            pdus: spec.pdus.clone(),
            backends: backends.clone(),
            gate: gate.clone(),
            tx: tx.clone(),
            roles: roles_tx.clone(),
        };
        tasks.push(tokio::spawn(server.run(die_rx)));
    }
    Ok(LabPair { die, roles, tasks })
}

impl LabPair {
    /// Waits until labms01 is active and labms02 its standby.
    pub async fn settled(&mut self, limit: Duration) -> bool {
        let want = [Some(Role::Active), Some(Role::Standby)];
        tokio::time::timeout(limit, self.roles.wait_for(|r| *r == want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Server `i`'s daemon stops, at once.
    pub fn kill(&mut self, i: usize) {
        if let Some(tx) = self.die[i].take() {
            let _ = tx.send(());
        }
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64)
}

struct Server {
    i: usize,
    me: Name,
    peer: ManagementServer,
    peer_mlan: SocketAddr,
    sock: UdpSocket,
    key: MlanKey,
    core: RoleCore,
    seq: u64,
    /// The peer's heartbeat was current at the last look.
    linked: bool,
    pdus: std::collections::BTreeMap<std::net::IpAddr, PduSpec>,
    backends: (Arc<dyn Bmc>, Arc<dyn Pdu>),
    gate: Pipeline,
    tx: mpsc::UnboundedSender<Event>,
    roles: Arc<watch::Sender<[Option<Role>; 2]>>,
}

impl Server {
    fn note(&self, at: Instant, ev: PairEvent) {
        let _ = self.tx.send(Event {
            at,
            what: What::Pair(self.i, ev),
        });
    }

    fn gate(&self, open: bool) {
        self.gate
            .counters()
            .standing_by
            .store(!open, Ordering::SeqCst);
    }

    async fn heartbeat(&mut self) {
        self.seq += 1;
        let beat = self.core.heartbeat(self.seq);
        let bytes = wire::encode(&self.me, &beat, wall_ms(), &self.key);
        let _ = self.sock.send_to(&bytes, self.peer_mlan).await;
    }

    async fn run(mut self, mut die: oneshot::Receiver<()>) {
        let (fence_tx, mut fence_rx) = mpsc::channel::<Result<String, String>>(2);
        let mut tick = tokio::time::interval(self.core.timing().interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = [0u8; 512];
        loop {
            let mut out = Vec::new();
            let before = self.core.role();
            tokio::select! {
                _ = &mut die => {
                    let now = Instant::now();
                    let served = self.core.serving();
                    if served {
                        self.gate(false);
                    }
                    self.note(now, PairEvent::Died { served });
                    self.roles.send_modify(|r| r[self.i] = None);
                    return;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let linked = self.core.view(now).peer_link;
                    if self.linked && !linked {
                        self.note(now, PairEvent::HeartbeatLost {
                            after: self.core.timing().lost_after(),
                        });
                    }
                    self.linked = linked;
                    self.core.handle(now, Input::Tick, &mut out);
                    self.heartbeat().await;
                }
                r = self.sock.recv_from(&mut buf) => {
                    let Ok((n, _)) = r else { continue };
                    if let Ok(beat) = wire::decode(&buf[..n], &self.peer.name, wall_ms(), &self.key) {
                        let now = Instant::now();
                        self.core.handle(now, Input::Heartbeat(beat), &mut out);
                        self.linked = self.core.view(now).peer_link;
                    }
                }
                Some(result) = fence_rx.recv() => {
                    let now = Instant::now();
                    self.note(now, PairEvent::FenceDone(result.clone()));
                    self.core.handle(now, Input::FenceDone(result), &mut out);
                }
            }
            let now = Instant::now();
            for e in out {
                match e {
                    // The order of the daemon's shell: the gate opens only on `Serve`,
                    // which the core gives only after the fence is confirmed.
                    Effect::Serve(reason) => {
                        self.gate(true);
                        self.note(now, PairEvent::Serving(reason));
                    }
                    Effect::StopServing => {
                        self.gate(false);
                        self.note(now, PairEvent::StoppedServing);
                    }
                    Effect::Fence(_) => {
                        self.note(now, PairEvent::Fencing);
                        let (peer, pdus) = (self.peer.clone(), self.pdus.clone());
                        let (bmc, pdu) = self.backends.clone();
                        let done = fence_tx.clone();
                        tokio::spawn(async move {
                            // The lab's timeline shows the fence as pair events.
                            let r =
                                fence_peer(&peer, &pdus, bmc.as_ref(), pdu.as_ref(), &|_| {}).await;
                            let _ = done.send(r).await;
                        });
                    }
                    Effect::Log(line) => self.note(now, PairEvent::Log(line)),
                    Effect::Refused(_) => {}
                }
            }
            let role = self.core.role();
            self.roles.send_if_modified(|r| {
                let changed = r[self.i] != Some(role);
                r[self.i] = Some(role);
                changed
            });
            if role != before {
                self.heartbeat().await;
            }
        }
    }
}
