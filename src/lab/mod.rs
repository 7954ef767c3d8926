//! `haconn lab`: the reset path end to end in one process, on loopback, nothing installed.
//!
//! A scenario ([`cast`]) builds a loopback-only spec in memory (random HMAC key, an
//! ephemeral reset-path port), starts a real [`Pipeline`] on simulated hardware, and plays
//! the world around it over real UDP on 127.0.0.0/8, each node at an address of its own
//! (127.0.10.N): HA monitors that check in and ask for a reset with protocol-v1
//! datagrams, dump agents that answer an NMI with "stopped". It
//! injects the failure, prints a timeline with times relative to the first reset request
//! ([`timeline`]), the reset-log lines, and whether the expected outcome happened.
//! `takeover` adds a management-server pair ([`pair`]): two role cores in this process
//! whose gate on the one pipeline stands for the reset path's address.
//!
//! The lab's own side runs on a small runtime of its own; the pipeline keeps its thread
//! and runtime as in the daemon. Every wait is bounded by the scenario's deadline.

pub mod cast;
mod pair;
mod timeline;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::backend::sim::{Behavior, DeviceId, Sim, SimEvent};
use crate::backend::{BackendResult, Backends, Bmc, PowerState};
use crate::log::LogSink;
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::resetpath::codec::{self, AttentionState, Envelope, Key, Message, ResetResult};
use crate::spec::model::Bmc as BmcSpec;
use crate::spec::{CheckOptions, check_bytes};
pub use cast::{Cast, Request, Scenario, Timings};
use pair::PairEvent;
use timeline::{Actor, Event, Reorder, What};

/// How long a dump agent takes to report "stopped" after the NMI lands.
pub const DUMP_AGENT_DELAY: Duration = Duration::from_millis(300);
/// Simulated answer times: a BMC, a PDU, an ESXi host.
/// How much sooner than the NMI a hard reset may reach a simulated BMC, for the lab's
/// check that the two were requested hispeed apart.
const DELIVERY_SKEW: Duration = Duration::from_millis(20);

const BMC_DELAY: Duration = Duration::from_millis(20);
const PDU_DELAY: Duration = Duration::from_millis(30);
const ESXI_DELAY: Duration = Duration::from_millis(15);
/// How long the lab keeps listening once the expected outcome is complete, to catch
/// anything that should not happen.
const GRACE: Duration = Duration::from_millis(300);
/// `takeover`: how long both servers run after the check-in before labms01 dies, and
/// when after its death node01 first asks for node02's reset.
const STEADY: Duration = Duration::from_millis(300);
const ASK_AFTER_DEATH: Duration = Duration::from_millis(150);
/// When an HA monitor sends a reset request again while no reply came (PROTOCOL.md,
/// "Retransmission: advice to clients"): six sends at most.
const RESENDS: [Duration; 5] = [
    Duration::from_millis(150),
    Duration::from_millis(450),
    Duration::from_millis(1050),
    Duration::from_millis(2050),
    Duration::from_millis(3050),
];

/// What `haconn lab` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub scenario: Scenario,
    pub timings: Timings,
    /// Print the scenario's spec (secrets masked) before running it.
    pub show_spec: bool,
}

/// How a scenario ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: Scenario,
    pub passed: bool,
    /// From the first reset request to the last expected event.
    pub elapsed: Duration,
}

/// The lab's BMCs: the simulator's, except that a BMC named in `dies_after_nmi` stops
/// answering once it has taken the NMI (set on the simulator in the same call, so the
/// hard reset that follows always finds it dead).
#[derive(Debug)]
struct LabBmc {
    sim: Arc<Sim>,
    dies_after_nmi: Option<std::net::IpAddr>,
}

#[async_trait]
impl Bmc for LabBmc {
    async fn power_state(&self, bmc: &BmcSpec) -> BackendResult<PowerState> {
        self.sim.power_state(bmc).await
    }

    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let r = self.sim.nmi(bmc).await;
        if self.dies_after_nmi == Some(bmc.address) {
            self.sim
                .set(DeviceId::Bmc(bmc.address), |d| d.behavior = Behavior::Hangs);
        }
        r
    }

    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.sim.hard_reset(bmc).await
    }

    async fn power(&self, bmc: &BmcSpec, on: bool) -> BackendResult<()> {
        self.sim.power(bmc, on).await
    }
}

fn random_text(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| ALPHABET[rand::random::<u32>() as usize % ALPHABET.len()] as char)
        .collect()
}

/// Runs one scenario, printing as it goes.
pub fn run(opts: &Options, out: &mut dyn Write) -> anyhow::Result<Report> {
    let cast = Cast::of(opts.scenario);
    let t = opts.timings;
    let reset_path = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .context("binding the lab's reset path on 127.0.0.1")?;
    let connector = reset_path.local_addr()?;
    let mlan = if cast.mservers.len() == 2 {
        (0..2)
            .map(|i| bind_mlan(i, connector.port()))
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let mlan_addrs = mlan
        .iter()
        .map(std::net::UdpSocket::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    let key = random_text(32);
    let text = cast.spec_text(connector.port(), &mlan_addrs, &key, &random_text(16), t);
    let checked = check_bytes(text.as_bytes(), CheckOptions::default());
    let spec = checked.spec.ok_or_else(|| {
        anyhow!(
            "the lab's own spec is invalid (a bug): {}",
            checked
                .diagnostics
                .iter()
                .map(|d| d.render("lab"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;

    writeln!(out, "haconn lab: scenario {}", cast.scenario.name())?;
    writeln!(out, "  {}", cast.story)?;
    writeln!(
        out,
        "  reset path {connector}, HMAC-SHA256 with per-node keys derived from a random key held in memory; everything on 127.0.0.0/8"
    )?;
    writeln!(
        out,
        "  hispeed {} ms{}; simulated hardware (BMC answers in {} ms)",
        t.hispeed_ms,
        if cast.outlets.is_empty() {
            String::new()
        } else {
            format!(
                ", iPDU timeout {} s, recovery {} s",
                t.timeout_s, t.recovery_s
            )
        },
        BMC_DELAY.as_millis()
    )?;
    if let [a, b] = mlan_addrs.as_slice() {
        writeln!(
            out,
            "  management servers {} (heartbeats from {a}) and {} (from {b}): two role cores in this process, heartbeat every {} ms, lost after {} missed",
            cast.mservers[0].name,
            cast.mservers[1].name,
            spec.pair.heartbeat_interval.as_millis(),
            spec.pair.heartbeat_misses
        )?;
        writeln!(
            out,
            "  simulated: one pipeline stands for both; its gate (open while a server serves) stands for the reset path's address moving"
        )?;
    }
    if cast.scenario == Scenario::Guest {
        writeln!(
            out,
            "  (hispeed applies to physical servers; a guest gets its hard reset after {} ms)",
            crate::pipeline::reset::GUEST_HARD_RESET_AFTER.as_millis()
        )?;
    }
    if opts.show_spec {
        writeln!(out, "\nspec (secrets masked)")?;
        for l in crate::spec::render::normalized_yaml(&spec).lines() {
            writeln!(out, "  {l}")?;
        }
    }

    let sim = Arc::new(Sim::default());
    for n in &cast.nodes {
        let delay = match n.device {
            DeviceId::Vm(..) => ESXI_DELAY,
            _ => BMC_DELAY,
        };
        sim.set(n.device.clone(), |d| d.delay = delay);
    }
    for (pdu, _) in &cast.outlets {
        sim.set(DeviceId::Pdu(*pdu), |d| d.delay = PDU_DELAY);
    }
    for m in &cast.mservers {
        sim.set(DeviceId::Bmc(m.bmc), |d| d.delay = BMC_DELAY);
    }
    let hardware = sim.subscribe();
    let (tx, rx) = mpsc::unbounded_channel::<Event>();
    let (reset_log, reset_rx) = LogSink::channel();
    let (error_log, error_rx) = LogSink::channel();
    let t_chrono = chrono::Local::now();
    let t_instant = Instant::now();
    let at = move |ts: chrono::DateTime<chrono::Local>| {
        t_instant + (ts - t_chrono).to_std().unwrap_or_default()
    };
    for (log_rx, is_reset) in [(reset_rx, true), (error_rx, false)] {
        let tx = tx.clone();
        std::thread::Builder::new()
            .name("haconn-lab-log".into())
            .spawn(move || {
                for (ts, line) in log_rx {
                    let what = if is_reset {
                        What::ResetLog(ts, line)
                    } else {
                        What::ErrorLog(ts, line)
                    };
                    let _ = tx.send(Event { at: at(ts), what });
                }
            })?;
    }
    let bmc: Arc<dyn Bmc> = Arc::new(LabBmc {
        sim: sim.clone(),
        dies_after_nmi: cast.dies_after_nmi,
    });
    let backends = Backends {
        bmc: bmc.clone(),
        pdu: sim.clone(),
        hypervisor: sim.clone(),
    };
    let pair_spec = (!mlan.is_empty()).then(|| spec.clone());
    let (pipeline, thread) = Pipeline::start(
        spec,
        PipelineConfig {
            backends,
            reset_path: Some(reset_path),
            fence_kdump: None,
            reset_log,
            error_log,
            monitor_expiry: Duration::from_secs(60),
            watch: cast.loses_power.map(|(_, every)| every),
            state_dir: None,
            // A pair serves only once a server is active.
            standing_by: !mlan.is_empty(),
        },
    )
    .context("starting the pipeline thread")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("haconn-lab")
        .enable_all()
        .build()
        .context("starting the lab's runtime")?;
    let kit = pair_spec.map(|spec| PairKit {
        spec,
        mlan,
        cluster_key: key.clone().into_bytes(),
        bmc,
        pdu: sim.clone(),
        gate: pipeline.clone(),
    });
    let world = World {
        sim: sim.clone(),
        cast: &cast,
        master: key.into_bytes(),
        connector,
        timings: t,
    };
    let played = runtime.block_on(world.play(hardware, tx, rx, kit, out));
    let standby_dropped = pipeline
        .counters()
        .standby_dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    drop(pipeline);
    // The lab's tasks (a pair's servers hold the pipeline's handle) end first.
    runtime.shutdown_timeout(Duration::from_secs(1));
    thread.join();
    let mut seen = played?;
    seen.standby_dropped = standby_dropped;

    writeln!(out, "\nreset log")?;
    for (ts, line) in &seen.reset_log {
        writeln!(out, "  {} {line}", crate::log::timestamp(*ts))?;
    }
    if !seen.error_log.is_empty() {
        writeln!(out, "\nerror log")?;
        for (ts, line) in &seen.error_log {
            writeln!(out, "  {} {line}", crate::log::timestamp(*ts))?;
        }
    }
    let checks = verdict(&cast, t, &seen, &sim);
    writeln!(out, "\noutcome")?;
    for (ok, what) in &checks {
        writeln!(out, "  {}  {what}", if *ok { "ok    " } else { "FAILED" })?;
    }
    let passed = checks.iter().all(|(ok, _)| *ok);
    let elapsed = seen.done.unwrap_or(seen.end) - seen.t0;
    writeln!(
        out,
        "lab {}: {} ({:.1} s from the {})",
        cast.scenario.name(),
        if passed {
            "PASSED, the expected outcome happened"
        } else {
            "FAILED"
        },
        elapsed.as_secs_f64(),
        if cast.loses_power.is_some() {
            "power loss"
        } else if cast.mservers.len() == 2 {
            "death of labms01"
        } else {
            "reset request"
        }
    )?;
    out.flush()?;
    Ok(Report {
        scenario: cast.scenario,
        passed,
        elapsed,
    })
}

/// Binds management server `i`'s heartbeat socket on 127.0.20.(i+1), on a port other than
/// the reset path's (the spec requires it).
fn bind_mlan(i: usize, reset_port: u16) -> anyhow::Result<std::net::UdpSocket> {
    let ip = cast::mlan_ip(i);
    // A socket on the reset path's port is kept until the search ends, so the kernel
    // hands out another port.
    let mut held = Vec::new();
    loop {
        let sock = std::net::UdpSocket::bind((ip, 0))
            .with_context(|| format!("binding a lab heartbeat socket on {ip}"))?;
        if sock.local_addr()?.port() != reset_port {
            return Ok(sock);
        }
        held.push(sock);
    }
}

/// What a pair's servers need, made before the lab's runtime starts them.
struct PairKit {
    spec: crate::spec::model::Spec,
    mlan: Vec<std::net::UdpSocket>,
    cluster_key: Vec<u8>,
    bmc: Arc<dyn Bmc>,
    pdu: Arc<dyn crate::backend::Pdu>,
    gate: Pipeline,
}

/// The world around the pipeline: monitors, dump agents, and what they saw.
struct World<'a> {
    sim: Arc<Sim>,
    cast: &'a Cast,
    /// The spec's cluster key: each node signs with its own key derived from it.
    master: Vec<u8>,
    connector: SocketAddr,
    timings: Timings,
}

/// Everything the lab saw after the check-in, in time order.
#[derive(Debug)]
struct Seen {
    t0: Instant,
    /// When the expected outcome was complete.
    done: Option<Instant>,
    end: Instant,
    events: Vec<Event>,
    reset_log: Vec<(chrono::DateTime<chrono::Local>, String)>,
    error_log: Vec<(chrono::DateTime<chrono::Local>, String)>,
    /// Datagrams the pipeline dropped while its gate was closed (no server active).
    standby_dropped: u64,
}

impl Seen {
    /// What the pair's servers did: (when, which, what).
    fn pair(&self) -> Vec<(Instant, usize, &PairEvent)> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::Pair(i, ev) => Some((e.at, *i, ev)),
                _ => None,
            })
            .collect()
    }

    /// The final replies (not ACCEPTED) to request `req`.
    fn finals(&self, req: u32) -> Vec<ResetResult> {
        self.replies(req)
            .into_iter()
            .filter(|r| *r != ResetResult::Accepted)
            .collect()
    }

    fn replies(&self, req: u32) -> Vec<ResetResult> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::Got {
                    msg: Message::ResetReply { req: r, result, .. },
                    ..
                } if *r == req => Some(*result),
                _ => None,
            })
            .collect()
    }

    /// Which monitors were told what about `system`.
    fn attentions(&self, system: &str) -> Vec<(usize, AttentionState)> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::Got {
                    to: Actor::Monitor(i),
                    msg:
                        Message::Attention {
                            system: s, state, ..
                        },
                } if s == system => Some((*i, *state)),
                _ => None,
            })
            .collect()
    }

    fn hardware(&self) -> Vec<(Instant, &SimEvent)> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::Hardware(h) => Some((e.at, h)),
                _ => None,
            })
            .collect()
    }

    /// When the PDUs confirmed switches to `state` (` OFF` or ` ON`): `IPDUSD … RECV` lines.
    fn confirmed_switches(&self, state: &str) -> Vec<Instant> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::ResetLog(_, l)
                    if l.starts_with("IPDUSD ") && l.contains(" RECV ") && l.ends_with(state) =>
                {
                    Some(e.at)
                }
                _ => None,
            })
            .collect()
    }

    fn reset_lines(&self, prefix: &str, suffix: &str) -> Vec<Instant> {
        self.events
            .iter()
            .filter_map(|e| match &e.what {
                What::ResetLog(_, l) if l.starts_with(prefix) && l.ends_with(suffix) => Some(e.at),
                _ => None,
            })
            .collect()
    }
}

impl World<'_> {
    /// The per-node key of `system`, as its key file would hold it.
    fn key_of(&self, system: &str) -> Key {
        Key::Hmac(crate::resetpath::keys::node_key(&self.master, system).into_bytes())
    }

    async fn send(&self, sock: &UdpSocket, msg: &Message) -> anyhow::Result<()> {
        let key = self.key_of(msg.sender().unwrap_or_default());
        let bytes = codec::encode(&Envelope::new(msg.clone()), &key);
        sock.send_to(&bytes, self.connector)
            .await
            .with_context(|| format!("sending to the reset path {}", self.connector))?;
        Ok(())
    }

    async fn play(
        &self,
        mut hardware: tokio::sync::broadcast::Receiver<SimEvent>,
        tx: mpsc::UnboundedSender<Event>,
        mut rx: mpsc::UnboundedReceiver<Event>,
        kit: Option<PairKit>,
        out: &mut dyn Write,
    ) -> anyhow::Result<Seen> {
        let cast = self.cast;
        let mut monitors = Vec::new();
        let mut agents = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..cast.nodes.len() {
            // Each node has an address of its own, as on a real cluster: its HA monitor
            // and its dump agent speak from it (the connector binds a requester to it).
            let ip = node_ip(i);
            for (list, actor) in [
                (&mut monitors, Actor::Monitor(i)),
                (&mut agents, Actor::Agent(i)),
            ] {
                let sock = Arc::new(
                    UdpSocket::bind((ip, 0))
                        .await
                        .with_context(|| format!("binding a lab socket on {ip}"))?,
                );
                tasks.push(tokio::spawn(listen(
                    sock.clone(),
                    actor,
                    self.key_of(&cast.nodes[i].system),
                    tx.clone(),
                )));
                list.push(sock);
            }
        }
        // The hardware's calls go to the timeline; an NMI wakes the node's dump agent.
        {
            let tx = tx.clone();
            let agents = agents.clone();
            let nodes = cast.nodes.clone();
            let keys: Vec<Key> = cast.nodes.iter().map(|n| self.key_of(&n.system)).collect();
            let connector = self.connector;
            tasks.push(tokio::spawn(async move {
                loop {
                    let ev = match hardware.recv().await {
                        Ok(ev) => ev,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    };
                    if let SimEvent::Nmi(d) = &ev
                        && let Some(i) = nodes.iter().position(|n| &n.device == d && n.dump_agent)
                    {
                        let (sock, tx, key) = (agents[i].clone(), tx.clone(), keys[i].clone());
                        let msg = Message::Stopped {
                            system: nodes[i].system.clone(),
                            subsystem: nodes[i].subsystem,
                        };
                        tokio::spawn(async move {
                            tokio::time::sleep(DUMP_AGENT_DELAY).await;
                            let bytes = codec::encode(&Envelope::new(msg.clone()), &key);
                            let at = Instant::now();
                            if sock.send_to(&bytes, connector).await.is_ok() {
                                let _ = tx.send(Event {
                                    at,
                                    what: What::Sent {
                                        from: Actor::Agent(i),
                                        msg,
                                    },
                                });
                            }
                        });
                    }
                    let _ = tx.send(Event {
                        at: Instant::now(),
                        what: What::Hardware(ev),
                    });
                }
            }));
        }

        let result = self.run_scenario(&monitors, &tx, &mut rx, kit, out).await;
        for t in tasks {
            t.abort();
        }
        result
    }

    async fn run_scenario(
        &self,
        monitors: &[Arc<UdpSocket>],
        tx: &mpsc::UnboundedSender<Event>,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        kit: Option<PairKit>,
        out: &mut dyn Write,
    ) -> anyhow::Result<Seen> {
        let cast = self.cast;
        // A pair elects its active first: nothing is served before.
        let mut pair = match kit {
            Some(k) => {
                let mut p = pair::start(
                    &k.spec,
                    k.mlan,
                    &k.cluster_key,
                    (k.bmc, k.pdu),
                    k.gate,
                    tx.clone(),
                )?;
                if !p.settled(Duration::from_secs(3)).await {
                    anyhow::bail!(
                        "the lab's management servers did not settle as one active, one standby within 3 s"
                    );
                }
                writeln!(
                    out,
                    "\nmanagement servers: {} active, {} standby",
                    cast.mservers[0].name, cast.mservers[1].name
                )?;
                Some(p)
            }
            None => None,
        };
        // Check-in: every monitor registers and must hear it can be reset.
        writeln!(out, "\nHA monitors check in")?;
        for (i, n) in cast.nodes.iter().enumerate() {
            let port = monitors[i].local_addr()?.port();
            self.send(
                &monitors[i],
                &Message::Check {
                    system: n.system.clone(),
                    subsystem: n.subsystem,
                    port,
                    pair: n.pair,
                },
            )
            .await?;
        }
        let mut early = Reorder::default();
        let mut replied = vec![None; cast.nodes.len()];
        let check_deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while replied.iter().any(Option::is_none) {
            let ev = match tokio::time::timeout_at(check_deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                _ => break,
            };
            match &ev.what {
                What::Got {
                    to: Actor::Monitor(i),
                    msg:
                        Message::CheckReply {
                            resettable, via, ..
                        },
                } => replied[*i] = Some((*resettable, via.clone())),
                _ => early.push(ev),
            }
        }
        for (i, n) in cast.nodes.iter().enumerate() {
            let answer = match &replied[i] {
                Some((true, via)) => format!("resettable via {via}"),
                Some((false, _)) => "NOT resettable".into(),
                None => "no answer".into(),
            };
            writeln!(
                out,
                "  {:<6}  subsystem {}  pair {:<4}  {:<16}  {answer}",
                n.system,
                n.subsystem,
                n.pair.map_or("----".into(), |p| p.to_string()),
                monitors[i].local_addr()?.to_string()
            )?;
        }
        if replied.iter().any(|r| !matches!(r, Some((true, _)))) {
            anyhow::bail!("not every HA monitor could check in over the reset path");
        }

        if let Some((i, every)) = cast.loses_power {
            // Let the watch see every node powered on first.
            tokio::time::sleep(3 * every).await;
            writeln!(
                out,
                "\ntimeline (t = 0 when {} loses power; the watch polls every BMC every {} ms)",
                cast.nodes[i].system,
                every.as_millis()
            )?;
        } else if pair.is_some() {
            tokio::time::sleep(STEADY).await;
            writeln!(
                out,
                "\ntimeline (t = 0 when {} dies; {} asks for {}'s reset {} ms later and sends again while no reply comes)",
                cast.mservers[0].name,
                cast.nodes[0].system,
                cast.nodes[1].system,
                ASK_AFTER_DEATH.as_millis()
            )?;
        } else {
            writeln!(out, "\ntimeline (t = 0 at the first reset request)")?;
        }
        let t0 = Instant::now();
        if let Some(p) = &mut pair {
            p.kill(0);
        }
        if let Some((i, _)) = cast.loses_power {
            self.sim
                .set(cast.nodes[i].device.clone(), |d| d.power = PowerState::Off);
            let _ = tx.send(Event {
                at: t0,
                what: What::Note(
                    cast.nodes[i].system.clone(),
                    "POWER LOST (its power supply fails; nobody asks for a reset)".into(),
                ),
            });
        }
        // A pair's failover: the request is asked while nobody serves, and sent again
        // while no reply comes, as a real HA monitor does. The other scenarios send once.
        let mut asks: Vec<(Request, Instant, usize)> = Vec::new();
        for r in &cast.requests {
            if pair.is_some() {
                asks.push((*r, t0 + ASK_AFTER_DEATH, 0));
            } else {
                self.ask(monitors, tx, *r, 0).await?;
            }
        }
        let mut answered = std::collections::HashSet::new();

        let t = self.timings;
        let deadline = t0
            + cast
                .loses_power
                .map_or(Duration::ZERO, |(_, every)| 10 * every)
            + Duration::from_millis(u64::from(t.hispeed_ms))
            + crate::pipeline::reset::GUEST_HARD_RESET_AFTER
            + 2 * crate::pipeline::reset::OPERATION_TIMEOUT
            + Duration::from_secs(u64::from(t.timeout_s + t.recovery_s) + 5);
        let mut seen = Seen {
            t0,
            done: None,
            end: t0,
            events: Vec::new(),
            reset_log: Vec::new(),
            error_log: Vec::new(),
            standby_dropped: 0,
        };
        let mut buffer = early;
        loop {
            let now = Instant::now();
            if seen.done.is_some_and(|d| now >= d + GRACE) || now >= deadline {
                break;
            }
            if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(5), rx.recv()).await {
                if let What::Got {
                    msg: Message::ResetReply { req, .. },
                    ..
                } = &ev.what
                {
                    answered.insert(*req);
                }
                buffer.push(ev);
            }
            for (r, first, sent) in &mut asks {
                let due = *first + sent.checked_sub(1).map_or(Duration::ZERO, |k| RESENDS[k]);
                if answered.contains(&r.req) || *sent > RESENDS.len() || Instant::now() < due {
                    continue;
                }
                self.ask(monitors, tx, *r, *sent).await?;
                *sent += 1;
            }
            while let Some(ev) = buffer.pop(Some(Instant::now())) {
                self.show(&mut seen, ev, out)?;
            }
        }
        while let Some(ev) = buffer.pop(None) {
            self.show(&mut seen, ev, out)?;
        }
        seen.end = Instant::now();
        if seen.done.is_none() {
            writeln!(
                out,
                "  (stopped waiting after {:.1} s: the expected outcome did not complete)",
                (seen.end - t0).as_secs_f64()
            )?;
        }
        Ok(seen)
    }

    /// Node `r.requester`'s HA monitor asks for `r.target`'s reset; `tries` copies went
    /// before (each copy is a new datagram).
    async fn ask(
        &self,
        monitors: &[Arc<UdpSocket>],
        tx: &mpsc::UnboundedSender<Event>,
        r: Request,
        tries: usize,
    ) -> anyhow::Result<()> {
        let cast = self.cast;
        let (requester, target) = (&cast.nodes[r.requester], &cast.nodes[r.target]);
        let msg = Message::Reset {
            req: r.req,
            system: requester.system.clone(),
            subsystem: requester.subsystem,
            port: monitors[r.requester].local_addr()?.port(),
            target_system: target.system.clone(),
            target_subsystem: target.subsystem,
        };
        // Stamped before it leaves: the answer may be heard before `send` returns.
        let at = Instant::now();
        self.send(&monitors[r.requester], &msg).await?;
        let what = if tries == 0 {
            What::Sent {
                from: Actor::Monitor(r.requester),
                msg,
            }
        } else {
            What::Note(
                format!("{} HA monitor → haconn", requester.system),
                format!(
                    "RESET {} again, req {} (send {}: no reply yet)",
                    target.system,
                    r.req,
                    tries + 1
                ),
            )
        };
        let _ = tx.send(Event { at, what });
        Ok(())
    }

    /// Prints an event on the timeline and records it.
    fn show(&self, seen: &mut Seen, ev: Event, out: &mut dyn Write) -> anyhow::Result<()> {
        match &ev.what {
            What::ResetLog(ts, l) => seen.reset_log.push((*ts, l.clone())),
            What::ErrorLog(ts, l) => seen.error_log.push((*ts, l.clone())),
            _ => {}
        }
        if let Some((who, what)) = timeline::describe(&ev.what, self.cast, self.timings.hispeed_ms)
        {
            writeln!(
                out,
                "  {}  {who:<34}  {what}",
                timeline::stamp(ev.at, seen.t0)
            )?;
        }
        seen.events.push(ev);
        if seen.done.is_none() && complete(self.cast, seen) {
            seen.done = Some(Instant::now());
        }
        Ok(())
    }
}

/// Listens on one lab socket: every valid datagram becomes an event.
async fn listen(sock: Arc<UdpSocket>, actor: Actor, key: Key, tx: mpsc::UnboundedSender<Event>) {
    let mut buf = vec![0u8; codec::MAX_DATAGRAM + 1];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf).await else {
            return;
        };
        let at = Instant::now();
        if let Ok(env) = codec::decode(&buf[..n], &key) {
            let _ = tx.send(Event {
                at,
                what: What::Got {
                    to: actor,
                    msg: env.msg,
                },
            });
        }
    }
}

/// Whether everything the scenario waits for has been seen: a final reply to every
/// request, the attention at every other monitor for each reset done, and (PDU cut) the
/// outlets back on.
fn complete(cast: &Cast, seen: &Seen) -> bool {
    if let Some((i, _)) = cast.loses_power {
        let told = seen.attentions(&cast.nodes[i].system);
        return (0..cast.nodes.len())
            .filter(|&m| m != i)
            .all(|m| told.iter().any(|(x, _)| *x == m));
    }
    for r in &cast.requests {
        let finals = seen.finals(r.req);
        let Some(result) = finals.first() else {
            return false;
        };
        if matches!(result, ResetResult::Dump | ResetResult::Poff) {
            let target = &cast.nodes[r.target].system;
            let told = seen.attentions(target);
            let others = (0..cast.nodes.len()).filter(|&i| i != r.target);
            if !others
                .into_iter()
                .all(|i| told.iter().any(|(m, _)| *m == i))
            {
                return false;
            }
        }
    }
    seen.confirmed_switches(" ON").len() >= cast.outlets.len()
}

/// The scenario's expected outcome, check by check.
fn verdict(cast: &Cast, t: Timings, seen: &Seen, sim: &Sim) -> Vec<(bool, String)> {
    let mut checks: Vec<(bool, String)> = Vec::new();
    let hw = seen.hardware();
    let nmis = |d: &DeviceId| {
        hw.iter()
            .filter(|(_, e)| matches!(e, SimEvent::Nmi(x) if x == d))
            .map(|(at, _)| *at)
            .collect::<Vec<_>>()
    };
    let hard = |d: &DeviceId| {
        hw.iter()
            .filter(|(_, e)| matches!(e, SimEvent::HardReset(x) if x == d))
            .map(|(at, _)| *at)
            .collect::<Vec<_>>()
    };
    let mut check = |ok: bool, what: String| checks.push((ok, what));
    let told_all = |target: usize, state: AttentionState| {
        let told = seen.attentions(&cast.nodes[target].system);
        (0..cast.nodes.len())
            .filter(|&i| i != target)
            .all(|i| told.contains(&(i, state)))
            && told.iter().all(|(i, s)| *i != target && *s == state)
    };
    let others = |target: usize| {
        cast.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != target)
            .map(|(_, n)| n.system.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let hispeed = Duration::from_millis(u64::from(t.hispeed_ms));

    if let Some((i, every)) = cast.loses_power {
        let node = &cast.nodes[i];
        check(
            told_all(i, AttentionState::Poff),
            format!("{} were told ATTENTION {} POFF", others(i), node.system),
        );
        let first = seen
            .events
            .iter()
            .find(|e| {
                matches!(&e.what, What::Got { msg: Message::Attention { system, .. }, .. }
                    if *system == node.system)
            })
            .map(|e| e.at);
        // One poll interval, plus the simulated BMC's answer time and a loaded machine.
        let bound = every + BMC_DELAY + Duration::from_millis(1000);
        check(
            first.is_some_and(|f| f <= seen.t0 + bound),
            format!(
                "within one poll interval ({} ms; allowed {} ms)",
                every.as_millis(),
                bound.as_millis()
            ),
        );
        let touched = hw.iter().any(|(_, e)| {
            matches!(
                e,
                SimEvent::Nmi(_) | SimEvent::HardReset(_) | SimEvent::Outlet { .. }
            )
        });
        check(
            !touched,
            "nothing was reset: haconn only told what it saw".into(),
        );
        check(
            seen.reset_lines("ATTENTION", " POFF").len() >= cast.nodes.len() - 1,
            "the reset log has the ATTENTION ... POFF lines".into(),
        );
        return checks;
    }

    if cast.scenario == Scenario::Pair {
        let accepted: Vec<_> = cast
            .requests
            .iter()
            .filter(|r| seen.replies(r.req).contains(&ResetResult::Accepted))
            .collect();
        let failed: Vec<_> = cast
            .requests
            .iter()
            .filter(|r| seen.finals(r.req) == [ResetResult::Fail])
            .collect();
        check(
            accepted.len() == 1 && failed.len() == 1,
            "exactly one of the crossing requests ran; the other got FAIL".into(),
        );
        let nmi_count = hw
            .iter()
            .filter(|(_, e)| matches!(e, SimEvent::Nmi(_)))
            .count();
        check(
            nmi_count == 1,
            format!("exactly one node was sent an NMI (saw {nmi_count})"),
        );
        if let [winner] = accepted.as_slice() {
            let w = &cast.nodes[winner.requester].system;
            let target = winner.target;
            check(
                seen.finals(winner.req) == [ResetResult::Dump],
                format!("{w} got DUMP for req {}", winner.req),
            );
            check(
                told_all(target, AttentionState::Dump),
                format!(
                    "{} were told ATTENTION {} DUMP",
                    others(target),
                    cast.nodes[target].system
                ),
            );
            check(
                nmis(&cast.nodes[winner.requester].device).is_empty(),
                format!("{w}, the winner, was never touched"),
            );
        }
        return checks;
    }

    let r = cast.requests[0];
    let (requester, target) = (&cast.nodes[r.requester], &cast.nodes[r.target]);
    check(
        seen.finals(r.req) == [ResetResult::Dump],
        format!(
            "{} got DUMP (reset done) for req {}",
            requester.system, r.req
        ),
    );
    let nmi = nmis(&target.device);
    check(
        nmi.len() == 1,
        format!("{} got one NMI", target.device_label()),
    );
    let untouched = cast
        .nodes
        .iter()
        .filter(|n| n.system != target.system)
        .all(|n| nmis(&n.device).is_empty() && hard(&n.device).is_empty());
    check(untouched, "no other node was touched".into());
    let hard_at = hard(&target.device);
    match cast.scenario {
        Scenario::Dump | Scenario::Takeover => {
            check(
                hard_at.is_empty(),
                "the dump agent's STOPPED ended the reset: no hard reset".into(),
            );
            check(
                told_all(r.target, AttentionState::Dump),
                format!(
                    "{} were told ATTENTION {} DUMP",
                    others(r.target),
                    target.system
                ),
            );
        }
        Scenario::Hang | Scenario::Guest => {
            let after = if cast.scenario == Scenario::Guest {
                crate::pipeline::reset::GUEST_HARD_RESET_AFTER
            } else {
                hispeed
            };
            // The seed counts hispeed from the NMI's request to the hard reset's request
            // (`tests/it/pipeline_timing.rs` pins that on a paused clock); what the lab sees
            // is when each reached the simulated BMC, and on a loaded machine the NMI can
            // take a few ms longer on its way than the hard reset does.
            check(
                matches!((nmi.first(), hard_at.as_slice()),
                    (Some(n), [h]) if *h + DELIVERY_SKEW >= *n + after),
                format!(
                    "one hard reset, {} ms or more after the NMI (as they reached the BMC, within {} ms)",
                    after.as_millis(),
                    DELIVERY_SKEW.as_millis()
                ),
            );
            check(
                seen.reset_lines("HARDRESET", " P").len()
                    + seen.reset_lines("HARDRESET", " V").len()
                    == 2,
                "the hard reset was sent and acknowledged (reset log)".into(),
            );
            check(
                told_all(r.target, AttentionState::Reboot),
                format!(
                    "{} were told ATTENTION {} REBOOT",
                    others(r.target),
                    target.system
                ),
            );
            if cast.scenario == Scenario::Guest {
                let host_bmc = hw.iter().any(|(_, e)| {
                    matches!(
                        e,
                        SimEvent::Nmi(DeviceId::Bmc(_)) | SimEvent::HardReset(DeviceId::Bmc(_))
                    )
                });
                check(
                    !host_bmc,
                    "the ESXi host itself was not reset (its BMC untouched)".into(),
                );
            }
        }
        Scenario::BmcDead => {
            let timeout = Duration::from_secs(u64::from(t.timeout_s));
            let recovery = Duration::from_secs(u64::from(t.recovery_s));
            check(
                hard_at.len() == 1 && seen.reset_lines("HARDRESET", " P").len() == 1,
                "the hard reset was sent and never acknowledged".into(),
            );
            let off = seen.confirmed_switches(" OFF");
            let on = seen.confirmed_switches(" ON");
            check(
                off.len() == cast.outlets.len()
                    && hard_at
                        .first()
                        .is_some_and(|h| off.iter().all(|o| *o >= *h + timeout)),
                format!(
                    "every feeding outlet ({}) was cut, {} s or more after the hard reset",
                    cast.outlets.len(),
                    t.timeout_s
                ),
            );
            check(
                told_all(r.target, AttentionState::Reboot),
                format!(
                    "{} were told ATTENTION {} REBOOT",
                    others(r.target),
                    target.system
                ),
            );
            let last_off = off.iter().max();
            check(
                on.len() == cast.outlets.len()
                    && last_off.is_some_and(|o| on.iter().all(|x| *x >= *o + recovery))
                    && cast.outlets.iter().all(|(p, o)| sim.outlet_on(*p, *o)),
                format!(
                    "the outlets were back on after the {} s recovery time",
                    t.recovery_s
                ),
            );
        }
        Scenario::Pair | Scenario::PowerOff => unreachable!("handled above"),
    }
    if cast.scenario == Scenario::Takeover {
        checks.extend(takeover_verdict(cast, seen, sim));
    }
    checks
}

/// The pair's part of `takeover`: never two serving, the fence before the takeover, one
/// hard reset of the dead server, the request asked during the failover served after it.
fn takeover_verdict(cast: &Cast, seen: &Seen, sim: &Sim) -> Vec<(bool, String)> {
    let mut checks: Vec<(bool, String)> = Vec::new();
    let mut check = |ok: bool, what: String| checks.push((ok, what));
    let (ms01, ms02) = (&cast.mservers[0], &cast.mservers[1]);
    let pair = seen.pair();
    let when = |server: usize, f: &dyn Fn(&PairEvent) -> bool| {
        pair.iter()
            .find(|(_, i, ev)| *i == server && f(ev))
            .map(|(at, _, _)| *at)
    };

    // Who serves, change by change: a serve, a stop, a death while serving.
    let mut serving = [false, false];
    let mut most = 0;
    let mut changes = Vec::new();
    for (_, i, ev) in &pair {
        match ev {
            PairEvent::Serving(r) => {
                serving[*i] = true;
                changes.push((*i, Some(*r)));
            }
            PairEvent::StoppedServing | PairEvent::Died { served: true } => {
                serving[*i] = false;
                changes.push((*i, None));
            }
            _ => continue,
        }
        most = most.max(serving.iter().filter(|s| **s).count());
    }
    check(
        most <= 1,
        "never two management servers active at once".into(),
    );
    let died = when(0, &|e| matches!(e, PairEvent::Died { .. }));
    let lost = when(1, &|e| matches!(e, PairEvent::HeartbeatLost { .. }));
    let fenced = when(1, &|e| matches!(e, PairEvent::FenceDone(Ok(_))));
    let active = when(1, &|e| matches!(e, PairEvent::Serving(_)));
    let window = match (died, active) {
        (Some(d), Some(a)) => format!(
            "{:.0} ms",
            (a.saturating_duration_since(d)).as_secs_f64() * 1000.0
        ),
        _ => "?".into(),
    };
    check(
        changes
            == [
                (0, Some(crate::pair::role::Reason::Elected)),
                (0, None),
                (1, Some(crate::pair::role::Reason::PeerLost)),
            ],
        format!(
            "one active at a time: {} (elected) until it died, then {} (took over); nobody for the {window} between",
            ms01.name, ms02.name
        ),
    );
    // When the simulator took the call (the timeline's copy may arrive a little late).
    let calls = sim.calls();
    let resets = |ip: std::net::IpAddr| {
        calls
            .iter()
            .filter(|(_, e)| matches!(e, SimEvent::HardReset(DeviceId::Bmc(a)) if *a == ip))
            .map(|(at, _)| at.into_std())
            .collect::<Vec<_>>()
    };
    let hard01 = resets(ms01.bmc);
    check(
        matches!((died, lost, hard01.as_slice(), fenced, active),
            (Some(d), Some(l), [h], Some(f), Some(a)) if d <= l && l <= *h && *h <= f && f <= a),
        format!(
            "{} served only after {} was fenced (death, heartbeat lost, hard reset, fenced, {} active, in that order)",
            ms02.name, ms01.name, ms02.name
        ),
    );
    check(
        hard01.len() == 1 && resets(ms02.bmc).is_empty(),
        format!(
            "{}'s BMC got exactly one hard reset (saw {}); {}'s none",
            ms01.name,
            hard01.len(),
            ms02.name
        ),
    );

    let r = cast.requests[0];
    let asked = seen
        .events
        .iter()
        .find(|e| {
            matches!(&e.what, What::Sent { msg: Message::Reset { req, .. }, .. } if *req == r.req)
        })
        .map(|e| e.at);
    let first_reply = seen
        .events
        .iter()
        .find(|e| {
            matches!(&e.what, What::Got { msg: Message::ResetReply { req, .. }, .. } if *req == r.req)
        })
        .map(|e| e.at);
    check(
        matches!((died, asked, active, first_reply),
            (Some(d), Some(q), Some(a), Some(f)) if d <= q && q < a && a <= f),
        format!(
            "{} asked during the failover (nobody serving) and was answered only after {} took over",
            cast.nodes[r.requester].system, ms02.name
        ),
    );
    check(
        seen.standby_dropped >= 1,
        format!(
            "the reset path dropped what came while nobody served ({} datagram(s))",
            seen.standby_dropped
        ),
    );
    checks
}

/// Runs `scenarios` one after the other; exit status: 0 when each passed.
pub fn run_all(
    scenarios: &[Scenario],
    timings: Timings,
    show_spec: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Vec<Report>> {
    let mut reports = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        if i > 0 {
            writeln!(out, "\n{}\n", "=".repeat(78))?;
        }
        reports.push(run(
            &Options {
                scenario: *s,
                timings,
                show_spec,
            },
            out,
        )?);
    }
    Ok(reports)
}

/// The loopback address of lab node `i` (node01 is 127.0.10.1).
fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 10, i as u8 + 1)
}
