//! Management-server duplication, for real (issue 14.7): see `support::pair` for the
//! hosts, the LAN, the mlan and the BMCs that really fence. Skipped, saying why, where
//! network namespaces cannot be made (not root).

use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::netns::{require_netns, wait_until};
use crate::support::pair::{Pair, WAIT};
use crate::support::unpack_tar_gz as unpack;

fn running(d: &mut Daemon) -> bool {
    d.is_running()
}

#[test]
fn both_start_together_one_is_active_and_checks_say_redundant() {
    require_netns!();
    let p = Pair::up();
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
    let mut p = Pair::up();
    p.check("node01");
    p.wait_registered_on_standby("10.251.0.3");
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
    // The new active knew node01's registration from the old one: its reset is admitted
    // without a new check, runs once, on node02's BMC.
    let run = p.reset_node02();
    run.code(0);
    p.wait_node02_reset(1);
    let events = std::fs::read_to_string(p.ms[1].event_log()).unwrap();
    assert!(
        events.contains("pair: ms01 fenced: BMC 10.251.0.11 acknowledged the hard reset"),
        "{events}"
    );
    // The fence is in the new active's reset log, before node02's reset.
    let resets = std::fs::read_to_string(p.ms[1].reset_log()).unwrap();
    let at = |l: &str| {
        resets
            .find(l)
            .unwrap_or_else(|| panic!("{l} not in {resets}"))
    };
    assert!(
        at("HARDRESET ms01 ---- SEND ---- ---- ---- P")
            < at("HARDRESET ms01 ---- RECV ---- ---- ---- P")
    );
    assert!(at("HARDRESET ms01 ---- RECV") < at("RM-RESET node02"));
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
    let mut p = Pair::up();
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
fn act_restart_hands_over_without_fencing_and_comes_back_as_standby() {
    require_netns!();
    let mut p = Pair::up();
    let pid = p.ms[0].pid();
    let run = p.ms[0].haconn(&["act", "restart"]);
    run.code(0).stdout_has("ms02 took over");
    p.wait_active(1);
    // The old active restarted in place (same pid: systemd follows) and is the standby.
    wait_until(
        "ms01 restarted",
        WAIT,
        || std::fs::read_to_string(p.ms[0].event_log()).unwrap_or_default(),
        |log| log.contains("restarting") && log.matches("haconn daemon started").count() == 2,
    );
    p.ms[0].wait_ready();
    assert_eq!(p.ms[0].pid(), pid);
    assert!(running(&mut p.ms[0]));
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
fn sby_shutdown_from_the_active_stops_the_standby_and_act_shutdown_stops_both() {
    require_netns!();
    let mut p = Pair::up();
    p.ms[0]
        .haconn(&["sby", "shutdown"])
        .code(0)
        .stdout_has("ms02 (standby) stops");
    let status = p.ms[1].wait_exit(WAIT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "{}",
        p.diagnostics()
    );
    // The active goes on alone, not redundant, and fences nobody.
    wait_until(
        "the active alone",
        WAIT,
        || p.pair(0),
        |s| s["peerLink"] == "NG" && s["role"] == "active",
    );
    p.check("node01").stdout_has("redundant=no");
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
    // Both again, then `act shutdown` stops both, the standby first.
    p.ms[1].spawn();
    p.ms[1].wait_ready();
    p.wait_roles(["active", "standby"]);
    p.ms[0]
        .haconn(&["act", "shutdown"])
        .code(0)
        .stdout_has("ms02 stops; ms01 stops");
    for d in &mut p.ms {
        assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    }
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
}

#[test]
fn a_dead_standby_makes_checks_say_not_redundant_and_a_flapping_link_changes_nothing() {
    require_netns!();
    let mut p = Pair::up();
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

#[test]
fn the_active_sends_its_spec_to_the_standby_and_reloads_complete_on_both() {
    require_netns!();
    let p = Pair::start();
    p.wait_roles(["active", "standby"]);
    // The new standby got the active's spec at once.
    wait_until(
        "ms02 in sync",
        WAIT,
        || p.pair(0)["peerSpec"].as_str().unwrap_or("").to_string(),
        |s| s.starts_with("in sync ("),
    );
    let mut text = crate::support::pair::spec();
    text.push_str(&format!(
        "  - name: node03\n    bmc: {{address: 10.251.0.23, username: {}, password: {}}}\n",
        crate::support::ipmi::USER,
        crate::support::ipmi::PASSWORD
    ));
    let file = p.ms[0].write("changed.yaml", &text);
    let run = p.ms[0].apply(&file);
    run.code(0)
        .stdout_has("-- HA monitor connector reload : completed. --");
    let rows: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("ms0"))
        .collect();
    assert!(
        rows.iter()
            .any(|l| l.contains("ms01") && l.ends_with(": Change"))
            && rows
                .iter()
                .any(|l| l.contains("ms02") && l.ends_with(": Change")),
        "{run}"
    );
    assert!(p.ms[1].settings().contains("node03"), "{}", p.diagnostics());
    // Both status views follow within a heartbeat interval or two.
    wait_until(
        "the same checksum on both, and the active saying so",
        WAIT,
        || (p.pair(0), p.pair(1)),
        |(a, b)| {
            a["specChecksum"] == b["specChecksum"]
                && a["peerSpec"] == format!("in sync ({})", a["specChecksum"].as_str().unwrap())
        },
    );
    // The standby takes no spec but the active's.
    let other = p.ms[1].write("other.yaml", &crate::support::pair::spec());
    let refused = p.ms[1].apply(&other);
    refused
        .code(1)
        .stderr_has("ms02 is the standby of its pair: it takes its spec from the active (ms01)");
    assert!(p.ms[1].settings().contains("node03"));
    p.ms[0]
        .haconn(&["act", "copy"])
        .code(0)
        .stdout_has("ms02: applied (0 changes)");
}

#[test]
fn a_reset_asked_for_during_the_failover_completes_once_on_the_new_active() {
    require_netns!();
    let mut p = Pair::up();
    p.check("node01");
    p.wait_registered_on_standby("10.251.0.3");
    p.ms[0].kill9();
    // Asked at once: the node tool retransmits (same request number) until the new
    // active answers.
    let run = p.reset_node02();
    run.code(0);
    assert_eq!(run.stdout.matches("result=ACCEPTED").count(), 1, "{run}");
    p.wait_node02_reset(1);
    assert_eq!(p.pair(1)["role"], "active");
}

/// A reset in flight at the takeover: the standby knows which systems the active was
/// resetting, for whom, and how far. With node02's reset in flight (its NMI sent, and the
/// standby told so) the active dies; the new active carries the reset on from there (no
/// second NMI: the node may be dumping; the rest of the soft-reset window, then the hard
/// reset) and sends its final reply to node01's original request, and node02 cannot get
/// its partner reset meanwhile.
#[test]
fn a_reset_in_flight_at_the_takeover_is_carried_on_and_keeps_the_pair_apart() {
    require_netns!();
    let mut p = Pair::up();
    p.check("node01");
    p.check_node02();
    let reset = |req: &str, who: &str, target: &str, wait: &str| {
        let from = if who == "node02" {
            "10.251.0.4"
        } else {
            "10.251.0.3"
        };
        vec![
            "node",
            "reset",
            "--bind",
            from,
            "--system",
            who,
            "--subsystem",
            "1",
            "--target-system",
            target,
            "--target",
            "1",
            "--req",
            req,
            "--wait",
            wait,
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let first = {
        let key = p.ms[0].write("node.key", crate::support::pair::KEY);
        let mut cmd = p.hosts[2].command(env!("CARGO_BIN_EXE_haconn"));
        cmd.args(reset("1", "node01", "node02", "30"))
            .args([
                "--connector",
                "10.251.0.100:5001",
                "--key-file",
                &key.display().to_string(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd.spawn().expect("spawn the first reset")
    };
    wait_until(
        "node02's NMI",
        WAIT,
        || p.node02_bmc.nmis().len(),
        |n| *n == 1,
    );
    wait_until(
        "node02 not normal on the standby",
        WAIT,
        || {
            p.ms[1]
                .haconn(&["show", "hamonitor", "--name", "node02", "--output", "json"])
                .stdout
        },
        |out| out.contains("\"failed\""),
    );
    p.wait_standby_synced();
    p.ms[0].kill9();
    p.wait_active(1);
    // The partner cannot get node01 reset.
    let crossing: Vec<String> = reset("2", "node02", "node01", "5");
    let refs: Vec<&str> = crossing.iter().map(String::as_str).collect();
    let run = p.node(&refs);
    run.code(1);
    assert!(!run.stdout.contains("result=ACCEPTED"), "{run}");
    // node01's first request gets its final reply from the new active.
    let first = first.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(0), "{out}\n{}", p.diagnostics());
    assert!(
        out.contains("req=1 target-system=node02 target=1 result=DUMP")
            && out.contains("state=REBOOT"),
        "{out}"
    );
    // One NMI (the old active's), one hard reset (the new one's).
    p.wait_node02_reset(1);
}

/// Issue 14.3, never reported twice: the end of a reset (final reply, attention) leaves
/// the active only once the standby has taken the state that ended it, so an active
/// that dies right after a final reply leaves nothing for the new active to do again.
#[test]
fn a_reset_reported_just_before_the_active_dies_is_not_done_again() {
    require_netns!();
    let mut p = Pair::up();
    p.check("node01");
    p.wait_registered_on_standby("10.251.0.3");
    let run = p.reset_node02();
    run.code(0).stdout_has("result=DUMP");
    p.wait_node02_reset(1);
    let counters = p.ms[0].status()["resetPath"].clone();
    assert!(counters["heldForStandby"].as_u64() >= Some(1), "{counters}");
    assert_eq!(counters["heldTimedOut"], 0, "{counters}");
    // Again, and the active dies as soon as node01 has its final reply.
    p.check_node02();
    p.reset_node02().code(0).stdout_has("result=DUMP");
    p.ms[0].kill9();
    p.wait_active(1);
    // A reset wrongly carried on would start at once: give it time to show.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(p.node02_bmc.nmis().len(), 2, "{}", p.diagnostics());
    assert_eq!(p.node02_bmc.resets().len(), 2, "{}", p.diagnostics());
}

/// The fence's second path, for real: the active dies and its BMC does not answer either;
/// the standby waits the active's `ipdu.timeout`, cuts its outlet on a real SNMP agent
/// (net-snmp `snmpd` with the PDU emulator, in the LAN) and serves only once the PDU
/// confirms the outlet off.
#[test]
fn with_the_bmc_silent_the_standby_fences_through_the_pdu_outlets() {
    require_netns!();
    let mut p = Pair::start_with(&crate::support::pair::spec_with_pdu((Some(3), None)));
    let (_pdu_host, pdu) = p.start_pdu();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    p.bmc[0].pause();
    p.ms[0].kill9();
    let s = p.wait_active(1);
    assert_eq!(s["peerState"], "reset", "{s:#}");
    let sets = pdu.sets();
    assert_eq!(sets.len(), 1, "{sets:?}\n{}", pdu.diagnostics());
    assert_eq!(
        (sets[0].view.as_str(), sets[0].outlet, sets[0].value),
        ("apc", 3, 2)
    );
    let events = std::fs::read_to_string(p.ms[1].event_log()).unwrap();
    assert!(
        events.contains("pair: ms01 fenced: outlets 10.251.0.31#3 confirmed off"),
        "{events}"
    );
    let resets = std::fs::read_to_string(p.ms[1].reset_log()).unwrap();
    for l in [
        "HARDRESET ms01 ---- SEND ---- ---- ---- P",
        "IPDUSD ms01 ---- SEND ---- ---- ---- 10.251.0.31 3 OFF",
        "IPDUSD ms01 ---- RECV ---- ---- ---- 10.251.0.31 3 OFF",
    ] {
        assert!(resets.contains(l), "{l} not in {resets}");
    }
    assert!(!resets.contains("HARDRESET ms01 ---- RECV"), "{resets}");
    p.bmc[0].resume();
}

/// The seed's PDU-cut tests of the management servers in a pair: `sby ipdusd` runs on the
/// active and switches the standby's outlets off and on again (the standby refuses to run
/// it); `act ipdusd` hands over first, then the new active tests the old active's outlets
/// (a server cannot cut its own power and switch it back on).
#[test]
fn pdu_cut_tests_of_the_management_servers_run_on_the_active() {
    require_netns!();
    let p = Pair::start_with(&crate::support::pair::spec_with_pdu((Some(3), Some(4))));
    let (_pdu_host, pdu) = p.start_pdu();
    p.wait_roles(["active", "standby"]);
    p.wait_active(0);
    p.ms[1]
        .haconn(&["sby", "ipdusd", "--mode", "same", "--yes"])
        .code(1)
        .stderr_has("PDU-cut tests of the management servers run on the active (ms01)");
    assert!(pdu.sets().is_empty());
    p.ms[0]
        .haconn(&["sby", "ipdusd", "--mode", "same", "--offtime", "5", "--yes"])
        .code(0);
    let sets = || -> Vec<(u16, i64)> { pdu.sets().iter().map(|l| (l.outlet, l.value)).collect() };
    assert_eq!(sets(), [(4, 2), (4, 1)], "{}", pdu.diagnostics());
    let run = p.ms[0].haconn(&["act", "ipdusd", "--mode", "same", "--offtime", "5", "--yes"]);
    run.code(0)
        .stdout_has("handing over to ms02 first: it runs the test of ms01's outlets")
        .stdout_has("ms02 took over; it is testing ms01's outlets");
    assert_eq!(
        sets(),
        [(4, 2), (4, 1), (3, 2), (3, 1)],
        "{}",
        pdu.diagnostics()
    );
    p.wait_roles(["standby", "active"]);
    // Nobody was fenced by the tests.
    assert!(
        p.bmc.iter().all(|b| b.chassis().is_empty()),
        "{}",
        p.diagnostics()
    );
}

/// Issue 17.2: `haconn dump` on either server of a pair holds the other's own dump,
/// packed by its daemon and sent sealed over the mlan, with no secret of the spec.
#[test]
fn haconn_dump_on_one_server_holds_the_peers_own_dump() {
    require_netns!();
    let p = Pair::up();
    let peer_of = ["ms02", "ms01"];
    for (i, d) in p.ms.iter().enumerate() {
        let out = d.path(&format!("dump-{i}.tar.gz"));
        let log_dir = d.event_log().parent().expect("a log dir").to_path_buf();
        let run = d.haconn(&[
            "dump",
            "-o",
            &out.display().to_string(),
            "--state-dir",
            &d.state_dir().display().to_string(),
            "--log-dir",
            &log_dir.display().to_string(),
        ]);
        run.code(0);
        let members = unpack(std::fs::File::open(&out).expect("the archive"));
        let peer = peer_of[i];
        let (name, inner) = members
            .iter()
            .find(|(n, _)| n.ends_with(&format!("/peer/{peer}.tar.gz")))
            .unwrap_or_else(|| panic!("no peer/{peer}.tar.gz in {:?}\n{run}", members.keys()));
        let readme = members
            .iter()
            .find(|(n, _)| n.ends_with("/README.txt"))
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .expect("README.txt");
        assert!(
            readme.contains(&format!("peer/{peer}.tar.gz (")) && readme.contains("over the mlan"),
            "{readme}"
        );
        let theirs = unpack(inner.as_slice());
        let has = |suffix: &str| theirs.keys().any(|n| n.ends_with(suffix));
        assert!(has("/logs/event.log"), "{name}: {:?}", theirs.keys());
        assert!(has("/daemon/status.json"), "{name}: {:?}", theirs.keys());
        assert!(
            !theirs.keys().any(|n| n.contains("/peer/")),
            "the peer's archive does not nest another"
        );
        let their_status = theirs
            .iter()
            .find(|(n, _)| n.ends_with("/daemon/status.json"))
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        assert!(
            their_status.contains(&format!("\"localManagementServer\": \"{peer}\"")),
            "{their_status}"
        );
        let their_readme = theirs
            .iter()
            .find(|(n, _)| n.ends_with("/README.txt"))
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default();
        assert!(
            their_readme.contains("packed for")
                && their_readme.contains("holds this server's files only"),
            "{their_readme}"
        );
        // The BMC password is inline in the pair's spec: in no member of either archive.
        let secret = crate::support::ipmi::PASSWORD.as_bytes();
        for (n, data) in members.iter().chain(theirs.iter()) {
            assert!(
                !data.windows(secret.len()).any(|w| w == secret),
                "{n} holds the BMC password"
            );
        }
    }
}
