//! The reset path's virtual address (SPEC §4): the active management server holds it on
//! its reset-path interface; a standby that fenced the active takes it over and tells the
//! LAN that the address has moved.
//!
//! - [`find_interface`]: which interface the address belongs on (named, or found by subnet);
//! - [`add`], [`remove`], [`present`]: the address itself, over rtnetlink (`ip address`);
//! - [`announce`]: a gratuitous ARP (IPv4) or an unsolicited neighbor advertisement (IPv6)
//!   from the interface's MAC, so that neighbors' caches point at the new holder at once
//!   instead of after their entries go stale.
//!
//! Everything here acts on the network namespace of the calling *thread* (sockets are
//! opened where they are called), which is what lets the tests run it inside namespaces.
//! The async functions need a tokio runtime with I/O and time enabled; each opens its own
//! netlink socket, is bounded by [`NETLINK_TIMEOUT`] and is cancel-safe: dropped at any
//! await, it leaves no task or socket behind. What a dropped or timed-out request did in the
//! kernel is then unknown; [`present`] tells.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use futures_util::TryStreamExt;
use nix::ifaddrs::getifaddrs;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};

/// How long the kernel gets to answer one netlink request. It answers in microseconds; a
/// request still unanswered after this is reported rather than waited on.
pub const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// A network interface of this host (of the calling thread's namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// What [`add`] did. Only the caller that got [`Added::New`] may later [`remove`] the
/// address: an address that was already there belongs to whoever put it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "only an address added here (Added::New) may be removed later"]
pub enum Added {
    New,
    AlreadyPresent,
}

/// Why the virtual address could not be found a home, added, removed or looked up.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("{addr}/{prefix_len}: the prefix length must be at most {max}", max = max_prefix(*addr))]
    BadPrefix { addr: IpAddr, prefix_len: u8 },
    #[error("cannot list the network interfaces: {0}")]
    ListInterfaces(#[source] io::Error),
    #[error("there is no network interface named {name:?}")]
    NoSuchInterface { name: String },
    #[error(
        "no network interface has an address in the subnet of {addr}/{prefix_len}: give an \
         address in that subnet to the reset-path interface, or name the interface"
    )]
    NoInterfaceInSubnet { addr: IpAddr, prefix_len: u8 },
    #[error(
        "several network interfaces have an address in the subnet of {addr}/{prefix_len} \
         ({}): name the one for {addr}", found.join(", ")
    )]
    SeveralInterfacesInSubnet {
        addr: IpAddr,
        prefix_len: u8,
        /// `name (address/prefix)`, one per interface.
        found: Vec<String>,
    },
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op} {addr} on {iface}: {source}")]
    Kernel {
        op: &'static str,
        addr: IpAddr,
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{op} {addr} on {iface}: no answer from the kernel (netlink) within {} ms; whether \
         it was done is unknown", after.as_millis()
    )]
    Timeout {
        op: &'static str,
        addr: IpAddr,
        iface: String,
        after: Duration,
    },
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn check_prefix(addr: IpAddr, prefix_len: u8) -> Result<(), AddrError> {
    if prefix_len > max_prefix(addr) {
        return Err(AddrError::BadPrefix { addr, prefix_len });
    }
    Ok(())
}

/// Whether `a` and `b` share the first `prefix_len` bits (`prefix_len` already checked).
fn same_subnet(a: IpAddr, b: IpAddr, prefix_len: u8) -> bool {
    let bits = u32::from(prefix_len);
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// One address of one interface, as getifaddrs(3) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IfAddr {
    name: String,
    addr: IpAddr,
    prefix_len: u8,
}

fn interface_addresses() -> Result<Vec<IfAddr>, AddrError> {
    let list = getifaddrs().map_err(|e| AddrError::ListInterfaces(e.into()))?;
    Ok(list
        .filter_map(|i| {
            let (addr, netmask) = (i.address?, i.netmask?);
            let (addr, ones) = if let (Some(a), Some(m)) =
                (addr.as_sockaddr_in(), netmask.as_sockaddr_in())
            {
                (IpAddr::V4(a.ip()), u32::from(m.ip()).leading_ones())
            } else if let (Some(a), Some(m)) = (addr.as_sockaddr_in6(), netmask.as_sockaddr_in6()) {
                (IpAddr::V6(a.ip()), u128::from(m.ip()).leading_ones())
            } else {
                return None;
            };
            Some(IfAddr {
                name: i.interface_name,
                addr,
                prefix_len: ones as u8,
            })
        })
        .collect())
}

/// The interface for `addr/prefix_len`: the one named `name` if given, else the one
/// interface with another address in that subnet (the VIP itself, already held, does not
/// count). None or several such interfaces is an error listing what was found.
///
/// Synchronous: getifaddrs(3) is one kernel dump that waits on nothing.
pub fn find_interface(
    addr: IpAddr,
    prefix_len: u8,
    name: Option<&str>,
) -> Result<Interface, AddrError> {
    check_prefix(addr, prefix_len)?;
    if let Some(name) = name {
        return interface_named(name);
    }
    let mut found: Vec<IfAddr> = Vec::new();
    for a in interface_addresses()? {
        if a.addr != addr
            && same_subnet(a.addr, addr, prefix_len)
            && !found.iter().any(|f| f.name == a.name)
        {
            found.push(a);
        }
    }
    match found.as_slice() {
        [] => Err(AddrError::NoInterfaceInSubnet { addr, prefix_len }),
        [one] => interface_named(&one.name),
        several => Err(AddrError::SeveralInterfacesInSubnet {
            addr,
            prefix_len,
            found: several
                .iter()
                .map(|f| format!("{} ({}/{})", f.name, f.addr, f.prefix_len))
                .collect(),
        }),
    }
}

fn interface_named(name: &str) -> Result<Interface, AddrError> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(index) => Ok(Interface {
            index,
            name: name.to_string(),
        }),
        Err(nix::errno::Errno::ENODEV) => Err(AddrError::NoSuchInterface {
            name: name.to_string(),
        }),
        Err(e) => Err(AddrError::ListInterfaces(e.into())),
    }
}

/// Runs one rtnetlink exchange on a connection of its own, driven here (not spawned), so
/// that dropping the returned future closes the socket and leaves nothing running.
async fn netlink<T, F, Fut>(
    op: &'static str,
    iface: &Interface,
    addr: IpAddr,
    request: F,
) -> Result<T, AddrError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, rtnetlink::Error>>,
{
    let (connection, handle, _unsolicited) =
        rtnetlink::new_connection().map_err(AddrError::Socket)?;
    let kernel = |source| AddrError::Kernel {
        op,
        addr,
        iface: iface.name.clone(),
        source,
    };
    let exchange = async {
        tokio::select! {
            r = request(handle) => r.map_err(|e| kernel(netlink_io_error(e))),
            () = connection => Err(kernel(io::Error::other("the netlink connection closed"))),
        }
    };
    tokio::time::timeout(NETLINK_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(AddrError::Timeout {
                op,
                addr,
                iface: iface.name.clone(),
                after: NETLINK_TIMEOUT,
            })
        })
}

/// The errno of a kernel refusal, so callers can match on it and operators read strerror.
fn netlink_io_error(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn errno_of(e: &AddrError) -> Option<i32> {
    match e {
        AddrError::Kernel { source, .. } => source.raw_os_error(),
        _ => None,
    }
}

/// Adds `addr/prefix_len` to `iface` (`ip address add`). An address already on the
/// interface (the kernel's EEXIST: the same address and prefix for IPv4, the same address
/// for IPv6) is [`Added::AlreadyPresent`], decided by the kernel in the same request, so no
/// other process can slip in between a check and the add.
///
/// IPv6 addresses are added with `nodad`: the standby takes the address over after fencing
/// its holder, so there is nobody to detect, and duplicate address detection would leave
/// the address tentative (unusable) for a second or more.
///
/// If the call times out or is dropped, the address may or may not have been added; the
/// caller did not add it as far as it knows, so it must not remove it on that account.
pub async fn add(iface: &Interface, addr: IpAddr, prefix_len: u8) -> Result<Added, AddrError> {
    check_prefix(addr, prefix_len)?;
    let r = netlink("add", iface, addr, |handle| {
        let mut request = handle.address().add(iface.index, addr, prefix_len);
        if addr.is_ipv6() {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        request.execute()
    })
    .await;
    match r {
        Ok(()) => Ok(Added::New),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(Added::AlreadyPresent),
        Err(e) => Err(e),
    }
}

/// Removes `addr/prefix_len` from `iface` (`ip address del`); an absent address is fine.
pub async fn remove(iface: &Interface, addr: IpAddr, prefix_len: u8) -> Result<(), AddrError> {
    check_prefix(addr, prefix_len)?;
    let message = match addr {
        IpAddr::V4(a) => rtnetlink::AddressMessageBuilder::<Ipv4Addr>::new()
            .index(iface.index)
            .address(a, prefix_len)
            .build(),
        IpAddr::V6(a) => rtnetlink::AddressMessageBuilder::<Ipv6Addr>::new()
            .index(iface.index)
            .address(a, prefix_len)
            .build(),
    };
    let r = netlink("remove", iface, addr, |handle| {
        handle.address().del(message).execute()
    })
    .await;
    match r {
        Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => Ok(()),
        other => other,
    }
}

/// Whether `iface` has `addr` (with any prefix length).
pub async fn present(iface: &Interface, addr: IpAddr) -> Result<bool, AddrError> {
    netlink("look up", iface, addr, |handle| async move {
        let mut request = handle
            .address()
            .get()
            .set_link_index_filter(iface.index)
            .set_address_filter(addr);
        request.message_mut().header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        // A dump must be read to its end: the socket is not reused, but an error after the
        // first match would otherwise go unseen.
        let found: Vec<_> = request.execute().try_collect().await?;
        Ok(!found.is_empty())
    })
    .await
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// Tells the LAN on `iface` that `addr` is now here, at `iface`'s MAC.
///
/// IPv4: two gratuitous ARP frames to the Ethernet broadcast, each with sender and target
/// protocol address `addr` and sender hardware address the interface's MAC:
/// - an ARP *request* (target hardware address zero): RFC 5227's "ARP Announcement", the form
///   `arping -U` and most HA software send, and the one every stack treats as gratuitous;
/// - an ARP *reply* (target hardware address = sender's, which Linux requires of a
///   gratuitous reply): for the switches and hosts that learn only from replies.
///
/// Linux updates an existing neighbor entry from either; it *creates* an entry from one only
/// with `net.ipv4.conf.*.arp_accept=1`, so a host without an entry learns the address by
/// ARP when it next sends to it, as usual.
///
/// IPv6: an unsolicited neighbor advertisement (RFC 4861 §7.2.6) from `addr` to ff02::1,
/// hop limit 255, Override set, Solicited clear, with the target link-layer address option.
/// Receivers update an entry they have and ignore it otherwise (RFC 4861 §7.2.5).
///
/// The frames are built here and sent whole through an AF_PACKET socket, so they go out
/// whatever the state of the address (an IPv6 address still tentative could not be a
/// source through the IP stack). One call sends each frame once; a caller covering loss
/// repeats it (RFC 5227: twice, 2 s apart). Only Ethernet interfaces are supported
/// ([`io::ErrorKind::Unsupported`] otherwise). Never blocks: a full device queue is an
/// error (`WouldBlock`).
pub fn announce(iface: &Interface, addr: IpAddr) -> io::Result<()> {
    let mac = ethernet_mac(iface)?;
    let frames = match addr {
        IpAddr::V4(a) => vec![
            arp_frame(mac, a, ArpOp::Request),
            arp_frame(mac, a, ArpOp::Reply),
        ],
        IpAddr::V6(a) => vec![neighbor_advertisement(mac, a)],
    };
    let socket = PacketSocket::open()?;
    for frame in &frames {
        socket.send(iface, frame)?;
    }
    Ok(())
}

/// The MAC of an Ethernet interface, from getifaddrs(3)'s AF_PACKET entry (never /sys,
/// which shows the namespace it was mounted in, not the calling thread's).
fn ethernet_mac(iface: &Interface) -> io::Result<[u8; 6]> {
    let list = getifaddrs()?;
    for i in list {
        let Some(link) = i.address.as_ref().and_then(|a| a.as_link_addr()) else {
            continue;
        };
        if link.ifindex() != iface.index as usize {
            continue;
        }
        if link.hatype() != libc::ARPHRD_ETHER {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "{}: not an Ethernet interface (ARP hardware type {}): cannot announce an \
                     address on it",
                    iface.name,
                    link.hatype()
                ),
            ));
        }
        return link.addr().ok_or_else(|| {
            io::Error::other(format!("{}: the interface has no MAC address", iface.name))
        });
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "no network interface {} (index {})",
            iface.name, iface.index
        ),
    ))
}

#[derive(Debug, Clone, Copy)]
enum ArpOp {
    Request = 1,
    Reply = 2,
}

/// A gratuitous ARP frame for `addr` from `mac` to the broadcast (42 bytes; the driver
/// pads it to the Ethernet minimum).
fn arp_frame(mac: [u8; 6], addr: Ipv4Addr, op: ArpOp) -> Vec<u8> {
    let target_mac = match op {
        ArpOp::Request => [0; 6],
        ArpOp::Reply => mac,
    };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&ETH_BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]); // their lengths
    f.extend_from_slice(&(op as u16).to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&addr.octets());
    f
}

/// An unsolicited neighbor advertisement for `addr` from `mac` to all nodes (86 bytes).
fn neighbor_advertisement(mac: [u8; 6], addr: Ipv6Addr) -> Vec<u8> {
    const ICMPV6: u8 = 58;
    const OVERRIDE: u8 = 0x20;
    // Type 136, code 0, checksum, flags, reserved, target; option 2 (target link-layer
    // address), length 1 (× 8 bytes), the MAC.
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0, OVERRIDE, 0, 0, 0]);
    icmp.extend_from_slice(&addr.octets());
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(addr, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    // ff02::1 maps to 33:33 and its last 32 bits (RFC 2464 §7).
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]); // next header, hop limit (receivers require 255)
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The Internet checksum of an ICMPv6 message over the IPv6 pseudo-header (RFC 8200 §8.1).
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + icmp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(icmp);
    internet_checksum(&pseudo)
}

/// RFC 1071's checksum: the complement of the one's complement sum of 16-bit words.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An AF_PACKET raw socket that only sends (protocol 0: it receives nothing).
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open() -> io::Result<PacketSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(PacketSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Sends one whole Ethernet frame (its own header included) out of `iface`.
    fn send(&self, iface: &Interface, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        to.sll_ifindex = iface.index as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&raw const to).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::other(format!(
                "{}: sent {n} of {} bytes",
                iface.name,
                frame.len()
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn gratuitous_arp_request_and_reply_bytes() {
        let vip = Ipv4Addr::new(10, 250, 0, 100);
        let request = arp_frame(MAC, vip, ArpOp::Request);
        #[rustfmt::skip]
        let expected: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // to: broadcast
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // from: the interface
            0x08, 0x06,                         // ARP
            0x00, 0x01, 0x08, 0x00, 6, 4,       // Ethernet, IPv4, their lengths
            0x00, 0x01,                         // request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, 10, 250, 0, 100, // sender: MAC, VIP
            0, 0, 0, 0, 0, 0,                   10, 250, 0, 100, // target: zero, VIP
        ];
        assert_eq!(request, expected);
        let reply = arp_frame(MAC, vip, ArpOp::Reply);
        assert_eq!(reply[..20], expected[..20]);
        assert_eq!(reply[20..22], [0, 2], "reply");
        assert_eq!(reply[22..32], expected[22..32]);
        assert_eq!(
            reply[32..38],
            MAC,
            "a gratuitous reply's target MAC is the sender's"
        );
        assert_eq!(reply[38..42], [10, 250, 0, 100]);
    }

    #[test]
    fn neighbor_advertisement_bytes_and_checksum() {
        let vip: Ipv6Addr = "fd00:250::100".parse().unwrap();
        let f = neighbor_advertisement(MAC, vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(f[..6], [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[6..12], MAC);
        assert_eq!(f[12..14], [0x86, 0xdd]);
        assert_eq!(f[14..18], [0x60, 0, 0, 0]);
        assert_eq!(f[18..20], 32u16.to_be_bytes(), "payload length");
        assert_eq!(f[20..22], [58, 255], "ICMPv6, hop limit 255");
        assert_eq!(f[22..38], vip.octets(), "from the address itself");
        assert_eq!(f[38..54], ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[..2], [136, 0], "neighbor advertisement");
        assert_eq!(icmp[4], 0x20, "override only (not solicited, not a router)");
        assert_eq!(icmp[8..24], vip.octets(), "target");
        assert_eq!(icmp[24..26], [2, 1], "target link-layer address, 8 bytes");
        assert_eq!(icmp[26..32], MAC);
        // The checksum over the pseudo-header and the message with it in place is zero
        // (all ones before the complement).
        assert_eq!(icmpv6_checksum(vip, ALL_NODES, icmp), 0);
    }

    #[test]
    fn internet_checksum_of_rfc_1071s_example() {
        // RFC 1071 §3: these bytes sum to ddf2 (one's complement); the checksum is its
        // complement. An odd length is padded with a zero byte.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
        assert_eq!(internet_checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn subnets() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(same_subnet(a("10.250.0.1"), a("10.250.0.100"), 24));
        assert!(!same_subnet(a("10.250.1.1"), a("10.250.0.100"), 24));
        assert!(same_subnet(a("10.250.1.1"), a("10.250.0.100"), 16));
        assert!(same_subnet(a("1.2.3.4"), a("5.6.7.8"), 0));
        assert!(!same_subnet(a("10.250.0.1"), a("10.250.0.2"), 32));
        assert!(same_subnet(a("fd00:250::1"), a("fd00:250::100"), 64));
        assert!(!same_subnet(a("fd00:251::1"), a("fd00:250::100"), 64));
        assert!(!same_subnet(a("10.250.0.1"), a("fd00:250::100"), 0));
    }

    #[test]
    fn prefix_lengths_past_the_address_are_refused() {
        let e = find_interface("10.250.0.100".parse().unwrap(), 33, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.250.0.100/33: the prefix length must be at most 32"
        );
        assert!(find_interface("fd00::1".parse().unwrap(), 129, None).is_err());
    }
}
