//! The control socket's `fence` operation (what `fence_haconn`, Pacemaker's agent, asks
//! for) against the real daemon and OpenIPMI's `ipmi_sim`: a reboot is the full reset
//! (NMI, then the hard reset the simulator records), off and on are confirmed by power
//! reads, status reads the power now, list names every system.

use crate::support::ipmi as ipmi_support;
use crate::support::resetpath as resetpath_support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use ipmi_support::{PASSWORD, sim_at};
use resetpath_support::Lab;
use serde_json::{Value, json};

/// One request on the control socket, its reply.
fn ask(lab: &Lab, req: Value) -> Value {
    let mut s = UnixStream::connect(lab.path("sock")).expect("the control socket");
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    writeln!(s, "{req}").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).expect("a reply");
    serde_json::from_str(&line).expect("JSON")
}

fn fence(lab: &Lab, action: &str, target: Option<&str>) -> Value {
    let mut req = json!({"v": 1, "op": "fence", "action": action});
    if let Some(t) = target {
        req["target"] = t.into();
    }
    ask(lab, req)
}

#[test]
fn fence_actions_act_on_the_bmc_and_are_confirmed() {
    let bmcs = [sim_at(11), sim_at(12), sim_at(13)];
    let lines: Vec<String> = bmcs
        .iter()
        .enumerate()
        .map(|(i, b)| ipmi_support::lab_server(i, b, PASSWORD))
        .collect();
    let mut lab = Lab::start_real(1000, 60_000, move |text: String| {
        let (head, _) = text.split_once("servers:\n").expect("servers");
        format!("{head}servers:\n{}", lines.concat())
    });
    let r = fence(&lab, "list", None);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["systems"], json!(["labnode01", "labnode02", "labnode03"]));
    let r = fence(&lab, "monitor", None);
    assert_eq!(r["ok"], true, "{r}");
    let r = fence(&lab, "status", Some("labnode02"));
    assert_eq!(
        (r["ok"].as_bool(), r["result"].as_str()),
        (Some(true), Some("on")),
        "{r}"
    );

    // Reboot: the full reset — an NMI, no stop notice within hispeed, the hard reset.
    let r = fence(&lab, "reboot", Some("labnode02"));
    assert_eq!(r["ok"], true, "{r}");
    assert!(
        r["message"].as_str().is_some_and(|m| m.contains("REBOOT")),
        "{r}"
    );
    assert_eq!(bmcs[1].nmis().len(), 1, "{}", lab.diagnostics());
    assert_eq!(bmcs[1].resets().len(), 1);
    assert!(bmcs[0].nmis().is_empty() && bmcs[2].resets().is_empty());
    lab.wait_log("reset.log", "the fence's reset", |l| {
        l.contains("HARDRESET labnode02 0 SEND ---- ---- ---- P")
    });

    // Off, confirmed by a power read; status says so; on again.
    let r = fence(&lab, "off", Some("labnode03"));
    assert_eq!(
        (r["ok"].as_bool(), r["result"].as_str()),
        (Some(true), Some("off")),
        "{r}"
    );
    assert!(!bmcs[2].powered());
    let r = fence(&lab, "status", Some("labnode03"));
    assert_eq!(r["result"], "off", "{r}");
    let r = fence(&lab, "on", Some("labnode03"));
    assert_eq!(
        (r["ok"].as_bool(), r["result"].as_str()),
        (Some(true), Some("on")),
        "{r}"
    );
    assert!(bmcs[2].powered());

    // Refusals.
    let r = fence(&lab, "reboot", Some("nosuch"));
    assert_eq!(r["error"]["code"], "not-found", "{r}");
    let r = fence(&lab, "reboot", None);
    assert_eq!(r["error"]["code"], "bad-request", "{r}");
    let r = ask(
        &lab,
        json!({"v": 1, "op": "fence", "action": "explode", "target": "labnode01"}),
    );
    assert_eq!(r["ok"], false, "{r}");
    // A BMC that does not answer: the reboot fails, says why, and is not reported done.
    let mut b1 = bmcs;
    b1[0].pause();
    let r = fence(&lab, "off", Some("labnode01"));
    assert_eq!(r["error"]["code"], "failed", "{r}");
    b1[0].resume();

    // An HA monitor's reset too, then the history, read with the daemon stopped.
    lab.register("labnode01", 1, crate::support::resetpath::free_port(), None);
    let port = crate::support::resetpath::free_port();
    lab.reset_node02(port, 7).finish(Duration::from_secs(30));
    lab.stop();
    let state = lab.path("state").display().to_string();
    let run = crate::support::run::haconn(&["history", "--state-dir", &state, "--output", "json"]);
    run.code(0);
    let h: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let resets = h["resets"].as_array().expect("resets");
    // The reboot, the power off and on, the failed off, the HA monitor's reset.
    assert_eq!(resets.len(), 5, "{h:#}");
    let (fenced, asked) = (&resets[0], &resets[4]);
    assert_eq!(resets[1]["by"], "fence agent (power OFF)", "{h:#}");
    assert_eq!(resets[1]["outcome"], "POWER OFF");
    assert_eq!(resets[2]["outcome"], "POWER ON");
    assert_eq!(resets[3]["outcome"], "FAIL");
    assert_eq!(
        (fenced["system"].as_str(), fenced["by"].as_str()),
        (Some("labnode02"), Some("fence agent"))
    );
    assert_eq!(fenced["outcome"], "REBOOT");
    let stages: Vec<&str> = fenced["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    assert_eq!(
        stages,
        [
            "NMI issued",
            "NMI acknowledged",
            "hard reset sent",
            "hard reset acknowledged"
        ],
        "{h:#}"
    );
    assert!(
        asked["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("HA monitor labnode01 (127.0.0.1:")),
        "{h:#}"
    );
    assert!(
        asked["evidence"].is_string() && asked["ended"].is_string(),
        "{h:#}"
    );
    // Filters and the text form.
    let run =
        crate::support::run::haconn(&["history", "--state-dir", &state, "--system", "labnode03"]);
    run.code(0)
        .stdout_has("labnode03 (P) asked by fence agent (power OFF)");
    assert!(!run.stdout.contains("labnode02"), "{run}");
    let run = crate::support::run::haconn(&["history", "--state-dir", &state]);
    run.code(0)
        .stdout_has("labnode02 (P) asked by fence agent")
        .stdout_has("REBOOT: the hard reset acknowledged");
    let run =
        crate::support::run::haconn(&["history", "--state-dir", &state, "--since", "2099-01-01"]);
    run.code(0).stdout_has("no resets");
}

/// `fence_haconn` on a Pacemaker node that is not a management server: over the
/// authenticated reset path, as that node's HA monitor (its own key), so the reset
/// path's rules hold — a reset of its peer runs once, and a node that was just reset
/// cannot get its pair partner reset through the agent either.
#[test]
fn the_fence_agent_over_the_reset_path_is_an_ha_monitor_with_its_rules() {
    let lab = Lab::start(1000);
    let connector = lab.reset_path.to_string();
    let agent = |me: &str, n: &str, args: &[&str]| {
        let key = lab.key_file_for(me);
        let mut all = vec![
            "fence-agent",
            "--connector",
            &connector,
            "--key-file",
            &key,
            "--system",
            me,
            "--subsystem",
            n,
            "--subsystem-map",
            "labnode01:1,labnode02:2,labnode03:3",
            "--power-timeout",
            "40",
        ];
        all.extend_from_slice(args);
        crate::support::run::haconn(&all)
    };
    let r = agent("labnode01", "1", &["-o", "monitor"]);
    r.code(0);
    let r = agent("labnode01", "1", &["-o", "list"]);
    r.code(0).stdout_has("labnode02,");
    agent("labnode01", "1", &["-o", "status", "-n", "labnode02"]).code(1);
    agent("labnode01", "1", &["-o", "on", "-n", "labnode02"]).code(1);
    agent("labnode01", "1", &["-o", "off", "-n", "labnode02"])
        .code(1)
        .stderr_has("off is not available over the reset path");
    // labnode01's agent reboots labnode02; while that reset runs (hispeed 1000 ms, no dump
    // agent), labnode02's agent asks for labnode01: refused, never both of a pair.
    let key1 = lab.key_file_for("labnode01");
    let first = std::process::Command::new(env!("CARGO_BIN_EXE_haconn"))
        .args([
            "fence-agent",
            "--connector",
            &connector,
            "--key-file",
            &key1,
            "--system",
            "labnode01",
            "--subsystem",
            "1",
            "--subsystem-map",
            "labnode01:1,labnode02:2,labnode03:3",
            "-o",
            "reboot",
            "-n",
            "labnode02",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the agent");
    lab.wait_log("reset.log", "the reset by the agent", |l| {
        l.contains("SOFTRESET labnode02 2 SEND 127.0.0.1")
    });
    let r = agent("labnode02", "2", &["-o", "reboot", "-n", "labnode01"]);
    r.code(1);
    let first = first.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{out}\n{}\n{}",
        String::from_utf8_lossy(&first.stderr),
        lab.log("reset.log")
    );
    assert!(out.contains("Success: reboot of labnode02"), "{out}");
    let log = lab.log("reset.log");
    assert!(log.contains("RM-RESET labnode01 1 SEND 127.0.0.1"), "{log}");
    assert!(
        log.lines()
            .filter(|l| l.contains("RM-RESET labnode01 1 SEND"))
            .all(|l| l.ends_with(" FAIL")),
        "{log}"
    );
    assert!(
        !log.contains("SOFTRESET labnode01") && !log.contains("HARDRESET labnode01"),
        "{log}"
    );
    // Bad parameters are refused before anything is sent.
    let r = crate::support::run::haconn(&[
        "fence-agent",
        "--connector",
        &connector,
        "-o",
        "reboot",
        "-n",
        "labnode02",
    ]);
    r.code(1).stderr_has("key_file");
}
