//! The hardware-alert decoder (`haconn::alert`) against the real net-snmp tools:
//! `snmptrap -v 1`, `snmptrap -v 2c` and `snmpinform -v 2c` send to a UDP socket on
//! 127.0.0.1 whose port the kernel picked; the datagrams they send are decoded and
//! classified, and the inform is answered with `inform_response`, which `snmpinform` must
//! accept (it exits 0 only when a matching Response arrives). A missing tool is a test
//! failure, never a skip, as for the other SNMP tests.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use haconn::alert::pet::{self, PetError, Severity};
use haconn::alert::trap::{self, Kind, Trap, VarValue, Version};
use haconn::alert::{Meaning, VendorOid, classify};

const SNMPTRAP: &str = "/usr/bin/snmptrap";
const SNMPINFORM: &str = "/usr/bin/snmpinform";
const COMMUNITY: &str = "haconnTrap01";
/// How long a tool may take to send, and snmpinform to give up.
const WAIT: Duration = Duration::from_secs(15);

fn require_tools() {
    for tool in [SNMPTRAP, SNMPINFORM] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install the snmp package to run the trap tests"
        );
    }
}

/// A socket on 127.0.0.1 at a port the kernel picked, and that port as an snmp AGENT.
fn receiver() -> (UdpSocket, String) {
    require_tools();
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    socket.set_read_timeout(Some(WAIT)).expect("a read timeout");
    let port = socket.local_addr().expect("local address").port();
    (socket, format!("127.0.0.1:{port}"))
}

fn command(tool: &str, args: &[&str]) -> Command {
    let mut c = Command::new(tool);
    // No MIB loading: every OID here is numeric.
    c.env("MIBS", "").args(args);
    c
}

fn run(tool: &str, args: &[&str]) -> Output {
    let out = command(tool, args).output().expect("run a net-snmp tool");
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0; 65_536];
    let (n, from) = socket
        .recv_from(&mut buf)
        .expect("a datagram from the net-snmp tool");
    buf.truncate(n);
    (buf, from)
}

/// The exit status of `child`, waited for at most `WAIT`.
fn wait(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait for the tool").is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("the tool did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the tool's output")
}

/// An IPMI PET varbind of 47 + `oem.len()` bytes: BMC at 20h, sensor 51h, Dell's IANA
/// number, severity Critical.
fn pet_bytes(oem: &[u8]) -> Vec<u8> {
    let mut b: Vec<u8> = (0xa0..0xb0).collect(); // GUID
    b.extend_from_slice(&7u16.to_be_bytes()); // sequence
    b.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // local timestamp
    b.extend_from_slice(&120i16.to_be_bytes()); // UTC offset: +2 h
    b.extend_from_slice(&[0x20, 0x68, 0x10, 0x20, 0x51, 0x07, 0x01]);
    b.extend_from_slice(&[0x05, 0xff, 0xff, 0, 0, 0, 0, 0]); // event data
    b.push(0x19); // language code
    b.extend_from_slice(&674u32.to_be_bytes()); // manufacturer
    b.extend_from_slice(&0x0100u16.to_be_bytes()); // system id
    b.push(0xc1); // OEM custom fields: none
    b.extend_from_slice(oem);
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The specific-trap number of an assertion.
fn specific(sensor_type: u8, event_type: u8, offset: u8) -> u32 {
    u32::from_be_bytes([0, sensor_type, event_type, offset])
}

fn checked_pet(t: &Trap, number: u32, oem: &[u8]) {
    assert_eq!(t.trap_oid, format!("{}.0.{number}", pet::ENTERPRISE));
    let p = match &t.pet {
        Some(Ok(p)) => p,
        other => panic!("a PET: {other:?}"),
    };
    assert_eq!(p.specific.raw, number);
    assert_eq!(p.guid.to_vec(), (0xa0..0xb0).collect::<Vec<u8>>());
    assert_eq!(p.sequence, 7);
    assert_eq!(p.local_timestamp, Some(0x2000_0000));
    assert_eq!(p.utc_offset_minutes, Some(120));
    assert_eq!(p.severity, Severity::Critical);
    assert_eq!((p.sensor_device, p.sensor_number), (0x20, 0x51));
    assert_eq!(p.manufacturer_id, 674);
    assert_eq!(p.system_id, 0x0100);
    let mut custom = vec![0xc1];
    custom.extend_from_slice(oem);
    assert_eq!(p.oem_custom, custom);
}

#[test]
fn a_v1_pet_from_snmptrap() {
    let (socket, agent) = receiver();
    let number = specific(0x09, 0x6f, 0x00); // Power Unit: power off
    let n = number.to_string();
    let pet_hex = hex(&pet_bytes(b"OEM"));
    run(
        SNMPTRAP,
        &[
            "-v",
            "1",
            "-c",
            COMMUNITY,
            &agent,
            pet::ENTERPRISE,
            "127.0.0.1",
            "6",
            &n,
            "0",
            pet::VARBIND,
            "x",
            &pet_hex,
        ],
    );
    let (raw, _) = receive(&socket);
    let t = trap::decode(&raw).expect("snmptrap's v1 trap decodes");
    assert_eq!(
        (t.version, t.kind, t.request_id),
        (Version::V1, Kind::Trap, None)
    );
    assert_eq!(t.community, COMMUNITY.as_bytes());
    assert_eq!(t.agent_addr, Some(Ipv4Addr::LOCALHOST));
    assert_eq!(t.uptime, 0);
    assert_eq!(t.varbinds.len(), 1);
    checked_pet(&t, number, b"OEM");
    assert_eq!(classify(&t, &[]), Meaning::PowerOff);
    assert_eq!(trap::inform_response(&t, &raw), None);
}

#[test]
fn a_v2c_pet_from_snmptrap() {
    let (socket, agent) = receiver();
    let number = specific(0x0d, 0x6f, 0x02); // Drive Slot: predictive failure
    let trap_oid = format!("{}.0.{number}", pet::ENTERPRISE);
    let pet_hex = hex(&pet_bytes(&[]));
    run(
        SNMPTRAP,
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            &agent,
            "",
            &trap_oid,
            pet::VARBIND,
            "x",
            &pet_hex,
            "1.3.6.1.2.1.1.5.0",
            "s",
            "node01",
        ],
    );
    let (raw, _) = receive(&socket);
    let t = trap::decode(&raw).expect("snmptrap's v2c trap decodes");
    assert_eq!(
        (t.version, t.kind, t.agent_addr),
        (Version::V2c, Kind::Trap, None)
    );
    assert!(t.request_id.is_some());
    assert_eq!(t.community, COMMUNITY.as_bytes());
    assert_eq!(
        t.varbinds[1],
        (
            "1.3.6.1.2.1.1.5.0".to_string(),
            VarValue::OctetString(b"node01".to_vec())
        )
    );
    checked_pet(&t, number, &[]);
    assert_eq!(classify(&t, &[]), Meaning::PredictiveFailure);
}

#[test]
fn snmpinform_accepts_the_response() {
    let (socket, agent) = receiver();
    let number = specific(0x22, 0x6f, 0x07); // ACPI power state: G3 mechanical off
    let trap_oid = format!("{}.0.{number}", pet::ENTERPRISE);
    let pet_hex = hex(&pet_bytes(&[]));
    let child = command(
        SNMPINFORM,
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            "-r",
            "0",
            "-t",
            "5",
            &agent,
            "",
            &trap_oid,
            pet::VARBIND,
            "x",
            &pet_hex,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start snmpinform");
    let (raw, from) = receive(&socket);
    let t = trap::decode(&raw).expect("snmpinform's inform decodes");
    assert_eq!((t.version, t.kind), (Version::V2c, Kind::Inform));
    checked_pet(&t, number, &[]);
    assert_eq!(classify(&t, &[]), Meaning::PowerOff);
    let response = trap::inform_response(&t, &raw).expect("a response to an inform");
    socket.send_to(&response, from).expect("send the response");
    let out = wait(child);
    assert!(
        out.status.success(),
        "snmpinform refused the response: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn snmpinform_fails_without_a_response() {
    // The check above means something: unanswered, snmpinform does not exit 0.
    let (socket, agent) = receiver();
    let child = command(
        SNMPINFORM,
        &[
            "-v",
            "2c",
            "-c",
            COMMUNITY,
            "-r",
            "0",
            "-t",
            "1",
            &agent,
            "",
            "1.3.6.1.4.1.99999.0.1",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start snmpinform");
    let (raw, _) = receive(&socket);
    assert_eq!(trap::decode(&raw).expect("decodes").kind, Kind::Inform);
    assert!(!wait(child).status.success());
}

#[test]
fn a_truncated_pet_is_a_pet_error() {
    let (socket, agent) = receiver();
    let number = specific(0x09, 0x6f, 0x00);
    let n = number.to_string();
    let cut = hex(&pet_bytes(&[])[..30]);
    run(
        SNMPTRAP,
        &[
            "-v",
            "1",
            "-c",
            COMMUNITY,
            &agent,
            pet::ENTERPRISE,
            "127.0.0.1",
            "6",
            &n,
            "0",
            pet::VARBIND,
            "x",
            &cut,
        ],
    );
    let (raw, _) = receive(&socket);
    let t = trap::decode(&raw).expect("the trap itself decodes");
    assert_eq!(t.pet, Some(Err(PetError::Truncated { len: 30 })));
    assert_eq!(classify(&t, &[]), Meaning::Other);
}

#[test]
fn an_unknown_enterprise_means_other() {
    let (socket, agent) = receiver();
    run(
        SNMPTRAP,
        &[
            "-v",
            "1",
            "-c",
            COMMUNITY,
            &agent,
            "1.3.6.1.4.1.99999",
            "127.0.0.1",
            "6",
            "5",
            "0",
            "1.3.6.1.4.1.99999.1",
            "s",
            "hello",
        ],
    );
    let (raw, _) = receive(&socket);
    let t = trap::decode(&raw).expect("decodes");
    assert_eq!(t.trap_oid, "1.3.6.1.4.1.99999.0.5");
    assert_eq!(t.pet, None);
    assert_eq!(
        t.varbinds,
        [(
            "1.3.6.1.4.1.99999.1".to_string(),
            VarValue::OctetString(b"hello".to_vec())
        )]
    );
    let vendor = [VendorOid {
        oid_prefix: "1.3.6.1.4.1.674".into(),
        meaning: Meaning::Degradation,
    }];
    assert_eq!(classify(&t, &vendor), Meaning::Other);
    // The same trap, named in the table.
    let vendor = [VendorOid {
        oid_prefix: "1.3.6.1.4.1.99999.0".into(),
        meaning: Meaning::Degradation,
    }];
    assert_eq!(classify(&t, &vendor), Meaning::Degradation);
}
