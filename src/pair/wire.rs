//! The mlan heartbeat: one fixed-size datagram each way per interval (PROTOCOL.md,
//! "The mlan").
//!
//! ```text
//! "HCM1" | auth (0 none, 1 HMAC) | sender name (1 length byte + 31 bytes, zero padded)
//!        | incarnation u64 | seq u64 | role u8 | heard flag u8 | heard u64
//!        | sent, ms since the epoch u64 | [HMAC-SHA256 tag, 32 bytes]
//! ```
//! Integers are big-endian. The key is derived from the reset path's cluster key with
//! HKDF-SHA256 (salt `haconn mlan v1`), so the mlan needs no key of its own and a node's
//! key (per-node mode) cannot sign heartbeats. A heartbeat is fresh only within
//! [`MAX_SKEW`] of the receiver's clock; within a run of the peer the sequence numbers
//! must grow (the role core drops older ones), and a run is never older than the one
//! heard before ([`Decoded::incarnation`] is the sender's start time), so a recorded
//! heartbeat cannot be played back to stand for the peer.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::role::{Heartbeat, Role};
use crate::spec::model::Name;

pub const MAGIC: &[u8; 4] = b"HCM1";
const AUTH_NONE: u8 = 0;
const AUTH_HMAC: u8 = 1;
const BODY: usize = 4 + 1 + 32 + 8 + 8 + 1 + 1 + 8 + 8;
const TAG: usize = 32;
/// How far a heartbeat's send time may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 30_000;

/// The mlan keys (or none, with `auth: none`): one signs heartbeats, the other seals the
/// sync frames (AES-256-GCM), each derived on its own from the cluster key.
#[derive(Clone)]
pub struct MlanKey(Option<Keys>);

#[derive(Clone)]
struct Keys {
    beat: [u8; 32],
    seal: [u8; 32],
}

/// The nonce before, the tag after each sealed frame.
pub const SEAL_OVERHEAD: usize = 12 + 16;

impl std::fmt::Debug for MlanKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "MlanKey(********)"
        } else {
            "MlanKey(none)"
        })
    }
}

impl MlanKey {
    /// Derived from the reset path's cluster key; `None` signs nothing.
    pub fn derive(cluster_key: Option<&[u8]>) -> MlanKey {
        MlanKey(cluster_key.map(|k| {
            let kdf = Hkdf::<Sha256>::new(Some(b"haconn mlan v1"), k);
            let expand = |info: &[u8]| {
                let mut okm = [0u8; 32];
                kdf.expand(info, &mut okm)
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
                okm
            };
            Keys {
                beat: expand(b"heartbeat"),
                seal: expand(b"sync"),
            }
        }))
    }

    /// A sync frame's bytes: with a key, a random 96-bit nonce, `body` encrypted with
    /// AES-256-GCM and its 16-byte tag (the spec may hold inline secrets: the mlan sees
    /// none of them); without one, `body` as it is.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::Aead;
        let Some(k) = &self.0 else {
            return body.to_vec();
        };
        let nonce: [u8; 12] = rand::random();
        let sealed = cipher(&k.seal)
            .encrypt(&nonce.into(), body)
            .expect("a sync frame is far below AES-GCM's length limit");
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The body of a frame [`MlanKey::seal`] made with the same key; `None` if it was
    /// made with another key, changed on the way, or is not sealed.
    pub fn open(&self, frame: &[u8]) -> Option<Vec<u8>> {
        use aes_gcm::aead::Aead;
        let Some(k) = &self.0 else {
            return Some(frame.to_vec());
        };
        if frame.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, sealed) = frame.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        cipher(&k.seal).decrypt(&nonce.into(), sealed).ok()
    }

    pub fn signs(&self) -> bool {
        self.0.is_some()
    }

    /// The HMAC-SHA256 tag of `body`, when there is a key.
    pub fn tag(&self, body: &[u8]) -> Option<[u8; 32]> {
        let k = &self.0.as_ref()?.beat;
        let mut m = mac(k);
        m.update(body);
        Some(m.finalize().into_bytes().into())
    }

    /// Whether `tag` is `body`'s (in constant time); always true without a key.
    pub fn verify(&self, body: &[u8], tag: &[u8]) -> bool {
        match &self.0 {
            None => true,
            Some(k) => {
                let mut m = mac(&k.beat);
                m.update(body);
                m.verify_slice(tag).is_ok()
            }
        }
    }
}

fn cipher(key: &[u8; 32]) -> aes_gcm::Aes256Gcm {
    <aes_gcm::Aes256Gcm as aes_gcm::KeyInit>::new(key.into())
}

fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

fn role_byte(r: Role) -> u8 {
    match r {
        Role::Undecided => 0,
        Role::Standby => 1,
        Role::Active => 2,
        Role::Leaving => 3,
    }
}

pub fn encode(from: &Name, beat: &Heartbeat, sent_ms: u64, key: &MlanKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(BODY + TAG);
    out.extend_from_slice(MAGIC);
    out.push(if key.signs() { AUTH_HMAC } else { AUTH_NONE });
    let mut name = [0u8; 32];
    name[0] = from.as_str().len() as u8;
    name[1..=from.as_str().len()].copy_from_slice(from.as_str().as_bytes());
    out.extend_from_slice(&name);
    out.extend_from_slice(&beat.incarnation.to_be_bytes());
    out.extend_from_slice(&beat.seq.to_be_bytes());
    out.push(role_byte(beat.role));
    out.push(u8::from(beat.heard.is_some()));
    out.extend_from_slice(&beat.heard.unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&sent_ms.to_be_bytes());
    if let Some(k) = &key.0 {
        let mut m = mac(&k.beat);
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Why a datagram on the mlan was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a heartbeat (bad magic or length)")]
    Framing,
    #[error("unsigned, but the mlan is authenticated")]
    Unsigned,
    #[error("signed, but the mlan is not authenticated (auth: none here)")]
    UnexpectedSignature,
    #[error("bad signature (another key)")]
    BadTag,
    #[error("malformed field")]
    Malformed,
    #[error("from {0}, not from the peer")]
    NotThePeer(String),
    #[error("sent {0} ms away from this clock (more than 30 s): replayed or clocks apart")]
    Stale(i128),
}

/// Checks framing, signature, sender and freshness; returns the heartbeat.
pub fn decode(
    bytes: &[u8],
    peer: &Name,
    now_ms: u64,
    key: &MlanKey,
) -> Result<Heartbeat, WireError> {
    if bytes.len() < BODY || &bytes[..4] != MAGIC {
        return Err(WireError::Framing);
    }
    match (bytes[4], &key.0) {
        (AUTH_NONE, None) if bytes.len() == BODY => {}
        (AUTH_NONE, Some(_)) => return Err(WireError::Unsigned),
        (AUTH_HMAC, None) => return Err(WireError::UnexpectedSignature),
        (AUTH_HMAC, Some(k)) if bytes.len() == BODY + TAG => {
            let mut m = mac(&k.beat);
            m.update(&bytes[..BODY]);
            m.verify_slice(&bytes[BODY..])
                .map_err(|_| WireError::BadTag)?;
        }
        _ => return Err(WireError::Framing),
    }
    let b = &bytes[5..BODY];
    let len = usize::from(b[0]);
    if len == 0 || len > Name::MAX || b[1 + len..32].iter().any(|&x| x != 0) {
        return Err(WireError::Malformed);
    }
    let name = std::str::from_utf8(&b[1..=len]).map_err(|_| WireError::Malformed)?;
    if name != peer.as_str() {
        return Err(WireError::NotThePeer(
            Name::parse(name).map_or_else(|_| "an invalid name".to_string(), |n| n.to_string()),
        ));
    }
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let incarnation = u64_at(32);
    let seq = u64_at(40);
    let role = match b[48] {
        0 => Role::Undecided,
        1 => Role::Standby,
        2 => Role::Active,
        3 => Role::Leaving,
        _ => return Err(WireError::Malformed),
    };
    let heard = match b[49] {
        0 => None,
        1 => Some(u64_at(50)),
        _ => return Err(WireError::Malformed),
    };
    let sent = u64_at(58);
    let skew = i128::from(sent) - i128::from(now_ms);
    if skew.unsigned_abs() > u128::from(MAX_SKEW_MS) {
        return Err(WireError::Stale(skew));
    }
    Ok(Heartbeat {
        role,
        incarnation,
        seq,
        heard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_frames_are_sealed_and_open_only_with_the_same_key_unchanged() {
        let key = MlanKey::derive(Some(b"0123456789abcdef"));
        let body = b"bmc: {password: s3cret-inline-password}";
        let frame = key.seal(body);
        assert_eq!(frame.len(), body.len() + SEAL_OVERHEAD);
        assert!(
            !frame.windows(6).any(|w| w == b"s3cret"),
            "the clear text is on the wire"
        );
        assert_ne!(key.seal(body), frame, "a fresh nonce per frame");
        assert_eq!(key.open(&frame).as_deref(), Some(&body[..]));
        let other = MlanKey::derive(Some(b"0123456789abcdeX"));
        assert_eq!(other.open(&frame), None);
        for i in [0, 11, 12, frame.len() - 1] {
            let mut bad = frame.clone();
            bad[i] ^= 1;
            assert_eq!(key.open(&bad), None, "byte {i} changed");
        }
        assert_eq!(key.open(&frame[..SEAL_OVERHEAD - 1]), None);
        assert_eq!(key.open(body), None, "an unsealed body");
        // Without a key (auth: none) the body goes as it is.
        let none = MlanKey::derive(None);
        assert_eq!(none.seal(body), body);
        assert_eq!(none.open(body).as_deref(), Some(&body[..]));
    }

    fn beat() -> Heartbeat {
        Heartbeat {
            role: Role::Standby,
            incarnation: 1_700_000_000_000_123,
            seq: 42,
            heard: Some(7),
        }
    }

    #[test]
    fn a_heartbeat_round_trips_signed_and_unsigned() {
        let ms02 = Name::parse("ms02").unwrap();
        for key in [
            MlanKey::derive(Some(b"0123456789abcdef")),
            MlanKey::derive(None),
        ] {
            let bytes = encode(&ms02, &beat(), 1_000_000, &key);
            assert_eq!(decode(&bytes, &ms02, 1_000_500, &key), Ok(beat()));
        }
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let ms01 = Name::parse("ms01").unwrap();
        let ms02 = Name::parse("ms02").unwrap();
        let key = MlanKey::derive(Some(b"0123456789abcdef"));
        let other = MlanKey::derive(Some(b"0123456789abcdeX"));
        let none = MlanKey::derive(None);
        let good = encode(&ms02, &beat(), 1_000_000, &key);
        assert_eq!(
            decode(&good, &ms02, 1_000_000, &other),
            Err(WireError::BadTag)
        );
        assert_eq!(
            decode(&good, &ms02, 1_000_000, &none),
            Err(WireError::UnexpectedSignature)
        );
        let unsigned = encode(&ms02, &beat(), 1_000_000, &none);
        assert_eq!(
            decode(&unsigned, &ms02, 1_000_000, &key),
            Err(WireError::Unsigned)
        );
        assert_eq!(
            decode(&good, &ms01, 1_000_000, &key),
            Err(WireError::NotThePeer("ms02".into()))
        );
        assert_eq!(
            decode(&good, &ms02, 1_000_000 + 30_001, &key),
            Err(WireError::Stale(-30_001))
        );
        let mut flipped = good.clone();
        flipped[60] ^= 1;
        assert_eq!(
            decode(&flipped, &ms02, 1_000_000, &key),
            Err(WireError::BadTag)
        );
        assert_eq!(
            decode(&good[..good.len() - 1], &ms02, 1_000_000, &key),
            Err(WireError::Framing)
        );
        let mut bad_role = unsigned.clone();
        bad_role[5 + 48] = 9;
        assert_eq!(
            decode(&bad_role, &ms02, 1_000_000, &none),
            Err(WireError::Malformed)
        );
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let ms02 = Name::parse("ms02").unwrap();
        let none = MlanKey::derive(None);
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..200 {
            let mut bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if len >= 5 {
                bytes[..4].copy_from_slice(MAGIC);
                bytes[4] = 0;
            }
            let _ = decode(&bytes, &ms02, 0, &none);
        }
    }
}
