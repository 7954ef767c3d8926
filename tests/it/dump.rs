//! `haconn dump` (issue 17 item 2) against the real daemon: the archive holds every log
//! generation, the state dir, the daemon's answers, versions and host facts — and no
//! secret of the spec, in any member, in clear, hex or base64; with the daemon down it is
//! still written, with the logs and the state dir and a note saying so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::resetpath::{KEY, Lab, SYSTEMS, free_port, haconn, node_key};
use crate::support::run::{Run, execute};

const MS_PASSWORD: &str = "MsBmcSecret01x";
const NODE_PASSWORD: &str = "NodeBmcSecret02y";
const KG: &str = "KgSecret0003z";
const SNMP_COMMUNITY: &str = "SnmpSecret004w";
const TRAP_COMMUNITY: &str = "TrapSecret005v";

/// The lab spec with every kind of inline secret: the reset path's cluster key, BMC
/// passwords and a Kg, the SNMP community (with a PDU) and `alerts.community`.
fn lab_with_inline_secrets() -> Lab {
    let trap_port = free_port();
    Lab::start_with(1000, |s| {
        let s: String = s
            .lines()
            .map(|l| {
                if l.starts_with("  auth:") {
                    format!("  auth: {{key: \"{KEY}\"}}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        s.replacen("password: labpassw0rd", &format!("password: {MS_PASSWORD}"), 1)
            .replacen(
                "password: labpassw0rd}",
                &format!("password: {NODE_PASSWORD}, kg: {KG}}}"),
                1,
            )
            .replace("labpassw0rd", NODE_PASSWORD)
            .replace(
                "servers:\n",
                &format!(
                    "snmp: {{community: {SNMP_COMMUNITY}}}\npdus:\n  - {{address: 127.0.0.31, model: IBM_PDU}}\nalerts:\n  address: 127.0.0.1\n  port: {trap_port}\n  community: {TRAP_COMMUNITY}\nservers:\n"
                ),
            )
    })
}

/// Every member of a tar.gz: path → content.
fn unpack(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    crate::support::unpack_tar_gz(std::fs::File::open(archive).expect("open the archive"))
}

/// The members under the archive's one top directory, by their path below it.
fn below_top(members: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    let tops: std::collections::BTreeSet<&str> = members
        .keys()
        .map(|p| p.split('/').next().unwrap())
        .collect();
    assert_eq!(tops.len(), 1, "one top directory: {tops:?}");
    let top = tops.into_iter().next().unwrap().to_string();
    assert!(top.starts_with("haconn-dump-"), "{top}");
    members
        .into_iter()
        .map(|(p, d)| (p[top.len() + 1..].to_string(), d))
        .collect()
}

fn text(members: &BTreeMap<String, Vec<u8>>, name: &str) -> String {
    let data = members
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", members.keys()));
    String::from_utf8_lossy(data).into_owned()
}

fn hex(s: &str, upper: bool) -> String {
    s.bytes()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

fn base64(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn dump_in(dir: &Path, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_haconn"));
    cmd.current_dir(dir);
    let mut a = vec!["dump".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    execute(cmd, a, Vec::new())
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("the archive")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn dump_holds_every_log_and_no_secret_of_the_spec() {
    let lab = lab_with_inline_secrets();
    // A reset, so the reset log, the event log and the history have lines; an alert, so
    // the alert log has one.
    lab.register("labnode01", 1, free_port(), Some(2)).code(0);
    lab.reset_node02(free_port(), 7)
        .finish(Duration::from_secs(30));
    haconn(&["alert", "127.0.0.11", "--control-socket", &lab.socket_arg()]);
    // A leftover temporary copy of the applied spec (a crash mid-save leaves one): it
    // holds the inline secrets, so it must stay out.
    std::fs::write(
        lab.path("state/.applied.yaml.tmp.999"),
        format!("password: {NODE_PASSWORD}\n"),
    )
    .unwrap();

    // The daemon's state file holds every one of them: there was something to leak.
    let applied = std::fs::read_to_string(lab.path("state/applied.yaml")).unwrap();
    for s in [
        KEY,
        MS_PASSWORD,
        NODE_PASSWORD,
        KG,
        SNMP_COMMUNITY,
        TRAP_COMMUNITY,
    ] {
        assert!(applied.contains(s), "{s} not in the state file:\n{applied}");
    }

    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("case-1234.tar.gz");
    let run = dump_in(
        out.path(),
        &[
            "--output",
            &archive.display().to_string(),
            "--control-socket",
            &lab.socket_arg(),
            "--state-dir",
            &lab.path("state").display().to_string(),
            "--log-dir",
            &lab.path("log").display().to_string(),
        ],
    );
    run.code(0).stdout_has("case-1234.tar.gz (");
    assert_eq!(mode_of(&archive), 0o600, "{run}");
    assert_eq!(
        std::fs::read_dir(out.path()).unwrap().count(),
        1,
        "only the file --output names"
    );
    let members = below_top(unpack(&archive));

    for name in [
        "README.txt",
        "versions.json",
        "host/uname.txt",
        "host/hostname.txt",
        "host/uptime.txt",
        "host/ip-addr.txt",
        "host/time.txt",
        "daemon/status.json",
        "daemon/hamonitor.json",
        "daemon/ipdu.json",
        "daemon/ipdu-setting.json",
        "daemon/settings.json",
        "daemon/mserver-settings.json",
        "daemon/alerts.json",
        "daemon/version.json",
        "daemon/spec.yaml",
        "state/applied.yaml",
        "state/history.jsonl",
        "state/resetpath-highwater",
        "logs/event.log",
        "logs/reset.log",
        "logs/error.log",
        "logs/init.log",
        "logs/alert.log",
    ] {
        assert!(
            members.contains_key(name),
            "no {name} in {:?}",
            members.keys()
        );
    }
    assert!(
        !members
            .keys()
            .any(|k| k.contains(".applied.yaml.tmp") || k == "state/lock"),
        "{:?}",
        members.keys()
    );
    assert!(!members.contains_key("daemon/UNREACHABLE.txt"));
    // The logs are the daemon's, with the reset in them.
    assert!(
        text(&members, "logs/reset.log").contains("RM-RESET labnode02"),
        "{}",
        text(&members, "logs/reset.log")
    );
    assert!(text(&members, "state/history.jsonl").contains("labnode02"));
    assert!(text(&members, "daemon/alerts.json").contains("127.0.0.11"));
    // The specs are there, masked.
    for spec in ["daemon/spec.yaml", "state/applied.yaml"] {
        let t = text(&members, spec);
        assert!(
            t.contains("apiVersion: haconn/v1") && t.contains("********"),
            "{t}"
        );
    }
    let versions: serde_json::Value =
        serde_json::from_slice(&members["versions.json"]).expect("JSON");
    assert_eq!(versions["differ"], false, "{versions:#}");
    assert_eq!(versions["client"], versions["daemon"], "{versions:#}");
    let readme = text(&members, "README.txt");
    assert!(
        readme.contains("state/.applied.yaml.tmp.999: left out"),
        "{readme}"
    );
    // Nothing needed the second guard: no packed file held a secret.
    assert!(!readme.contains("MASKED"), "{readme}");

    // No secret anywhere: not in any member's bytes or name, in clear, hex or base64;
    // nor any node's derived key.
    let mut secrets: Vec<String> = [
        KEY,
        MS_PASSWORD,
        NODE_PASSWORD,
        KG,
        SNMP_COMMUNITY,
        TRAP_COMMUNITY,
    ]
    .iter()
    .flat_map(|s| [s.to_string(), hex(s, false), hex(s, true), base64(s)])
    .collect();
    secrets.extend(SYSTEMS.iter().map(|s| node_key(s)));
    for (name, data) in &members {
        for s in &secrets {
            let found = data.windows(s.len()).any(|w| w == s.as_bytes()) || name.contains(s);
            assert!(!found, "{name} holds a secret ({} bytes in)", s.len());
        }
    }
}

#[test]
fn dump_with_the_daemon_down_still_packs_the_logs_and_the_state_dir() {
    let mut lab = Lab::start(1000);
    lab.register("labnode01", 1, free_port(), None).code(0);
    lab.reset_node02(free_port(), 3)
        .finish(Duration::from_secs(30));
    lab.stop();

    let cwd = tempfile::tempdir().unwrap();
    let run = dump_in(
        cwd.path(),
        &[
            "--control-socket",
            &lab.socket_arg(),
            "--state-dir",
            &lab.path("state").display().to_string(),
            "--log-dir",
            &lab.path("log").display().to_string(),
        ],
    );
    run.code(0).stderr_has("the daemon did not answer");
    // The default name, in the current directory.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}\n{run}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let stamp = name
        .strip_prefix("haconn-dump-")
        .and_then(|n| n.strip_suffix(".tar.gz"))
        .unwrap_or_else(|| panic!("{name}"));
    let (host, time) = stamp.split_at(stamp.len().saturating_sub(15));
    assert!(host.ends_with('-') && host.len() > 1, "{name}");
    assert!(
        time.len() == 15
            && time.as_bytes()[8] == b'-'
            && time.bytes().filter(u8::is_ascii_digit).count() == 14,
        "{name}"
    );
    assert_eq!(mode_of(&files[0]), 0o600);

    let members = below_top(unpack(&files[0]));
    for name in [
        "README.txt",
        "versions.json",
        "daemon/UNREACHABLE.txt",
        "host/uname.txt",
        "state/applied.yaml",
        "state/history.jsonl",
        "logs/event.log",
        "logs/reset.log",
        "logs/init.log",
    ] {
        assert!(
            members.contains_key(name),
            "no {name} in {:?}",
            members.keys()
        );
    }
    assert!(!members.contains_key("daemon/status.json"));
    assert!(text(&members, "logs/reset.log").contains("RM-RESET labnode02"));
    assert!(text(&members, "README.txt").contains("did NOT answer"));
    let versions: serde_json::Value =
        serde_json::from_slice(&members["versions.json"]).expect("JSON");
    assert!(versions["daemon"].is_null(), "{versions:#}");
    assert!(versions["client"]["version"].is_string(), "{versions:#}");

    // An existing file is never overwritten.
    let again = dump_in(
        cwd.path(),
        &[
            "--output",
            &files[0].display().to_string(),
            "--control-socket",
            &lab.socket_arg(),
            "--state-dir",
            &lab.path("state").display().to_string(),
            "--log-dir",
            &lab.path("log").display().to_string(),
        ],
    );
    again.code(2).stderr_has("cannot create");
}
