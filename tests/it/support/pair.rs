//! Two management servers for real (issue 14.7), for the duplication tests and the
//! takeover benchmark: two `haconn daemon`s in two network namespaces joined by a veth
//! (the mlan) and by a bridge (the reset-path LAN), a third namespace for HA monitors
//! driven by `haconn node`, and for each management server an `ipmi_sim` BMC on the LAN
//! whose chassis control really kills (SIGKILL) that server's daemon on a hard reset.
//!
//! Every address lives only inside the namespaces: the reset path 10.251.0.0/24 (ms01
//! .1, ms02 .2, the node host .3 (node01) and .4 (node02), BMCs .11/.12/.21/.22, the
//! virtual address .100) and the mlan 10.252.0.0/30.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::daemon::Daemon;
use super::ipmi::{PASSWORD, SimBmc, SimConfig, USER};
use super::netns::{Bridge, Netns, veth, wait_until};
use super::run::{Run, execute};

/// Generous for a loaded 2-core machine; every wait ends as soon as its condition holds.
pub const WAIT: Duration = Duration::from_secs(30);
pub const KEY: &str = "pairtestkey0123456789";

pub fn spec() -> String {
    format!(
        "apiVersion: haconn/v1
mode: pair
resetPath:
  address: 10.251.0.100/24
  port: 5001
  auth: {{key: {KEY}, keyMode: shared}}
hispeed: 1000
pair: {{heartbeatInterval: 100, heartbeatMisses: 5, startupGrace: 5}}
managementServers:
  - name: ms01
    bmc: {{address: 10.251.0.11, username: {USER}, password: {PASSWORD}}}
    mlan: {{address: 10.252.0.1, port: 5002}}
  - name: ms02
    bmc: {{address: 10.251.0.12, username: {USER}, password: {PASSWORD}}}
    mlan: {{address: 10.252.0.2, port: 5002}}
servers:
  - name: node01
    bmc: {{address: 10.251.0.21, username: {USER}, password: {PASSWORD}}}
    cluster: true
  - name: node02
    bmc: {{address: 10.251.0.22, username: {USER}, password: {PASSWORD}}}
    cluster: true
"
    )
}

/// [`spec`] with an APC PDU at 10.251.0.31 (community [`super::snmp::COMMUNITY`]) and
/// PDU forced reset on for ms01 (`outlets.0`) and ms02 (`outlets.1`) with those outlets.
pub fn spec_with_pdu(outlets: (Option<u16>, Option<u16>)) -> String {
    let mut text = spec().replace(
        "managementServers:\n",
        &format!(
            "snmp: {{community: {}}}\npdus:\n  - {{address: 10.251.0.31, model: APC_RPDU}}\nmanagementServers:\n",
            super::snmp::COMMUNITY
        ),
    );
    for (n, outlet) in [(1, outlets.0), (2, outlets.1)] {
        if let Some(o) = outlet {
            let line = format!("    mlan: {{address: 10.252.0.{n}, port: 5002}}\n");
            text = text.replace(
                &line,
                &format!(
                    "{line}    ipdu: {{enabled: true, timeout: 5, outlets: [{{pdu: 10.251.0.31, outlet: {o}}}]}}\n"
                ),
            );
        }
    }
    text
}

/// The two management servers, their BMCs, the node host and node02's BMC.
pub struct Pair {
    pub ms: [Daemon; 2],
    pub bmc: [SimBmc; 2],
    pub node02_bmc: SimBmc,
    pub hosts: [Netns; 3],
    _bmc_hosts: [Netns; 3],
    pub lan: Bridge,
}

fn bmc_in(ns: &Netns, lan: &Bridge, last: u8, pidfile: Option<&std::path::Path>) -> SimBmc {
    lan.join(ns, "lan0", Some(&format!("10.251.0.{last}/24")));
    let mut c = SimConfig::default().in_netns(ns.name(), Ipv4Addr::new(10, 251, 0, last), 623);
    if let Some(p) = pidfile {
        c = c.kill_on_fence(p);
    }
    SimBmc::with(c)
}

impl Pair {
    /// Both management servers started together.
    pub fn start() -> Pair {
        Pair::start_with(&spec())
    }

    /// Both started together on `spec` (the addresses of [`spec`]).
    pub fn start_with(text: &str) -> Pair {
        let lan = Bridge::new();
        let hosts = [Netns::new(), Netns::new(), Netns::new()];
        for (n, h) in (1..).zip(&hosts) {
            h.sysctl("net.ipv4.conf.all.arp_accept", "1");
            lan.join(h, "lan0", Some(&format!("10.251.0.{n}/24")));
        }
        // node02's monitor speaks from a second address of the node host.
        hosts[2].ip(&["addr", "add", "10.251.0.4/24", "dev", "lan0"]);
        veth(
            &hosts[0],
            "mlan0",
            Some("10.252.0.1/30"),
            &hosts[1],
            "mlan0",
            Some("10.252.0.2/30"),
        );
        let ms = [0, 1].map(|i| {
            Daemon::new(text)
                .in_netns(hosts[i].name())
                .no_watch()
                .arg("--mserver")
                .arg(["ms01", "ms02"][i])
                .arg("--hardware-poll-ms")
                .arg("0")
        });
        let bmc_hosts = [Netns::new(), Netns::new(), Netns::new()];
        let bmc = [0, 1].map(|i| bmc_in(&bmc_hosts[i], &lan, 11 + i as u8, Some(&ms[i].pidfile())));
        let node02_bmc = bmc_in(&bmc_hosts[2], &lan, 22, None);
        let mut p = Pair {
            ms,
            bmc,
            node02_bmc,
            hosts,
            _bmc_hosts: bmc_hosts,
            lan,
        };
        for d in &mut p.ms {
            d.spawn();
        }
        for d in &mut p.ms {
            d.wait_ready();
        }
        p
    }

    /// The PDU of [`spec_with_pdu`]: net-snmp's `snmpd` with the PDU emulator, on a host
    /// of its own in the LAN.
    pub fn start_pdu(&self) -> (Netns, super::snmp::Snmpd) {
        let host = Netns::new();
        self.lan.join(&host, "lan0", Some("10.251.0.31/24"));
        let pdu = super::snmp::Snmpd::start(super::snmp::Options {
            netns: Some((host.name().to_string(), Ipv4Addr::new(10, 251, 0, 31))),
            ..super::snmp::Options::default()
        });
        (host, pdu)
    }

    /// Started together, with ms01 elected active (holding the address) and ms02 standby.
    pub fn up() -> Pair {
        let p = Pair::start();
        p.wait_roles(["active", "standby"]);
        p.wait_active(0);
        p
    }

    pub fn pair(&self, i: usize) -> Value {
        self.ms[i].status()["pair"].clone()
    }

    pub fn role(&self, i: usize) -> String {
        self.pair(i)["role"].as_str().unwrap_or("?").to_string()
    }

    pub fn wait_roles(&self, want: [&str; 2]) {
        wait_until(
            &format!("roles {want:?}"),
            WAIT,
            || [self.role(0), self.role(1)],
            |r| r[0] == want[0] && r[1] == want[1],
        );
    }

    /// Waits until `i` alone serves, with the address on its LAN interface.
    pub fn wait_active(&self, i: usize) -> Value {
        wait_until(
            &format!("{} active with the address", ["ms01", "ms02"][i]),
            WAIT,
            || self.pair(i),
            |p| p["role"] == "active" && p["address"] == "held on lan0",
        )
    }

    /// Whether the reset path's address is on `host`'s LAN interface.
    pub fn holds_address(&self, host: usize) -> bool {
        self.hosts[host]
            .ip(&["-br", "addr", "show", "dev", "lan0"])
            .contains("10.251.0.100/24")
    }

    /// `haconn node …` on the node host, signed with the shared key.
    pub fn node(&self, args: &[&str]) -> Run {
        let key = self.ms[0].write("node.key", KEY);
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.extend(
            [
                "--connector",
                "10.251.0.100:5001",
                "--key-file",
                &key.display().to_string(),
            ]
            .map(String::from),
        );
        let mut cmd: Command = self.hosts[2].command(env!("CARGO_BIN_EXE_haconn"));
        cmd.env("HACONN_LOG", "warn");
        execute(cmd, a, Vec::new())
    }

    /// node01 checks in (registering its monitor) and must be told it is resettable.
    pub fn check(&self, who: &str) -> Run {
        let run = self.node(&["node", "check", "--system", who, "--subsystem", "1"]);
        run.code(0)
            .stdout_has(&format!("CHECK-REPLY system={who}"))
            .stdout_has("resettable=yes");
        run
    }

    /// node02's monitor checks in from its own address (10.251.0.4).
    pub fn check_node02(&self) {
        self.node(&[
            "node",
            "check",
            "--bind",
            "10.251.0.4",
            "--system",
            "node02",
            "--subsystem",
            "1",
        ])
        .code(0);
    }

    /// node01 asks (from 10.251.0.3) for node02's reset and waits for the outcome.
    pub fn reset_node02(&self) -> Run {
        self.node(&[
            "node",
            "reset",
            "--system",
            "node01",
            "--subsystem",
            "1",
            "--target-system",
            "node02",
            "--target",
            "1",
        ])
    }

    /// Waits until the standby (ms02) shows a monitor registered at `ip`, taken from the
    /// active.
    pub fn wait_registered_on_standby(&self, ip: &str) {
        wait_until(
            "the registration on the standby",
            WAIT,
            || {
                self.ms[1]
                    .haconn(&["show", "hamonitor", "--output", "json"])
                    .stdout
            },
            |out| out.contains(ip),
        );
    }

    /// Waits until the standby (ms02) has taken the active's (ms01) reset-core state as it
    /// is now.
    pub fn wait_standby_synced(&self) {
        let want = self.ms[0].status()["resetPath"]["syncGeneration"]
            .as_u64()
            .expect("syncGeneration");
        wait_until(
            "the standby's copy of the reset core's state",
            WAIT,
            || self.ms[0].status()["resetPath"]["standbyGeneration"].as_u64(),
            |g| g.is_some_and(|g| g >= want),
        );
    }

    /// Waits for node02's hard reset; then its BMC must have had `nmis` NMIs and one hard
    /// reset.
    pub fn wait_node02_reset(&self, nmis: usize) {
        wait_until(
            "node02's hard reset",
            WAIT,
            || self.node02_bmc.resets().len(),
            |n| *n >= 1,
        );
        assert_eq!(self.node02_bmc.nmis().len(), nmis, "{}", self.diagnostics());
        assert_eq!(self.node02_bmc.resets().len(), 1, "{}", self.diagnostics());
    }

    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (i, d) in self.ms.iter().enumerate() {
            s += &format!(
                "--- ms0{} event.log:\n{}\n--- stderr:\n{}\n",
                i + 1,
                std::fs::read_to_string(d.event_log()).unwrap_or_default(),
                d.stderr()
            );
        }
        for (i, b) in self.bmc.iter().enumerate() {
            s += &format!("--- ms0{} BMC chassis: {:?}\n", i + 1, b.chassis());
        }
        s
    }
}
