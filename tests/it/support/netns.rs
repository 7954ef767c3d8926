//! Network namespaces for tests of more than one host: management servers, nodes and BMCs
//! on a LAN of their own, with addresses that exist only inside the namespaces.
//!
//! - [`Netns`]: one namespace (`hc-<pid>-<n>`, `lo` up), removed on drop with every process
//!   still in it killed; run commands in it ([`Netns::command`], [`Netns::exec`],
//!   [`Netns::ip`]) or library code on a thread that entered it ([`Netns::enter`]).
//! - [`veth`]: a cable between two namespaces; [`Bridge`]: a switch (a namespace holding a
//!   bridge) that namespaces join through veths.
//! - [`require_netns!`]: skips a test (says why, returns) when namespaces cannot be made:
//!   not root, no `ip` (iproute2). CI runs as root, so it does not skip there.
//!
//! Nothing here touches the host's own interfaces: every link is created inside a
//! namespace (`ip -n`), and veth peers are created straight into theirs.

use std::fs::File;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Returns from the test, saying why, when network namespaces cannot be made here.
macro_rules! require_netns {
    () => {
        if let Some(why) = $crate::support::netns::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}
pub(crate) use require_netns;

/// Why namespaces cannot be made here, or `None` when they can (checked once per process).
pub fn unavailable() -> Option<&'static str> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("network namespace tests need root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => {}
            _ => return Some("network namespace tests need `ip` (Debian package iproute2)".into()),
        }
        remove_leftovers();
        let probe = format!("hc-{}-probe", std::process::id());
        let add = run(Command::new("ip").args(["netns", "add", &probe]));
        let _ = run(Command::new("ip").args(["netns", "del", &probe]));
        match add {
            Ok(_) => None,
            Err(e) => Some(format!("`ip netns add` does not work here: {e}")),
        }
    })
    .as_deref()
}

/// Namespaces `hc-<pid>-<n>` left by test processes that are gone (killed before their
/// drops ran).
fn remove_leftovers() {
    let Ok(list) = run(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("hc-")
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            kill_all_in(name);
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// Runs a command to its end: its stdout, or what went wrong with its stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn kill_all_in(name: &str) {
    if let Ok(pids) = run(Command::new("ip").args(["netns", "pids", name])) {
        for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2); a process that is already gone is no error here.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// One network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up. Panics with the reason if it cannot be made (call
    /// [`require_netns!`] first).
    pub fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "hc-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name])).unwrap_or_else(|e| panic!("{e}"));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME program`: add arguments, then spawn or run it. With no PID
    /// namespace of its own, `ip` execs the program in place: a spawned child's pid is the
    /// program's.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `args` (program first) in the namespace to its end.
    pub fn exec(&self, args: &[&str]) -> Output {
        let (program, rest) = args.split_first().expect("a program to run");
        self.command(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {args:?} in {}: {e}", self.name))
    }

    /// `ip -n NAME args`, which must succeed; its stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `f` on a new thread that entered this namespace (setns(2), CLONE_NEWNET) and
    /// returns what it returns; a panic in `f` is this call's. Sockets opened in `f` stay in
    /// the namespace wherever they are used afterwards, and threads `f` starts (a tokio
    /// runtime's) are in it too. Only the network namespace changes: `/sys` and `/proc`
    /// paths other than `/proc/sys/net` and `/proc/net` still show the host's.
    pub fn enter<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                // SAFETY: setns(2) on a descriptor we own; it changes only this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Sets a sysctl of this namespace (`net.ipv4.conf.all.arp_accept`), through
    /// `/proc/sys` as seen from inside.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.enter(|| std::fs::write(&path, value))
            .unwrap_or_else(|e| panic!("{}: write {path}: {e}", self.name));
    }

    /// The MAC of `iface` here, as `ip` prints it (`aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self, iface: &str) -> String {
        let out = self.ip(&["-br", "link", "show", "dev", iface]);
        out.split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no MAC in {out:?}"))
            .to_string()
    }

    /// The link-layer address of this namespace's neighbor entry for `addr` on `iface`, if
    /// it has one with an address (`ip neigh`).
    pub fn neighbor(&self, iface: &str, addr: IpAddr) -> Option<String> {
        let out = self.ip(&["neigh", "show", &addr.to_string(), "dev", iface]);
        let words: Vec<&str> = out.split_whitespace().collect();
        words
            .iter()
            .position(|w| *w == "lladdr")
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: {e}");
        }
    }
}

/// A veth pair: `a_if` in `a`, `b_if` in `b`, both up, each with its address (CIDR) if
/// given.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr_cidr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr_cidr: Option<&str>,
) {
    a.ip(&[
        "link", "add", "name", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, iface, cidr) in [(a, a_if, a_addr_cidr), (b, b_if, b_addr_cidr)] {
        if let Some(cidr) = cidr {
            // nodad: an IPv6 address is usable at once, not tentative for a second.
            let mut args = vec!["addr", "add", cidr, "dev", iface];
            if cidr.contains(':') {
                args.push("nodad");
            }
            ns.ip(&args);
        }
        ns.ip(&["link", "set", "dev", iface, "up"]);
    }
}

/// A switch: a namespace holding bridge `br0`, which namespaces join through veths.
pub struct Bridge {
    ns: Netns,
    ports: AtomicUsize,
}

impl Bridge {
    pub fn new() -> Bridge {
        let ns = Netns::new();
        ns.ip(&["link", "add", "name", "br0", "type", "bridge"]);
        ns.ip(&["link", "set", "dev", "br0", "up"]);
        Bridge {
            ns,
            ports: AtomicUsize::new(0),
        }
    }

    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Plugs `host` in: a veth whose end `iface` (up, with `addr_cidr` if given) is in
    /// `host` and whose other end is a port of the bridge.
    pub fn join(&self, host: &Netns, iface: &str, addr_cidr: Option<&str>) {
        let port = format!("port{}", self.ports.fetch_add(1, Ordering::Relaxed));
        veth(&self.ns, &port, None, host, iface, addr_cidr);
        self.ns.ip(&["link", "set", "dev", &port, "master", "br0"]);
    }
}

/// Waits (bounded, polling) until `pred` holds; panics with `what` and the last state seen.
pub fn wait_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    pred: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = probe();
        if pred(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
