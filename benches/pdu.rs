//! PDU-cut benchmark: cutting 4 outlets on 2 PDUs (2 each), side by side in one run.
//!
//! Two real net-snmp `snmpd` agents on 127.0.0.1 serve the emulated APC rack PDU
//! (tests/snmp_support, outlets switch at once, sysObjectID of an APC rPDU). Each round
//! first switches the 4 outlets back on (not timed), then cuts them with one of:
//!
//! - haconn: the SNMP backend, warm (the runtime and backend made once), 4 `set_outlet`
//!   calls at once on a current-thread runtime; each is a SET then reads until the PDU
//!   reports "off";
//! - `snmpset` ×4 one after another, as a shell script would (SET only, no read-back);
//! - `snmpset` ×4 started together, then all waited for;
//! - `fence_apc_snmp -o off` ×4 one after another (one per outlet, as a fence agent is
//!   called): it reads sysObjectID and the outlet state, SETs, then reads until off.
//!
//! Two times per round: until the last command returned ("return"), and until the last
//! of the 4 SETs was logged by the emulator ("last SET", the emulator's clock; the
//! same machine). Every round checks the emulator saw exactly the 4 expected SETs.
//! net-snmp tools run with `MIBS=` (no MIB parsing), which favours them.
//!
//! Run: `cargo bench --bench pdu` (about half a minute). Without `--bench`, as under
//! `cargo test`, it is one smoke test (`pdu_smoke`: two rounds of each, checked).

#[path = "common/harness.rs"]
mod harness;

#[path = "../tests/it/support/snmp/mod.rs"]
mod snmp_support;

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haconn::backend::Pdu;
use haconn::backend::snmp::SnmpPdu;
use haconn::spec::model::Pdu as PduSpec;
use haconn::spec::pdu_model::{PduModel, builtin_model};
use haconn::spec::secret::{Secret, SecretRule};
use snmp_support::{COMMUNITY, Options, Snmpd};

const FENCE_APC_SNMP: &str = "/usr/sbin/fence_apc_snmp";
/// Outlets cut on each of the two PDUs.
const OUTLETS: [[u16; 2]; 2] = [[3, 4], [5, 6]];
/// APC rPDU control value "immediate off".
const OFF: i64 = 2;

struct Bench {
    agents: [Snmpd; 2],
    pdus: [PduSpec; 2],
    backend: SnmpPdu,
    rt: tokio::runtime::Runtime,
}

/// One method's rounds: (until return, until the last SET was logged).
#[derive(Default)]
struct Figures {
    ret: Vec<Duration>,
    last_set: Vec<Duration>,
}

fn epoch_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

impl Bench {
    fn new() -> Bench {
        assert!(
            std::path::Path::new(FENCE_APC_SNMP).exists(),
            "{FENCE_APC_SNMP} is missing: install fence-agents to run this benchmark"
        );
        let agents = [
            Snmpd::start(Options::default()),
            Snmpd::start(Options::default()),
        ];
        let model = builtin_model("APC_RPDU").expect("built-in model");
        let pdus = [0, 1].map(|i| PduSpec {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: agents[i].port,
            model: model.clone(),
        });
        let backend = SnmpPdu::new(Some(Secret::inline(
            COMMUNITY.into(),
            SecretRule::Community,
        )));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let b = Bench {
            agents,
            pdus,
            backend,
            rt,
        };
        b.switch_all(true); // warms the backend too
        b
    }

    fn cells(&self) -> Vec<(usize, u16)> {
        (0..2)
            .flat_map(|i| OUTLETS[i].iter().map(move |o| (i, *o)))
            .collect()
    }

    fn control_oid(&self, outlet: u16) -> String {
        let m = &self.pdus[0].model;
        PduModel::outlet_oid(&m.control, m.first_index, outlet)
    }

    /// Switches the 4 outlets with the backend; panics on any failure.
    fn switch_all(&self, on: bool) {
        self.rt.block_on(async {
            let calls = self
                .cells()
                .into_iter()
                .map(|(i, o)| self.backend.set_outlet(&self.pdus[i], o, on));
            for r in futures_util::future::join_all(calls).await {
                r.expect("switch an outlet");
            }
        });
    }

    fn set_counts(&self) -> [usize; 2] {
        [self.agents[0].sets().len(), self.agents[1].sets().len()]
    }

    /// One timed round of `cut`; checks the emulators logged exactly the 4 cuts.
    fn round(&self, name: &str, f: &mut Figures, cut: impl FnOnce(&Bench)) {
        self.switch_all(true);
        let before = self.set_counts();
        let t0_ns = epoch_ns();
        let t0 = Instant::now();
        cut(self);
        f.ret.push(t0.elapsed());
        let mut last = 0;
        for i in 0..2 {
            let new: Vec<_> = self.agents[i].sets().split_off(before[i]);
            let mut got: Vec<(u16, i64)> = new.iter().map(|s| (s.outlet, s.value)).collect();
            got.sort();
            let want: Vec<(u16, i64)> = OUTLETS[i].iter().map(|o| (*o, OFF)).collect();
            assert_eq!(got, want, "{name}: SETs seen by PDU {i}");
            assert!(new.iter().all(|s| s.view == "apc"), "{name}: {new:?}");
            last = last.max(new.iter().map(|s| s.epoch_ns).max().unwrap_or(0));
        }
        f.last_set
            .push(Duration::from_nanos(last.saturating_sub(t0_ns) as u64));
    }

    fn haconn(&self) {
        self.switch_all(false);
    }

    fn snmpset(&self, i: usize, outlet: u16) -> Command {
        let mut c = Command::new("/usr/bin/snmpset");
        c.args(["-v2c", "-c", COMMUNITY, "-r", "0", "-t", "2"])
            .arg(self.agents[i].target())
            .args([&self.control_oid(outlet), "i", &OFF.to_string()])
            .envs(self.agents[i].tool_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn snmpset_sequential(&self) {
        for (i, o) in self.cells() {
            let out = self.snmpset(i, o).output().expect("run snmpset");
            assert!(out.status.success(), "snmpset: {out:?}");
        }
    }

    fn snmpset_parallel(&self) {
        let children: Vec<Child> = self
            .cells()
            .into_iter()
            .map(|(i, o)| self.snmpset(i, o).spawn().expect("run snmpset"))
            .collect();
        for c in children {
            let out = c.wait_with_output().expect("wait for snmpset");
            assert!(out.status.success(), "snmpset: {out:?}");
        }
    }

    fn fence_agent(&self) {
        for (i, o) in self.cells() {
            let out = Command::new(FENCE_APC_SNMP)
                .args(["-a", "127.0.0.1", "-u"])
                .arg(self.agents[i].port.to_string())
                .args(["-d", "2c", "-c", COMMUNITY, "-n"])
                .arg(o.to_string())
                .args(["-o", "off"])
                .envs(self.agents[i].tool_env())
                .stdin(Stdio::null())
                .output()
                .expect("run fence_apc_snmp");
            assert!(
                out.status.success(),
                "fence_apc_snmp outlet {o}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

type Method = (&'static str, fn(&Bench), usize);

/// The methods and their rounds in a full run.
const METHODS: [Method; 4] = [
    (
        "haconn backend (4 at once, SET + read-back)",
        Bench::haconn,
        300,
    ),
    (
        "snmpset x4 sequential (SET only)",
        Bench::snmpset_sequential,
        60,
    ),
    (
        "snmpset x4 parallel (SET only)",
        Bench::snmpset_parallel,
        60,
    ),
    (
        "fence_apc_snmp x4 sequential (SET + read-back)",
        Bench::fence_agent,
        8,
    ),
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:9.3} ms", d.as_secs_f64() * 1000.0)
}

fn run(rounds: impl Fn(usize) -> usize) -> Vec<(&'static str, Figures)> {
    let bench = Bench::new();
    METHODS
        .iter()
        .map(|(name, cut, n)| {
            let mut f = Figures::default();
            for _ in 0..rounds(*n) {
                bench.round(name, &mut f, cut);
            }
            f.ret.sort();
            f.last_set.sort();
            (*name, f)
        })
        .collect()
}

fn report(results: &[(&str, Figures)]) {
    let base = |f: &Figures| (percentile(&f.ret, 0.5), percentile(&f.last_set, 0.5));
    let (base_ret, base_set) = base(&results[0].1);
    for (label, pick) in [
        ("until the last command returned", 0),
        ("until the last SET reached the PDU", 1),
    ] {
        println!("\n  {label}:");
        println!(
            "    {:<48} {:>6} {:>12} {:>12} {:>10}",
            "method", "rounds", "median", "p99", "x haconn"
        );
        for (name, f) in results {
            let v = if pick == 0 { &f.ret } else { &f.last_set };
            let median = percentile(v, 0.5);
            let reference = if pick == 0 { base_ret } else { base_set };
            println!(
                "    {name:<48} {:>6} {} {} {:>9.1}x",
                v.len(),
                ms(median),
                ms(percentile(v, 0.99)),
                median.as_secs_f64() / reference.as_secs_f64().max(1e-9)
            );
        }
    }
}

fn main() {
    harness::main(
        "pdu_smoke",
        || {
            let results = run(|n| n.min(2));
            assert!(results.iter().all(|(_, f)| f.ret.len() == 2));
        },
        full,
    );
}

fn full() {
    println!(
        "PDU cut: 4 outlets on 2 PDUs (2 each), real snmpd + pass_persist APC rPDU emulator on 127.0.0.1"
    );
    println!("{}", harness::machine_line());
    let t = Instant::now();
    let results = run(|n| n);
    report(&results);
    println!("\n  total {:.1} s", t.elapsed().as_secs_f64());
}
