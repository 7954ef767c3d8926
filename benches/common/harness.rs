//! What every benchmark binary shares (included with `#[path]`): speaking just enough of
//! libtest's command line to be one quick test under `cargo test` (and cargo-nextest,
//! through `--list`), and the full run under `cargo bench`, which passes `--bench`.

#![allow(dead_code)] // not every benchmark uses every helper

use std::time::Instant;

/// Runs `full` under `cargo bench`; otherwise offers one test named `name` that runs
/// `smoke` (a few iterations that check the fixture works) when libtest's arguments (a name
/// filter, `--exact`, `--skip`, `--ignored`) select it.
pub fn main(name: &str, smoke: impl FnOnce(), full: impl FnOnce()) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    if flag("--bench") {
        full();
        return;
    }
    if flag("--list") {
        if !flag("--ignored") {
            println!("{name}: test");
        }
        return;
    }
    let selected = selected(name, &args);
    let started = Instant::now();
    println!("\nrunning {}", if selected { "1 test" } else { "0 tests" });
    if selected {
        smoke();
        println!("test {name} ... ok");
    }
    println!(
        "\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; {} filtered out; finished in {:.2}s\n",
        usize::from(selected),
        usize::from(!selected),
        started.elapsed().as_secs_f64()
    );
}

/// Whether libtest's arguments select the test `name`.
fn selected(name: &str, args: &[String]) -> bool {
    let flag = |f: &str| args.iter().any(|a| a == f);
    let matches = |p: &str| {
        if flag("--exact") {
            name == p
        } else {
            name.contains(p)
        }
    };
    // libtest options that take a value; other bare words are name filters.
    let with_value = [
        "--color",
        "--format",
        "--logfile",
        "--skip",
        "--test-threads",
        "-Z",
    ];
    let mut filters = Vec::new();
    let mut skipped = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if with_value.contains(&a.as_str()) {
            let value = it.next();
            skipped |= a == "--skip" && value.is_some_and(|v| matches(v));
        } else if !a.starts_with('-') {
            filters.push(a.as_str());
        }
    }
    (filters.is_empty() || filters.iter().any(|f| matches(f))) && !skipped && !flag("--ignored")
}

/// The line every report starts with: the machine and its load, which skews every figure.
pub fn machine_line() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "  machine: {} CPUs, load average {} (other work on the machine skews every figure)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Nanoseconds as milliseconds.
pub fn ms(ns: u128) -> f64 {
    ns as f64 / 1e6
}

/// A latency distribution in milliseconds: count, p50, p99, max.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// The figures of samples in nanoseconds (nearest rank).
pub fn figures(mut ns: Vec<u128>) -> Figures {
    assert!(!ns.is_empty());
    ns.sort_unstable();
    let at = |q: f64| ms(ns[((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1]);
    Figures {
        n: ns.len(),
        p50: at(0.5),
        p99: at(0.99),
        max: ms(*ns.last().expect("not empty")),
    }
}

/// One table row: `name` in a column `width` wide, then n, p50, p99 and max.
pub fn row(name: &str, width: usize, f: Figures) {
    println!(
        "  {name:<width$} {:>4}  {:>10.3}  {:>10.3}  {:>10.3}",
        f.n, f.p50, f.p99, f.max
    );
}
