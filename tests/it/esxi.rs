//! The ESXi backend against a real OpenSSH sshd on 127.0.0.1 with `vim-cmd`/`vmdumper`
//! doubles (tests/esxi_support), and the real daemon resetting a guest through it.

use crate::support::esxi as esxi_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use esxi_support::{Logins, PASSWORD, Sshd, max_overlap};
use haconn::backend::esxi::{EsxiHosts, MAX_CHANNELS, Options};
use haconn::backend::{BackendError, Hypervisor, PowerState};
use haconn::spec::secret::{Secret, SecretRule};

fn hosts() -> EsxiHosts {
    EsxiHosts::new(None)
}

fn refused(r: Result<impl std::fmt::Debug, BackendError>) -> String {
    match r {
        Err(BackendError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn unreachable(r: Result<impl std::fmt::Debug, BackendError>) -> String {
    match r {
        Err(BackendError::Unreachable { reason, .. }) => reason,
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn power_state_by_exact_vm_name() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let host = sshd.esxi();
    assert_eq!(
        h.vm_power_state(&host, "vm01").await,
        Ok(PowerState::On),
        "{}",
        sshd.diagnostics()
    );
    assert_eq!(h.vm_power_state(&host, "vmoff").await, Ok(PowerState::Off));
    // `vm01 copy` and `my vm01` exist too: only the exact name counts.
    let started = sshd.started();
    assert_eq!(
        started,
        [
            "vim-cmd vmsvc/getallvms",
            "vim-cmd vmsvc/power.getstate 3",
            "vim-cmd vmsvc/power.getstate 4"
        ],
        "the inventory is read once and cached"
    );
    let why = refused(h.vm_power_state(&host, "vm02").await);
    assert!(why.contains("no VM named vm02"), "{why}");
    h.shutdown().await;
}

#[tokio::test]
async fn soft_reset_sends_nmi_to_the_right_world() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let host = sshd.esxi();
    h.vm_nmi(&host, "vm01").await.expect("NMI");
    let wid = sshd.wid("vm01");
    assert_eq!(wid, "1003");
    // The world id changes at every power-on: the next NMI must use the new one.
    sshd.local("vim-cmd", &["vmsvc/power.off", "3"]);
    sshd.local("vim-cmd", &["vmsvc/power.on", "3"]);
    let new_wid = sshd.wid("vm01");
    assert_ne!(new_wid, wid);
    h.vm_nmi(&host, "vm01").await.expect("NMI after power-on");
    let nmis: Vec<String> = sshd
        .started()
        .into_iter()
        .filter(|c| c.ends_with(" nmi"))
        .collect();
    assert_eq!(
        nmis,
        [
            format!("vmdumper {wid} nmi"),
            format!("vmdumper {new_wid} nmi")
        ],
        "{}",
        sshd.diagnostics()
    );
    // A VM that is not running gets no NMI, and says why.
    let why = refused(h.vm_nmi(&host, "vmoff").await);
    assert!(why.contains("not running"), "{why}");
    h.shutdown().await;
}

#[tokio::test]
async fn hard_reset_resets_the_right_vmid_and_reports_faults() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let host = sshd.esxi();
    h.vm_reset(&host, "vm01").await.expect("reset");
    h.vm_reset(&host, "vmdb01").await.expect("reset");
    let resets: Vec<String> = sshd
        .started()
        .into_iter()
        .filter(|c| c.contains("power.reset"))
        .collect();
    assert_eq!(
        resets,
        ["vim-cmd vmsvc/power.reset 3", "vim-cmd vmsvc/power.reset 1"]
    );
    // vim-cmd reports the fault with exit status 0: the text decides.
    let why = refused(h.vm_reset(&host, "vmoff").await);
    assert!(
        why.contains("vim.fault.InvalidPowerState")
            && why.contains("cannot be performed in the current state (Powered off)"),
        "{why}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn a_vm_registered_again_is_found_under_its_new_vmid() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let host = sshd.esxi();
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
    // vm01 re-registered as vmid 30: the cached vmid 3 is stale.
    let inv = std::fs::read_to_string(sshd.path("vms")).unwrap();
    std::fs::write(sshd.path("vms"), inv.replace("3|vm01|", "30|vm01|")).unwrap();
    h.vm_reset(&host, "vm01")
        .await
        .expect("reset after re-read");
    let started = sshd.started();
    assert!(
        started.ends_with(&[
            "vim-cmd vmsvc/power.reset 3".to_string(),
            "vim-cmd vmsvc/getallvms".to_string(),
            "vim-cmd vmsvc/power.reset 30".to_string()
        ]),
        "{started:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn wrong_pinned_host_key_is_refused_and_nothing_runs() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let mut host = sshd.esxi();
    let pin = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";
    host.host_key = Some(pin.into());
    let why = refused(h.vm_reset(&host, "vm01").await);
    let expected = format!(
        "host key {} does not match the pinned {pin} — nothing was run",
        sshd.fingerprint()
    );
    assert_eq!(why, expected);
    // Unpinned without trust-on-first-use: refused too, with the key to pin.
    host.host_key = None;
    let why = refused(hosts().vm_reset(&host, "vm01").await);
    assert!(
        why.contains(&sshd.fingerprint()) && why.contains("not pinned"),
        "{why}"
    );
    assert!(sshd.calls().is_empty(), "{}", sshd.diagnostics());
}

#[tokio::test]
async fn trust_on_first_use_records_the_key_then_refuses_a_changed_one() {
    let mut sshd = Sshd::start(Logins::Esxi);
    let file = sshd.path("esxi_known_hosts");
    let mut host = sshd.esxi();
    host.host_key = None;
    host.trust_on_first_use = true;
    let first = sshd.fingerprint();
    let h = EsxiHosts::new(Some(file.clone()));
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
    h.shutdown().await;
    let text = std::fs::read_to_string(&file).expect("known hosts written");
    assert_eq!(text, format!("127.0.0.1:{} {first}\n", sshd.port));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The host comes back with other keys: refused, by a fresh process too.
    sshd.new_host_keys();
    sshd.restart();
    sshd.clear_calls();
    let h = EsxiHosts::new(Some(file.clone()));
    let why = refused(h.vm_power_state(&host, "vm01").await);
    assert!(
        why.contains(&format!(
            "host key {} does not match {first} recorded on first use",
            sshd.fingerprint()
        )) && why.contains("nothing was run"),
        "{why}"
    );
    assert!(sshd.calls().is_empty(), "{}", sshd.diagnostics());
    // A pin wins over the record.
    host.host_key = Some(sshd.fingerprint());
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
}

#[tokio::test]
async fn password_by_keyboard_interactive_and_wrong_password() {
    let sshd = Sshd::start(Logins::Esxi);
    let host = sshd.esxi();
    assert!(host.private_key.is_none());
    let h = hosts();
    assert_eq!(
        h.vm_power_state(&host, "vm01").await,
        Ok(PowerState::On),
        "{}",
        sshd.diagnostics()
    );
    let log = std::fs::read_to_string(sshd.path("sshd-1.stderr")).unwrap();
    assert!(
        log.contains("Accepted keyboard-interactive/pam for root"),
        "{log}"
    );
    h.shutdown().await;

    sshd.clear_calls();
    let mut bad = sshd.esxi();
    bad.password = Some(Secret::inline(
        "Wrong!pass1".into(),
        SecretRule::EsxiPassword,
    ));
    let why = refused(hosts().vm_reset(&bad, "vm01").await);
    assert_eq!(
        why,
        "login as root failed (tried keyboard-interactive, password): check the account, \
         password and key — nothing was run"
    );
    assert!(!why.contains("Wrong!pass1"));
    assert!(sshd.calls().is_empty(), "{}", sshd.diagnostics());
}

#[tokio::test]
async fn password_method_when_keyboard_interactive_is_off() {
    let sshd = Sshd::start(Logins::PasswordMethod);
    let h = hosts();
    assert_eq!(
        h.vm_power_state(&sshd.esxi(), "vm01").await,
        Ok(PowerState::On),
        "{}",
        sshd.diagnostics()
    );
    let log = std::fs::read_to_string(sshd.path("sshd-1.stderr")).unwrap();
    assert!(log.contains("Accepted password for root"), "{log}");
}

#[tokio::test]
async fn key_login_without_password() {
    let sshd = Sshd::start(Logins::Esxi);
    let mut host = sshd.esxi();
    host.password = None;
    host.private_key = Some(sshd.key_secret());
    let h = hosts();
    h.vm_reset(&host, "vm01")
        .await
        .expect("reset with key login");
    let log = std::fs::read_to_string(sshd.path("sshd-1.stderr")).unwrap();
    assert!(log.contains("Accepted publickey for root"), "{log}");
    // A key the host does not know, with no password to fall back on.
    let other = sshd.path("other_key");
    std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-N", "", "-f"])
        .arg(&other)
        .output()
        .expect("ssh-keygen");
    host.private_key = Some(Secret::reference(
        haconn::spec::raw::RawSecretRef::File(other.display().to_string()),
        SecretRule::SshPrivateKey,
    ));
    let why = refused(hosts().vm_reset(&host, "vm01").await);
    assert!(
        why.contains("login as root failed (tried public key)"),
        "{why}"
    );
}

#[tokio::test]
async fn sshd_killed_is_unreachable_then_the_next_call_reconnects() {
    let mut sshd = Sshd::start(Logins::Esxi);
    let h = hosts();
    let host = sshd.esxi();
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
    sshd.kill();
    let started = Instant::now();
    let why = unreachable(h.vm_power_state(&host, "vm01").await);
    assert!(started.elapsed() < Duration::from_secs(6), "{why}");
    sshd.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match h.vm_power_state(&host, "vm01").await {
            Ok(PowerState::On) => break,
            other => assert!(
                Instant::now() < deadline,
                "no reconnect: {other:?}\n{}",
                sshd.diagnostics()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown().await;
}

fn quick() -> Options {
    Options {
        command_timeout: Duration::from_millis(1500),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_hanging_command_times_out_and_the_session_still_works() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = EsxiHosts::with_options(None, quick());
    let host = sshd.esxi();
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
    sshd.hang(Some("vim-cmd vmsvc/power.reset"));
    let started = Instant::now();
    let why = unreachable(h.vm_reset(&host, "vm01").await);
    let took = started.elapsed();
    assert!(why.contains("did not finish within 1500 ms"), "{why}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A caller that gives up mid-command (the pipeline dropping a future) poisons nothing.
    let dropped = tokio::time::timeout(Duration::from_millis(200), h.vm_reset(&host, "vm01")).await;
    assert!(dropped.is_err());
    sshd.hang(None);
    assert_eq!(h.vm_power_state(&host, "vm01").await, Ok(PowerState::On));
    h.vm_reset(&host, "vm01")
        .await
        .expect("reset after the hang");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_guests_reset_at_once_within_the_channel_limit() {
    let sshd = Sshd::start(Logins::Esxi);
    let h = Arc::new(hosts());
    let host = sshd.esxi();
    // Warm: session and inventory.
    assert_eq!(h.vm_power_state(&host, "g01").await, Ok(PowerState::On));
    sshd.reset_delay(Some(0.3));
    sshd.clear_calls();
    let resets = (1..=16).map(|i| {
        let (h, host) = (h.clone(), host.clone());
        tokio::spawn(async move { h.vm_reset(&host, &format!("g{i:02}")).await })
    });
    for r in futures_util::future::join_all(resets).await {
        r.expect("task").expect("reset");
    }
    let calls = sshd.calls();
    let mut started: Vec<String> = sshd.started();
    started.sort();
    let mut expected: Vec<String> = (11..=26)
        .map(|v| format!("vim-cmd vmsvc/power.reset {v}"))
        .collect();
    expected.sort();
    assert_eq!(started, expected, "{}", sshd.diagnostics());
    let overlap = max_overlap(&calls, |a| a.contains("power.reset"));
    assert!(
        (2..=MAX_CHANNELS).contains(&overlap),
        "{overlap} resets ran at once (limit {MAX_CHANNELS})\n{}",
        sshd.diagnostics()
    );
    h.shutdown().await;
}

#[test]
fn esxi_guest_password_and_private_key_rules() {
    let spec = |esxi: &str| {
        format!(
            "apiVersion: haconn/v1\nmode: single\nresetPath: {{address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: none}}\n\
             managementServers:\n  - name: ms01\n    bmc: {{address: 127.0.0.2, username: admin, password: labpassw0rd}}\n    mlan: {{address: 127.0.0.1, port: 15002}}\n\
             servers:\n  - name: esx01\n    bmc: {{address: 127.0.0.11, username: admin, password: labpassw0rd}}\n    esxi: {{address: 127.0.0.1, username: root, {esxi} guests: [vm01]}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let check = |esxi: &str| {
        let f = dir.path().join("s.yaml");
        std::fs::write(&f, spec(esxi)).unwrap();
        let run = crate::support::run::haconn(&["validate", &f.display().to_string()]);
        (run.code, format!("{}{}", run.stdout, run.stderr))
    };
    let (code, text) = check("privateKey: \"-----BEGIN OPENSSH PRIVATE KEY-----\",");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("privateKey") && text.contains("by reference only"),
        "{text}"
    );
    assert!(!text.contains("-----BEGIN"), "{text}");
    let (code, text) = check("");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("needs `password`"), "{text}");
    let (code, text) = check("privateKey: {env: HACONN_TEST_KEY},");
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = check(&format!(
        "password: \"{PASSWORD}\", privateKey: {{file: /k}},"
    ));
    assert_eq!(code, Some(0), "{text}");
}

use crate::support::daemon as daemon_support;

/// A single-management-server spec with one ESXi host (three guests) served by `sshd`.
fn daemon_spec(sshd: &Sshd, key_file: &str, password_file: &str) -> String {
    let spec = format!(
        r#"apiVersion: haconn/v1
mode: single
resetPath:
  address: 127.0.0.1/8
  port: 15001
  broadcast: 127.255.255.255
  auth: {{key: {{file: "{key_file}"}}}}
managementServers:
  - name: labms01
    bmc: {{address: 127.0.0.2, port: 16230, username: admin, password: labpassw0rd}}
    mlan: {{address: 127.0.0.1, port: 15002}}
servers:
  - name: esx01
    bmc: {{address: 127.0.0.21, port: 16240, username: admin, password: labpassw0rd}}
    esxi:
      address: 127.0.0.1
      port: {port}
      username: root
      password: {{file: "{password_file}"}}
      hostKey: {fp}
      guests: [vm01, vmdb01, g01]
"#,
        port = sshd.port,
        fp = sshd.fingerprint(),
    );
    for word in spec.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
            assert_eq!(parts[0], "127", "non-loopback address {word}");
        }
    }
    spec
}

#[test]
fn daemon_resets_a_guest_through_esxi_and_fails_on_a_hanging_reset() {
    let sshd = Sshd::start(Logins::Esxi);
    let key = "haconn-esxi-test-key-0123456789";
    let tmp = tempfile::tempdir().unwrap();
    let key_file = tmp.path().join("rp.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let pw_file = tmp.path().join("esx.pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let key_file = key_file.display().to_string();
    let spec = daemon_spec(&sshd, &key_file, &pw_file.display().to_string());
    let daemon = daemon_support::Daemon::new(&spec).start();
    // The reset path's ephemeral port, from the init log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let connector = loop {
        let init = std::fs::read_to_string(daemon.path("log/init.log")).unwrap_or_default();
        if let Some(a) = init
            .lines()
            .find_map(|l| l.split_once("reset path listening on "))
            .map(|(_, a)| a.trim().to_string())
        {
            break a;
        }
        assert!(Instant::now() < deadline, "{}", daemon.diagnostics());
        std::thread::sleep(Duration::from_millis(20));
    };
    let ports = [
        esxi_support::free_tcp_port(),
        esxi_support::free_tcp_port(),
        esxi_support::free_tcp_port(),
    ];
    let node = |sub: &str, args: &[&str]| {
        // Each node's own key file (per-node keys, derived from the spec's key).
        let system = args
            .iter()
            .position(|a| *a == "--system")
            .map(|i| args[i + 1])
            .expect("--system");
        let own = tmp.path().join(format!("{system}.key"));
        let derived = haconn::resetpath::keys::node_key(key.as_bytes(), system);
        std::fs::write(&own, format!("{derived}\n")).unwrap();
        let own = own.display().to_string();
        let mut a = vec!["node", sub, "--connector", &connector, "--key-file", &own];
        a.extend_from_slice(args);
        daemon_support::haconn(&a)
    };
    // Each guest's monitor speaks from an address of its own, as on a real cluster (the
    // connector refuses requests from the address of a node it reset).
    for (system, sub, port, bind) in [
        ("vmdb01", "1", ports[0], "127.0.0.1"),
        ("vm01", "2", ports[1], "127.0.20.2"),
        ("g01", "3", ports[2], "127.0.20.3"),
    ] {
        node(
            "check",
            &[
                "--system",
                system,
                "--subsystem",
                sub,
                "--port",
                &port.to_string(),
                "--bind",
                bind,
            ],
        );
    }
    let reset = |target: &str, sub: &str, req: &str| {
        node(
            "reset",
            &[
                "--system",
                "vmdb01",
                "--subsystem",
                "1",
                "--port",
                &ports[0].to_string(),
                "--bind",
                "127.0.0.1",
                "--target-system",
                target,
                "--target",
                sub,
                "--req",
                req,
            ],
        )
    };

    // No stopped notification: NMI, then power.reset after the 5 s guest window.
    sshd.clear_calls();
    let run = reset("vm01", "2", "7");
    assert!(
        run.stdout.contains("result=DUMP"),
        "{run}\n{}\n{}",
        sshd.diagnostics(),
        daemon.diagnostics()
    );
    let calls = sshd.calls();
    let at = |argv: &str| {
        calls
            .iter()
            .find(|c| !c.end && c.argv == argv)
            .unwrap_or_else(|| panic!("no {argv}\n{}", sshd.diagnostics()))
            .ns
    };
    let gap = at("vim-cmd vmsvc/power.reset 3") - at("vmdumper 1003 nmi");
    assert!(
        (4_500_000_000..8_000_000_000).contains(&gap),
        "NMI → power.reset took {gap} ns\n{}",
        sshd.diagnostics()
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| !c.end && c.argv.contains("power.reset"))
            .count(),
        1
    );

    // A power.reset that hangs: the requester gets FAIL, bounded.
    sshd.hang(Some("vim-cmd vmsvc/power.reset"));
    let started = Instant::now();
    let run = reset("g01", "3", "8");
    assert!(
        run.stdout.contains("result=FAIL"),
        "{run}\n{}",
        daemon.diagnostics()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(
        sshd.started()
            .contains(&"vim-cmd vmsvc/power.reset 11".to_string()),
        "{}",
        sshd.diagnostics()
    );
}
