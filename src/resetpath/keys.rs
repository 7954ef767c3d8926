//! Which key signs and verifies each reset-path datagram (PROTOCOL.md, "Authentication").
//!
//! With `keyMode: perNode` (the default) every system of the spec has a key of its own,
//! derived from the cluster key and the system's name with HKDF-SHA256 ([`node_key`]); a
//! datagram is verified with the key of the system it claims to come from, and the
//! connector's replies and notifications to a monitor are signed with that monitor's key.
//! A node holding its own key can therefore sign only as itself. With `keyMode: shared`
//! every node holds the cluster key itself (weaker: any node can sign as any other).
//!
//! A [`KeyRing`] is built once per committed spec, never per datagram: the HKDF extract
//! step is done once, each system's key is expanded when the system first appears, and a
//! lookup by name is one hash-map probe.

use std::collections::HashMap;
use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;

use super::codec::{self, DecodeError, Envelope, Key};
use crate::spec::model::{KeyMode, Name, Spec};

/// HKDF salt of every per-node key (ASCII).
pub const SALT: &[u8] = b"haconn reset path v1";
/// HKDF info of a per-node key: this (ASCII), then the system's name.
pub const INFO_PREFIX: &[u8] = b"haconn node key:";
/// Bytes of HKDF output; the node key is their lowercase hex (twice as many characters).
pub const OKM_LEN: usize = 32;

/// The cluster key's HKDF extract step, reused for every system.
#[derive(Clone)]
struct Deriver(Hkdf<Sha256>);

impl Deriver {
    fn new(master: &[u8]) -> Deriver {
        Deriver(Hkdf::<Sha256>::new(Some(SALT), master))
    }

    /// The key text `system` holds: 64 lowercase hex digits.
    fn text(&self, system: &str) -> String {
        let mut okm = [0u8; OKM_LEN];
        self.0
            .expand_multi_info(&[INFO_PREFIX, system.as_bytes()], &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut out = String::with_capacity(2 * OKM_LEN);
        for b in okm {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        out
    }
}

/// The key `system` holds under cluster key `master` in per-node mode, as its key file
/// holds it (without the newline): the lowercase hex of
/// HKDF-SHA256(salt = [`SALT`], IKM = `master`, info = [`INFO_PREFIX`] ‖ `system`, L = 32).
/// Its 64 ASCII bytes are the HMAC key, as a shared key's bytes are.
pub fn node_key(master: &[u8], system: &str) -> String {
    Deriver::new(master).text(system)
}

/// The keys of a reset path for one spec.
#[derive(Clone)]
pub struct KeyRing(Ring);

#[derive(Clone)]
enum Ring {
    /// `auth: none`.
    Unsigned(Key),
    /// `keyMode: shared`: one key for every system.
    Shared(Key),
    /// `keyMode: perNode`: a key per system of the spec.
    PerNode {
        deriver: Deriver,
        keys: HashMap<Name, Key>,
    },
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Ring::Unsigned(_) => f.write_str("KeyRing::Unsigned"),
            Ring::Shared(_) => f.write_str("KeyRing::Shared(********)"),
            Ring::PerNode { keys, .. } => write!(f, "KeyRing::PerNode({} keys)", keys.len()),
        }
    }
}

/// Every HA monitor system of `spec`, by name.
fn system_names(spec: &Spec) -> impl Iterator<Item = &Name> {
    spec.servers.values().flat_map(|s| match &s.esxi {
        None => std::slice::from_ref(&s.name).iter(),
        Some(e) => e.guests.iter(),
    })
}

impl KeyRing {
    /// A reset path without authentication.
    pub fn unsigned() -> KeyRing {
        KeyRing(Ring::Unsigned(Key::None))
    }

    /// The ring for cluster key `master` (never empty: the caller refuses an empty key),
    /// with a key for every system of `spec` in per-node mode.
    pub fn new(master: &[u8], mode: KeyMode, spec: &Spec) -> KeyRing {
        match mode {
            KeyMode::Shared => KeyRing(Ring::Shared(Key::Hmac(master.to_vec()))),
            KeyMode::PerNode => {
                let ring = KeyRing(Ring::PerNode {
                    deriver: Deriver::new(master),
                    keys: HashMap::new(),
                });
                ring.for_spec(spec).unwrap_or(ring)
            }
        }
    }

    /// The ring for a newly committed `spec`: keys of the systems it keeps are reused,
    /// new systems' keys derived. `None` when this ring already fits it exactly.
    pub fn for_spec(&self, spec: &Spec) -> Option<KeyRing> {
        let Ring::PerNode { deriver, keys } = &self.0 else {
            return None;
        };
        let fits = keys.len() == spec.systems()
            && system_names(spec).all(|n| keys.contains_key(n.as_str()));
        if fits {
            return None;
        }
        let keys = system_names(spec)
            .map(|n| {
                let k = keys
                    .get(n.as_str())
                    .cloned()
                    .unwrap_or_else(|| Key::Hmac(deriver.text(n.as_str()).into_bytes()));
                (n.clone(), k)
            })
            .collect();
        Some(KeyRing(Ring::PerNode {
            deriver: deriver.clone(),
            keys,
        }))
    }

    /// Whether each system has a key of its own.
    pub fn per_node(&self) -> bool {
        matches!(self.0, Ring::PerNode { .. })
    }

    /// The key that signs datagrams to and from `system`: its own in per-node mode
    /// (`None` for a name the spec does not hold), the one key otherwise.
    pub fn key_for(&self, system: &str) -> Option<&Key> {
        match &self.0 {
            Ring::Unsigned(k) | Ring::Shared(k) => Some(k),
            Ring::PerNode { keys, .. } => keys.get(system),
        }
    }

    /// Checks framing and authentication — in per-node mode with the key of the system
    /// the datagram claims to come from — then parses.
    pub fn decode(&self, bytes: &[u8]) -> Result<Envelope, DecodeError> {
        match &self.0 {
            Ring::Unsigned(k) | Ring::Shared(k) => codec::decode(bytes, k),
            Ring::PerNode { keys, .. } => codec::decode_claimed(bytes, |s| keys.get(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resetpath::codec::{Message, encode};
    use crate::spec::{CheckOptions, check_bytes};

    /// The derivation as PROTOCOL.md states it, pinned: another implementation must
    /// produce this key for this cluster key and system.
    #[test]
    fn node_key_test_vector() {
        assert_eq!(
            node_key(b"haconn-test-key-0123456789", "labnode01"),
            "dcdfdf1acf135380c5ee89b892ca88a649e7b997bcd9e864d7807fdeb4eff328"
        );
    }

    /// The same derivation, written out with the HMAC primitive alone (RFC 5869:
    /// PRK = HMAC(salt, IKM); OKM = HMAC(PRK, info ‖ 0x01) for one block).
    #[test]
    fn node_key_is_rfc5869_hkdf_sha256() {
        use hmac::{Hmac, KeyInit, Mac};
        let hmac = |k: &[u8], parts: &[&[u8]]| {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(k).unwrap();
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes()
        };
        let master = b"another cluster key, 32 chars..";
        let prk = hmac(SALT, &[master]);
        let okm = hmac(&prk, &[INFO_PREFIX, b"vm01", &[1]]);
        let hex: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(node_key(master, "vm01"), hex);
        assert_ne!(node_key(master, "vm01"), node_key(master, "vm02"));
    }

    const SPEC: &str = "apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: {key: KEY}}
managementServers:
  - name: ms1
    bmc: {address: 127.0.0.2, username: admin, password: passw0rd}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - name: node01
    bmc: {address: 127.0.1.1, username: admin, password: passw0rd}
  - name: node02
    bmc: {address: 127.0.1.2, username: admin, password: passw0rd}
";

    fn spec(text: &str) -> Spec {
        let c = check_bytes(
            text.replace("KEY", "0123456789abcdef").as_bytes(),
            CheckOptions::default(),
        );
        c.spec
            .unwrap_or_else(|| panic!("test spec invalid: {:?}", c.diagnostics))
    }

    fn check(system: &str) -> Envelope {
        Envelope::new(Message::Check {
            system: system.into(),
            subsystem: 1,
            port: 20001,
            pair: None,
        })
    }

    #[test]
    fn per_node_a_datagram_verifies_only_with_the_key_of_the_system_it_claims() {
        let s = spec(SPEC);
        let ring = KeyRing::new(b"0123456789abcdef", KeyMode::PerNode, &s);
        let k1 = ring.key_for("node01").unwrap().clone();
        let k2 = ring.key_for("node02").unwrap().clone();
        assert!(ring.key_for("ghost01").is_none());
        // node01 signing as node01: accepted.
        let env = check("node01");
        assert_eq!(ring.decode(&encode(&env, &k1)), Ok(env));
        // node02's key claiming to be node01: refused, and the other way round.
        assert_eq!(
            ring.decode(&encode(&check("node01"), &k2)),
            Err(DecodeError::BadTag)
        );
        assert_eq!(
            ring.decode(&encode(&check("node02"), &k1)),
            Err(DecodeError::BadTag)
        );
        // The cluster key itself is no node's key.
        let master = Key::Hmac(b"0123456789abcdef".to_vec());
        assert_eq!(
            ring.decode(&encode(&check("node01"), &master)),
            Err(DecodeError::BadTag)
        );
        // A system the spec does not hold has no key.
        assert_eq!(
            ring.decode(&encode(&check("ghost01"), &k1)),
            Err(DecodeError::UnknownSender)
        );
    }

    #[test]
    fn key_mode_defaults_to_per_node_and_shared_is_warned_about() {
        use crate::spec::model::Auth;
        let mode = |text: &str| match spec(text).reset_path.auth {
            Auth::Hmac(_, m) => m,
            Auth::None => panic!("no key"),
        };
        assert_eq!(mode(SPEC), KeyMode::PerNode);
        let shared = SPEC.replace("auth: {key: KEY}", "auth: {key: KEY, keyMode: shared}");
        assert_eq!(mode(&shared), KeyMode::Shared);
        let c = check_bytes(
            shared.replace("KEY", "0123456789abcdef").as_bytes(),
            CheckOptions::default(),
        );
        assert!(
            c.diagnostics
                .iter()
                .any(|d| format!("{d:?}").contains("keyMode: shared")),
            "{:?}",
            c.diagnostics
        );
        let bogus = SPEC.replace("auth: {key: KEY}", "auth: {key: KEY, keyMode: perHost}");
        let c = check_bytes(
            bogus.replace("KEY", "0123456789abcdef").as_bytes(),
            CheckOptions::default(),
        );
        assert!(c.spec.is_none(), "keyMode: perHost accepted");
    }

    #[test]
    fn shared_mode_accepts_the_cluster_key_for_any_system() {
        let s = spec(SPEC);
        let ring = KeyRing::new(b"0123456789abcdef", KeyMode::Shared, &s);
        let master = Key::Hmac(b"0123456789abcdef".to_vec());
        for system in ["node01", "node02", "ghost01"] {
            assert!(ring.decode(&encode(&check(system), &master)).is_ok());
        }
        assert!(!ring.per_node());
        assert!(ring.for_spec(&s).is_none());
    }

    #[test]
    fn a_new_spec_gets_keys_for_new_systems_and_keeps_the_others() {
        let s = spec(SPEC);
        let ring = KeyRing::new(b"0123456789abcdef", KeyMode::PerNode, &s);
        assert!(ring.for_spec(&s).is_none(), "same systems: nothing to do");
        let more = spec(&format!(
            "{SPEC}  - name: node03\n    bmc: {{address: 127.0.1.3, username: admin, password: passw0rd}}\n"
        ));
        let next = ring.for_spec(&more).expect("a system was added");
        let key = |r: &KeyRing, n| match r.key_for(n) {
            Some(Key::Hmac(k)) => String::from_utf8(k.clone()).unwrap(),
            _ => panic!("no key for {n}"),
        };
        assert_eq!(key(&next, "node01"), key(&ring, "node01"));
        assert_eq!(
            key(&next, "node03"),
            node_key(b"0123456789abcdef", "node03")
        );
        // And back: node03's key goes with it.
        assert!(next.for_spec(&s).unwrap().key_for("node03").is_none());
    }
}
