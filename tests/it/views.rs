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

/// A management server of a pair that does not hear its peer is `undecided` (serving
/// nothing) until the start-up grace ends and it fences the peer; the peer it does not
/// hear is `----`, the manual's undecided state: never two `active`, and no `active` on
/// silence alone.
#[test]
fn show_status_in_a_pair_never_shows_an_active_server_on_silence() {
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
    assert_eq!(
        roles,
        [("labms01", "----"), ("labms02", "undecided")],
        "{s:#}"
    );
    assert_eq!(s["pair"]["peerLink"], "NG", "{s:#}");
    assert_eq!(s["pair"]["redundant"], false, "{s:#}");
    let run = d.haconn(&["show", "status"]);
    run.code(0)
        .stdout_has("pair              : labms02 is undecided; peer labms01 ---- (link NG, ----); NOT redundant")
        .stdout_has("management servers: mode pair, link to the peer NG");
    assert_eq!(row(&run.stdout, "labms01")[2], "----", "{run}");
    assert_eq!(row(&run.stdout, "labms02")[2], "undecided", "{run}");
    assert!(!run.stdout.contains(" active "), "{run}");
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

/// Issue 18 ("JSON schema-stable snapshots for each `show`"): the shape of every `show
/// --output json` — each field's path and JSON type, array elements merged — is pinned in
/// `tests/golden/json/` (UPDATE_EXPECT=1 rewrites them). A renamed, removed or retyped
/// field fails here; a script that reads these outputs can rely on what the files say.
#[test]
fn the_json_of_every_show_keeps_its_shape() {
    // A PDU feeding a server, so the PDU views have rows.
    let lab = Lab::start_with(1000, |s| {
        s.replace(
            "managementServers:",
            "snmp: {community: jsonShape01}\npdus:\n  - {address: 127.0.0.40, model: APC_RPDU}\nmanagementServers:",
        )
        .replace(
            "{name: labnode02, bmc: {address: 127.0.0.12, username: admin, password: labpassw0rd}, cluster: true}",
            "{name: labnode02, bmc: {address: 127.0.0.12, username: admin, password: labpassw0rd}, cluster: true, ipdu: {enabled: true, timeout: 5, recoveryTime: 5, outlets: [{pdu: 127.0.0.40, outlet: 3}]}}",
        )
    });
    // One monitor registered, so its row has every field.
    lab.register("labnode01", 1, free_port(), Some(1)).code(0);
    // One alert (the simulated BMC reads on: not confirmed), so `show alerts` has a row.
    haconn(&[
        "alert",
        "127.0.0.11",
        "2026/11/30",
        "10:00:00",
        "0xFE91",
        "--control-socket",
        &lab.socket_arg(),
    ])
    .code(1);
    // After a round of the watch, so its fields are filled.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while lab.status()["hardware"]["rounds"].as_u64().unwrap_or(0) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the watch never polled"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for view in [
        "status",
        "hamonitor",
        "ipdu",
        "ipdu-setting",
        "settings",
        "mserver-settings",
        "alerts",
        "version",
    ] {
        let run = haconn(&[
            "show",
            view,
            "--output",
            "json",
            "--control-socket",
            &lab.socket_arg(),
        ]);
        run.code(0);
        let v: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("show {view}: not JSON ({e})\n{run}"));
        let mut paths = std::collections::BTreeMap::new();
        shape(&v, "$", &mut paths);
        let text: String = paths
            .iter()
            .map(|(p, types)| {
                let t: Vec<&str> = types.iter().copied().collect();
                format!("{p}: {}\n", t.join("|"))
            })
            .collect();
        expect_golden(&format!("json/show-{view}.txt"), &text);
    }
}

/// Every path of `v` with the JSON types seen there (`[]` for any element of an array,
/// `{}` for any value of a map keyed by data, such as servers by name).
fn shape(
    v: &serde_json::Value,
    path: &str,
    out: &mut std::collections::BTreeMap<String, std::collections::BTreeSet<&'static str>>,
) {
    use serde_json::Value;
    let t = match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    out.entry(path.to_string()).or_default().insert(t);
    match v {
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                // Keys that are data (names, addresses) are not fields.
                let data = k.chars().any(|c| c.is_ascii_digit()) && !k.ends_with("Ms");
                let key = if data { "{}" } else { k.as_str() };
                shape(item, &format!("{path}.{key}"), out);
            }
        }
        _ => {}
    }
}

fn expect_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); UPDATE_EXPECT=1 creates it",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{} differs (UPDATE_EXPECT=1 rewrites it)\n--- want\n{want}\n--- got\n{actual}",
        path.display()
    );
}
