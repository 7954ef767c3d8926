//! A `haconn daemon --simulate-hardware` with its reset path and fence_kdump listener on
//! ephemeral 127.0.0.1 ports, and the node-side tools to drive it, for tests/resetpath.rs.
//!
//! [`Lab`] writes a loopback-only spec (three servers, an HMAC key file, broadcast
//! 127.255.255.255) and each node's own key file (per-node keys, the default; the cluster
//! key for every node when the spec says `keyMode: shared`) into a fresh temporary directory, starts the real binary, reads the
//! bound ports from its init log, and stops the process when dropped. [`Bg`] is a
//! `haconn node` command running in the background whose output lines are read as they
//! come. Every wait polls against a deadline and panics with what it saw.

#![allow(dead_code)] // not every test uses every helper

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::daemon::Daemon;

/// How long a daemon may take to bind its sockets.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a log line or an output line may take to show up.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster key of the lab spec (16–256 printable characters, as the spec requires).
pub const KEY: &str = "haconn-test-key-0123456789";

/// The systems of the lab spec.
pub const SYSTEMS: [&str; 3] = ["labnode01", "labnode02", "labnode03"];

/// The key `system` holds with per-node keys, derived from [`KEY`].
pub fn node_key(system: &str) -> String {
    haconn::resetpath::keys::node_key(KEY.as_bytes(), system)
}

/// The lab spec; `HISPEED` and `KEYFILE` are filled in.
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
    bmc: {address: 127.0.0.2, port: 16230, username: admin, password: labpassw0rd}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - {name: labnode01, bmc: {address: 127.0.0.11, username: admin, password: labpassw0rd}, cluster: true}
  - {name: labnode02, bmc: {address: 127.0.0.12, username: admin, password: labpassw0rd}, cluster: true}
  - {name: labnode03, bmc: {address: 127.0.0.13, username: admin, password: labpassw0rd}}
"#;

/// Guards the safety rule: every address in a test spec is loopback, the broadcast too.
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

pub use super::run::{Run, haconn};

impl Run {
    /// Stdout lines that start with `kind` and hold every `key=value` given.
    pub fn lines_with(&self, kind: &str, fields: &[&str]) -> Vec<String> {
        matching(self.stdout.lines(), kind, fields)
    }
}

fn matching<'a>(lines: impl Iterator<Item = &'a str>, kind: &str, fields: &[&str]) -> Vec<String> {
    lines
        .filter(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            words.first() == Some(&kind) && fields.iter().all(|f| words.contains(f))
        })
        .map(str::to_string)
        .collect()
}

/// A port free on 127.0.0.1 and 127.255.255.255 a moment ago, for a monitor to register
/// and listen on (the kernel picks it, so parallel tests do not collide).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct such ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let mut held = Vec::new();
    while held.len() < N {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = s.local_addr().expect("local addr").port();
        if let Ok(b) = UdpSocket::bind(("127.255.255.255", port)) {
            held.push((port, s, b));
        }
    }
    std::array::from_fn(|i| held[i].0)
}

/// A daemon with a reset path and a fence_kdump listener on loopback, built by the one
/// daemon builder ([`Daemon`]), with the lab spec and its key file.
pub struct Lab {
    daemon: Daemon,
    /// `keyMode: shared`: every node's key file is the cluster key.
    shared: bool,
    /// Where the reset path listens.
    pub reset_path: SocketAddr,
    /// Where fence_kdump messages are received.
    pub fence_kdump: SocketAddr,
}

impl Lab {
    /// Starts a daemon with `hispeed` ms between soft and hard reset; waits until both
    /// sockets are bound.
    pub fn start(hispeed: u32) -> Lab {
        Lab::start_with(hispeed, |s| s)
    }

    /// Starts a daemon on the lab spec as `edit` changes it.
    pub fn start_with(hispeed: u32, edit: impl FnOnce(String) -> String) -> Lab {
        Lab::launch(hispeed, edit, &["--simulate-hardware"])
    }

    /// Starts a daemon driving the real backends (IPMI, SNMP, SSH) against the devices the
    /// edited spec names (loopback only), polling them every `poll_ms`.
    pub fn start_real(hispeed: u32, poll_ms: u32, edit: impl FnOnce(String) -> String) -> Lab {
        Lab::launch(hispeed, edit, &["--hardware-poll-ms", &poll_ms.to_string()])
    }

    fn launch(hispeed: u32, edit: impl FnOnce(String) -> String, extra: &[&str]) -> Lab {
        let mut daemon = Daemon::new("")
            .without_test_hooks()
            .no_watch()
            .with_fence_kdump();
        for a in extra {
            daemon = daemon.arg(a);
        }
        let key = daemon.write("reset-path.key", &format!("{KEY}\n"));
        let spec = edit(
            SPEC.replace("KEYFILE", &key.display().to_string())
                .replace("HISPEED", &hispeed.to_string()),
        );
        loopback_only(&spec);
        daemon.write("cluster.yaml", &spec);
        let shared = spec.contains("keyMode: shared");
        let mut lab = Lab {
            daemon,
            shared,
            reset_path: "127.0.0.1:0".parse().expect("addr"),
            fence_kdump: "127.0.0.1:0".parse().expect("addr"),
        };
        lab.spawn_daemon();
        lab
    }

    /// Stops the daemon (SIGTERM, bounded wait); its files stay.
    pub fn stop(&mut self) {
        self.daemon.stop();
    }

    /// Stops the daemon (SIGTERM, bounded wait) and starts it again on the same spec,
    /// state and log directories; the ports are new.
    pub fn restart(&mut self) {
        self.daemon.stop();
        let _ = std::fs::remove_file(self.path("log/init.log"));
        self.spawn_daemon();
    }

    /// Starts the daemon and waits until both UDP sockets are bound (from its init log) and
    /// its control socket is there.
    fn spawn_daemon(&mut self) {
        self.daemon.spawn();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let init = self.log("init.log");
            let addr = |prefix: &str| -> Option<SocketAddr> {
                init.lines()
                    .find_map(|l| l.split_once(prefix))
                    .and_then(|(_, a)| a.trim().parse().ok())
            };
            // The control socket is bound after the UDP sockets: a loaded machine can
            // leave a test between the two, its first `show status` unreachable.
            if let (Some(r), Some(k), true) = (
                addr("reset path listening on "),
                addr("fence_kdump listener on "),
                self.daemon.socket().exists(),
            ) {
                assert!(r.ip().is_loopback() && k.ip().is_loopback());
                self.reset_path = r;
                self.fence_kdump = k;
                return;
            }
            if let Some(status) = self.daemon.exited() {
                panic!(
                    "the daemon exited before binding ({status})\n{}",
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not bind within {READY_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.daemon.path(rel)
    }

    /// The daemon's control socket, as `--control-socket` takes it.
    pub fn socket_arg(&self) -> String {
        self.daemon.socket_arg()
    }

    /// The spec's cluster key file (with per-node keys, no node's key).
    pub fn key_file(&self) -> String {
        self.path("reset-path.key").display().to_string()
    }

    /// The key file of `system`'s node (written when first asked for): its own key, as
    /// `haconn node key` prints it; the cluster key in shared mode. (A name the spec does
    /// not hold gets a key derived the same way, which the connector does not know.)
    pub fn key_file_for(&self, system: &str) -> String {
        if self.shared {
            return self.key_file();
        }
        let path = self.path(&format!("{system}.key"));
        if !path.exists() {
            self.daemon
                .write(&format!("{system}.key"), &format!("{}\n", node_key(system)));
        }
        path.display().to_string()
    }

    /// The key `system`'s node signs with.
    pub fn key_of(&self, system: &str) -> haconn::resetpath::codec::Key {
        let key = if self.shared {
            KEY.to_string()
        } else {
            node_key(system)
        };
        haconn::resetpath::codec::Key::Hmac(key.into_bytes())
    }

    /// Whether the spec says `keyMode: shared`.
    pub fn shared(&self) -> bool {
        self.shared
    }

    /// Writes another key file (for wrong-key tests) and returns its path.
    pub fn write_key(&self, name: &str, key: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, format!("{key}\n")).expect("write key");
        p.display().to_string()
    }

    /// A log file's text so far (empty when it does not exist yet).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("log/{name}"))).unwrap_or_default()
    }

    /// A log's lines without their `[timestamp] `.
    pub fn log_bodies(&self, name: &str) -> Vec<String> {
        self.log(name)
            .lines()
            .map(|l| l.split_once("] ").map_or(l, |(_, b)| b).to_string())
            .collect()
    }

    /// Waits (bounded) until a line of log `name` satisfies `pred`; returns the whole line.
    pub fn wait_log(&self, name: &str, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            if let Some(l) = self.log(name).lines().find(|l| pred(l)) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {what} in {name} within {LINE_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) until `n` lines of log `name` satisfy `pred` (log lines are written
    /// by a writer thread: a reply can come before its line is in the file).
    pub fn wait_lines(&self, name: &str, n: usize, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let text = self.log(name);
            let count = text.lines().filter(|l| pred(l)).count();
            if count >= n {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{count} of {n} lines in {name} within {LINE_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `haconn node listen` on `bind:port` for one attention to `system`'s monitor (with
    /// its key), started and ready.
    pub fn listener(&self, system: &str, bind: &str, port: u16) -> Bg {
        let mut bg = Bg::spawn(vec![
            "node".into(),
            "listen".into(),
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            bind.into(),
            "--key-file".into(),
            self.key_file_for(system),
            "--count".into(),
            "1".into(),
            "--timeout".into(),
            "30".into(),
        ]);
        bg.wait_line(Stream::Err, "listening on");
        bg
    }

    /// `haconn node reset` of labnode02 by labnode01 (request `req`, replies to `port`), in
    /// the background, once its ACCEPTED reply is in.
    pub fn reset_node02(&self, port: u16, req: u32) -> Bg {
        let mut bg = Bg::spawn(self.node_args(
            "reset",
            &[
                "--system",
                "labnode01",
                "--subsystem",
                "1",
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--target-system",
                "labnode02",
                "--target",
                "2",
                "--req",
                &req.to_string(),
            ],
        ));
        bg.wait_line(Stream::Out, "result=ACCEPTED");
        bg
    }

    /// `haconn node SUB --connector ... --key-file ... ARGS`, with the key file of the
    /// node `--system` names.
    pub fn node_args(&self, sub: &str, args: &[&str]) -> Vec<String> {
        let system = args
            .iter()
            .position(|a| *a == "--system")
            .and_then(|i| args.get(i + 1))
            .expect("node commands name their --system");
        let mut a: Vec<String> = vec![
            "node".into(),
            sub.into(),
            "--connector".into(),
            self.reset_path.to_string(),
            "--key-file".into(),
            self.key_file_for(system),
        ];
        a.extend(args.iter().map(|s| s.to_string()));
        a
    }

    pub fn node(&self, sub: &str, args: &[&str]) -> Run {
        haconn(&self.node_args(sub, args))
    }

    /// Registers `system` as a monitor on 127.0.0.1:`port` (a check that must succeed).
    pub fn register(&self, system: &str, subsystem: u32, port: u16, pair: Option<u32>) -> Run {
        let (subsystem, port) = (subsystem.to_string(), port.to_string());
        let mut args = vec![
            "--system",
            system,
            "--subsystem",
            &subsystem,
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
        ];
        let pair = pair.map(|p| p.to_string());
        if let Some(p) = &pair {
            args.extend(["--pair", p]);
        }
        let run = self.node("check", &args);
        run.code(0).stdout_has("resettable=yes");
        run
    }

    /// `haconn show hamonitor --json` against this daemon.
    pub fn monitors(&self) -> serde_json::Value {
        let run = haconn(&[
            "show",
            "hamonitor",
            "--json",
            "--control-socket",
            &self.path("sock").display().to_string(),
        ]);
        run.code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
    }

    /// `haconn show status --json` against this daemon.
    pub fn status(&self) -> serde_json::Value {
        let run = haconn(&[
            "show",
            "status",
            "--json",
            "--control-socket",
            &self.path("sock").display().to_string(),
        ]);
        run.code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e})\n{run}"))
    }

    /// Init, reset and error logs and the daemon's stderr, for a failure message.
    pub fn diagnostics(&self) -> String {
        let stderr = self.daemon.stderr();
        format!(
            "--- init.log\n{}--- reset.log\n{}--- error.log\n{}--- daemon stderr\n{stderr}",
            self.log("init.log"),
            self.log("reset.log"),
            self.log("error.log")
        )
    }
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// A command running in the background; its output is read line by line as it comes.
pub struct Bg {
    args: Vec<String>,
    child: Option<Child>,
    lines: mpsc::Receiver<(Stream, String)>,
    seen: Vec<(Stream, String)>,
}

impl Bg {
    pub fn spawn(args: Vec<String>) -> Bg {
        let mut child = Command::new(env!("CARGO_BIN_EXE_haconn"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn haconn");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        for (stream, pipe) in [
            (Stream::Out, Box::new(out) as Box<dyn std::io::Read + Send>),
            (Stream::Err, Box::new(err)),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send((stream, line)).is_err() {
                        return;
                    }
                }
            });
        }
        Bg {
            args,
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line of `stream` containing `needle`.
    pub fn wait_line(&mut self, stream: Stream, needle: &str) -> String {
        if let Some((_, l)) = self
            .seen
            .iter()
            .find(|(s, l)| *s == stream && l.contains(needle))
        {
            return l.clone();
        }
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((s, l)) => {
                    self.seen.push((s, l.clone()));
                    if s == stream && l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no {stream:?} line with {needle:?} within {LINE_TIMEOUT:?} from `haconn {}`; seen:\n{:#?}",
                    self.args.join(" "),
                    self.seen
                ),
            }
        }
    }

    /// Whether a line of `stream` containing `needle` has come so far (no waiting).
    pub fn seen_any(&mut self, stream: Stream, needle: &str) -> bool {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen
            .iter()
            .any(|(s, l)| *s == stream && l.contains(needle))
    }

    /// Waits (bounded by `timeout`) for the process to exit and returns all it printed.
    pub fn finish(mut self, timeout: Duration) -> Run {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`haconn {}` still running after {timeout:?}; seen:\n{:#?}",
                    self.args.join(" "),
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // The reader threads end at EOF, which comes with the exit.
        let drain_until = Instant::now() + Duration::from_secs(5);
        while let Ok(l) = self
            .lines
            .recv_timeout(drain_until.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
        let text = |stream| {
            self.seen
                .iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, l)| format!("{l}\n"))
                .collect::<String>()
        };
        Run {
            args: self.args.clone(),
            code: status.code(),
            stdout: text(Stream::Out),
            stderr: text(Stream::Err),
        }
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `[YYYY/MM/DD HH:MM:SS:ffffff] ...` → microseconds since midnight (tests span no midnight
/// that matters: a reset takes seconds, and a wrap shows as a huge negative gap).
pub fn log_time_us(line: &str) -> i64 {
    let ts = line
        .strip_prefix('[')
        .and_then(|l| l.split_once(']'))
        .map(|(ts, _)| ts)
        .unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    let time = ts.split(' ').nth(1).expect("date and time");
    let f: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().expect("numeric time field"))
        .collect();
    assert_eq!(f.len(), 4, "HH:MM:SS:ffffff in {line:?}");
    ((f[0] * 60 + f[1]) * 60 + f[2]) * 1_000_000 + f[3]
}
