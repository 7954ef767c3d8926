//! Reset-log lines in the SPEC §7 formats (the timestamp is added by the log writer).
//!
//! `----` stands for a field that does not apply (a request from a test command, a
//! notification with no requester).

use std::net::IpAddr;

/// P for a physical server, V for a VMware guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    P,
    V,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Kind::P => 'P',
            Kind::V => 'V',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Recv,
    Send,
}

impl Dir {
    fn word(self) -> &'static str {
        match self {
            Dir::Recv => "RECV",
            Dir::Send => "SEND",
        }
    }
}

/// Where a message came from or went to; `None` prints `----`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Peer {
    pub ip: Option<IpAddr>,
    pub port: Option<u16>,
    /// The `<req#>` field: the requesting HA monitor's subsystem number (or, on an
    /// `ATTENTION RECV`, the dump agent's), as the original product writes it — not the
    /// protocol's request number.
    pub req: Option<u32>,
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "----".to_string(), |v| v.to_string())
}

/// The fields every line starts with. One space after the tag, as the original product's
/// manual writes its formats (`RM-RESET <system> ...`).
fn head(tag: &str, system: &str, target: u32, dir: Dir, peer: Peer) -> String {
    format!(
        "{tag} {system} {target} {} {} {} {}",
        dir.word(),
        dash(peer.ip),
        dash(peer.port),
        dash(peer.req)
    )
}

/// `RM-RESET <system> <target#> RECV|SEND <ip> <port> <req#> P|V [<DUMP|POFF|FAIL|ERROR>]`
pub fn rm_reset(
    system: &str,
    target: u32,
    dir: Dir,
    peer: Peer,
    kind: Kind,
    result: Option<&str>,
) -> String {
    let mut s = format!(
        "{} {}",
        head("RM-RESET", system, target, dir, peer),
        kind.letter()
    );
    if let Some(r) = result {
        s.push(' ');
        s.push_str(r);
    }
    s
}

/// `SOFTRESET <system> <target#> SEND|RECV <ip|----> <port|----> <req#|----> P|V`
pub fn soft_reset(system: &str, target: u32, dir: Dir, peer: Peer, kind: Kind) -> String {
    format!(
        "{} {}",
        head("SOFTRESET", system, target, dir, peer),
        kind.letter()
    )
}

/// `HARDRESET <system> <target#> SEND|RECV <ip> <port> <req#> P|V`
pub fn hard_reset(system: &str, target: u32, dir: Dir, peer: Peer, kind: Kind) -> String {
    format!(
        "{} {}",
        head("HARDRESET", system, target, dir, peer),
        kind.letter()
    )
}

/// `HARDRESET <mserver> ---- SEND|RECV ---- ---- ---- P`: the standby of a pair fencing
/// its peer through the peer's BMC (no target number, no requester).
pub fn mserver_hard_reset(mserver: &str, dir: Dir) -> String {
    format!("HARDRESET {mserver} ---- {} ---- ---- ---- P", dir.word())
}

/// `ATTENTION <system> <target#> SEND|RECV <ip> <port> <req#|----> P|V <DUMP|REBOOT|POFF>`
pub fn attention(
    system: &str,
    target: u32,
    dir: Dir,
    peer: Peer,
    kind: Kind,
    state: &str,
) -> String {
    format!(
        "{} {} {state}",
        head("ATTENTION", system, target, dir, peer),
        kind.letter()
    )
}

/// `IPDUSD <system|mserver> <target#|----> SEND|RECV <ip|----> <port|----> <req#|----> <pdu ip> <outlet#> OFF|ON`
pub fn ipdusd(
    system: &str,
    target: Option<u32>,
    dir: Dir,
    peer: Peer,
    pdu: IpAddr,
    outlet: u16,
    on: bool,
) -> String {
    format!(
        "IPDUSD {system} {} {} {} {} {} {pdu} {outlet} {}",
        dash(target),
        dir.word(),
        dash(peer.ip),
        dash(peer.port),
        dash(peer.req),
        if on { "ON" } else { "OFF" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_the_spec_formats() {
        let peer = Peer {
            ip: Some("192.168.10.21".parse().unwrap()),
            port: Some(20001),
            req: Some(17),
        };
        assert_eq!(
            rm_reset("node02", 2, Dir::Recv, peer, Kind::P, None),
            "RM-RESET node02 2 RECV 192.168.10.21 20001 17 P"
        );
        assert_eq!(
            rm_reset("node02", 2, Dir::Send, peer, Kind::P, Some("DUMP")),
            "RM-RESET node02 2 SEND 192.168.10.21 20001 17 P DUMP"
        );
        assert_eq!(
            soft_reset("vm01", 3, Dir::Recv, Peer::default(), Kind::V),
            "SOFTRESET vm01 3 RECV ---- ---- ---- V"
        );
        assert_eq!(
            attention(
                "node02",
                2,
                Dir::Send,
                Peer { req: None, ..peer },
                Kind::P,
                "REBOOT"
            ),
            "ATTENTION node02 2 SEND 192.168.10.21 20001 ---- P REBOOT"
        );
        assert_eq!(
            ipdusd(
                "node02",
                Some(2),
                Dir::Send,
                peer,
                "192.168.30.1".parse().unwrap(),
                4,
                false
            ),
            "IPDUSD node02 2 SEND 192.168.10.21 20001 17 192.168.30.1 4 OFF"
        );
        assert_eq!(
            mserver_hard_reset("mserver01", Dir::Recv),
            "HARDRESET mserver01 ---- RECV ---- ---- ---- P"
        );
    }
}
