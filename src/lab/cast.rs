//! Who plays in each lab scenario: the nodes with their HA monitors and dump agents, the
//! hardware that resets them, the requests that start it, and the loopback spec that
//! describes it all to the pipeline.
//!
//! Every address is in 127.0.0.0/8: nodes' BMCs at 127.0.1.x, PDUs at 127.0.2.x, the
//! ESXi host at 127.0.3.1, the management servers' BMCs at 127.0.0.2 and 127.0.0.3 (their
//! heartbeats, in `takeover`, at 127.0.20.1 and 127.0.20.2). Nothing listens on the
//! devices' addresses; the simulator plays the devices in-process.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use crate::backend::sim::DeviceId;

/// A failure to act out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// node02 fails; its dump agent answers the NMI with "stopped" after ~300 ms.
    Dump,
    /// node02 hangs with no dump agent: hard reset after hispeed.
    Hang,
    /// node02's BMC stops answering after the NMI: PDU outlets cut after the timeout,
    /// switched back on after the recovery time.
    BmcDead,
    /// node01 and node02, a mutual-standby pair, ask to reset each other at once: exactly
    /// one reset runs, the other request gets FAIL.
    Pair,
    /// vm02, a VMware guest, hangs: NMI then reset through its ESXi host.
    Guest,
    /// node02 loses power with nobody asking for anything: the hardware watch sees its
    /// BMC report power off and tells the other HA monitors POFF at once.
    PowerOff,
    /// labms01, the active management server of a pair, dies; labms02 loses its
    /// heartbeat, fences it through its BMC and takes over, while node01 asks for
    /// node02's reset: the request completes once, on labms02.
    Takeover,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Dump,
        Scenario::Hang,
        Scenario::BmcDead,
        Scenario::Pair,
        Scenario::Guest,
        Scenario::PowerOff,
        Scenario::Takeover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dump => "dump",
            Scenario::Hang => "hang",
            Scenario::BmcDead => "bmc-dead",
            Scenario::Pair => "pair",
            Scenario::Guest => "guest",
            Scenario::PowerOff => "poweroff",
            Scenario::Takeover => "takeover",
        }
    }
}

/// One cluster node: the HA monitor system on it and what resets it.
#[derive(Debug, Clone)]
pub struct Node {
    pub system: String,
    pub subsystem: u32,
    pub pair: Option<u32>,
    /// The simulated device that takes its NMI and hard reset.
    pub device: DeviceId,
    /// Whether its dump agent reports "stopped" after an NMI.
    pub dump_agent: bool,
}

impl Node {
    /// The device in words: `node02's BMC 127.0.1.2`, `ESXi 127.0.3.1 (VM vm02)`.
    pub fn device_label(&self) -> String {
        match &self.device {
            DeviceId::Bmc(a) => format!("{}'s BMC {a}", self.system),
            DeviceId::Vm(host, vm) => format!("ESXi {host} (VM {vm})"),
            DeviceId::Pdu(a) => format!("PDU {a}"),
        }
    }
}

/// A reset request the lab sends: `requester` asks for `target`'s reset as request `req`.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub requester: usize,
    pub target: usize,
    pub req: u32,
}

/// A management server: its name and its (simulated) BMC.
#[derive(Debug, Clone)]
pub struct MServer {
    pub name: &'static str,
    pub bmc: IpAddr,
}

/// Everything a scenario needs.
#[derive(Debug, Clone)]
pub struct Cast {
    pub scenario: Scenario,
    /// One line: what happens.
    pub story: &'static str,
    pub nodes: Vec<Node>,
    pub requests: Vec<Request>,
    /// The outlets feeding the target (PDU forced reset), when enabled.
    pub outlets: Vec<(IpAddr, u16)>,
    /// A BMC that answers until the NMI and never after.
    pub dies_after_nmi: Option<IpAddr>,
    /// The node that loses power at t = 0 (and the watch poll interval that must see it).
    pub loses_power: Option<(usize, std::time::Duration)>,
    /// The management servers: one (`mode: single`) or, in `takeover`, a pair whose
    /// first is active until it dies.
    pub mservers: Vec<MServer>,
}

/// The timings an operator can shorten or lengthen.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// Hard-reset issue time, 1000–5000 ms.
    pub hispeed_ms: u32,
    /// Hard-reset acknowledgement wait before the PDU cut, 5–60 s.
    pub timeout_s: u32,
    /// Outlets back on after, 5–60 s.
    pub recovery_s: u32,
}

fn v4(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

fn bmc_of(n: u8) -> IpAddr {
    v4(0, 1, n)
}

/// The pair's heartbeat in `takeover`: every 100 ms, lost after 5 missed.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);
pub const HEARTBEAT_MISSES: u32 = 5;

/// The heartbeat address of management server `i` in `takeover` (labms01 is 127.0.20.1).
pub fn mlan_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 20, i as u8 + 1)
}

const PDUS: [u8; 2] = [1, 2];
const ESXI: [u8; 3] = [0, 3, 1];
/// The outlet feeding node02 on each PDU.
const NODE02_OUTLET: u16 = 5;

fn physical(n: u8, pair: Option<u32>, dump_agent: bool) -> Node {
    Node {
        system: format!("node{n:02}"),
        subsystem: u32::from(n),
        pair,
        device: DeviceId::Bmc(bmc_of(n)),
        dump_agent,
    }
}

fn guest(n: u8, pair: Option<u32>, dump_agent: bool) -> Node {
    Node {
        system: format!("vm{n:02}"),
        subsystem: u32::from(n),
        pair,
        device: DeviceId::Vm(v4(ESXI[0], ESXI[1], ESXI[2]), format!("vm{n:02}")),
        dump_agent,
    }
}

impl Cast {
    pub fn of(scenario: Scenario) -> Cast {
        let one = vec![Request {
            requester: 0,
            target: 1,
            req: 1,
        }];
        let three = |agent: bool| {
            vec![
                physical(1, Some(1), true),
                physical(2, Some(1), agent),
                physical(3, None, true),
            ]
        };
        let (story, nodes, requests) = match scenario {
            Scenario::Dump => (
                "node02 fails; node01 asks for its reset; node02's dump agent answers the NMI",
                three(true),
                one,
            ),
            Scenario::Hang => (
                "node02 hangs and has no dump agent: nothing answers the NMI",
                three(false),
                one,
            ),
            Scenario::BmcDead => (
                "node02 hangs, and its BMC stops answering right after the NMI",
                three(false),
                one,
            ),
            Scenario::Pair => (
                "node01 and node02 (a mutual-standby pair) lose their heartbeat and ask to reset each other at once",
                three(true),
                vec![
                    Request {
                        requester: 0,
                        target: 1,
                        req: 1,
                    },
                    Request {
                        requester: 1,
                        target: 0,
                        req: 2,
                    },
                ],
            ),
            Scenario::Guest => (
                "vm02, a VMware guest on esx01, hangs with no dump agent: NMI and reset go through ESXi",
                vec![
                    guest(1, Some(1), true),
                    guest(2, Some(1), false),
                    guest(3, None, true),
                ],
                one,
            ),
            Scenario::PowerOff => (
                "node02's power supply fails: nobody asks for a reset, the hardware watch sees it",
                three(true),
                Vec::new(),
            ),
            Scenario::Takeover => (
                "labms01, the active management server, dies; labms02 fences it and takes over while node01 asks for node02's reset",
                three(true),
                one,
            ),
        };
        let ms = |n: u8| MServer {
            name: if n == 1 { "labms01" } else { "labms02" },
            bmc: v4(0, 0, n + 1),
        };
        let bmc_dead = scenario == Scenario::BmcDead;
        Cast {
            scenario,
            story,
            nodes,
            requests,
            outlets: if bmc_dead {
                PDUS.iter().map(|&p| (v4(0, 2, p), NODE02_OUTLET)).collect()
            } else {
                Vec::new()
            },
            dies_after_nmi: bmc_dead.then(|| bmc_of(2)),
            loses_power: (scenario == Scenario::PowerOff)
                .then_some((1, std::time::Duration::from_millis(200))),
            mservers: if scenario == Scenario::Takeover {
                vec![ms(1), ms(2)]
            } else {
                vec![ms(1)]
            },
        }
    }

    /// The node whose device this is.
    pub fn node_of(&self, device: &DeviceId) -> Option<&Node> {
        self.nodes.iter().find(|n| &n.device == device)
    }

    /// The management server whose BMC this is.
    pub fn mserver_of(&self, bmc: IpAddr) -> Option<&MServer> {
        self.mservers.iter().find(|m| m.bmc == bmc)
    }

    /// The loopback spec of this scenario. `key` and `password` are fresh random values,
    /// held in memory only. `mlan` has the pair's bound heartbeat sockets, one per
    /// management server (a single one's mlan is never used).
    pub fn spec_text(
        &self,
        port: u16,
        mlan: &[std::net::SocketAddr],
        key: &str,
        password: &str,
        t: Timings,
    ) -> String {
        let mut s = String::new();
        let single_mlan = if port == 15002 { 15003 } else { 15002 };
        let pair = self.mservers.len() == 2;
        let _ = write!(
            s,
            "apiVersion: haconn/v1\n\
             mode: {}\n\
             resetPath:\n  address: 127.0.0.1/8\n  port: {port}\n  broadcast: 127.255.255.255\n  \
             auth: {{key: \"{key}\"}}\n\
             hispeed: {}\n",
            if pair { "pair" } else { "single" },
            t.hispeed_ms
        );
        if pair {
            let _ = writeln!(
                s,
                "pair: {{heartbeatInterval: {}, heartbeatMisses: {HEARTBEAT_MISSES}, startupGrace: 5}}",
                HEARTBEAT_INTERVAL.as_millis()
            );
        }
        if !self.outlets.is_empty() {
            s.push_str("snmp: {community: lab}\npdus:\n");
            for (pdu, _) in &self.outlets {
                let _ = writeln!(s, "  - {{address: {pdu}, model: IBM_PDU}}");
            }
        }
        s.push_str("managementServers:\n");
        for (i, m) in self.mservers.iter().enumerate() {
            let (address, mlan_port) = mlan
                .get(i)
                .map_or((v4(0, 0, 1), single_mlan), |a| (a.ip(), a.port()));
            let _ = write!(
                s,
                "  - name: {}\n    \
                 bmc: {{address: {}, username: admin, password: \"{password}\"}}\n    \
                 mlan: {{address: {address}, port: {mlan_port}}}\n",
                m.name, m.bmc
            );
        }
        s.push_str("servers:\n");
        if self.scenario == Scenario::Guest {
            let _ = write!(
                s,
                "  - name: esx01\n    \
                 bmc: {{address: {}, username: admin, password: \"{password}\"}}\n    \
                 cluster: true\n    \
                 esxi:\n      address: {}\n      username: root\n      password: \"{password}\"\n      \
                 trustOnFirstUse: true\n      guests: [{}]\n",
                v4(0, 1, 10),
                v4(ESXI[0], ESXI[1], ESXI[2]),
                self.nodes
                    .iter()
                    .map(|n| n.system.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return s;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let DeviceId::Bmc(bmc) = n.device else {
                continue;
            };
            let _ = write!(
                s,
                "  - name: {}\n    bmc: {{address: {bmc}, username: admin, password: \"{password}\"}}\n    \
                 cluster: {}\n",
                n.system,
                n.pair.is_some()
            );
            if i == 1 && !self.outlets.is_empty() {
                let _ = write!(
                    s,
                    "    ipdu:\n      timeout: {}\n      recoveryTime: {}\n      outlets:\n",
                    t.timeout_s, t.recovery_s
                );
                for (pdu, outlet) in &self.outlets {
                    let _ = writeln!(s, "        - {{pdu: {pdu}, outlet: {outlet}}}");
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CheckOptions, check_bytes};

    #[test]
    fn every_scenario_has_a_valid_loopback_spec() {
        let t = Timings {
            hispeed_ms: 1000,
            timeout_s: 5,
            recovery_s: 5,
        };
        for s in Scenario::ALL {
            let cast = Cast::of(s);
            let mlan: Vec<std::net::SocketAddr> = if cast.mservers.len() == 2 {
                (0..2)
                    .map(|i| (mlan_ip(i), 40001 + i as u16).into())
                    .collect()
            } else {
                Vec::new()
            };
            let text = cast.spec_text(40000, &mlan, "k3yk3yk3yk3yk3yk3yk3y", "passw0rdpassw0rd", t);
            let checked = check_bytes(text.as_bytes(), CheckOptions::default());
            let spec = checked
                .spec
                .unwrap_or_else(|| panic!("{}: {:?}\n{text}", s.name(), checked.diagnostics));
            assert_eq!(spec.systems(), cast.nodes.len(), "{}", s.name());
            assert_eq!(
                spec.management_servers.len(),
                cast.mservers.len(),
                "{}",
                s.name()
            );
            for ip in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
                if let Ok(a) = ip.parse::<Ipv4Addr>() {
                    assert!(a.is_loopback(), "{}: {a} is not loopback", s.name());
                }
            }
        }
    }
}
