//! A running `haconn daemon` for end-to-end tests, in its own temporary directory.
//!
//! [`Daemon`] starts the real binary with a spec, a state dir, a log dir and a control
//! socket under a fresh directory, waits (bounded) until the socket answers, and stops the
//! process when dropped (SIGTERM, then SIGKILL), so no test leaves a daemon behind. Every
//! wait polls against a deadline; a timeout panics with the daemon's stderr and event log.
//!
//! The specs given to a daemon are variants of `examples/lab-single.yaml`, which holds
//! loopback addresses only; [`lab`] and [`pair`] build them and check that they do.

#![allow(dead_code)] // not every test uses every helper

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The loopback-only lab spec every test spec starts from.
pub const LAB_SINGLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/lab-single.yaml"
));
/// The BMC ports of labnode01 and labnode02 in [`LAB_SINGLE`].
pub const BASE_PORTS: (u16, u16) = (16231, 16232);

/// How long a daemon may take to open its control socket.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload started by the watcher or a signal may take to be logged.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The lab spec (`mode: single`) with these BMC ports for labnode01 and labnode02.
pub fn lab(port1: u16, port2: u16) -> String {
    let text = replace_once(LAB_SINGLE, "port: 16231,", &format!("port: {port1},"));
    let text = replace_once(&text, "port: 16232,", &format!("port: {port2},"));
    loopback_only(&text);
    text
}

/// The lab spec turned into a pair (`mode: pair`, a second management server `labms02`).
pub fn pair(port1: u16, port2: u16) -> String {
    let text = replace_once(&lab(port1, port2), "\nmode: single\n", "\nmode: pair\n");
    let text = replace_once(
        &text,
        "    mlan: {address: 127.0.0.1, port: 15002}\n",
        "    mlan: {address: 127.0.0.1, port: 15002}\n  - name: labms02\n    bmc: {address: 127.0.0.3, port: 16233, username: admin, password: labpassw0rd}\n    mlan: {address: 127.0.0.4, port: 15002}\n",
    );
    loopback_only(&text);
    text
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "expected exactly one {from:?} in the spec"
    );
    text.replacen(from, to, 1)
}

/// Guards the safety rule: a spec given to a daemon addresses nothing but loopback.
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

/// The BMC port of `server` in a rendered spec (the daemon's masked settings or a state file).
pub fn bmc_port(yaml: &str, server: &str) -> u16 {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.ends_with(&format!("name: {server}")));
    assert!(lines.next().is_some(), "no server {server} in:\n{yaml}");
    lines
        .take_while(|l| !l.trim_start().starts_with("- name:"))
        .find_map(|l| l.trim().strip_prefix("port: "))
        .unwrap_or_else(|| panic!("no BMC port for {server} in:\n{yaml}"))
        .parse()
        .expect("a port number")
}

/// A deterministic PRNG (xorshift64*), so a failing round can be replayed.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[allow(unused_imports)] // the benchmarks include this file without the closed-pipe tests
pub use super::run::{Run, assert_quiet_on_epipe, haconn, haconn_into_closed_pipe};

/// One write to the event log: lines that share a timestamp.
#[derive(Debug, Clone)]
pub struct Entry {
    pub lines: Vec<String>,
}

impl Entry {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn first(&self) -> &str {
        &self.lines[0]
    }

    /// A reload's plan and summary, logged whole (its last management-server status line
    /// included); `origin` is `Watch`, `Apply` or `Signal`.
    pub fn is_reload(&self, origin: &str) -> bool {
        let header = "    <Management Server System Name>   : <Result>";
        self.first() == format!("reload ({origin}):")
            && self
                .lines
                .iter()
                .any(|l| l.starts_with("-- HA monitor connector reload : "))
            && self
                .lines
                .iter()
                .position(|l| l == header)
                .is_some_and(|i| i + 1 < self.lines.len())
    }

    /// A reload refused because the spec was invalid.
    pub fn is_refusal(&self, origin: &str) -> bool {
        self.first()
            .starts_with(&format!("reload ({origin}) refused: the spec is invalid"))
    }

    pub fn has(&self, needle: &str) -> bool {
        self.lines.iter().any(|l| l.contains(needle))
    }

    pub fn completed(&self) -> bool {
        self.has("-- HA monitor connector reload : completed. --")
    }

    pub fn failed(&self) -> bool {
        self.has("-- HA monitor connector reload : failed. --")
    }
}

/// Splits an event log into its writes. A reload block is one write, so its lines share
/// one timestamp; a line with another timestamp, or a new `reload (` line, starts the next.
pub fn parse_log(text: &str) -> Vec<Entry> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut last_ts = "";
    for line in complete.lines() {
        let Some(end) = line.find("] ").filter(|_| line.starts_with('[')) else {
            panic!("event log line without a timestamp: {line:?}");
        };
        let (ts, body) = (&line[..=end], &line[end + 2..]);
        if ts != last_ts || body.starts_with("reload (") || entries.is_empty() {
            entries.push(Entry { lines: Vec::new() });
        }
        last_ts = ts;
        entries
            .last_mut()
            .expect("pushed above")
            .lines
            .push(body.to_string());
    }
    entries
}

/// A `haconn daemon` under its own temporary directory: `cluster.yaml` (the spec, unless
/// moved with [`Daemon::spec_at`]), `state/`, `log/`, `sock`.
pub struct Daemon {
    dir: TempDir,
    pub spec: PathBuf,
    args: Vec<String>,
    test_hooks: bool,
    umask: Option<u32>,
    child: Option<Child>,
    starts: u32,
    /// Follow the spec file (`--poll-ms 300 --debounce-ms 100`), or `--no-watch`.
    watch: bool,
    /// Extra environment of the process.
    envs: Vec<(String, std::ffi::OsString)>,
    /// Listen for fence_kdump messages on an ephemeral loopback port, or not at all.
    fence_kdump: bool,
    /// Run in this network namespace (`ip netns exec`), on the spec's reset-path address.
    netns: Option<String>,
}

impl Daemon {
    /// A daemon (not started) whose spec file holds `spec`; test hooks on, watching with a
    /// 300 ms poll and a 100 ms debounce.
    pub fn new(spec: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("haconn-daemon-")
            .tempdir()
            .expect("temporary directory");
        let path = dir.path().join("cluster.yaml");
        std::fs::write(&path, spec).expect("write the spec");
        Daemon {
            dir,
            spec: path,
            args: Vec::new(),
            test_hooks: true,
            umask: None,
            child: None,
            starts: 0,
            watch: true,
            fence_kdump: false,
            envs: Vec::new(),
            netns: None,
        }
    }

    /// Runs in network namespace `name` (`ip netns exec`, which execs the daemon: the
    /// child's pid is the daemon's, written to `daemon.pid` at each start), listening on
    /// the spec's own reset-path address and port.
    pub fn in_netns(mut self, name: &str) -> Daemon {
        self.netns = Some(name.to_string());
        self
    }

    /// Where the running daemon's pid is written (for a BMC that fences it).
    pub fn pidfile(&self) -> PathBuf {
        self.path("daemon.pid")
    }

    /// An environment variable of the process (`NOTIFY_SOCKET`, …).
    pub fn env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Daemon {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Does not follow the spec file (`--no-watch`).
    pub fn no_watch(mut self) -> Daemon {
        self.watch = false;
        self
    }

    /// Listens for fence_kdump messages on an ephemeral loopback port.
    pub fn with_fence_kdump(mut self) -> Daemon {
        self.fence_kdump = true;
        self
    }

    /// An extra `haconn daemon` argument.
    pub fn arg(mut self, a: &str) -> Daemon {
        self.args.push(a.into());
        self
    }

    /// Starts the process with this umask (its files' modes must not depend on it).
    pub fn umask(mut self, mask: u32) -> Daemon {
        self.umask = Some(mask);
        self
    }

    pub fn without_test_hooks(mut self) -> Daemon {
        self.test_hooks = false;
        self
    }

    /// Follows the spec at `rel` (under the daemon's directory) instead of `cluster.yaml`.
    pub fn spec_at(mut self, rel: &str) -> Daemon {
        self.spec = self.path(rel);
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    pub fn applied(&self) -> PathBuf {
        self.path("state/applied.yaml")
    }

    pub fn socket(&self) -> PathBuf {
        self.path("sock")
    }

    pub fn socket_arg(&self) -> String {
        self.socket().display().to_string()
    }

    pub fn event_log(&self) -> PathBuf {
        self.path("log/event.log")
    }

    pub fn reset_log(&self) -> PathBuf {
        self.path("log/reset.log")
    }

    /// Writes a file under the daemon's directory (creating parents).
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("create parent");
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// The `haconn daemon` arguments.
    fn daemon_args(&self) -> Vec<String> {
        self.daemon_args_logging_to("log")
    }

    /// The `haconn daemon` arguments, with the logs in `log` (under the directory).
    fn daemon_args_logging_to(&self, log: &str) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "daemon".into(),
            "--spec".into(),
            self.spec.display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--log-dir".into(),
            self.path(log).display().to_string(),
            "--control-socket".into(),
            self.socket_arg(),
            "--fence-kdump-bind".into(),
            if self.fence_kdump {
                "127.0.0.1:0"
            } else {
                "off"
            }
            .into(),
        ];
        if self.netns.is_none() {
            // Tests run in parallel: an ephemeral reset-path port each.
            a.extend(["--reset-path-bind", "127.0.0.1:0"].map(String::from));
        }
        if self.watch {
            a.extend(["--poll-ms", "300", "--debounce-ms", "100"].map(String::from));
        } else {
            a.push("--no-watch".into());
        }
        if self.test_hooks {
            a.push("--test-hooks".into());
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.starts += 1;
        let out = std::fs::File::create(self.path(&format!("daemon-{}.stderr", self.starts)))
            .expect("stderr file");
        let mut cmd = match &self.netns {
            None => Command::new(env!("CARGO_BIN_EXE_haconn")),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_haconn")]);
                c
            }
        };
        if let Some(mask) = self.umask {
            use std::os::unix::process::CommandExt;
            // SAFETY: umask(2) is async-signal-safe and cannot fail.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(self.daemon_args())
            .env("HACONN_LOG", "info")
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn haconn daemon");
        std::fs::write(self.pidfile(), child.id().to_string()).expect("write the pid file");
        self.child = Some(child);
    }

    /// Runs another `haconn daemon` on this directory in the foreground, logging to `log`,
    /// for a start that must be refused (killed after 30 s if it is not).
    pub fn run_refused(&self, log: &str) -> Run {
        super::run::haconn_within(&self.daemon_args_logging_to(log), Duration::from_secs(30))
    }

    /// The exit status, if the process has exited (it is then forgotten).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Everything the process wrote to stderr, over every start.
    pub fn stderr(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.path(&format!("daemon-{n}.stderr")))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Starts the process and waits until its control socket accepts connections.
    pub fn start(mut self) -> Daemon {
        self.spawn();
        self.wait_ready();
        self
    }

    /// Waits (bounded) until the control socket accepts connections; panics if the
    /// process exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            let child = self.child.as_mut().expect("the daemon was spawned");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                panic!(
                    "the daemon exited before it was ready ({status})\n{}",
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the daemon did not open its socket within {READY_TIMEOUT:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with the pid of a child we have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process runs (one that has exited is reaped and forgotten).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Waits (bounded) for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.as_ref()?;
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(5));
        self.kill9();
        status
    }

    /// Runs a `haconn` command against this daemon (`--control-socket` appended).
    pub fn haconn(&self, args: &[&str]) -> Run {
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push("--control-socket".into());
        a.push(self.socket_arg());
        haconn(&a)
    }

    /// `haconn apply --spec FILE --force` (FILE is usually not the watched spec file).
    pub fn apply(&self, file: &Path) -> Run {
        self.haconn(&["apply", "--spec", &file.display().to_string(), "--force"])
    }

    /// The live spec, masked: `haconn show settings --output yaml`.
    pub fn settings(&self) -> String {
        let run = self.haconn(&["show", "settings", "--output", "yaml"]);
        run.code(0);
        assert!(
            run.stdout.contains("password: \"********\"") && !run.stdout.contains("labpassw0rd"),
            "settings are not masked:\n{run}"
        );
        run.stdout
    }

    /// `haconn show status --json`.
    pub fn status(&self) -> Value {
        let run = self.haconn(&["show", "status", "--json"]);
        run.code(0);
        serde_json::from_str(&run.stdout).expect("status is JSON")
    }

    /// Sends one raw line (a newline is added) on a new connection and reads one reply.
    pub fn request(&self, line: &str) -> Value {
        let stream = UnixStream::connect(self.socket()).expect("connect to the daemon");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut conn = Conn(BufReader::new(stream));
        conn.send(line);
        conn.recv().expect("a reply")
    }

    pub fn connect(&self) -> Conn {
        let stream = UnixStream::connect(self.socket()).expect("connect to the daemon");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Conn(BufReader::new(stream))
    }

    /// The event log's complete writes so far.
    pub fn entries(&self) -> Vec<Entry> {
        match std::fs::read_to_string(self.event_log()) {
            Ok(t) => parse_log(&t),
            Err(_) => Vec::new(),
        }
    }

    /// Waits (bounded) for an event-log entry past the first `skip` that satisfies `pred`.
    pub fn wait_for_log(&self, skip: usize, what: &str, pred: impl Fn(&Entry) -> bool) -> Entry {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            if let Some(e) = self.entries().into_iter().skip(skip).find(|e| pred(e)) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no event-log entry ({what}) within {LOG_TIMEOUT:?}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's stderr and event log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let err = std::fs::read_to_string(self.path(&format!("daemon-{n}.stderr")))
                .unwrap_or_default();
            s.push_str(&format!("--- daemon stderr (start {n})\n{err}\n"));
        }
        let log = std::fs::read_to_string(self.event_log()).unwrap_or_default();
        s.push_str(&format!("--- event.log\n{log}"));
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// One control-socket connection.
pub struct Conn(pub BufReader<UnixStream>);

impl Conn {
    pub fn send(&mut self, line: &str) {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.0.get_mut().write_all(&bytes).expect("send a request");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.0.get_mut().write_all(bytes)
    }

    /// One reply line; `None` when the daemon hung up.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.0.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON reply")),
        }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.0.get_ref().set_read_timeout(Some(t)).expect("timeout");
    }
}

/// Sends one line on a new connection to `socket` and reads one reply; `None` when the
/// daemon cannot be reached or hangs up first.
pub fn try_request(socket: &Path, line: &str) -> Option<Value> {
    let stream = UnixStream::connect(socket).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut conn = Conn(BufReader::new(stream));
    conn.send_raw(format!("{line}\n").as_bytes()).ok()?;
    conn.recv()
}

/// The error code of a reply, or `ok`.
pub fn code_of(reply: &Value) -> String {
    if reply["ok"] == true {
        return "ok".into();
    }
    reply["error"]["code"].as_str().unwrap_or("?").to_string()
}

/// Runs `haconn` with these arguments as another user: uid `uid`, primary group `gid`,
/// supplementary groups `groups` (the test runs as root and drops to them in the child
/// before exec). The binary is copied where that user can run it.
pub fn haconn_as(uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Run {
    use std::os::unix::process::CommandExt;
    static COPY: std::sync::OnceLock<(TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, exe) = COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("haconn-bin-")
            .tempdir()
            .expect("temporary directory");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let exe = dir.path().join("haconn");
        std::fs::copy(env!("CARGO_BIN_EXE_haconn"), &exe).expect("copy haconn");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, exe)
    });
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new(exe);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: only async-signal-safe calls (setgroups, setgid, setuid) between fork and
    // exec, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run haconn as another user");
    Run {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
