//! Spec benchmark: how long a large cluster spec takes to check and to plan.
//!
//! Builds, in memory, a `scale: large` spec of 1000 physical servers with 4000 outlet
//! links over IBM_PDU / APC_RPDU pairs, and a desired version of it (about 5 % of the
//! servers changed, some added, some deleted). Times `spec::check_bytes` and
//! `plan::plan` with both renderings, prints min / median / max in milliseconds and the
//! validate + plan median against the 50 ms target. It never fails on time: the figure
//! is for people, machines differ.
//!
//! Run: `cargo bench --bench spec` (release). `HACONN_BENCH_ITERS=<n>` changes the
//! number of measured iterations (default 30, after 3 warm-ups). Under `cargo test` it
//! only checks that the generated specs validate and plan (see [`run_mode`]).

#[path = "common/harness.rs"]
mod harness;

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use haconn::plan::summary::ReloadOutcome;
use haconn::plan::{self, LiveFacts};
use haconn::spec::model::{Name, Spec};
use haconn::spec::raw::RawSpec;
use haconn::spec::{self, CheckOptions};

const SERVERS: usize = 1000;
const OUTLETS_PER_SERVER: usize = 4;
const WARMUPS: usize = 3;
const DEFAULT_ITERS: usize = 30;
const TARGET_MS: f64 = 50.0;

/// A rack: a pair of PDUs (feed A and feed B) of one model; each server takes two
/// outlets on each.
#[derive(Clone, Copy)]
struct RackModel {
    name: &'static str,
    outlets: usize,
}

const IBM: RackModel = RackModel {
    name: "IBM_PDU",
    outlets: 12,
};
const APC: RackModel = RackModel {
    name: "APC_RPDU",
    outlets: 24,
};

#[derive(Clone)]
struct Server {
    name: String,
    bmc: String,
    bmc_password_env: String,
    cluster: bool,
    timeout: u32,
    recovery_time: u32,
    /// (PDU address, outlet number).
    outlets: Vec<(String, usize)>,
    /// ESXi address and guest names, for vservers.
    esxi: Option<(String, Vec<String>)>,
}

#[derive(Clone)]
struct Pdu {
    address: String,
    model: &'static str,
}

#[derive(Clone)]
struct Cluster {
    pdus: Vec<Pdu>,
    servers: Vec<Server>,
}

fn ip(net: u8, n: usize) -> String {
    format!("10.{net}.{}.{}", n / 250, n % 250 + 1)
}

/// Lays out `count` servers starting at number `first` in racks from `first_rack` on,
/// alternating IBM and APC racks.
fn racks(first: usize, count: usize, first_rack: usize) -> Cluster {
    let mut c = Cluster {
        pdus: Vec::new(),
        servers: Vec::new(),
    };
    let mut n = first;
    let mut rack = first_rack;
    while n < first + count {
        let model = if rack.is_multiple_of(2) { IBM } else { APC };
        let feeds = [ip(2, 2 * rack), ip(2, 2 * rack + 1)];
        for f in &feeds {
            c.pdus.push(Pdu {
                address: f.clone(),
                model: model.name,
            });
        }
        let per_rack = model.outlets / (OUTLETS_PER_SERVER / 2);
        for slot in 0..per_rack {
            if n >= first + count {
                break;
            }
            let outlets = feeds
                .iter()
                .flat_map(|f| [(f.clone(), 2 * slot + 1), (f.clone(), 2 * slot + 2)])
                .collect();
            let esxi = n
                .is_multiple_of(10)
                .then(|| (ip(3, n), (0..4).map(|g| format!("vm{n}g{g}")).collect()));
            c.servers.push(Server {
                name: format!("node{n:04}"),
                bmc: ip(1, n),
                bmc_password_env: format!("HACONN_BMC_{n:04}"),
                cluster: n.is_multiple_of(2),
                timeout: 10,
                recovery_time: 30,
                outlets,
                esxi,
            });
            n += 1;
        }
        rack += 1;
    }
    c
}

fn yaml(c: &Cluster) -> String {
    let mut s = String::with_capacity(1 << 20);
    s.push_str(
        "apiVersion: haconn/v1
scale: large
resetPath:
  address: 192.168.10.100/24
  port: 5001
  auth:
    key: {env: HACONN_RESET_KEY}
hispeed: 1500
snmp:
  community: {env: HACONN_SNMP_COMMUNITY}
managementServers:
  - name: mserver01
    bmc: {address: 192.168.20.1, username: admin, password: {env: HACONN_MS1_BMC}}
    mlan: {address: 10.0.0.1, port: 5002}
  - name: mserver02
    bmc: {address: 192.168.20.2, username: admin, password: {env: HACONN_MS2_BMC}}
    mlan: {address: 10.0.0.2, port: 5002}
pdus:
",
    );
    for p in &c.pdus {
        let _ = writeln!(s, "  - {{address: {}, model: {}}}", p.address, p.model);
    }
    s.push_str("servers:\n");
    for v in &c.servers {
        let _ = writeln!(s, "  - name: {}", v.name);
        let _ = writeln!(
            s,
            "    bmc: {{address: {}, username: admin, password: {{env: {}}}}}",
            v.bmc, v.bmc_password_env
        );
        let _ = writeln!(s, "    cluster: {}", v.cluster);
        s.push_str("    ipdu:\n");
        let _ = writeln!(s, "      timeout: {}", v.timeout);
        let _ = writeln!(s, "      recoveryTime: {}", v.recovery_time);
        s.push_str("      outlets:\n");
        for (pdu, outlet) in &v.outlets {
            let _ = writeln!(s, "        - {{pdu: {pdu}, outlet: {outlet}}}");
        }
        if let Some((address, guests)) = &v.esxi {
            s.push_str("    esxi:\n");
            let _ = writeln!(s, "      address: {address}");
            s.push_str("      username: root\n");
            s.push_str("      password: {env: HACONN_ESXI}\n");
            let _ = writeln!(s, "      guests: [{}]", guests.join(", "));
        }
    }
    s
}

/// The desired version: 50 servers changed in assorted ways, the last 12 servers deleted
/// (with the PDUs that fed only them), and 12 new servers on two new racks.
fn desired(live: &Cluster) -> Cluster {
    let mut d = live.clone();
    for (k, i) in (0..50).map(|k| (k, 7 + k * 19)).collect::<Vec<_>>() {
        let s = &mut d.servers[i];
        match k % 5 {
            0 => s.timeout = 20,         // PDU setting: runtime
            1 => s.cluster = !s.cluster, // runtime if no monitor
            2 => s.bmc_password_env = format!("{}_NEW", s.bmc_password_env), // secret
            3 => s.name = format!("{}r", s.name), // rename, same BMC
            _ => s.bmc = ip(4, i),       // BMC moved
        }
    }
    d.servers.truncate(d.servers.len() - 12);
    let fed: std::collections::HashSet<&str> = d
        .servers
        .iter()
        .flat_map(|s| s.outlets.iter().map(|(p, _)| p.as_str()))
        .collect();
    let pdus = d.pdus.iter().filter(|p| fed.contains(p.address.as_str()));
    let pdus = pdus.cloned().collect();
    d.pdus = pdus;
    let racks_used = live.pdus.len() / 2;
    let added = racks(SERVERS, 12, racks_used + 2);
    d.pdus.extend(added.pdus);
    d.servers.extend(added.servers);
    d
}

struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let n = samples.len();
    let median = if n % 2 == 1 {
        ms(samples[n / 2])
    } else {
        (ms(samples[n / 2 - 1]) + ms(samples[n / 2])) / 2.0
    };
    Stats {
        min: ms(samples[0]),
        median,
        max: ms(samples[n - 1]),
    }
}

/// Runs `f` `WARMUPS` times unmeasured, then `iters` times measured.
fn measure(iters: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..WARMUPS {
        f();
    }
    let mut samples: Vec<Duration> = (0..iters)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    stats(&mut samples)
}

fn row(label: &str, s: &Stats) {
    println!(
        "  {label:<38} min {:>8.2}  median {:>8.2}  max {:>8.2}  ms",
        s.min, s.median, s.max
    );
}

/// The two specs, validated, and what the planner is given besides.
struct Fixture {
    live_text: String,
    desired_text: String,
    live: Spec,
    desired: Spec,
    facts: LiveFacts,
}

fn fixture() -> Fixture {
    let live_cluster = racks(0, SERVERS, 0);
    let live_text = yaml(&live_cluster);
    let desired_text = yaml(&desired(&live_cluster));
    let load = |text: &str, what: &str| {
        let checked = spec::check_bytes(text.as_bytes(), CheckOptions::default());
        match checked.spec {
            Some(s) => s,
            None => {
                for d in checked.diagnostics.iter().take(20) {
                    eprintln!("{d:?}");
                }
                panic!("the generated {what} spec does not validate");
            }
        }
    };
    let live = load(&live_text, "live");
    let desired = load(&desired_text, "desired");
    let mut facts = LiveFacts::default();
    for s in live.servers.values().step_by(3) {
        facts.monitors_active.insert(s.name.clone());
    }
    facts
        .resetting
        .insert(Name::parse("node0121").expect("a name"));
    Fixture {
        live_text,
        desired_text,
        live,
        desired,
        facts,
    }
}

/// `cargo test` runs this binary without `--bench`: then it only checks, once and quickly,
/// that the fixture validates and plans.
fn smoke() {
    let f = fixture();
    let p = plan::plan(&f.live, &f.desired, &f.facts);
    for op in [
        plan::Operation::Add,
        plan::Operation::Change,
        plan::Operation::Delete,
    ] {
        assert!(
            p.count(op) > 0,
            "the desired spec has no {op} against the live one"
        );
    }
    assert!(!p.render().is_empty());
    assert!(
        !ReloadOutcome::predicted(&p, &f.live, &f.desired)
            .render()
            .is_empty()
    );
}

fn main() {
    harness::main("spec_smoke", smoke, bench);
}

fn bench() {
    let iters = std::env::var("HACONN_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_ITERS);
    let Fixture {
        live_text,
        desired_text,
        live,
        desired,
        facts,
    } = fixture();
    let opts = CheckOptions::default();
    let links: usize = live.servers.values().map(|s| s.outlets().len()).sum();

    let p = plan::plan(&live, &desired, &facts);
    println!("haconn spec benchmark ({WARMUPS} warm-ups, {iters} measured iterations)");
    println!(
        "  live spec:    {} bytes, {} servers, {} systems, {} PDUs, {} outlet links",
        live_text.len(),
        live.servers.len(),
        live.systems(),
        live.pdus.len(),
        links
    );
    println!(
        "  desired spec: {} bytes, {} servers, {} PDUs",
        desired_text.len(),
        desired.servers.len(),
        desired.pdus.len()
    );
    println!(
        "  plan: {} changes ({} add, {} change, {} delete)",
        p.changes.len(),
        p.count(plan::Operation::Add),
        p.count(plan::Operation::Change),
        p.count(plan::Operation::Delete)
    );
    println!();

    let validate = measure(iters, || {
        black_box(spec::check_bytes(black_box(desired_text.as_bytes()), opts));
    });
    let planning = measure(iters, || {
        let p = plan::plan(black_box(&live), black_box(&desired), &facts);
        black_box(p.render());
        black_box(ReloadOutcome::predicted(&p, &live, &desired).render());
    });
    row("validate (check_bytes, desired spec)", &validate);
    row("plan + render + reload summary", &planning);
    let total = validate.median + planning.median;
    let verdict = if total <= TARGET_MS {
        "within target"
    } else {
        "OVER TARGET"
    };
    println!();
    println!("  validate + plan (medians): {total:.2} ms   target < {TARGET_MS:.0} ms   {verdict}");

    // Where the validate time goes, step by step. These reproduce the steps of
    // `check_document` from its public parts, so they are close to, not exactly, its cost.
    println!();
    println!("  split of validate (approximate):");
    let text = desired_text.as_bytes();
    let doc = spec::yaml::load_bytes(text).expect("generated YAML loads");
    let validator = jsonschema::validator_for(&spec::schema()).expect("schema compiles");
    let raw: RawSpec =
        serde_json::from_value(doc.value.clone()).expect("generated spec fits RawSpec");
    row(
        "yaml load (text -> JSON value + index)",
        &measure(iters, || {
            black_box(spec::yaml::load_bytes(black_box(text)).ok());
        }),
    );
    row(
        "JSON Schema check",
        &measure(iters, || {
            black_box(validator.iter_errors(black_box(&doc.value)).count());
        }),
    );
    row(
        "serde into RawSpec",
        &measure(iters, || {
            black_box(serde_path_to_error::deserialize::<_, RawSpec>(black_box(&doc.value)).ok());
        }),
    );
    row(
        "semantic validation",
        &measure(iters, || {
            black_box(spec::validate::validate(black_box(&raw), &|_| Ok(())));
        }),
    );
    row(
        "check_document (all but yaml load)",
        &measure(iters, || {
            black_box(spec::check_document(black_box(&doc), opts));
        }),
    );
    println!();
    println!("  split of plan (approximate):");
    row(
        "plan::plan",
        &measure(iters, || {
            black_box(plan::plan(black_box(&live), black_box(&desired), &facts));
        }),
    );
    row(
        "Plan::render",
        &measure(iters, || {
            black_box(black_box(&p).render());
        }),
    );
    row(
        "ReloadOutcome::predicted + render",
        &measure(iters, || {
            black_box(ReloadOutcome::predicted(black_box(&p), &live, &desired).render());
        }),
    );
}
