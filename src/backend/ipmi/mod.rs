//! IPMI 2.0 over LAN (RMCP+): the real [`Bmc`].
//!
//! One session per BMC (address, port, user name), opened on first use and kept for the
//! next calls, so a power query on a warm session is one round trip. Sessions use cipher
//! suite 17 (HMAC-SHA256, AES-CBC-128) when the BMC accepts it and 3 (HMAC-SHA1,
//! AES-CBC-128) otherwise (remembered per BMC), the BMC key Kg when the spec sets one, and
//! are raised to Operator privilege. Every request is retransmitted within a bounded
//! deadline; any failure — a timeout, a network error, a refusal, or a call dropped
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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::session::{Credentials, Failure, Session};
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
}

/// Which session a call uses: one per BMC address, port and user.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    addr: SocketAddr,
    user: String,
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
    /// The suite each BMC accepted last (suite 17 is tried first elsewhere).
    suites: Mutex<HashMap<SocketAddr, CipherSuite>>,
    stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IpmiBmc {
    pub fn new() -> Self {
        IpmiBmc::default()
    }

    pub fn stats(&self) -> IpmiStats {
        IpmiStats {
            sessions_opened: self.stats.opened.load(Ordering::Relaxed),
            sessions_closed: self.stats.closed.load(Ordering::Relaxed),
            retransmissions: self.stats.retransmissions.load(Ordering::Relaxed),
            replies_dropped: self.stats.dropped.load(Ordering::Relaxed),
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
        let known = lock(&self.suites).get(&addr).copied();
        let order = match known {
            Some(CipherSuite::Three) => [CipherSuite::Three, CipherSuite::Seventeen],
            _ => [CipherSuite::Seventeen, CipherSuite::Three],
        };
        for suite in order {
            if let Some(s) = session::open(&creds, suite, deadline, &self.stats).await? {
                lock(&self.suites).insert(addr, suite);
                self.stats.opened.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
        }
        Err(Failure::Refused(
            "the BMC offers neither cipher suite 17 nor 3".into(),
        ))
    }

    /// One command with the BMC's answer, within [`CALL_DEADLINE`].
    async fn command(&self, bmc: &BmcSpec, cmd: u8, data: &[u8]) -> BackendResult<Vec<u8>> {
        let deadline = Instant::now() + CALL_DEADLINE;
        let dev = || device("BMC", bmc.address);
        let fail = |f: Failure| match f {
            Failure::Refused(r) => BackendError::refused(dev(), r),
            Failure::Unreachable(r) => BackendError::unreachable(dev(), with_port(bmc, r)),
            Failure::Poisoned => BackendError::unreachable(dev(), "session lost".to_string()),
        };
        // A session another call retires between our getting it and using it: take the next.
        for _ in 0..3 {
            let s = self.session(bmc, deadline).await.map_err(fail)?;
            match s
                .exchange(NETFN_CHASSIS, cmd, data, deadline, &self.stats)
                .await
            {
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

    async fn control(&self, bmc: &BmcSpec, what: u8) -> BackendResult<()> {
        self.command(bmc, CMD_CHASSIS_CONTROL, &[what])
            .await
            .map(|_| ())
    }
}

fn key(bmc: &BmcSpec) -> SlotKey {
    SlotKey {
        addr: SocketAddr::new(bmc.address, bmc.port),
        user: bmc.username.clone(),
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
        let data = self.command(bmc, CMD_GET_CHASSIS_STATUS, &[]).await?;
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
        self.control(bmc, CONTROL_DIAGNOSTIC_INTERRUPT).await
    }

    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.control(bmc, CONTROL_HARD_RESET).await
    }

    async fn power_off(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.control(bmc, CONTROL_POWER_DOWN).await
    }

    async fn power_on(&self, bmc: &BmcSpec) -> BackendResult<()> {
        self.control(bmc, CONTROL_POWER_UP).await
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
