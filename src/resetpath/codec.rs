//! Reset-path datagrams, version 1: framing, authentication, and the messages.
//!
//! A datagram is `HCN1` (4 bytes), an auth byte (0 = none, 1 = HMAC-SHA256), a JSON
//! payload, and — with HMAC — the 32-byte tag of everything before it. The payload
//! carries a millisecond timestamp and a random nonce, which the receiver's
//! [`ReplayGuard`](super::replay::ReplayGuard) checks. PROTOCOL.md documents every message and field.
//!
//! Decoding never panics and never allocates more than the datagram's bounded length.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"HCN1";
/// Largest datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 1400;
const TAG_LEN: usize = 32;
/// Client messages (`check`, `reset`, `stopped`) are padded to at least this many bytes,
/// tag included, with JSON whitespace after the object: the connector never answers with
/// more bytes than it received, and this leaves room for a reply's `reason`.
pub const REQUEST_MIN_LEN: usize = 512;
const AUTH_NONE: u8 = 0;
const AUTH_HMAC: u8 = 1;

/// What a reset request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ResetResult {
    /// Accepted; the final reply follows.
    Accepted,
    /// Reset done (the node dumped or was hard reset).
    Dump,
    /// The target is powered off.
    Poff,
    /// The reset failed, or the requester is being reset, or its pair won.
    Fail,
    /// Bad requester data, unknown target, or the requester was already reset.
    Error,
}

/// States announced to HA monitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AttentionState {
    Dump,
    Reboot,
    Poff,
}

/// Every message of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Message {
    /// HA monitor → haconn: can you reset me now? Registers the monitor.
    Check {
        system: String,
        subsystem: u32,
        /// Where the monitor listens for replies and attention notifications.
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pair: Option<u32>,
    },
    /// haconn → HA monitor.
    CheckReply {
        system: String,
        subsystem: u32,
        resettable: bool,
        /// `bmc`, `pdu`, `esxi`, or `none`.
        via: String,
        /// Both management servers up and synchronized.
        redundant: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// A failure warning of the system's server (`predictiveFailure: …` or
        /// `degradation: …`): it may fail soon; nothing is reset for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning: Option<String>,
    },
    /// HA monitor → haconn: reset `target`.
    Reset {
        /// The requester's request number, echoed in replies and the reset log.
        req: u32,
        system: String,
        subsystem: u32,
        port: u16,
        target_system: String,
        target_subsystem: u32,
    },
    /// haconn → requester.
    ResetReply {
        req: u32,
        target_system: String,
        target_subsystem: u32,
        result: ResetResult,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Dump agent on a node → haconn: the system stopped and its dump started.
    Stopped { system: String, subsystem: u32 },
    /// haconn → dump agent.
    StoppedAck { system: String, subsystem: u32 },
    /// haconn → HA monitors of the cluster: what happened to `system`.
    Attention {
        system: String,
        subsystem: u32,
        state: AttentionState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u32>,
    },
}

impl Message {
    /// The system a client message claims to come from (`None` for the connector's own
    /// messages): what its freshness is remembered under.
    pub fn sender(&self) -> Option<&str> {
        match self {
            Message::Check { system, .. }
            | Message::Reset { system, .. }
            | Message::Stopped { system, .. } => Some(system),
            _ => None,
        }
    }
}

/// A message with its freshness fields. (Unknown fields are refused inside `msg`; serde
/// cannot refuse them beside a flattened field, and the tag covers the whole payload.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version inside the payload too, so a v2 receiver can tell.
    pub v: u32,
    /// Sender's clock, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Random per datagram; with `ts`, what the replay guard remembers.
    pub nonce: u64,
    #[serde(flatten)]
    pub msg: Message,
}

impl Envelope {
    pub fn new(msg: Message) -> Self {
        Envelope {
            v: 1,
            ts: now_ms(),
            nonce: rand::random(),
            msg,
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How datagrams are authenticated on a reset path.
#[derive(Clone)]
pub enum Key {
    None,
    Hmac(Vec<u8>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::None => "Key::None",
            Key::Hmac(_) => "Key::Hmac(********)",
        })
    }
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a haconn datagram")]
    Magic,
    #[error("datagram longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("unsigned datagram on an authenticated reset path")]
    Unsigned,
    #[error("signed datagram on a reset path without a key")]
    UnexpectedSignature,
    #[error("unknown authentication mode {0}")]
    AuthMode(u8),
    #[error("bad authentication tag (wrong key?)")]
    BadTag,
    /// Per-node keys: the payload names no system the connector has a key for.
    #[error("signed by no system of the spec (unknown or missing `system`)")]
    UnknownSender,
    #[error("malformed payload: {0}")]
    Payload(String),
    #[error("unsupported protocol version {0}")]
    Version(u32),
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Frames and (with a key) signs an envelope.
pub fn encode(env: &Envelope, key: &Key) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(MAGIC);
    out.push(match key {
        Key::None => AUTH_NONE,
        Key::Hmac(_) => AUTH_HMAC,
    });
    serde_json::to_writer(&mut out, env).expect("envelopes serialize");
    if env.msg.sender().is_some() {
        let tag = if matches!(key, Key::Hmac(_)) {
            TAG_LEN
        } else {
            0
        };
        out.resize(out.len().max(REQUEST_MIN_LEN - tag), b' ');
    }
    if let Key::Hmac(k) = key {
        let mut m = mac(k);
        m.update(&out);
        out.extend_from_slice(&m.finalize().into_bytes());
    }
    out
}

/// Frames a connector's reply in at most `limit` bytes (and never more than
/// [`MAX_DATAGRAM`]): a `reason` that does not fit is cut (ending in `...`) or left out,
/// then a check reply's `warning`. `None` when even that does not fit: the reply must not
/// be sent.
pub fn encode_within(mut env: Envelope, key: &Key, limit: usize) -> Option<Vec<u8>> {
    let limit = limit.min(MAX_DATAGRAM);
    loop {
        let bytes = encode(&env, key);
        if bytes.len() <= limit {
            return Some(bytes);
        }
        let over = bytes.len() - limit;
        let reason = match &mut env.msg {
            Message::CheckReply {
                reason, warning, ..
            } => {
                if reason.is_some() {
                    reason
                } else {
                    warning
                }
            }
            Message::ResetReply { reason, .. } => reason,
            _ => return None,
        };
        let r = reason.as_mut()?;
        // Cut by the encoded length (escapes count), leaving room for the marker.
        let encoded: usize = r.chars().map(json_len).sum();
        let Some(budget) = encoded.checked_sub(over + 3).filter(|&b| b > 0) else {
            *reason = None;
            continue;
        };
        let mut used = 0;
        let keep = r
            .char_indices()
            .find(|&(_, c)| {
                used += json_len(c);
                used > budget
            })
            .map_or(r.len(), |(i, _)| i);
        r.truncate(keep);
        r.push_str("...");
    }
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The mode byte and what follows it, after the length and the magic.
fn frame(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLong);
    }
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::Magic)?;
    let (&mode, rest) = rest.split_first().ok_or(DecodeError::Magic)?;
    Ok((mode, rest))
}

/// Checks framing and authentication with the key of the system the datagram claims to
/// come from (the payload's top-level `system`, found by [`claimed_sender`] before
/// anything is parsed), then parses; the parsed message must claim that same system.
/// `key_of` gives a system's key (`None`: no such system). Per-node keys (PROTOCOL.md).
pub fn decode_claimed<'k>(
    bytes: &[u8],
    key_of: impl FnOnce(&str) -> Option<&'k Key>,
) -> Result<Envelope, DecodeError> {
    let (mode, rest) = frame(bytes)?;
    match mode {
        AUTH_HMAC if rest.len() < TAG_LEN => Err(DecodeError::BadTag),
        AUTH_HMAC => {
            let payload = &rest[..rest.len() - TAG_LEN];
            let sender = claimed_sender(payload).ok_or(DecodeError::UnknownSender)?;
            let key = key_of(sender).ok_or(DecodeError::UnknownSender)?;
            if !matches!(key, Key::Hmac(_)) {
                return Err(DecodeError::UnexpectedSignature);
            }
            let env = decode(bytes, key)?;
            // The tag was checked with `sender`'s key: the message must be `sender`'s.
            if env.msg.sender() != Some(sender) {
                return Err(DecodeError::UnknownSender);
            }
            Ok(env)
        }
        AUTH_NONE => Err(DecodeError::Unsigned),
        other => Err(DecodeError::AuthMode(other)),
    }
}

/// The value of the top-level `"system"` member of a JSON object, without parsing it
/// into anything or allocating: `None` when there is none, when it is not a string of
/// letters and digits (no escapes), or when the text is not a well-nested object. Only a
/// hint of whose key to try: the caller checks the parsed message names the same system.
pub fn claimed_sender(payload: &[u8]) -> Option<&str> {
    let ws = |i: &mut usize| {
        while payload.get(*i).is_some_and(|b| b" \t\r\n".contains(b)) {
            *i += 1;
        }
    };
    // The end of the string starting at `i` (on its opening quote): the index past its
    // closing quote.
    let string_end = |mut i: usize| -> Option<usize> {
        i += 1;
        loop {
            match *payload.get(i)? {
                b'"' => return Some(i + 1),
                b'\\' => i += 2,
                _ => i += 1,
            }
        }
    };
    let mut i = 0;
    ws(&mut i);
    if payload.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        ws(&mut i);
        if payload.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &payload[i + 1..key_end - 1];
        i = key_end;
        ws(&mut i);
        if payload.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let value = i;
        // Skip the value: a string, or anything up to the `,` or `}` at this depth.
        let mut depth = 0usize;
        loop {
            match *payload.get(i)? {
                b'"' => i = string_end(i)?,
                b'{' | b'[' => {
                    depth += 1;
                    i += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    i += 1;
                }
                b',' | b'}' if depth == 0 => break,
                _ => i += 1,
            }
        }
        if key == b"system" {
            let text = payload.get(value..i)?.trim_ascii_end();
            let name = text.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
            return std::str::from_utf8(name)
                .ok()
                .filter(|n| crate::spec::model::Name::is_valid(n));
        }
        if payload[i] == b'}' {
            return None;
        }
        i += 1;
    }
}

/// Checks framing and authentication, then parses. Does not check freshness: see
/// [`ReplayGuard`](super::replay::ReplayGuard).
pub fn decode(bytes: &[u8], key: &Key) -> Result<Envelope, DecodeError> {
    let (mode, rest) = frame(bytes)?;
    let payload = match (mode, key) {
        (AUTH_NONE, Key::None) => rest,
        (AUTH_NONE, Key::Hmac(_)) => return Err(DecodeError::Unsigned),
        (AUTH_HMAC, Key::None) => return Err(DecodeError::UnexpectedSignature),
        (AUTH_HMAC, Key::Hmac(k)) => {
            if rest.len() < TAG_LEN {
                return Err(DecodeError::BadTag);
            }
            let (payload, tag) = rest.split_at(rest.len() - TAG_LEN);
            let mut m = mac(k);
            m.update(&bytes[..bytes.len() - TAG_LEN]);
            m.verify_slice(tag).map_err(|_| DecodeError::BadTag)?;
            payload
        }
        (other, _) => return Err(DecodeError::AuthMode(other)),
    };
    let env: Envelope =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Payload(e.to_string()))?;
    if env.v != 1 {
        return Err(DecodeError::Version(env.v));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_msg() -> Envelope {
        Envelope::new(Message::Check {
            system: "node01".into(),
            subsystem: 1,
            port: 20001,
            pair: Some(7),
        })
    }

    #[test]
    fn round_trips_signed_and_unsigned() {
        let env = check_msg();
        let key = Key::Hmac(b"0123456789abcdef".to_vec());
        assert_eq!(decode(&encode(&env, &key), &key).unwrap(), env);
        assert_eq!(decode(&encode(&env, &Key::None), &Key::None).unwrap(), env);
    }

    #[test]
    fn requests_are_padded_and_replies_fit_their_limit() {
        let key = Key::Hmac(b"0123456789abcdef".to_vec());
        for k in [&key, &Key::None] {
            let bytes = encode(&check_msg(), k);
            assert_eq!(bytes.len(), REQUEST_MIN_LEN);
            assert_eq!(decode(&bytes, k).unwrap().msg, check_msg().msg);
        }
        let reply = |reason: &str| {
            let mut e = Envelope::new(Message::ResetReply {
                req: 7,
                target_system: "node02".into(),
                target_subsystem: 2,
                result: ResetResult::Error,
                reason: Some(reason.into()),
            });
            e.nonce = 1 << 63;
            e
        };
        let long = "é\"x".repeat(600);
        let full = encode(&reply(&long), &key).len();
        assert!(full > MAX_DATAGRAM);
        for limit in [MAX_DATAGRAM, 400, 200] {
            let bytes = encode_within(reply(&long), &key, limit).unwrap();
            assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
            let Message::ResetReply { reason, .. } = decode(&bytes, &key).unwrap().msg else {
                panic!("not a reset-reply")
            };
            assert!(reason.unwrap().ends_with("..."));
        }
        // Too small for the reply even without its reason: nothing is sent.
        assert_eq!(encode_within(reply("x"), &key, 100), None);
        let bare = encode(&reply("x"), &key).len() - r#","reason":"x""#.len();
        let bytes = encode_within(reply("a long reason"), &key, bare).unwrap();
        assert!(matches!(
            decode(&bytes, &key).unwrap().msg,
            Message::ResetReply { reason: None, .. }
        ));
    }

    #[test]
    fn the_claimed_sender_is_the_top_level_system_member_only() {
        for (json, want) in [
            (
                r#"{"v":1,"type":"check","system":"node01","port":1}"#,
                Some("node01"),
            ),
            (r#" { "system" : "node01" , "v":1}  "#, Some("node01")),
            (
                r#"{"x":{"system":"inner"},"y":["system","a"],"s":"\"system\":\"fake\"","system":"real01"}"#,
                Some("real01"),
            ),
            (r#"{"target_system":"node02","req":1}"#, None),
            (r#"{"sys\u0074em":"node01"}"#, None),
            (r#"{"system":"no\u0064e01"}"#, None),
            (r#"{"system":"two words"}"#, None),
            (r#"{"system":1}"#, None),
            (r#"{"system":"node01""#, None),
            (r#"["system","node01"]"#, None),
            ("", None),
            (r#"{"a":"\"#, None),
        ] {
            assert_eq!(claimed_sender(json.as_bytes()), want, "{json}");
        }
    }

    #[test]
    fn decode_claimed_verifies_with_the_claimed_systems_key() {
        let k1 = Key::Hmac(b"key of node01 .....".to_vec());
        let k2 = Key::Hmac(b"key of node02 .....".to_vec());
        let key_of = |s: &str| match s {
            "node01" => Some(&k1),
            "node02" => Some(&k2),
            _ => None,
        };
        let env = check_msg();
        assert_eq!(decode_claimed(&encode(&env, &k1), key_of), Ok(env.clone()));
        assert_eq!(
            decode_claimed(&encode(&env, &k2), key_of),
            Err(DecodeError::BadTag)
        );
        assert_eq!(
            decode_claimed(&encode(&env, &Key::None), key_of),
            Err(DecodeError::Unsigned)
        );
        // A payload whose first `system` is not the one serde reads (a duplicate member)
        // is refused, whoever signed it.
        let mut dup = b"HCN1\x01".to_vec();
        dup.extend_from_slice(
            br#"{"v":1,"ts":1,"nonce":1,"type":"check","system":"node01","subsystem":1,"port":2,"system":"node02"}"#,
        );
        let mut m = mac(b"key of node01 .....");
        m.update(&dup);
        dup.extend_from_slice(&m.finalize().into_bytes());
        assert!(decode_claimed(&dup, key_of).is_err());
    }

    #[test]
    fn refuses_wrong_key_tampering_and_mismatched_modes() {
        let env = check_msg();
        let key = Key::Hmac(b"0123456789abcdef".to_vec());
        let other = Key::Hmac(b"fedcba9876543210".to_vec());
        let bytes = encode(&env, &key);
        assert_eq!(decode(&bytes, &other), Err(DecodeError::BadTag));
        let mut tampered = bytes.clone();
        tampered[10] ^= 1;
        assert_eq!(decode(&tampered, &key), Err(DecodeError::BadTag));
        assert_eq!(
            decode(&encode(&env, &Key::None), &key),
            Err(DecodeError::Unsigned)
        );
        assert_eq!(
            decode(&bytes, &Key::None),
            Err(DecodeError::UnexpectedSignature)
        );
        assert_eq!(decode(b"GET / HTTP/1.0", &key), Err(DecodeError::Magic));
        assert_eq!(
            decode(&vec![0u8; MAX_DATAGRAM + 1], &key),
            Err(DecodeError::TooLong)
        );
        assert!(matches!(
            decode(b"HCN1\x00{\"v\":1}", &Key::None),
            Err(DecodeError::Payload(_))
        ));
    }
}
