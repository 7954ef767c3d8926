//! ESXi benchmark: how long a hard reset takes to reach the host, from the request to the
//! moment the `vim-cmd vmsvc/power.reset` double starts (the epoch-ns stamp in its call
//! log), against a real OpenSSH sshd on 127.0.0.1 (tests/esxi_support).
//!
//! Two ways: haconn's backend `vm_reset` on its warm session (one channel per command),
//! and a fresh `ssh` process per command (connect, key exchange, key login, exec), as a
//! script calling `ssh` would do. Both log in with the same ECDSA key and check the pinned
//! host key. Prints median, p99 and max of each and the ratio of the medians; it never
//! fails on time.
//!
//! Run: `cargo bench --bench esxi` (about half a minute). Without `--bench`, as under
//! `cargo test`, it is one smoke test (`esxi_smoke`: three resets each way must all reach
//! the double), speaking enough of libtest's command line for test runners.

#[path = "common/harness.rs"]
mod harness;

#[path = "../tests/it/support/esxi/mod.rs"]
mod esxi_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use esxi_support::{Logins, Sshd};
use haconn::backend::Hypervisor;
use haconn::backend::esxi::EsxiHosts;

const RESET: &str = "vim-cmd vmsvc/power.reset 3";

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

/// The start stamp of the newest `power.reset 3` in the call log, once there are `n`.
fn reset_logged(sshd: &Sshd, n: usize) -> u128 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let starts: Vec<u128> = sshd
            .calls()
            .into_iter()
            .filter(|c| !c.end && c.argv == RESET)
            .map(|c| c.ns)
            .collect();
        if starts.len() >= n {
            return starts[n - 1];
        }
        assert!(
            Instant::now() < deadline,
            "reset {n} never reached the double\n{}",
            sshd.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Request → power.reset started, in ms, `n` times through haconn's warm session.
fn haconn_warm(sshd: &Sshd, n: usize, done: &mut usize) -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut host = sshd.esxi();
    host.password = None;
    host.private_key = Some(sshd.key_secret());
    let hosts = EsxiHosts::new(None);
    rt.block_on(async {
        // Warm: session open, inventory read.
        hosts.vm_reset(&host, "vm01").await.expect("warm-up reset");
        *done += 1;
        let mut out = Vec::new();
        for _ in 0..n {
            let t0 = now_ns();
            hosts.vm_reset(&host, "vm01").await.expect("reset");
            *done += 1;
            out.push((reset_logged(sshd, *done) - t0) as f64 / 1e6);
        }
        hosts.shutdown().await;
        out
    })
}

/// The same with a fresh `ssh` process per command.
fn ssh_per_command(sshd: &Sshd, n: usize, done: &mut usize) -> Vec<f64> {
    let pubkey = std::fs::read_to_string(sshd.path("hostkey_ecdsa.pub")).expect("host key");
    let known = sshd.path("bench_known_hosts");
    let key_fields: Vec<&str> = pubkey.split_whitespace().take(2).collect();
    std::fs::write(
        &known,
        format!("[127.0.0.1]:{} {}\n", sshd.port, key_fields.join(" ")),
    )
    .expect("known hosts");
    let mut out = Vec::new();
    for _ in 0..n {
        let t0 = now_ns();
        let status = Command::new("ssh")
            .arg("-i")
            .arg(sshd.path("client_key"))
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known.display()))
            .args(["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256"])
            .args(["-o", "KexAlgorithms=ecdh-sha2-nistp256"])
            .args(["-o", "PreferredAuthentications=publickey"])
            .args(["-o", "ConnectTimeout=5", "-p", &sshd.port.to_string()])
            .args(["root@127.0.0.1", RESET])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ssh");
        assert!(status.success(), "ssh failed\n{}", sshd.diagnostics());
        *done += 1;
        out.push((reset_logged(sshd, *done) - t0) as f64 / 1e6);
    }
    out
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Stats {
        p50: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

fn run(n: usize) -> (Stats, Stats) {
    let sshd = Sshd::start(Logins::Esxi);
    let mut done = 0;
    let warm = haconn_warm(&sshd, n, &mut done);
    let fresh = ssh_per_command(&sshd, n, &mut done);
    (stats(warm), stats(fresh))
}

fn main() {
    harness::main(
        "esxi_smoke",
        || {
            run(3);
        },
        full,
    );
}

fn full() {
    let n = 100;
    println!(
        "ESXi hard reset: request -> `{RESET}` started on the double (sshd on 127.0.0.1, key login)"
    );
    println!("{}", harness::machine_line());
    let (warm, fresh) = run(n);
    for (what, s) in [
        ("haconn, warm session", &warm),
        ("fresh ssh per command", &fresh),
    ] {
        println!(
            "  {what:<24} n={n:<4} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            s.p50, s.p99, s.max
        );
    }
    println!(
        "  ratio of medians (fresh ssh / haconn): {:.1}x",
        fresh.p50 / warm.p50
    );
}
