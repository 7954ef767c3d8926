//! Debian's Pacemaker fencer for the `fence_haconn` tests: a stand-alone
//! `pacemaker-fenced` (no corosync: `-s`, as Pacemaker's own cts-fencing runs it) and
//! `stonith_admin` against it.
//!
//! Two things about the fencer are machine-wide, so [`Fencer::start`] first takes a lock
//! file (another test, or another work tree's test run, waits its turn): its IPC server
//! name (`stonith-ng`) and the directory it runs agents from (`/usr/sbin`, fixed when
//! Pacemaker was built), where the agent is installed as the symlink
//! `/usr/sbin/fence_haconn` → this build's `haconn`. Dropping the [`Fencer`] stops the
//! daemon (SIGTERM, then SIGKILL), removes the symlink and releases the lock, also when the
//! test failed.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::run::{Run, execute};

pub const FENCED: &str = "/usr/lib/pacemaker/pacemaker-fenced";
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

/// A stand-alone `pacemaker-fenced` with `fence_haconn` installed for it.
pub struct Fencer {
    dir: TempDir,
    child: Option<Child>,
    lock: std::fs::File,
}

impl Fencer {
    pub fn start() -> Fencer {
        require(FENCED, "pacemaker");
        require("/usr/sbin/stonith_admin", "pacemaker-cli-utils");
        let lock = take_lock();
        install_agent();
        let dir = tempfile::Builder::new()
            .prefix("haconn-fenced-")
            .tempdir()
            .expect("temporary directory");
        let log = dir.path().join("fenced.log");
        let child = Command::new(FENCED)
            .arg("-s")
            .arg("-l")
            .arg(&log)
            .env("PCMK_debug", "no")
            .stdin(Stdio::null())
            .stdout(Stdio::from(
                std::fs::File::create(dir.path().join("fenced.out")).expect("out file"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("fenced.err")).expect("err file"),
            ))
            .spawn()
            .expect("start pacemaker-fenced");
        let mut fencer = Fencer {
            dir,
            child: Some(child),
            lock,
        };
        fencer.wait_ready();
        fencer
    }

    /// Waits until the fencer answers `stonith_admin --list-registered`.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                panic!(
                    "pacemaker-fenced exited at start ({status}); another fencer running?\n{}",
                    self.diagnostics()
                );
            }
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
        let err = std::fs::read_to_string(self.dir.path().join("fenced.err")).unwrap_or_default();
        format!(
            "--- pacemaker-fenced log (agent, warnings, errors)\n{}\n--- pacemaker-fenced stderr\n{err}",
            agent.join("\n")
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for Fencer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
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

/// Takes the machine-wide lock of the fencer tests, waiting (bounded) for another holder.
fn take_lock() -> std::fs::File {
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
            "{LOCK} still held after {LOCK_WAIT:?}: another pacemaker-fenced test is running"
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
