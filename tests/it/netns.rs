//! Hosts on a LAN of their own (network namespaces joined by a bridge, see
//! `support::netns`): the reset path's virtual address moving from one management server
//! to the other (`haconn::pair::addr`) with the LAN following the announcements, and a
//! simulated BMC there whose hard reset kills a management server's process.
//!
//! Every address here (10.250.0.0/24, fd00:250::/64) exists only inside the namespaces.
//! The receivers set `net.ipv4.conf.all.arp_accept=1`: with it Linux *creates* a neighbor
//! entry from a gratuitous ARP (without it, it only updates an entry it already has).

use crate::support::ipmi::{SimBmc, SimConfig};
use crate::support::netns::{Bridge, Netns, require_netns, veth, wait_until};

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use haconn::backend::ipmi::IpmiBmc;
use haconn::backend::{Bmc, PowerState};
use haconn::pair::addr::{self, Added, AddrError, Interface};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 0x100);
const PREFIX: u8 = 24;
const PREFIX6: u8 = 64;
/// Generous: the machine may be loaded; every wait ends as soon as its condition holds.
const WAIT: Duration = Duration::from_secs(20);

/// Runs `make()`'s future in `ns`, on a current-thread runtime of a thread that entered it.
fn in_ns<F, R>(ns: &Netns, make: impl FnOnce() -> F + Send) -> R
where
    F: Future<Output = R>,
    R: Send,
{
    ns.enter(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(make())
    })
}

/// Three hosts (two management servers and a node) on one switch: `lan0` in each, with
/// 10.250.0.N/24 and fd00:250::N/64 (N = 1, 2, 3).
struct Lan {
    _switch: Bridge,
    hosts: [Netns; 3],
}

fn lan() -> Lan {
    let switch = Bridge::new();
    let hosts = [Netns::new(), Netns::new(), Netns::new()];
    for (n, host) in (1..).zip(&hosts) {
        host.sysctl("net.ipv4.conf.all.arp_accept", "1");
        switch.join(host, "lan0", Some(&format!("10.250.0.{n}/24")));
        host.ip(&[
            "addr",
            "add",
            &format!("fd00:250::{n}/64"),
            "dev",
            "lan0",
            "nodad",
        ]);
    }
    Lan {
        _switch: switch,
        hosts,
    }
}

fn lan0(ns: &Netns, vip: IpAddr, prefix_len: u8) -> Interface {
    let iface = ns
        .enter(|| addr::find_interface(vip, prefix_len, None))
        .unwrap_or_else(|e| panic!("{}: {e}", ns.name()));
    assert_eq!(iface.name, "lan0");
    iface
}

fn udp(ns: &Netns, at: SocketAddr) -> UdpSocket {
    ns.enter(|| UdpSocket::bind(at))
        .unwrap_or_else(|e| panic!("{}: bind {at}: {e}", ns.name()))
}

/// Sends `token` from `tx` to `to` every 200 ms until `rx` receives it (bounded).
fn reaches(tx: &UdpSocket, to: SocketAddr, rx: &UdpSocket, token: &str) {
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    loop {
        tx.send_to(token.as_bytes(), to).expect("send");
        if let Ok(n) = rx.recv(&mut buf)
            && &buf[..n] == token.as_bytes()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{token}: no datagram to {to} arrived within {WAIT:?}"
        );
    }
}

/// The datagrams waiting at `rx`, without waiting.
fn pending(rx: &UdpSocket) -> Vec<String> {
    rx.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn neighbor_is(ns: &Netns, addr: IpAddr, mac: &str) {
    wait_until(
        &format!("{}'s neighbor entry for {addr} is {mac}", ns.name()),
        WAIT,
        || ns.neighbor("lan0", addr),
        |seen| seen.as_deref() == Some(mac),
    );
}

#[test]
fn the_virtual_address_moves_and_datagrams_follow_the_announcements() {
    require_netns!();
    let lan = lan();
    let [ms1, ms2, node] = &lan.hosts;
    let (mac1, mac2) = (ms1.mac("lan0"), ms2.mac("lan0"));
    let vip = IpAddr::V4(VIP);
    // The node last saw the address at the second management server.
    node.ip(&[
        "neigh",
        "replace",
        "10.250.0.100",
        "lladdr",
        &mac2,
        "dev",
        "lan0",
        "nud",
        "stale",
    ]);

    let if1 = lan0(ms1, vip, PREFIX);
    assert_eq!(
        in_ns(ms1, || addr::add(&if1, vip, PREFIX)).expect("add"),
        Added::New
    );
    assert!(in_ns(ms1, || addr::present(&if1, vip)).expect("look up"));
    assert_eq!(
        node.neighbor("lan0", vip).as_deref(),
        Some(mac2.as_str()),
        "adding the address announces nothing by itself"
    );
    ms1.enter(|| addr::announce(&if1, vip)).expect("announce");
    neighbor_is(node, vip, &mac1);
    // The other management server had no entry: arp_accept=1 makes one.
    neighbor_is(ms2, vip, &mac1);

    let rx1 = udp(ms1, SocketAddr::new(vip, 0));
    let to = rx1.local_addr().expect("address");
    let tx = udp(node, "10.250.0.3:0".parse().unwrap());
    reaches(&tx, to, &rx1, "to the first");

    // The move: the first lets go, the second takes the address and announces it.
    in_ns(ms1, || addr::remove(&if1, vip, PREFIX)).expect("remove");
    assert!(!in_ns(ms1, || addr::present(&if1, vip)).expect("look up"));
    let if2 = lan0(ms2, vip, PREFIX);
    assert_eq!(
        in_ns(ms2, || addr::add(&if2, vip, PREFIX)).expect("add"),
        Added::New
    );
    let rx2 = udp(ms2, to);
    ms2.enter(|| addr::announce(&if2, vip)).expect("announce");
    neighbor_is(node, vip, &mac2);
    reaches(&tx, to, &rx2, "to the second");
    assert!(
        !pending(&rx1).iter().any(|t| t == "to the second"),
        "the first got a datagram after it let the address go"
    );
}

#[test]
fn an_unsolicited_neighbor_advertisement_moves_an_ipv6_address() {
    require_netns!();
    let lan = lan();
    let [ms1, ms2, node] = &lan.hosts;
    let (mac1, mac2) = (ms1.mac("lan0"), ms2.mac("lan0"));
    let vip = IpAddr::V6(VIP6);
    node.ip(&[
        "-6",
        "neigh",
        "replace",
        "fd00:250::100",
        "lladdr",
        &mac2,
        "dev",
        "lan0",
        "nud",
        "stale",
    ]);
    let if1 = lan0(ms1, vip, PREFIX6);
    assert_eq!(
        in_ns(ms1, || addr::add(&if1, vip, PREFIX6)).expect("add"),
        Added::New
    );
    ms1.enter(|| addr::announce(&if1, vip)).expect("announce");
    // Accepted only with a correct checksum, hop limit 255 and the override flag.
    neighbor_is(node, vip, &mac1);

    let rx1 = udp(ms1, SocketAddr::new(vip, 0));
    let to = rx1.local_addr().expect("address");
    let tx = udp(node, "[fd00:250::3]:0".parse().unwrap());
    reaches(&tx, to, &rx1, "to the first over IPv6");
}

#[test]
fn adding_twice_is_already_present_and_removing_twice_is_fine() {
    require_netns!();
    let (a, b) = (Netns::new(), Netns::new());
    veth(
        &a,
        "lan0",
        Some("10.250.0.1/24"),
        &b,
        "lan0",
        Some("10.250.0.2/24"),
    );
    a.ip(&["addr", "add", "fd00:250::1/64", "dev", "lan0", "nodad"]);
    for (vip, prefix) in [(IpAddr::V4(VIP), PREFIX), (IpAddr::V6(VIP6), PREFIX6)] {
        let iface = lan0(&a, vip, prefix);
        let cidr = format!("{vip}/{prefix}");
        let shown = || a.ip(&["addr", "show", "dev", "lan0"]);
        in_ns(&a, || async {
            assert_eq!(addr::add(&iface, vip, prefix).await.unwrap(), Added::New);
            assert_eq!(
                addr::add(&iface, vip, prefix).await.unwrap(),
                Added::AlreadyPresent
            );
            assert!(addr::present(&iface, vip).await.unwrap());
        });
        let text = shown();
        let line = text
            .lines()
            .find(|l| l.contains(&cidr))
            .unwrap_or_else(|| panic!("{cidr} not on lan0:\n{text}"));
        assert!(
            !line.contains("tentative"),
            "usable at once (nodad): {line}"
        );
        in_ns(&a, || async {
            addr::remove(&iface, vip, prefix).await.unwrap();
            assert!(!addr::present(&iface, vip).await.unwrap());
            addr::remove(&iface, vip, prefix).await.unwrap();
        });
        assert!(!shown().contains(&cidr), "{}", shown());
    }
    // The base addresses were never touched.
    let iface = lan0(&a, VIP.into(), PREFIX);
    let base: IpAddr = "10.250.0.1".parse().unwrap();
    assert!(in_ns(&a, || addr::present(&iface, base)).unwrap());

    let gone = Interface {
        index: 999_999,
        name: "gone0".into(),
    };
    let e = in_ns(&a, || addr::add(&gone, VIP.into(), PREFIX)).unwrap_err();
    assert!(
        matches!(e, AddrError::Kernel { .. })
            && e.to_string().starts_with("add 10.250.0.100 on gone0: "),
        "{e}"
    );
}

#[test]
fn the_interface_is_found_by_subnet_or_name_with_clear_errors() {
    require_netns!();
    let (a, b) = (Netns::new(), Netns::new());
    veth(&a, "lan0", Some("10.250.0.1/24"), &b, "lan0", None);
    veth(&a, "mlan0", Some("10.250.1.1/24"), &b, "mlan0", None);
    let find = |addr: &str, prefix: u8, name: Option<&str>| {
        let addr: IpAddr = addr.parse().unwrap();
        a.enter(|| addr::find_interface(addr, prefix, name))
    };
    let lan = find("10.250.0.100", 24, None).expect("by subnet");
    assert_eq!(lan.name, "lan0");
    assert_eq!(
        find("10.250.0.100", 24, Some("lan0")).expect("by name"),
        lan,
        "the same index by name"
    );
    assert_eq!(find("10.250.1.100", 24, None).expect("mlan").name, "mlan0");
    assert_ne!(find("10.250.1.100", 24, None).unwrap().index, lan.index);

    let none = find("10.250.2.100", 24, None).unwrap_err();
    assert!(
        matches!(none, AddrError::NoInterfaceInSubnet { .. }),
        "{none:?}"
    );
    assert!(
        none.to_string()
            .starts_with("no network interface has an address in the subnet of 10.250.2.100/24"),
        "{none}"
    );
    let several = find("10.250.0.100", 16, None).unwrap_err();
    assert_eq!(
        several.to_string(),
        "several network interfaces have an address in the subnet of 10.250.0.100/16 (lan0 \
         (10.250.0.1/24), mlan0 (10.250.1.1/24)): name the one for 10.250.0.100"
    );
    let absent = find("10.250.0.100", 24, Some("nosuch0")).unwrap_err();
    assert_eq!(
        absent.to_string(),
        "there is no network interface named \"nosuch0\""
    );

    // The address itself, already held by another interface, does not make it a candidate.
    a.ip(&["addr", "add", "10.250.0.100/24", "dev", "mlan0"]);
    assert_eq!(find("10.250.0.100", 24, None).expect("by subnet"), lan);
}

#[test]
fn a_simulated_bmc_in_a_namespace_fences_the_process_in_its_pid_file() {
    require_netns!();
    let switch = Bridge::new();
    let (bmc_host, ms) = (Netns::new(), Netns::new());
    switch.join(&bmc_host, "lan0", Some("10.250.0.11/24"));
    switch.join(&ms, "lan0", Some("10.250.0.2/24"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let pidfile = dir.path().join("haconn.pid");
    let start_victim = || {
        let child = ms
            .command("sleep")
            .arg("1000")
            .spawn()
            .expect("start sleep");
        std::fs::write(&pidfile, format!("{}\n", child.id())).expect("write the pid file");
        child
    };
    let mut victim = start_victim();
    let sim = SimBmc::with(
        SimConfig::default()
            .in_netns(bmc_host.name(), Ipv4Addr::new(10, 250, 0, 11), 623)
            .kill_on_fence(&pidfile),
    );
    assert_eq!(
        (sim.address, sim.port),
        (Ipv4Addr::new(10, 250, 0, 11), 623)
    );
    let spec = sim.spec();
    let bmc = IpmiBmc::new();
    let killed_by_sigkill = |child: &mut std::process::Child, what: &str| {
        let status = wait_until(
            what,
            WAIT,
            || child.try_wait().expect("try_wait"),
            Option::is_some,
        )
        .expect("exited");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status}");
    };

    in_ns(&ms, || async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        bmc.hard_reset(&spec).await.expect("reset acknowledged");
    });
    killed_by_sigkill(&mut victim, "the hard reset kills the process");
    let pid = victim.id();

    let mut second = start_victim();
    in_ns(&ms, || async {
        bmc.power_off(&spec).await.expect("power off acknowledged");
        bmc.shutdown().await;
    });
    killed_by_sigkill(&mut second, "the power off kills the process");

    let chassis: Vec<String> = sim.chassis().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        chassis,
        ["set reset 1", "set power 0"],
        "chassis.log intact"
    );
    let kills: Vec<String> = sim.fence_kills().into_iter().map(|(_, k)| k).collect();
    assert_eq!(
        kills,
        [format!("killed {pid}"), format!("killed {}", second.id())]
    );
}
