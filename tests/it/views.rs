//! The operator views against the real daemon, as the original's manual lays them out
//! (issue 13, items 6–8): `show settings` / `mserver-settings` / `ipdu-setting` in the
//! manual's sections (the normalized YAML with `--output yaml`), `show status`'s act/sby
//! column in a pair, and `show hamonitor`'s pair# with the `cluster` flag. The renderings
//! themselves are pinned by golden files (`tests/golden/show/`, `src/cli/show_tests.rs`);
//! the monitor states by the reset core's tables and `tests/it/watch.rs`.

use crate::support::daemon as daemon_support;
use crate::support::resetpath as resetpath_support;

use daemon_support::{Daemon, pair};
use resetpath_support::{Lab, free_port, haconn};

/// The first table row holding the word `name`, split on whitespace (`key : value`
/// lines are not table rows).
fn row<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| !l.contains(" : "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.contains(&name))
        .unwrap_or_else(|| panic!("no row with {name}:\n{text}"))
}

/// Until duplication exists the peer's role is not known: `----`, the manual's
/// undecided state, never a second `active`.
#[test]
fn show_status_in_a_pair_never_shows_two_active_servers() {
    let d = Daemon::new(&pair(16231, 16232))
        .arg("--mserver")
        .arg("labms02")
        .start();
    let s = d.status();
    let roles: Vec<(&str, &str)> = s["hardware"]["mservers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("labms01", "----"), ("labms02", "active")], "{s:#}");
    let run = d.haconn(&["show", "status"]);
    run.code(0);
    assert_eq!(row(&run.stdout, "labms01")[2], "----", "{run}");
    assert_eq!(row(&run.stdout, "labms02")[2], "active", "{run}");
    assert_eq!(run.stdout.matches(" active ").count(), 1, "{run}");
}

#[test]
fn settings_views_follow_the_manual_and_yaml_stays_available() {
    let d = Daemon::new(&pair(16231, 16232))
        .arg("--mserver")
        .arg("labms01")
        .start();
    let run = d.haconn(&["show", "settings"]);
    run.code(0)
        .stdout_has("-- HA monitor connector service setting --\n\n<mode>\n 2:server duplication\n")
        .stdout_has("<resetpath>\n addr:127.0.0.1    mask:255.0.0.0    port number:15001\n")
        .stdout_has(" #  name       bmc addr    account  ipdusd  timeout  rc time  cluster\n")
        .stdout_has("<virtual server>\n")
        .stdout_has("<hispeed failover>\n status   :on\n resettime: 1000 msec\n");
    assert_eq!(
        row(&run.stdout, "127.0.0.11")[1..],
        ["labnode01", "127.0.0.11", "admin", "off", "--", "--", "on"],
        "{run}"
    );
    assert!(!run.stdout.contains("labpassw0rd"), "{run}");

    let yaml = d.haconn(&["show", "settings", "--output", "yaml"]);
    yaml.code(0)
        .stdout_has("apiVersion: haconn/v1")
        .stdout_has("password: \"********\"");
    assert!(!yaml.stdout.contains("labpassw0rd"), "{yaml}");

    let run = d.haconn(&["show", "mserver-settings"]);
    run.code(0)
        .stdout_has("-- HA monitor connector management server setting --\n\n<management server>\n")
        .stdout_has("\n<management LAN>\n");
    assert_eq!(
        row(&run.stdout, "127.0.0.3")[1..],
        ["labms02", "127.0.0.3", "admin", "off", "--"],
        "{run}"
    );
    assert_eq!(
        row(&run.stdout, "127.0.0.4")[1..],
        ["labms02", "127.0.0.4", "15002"],
        "{run}"
    );

    // YAML is the spec's form: only `show settings` has it.
    d.haconn(&["show", "status", "--output", "yaml"])
        .code(2)
        .stderr_has("--output yaml is for `show settings` only");
}

/// pair# is the monitor pair learned from the checks, shown only for a server with the
/// `cluster` flag on (labnode01); labnode03 (flag off) shows `----` whatever its check said.
#[test]
fn hamonitor_shows_pair_only_with_the_cluster_flag() {
    let lab = Lab::start(1000);
    lab.register("labnode01", 1, free_port(), Some(2));
    lab.register("labnode03", 3, free_port(), Some(9));
    let all = lab.monitors();
    let pair_of = |s: &str| {
        all["monitors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["system"] == s)
            .map(|m| m["pair"].clone())
            .unwrap()
    };
    assert_eq!(pair_of("labnode01"), 2, "{all:#}");
    assert!(pair_of("labnode03").is_null(), "{all:#}");
    let run = haconn(&[
        "show",
        "hamonitor",
        "--control-socket",
        &lab.path("sock").display().to_string(),
    ]);
    run.code(0);
    let node01 = row(&run.stdout, "labnode01");
    assert_eq!((node01[4], node01[7]), ("normal", "2"), "{run}");
    assert_eq!(row(&run.stdout, "labnode03")[7], "----", "{run}");
}

/// The daemon refuses `same` with a PDU or a wait time from any client, not only from
/// the CLI (the manual: neither can be given with `mode=same`).
#[test]
fn the_daemon_refuses_same_with_the_options_of_serial() {
    let d = Daemon::new(&daemon_support::lab(16231, 16232)).start();
    for extra in [r#""waitTime":5"#, r#""pdu":"127.0.0.31""#] {
        let reply = d.request(&format!(
            r#"{{"v":1,"op":"serverIpdu","server":"labnode01","mode":"same",{extra}}}"#
        ));
        assert_eq!(reply["error"]["code"], "bad-request", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("is for --mode serial only")),
            "{reply}"
        );
    }
    let reply =
        d.request(r#"{"v":1,"op":"mserverIpdu","role":"active","mode":"same","waitTime":5}"#);
    assert_eq!(reply["error"]["code"], "bad-request", "{reply}");
}

/// No view prints a secret: the SNMP community (shown masked in `ipdu-setting`) and every
/// BMC password hold a recognizable value; every `show` of the settings family, in every
/// output, shows it nowhere.
#[test]
fn no_view_shows_a_secret() {
    const MARK: &str = "Qx9LeakMark0Zz7w";
    let lab = Lab::start_with(1000, |s| {
        s.replace("labpassw0rd", MARK).replace(
            "servers:\n",
            &format!(
                "snmp: {{community: {MARK}}}\npdus:\n  - {{address: 127.0.0.31, model: IBM_PDU}}\nservers:\n"
            ),
        )
    });
    let sock = lab.path("sock").display().to_string();
    for view in [
        "settings",
        "mserver-settings",
        "ipdu-setting",
        "status",
        "hamonitor",
    ] {
        for output in ["text", "json", "yaml"] {
            if output == "yaml" && view != "settings" {
                continue;
            }
            let run = haconn(&["show", view, "--output", output, "--control-socket", &sock]);
            run.code(0);
            assert!(
                !run.stdout.contains(MARK) && !run.stderr.contains(MARK),
                "show {view} --output {output} shows a secret:\n{run}"
            );
        }
    }
    haconn(&["show", "ipdu-setting", "--control-socket", &sock])
        .code(0)
        .stdout_has("SNMP Community : ********\n");
}
