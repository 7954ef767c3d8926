//! Fuzz entry points: arbitrary bytes into each decoder that reads what the network (or an
//! operator's file) sends. None may panic, whatever the bytes.
//!
//! The cargo-fuzz targets in `fuzz/` call these; so does the stable-Rust runner below
//! (`scripts/fuzz` uses it where cargo-fuzz is missing), and the unit tests run each on a
//! few thousand inputs in every `cargo test`. Not used by the daemon.

use crate::alert::{self, pet, trap};
use crate::backend::ipmi::wire as ipmi;
use crate::backend::snmp::wire as snmp;
use crate::resetpath::codec;

/// A fuzz target: bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/*.rs` and `scripts/fuzz` name them.
pub const TARGETS: [(&str, Target); 5] = [
    ("spec_loader", spec_loader),
    ("datagram", datagram),
    ("ipmi_replies", ipmi_replies),
    ("snmp_judge", snmp_judge),
    ("snmp_trap", snmp_trap),
];

/// The spec loader: loading, validating and re-rendering a spec.
pub fn spec_loader(data: &[u8]) {
    crate::fuzz_spec_loader(data);
}

/// The reset-path datagram decoder, with and without a key. The bytes also go in as the
/// payload of an unsigned frame, so the JSON parser is reached without the framing having
/// to be found first; whatever decodes must encode and decode back to the same envelope.
pub fn datagram(data: &[u8]) {
    let key = codec::Key::Hmac(b"fuzz-reset-path-key-0123".to_vec());
    let _ = codec::decode(data, &key);
    let _ = codec::decode(data, &codec::Key::None);
    // Per-node keys: the sender is found in the payload before the tag is checked.
    let _ = codec::decode_claimed(data, |_| Some(&key));
    let _ = codec::claimed_sender(data);

    let mut framed = Vec::with_capacity(data.len() + 5);
    framed.extend_from_slice(codec::MAGIC);
    framed.push(0);
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(env) = codec::decode(bytes, &codec::Key::None) {
            for k in [&codec::Key::None, &key] {
                let again = codec::encode(&env, k);
                if again.len() <= codec::MAX_DATAGRAM {
                    assert_eq!(codec::decode(&again, k).as_ref(), Ok(&env), "round trip");
                    // What we encode, the sender scan reads as serde does.
                    if matches!(k, codec::Key::Hmac(_))
                        && env
                            .msg
                            .sender()
                            .is_some_and(crate::spec::model::Name::is_valid)
                    {
                        assert_eq!(
                            codec::decode_claimed(&again, |_| Some(&key)).as_ref(),
                            Ok(&env),
                            "per-node round trip"
                        );
                    }
                }
            }
        }
    }
}

const CONSOLE_ID: u32 = 0x0102_0304;
const SIK: &[u8] = b"fuzz session integrity key";
const PASSWORD: &[u8] = b"labpassw0rd";

fn exchange(suite: ipmi::CipherSuite, tag: u8) -> ipmi::Exchange {
    ipmi::Exchange {
        suite,
        tag,
        console_id: CONSOLE_ID,
        bmc_id: 0x0a0b_0c0d,
        console_random: [7; 16],
        role: 0x13,
        user: b"admin".to_vec(),
    }
}

/// Every decoder of what a BMC sends: the RMCP+ framing, the handshake answers (Open
/// Session Response, RAKP 2 and 4, refusals), session packets (AuthCode, decryption,
/// padding) and IPMI responses. The bytes go in as a whole packet, as a handshake body,
/// and as the message inside a correctly authenticated and encrypted session packet (so
/// the fuzzer gets past the integrity check), which must decrypt back to the same bytes.
pub fn ipmi_replies(data: &[u8]) {
    use ipmi::Payload;
    let tag = data.first().copied().unwrap_or(0);
    for suite in [ipmi::CipherSuite::Three, ipmi::CipherSuite::Seventeen] {
        let x = exchange(suite, tag);
        let handshake = |body: &[u8]| {
            let _ = ipmi::parse_open_session_response(body, tag, CONSOLE_ID, suite);
            if let Ok(Ok(r2)) = x.parse_rakp2(body) {
                let _ = x.rakp2_valid(PASSWORD, &r2);
                let sik = x.sik(PASSWORD, &r2);
                let _ = x.check_rakp4(body, &sik, &r2);
            }
            let r2 = ipmi::Rakp2 {
                bmc_random: [1; 16],
                bmc_guid: [2; 16],
                auth: Vec::new(),
            };
            let _ = x.check_rakp4(body, SIK, &r2);
        };
        handshake(data);
        for want in [Payload::OpenSessionResponse, Payload::Rakp2, Payload::Rakp4] {
            if let Ok(body) = ipmi::parse_outside_session(data, want) {
                handshake(body);
            }
        }
        let keys = ipmi::Keys::derive(suite, SIK);
        if let Ok(p) = ipmi::parse_in_session(&keys, data) {
            let _ = ipmi::parse_ipmi_reply(&p.message);
        }
        if data.len() <= ipmi::MAX_PACKET {
            let packet = ipmi::in_session(&keys, CONSOLE_ID, 1, data, [3; 16]);
            let got = ipmi::parse_in_session(&keys, &packet).expect("our own packet parses");
            assert_eq!(got.message, data, "decrypts to what was encrypted");
        }
    }
    if let Ok(r) = ipmi::parse_ipmi_reply(data) {
        let _ = ipmi::completion_text(r.completion);
    }
}

/// The SNMP reply judge: a datagram against requests for none, one and two OIDs. The bytes
/// also go in as a GET request's encoding turned into a response (the PDU tag changed), so
/// the judge's own checks are reached without the BER framing having to be found first.
pub fn snmp_judge(data: &[u8]) {
    let oids: Vec<snmp::Oid> = ["1.3.6.1.4.1.2.6.223.8.2.2.1.11.1", "1.3.6.1.2.1.1.2.0"]
        .iter()
        .filter_map(|t| snmp::Oid::parse(t))
        .collect();
    let asked: Vec<&snmp::Oid> = oids.iter().collect();
    for n in 0..=asked.len() {
        for community in [&b"public"[..], b""] {
            let _ = snmp::judge(data, community, 42, &asked[..n]);
        }
    }
    // The bytes as the community of an encoded GET that is then answered.
    if data.len() <= 512 {
        let request = snmp::encode(data, 7, snmp::Request::Get(&oids));
        let _ = snmp::judge(&request, data, 7, &asked);
        if let Some(reply) = as_response(&request) {
            match snmp::judge(&reply, data, 7, &asked) {
                snmp::Verdict::Reply(_) => {}
                v => panic!("our own request, answered, is ours: {v:?}"),
            }
        }
    }
}

/// The hardware-alert decoders: the bytes as an SNMP notification datagram (then
/// classified; an inform must get a Response-PDU that snmp2 reads back with the same
/// request id, community and varbinds) and as a PET varbind, its specific-trap number
/// taken from the first four bytes.
pub fn snmp_trap(data: &[u8]) {
    if let Ok(t) = trap::decode(data) {
        let vendor = [alert::VendorOid {
            oid_prefix: "1.3.6.1.4.1".into(),
            meaning: alert::Meaning::Degradation,
        }];
        let _ = alert::classify(&t, &vendor);
        match (t.kind, trap::inform_response(&t, data)) {
            (trap::Kind::Inform, Some(response)) => {
                let p = snmp2::Pdu::from_bytes(&response).expect("snmp2 reads our response");
                assert_eq!(p.message_type, snmp2::MessageType::Response);
                assert_eq!(Some(p.req_id), t.request_id);
                assert_eq!(p.community, t.community.as_slice());
                assert_eq!((p.error_status, p.error_index), (0, 0));
                let again = snmp2::Pdu::from_bytes(data).expect("decoded once");
                assert_eq!(p.varbinds.count(), again.varbinds.count(), "same varbinds");
            }
            (trap::Kind::Inform, None) => panic!("no response to a decoded inform"),
            (trap::Kind::Trap, r) => assert!(r.is_none(), "a response to a trap"),
        }
    }
    let number = data
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    if let Ok(p) = pet::parse(number, data) {
        assert_eq!(p.oem_custom.len(), data.len() - 46);
        let _ = p.meaning();
    }
}

/// An encoded GET turned into a Response: the PDU tag (the first 0xA0 after the
/// community) becomes 0xA2. `None` when the layout is not the one `encode` writes.
fn as_response(request: &[u8]) -> Option<Vec<u8>> {
    // SEQUENCE header (short or long form), INTEGER version (3 bytes), OCTET STRING community.
    let mut i = 1;
    let first = *request.get(i)?;
    i += 1 + if first & 0x80 != 0 {
        usize::from(first & 0x7f)
    } else {
        0
    };
    i += 3;
    if *request.get(i)? != 0x04 {
        return None;
    }
    let len = *request.get(i + 1)?;
    let (skip, clen) = if len & 0x80 == 0 {
        (2, usize::from(len))
    } else {
        let n = usize::from(len & 0x7f);
        let mut v = 0usize;
        for k in 0..n {
            v = (v << 8) | usize::from(*request.get(i + 2 + k)?);
        }
        (2 + n, v)
    };
    i += skip + clen;
    if *request.get(i)? != 0xa0 {
        return None;
    }
    let mut reply = request.to_vec();
    reply[i] = 0xa2;
    Some(reply)
}

#[cfg(test)]
mod tests {
    //! Every target on a few thousand mutated inputs per `cargo test`, and the time-bounded
    //! runner `scripts/fuzz` uses without cargo-fuzz (an ignored test):
    //! `HACONN_FUZZ_SECONDS=60 HACONN_FUZZ_TARGETS=ipmi_replies,snmp_judge cargo test --lib
    //! fuzz::tests::run -- --ignored --nocapture`. It mutates seeds (valid messages of each
    //! decoder, and `fuzz/seeds` for the spec loader) with bit flips, interesting bytes,
    //! cuts, inserts, repeats and splices, keeps no coverage (that is libFuzzer's job), and
    //! saves an input that panics under `fuzz/artifacts/<target>/` before failing.

    use super::*;
    use rand::{Rng, RngExt, SeedableRng};
    use std::time::{Duration, Instant};

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = vec![Vec::new(), vec![0], vec![0xff; 64]];
        match target {
            "spec_loader" => {
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                for dir in ["fuzz/seeds", "examples"] {
                    if let Ok(rd) = std::fs::read_dir(root.join(dir)) {
                        for e in rd.flatten() {
                            if let Ok(b) = std::fs::read(e.path()) {
                                out.push(b);
                            }
                        }
                    }
                }
            }
            "datagram" => {
                let key = codec::Key::Hmac(b"fuzz-reset-path-key-0123".to_vec());
                for msg in [
                    codec::Message::Check {
                        system: "node01".into(),
                        subsystem: 1,
                        port: 5002,
                        pair: Some(1),
                    },
                    codec::Message::Reset {
                        req: 7,
                        system: "node01".into(),
                        subsystem: 1,
                        port: 5002,
                        target_system: "node02".into(),
                        target_subsystem: 2,
                    },
                    codec::Message::Stopped {
                        system: "node02".into(),
                        subsystem: 2,
                    },
                ] {
                    let env = codec::Envelope::new(msg);
                    out.push(codec::encode(&env, &key));
                    let plain = codec::encode(&env, &codec::Key::None);
                    out.push(plain[5..].to_vec());
                    out.push(plain);
                }
            }
            "ipmi_replies" => {
                use ipmi::{CipherSuite, Payload};
                for suite in [CipherSuite::Three, CipherSuite::Seventeen] {
                    let keys = ipmi::Keys::derive(suite, SIK);
                    // A Chassis Status answer: rqSA, netfn, chk, rsSA, seq, cmd, cc, data, chk.
                    let mut m = vec![0x81, 0x04];
                    m.push(m.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg());
                    m.extend_from_slice(&[0x20, 5 << 2, 0x01, 0x00, 0x01, 0x10, 0x00]);
                    let chk = m[3..].iter().fold(0u8, |a, b| a.wrapping_add(*b));
                    m.push(chk.wrapping_neg());
                    out.push(ipmi::in_session(&keys, CONSOLE_ID, 9, &m, [5; 16]));
                    out.push(m);
                    let mut open = vec![9, 0, 4, 0];
                    open.extend_from_slice(&CONSOLE_ID.to_le_bytes());
                    open.extend_from_slice(&0x0a0b_0c0du32.to_le_bytes());
                    for alg in [1u8, 1, 1] {
                        open.extend_from_slice(&[0, 0, 0, 8, alg, 0, 0, 0]);
                    }
                    out.push(ipmi::outside_session(Payload::OpenSessionResponse, &open));
                    out.push(ipmi::outside_session(
                        Payload::OpenSessionResponse,
                        &[9, 0x11],
                    ));
                    let mut r2 = vec![9, 0, 0, 0];
                    r2.extend_from_slice(&CONSOLE_ID.to_le_bytes());
                    r2.extend_from_slice(&[1; 32]);
                    r2.extend_from_slice(&[2; 32]);
                    out.push(ipmi::outside_session(Payload::Rakp2, &r2));
                    out.push(ipmi::outside_session(Payload::Rakp4, &r2[..24]));
                }
            }
            "snmp_judge" => {
                let oids: Vec<snmp::Oid> =
                    ["1.3.6.1.4.1.2.6.223.8.2.2.1.11.1", "1.3.6.1.2.1.1.2.0"]
                        .iter()
                        .filter_map(|t| snmp::Oid::parse(t))
                        .collect();
                for n in 1..=oids.len() {
                    let get = snmp::encode(b"public", 42, snmp::Request::Get(&oids[..n]));
                    out.extend(as_response(&get));
                    out.push(get);
                    let set: Vec<(snmp::Oid, i64)> =
                        oids[..n].iter().map(|o| (o.clone(), 2)).collect();
                    let set = snmp::encode(b"public", 42, snmp::Request::Set(&set));
                    if let Some(mut r) = as_response(&set) {
                        out.push(r.clone());
                        // error-status genErr at the first OID.
                        if let Some(i) = r.windows(3).position(|w| w == [0x02, 0x01, 0x00]) {
                            r[i + 2] = 5;
                            out.push(r);
                        }
                    }
                    out.push(set);
                }
            }
            "snmp_trap" => {
                use crate::alert::pet::tests::{sample, specific};
                use crate::alert::trap::tests::{int, octets, pet_v1, v1, v2c};
                let pet_oid = |n: u32| format!("{}.0.{n}", pet::ENTERPRISE);
                let power_off = specific(0x09, 0x6f, 0x00);
                out.push(pet_v1(power_off, &sample()));
                out.push(pet_v1(specific(0x0d, 0x6f, 0x02), &sample()[..40]));
                for kind in [trap::Kind::Trap, trap::Kind::Inform] {
                    out.push(v2c(
                        kind,
                        &pet_oid(power_off),
                        &[(pet::VARBIND, octets(&sample()))],
                    ));
                    out.push(v2c(
                        kind,
                        "1.3.6.1.4.1.674.0.1",
                        &[("1.3.6.1.4.1.674.1", int(-1))],
                    ));
                }
                out.push(v1("1.3.6.1.4.1.674", 2, 0, &[]));
                out.push(sample());
            }
            other => panic!("no target {other}"),
        }
        out
    }

    const INTERESTING: [u8; 9] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0x81, 0x82, 0xfe, 0xff];

    fn mutate(rng: &mut impl Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut d = seeds[rng.random_range(0..seeds.len())].clone();
        for _ in 0..rng.random_range(1..=4) {
            let len = d.len();
            match rng.random_range(0..8) {
                0 if len > 0 => {
                    let i = rng.random_range(0..len);
                    d[i] ^= 1 << rng.random_range(0..8);
                }
                1 if len > 0 => {
                    let i = rng.random_range(0..len);
                    d[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
                }
                2 if len > 0 => {
                    let i = rng.random_range(0..len);
                    d[i] = rng.random();
                }
                3 if len > 0 => d.truncate(rng.random_range(0..len)),
                4 => {
                    let i = rng.random_range(0..=len);
                    let n = rng.random_range(1..=16);
                    let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                    d.splice(i..i, bytes);
                }
                5 if len > 0 => {
                    let i = rng.random_range(0..len);
                    let j = rng.random_range(i..len.min(i + 32));
                    d.drain(i..=j);
                }
                6 if len > 0 && len < 4096 => {
                    let i = rng.random_range(0..len);
                    let j = rng.random_range(i..len.min(i + 64));
                    let piece = d[i..=j].to_vec();
                    let at = rng.random_range(0..=len);
                    d.splice(at..at, piece);
                }
                7 => {
                    let other = &seeds[rng.random_range(0..seeds.len())];
                    if !other.is_empty() {
                        let from = rng.random_range(0..other.len());
                        let cut = rng.random_range(0..=d.len());
                        d.truncate(cut);
                        d.extend_from_slice(&other[from..]);
                    }
                }
                _ => {}
            }
        }
        d
    }

    /// Runs `target` on mutated inputs until `budget` ends or `max` inputs; the count.
    fn drive(name: &str, target: Target, budget: Duration, max: u64, seed: u64) -> u64 {
        let seeds = seeds(name);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let started = Instant::now();
        let mut runs = 0u64;
        for s in &seeds {
            target(s);
            runs += 1;
        }
        while runs < max && started.elapsed() < budget {
            let input = mutate(&mut rng, &seeds);
            if let Err(panic) = std::panic::catch_unwind(|| target(&input)) {
                let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("fuzz/artifacts")
                    .join(name);
                let _ = std::fs::create_dir_all(&dir);
                let file = dir.join(format!("crash-stable-{seed}-{runs}"));
                let _ = std::fs::write(&file, &input);
                eprintln!("{name}: input {runs} panicked; saved to {}", file.display());
                std::panic::resume_unwind(panic);
            }
            runs += 1;
        }
        runs
    }

    #[test]
    fn every_target_survives_mutated_inputs() {
        for (name, target) in TARGETS {
            let max = if name == "spec_loader" { 300 } else { 3000 };
            let runs = drive(name, target, Duration::from_secs(20), max, 1);
            assert!(runs >= 20, "{name}: {runs}");
        }
    }

    #[test]
    fn seeds_reach_past_the_framing() {
        // The IPMI seeds decode (so mutations start from packets the decoders accept).
        let keys = ipmi::Keys::derive(ipmi::CipherSuite::Three, SIK);
        assert!(
            seeds("ipmi_replies")
                .iter()
                .any(|s| ipmi::parse_in_session(&keys, s).is_ok())
        );
        // The SNMP seeds include answers the judge takes as ours.
        let oids: Vec<snmp::Oid> = ["1.3.6.1.4.1.2.6.223.8.2.2.1.11.1"]
            .iter()
            .filter_map(|t| snmp::Oid::parse(t))
            .collect();
        let asked: Vec<&snmp::Oid> = oids.iter().collect();
        assert!(seeds("snmp_judge").iter().any(|s| matches!(
            snmp::judge(s, b"public", 42, &asked),
            snmp::Verdict::Reply(Ok(_))
        )));
        // The trap seeds include a decodable inform carrying a readable PET.
        assert!(seeds("snmp_trap").iter().any(|s| {
            trap::decode(s)
                .is_ok_and(|t| t.kind == trap::Kind::Inform && matches!(t.pet, Some(Ok(_))))
        }));
        let key = codec::Key::Hmac(b"fuzz-reset-path-key-0123".to_vec());
        assert!(
            seeds("datagram")
                .iter()
                .any(|s| codec::decode(s, &key).is_ok())
        );
    }

    /// `scripts/fuzz`'s runner without cargo-fuzz: `HACONN_FUZZ_SECONDS` per target (default
    /// 10), the targets named in `HACONN_FUZZ_TARGETS` (default all); prints the inputs run.
    #[test]
    #[ignore = "run by scripts/fuzz"]
    fn run() {
        let seconds: u64 = std::env::var("HACONN_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10);
        let only = std::env::var("HACONN_FUZZ_TARGETS").unwrap_or_default();
        let seed: u64 = rand::random();
        for (name, target) in TARGETS {
            if !only.is_empty() && !only.split(',').any(|t| t == name) {
                continue;
            }
            let started = Instant::now();
            let runs = drive(name, target, Duration::from_secs(seconds), u64::MAX, seed);
            let secs = started.elapsed().as_secs_f64();
            println!(
                "fuzz {name}: {runs} inputs in {secs:.1} s ({:.0}/s), no panic (seed {seed})",
                runs as f64 / secs
            );
        }
    }
}
