//! The reset path's receive thread: it owns the reset-path socket's receive side and
//! hands the pipeline thread only datagrams that are well-formed, authenticated and fresh.
//!
//! A flood must not delay a real reset (issue 19), so everything here is about doing as
//! little as possible per junk datagram, in this order: batched receives (`recvmmsg`, up
//! to [`BATCH`] datagrams per system call) into a socket buffer sized for a flood; a
//! token bucket per source address, looked up before anything else is read, with the
//! registered monitors' addresses exempt (they are served first); the length and the
//! magic; the HMAC tag; only then the JSON and the replay guard. A refusal costs a counter
//! (and at most one log line per source and reason). Datagrams from registered monitors
//! are passed on before the others of their batch, on a lane of their own that the
//! pipeline thread reads first, and wait for room in it; the others go on a bounded lane
//! and are dropped (and counted) when it is full.
//!
//! It never touches the core: it reads the live spec (to know which systems exist) and
//! the set of registered monitors' addresses the pipeline publishes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::Counters;
use super::limits::{LogBudget, with_suppressed};
use crate::log::LogSink;
use crate::resetpath::codec::{self, DecodeError, Envelope, MAX_DATAGRAM};
use crate::resetpath::keys::KeyRing;
use crate::resetpath::replay::{HighWater, ReplayGuard};
use crate::spec::model::Spec;

/// Datagrams read per system call.
pub const BATCH: usize = 64;
/// The receive buffer asked for: about a second of a 300 000 datagrams/s flood of small
/// datagrams, as the kernel accounts them.
pub const RCVBUF: usize = 32 << 20;
/// Datagrams waiting for the pipeline thread at most.
pub const CHANNEL: usize = 1024;
/// Per source address that is not a registered monitor: a burst of this many...
const SOURCE_BURST: u32 = 100;
/// ...then one every this long (50 a second; a monitor checks about once a second).
const SOURCE_REFILL: Duration = Duration::from_millis(20);
/// Source buckets kept at most; past it, the full (idle) ones are forgotten.
const MAX_SOURCES: usize = 65_536;
/// How often the thread looks whether the pipeline is gone and reads the drop counter.
const WAKE: Duration = Duration::from_millis(200);

/// A datagram the pipeline thread may act on.
#[derive(Debug)]
pub struct Accepted {
    pub from: SocketAddr,
    /// Its length on the wire: no reply to it may be longer.
    pub len: usize,
    pub env: Envelope,
    /// When its batch was read (the pipeline's queue delay is measured from it).
    pub at: Instant,
}

/// What the receive thread needs.
pub struct Receiver {
    pub sock: UdpSocket,
    /// The live spec's keys (per-node keys are looked up by the claimed system).
    pub keys: Arc<ArcSwap<KeyRing>>,
    pub live: Arc<ArcSwap<Spec>>,
    pub counters: Arc<Counters>,
    pub error_log: LogSink,
    pub replay: ReplayGuard,
    pub high_water: Option<HighWater>,
    /// Addresses of registered monitors, published by the pipeline thread.
    pub monitors: Arc<ArcSwap<HashSet<IpAddr>>>,
    /// The registered monitors' lane, which the pipeline thread reads first.
    pub monitor_tx: mpsc::Sender<Accepted>,
    /// Everyone else's.
    pub other_tx: mpsc::Sender<Accepted>,
}

/// Asks the kernel for a receive buffer of [`RCVBUF`] (forcing it past `rmem_max` when
/// the daemon may); returns what it got, which the caller reports when it is less.
pub fn size_buffer(sock: &UdpSocket) -> io::Result<usize> {
    let want = RCVBUF as libc::c_int;
    let set = |opt| {
        // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and its size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        return Err(io::Error::last_os_error());
    }
    // Linux reports twice what it grants (its bookkeeping overhead).
    Ok(socket2::SockRef::from(sock).recv_buffer_size()? / 2)
}

/// Attaches a socket filter (classic BPF) that drops, in the kernel and before it takes
/// room in the receive buffer, every datagram that does not start with `HCN1`: a flood of
/// junk never reaches the buffer. (Such datagrams show in the socket's drop counter and
/// are no longer logged; anything with the magic still is, so a node with the wrong mode
/// or key is still heard of.)
pub fn attach_filter(sock: &UdpSocket) -> io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    // On a UDP socket the filter sees the packet from the UDP header (8 bytes) on; a load
    // past the end drops the datagram.
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut program = [
        insn(LD_W_ABS, 0, 0, 8),
        insn(JEQ_K, 0, 1, u32::from_be_bytes(*codec::MAGIC)),
        insn(RET_K, 0, 0, u32::MAX),
        insn(RET_K, 0, 0, 0),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: setsockopt with a sock_fprog pointing at a live program; the kernel copies it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the thread; it ends when the pipeline thread has gone.
pub fn spawn(r: Receiver) -> io::Result<std::thread::JoinHandle<()>> {
    count_drops(&r.sock)?;
    std::thread::Builder::new()
        .name("haconn-resetpath-rx".into())
        .spawn(move || {
            super::limits::nice_this_thread(super::limits::FENCING_NICE);
            Thread::new(r).run()
        })
}

/// Asks the kernel to attach its drop count to each datagram (`SO_RXQ_OVFL`): the
/// datagrams it threw away at this socket before queueing that one, because the buffer
/// was full or the socket filter refused them (the kernel keeps one count for both; it
/// attaches none while the count is 0). It
/// costs nothing per datagram, where reading `/proc/net/udp` costs milliseconds on a
/// machine with thousands of UDP sockets.
pub fn count_drops(sock: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

struct Thread {
    r: Receiver,
    buckets: HashMap<IpAddr, LogBudget>,
    /// Refusals logged: source and a keyed hash of the reason's text, so a refusal
    /// already logged costs no allocation.
    logged: HashSet<(IpAddr, u64)>,
    reasons: std::collections::hash_map::RandomState,
    refusal_log: LogBudget,
}

impl Thread {
    fn new(r: Receiver) -> Thread {
        Thread {
            r,
            buckets: HashMap::new(),
            logged: HashSet::new(),
            reasons: std::collections::hash_map::RandomState::new(),
            refusal_log: LogBudget::new(20, Duration::from_secs(3)),
        }
    }

    fn run(mut self) {
        let mut bufs = vec![[0u8; MAX_DATAGRAM + 1]; BATCH];
        let mut last_look = Instant::now();
        let mut batch: Vec<(bool, Accepted)> = Vec::with_capacity(BATCH);
        loop {
            let got = recv_batch(&self.r.sock, &mut bufs);
            if last_look.elapsed() >= WAKE {
                last_look = Instant::now();
                if self.r.monitor_tx.is_closed() {
                    return;
                }
            }
            let Ok((got, drops)) = got else { continue };
            if let Some(d) = drops {
                self.r.counters.socket_drops.store(d, Ordering::Relaxed);
            }
            // A standby of a pair does not serve: what reaches it (it does not hold the
            // reset path's address, so little does) is dropped unread.
            if self.r.counters.standing_by.load(Ordering::Relaxed) {
                self.r
                    .counters
                    .standby_dropped
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
                continue;
            }
            let monitors = self.r.monitors.load();
            let keys = self.r.keys.load_full();
            let now = Instant::now();
            for &(i, n, from) in &got {
                let monitor = monitors.contains(&from.ip());
                if let Some(a) = self.accept(&bufs[i][..n], from, monitor, &keys, now) {
                    batch.push((monitor, a));
                }
            }
            // Registered monitors first, on their own lane; they wait for room, the others
            // do not.
            batch.sort_by_key(|(monitor, _)| !monitor);
            for (monitor, a) in batch.drain(..) {
                if monitor {
                    if self.r.monitor_tx.blocking_send(a).is_err() {
                        return;
                    }
                } else if self.r.other_tx.try_send(a).is_err() {
                    self.r.counters.busy_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The checks, cheapest first; `None` for a refusal (counted, maybe logged).
    fn accept(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        monitor: bool,
        keys: &KeyRing,
        now: Instant,
    ) -> Option<Accepted> {
        let c = &self.r.counters;
        if !monitor {
            if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&from.ip()) {
                self.buckets.clear();
            }
            let bucket = self
                .buckets
                .entry(from.ip())
                .or_insert_with(|| LogBudget::new(SOURCE_BURST, SOURCE_REFILL));
            if bucket.allow(now).is_none() {
                c.rate_limited.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        let env = match keys.decode(bytes) {
            Ok(env) => env,
            Err(e) => {
                let counter = match e {
                    DecodeError::BadTag
                    | DecodeError::UnknownSender
                    | DecodeError::Unsigned
                    | DecodeError::UnexpectedSignature => &c.rejected_auth,
                    _ => &c.malformed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                self.refuse(from, &e, now);
                return None;
            }
        };
        // Freshness is remembered per claimed system of the spec (what the tag covers),
        // never per address; a name the spec does not hold changes no state, so it is
        // checked for freshness only and never stored.
        let wall = codec::now_ms();
        let spec = self.r.live.load();
        let known = env.msg.sender().filter(|s| spec.system(s).is_some());
        let fresh = match known {
            Some(system) => self.r.replay.check(system, &env, wall),
            None => self.r.replay.fresh(&env, wall),
        };
        if let Err(e) = fresh {
            c.replayed.fetch_add(1, Ordering::Relaxed);
            self.refuse(from, &e, now);
            return None;
        }
        if known.is_some()
            && let Some(hw) = &mut self.r.high_water
            && let Err(e) = hw.cover(env.ts)
        {
            c.high_water_errors.fetch_add(1, Ordering::Relaxed);
            self.refuse(
                from,
                &format_args!(
                    "cannot keep the replay high-water mark ({e}): a restart may accept this \
                     datagram again"
                ),
                now,
            );
        }
        Some(Accepted {
            from,
            len: bytes.len(),
            env,
            at: now,
        })
    }

    /// Logs a refusal once per sender and reason (and within the log cap). A refusal
    /// already logged allocates nothing: the reason is hashed as it is formatted.
    fn refuse(&mut self, from: SocketAddr, reason: &dyn std::fmt::Display, now: Instant) {
        use std::hash::{BuildHasher, Hasher};
        struct HashText<H>(H);
        impl<H: Hasher> std::fmt::Write for HashText<H> {
            fn write_str(&mut self, s: &str) -> std::fmt::Result {
                self.0.write(s.as_bytes());
                Ok(())
            }
        }
        let mut h = HashText(self.reasons.build_hasher());
        let _ = std::fmt::write(&mut h, format_args!("{reason}"));
        if self.logged.len() < 10_000
            && self.logged.insert((from.ip(), h.0.finish()))
            && let Some(s) = self.refusal_log.allow(now)
        {
            self.r.error_log.line(with_suppressed(
                format!("reset path: refused datagrams from {from}: {reason} (logged once)"),
                s,
            ));
        }
    }
}

/// A received datagram: its buffer's index, its length and its source.
type Received = (usize, usize, SocketAddr);

/// Up to [`BATCH`] datagrams in one `recvmmsg`, after waiting up to [`WAKE`] for the
/// first; for each, its buffer, its length (a datagram longer than the buffer shows as
/// `MAX_DATAGRAM + 1`) and its source; with the kernel's drop count as the last datagram
/// carried it (see [`count_drops`]). (The socket may be non-blocking: its send side is
/// shared with the pipeline thread.)
fn recv_batch(
    sock: &UdpSocket,
    bufs: &mut [[u8; MAX_DATAGRAM + 1]],
) -> io::Result<(Vec<Received>, Option<u64>)> {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own.
    if unsafe { libc::poll(&mut pfd, 1, WAKE.as_millis() as libc::c_int) } <= 0 {
        return Ok((Vec::new(), None));
    }
    let n = bufs.len().min(BATCH);
    // Room for one SO_RXQ_OVFL message (a u32) per datagram, aligned for cmsghdr.
    let mut controls = [[0u64; 4]; BATCH];
    let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
        [const { MaybeUninit::uninit() }; BATCH];
    let mut iovs: Vec<libc::iovec> = bufs[..n]
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: zeroed mmsghdr is a valid "no control data" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (((m, addr), iov), control) in msgs
        .iter_mut()
        .zip(addrs.iter_mut())
        .zip(iovs.iter_mut())
        .zip(controls.iter_mut())
    {
        m.msg_hdr.msg_name = addr.as_mut_ptr().cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
        m.msg_hdr.msg_control = control.as_mut_ptr().cast();
        m.msg_hdr.msg_controllen = std::mem::size_of_val(control);
    }
    // SAFETY: every header points at a live buffer and address slot of the right size,
    // all outliving the call.
    let got = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::with_capacity(got as usize);
    let mut drops = None;
    for (i, m) in msgs.iter().take(got as usize).enumerate() {
        // SAFETY: the kernel filled this header's control buffer (msg_controllen says how
        // much of it); the CMSG macros walk only within it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&m.msg_hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                    let n = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<u32>());
                    drops = Some(u64::from(n));
                }
                c = libc::CMSG_NXTHDR(&m.msg_hdr, c);
            }
        }
        // SAFETY: the kernel filled this slot (an IPv4 or IPv6 address on a UDP socket).
        let Some(from) = (unsafe { socket_addr(addrs[i].assume_init_ref()) }) else {
            continue;
        };
        let len = if m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            MAX_DATAGRAM + 1
        } else {
            m.msg_len as usize
        };
        out.push((i, len, from));
    }
    Ok((out, drops))
}

/// The address in `ss`, when it is IPv4 or IPv6.
///
/// # Safety
/// `ss` must have been filled by the kernel for its family.
unsafe fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_receive_reads_every_datagram_and_its_source() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        tx.send_to(&[0; MAX_DATAGRAM + 100], rx.local_addr().unwrap())
            .unwrap();
        let mut bufs = vec![[0u8; MAX_DATAGRAM + 1]; BATCH];
        let mut seen = Vec::new();
        for _ in 0..11 {
            if seen.len() == 11 {
                break;
            }
            seen.extend(recv_batch(&rx, &mut bufs).unwrap().0);
        }
        assert_eq!(seen.len(), 11);
        assert!(seen.iter().all(|&(_, _, f)| f == tx.local_addr().unwrap()));
        assert_eq!(
            seen[10].1,
            MAX_DATAGRAM + 1,
            "a long datagram is seen as too long"
        );
        assert!(size_buffer(&rx).unwrap() > 0);
    }

    #[test]
    fn the_socket_filter_lets_only_the_magic_through() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        attach_filter(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for junk in [b"GET / HTTP/1.0".as_slice(), b"HCN", b"HCN2\x01x", b""] {
            tx.send_to(junk, to).unwrap();
        }
        for good in [b"HCN1".as_slice(), b"HCN1\x00x", b"HCN1\x07x"] {
            tx.send_to(good, to).unwrap();
        }
        let mut bufs = vec![[0u8; MAX_DATAGRAM + 1]; BATCH];
        let got = recv_batch(&rx, &mut bufs).unwrap().0;
        let seen: Vec<&[u8]> = got.iter().map(|&(i, n, _)| &bufs[i][..n]).collect();
        assert_eq!(seen, [b"HCN1".as_slice(), b"HCN1\x00x", b"HCN1\x07x"]);
    }

    #[test]
    fn the_kernels_drop_count_comes_with_the_datagrams() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        count_drops(&rx).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        tx.send_to(b"HCN1 first", to).unwrap();
        let mut bufs = vec![[0u8; MAX_DATAGRAM + 1]; BATCH];
        let (got, drops) = recv_batch(&rx, &mut bufs).unwrap();
        // No drops yet: the kernel attaches no count.
        assert_eq!((got.len(), drops), (1, None));
        // The filter refuses three: the next datagram carries the count.
        attach_filter(&rx).unwrap();
        for _ in 0..3 {
            tx.send_to(b"junk", to).unwrap();
        }
        tx.send_to(b"HCN1 second", to).unwrap();
        let (got, drops) = recv_batch(&rx, &mut bufs).unwrap();
        assert_eq!((got.len(), drops), (1, Some(3)));
    }
}
