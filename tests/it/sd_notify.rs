//! The daemon speaks systemd's notify protocol: READY at start, RELOADING then READY around
//! a reload, WATCHDOG while the supervisor and the pipeline thread answer, STOPPING at the
//! end. A datagram socket stands in for systemd's NOTIFY_SOCKET.

use crate::support::daemon::Daemon;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn lab_spec() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/lab-single.yaml"
    ))
    .unwrap()
}

fn wait_for(notify: &UnixDatagram, seen: &mut Vec<String>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.contains(what)) {
        assert!(Instant::now() < deadline, "no {what} in {seen:?}");
        if let Ok(n) = notify.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn ready_reloading_watchdog_stopping() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = Daemon::new(&lab_spec())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000");
    d.spawn();
    let sock = d.socket();
    let mut seen = Vec::new();
    wait_for(&notify, &mut seen, "READY=1");
    wait_for(&notify, &mut seen, "WATCHDOG=1");

    d.write(
        "cluster.yaml",
        &lab_spec().replace("cluster: true", "cluster: false"),
    );
    wait_for(&notify, &mut seen, "RELOADING=1");
    let reloading = seen.iter().position(|m| m.contains("RELOADING=1")).unwrap();
    assert!(seen[reloading].contains("MONOTONIC_USEC="), "{seen:?}");
    let mut after = seen.split_off(reloading + 1);
    wait_for(&notify, &mut after, "READY=1");

    d.signal(libc::SIGTERM);
    wait_for(&notify, &mut after, "STOPPING=1");
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "daemon exit: {status:?}"
    );
    assert!(!sock.exists(), "control socket removed at stop");
}
