//! The daemon end to end: the real `haconn daemon` binary on loopback only, driven through
//! its spec file, its control socket, `haconn apply/diff/show` and signals.
//!
//! Every spec is a variant of `examples/lab-single.yaml` (see `daemon_support`); most vary
//! the BMC ports of labnode01/labnode02, a change a reload may apply at runtime while no HA
//! monitor is active, so each reload's plan line `bmc.port: OLD -> NEW` says which one it was.

use crate::support::daemon as daemon_support;
use crate::support::secret_leaks;

use std::io::Write as _;
use std::time::{Duration, Instant};

use daemon_support::{
    BASE_PORTS, Daemon, Entry, Prng, assert_quiet_on_epipe, bmc_port, code_of, haconn, haconn_as,
    haconn_into_closed_pipe, lab, pair, parse_log, try_request,
};
use haconn::spec::{CheckOptions, check_bytes};

const NODE1_ROW: &str = "    labnode01             : Change       : ";
const NODE2_ROW: &str = "    labnode02             : Change       : ";

fn port_change(from: u16, to: u16) -> String {
    format!("~ bmc.port: {from} -> {to}")
}

/// Waits for the watcher's reload that moves labnode01's BMC port `from` → `to`, checks
/// it completed, and that the live settings show the new port.
fn expect_watch_reload(d: &Daemon, skip: usize, from: u16, to: u16) -> Entry {
    let change = port_change(from, to);
    let e = d.wait_for_log(skip, &format!("reload (Watch) {change}"), |e| {
        e.is_reload("Watch") && e.has(&change)
    });
    assert!(e.completed(), "reload not completed:\n{}", e.text());
    assert!(
        e.has(&format!("{NODE1_ROW}Success")),
        "no success row:\n{}",
        e.text()
    );
    assert_eq!(bmc_port(&d.settings(), "labnode01"), to);
    e
}

/// Writes `text` to `path` through a temporary file in the same directory and a rename.
fn replace_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_file_name(".cluster.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn the_watcher_follows_every_way_the_file_is_replaced() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let spec = d.spec.clone();
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);

    // In place (truncate and write).
    let n = d.entries().len();
    std::fs::write(&spec, lab(17001, 16232)).unwrap();
    expect_watch_reload(&d, n, 16231, 17001);

    // Temporary file and rename, as ansible and editors do.
    let n = d.entries().len();
    replace_by_rename(&spec, &lab(17002, 16232));
    expect_watch_reload(&d, n, 17001, 17002);

    // Delete: reported, live configuration kept; re-create with new content: applied.
    let n = d.entries().len();
    std::fs::remove_file(&spec).unwrap();
    d.wait_for_log(n, "spec file cannot be read", |e| {
        e.first().contains("cannot be read") && e.first().contains("live configuration kept")
    });
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17002);
    let n = d.entries().len();
    std::fs::write(&spec, lab(17003, 16232)).unwrap();
    expect_watch_reload(&d, n, 17002, 17003);

    // Half written: an invalid prefix is refused and changes nothing; the whole file applies.
    let full = lab(17004, 16232);
    let cut = full
        .find("servers:\n  - name: labnode01")
        .expect("servers section");
    let half = &full[..cut + "servers:\n  - name: labn".len()];
    assert!(
        check_bytes(half.as_bytes(), CheckOptions::default())
            .spec
            .is_none(),
        "the prefix must be invalid"
    );
    let n = d.entries().len();
    std::fs::write(&spec, half).unwrap();
    let refused = d.wait_for_log(n, "refusal of the half-written file", |e| {
        e.is_refusal("Watch")
    });
    assert!(
        refused.first().contains("nothing changed"),
        "{}",
        refused.text()
    );
    let settings = d.settings();
    assert_eq!(bmc_port(&settings, "labnode01"), 17003);
    assert_eq!(bmc_port(&settings, "labnode02"), 16232);
    let status = d.status();
    assert!(
        status["status"]["lastInvalid"]
            .as_str()
            .is_some_and(|s| s.contains("refused")),
        "status does not show the refused spec: {status}"
    );
    let n = d.entries().len();
    std::fs::write(&spec, &full).unwrap();
    expect_watch_reload(&d, n, 17003, 17004);
    // The refusal did not count as a reload; the four applied ones did.
    assert_eq!(d.status()["status"]["reloads"], 4);
}

/// Kubernetes mounts a ConfigMap as `cluster.yaml -> ..data/cluster.yaml`, `..data ->
/// ..VERSION`, and updates it by renaming a new `..data` link over the old one.
#[test]
fn the_watcher_follows_a_kubernetes_style_symlink_swap() {
    use std::os::unix::fs::symlink;
    let d = Daemon::new(&lab(16231, 16232)).spec_at("conf/cluster.yaml");
    d.write("conf/..v1/cluster.yaml", &lab(16231, 16232));
    symlink("..v1", d.path("conf/..data")).unwrap();
    symlink("..data/cluster.yaml", d.path("conf/cluster.yaml")).unwrap();
    let d = d.start();
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);

    let swap = |version: &str, port: u16| {
        d.write(&format!("conf/{version}/cluster.yaml"), &lab(port, 16232));
        let tmp = d.path("conf/..data_tmp");
        symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, d.path("conf/..data")).unwrap();
    };
    let n = d.entries().len();
    swap("..v2", 17011);
    expect_watch_reload(&d, n, 16231, 17011);
    // The old version goes away after the swap; that must not disturb anything.
    std::fs::remove_dir_all(d.path("conf/..v1")).unwrap();

    let n = d.entries().len();
    swap("..v3", 17012);
    expect_watch_reload(&d, n, 17011, 17012);
    assert!(
        !d.entries().iter().any(|e| e.is_refusal("Watch")),
        "a symlink swap was seen half done:\n{}",
        d.diagnostics()
    );
}

#[test]
fn apply_prints_the_summary_and_a_dry_run_changes_nothing() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let new = d.write("new.yaml", &lab(17021, 16232));
    let new_arg = new.display().to_string();
    let state_arg = d.state_dir().display().to_string();
    let diff = || d.haconn(&["diff", "--spec", &new_arg, "--state-dir", &state_arg]);

    let before = diff();
    before
        .code(2)
        .stdout_has(&port_change(16231, 17021))
        .stdout_has("physical server labnode01");
    let applied_before = std::fs::read(d.applied()).unwrap();
    let log_before = d.entries().len();

    let dry = d.haconn(&["apply", "--spec", &new_arg, "--dry-run"]);
    dry.code(0)
        .stdout_has(&port_change(16231, 17021))
        .stdout_has("-- HA monitor connector reload : completed. --")
        .stdout_has(&format!("{NODE1_ROW}Success"));

    let after = diff();
    after.code(2);
    assert_eq!(
        before.stdout, after.stdout,
        "the dry run changed the live diff"
    );
    assert_eq!(
        applied_before,
        std::fs::read(d.applied()).unwrap(),
        "the dry run changed the state dir"
    );
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);
    assert_eq!(
        d.entries().len(),
        log_before,
        "the dry run wrote to the event log"
    );
    assert_eq!(d.status()["status"]["reloads"], 0);

    // The real thing.
    let run = d.apply(&new);
    run.code(0)
        .stdout_has(&port_change(16231, 17021))
        .stdout_has("-- HA monitor connector reload : completed. --")
        .stdout_has("    Physical Server      :       1 / 1      : Success")
        .stdout_has(&format!("{NODE1_ROW}Success"))
        .stdout_has("    labms01                           : Change");
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17021);
    let saved = std::fs::read_to_string(d.applied()).unwrap();
    assert_eq!(bmc_port(&saved, "labnode01"), 17021);
    diff().code(0).stdout_has("No changes.");
    let block = d.wait_for_log(log_before, "reload (Apply)", |e| e.is_reload("Apply"));
    assert!(block.completed(), "{}", block.text());

    // Applying it again changes nothing and still completes.
    d.apply(&new)
        .code(0)
        .stdout_has("-- HA monitor connector reload : completed. --")
        .stdout_has("    labms01                           : No Change");

    // An invalid spec never reaches the daemon; a missing daemon is exit 2.
    let bad = d.write("bad.yaml", "apiVersion: haconn/v1\nservers: 3\n");
    d.apply(&bad).code(1);
    haconn(&[
        "apply",
        "--spec",
        &new_arg,
        "--control-socket",
        &d.path("nobody-here").display().to_string(),
    ])
    .code(2);
    assert_eq!(d.status()["status"]["reloads"], 2);
}

#[test]
fn refusals_follow_the_monitor_and_reset_states() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let simulate = |event: &str, system: &str| {
        let reply = d.request(&format!(
            r#"{{"v":1,"op":"simulate","simulation":{{"event":"{event}","system":"{system}"}}}}"#
        ));
        assert_eq!(code_of(&reply), "ok", "{reply}");
    };

    // HA monitor active on labnode01: its BMC change is refused, labnode02's applies.
    simulate("monitorUp", "labnode01");
    let both = d.write("both.yaml", &lab(17031, 17032));
    d.apply(&both)
        .code(1)
        .stdout_has("-- HA monitor connector reload : failed. --")
        .stdout_has(&format!("{NODE1_ROW}Error (HA monitor active)"))
        .stdout_has(&format!("{NODE2_ROW}Success"))
        .stdout_has("    Physical Server      :       1 / 2      : Failed");
    let settings = d.settings();
    assert_eq!(bmc_port(&settings, "labnode01"), 16231, "{settings}");
    assert_eq!(bmc_port(&settings, "labnode02"), 17032, "{settings}");
    let saved = std::fs::read_to_string(d.applied()).unwrap();
    assert_eq!(bmc_port(&saved, "labnode01"), 16231);
    assert_eq!(bmc_port(&saved, "labnode02"), 17032);
    let block = d.wait_for_log(0, "the failed reload", |e| e.is_reload("Apply"));
    assert!(block.failed(), "{}", block.text());
    assert!(block.has("Error (HA monitor active)"), "{}", block.text());

    // A reset in progress on labnode02 refuses any change to it.
    simulate("monitorDown", "labnode01");
    simulate("resetStarted", "labnode02");
    let next = d.write("next.yaml", &lab(17031, 17033));
    d.apply(&next)
        .code(1)
        .stdout_has("-- HA monitor connector reload : failed. --")
        .stdout_has(&format!("{NODE1_ROW}Success"))
        .stdout_has(&format!("{NODE2_ROW}Error (reset in progress)"));
    let settings = d.settings();
    assert_eq!(bmc_port(&settings, "labnode01"), 17031, "{settings}");
    assert_eq!(bmc_port(&settings, "labnode02"), 17032, "{settings}");

    // Once the reset is over, the same apply goes through.
    simulate("resetFinished", "labnode02");
    d.apply(&next)
        .code(0)
        .stdout_has("-- HA monitor connector reload : completed. --")
        .stdout_has(&format!("{NODE2_ROW}Success"));
    assert_eq!(bmc_port(&d.settings(), "labnode02"), 17033);

    // A global setting needs a restart: refused, while the rest of the reload applies.
    let restart = d.write(
        "restart.yaml",
        &lab(17034, 17033).replace("hispeed: 1000", "hispeed: 1500"),
    );
    d.apply(&restart)
        .code(1)
        .stdout_has("-- HA monitor connector reload : failed. --")
        .stdout_has("    hispeed               : Change       : Error (needs restart)")
        .stdout_has(&format!("{NODE1_ROW}Success"));
    let settings = d.settings();
    assert!(settings.contains("\nhispeed: 1000\n"), "{settings}");
    assert_eq!(bmc_port(&settings, "labnode01"), 17034);
}

#[test]
fn concurrent_applies_are_serialized() {
    const N: u16 = 6;
    let d = Daemon::new(&lab(16231, 16232)).start();
    let variants: Vec<std::path::PathBuf> = (1..=N)
        .map(|i| d.write(&format!("v{i}.yaml"), &lab(17040 + i, 17050 + i)))
        .collect();
    let runs: Vec<_> = std::thread::scope(|s| {
        let d = &d;
        let handles: Vec<_> = variants
            .iter()
            .map(|v| s.spawn(move || d.apply(v)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, run) in (1..=N).zip(&runs) {
        run.code(0)
            .stdout_has("~ bmc.port: ")
            .stdout_has(&format!(" -> {}", 17040 + i))
            .stdout_has("-- HA monitor connector reload : completed. --")
            .stdout_has("    <Management Server System Name>   : <Result>")
            .stdout_has("    labms01                           : Change");
        assert_eq!(
            run.stdout
                .matches("-- HA monitor connector reload :")
                .count(),
            1,
            "{run}"
        );
    }

    let blocks: Vec<Entry> = d
        .entries()
        .into_iter()
        .filter(|e| e.first().starts_with("reload ("))
        .collect();
    assert_eq!(blocks.len(), N as usize, "{}", d.diagnostics());
    // One after the other: each reload starts from the state the previous one left.
    let mut live = BASE_PORTS.0;
    let mut seen = Vec::new();
    for b in &blocks {
        assert!(b.is_reload("Apply") && b.completed(), "{}", b.text());
        assert_eq!(
            b.lines
                .iter()
                .filter(|l| l.starts_with("-- HA monitor connector reload"))
                .count(),
            1,
            "interleaved:\n{}",
            b.text()
        );
        let change = b
            .lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("~ bmc.port: "))
            .and_then(|l| l.split_once(" -> "))
            .map(|(a, b)| (a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap()));
        let (from, to) = change.unwrap_or_else(|| panic!("no port change in\n{}", b.text()));
        assert_eq!(
            from, live,
            "a reload did not start from the previous one's result"
        );
        assert!((17041..=17040 + N).contains(&to));
        seen.push(to);
        live = to;
    }
    seen.sort_unstable();
    assert_eq!(seen, (17041..=17040 + N).collect::<Vec<_>>());
    let settings = d.settings();
    assert_eq!(bmc_port(&settings, "labnode01"), live);
    assert_eq!(bmc_port(&settings, "labnode02"), live + 10);
    assert_eq!(d.status()["status"]["reloads"], N as u64);
}

#[test]
fn a_crash_at_any_moment_leaves_a_complete_state_file() {
    const ROUNDS: u64 = 12;
    let mut d = Daemon::new(&lab(16231, 16232));
    let allowed: Vec<u16> = std::iter::once(BASE_PORTS.0)
        .chain((0..ROUNDS as u16).map(|r| 17100 + r))
        .collect();
    for round in 0..ROUNDS {
        let mut rng = Prng::new(round);
        let delay = Duration::from_millis(rng.below(31));
        let new_port = 17100 + round as u16;
        let text = lab(new_port, 16232);
        d.spawn();
        // Every fourth round dies while starting; the others during a reload.
        if round % 4 == 3 {
            std::thread::sleep(delay);
            d.kill9();
        } else {
            d.wait_ready();
            let leftovers: Vec<String> = std::fs::read_dir(d.state_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".applied.yaml.tmp"))
                .collect();
            assert!(
                leftovers.is_empty(),
                "round {round}: {leftovers:?} left behind"
            );
            let line =
                serde_json::json!({"v": 1, "op": "apply", "spec": text, "force": true}).to_string();
            let socket = d.socket();
            let apply = std::thread::spawn(move || try_request(&socket, &line));
            std::thread::sleep(delay);
            d.kill9();
            // A reload reported as done was saved before the answer.
            if let Some(reply) = apply.join().unwrap() {
                assert_eq!(reply["completed"], true, "round {round}: {reply}");
                let saved = std::fs::read_to_string(d.applied()).unwrap();
                assert_eq!(bmc_port(&saved, "labnode01"), new_port, "round {round}");
            }
        }
        let bytes = std::fs::read(d.applied())
            .unwrap_or_else(|e| panic!("round {round} (delay {delay:?}): no applied.yaml: {e}"));
        let checked = check_bytes(&bytes, CheckOptions::default());
        assert!(
            checked.spec.is_some(),
            "round {round} (delay {delay:?}): applied.yaml is not a valid spec: {:?}\n{}",
            checked.diagnostics,
            String::from_utf8_lossy(&bytes)
        );
        let port = bmc_port(&String::from_utf8_lossy(&bytes), "labnode01");
        assert!(allowed.contains(&port), "round {round}: port {port}");
    }
    d.spawn();
    d.wait_ready();
    let entries = std::fs::read_dir(d.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "lock")
        .collect::<Vec<_>>();
    assert_eq!(entries, vec!["applied.yaml".to_string()]);
    haconn(&["validate", &d.applied().display().to_string()]).code(0);
    assert_eq!(d.status()["status"]["startedFrom"], "spec file");
    assert_eq!(d.stop().and_then(|s| s.code()), Some(0));
}

#[test]
fn bad_input_on_the_control_socket_harms_nobody() {
    let d = Daemon::new(&lab(16231, 16232)).without_test_hooks().start();

    // Garbage: an error, and the same connection still serves.
    let mut c = d.connect();
    c.send("this is not json");
    assert_eq!(code_of(&c.recv().unwrap()), "bad-request");
    c.send(r#"{"v":1,"op":"explode"}"#);
    assert_eq!(code_of(&c.recv().unwrap()), "bad-request");
    c.send(r#"{"v":1,"op":"status"}"#);
    assert_eq!(code_of(&c.recv().unwrap()), "ok");

    // Half a request, then silence: nobody else waits for it.
    let mut silent = d.connect();
    silent.send_raw(br#"{"v":1,"op":"sta"#).unwrap();
    let t = Instant::now();
    let reply = d.request(r#"{"v":1,"op":"status"}"#);
    assert_eq!(code_of(&reply), "ok");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );

    // A line over the 17 MiB cap (twice the 8 MiB spec limit, plus 1 MiB): `too-long`, or
    // the daemon hangs up.
    let mut big = d.connect();
    let writer = {
        let mut stream = big.0.get_ref().try_clone().unwrap();
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..18 {
                if stream.write_all(&chunk).is_err() {
                    return;
                }
            }
            let _ = stream.write_all(b"\n");
        })
    };
    match big.recv() {
        None => {}
        Some(reply) => assert_eq!(code_of(&reply), "too-long", "{reply}"),
    }
    writer.join().unwrap();
    assert!(
        big.recv().is_none(),
        "still connected after an over-long line"
    );

    // Another protocol version; a test hook on a daemon without them.
    let reply = d.request(r#"{"v":2,"op":"status"}"#);
    assert_eq!(code_of(&reply), "version", "{reply}");
    let reply = d.request(
        r#"{"v":1,"op":"simulate","simulation":{"event":"monitorUp","system":"labnode01"}}"#,
    );
    assert_eq!(code_of(&reply), "forbidden", "{reply}");

    d.haconn(&["show", "status"])
        .code(0)
        .stdout_has("management server : labms01");

    // The silent client is told off after the idle timeout (10 s) and disconnected.
    silent.set_read_timeout(Duration::from_secs(20));
    let reply = silent.recv().expect("a reply before the hang-up");
    assert_eq!(code_of(&reply), "timeout", "{reply}");
    assert!(silent.recv().is_none());
    assert_eq!(code_of(&d.request(r#"{"v":1,"op":"get"}"#)), "ok");
}

#[test]
fn an_invalid_spec_at_start_falls_back_to_the_state_dir() {
    let broken = "apiVersion: haconn/v1\nmode: single\nservers: [\n";
    let d = Daemon::new(broken);
    d.write("state/applied.yaml", &lab(17061, 16232));
    let d = d.start();
    let status = d.status();
    let s = &status["status"];
    assert_eq!(s["startedFrom"], "state dir", "{status}");
    assert!(
        s["degraded"]
            .as_str()
            .is_some_and(|m| m.contains("invalid")),
        "{status}"
    );
    d.haconn(&["show", "status"]).code(0).stdout_has("DEGRADED");
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17061);
    d.wait_for_log(0, "the fallback", |e| {
        e.first().starts_with("STARTING FROM THE LAST APPLIED SPEC")
    });
    // The state file is not overwritten by a fallback start.
    assert_eq!(
        std::fs::read_to_string(d.applied()).unwrap(),
        lab(17061, 16232)
    );

    // Fixing the file reloads it.
    let n = d.entries().len();
    std::fs::write(&d.spec, lab(17062, 16232)).unwrap();
    expect_watch_reload(&d, n, 17061, 17062);
}

#[test]
fn the_daemon_refuses_to_start_with_nothing_valid() {
    let run_daemon = |d: &Daemon| d.run_refused("log");
    // No state file at all.
    let d = Daemon::new("apiVersion: haconn/v1\nservers: 3\n");
    let spec = d.spec.display().to_string();
    let run = run_daemon(&d);
    assert_eq!(
        run.stderr.matches("refusing to start").count(),
        1,
        "a startup error is printed once\n{run}"
    );
    run.code(1)
        .stderr_has("the spec file is invalid")
        .stderr_has(&spec)
        .stderr_has("no last applied spec in")
        .stderr_has(&d.state_dir().display().to_string());
    assert!(!d.socket().exists());

    // A state file that is broken too.
    d.write("state/applied.yaml", "apiVersion: haconn/v1\nmode: [\n");
    run_daemon(&d)
        .code(1)
        .stderr_has(&spec)
        .stderr_has(&d.applied().display().to_string())
        .stderr_has("not valid either");

    // A spec file that does not exist.
    std::fs::remove_file(&d.spec).unwrap();
    run_daemon(&d)
        .code(1)
        .stderr_has("cannot be read")
        .stderr_has(&spec);
}

#[test]
fn sighup_reloads_and_sigterm_stops_cleanly() {
    let mut d = Daemon::new(&lab(16231, 16232)).arg("--no-watch").start();
    assert_eq!(d.status()["status"]["watching"], false);
    let n = d.entries().len();
    std::fs::write(&d.spec, lab(17071, 16232)).unwrap();
    // Not watching: several poll intervals pass without a reload.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        d.entries()
            .iter()
            .skip(n)
            .all(|e| !e.first().starts_with("reload")),
        "{}",
        d.diagnostics()
    );
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);

    d.signal(libc::SIGHUP);
    let change = port_change(16231, 17071);
    let block = d.wait_for_log(n, "reload (Signal)", |e| {
        e.is_reload("Signal") && e.has(&change)
    });
    assert!(block.completed(), "{}", block.text());
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17071);
    assert_eq!(d.status()["status"]["lastReload"]["origin"], "signal");

    d.signal(libc::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exit within 5 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", d.diagnostics());
    assert!(!d.socket().exists(), "the socket file was left behind");
    let log = std::fs::read_to_string(d.event_log()).unwrap();
    let last = parse_log(&log).pop().unwrap();
    assert_eq!(last.first(), "haconn daemon stopped");
}

/// A management server of a pair that is not active (here: it never heard its peer)
/// takes no spec but the active's: `apply` is refused, saying why, and nothing changes;
/// a dry run still plans. (The pair itself, with the spec sent to the standby, is in
/// `pair.rs`.)
#[test]
fn a_pair_member_that_is_not_active_refuses_reloads() {
    let d = Daemon::new(&pair(16231, 16232))
        .arg("--mserver")
        .arg("labms01")
        .start();
    let changed = d.write("changed.yaml", &pair(17081, 16232));
    d.apply(&changed).code(1).stderr_has(
        "labms01 is undecided in its pair (not serving): a spec is applied on the active",
    );
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);
    d.haconn(&[
        "apply",
        "--spec",
        &changed.display().to_string(),
        "--dry-run",
    ])
    .code(1)
    .stdout_has("labnode01");
}

// Daemon bugs found while writing these tests, fixed since; each test keeps them fixed.

#[test]
fn a_refused_second_daemon_leaves_the_running_ones_state_alone() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let new = d.write("new.yaml", &lab(17091, 16232));
    d.apply(&new).code(0);
    let saved = std::fs::read(d.applied()).unwrap();
    d.run_refused("log2")
        .code(1)
        .stderr_has("another haconn daemon is using the state dir");
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17091);
    assert_eq!(
        String::from_utf8_lossy(&std::fs::read(d.applied()).unwrap()),
        String::from_utf8_lossy(&saved),
        "the refused daemon overwrote the running daemon's last applied spec"
    );
}

#[test]
fn a_file_at_the_socket_path_is_not_deleted() {
    let mut d = Daemon::new(&lab(16231, 16232));
    d.write("sock", "not a socket; someone's data\n");
    d.spawn();
    let status = d.wait_exit(Duration::from_secs(5));
    let left = std::fs::read_to_string(d.socket());
    d.stop();
    assert!(
        left.as_deref().is_ok_and(|t| t.starts_with("not a socket")),
        "the file at the socket path was replaced: {left:?}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(1));
}

#[test]
fn a_busy_spec_directory_does_not_starve_the_watcher() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = Daemon::new(&lab(16231, 16232)).start();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let busy = d.path("busy.txt");
        let stop = &stop;
        s.spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                std::fs::write(&busy, i.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let n = d.entries().len();
        std::fs::write(&d.spec, lab(17095, 16232)).unwrap();
        let change = port_change(16231, 17095);
        let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            d.wait_for_log(n, "reload (Watch) while the directory is busy", |e| {
                e.is_reload("Watch") && e.has(&change)
            })
        }));
        stop.store(true, Ordering::Relaxed);
        if let Err(p) = seen {
            std::panic::resume_unwind(p);
        }
    });
}

#[test]
fn fixing_the_spec_file_ends_the_degraded_state() {
    let d = Daemon::new("apiVersion: haconn/v1\nmode: single\nservers: [\n");
    d.write("state/applied.yaml", &lab(17061, 16232));
    let d = d.start();
    assert!(d.status()["status"]["degraded"].is_string());
    let n = d.entries().len();
    std::fs::write(&d.spec, lab(17062, 16232)).unwrap();
    expect_watch_reload(&d, n, 17061, 17062);
    let status = d.status();
    assert!(
        status["status"]["degraded"].is_null(),
        "still degraded after the spec file was applied: {status}"
    );
}

#[test]
fn live_diff_falls_back_to_the_last_applied_spec_when_the_daemon_is_down() {
    let mut d = Daemon::new(&lab(16231, 16232)).start();
    let applied = d.write("applied-by-apply.yaml", &lab(17101, 16232));
    d.apply(&applied).code(0);
    assert_eq!(d.stop().and_then(|s| s.code()), Some(0));
    let state_dir = d.state_dir().display().to_string();
    let socket = d.socket_arg();
    let diff = |file: &std::path::Path| {
        haconn(&[
            "diff",
            "--spec",
            &file.display().to_string(),
            "--control-socket",
            &socket,
            "--state-dir",
            &state_dir,
        ])
    };
    // The spec file still says 16231; the last applied spec says 17101.
    diff(&d.spec)
        .code(2)
        .stderr_has("the daemon is not reachable")
        .stderr_has("comparing with the last applied spec")
        .stdout_has("bmc.port: 17101 -> 16231");
    diff(&applied).code(0).stdout_has("No changes.");
    // A change that needs a restart is no error with the daemon down: its start takes it.
    let slower = d.write(
        "slower.yaml",
        &lab(17101, 16232).replace("hispeed: 1000", "hispeed: 2000"),
    );
    let run = diff(&slower);
    run.code(2).stdout_has("global hispeed  [needs restart]");
    assert!(!run.stdout.contains("=> Error"), "{run}");
}

/// Everything a daemon wrote: its stderr (journald under systemd) and every log file.
fn everything_logged(d: &Daemon) -> String {
    let mut all = d.diagnostics();
    for entry in std::fs::read_dir(d.path("log")).expect("the log dir") {
        let path = entry.expect("an entry").path();
        all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    all
}

/// Every secret field of the schema holding a recognizable value next to an error
/// elsewhere: refused by `apply`, by the watcher (SIGHUP) and at start, and the value is
/// in none of the replies, the event log, the other logs or stderr.
#[test]
fn no_secret_field_ever_shows_in_the_daemons_replies_or_logs() {
    let base = lab(16231, 16232);
    let mut d = Daemon::new(&base).start();
    let variants = secret_leaks::variants(&base);
    for (i, (what, text)) in variants.iter().enumerate() {
        let file = d.write(&format!("v{i}.yaml"), text);
        let run = d.apply(&file);
        run.code(1);
        assert!(
            !run.stdout.contains(secret_leaks::MARK) && !run.stderr.contains(secret_leaks::MARK),
            "{what}: apply shows the secret\n{run}"
        );
        let reply = d.request(
            &serde_json::json!({"v": 1, "op": "apply", "spec": text, "dryRun": true}).to_string(),
        );
        assert_eq!(reply["valid"], false, "{what}: {reply}");
        assert!(
            !reply.to_string().contains(secret_leaks::MARK),
            "{what}: the reply shows the secret: {reply}"
        );
    }
    // The watcher's reload and a start from the state dir log the file's diagnostics.
    let skip = d.entries().len();
    std::fs::write(&d.spec, &variants[0].1).expect("write the spec");
    d.signal(libc::SIGHUP);
    d.wait_for_log(skip, "refused reload", |e| e.is_refusal("Signal"));
    assert_eq!(d.stop().and_then(|s| s.code()), Some(0));
    d.spawn();
    d.wait_ready();
    assert_eq!(d.status()["status"]["startedFrom"], "state dir");
    d.stop();
    let logged = everything_logged(&d);
    assert!(
        logged.contains("refused: the spec is invalid"),
        "the refusals were not logged:\n{logged}"
    );
    assert!(
        !logged.contains(secret_leaks::MARK),
        "a secret was logged:\n{logged}"
    );
}

/// `{file:}` references the daemon must not follow: a FIFO (must not hang the daemon), a
/// device, a directory, an oversized file, a link out of `--secrets-dir` to a
/// shadow-like file. Each is refused with a reason that tells neither content nor length,
/// and the daemon keeps answering.
#[test]
fn secret_files_a_root_daemon_must_not_read_are_refused() {
    let d = Daemon::new(&lab(16231, 16232));
    let secrets = d.path("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets dir");
    let d = d
        .arg("--secrets-dir")
        .arg(&secrets.display().to_string())
        .start();
    let shadow_content = "root:$6$Shad0wSalt$Shad0wHash:19000:0:99999:7:::";
    let shadow = d.write("etc-shadow", &format!("{shadow_content}\n"));
    std::os::unix::fs::symlink(&shadow, secrets.join("link-out")).expect("symlink");
    let fifo = secrets.join("fifo");
    let c = std::ffi::CString::new(fifo.display().to_string()).expect("a path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/dev/zero", secrets.join("zero")).expect("symlink");
    std::fs::create_dir(secrets.join("a-dir")).expect("dir");
    std::fs::write(secrets.join("big"), "Shad0wHash".repeat(7000)).expect("big file");
    std::fs::write(secrets.join("good"), "G00dPassw0rd\n").expect("good file");

    let cases = [
        (fifo.clone(), "not a regular file"),
        (secrets.join("zero"), "outside the secrets directory"),
        (
            std::path::PathBuf::from("/dev/zero"),
            "outside the secrets directory",
        ),
        (secrets.join("a-dir"), "not a regular file"),
        (secrets.join("big"), "larger than 64 KiB"),
        (secrets.join("link-out"), "outside the secrets directory"),
        (shadow.clone(), "outside the secrets directory"),
    ];
    for (path, why) in &cases {
        let spec = lab(16231, 16232).replacen(
            "port: 16231, username: admin, password: labpassw0rd",
            &format!(
                "port: 16231, username: admin, password: {{file: \"{}\"}}",
                path.display()
            ),
            1,
        );
        let t = Instant::now();
        // `request` reads with a 30 s timeout: a hung daemon fails the test, never hangs it.
        let reply = d.request(
            &serde_json::json!({"v": 1, "op": "apply", "spec": spec, "dryRun": true}).to_string(),
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{path:?} took {:?}",
            t.elapsed()
        );
        assert_eq!(reply["valid"], false, "{path:?}: {reply}");
        let text = reply.to_string();
        assert!(text.contains(why), "{path:?}: expected {why:?} in {reply}");
        for leak in [
            "Shad0w",
            "root:",
            "70000",
            &shadow_content.len().to_string(),
        ] {
            assert!(
                !text.contains(leak),
                "{path:?}: the reply tells {leak:?}: {reply}"
            );
        }
    }
    // The same file inside the directory is read.
    let spec = lab(16231, 16232).replacen(
        "password: labpassw0rd",
        &format!("password: {{file: \"{}\"}}", secrets.join("good").display()),
        1,
    );
    let reply = d.request(
        &serde_json::json!({"v": 1, "op": "apply", "spec": spec, "dryRun": true}).to_string(),
    );
    assert_eq!(reply["valid"], true, "{reply}");
    assert_eq!(code_of(&d.request(r#"{"v":1,"op":"status"}"#)), "ok");
    let logged = everything_logged(&d);
    assert!(!logged.contains("Shad0w"), "{logged}");
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Under umask 0 the log dir is 0750, its files 0640, the state dir 0700, its files
/// (known hosts included) 0600, the socket 0600; files and dirs left looser by someone
/// else are tightened at start.
#[test]
fn logs_state_and_socket_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::new(&lab(16231, 16232)).umask(0);
    // A previous install left these world-readable.
    std::fs::create_dir_all(d.path("state")).expect("state dir");
    std::fs::create_dir_all(d.path("log")).expect("log dir");
    let known = d.write("state/esxi_known_hosts", "127.0.0.1:22 SHA256:x\n");
    let old_log = d.write("log/event.log", "");
    for p in [d.path("state"), d.path("log")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    for p in [&known, &old_log] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    }
    let d = d.start();
    // Make the pipeline write its logs too.
    d.haconn(&["show", "status"]).code(0);
    assert_eq!(mode_of(&d.path("log")), 0o750);
    for name in ["event.log", "init.log", "reset.log", "error.log"] {
        assert_eq!(mode_of(&d.path(&format!("log/{name}"))), 0o640, "{name}");
    }
    assert_eq!(mode_of(&d.state_dir()), 0o700);
    for name in ["applied.yaml", "lock", "esxi_known_hosts"] {
        assert_eq!(mode_of(&d.path(&format!("state/{name}"))), 0o600, "{name}");
    }
    assert_eq!(mode_of(&d.socket()), 0o600);

    // A fresh daemon under umask 0, nothing there before.
    let fresh = Daemon::new(&lab(16231, 16232)).umask(0).start();
    assert_eq!(mode_of(&fresh.path("log")), 0o750);
    assert_eq!(mode_of(&fresh.event_log()), 0o640);
    assert_eq!(mode_of(&fresh.state_dir()), 0o700);
    assert_eq!(mode_of(&fresh.applied()), 0o600);
}

/// The peer's credentials decide (SO_PEERCRED): the socket is made reachable by anyone
/// (0666), as a mistake would, and a client running as nobody is still refused, while a
/// member of `--socket-group` (primary or supplementary) and root are served.
#[test]
fn only_root_the_daemons_user_and_the_socket_group_are_served() {
    use std::os::unix::fs::PermissionsExt;
    const NOBODY: u32 = 65534;
    const GROUP: u32 = 4242;
    let d = Daemon::new(&lab(16231, 16232))
        .arg("--socket-group")
        .arg(&GROUP.to_string())
        .start();
    assert_eq!(mode_of(&d.socket()), 0o660);
    std::fs::set_permissions(d.path(""), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let sock = d.socket_arg();
    let status = ["show", "status", "--control-socket", sock.as_str()];

    // Refused like a socket it may not open (EACCES): exit 2, "daemon unreachable or not
    // serving".
    let run = haconn_as(NOBODY, NOBODY, &[], &status);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("forbidden"), "{run}");
    let run = haconn_as(NOBODY, GROUP, &[], &status);
    assert_eq!(run.code, Some(0), "{run}");
    let run = haconn_as(NOBODY, NOBODY, &[GROUP], &status);
    assert_eq!(run.code, Some(0), "{run}");
    d.haconn(&["show", "status"]).code(0);

    // Without --socket-group only root (and the daemon's own user, root here) is served.
    let d = Daemon::new(&lab(16231, 16232)).start();
    assert_eq!(mode_of(&d.socket()), 0o600);
    std::fs::set_permissions(d.path(""), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let sock = d.socket_arg();
    let status = ["show", "status", "--control-socket", sock.as_str()];
    let run = haconn_as(NOBODY, GROUP, &[GROUP], &status);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("forbidden"), "{run}");
    d.haconn(&["show", "status"]).code(0);
}

/// At most 64 connections are served at once; the next is told `busy` and closed, and a
/// freed slot serves again.
#[test]
fn connections_are_capped() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let mut open = Vec::new();
    for _ in 0..64 {
        let mut c = d.connect();
        c.send(r#"{"v":1,"op":"status"}"#);
        assert_eq!(code_of(&c.recv().expect("a reply")), "ok");
        open.push(c);
    }
    let mut extra = d.connect();
    extra.set_read_timeout(Duration::from_secs(5));
    let reply = extra.recv().expect("told why");
    assert_eq!(code_of(&reply), "busy", "{reply}");
    assert!(extra.recv().is_none(), "still connected");
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_request(&d.socket(), r#"{"v":1,"op":"status"}"#) {
            Some(r) if code_of(&r) == "ok" => break,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            other => panic!("a freed slot does not serve: {other:?}"),
        }
    }
}

/// A client that sends requests and leaves the replies unread is dropped once its
/// socket buffer is full for the write timeout (10 s), instead of holding a task and a
/// connection slot for ever; others are served meanwhile.
#[test]
fn a_client_that_does_not_read_is_dropped() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let mut c = d.connect();
    // Each `get` reply carries the live spec: 2000 of them are far more than a socket
    // buffer holds.
    let requests = r#"{"v":1,"op":"get"}"#.to_string() + "\n";
    c.send_raw(requests.repeat(2000).as_bytes()).expect("send");
    std::thread::sleep(Duration::from_secs(13));
    assert_eq!(code_of(&d.request(r#"{"v":1,"op":"status"}"#)), "ok");
    c.set_read_timeout(Duration::from_secs(5));
    // Whole lines only: the daemon may have stopped in the middle of one.
    let mut replies = 0;
    loop {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut c.0, &mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => replies += 1,
            _ => break,
        }
    }
    assert!(
        replies < 2000,
        "every reply was written: the client was never dropped"
    );
}

/// A secret file the caller may not read: `validate --resolve-secrets` run as nobody says
/// so, and nothing of the file.
#[test]
fn an_unreadable_secret_file_says_permission_denied_and_nothing_else() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "R00tOnlyPassw0rd\n").expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let spec = dir.path().join("cluster.yaml");
    std::fs::write(
        &spec,
        lab(16231, 16232).replacen(
            "password: labpassw0rd",
            &format!("password: {{file: \"{}\"}}", secret.display()),
            1,
        ),
    )
    .expect("write");
    std::fs::set_permissions(&spec, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let spec = spec.display().to_string();
    let run = haconn_as(65534, 65534, &[], &["validate", "--resolve-secrets", &spec]);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stdout.contains("cannot read: permission denied"),
        "{run}"
    );
    assert!(
        !run.stdout.contains("R00t") && !run.stderr.contains("R00t"),
        "{run}"
    );
    haconn(&["validate", "--resolve-secrets", &spec]).code(0);
}

/// Every command that talks to the daemon, its stdout a pipe nobody reads
/// (`haconn show status | head -1`): no panic, no "Broken pipe", its normal exit code.
#[test]
fn every_daemon_command_is_quiet_on_a_closed_pipe() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let spec = d.path("cluster.yaml").display().to_string();
    let state = d.state_dir().display().to_string();
    let sock = d.socket_arg();
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["show", "status"], 0),
        (vec!["show", "status", "--output", "json"], 0),
        (vec!["show", "settings"], 0),
        (vec!["show", "settings", "--output", "yaml"], 0),
        (vec!["show", "mserver-settings"], 0),
        (vec!["show", "hamonitor"], 0),
        (vec!["show", "ipdu"], 0),
        (vec!["show", "ipdu-setting"], 0),
        (vec!["apply", "--spec", &spec, "--dry-run"], 0),
        (vec!["apply", "--spec", &spec], 0),
        (vec!["diff", "--spec", &spec, "--state-dir", &state], 0),
    ];
    for (mut args, code) in cases {
        args.extend(["--control-socket", &sock]);
        assert_quiet_on_epipe(&haconn_into_closed_pipe(&args), code);
    }
}

/// `apply --dry-run` of a reload that would fail (a hispeed change needs a restart) exits
/// 1, as the real reload would; one that would complete exits 0.
#[test]
fn a_dry_run_of_a_failing_reload_exits_non_zero() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let slower = d.write(
        "slower.yaml",
        &lab(16231, 16232).replace("hispeed: 1000", "hispeed: 2000"),
    );
    d.haconn(&[
        "apply",
        "--spec",
        &slower.display().to_string(),
        "--dry-run",
    ])
    .code(1)
    .stdout_has("-- HA monitor connector reload : failed. --");
    let fine = d.write("fine.yaml", &lab(17021, 16232));
    d.haconn(&["apply", "--spec", &fine.display().to_string(), "--dry-run"])
        .code(0);

    // --quiet (issue 18.11): nothing when it would complete or completes; only the
    // summary (which object fails, why) when it would fail.
    let quiet = |file: &std::path::Path, dry: bool| {
        let file = file.display().to_string();
        let mut a = vec!["apply", "--spec", &file, "--quiet"];
        a.push(if dry { "--dry-run" } else { "--force" });
        d.haconn(&a)
    };
    let run = quiet(&fine, true);
    run.code(0);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", ""),
        "{run}"
    );
    let run = quiet(&slower, true);
    run.code(1)
        .stdout_has("-- HA monitor connector reload : failed. --")
        .stdout_has("Error (needs restart)");
    assert!(!run.stdout.contains("Plan:"), "{run}");
    let run = quiet(&fine, false);
    run.code(0);
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", ""),
        "{run}"
    );
}

/// Issue 18.12: `show ipdu` with no PDU in the live spec says so (exit 0).
#[test]
fn show_ipdu_without_pdus_says_so() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    d.haconn(&["show", "ipdu"])
        .code(0)
        .stdout_has("no PDU in the live spec");
}

/// `--output json` (issue 18.8): every `show` prints the reply without the socket's
/// `v`/`ok` envelope, with its documented top-level fields; `show settings` is the live
/// spec as JSON; `--json` is still accepted; an error is a JSON object when JSON was asked.
#[test]
fn json_output_has_no_envelope_and_errors_are_json() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let json = |args: &[&str], code: i32| -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--output", "json"]);
        let run = d.haconn(&a);
        run.code(code);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
    };
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let status = json(&["show", "status"], 0);
    assert_eq!(keys(&status), ["hardware", "live", "resetPath", "status"]);
    // Failed polls are listed once there are any (the lab's management-server BMC is not
    // simulated here).
    let mut hardware = status["hardware"].clone();
    if let Some(e) = hardware
        .as_object_mut()
        .and_then(|h| h.remove("linkErrors"))
    {
        let e = e.as_array().expect("linkErrors is a list");
        assert!(
            e.iter()
                .all(|x| x["errors"].as_u64() > Some(0) && x["device"].is_string()),
            "{e:?}"
        );
    }
    assert_eq!(
        keys(&hardware),
        [
            "intervalMs",
            "lastPollAgoMs",
            "mode",
            "mservers",
            "pdus",
            "peerLink",
            "rounds",
            "servers"
        ]
    );
    assert_eq!(keys(&json(&["show", "hamonitor"], 0)), ["monitors"]);
    assert_eq!(keys(&json(&["show", "ipdu"], 0)), ["pdus"]);
    assert_eq!(
        keys(&json(&["show", "ipdu-setting"], 0)),
        ["community", "pdus", "settings"]
    );
    assert_eq!(
        keys(&json(&["show", "mserver-settings"], 0)),
        ["managementServers"]
    );
    let settings = json(&["show", "settings"], 0);
    assert_eq!(settings["apiVersion"], "haconn/v1");
    assert_eq!(settings["servers"][0]["name"], "labnode01");
    assert_eq!(settings["servers"][0]["bmc"]["password"], "********");
    let spec = d.path("cluster.yaml").display().to_string();
    let applied = json(&["apply", "--spec", &spec, "--dry-run"], 0);
    assert_eq!(applied["valid"], true);
    assert_eq!(applied["completed"], true);
    assert!(applied.get("ok").is_none() && applied.get("v").is_none());
    let other = d.write("other.yaml", &lab(17021, 16232));
    let diff = json(&["diff", "--spec", &other.display().to_string()], 2);
    assert_eq!(diff["changes"][0]["name"], "labnode01", "{diff:#}");
    assert_eq!(
        diff["changes"][0]["fields"][0]["path"], "bmc.port",
        "{diff:#}"
    );

    // Old spelling.
    let old = d.haconn(&["show", "status", "--json"]);
    old.code(0);
    let v: serde_json::Value = serde_json::from_str(&old.stdout).unwrap();
    assert!(v.get("ok").is_none() && v.get("v").is_none(), "{old}");

    // Errors.
    let e = json(&["show", "hamonitor", "--name", "nosuch"], 1);
    assert_eq!(e["error"]["code"], "not-found");
    let e = json(&["show", "ipdu", "--addr", "192.0.2.1"], 1);
    assert_eq!(e["error"]["code"], "not-found");
    let e = json(&["server", "reset", "nosuch", "--address", "9"], 1);
    assert_eq!(e["error"]["code"], "refused");
    let run = haconn(&[
        "show",
        "status",
        "--output",
        "json",
        "--control-socket",
        &d.path("nobody-here").display().to_string(),
    ]);
    run.code(2);
    let e: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(e["error"]["code"], "unreachable", "{run}");
}

/// Issue 18.2: while the daemon watches its spec file, applying another file is refused
/// (the watcher would undo it at the next edit) with a message naming both files; the
/// watched file itself applies; `--force` applies the other one; a daemon started with
/// `--no-watch` takes any file.
#[test]
fn applying_a_file_other_than_the_watched_one_is_refused_without_force() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let other = d.write("other.yaml", &lab(17021, 16232));
    let other_arg = other.display().to_string();
    let watched = d.path("cluster.yaml");
    let refused = d.haconn(&["apply", "--spec", &other_arg]);
    refused
        .code(1)
        .stderr_has("other.yaml is not the spec file this daemon follows")
        .stderr_has(&watched.display().to_string())
        .stderr_has("--force");
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 16231);
    // A dry run shows what it would do.
    d.haconn(&["apply", "--spec", &other_arg, "--dry-run"])
        .code(0);
    // The watched file (same text) applies.
    d.haconn(&["apply", "--spec", &watched.display().to_string()])
        .code(0);
    d.haconn(&["apply", "--spec", &other_arg, "--force"])
        .code(0);
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17021);

    let d = Daemon::new(&lab(16231, 16232)).arg("--no-watch").start();
    let other = d.write("other.yaml", &lab(17021, 16232));
    d.haconn(&["apply", "--spec", &other.display().to_string()])
        .code(0);
    assert_eq!(bmc_port(&d.settings(), "labnode01"), 17021);
}

/// Issue 18.3: a BMC that does not answer is written to error.log once (with the reason
/// and "not resettable"), not once per poll.
#[test]
fn a_link_going_ng_is_logged_once_not_per_poll() {
    let d = Daemon::new(&lab(16231, 16232))
        .arg("--hardware-poll-ms")
        .arg("200")
        .start();
    let log = d.path("log/error.log");
    let ng = "BMC 127.0.0.11 of labnode01: link NG: ";
    let count = |needle: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(ng) == 0 {
        assert!(
            Instant::now() < deadline,
            "no link NG line in error.log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rounds = |d: &Daemon| d.status()["hardware"]["rounds"].as_u64().unwrap();
    let seen = rounds(&d);
    while rounds(&d) < seen + 5 {
        assert!(Instant::now() < deadline, "the watch does not poll");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(count(ng), 1, "{text}");
    assert_eq!(count("labnode01 is not resettable: BMC: "), 1, "{text}");
}

/// Issue 18.11: the defaults come from the environment too (`HACONN_CONTROL_SOCKET`,
/// `HACONN_SPEC`), so a shell set up once needs no flags.
#[test]
fn the_control_socket_and_the_spec_come_from_the_environment() {
    let d = Daemon::new(&lab(16231, 16232)).start();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_haconn"));
    cmd.env("HACONN_CONTROL_SOCKET", d.socket())
        .env("HACONN_SPEC", d.path("cluster.yaml"));
    let run =
        crate::support::run::execute(cmd, vec!["apply".into(), "--dry-run".into()], Vec::new());
    run.code(0);
    let stdout = &run.stdout;
    assert!(stdout.contains("reload : completed."), "{stdout}");
}

/// Issue 18.9: `--mserver` must name a management server of the spec, in every mode (a
/// single one too), and the error names what was passed.
#[test]
fn an_mserver_not_in_the_spec_is_refused_in_single_mode_too() {
    let mut d = Daemon::new(&lab(16231, 16232))
        .arg("--mserver")
        .arg("nosuch");
    d.spawn();
    // It must refuse at once; a daemon that started anyway is stopped and fails the test.
    let status = d.wait_exit(Duration::from_secs(10));
    d.stop();
    let stderr = d.stderr();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("--mserver nosuch is not a management server of the spec (it has: labms01)"),
        "{stderr}"
    );
}

/// Issue 18.5: simulated hardware is marked in `show status` (its first line), its JSON and
/// the event log; a daemon on real hardware says nothing of it.
#[test]
fn simulated_hardware_is_marked_wherever_it_shows() {
    let d = Daemon::new(&lab(16231, 16232))
        .arg("--simulate-hardware")
        .start();
    let run = d.haconn(&["show", "status"]);
    run.code(0);
    assert!(
        run.stdout.starts_with("SIMULATED HARDWARE"),
        "not marked first:\n{run}"
    );
    assert_eq!(d.status()["status"]["simulatedHardware"], true);
    let events = std::fs::read_to_string(d.event_log()).unwrap();
    assert!(events.contains("SIMULATED HARDWARE"), "{events}");

    let real = Daemon::new(&lab(16231, 16232)).start();
    let run = real.haconn(&["show", "status"]);
    assert!(!run.stdout.contains("SIMULATED"), "{run}");
    assert_eq!(real.status()["status"]["simulatedHardware"], false);
}

/// Issue 18.4 (part): a PDU-cut test asks for confirmation on a terminal; "no" switches
/// nothing and exits 1; `--yes` does not ask. Run under `script`, which gives it a pty.
#[test]
fn a_pdu_cut_test_asks_on_a_terminal() {
    use std::io::Write as _;
    let d = Daemon::new(&lab(16231, 16232)).start();
    let on_a_terminal = |extra: &str, answer: &str| {
        let cmd = format!(
            "{} server ipdusd labnode01 --mode serial --control-socket {} {extra}",
            env!("CARGO_BIN_EXE_haconn"),
            d.socket_arg()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        std::thread::sleep(Duration::from_millis(300));
        let _ = child.stdin.take().unwrap().write_all(answer.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = on_a_terminal("", "n\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("Continue? [y/N]"), "{text}");
    assert!(text.contains("cancelled; nothing was switched"), "{text}");
    // With --yes it goes to the daemon, which refuses (labnode01 has no PDU outlets).
    let (code, text) = on_a_terminal("--yes", "");
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains("Continue?"), "{text}");
    assert!(!text.contains("cancelled"), "{text}");
}

/// Issue 18.4 (part): a test reset is refused at once when the watch knows the BMC is NG
/// (nothing answers on the lab's BMC ports), with the reason.
#[test]
fn a_test_reset_is_refused_at_once_when_the_bmc_is_known_ng() {
    let d = Daemon::new(&lab(16231, 16232))
        .arg("--hardware-poll-ms")
        .arg("200")
        .start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.status()["hardware"]["servers"][0]["bmc"]["link"] != "NG" {
        assert!(Instant::now() < deadline, "labnode01's BMC never NG");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    d.haconn(&["server", "reset", "labnode01", "--subsystem", "1"])
        .code(1)
        .stderr_has("the BMC of labnode01 is NG (")
        .stderr_has("a test reset (NMI) cannot reach it");
    assert!(started.elapsed() < Duration::from_secs(2));
}
