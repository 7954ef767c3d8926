//! Real BMCs for tests and benchmarks: OpenIPMI's `ipmi_sim` on 127.0.0.1 ports, or at
//! an address inside a network namespace (`SimConfig::in_netns`).
//!
//! [`SimBmc`] writes a `lan.conf` and an `.emu` file into a fresh temporary directory,
//! picks a free port (unless given one), starts `ipmi_sim`, waits (bounded) until it answers
//! an RMCP presence ping, and kills it when dropped. It can be paused (SIGSTOP), resumed and
//! killed.
//! Two observers record what the BMC was asked to do, each line `<CLOCK_REALTIME ns> ...`:
//! - `chassis.log`, by the `chassis_control` script ipmi_sim runs for power and reset
//!   (`<mc> set power 0|1`, `<mc> set reset 1`); the script also keeps the power state it
//!   reports to Get Chassis Status;
//! - `nmi.log`, by `nmi_module.c` (this directory), a plugin loaded with `loadlib`: ipmi_sim
//!   itself answers "pulse diagnostic interrupt" with 0xCC, the module records it as `nmi`
//!   and answers 0x00 (other Chassis Control requests go on to ipmi_sim's own handler).
//!
//! With `SimConfig::kill_on_fence`, a hard reset or power off also does what it would do to
//! a real server's processes: the chassis script kills (SIGKILL) the process whose pid is in
//! the given file, and records it in `fence.log` (`chassis.log` keeps its lines).
//!
//! The module is compiled once per process with `cc` under `CARGO_TARGET_TMPDIR`.
//! A missing `ipmi_sim`, `cc` or OpenIPMI headers fails the test with what to install.

#![allow(dead_code)] // not every test uses every helper

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use haconn::spec::model::Bmc as BmcSpec;
use haconn::spec::secret::{Secret, SecretRule};
use tempfile::TempDir;

/// The account every simulated BMC has.
pub const USER: &str = "admin";
pub const PASSWORD: &str = "labpassw0rd";
/// How long ipmi_sim may take to answer its first ping.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

const MODULE_SOURCE: &str = include_str!("nmi_module.c");

const CHASSIS_SCRIPT: &str = r#"#!/bin/sh
# Called by ipmi_sim as: <script> <mc> get NAME... | set NAME VALUE...
dir=$(dirname "$0")
mc=$1; op=$2; shift 2
if [ "$op" = get ]; then
  for n in "$@"; do
    case $n in
      power) echo "power:$(cat "$dir/power" 2>/dev/null || echo 1)" ;;
      *) echo "$n:0" ;;
    esac
  done
  exit 0
fi
echo "$(date +%s%N) $mc $op $*" >> "$dir/chassis.log"
while [ $# -ge 2 ]; do
  case $1 in power) echo "$2" > "$dir/power" ;; esac
  case "$1 $2" in
    "reset 1"|"power 0")
      if [ -f "$dir/fence.pidfile" ]; then
        pidfile=$(cat "$dir/fence.pidfile")
        pid=$(cat "$pidfile" 2>/dev/null)
        if [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; then
          echo "$(date +%s%N) killed $pid" >> "$dir/fence.log"
        else
          echo "$(date +%s%N) nothing killed (pid file $pidfile: '$pid')" >> "$dir/fence.log"
        fi
      fi ;;
  esac
  shift 2
done
exit 0
"#;

fn require(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed: these tests need a real BMC simulator (Debian package `{package}`)"
    );
}

/// The NMI module, compiled once per process.
pub fn module() -> &'static Path {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(|| {
        require("ipmi_sim", "openipmi");
        require("cc", "gcc");
        assert!(
            Path::new("/usr/include/OpenIPMI/serv.h").is_file(),
            "OpenIPMI headers are missing: install the Debian package `libopenipmi-dev` (the \
             ipmi_sim test module is built against them)"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ipmi-sim");
        std::fs::create_dir_all(&dir).expect("create the module directory");
        let src = dir.join(format!("nmi_module-{}.c", std::process::id()));
        let out = dir.join(format!("nmi_module-{}.so", std::process::id()));
        std::fs::write(&src, MODULE_SOURCE).expect("write the module source");
        let run = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("run cc");
        assert!(
            run.status.success(),
            "compiling the ipmi_sim NMI module failed:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    })
}

/// One `ipmi_sim` on `address`:`port` (127.0.0.1 unless configured).
pub struct SimBmc {
    dir: TempDir,
    child: Option<Child>,
    pub address: Ipv4Addr,
    pub port: u16,
    /// The network namespace it runs in (by name), if not the test's own.
    netns: Option<String>,
    stopped: bool,
}

/// How to set one up.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where it listens: a 127.0.0.0/8 address, or with `netns` an address of that
    /// namespace.
    pub address: Ipv4Addr,
    /// Its port; `None`: one the kernel picks.
    pub port: Option<u16>,
    /// The network namespace to run in (`Netns::name()`), `None` for the test's own.
    pub netns: Option<String>,
    /// A hard reset or power off kills (SIGKILL) the process whose pid is in this file.
    pub fence_pidfile: Option<PathBuf>,
    /// Accounts (user, password); each allows `sessions_per_user` sessions.
    pub users: Vec<(String, String)>,
    pub sessions_per_user: u32,
    /// The NMI module keeps the power state (no script per status query); benchmarks.
    pub module_power: bool,
    /// The BMC key (Kg), when the channel requires one.
    pub kg: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            address: Ipv4Addr::LOCALHOST,
            port: None,
            netns: None,
            fence_pidfile: None,
            users: vec![(USER.into(), PASSWORD.into())],
            sessions_per_user: 10,
            module_power: false,
            kg: None,
        }
    }
}

impl SimConfig {
    /// Listen at `address`:`port` in network namespace `netns` (`Netns::name()`); the
    /// address must be one of that namespace's.
    pub fn in_netns(mut self, netns: &str, address: Ipv4Addr, port: u16) -> SimConfig {
        self.netns = Some(netns.to_string());
        self.address = address;
        self.port = Some(port);
        self
    }

    /// A hard reset or power off also kills (SIGKILL) the process whose pid is in
    /// `pidfile`, read at that moment: the fencing of a management server's daemon.
    pub fn kill_on_fence(mut self, pidfile: &Path) -> SimConfig {
        self.fence_pidfile = Some(pidfile.to_path_buf());
        self
    }
}

fn free_port(netns: Option<&str>, address: Ipv4Addr) -> u16 {
    in_netns(netns, || {
        UdpSocket::bind((address, 0)).and_then(|s| s.local_addr())
    })
    .expect("an ephemeral port")
    .port()
}

/// Runs `f` in network namespace `netns` (on a thread that entered it), or here. (The
/// tests' `support::netns` does the same; this file is also compiled into benches/ipmi.rs,
/// which has no such module.)
fn in_netns<R: Send>(netns: Option<&str>, f: impl FnOnce() -> R + Send) -> R {
    use std::os::fd::AsRawFd;
    let Some(name) = netns else { return f() };
    let path = format!("/run/netns/{name}");
    let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

impl SimBmc {
    /// A simulator with the one default account.
    pub fn start() -> SimBmc {
        SimBmc::with(SimConfig::default())
    }

    pub fn with(config: SimConfig) -> SimBmc {
        let module = module();
        // A port picked this way can be taken again before ipmi_sim binds it: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            match SimBmc::try_start(&config, module) {
                Ok(sim) => return sim,
                Err(e) => last = e,
            }
        }
        panic!("ipmi_sim did not start: {last}");
    }

    fn try_start(config: &SimConfig, module: &Path) -> Result<SimBmc, String> {
        let dir = tempfile::Builder::new()
            .prefix("haconn-ipmisim-")
            .tempdir()
            .expect("temporary directory");
        let p = |rel: &str| dir.path().join(rel);
        let netns = config.netns.as_deref();
        let address = config.address;
        assert!(
            address.is_loopback() || netns.is_some(),
            "simulated BMCs listen on loopback or in a network namespace only"
        );
        assert!(
            !(config.module_power && config.fence_pidfile.is_some()),
            "with module_power the chassis script is not run: it cannot kill on fencing"
        );
        let port = config.port.unwrap_or_else(|| free_port(netns, address));
        let script = p("chassis.sh");
        std::fs::write(&script, CHASSIS_SCRIPT).expect("write the chassis script");
        set_mode(&script, 0o755);
        std::fs::write(p("power"), "1\n").expect("write the power state");
        std::fs::write(p("nmi.log"), "").expect("create nmi.log");
        std::fs::write(p("chassis.log"), "").expect("create chassis.log");
        if let Some(pidfile) = &config.fence_pidfile {
            std::fs::write(p("fence.pidfile"), pidfile.as_os_str().as_encoded_bytes())
                .expect("write the fence pid file's path");
            std::fs::write(p("fence.log"), "").expect("create fence.log");
        }
        let mut conf = format!(
            "name \"haconn-test\"\n\
             set_working_mc 0x20\n\
             startlan 1\n\
             \x20 addr {address} {port}\n\
             \x20 priv_limit admin\n\
             \x20 allowed_auths_callback none md5 straight\n\
             \x20 allowed_auths_user none md5 straight\n\
             \x20 allowed_auths_operator none md5 straight\n\
             \x20 allowed_auths_admin none md5 straight\n\
             \x20 guid a123456789abcdefa123456789abcdef\n\
             {}\
             endlan\n\
             chassis_control \"{} 0x20\"\n",
            config
                .kg
                .as_ref()
                .map_or(String::new(), |k| format!("  bmc_key \"{k}\"\n")),
            script.display()
        );
        for (i, (user, password)) in config.users.iter().enumerate() {
            conf.push_str(&format!(
                "user {} true \"{user}\" \"{password}\" admin {} none md5 straight\n",
                i + 2,
                config.sessions_per_user
            ));
        }
        conf.push_str(&format!(
            "loadlib \"{}\" \"log={}{}\"\n",
            module.display(),
            p("nmi.log").display(),
            if config.module_power {
                " power=module"
            } else {
                ""
            }
        ));
        std::fs::write(p("lan.conf"), conf).expect("write lan.conf");
        std::fs::write(
            p("bmc.emu"),
            "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n",
        )
        .expect("write bmc.emu");
        std::fs::create_dir_all(p("state")).expect("state dir");
        let out = std::fs::File::create(p("ipmi_sim.out")).expect("output file");
        let err = out.try_clone().expect("output file");
        // `ip netns exec` execs ipmi_sim in place: the child's pid is ipmi_sim's.
        let mut command = match netns {
            Some(name) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", name, "ipmi_sim"]);
                c
            }
            None => Command::new("ipmi_sim"),
        };
        let child = command
            .arg("-c")
            .arg(p("lan.conf"))
            .arg("-f")
            .arg(p("bmc.emu"))
            .arg("-s")
            .arg(p("state"))
            .args(["-n", "-p"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run ipmi_sim: {e}"))?;
        let mut sim = SimBmc {
            dir,
            child: Some(child),
            address,
            port,
            netns: config.netns.clone(),
            stopped: false,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if sim.ping(Duration::from_millis(100)) {
                return Ok(sim);
            }
            if let Some(status) = sim.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                sim.child = None;
                return Err(format!("it exited ({status}):\n{}", sim.output()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no answer on port {port} within {READY_TIMEOUT:?}:\n{}",
                    sim.output()
                ));
            }
        }
    }

    /// Whether the simulator answers an RMCP presence ping within `wait`.
    pub fn ping(&self, wait: Duration) -> bool {
        in_netns(self.netns.as_deref(), || self.ping_here(wait))
    }

    fn ping_here(&self, wait: Duration) -> bool {
        let from = if self.address.is_loopback() {
            Ipv4Addr::LOCALHOST
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        let Ok(s) = UdpSocket::bind((from, 0)) else {
            return false;
        };
        if s.connect((self.address, self.port)).is_err() || s.set_read_timeout(Some(wait)).is_err()
        {
            return false;
        }
        let ping = [
            0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x42, 0x00, 0x00,
        ];
        if s.send(&ping).is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(s.recv(&mut buf), Ok(n) if n >= 9 && buf[8] == 0x40)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// What ipmi_sim printed, for failure messages.
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.path("ipmi_sim.out")).unwrap_or_default()
    }

    /// The spec of this BMC with the default account.
    pub fn spec(&self) -> BmcSpec {
        self.spec_as(USER, PASSWORD)
    }

    pub fn spec_as(&self, user: &str, password: &str) -> BmcSpec {
        BmcSpec {
            address: IpAddr::V4(self.address),
            port: self.port,
            username: user.into(),
            password: Secret::inline(password.into(), SecretRule::BmcPassword),
            kg: None,
            cipher_suites: haconn::spec::model::CipherSuite::DEFAULT.to_vec(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("ipmi_sim is running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// SIGSTOP: the simulator stops answering; datagrams queue in its socket.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.stopped = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.stopped = false;
    }

    /// Notes that the test resumed the simulator itself (from another thread).
    pub fn resumed(&mut self) {
        self.stopped = false;
    }

    /// SIGKILL, and reap: the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the chassis script did to the fenced process (`kill_on_fence`): `(ns, "killed
    /// PID")` or `(ns, "nothing killed (...)")`, in order.
    pub fn fence_kills(&self) -> Vec<(u128, String)> {
        records(&self.path("fence.log"))
    }

    /// NMI record times (ns since the epoch, CLOCK_REALTIME), in order.
    pub fn nmis(&self) -> Vec<u128> {
        records(&self.path("nmi.log"))
            .into_iter()
            .filter(|(_, what)| what == "nmi")
            .map(|(t, _)| t)
            .collect()
    }

    /// Everything the module recorded: `nmi`, `chassis 0xNN` (other Chassis Control
    /// requests), `set power|reset 0xNN` (when it keeps the power state).
    pub fn module_records(&self) -> Vec<(u128, String)> {
        records(&self.path("nmi.log"))
    }

    /// What the chassis script was asked to set: `(ns, "set power 0")` etc.
    pub fn chassis(&self) -> Vec<(u128, String)> {
        records(&self.path("chassis.log"))
            .into_iter()
            .map(|(t, rest)| {
                // "<mc> set ..." → "set ..."
                let rest = rest
                    .split_once(' ')
                    .map_or(rest.clone(), |(_, r)| r.to_string());
                (t, rest)
            })
            .collect()
    }

    /// Times of hard resets carried out (by the chassis script, or by the module when it
    /// keeps the power state).
    pub fn resets(&self) -> Vec<u128> {
        let mut t: Vec<u128> = self
            .chassis()
            .into_iter()
            .filter(|(_, a)| a == "set reset 1")
            .chain(
                self.module_records()
                    .into_iter()
                    .filter(|(_, a)| a == "set reset 0x01"),
            )
            .map(|(t, _)| t)
            .collect();
        t.sort_unstable();
        t
    }

    /// Powers the server off through this BMC with ipmitool (as a power button, a PDU or a
    /// fault would), behind the daemon's back.
    pub fn power_off_by_ipmitool(&self) {
        let off = std::process::Command::new("ipmitool")
            .args([
                "-I",
                "lanplus",
                "-C",
                "3",
                "-H",
                &self.address.to_string(),
                "-p",
            ])
            .arg(self.port.to_string())
            .args(["-U", USER, "-P", PASSWORD, "chassis", "power", "off"])
            .output()
            .expect("run ipmitool (package ipmitool)");
        assert!(
            off.status.success(),
            "{}",
            String::from_utf8_lossy(&off.stderr)
        );
    }

    /// The power state the script reports (`true` = on).
    pub fn powered(&self) -> bool {
        std::fs::read_to_string(self.path("power"))
            .map(|s| s.trim() != "0")
            .unwrap_or(true)
    }

    /// Waits (bounded) until `pred` holds of this simulator.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&SimBmc) -> bool) {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}\nnmi.log:\n{}\nchassis.log:\n{}\nipmi_sim:\n{}",
                std::fs::read_to_string(self.path("nmi.log")).unwrap_or_default(),
                std::fs::read_to_string(self.path("chassis.log")).unwrap_or_default(),
                self.output()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for SimBmc {
    fn drop(&mut self) {
        if self.stopped && self.child.is_some() {
            self.resume();
        }
        self.kill();
    }
}

/// `<ns> <rest>` lines of a record file (a partly written last line is left out).
fn records(path: &Path) -> Vec<(u128, String)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete
        .lines()
        .filter_map(|l| {
            let (t, rest) = l.split_once(' ')?;
            Some((t.parse().ok()?, rest.to_string()))
        })
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Now, as the NMI module stamps it (ns since the epoch).
pub fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_nanos()
}

/// Edits the lab spec of tests/resetpath_support.rs (its `Lab::start_real`) so that
/// labnode01's and labnode02's BMCs are these simulators (same account and password).
/// A simulator at 127.0.0.`last_octet` with the default account.
/// The lab spec's entry of `labnode0{i+1}`, a cluster node whose BMC is `bmc` (as `USER`
/// with `password`).
pub fn lab_server(i: usize, bmc: &SimBmc, password: &str) -> String {
    format!(
        "  - name: labnode0{n}\n    bmc: {{address: {a}, port: {p}, username: {USER}, password: {password}}}\n    cluster: true\n",
        n = i + 1,
        a = bmc.address,
        p = bmc.port,
    )
}

pub fn sim_at(last_octet: u8) -> SimBmc {
    SimBmc::with(SimConfig {
        address: std::net::Ipv4Addr::new(127, 0, 0, last_octet),
        ..SimConfig::default()
    })
}

pub fn on_sims(node1: &SimBmc, node2: &SimBmc) -> impl FnOnce(String) -> String {
    assert_ne!(
        node1.address, node2.address,
        "the spec needs a distinct BMC address per server"
    );
    let (a1, a2) = (
        format!("{{address: {}, port: {}, ", node1.address, node1.port),
        format!("{{address: {}, port: {}, ", node2.address, node2.port),
    );
    move |spec: String| {
        for from in ["{address: 127.0.0.11, ", "{address: 127.0.0.12, "] {
            assert_eq!(
                spec.matches(from).count(),
                1,
                "the lab spec changed: {from}"
            );
        }
        assert!(
            USER == "admin" && PASSWORD == "labpassw0rd",
            "the lab spec's account"
        );
        spec.replace("{address: 127.0.0.11, ", &a1)
            .replace("{address: 127.0.0.12, ", &a2)
    }
}

/// A UDP relay between the client and a simulator, on a loopback address of its own and a
/// kernel-chosen port: a lossy or hostile network in between. It forwards every datagram
/// (to the simulator and back to the last client address) except what it is told to drop
/// or forge, and it logs what it saw. `strict` makes it drop an in-session request whose
/// session sequence number it has already forwarded, as a BMC with a replay check does.
pub struct Relay {
    pub address: Ipv4Addr,
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<RelayState>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct RelayState {
    client: Option<std::net::SocketAddr>,
    strict: bool,
    drop_requests: usize,
    drop_replies: usize,
    forge_refusals: usize,
    /// Session sequence numbers of the in-session requests forwarded (strict mode).
    forwarded: std::collections::HashSet<[u8; 8]>,
    log: Vec<Seen>,
}

/// What the relay saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// An Open Session Request proposing this cipher suite (3 or 17; 0 for another).
    OpenSession { suite: u8 },
    /// An in-session request with this session sequence number, and what became of it.
    Request { seq: u32, forwarded: bool },
    /// An in-session reply, and whether it was passed on.
    Reply { forwarded: bool },
    /// A refusal the relay sent in the BMC's name.
    Forged,
}

const IN_SESSION: u8 = 0xc0;
const OPEN_SESSION_REQUEST: u8 = 0x10;

impl Relay {
    /// A relay in front of `sim`, listening on `address` (a 127.0.0.0/8 address).
    pub fn start(sim: &SimBmc, address: Ipv4Addr) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        assert!(address.is_loopback(), "the relay listens on loopback only");
        let front = UdpSocket::bind((address, 0)).expect("bind the relay's front");
        let back = UdpSocket::bind((address, 0)).expect("bind the relay's back");
        back.connect((sim.address, sim.port))
            .expect("connect to the simulator");
        let tick = Some(Duration::from_millis(20));
        front.set_read_timeout(tick).expect("timeout");
        back.set_read_timeout(tick).expect("timeout");
        let port = front.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(RelayState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let to_bmc = {
            let (front, back) = (
                front.try_clone().expect("clone"),
                back.try_clone().expect("clone"),
            );
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    let p = &buf[..n];
                    let mut st = state.lock().unwrap();
                    st.client = Some(from);
                    if n > 28 && p[5] == OPEN_SESSION_REQUEST {
                        let suite = match p[28] {
                            0x01 => 3,
                            0x03 => 17,
                            _ => 0,
                        };
                        st.log.push(Seen::OpenSession { suite });
                        if st.forge_refusals > 0 {
                            st.forge_refusals -= 1;
                            st.log.push(Seen::Forged);
                            // The short refusal ipmi_sim sends: the tag, then the status.
                            let forged = haconn::backend::ipmi::wire::outside_session(
                                haconn::backend::ipmi::wire::Payload::OpenSessionResponse,
                                &[p[16], 0x11],
                            );
                            let _ = front.send_to(&forged, from);
                            continue;
                        }
                    } else if n >= 16 && p[5] & IN_SESSION == IN_SESSION {
                        let id: [u8; 8] = p[6..14].try_into().expect("8 bytes");
                        let seq = u32::from_le_bytes(p[10..14].try_into().expect("4 bytes"));
                        let replay = st.strict && !st.forwarded.insert(id);
                        let lost = !replay && st.drop_requests > 0;
                        if lost {
                            st.drop_requests -= 1;
                            // Never forwarded: a later copy with this number is not a replay.
                            st.forwarded.remove(&id);
                        }
                        let forwarded = !replay && !lost;
                        st.log.push(Seen::Request { seq, forwarded });
                        if !forwarded {
                            continue;
                        }
                    }
                    drop(st);
                    let _ = back.send(p);
                }
            })
        };
        let to_client = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = back.recv(&mut buf) else { continue };
                    let p = &buf[..n];
                    let mut st = state.lock().unwrap();
                    if n >= 16 && p[5] & IN_SESSION == IN_SESSION {
                        let forwarded = st.drop_replies == 0;
                        st.drop_replies = st.drop_replies.saturating_sub(1);
                        st.log.push(Seen::Reply { forwarded });
                        if !forwarded {
                            continue;
                        }
                    }
                    let Some(client) = st.client else { continue };
                    drop(st);
                    let _ = front.send_to(p, client);
                }
            })
        };
        Relay {
            address,
            port,
            state,
            stop,
            threads: vec![to_bmc, to_client],
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut RelayState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// Drop in-session requests whose session sequence number was already forwarded.
    pub fn strict(&self) {
        self.with_state(|s| s.strict = true);
    }

    /// Lose the next `n` in-session requests on their way to the BMC.
    pub fn drop_requests(&self, n: usize) {
        self.with_state(|s| s.drop_requests = n);
    }

    /// Lose the next `n` in-session replies on their way back.
    pub fn drop_replies(&self, n: usize) {
        self.with_state(|s| s.drop_replies = n);
    }

    /// Answer the next `n` Open Session Requests with a forged refusal (status 0x11, "no
    /// cipher suite match"), in the BMC's name, instead of forwarding them.
    pub fn forge_refusals(&self, n: usize) {
        self.with_state(|s| s.forge_refusals = n);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.with_state(|s| s.log.clone())
    }

    /// The cipher suites proposed, in order.
    pub fn proposed_suites(&self) -> Vec<u8> {
        self.seen()
            .into_iter()
            .filter_map(|s| match s {
                Seen::OpenSession { suite } => Some(suite),
                _ => None,
            })
            .collect()
    }

    /// `spec` with the BMC's address and port replaced by the relay's.
    pub fn spec(&self, mut spec: BmcSpec) -> BmcSpec {
        spec.address = IpAddr::V4(self.address);
        spec.port = self.port;
        spec
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
