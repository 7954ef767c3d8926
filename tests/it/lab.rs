//! `haconn lab` end to end: the real binary acts out each scenario on loopback with the
//! shortest timings, and must exit 0 with the timeline and reset-log lines that prove the
//! expected outcome. Then the operator commands next to it (`show hamonitor`, `server
//! reset`) against a real daemon on simulated hardware, with an HA monitor played here.
//!
//! Everything stays on 127.0.0.0/8; every wait is bounded.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use haconn::resetpath::codec::{self, Envelope, Key, Message};

struct Run {
    args: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "$ haconn {}", self.args.join(" "))?;
        writeln!(f, "exit: {:?}", self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout)?;
        write!(f, "--- stderr\n{}", self.stderr)
    }
}

impl Run {
    #[track_caller]
    fn code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    fn has(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    fn lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.stdout.contains(needle),
            "stdout has {needle:?}\n{self}"
        );
        self
    }

    /// Reset-log lines (as the lab prints them) starting with `head` and ending with `tail`.
    fn log_lines(&self, head: &str, tail: &str) -> usize {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("  [20"))
            .filter_map(|l| l.split_once("] "))
            .filter(|(_, rest)| rest.starts_with(head) && rest.ends_with(tail))
            .count()
    }

    #[track_caller]
    fn log_count(&self, head: &str, tail: &str, n: usize) -> &Run {
        assert_eq!(
            self.log_lines(head, tail),
            n,
            "expected {n} reset-log line(s) `{head} ... {tail}`\n{self}"
        );
        self
    }

    #[track_caller]
    fn log_at_least(&self, head: &str, tail: &str, n: usize) -> &Run {
        assert!(
            self.log_lines(head, tail) >= n,
            "expected {n} or more reset-log lines `{head} ... {tail}`\n{self}"
        );
        self
    }

    /// Every IPv4 address printed is a loopback one.
    #[track_caller]
    fn loopback_only(&self) -> &Run {
        for word in self
            .stdout
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        {
            if let Ok(a) = word.parse::<std::net::Ipv4Addr>() {
                assert!(a.is_loopback(), "non-loopback address {a}\n{self}");
            }
        }
        self
    }
}

fn haconn(args: &[&str]) -> Run {
    let r = crate::support::run::haconn(args);
    Run {
        args: r.args,
        code: r.code,
        stdout: r.stdout,
        stderr: r.stderr,
    }
}

fn lab(scenario: &str) -> Run {
    let run = haconn(&[
        "lab",
        "--scenario",
        scenario,
        "--hispeed",
        "1000",
        "--timeout",
        "5",
    ]);
    run.code(0)
        .has(&format!("lab {scenario}: PASSED"))
        .lacks("FAILED")
        .loopback_only();
    run
}

#[test]
fn dump_the_agent_stops_the_node_and_no_hard_reset_follows() {
    lab("dump")
        .has("node01 HA monitor → haconn")
        .has("RESET node02 (subsystem 2), req 1")
        .has("req 1: ACCEPTED")
        .has("NMI (soft reset")
        .has("node02 dump agent → haconn")
        .has("STOPPED: system stopped, dump started")
        .has("req 1: DUMP (reset done)")
        .has("haconn → node03 HA monitor          ATTENTION node02 DUMP")
        .lacks("HARD RESET")
        .log_count("RM-RESET node02 2 RECV 127.0.10.1 ", " 1 P", 1)
        // SPEC §7: SOFTRESET SEND when the NMI is issued, RECV when the BMC acknowledges
        // it, and the dump agent's stop notice as ATTENTION RECV with its address.
        .log_count("SOFTRESET node02 2 SEND 127.0.10.1 ", " 1 P", 1)
        .log_count("SOFTRESET node02 2 RECV 127.0.10.1 ", " 1 P", 1)
        .log_count("ATTENTION node02 2 RECV 127.0.10.2 ", " 2 P DUMP", 1)
        .log_count("RM-RESET node02 2 SEND 127.0.10.1 ", " 1 P DUMP", 1)
        .log_count("HARDRESET", "", 0)
        .log_at_least("ATTENTION node02 2 SEND 127.0.10.", " P DUMP", 2);
}

#[test]
fn hang_hard_reset_after_hispeed() {
    lab("hang")
        .has("HARD RESET (no stopped notification within 1000 ms)")
        .has("hard reset acknowledged")
        .has("ATTENTION node02 REBOOT")
        .lacks("dump agent → haconn")
        .log_count("HARDRESET node02 2 SEND 127.0.10.1 ", " 1 P", 1)
        .log_count("HARDRESET node02 2 RECV 127.0.10.1 ", " 1 P", 1)
        .log_count("RM-RESET node02 2 SEND 127.0.10.1 ", " 1 P DUMP", 1)
        .log_at_least("ATTENTION node02 2 SEND 127.0.10.", " P REBOOT", 2);
}

#[test]
fn bmc_dead_pdu_cut_after_the_timeout_then_outlets_back_on() {
    lab("bmc-dead")
        .has("HARD RESET (no stopped notification within 1000 ms)")
        .has("hard reset of node02 failed: BMC 127.0.1.2: no answer within 5000 ms")
        .has("haconn → PDU 127.0.2.1              outlet 5 OFF")
        .has("PDU 127.0.2.2                       outlet 5 is ON (acknowledged)")
        .lacks("hard reset acknowledged")
        .log_count("HARDRESET node02 2 RECV", "", 0)
        .log_count("IPDUSD node02 2 SEND 127.0.10.1 ", " 127.0.2.1 5 OFF", 1)
        .log_count("IPDUSD node02 2 SEND 127.0.10.1 ", " 127.0.2.2 5 OFF", 1)
        .log_count("IPDUSD node02 2 RECV 127.0.10.1 ", " 127.0.2.1 5 OFF", 1)
        .log_count("IPDUSD node02 2 RECV 127.0.10.1 ", " 127.0.2.2 5 OFF", 1)
        .log_count("IPDUSD node02 2 SEND ", " 127.0.2.1 5 ON", 1)
        .log_count("IPDUSD node02 2 RECV ", " 127.0.2.1 5 ON", 1)
        .log_count("IPDUSD node02 2 SEND ", " 127.0.2.2 5 ON", 1)
        .log_count("IPDUSD node02 2 RECV ", " 127.0.2.2 5 ON", 1)
        .log_count("RM-RESET node02 2 SEND 127.0.10.1 ", " 1 P DUMP", 1)
        .has("the outlets were back on after the 5 s recovery time");
}

#[test]
fn pair_exactly_one_of_two_crossing_resets_runs() {
    let run = lab("pair");
    run.has("exactly one of the crossing requests ran; the other got FAIL")
        .has("its monitor pair partner's reset won")
        .log_count("RM-RESET ", " P FAIL", 1)
        .log_count("RM-RESET ", " P DUMP", 1);
    assert_eq!(
        run.log_lines("SOFTRESET ", " P"),
        2,
        "one NMI issued and acknowledged\n{run}"
    );
    assert_eq!(
        run.log_lines("ATTENTION node02 2 RECV ", " P DUMP"),
        1,
        "the stop notice of the one reset\n{run}"
    );
}

#[test]
fn guest_nmi_and_reset_through_esxi() {
    lab("guest")
        .has("resettable via esxi")
        .has("haconn → ESXi 127.0.3.1 (VM vm02)   NMI")
        .has("HARD RESET (no stopped notification within 5000 ms)")
        .has("ATTENTION vm02 REBOOT")
        .log_count("SOFTRESET vm02 2 SEND 127.0.10.1 ", " 1 V", 1)
        .log_count("HARDRESET vm02 2 RECV 127.0.10.1 ", " 1 V", 1)
        .log_count("RM-RESET vm02 2 SEND 127.0.10.1 ", " 1 V DUMP", 1)
        .log_at_least("ATTENTION vm02 2 SEND 127.0.10.", " V REBOOT", 2);
}

#[test]
fn poweroff_the_watch_tells_the_others_and_resets_nothing() {
    let run = lab("poweroff");
    run.has("node02                              POWER LOST")
        .has("haconn → node01 HA monitor          ATTENTION node02 POFF")
        .has("haconn → node03 HA monitor          ATTENTION node02 POFF")
        .has("within one poll interval")
        .lacks("NMI")
        .lacks("HARD RESET")
        .lacks("RM-RESET")
        .log_at_least("ATTENTION node02 2 SEND 127.0.10.", " P POFF", 2);
}

#[test]
fn takeover_the_standby_fences_the_dead_active_then_serves_the_reset_asked_meanwhile() {
    let run = lab("takeover");
    run.has("management servers: labms01 active, labms02 standby")
        .has("labms01                             DIES")
        .has("labms02                             HEARTBEAT LOST: nothing from labms01 for 500 ms")
        .has("labms02 → labms01's BMC 127.0.0.2   HARD RESET (fencing labms01)")
        .has("labms01 fenced: BMC 127.0.0.2 acknowledged the hard reset")
        .has("labms02                             ACTIVE: the peer was lost and is fenced")
        .has("RESET node02 again, req 1")
        .has("req 1: DUMP (reset done)")
        .has("never two management servers active at once")
        .has("labms02 served only after labms01 was fenced")
        .has("labms01's BMC got exactly one hard reset (saw 1)")
        .lacks("HARD RESET (no stopped")
        .log_count("RM-RESET node02 2 RECV 127.0.10.1 ", " 1 P", 1)
        .log_count("SOFTRESET node02 2 SEND 127.0.10.1 ", " 1 P", 1)
        .log_count("RM-RESET node02 2 SEND 127.0.10.1 ", " 1 P DUMP", 1);
    // The order on the timeline: death, loss, fence, takeover, then the reset's replies.
    let at = |needle: &str| {
        run.stdout
            .find(needle)
            .unwrap_or_else(|| panic!("no {needle:?}\n{run}"))
    };
    let order = [
        "DIES",
        "HEARTBEAT LOST",
        "HARD RESET (fencing labms01)",
        "ACTIVE: the peer was lost",
        "req 1: ACCEPTED",
        "req 1: DUMP",
    ];
    for w in order.windows(2) {
        assert!(at(w[0]) < at(w[1]), "{} before {}\n{run}", w[0], w[1]);
    }
}

#[test]
fn lab_refuses_timings_outside_the_spec_ranges() {
    haconn(&["lab", "--hispeed", "999"]).code(2);
    haconn(&["lab", "--timeout", "61"]).code(2);
    haconn(&["lab", "--scenario", "meltdown"]).code(2);
}

/// A daemon on simulated hardware with the lab spec, built by the tests' one daemon
/// builder (stopped when dropped).
struct Daemon(crate::support::daemon::Daemon);

impl Daemon {
    fn start() -> Daemon {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lab-single.yaml"),
        )
        .unwrap();
        assert!(text.contains("broadcast: 127.255.255.255") && text.contains("auth: none"));
        Daemon(
            crate::support::daemon::Daemon::new(&text)
                .without_test_hooks()
                .no_watch()
                .arg("--simulate-hardware")
                .start(),
        )
    }

    fn socket(&self) -> PathBuf {
        self.0.socket()
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.path("log").join(name)).unwrap_or_default()
    }

    /// The reset path's address, from the init log.
    fn reset_path(&self) -> std::net::SocketAddr {
        let init = self.log("init.log");
        let at = init
            .lines()
            .find_map(|l| l.split("reset path listening on ").nth(1))
            .expect("the init log names the reset-path address");
        at.trim().parse().unwrap()
    }

    fn haconn(&self, args: &[&str]) -> Run {
        let socket = self.socket().display().to_string();
        let mut a = args.to_vec();
        a.extend(["--control-socket", &socket]);
        haconn(&a)
    }
}

fn recv(sock: &UdpSocket) -> Option<Message> {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    codec::decode(&buf[..n], &Key::None).ok().map(|e| e.msg)
}

#[test]
fn show_hamonitor_and_server_reset_against_a_daemon() {
    let d = Daemon::start();
    let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = monitor.local_addr().unwrap().port();
    let check = Message::Check {
        system: "labnode01".into(),
        subsystem: 1,
        port,
        pair: Some(4),
    };
    monitor
        .send_to(
            &codec::encode(&Envelope::new(check), &Key::None),
            d.reset_path(),
        )
        .unwrap();
    assert!(matches!(
        recv(&monitor),
        Some(Message::CheckReply {
            resettable: true,
            ..
        })
    ));

    let table = d.haconn(&["show", "hamonitor"]);
    table
        .code(0)
        .has("<SystemName>")
        .has("<Pair#>")
        .has("<LastCheck>");
    let row = |name: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // The last column is the age of the last check (`0s`, `----` with no monitor).
    assert!(row("labnode01")[8].ends_with('s'), "{table}");
    assert_eq!(row("labnode02")[8], "----", "{table}");
    assert_eq!(
        row("labnode01")[..8],
        [
            "labnode01",
            "labnode01",
            "P",
            "1",
            "normal",
            "127.0.0.1",
            &port.to_string(),
            "4"
        ]
    );
    assert_eq!(
        row("labnode02")[..8],
        [
            "labnode02",
            "labnode02",
            "P",
            "----",
            "----",
            "----",
            "----",
            "----"
        ]
    );

    let json = d.haconn(&["show", "hamonitor", "--name", "labnode01", "--json"]);
    json.code(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let rows = v["monitors"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["subsystem"], 1);
    assert_eq!(rows[0]["state"], "normal");
    assert_eq!(rows[0]["port"], port);
    d.haconn(&["show", "hamonitor", "--name", "nosuch"]).code(1);

    // Refused: a wrong subsystem number for a registered system, an unknown system.
    let wrong = d.haconn(&["server", "reset", "labnode01", "--address", "9"]);
    wrong.code(1);
    assert!(
        wrong.stderr.contains("registered as subsystem 1"),
        "{wrong}"
    );
    d.haconn(&["server", "reset", "nosuch", "--address", "1"])
        .code(1);

    // A test soft reset of labnode02 (SPEC §8): the NMI, then up to 60 s for a stop
    // notice, and never a hard reset, not even after the hard-reset issue time (1 s here).
    // The command waits for the outcome (issue 18.4): here the stop notice sent below.
    // A test that gets none is tested in virtual time
    // (pipeline_timing::an_operators_test_waits_60_s_for_the_stop_and_never_hard_resets)
    // and in the core's tables.
    let socket = d.socket().display().to_string();
    let test = std::thread::spawn(move || {
        haconn(&[
            "server",
            "reset",
            "labnode02",
            "--address",
            "2",
            "--control-socket",
            &socket,
        ])
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d
        .log("reset.log")
        .contains("SOFTRESET labnode02 2 RECV ---- ---- ---- P")
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = Message::Stopped {
        system: "labnode02".into(),
        subsystem: 2,
    };
    monitor
        .send_to(
            &codec::encode(&Envelope::new(stopped), &Key::None),
            d.reset_path(),
        )
        .unwrap();
    let run = test.join().expect("the test command");
    run.code(0);
    assert!(
        run.stdout
            .contains("labnode02 (subsystem 2): stopped (dump)"),
        "{run}"
    );
    let log = d.log("reset.log");
    assert!(
        log.contains("SOFTRESET labnode02 2 SEND ---- ---- ---- P"),
        "{log}"
    );
    assert!(
        !log.contains("HARDRESET"),
        "a test soft reset never hard-resets: {log}"
    );

    // Unreachable daemon: exit 2.
    let gone = d.0.path("nosock").display().to_string();
    haconn(&[
        "server",
        "reset",
        "labnode02",
        "--address",
        "2",
        "--control-socket",
        &gone,
    ])
    .code(2);
    haconn(&["show", "hamonitor", "--control-socket", &gone]).code(2);
}
