//! The reset path end to end: the real `haconn daemon --simulate-hardware` and the real
//! `haconn node` tools (and ClusterLabs' `fence_kdump_send`), over UDP on 127.0.0.1.
//!
//! Every daemon has its own temporary directory and ephemeral ports; every address is in
//! 127.0.0.0/8 and the only broadcast address is 127.255.255.255.

use crate::support::resetpath as resetpath_support;

use std::net::UdpSocket;
use std::path::Path;
use std::time::Duration;

use haconn::resetpath::codec::{self, Envelope, Key, MAX_DATAGRAM, Message};
use haconn::resetpath::fence_kdump::{self, ByteOrder};
use resetpath_support::{KEY, Lab, SYSTEMS, free_port, free_ports, haconn, log_time_us};

/// How long a whole `node reset` may take here (the soft→hard window is 1–5 s).
const RESET_TIMEOUT: Duration = Duration::from_secs(30);

/// The key `system`'s node signs with (per-node keys, the lab's default).
fn key(system: &str) -> Key {
    Key::Hmac(resetpath_support::node_key(system).into_bytes())
}

/// The cluster key: every node's in shared mode, no node's with per-node keys.
fn cluster_key() -> Key {
    Key::Hmac(KEY.as_bytes().to_vec())
}

/// The lab spec in shared-key mode.
fn shared(spec: String) -> String {
    spec.replace("auth: {key: {file:", "auth: {keyMode: shared, key: {file:")
}

/// A raw UDP socket on 127.0.0.1 for hand-made datagrams; reads time out (bounded).
fn raw() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s
}

fn check_msg(system: &str, subsystem: u32, port: u16) -> Message {
    Message::Check {
        system: system.into(),
        subsystem,
        port,
        pair: None,
    }
}

/// The next reset-path message on `sock`, verified with one of the lab's keys (a node's
/// own, or the cluster key in shared mode).
fn recv_msg(sock: &UdpSocket) -> Message {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a reply within 10 s");
    decode_any(&buf[..n]).expect("a valid reply").msg
}

fn decode_any(bytes: &[u8]) -> Option<Envelope> {
    SYSTEMS
        .iter()
        .map(|s| key(s))
        .chain([cluster_key()])
        .find_map(|k| codec::decode(bytes, &k).ok())
}

/// Three monitors on 127.0.0.1: labnode01 (requester) and labnode02 (target) paired,
/// labnode03 an onlooker. Returns their ports.
fn three_monitors(lab: &Lab) -> [u16; 3] {
    let ports = free_ports();
    lab.register("labnode01", 1, ports[0], Some(1));
    lab.register("labnode02", 2, ports[1], Some(1));
    lab.register("labnode03", 3, ports[2], None);
    ports
}

/// Waits (bounded) for each of these reset-log lines, compared exactly without timestamps
/// (the log is written by its own thread, maybe after the replies went out).
/// labnode02's reset ended by a stop notice from `sender` (on 127.0.0.1): the reset log
/// has its ATTENTION RECV (SPEC §7) and no hard reset.
fn assert_dumped_by_stop_notice(lab: &Lab, sender: &str) {
    let bodies = lab.log_bodies("reset.log");
    assert!(
        bodies
            .iter()
            .any(|l| l.starts_with("ATTENTION labnode02 2 RECV 127.0.0.1 ")
                && l.ends_with(" 2 P DUMP")),
        "no ATTENTION RECV (SPEC §7: the stop notice) from {sender}\n{}",
        lab.diagnostics()
    );
    assert!(
        !bodies.iter().any(|l| l.starts_with("HARDRESET")),
        "a hard reset despite the stop notice\n{}",
        lab.diagnostics()
    );
}

fn assert_reset_log(lab: &Lab, lines: &[String]) {
    for line in lines {
        lab.wait_log("reset.log", line, |l| {
            l.split_once("] ").is_some_and(|(_, body)| body == line)
        });
    }
}

#[test]
fn check_registers_the_monitor_and_answers_resettable() {
    let lab = Lab::start(1000);
    let port = free_port();
    let run = lab.register("labnode01", 1, port, Some(4));
    assert_eq!(
        run.lines_with(
            "CHECK-REPLY",
            &[
                "system=labnode01",
                "subsystem=1",
                "resettable=yes",
                "via=bmc",
                "redundant=no",
            ],
        )
        .len(),
        1,
        "{run}"
    );
    // Registered with the address, port and pair the check carried.
    let monitors = lab.monitors();
    let rows = monitors["monitors"].as_array().expect("monitors array");
    let row = rows
        .iter()
        .find(|r| r["system"] == "labnode01")
        .unwrap_or_else(|| panic!("labnode01 not registered: {monitors:#}"));
    assert_eq!(row["ip"], "127.0.0.1", "{monitors:#}");
    assert_eq!(row["port"], port, "{monitors:#}");
    assert_eq!(row["pair"], 4, "{monitors:#}");
    assert_eq!(row["subsystem"], 1, "{monitors:#}");

    // An ephemeral port works too, and --json prints the reply as JSON.
    let run = lab.node(
        "check",
        &["--system", "labnode02", "--subsystem", "2", "--json"],
    );
    run.code(0);
    let reply: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("JSON");
    assert_eq!(reply["type"], "check-reply", "{run}");
    assert_eq!(reply["resettable"], true, "{run}");

    // With per-node keys a name the spec does not hold has no key: its check is dropped
    // unanswered (the shared-key test below has the "unknown system" answer).
    lab.node(
        "check",
        &["--system", "nosuch", "--subsystem", "9", "--wait", "1"],
    )
    .code(2);
}

#[test]
fn reset_without_dump_agent_hard_resets_after_hispeed_and_notifies_reboot() {
    // In shared-key mode (which this shows still works end to end): every node holds the
    // cluster key, so the attention is broadcast too.
    let lab = Lab::start_with(1000, shared);
    assert!(lab.shared());
    let [p1, _, p3] = three_monitors(&lab);
    // The onlooker hears it both ways: unicast, and broadcast on 127.255.255.255.
    let unicast = lab.listener("labnode03", "127.0.0.1", p3);
    let broadcast = lab.listener("labnode03", "127.255.255.255", p3);

    let run = lab.reset_node02(p1, 7).finish(RESET_TIMEOUT);
    run.code(0);
    for (result, n) in [("result=ACCEPTED", 1), ("result=DUMP", 1)] {
        assert_eq!(
            run.lines_with(
                "RESET-REPLY",
                &["req=7", "target-system=labnode02", "target=2", result]
            )
            .len(),
            n,
            "{run}"
        );
    }
    assert!(
        !run.lines_with("ATTENTION", &["system=labnode02", "state=REBOOT"])
            .is_empty(),
        "{run}"
    );
    for bg in [unicast, broadcast] {
        let l = bg.finish(RESET_TIMEOUT);
        l.code(0);
        assert_eq!(
            l.lines_with(
                "ATTENTION",
                &[
                    "system=labnode02",
                    "subsystem=2",
                    "state=REBOOT",
                    "req=----"
                ]
            )
            .len(),
            1,
            "{l}"
        );
    }

    // SPEC §7 lines, exactly (`<req#>` is the requester's subsystem number, `----` on
    // ATTENTION SEND).
    assert_reset_log(
        &lab,
        &[
            format!("RM-RESET labnode02 2 RECV 127.0.0.1 {p1} 1 P"),
            format!("SOFTRESET labnode02 2 SEND 127.0.0.1 {p1} 1 P"),
            format!("HARDRESET labnode02 2 SEND 127.0.0.1 {p1} 1 P"),
            format!("HARDRESET labnode02 2 RECV 127.0.0.1 {p1} 1 P"),
            format!("RM-RESET labnode02 2 SEND 127.0.0.1 {p1} 1 P DUMP"),
            format!("ATTENTION labnode02 2 SEND 127.0.0.1 {p1} ---- P REBOOT"),
            format!("ATTENTION labnode02 2 SEND 127.0.0.1 {p3} ---- P REBOOT"),
            format!("ATTENTION labnode02 2 SEND 127.255.255.255 {p3} ---- P REBOOT"),
        ],
    );
    // The hard reset waited hispeed (1000 ms, counted from the NMI request, so a little less
    // from the acknowledgement the SOFTRESET line records) for a stop, and not much more.
    let text = lab.log("reset.log");
    let at = |prefix: &str| {
        log_time_us(
            text.lines()
                .find(|l| l.contains(prefix))
                .unwrap_or_else(|| panic!("no {prefix}")),
        )
    };
    let gap = at("] HARDRESET labnode02 2 SEND") - at("] SOFTRESET labnode02 2 SEND");
    assert!(
        (900_000..3_000_000).contains(&gap),
        "soft→hard took {gap} µs\n{text}"
    );
    // Nothing was refused along the way.
    assert_eq!(lab.log("error.log"), "", "{}", lab.diagnostics());
}

#[test]
fn stopped_during_the_soft_reset_window_gives_dump() {
    // A wide window (hispeed 5000 ms), so a loaded machine cannot make the test flaky.
    let lab = Lab::start(5000);
    let [p1, _, p3] = three_monitors(&lab);
    let onlooker = lab.listener("labnode03", "127.0.0.1", p3);
    let reset = lab.reset_node02(p1, 11);
    lab.wait_log("reset.log", "SOFTRESET SEND", |l| {
        l.contains("] SOFTRESET labnode02 2 SEND")
    });

    let stopped = lab.node("stopped", &["--system", "labnode02", "--subsystem", "2"]);
    stopped
        .code(0)
        .stdout_has("STOPPED-ACK system=labnode02 subsystem=2");

    let run = reset.finish(RESET_TIMEOUT);
    run.code(0);
    assert_eq!(
        run.lines_with("RESET-REPLY", &["req=11", "result=DUMP"])
            .len(),
        1,
        "{run}"
    );
    assert!(
        !run.lines_with("ATTENTION", &["system=labnode02", "state=DUMP"])
            .is_empty(),
        "{run}"
    );
    let l = onlooker.finish(RESET_TIMEOUT);
    l.code(0);
    assert_eq!(
        l.lines_with("ATTENTION", &["system=labnode02", "state=DUMP"])
            .len(),
        1,
        "{l}"
    );

    assert_reset_log(
        &lab,
        &[
            format!("RM-RESET labnode02 2 RECV 127.0.0.1 {p1} 1 P"),
            format!("SOFTRESET labnode02 2 SEND 127.0.0.1 {p1} 1 P"),
            format!("RM-RESET labnode02 2 SEND 127.0.0.1 {p1} 1 P DUMP"),
            format!("ATTENTION labnode02 2 SEND 127.0.0.1 {p3} ---- P DUMP"),
        ],
    );
    assert_dumped_by_stop_notice(&lab, "the stopped sender");
}

#[test]
fn failed_requests_get_error_and_exit_1() {
    let lab = Lab::start(1000);
    let p1 = free_port();
    lab.register("labnode01", 1, p1, None);
    let run = lab.node(
        "reset",
        &[
            "--system",
            "labnode01",
            "--subsystem",
            "1",
            "--port",
            &p1.to_string(),
            "--bind",
            "127.0.0.1",
            "--target-system",
            "nosuch",
            "--target",
            "9",
            "--req",
            "3",
        ],
    );
    run.code(1)
        .stdout_has("RESET-REPLY req=3 target-system=nosuch target=9 result=ERROR")
        .stdout_has("reason=\"unknown target nosuch\"");
    assert!(
        run.lines_with("RESET-REPLY", &["result=ACCEPTED"])
            .is_empty()
    );
    assert_reset_log(
        &lab,
        &[
            format!("RM-RESET nosuch 9 RECV 127.0.0.1 {p1} 1 P"),
            format!("RM-RESET nosuch 9 SEND 127.0.0.1 {p1} 1 P ERROR"),
        ],
    );
}

/// Lines of error.log that mention `needle`.
fn error_lines(lab: &Lab, needle: &str) -> Vec<String> {
    lab.log("error.log")
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// A valid check from a socket of its own, answered: the pipeline has handled every
/// datagram queued before it (one socket, one thread, in order).
fn barrier(lab: &Lab) {
    let s = raw();
    let port = s.local_addr().unwrap().port();
    s.send_to(
        &codec::encode(
            &Envelope::new(check_msg("labnode03", 3, port)),
            &key("labnode03"),
        ),
        lab.reset_path,
    )
    .unwrap();
    assert!(
        matches!(recv_msg(&s), Message::CheckReply { .. }),
        "the daemon still answers"
    );
}

/// Waits until every error-log line queued so far is written: sends garbage from
/// 127.0.0.`n` (refusals are logged once per sender address and reason, so each `n` gives
/// one new line) and waits for its line; the log writer keeps order.
fn flush_error_log(lab: &Lab, n: u8) {
    let s = UdpSocket::bind(("127.0.0.".to_string() + &n.to_string(), 0)).expect("bind");
    // (With the magic: the kernel filter drops anything without it, unlogged.)
    s.send_to(b"HCN1\x07flush", lab.reset_path).unwrap();
    let from = format!("from 127.0.0.{n}:");
    lab.wait_log("error.log", &from, |l| l.contains(&from));
}

/// Waits until error.log has a line with `needle`, then asserts there is exactly one.
fn logged_once(lab: &Lab, needle: &str) {
    lab.wait_log("error.log", needle, |l| l.contains(needle));
    let lines = error_lines(lab, needle);
    assert_eq!(
        lines.len(),
        1,
        "{needle:?} logged {} times\n{}",
        lines.len(),
        lab.diagnostics()
    );
    assert!(lines[0].contains("(logged once)"), "{}", lines[0]);
}

#[test]
fn wrong_key_gets_no_reply_and_is_logged_once() {
    let lab = Lab::start(1000);
    let wrong = lab.write_key("wrong.key", "not-the-cluster-key-at-all");
    let run = haconn(&[
        "node",
        "check",
        "--connector",
        &lab.reset_path.to_string(),
        "--key-file",
        &wrong,
        "--system",
        "labnode01",
        "--subsystem",
        "1",
        "--wait",
        "2",
    ]);
    run.code(2).stderr_has("no check reply from");
    assert!(run.stdout.is_empty(), "{run}");

    // Many more, by hand: still no reply, still one log line.
    let s = raw();
    let bad = Key::Hmac(b"not-the-cluster-key-at-all".to_vec());
    for _ in 0..200 {
        let msg = check_msg("labnode01", 1, s.local_addr().unwrap().port());
        s.send_to(&codec::encode(&Envelope::new(msg), &bad), lab.reset_path)
            .unwrap();
    }
    // Unsigned datagrams on an authenticated path are refused the same way.
    haconn(&[
        "node",
        "check",
        "--connector",
        &lab.reset_path.to_string(),
        "--system",
        "labnode01",
        "--subsystem",
        "1",
        "--wait",
        "1",
    ])
    .code(2);
    barrier(&lab);
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        s.recv_from(&mut buf).is_err(),
        "a reply to a wrongly signed check"
    );
    flush_error_log(&lab, 21);
    logged_once(&lab, "bad authentication tag (wrong key?)");
    logged_once(&lab, "unsigned datagram on an authenticated reset path");
    assert!(lab.log("error.log").contains("127.0.0.1"));
}

#[test]
fn replayed_datagram_is_refused_and_logged_once() {
    let lab = Lab::start(1000);
    let s = raw();
    let port = s.local_addr().unwrap().port();
    let first = codec::encode(
        &Envelope::new(check_msg("labnode01", 1, port)),
        &key("labnode01"),
    );
    s.send_to(&first, lab.reset_path).unwrap();
    s.send_to(&first, lab.reset_path).unwrap();
    s.send_to(&first, lab.reset_path).unwrap();
    let fresh = codec::encode(
        &Envelope::new(check_msg("labnode02", 2, port)),
        &key("labnode02"),
    );
    s.send_to(&fresh, lab.reset_path).unwrap();
    // Handled in order: one reply to the first copy, then the fresh check's.
    let systems: Vec<String> = (0..2)
        .map(|_| match recv_msg(&s) {
            Message::CheckReply { system, .. } => system,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(systems, ["labnode01", "labnode02"]);
    logged_once(&lab, "nonce already seen (replayed datagram)");

    // Later replays, of another datagram too, add no line.
    s.send_to(&first, lab.reset_path).unwrap();
    s.send_to(&fresh, lab.reset_path).unwrap();
    barrier(&lab);
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(s.recv_from(&mut buf).is_err(), "a reply to a replay");
    flush_error_log(&lab, 22);
    logged_once(&lab, "nonce already seen (replayed datagram)");

    // A datagram from outside the 30 s window is stale, whatever its nonce.
    let mut old = Envelope::new(check_msg("labnode01", 1, port));
    old.ts -= 31_000;
    s.send_to(&codec::encode(&old, &key("labnode01")), lab.reset_path)
        .unwrap();
    logged_once(&lab, "timestamp outside the replay window");
}

/// The registered address of `system`, from `show hamonitor`.
fn registered_ip(lab: &Lab, system: &str) -> String {
    let monitors = lab.monitors();
    monitors["monitors"]
        .as_array()
        .expect("monitors array")
        .iter()
        .find(|r| r["system"] == system)
        .unwrap_or_else(|| panic!("{system} not registered: {monitors:#}"))["ip"]
        .as_str()
        .expect("ip")
        .to_string()
}

#[test]
fn captured_check_replayed_from_other_addresses_is_refused() {
    let lab = Lab::start(1000);
    let s = raw();
    let port = s.local_addr().unwrap().port();
    let captured = codec::encode(
        &Envelope::new(check_msg("labnode01", 1, port)),
        &key("labnode01"),
    );
    s.send_to(&captured, lab.reset_path).unwrap();
    assert!(matches!(recv_msg(&s), Message::CheckReply { .. }));
    assert_eq!(registered_ip(&lab, "labnode01"), "127.0.0.1");

    // The tag does not cover the source address: the same bytes from 20 others are the
    // same datagram, refused, and the monitor stays where it checked from.
    for n in 0..20u8 {
        let other = UdpSocket::bind(format!("127.0.1.{}:0", n + 1)).expect("bind");
        other.send_to(&captured, lab.reset_path).unwrap();
    }
    barrier(&lab);
    assert_eq!(registered_ip(&lab, "labnode01"), "127.0.0.1");
    lab.wait_log("error.log", "the refusal", |l| {
        l.contains("from 127.0.1.1:") && l.contains("nonce already seen (replayed datagram)")
    });
}

/// Reads reset-path messages on `sock` until a final `reset-reply` (bounded: each read
/// times out after 10 s, at most 20 messages).
fn final_reply(sock: &UdpSocket) -> codec::ResetResult {
    for _ in 0..20 {
        if let Message::ResetReply { result, .. } = recv_msg(sock)
            && result != codec::ResetResult::Accepted
        {
            return result;
        }
    }
    panic!("no final reset-reply in 20 messages");
}

#[test]
fn captured_reset_replayed_across_a_restart_does_not_reset_again() {
    let mut lab = Lab::start(1000);
    let requester = raw();
    let port = requester.local_addr().unwrap().port();
    let register = |lab: &Lab| {
        requester
            .send_to(
                &codec::encode(
                    &Envelope::new(check_msg("labnode01", 1, port)),
                    &key("labnode01"),
                ),
                lab.reset_path,
            )
            .unwrap();
        // (The attention of the first reset may still be queued before the reply.)
        assert!(
            (0..5).any(|_| matches!(recv_msg(&requester), Message::CheckReply { .. })),
            "no check-reply"
        );
        lab.register("labnode02", 2, free_port(), None);
    };
    register(&lab);
    let captured = codec::encode(
        &Envelope::new(Message::Reset {
            req: 7,
            system: "labnode01".into(),
            subsystem: 1,
            port,
            target_system: "labnode02".into(),
            target_subsystem: 2,
        }),
        &key("labnode01"),
    );
    requester.send_to(&captured, lab.reset_path).unwrap();
    assert_eq!(final_reply(&requester), codec::ResetResult::Dump);
    let soft_resets = |lab: &Lab| {
        lab.log("reset.log")
            .lines()
            .filter(|l| l.contains("] SOFTRESET labnode02 2 SEND"))
            .count()
    };
    assert_eq!(soft_resets(&lab), 1, "{}", lab.diagnostics());

    // Well inside the 30 s window, after a restart, with both monitors registered again.
    lab.restart();
    register(&lab);
    requester.send_to(&captured, lab.reset_path).unwrap();
    lab.wait_log("error.log", "the refusal", |l| {
        l.contains("timestamp not after the connector's high-water mark")
    });
    barrier(&lab);
    requester.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(
        requester.recv_from(&mut buf).is_err(),
        "a reply to the replayed reset"
    );
    assert_eq!(soft_resets(&lab), 1, "{}", lab.diagnostics());
}

/// A signed datagram of exactly the given JSON payload (no padding), as a client that
/// does not pad would send it.
fn unpadded(json: &str) -> Vec<u8> {
    use hmac::{Hmac, KeyInit, Mac};
    let mut out = b"HCN1\x01".to_vec();
    out.extend_from_slice(json.as_bytes());
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(KEY.as_bytes()).unwrap();
    m.update(&out);
    out.extend_from_slice(&m.finalize().into_bytes());
    out
}

/// The length of the next datagram on `sock` within 2 s, if one comes.
fn reply_len(sock: &UdpSocket) -> Option<usize> {
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv_from(&mut buf).ok().map(|(n, _)| n)
}

#[test]
fn replies_are_never_longer_than_their_request() {
    // Shared mode: a check for a name the spec does not hold is verified (with per-node
    // keys it has no key and is dropped unanswered) and answered "unknown system".
    let lab = Lab::start_with(1000, shared);
    let s = raw();
    let port = s.local_addr().unwrap().port();
    // A 1394-byte check for a long unknown name: its reply would echo the name and add
    // the rest, longer than the check even without its reason; it is not sent.
    let long_check = |len: usize| {
        let mut env = Envelope::new(check_msg(&"a".repeat(len), 1, port));
        env.nonce = 1 << 63;
        codec::encode(&env, &cluster_key())
    };
    let name_len = 1394 - (long_check(1000).len() - 1000);
    let request = long_check(name_len);
    assert_eq!(request.len(), 1394);
    s.send_to(&request, lab.reset_path).unwrap();
    if let Some(n) = reply_len(&s) {
        panic!("a {n}-byte reply to a 1394-byte check");
    }
    lab.wait_log("error.log", "the withheld reply", |l| {
        l.contains("reply withheld: longer than the 1394-byte request")
    });

    // A check a little shorter than its full reply: the reply's reason is cut to fit.
    let json = |nonce: u32, pad: usize| {
        format!(
            r#"{{"v":1,"ts":{},"nonce":{nonce},"type":"check","system":"labnode01","subsystem":1,"port":{port}}}{}"#,
            codec::now_ms(),
            " ".repeat(pad)
        )
    };
    s.send_to(&unpadded(&json(1, 400)), lab.reset_path).unwrap();
    let full = reply_len(&s).expect("the full reply");
    let short = unpadded(&json(2, 0));
    let request = unpadded(&json(2, full - 10 - short.len()));
    assert_eq!(request.len(), full - 10);
    s.send_to(&request, lab.reset_path).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).expect("the cut reply");
    assert!(
        n <= request.len(),
        "a {n}-byte reply to a {}-byte check",
        request.len()
    );
    match codec::decode(&buf[..n], &cluster_key())
        .expect("a valid reply")
        .msg
    {
        Message::CheckReply {
            reason: Some(r), ..
        } => assert!(r.ends_with("..."), "{r:?}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_flood_from_one_address_does_not_stop_another_monitors_reset() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = Lab::start(1000);
    let [p1, _, _] = three_monitors(&lab);
    // Junk and unsigned checks for unknown systems from 127.0.0.99, as fast as one
    // thread sends them, until the reset is done (at most 60 s).
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        let to = lab.reset_path;
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.99:0").expect("bind");
            let check = codec::encode(&Envelope::new(check_msg("nosuch", 9, 9)), &Key::None);
            // Junk that looks signed passes the kernel filter and meets the bucket.
            let mut junk = [0x5au8; 200];
            junk[..5].copy_from_slice(b"HCN1\x01");
            let until = std::time::Instant::now() + Duration::from_secs(60);
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                for _ in 0..100 {
                    let _ = s.send_to(
                        if sent.is_multiple_of(2) {
                            &junk
                        } else {
                            &check
                        },
                        to,
                    );
                    sent += 1;
                }
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let run = lab.reset_node02(p1, 11).finish(RESET_TIMEOUT);
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flood thread");
    run.code(0);
    assert_eq!(
        run.lines_with("RESET-REPLY", &["req=11", "result=DUMP"])
            .len(),
        1,
        "{run}"
    );
    assert!(
        took < Duration::from_secs(10),
        "the reset took {took:?} under the flood"
    );
    // The flood was held to its source's rate before any parsing.
    let status = lab.status();
    let c = &status["resetPath"];
    assert!(
        c["rateLimited"].as_u64().unwrap_or(0) > 0,
        "{sent} datagrams sent, none rate-limited: {c:#}"
    );
    assert!(c["receiveBuffer"].as_u64().unwrap_or(0) > 0, "{c:#}");
}

#[test]
fn malformed_datagrams_are_ignored_and_the_daemon_still_answers() {
    let lab = Lab::start(1000);
    let s = raw();
    let port = s.local_addr().unwrap().port();
    let valid = codec::encode(
        &Envelope::new(check_msg("labnode01", 1, port)),
        &key("labnode01"),
    );
    let signed = |payload: &[u8]| {
        use hmac::{KeyInit, Mac};
        let mut out = b"HCN1\x01".to_vec();
        out.extend_from_slice(payload);
        let key = resetpath_support::node_key("labnode01");
        let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.as_bytes()).unwrap();
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
        out
    };
    let now = codec::now_ms();
    let mut oversize = b"HCN1\x01".to_vec();
    oversize.resize(MAX_DATAGRAM + 200, b'x');
    let datagrams: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"garbage".to_vec(),
        b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        vec![0xff; 64],
        b"HCN1".to_vec(),
        b"HCN1\x07{}".to_vec(),
        b"HCN1\x01short".to_vec(),
        valid[..valid.len() / 2].to_vec(),
        valid[..valid.len() - 1].to_vec(),
        oversize,
        signed(b"not json"),
        signed(format!(r#"{{"v":1,"ts":{now},"nonce":1,"type":"nope"}}"#).as_bytes()),
        signed(format!(r#"{{"v":2,"ts":{now},"nonce":2,"type":"stopped","system":"labnode01","subsystem":1}}"#).as_bytes()),
        signed(
            format!(r#"{{"v":1,"ts":{now},"nonce":3,"type":"stopped","system":"labnode01","subsystem":1,"extra":true}}"#)
                .as_bytes(),
        ),
        // A message only haconn sends (a captured reply to labnode01, signed with its key).
        codec::encode(
            &Envelope::new(Message::StoppedAck {
                system: "labnode01".into(),
                subsystem: 1,
            }),
            &key("labnode01"),
        ),
    ];
    for d in &datagrams {
        s.send_to(d, lab.reset_path).unwrap();
    }
    // The fence_kdump port takes only its 8-byte message.
    for d in [
        &b"garbage"[..],
        &[0x40, 0x2a, 0x30, 0x1b, 0x02, 0, 0, 0],
        &[0x40, 0x2a, 0x30],
    ] {
        s.send_to(d, lab.fence_kdump).unwrap();
    }
    s.send_to(&valid, lab.reset_path).unwrap();
    match recv_msg(&s) {
        Message::CheckReply {
            system, resettable, ..
        } => assert!(system == "labnode01" && resettable),
        other => panic!("unexpected {other:?}"),
    }
    lab.node("check", &["--system", "labnode02", "--subsystem", "2"])
        .code(0);
    for reason in [
        "not a haconn datagram",
        "unknown authentication mode 7",
        "datagram longer than 1400 bytes",
        "bad authentication tag (wrong key?)",
        "signed by no system of the spec",
        "malformed payload",
        "unsupported protocol version 2",
        // (A message only haconn sends names no sender: with per-node keys it is refused
        // as "signed by no system of the spec", before its type is looked at.)
        "not a fence_kdump message",
    ] {
        lab.wait_log("error.log", reason, |l| l.contains(reason));
    }
    // One line per reason, however many datagrams gave it.
    flush_error_log(&lab, 23);
    let text = lab.log("error.log");
    let lines: Vec<&str> = text.lines().collect();
    let mut bodies: Vec<&str> = lines
        .iter()
        .map(|l| l.split_once("] ").map_or(*l, |(_, b)| b))
        .collect();
    bodies.sort();
    let n = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), n, "a refusal logged twice:\n{text}");
}

/// Runs a reset of labnode02 and, during its soft-reset window, sends `notify` from
/// 127.0.0.1 to the fence_kdump listener; checks the reset ended as a dump.
fn fence_kdump_gives_dump(notify: impl FnOnce(&Lab)) {
    let lab = Lab::start(5000);
    let [p1, _, p3] = three_monitors(&lab);
    let onlooker = lab.listener("labnode03", "127.0.0.1", p3);
    let reset = lab.reset_node02(p1, 21);
    lab.wait_log("reset.log", "SOFTRESET SEND", |l| {
        l.contains("] SOFTRESET labnode02 2 SEND")
    });
    notify(&lab);
    let run = reset.finish(RESET_TIMEOUT);
    run.code(0);
    assert_eq!(
        run.lines_with("RESET-REPLY", &["req=21", "result=DUMP"])
            .len(),
        1,
        "{run}"
    );
    let l = onlooker.finish(RESET_TIMEOUT);
    l.code(0);
    assert_eq!(
        l.lines_with("ATTENTION", &["system=labnode02", "state=DUMP"])
            .len(),
        1,
        "{l}"
    );
    // The last lines of the reset (per-node keys: no broadcast copy): every line before
    // them is written too.
    assert_reset_log(
        &lab,
        &[
            format!("ATTENTION labnode02 2 SEND 127.0.0.1 {p1} ---- P DUMP"),
            format!("ATTENTION labnode02 2 SEND 127.0.0.1 {p3} ---- P DUMP"),
        ],
    );
    assert_dumped_by_stop_notice(&lab, "the fence_kdump sender");
    assert_eq!(lab.log("error.log"), "", "{}", lab.diagnostics());
}

/// Where Debian and RHEL-like systems install `fence_kdump_send`.
fn fence_kdump_send() -> Option<&'static Path> {
    [
        "/usr/libexec/fence-agents/fence_kdump_send",
        "/usr/libexec/fence_kdump_send",
        "/usr/sbin/fence_kdump_send",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists())
}

#[test]
fn real_fence_kdump_send_is_a_stopped_notification() {
    let Some(bin) = fence_kdump_send() else {
        // scripts/test installs fence-agents; CI must not pass without the real peer.
        assert!(
            std::env::var_os("CI").is_none(),
            "fence_kdump_send is not installed (Debian package fence-agents)"
        );
        eprintln!("SKIPPED: fence_kdump_send is not installed (apt-get install fence-agents)");
        return;
    };
    fence_kdump_gives_dump(|lab| {
        let out = std::process::Command::new(bin)
            .args([
                "-p",
                &lab.fence_kdump.port().to_string(),
                "-f",
                "ipv4",
                "-c",
                "1",
                "127.0.0.1",
            ])
            .output()
            .expect("run fence_kdump_send");
        assert!(out.status.success(), "fence_kdump_send failed: {out:?}");
    });
}

#[test]
fn fence_kdump_message_from_a_big_endian_node_is_accepted() {
    fence_kdump_gives_dump(|lab| {
        raw()
            .send_to(&fence_kdump::encode(ByteOrder::Big), lab.fence_kdump)
            .unwrap();
    });
}

/// Runs contrib/kdump/kdump_pre with a node.conf holding `settings` (written in the lab).
fn kdump_pre(lab: &Lab, settings: &str) -> resetpath_support::Run {
    let conf = lab.path("node.conf");
    std::fs::write(&conf, settings).expect("write node.conf");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/kdump/kdump_pre");
    let mut sh = std::process::Command::new("sh");
    sh.env("HACONN_NODE_CONF", &conf);
    crate::support::run::execute(sh, vec![script.into()], Vec::new())
}

#[test]
fn kdump_pre_hook_sends_stopped_with_haconn() {
    fence_kdump_gives_dump(|lab| {
        let settings = format!(
            "HACONN_CONNECTOR={}\nHACONN_SYSTEM=labnode02\nHACONN_SUBSYSTEM=2\n\
             HACONN_KEY_FILE={}\nHACONN_WAIT=5\nHACONN_BIN={}\n\
             HACONN_FENCE_KDUMP_SEND=/nonexistent/fence_kdump_send\n",
            lab.reset_path,
            lab.key_file_for("labnode02"),
            env!("CARGO_BIN_EXE_haconn"),
        );
        kdump_pre(lab, &settings)
            .code(0)
            .stdout_has("STOPPED-ACK system=labnode02 subsystem=2");
    });
}

#[test]
fn kdump_pre_hook_never_fails_the_dump() {
    let lab = Lab::start(1000);
    // No configuration, an incomplete one, nothing answering: exit 0 each time, and say why.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/kdump/kdump_pre");
    let mut sh = std::process::Command::new("sh");
    sh.env("HACONN_NODE_CONF", lab.path("missing.conf"));
    crate::support::run::execute(sh, vec![script.into()], Vec::new())
        .code(0)
        .stderr_has("cannot read");
    kdump_pre(&lab, "HACONN_SYSTEM=labnode02\n")
        .code(0)
        .stderr_has("must set HACONN_CONNECTOR");
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    kdump_pre(
        &lab,
        &format!(
            "HACONN_CONNECTOR={}\nHACONN_SYSTEM=labnode02\nHACONN_SUBSYSTEM=2\n\
             HACONN_WAIT=1\nHACONN_BIN={}\nHACONN_FENCE_KDUMP_SEND=/nonexistent/x\n",
            silent.local_addr().unwrap(),
            env!("CARGO_BIN_EXE_haconn"),
        ),
    )
    .code(0)
    .stderr_has("no acknowledgement")
    .stderr_has("neither haconn nor fence_kdump_send");
}

#[test]
fn kdump_pre_hook_falls_back_to_fence_kdump_send() {
    let Some(bin) = fence_kdump_send() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "fence_kdump_send is not installed (Debian package fence-agents)"
        );
        eprintln!("SKIPPED: fence_kdump_send is not installed (apt-get install fence-agents)");
        return;
    };
    fence_kdump_gives_dump(|lab| {
        let settings = format!(
            "HACONN_CONNECTOR={}\nHACONN_SYSTEM=labnode02\nHACONN_SUBSYSTEM=2\n\
             HACONN_BIN=/nonexistent/haconn\nHACONN_FENCE_KDUMP_SEND={}\n\
             HACONN_FENCE_KDUMP_PORT={}\nHACONN_FENCE_KDUMP_COUNT=1\n",
            lab.reset_path,
            bin.display(),
            lab.fence_kdump.port(),
        );
        kdump_pre(lab, &settings).code(0);
    });
}

/// `haconn node reset` with every argument given: `system`/`subsystem` as the requester
/// claims, from `bind`, of `target`; waits for the answer.
fn reset_as(
    lab: &Lab,
    bind: &str,
    system: &str,
    subsystem: u32,
    target: (&str, u32),
    req: u32,
) -> resetpath_support::Run {
    let port = free_port().to_string();
    lab.node(
        "reset",
        &[
            "--system",
            system,
            "--subsystem",
            &subsystem.to_string(),
            "--port",
            &port,
            "--bind",
            bind,
            "--target-system",
            target.0,
            "--target",
            &target.1.to_string(),
            "--req",
            &req.to_string(),
            "--wait",
            "10",
        ],
    )
}

/// `haconn node check` of `system` from `bind`.
fn check_from(lab: &Lab, bind: &str, system: &str, subsystem: u32) {
    let port = free_port().to_string();
    let run = lab.node(
        "check",
        &[
            "--system",
            system,
            "--subsystem",
            &subsystem.to_string(),
            "--port",
            &port,
            "--bind",
            bind,
        ],
    );
    assert!(run.stdout.contains("CHECK-REPLY"), "{run}");
}

/// Issue 11, tried as a hostile node would against the daemon: a node being reset gets
/// nothing reset — not under its own name, not under another registered name, not under
/// a name it registers itself from its address — and an unregistered requester gets
/// ERROR. Its pair partner is never touched.
#[test]
fn a_node_being_reset_cannot_get_its_partner_reset_under_any_name() {
    // hispeed 5000: node02's reset (no dump agent) stays in its soft-reset window.
    let lab = Lab::start(5000);
    check_from(&lab, "127.0.0.1", "labnode01", 1);
    check_from(&lab, "127.0.20.2", "labnode02", 2);
    check_from(&lab, "127.0.20.3", "labnode03", 3);
    let reset = lab.reset_node02(free_port(), 11);
    lab.wait_log("reset.log", "SOFTRESET SEND", |l| {
        l.contains("] SOFTRESET labnode02 2 SEND")
    });

    // As itself.
    let run = reset_as(&lab, "127.0.20.2", "labnode02", 2, ("labnode01", 1), 1);
    assert!(run.stdout.contains("result=FAIL"), "{run}");
    // As labnode03, from its own (labnode02's) address.
    let run = reset_as(&lab, "127.0.20.2", "labnode03", 3, ("labnode01", 1), 2);
    assert!(run.stdout.contains("result=ERROR"), "{run}");
    assert!(run.stdout.contains("registered at 127.0.20.3"), "{run}");
    // After registering labnode03 at its own address first.
    check_from(&lab, "127.0.20.2", "labnode03", 3);
    let run = reset_as(&lab, "127.0.20.2", "labnode03", 3, ("labnode01", 1), 3);
    assert!(run.stdout.contains("result=FAIL"), "{run}");
    assert!(
        run.stdout.contains("labnode02, which is being reset"),
        "{run}"
    );
    // A name the spec does not hold: with per-node keys it has no key, and 127.0.20.4 is
    // no monitor's address: dropped unanswered.
    let run = reset_as(&lab, "127.0.20.4", "labnode04", 4, ("labnode01", 1), 4);
    run.code(1);
    assert!(!run.stdout.contains("RESET-REPLY"), "{run}");

    reset.finish(RESET_TIMEOUT).code(0);
    let bodies = lab.log_bodies("reset.log");
    assert!(
        !bodies
            .iter()
            .any(|l| l.starts_with("SOFTRESET labnode01") || l.starts_with("HARDRESET labnode01")),
        "labnode01 was touched\n{}",
        lab.diagnostics()
    );
}

/// Issue 11 items 1 and 2 against the daemon: after a reset, the same request number once
/// the target checked in again, and a new request number without any check-in, both act
/// on the hardware again (a second NMI); neither is answered from memory.
#[test]
fn a_request_after_a_reset_acts_again_whatever_its_number() {
    let lab = Lab::start(1000);
    check_from(&lab, "127.0.0.1", "labnode01", 1);
    check_from(&lab, "127.0.20.2", "labnode02", 2);
    let nmis = |lab: &Lab| {
        lab.log_bodies("reset.log")
            .iter()
            .filter(|l| l.starts_with("SOFTRESET labnode02 2 SEND"))
            .count()
    };
    let run = reset_as(&lab, "127.0.0.1", "labnode01", 1, ("labnode02", 2), 41);
    assert!(run.stdout.contains("result=DUMP"), "{run}");
    assert_eq!(nmis(&lab), 1);
    // labnode02 comes back; a new failure; the requester's numbering restarted.
    check_from(&lab, "127.0.20.2", "labnode02", 2);
    let run = reset_as(&lab, "127.0.0.1", "labnode01", 1, ("labnode02", 2), 41);
    assert!(run.stdout.contains("result=ACCEPTED"), "{run}");
    assert!(run.stdout.contains("result=DUMP"), "{run}");
    assert_eq!(nmis(&lab), 2, "{}", lab.diagnostics());
    // No check-in this time: a new request still acts.
    let run = reset_as(&lab, "127.0.0.1", "labnode01", 1, ("labnode02", 2), 42);
    assert!(run.stdout.contains("result=ACCEPTED"), "{run}");
    assert_eq!(nmis(&lab), 3, "{}", lab.diagnostics());
}

// --- per-node keys and reply addresses (issue 12 items 3 and 5) -----------------------

/// Waits up to 2 s for a datagram on `sock`; `None` when none came.
fn maybe_recv(sock: &UdpSocket) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

/// A node holding its own key cannot sign as another: a check and a reset claiming
/// labnode01, signed with labnode02's key, are refused (no reply, no registration, no
/// reset), while labnode01's own key is accepted and its reply is signed with it.
#[test]
fn a_datagram_for_one_system_signed_with_anothers_key_is_refused() {
    let lab = Lab::start(1000);
    lab.register("labnode02", 2, free_port(), None);
    let s = raw();
    let port = s.local_addr().unwrap().port();
    let as_01 = |key: &Key| codec::encode(&Envelope::new(check_msg("labnode01", 1, port)), key);
    s.send_to(&as_01(&key("labnode02")), lab.reset_path)
        .unwrap();
    assert!(
        maybe_recv(&s).is_none(),
        "a reply to a check signed as another"
    );
    let monitors = lab.monitors();
    assert!(
        monitors["monitors"]
            .as_array()
            .expect("monitors")
            .iter()
            .any(|r| r["system"] == "labnode01" && r["ip"].is_null()),
        "registered with another node's key: {monitors:#}"
    );
    // A reset claiming labnode01 (who never checked in), signed with labnode02's key.
    let reset = Message::Reset {
        req: 5,
        system: "labnode01".into(),
        subsystem: 1,
        port,
        target_system: "labnode02".into(),
        target_subsystem: 2,
    };
    s.send_to(
        &codec::encode(&Envelope::new(reset), &key("labnode02")),
        lab.reset_path,
    )
    .unwrap();
    // The cluster key is no node's key either.
    s.send_to(&as_01(&cluster_key()), lab.reset_path).unwrap();
    assert!(maybe_recv(&s).is_none(), "a reply to a forged datagram");
    lab.wait_log("error.log", "the refusal", |l| {
        l.contains("bad authentication tag (wrong key?)")
    });
    // labnode01's own key: answered, and the reply verifies with that key only.
    s.send_to(&as_01(&key("labnode01")), lab.reset_path)
        .unwrap();
    let reply = maybe_recv(&s).expect("a reply to labnode01's own check");
    assert!(matches!(
        codec::decode(&reply, &key("labnode01")).map(|e| e.msg),
        Ok(Message::CheckReply { .. })
    ));
    assert!(codec::decode(&reply, &key("labnode02")).is_err());
    assert!(codec::decode(&reply, &cluster_key()).is_err());
    let status = lab.status();
    assert!(
        status["resetPath"]["rejectedAuth"].as_u64().unwrap_or(0) >= 3,
        "{status:#}"
    );
    assert!(
        !lab.log("reset.log").contains("RM-RESET labnode02"),
        "{}",
        lab.diagnostics()
    );
}

/// What `haconn node key` prints is a node's key file: labnode01 and labnode02 check in
/// and labnode01 resets labnode02 with the printed keys, through the real node tools.
#[test]
fn node_key_output_works_as_a_nodes_key_file_in_a_reset() {
    let lab = Lab::start(1000);
    let spec = lab.path("cluster.yaml").display().to_string();
    let run = haconn(&["node", "key", "--spec", &spec, "--system", "labnode01"]);
    run.code(0);
    assert_eq!(
        run.stdout,
        format!("{}\n", resetpath_support::node_key("labnode01"))
    );
    let k1 = lab.write_key("printed01.key", run.stdout.trim_end());
    // --out writes the same, private.
    let k2 = lab.path("printed02.key");
    haconn(&[
        "node",
        "key",
        "--spec",
        &spec,
        "--system",
        "labnode02",
        "--out",
        &k2.display().to_string(),
    ])
    .code(0);
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&k2).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let k2 = k2.display().to_string();
    let connector = lab.reset_path.to_string();
    let [p1, p2] = free_ports();
    for (system, sub, port, key) in [("labnode01", "1", p1, &k1), ("labnode02", "2", p2, &k2)] {
        haconn(&[
            "node",
            "check",
            "--connector",
            &connector,
            "--key-file",
            key,
            "--system",
            system,
            "--subsystem",
            sub,
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .code(0)
        .stdout_has("resettable=yes");
    }
    let run = haconn(&[
        "node",
        "reset",
        "--connector",
        &connector,
        "--key-file",
        &k1,
        "--system",
        "labnode01",
        "--subsystem",
        "1",
        "--port",
        &p1.to_string(),
        "--bind",
        "127.0.0.1",
        "--target-system",
        "labnode02",
        "--target",
        "2",
        "--req",
        "31",
    ]);
    run.code(0)
        .stdout_has("result=ACCEPTED")
        .stdout_has("result=DUMP");
    // labnode02's key does not sign labnode01's request.
    haconn(&[
        "node",
        "check",
        "--connector",
        &connector,
        "--key-file",
        &k2,
        "--system",
        "labnode01",
        "--subsystem",
        "1",
        "--wait",
        "1",
    ])
    .code(2);
    // No key for a name the spec does not hold, and none printed in shared mode.
    haconn(&["node", "key", "--spec", &spec, "--system", "nosuch"])
        .code(1)
        .stderr_has("no system named nosuch");
    let shared_spec = lab.path("shared.yaml");
    std::fs::write(
        &shared_spec,
        shared(std::fs::read_to_string(&spec).unwrap()),
    )
    .unwrap();
    let run = haconn(&[
        "node",
        "key",
        "--spec",
        &shared_spec.display().to_string(),
        "--system",
        "labnode01",
    ]);
    run.code(1).stderr_has("keyMode: shared");
    assert!(run.stdout.is_empty(), "{run}");
}

/// Per-node keys: no broadcast copy of the attention (no key is every node's); each
/// registered monitor gets its unicast copy, signed with its own key.
#[test]
fn per_node_attention_is_unicast_to_each_monitor_with_its_key() {
    let lab = Lab::start(1000);
    let [p1, _, p3] = three_monitors(&lab);
    let onlooker = lab.listener("labnode03", "127.0.0.1", p3);
    lab.reset_node02(p1, 8).finish(RESET_TIMEOUT).code(0);
    let l = onlooker.finish(RESET_TIMEOUT);
    l.code(0);
    assert_eq!(
        l.lines_with("ATTENTION", &["system=labnode02", "state=REBOOT"])
            .len(),
        1,
        "{l}"
    );
    assert_reset_log(
        &lab,
        &[format!(
            "ATTENTION labnode02 2 SEND 127.0.0.1 {p3} ---- P REBOOT"
        )],
    );
    assert!(
        !lab.log("reset.log").contains("SEND 127.255.255.255"),
        "{}",
        lab.diagnostics()
    );
}

/// Replies go only to registered monitors' addresses (issue 12 item 5): a refused reset
/// and a stop notice from an address where no monitor is registered get nothing back
/// (counted, and the refusal logged); the same refusal from a registered address is
/// answered.
#[test]
fn a_refusal_to_a_foreign_source_is_not_sent() {
    let lab = Lab::start(1000);
    check_from(&lab, "127.0.0.1", "labnode01", 1);
    let reset_from = |bind: &str, req: u32| {
        let s = UdpSocket::bind((bind, 0)).expect("bind");
        let port = s.local_addr().unwrap().port();
        let msg = Message::Reset {
            req,
            system: "labnode01".into(),
            subsystem: 1,
            port,
            target_system: "nosuch".into(),
            target_subsystem: 9,
        };
        s.send_to(
            &codec::encode(&Envelope::new(msg), &key("labnode01")),
            lab.reset_path,
        )
        .unwrap();
        s
    };
    // From labnode01's registered address: ERROR (unknown target), answered.
    let s = reset_from("127.0.0.1", 1);
    match maybe_recv(&s).map(|b| codec::decode(&b, &key("labnode01")).map(|e| e.msg)) {
        Some(Ok(Message::ResetReply { result, .. })) => {
            assert_eq!(result, codec::ResetResult::Error)
        }
        other => panic!("no refusal to the registered address: {other:?}"),
    }
    // From 127.0.3.3, where nobody is registered: refused, logged, not sent.
    let s = reset_from("127.0.3.3", 2);
    assert!(
        maybe_recv(&s).is_none(),
        "a refusal sent to a foreign source"
    );
    lab.wait_log("error.log", "the refusal", |l| {
        l.contains("reset request 2 of labnode01")
            && l.contains("registered at 127.0.0.1, the request came from 127.0.3.3")
    });
    // A stop notice from there is not acknowledged either.
    let s = UdpSocket::bind("127.0.3.3:0").expect("bind");
    let stopped = Message::Stopped {
        system: "labnode01".into(),
        subsystem: 1,
    };
    s.send_to(
        &codec::encode(&Envelope::new(stopped), &key("labnode01")),
        lab.reset_path,
    )
    .unwrap();
    assert!(
        maybe_recv(&s).is_none(),
        "a stop acknowledgement to a foreign source"
    );
    barrier(&lab);
    let status = lab.status();
    assert_eq!(
        status["resetPath"]["repliesUnregistered"].as_u64(),
        Some(2),
        "{status:#}"
    );
}
