//! One RMCP+ session with one BMC: establishing it (Open Session, RAKP 1–4, Set Session
//! Privilege Level), and request/response exchanges on it.
//!
//! A session owns a UDP socket connected to the BMC (a std socket, non-blocking). Each call
//! wraps a duplicate of it in a tokio socket of the caller's runtime, so a session works
//! from any runtime and never depends on the one that opened it. Concurrent calls share the
//! session: each copy of a request that goes out gets its own session sequence number and
//! rqSeq (a retransmission is a new copy: a strict BMC drops a repeated sequence number as
//! a replay) and registers a waiter for its call; whichever call reads a datagram checks it
//! (session ID, AuthCode, a replay window over the BMC's sequence numbers) and hands it to
//! the call whose copy's rqSeq, netfn and cmd it answers: an answer to any copy answers the
//! call. Anything else is dropped and counted. Whether a call sends more than one copy is
//! the caller's choice ([`Resend`]): a request that must not act twice is sent once.
//!
//! A request that ends without its answer — timeout, socket error, or the caller's future
//! dropped at an await — *poisons* the session: no new request starts on it, and the next
//! call opens a new session (new session IDs, new socket), so a late reply can never be
//! taken for the answer to a later request.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Stats;
use super::wire::{self, CipherSuite, IpmiReply, Keys, OpenSession, Payload};

/// How long each try of one exchange waits before the request is sent again: 4 tries,
/// 2000 ms in all.
pub const TRIES: [Duration; 4] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(500),
    Duration::from_millis(750),
];

/// Privilege we ask for: Operator (Chassis Control needs it, nothing here needs more).
const OPERATOR: u8 = 0x03;
/// RAKP 1 role: Operator, name-only lookup.
const ROLE: u8 = 0x10 | OPERATOR;

const NETFN_APP: u8 = 0x06;
const CMD_SET_SESSION_PRIVILEGE: u8 = 0x3b;
const CMD_CLOSE_SESSION: u8 = 0x3c;

/// Why an exchange or a session setup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No (valid) answer, or the network said no: the BMC cannot be reached.
    Unreachable(String),
    /// The BMC answered no.
    Refused(String),
    /// The session was poisoned by another call before this request could start.
    Poisoned,
}

/// What a session needs to know to open: the address and the resolved credentials.
pub struct Credentials {
    pub addr: SocketAddr,
    pub user: Vec<u8>,
    pub password: Vec<u8>,
    pub kg: Option<Vec<u8>>,
}

/// One copy of a request in flight: the call it belongs to and what answers it.
struct Waiter {
    call: u64,
    netfn: u8,
    cmd: u8,
}

/// A call waiting for an answer to any of its copies.
struct Pending {
    tx: oneshot::Sender<IpmiReply>,
    rq_seqs: Vec<u8>,
}

/// The mutable part of a session, changed only in short synchronous sections.
struct Flow {
    next_seq: u32,
    next_rq_seq: u8,
    next_call: u64,
    /// The copies in flight, by rqSeq.
    waiting: HashMap<u8, Waiter>,
    calls: HashMap<u64, Pending>,
    /// rqSeqs never to use again in this session: copies of a call answered through
    /// another copy, so their own answer may still come and must not match a later request.
    quarantined: u64,
    poisoned: bool,
    /// Highest BMC sequence number accepted and a bitmap of the 64 below it.
    highest: u32,
    seen: u64,
    last_used: Instant,
}

impl Flow {
    /// Whether a BMC sequence number is new (a replayed or duplicated packet is not).
    fn accept(&mut self, seq: u32) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            return true;
        }
        let back = self.highest - seq;
        if back >= 64 || self.seen & (1 << back) != 0 {
            return false;
        }
        self.seen |= 1 << back;
        true
    }
}

/// An established RMCP+ session.
pub struct Session {
    pub addr: SocketAddr,
    pub suite: CipherSuite,
    socket: UdpSocket,
    keys: Keys,
    /// Our session ID: the BMC's replies carry it.
    console_id: u32,
    /// The BMC's session ID: our requests carry it.
    bmc_id: u32,
    flow: Mutex<Flow>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("addr", &self.addr)
            .field("suite", &self.suite.number())
            .field("bmc_id", &format_args!("{:#010x}", self.bmc_id))
            .finish_non_exhaustive()
    }
}

fn io_failure(addr: SocketAddr, e: &std::io::Error) -> Failure {
    use std::io::ErrorKind::*;
    let why = match e.kind() {
        ConnectionRefused => format!("nothing answers on {addr} (connection refused)"),
        HostUnreachable | NetworkUnreachable => format!("no route to {addr}"),
        _ => format!("network error talking to {addr}: {e}"),
    };
    Failure::Unreachable(why)
}

/// A non-blocking UDP socket connected to `addr`.
fn connect(addr: SocketAddr) -> Result<UdpSocket, Failure> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("a literal address")
    } else {
        "[::]:0".parse().expect("a literal address")
    };
    let s = UdpSocket::bind(local).map_err(|e| io_failure(addr, &e))?;
    s.connect(addr).map_err(|e| io_failure(addr, &e))?;
    s.set_nonblocking(true).map_err(|e| io_failure(addr, &e))?;
    Ok(s)
}

/// The std socket as a tokio socket of the current runtime (a duplicate descriptor).
fn tokio_socket(s: &UdpSocket, addr: SocketAddr) -> Result<tokio::net::UdpSocket, Failure> {
    let dup = s.try_clone().map_err(|e| io_failure(addr, &e))?;
    tokio::net::UdpSocket::from_std(dup).map_err(|e| io_failure(addr, &e))
}

/// A session's socket registered with the caller's runtime (a duplicate of its descriptor:
/// sessions are shared by the pipeline's runtime and others), made at first use: a call's
/// first copy goes out on the session's own non-blocking socket, so an NMI does not wait
/// for a `dup` and an epoll registration (a reply that comes first waits in the socket).
pub struct LazySocket<'a> {
    session: &'a Session,
    sock: Option<tokio::net::UdpSocket>,
}

impl LazySocket<'_> {
    pub fn get(&mut self) -> Result<&tokio::net::UdpSocket, Failure> {
        if self.sock.is_none() {
            self.sock = Some(tokio_socket(&self.session.socket, self.session.addr)?);
        }
        Ok(self.sock.as_ref().expect("just made"))
    }
}

fn no_answer(started: Instant, tries: usize, resend: Resend) -> Failure {
    let ms = started.elapsed().as_millis();
    Failure::Unreachable(match resend {
        Resend::Fresh => format!(
            "no answer within {ms} ms after {tries} tr{}",
            if tries == 1 { "y" } else { "ies" }
        ),
        Resend::Never => format!(
            "no answer within {ms} ms; the request may have been carried out, so it was not \
             sent again (a second one could act twice)"
        ),
    })
}

/// Sends `packet` and waits for a datagram `accept` takes, sending again per [`TRIES`]
/// until `deadline`. Used while the session is being set up (one caller, its own socket).
async fn handshake<T>(
    sock: &tokio::net::UdpSocket,
    addr: SocketAddr,
    packet: &[u8],
    deadline: Instant,
    stats: &Stats,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> Result<T, Failure> {
    let started = Instant::now();
    let mut buf = vec![0u8; wire::MAX_PACKET];
    let mut tries = 0;
    for wait in TRIES {
        if Instant::now() >= deadline {
            break;
        }
        if tries > 0 {
            stats.retransmissions.fetch_add(1, Ordering::Relaxed);
        }
        tries += 1;
        sock.send(packet).await.map_err(|e| io_failure(addr, &e))?;
        let until = (Instant::now() + wait).min(deadline);
        loop {
            tokio::select! {
                r = sock.recv(&mut buf) => {
                    let n = r.map_err(|e| io_failure(addr, &e))?;
                    match accept(&buf[..n]) {
                        Some(t) => return Ok(t),
                        None => { stats.dropped.fetch_add(1, Ordering::Relaxed); }
                    }
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
    }
    Err(no_answer(started, tries, Resend::Fresh))
}

fn random_nonzero_u32() -> u32 {
    loop {
        let v: u32 = rand::random();
        if v != 0 {
            return v;
        }
    }
}

/// Opens a session with one cipher suite. `Ok(None)`: the BMC does not offer that suite.
pub async fn open(
    creds: &Credentials,
    suite: CipherSuite,
    deadline: Instant,
    stats: &Stats,
) -> Result<Option<Session>, Failure> {
    let addr = creds.addr;
    let std_sock = connect(addr)?;
    let sock = tokio_socket(&std_sock, addr)?;
    let console_id = random_nonzero_u32();
    let tag: u8 = rand::random();

    let request = wire::outside_session(
        Payload::OpenSessionRequest,
        &wire::open_session_request(tag, OPERATOR, console_id, suite),
    );
    let opened = handshake(&sock, addr, &request, deadline, stats, |p| {
        let body = wire::parse_outside_session(p, Payload::OpenSessionResponse).ok()?;
        wire::parse_open_session_response(body, tag, console_id, suite).ok()
    })
    .await?;
    let bmc_id = match opened {
        OpenSession::Accepted { bmc_id } => bmc_id,
        OpenSession::Refused { status } if wire::suite_refused(status) => return Ok(None),
        OpenSession::Refused { status } => {
            return Err(Failure::Refused(format!(
                "Open Session refused: {}",
                wire::status_text(status)
            )));
        }
    };

    let mut console_random = [0u8; 16];
    rand::fill(&mut console_random);
    let x = wire::Exchange {
        suite,
        tag,
        console_id,
        bmc_id,
        console_random,
        role: ROLE,
        user: creds.user.clone(),
    };
    let rakp1 = wire::outside_session(Payload::Rakp1, &x.rakp1());
    let r2 = handshake(&sock, addr, &rakp1, deadline, stats, |p| {
        let body = wire::parse_outside_session(p, Payload::Rakp2).ok()?;
        x.parse_rakp2(body).ok()
    })
    .await?
    .map_err(|status| {
        Failure::Refused(format!(
            "authentication failed: RAKP 2 says {}",
            wire::status_text(status)
        ))
    })?;
    if !x.rakp2_valid(&creds.password, &r2) {
        // Tell the BMC to drop the half-open session; no answer is expected.
        let rakp3 = wire::outside_session(Payload::Rakp3, &x.rakp3(&creds.password, &r2, 0x0f));
        let _ = sock.send(&rakp3).await;
        return Err(Failure::Refused(
            "wrong password (RAKP 2 HMAC mismatch)".into(),
        ));
    }
    let sik = x.sik(creds.kg.as_deref().unwrap_or(&creds.password), &r2);
    let rakp3 = wire::outside_session(Payload::Rakp3, &x.rakp3(&creds.password, &r2, 0));
    let checked = handshake(&sock, addr, &rakp3, deadline, stats, |p| {
        let body = wire::parse_outside_session(p, Payload::Rakp4).ok()?;
        x.check_rakp4(body, &sik, &r2).ok()
    })
    .await?;
    match checked {
        Ok(true) => {}
        Ok(false) => {
            return Err(Failure::Refused(
                "RAKP 4 integrity check failed (wrong BMC key Kg?)".into(),
            ));
        }
        Err(status) => {
            return Err(Failure::Refused(format!(
                "authentication failed: RAKP 4 says {}",
                wire::status_text(status)
            )));
        }
    }

    let session = Session {
        addr,
        suite,
        socket: std_sock,
        keys: wire::Keys::derive(suite, &sik),
        console_id,
        bmc_id,
        flow: Mutex::new(Flow {
            next_seq: 1,
            next_rq_seq: 1,
            next_call: 0,
            waiting: HashMap::new(),
            calls: HashMap::new(),
            quarantined: 0,
            poisoned: false,
            highest: 0,
            seen: 0,
            last_used: Instant::now(),
        }),
    };
    // Sessions start at User privilege (§13.14): raise to Operator for Chassis Control.
    let reply = session
        .exchange(
            NETFN_APP,
            CMD_SET_SESSION_PRIVILEGE,
            &[OPERATOR],
            deadline,
            stats,
            Resend::Fresh,
        )
        .await;
    match reply {
        Ok(r) if r.completion == 0 => Ok(Some(session)),
        Ok(r) => {
            session.close_now(stats);
            Err(Failure::Refused(format!(
                "cannot raise the session to Operator privilege: {}",
                wire::completion_text(r.completion)
            )))
        }
        Err(f) => {
            session.close_now(stats);
            Err(f)
        }
    }
}

/// Whether an unanswered request is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Each try sends a new copy (fresh session sequence number and rqSeq); an answer to any
    /// copy answers the call. For requests that do the same however often they run.
    Fresh,
    /// Sent once; every try's wait is for its answer. For a request that must not act
    /// twice (an NMI, a hard reset): its answer may be what was lost.
    Never,
}

/// A request's call on a session: its waiters (one per copy sent) and its answer.
/// Dropped unanswered, it poisons the session: an answer may still come to any copy.
pub struct Call<'a> {
    session: &'a Session,
    id: u64,
    netfn: u8,
    cmd: u8,
    rx: oneshot::Receiver<IpmiReply>,
    /// Copies sent.
    pub copies: usize,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let mut flow = self.session.lock();
        if let Some(p) = flow.calls.remove(&self.id) {
            for q in p.rq_seqs {
                flow.waiting.remove(&q);
            }
            flow.poisoned = true;
        }
    }
}

impl Call<'_> {
    /// Sends a new copy: the next session sequence number and a free rqSeq. The send is
    /// tried under the lock, so the BMC sees our sequence numbers in order; a full socket
    /// buffer is waited out. `Ok(false)`: no rqSeq is free (nothing was sent).
    pub async fn send(&mut self, sock: &mut LazySocket<'_>, data: &[u8]) -> Result<bool, Failure> {
        let s = self.session;
        let (packet, sent) = {
            let mut flow = s.lock();
            let free =
                |f: &Flow, q: u8| f.quarantined & (1 << q) == 0 && !f.waiting.contains_key(&q);
            let Some(rq_seq) = (0..64u8)
                .map(|i| (flow.next_rq_seq + i) & 0x3f)
                .find(|&q| free(&flow, q))
            else {
                // Every rqSeq is in flight or quarantined: this session has served its time.
                flow.poisoned = true;
                return Ok(false);
            };
            let Some(pending) = flow.calls.get_mut(&self.id) else {
                return Ok(false); // answered meanwhile
            };
            pending.rq_seqs.push(rq_seq);
            flow.next_rq_seq = (rq_seq + 1) & 0x3f;
            let seq = flow.next_seq;
            flow.next_seq = flow.next_seq.checked_add(1).unwrap_or(1);
            flow.last_used = Instant::now();
            flow.waiting.insert(
                rq_seq,
                Waiter {
                    call: self.id,
                    netfn: self.netfn,
                    cmd: self.cmd,
                },
            );
            let mut iv = [0u8; 16];
            rand::fill(&mut iv);
            let message = wire::ipmi_request(self.netfn, self.cmd, rq_seq, data);
            let packet = wire::in_session(&s.keys, s.bmc_id, seq, &message, iv);
            let sent = match s.socket.send(&packet) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => return Err(io_failure(s.addr, &e)),
            };
            (packet, sent)
        };
        if !sent {
            sock.get()?
                .send(&packet)
                .await
                .map_err(|e| io_failure(s.addr, &e))?;
        }
        self.copies += 1;
        Ok(true)
    }

    /// Reads (and routes) datagrams until this call is answered or `until`; `None` then.
    pub async fn wait(
        &mut self,
        sock: &tokio::net::UdpSocket,
        until: Instant,
        stats: &Stats,
    ) -> Option<Result<IpmiReply, Failure>> {
        let mut buf = vec![0u8; wire::MAX_PACKET];
        loop {
            tokio::select! {
                biased;
                r = &mut self.rx => return Some(match r {
                    Ok(reply) => Ok(reply),
                    // Only this call's drop removes its sender: not while it waits.
                    Err(_) => Err(Failure::Unreachable("the session was closed".into())),
                }),
                r = sock.recv(&mut buf) => match r {
                    Ok(n) => self.session.route(&buf[..n], stats),
                    Err(e) => return Some(Err(io_failure(self.session.addr, &e))),
                },
                _ = tokio::time::sleep_until(until) => return None,
            }
        }
    }

    /// Ends the call unanswered without retiring the session, when its outcome is known by
    /// other means: an answer that still comes to one of its copies is dropped (their
    /// rqSeqs are quarantined).
    pub fn settle(self) {
        let mut flow = self.session.lock();
        if let Some(p) = flow.calls.remove(&self.id) {
            for q in p.rq_seqs {
                flow.waiting.remove(&q);
                flow.quarantined |= 1 << q;
            }
            if flow.quarantined.count_ones() >= 32 {
                flow.poisoned = true;
            }
        }
    }

    /// The answer, if one was routed here while another call read the socket.
    pub fn answered(&mut self) -> Option<IpmiReply> {
        self.rx.try_recv().ok()
    }
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, Flow> {
        self.flow.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn poison(&self) {
        self.lock().poisoned = true;
    }

    /// Whether new requests may use this session: not poisoned, and used within `idle`.
    pub fn usable(&self, idle: Duration) -> bool {
        let flow = self.lock();
        !flow.poisoned && flow.last_used.elapsed() < idle
    }

    /// A new call (nothing sent yet). `Poisoned`: no new request may start here.
    pub fn call(&self, netfn: u8, cmd: u8) -> Result<Call<'_>, Failure> {
        let mut flow = self.lock();
        if flow.poisoned {
            return Err(Failure::Poisoned);
        }
        let id = flow.next_call;
        flow.next_call += 1;
        let (tx, rx) = oneshot::channel();
        flow.calls.insert(
            id,
            Pending {
                tx,
                rq_seqs: Vec::new(),
            },
        );
        Ok(Call {
            session: self,
            id,
            netfn,
            cmd,
            rx,
            copies: 0,
        })
    }

    /// This session's socket on the caller's runtime, made when first needed.
    pub fn socket(&self) -> LazySocket<'_> {
        LazySocket {
            session: self,
            sock: None,
        }
    }

    /// Checks a datagram and hands it to the call it answers.
    fn route(&self, packet: &[u8], stats: &Stats) {
        let delivered = (|| {
            let p = wire::parse_in_session(&self.keys, packet).ok()?;
            if p.session_id != self.console_id {
                return None;
            }
            let reply = wire::parse_ipmi_reply(&p.message).ok()?;
            let mut flow = self.lock();
            let w = flow.waiting.get(&reply.rq_seq)?;
            let call = w.call;
            if w.netfn | 1 != reply.netfn || w.cmd != reply.cmd || !flow.accept(p.seq) {
                return None;
            }
            let pending = flow.calls.remove(&call)?;
            for &q in &pending.rq_seqs {
                flow.waiting.remove(&q);
                if q != reply.rq_seq {
                    flow.quarantined |= 1 << q;
                }
            }
            // Half the rqSeqs gone: retire the session rather than run short.
            if flow.quarantined.count_ones() >= 32 {
                flow.poisoned = true;
            }
            flow.last_used = Instant::now();
            drop(flow);
            pending.tx.send(reply).ok()
        })();
        if delivered.is_none() {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request and its answer within `deadline`, waiting per [`TRIES`]; after each try
    /// unanswered, a new copy is sent when `resend` allows it.
    pub async fn exchange(
        &self,
        netfn: u8,
        cmd: u8,
        data: &[u8],
        deadline: Instant,
        stats: &Stats,
        resend: Resend,
    ) -> Result<IpmiReply, Failure> {
        let mut call = self.call(netfn, cmd)?;
        let mut sock = self.socket();
        let started = Instant::now();
        for (i, wait) in TRIES.into_iter().enumerate() {
            if Instant::now() >= deadline {
                break;
            }
            if i == 0 {
                if !call.send(&mut sock, data).await? {
                    return Err(Failure::Poisoned); // nothing sent: another session may try
                }
            } else if resend == Resend::Fresh {
                stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                call.send(&mut sock, data).await?;
            }
            let until = (Instant::now() + wait).min(deadline);
            if let Some(r) = call.wait(sock.get()?, until, stats).await {
                return r;
            }
        }
        Err(no_answer(started, call.copies, resend))
    }

    /// Close Session (§22.19), sent without waiting for the answer; the session is unusable.
    pub fn close_now(&self, stats: &Stats) {
        self.poison();
        let packet = self.close_packet();
        stats.closed.fetch_add(1, Ordering::Relaxed);
        let _ = self.socket.send(&packet);
    }

    fn close_packet(&self) -> Vec<u8> {
        let mut flow = self.lock();
        let seq = flow.next_seq;
        flow.next_seq = flow.next_seq.checked_add(1).unwrap_or(1);
        let rq_seq = flow.next_rq_seq;
        flow.next_rq_seq = (rq_seq + 1) & 0x3f;
        drop(flow);
        let mut iv = [0u8; 16];
        rand::fill(&mut iv);
        let message = wire::ipmi_request(
            NETFN_APP,
            CMD_CLOSE_SESSION,
            rq_seq,
            &self.bmc_id.to_le_bytes(),
        );
        wire::in_session(&self.keys, self.bmc_id, seq, &message, iv)
    }

    /// Close Session, waiting (bounded) for the BMC to confirm.
    pub async fn close(&self, deadline: Instant, stats: &Stats) -> Result<(), Failure> {
        if self.lock().poisoned {
            self.close_now(stats);
            return Ok(());
        }
        let r = self
            .exchange(
                NETFN_APP,
                CMD_CLOSE_SESSION,
                &self.bmc_id.to_le_bytes(),
                deadline,
                stats,
                Resend::Fresh,
            )
            .await;
        self.poison();
        stats.closed.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(r) if r.completion == 0 => Ok(()),
            Ok(r) => Err(Failure::Refused(format!(
                "Close Session: {}",
                wire::completion_text(r.completion)
            ))),
            Err(f) => Err(f),
        }
    }
}
