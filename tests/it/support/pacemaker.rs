//! Debian's Pacemaker fencer for the `fence_haconn` tests: `pacemaker-fenced` outside a
//! full cluster stack, and `stonith_admin` against it.
//!
//! The fencer runs as Pacemaker's own cts-fencing runs it: `-c`, stand-alone with corosync's
//! process groups, over a one-node corosync on loopback that the test starts with a
//! configuration of its own (no pacemakerd, no CIB). Plain stand-alone (`-s`, no corosync)
//! fences too, but keeps no fencing history (it executes a request locally instead of as a
//! cluster operation), so `stonith_admin --history` would show nothing.
//!
//! Corosync, the fencer's IPC server name (`stonith-ng`) and the directory it runs agents
//! from (`/usr/sbin`, fixed when Pacemaker was built) are machine-wide, so
//! [`Fencer::start`] first takes a lock file (another test, or another work tree's test run,
//! waits its turn), then installs the agent as the symlink `/usr/sbin/fence_haconn` → this
//! build's `haconn`. Dropping the [`Fencer`] stops the fencer and corosync (SIGTERM, then
//! SIGKILL), removes the symlink and releases the lock, also when the test failed.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::run::{Run, execute};

pub const FENCED: &str = "/usr/lib/pacemaker/pacemaker-fenced";
pub const COROSYNC: &str = "/usr/sbin/corosync";
/// The one node of the test's corosync, where the fencer runs.
pub const FENCER_NODE: &str = "labms01";
/// Where the fencer looks for agents (Pacemaker's PCMK__FENCE_BINDIR on Debian).
pub const AGENT_DIR: &str = "/usr/sbin";
pub const AGENT: &str = "/usr/sbin/fence_haconn";
/// The RelaxNG schema of agent metadata, as the fence-agents package ships it.
pub const METADATA_RNG: &str = "/usr/share/cluster/relaxng/metadata.rng";
const LOCK: &str = "/run/lock/haconn-test-pacemaker-fenced.lock";
/// How long a test waits for another's fencer to finish.
const LOCK_WAIT: Duration = Duration::from_secs(600);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Why these tests cannot run here, if they cannot: they need root (the agent goes into
/// /usr/sbin and the fencer wants its run directories), and Pacemaker's fencer and
/// fence-agents' schema (scripts/test installs both). `None`: they can.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some(format!(
            "not root: pacemaker-fenced runs agents only from {AGENT_DIR}, where this test \
             must install {AGENT}"
        ));
    }
    None
}

/// Panics with how to get a missing program (scripts/test installs them).
pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (scripts/test does)"
    );
}

/// A `pacemaker-fenced` on a one-node corosync, with `fence_haconn` installed for it.
pub struct Fencer {
    dir: TempDir,
    /// The fencer, then corosync: stopped in this order.
    children: Vec<Child>,
    lock: std::fs::File,
}

/// The one-node corosync: knet on 127.0.0.1, no crypto (nothing leaves the machine).
fn corosync_conf(log: &Path) -> String {
    format!(
        "totem {{\n  version: 2\n  cluster_name: haconntest\n  transport: knet\n  crypto_cipher: none\n  crypto_hash: none\n}}\n\
         nodelist {{\n  node {{\n    ring0_addr: 127.0.0.1\n    name: {FENCER_NODE}\n    nodeid: 1\n  }}\n}}\n\
         quorum {{\n  provider: corosync_votequorum\n}}\n\
         logging {{\n  to_logfile: yes\n  logfile: {}\n  to_stderr: no\n  to_syslog: no\n}}\n",
        log.display()
    )
}

fn output_to(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).expect("output file"))
}

impl Fencer {
    pub fn start() -> Fencer {
        require(FENCED, "pacemaker");
        require(COROSYNC, "corosync");
        require("/usr/sbin/stonith_admin", "pacemaker-cli-utils");
        let lock = take_lock();
        let quorum = Command::new("corosync-quorumtool").arg("-s").output();
        assert!(
            !quorum.is_ok_and(|o| o.status.success()),
            "a corosync is already running on this machine: the test starts its own"
        );
        install_agent();
        let dir = tempfile::Builder::new()
            .prefix("haconn-fenced-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        let conf = d.join("corosync.conf");
        std::fs::write(&conf, corosync_conf(&d.join("corosync.log"))).expect("write conf");
        let corosync = Command::new(COROSYNC)
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(output_to(d, "corosync.out"))
            .stderr(output_to(d, "corosync.err"))
            .spawn()
            .expect("start corosync");
        let mut fencer = Fencer {
            dir,
            children: vec![corosync],
            lock,
        };
        fencer.wait_quorate();
        let d = fencer.dir.path();
        let child = Command::new(FENCED)
            .arg("-c")
            .arg("-l")
            .arg(d.join("fenced.log"))
            .stdin(Stdio::null())
            .stdout(output_to(d, "fenced.out"))
            .stderr(output_to(d, "fenced.err"))
            .spawn()
            .expect("start pacemaker-fenced");
        fencer.children.insert(0, child);
        fencer.wait_ready();
        fencer
    }

    /// Waits until the one-node corosync is quorate.
    fn wait_quorate(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.assert_running();
            let q = Command::new("corosync-quorumtool").arg("-s").output();
            if q.is_ok_and(|o| o.status.success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "corosync not quorate within {READY_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn assert_running(&mut self) {
        for c in &mut self.children {
            if let Some(status) = c.try_wait().ok().flatten() {
                panic!(
                    "pid {} exited at start ({status})\n{}",
                    c.id(),
                    self.diagnostics()
                );
            }
        }
    }

    /// Waits until the fencer answers `stonith_admin --list-registered`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.assert_running();
            let run = stonith_admin(&["--list-registered", "--timeout", "5"]);
            if run.code == Some(0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pacemaker-fenced did not answer within {READY_TIMEOUT:?}\n{run}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fenced.log")).unwrap_or_default()
    }

    /// The fencer's log lines about the agent, and its stderr: what a failing assertion
    /// shows.
    pub fn diagnostics(&self) -> String {
        let log = self.log();
        let agent: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("fence_haconn") || l.contains("error") || l.contains("warn"))
            .collect();
        let read = |name: &str| std::fs::read_to_string(self.path(name)).unwrap_or_default();
        let corosync: Vec<String> = read("corosync.log")
            .lines()
            .rev()
            .take(10)
            .map(str::to_string)
            .collect();
        format!(
            "--- pacemaker-fenced log (agent, warnings, errors)\n{}\n--- pacemaker-fenced stderr\n{}\n--- corosync log (last lines, newest first)\n{}\n{}",
            agent.join("\n"),
            read("fenced.err"),
            corosync.join("\n"),
            read("corosync.err"),
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Fencer {
    fn drop(&mut self) {
        for mut c in self.children.drain(..) {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_our_agent() {
            let _ = std::fs::remove_file(AGENT);
        }
        // SAFETY: flock(2) on a descriptor we own.
        unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Takes the machine-wide lock of the tests that put `/usr/sbin/fence_haconn` in place
/// (this module's fencer tests, a symlink; `package`'s, the installed package's), waiting
/// (bounded) for another holder. Held until the file is dropped.
pub fn take_lock() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return file;
        }
        assert!(
            Instant::now() < deadline,
            "{LOCK} still held after {LOCK_WAIT:?}: another pacemaker-fenced or package test is running"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_our_agent() -> bool {
    std::fs::read_link(AGENT).is_ok_and(|t| t == Path::new(env!("CARGO_BIN_EXE_haconn")))
}

/// Points /usr/sbin/fence_haconn at this build's `haconn` (a symlink left by an earlier
/// run is replaced; a real installed agent, a regular file, is never touched).
fn install_agent() {
    match std::fs::symlink_metadata(AGENT) {
        Ok(m) if !m.file_type().is_symlink() => panic!(
            "{AGENT} is an installed file, not a test's symlink: the test will not replace it"
        ),
        _ => {}
    }
    let tmp = format!("{AGENT}.haconn-test-{}", std::process::id());
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_haconn"), &tmp)
        .unwrap_or_else(|e| panic!("symlink {tmp}: {e}"));
    std::fs::rename(&tmp, AGENT).unwrap_or_else(|e| panic!("rename {tmp} to {AGENT}: {e}"));
}

/// One `stonith_admin` run to its end (its own `--timeout` bounds the fencer's work; a
/// `timeout -s KILL` around it bounds the rest).
pub fn stonith_admin(args: &[&str]) -> Run {
    stonith_admin_within(args, Duration::from_secs(150))
}

pub fn stonith_admin_within(args: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &format!("{:.0}", limit.as_secs_f64())])
        .arg("stonith_admin");
    let mut run = execute(
        cmd,
        args.iter().map(|a| a.to_string()).collect(),
        Vec::new(),
    );
    run.args.insert(0, "(stonith_admin)".into());
    run
}

/// Validates XML against fence-agents' metadata schema with xmllint; the run's output.
pub fn xmllint_metadata(xml: &str) -> Run {
    require(METADATA_RNG, "fence-agents");
    require("/usr/bin/xmllint", "libxml2-utils");
    let mut cmd = Command::new("xmllint");
    cmd.args(["--noout", "--relaxng", METADATA_RNG, "-"]);
    let mut run = execute(cmd, Vec::new(), xml.as_bytes().to_vec());
    run.args.insert(0, "(xmllint)".into());
    run
}
