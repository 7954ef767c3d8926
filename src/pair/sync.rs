//! State sync over the mlan: the active sends the standby its applied spec, which the
//! standby applies as a reload and answers with its result, and its monitor
//! registrations and the systems that are not normal, which the standby's pipeline
//! takes (PROTOCOL.md, "The mlan").
//!
//! TCP on the mlan address and port (the heartbeat is UDP on the same port number). One
//! request and one answer per connection, each a frame: a 4-byte big-endian length and a
//! JSON body, which with a key is sealed with AES-256-GCM (a key of its own, derived like
//! the heartbeat's; a random nonce per frame). A request is taken only from the peer's
//! name, within 30 s of this clock, with a nonce not seen before; frames are at most
//! [`MAX_FRAME`] bytes and every read and write is bounded. The spec travels as the state
//! file writes it: secret references stay references (each server reads its own files);
//! inline secrets travel sealed, never as clear text on the mlan.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{MAX_SKEW_MS, MlanKey};
use crate::spec::model::Name;

/// The largest frame: twice the 8 MiB spec limit.
pub const MAX_FRAME: usize = 16 << 20;
/// How long one push may take, connection to answer (the standby's reload included).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(20);

/// What the active sends its standby.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecPush {
    pub from: String,
    pub sent_ms: u64,
    pub nonce: u64,
    pub body: PushBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, tag = "kind")]
pub enum PushBody {
    /// The applied spec as the state file holds it.
    Spec { spec: String },
    /// Every monitor registration and every system that is not normal.
    State { state: crate::pipeline::SyncedState },
    /// An operator's `sby restart` / `sby shutdown` / `act shutdown`, run on the other
    /// server: the receiver's daemon restarts (`restart`) or stops.
    Lifecycle { restart: bool },
    /// `act ipdusd`, second half: the sender handed over; the receiver, now active, runs
    /// the PDU-cut test of the sender's outlets and answers when it has ended.
    PduTest {
        mode: crate::pipeline::pdutest::Mode,
        off_time: Option<u64>,
        wait_time: Option<u64>,
    },
    /// `haconn dump` on the sender: the receiver packs its own support archive (as
    /// `haconn dump` would there, its secrets masked) and answers with it in `archive`.
    Dump {},
}

/// The standby's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecAck {
    /// The standby applied it completely.
    pub ok: bool,
    /// Something changed there.
    pub changed: bool,
    /// Why not, or the summary's result line.
    pub message: String,
    /// The receiver's applied spec's [`checksum`] after a spec push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The receiver's support archive (tar.gz, base64) after a dump request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<String>,
}

/// The largest support archive a server sends its peer: base64 makes it a third larger,
/// and the frame must still fit in [`MAX_FRAME`].
pub const MAX_PEER_ARCHIVE: usize = 11 << 20;

/// A short checksum of a spec as the state file holds it (SHA-256, 16 hex digits): the
/// two servers of a pair compare theirs.
pub fn checksum(state_yaml: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(state_yaml.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes (at most {MAX_FRAME})")]
    TooLarge(usize),
    #[error("not sealed with this pair's key (another key, changed on the way, or unsealed)")]
    BadTag,
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("refused: {0}")]
    Refused(String),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

async fn write_frame(s: &mut TcpStream, key: &MlanKey, body: &[u8]) -> Result<(), SyncError> {
    let frame = key.seal(body);
    s.write_all(&(frame.len() as u32).to_be_bytes()).await?;
    s.write_all(&frame).await?;
    s.flush().await?;
    Ok(())
}

async fn read_frame(s: &mut TcpStream, key: &MlanKey) -> Result<Vec<u8>, SyncError> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(SyncError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    key.open(&buf).ok_or(SyncError::BadTag)
}

/// Sends `body` to the peer at `to` and waits (bounded by [`PUSH_TIMEOUT`]) for its
/// answer.
pub async fn push(
    to: SocketAddr,
    from: &Name,
    key: &MlanKey,
    body: PushBody,
    now_ms: u64,
) -> Result<SpecAck, SyncError> {
    push_within(to, from, key, body, now_ms, PUSH_TIMEOUT).await
}

/// [`push`] with another bound (a PDU-cut test takes minutes).
pub async fn push_within(
    to: SocketAddr,
    from: &Name,
    key: &MlanKey,
    body: PushBody,
    now_ms: u64,
    limit: Duration,
) -> Result<SpecAck, SyncError> {
    let exchange = async {
        let mut s = TcpStream::connect(to).await?;
        let body = serde_json::to_vec(&SpecPush {
            from: from.to_string(),
            sent_ms: now_ms,
            nonce: rand::random(),
            body,
        })
        .map_err(|e| SyncError::Malformed(e.to_string()))?;
        write_frame(&mut s, key, &body).await?;
        let answer = read_frame(&mut s, key).await?;
        serde_json::from_slice::<SpecAck>(&answer).map_err(|e| SyncError::Malformed(e.to_string()))
    };
    tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| SyncError::Timeout(limit))?
}

/// Checks pushes: sender, freshness and nonces not seen before (the last 1024).
#[derive(Debug, Default)]
pub struct PushGuard {
    seen: VecDeque<u64>,
}

impl PushGuard {
    pub fn check(&mut self, p: &SpecPush, peer: &Name, now_ms: u64) -> Result<(), String> {
        if p.from != peer.as_str() {
            return Err("not from the peer".into());
        }
        if p.sent_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err("stale (more than 30 s from this clock): replayed or clocks apart".into());
        }
        if self.seen.contains(&p.nonce) {
            return Err("replayed".into());
        }
        if self.seen.len() == 1024 {
            self.seen.pop_front();
        }
        self.seen.push_back(p.nonce);
        Ok(())
    }
}

/// Reads one push from an accepted connection; `answer` decides what to say.
pub async fn serve_one<F, Fut>(
    mut s: TcpStream,
    key: &MlanKey,
    accept: impl FnOnce(SpecPush) -> Result<F, SpecAck>,
) -> Result<(), SyncError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = SpecAck>,
{
    let body = tokio::time::timeout(PUSH_TIMEOUT, read_frame(&mut s, key))
        .await
        .map_err(|_| SyncError::Timeout(PUSH_TIMEOUT))??;
    let push: SpecPush =
        serde_json::from_slice(&body).map_err(|e| SyncError::Malformed(e.to_string()))?;
    let ack = match accept(push) {
        Ok(apply) => apply().await,
        Err(refusal) => refusal,
    };
    let out = serde_json::to_vec(&ack).map_err(|e| SyncError::Malformed(e.to_string()))?;
    tokio::time::timeout(PUSH_TIMEOUT, write_frame(&mut s, key, &out))
        .await
        .map_err(|_| SyncError::Timeout(PUSH_TIMEOUT))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_takes_a_push_once_from_the_peer_while_fresh() {
        let peer = Name::parse("ms01").unwrap();
        let mut g = PushGuard::default();
        let p = SpecPush {
            from: "ms01".into(),
            sent_ms: 1_000_000,
            nonce: 7,
            body: PushBody::Spec {
                spec: String::new(),
            },
        };
        assert_eq!(g.check(&p, &peer, 1_000_100), Ok(()));
        assert_eq!(g.check(&p, &peer, 1_000_100), Err("replayed".into()));
        let other = SpecPush {
            from: "ms03".into(),
            nonce: 8,
            ..p.clone()
        };
        assert!(g.check(&other, &peer, 1_000_100).is_err());
        let old = SpecPush { nonce: 9, ..p };
        assert!(g.check(&old, &peer, 1_000_000 + 30_001).is_err());
    }

    #[tokio::test]
    async fn a_push_is_answered_and_a_wrong_key_is_refused() {
        let key = MlanKey::derive(Some(b"0123456789abcdef"));
        let wrong = MlanKey::derive(Some(b"0123456789abcdeX"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let server_key = key.clone();
        let server = tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..2 {
                let (s, _) = listener.accept().await.unwrap();
                let r = serve_one(s, &server_key, |p| {
                    Ok(move || async move {
                        SpecAck {
                            ok: true,
                            changed: true,
                            checksum: None,
                            archive: None,
                            message: match p.body {
                                PushBody::Spec { spec } => format!("{} bytes", spec.len()),
                                PushBody::State { state } => format!("{}", state.monitors.len()),
                                PushBody::Lifecycle { restart } => format!("{restart}"),
                                PushBody::PduTest { .. } => "pdu".into(),
                                PushBody::Dump {} => "dump".into(),
                            },
                        }
                    })
                })
                .await;
                results.push(r.is_ok());
            }
            results
        });
        let me = Name::parse("ms01").unwrap();
        let spec = |s: String| PushBody::Spec { spec: s };
        let ack = push(at, &me, &key, spec("x".repeat(100)), 5).await.unwrap();
        assert_eq!(ack.message, "100 bytes");
        assert!(push(at, &me, &wrong, spec("y".into()), 5).await.is_err());
        assert_eq!(server.await.unwrap(), [true, false]);
    }
}
