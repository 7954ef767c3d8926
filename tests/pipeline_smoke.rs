//! The reset path end to end in one process: real UDP on 127.0.0.1, simulated hardware.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use haconn::backend::Backends;
use haconn::backend::sim::{Behavior, DeviceId, Sim};
use haconn::log::LogSink;
use haconn::pipeline::{Pipeline, PipelineConfig};
use haconn::resetpath::codec::{self, Envelope, Key, Message, ResetResult};
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

fn key() -> Key {
    Key::Hmac(b"0123456789abcdef0123".to_vec())
}

fn send(sock: &UdpSocket, to: std::net::SocketAddr, msg: Message) {
    sock.send_to(&codec::encode(&Envelope::new(msg), &key()), to)
        .unwrap();
}

fn recv(sock: &UdpSocket) -> Message {
    let mut buf = [0u8; 2048];
    let (n, _) = sock.recv_from(&mut buf).expect("a reply");
    codec::decode(&buf[..n], &key()).unwrap().msg
}

#[test]
fn check_then_reset_with_dump_timeout_and_hard_reset() {
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
    };
    let (pipeline, _thread) = Pipeline::start(spec, config).unwrap();
    let m1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let m2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for m in [&m1, &m2] {
        m.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    send(
        &m1,
        addr,
        Message::Check {
            system: "node01".into(),
            subsystem: 1,
            port: m1.local_addr().unwrap().port(),
            pair: Some(1),
        },
    );
    assert!(matches!(
        recv(&m1),
        Message::CheckReply {
            resettable: true,
            ..
        }
    ));
    send(
        &m2,
        addr,
        Message::Check {
            system: "node02".into(),
            subsystem: 2,
            port: m2.local_addr().unwrap().port(),
            pair: Some(1),
        },
    );
    assert!(matches!(
        recv(&m2),
        Message::CheckReply {
            resettable: true,
            ..
        }
    ));

    // node01 asks for node02's reset; node02's dump agent never answers: hard reset after 1000 ms.
    send(
        &m1,
        addr,
        Message::Reset {
            req: 7,
            system: "node01".into(),
            subsystem: 1,
            port: m1.local_addr().unwrap().port(),
            target_system: "node02".into(),
            target_subsystem: 2,
        },
    );
    assert!(matches!(
        recv(&m1),
        Message::ResetReply {
            req: 7,
            result: ResetResult::Accepted,
            ..
        }
    ));
    // The crossing request from node02 is refused: it is being reset.
    send(
        &m2,
        addr,
        Message::Reset {
            req: 9,
            system: "node02".into(),
            subsystem: 2,
            port: m2.local_addr().unwrap().port(),
            target_system: "node01".into(),
            target_subsystem: 1,
        },
    );
    assert!(
        matches!(
            recv(&m2),
            Message::ResetReply {
                req: 9,
                result: ResetResult::Fail,
                ..
            }
        ),
        "crossing reset refused"
    );
    let mut got_final = false;
    let mut got_attention = false;
    for _ in 0..4 {
        match recv(&m1) {
            Message::ResetReply {
                req: 7,
                result: ResetResult::Dump,
                ..
            } => got_final = true,
            Message::Attention {
                system,
                state: codec::AttentionState::Reboot,
                ..
            } if system == "node02" => got_attention = true,
            other => panic!("unexpected {other:?}"),
        }
        if got_final && got_attention {
            break;
        }
    }
    assert!(got_final && got_attention);
    let calls: Vec<_> = sim.calls().into_iter().map(|(_, e)| e).collect();
    let node02 = DeviceId::Bmc("127.0.0.12".parse().unwrap());
    assert!(calls.contains(&haconn::backend::sim::SimEvent::Nmi(node02.clone())));
    assert!(calls.contains(&haconn::backend::sim::SimEvent::HardReset(node02)));
    assert!(!calls.iter().any(|e| matches!(e, haconn::backend::sim::SimEvent::Nmi(DeviceId::Bmc(a)) if a.to_string() == "127.0.0.11")), "node01 never touched");
    let _ = (pipeline, Behavior::Works);
}
