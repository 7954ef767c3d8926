//! Operator commands against the real daemon on simulated hardware: `show status` (the
//! hardware watch's tables), `show ipdu`, `show ipdu-setting`, the PDU-cut test
//! `server ipdusd`, `server acrecovery` and the management-server PDU test refusals.
//! The same commands against real SNMP agents are in tests/snmp.rs.

use crate::support::resetpath as resetpath_support;

use std::time::{Duration, Instant};

use resetpath_support::{Lab, free_port, haconn};

/// labnode03 gets two outlets on two PDUs with PDU forced reset on.
fn with_pdus(spec: String) -> String {
    let spec = spec.replace(
        "servers:\n",
        "snmp: {community: labcommunity}\npdus:\n  - {address: 127.0.0.31, model: IBM_PDU}\n  - {address: 127.0.0.32, model: APC_RPDU}\nservers:\n",
    );
    spec.replace(
        "  - {name: labnode03, bmc: {address: 127.0.0.13, username: admin, password: labpassw0rd}}\n",
        "  - name: labnode03\n    bmc: {address: 127.0.0.13, username: admin, password: labpassw0rd}\n    ipdu: {timeout: 10, recoveryTime: 0, outlets: [{pdu: 127.0.0.31, outlet: 3}, {pdu: 127.0.0.32, outlet: 7}]}\n",
    )
}

fn show(lab: &Lab, args: &[&str]) -> resetpath_support::Run {
    let sock = lab.path("sock").display().to_string();
    let mut a: Vec<&str> = vec!["show"];
    a.extend(args);
    a.extend(["--control-socket", &sock]);
    haconn(&a)
}

fn server(lab: &Lab, args: &[&str]) -> resetpath_support::Run {
    let sock = lab.path("sock").display().to_string();
    let mut a: Vec<&str> = vec!["server"];
    a.extend(args);
    a.extend(["--control-socket", &sock]);
    haconn(&a)
}

/// Polls `show status --output json` until `pred` holds (bounded).
fn status_until(
    lab: &Lab,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = show(lab, &["status", "--output", "json"]);
        run.code(0);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        if pred(&v["hardware"]) {
            return v["hardware"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn show_status_reports_what_the_watch_found() {
    let lab = Lab::start_with(1000, with_pdus);
    let h = status_until(&lab, "every BMC and PDU polled", |h| {
        h["servers"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["bmc"]["link"] == "OK"))
            && h["pdus"]
                .as_array()
                .is_some_and(|p| p.iter().all(|p| p["link"] == "OK"))
    });
    assert_eq!(h["intervalMs"], 1000);
    let servers = h["servers"].as_array().unwrap();
    assert!(servers.iter().all(|s| s["power"] == "pon"), "{h:#}");
    assert_eq!(
        servers[0]["pdu"]["link"], "--",
        "no PDU forced reset on labnode01"
    );
    assert_eq!(servers[2]["pdu"]["link"], "OK", "{h:#}");
    assert_eq!(servers[2]["vmware"]["link"], "--");
    assert_eq!(h["mservers"][0]["bmc"]["link"], "OK", "{h:#}");
    assert_eq!(h["mservers"][0]["role"], "active");
    assert_eq!(
        h["mservers"][0]["status"], "normal",
        "its BMC says it is on"
    );
    assert_eq!(h["mservers"][0]["bmcAddress"], "127.0.0.2");

    // The text form: the SPEC §8 columns.
    let run = show(&lab, &["status"]);
    run.code(0)
        .stdout_has("<Name>     <Power>  <BMC>  <PDU>  <VMware>")
        .stdout_has("labnode03  pon      OK     OK     --");
    // show ipdu: outlets with the server they feed.
    let run = show(&lab, &["ipdu", "--addr", "127.0.0.32"]);
    run.code(0)
        .stdout_has("PDU 127.0.0.32  model APC_RPDU")
        .stdout_has("<Con#>  <Status>  <P/M>  <Server>   <State>")
        .stdout_has("     7  Enable    P      labnode03  on");
    assert!(!run.stdout.contains("127.0.0.31"), "{run}");
    show(&lab, &["ipdu", "--addr", "127.0.0.99"]).code(1);
    // The manual's ipdusetting layout: community (masked), PDUs with models, outlets.
    let run = show(&lab, &["ipdu-setting"]);
    run.code(0)
        .stdout_has("-- HA monitor connector ipdu setting --")
        .stdout_has("SNMP Community : ********\n")
        .stdout_has("<physical server>")
        .stdout_has("127.0.0.31     3  127.0.0.32     7");
    assert!(
        run.stdout
            .lines()
            .any(|l| l.split_whitespace().skip(1).eq(["127.0.0.32", "APC_RPDU"])),
        "{run}"
    );
    let run = show(&lab, &["ipdu-setting", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let row = v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "labnode03")
        .cloned()
        .unwrap();
    assert_eq!(row["ipdusd"], true);
    assert_eq!(row["timeout"], 10);
    assert_eq!(row["recoveryTime"], 0);
}

#[test]
fn a_pdu_test_is_refused_while_the_monitor_is_active_and_runs_with_force() {
    let lab = Lab::start_with(1000, with_pdus);
    lab.register("labnode03", 3, free_port(), None);
    let run = server(&lab, &["ipdusd", "labnode03", "--mode", "same"]);
    run.code(1).stderr_has("HA monitor of labnode03 is active");
    assert!(
        !lab.log("reset.log").contains("IPDUSD"),
        "{}",
        lab.diagnostics()
    );
    // `serial` keeps the server powered through its other supply: it is what a server in
    // service is tested with, no --force needed (issue 13 item 9).
    server(
        &lab,
        &[
            "ipdusd",
            "labnode03",
            "--mode",
            "serial",
            "--offtime",
            "5",
            "--wtime",
            "5",
        ],
    )
    .code(0)
    .stdout_has("all 2 outlet(s) switched");
    let before = lab.log("reset.log");

    // Out-of-range times are refused before anything switches.
    server(
        &lab,
        &[
            "ipdusd",
            "labnode03",
            "--mode",
            "same",
            "--offtime",
            "4",
            "--force",
        ],
    )
    // A usage error (README's exit-code table): 2.
    .code(2)
    .stderr_has("offtime must be 5–60");
    // The manual: `same` takes neither a PDU nor a wait time (they belong to `serial`):
    // a usage error naming them, before anything is asked or switched.
    for extra in [
        &["--pdu", "127.0.0.31"][..],
        &["--wtime", "5"],
        &["--addr", "127.0.0.32"],
    ] {
        let mut args = vec!["ipdusd", "labnode03", "--mode", "same", "--force"];
        args.extend(extra);
        server(&lab, &args).code(2).stderr_has(&format!(
            "{} {} is for --mode serial only",
            extra[0].replace("addr", "pdu"),
            extra[1]
        ));
    }
    server(&lab, &["ipdusd", "labnode09", "--mode", "same"])
        .code(1)
        .stderr_has("no server named labnode09");
    server(&lab, &["ipdusd", "labnode01", "--mode", "same"])
        .code(1)
        .stderr_has("no PDU outlets");

    let started = Instant::now();
    let run = server(&lab, &["ipdusd", "labnode03", "--mode", "same", "--force"]);
    let took = started.elapsed();
    run.code(0)
        .stdout_has("PDU 127.0.0.31 outlet 3 OFF: done")
        .stdout_has("PDU 127.0.0.32 outlet 7 ON: done")
        .stdout_has("all 2 outlet(s) switched");
    assert!(took >= Duration::from_secs(5), "off for 5 s, took {took:?}");
    let ipdusd_lines = |l: &str| l.contains("IPDUSD");
    let n = before.lines().filter(|l| ipdusd_lines(l)).count();
    let log = lab.wait_lines("reset.log", n + 8, ipdusd_lines)[before.len()..].to_string();
    // SPEC §7: a SEND when each switch goes to the PDU, a RECV when the PDU confirms it;
    // both outlets at once (`same`): both OFFs before any ON.
    let ipdusd: Vec<&str> = log.lines().filter(|l| l.contains("IPDUSD")).collect();
    assert_eq!(ipdusd.len(), 8, "{log}");
    for l in &ipdusd[..4] {
        assert!(l.ends_with("OFF"), "{log}");
    }
    for l in &ipdusd[4..] {
        assert!(l.ends_with("ON"), "{log}");
    }
    for dir in ["SEND", "RECV"] {
        assert_eq!(
            ipdusd
                .iter()
                .filter(|l| l.contains(&format!(" labnode03 ---- {dir} ---- ---- ---- 127.0.0.")))
                .count(),
            4,
            "{log}"
        );
    }
}

#[test]
fn acrecovery_switches_the_outlets_on_and_mserver_tests_are_refused_with_the_reason() {
    let lab = Lab::start_with(1000, with_pdus);
    let run = server(&lab, &["acrecovery", "labnode03", "--addr", "127.0.0.32"]);
    run.code(0).stdout_has("PDU 127.0.0.32 outlet 7 ON: done");
    let log = lab.wait_lines("reset.log", 2, |l| l.contains("IPDUSD"));
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("IPDUSD")).collect();
    assert_eq!(
        lines.len(),
        2,
        "only the outlet on 127.0.0.32, sent and confirmed: {log}"
    );
    assert!(
        lines[0].contains(" SEND ") && lines[0].ends_with("127.0.0.32 7 ON"),
        "{log}"
    );
    assert!(
        lines[1].contains(" RECV ") && lines[1].ends_with("127.0.0.32 7 ON"),
        "{log}"
    );

    // --quiet (issue 18.11): no progress lines, no summary; the exit code tells. A
    // refusal still prints.
    let quiet = server(&lab, &["acrecovery", "labnode03", "--quiet"]);
    quiet.code(0);
    assert_eq!(quiet.stdout, "", "{quiet}");
    assert_eq!(quiet.stderr, "", "{quiet}");
    server(&lab, &["acrecovery", "labnode01", "-q"])
        .code(1)
        .stderr_has("haconn server acrecovery: ");

    let sock = lab.path("sock").display().to_string();
    haconn(&["act", "ipdusd", "--mode", "same", "--control-socket", &sock])
        .code(1)
        .stderr_has("cannot cut all its own outlets at once");
    haconn(&[
        "act",
        "ipdusd",
        "--mode",
        "serial",
        "--control-socket",
        &sock,
    ])
    .code(1)
    .stderr_has("labms01 has 0 PDU outlet(s)");
    haconn(&[
        "sby",
        "ipdusd",
        "--mode",
        "serial",
        "--control-socket",
        &sock,
    ])
    .code(1)
    .stderr_has("no standby");
}

#[test]
fn a_single_management_server_tests_its_own_outlets_one_at_a_time() {
    let lab = Lab::start_with(1000, |s| {
        with_pdus(s).replace(
            "    mlan: {address: 127.0.0.1, port: 15002}\n",
            "    mlan: {address: 127.0.0.1, port: 15002}\n    ipdu: {timeout: 10, outlets: [{pdu: 127.0.0.31, outlet: 1}, {pdu: 127.0.0.32, outlet: 1}]}\n",
        )
    });
    let sock = lab.path("sock").display().to_string();
    let started = Instant::now();
    let run = haconn(&[
        "act",
        "ipdusd",
        "--mode",
        "serial",
        "--offtime",
        "5",
        "--wtime",
        "5",
        "--control-socket",
        &sock,
    ]);
    run.code(0)
        .stdout_has("labms01: all 2 outlet(s) switched")
        // The manual asks for 30 s or more off in a management server's serial test; the
        // range stays 5–60, so it is a note, not a refusal.
        .stderr_has("an off time of 30 s or more");
    assert!(
        started.elapsed() >= Duration::from_secs(15),
        "5 s off, 5 s, 5 s off"
    );
    let log = lab.wait_lines("reset.log", 8, |l| l.contains("IPDUSD"));
    let bodies: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("] ").map(|(_, b)| b))
        .collect();
    assert_eq!(
        bodies,
        vec![
            "IPDUSD labms01 ---- SEND ---- ---- ---- 127.0.0.31 1 OFF",
            "IPDUSD labms01 ---- RECV ---- ---- ---- 127.0.0.31 1 OFF",
            "IPDUSD labms01 ---- SEND ---- ---- ---- 127.0.0.31 1 ON",
            "IPDUSD labms01 ---- RECV ---- ---- ---- 127.0.0.31 1 ON",
            "IPDUSD labms01 ---- SEND ---- ---- ---- 127.0.0.32 1 OFF",
            "IPDUSD labms01 ---- RECV ---- ---- ---- 127.0.0.32 1 OFF",
            "IPDUSD labms01 ---- SEND ---- ---- ---- 127.0.0.32 1 ON",
            "IPDUSD labms01 ---- RECV ---- ---- ---- 127.0.0.32 1 ON",
        ],
        "{log}"
    );
}

/// Issue 17.4: the operator-command log (the seed's CLI log) has a line per action through
/// the control socket — who (uid, pid), what, the result — and none for what only reads;
/// a spec is named by its file and checksum, never quoted, so no secret is written.
#[test]
fn every_operator_action_is_in_the_cli_log_with_who_and_the_result() {
    let lab = Lab::start_with(1000, with_pdus);
    let sock = lab.path("sock").display().to_string();
    show(&lab, &["status"]).code(0);
    let spec = std::fs::read_to_string(lab.path("cluster.yaml"))
        .unwrap()
        .replace(
            "labnode03, bmc: {address: 127.0.0.13",
            "labnode03, bmc: {address: 127.0.0.23",
        );
    let file = lab.path("other.yaml");
    std::fs::write(&file, &spec).unwrap();
    let file = file.display().to_string();
    haconn(&[
        "apply",
        "--spec",
        &file,
        "--force",
        "--control-socket",
        &sock,
    ])
    .code(0);
    server(&lab, &["acrecovery", "labnode03"]);
    server(&lab, &["clear-warning", "nosuch"]).code(1);
    let log = lab.wait_log("cli.log", "the clear-warning line", |l| {
        l.contains("server clear-warning nosuch => error not-found")
    });
    assert!(log.contains(" uid="), "{log}");
    let text = lab.log("cli.log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "reads are not logged:\n{text}");
    assert!(
        lines[0].contains(&format!("apply --force file={file} spec=sha256:"))
            && lines[0].contains("=> ok, completed"),
        "{text}"
    );
    assert!(
        lines[1].contains("server acrecovery labnode03 =>"),
        "{text}"
    );
    assert!(
        !text.contains("labpassw0rd") && !text.contains("labcommunity"),
        "{text}"
    );
}
