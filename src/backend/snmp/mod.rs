//! SNMP v2c switched PDUs: outlet off / on / state, firmware version and outlet count.
//!
//! Owns the only SNMP I/O of haconn. Each request is bounded: a deadline per try, a bounded
//! number of tries, and every try on a **fresh UDP socket with a fresh request id**, so a
//! reply that arrives late (a PDU paused, a try given up, a caller's future dropped at an
//! await) goes to a closed port and can never be read as the answer to a later request.
//! A datagram is an answer only if it is a v2c response with this try's request id and
//! community naming exactly the requested OIDs (`wire::judge`); an error-status or a
//! noSuchObject/noSuchInstance in place of a value is a refusal, never a success.
//!
//! Why not snmp2's sessions (0.5.3): `SyncSession` blocks and advances its request id only
//! after a success, so after a timeout the next call can take the previous reply as its own.
//! `AsyncSession` reserves ids before I/O and rejects a mismatched id, but does not drop the
//! stale datagram (each later call fails with `RequestIdMismatch` until the queue drains),
//! has no timeout, allows one request in flight, carries two 64 KiB inline buffers (stack
//! hungry without the `heap_buffers` feature) and binds its socket to the runtime that made
//! it. Its encoder is crate-private, so requests are encoded in [`wire`]; replies go through
//! snmp2's public decoder (`Pdu::from_bytes`).
//!
//! Sockets are made inside each call, never in [`SnmpPdu::new`], on whatever runtime calls;
//! nothing is shared between calls but the resolved community and a firmware cache (a
//! short synchronous lock), so outlets of one PDU are switched in parallel.

pub(crate) mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::net::UdpSocket;

use super::{BackendError, BackendResult, OutletState, Pdu, PduInfo, device};
use crate::spec::model::Pdu as PduSpec;
use crate::spec::pdu_model::{OidValues, PduModel};
use crate::spec::secret::Secret;
use wire::{AgentError, Answer, Oid, Request, Verdict};

/// How long SNMP calls wait; [`SnmpTiming::default`] is what the daemon uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnmpTiming {
    /// How long one try waits for its reply.
    pub try_timeout: Duration,
    /// Tries per request (each on a fresh socket with a fresh request id).
    pub tries: u32,
    /// How long `set_outlet` reads the state back after the SET before giving up.
    pub settle: Duration,
    /// The first pause between read-backs; it doubles up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// How long a firmware version read for the model's variant columns is trusted.
    pub firmware_ttl: Duration,
}

impl Default for SnmpTiming {
    fn default() -> Self {
        SnmpTiming {
            try_timeout: Duration::from_millis(500),
            tries: 3,
            settle: Duration::from_secs(10),
            poll_first: Duration::from_millis(10),
            poll_max: Duration::from_millis(250),
            firmware_ttl: Duration::from_secs(60),
        }
    }
}

/// Pause after an ICMP "port unreachable" before the next try (an agent restarting).
const REFUSED_PAUSE: Duration = Duration::from_millis(100);
/// Replies are a few hundred bytes; a larger datagram is truncated and then not ours.
const RECV_BUFFER: usize = 8192;

/// The real [`Pdu`] backend.
pub struct SnmpPdu {
    community: Option<Secret>,
    /// The community's value, read once (`{file:}`/`{env:}` references too).
    resolved: OnceLock<Vec<u8>>,
    timing: SnmpTiming,
    next_id: AtomicU32,
    /// Firmware per agent, for models whose columns depend on it (IBM sLEN).
    firmware: Mutex<HashMap<SocketAddr, (Instant, String)>>,
}

impl std::fmt::Debug for SnmpPdu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Secret`'s Debug masks inline values; the resolved value is never shown.
        f.debug_struct("SnmpPdu")
            .field("community", &self.community)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl SnmpPdu {
    /// `community` is the spec's `snmp.community` (fixed for the daemon's life: changing it
    /// needs a restart).
    pub fn new(community: Option<Secret>) -> Self {
        SnmpPdu::with_timing(community, SnmpTiming::default())
    }

    pub fn with_timing(community: Option<Secret>, timing: SnmpTiming) -> Self {
        // Request ids start somewhere unpredictable so two processes (or a restarted one)
        // talking to one PDU do not walk the same sequence.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32))
            ^ std::process::id().rotate_left(16);
        SnmpPdu {
            community,
            resolved: OnceLock::new(),
            timing,
            next_id: AtomicU32::new(seed),
            firmware: Mutex::new(HashMap::new()),
        }
    }

    fn community(&self, dev: &str) -> BackendResult<&[u8]> {
        if let Some(c) = self.resolved.get() {
            return Ok(c);
        }
        let secret = self.community.as_ref().ok_or_else(|| {
            BackendError::refused(dev, "no SNMP community is configured (snmp.community)")
        })?;
        let value = secret
            .resolve()
            .map_err(|e| BackendError::refused(dev, format!("SNMP community: {e}")))?;
        Ok(self.resolved.get_or_init(|| value.into_bytes()))
    }

    /// A positive request id not used by this backend for the last 2^31 requests.
    fn request_id(&self) -> i32 {
        (self.next_id.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff) as i32
    }

    /// One request with its tries; the values in the order asked.
    async fn request(&self, pdu: &PduSpec, req: Request<'_>) -> BackendResult<Vec<Answer>> {
        let dev = device("PDU", pdu.address);
        let community = self.community(&dev)?;
        let target = SocketAddr::new(pdu.address, pdu.port);
        let asked = req.oids();
        let t = self.timing;
        let mut refused = 0;
        let mut last_io = None;
        for try_no in 1..=t.tries {
            let id = self.request_id();
            let packet = wire::encode(community, id, req);
            let exchange = exchange(target, &packet, community, id, &asked);
            match tokio::time::timeout(t.try_timeout, exchange).await {
                Ok(Ok(Ok(values))) => return Ok(values),
                Ok(Ok(Err(agent))) => return Err(refusal(&dev, &agent)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused += 1;
                    if try_no < t.tries {
                        tokio::time::sleep(REFUSED_PAUSE).await;
                    }
                }
                Ok(Err(e)) => last_io = Some(e),
                Err(_) => {}
            }
        }
        let why = if refused == t.tries {
            format!(
                "nothing listens on UDP port {} (ICMP port unreachable, {} tries)",
                pdu.port, t.tries
            )
        } else if let Some(e) = last_io {
            format!("{e} (after {} tries)", t.tries)
        } else {
            format!(
                "no answer within {} ms after {} tries (wrong community?)",
                (t.try_timeout * t.tries).as_millis(),
                t.tries
            )
        };
        Err(BackendError::unreachable(dev, why))
    }

    /// The firmware string, read again when older than `firmware_ttl`.
    async fn firmware(&self, pdu: &PduSpec, oid: &Oid) -> BackendResult<String> {
        let key = SocketAddr::new(pdu.address, pdu.port);
        if let Some((at, fw)) = self.lock_firmware().get(&key)
            && at.elapsed() < self.timing.firmware_ttl
        {
            return Ok(fw.clone());
        }
        let values = self
            .request(pdu, Request::Get(std::slice::from_ref(oid)))
            .await?;
        let fw = firmware_text(&device("PDU", pdu.address), oid, &values[0])?;
        self.remember_firmware(key, &fw);
        Ok(fw)
    }

    fn lock_firmware(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, (Instant, String)>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.firmware.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember_firmware(&self, key: SocketAddr, fw: &str) {
        self.lock_firmware()
            .insert(key, (Instant::now(), fw.to_string()));
    }

    /// The control and status columns for this PDU (a firmware variant's where one applies).
    async fn columns(&self, pdu: &PduSpec) -> BackendResult<(OidValues, OidValues)> {
        let m = &pdu.model;
        if let (false, Some(fw_oid)) = (m.firmware_variants.is_empty(), &m.firmware_oid) {
            let fw = self.firmware(pdu, &parse_oid(pdu, fw_oid)?).await?;
            if let Some(v) = m
                .firmware_variants
                .iter()
                .find(|v| fw.contains(&v.contains))
            {
                return Ok((v.control.clone(), v.status.clone()));
            }
        }
        Ok((m.control.clone(), m.status.clone()))
    }

    async fn read_state(
        &self,
        pdu: &PduSpec,
        status: &OidValues,
        outlet: u16,
    ) -> BackendResult<OutletState> {
        let oid = cell(pdu, status, outlet)?;
        let values = self
            .request(pdu, Request::Get(std::slice::from_ref(&oid)))
            .await?;
        match values[0] {
            Answer::Integer(v) if v == status.on => Ok(OutletState::On),
            Answer::Integer(v) if v == status.off => Ok(OutletState::Off),
            // IBM cycling (2), Eaton pending, anything between the two states: read again.
            Answer::Integer(_) => Ok(OutletState::Changing),
            ref other => Err(BackendError::refused(
                device("PDU", pdu.address),
                format!("{oid} answered {other}, not an outlet state"),
            )),
        }
    }
}

/// One try: a fresh socket, one datagram out, replies judged until ours arrives. Dropping
/// this future closes the socket, and with it any reply still on the way.
async fn exchange(
    target: SocketAddr,
    packet: &[u8],
    community: &[u8],
    id: i32,
    asked: &[&Oid],
) -> std::io::Result<Result<Vec<Answer>, AgentError>> {
    let local: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone else and reports ICMP errors.
    socket.connect(target).await?;
    socket.send(packet).await?;
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let n = socket.recv(&mut buf).await?;
        if let Verdict::Reply(r) = wire::judge(&buf[..n], community, id, asked) {
            return Ok(r);
        }
    }
}

fn refusal(dev: &str, e: &AgentError) -> BackendError {
    let hint = match e {
        AgentError::Missing { .. } => " (does the PDU model match this PDU?)",
        _ => "",
    };
    BackendError::refused(dev, format!("{e}{hint}"))
}

fn parse_oid(pdu: &PduSpec, text: &str) -> BackendResult<Oid> {
    Oid::parse(text).ok_or_else(|| {
        BackendError::refused(
            device("PDU", pdu.address),
            format!("model {}: `{text}` is not a numeric OID", pdu.model.name),
        )
    })
}

/// The OID of `column` for `outlet` (1-based), checked against the model's outlet count.
fn cell(pdu: &PduSpec, column: &OidValues, outlet: u16) -> BackendResult<Oid> {
    let m = &pdu.model;
    if outlet == 0 || outlet > m.outlets {
        return Err(BackendError::refused(
            device("PDU", pdu.address),
            format!(
                "outlet {outlet} does not exist (model {} has outlets 1–{})",
                m.name, m.outlets
            ),
        ));
    }
    parse_oid(pdu, &PduModel::outlet_oid(column, m.first_index, outlet))
}

fn firmware_text(dev: &str, oid: &Oid, v: &Answer) -> BackendResult<String> {
    match v {
        Answer::Text(t) => Ok(t
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string()),
        other => Err(BackendError::refused(
            dev,
            format!("firmware OID {oid} answered {other}, not a string"),
        )),
    }
}

fn state_name(s: OutletState) -> &'static str {
    match s {
        OutletState::On => "on",
        OutletState::Off => "off",
        OutletState::Changing => "changing",
    }
}

#[async_trait]
impl Pdu for SnmpPdu {
    async fn set_outlet(&self, pdu: &PduSpec, outlet: u16, on: bool) -> BackendResult<()> {
        let (control, status) = self.columns(pdu).await?;
        let oid = cell(pdu, &control, outlet)?;
        let value = if on { control.on } else { control.off };
        self.request(pdu, Request::Set(&[(oid, value)])).await?;

        // The SET is acknowledged; the outlet is switched when the PDU says so.
        let want = if on {
            OutletState::On
        } else {
            OutletState::Off
        };
        let t = self.timing;
        let start = Instant::now();
        let mut pause = t.poll_first;
        loop {
            let seen = self.read_state(pdu, &status, outlet).await;
            let last = match seen {
                Ok(s) if s == want => return Ok(()),
                Ok(s) => state_name(s).to_string(),
                Err(e @ BackendError::Refused { .. }) => return Err(e),
                // The PDU stopped answering for a while: keep reading until the deadline.
                Err(e) => e.to_string(),
            };
            if start.elapsed() + pause > t.settle {
                return Err(BackendError::refused(
                    device("PDU", pdu.address),
                    format!(
                        "outlet {outlet} not {} {} ms after the SET (last read: {last})",
                        state_name(want),
                        start.elapsed().as_millis()
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(t.poll_max);
        }
    }

    async fn outlet_state(&self, pdu: &PduSpec, outlet: u16) -> BackendResult<OutletState> {
        let (_, status) = self.columns(pdu).await?;
        self.read_state(pdu, &status, outlet).await
    }

    async fn info(&self, pdu: &PduSpec) -> BackendResult<PduInfo> {
        let m = &pdu.model;
        let fw_oid = m
            .firmware_oid
            .as_deref()
            .map(|o| parse_oid(pdu, o))
            .transpose()?;
        let count_oid = m
            .outlet_count_oid
            .as_deref()
            .map(|o| parse_oid(pdu, o))
            .transpose()?;
        // Without either OID the state of outlet 1 proves the link (and the model's column).
        let probe = match (&fw_oid, &count_oid) {
            (None, None) => Some(cell(pdu, &m.status, 1)?),
            _ => None,
        };
        let asked: Vec<Oid> = [fw_oid.clone(), count_oid.clone(), probe]
            .into_iter()
            .flatten()
            .collect();
        let values = self.request(pdu, Request::Get(&asked)).await?;
        let dev = device("PDU", pdu.address);
        let mut values = values.iter();
        let mut info = PduInfo::default();
        if let Some(oid) = &fw_oid {
            let fw = firmware_text(&dev, oid, values.next().expect("one value per OID"))?;
            self.remember_firmware(SocketAddr::new(pdu.address, pdu.port), &fw);
            info.firmware = Some(fw);
        }
        if let Some(oid) = &count_oid {
            info.outlets = Some(match values.next().expect("one value per OID") {
                Answer::Integer(n) => u32::try_from(*n).map_err(|_| {
                    BackendError::refused(&dev, format!("outlet count OID {oid} answered {n}"))
                })?,
                other => {
                    return Err(BackendError::refused(
                        &dev,
                        format!("outlet count OID {oid} answered {other}, not a number"),
                    ));
                }
            });
        }
        Ok(info)
    }

    async fn shutdown(&self) {
        // Nothing is kept open between calls.
        self.lock_firmware().clear();
    }
}
