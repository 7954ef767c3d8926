//! IPMI 2.0 over LAN (RMCP+): the real [`Bmc`].
//!
//! One session per BMC (address, port, user name), opened on first use and kept for the
//! next calls, so a power query on a warm session is one round trip. Sessions use the
//! spec's cipher suites (17: HMAC-SHA256, 3: HMAC-SHA1; both AES-CBC-128) in the spec's
//! order, a refusal (unauthenticated) moving only that attempt down the list, the BMC key
//! Kg when the spec sets one, and are raised to Operator privilege. Requests are sent
//! again as fresh copies within a bounded deadline, except where a second execution would
//! matter: an NMI or hard reset goes out once; a power off/on reads the state back before
//! another copy (ARCHITECTURE.md, Decisions: IPMI). Any failure — a timeout, a network error, a refusal, or a call dropped
//! mid-request — retires the session (Close Session is sent) and the next call opens a new
//! one, so a late reply is never taken for an answer. `shutdown` closes every session.
//!
//! - `wire`: packets and the key exchange, pure.
//! - `session`: one session: setup, exchanges, reply routing, close.
//!
//! Written in-project on the RustCrypto crates: the IPMI crates measured (ipmi-rs, ipmi)
//! lack cipher suite 17 or the privilege raise, and ipmi-rs takes stale replies for answers.

mod session;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::session::{Credentials, Failure, Resend, Session, TRIES};
use self::wire::CipherSuite;
use super::{BackendError, BackendResult, Bmc, PowerState, device};
use crate::spec::model::Bmc as BmcSpec;

/// Everything one call may take, session setup included; below the pipeline's 5 s bound.
pub const CALL_DEADLINE: Duration = Duration::from_millis(4000);
/// A session unused this long is replaced before use: BMCs drop idle sessions (the IPMI
/// default inactivity timeout is 60 s) and would otherwise leave a call waiting for nothing.
pub const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// How long `shutdown` waits for the BMCs to confirm Close Session.
const CLOSE_DEADLINE: Duration = Duration::from_millis(500);

const NETFN_CHASSIS: u8 = 0x00;
const CMD_GET_CHASSIS_STATUS: u8 = 0x01;
const CMD_CHASSIS_CONTROL: u8 = 0x02;
const CONTROL_POWER_DOWN: u8 = 0x00;
const CONTROL_POWER_UP: u8 = 0x01;
const CONTROL_HARD_RESET: u8 = 0x03;
const CONTROL_DIAGNOSTIC_INTERRUPT: u8 = 0x04;

/// Counters for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    opened: AtomicU64,
    closed: AtomicU64,
    retransmissions: AtomicU64,
    dropped: AtomicU64,
    confirmed: AtomicU64,
    suspect: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpmiStats {
    /// Sessions established.
    pub sessions_opened: u64,
    /// Close Session requests sent.
    pub sessions_closed: u64,
    /// Requests sent again for want of an answer.
    pub retransmissions: u64,
    /// Datagrams received and not taken as an answer (stale, duplicated, forged, malformed).
    pub replies_dropped: u64,
    /// Power controls whose answer was lost and whose effect the power state confirmed.
    pub confirmed_by_state: u64,
    /// Refusals of a suite the same BMC completed an authenticated session with before.
    pub suspect_refusals: u64,
}

/// Which session a call uses: one per BMC address, port and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    addr: SocketAddr,
    user: String,
    /// A reload that changes the suites allowed opens a new session.
    suites: Vec<CipherSuite>,
}

#[derive(Debug, Default)]
enum SlotState {
    #[default]
    Empty,
    /// A call is opening the session; the others wait for `Slot::changed`.
    Opening,
    Open(Arc<Session>),
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<SlotState>,
    changed: Notify,
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sets the slot back to empty (waking the waiters) unless the opening call succeeded.
struct OpeningGuard<'a> {
    slot: &'a Slot,
    opened: Option<Arc<Session>>,
}

impl Drop for OpeningGuard<'_> {
    fn drop(&mut self) {
        *self.slot.lock() = match self.opened.take() {
            Some(s) => SlotState::Open(s),
            None => SlotState::Empty,
        };
        self.slot.changed.notify_waiters();
    }
}

/// The RMCP+ client behind the `Bmc` trait; cheap to create (no socket until first use).
#[derive(Debug, Default)]
pub struct IpmiBmc {
    slots: Mutex<HashMap<SlotKey, Arc<Slot>>>,
    /// (BMC, suite) pairs that completed a fully authenticated session.
    proven: Mutex<HashSet<(SocketAddr, CipherSuite)>>,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IpmiBmc {
    /// Chassis power down, confirmed by the state read back after a lost answer. Not part
    /// of a reset (the pipeline never switches power): kept for the Pacemaker agent's
    /// `off`/`on` actions (issue 16) and tested against `ipmi_sim` now.
    pub async fn power_off(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.set_power(bmc, false).await
    }

    /// Chassis power up; see [`IpmiBmc::power_off`].
    pub async fn power_on(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.set_power(bmc, true).await
    }

    pub fn new() -> Self {
        IpmiBmc::default()
    }

    pub fn stats(&self) -> IpmiStats {
        IpmiStats {
            sessions_opened: self.stats.opened.load(Ordering::Relaxed),
            sessions_closed: self.stats.closed.load(Ordering::Relaxed),
            retransmissions: self.stats.retransmissions.load(Ordering::Relaxed),
            replies_dropped: self.stats.dropped.load(Ordering::Relaxed),
            confirmed_by_state: self.stats.confirmed.load(Ordering::Relaxed),
            suspect_refusals: self.stats.suspect.load(Ordering::Relaxed),
        }
    }

    /// The cipher suite of the open session with this BMC, if there is one.
    pub fn cipher_suite(&self, bmc: &BmcSpec) -> Option<u8> {
        let slot = lock(&self.slots).get(&key(bmc)).cloned()?;
        match &*slot.lock() {
            SlotState::Open(s) => Some(s.suite.number()),
            _ => None,
        }
    }

    fn slot(&self, bmc: &BmcSpec) -> Arc<Slot> {
        lock(&self.slots).entry(key(bmc)).or_default().clone()
    }

    /// A usable session with the BMC: the open one, or a new one (replacing a retired one).
    async fn session(&self, bmc: &BmcSpec, deadline: Instant) -> Result<Arc<Session>, Failure> {
        let slot = self.slot(bmc);
        let retired = loop {
            let changed = slot.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = slot.lock();
                match &*state {
                    SlotState::Open(s) if s.usable(IDLE_LIMIT) => return Ok(s.clone()),
                    SlotState::Opening => {}
                    _ => match std::mem::replace(&mut *state, SlotState::Opening) {
                        SlotState::Open(old) => break Some(old),
                        _ => break None,
                    },
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(Failure::Unreachable(
                    "session setup by another call did not finish in time".into(),
                ));
            }
        };
        let mut guard = OpeningGuard {
            slot: &slot,
            opened: None,
        };
        if let Some(old) = retired {
            old.close_now(&self.stats);
        }
        let session = Arc::new(self.open(bmc, deadline).await?);
        guard.opened = Some(session.clone());
        Ok(session)
    }

    async fn open(&self, bmc: &BmcSpec, deadline: Instant) -> Result<Session, Failure> {
        let addr = SocketAddr::new(bmc.address, bmc.port);
        let password = bmc
            .password
            .resolve()
            .map_err(|e| Failure::Unreachable(format!("cannot use the password: {e}")))?;
        let kg = match &bmc.kg {
            Some(k) => Some(
                k.resolve()
                    .map_err(|e| Failure::Unreachable(format!("cannot use the Kg: {e}")))?
                    .into_bytes(),
            ),
            None => None,
        };
        let creds = Credentials {
            addr,
            user: bmc.username.as_bytes().to_vec(),
            password: password.into_bytes(),
            kg,
        };
        // The spec's order, every time: a refusal is not authenticated (anyone who can send
        // a datagram to us can forge one), so it moves this one attempt to the next suite
        // the operator allowed and is never remembered. Only a fully authenticated session
        // is remembered, and only to name a refusal of that suite as suspect.
        let mut suspect = false;
        for &suite in &bmc.cipher_suites {
            if let Some(s) = session::open(&creds, suite, deadline, &self.stats).await? {
                lock(&self.proven).insert((addr, suite));
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
            if lock(&self.proven).contains(&(addr, suite)) {
                suspect = true;
                self.stats.suspect.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    bmc = %addr,
                    suite = suite.number(),
                    "the BMC refused a cipher suite it completed an authenticated session with \
                     before: a forged refusal, or the BMC was reconfigured"
                );
            }
        }
        Err(Failure::Refused(format!(
            "the BMC refuses {}{}",
            suites_text(&bmc.cipher_suites),
            if suspect {
                "; it authenticated with it before: a forged refusal, or the BMC was reconfigured"
            } else {
                ""
            }
        )))
    }

    /// One command with the BMC's answer, within [`CALL_DEADLINE`]. `what` runs it on a
    /// session and returns the answer's data; a completion code other than 0 is a refusal.
    async fn on_session<F, Fut>(&self, bmc: &BmcSpec, what: F) -> BackendResult<Vec<u8>>
    where
        F: Fn(Arc<Session>, Instant) -> Fut,
        Fut: std::future::Future<Output = Result<wire::IpmiReply, Failure>>,
    {
        let deadline = Instant::now() + CALL_DEADLINE;
        let dev = || device("BMC", bmc.address);
        let fail = |f: Failure| match f {
            Failure::Refused(r) => BackendError::refused(dev(), r),
            Failure::Unreachable(r) => BackendError::unreachable(dev(), with_port(bmc, r)),
            Failure::Poisoned => BackendError::unreachable(dev(), "session lost".to_string()),
        };
        // A session another call retires between our getting it and using it: take the
        // next (`Poisoned` means nothing was sent on it).
        for _ in 0..3 {
            let s = self.session(bmc, deadline).await.map_err(fail)?;
            match what(s.clone(), deadline).await {
                Ok(r) if r.completion == 0 => return Ok(r.data),
                Ok(r) => {
                    s.poison();
                    return Err(BackendError::refused(
                        dev(),
                        wire::completion_text(r.completion),
                    ));
                }
                Err(Failure::Poisoned) => continue,
                Err(f) => {
                    s.poison();
                    return Err(fail(f));
                }
            }
        }
        Err(fail(Failure::Poisoned))
    }

    async fn command(
        &self,
        bmc: &BmcSpec,
        cmd: u8,
        data: &[u8],
        resend: Resend,
    ) -> BackendResult<Vec<u8>> {
        let stats = &self.stats;
        self.on_session(bmc, |s, deadline| async move {
            s.exchange(NETFN_CHASSIS, cmd, data, deadline, stats, resend)
                .await
        })
        .await
    }

    /// A chassis control that must not act twice (NMI, hard reset): sent once, never
    /// repeated (nothing the BMC reports tells whether an unanswered one was carried out).
    async fn control_once(&self, bmc: &BmcSpec, what: u8) -> BackendResult<()> {
        self.command(bmc, CMD_CHASSIS_CONTROL, &[what], Resend::Never)
            .await
            .map(|_| ())
    }

    /// Power down or up: after a try goes unanswered, the power state is read back before
    /// another copy is sent, so a control whose answer was lost is not sent again: the
    /// state shows it was carried out. A copy is sent again only while the state says
    /// otherwise, and then a second power-on (-off) does nothing the first did not.
    async fn set_power(&self, bmc: &BmcSpec, on: bool) -> BackendResult<()> {
        let stats = &self.stats;
        let control = if on {
            CONTROL_POWER_UP
        } else {
            CONTROL_POWER_DOWN
        };
        self.on_session(bmc, |s, deadline| async move {
            let mut call = s.call(NETFN_CHASSIS, CMD_CHASSIS_CONTROL)?;
            let mut sock = s.socket();
            let started = Instant::now();
            for (i, wait) in TRIES.into_iter().enumerate() {
                if Instant::now() >= deadline {
                    break;
                }
                if i > 0 {
                    let status = s
                        .exchange(
                            NETFN_CHASSIS,
                            CMD_GET_CHASSIS_STATUS,
                            &[],
                            deadline,
                            stats,
                            Resend::Fresh,
                        )
                        .await;
                    if let Some(reply) = call.answered() {
                        return Ok(reply);
                    }
                    match status {
                        Ok(r)
                            if r.completion == 0
                                && r.data.first().map(|b| b & 0x01 != 0) == Some(on) =>
                        {
                            // Carried out: answer as the control's own answer would have.
                            call.settle();
                            stats.confirmed.fetch_add(1, Ordering::Relaxed);
                            return Ok(wire::IpmiReply {
                                completion: 0,
                                data: Vec::new(),
                                ..r
                            });
                        }
                        Ok(_) => {}
                        // A copy went out on this session: no other session may send one.
                        Err(Failure::Poisoned) => {
                            return Err(Failure::Unreachable(
                                "the session was retired before the power state could be read \
                                 back; the control was not sent again"
                                    .into(),
                            ));
                        }
                        Err(f) => return Err(f),
                    }
                    stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                    call.send(&mut sock, &[control]).await?;
                } else if !call.send(&mut sock, &[control]).await? {
                    return Err(Failure::Poisoned);
                }
                let until = (Instant::now() + wait).min(deadline);
                if let Some(r) = call.wait(sock.get()?, until, stats).await {
                    return r;
                }
            }
            Err(Failure::Unreachable(format!(
                "no answer within {} ms after {} tr{} (the power state read back between them \
                 did not show it carried out)",
                started.elapsed().as_millis(),
                call.copies,
                if call.copies == 1 { "y" } else { "ies" }
            )))
        })
        .await
        .map(|_| ())
    }
}

/// What the spec allowed, for a refusal: "cipher suite 3 (the only one ...)".
fn suites_text(suites: &[CipherSuite]) -> String {
    match suites {
        [one] => format!(
            "cipher suite {} (the only one the spec's cipherSuites allows)",
            one.number()
        ),
        _ => {
            let n: Vec<String> = suites.iter().map(|c| c.number().to_string()).collect();
            format!(
                "cipher suites {} (all the spec's cipherSuites allows)",
                n.join(" and ")
            )
        }
    }
}

fn key(bmc: &BmcSpec) -> SlotKey {
    SlotKey {
        addr: SocketAddr::new(bmc.address, bmc.port),
        user: bmc.username.clone(),
        suites: bmc.cipher_suites.clone(),
    }
}

/// Names the port in a reason when it is not the standard one (the device names only the
/// address).
fn with_port(bmc: &BmcSpec, reason: String) -> String {
    if bmc.port == 623 || reason.contains(&format!(":{}", bmc.port)) {
        reason
    } else {
        format!("{reason} (port {})", bmc.port)
    }
}

#[async_trait]
impl Bmc for IpmiBmc {
    async fn power_state(&self, bmc: &BmcSpec) -> BackendResult<PowerState> {
        let data = self
            .command(bmc, CMD_GET_CHASSIS_STATUS, &[], Resend::Fresh)
            .await?;
        match data.first() {
            Some(b) if b & 0x01 != 0 => Ok(PowerState::On),
            Some(_) => Ok(PowerState::Off),
            None => Err(BackendError::refused(
                device("BMC", bmc.address),
                "Get Chassis Status answered without data",
            )),
        }
    }

    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.control_once(bmc, CONTROL_DIAGNOSTIC_INTERRUPT).await
    }

    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.control_once(bmc, CONTROL_HARD_RESET).await
    }

    async fn power(&self, bmc: &BmcSpec, on: bool) -> BackendResult<()> {
        self.control_once(
            bmc,
            if on {
                CONTROL_POWER_UP
            } else {
                CONTROL_POWER_DOWN
            },
        )
        .await
    }

    /// Closes every open session (in parallel, each bounded) and forgets them.
    async fn shutdown(&self) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).drain().map(|(_, s)| s).collect();
        let sessions: Vec<Arc<Session>> = slots
            .iter()
            .filter_map(|slot| match std::mem::take(&mut *slot.lock()) {
                SlotState::Open(s) => Some(s),
                _ => None,
            })
            .collect();
        let deadline = Instant::now() + CLOSE_DEADLINE;
        let closes = sessions.iter().map(|s| s.close(deadline, &self.stats));
        futures_util::future::join_all(closes).await;
    }
}
