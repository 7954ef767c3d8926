//! A real OpenSSH `sshd` on 127.0.0.1 playing an ESXi host, for tests/esxi.rs and
//! benches/esxi.rs.
//!
//! Everything lives in a temporary directory: `sshd_config` with ESXi-like algorithms
//! (ECDH NIST kex, ECDSA and RSA host keys, passwords by keyboard-interactive only), host
//! keys, a client key in `authorized_keys`, and the `vim-cmd`/`vmdumper` doubles first in
//! `PATH`, which share an inventory (`vms`) and log every call (`calls.log`).
//!
//! Password logins go through PAM. No account on this machine is touched: sshd runs in
//! its own mount namespace (`unshare -m`) where `/etc/pam.d/sshd` is a bind mount of a
//! test PAM file (`pam_exec` compares the typed password with [`PASSWORD`]) and `/run` a
//! fresh tmpfs (sshd's privilege-separation directory), and root's shell is `/bin/sh` as on
//! ESXi (no `.bashrc` run before every command). It also gets its own PID namespace
//! so that killing it ends every session process with it. The mounts vanish with the
//! namespace.

#![allow(dead_code)] // not every test uses every helper

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haconn::spec::model::{Esxi, Name};
use haconn::spec::raw::RawSecretRef;
use haconn::spec::secret::{Secret, SecretRule};
use tempfile::TempDir;

pub const SSHD: &str = "/usr/sbin/sshd";
/// The ESXi account's password inside the test sshd's namespace.
pub const PASSWORD: &str = "Esx!pass1";
/// How long sshd may take to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

const VIM_CMD: &str = include_str!("vim-cmd");
const VMDUMPER: &str = include_str!("vmdumper");

/// The VMs of the double: names with spaces, a two-line annotation, a powered-off VM, and
/// sixteen HA guests `g01`..`g16` (vmids 11..26).
pub fn inventory() -> String {
    let mut s = String::from(
        "1|vmdb01|vmdb01/vmdb01.vmx|on|1001|\n\
         2|my vm01|my vm01/my vm01.vmx|on|1002|HA test guest\\nsecond line [datastore1] x.vmx\n\
         3|vm01|vm01/vm01.vmx|on|1003|\n\
         4|vmoff|vmoff/vmoff.vmx|off||\n\
         5|vm01 copy|vm01 copy/vm01.vmx|on|1005|\n",
    );
    for i in 1..=16 {
        s.push_str(&format!(
            "{}|g{i:02}|g{i:02}/g{i:02}.vmx|on|{}|\n",
            10 + i,
            2000 + i
        ));
    }
    s
}

/// Login methods the test sshd offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logins {
    /// Like ESXi: public key and keyboard-interactive (PAM), `PasswordAuthentication no`.
    Esxi,
    /// Public key and the `password` method only.
    PasswordMethod,
}

/// A running test sshd.
pub struct Sshd {
    dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    starts: u32,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Sshd {
    pub fn start(logins: Logins) -> Sshd {
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} is missing: these tests need OpenSSH's sshd (Debian: openssh-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("haconn-esxi-")
            .tempdir()
            .expect("temporary directory");
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).expect("bin dir");
        write_exec(&d.join("bin/vim-cmd"), VIM_CMD);
        write_exec(&d.join("bin/vmdumper"), VMDUMPER);
        std::fs::write(d.join("vms"), inventory()).expect("inventory");
        std::fs::write(d.join("calls.log"), "").expect("call log");
        let sshd = Sshd {
            dir,
            port: free_tcp_port(),
            child: None,
            starts: 0,
        };
        sshd.new_host_keys();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ecdsa", "-N", "", "-C", "haconn-test", "-f"])
            .arg(sshd.path("client_key")));
        std::fs::copy(sshd.path("client_key.pub"), sshd.path("authorized_keys"))
            .expect("authorized_keys");
        write_exec(
            &sshd.path("checkpw"),
            &format!(
                "#!/bin/sh\n# pam_exec expose_authtok: the password on stdin, NUL-terminated.\n\
                 pw=$(tr -d '\\000')\n[ \"$pw\" = '{PASSWORD}' ]\n"
            ),
        );
        std::fs::write(
            sshd.path("pam"),
            format!(
                "auth required pam_exec.so expose_authtok quiet type=auth {}\n\
                 auth required pam_permit.so\naccount required pam_permit.so\n\
                 session required pam_permit.so\npassword required pam_deny.so\n",
                sshd.path("checkpw").display()
            ),
        )
        .expect("pam file");
        let (kbd, pw) = match logins {
            Logins::Esxi => ("yes", "no"),
            Logins::PasswordMethod => ("no", "yes"),
        };
        let p = |rel: &str| sshd.path(rel).display().to_string();
        std::fs::write(
            sshd.path("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\n\
                 HostKey {hk_ecdsa}\nHostKey {hk_rsa}\n\
                 KexAlgorithms ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group14-sha256\n\
                 HostKeyAlgorithms ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256\n\
                 PubkeyAcceptedAlgorithms ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256\n\
                 PidFile {pid}\nAuthorizedKeysFile {ak}\n\
                 KbdInteractiveAuthentication {kbd}\nPasswordAuthentication {pw}\n\
                 UsePAM yes\nStrictModes no\nPermitRootLogin yes\nMaxSessions 10\n\
                 MaxStartups 100\nLogLevel VERBOSE\n\
                 SetEnv PATH={bin}:/usr/bin:/bin\n",
                port = sshd.port,
                hk_ecdsa = p("hostkey_ecdsa"),
                hk_rsa = p("hostkey_rsa"),
                pid = p("sshd.pid"),
                ak = p("authorized_keys"),
                bin = p("bin"),
            ),
        )
        .expect("sshd_config");
        write_exec(
            &sshd.path("start.sh"),
            &format!(
                "#!/bin/sh\n# Inside a fresh mount and PID namespace: test PAM, private /run.\nset -e\n\
                 mount --bind {pam} /etc/pam.d/sshd\nmount -t tmpfs -o mode=755 tmpfs /run\n\
                 sed 's#^\\(root:.*:\\)[^:]*$#\\1/bin/sh#' /etc/passwd > {passwd}\n\
                 mount --bind {passwd} /etc/passwd\n\
                 mkdir -m 755 /run/sshd\nexec {SSHD} -D -e -f {conf}\n",
                pam = p("pam"),
                conf = p("sshd_config"),
                passwd = p("passwd"),
            ),
        );
        let mut sshd = sshd;
        sshd.spawn();
        sshd
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// New ECDSA and RSA host keys (effective at the next start).
    pub fn new_host_keys(&self) {
        for (t, f) in [("ecdsa", "hostkey_ecdsa"), ("rsa", "hostkey_rsa")] {
            let _ = std::fs::remove_file(self.path(f));
            let _ = std::fs::remove_file(self.path(&format!("{f}.pub")));
            let mut c = Command::new("ssh-keygen");
            c.args(["-q", "-t", t, "-N", "", "-f"]).arg(self.path(f));
            if t == "rsa" {
                c.args(["-b", "2048"]);
            }
            run(&mut c);
        }
    }

    /// The SHA-256 fingerprint of the ECDSA host key (the one a client preferring ECDSA sees).
    pub fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.path("hostkey_ecdsa.pub"))
            .output()
            .expect("ssh-keygen -l");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
            .to_string()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "sshd is already running");
        self.starts += 1;
        let err = std::fs::File::create(self.path(&format!("sshd-{}.stderr", self.starts)))
            .expect("stderr file");
        let child = Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--kill-child=SIGKILL"])
            .arg(self.path("start.sh"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn unshare + sshd");
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "sshd exited before accepting ({status})\n{}",
                    self.diagnostics()
                );
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not accept within {READY_TIMEOUT:?}\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills sshd with every session it serves (it is PID 1 of its namespace).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the namespace's init, a child of our own unshare process.
            unsafe { libc::kill(c, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        // The port is closed once the listener is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "sshd still accepts after the kill"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts sshd again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn calls(&self) -> Vec<Call> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (ns, rest) = l.split_once(' ')?;
                let ns: u128 = ns.parse().ok()?;
                Some(match rest.strip_prefix("end ") {
                    Some(argv) => Call {
                        ns,
                        end: true,
                        argv: argv.to_string(),
                    },
                    None => Call {
                        ns,
                        end: false,
                        argv: rest.to_string(),
                    },
                })
            })
            .collect()
    }

    /// The commands started, in order.
    pub fn started(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !c.end)
            .map(|c| c.argv)
            .collect()
    }

    pub fn clear_calls(&self) {
        std::fs::write(self.path("calls.log"), "").expect("clear call log");
    }

    /// Makes `command first-arg` (e.g. `vim-cmd vmsvc/power.reset`) hang; `None` stops it.
    pub fn hang(&self, what: Option<&str>) {
        match what {
            Some(w) => std::fs::write(self.path("HANG"), format!("{w}\n")).expect("HANG"),
            None => {
                let _ = std::fs::remove_file(self.path("HANG"));
            }
        }
    }

    /// Each `power.reset` takes this long (`None`: no delay).
    pub fn reset_delay(&self, secs: Option<f64>) {
        match secs {
            Some(s) => std::fs::write(self.path("DELAY"), format!("{s}\n")).expect("DELAY"),
            None => {
                let _ = std::fs::remove_file(self.path("DELAY"));
            }
        }
    }

    /// Runs a double directly (not over SSH), e.g. to power a VM off and on; not logged
    /// apart from the double's own line.
    pub fn local(&self, tool: &str, args: &[&str]) -> String {
        let out = Command::new(self.path(&format!("bin/{tool}")))
            .args(args)
            .output()
            .expect("run a double");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The `wid` of a running VM, from the inventory.
    pub fn wid(&self, name: &str) -> String {
        let inv = std::fs::read_to_string(self.path("vms")).expect("inventory");
        inv.lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                (f[1] == name).then(|| f[4].to_string())
            })
            .unwrap_or_else(|| panic!("no VM {name}"))
    }

    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.starts {
            let t =
                std::fs::read_to_string(self.path(&format!("sshd-{n}.stderr"))).unwrap_or_default();
            s.push_str(&format!("--- sshd stderr (start {n})\n{t}\n"));
        }
        let calls = std::fs::read_to_string(self.path("calls.log")).unwrap_or_default();
        s.push_str(&format!("--- calls.log\n{calls}"));
        s
    }

    /// The ESXi block of a spec for this sshd: account root, the ECDSA key pinned, the
    /// password inline, guests `vm01`.
    pub fn esxi(&self) -> Esxi {
        Esxi {
            address: "127.0.0.1".parse().expect("ip"),
            port: self.port,
            username: "root".into(),
            password: Some(Secret::inline(PASSWORD.into(), SecretRule::EsxiPassword)),
            private_key: None,
            enabled: true,
            host_key: Some(self.fingerprint()),
            trust_on_first_use: false,
            guests: vec![Name::parse("vm01").expect("name")],
        }
    }

    /// The client key by reference, as `privateKey: {file: ...}`.
    pub fn key_secret(&self) -> Secret {
        Secret::reference(
            RawSecretRef::File(self.path("client_key").display().to_string()),
            SecretRule::SshPrivateKey,
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One line of the doubles' call log.
#[derive(Debug, Clone)]
pub struct Call {
    pub ns: u128,
    pub end: bool,
    pub argv: String,
}

/// The most commands matching `pred` running at once, from start/end lines.
pub fn max_overlap(calls: &[Call], pred: impl Fn(&str) -> bool) -> usize {
    let mut events: Vec<(u128, i32)> = calls
        .iter()
        .filter(|c| pred(&c.argv))
        .map(|c| (c.ns, if c.end { -1 } else { 1 }))
        .collect();
    // At equal times count ends first, so touching intervals do not overlap.
    events.sort();
    let (mut now, mut max) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        max = max.max(now);
    }
    max as usize
}
