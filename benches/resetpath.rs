//! Reset-path benchmark: how long a reset request takes to reach the hardware.
//!
//! Dispatch latency = from just before an HA monitor's reset datagram is sent to the
//! moment the pipeline calls the target's BMC for the NMI (a backend in this file stamps
//! each `nmi` call). The pipeline is the real one, on a `scale: large` spec of 4096
//! systems (256 physical servers + 240 ESXi hosts × 16 guests), with real UDP on
//! 127.0.0.0/8 and HMAC-signed datagrams. Five phases, 250 resets each, 10–70 ms apart:
//!
//! 1. idle: nothing else happens;
//! 2. checks: 4096 HA monitors (one socket each, on their own 127.1.x.y address) check at
//!    1 Hz, spread evenly;
//! 3. reloads: a reload every 100 ms, as the supervisor makes one (`facts`, then `commit`
//!    of the other of two spec variants), with the 4096 monitors registered;
//! 4. checks + reloads: the target load;
//! 5. the same, but every reset succeeds (hard reset after hispeed) and so ends with an
//!    ATTENTION to the 4096 registered monitors;
//! 6. flood (issue 19): the checks, plus about 300 000 junk datagrams a second from one
//!    source (127.0.0.250) and 30 000 unsigned checks a second for unknown systems from
//!    256 sources (127.200.0.x, not monitors' addresses), next to the same without the
//!    flood; then both again on a reset path without authentication.
//!
//! Requesters retransmit as `haconn node` does (a new datagram with the same `req` after
//! 150 ms without a reply, backing off to 1 s, six sends at most); the latency is counted
//! from the first send, and each phase says what share of requests needed a resend.
//!
//! In phases 1–4 the BMCs refuse, so each reset ends at once with FAIL and nothing but
//! dispatch is measured. Each phase also prints how busy the pipeline thread was, what the
//! kernel dropped at the reset-path socket, and the reloads' round trips.
//!
//! Prints p50 / p99 / max next to the 1 ms p99 target; it never fails on time. Logs go
//! to discarding sinks (the log writer's cost is not measured). Every loop is bounded.
//!
//! Run: `cargo bench --bench resetpath` (about a minute). Without `--bench`, as under
//! `cargo test`, it is one smoke test (`resetpath_smoke`: ten idle resets must all reach
//! the BMC), speaking enough of libtest's command line and output for test runners.

#[path = "common/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use haconn::backend::sim::Sim;
use haconn::backend::{BackendError, BackendResult, Backends, Bmc, PowerState};
use haconn::log::LogSink;
use haconn::pipeline::{Pipeline, PipelineConfig};
use haconn::resetpath::codec::{self, Envelope, Key, Message};
use haconn::spec::model::{Bmc as BmcSpec, Spec};
use haconn::spec::{CheckOptions, check_bytes};
use std::sync::atomic::AtomicU64;

const PHYSICAL: usize = 256;
const HOSTS: usize = 240;
const GUESTS_PER_HOST: usize = 16;
const MONITORS: usize = PHYSICAL + HOSTS * GUESTS_PER_HOST;
const RESETS_PER_PHASE: usize = 250;
/// Mean time between two resets; each gap is drawn from 10–70 ms so that resets do not
/// fall in step with the reloads (100 ms) or with earlier resets' completions (hispeed).
const RESET_EVERY: Duration = Duration::from_millis(40);
const RELOAD_EVERY: Duration = Duration::from_millis(100);
const CHECK_TICK: Duration = Duration::from_millis(1);
const TARGET_P99_MS: f64 = 1.0;
const KEY: &str = "bench-reset-path-key-0123456789";

/// A BMC backend that stamps each NMI; it acknowledges everything (`succeed`) or refuses
/// everything, at once.
#[derive(Debug)]
struct StampingBmc {
    nmi: Mutex<mpsc::Sender<(IpAddr, Instant)>>,
    succeed: AtomicBool,
}

impl StampingBmc {
    fn answer(&self, bmc: &BmcSpec, what: &str) -> BackendResult<()> {
        if self.succeed.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(BackendError::refused(
                bmc.address,
                format!("bench refuses {what}"),
            ))
        }
    }
}

#[async_trait]
impl Bmc for StampingBmc {
    async fn power_state(&self, _: &BmcSpec) -> BackendResult<PowerState> {
        Ok(PowerState::On)
    }

    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let at = Instant::now();
        let _ = self
            .nmi
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((bmc.address, at));
        self.answer(bmc, "the NMI")
    }

    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.answer(bmc, "the hard reset")
    }

    async fn power(&self, bmc: &BmcSpec, _: bool) -> BackendResult<()> {
        self.answer(bmc, "the power control")
    }
}

/// What runs beside the resets in a phase.
#[derive(Debug, Clone, Copy)]
struct Load {
    checks: bool,
    reloads: bool,
    flood: bool,
}

const QUIET: Load = Load {
    checks: true,
    reloads: false,
    flood: false,
};
const FLOOD: Load = Load {
    checks: true,
    reloads: false,
    flood: true,
};
/// Junk datagrams a second from one source, and unsigned checks from many, in a flood.
const FLOOD_JUNK: u64 = 300_000;
const FLOOD_CHECKS: u64 = 30_000;
/// The requesters' resend schedule (as `haconn node reset`).
const RESEND_FIRST: Duration = Duration::from_millis(150);
const RESEND_MAX: Duration = Duration::from_secs(1);
const SENDS: u32 = 6;

/// CPU time the pipeline thread has used so far (Linux: its `/proc` stat).
fn pipeline_cpu() -> Option<Duration> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "haconn-pipeline" {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        return Some(Duration::from_millis(ticks * 1000 / hz));
    }
    None
}

/// One HA monitor system of the spec.
#[derive(Debug, Clone)]
struct System {
    name: String,
    subsystem: u32,
    /// Where its monitor sends from.
    ip: IpAddr,
    /// Its BMC, for physical servers.
    bmc: Option<IpAddr>,
}

fn systems() -> Vec<System> {
    let monitor_ip = |k: usize| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            1 + (k / 250) as u8,
            0,
            1 + (k % 250) as u8,
        ))
    };
    let mut v = Vec::with_capacity(MONITORS);
    for p in 0..PHYSICAL {
        v.push(System {
            name: format!("pnode{p:04}"),
            subsystem: 0,
            ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bmc: Some(IpAddr::V4(Ipv4Addr::new(
                127,
                2,
                (p / 250) as u8,
                1 + (p % 250) as u8,
            ))),
        });
    }
    for h in 0..HOSTS {
        for g in 0..GUESTS_PER_HOST {
            v.push(System {
                name: format!("h{h:03}vm{g:02}"),
                subsystem: 0,
                ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                bmc: None,
            });
        }
    }
    for (k, s) in v.iter_mut().enumerate() {
        s.subsystem = k as u32 + 1;
        s.ip = monitor_ip(k);
    }
    v
}

/// The spec text; `variant` adds a PDU (a change a reload applies at runtime).
fn spec_text(port: u16, variant: bool, auth: bool) -> String {
    use std::fmt::Write as _;
    let auth = if auth {
        format!("{{key: \"{KEY}\"}}")
    } else {
        "none".to_string()
    };
    let mut s = format!(
        "apiVersion: haconn/v1\nmode: single\nscale: large\n\
         resetPath: {{address: 127.0.0.1/8, port: {port}, broadcast: 127.255.255.255, auth: {auth}}}\n\
         hispeed: 1000\n"
    );
    if variant {
        s.push_str("snmp: {community: bench}\npdus:\n  - {address: 127.9.0.1, model: IBM_PDU}\n");
    }
    let mlan = if port == 15002 { 15003 } else { 15002 };
    let _ = write!(
        s,
        "managementServers:\n  - name: benchms01\n    \
         bmc: {{address: 127.0.0.2, username: admin, password: benchpassw0rd}}\n    \
         mlan: {{address: 127.0.0.1, port: {mlan}}}\nservers:\n"
    );
    for p in 0..PHYSICAL {
        let _ = writeln!(
            s,
            "  - {{name: pnode{p:04}, bmc: {{address: 127.2.{}.{}, username: admin, password: benchpassw0rd}}}}",
            p / 250,
            1 + p % 250
        );
    }
    for h in 0..HOSTS {
        let guests: Vec<String> = (0..GUESTS_PER_HOST)
            .map(|g| format!("h{h:03}vm{g:02}"))
            .collect();
        let _ = writeln!(
            s,
            "  - name: esx{h:03}\n    bmc: {{address: 127.4.{}.{}, username: admin, password: benchpassw0rd}}\n    \
             esxi: {{address: 127.3.{}.{}, username: root, password: benchpassw0rd, trustOnFirstUse: true, guests: [{}]}}",
            h / 250,
            1 + h % 250,
            h / 250,
            1 + h % 250,
            guests.join(", ")
        );
    }
    s
}

fn parse(text: &str) -> Spec {
    let checked = check_bytes(text.as_bytes(), CheckOptions::default());
    checked.spec.unwrap_or_else(|| {
        panic!(
            "the bench spec is invalid: {:?}",
            &checked.diagnostics[..3.min(checked.diagnostics.len())]
        )
    })
}

struct Bench {
    /// Each system's own key (per-node keys), by system index.
    keys: Arc<Vec<Key>>,
    systems: Vec<System>,
    sockets: Arc<Vec<UdpSocket>>,
    connector: SocketAddr,
    pipeline: Pipeline,
    bmc: Arc<StampingBmc>,
    nmi: mpsc::Receiver<(IpAddr, Instant)>,
    specs: [Arc<Spec>; 2],
    runtime: tokio::runtime::Runtime,
    /// Request numbers never repeat: the pipeline answers a repeated (requester, req#)
    /// as a retransmission.
    next_req: AtomicU32,
}

/// A reset request not answered yet.
struct Pending {
    /// The requester.
    r: usize,
    msg: Message,
    last: Instant,
    sends: u32,
}

/// What one phase measured.
struct Figures {
    name: &'static str,
    latencies: Vec<Duration>,
    lost: usize,
    /// Datagrams the kernel dropped at the reset-path socket (its queue was full).
    dropped: Option<u64>,
    /// Share of the phase the pipeline thread was on a CPU.
    busy: Option<f64>,
    checks: u64,
    /// Round trips of each reload's `facts` and `commit`.
    reloads: Vec<(Duration, Duration)>,
    send_errors: u64,
    /// Requests sent more than once (no reply within 150 ms).
    resent: usize,
    /// Flood datagrams sent a second, and how many the receive thread held to their
    /// source's rate.
    flood_rate: Option<f64>,
    rate_limited: u64,
}

/// The kernel's drop count of the UDP socket bound to 127.0.0.1:`port` (Linux).
fn socket_drops(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

impl Bench {
    fn new(auth: bool) -> Bench {
        let systems = systems();
        let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the reset path");
        let connector = server.local_addr().unwrap();
        let specs = [
            Arc::new(parse(&spec_text(connector.port(), false, auth))),
            Arc::new(parse(&spec_text(connector.port(), true, auth))),
        ];
        assert_eq!(specs[0].systems(), MONITORS);
        let (tx, nmi) = mpsc::channel();
        let bmc = Arc::new(StampingBmc {
            nmi: Mutex::new(tx),
            succeed: AtomicBool::new(false),
        });
        let sim = Arc::new(Sim::default());
        let (pipeline, _thread) = Pipeline::start(
            (*specs[0]).clone(),
            PipelineConfig {
                backends: Backends {
                    bmc: bmc.clone(),
                    pdu: sim.clone(),
                    hypervisor: sim,
                },
                reset_path: Some(server),
                fence_kdump: None,
                reset_log: LogSink::discard(),
                error_log: LogSink::discard(),
                monitor_expiry: Duration::from_secs(60),
                watch: None,
                state_dir: None,
                standing_by: false,
            },
        )
        .expect("start the pipeline");
        let sockets = systems
            .iter()
            .map(|s| {
                let sock = UdpSocket::bind(SocketAddr::new(s.ip, 0))
                    .unwrap_or_else(|e| panic!("bind a monitor socket on {}: {e}", s.ip));
                sock.set_nonblocking(true).unwrap();
                sock
            })
            .collect();
        Bench {
            keys: Arc::new(
                systems
                    .iter()
                    .map(|s| match auth {
                        true => Key::Hmac(
                            haconn::resetpath::keys::node_key(KEY.as_bytes(), &s.name).into_bytes(),
                        ),
                        false => Key::None,
                    })
                    .collect(),
            ),
            systems,
            sockets: Arc::new(sockets),
            connector,
            pipeline,
            bmc,
            nmi,
            specs,
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            next_req: AtomicU32::new(1),
        }
    }

    fn check(&self, k: usize) {
        let s = &self.systems[k];
        let sock = &self.sockets[k];
        let msg = Message::Check {
            system: s.name.clone(),
            subsystem: s.subsystem,
            port: sock.local_addr().unwrap().port(),
            pair: None,
        };
        let _ = sock.send_to(
            &codec::encode(&Envelope::new(msg), &self.keys[k]),
            self.connector,
        );
    }

    /// The requesters check in (the connector acts only for registered monitors), and
    /// nobody else: the idle phase has just them.
    fn register_requesters(&self) {
        let before = self.pipeline.counters().checks.load(Ordering::Relaxed);
        let requesters: Vec<usize> = (PHYSICAL..MONITORS).step_by(61).collect();
        for &k in &requesters {
            self.check(k);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pipeline.counters().checks.load(Ordering::Relaxed)
            < before + requesters.len() as u64
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every monitor checks in once, then waits until the pipeline counted them all.
    fn register_all(&self) {
        let before = self.pipeline.counters().checks.load(Ordering::Relaxed);
        for k in 0..MONITORS {
            self.check(k);
            if k % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pipeline.counters().checks.load(Ordering::Relaxed) < before + MONITORS as u64
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let registered = self
            .runtime
            .block_on(self.pipeline.monitors())
            .map_or(0, |m| m.len());
        println!("  ({registered} of {MONITORS} HA monitors registered)");
    }

    /// Runs `resets` resets, `RESET_EVERY` apart on average, with the load running if `load`.
    fn phase(&self, name: &'static str, resets: usize, load: Load, succeed: bool) -> Figures {
        self.bmc.succeed.store(succeed, Ordering::Relaxed);
        while self.nmi.try_recv().is_ok() {}
        let counters = self.pipeline.counters();
        let checks0 = counters.checks.load(Ordering::Relaxed);
        let errors0 = counters.send_errors.load(Ordering::Relaxed);
        let drops0 = socket_drops(self.connector.port());
        let limited0 = counters.rate_limited.load(Ordering::Relaxed);
        let flood_sent = Arc::new(AtomicU64::new(0));
        let cpu0 = pipeline_cpu();
        let t0 = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let reloads = Arc::new(Mutex::new(Vec::new()));
        let mut helpers = Vec::new();
        if load.checks {
            helpers.push(self.spawn_checks(stop.clone()));
        }
        if load.reloads {
            helpers.push(self.spawn_reloads(stop.clone(), reloads.clone()));
        }
        if load.flood {
            helpers.extend(self.spawn_flood(stop.clone(), flood_sent.clone()));
        }
        let flood_t0 = Instant::now();
        if load.checks || load.reloads || load.flood {
            // Let the load settle before measuring.
            std::thread::sleep(Duration::from_millis(500));
        }
        let requesters: Vec<usize> = (PHYSICAL..MONITORS).step_by(61).collect();
        let mut sent: Vec<(IpAddr, Instant)> = Vec::with_capacity(resets);
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut due = Instant::now();
        let mut pending: HashMap<u32, Pending> = HashMap::new();
        let mut resent = 0;
        for i in 0..resets {
            // xorshift64: a fixed sequence of gaps, the same on every run.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            due += Duration::from_micros(10_000 + rng % 60_000);
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                self.replies_and_resends(&requesters, &mut pending, &mut resent);
                std::thread::sleep(wait.min(Duration::from_millis(2)));
            }
            let target = &self.systems[i % PHYSICAL];
            let r = requesters[i % requesters.len()];
            let requester = &self.systems[r];
            let sock = &self.sockets[r];
            let msg = Message::Reset {
                req: self.next_req.fetch_add(1, Ordering::Relaxed),
                system: requester.name.clone(),
                subsystem: requester.subsystem,
                port: sock.local_addr().unwrap().port(),
                target_system: target.name.clone(),
                target_subsystem: target.subsystem,
            };
            let bytes = codec::encode(&Envelope::new(msg.clone()), &self.keys[r]);
            let at = Instant::now();
            let _ = sock.send_to(&bytes, self.connector);
            sent.push((target.bmc.expect("targets are physical"), at));
            if let Message::Reset { req, .. } = msg {
                pending.insert(
                    req,
                    Pending {
                        r,
                        msg,
                        last: at,
                        sends: 1,
                    },
                );
            }
        }
        // The last NMIs (a successful reset takes hispeed plus a little), and the last
        // resends (the sixth send is 3.05 s after the first).
        let tail = Instant::now()
            + if succeed {
                Duration::from_millis(3500)
            } else {
                Duration::from_millis(3200)
            };
        while Instant::now() < tail {
            self.replies_and_resends(&requesters, &mut pending, &mut resent);
            std::thread::sleep(Duration::from_millis(2));
        }
        let flood_secs = flood_t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for h in helpers {
            let _ = h.join();
        }
        let mut nmis: HashMap<IpAddr, Vec<Instant>> = HashMap::new();
        while let Ok((ip, at)) = self.nmi.try_recv() {
            nmis.entry(ip).or_default().push(at);
        }
        let mut latencies = Vec::with_capacity(resets);
        let mut lost = 0;
        // A target is reused only after all the others: an NMI belongs to a send if it
        // comes before half that time has passed.
        let window = RESET_EVERY * (PHYSICAL as u32 / 2);
        for (ip, at) in &sent {
            let first = nmis
                .get(ip)
                .and_then(|v| v.iter().filter(|n| **n >= *at && **n < *at + window).min());
            match first {
                Some(n) => latencies.push(*n - *at),
                None => lost += 1,
            }
        }
        latencies.sort();
        Figures {
            name,
            latencies,
            lost,
            checks: counters.checks.load(Ordering::Relaxed) - checks0,
            reloads: std::mem::take(&mut *reloads.lock().unwrap_or_else(|p| p.into_inner())),
            send_errors: counters.send_errors.load(Ordering::Relaxed) - errors0,
            resent,
            flood_rate: load
                .flood
                .then(|| flood_sent.load(Ordering::Relaxed) as f64 / flood_secs),
            rate_limited: counters.rate_limited.load(Ordering::Relaxed) - limited0,
            dropped: socket_drops(self.connector.port())
                .zip(drops0)
                .map(|(b, a)| b - a),
            busy: pipeline_cpu()
                .zip(cpu0)
                .map(|(b, a)| (b - a).as_secs_f64() / t0.elapsed().as_secs_f64()),
        }
    }

    /// Reads the requesters' sockets: a `reset-reply` ends its request's resends. Sends
    /// again (a new datagram, the same `req`) what has had no reply for its interval.
    fn replies_and_resends(
        &self,
        requesters: &[usize],
        pending: &mut HashMap<u32, Pending>,
        resent: &mut usize,
    ) {
        let mut buf = [0u8; 2048];
        for &r in requesters {
            for _ in 0..1000 {
                let Ok((n, _)) = self.sockets[r].recv_from(&mut buf) else {
                    break;
                };
                if let Ok(Envelope {
                    msg: Message::ResetReply { req, .. },
                    ..
                }) = codec::decode(&buf[..n], &self.keys[r])
                {
                    pending.remove(&req);
                }
            }
        }
        let now = Instant::now();
        pending.retain(|_, p| {
            let interval = (RESEND_FIRST * 2u32.pow(p.sends - 1)).min(RESEND_MAX);
            if now < p.last + interval {
                return true;
            }
            if p.sends == 1 {
                *resent += 1;
            }
            let bytes = codec::encode(&Envelope::new(p.msg.clone()), &self.keys[p.r]);
            let _ = self.sockets[p.r].send_to(&bytes, self.connector);
            p.sends += 1;
            p.last = now;
            p.sends < SENDS
        });
    }

    /// The flood: one thread sends junk from one source, one sends unsigned checks for
    /// unknown systems from 256 sources, each paced per millisecond to its rate.
    fn spawn_flood(
        &self,
        stop: Arc<AtomicBool>,
        sent: Arc<AtomicU64>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        let connector = self.connector;
        let paced = move |rate: u64,
                          socks: Vec<UdpSocket>,
                          make: Box<dyn Fn(u64) -> Vec<u8> + Send>,
                          stop: Arc<AtomicBool>,
                          sent: Arc<AtomicU64>| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u64;
                let datagrams: Vec<Vec<u8>> = (0..64).map(&make).collect();
                let mut ok = 0u64;
                // Bounded: the phase stops it, and it gives up on its own after 60 s.
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                    // At most 20 000 behind: a sender that cannot keep up skips (and the
                    // rate reported is what it really sent).
                    n = n.max(due.saturating_sub(20_000));
                    while n < due {
                        // Up to 64 at a time in one sendmmsg from one source (a flood
                        // is cheap to make; the send system call is what limits it).
                        let sock = &socks[(n % socks.len() as u64) as usize];
                        let batch = (due - n).min(64) as usize;
                        ok += send_batch(sock, &datagrams, n as usize, batch, connector);
                        n += batch as u64;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                sent.fetch_add(ok, Ordering::Relaxed);
            })
        };
        let junk_sock = vec![UdpSocket::bind("127.0.0.250:0").expect("bind the junk source")];
        let junk = Box::new(|i: u64| {
            let mut d = vec![0u8; 64 + (i as usize % 200)];
            for (j, b) in d.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
            }
            if i.is_multiple_of(2) {
                d[..5].copy_from_slice(b"HCN1\x01");
            }
            d
        });
        let check_socks: Vec<UdpSocket> = (1..=255u8)
            .chain(std::iter::once(1))
            .map(|k| UdpSocket::bind((Ipv4Addr::new(127, 200, 0, k), 0)).expect("bind a source"))
            .collect();
        let checks = Box::new(|i: u64| {
            codec::encode(
                &Envelope::new(Message::Check {
                    system: format!("flood{i:03}"),
                    subsystem: i as u32,
                    port: 9,
                    pair: None,
                }),
                &Key::None,
            )
        });
        vec![
            paced(FLOOD_JUNK, junk_sock, junk, stop.clone(), sent.clone()),
            paced(FLOOD_CHECKS, check_socks, checks, stop, sent),
        ]
    }

    /// Every monitor checks once a second: the checks due so far go out every
    /// `CHECK_TICK`, so they are spread evenly over the second.
    fn spawn_checks(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let systems = self.systems.clone();
        let sockets = self.sockets.clone();
        let connector = self.connector;
        let keys = self.keys.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut sent = 0u64;
            // Bounded: the phase stops it, and it gives up on its own after 60 s.
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let due = (start.elapsed().as_secs_f64() * MONITORS as f64) as u64;
                while sent < due {
                    let k = (sent % MONITORS as u64) as usize;
                    let (s, sock) = (&systems[k], &sockets[k]);
                    let msg = Message::Check {
                        system: s.name.clone(),
                        subsystem: s.subsystem,
                        port: sock.local_addr().unwrap().port(),
                        pair: None,
                    };
                    let _ = sock.send_to(&codec::encode(&Envelope::new(msg), &keys[k]), connector);
                    sent += 1;
                }
                std::thread::sleep(CHECK_TICK);
            }
        })
    }

    /// A reload every `RELOAD_EVERY`: the facts a plan needs, then a commit of the other
    /// spec variant, as the supervisor does it.
    fn spawn_reloads(
        &self,
        stop: Arc<AtomicBool>,
        times: Arc<Mutex<Vec<(Duration, Duration)>>>,
    ) -> std::thread::JoinHandle<()> {
        let pipeline = self.pipeline.clone();
        let specs = self.specs.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let start = Instant::now();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                let took = rt.block_on(async {
                    let t = Instant::now();
                    let _ = pipeline.facts().await;
                    let facts = t.elapsed();
                    let spec = specs[(n as usize + 1) % 2].clone();
                    let t = Instant::now();
                    if let Ok(reply) = pipeline.commit(spec, Vec::new()).await {
                        drop(reply.replaced);
                    }
                    (facts, t.elapsed())
                });
                n += 1;
                times.lock().unwrap_or_else(|p| p.into_inner()).push(took);
                if let Some(wait) =
                    (start + RELOAD_EVERY * n).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(wait);
                }
            }
        })
    }
}

fn report(f: &Figures) {
    let n = f.latencies.len();
    let p99 = percentile(&f.latencies, 0.99);
    println!(
        "  {:<44} {:>4}  {:>10}  {:>10}  {:>10}  {:>4}  {}",
        f.name,
        n,
        ms(percentile(&f.latencies, 0.50)),
        ms(p99),
        ms(f.latencies.last().copied().unwrap_or_default()),
        f.lost,
        if n == 0 {
            "no data"
        } else if p99.as_secs_f64() * 1000.0 <= TARGET_P99_MS {
            "p99 within 1 ms"
        } else {
            "p99 OVER 1 ms"
        }
    );
    println!(
        "  {:<44} pipeline thread busy {}; checks handled {}, reloads {}; send errors {}, dropped at the socket {}",
        "",
        f.busy.map_or("?".into(), |b| format!("{:.0} %", b * 100.0)),
        f.checks,
        f.reloads.len(),
        f.send_errors,
        f.dropped.map_or("?".into(), |d| d.to_string())
    );
    println!(
        "  {:<44} resent: {} of {} requests ({:.1} %){}",
        "",
        f.resent,
        f.latencies.len() + f.lost,
        100.0 * f.resent as f64 / (f.latencies.len() + f.lost).max(1) as f64,
        match f.flood_rate {
            Some(r) => format!(
                "; flood sent {:.0} datagrams/s, {} held to their source's rate",
                r, f.rate_limited
            ),
            None => String::new(),
        }
    );
}

/// The reloads' round trips: p50 and max of `facts`, then of `commit`.
fn report_reloads(f: &Figures) {
    if f.reloads.is_empty() {
        return;
    }
    let mut facts: Vec<Duration> = f.reloads.iter().map(|r| r.0).collect();
    let mut commits: Vec<Duration> = f.reloads.iter().map(|r| r.1).collect();
    facts.sort();
    commits.sort();
    println!(
        "  {:<44} reload round trips: facts p50 {} max {}; commit p50 {} max {}",
        "",
        ms(percentile(&facts, 0.5)),
        ms(*facts.last().expect("not empty")),
        ms(percentile(&commits, 0.5)),
        ms(*commits.last().expect("not empty")),
    );
}

/// `cargo test`'s run: a few resets, checked.
fn smoke() {
    let bench = Bench::new(true);
    bench.register_requesters();
    let none = Load {
        checks: false,
        reloads: false,
        flood: false,
    };
    let f = bench.phase("idle (smoke)", 10, none, false);
    assert_eq!(f.lost, 0, "every reset reached the BMC");
    assert_eq!(f.latencies.len(), 10);
}

fn main() {
    harness::main("resetpath_smoke", smoke, full);
}

fn full() {
    let t = Instant::now();
    let bench = Bench::new(true);
    bench.register_requesters();
    println!(
        "reset dispatch latency: reset datagram sent -> NMI call at the BMC backend (target p99 {TARGET_P99_MS} ms)"
    );
    println!(
        "  spec: scale large, {PHYSICAL} physical servers + {HOSTS} ESXi hosts x {GUESTS_PER_HOST} guests = {MONITORS} systems (built in {:.0} ms)",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let none = Load {
        checks: false,
        reloads: false,
        flood: false,
    };
    println!("{}", harness::machine_line());
    println!(
        "  {RESETS_PER_PHASE} resets per phase, {} ms apart on average (10-70 ms), over {PHYSICAL} servers; UDP on 127.0.0.0/8, HMAC-SHA256",
        RESET_EVERY.as_millis()
    );
    println!(
        "\n  {:<44} {:>4}  {:>10}  {:>10}  {:>10}  {:>4}",
        "phase", "n", "p50", "p99", "max", "lost"
    );
    report(&bench.phase("idle: no checks, no reloads", RESETS_PER_PHASE, none, false));
    bench.register_all();
    let phases = [
        (
            "checks: 4096 monitors @ 1 Hz",
            Load {
                checks: true,
                reloads: false,
                flood: false,
            },
            false,
        ),
        (
            "reloads: one every 100 ms",
            Load {
                checks: false,
                reloads: true,
                flood: false,
            },
            false,
        ),
        (
            "checks + reloads (the target load)",
            Load {
                checks: true,
                reloads: true,
                flood: false,
            },
            false,
        ),
        (
            "checks + reloads + ATTENTION to 4096 each",
            Load {
                checks: true,
                reloads: true,
                flood: false,
            },
            true,
        ),
    ];
    for (name, load, succeed) in phases {
        let f = bench.phase(name, RESETS_PER_PHASE, load, succeed);
        report(&f);
        report_reloads(&f);
    }
    println!(
        "\n  flood: {FLOOD_JUNK} junk datagrams/s from one source + {FLOOD_CHECKS} unsigned checks/s from 256 sources, with the 4096 monitors' checks"
    );
    report(&bench.phase("HMAC: quiet (checks only)", RESETS_PER_PHASE, QUIET, false));
    report(&bench.phase("HMAC: flood", RESETS_PER_PHASE, FLOOD, false));
    drop(bench);
    let bench = Bench::new(false);
    bench.register_requesters();
    bench.register_all();
    report(&bench.phase(
        "no auth: quiet (checks only)",
        RESETS_PER_PHASE,
        QUIET,
        false,
    ));
    report(&bench.phase("no auth: flood", RESETS_PER_PHASE, FLOOD, false));
}

/// Sends `count` of `datagrams` (cycling from `first`) to `to` with one `sendmmsg`; how
/// many went out.
fn send_batch(
    sock: &UdpSocket,
    datagrams: &[Vec<u8>],
    first: usize,
    count: usize,
    to: SocketAddr,
) -> u64 {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(v4) = to else {
        return 0;
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: v4.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*v4.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iovs: Vec<libc::iovec> = (0..count)
        .map(|i| {
            let d = &datagrams[(first + i) % datagrams.len()];
            libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            }
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            // SAFETY: a zeroed mmsghdr is valid; the fields set point at live data.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&addr as *const libc::sockaddr_in).cast_mut().cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: every header points at the address and a buffer that outlive the call.
    let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), count as u32, 0) };
    n.max(0) as u64
}
