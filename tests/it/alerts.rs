//! Hardware alerts end to end (issue 15): the real daemon with its trap receiver on
//! loopback, OpenIPMI's `ipmi_sim` as the servers' BMCs, and net-snmp's `snmptrap` and
//! `snmpinform` sending from a BMC's address (`--clientaddr`), as a BMC's trap
//! destination would; `haconn alert` as a management tool runs it; what HA monitors and
//! operators see (POFF attention, check replies, `show hamonitor`, `show status`,
//! `show alerts`, the alert log).
//!
//! The daemons here poll their BMCs once a minute, so a POFF within seconds can only have
//! come from the alert (or the fast poll an unconfirmed alert starts).

use crate::support::ipmi as ipmi_support;
use crate::support::resetpath as resetpath_support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use ipmi_support::{PASSWORD, SimBmc, sim_at};
use resetpath_support::{Lab, Stream, free_port, haconn};

const COMMUNITY: &str = "haconnTrap01";
/// A vendor OID the spec says means degradation.
const VENDOR_OID: &str = "1.3.6.1.4.1.99999.7";
/// The watch polls once a minute: any POFF within seconds came from an alert.
const POLL_MS: u32 = 60_000;

struct Alerts {
    lab: Lab,
    bmcs: [SimBmc; 3],
    trap_port: u16,
    /// Where the warning command writes its arguments and environment.
    hook_out: std::path::PathBuf,
}

/// The lab spec on three simulators, with the trap receiver on 127.0.0.1:`trap_port`,
/// labnode02 taking predictive-failure warnings, a vendor OID for degradation, and a
/// warning command that records what it was given.
fn start() -> Alerts {
    let bmcs = [sim_at(11), sim_at(12), sim_at(13)];
    let trap_port = free_port();
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let hook_out = dir.join("hook.out");
    let hook = dir.join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$1|$2|$HACONN_SERVER|$HACONN_ALERT_KIND\" >> {}\n",
            hook_out.display()
        ),
    )
    .expect("write the hook");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let lines: Vec<String> = bmcs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let warnings = if i == 1 {
                "    warnings: {predictiveFailure: true}\n"
            } else {
                ""
            };
            format!("{}{warnings}", ipmi_support::lab_server(i, b, PASSWORD))
        })
        .collect();
    let hook_path = hook.display().to_string();
    let lab = Lab::start_real(1000, POLL_MS, move |text: String| {
        let (head, _) = text.split_once("servers:\n").expect("servers");
        format!(
            "{head}alerts:\n  address: 127.0.0.1\n  port: {trap_port}\n  community: {COMMUNITY}\n  traps: [{{oid: {VENDOR_OID}, means: degradation}}]\n  warningCommand: {hook_path}\nservers:\n{}",
            lines.concat()
        )
    });
    let a = Alerts {
        lab,
        bmcs,
        trap_port,
        hook_out,
    };
    a.lab.wait_log("event.log", "the trap receiver", |l| {
        l.contains(&format!("trap receiver listening on 127.0.0.1:{trap_port}"))
    });
    for n in ["labnode01", "labnode02", "labnode03"] {
        a.until(&format!("{n} seen powered on"), |h| {
            server(h, n)["power"] == "pon"
        });
    }
    a
}

fn server<'a>(h: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    h["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {h:#}"))
}

/// An IPMI PET varbind of 47 bytes (sequence 7, severity Critical).
fn pet_hex() -> String {
    let mut b: Vec<u8> = (0xa0..0xb0).collect();
    b.extend_from_slice(&7u16.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&0xffffu16.to_be_bytes());
    b.extend_from_slice(&[0x20, 0x68, 0x10, 0x20, 0x51, 0x07, 0x01]);
    b.extend_from_slice(&[0x05, 0xff, 0xff, 0, 0, 0, 0, 0]);
    b.push(0x19);
    b.extend_from_slice(&674u32.to_be_bytes());
    b.extend_from_slice(&0x0100u16.to_be_bytes());
    b.push(0xc1);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The specific-trap number of a PET assertion.
fn specific(sensor_type: u8, event_type: u8, offset: u8) -> String {
    u32::from_be_bytes([0, sensor_type, event_type, offset]).to_string()
}

const POWER_OFF: (u8, u8, u8) = (0x09, 0x6f, 0x00);
const DRIVE_PREDICTIVE: (u8, u8, u8) = (0x0d, 0x6f, 0x02);

impl Alerts {
    fn sock(&self) -> String {
        self.lab.path("sock").display().to_string()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let sock = self.sock();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--output", "json", "--control-socket", &sock]);
        let run = haconn(&all);
        run.code(0);
        serde_json::from_str(&run.stdout).expect("JSON")
    }

    fn status(&self) -> serde_json::Value {
        self.json(&["show", "status"])["hardware"].clone()
    }

    fn until(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let h = self.status();
            if pred(&h) {
                return h;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {h:#}\n{}",
                self.lab.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `show alerts` (JSON) once it lists `n` alerts.
    fn alerts(&self, n: usize) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.json(&["show", "alerts"]);
            if v["alerts"].as_array().is_some_and(|a| a.len() >= n) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{n} alerts not listed: {v:#}\n{}",
                self.lab.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// net-snmp `tool` (snmptrap or snmpinform) from `from` to the receiver.
    fn snmp(&self, tool: &str, from: &str, community: &str, args: &[&str]) -> std::process::Output {
        let path = format!("/usr/bin/{tool}");
        assert!(
            std::path::Path::new(&path).exists(),
            "{path} is missing: install the snmp package"
        );
        let agent = format!("127.0.0.1:{}", self.trap_port);
        let out = Command::new(&path)
            .env("MIBS", "")
            .arg(format!("--clientaddr={from}"))
            .args(["-c", community, "-r", "1", "-t", "5"])
            .args(args.iter().take(2))
            .arg(&agent)
            .args(args.iter().skip(2))
            .output()
            .expect("run a net-snmp tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A v1 PET (`snmptrap -v 1`) from `from`.
    fn v1_pet(&self, from: &str, community: &str, what: (u8, u8, u8), pet: &str) {
        let n = specific(what.0, what.1, what.2);
        self.snmp(
            "snmptrap",
            from,
            community,
            &[
                "-v",
                "1",
                "1.3.6.1.4.1.3183.1.1",
                from,
                "6",
                &n,
                "0",
                "1.3.6.1.4.1.3183.1.1.1",
                "x",
                pet,
            ],
        );
    }

    /// A v2c PET (`snmptrap -v 2c`, or `snmpinform`) from `from`.
    fn v2c_pet(&self, tool: &str, from: &str, what: (u8, u8, u8)) {
        let oid = format!(
            "1.3.6.1.4.1.3183.1.1.0.{}",
            specific(what.0, what.1, what.2)
        );
        self.snmp(
            tool,
            from,
            COMMUNITY,
            &[
                "-v",
                "2c",
                "",
                &oid,
                "1.3.6.1.4.1.3183.1.1.1",
                "x",
                &pet_hex(),
            ],
        );
    }

    /// The BMC of labnode0`i+1` powers its server off (a power button, a PDU, a fault),
    /// behind haconn's back.
    fn power_off(&self, i: usize) {
        self.bmcs[i].power_off_by_ipmitool();
    }
}

/// The heart of it: the BMC's power-off PET makes the daemon read the power over the BMC
/// and, as it reads off, send POFF at once, long before the next poll; nothing is reset.
#[test]
fn a_power_off_pet_is_confirmed_over_the_bmc_and_sent_as_poff_at_once() {
    let a = start();
    let port = free_port();
    a.lab.register("labnode01", 1, port, None);
    let listen_port = free_port();
    a.lab.register("labnode02", 2, listen_port, None);
    let mut listener = a.lab.listener("labnode02", "127.0.0.1", listen_port);
    a.power_off(0);
    let at = Instant::now();
    a.v1_pet("127.0.0.11", COMMUNITY, POWER_OFF, &pet_hex());
    let line = listener.wait_line(Stream::Out, "ATTENTION");
    let took = at.elapsed();
    assert!(
        line.contains("labnode01") && line.contains("POFF"),
        "{line}"
    );
    // Far below the poll interval (one minute) even on a loaded machine.
    assert!(
        took < Duration::from_secs(10),
        "POFF {took:?} after the trap"
    );
    let v = a.alerts(1);
    let r = &v["alerts"][0];
    assert_eq!(r["via"], "trap v1", "{v:#}");
    assert_eq!(r["from"], "127.0.0.11");
    assert_eq!(r["server"], "labnode01");
    assert_eq!(r["kind"], "powerOff");
    assert!(
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("IPMI PET sensor type 0x09")),
        "{r}"
    );
    assert!(
        r["action"]
            .as_str()
            .is_some_and(|s| s.contains("BMC reads off: POFF to the cluster for labnode01")),
        "{r}"
    );
    a.lab.wait_log("alert.log", "the alert line", |l| {
        l.contains("trap v1 127.0.0.11 labnode01 powerOff") && l.contains("POFF")
    });
    a.lab.wait_log("reset.log", "the ATTENTION line", |l| {
        l.contains("ATTENTION labnode01 1 SEND") && l.ends_with("POFF")
    });
    assert!(a.bmcs[0].nmis().is_empty() && a.bmcs[0].resets().is_empty());
    // The same PET again (a BMC retransmits): already known off, nothing sent again.
    a.v1_pet("127.0.0.11", COMMUNITY, POWER_OFF, &pet_hex());
    let v = a.alerts(2);
    assert!(
        v["alerts"][1]["action"]
            .as_str()
            .is_some_and(|s| s.contains("already known")),
        "{v:#}"
    );
}

/// Never a state without the event that proves it: a power-off trap for a server whose
/// BMC still reads on sends nothing, and starts a fast poll that catches the power-off
/// that follows within seconds.
#[test]
fn a_power_off_trap_for_a_server_still_on_sends_nothing_until_its_bmc_reads_off() {
    let a = start();
    a.lab.register("labnode02", 2, free_port(), None);
    let listen_port = free_port();
    a.lab.register("labnode01", 1, listen_port, None);
    let mut listener = a.lab.listener("labnode01", "127.0.0.1", listen_port);
    a.v2c_pet("snmptrap", "127.0.0.12", POWER_OFF);
    let v = a.alerts(1);
    let r = &v["alerts"][0];
    assert_eq!(
        (r["via"].as_str(), r["server"].as_str()),
        (Some("trap v2c"), Some("labnode02"))
    );
    assert!(
        r["action"]
            .as_str()
            .is_some_and(|s| s.starts_with("not confirmed (its BMC reads the power on)")),
        "{r}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !listener.seen_any(Stream::Out, "ATTENTION"),
        "POFF without a power-off"
    );
    // Now it does go off: the fast poll (every 200 ms for 5 s) sees it.
    let at = Instant::now();
    a.power_off(1);
    let line = listener.wait_line(Stream::Out, "ATTENTION");
    assert!(
        line.contains("labnode02") && line.contains("POFF"),
        "{line}"
    );
    assert!(at.elapsed() < Duration::from_secs(4), "{:?}", at.elapsed());
}

/// Informs are answered (snmpinform exits 0 only then); a predictive failure marks the
/// server that takes it, everywhere an operator or HA monitor looks, and runs the warning
/// command; refused traps are counted, and logged at a capped rate.
#[test]
fn failure_warnings_informs_and_refused_traps() {
    let a = start();
    a.lab.register("labnode02", 2, free_port(), None);
    a.v2c_pet("snmpinform", "127.0.0.12", DRIVE_PREDICTIVE);
    let v = a.alerts(1);
    let r = &v["alerts"][0];
    assert_eq!(r["via"], "inform v2c", "{v:#}");
    assert_eq!(r["kind"], "predictiveFailure");
    assert!(
        r["action"]
            .as_str()
            .is_some_and(|s| s.starts_with("marked with a warning: predictiveFailure")),
        "{r}"
    );
    assert_eq!(v["counts"]["informsAnswered"], 1);
    // The check reply, show hamonitor and show status say so; nothing was reset.
    let check = a.lab.register("labnode02", 2, free_port(), None);
    assert!(
        check
            .stdout
            .contains("warning=\"predictiveFailure: IPMI PET sensor type 0x0d"),
        "{check}"
    );
    let h = a.json(&["show", "hamonitor", "--name", "labnode02"]);
    assert_eq!(h["monitors"][0]["state"], "warning", "{h:#}");
    let s = a.status();
    assert_eq!(
        server(&s, "labnode02")["warning"]["kind"],
        "predictiveFailure"
    );
    assert!(a.bmcs[1].nmis().is_empty() && a.bmcs[1].resets().is_empty());
    // The warning command ran with the event.
    let deadline = Instant::now() + Duration::from_secs(20);
    let hook = loop {
        let t = std::fs::read_to_string(&a.hook_out).unwrap_or_default();
        if !t.is_empty() {
            break t;
        }
        assert!(Instant::now() < deadline, "the warning command did not run");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        hook.trim(),
        "labnode02|predictiveFailure|labnode02|predictiveFailure"
    );
    // An operator clears it.
    let sock = a.sock();
    haconn(&[
        "server",
        "clear-warning",
        "labnode02",
        "--control-socket",
        &sock,
    ])
    .code(0)
    .stdout_has("labnode02: warning cleared");
    let h = a.json(&["show", "hamonitor", "--name", "labnode02"]);
    assert_eq!(h["monitors"][0]["state"], "normal", "{h:#}");
    haconn(&[
        "server",
        "clear-warning",
        "nosuch",
        "--control-socket",
        &sock,
    ])
    .code(1);

    // labnode03 does not take warnings: a vendor degradation trap is logged only.
    a.snmp(
        "snmptrap",
        "127.0.0.13",
        COMMUNITY,
        &[
            "-v",
            "2c",
            "",
            &format!("{VENDOR_OID}.0.3"),
            "1.3.6.1.2.1.1.5.0",
            "s",
            "fan",
        ],
    );
    let v = a.alerts(2);
    let r = &v["alerts"][1];
    assert_eq!(
        (r["server"].as_str(), r["kind"].as_str()),
        (Some("labnode03"), Some("degradation"))
    );
    assert!(
        r["action"]
            .as_str()
            .is_some_and(|s| s.contains("does not take degradation")),
        "{r}"
    );
    // An unknown OID from a BMC: logged, as `other`.
    a.snmp(
        "snmptrap",
        "127.0.0.13",
        COMMUNITY,
        &[
            "-v",
            "2c",
            "",
            "1.3.6.1.4.1.4242.1",
            "1.3.6.1.2.1.1.5.0",
            "s",
            "x",
        ],
    );
    // A truncated PET varbind: logged as unreadable, no action.
    a.v1_pet("127.0.0.11", COMMUNITY, POWER_OFF, &pet_hex()[..40]);
    // From no server's BMC: logged, counted.
    a.v1_pet("127.0.0.99", COMMUNITY, POWER_OFF, &pet_hex());
    let v = a.alerts(5);
    let list = v["alerts"].as_array().unwrap();
    assert_eq!(list[2]["kind"], "other", "{v:#}");
    assert!(
        list[3]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreadable")),
        "{v:#}"
    );
    assert_eq!(list[3]["kind"], "other");
    assert!(list[4]["server"].is_null(), "{v:#}");
    assert_eq!(v["counts"]["unknownSource"], 1);
    // A wrong community: refused before anything, counted, said in the event log.
    a.v1_pet("127.0.0.11", "wrongcommunity", POWER_OFF, &pet_hex());
    a.lab.wait_log("event.log", "the refusal", |l| {
        l.contains("trap from 127.0.0.11") && l.contains("wrong community")
    });
    let v = a.json(&["show", "alerts"]);
    assert_eq!(v["counts"]["badCommunity"], 1, "{v:#}");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 5);
    assert!(a.bmcs[0].powered(), "nothing was switched");
    // The text form and the filters.
    let text = haconn(&[
        "show",
        "alerts",
        "--server",
        "labnode03",
        "--control-socket",
        &sock,
    ]);
    text.code(0).stdout_has("trap receiver: on 127.0.0.1:");
    assert_eq!(text.stdout.matches("about labnode03").count(), 2, "{text}");
    let since = haconn(&[
        "show",
        "alerts",
        "--since",
        "2099-01-01",
        "--control-socket",
        &sock,
    ]);
    since.code(0).stdout_has("no alerts");
    haconn(&[
        "show",
        "alerts",
        "--since",
        "yesterday-ish",
        "--control-socket",
        &sock,
    ])
    .code(2);
}

/// `haconn alert`, as a management tool runs it (`%I %D %T %A`): exit codes for scripts.
#[test]
fn haconn_alert_with_good_and_bad_arguments() {
    let a = start();
    let sock = a.sock();
    let listen_port = free_port();
    a.lab.register("labnode03", 3, listen_port, None);
    a.lab.register("labnode01", 1, free_port(), None);
    let mut listener = a.lab.listener("labnode03", "127.0.0.1", listen_port);
    let alert = |args: &[&str]| {
        let mut all = vec!["alert"];
        all.extend_from_slice(args);
        all.extend(["--control-socket", &sock]);
        haconn(&all)
    };
    // Still on: not confirmed, exit 1.
    alert(&["127.0.0.11", "2026/11/30", "10:00:00", "0xFE91"])
        .code(1)
        .stdout_has("labnode01: not confirmed (its BMC reads the power on)");
    a.power_off(0);
    alert(&["127.0.0.11", "2026/11/30", "10:00:05", "0xFE91"])
        .code(0)
        .stdout_has("labnode01: BMC reads off: POFF to the cluster for labnode01");
    let line = listener.wait_line(Stream::Out, "ATTENTION");
    assert!(
        line.contains("labnode01") && line.contains("POFF"),
        "{line}"
    );
    let v = a.alerts(2);
    assert_eq!(v["alerts"][1]["via"], "command");
    assert!(
        v["alerts"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("0xFE91 at 2026/11/30 10:00:05")),
        "{v:#}"
    );
    // JSON for scripts.
    let j = alert(&["--server", "labnode01", "--output", "json"]);
    j.code(0);
    let j: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(j["outcome"]["outcome"], "alreadyOff", "{j:#}");
    // A warning the server does not take; an address of no server; bad arguments.
    alert(&["--server", "labnode03", "--kind", "degradation"])
        .code(1)
        .stdout_has("does not take degradation");
    alert(&["127.0.0.99"]).code(1).stdout_has("no server");
    alert(&["--server", "nosuch"]).code(1);
    alert(&["not-an-address"]).code(2);
    alert(&[]).code(2);
    alert(&["127.0.0.11", "--kind", "explode"]).code(2);
}

/// A flood of traps while a reset runs: the reset completes as ever, every trap is
/// counted, and the alert log is capped.
#[test]
fn a_flood_of_traps_does_not_hold_up_a_reset_and_the_alert_log_is_capped() {
    const TRAPS: usize = 10_000;
    let a = start();
    let port = free_port();
    a.lab.register("labnode01", 1, port, None);
    a.lab.register("labnode02", 2, free_port(), None);
    // Valid v2c traps from labnode03's BMC, built once by net-snmp's own encoder (captured
    // from snmptrap), then sent TRAPS times from that address: mostly an unknown OID
    // (logged only), one in ten the vendor degradation OID (which goes to the pipeline:
    // labnode03 does not take it).
    let capture = UdpSocket::bind("127.0.0.1:0").unwrap();
    capture
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let captured = |oid: &str| {
        let out = Command::new("/usr/bin/snmptrap")
            .env("MIBS", "")
            .args(["-v", "2c", "-c", COMMUNITY])
            .arg(format!(
                "127.0.0.1:{}",
                capture.local_addr().unwrap().port()
            ))
            .args(["", oid, "1.3.6.1.2.1.1.5.0", "s", "flood"])
            .output()
            .expect("snmptrap");
        assert!(out.status.success());
        let mut buf = [0u8; 2048];
        let (n, _) = capture.recv_from(&mut buf).expect("the captured trap");
        buf[..n].to_vec()
    };
    let (other, vendor) = (
        captured("1.3.6.1.4.1.4242.9"),
        captured(&format!("{VENDOR_OID}.0.1")),
    );
    let sender = UdpSocket::bind("127.0.0.13:0").unwrap();
    let to = format!("127.0.0.1:{}", a.trap_port);
    let flood = std::thread::spawn(move || {
        for i in 0..TRAPS {
            let trap = if i % 10 == 0 { &vendor } else { &other };
            sender.send_to(trap, &to).unwrap();
            if i % 100 == 99 {
                // Bounded: at most about 20 000 a second.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    let started = Instant::now();
    let run = a.lab.reset_node02(port, 1).finish(Duration::from_secs(30));
    let took = started.elapsed();
    flood.join().unwrap();
    run.code(0).stdout_has("result=DUMP");
    // hispeed 1000: the hard reset after 1 s; generous for a loaded 2-core machine.
    assert!(
        took < Duration::from_secs(6),
        "reset took {took:?} in the flood"
    );
    assert_eq!(a.bmcs[1].resets().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let v = a.json(&["show", "alerts"]);
        let c = &v["counts"];
        let seen = c["received"].as_u64().unwrap_or(0);
        if seen >= TRAPS as u64 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} of {TRAPS} traps counted: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(v["counts"]["received"], TRAPS as u64, "nothing lost: {v:#}");
    assert_eq!(
        v["alerts"].as_array().unwrap().len(),
        1000,
        "the last 1000 kept"
    );
    let lines = a.lab.log("alert.log").lines().count();
    assert!(lines < TRAPS / 4, "the alert log is capped: {lines} lines");
    assert!(v["counts"]["logSuppressed"].as_u64() > Some(0), "{v:#}");
}
