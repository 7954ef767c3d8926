//! A real net-snmp `snmpd` on 127.0.0.1 serving switched PDUs emulated by
//! `pdu_emulator.py` (`pass_persist`), for tests/snmp.rs and benches/pdu.rs.
//!
//! [`Snmpd::start`] writes `snmpd.conf` and the emulator's config into a fresh temporary
//! directory, picks a free UDP port, starts `snmpd -f -C -c CONF -Lf LOG -p PIDFILE`, and
//! waits (bounded) until every emulated view answers `snmpget`. It can pause (SIGSTOP),
//! resume and kill the agent, reads outlets with the real `snmpget`/`snmpset`, parses the
//! emulator's SET log, and stops the agent when dropped. Every wait polls against a
//! deadline. A missing `snmpd` is a test failure, never a skip.

#![allow(dead_code)] // not every user needs every helper

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The read-write community the tests' backend uses.
pub const COMMUNITY: &str = "haconnTest01";
/// A read-only community: SETs with it are refused with noAccess.
pub const RO_COMMUNITY: &str = "haconnRead01";
/// Outlets per emulated view.
pub const OUTLETS: u16 = 24;
/// How long the agent may take to answer its first request.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

pub const SNMPD: &str = "/usr/sbin/snmpd";
pub const PYTHON: &str = "/usr/bin/python3";

/// IBM firmware strings: the sLEN one moves the outlet column from 11 to 13.
pub const IBM_FIRMWARE: &str = "OPPF_v1.3.2";
pub const IBM_SLEN_FIRMWARE: &str = "OPDP_sLEN_v1.4.0";

/// How an emulated PDU behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a switched outlet stays between states.
    pub transient_ms: u64,
    pub ibm_firmware: String,
    pub apc_firmware: String,
    /// The agent's sysObjectID (fence_apc_snmp picks its OIDs from it).
    pub sys_object_id: String,
    /// Run in this network namespace (`Netns::name()`) at this address, port 161;
    /// `None`: on 127.0.0.1 at a port the kernel picks.
    pub netns: Option<(String, Ipv4Addr)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            transient_ms: 0,
            ibm_firmware: IBM_FIRMWARE.into(),
            apc_firmware: "v6.8.2".into(),
            // APC rack PDU (fence_apc_snmp: ApcRPDU).
            sys_object_id: ".1.3.6.1.4.1.318.1.3.4.5".into(),
            netns: None,
        }
    }
}

/// Each emulated MIB with a cell to read for readiness.
pub const VIEW_PROBES: [(&str, &str); 4] = [
    ("ibm", ".1.3.6.1.4.1.2.6.223.8.2.1.0"),
    ("apc", ".1.3.6.1.4.1.318.1.1.12.3.1.4.0"),
    ("eaton", ".1.3.6.1.4.1.534.6.6.6.1.2.2.1.3.0"),
    ("raritan", ".1.3.6.1.4.1.13742.6.4.1.2.1.3.1.1"),
];

/// One accepted SET, as the emulator logged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetLine {
    pub epoch_ns: u128,
    pub view: String,
    pub outlet: u16,
    pub value: i64,
}

/// A running snmpd with the PDU emulator behind it.
pub struct Snmpd {
    dir: TempDir,
    child: Option<Child>,
    pub port: u16,
    paused: bool,
    /// The namespace and address it runs at, if not 127.0.0.1.
    netns: Option<(String, Ipv4Addr)>,
}

/// A command, run in `netns` when there is one (`ip netns exec`).
fn command_in(netns: &Option<(String, Ipv4Addr)>, program: &str) -> Command {
    match netns {
        None => Command::new(program),
        Some((ns, _)) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}

fn emulator() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/snmp/pdu_emulator.py")
}

/// A UDP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port");
    s.local_addr().expect("local addr").port()
}

impl Snmpd {
    pub fn start(opts: Options) -> Snmpd {
        for tool in [SNMPD, PYTHON, "/usr/bin/snmpget", "/usr/bin/snmpset"] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: install the snmpd, snmp and python3 packages to run the SNMP tests"
            );
        }
        let mut dir = tempfile::Builder::new()
            .prefix("haconn-snmpd-")
            .tempdir()
            .expect("temporary directory");
        let emu_cfg = dir.path().join("emulator.json");
        let cfg = serde_json::json!({
            "log": dir.path().join("sets.log"),
            "outlets": OUTLETS,
            "transient_ms": opts.transient_ms,
            "ibm_firmware": opts.ibm_firmware,
            "apc_firmware": opts.apc_firmware,
        });
        std::fs::write(&emu_cfg, cfg.to_string()).expect("write the emulator config");
        // Another test may take the port between our probe and snmpd's bind: try again.
        let mut last = String::new();
        for _ in 0..5 {
            let mut d = Snmpd {
                port: if opts.netns.is_some() {
                    161
                } else {
                    free_port()
                },
                dir,
                child: None,
                paused: false,
                netns: opts.netns.clone(),
            };
            match d.spawn(&opts, &emu_cfg) {
                Ok(()) => return d,
                Err(e) => {
                    last = e;
                    d.kill();
                    dir = d.into_dir();
                }
            }
        }
        panic!("snmpd did not start: {last}");
    }

    fn into_dir(mut self) -> TempDir {
        self.kill();
        let dir = tempfile::Builder::new()
            .prefix("haconn-snmpd-unused-")
            .tempdir()
            .expect("temporary directory");
        std::mem::replace(&mut self.dir, dir)
    }

    fn spawn(&mut self, opts: &Options, emu_cfg: &Path) -> Result<(), String> {
        let conf = self.path("snmpd.conf");
        let emu = format!("{PYTHON} {} {}", emulator().display(), emu_cfg.display());
        let (ip, source) = match &self.netns {
            None => (Ipv4Addr::LOCALHOST.to_string(), "127.0.0.1".to_string()),
            // Inside a namespace of the test's own: any source there.
            Some((_, ip)) => (ip.to_string(), "default".to_string()),
        };
        let mut text = format!(
            "agentAddress udp:{ip}:{port}\n\
             rwcommunity {COMMUNITY} {source}\n\
             rocommunity {RO_COMMUNITY} {source}\n\
             master no\n\
             dontLogTCPWrappersConnects yes\n\
             sysObjectID {sys}\n",
            port = self.port,
            sys = opts.sys_object_id,
        );
        for subtree in [
            ".1.3.6.1.4.1.2.6.223",
            ".1.3.6.1.4.1.318",
            ".1.3.6.1.4.1.534",
            ".1.3.6.1.4.1.13742",
        ] {
            text.push_str(&format!("pass_persist {subtree} {emu}\n"));
        }
        std::fs::write(&conf, text).expect("write snmpd.conf");
        let child = command_in(&self.netns, SNMPD)
            .args(["-f", "-C", "-c"])
            .arg(&conf)
            .arg("-Lf")
            .arg(self.path("snmpd.log"))
            .arg("-p")
            .arg(self.path("snmpd.pid"))
            .env("SNMP_PERSISTENT_DIR", self.path("persist"))
            .env("MIBS", "")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {SNMPD}: {e}"))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let probes: Vec<&str> = VIEW_PROBES.iter().map(|(_, o)| *o).collect();
        loop {
            if self.snmpget(RO_COMMUNITY, &probes, 0.3).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned");
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!("snmpd exited ({status})\n{}", self.diagnostics()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "snmpd did not answer within {READY_TIMEOUT:?}\n{}",
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn addr(&self) -> SocketAddr {
        let ip = self
            .netns
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, |(_, ip)| *ip);
        SocketAddr::new(IpAddr::V4(ip), self.port)
    }

    pub fn target(&self) -> String {
        self.addr().to_string()
    }

    /// Environment for net-snmp's command-line tools: no MIB loading, no writes outside
    /// the temporary directory.
    pub fn tool_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("MIBS", String::new()),
            (
                "SNMP_PERSISTENT_DIR",
                self.path("tools").display().to_string(),
            ),
        ]
    }

    /// `snmpget -Oqv` of `oids` (one try of `timeout` seconds): the values, one per OID.
    pub fn snmpget(
        &self,
        community: &str,
        oids: &[&str],
        timeout: f64,
    ) -> Result<Vec<String>, String> {
        let out = command_in(&self.netns, "/usr/bin/snmpget")
            .args([
                "-v2c",
                "-c",
                community,
                "-r",
                "0",
                "-t",
                &timeout.to_string(),
                "-Oqv",
                "-On",
            ])
            .arg(self.target())
            .args(oids)
            .envs(self.tool_env())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run snmpget: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
        }
        let values: Vec<String> = stdout
            .lines()
            .map(|l| l.trim_matches('"').to_string())
            .collect();
        if values.len() != oids.len() || values.iter().any(|v| v.starts_with("No Such")) {
            return Err(stdout);
        }
        Ok(values)
    }

    /// One integer cell, read with the real `snmpget` (the tests' independent oracle).
    pub fn get_int(&self, oid: &str) -> i64 {
        let v = self
            .snmpget(RO_COMMUNITY, &[oid], 2.0)
            .unwrap_or_else(|e| panic!("snmpget {oid}: {e}\n{}", self.diagnostics()));
        v[0].parse()
            .unwrap_or_else(|_| panic!("{oid} is not an integer: {v:?}"))
    }

    /// `snmpset OID i VALUE` with the real tool.
    pub fn set_int(&self, oid: &str, value: i64) {
        let out = command_in(&self.netns, "/usr/bin/snmpset")
            .args(["-v2c", "-c", COMMUNITY, "-r", "0", "-t", "2"])
            .arg(self.target())
            .args([oid, "i", &value.to_string()])
            .envs(self.tool_env())
            .stdin(Stdio::null())
            .output()
            .expect("run snmpset");
        assert!(
            out.status.success(),
            "snmpset {oid} i {value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every SET accepted so far, in order.
    pub fn sets(&self) -> Vec<SetLine> {
        let text = std::fs::read_to_string(self.path("sets.log")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 4, "bad SET log line {l:?}");
                SetLine {
                    epoch_ns: f[0].parse().expect("epoch ns"),
                    view: f[1].to_string(),
                    outlet: f[2].parse().expect("outlet"),
                    value: f[3].parse().expect("value"),
                }
            })
            .collect()
    }

    /// Waits (bounded) until the SET log holds at least `n` lines.
    pub fn wait_sets(&self, n: usize, timeout: Duration) -> Vec<SetLine> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.sets();
            if s.len() >= n || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("snmpd running").id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we have not reaped.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// Freezes the agent (SIGSTOP): requests queue in its socket, unanswered.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        self.paused = true;
    }

    /// Resumes it (SIGCONT): it answers what queued up, to whoever still listens.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
        self.paused = false;
    }

    /// SIGKILL and reap; the emulators exit on their closed stdin.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                // SAFETY: as in `signal`.
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.path("snmpd.log")).unwrap_or_default();
        let conf = std::fs::read_to_string(self.path("snmpd.conf")).unwrap_or_default();
        format!("--- snmpd.conf\n{conf}--- snmpd.log\n{log}")
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        self.kill();
    }
}
