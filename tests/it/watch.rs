//! The hardware watch end to end: the real daemon driving real peers on loopback —
//! OpenIPMI's `ipmi_sim` for BMCs, net-snmp's `snmpd` with the project's PDU emulator, and
//! OpenSSH's `sshd` with the project's ESXi command doubles —
//! and what operators and HA monitors see: `show status`, check replies, POFF attention,
//! the PDU escalation when a BMC dies, and the operator PDU commands against a real agent.

use crate::support::esxi as esxi_support;
use crate::support::ipmi as ipmi_support;
use crate::support::resetpath as resetpath_support;
use crate::support::snmp as snmp_support;

use std::time::{Duration, Instant};

use esxi_support::{Logins, Sshd};
use ipmi_support::{PASSWORD, SimBmc, sim_at};
use resetpath_support::{Lab, Stream, free_port, haconn};
use snmp_support::Snmpd;

/// How often the daemons of these tests poll their hardware.
const POLL_MS: u32 = 1000;

/// The lab spec with labnode01..03 on these simulators (the management server's BMC stays
/// on a loopback port where nothing answers) and, when given, labnode03 fed by outlets 3
/// and 4 of an IBM PDU at `pdu` with PDU forced reset on.
fn spec(
    nodes: [&SimBmc; 3],
    password: &str,
    pdu: Option<(&Snmpd, u32)>,
) -> impl FnOnce(String) -> String {
    let lines: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, b)| ipmi_support::lab_server(i, b, password))
        .collect();
    let pdu = pdu.map(|(s, recovery)| (s.port, recovery));
    move |text: String| {
        let (head, _) = text.split_once("servers:\n").expect("servers");
        let mut out = head.to_string();
        if let Some((port, _)) = pdu {
            out.push_str(&format!(
                "snmp: {{community: {}}}\npdus:\n  - {{address: 127.0.0.1, port: {port}, model: IBM_PDU}}\n",
                snmp_support::COMMUNITY
            ));
        }
        out.push_str("servers:\n");
        for (i, l) in lines.iter().enumerate() {
            out.push_str(l);
            if let (2, Some((_, recovery))) = (i, pdu) {
                out.push_str(&format!(
                    "    ipdu: {{timeout: 5, recoveryTime: {recovery}, outlets: [{{pdu: 127.0.0.1, outlet: 3}}, {{pdu: 127.0.0.1, outlet: 4}}]}}\n"
                ));
            }
        }
        out
    }
}

fn status(lab: &Lab) -> serde_json::Value {
    let sock = lab.path("sock").display().to_string();
    let run = haconn(&[
        "show",
        "status",
        "--output",
        "json",
        "--control-socket",
        &sock,
    ]);
    run.code(0);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    v["hardware"].clone()
}

fn server<'a>(h: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    h["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {h:#}"))
}

/// Polls `show status` until `pred` holds (bounded).
fn until(lab: &Lab, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = status(lab);
        if pred(&h) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {h:#}\n{}",
            lab.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn guest<'a>(h: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    server(h, "esx01")["guests"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no guest {name} in {h:#}"))
}

/// `haconn node reset` of `target` (system, subsystem#) asked by `by`, which checks in
/// first (the connector acts only for registered requesters); waits for the answer.
fn reset(lab: &Lab, by: (&str, u32), target: (&str, u32)) -> resetpath_support::Run {
    let port = free_port().to_string();
    let args = [
        "--system",
        by.0,
        "--subsystem",
        &by.1.to_string(),
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
    ];
    let registered = lab.node("check", &args);
    assert!(registered.stdout.contains("CHECK-REPLY"), "{registered}");
    lab.node(
        "reset",
        &[
            "--system",
            by.0,
            "--subsystem",
            &by.1.to_string(),
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--target-system",
            target.0,
            "--target",
            &target.1.to_string(),
        ],
    )
}

fn check(lab: &Lab, system: &str, subsystem: u32, port: u16) -> String {
    let run = lab.node(
        "check",
        &[
            "--system",
            system,
            "--subsystem",
            &subsystem.to_string(),
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ],
    );
    run.stdout.clone()
}

#[test]
fn a_power_off_sends_poff_attention_within_one_poll_interval() {
    let (b1, b2, b3) = (sim_at(11), sim_at(12), sim_at(13));
    let lab = Lab::start_real(1000, POLL_MS, spec([&b1, &b2, &b3], PASSWORD, None));
    until(&lab, "labnode01 seen powered on", |h| {
        server(h, "labnode01")["power"] == "pon"
    });
    // labnode01's HA monitor registers; another node's monitor listens for attention.
    let port = free_port();
    lab.register("labnode01", 1, port, None);
    let listen_port = free_port();
    lab.register("labnode02", 2, listen_port, None);
    let mut listener = lab.listener("labnode02", "127.0.0.1", listen_port);

    // The node loses power (as a power button or a PDU would do it), behind haconn's back.
    b1.power_off_by_ipmitool();
    let at = Instant::now();
    let line = listener.wait_line(Stream::Out, "ATTENTION");
    let took = at.elapsed();
    assert!(
        line.contains("labnode01") && line.contains("POFF"),
        "{line}"
    );
    // One poll interval, plus the time a loaded machine may take to run it.
    assert!(
        took < Duration::from_millis(u64::from(POLL_MS) + 1500),
        "POFF attention {took:?} after the power-off"
    );
    let h = until(&lab, "labnode01 seen off", |h| {
        server(h, "labnode01")["power"] == "poff"
    });
    assert_eq!(server(&h, "labnode02")["power"], "pon");
    lab.wait_log("reset.log", "the ATTENTION line", |l| {
        l.contains("ATTENTION labnode01 1 SEND") && l.ends_with("POFF")
    });
    // Nothing was reset: haconn only reported what it saw.
    assert!(b1.nmis().is_empty() && b1.resets().is_empty());
    assert!(!lab.log("reset.log").contains("HARDRESET"));
}

#[test]
fn a_wrong_password_is_link_ng_with_the_reason_and_no_reset_is_reported() {
    let (b1, b2, b3) = (sim_at(21), sim_at(22), sim_at(23));
    let lab = Lab::start_real(1000, POLL_MS, spec([&b1, &b2, &b3], "wr0ngpassw0rd", None));
    let h = until(&lab, "every BMC refusing the login", |h| {
        h["servers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["bmc"]["link"] == "NG"))
    });
    let reason = server(&h, "labnode01")["bmc"]["reason"]
        .as_str()
        .expect("a reason")
        .to_lowercase();
    assert!(
        reason.contains("password") || reason.contains("auth"),
        "the reason names the login problem: {reason}"
    );
    assert_eq!(server(&h, "labnode01")["power"], "--");
    let text = haconn(&[
        "show",
        "status",
        "--control-socket",
        &lab.path("sock").display().to_string(),
    ]);
    text.code(0)
        .stdout_has("links not OK:")
        .stdout_has("labnode01 BMC: ");

    // A check says not resettable (no PDU to fall back on); a reset fails, and says so.
    let port = free_port();
    let reply = check(&lab, "labnode01", 1, port);
    assert!(reply.contains("resettable=no"), "{reply}");
    let run = reset(&lab, ("labnode02", 2), ("labnode01", 1));
    assert!(
        run.stdout.contains("result=FAIL"),
        "{run}\n{}",
        lab.diagnostics()
    );
    assert!(
        b1.nmis().is_empty() && b1.resets().is_empty(),
        "nothing reached the BMC"
    );

    // show hamonitor (the manual's states): `error` because labnode01 cannot be reset
    // now (BMC NG, no PDU path), with the reason; the failed reset is only the finer
    // state, never the state.
    let m = monitor(&lab, "labnode01");
    assert_eq!(
        (&m["state"], &m["detail"]),
        (&"error".into(), &"failed".into()),
        "{m:#}"
    );
    assert!(
        m["reason"].as_str().is_some_and(|r| r.starts_with("BMC: ")),
        "{m:#}"
    );
    let text = haconn(&[
        "show",
        "hamonitor",
        "--control-socket",
        &lab.path("sock").display().to_string(),
    ]);
    text.code(0)
        .stdout_has("cannot be reset now:")
        .stdout_has("    labnode01: BMC: ");
}

/// One row of `show hamonitor --json`.
fn monitor(lab: &Lab, system: &str) -> serde_json::Value {
    let all = lab.monitors();
    all["monitors"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["system"] == system))
        .cloned()
        .unwrap_or_else(|| panic!("no monitor row for {system}: {all:#}"))
}

#[test]
fn a_dead_bmc_falls_back_to_the_pdu_which_cuts_only_that_servers_outlets() {
    let (b1, b2) = (sim_at(31), sim_at(32));
    let mut b3 = sim_at(33);
    let mut pdu = Snmpd::start(snmp_support::Options::default());
    let lab = Lab::start_real(
        1000,
        POLL_MS,
        spec([&b1, &b2, &b3], PASSWORD, Some((&pdu, 5))),
    );
    until(&lab, "labnode03's BMC and PDU OK", |h| {
        let s = server(h, "labnode03");
        s["bmc"]["link"] == "OK" && s["pdu"]["link"] == "OK"
    });
    let h = status(&lab);
    let p = &h["pdus"][0];
    assert_eq!(p["firmware"], snmp_support::IBM_FIRMWARE, "{h:#}");
    assert_eq!(p["outlets"][0]["state"], "on", "{h:#}");
    let port = free_port();
    let reply = check(&lab, "labnode03", 3, port);
    assert!(reply.contains("resettable=yes via=bmc"), "{reply}");

    // The BMC dies: the check now says the PDU is the way.
    b3.kill();
    until(&lab, "labnode03's BMC NG", |h| {
        server(h, "labnode03")["bmc"]["link"] == "NG"
    });
    let reply = check(&lab, "labnode03", 3, port);
    assert!(reply.contains("resettable=yes via=pdu"), "{reply}");
    assert!(reply.contains("resettable through PDU"), "{reply}");

    // A reset cuts outlets 3 and 4 — no other — and switches them back after 5 s.
    let before = pdu.sets().len();
    let run = reset(&lab, ("labnode01", 1), ("labnode03", 3));
    let cut_done = Instant::now();
    assert!(
        run.stdout.contains("result=DUMP"),
        "{run}\n{}",
        lab.diagnostics()
    );
    let sets = pdu.wait_sets(before + 4, Duration::from_secs(15));
    let new: Vec<(u16, i64)> = sets[before..].iter().map(|s| (s.outlet, s.value)).collect();
    assert_eq!(new.len(), 4, "{new:?}\n{}", lab.diagnostics());
    let mut offs: Vec<u16> = new
        .iter()
        .filter(|(_, v)| *v == 0)
        .map(|(o, _)| *o)
        .collect();
    let mut ons: Vec<u16> = new
        .iter()
        .filter(|(_, v)| *v == 1)
        .map(|(o, _)| *o)
        .collect();
    offs.sort_unstable();
    ons.sort_unstable();
    assert_eq!((offs, ons), (vec![3, 4], vec![3, 4]), "{new:?}");
    assert!(
        cut_done.elapsed() >= Duration::from_secs(4),
        "the outlets stayed off for the recovery time"
    );
    let log = lab.log("reset.log");
    assert!(log.contains("IPDUSD labnode03 3 SEND"), "{log}");
    assert!(
        b1.nmis().is_empty() && b2.nmis().is_empty(),
        "no other node touched"
    );
    // The cut is a completed hard reset: the manual's `dump`, `reboot` only as the finer
    // state.
    let m = monitor(&lab, "labnode03");
    assert_eq!(
        (&m["state"], &m["detail"]),
        (&"dump".into(), &"reboot".into()),
        "{m:#}"
    );

    // The PDU dies too: nothing can reset labnode03 now, and the check says so.
    pdu.kill();
    until(&lab, "the PDU NG", |h| {
        server(h, "labnode03")["pdu"]["link"] == "NG"
    });
    let reply = check(&lab, "labnode03", 3, port);
    assert!(reply.contains("resettable=no"), "{reply}");
    let m = monitor(&lab, "labnode03");
    assert_eq!(
        (&m["state"], &m["detail"]),
        (&"error".into(), &"normal".into()),
        "{m:#}"
    );
    let reason = m["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("BMC: ") && reason.contains("PDU"), "{m:#}");
}

#[test]
fn a_serial_pdu_test_switches_one_outlet_at_a_time_with_the_given_times() {
    let (b1, b2, b3) = (sim_at(41), sim_at(42), sim_at(43));
    let pdu = Snmpd::start(snmp_support::Options::default());
    let lab = Lab::start_real(
        1000,
        POLL_MS,
        spec([&b1, &b2, &b3], PASSWORD, Some((&pdu, 0))),
    );
    let sock = lab.path("sock").display().to_string();
    let run = haconn(&[
        "server",
        "ipdusd",
        "labnode03",
        "--mode",
        "serial",
        "--offtime",
        "5",
        "--wtime",
        "6",
        "--control-socket",
        &sock,
    ]);
    run.code(0).stdout_has("all 2 outlet(s) switched");
    // Progress lines came as the outlets switched: four of them, in order.
    let progress: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains(": done"))
        .collect();
    assert_eq!(
        progress
            .iter()
            .map(|l| l.split_once("] ").map_or(*l, |(_, r)| r))
            .collect::<Vec<_>>(),
        vec![
            "PDU 127.0.0.1 outlet 3 OFF: done",
            "PDU 127.0.0.1 outlet 3 ON: done",
            "PDU 127.0.0.1 outlet 4 OFF: done",
            "PDU 127.0.0.1 outlet 4 ON: done",
        ],
        "{run}"
    );
    // The PDU saw: 3 off, 5 s, 3 on, 6 s, 4 off, 5 s, 4 on (each switch's read-back and
    // the machine's load add a little).
    let sets = pdu.sets();
    let seq: Vec<(u16, i64)> = sets.iter().map(|s| (s.outlet, s.value)).collect();
    assert_eq!(seq, vec![(3, 0), (3, 1), (4, 0), (4, 1)], "{sets:?}");
    let gaps: Vec<f64> = sets
        .windows(2)
        .map(|w| (w[1].epoch_ns - w[0].epoch_ns) as f64 / 1e9)
        .collect();
    for (gap, want) in gaps.iter().zip([5.0, 6.0, 5.0]) {
        assert!(
            *gap >= want && *gap < want + 1.5,
            "gaps {gaps:?}, wanted 5, 6, 5 s"
        );
    }
    let log = lab.wait_lines("reset.log", 8, |l| l.contains("IPDUSD"));
    let ipdusd: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, b)| b))
        .filter(|b| b.starts_with("IPDUSD"))
        .collect();
    assert_eq!(
        ipdusd,
        vec![
            "IPDUSD labnode03 ---- SEND ---- ---- ---- 127.0.0.1 3 OFF",
            "IPDUSD labnode03 ---- RECV ---- ---- ---- 127.0.0.1 3 OFF",
            "IPDUSD labnode03 ---- SEND ---- ---- ---- 127.0.0.1 3 ON",
            "IPDUSD labnode03 ---- RECV ---- ---- ---- 127.0.0.1 3 ON",
            "IPDUSD labnode03 ---- SEND ---- ---- ---- 127.0.0.1 4 OFF",
            "IPDUSD labnode03 ---- RECV ---- ---- ---- 127.0.0.1 4 OFF",
            "IPDUSD labnode03 ---- SEND ---- ---- ---- 127.0.0.1 4 ON",
            "IPDUSD labnode03 ---- RECV ---- ---- ---- 127.0.0.1 4 ON",
        ],
        "{log}"
    );
}

#[test]
fn recovery_time_zero_leaves_the_outlets_off_until_acrecovery() {
    let (b1, b2) = (sim_at(51), sim_at(52));
    let mut b3 = sim_at(53);
    let pdu = Snmpd::start(snmp_support::Options::default());
    let lab = Lab::start_real(
        1000,
        POLL_MS,
        spec([&b1, &b2, &b3], PASSWORD, Some((&pdu, 0))),
    );
    b3.kill();
    until(&lab, "labnode03's BMC NG", |h| {
        server(h, "labnode03")["bmc"]["link"] == "NG"
    });
    let run = reset(&lab, ("labnode01", 1), ("labnode03", 3));
    assert!(
        run.stdout.contains("result=DUMP"),
        "{run}\n{}",
        lab.diagnostics()
    );
    let h = until(&lab, "both outlets seen off", |h| {
        h["pdus"][0]["outlets"]
            .as_array()
            .is_some_and(|o| o.len() == 2 && o.iter().all(|o| o["state"] == "off"))
    });
    assert_eq!(h["pdus"][0]["outlets"][0]["server"], "labnode03");
    std::thread::sleep(Duration::from_secs(2));
    let seq: Vec<(u16, i64)> = pdu.sets().iter().map(|s| (s.outlet, s.value)).collect();
    assert!(
        seq.iter().all(|(_, v)| *v == 0),
        "nothing switched back on: {seq:?}"
    );

    let sock = lab.path("sock").display().to_string();
    haconn(&[
        "server",
        "acrecovery",
        "labnode03",
        "--control-socket",
        &sock,
    ])
    .code(0)
    .stdout_has("all 2 outlet(s) switched");
    let mut ons: Vec<u16> = pdu
        .sets()
        .iter()
        .filter(|s| s.value == 1)
        .map(|s| s.outlet)
        .collect();
    ons.sort_unstable();
    assert_eq!(ons, vec![3, 4]);
}

#[test]
fn esxi_guests_are_watched_a_powered_off_guest_is_told_and_a_dead_host_is_ng() {
    let mut sshd = Sshd::start(Logins::Esxi);
    let fp = sshd.fingerprint();
    let port = sshd.addr().port();
    let lab = Lab::start_real(1000, POLL_MS, |s| {
        s.replace(
            "  - {name: labnode03, bmc: {address: 127.0.0.13, username: admin, password: labpassw0rd}}\n",
            &format!(
                "  - name: esx01\n    bmc: {{address: 127.0.0.13, username: admin, password: labpassw0rd}}\n    esxi: {{address: 127.0.0.1, port: {port}, username: root, password: \"{}\", hostKey: \"{fp}\", guests: [vm01, g01]}}\n",
                esxi_support::PASSWORD
            ),
        )
    });
    let h = until(&lab, "both guests seen on", |h| {
        server(h, "esx01")["guests"]
            .as_array()
            .is_some_and(|g| g.iter().all(|g| g["power"] == "pon"))
    });
    assert_eq!(server(&h, "esx01")["vmware"]["link"], "OK", "{h:#}");
    // A poll round asks the host once (`vmdumper -l` lists the running VMs), not once per
    // guest: with both guests running, nothing else is run.
    sshd.clear_calls();
    std::thread::sleep(Duration::from_millis(2500));
    let calls = sshd.calls();
    let started = |what: &str| {
        calls
            .iter()
            .filter(|c| !c.end && c.argv.contains(what))
            .count()
    };
    assert!(started("vmdumper -l") >= 2, "{calls:?}");
    assert_eq!(started("power.getstate"), 0, "{calls:?}");
    let run = haconn(&[
        "show",
        "status",
        "--control-socket",
        &lab.path("sock").display().to_string(),
    ]);
    run.code(0).stdout_has("esx01").stdout_has("OK");

    // vm01's HA monitor registers; g01's listens for attention.
    lab.register("vm01", 5, free_port(), None);
    let listen_port = free_port();
    lab.register("g01", 6, listen_port, None);
    let mut listener = lab.listener("g01", "127.0.0.1", listen_port);
    // vm01 (vmid 3) is powered off on the host, behind haconn's back.
    let out = sshd.local("vim-cmd", &["vmsvc/power.off", "3"]);
    assert!(!out.contains("fault"), "{out}");
    let line = listener.wait_line(Stream::Out, "ATTENTION");
    assert!(line.contains("vm01") && line.contains("POFF"), "{line}");
    let h = until(&lab, "vm01 seen off", |h| {
        guest(h, "vm01")["power"] == "poff"
    });
    assert_eq!(guest(&h, "g01")["power"], "pon");
    assert!(
        !sshd.calls().iter().any(|c| c.argv.contains("power.reset")),
        "nothing was reset"
    );

    // The host goes away: VMware NG, and g01 is no longer resettable.
    sshd.kill();
    until(&lab, "the ESXi link NG", |h| {
        server(h, "esx01")["vmware"]["link"] == "NG"
    });
    let reply = check(&lab, "g01", 6, listen_port);
    assert!(reply.contains("resettable=no"), "{reply}");
    // It comes back: the watch reconnects by itself.
    sshd.restart();
    until(&lab, "the ESXi link OK again", |h| {
        server(h, "esx01")["vmware"]["link"] == "OK"
    });
    let reply = check(&lab, "g01", 6, listen_port);
    assert!(reply.contains("resettable=yes via=esxi"), "{reply}");
}

#[test]
fn an_unanswering_bmc_is_bypassed_through_the_pdu_and_found_again_when_it_answers() {
    let (b1, b2) = (sim_at(61), sim_at(62));
    let mut b3 = sim_at(63);
    let pdu = Snmpd::start(snmp_support::Options::default());
    let lab = Lab::start_real(
        1000,
        POLL_MS,
        spec([&b1, &b2, &b3], PASSWORD, Some((&pdu, 5))),
    );
    until(&lab, "labnode03's BMC OK", |h| {
        server(h, "labnode03")["bmc"]["link"] == "OK"
    });
    // The BMC hangs (SIGSTOP): no refusal, just silence.
    b3.pause();
    let h = until(&lab, "labnode03's BMC NG", |h| {
        server(h, "labnode03")["bmc"]["link"] == "NG"
    });
    let reason = server(&h, "labnode03")["bmc"]["reason"].to_string();
    assert!(reason.contains("no answer"), "{reason}");
    let run = reset(&lab, ("labnode01", 1), ("labnode03", 3));
    assert!(
        run.stdout.contains("result=DUMP"),
        "{run}\n{}",
        lab.diagnostics()
    );
    let sets = pdu.wait_sets(2, Duration::from_secs(10));
    let mut offs: Vec<u16> = sets
        .iter()
        .filter(|s| s.value == 0)
        .map(|s| s.outlet)
        .collect();
    offs.sort_unstable();
    assert_eq!(offs, vec![3, 4], "{sets:?}");
    assert!(b3.nmis().is_empty(), "the stopped BMC took nothing");
    // It answers again: the watch opens a new session and says so.
    b3.resume();
    until(&lab, "labnode03's BMC OK again", |h| {
        server(h, "labnode03")["bmc"]["link"] == "OK"
    });
}
