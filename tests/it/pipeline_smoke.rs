//! The reset path end to end in one process: real UDP on 127.0.0.1, simulated hardware.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use haconn::backend::Backends;
use haconn::backend::sim::{DeviceId, Sim, SimEvent};
use haconn::log::LogSink;
use haconn::pipeline::{Pipeline, PipelineConfig};
use haconn::resetpath::codec::{self, AttentionState, Envelope, Key, Message, ResetResult};
use haconn::spec::{CheckOptions, check_bytes};

const SPEC: &str = r#"
apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: {key: "0123456789abcdef0123"}}
hispeed: 1000
managementServers:
  - name: ms01
    bmc: {address: 127.0.0.2, port: 16230, username: admin, password: labpassw0rd}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - {name: node01, bmc: {address: 127.0.0.11, username: admin, password: labpassw0rd}, cluster: true}
  - {name: node02, bmc: {address: 127.0.0.12, username: admin, password: labpassw0rd}, cluster: true}
"#;

/// `system`'s own key (per-node keys, the spec's default).
fn key(system: &str) -> Key {
    let k = haconn::resetpath::keys::node_key(b"0123456789abcdef0123", system);
    Key::Hmac(k.into_bytes())
}

fn send(sock: &UdpSocket, to: SocketAddr, msg: Message) {
    let key = key(msg.sender().expect("a client message"));
    sock.send_to(&codec::encode(&Envelope::new(msg), &key), to)
        .unwrap();
}

/// The next message, signed with node01's or node02's key.
fn recv(sock: &UdpSocket) -> Message {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a reply");
    ["node01", "node02"]
        .iter()
        .find_map(|s| codec::decode(&buf[..n], &key(s)).ok())
        .expect("signed with a node's key")
        .msg
}

fn port(sock: &UdpSocket) -> u16 {
    sock.local_addr().unwrap().port()
}

struct Lab {
    sim: Arc<Sim>,
    addr: SocketAddr,
    m1: UdpSocket,
    m2: UdpSocket,
    _pipeline: Pipeline,
}

/// A pipeline on 127.0.0.1 with simulated hardware and two registered monitors of one pair.
fn lab() -> Lab {
    lab_watching(None)
}

/// The same, with the hardware watch polling every `watch`.
fn lab_watching(watch: Option<Duration>) -> Lab {
    let spec = check_bytes(SPEC.as_bytes(), CheckOptions::default())
        .spec
        .unwrap();
    let sim = Arc::new(Sim::default());
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let config = PipelineConfig {
        backends: Backends {
            bmc: sim.clone(),
            pdu: sim.clone(),
            hypervisor: sim.clone(),
        },
        reset_path: Some(server),
        fence_kdump: None,
        reset_log: LogSink::discard(),
        error_log: LogSink::discard(),
        monitor_expiry: Duration::from_secs(60),
        watch,
        state_dir: None,
        standing_by: false,
    };
    let (pipeline, _thread) = Pipeline::start(spec, config).unwrap();
    let m1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let m2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (m, system, subsystem) in [(&m1, "node01", 1), (&m2, "node02", 2)] {
        m.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let check = Message::Check {
            system: system.into(),
            subsystem,
            port: port(m),
            pair: Some(1),
        };
        send(m, addr, check);
        assert!(matches!(
            recv(m),
            Message::CheckReply {
                resettable: true,
                ..
            }
        ));
    }
    Lab {
        sim,
        addr,
        m1,
        m2,
        _pipeline: pipeline,
    }
}

fn reset(
    from: &UdpSocket,
    req: u32,
    system: &str,
    subsystem: u32,
    target: &str,
    target_subsystem: u32,
) -> Message {
    Message::Reset {
        req,
        system: system.into(),
        subsystem,
        port: port(from),
        target_system: target.into(),
        target_subsystem,
    }
}

fn count(sim: &Sim, f: impl Fn(&SimEvent) -> bool) -> usize {
    sim.calls().iter().filter(|(_, e)| f(e)).count()
}

/// Reads `sock` until the final reply to `req`, returning it and the attentions seen.
fn until_final(sock: &UdpSocket, req: u32) -> (ResetResult, Vec<AttentionState>) {
    let mut attentions = Vec::new();
    loop {
        match recv(sock) {
            Message::ResetReply { req: r, result, .. }
                if r == req && result != ResetResult::Accepted =>
            {
                return (result, attentions);
            }
            Message::ResetReply {
                result: ResetResult::Accepted,
                ..
            } => {}
            Message::Attention { state, .. } => attentions.push(state),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn check_then_reset_with_dump_timeout_and_hard_reset() {
    let l = lab();
    // node01 asks for node02's reset; node02's dump agent never answers: hard reset after 1000 ms.
    send(&l.m1, l.addr, reset(&l.m1, 7, "node01", 1, "node02", 2));
    assert!(matches!(
        recv(&l.m1),
        Message::ResetReply {
            req: 7,
            result: ResetResult::Accepted,
            ..
        }
    ));
    // The crossing request from node02 is refused: it is being reset.
    send(&l.m2, l.addr, reset(&l.m2, 9, "node02", 2, "node01", 1));
    assert!(
        matches!(
            recv(&l.m2),
            Message::ResetReply {
                req: 9,
                result: ResetResult::Fail,
                ..
            }
        ),
        "crossing reset refused"
    );
    let (result, attentions) = until_final(&l.m1, 7);
    assert_eq!(result, ResetResult::Dump);
    let attentions = if attentions.is_empty() {
        match recv(&l.m1) {
            Message::Attention { state, .. } => vec![state],
            other => panic!("unexpected {other:?}"),
        }
    } else {
        attentions
    };
    assert_eq!(attentions, vec![AttentionState::Reboot]);
    let node02 = DeviceId::Bmc("127.0.0.12".parse().unwrap());
    let node01 = DeviceId::Bmc("127.0.0.11".parse().unwrap());
    assert_eq!(count(&l.sim, |e| *e == SimEvent::Nmi(node02.clone())), 1);
    assert_eq!(
        count(&l.sim, |e| *e == SimEvent::HardReset(node02.clone())),
        1
    );
    assert_eq!(
        count(&l.sim, |e| *e == SimEvent::Nmi(node01.clone())),
        0,
        "node01 never touched"
    );
}

#[test]
fn a_retransmitted_request_gets_the_same_answer_and_no_second_reset() {
    let l = lab();
    send(&l.m1, l.addr, reset(&l.m1, 7, "node01", 1, "node02", 2));
    assert!(matches!(
        recv(&l.m1),
        Message::ResetReply {
            req: 7,
            result: ResetResult::Accepted,
            ..
        }
    ));
    // While it runs, and after it ended, the same request number is answered, not run again.
    send(&l.m1, l.addr, reset(&l.m1, 7, "node01", 1, "node02", 2));
    assert!(matches!(
        recv(&l.m1),
        Message::ResetReply {
            req: 7,
            result: ResetResult::Accepted,
            ..
        }
    ));
    assert_eq!(until_final(&l.m1, 7).0, ResetResult::Dump);
    send(&l.m1, l.addr, reset(&l.m1, 7, "node01", 1, "node02", 2));
    assert_eq!(until_final(&l.m1, 7).0, ResetResult::Dump);
    assert_eq!(
        count(&l.sim, |e| matches!(e, SimEvent::Nmi(_))),
        1,
        "one reset only"
    );
}

#[test]
fn a_stop_notification_before_the_request_changes_nothing() {
    let l = lab();
    // node02's dump agent reports a stop before anyone asked for its reset (a stale or
    // forged notice): acknowledged, and nothing more. The reset that follows must prove
    // itself: with no stop after its NMI, the hard reset is what stops node02.
    send(
        &l.m2,
        l.addr,
        Message::Stopped {
            system: "node02".into(),
            subsystem: 2,
        },
    );
    assert!(matches!(recv(&l.m2), Message::StoppedAck { .. }));
    send(&l.m1, l.addr, reset(&l.m1, 3, "node01", 1, "node02", 2));
    let (result, attentions) = until_final(&l.m1, 3);
    assert_eq!(result, ResetResult::Dump);
    assert_eq!(
        count(&l.sim, |e| matches!(e, SimEvent::HardReset(_))),
        1,
        "the hard reset followed: the early notice did not count"
    );
    let mut seen = attentions;
    if seen.is_empty()
        && let Message::Attention { state, .. } = recv(&l.m1)
    {
        seen.push(state);
    }
    assert_eq!(seen, vec![AttentionState::Reboot]);
}

/// With the watch's fresh "power on" for the target, the NMI goes out without a power
/// query first; without it, the query comes first (SPEC §2 step 3).
#[test]
fn a_fresh_power_reading_from_the_watch_spares_the_query_before_the_nmi() {
    let node02 = DeviceId::Bmc("127.0.0.12".parse().unwrap());
    for watching in [true, false] {
        let l = lab_watching(watching.then_some(Duration::from_millis(1000)));
        if watching {
            // Wait for a poll of node02 (the simulator answers at once).
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while count(&l.sim, |e| *e == SimEvent::PowerQuery(node02.clone())) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the watch never polled"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // Its answer (the simulator's 1 ms) is in the pipeline by now.
            std::thread::sleep(Duration::from_millis(200));
        }
        // From now on node02's BMC takes 2 s for every call: a query before the NMI shows.
        l.sim
            .set(node02.clone(), |d| d.delay = Duration::from_secs(2));
        let queries = count(&l.sim, |e| *e == SimEvent::PowerQuery(node02.clone()));
        let t0 = tokio::time::Instant::now();
        send(&l.m1, l.addr, reset(&l.m1, 5, "node01", 1, "node02", 2));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let nmi_at = loop {
            if let Some((at, _)) = l
                .sim
                .calls()
                .into_iter()
                .find(|(at, e)| *at >= t0 && *e == SimEvent::Nmi(node02.clone()))
            {
                break at;
            }
            assert!(std::time::Instant::now() < deadline, "no NMI");
            std::thread::sleep(Duration::from_millis(20));
        };
        let waited = nmi_at.duration_since(t0);
        let queried = l
            .sim
            .calls()
            .iter()
            .filter(|(at, e)| {
                *at >= t0 && *at <= nmi_at && *e == SimEvent::PowerQuery(node02.clone())
            })
            .count();
        if watching {
            // (A poll of the watch may start in between; the reset did not wait for one.)
            assert!(
                waited < Duration::from_millis(1500),
                "NMI after {waited:?}: the reset queried first ({queries} polls before)"
            );
        } else {
            assert_eq!(queried, 1, "the query first");
            assert!(waited >= Duration::from_secs(2), "NMI after {waited:?}");
        }
    }
}
