//! Hardware-alert benchmark (issue 15 item 7): a server loses power; how long until the
//! HA monitors hear POFF, with and without a trap from its BMC, side by side in one run
//! against one daemon.
//!
//! The lab spec of `support::resetpath` (`Lab::start_real`, `--hardware-poll-ms 1000`,
//! the default) with labnode01 and labnode02 on `ipmi_sim` BMCs at 127.0.0.11 and
//! 127.0.0.12 (the module keeps the power state, so no script runs per status read) and
//! a trap receiver on 127.0.0.1. labnode02's monitor is a socket of this process,
//! registered with a signed check and its own key; it verifies every ATTENTION it gets.
//! Each sample starts with labnode01's BMC on, the watch having seen it on, and
//! labnode01's monitor checked in again (after a POFF the system stays "done" until
//! then); after a pause drawn at random from one poll interval (so the power-off falls
//! at any phase of the watch's polling, not just after the poll that saw it on),
//! `ipmitool chassis power off` powers it off behind haconn's back. Then:
//! - trap: once ipmitool has returned, the IPMI PET "Power Unit: power off" (v1, built
//!   here in BER and checked with `haconn::alert::trap::decode` first) goes out from
//!   127.0.0.11, the BMC's address; measured from the send to the ATTENTION POFF (the
//!   daemon reads the power over its RMCP+ session before it tells anyone). A sample
//!   whose alert-log line says the watch had already reported the power-off (a poll came
//!   between the power-off and the trap) is not counted, and the count is printed;
//! - poll: no trap; measured from the power-off as the BMC's module recorded it
//!   (CLOCK_REALTIME, the clock this process reads) to the ATTENTION POFF.
//!
//! The two alternate, so a change of machine load falls on both alike. Prints samples,
//! p50, p99 and max of each, the machine's CPUs and load, and whether the trap p99 is
//! under the 10 ms target; it never fails on time.
//!
//! Run: `cargo bench --bench alert` (30 of each, about a minute). Without `--bench`, as
//! under `cargo test`, it is one smoke test (`alert_smoke`: 3 of each, which must each
//! end in a POFF).

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

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use daemon::Prng;
use haconn::alert::{Meaning, classify, pet, trap};
use haconn::resetpath::client::Client;
use haconn::resetpath::codec::{AttentionState, Message};
use harness::{figures, row};
use ipmi_support::{PASSWORD, SimBmc, SimConfig, USER, now_ns};
use resetpath_support::Lab;

/// The community of the bench's trap receiver.
const COMMUNITY: &str = "haconnBench01";
/// The daemon's hardware poll interval: the default.
const POLL_MS: u32 = 1000;
/// How long anything one sample waits for may take.
const WAIT: Duration = Duration::from_secs(10);
/// The trap path's target.
const TARGET_P99_MS: f64 = 10.0;
/// The seed of the pauses before each power-off (printed, so a run can be repeated).
const SEED: u64 = 15;

struct Sizes {
    /// Samples of each path.
    samples: usize,
}

const FULL: Sizes = Sizes { samples: 30 };
const SMOKE: Sizes = Sizes { samples: 3 };

/// Just enough BER for one SNMPv1 Trap-PDU.
mod ber {
    pub const INTEGER: u8 = 0x02;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const SEQUENCE: u8 = 0x30;
    pub const IP_ADDRESS: u8 = 0x40;
    pub const TIMETICKS: u8 = 0x43;
    pub const TRAP_V1: u8 = 0xa4;

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        match n {
            0..=0x7f => out.push(n as u8),
            0x80..=0xff => out.extend([0x81, n as u8]),
            _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// Two's complement, in as few bytes as hold the sign.
    pub fn integer(tag: u8, v: i64) -> Vec<u8> {
        let bytes = v.to_be_bytes();
        let mut start = 0;
        while start < 7
            && ((bytes[start] == 0x00 && bytes[start + 1] & 0x80 == 0)
                || (bytes[start] == 0xff && bytes[start + 1] & 0x80 != 0))
        {
            start += 1;
        }
        tlv(tag, &bytes[start..])
    }

    pub fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u32> = dotted
            .split('.')
            .map(|a| a.parse().expect("a numeric arc"))
            .collect();
        let mut content = Vec::new();
        let mut base128 = |mut v: u32| {
            let mut groups = vec![(v & 0x7f) as u8];
            v >>= 7;
            while v > 0 {
                groups.push(0x80 | (v & 0x7f) as u8);
                v >>= 7;
            }
            content.extend(groups.iter().rev());
        };
        base128(arcs[0] * 40 + arcs[1]);
        for &a in &arcs[2..] {
            base128(a);
        }
        tlv(OID, &content)
    }
}

/// The specific-trap number of a PET assertion: `(sensor type << 16) | (event type << 8)
/// | offset`.
fn specific(sensor_type: u8, event_type: u8, offset: u8) -> u32 {
    u32::from_be_bytes([0, sensor_type, event_type, offset])
}

/// A 47-byte PET varbind (as tests/it/trap_decode.rs's `pet_bytes` with no OEM fields).
fn pet_bytes() -> Vec<u8> {
    let mut b: Vec<u8> = (0xa0..0xb0).collect(); // GUID
    b.extend_from_slice(&7u16.to_be_bytes()); // sequence
    b.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // local timestamp
    b.extend_from_slice(&120i16.to_be_bytes()); // UTC offset
    b.extend_from_slice(&[0x20, 0x68, 0x10, 0x20, 0x51, 0x07, 0x01]);
    b.extend_from_slice(&[0x05, 0xff, 0xff, 0, 0, 0, 0, 0]); // event data
    b.push(0x19); // language code
    b.extend_from_slice(&674u32.to_be_bytes()); // manufacturer
    b.extend_from_slice(&0x0100u16.to_be_bytes()); // system id
    b.push(0xc1); // OEM custom fields: none
    b
}

/// The SNMPv1 trap a BMC at `agent` sends when its Power Unit sensor (09h) asserts
/// "Power Off / Power Down" (sensor-specific event type 6Fh, offset 00h).
fn power_off_trap(agent: Ipv4Addr) -> Vec<u8> {
    let mut varbind = ber::oid(pet::VARBIND);
    varbind.extend(ber::tlv(ber::OCTET_STRING, &pet_bytes()));
    let varbinds = ber::tlv(ber::SEQUENCE, &ber::tlv(ber::SEQUENCE, &varbind));
    let mut pdu = ber::oid(pet::ENTERPRISE);
    pdu.extend(ber::tlv(ber::IP_ADDRESS, &agent.octets()));
    pdu.extend(ber::integer(ber::INTEGER, 6)); // enterpriseSpecific
    pdu.extend(ber::integer(
        ber::INTEGER,
        i64::from(specific(0x09, 0x6f, 0x00)),
    ));
    pdu.extend(ber::integer(ber::TIMETICKS, 4242));
    pdu.extend(varbinds);
    let mut msg = ber::integer(ber::INTEGER, 0); // SNMPv1
    msg.extend(ber::tlv(ber::OCTET_STRING, COMMUNITY.as_bytes()));
    msg.extend(ber::tlv(ber::TRAP_V1, &pdu));
    ber::tlv(ber::SEQUENCE, &msg)
}

/// The trap must be what the daemon's decoder calls a PET power-off, or the bench
/// measures nothing.
fn check_trap(bytes: &[u8], agent: Ipv4Addr) {
    let t = trap::decode(bytes).expect("the bench's trap decodes");
    assert_eq!(t.version, trap::Version::V1);
    assert_eq!(t.kind, trap::Kind::Trap);
    assert_eq!(t.community, COMMUNITY.as_bytes());
    assert_eq!(t.agent_addr, Some(agent));
    assert_eq!(
        t.trap_oid,
        format!("{}.0.{}", pet::ENTERPRISE, specific(0x09, 0x6f, 0x00))
    );
    let p = match &t.pet {
        Some(Ok(p)) => p,
        other => panic!("the bench's trap carries a readable PET: {other:?}"),
    };
    assert_eq!(
        (
            p.specific.sensor_type,
            p.specific.event_type,
            p.specific.offset
        ),
        (0x09, 0x6f, 0x00)
    );
    assert_eq!(classify(&t, &[]), Meaning::PowerOff);
}

fn sim_at(last_octet: u8) -> SimBmc {
    SimBmc::with(SimConfig {
        address: Ipv4Addr::new(127, 0, 0, last_octet),
        module_power: true,
        ..SimConfig::default()
    })
}

/// A UDP port on 127.0.0.1 the kernel just handed out, for the trap receiver (the spec
/// names its port; the daemon's bind is checked in its event log).
fn kernel_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral port")
        .port()
}

/// `ipmitool chassis power on|off` against `sim`; returns once the BMC has answered.
fn chassis_power(sim: &SimBmc, what: &str) {
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-C", "3", "-H", &sim.address.to_string()])
        .args(["-p", &sim.port.to_string(), "-U", USER, "-P", PASSWORD])
        .args(["chassis", "power", what])
        .output()
        .expect("run ipmitool (package ipmitool)");
    assert!(
        out.status.success(),
        "ipmitool chassis power {what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// When the BMC's module last set the power to `on` (CLOCK_REALTIME ns).
fn power_set_at(sim: &SimBmc, on: bool) -> Option<u128> {
    let want = if on {
        "set power 0x01"
    } else {
        "set power 0x00"
    };
    sim.module_records()
        .into_iter()
        .rev()
        .find(|(_, what)| what == want)
        .map(|(t, _)| t)
}

/// What the daemon's watch last read of `server`'s power (`pon`, `poff`, `--`).
fn watched_power(lab: &Lab, server: &str) -> String {
    let status = lab.status();
    status["hardware"]["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == server))
        .map(|s| s["power"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// A monitor of this process: a socket on 127.0.0.1 that checks in as `system` and
/// verifies what comes with `system`'s key.
struct Monitor {
    system: &'static str,
    subsystem: u32,
    client: Client,
}

impl Monitor {
    fn new(lab: &Lab, system: &'static str, subsystem: u32) -> Monitor {
        let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let client = Client::bind(local, lab.reset_path, lab.key_of(system)).expect("bind");
        Monitor {
            system,
            subsystem,
            client,
        }
    }

    /// A signed check; waits for its reply (the daemon then knows the monitor, and a
    /// system that was "done" is normal again).
    fn check(&mut self, lab: &Lab) {
        let msg = Message::Check {
            system: self.system.into(),
            subsystem: self.subsystem,
            port: self.client.local_addr().port(),
            pair: None,
        };
        self.client.send(&msg).expect("send the check");
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(r) = self.client.recv(deadline).expect("receive") else {
                panic!("no check reply for {}\n{}", self.system, lab.diagnostics());
            };
            if let Message::CheckReply {
                system, subsystem, ..
            } = &r.env.msg
                && system == self.system
                && *subsystem == self.subsystem
            {
                return;
            }
        }
    }

    /// Waits for ATTENTION POFF of `system`; when it came (CLOCK_REALTIME ns).
    fn poff(&mut self, lab: &Lab, of: &str) -> u128 {
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(r) = self.client.recv(deadline).expect("receive") else {
                panic!(
                    "no ATTENTION POFF of {of} within {WAIT:?}\n--- alert.log\n{}{}",
                    lab.log("alert.log"),
                    lab.diagnostics()
                );
            };
            if let Message::Attention { system, state, .. } = &r.env.msg
                && system == of
            {
                let at = now_ns();
                assert_eq!(*state, AttentionState::Poff, "{}", lab.log("reset.log"));
                return at;
            }
        }
    }
}

struct Bench {
    node1: SimBmc,
    _node2: SimBmc,
    lab: Lab,
    alerts: SocketAddr,
    sender: UdpSocket,
    trap: Vec<u8>,
    node1_monitor: Monitor,
    listener: Monitor,
    /// Alert-log lines so far.
    alert_lines: usize,
    phase: Prng,
}

struct Results {
    trap: Vec<u128>,
    poll: Vec<u128>,
    /// Trap samples not counted: a poll had reported the power-off first.
    poll_first: usize,
}

impl Bench {
    fn start() -> Bench {
        let node1 = sim_at(11);
        let node2 = sim_at(12);
        let agent = node1.address;
        assert!(agent.is_loopback());
        let trap = power_off_trap(agent);
        check_trap(&trap, agent);
        let port = kernel_port();
        let alerts: SocketAddr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let on_sims = ipmi_support::on_sims(&node1, &node2);
        // `Lab` refuses any spec with a non-loopback address or broadcast.
        let lab = Lab::start_real(1000, POLL_MS, move |spec| {
            format!(
                "{}alerts:\n  address: {}\n  port: {port}\n  community: {COMMUNITY}\n",
                on_sims(spec),
                alerts.ip()
            )
        });
        let listening = format!("trap receiver listening on {alerts}");
        lab.wait_log("event.log", "the trap receiver", |l| {
            l.contains(&listening) || l.contains("the trap receiver cannot listen")
        });
        assert!(
            lab.log("event.log").contains(&listening),
            "{}",
            lab.log("event.log")
        );
        let sender = UdpSocket::bind((agent, 0)).expect("bind the BMC's trap socket");
        let node1_monitor = Monitor::new(&lab, "labnode01", 1);
        let listener = Monitor::new(&lab, "labnode02", 2);
        Bench {
            node1,
            _node2: node2,
            lab,
            alerts,
            sender,
            trap,
            node1_monitor,
            listener,
            alert_lines: 0,
            phase: Prng::new(SEED),
        }
    }

    /// labnode01 on, seen on by the watch, and both monitors checked in; then a pause
    /// of a random part of a poll interval.
    fn ready(&mut self) {
        if !self.node1_on() {
            chassis_power(&self.node1, "on");
        }
        let deadline = Instant::now() + WAIT;
        while watched_power(&self.lab, "labnode01") != "pon" {
            assert!(
                Instant::now() < deadline,
                "the watch did not see labnode01 on within {WAIT:?}\n{}",
                self.lab.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.node1_monitor.check(&self.lab);
        self.listener.check(&self.lab);
        let pause = self.phase.below(u64::from(POLL_MS));
        std::thread::sleep(Duration::from_millis(pause));
    }

    fn node1_on(&self) -> bool {
        match (
            power_set_at(&self.node1, true),
            power_set_at(&self.node1, false),
        ) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(on), Some(off)) => on > off,
        }
    }

    /// Power off, then the trap: send → ATTENTION POFF, or `None` when the watch had
    /// reported the power-off before the trap's read.
    fn trap_sample(&mut self) -> Option<u128> {
        self.ready();
        chassis_power(&self.node1, "off");
        let t0 = now_ns();
        self.sender
            .send_to(&self.trap, self.alerts)
            .expect("send the trap");
        let t1 = self.listener.poff(&self.lab, "labnode01");
        self.alert_lines += 1;
        let log = self
            .lab
            .wait_lines("alert.log", self.alert_lines, |l| l.contains("trap v1"));
        let line = log
            .lines()
            .filter(|l| l.contains("trap v1"))
            .nth(self.alert_lines - 1)
            .expect("counted above");
        if line.contains("BMC reads off: POFF to the cluster for labnode01") {
            return Some(t1.saturating_sub(t0));
        }
        assert!(
            line.contains("as already known and reported"),
            "the trap was not confirmed: {line}\n{}",
            self.lab.diagnostics()
        );
        None
    }

    /// Power off, no trap: the BMC's power-off → ATTENTION POFF.
    fn poll_sample(&mut self) -> u128 {
        self.ready();
        chassis_power(&self.node1, "off");
        let off = power_set_at(&self.node1, false).expect("the module recorded the power-off");
        let t1 = self.listener.poff(&self.lab, "labnode01");
        t1.saturating_sub(off)
    }

    fn run(&mut self, s: &Sizes) -> Results {
        let mut r = Results {
            trap: Vec::with_capacity(s.samples),
            poll: Vec::with_capacity(s.samples),
            poll_first: 0,
        };
        // Bounded: a poll may beat a trap now and then, not every time.
        let mut attempts = 0;
        while r.trap.len() < s.samples || r.poll.len() < s.samples {
            attempts += 1;
            assert!(
                attempts <= 2 * s.samples + 5,
                "{} of {} trap samples after {} attempts ({} beaten by a poll)",
                r.trap.len(),
                s.samples,
                attempts - 1,
                r.poll_first
            );
            if r.trap.len() < s.samples {
                match self.trap_sample() {
                    Some(t) => r.trap.push(t),
                    None => r.poll_first += 1,
                }
            }
            if r.poll.len() < s.samples {
                r.poll.push(self.poll_sample());
            }
        }
        assert!(
            self.node1.nmis().is_empty() && self.node1.resets().is_empty(),
            "nothing is reset for a power-off"
        );
        r
    }
}

fn report(s: &Sizes) {
    println!(
        "Alerts: power-off -> ATTENTION POFF at an HA monitor (ipmi_sim, RMCP+, 127.0.0.0/8; \
         --hardware-poll-ms {POLL_MS}; power-offs at a random poll phase, seed {SEED})"
    );
    println!("{}", harness::machine_line());
    let mut bench = Bench::start();
    let r = bench.run(s);
    let (trap, poll) = (figures(r.trap), figures(r.poll));
    println!(
        "\n  {:<52} {:>4}  {:>10}  {:>10}  {:>10}",
        "path (ms)", "n", "p50", "p99", "max"
    );
    row("trap: PET power-off sent -> BMC read -> POFF", 52, trap);
    row("poll: BMC powered off -> next watch poll -> POFF", 52, poll);
    println!(
        "\n  trap samples not counted (a poll reported the power-off first): {}",
        r.poll_first
    );
    println!(
        "  trap p99 {:.3} ms (target < {TARGET_P99_MS} ms): {}; poll/trap at p50: {:.0}x",
        trap.p99,
        if trap.p99 < TARGET_P99_MS {
            "met"
        } else {
            "NOT met"
        },
        poll.p50 / trap.p50
    );
}

fn main() {
    harness::main("alert_smoke", || report(&SMOKE), || report(&FULL));
}
