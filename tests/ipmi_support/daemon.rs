//! A real `haconn daemon` (no simulated hardware) whose servers' BMCs are [`SimBmc`]s.
//!
//! [`IpmiLab`] writes a loopback-only spec (two servers, labnode01 and labnode02, each
//! with its BMC on the given simulator, an HMAC key file, broadcast 127.255.255.255) into
//! a fresh directory, starts the binary with its reset path on an ephemeral 127.0.0.1 port
//! and no fence_kdump listener, reads the bound port from the init log, and stops the
//! process when dropped.

#![allow(dead_code)] // not every test or bench uses every helper

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{PASSWORD, SimBmc, USER};

/// The reset-path key both ends use.
pub const KEY: &str = "haconn-ipmi-test-key-0123456789";
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

const SPEC: &str = r#"apiVersion: haconn/v1
mode: single
resetPath:
  address: 127.0.0.1/8
  port: 15001
  broadcast: 127.255.255.255
  auth: {key: {file: "KEYFILE"}}
hispeed: HISPEED
managementServers:
  - name: labms01
    bmc: {address: 127.0.0.2, port: 16230, username: USER, password: PASSWORD}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - {name: labnode01, bmc: {address: ADDR1, port: PORT1, username: USER, password: PASSWORD}, cluster: true}
  - {name: labnode02, bmc: {address: ADDR2, port: PORT2, username: USER, password: PASSWORD}, cluster: true}
"#;

fn loopback_only(text: &str) {
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok()) {
            assert_eq!(
                parts[0], "127",
                "non-loopback address {word} in a test spec"
            );
        }
    }
    assert!(text.contains("broadcast: 127.255.255.255"));
}

pub struct IpmiLab {
    dir: TempDir,
    child: Option<Child>,
    pub reset_path: SocketAddr,
}

impl IpmiLab {
    /// A daemon whose labnode01 and labnode02 BMCs are `node1` and `node2`.
    pub fn start(hispeed: u32, node1: &SimBmc, node2: &SimBmc) -> IpmiLab {
        assert_ne!(
            node1.address, node2.address,
            "the spec needs a distinct BMC address per server"
        );
        let dir = tempfile::Builder::new()
            .prefix("haconn-ipmilab-")
            .tempdir()
            .expect("temporary directory");
        let key = dir.path().join("reset-path.key");
        std::fs::write(&key, format!("{KEY}\n")).expect("write the key");
        let spec = SPEC
            .replace("KEYFILE", &key.display().to_string())
            .replace("HISPEED", &hispeed.to_string())
            .replace("USER", USER)
            .replace("PASSWORD", PASSWORD)
            .replace("ADDR1", &node1.address.to_string())
            .replace("PORT1", &node1.port.to_string())
            .replace("ADDR2", &node2.address.to_string())
            .replace("PORT2", &node2.port.to_string());
        loopback_only(&spec);
        std::fs::write(dir.path().join("cluster.yaml"), spec).expect("write the spec");
        let stderr = std::fs::File::create(dir.path().join("daemon.stderr")).expect("stderr");
        let p = |rel: &str| dir.path().join(rel).display().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_haconn"))
            .args([
                "daemon",
                "--spec",
                &p("cluster.yaml"),
                "--state-dir",
                &p("state"),
                "--log-dir",
                &p("log"),
                "--control-socket",
                &p("sock"),
                "--no-watch",
                "--reset-path-bind",
                "127.0.0.1:0",
                "--fence-kdump-bind",
                "off",
            ])
            .env("HACONN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn haconn daemon");
        let mut lab = IpmiLab {
            dir,
            child: Some(child),
            reset_path: "127.0.0.1:0".parse().expect("addr"),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let found = lab.log("init.log").lines().find_map(|l| {
                l.split_once("reset path listening on ")
                    .and_then(|(_, a)| a.trim().parse::<SocketAddr>().ok())
            });
            if let Some(addr) = found {
                assert!(addr.ip().is_loopback());
                lab.reset_path = addr;
                return lab;
            }
            if let Some(status) = lab.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                lab.child = None;
                panic!(
                    "the daemon exited before binding ({status})\n{}",
                    lab.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not bind within {READY_TIMEOUT:?}\n{}",
                lab.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn key_file(&self) -> PathBuf {
        self.path("reset-path.key")
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("log/{name}"))).unwrap_or_default()
    }

    /// `haconn node SUB --connector ... --key-file ... ARGS`.
    pub fn node_args(&self, sub: &str, args: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "node".into(),
            sub.into(),
            "--connector".into(),
            self.reset_path.to_string(),
            "--key-file".into(),
            self.key_file().display().to_string(),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }

    /// Waits (bounded) until a line of log `name` satisfies `pred`.
    pub fn wait_log(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.log(name).lines().find(|l| pred(l)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {name} within {timeout:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn diagnostics(&self) -> String {
        let stderr = std::fs::read_to_string(self.path("daemon.stderr")).unwrap_or_default();
        format!(
            "--- init.log\n{}--- reset.log\n{}--- error.log\n{}--- event.log\n{}--- daemon stderr\n{stderr}",
            self.log("init.log"),
            self.log("reset.log"),
            self.log("error.log"),
            self.log("event.log"),
        )
    }
}

impl Drop for IpmiLab {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A port free on 127.0.0.1 a moment ago, for a monitor to register and listen on.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("an ephemeral port")
        .port()
}
