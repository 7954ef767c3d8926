//! Management-server duplication, for real (issue 14.7): two `haconn daemon`s in two
//! network namespaces joined by a veth (the mlan) and by a bridge (the reset-path LAN),
//! a third namespace of HA monitors driven by `haconn node`, and for each management
//! server an `ipmi_sim` BMC on the LAN whose chassis control really kills (SIGKILL) that
//! server's daemon on a hard reset: fencing has its real effect.
//!
//! Every address lives only inside the namespaces: the reset path 10.251.0.0/24 (ms01
//! .1, ms02 .2, the node .3, BMCs .11/.12/.21/.22, the virtual address .100) and the mlan
//! 10.252.0.0/30. Skipped, saying why, where namespaces cannot be made (not root).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::daemon::Daemon;
use crate::support::ipmi::{PASSWORD, SimBmc, SimConfig, USER};
use crate::support::netns::{Bridge, Netns, require_netns, veth, wait_until};
use crate::support::run::{Run, execute};

/// Generous for a loaded 2-core machine; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "pairtestkey0123456789";

fn spec() -> String {
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

/// The two management servers, their BMCs, the node host and node02's BMC.
struct Pair {
    ms: [Daemon; 2],
    bmc: [SimBmc; 2],
    node02_bmc: SimBmc,
    hosts: [Netns; 3],
    _bmc_hosts: [Netns; 3],
    _lan: Bridge,
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
    fn start() -> Pair {
        let lan = Bridge::new();
        let hosts = [Netns::new(), Netns::new(), Netns::new()];
        for (n, h) in (1..).zip(&hosts) {
            h.sysctl("net.ipv4.conf.all.arp_accept", "1");
            lan.join(h, "lan0", Some(&format!("10.251.0.{n}/24")));
        }
        veth(
            &hosts[0],
            "mlan0",
            Some("10.252.0.1/30"),
            &hosts[1],
            "mlan0",
            Some("10.252.0.2/30"),
        );
        let ms = [0, 1].map(|i| {
            Daemon::new(&spec())
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
            _lan: lan,
        };
        for d in &mut p.ms {
            d.spawn();
        }
        for d in &mut p.ms {
            d.wait_ready();
        }
        p
    }

    fn pair(&self, i: usize) -> Value {
        self.ms[i].status()["pair"].clone()
    }

    fn role(&self, i: usize) -> String {
        self.pair(i)["role"].as_str().unwrap_or("?").to_string()
    }

    fn wait_roles(&self, want: [&str; 2]) {
        wait_until(
            &format!("roles {want:?}"),
            WAIT,
            || [self.role(0), self.role(1)],
            |r| r[0] == want[0] && r[1] == want[1],
        );
    }

    /// Waits until `i` alone serves, with the address on its LAN interface.
    fn wait_active(&self, i: usize) -> Value {
        wait_until(
            &format!("{} active with the address", ["ms01", "ms02"][i]),
            WAIT,
            || self.pair(i),
            |p| p["role"] == "active" && p["address"] == "held on lan0",
        )
    }

    /// Whether the reset path's address is on `host`'s LAN interface.
    fn holds_address(&self, host: usize) -> bool {
        self.hosts[host]
            .ip(&["-br", "addr", "show", "dev", "lan0"])
            .contains("10.251.0.100/24")
    }

    /// `haconn node …` on the node host, signed with the shared key.
    fn node(&self, args: &[&str]) -> Run {
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
    fn check(&self, who: &str) -> Run {
        let run = self.node(&["node", "check", "--system", who, "--subsystem", "1"]);
        run.code(0)
            .stdout_has(&format!("CHECK-REPLY system={who}"))
            .stdout_has("resettable=yes");
        run
    }

    fn diagnostics(&self) -> String {
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

fn running(d: &mut Daemon) -> bool {
    d.is_running()
}

#[test]
fn both_start_together_one_is_active_and_checks_say_redundant() {
    require_netns!();
    let p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    assert!(
        p.holds_address(0) && !p.holds_address(1),
        "{}",
        p.diagnostics()
    );
    let run = p.check("node01");
    run.stdout_has("redundant=yes");
    // Nobody was fenced to get here.
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
    let status = p.ms[0].haconn(&["show", "status"]);
    status.code(0).stdout_has(
        "pair              : ms01 is active; peer ms02 standby (link OK, normal); redundant",
    );
}

#[test]
fn kill_9_of_the_active_fences_it_moves_the_address_and_resets_go_on() {
    require_netns!();
    let mut p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    p.check("node01");
    let killed = Instant::now();
    p.ms[0].kill9();
    let s = p.wait_active(1);
    let took = killed.elapsed();
    assert_eq!(s["takeovers"], 1, "{s:#}");
    assert_eq!(s["peerState"], "reset", "{s:#}");
    // The fence was a hard reset at ms01's BMC; ms02's BMC was never touched.
    assert_eq!(
        p.bmc[0]
            .chassis()
            .iter()
            .map(|(_, c)| c.as_str())
            .collect::<Vec<_>>(),
        ["set reset 1"],
        "{}",
        p.diagnostics()
    );
    assert!(p.bmc[1].chassis().is_empty());
    assert!(p.holds_address(1), "{}", p.diagnostics());
    eprintln!("takeover after kill -9: {took:?}");
    // The new active answers at once; a reset through it runs once, on node02's BMC.
    p.check("node01");
    let run = p.node(&[
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
    ]);
    run.code(0);
    wait_until(
        "node02's hard reset",
        WAIT,
        || p.node02_bmc.resets().len(),
        |n| *n >= 1,
    );
    assert_eq!(p.node02_bmc.nmis().len(), 1, "{}", p.diagnostics());
    assert_eq!(p.node02_bmc.resets().len(), 1, "{}", p.diagnostics());
    let events = std::fs::read_to_string(p.ms[1].event_log()).unwrap();
    assert!(
        events.contains("pair: ms01 fenced: BMC 10.251.0.11 acknowledged the hard reset"),
        "{events}"
    );
}

#[test]
fn a_frozen_active_is_fenced_and_never_serves_again() {
    require_netns!();
    let mut p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.ms[0].signal(libc::SIGSTOP);
    p.wait_active(1);
    // The fence's SIGKILL ended the stopped process: there is no second active to wake.
    wait_until("ms01's daemon gone", WAIT, || running(&mut p.ms[0]), |r| !r);
    assert_eq!(p.bmc[0].fence_kills().len(), 1, "{}", p.diagnostics());
    assert_eq!(p.pair(1)["takeovers"], 1);
}

#[test]
fn an_mlan_cut_ends_with_exactly_one_active() {
    require_netns!();
    let mut p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.hosts[0].ip(&["link", "set", "mlan0", "down"]);
    p.wait_active(1);
    wait_until(
        "ms01's daemon fenced",
        WAIT,
        || running(&mut p.ms[0]),
        |r| !r,
    );
    assert!(p.holds_address(1));
}

#[test]
fn with_the_actives_bmc_unreachable_too_the_standby_stays_and_says_why() {
    require_netns!();
    let mut p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    p.bmc[0].pause();
    p.hosts[0].ip(&["link", "set", "mlan0", "down"]);
    let s = wait_until(
        "ms02 blocked",
        WAIT,
        || p.pair(1),
        |s| s["blocked"].is_string(),
    );
    assert_eq!(s["role"], "standby", "{s:#}");
    assert!(
        s["blocked"].as_str().unwrap().contains("BMC 10.251.0.11"),
        "{s:#}"
    );
    // The old active still serves: exactly one active.
    assert!(running(&mut p.ms[0]));
    assert_eq!(p.role(0), "active");
    assert!(p.holds_address(0) && !p.holds_address(1));
    p.check("node01").stdout_has("redundant=no");
    let text = p.ms[1].haconn(&["show", "status"]);
    text.code(0)
        .stdout_has("CANNOT TAKE OVER  : the peer is lost and not fenced: ");
    p.bmc[0].resume();
}

#[test]
fn act_restart_hands_over_without_fencing() {
    require_netns!();
    let p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    let run = p.ms[0].haconn(&["act", "restart"]);
    run.code(0).stdout_has("ms02 took over");
    p.wait_active(1);
    p.wait_roles(["standby", "active"]);
    assert!(!p.holds_address(0) && p.holds_address(1));
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
    p.check("node01").stdout_has("redundant=yes");
    // On the standby the command is refused.
    p.ms[0].haconn(&["act", "restart"]).code(1);
}

#[test]
fn a_dead_standby_makes_checks_say_not_redundant_and_a_flapping_link_changes_nothing() {
    require_netns!();
    let mut p = Pair::start();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    // Down for less than the loss time (5 × 100 ms), a few times: no fence, same roles.
    for _ in 0..3 {
        p.hosts[0].ip(&["link", "set", "mlan0", "down"]);
        std::thread::sleep(Duration::from_millis(150));
        p.hosts[0].ip(&["link", "set", "mlan0", "up"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        [p.role(0), p.role(1)],
        ["active", "standby"],
        "{}",
        p.diagnostics()
    );
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
    p.ms[1].kill9();
    wait_until(
        "the check reply saying not redundant",
        WAIT,
        || {
            p.node(&["node", "check", "--system", "node01", "--subsystem", "1"])
                .stdout
        },
        |out| out.contains("redundant=no"),
    );
    // The active never fences.
    assert!(p.bmc[1].chassis().is_empty(), "{}", p.diagnostics());
}
