//! IPMI benchmark, against real BMC simulators (`ipmi_sim`, tests/ipmi_support/).
//!
//! 1. Reset request → NMI at the BMC, side by side against the same simulator:
//!    - haconn: a signed reset datagram (sent with the library's reset-path client, as
//!      `haconn node reset` sends it) to a running `haconn daemon`, whose pipeline checks
//!      the power (Get Chassis Status) and sends the NMI over its RMCP+ session;
//!    - `ipmitool -I lanplus -C 3 ... chassis power diag`, from process start;
//!    - `fence_ipmilan -P -C 3 ... -o diag`, from process start.
//!
//!    Each latency runs from the wall clock just before the send/spawn to the NMI record
//!    the simulator's module writes (both CLOCK_REALTIME). Each haconn reset is ended by a
//!    stopped notification (DUMP), so no hard reset follows.
//!    - the floor: the library's own NMI on an open session, in-process (what the daemon
//!      adds is the difference).
//! 2. Power-status polling of 512 BMCs: 512 RMCP+ sessions (16 simulators × 32 accounts:
//!    ipmi_sim allows a few dozen sessions each, and a session is per address, port and
//!    user), one round = 512 concurrent Get Chassis Status on one current-thread runtime,
//!    as the watcher polls. Wall time and this process's CPU time per round; next to it,
//!    `ipmitool chassis power status` per BMC (measured on a sample, scaled to 512).
//!
//! The simulators keep the power state in the module (no script per query), so their own
//! cost stays out of the figures as far as possible. Prints medians, p99 and ratios next
//! to the targets (haconn p99 < 1 ms, ≥30x ipmitool, ≥100x fence_ipmilan); it never fails
//! on time.
//!
//! Run: `cargo bench --bench ipmi` (about a minute). Without `--bench`, as under
//! `cargo test`, it is one smoke test (`ipmi_smoke`: a few of each, seconds).

#[path = "common/harness.rs"]
mod harness;

#[path = "../tests/it/support/daemon.rs"]
mod daemon;
#[path = "../tests/it/support/ipmi/mod.rs"]
mod ipmi_support;
#[path = "../tests/it/support/resetpath.rs"]
mod resetpath_support;
#[path = "../tests/it/support/run.rs"]
#[allow(dead_code)]
mod run;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use haconn::backend::Bmc;
use haconn::backend::PowerState;
use haconn::backend::ipmi::IpmiBmc;
use haconn::resetpath::client::{Client, read_key_file};
use haconn::resetpath::codec::{Message, ResetResult};
use haconn::spec::model::Bmc as BmcSpec;
use harness::{Figures, figures, row};
use ipmi_support::{PASSWORD, SimBmc, SimConfig, USER, now_ns};
use resetpath_support::{Lab, free_port};

const NMI_WAIT: Duration = Duration::from_secs(10);
static NEXT_REQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1000);

struct Sizes {
    haconn: usize,
    ipmitool: usize,
    fence: usize,
    sims: usize,
    users: usize,
    rounds: usize,
    ipmitool_sample: usize,
}

const FULL: Sizes = Sizes {
    haconn: 300,
    ipmitool: 40,
    fence: 8,
    sims: 16,
    users: 32,
    rounds: 30,
    ipmitool_sample: 16,
};

const SMOKE: Sizes = Sizes {
    haconn: 5,
    ipmitool: 2,
    fence: 1,
    sims: 2,
    users: 4,
    rounds: 2,
    ipmitool_sample: 2,
};

fn sim_config(address: u8, users: usize, sessions_per_user: u32) -> SimConfig {
    SimConfig {
        address: std::net::Ipv4Addr::new(127, 0, 0, address),
        users: (0..users)
            .map(|i| {
                if i == 0 {
                    (USER.to_string(), PASSWORD.to_string())
                } else {
                    (format!("user{i}"), PASSWORD.to_string())
                }
            })
            .collect(),
        sessions_per_user,
        module_power: true,
        ..SimConfig::default()
    }
}

/// Waits (bounded) for NMI number `n` (0-based) at `sim`; its record time.
fn nmi_at(sim: &SimBmc, n: usize, context: &dyn Fn() -> String) -> u128 {
    let deadline = Instant::now() + NMI_WAIT;
    loop {
        if let Some(t) = sim.nmis().get(n) {
            return *t;
        }
        assert!(
            Instant::now() < deadline,
            "NMI {n} not recorded within {NMI_WAIT:?}: {:?}\n{}",
            sim.module_records(),
            context()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// haconn: reset datagram → NMI, through the daemon; each reset ended with DUMP.
fn haconn_resets(lab: &Lab, node2: &SimBmc, n: usize) -> Vec<u128> {
    // Each node signs with its own key file (per-node keys).
    let key_of = |system: &str| {
        read_key_file(std::path::Path::new(&lab.key_file_for(system))).expect("the key file")
    };
    let port = free_port();
    register(lab, "labnode02", 2, free_port());
    register(lab, "labnode01", 1, port);
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut client = Client::bind(local, lab.reset_path, key_of("labnode01")).expect("bind");
    let agent = Client::bind(
        "127.0.0.1:0".parse().expect("addr"),
        lab.reset_path,
        key_of("labnode02"),
    )
    .expect("bind");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let before = node2.nmis().len();
        // Request numbers are never reused: the daemon joins a repeat to its reset.
        let req = NEXT_REQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t0 = now_ns();
        client
            .send(&Message::Reset {
                req,
                system: "labnode01".into(),
                subsystem: 1,
                port,
                target_system: "labnode02".into(),
                target_subsystem: 2,
            })
            .expect("send the reset");
        // Wait for the ACCEPTED reply (the daemon sends it once the NMI is out) blocked on
        // the socket, and only then read the simulator's record: polling its file while
        // the reset runs would take the CPU the simulator needs (2 cores), which the
        // floor's in-process NMI, blocked on its answer, does not.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let Some(r) = client.recv(deadline).expect("receive") else {
                panic!("no ACCEPTED to reset {req}\n{}", lab.diagnostics());
            };
            if let Message::ResetReply { req: got, .. } = r.env.msg
                && got == req
            {
                break;
            }
        }
        let t = nmi_at(node2, before, &|| lab.diagnostics());
        out.push(t.saturating_sub(t0));
        agent
            .send(&Message::Stopped {
                system: "labnode02".into(),
                subsystem: 2,
            })
            .expect("send stopped");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let result = loop {
            let Some(r) = client.recv(deadline).expect("receive") else {
                panic!("no final reply to reset {req}\n{}", lab.diagnostics());
            };
            match r.env.msg {
                Message::ResetReply {
                    req: got, result, ..
                } if got == req && result != ResetResult::Accepted => break result,
                _ => {}
            }
        };
        assert_eq!(
            result,
            ResetResult::Dump,
            "reset {req}\n{}",
            lab.diagnostics()
        );
        // The target's monitor checks in again after its dump, as a real one would.
        register(lab, "labnode02", 2, free_port());
    }
    out
}

/// The floor: the library's NMI on an open RMCP+ session, in this process (no reset path,
/// no daemon), to the simulator's record; what no daemon in front of it can beat.
fn library_nmis(sim: &SimBmc, n: usize) -> Vec<u128> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    // Opens the session (not measured).
    rt.block_on(bmc.power_state(&spec)).expect("power state");
    (0..n)
        .map(|_| {
            let before = sim.nmis().len();
            let t0 = now_ns();
            rt.block_on(bmc.nmi(&spec)).expect("NMI");
            nmi_at(sim, before, &|| "library NMI".into()).saturating_sub(t0)
        })
        .collect()
}

fn register(lab: &Lab, system: &str, subsystem: u32, port: u16) {
    let out = Command::new(env!("CARGO_BIN_EXE_haconn"))
        .args(lab.node_args(
            "check",
            &[
                "--system",
                system,
                "--subsystem",
                &subsystem.to_string(),
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--pair",
                "1",
            ],
        ))
        .output()
        .expect("run haconn node check");
    assert!(
        out.status.success(),
        "check of {system}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        lab.diagnostics()
    );
}

/// A tool's NMI, from process start to the record; the tool must succeed.
fn tool_nmis(sim: &SimBmc, n: usize, program: &str, args: &[String]) -> Vec<u128> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let before = sim.nmis().len();
        let t0 = now_ns();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        let t = nmi_at(sim, before, &|| format!("{program} {}", args.join(" ")));
        let done = child.wait_with_output().expect("wait");
        assert!(
            done.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr)
        );
        out.push(t.saturating_sub(t0));
    }
    out
}

fn ipmitool_args(sim: &SimBmc, what: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "-I",
        "lanplus",
        "-C",
        "3",
        "-H",
        &sim.address.to_string(),
        "-p",
        &sim.port.to_string(),
        "-U",
        USER,
        "-P",
        PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend(what.iter().map(|s| s.to_string()));
    a
}

fn fence_args(sim: &SimBmc) -> Vec<String> {
    [
        "-P",
        "-C",
        "3",
        "-a",
        &sim.address.to_string(),
        "-u",
        &sim.port.to_string(),
        "-l",
        USER,
        "-p",
        PASSWORD,
        "-o",
        "diag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// This process's CPU time (user + system), or its children's.
fn cpu(who: i32) -> Duration {
    // SAFETY: getrusage(2) fills the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

struct Polling {
    bmcs: usize,
    first_round: Duration,
    wall: Figures,
    cpu_per_round: Duration,
    ipmitool_wall_per_bmc: Duration,
    ipmitool_cpu_per_bmc: Duration,
}

fn polling(s: &Sizes) -> Polling {
    let sims: Vec<SimBmc> = (0..s.sims)
        .map(|i| SimBmc::with(sim_config(100 + i as u8, s.users, 2)))
        .collect();
    let specs: Vec<BmcSpec> = sims
        .iter()
        .flat_map(|sim| {
            (0..s.users).map(move |u| {
                if u == 0 {
                    sim.spec()
                } else {
                    sim.spec_as(&format!("user{u}"), PASSWORD)
                }
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bmc = IpmiBmc::new();
    let round = || async {
        let r = futures_util::future::join_all(specs.iter().map(|b| bmc.power_state(b))).await;
        let bad = r.iter().filter(|s| **s != Ok(PowerState::On)).count();
        assert_eq!(
            bad,
            0,
            "every BMC answered on: {:?}",
            r.iter().find(|s| **s != Ok(PowerState::On))
        );
    };
    let t = Instant::now();
    rt.block_on(round());
    let first_round = t.elapsed();
    assert_eq!(bmc.stats().sessions_opened, specs.len() as u64);
    let mut walls = Vec::with_capacity(s.rounds);
    let cpu0 = cpu(libc::RUSAGE_SELF);
    for _ in 0..s.rounds {
        let t = Instant::now();
        rt.block_on(round());
        walls.push(t.elapsed().as_nanos());
    }
    let cpu_per_round = (cpu(libc::RUSAGE_SELF) - cpu0) / s.rounds as u32;
    assert_eq!(
        bmc.stats().sessions_opened,
        specs.len() as u64,
        "warm rounds reuse the sessions: {:?}",
        bmc.stats()
    );
    rt.block_on(bmc.shutdown());

    let sample: Vec<&SimBmc> = sims.iter().cycle().take(s.ipmitool_sample).collect();
    let cpu0 = cpu(libc::RUSAGE_CHILDREN);
    let t = Instant::now();
    for sim in &sample {
        let out = Command::new("ipmitool")
            .args(ipmitool_args(sim, &["chassis", "power", "status"]))
            .output()
            .expect("run ipmitool");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Chassis Power is on"),
            "ipmitool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Polling {
        bmcs: specs.len(),
        first_round,
        wall: figures(walls),
        cpu_per_round,
        ipmitool_wall_per_bmc: t.elapsed() / sample.len() as u32,
        ipmitool_cpu_per_bmc: (cpu(libc::RUSAGE_CHILDREN) - cpu0) / sample.len() as u32,
    }
}

fn run(s: &Sizes) -> (Figures, Figures, Figures, Figures, Polling) {
    let node1 = SimBmc::with(sim_config(11, 1, 16));
    let node2 = SimBmc::with(sim_config(12, 1, 16));
    let lab = Lab::start_real(5000, 1000, ipmi_support::on_sims(&node1, &node2));
    // The floor's own simulator: its NMIs are nobody's reset.
    let node3 = SimBmc::with(sim_config(13, 1, 16));
    // Interleaved in rounds, so a change of machine load falls on all three alike.
    let (mut h, mut i, mut f, mut l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let rounds = s.fence.max(1);
    for r in 0..rounds {
        let share = |total: usize| total / rounds + usize::from(r < total % rounds);
        h.extend(haconn_resets(&lab, &node2, share(s.haconn)));
        l.extend(library_nmis(&node3, share(s.haconn)));
        i.extend(tool_nmis(
            &node2,
            share(s.ipmitool),
            "ipmitool",
            &ipmitool_args(&node2, &["chassis", "power", "diag"]),
        ));
        f.extend(tool_nmis(
            &node2,
            share(s.fence),
            "fence_ipmilan",
            &fence_args(&node2),
        ));
    }
    assert!(node1.nmis().is_empty(), "only labnode02 was reset");
    assert!(
        node2.resets().is_empty(),
        "no hard reset: every reset ended with DUMP\n{}",
        lab.diagnostics()
    );
    drop(lab);
    (figures(h), figures(i), figures(f), figures(l), polling(s))
}

fn report(s: &Sizes) {
    println!("IPMI: reset request -> NMI at the BMC (ipmi_sim, RMCP+ cipher suite 3, 127.0.0.0/8)");
    println!("{}", harness::machine_line());
    let (h, i, f, l, p) = run(s);
    println!(
        "\n  {:<44} {:>4}  {:>10}  {:>10}  {:>10}",
        "path (ms)", "n", "p50", "p99", "max"
    );
    row("haconn: reset datagram -> daemon -> NMI", 44, h);
    row("floor: library NMI, open session, in-process", 44, l);
    row("ipmitool -I lanplus -C 3 chassis power diag", 44, i);
    row("fence_ipmilan -P -C 3 -o diag", 44, f);
    println!(
        "\n  ratios (tool / haconn): ipmitool {:.0}x at p50, {:.0}x at p99 (target >= 30x); \
         fence_ipmilan {:.0}x at p50, {:.0}x at p99 (target >= 100x)",
        i.p50 / h.p50,
        i.p99 / h.p99,
        f.p50 / h.p50,
        f.p99 / h.p99
    );
    println!(
        "  haconn p50 {:.3} ms (target <= 0.15 ms): {}; the daemon's share over the floor: {:.3} ms",
        h.p50,
        if h.p50 <= 0.15 { "met" } else { "NOT met" },
        h.p50 - l.p50
    );
    println!(
        "  haconn p99 {:.3} ms (target < 1 ms): {}",
        h.p99,
        if h.p99 < 1.0 { "met" } else { "NOT met" }
    );
    println!(
        "\nIPMI: power-status polling, {} BMCs ({} simulators x {} accounts, one RMCP+ session each)",
        p.bmcs, s.sims, s.users
    );
    println!(
        "  first round (opens {} sessions): {:.1} ms",
        p.bmcs,
        p.first_round.as_secs_f64() * 1e3
    );
    println!(
        "  warm round, {} rounds: wall p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per round ({:.1} us per BMC)",
        p.wall.n,
        p.wall.p50,
        p.wall.p99,
        p.cpu_per_round.as_secs_f64() * 1e3,
        p.cpu_per_round.as_secs_f64() * 1e6 / p.bmcs as f64
    );
    let tool_round = p.ipmitool_wall_per_bmc * p.bmcs as u32;
    println!(
        "  ipmitool chassis power status, one process per BMC (sample of {}): {:.1} ms wall and {:.1} ms CPU per BMC -> {:.1} s wall, {:.1} s CPU per round of {} serially",
        s.ipmitool_sample,
        p.ipmitool_wall_per_bmc.as_secs_f64() * 1e3,
        p.ipmitool_cpu_per_bmc.as_secs_f64() * 1e3,
        tool_round.as_secs_f64(),
        (p.ipmitool_cpu_per_bmc * p.bmcs as u32).as_secs_f64(),
        p.bmcs
    );
    println!(
        "  ratio: ipmitool/haconn {:.0}x wall, {:.0}x CPU per round",
        tool_round.as_secs_f64() * 1e3 / p.wall.p50,
        (p.ipmitool_cpu_per_bmc * p.bmcs as u32).as_secs_f64()
            / p.cpu_per_round.as_secs_f64().max(1e-9)
    );
}

fn main() {
    harness::main("ipmi_smoke", || report(&SMOKE), || report(&FULL));
}
