//! RMCP+ (IPMI 2.0 over LAN) on the wire: packets, the RAKP key exchange and the session
//! keys, as pure functions over bytes (no sockets, no clocks; randomness is passed in).
//!
//! AES-CBC is RustCrypto's `cbc` (the IPMI confidentiality padding is ours: `cbc` sees
//! whole blocks). Written from the IPMI 2.0 specification: §13.6 (RMCP+ session header and trailer),
//! §13.17–13.22 (Open Session, RAKP 1–4), §13.28–13.32 (authentication, integrity and
//! confidentiality algorithms, the SIK and K1/K2), §13.8 (the IPMI LAN message format).
//! Decoding is bounded and never panics: every length comes from the packet and is checked.

use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use hmac::KeyInit;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

/// RMCP version 1.0, reserved, sequence 0xFF (no RMCP ack), class IPMI.
const RMCP_HEADER: [u8; 4] = [0x06, 0x00, 0xff, 0x07];
/// Session header "authentication type" of an IPMI 2.0 (RMCP+) packet.
const AUTH_TYPE_RMCP_PLUS: u8 = 0x06;
const PAYLOAD_ENCRYPTED: u8 = 0x80;
const PAYLOAD_AUTHENTICATED: u8 = 0x40;
/// Next header in the integrity trailer (always 0x07).
const NEXT_HEADER: u8 = 0x07;
/// Our software ID as requester (remote console software ID 0x81, §5.5).
const CONSOLE_SWID: u8 = 0x81;
/// The BMC's slave address.
const BMC_SA: u8 = 0x20;
/// Largest packet we build or accept (the spec's RMCP+ packets are far smaller).
pub const MAX_PACKET: usize = 1024;

/// RMCP+ payload types (§13.27.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    Ipmi = 0x00,
    OpenSessionRequest = 0x10,
    OpenSessionResponse = 0x11,
    Rakp1 = 0x12,
    Rakp2 = 0x13,
    Rakp3 = 0x14,
    Rakp4 = 0x15,
}

pub use crate::spec::model::CipherSuite;

impl CipherSuite {
    /// Authentication, integrity and confidentiality algorithm numbers (§13.28).
    fn algorithms(self) -> [u8; 3] {
        match self {
            CipherSuite::Three => [0x01, 0x01, 0x01],
            CipherSuite::Seventeen => [0x03, 0x04, 0x01],
        }
    }

    /// The full HMAC of the authentication algorithm over the concatenated parts.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            CipherSuite::Three => {
                let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                parts.iter().for_each(|p| m.update(p));
                m.finalize().into_bytes().to_vec()
            }
            CipherSuite::Seventeen => {
                let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                parts.iter().for_each(|p| m.update(p));
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    /// Length of the integrity AuthCode and of the RAKP 4 check value (96 or 128 bits).
    fn icv_len(self) -> usize {
        match self {
            CipherSuite::Three => 12,
            CipherSuite::Seventeen => 16,
        }
    }

    /// Length of the RAKP 2/3 key-exchange authentication codes (the full HMAC).
    fn auth_len(self) -> usize {
        match self {
            CipherSuite::Three => 20,
            CipherSuite::Seventeen => 32,
        }
    }
}

/// Why a packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    Malformed,
    WrongPayload,
    BadIntegrity,
    BadPadding,
}

/// Session keys derived from the SIK: K1 for integrity, the first 16 bytes of K2 for AES.
#[derive(Clone)]
pub struct Keys {
    pub suite: CipherSuite,
    k1: Vec<u8>,
    aes: [u8; 16],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(cipher suite {})", self.suite.number())
    }
}

impl Keys {
    /// K1 = HMAC_SIK(20 × 0x01), K2 = HMAC_SIK(20 × 0x02) (§13.32).
    pub fn derive(suite: CipherSuite, sik: &[u8]) -> Keys {
        let k1 = suite.hmac(sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(sik, &[&[0x02; 20]]);
        let mut aes = [0u8; 16];
        aes.copy_from_slice(&k2[..16]);
        Keys { suite, k1, aes }
    }
}

fn header(payload_type: u8, session_id: u32, seq: u32, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + len);
    out.extend_from_slice(&RMCP_HEADER);
    out.push(AUTH_TYPE_RMCP_PLUS);
    out.push(payload_type);
    out.extend_from_slice(&session_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out
}

/// A packet outside a session (Open Session, RAKP): session ID and sequence 0, no trailer.
pub fn outside_session(payload: Payload, body: &[u8]) -> Vec<u8> {
    let mut out = header(payload as u8, 0, 0, body.len());
    out.extend_from_slice(body);
    out
}

/// Parses a packet outside a session; returns its payload when it is of type `want`.
pub fn parse_outside_session(packet: &[u8], want: Payload) -> Result<&[u8], WireError> {
    if packet.len() < 16 || packet[..4] != RMCP_HEADER || packet[4] != AUTH_TYPE_RMCP_PLUS {
        return Err(WireError::Malformed);
    }
    if packet[5] != want as u8 {
        return Err(WireError::WrongPayload);
    }
    let len = u16::from_le_bytes([packet[14], packet[15]]) as usize;
    packet.get(16..16 + len).ok_or(WireError::Malformed)
}

/// An encrypted and authenticated IPMI message inside the session `session_id` (the
/// BMC's ID), sequence `seq`, with `iv` as the AES-CBC initialization vector.
pub fn in_session(keys: &Keys, session_id: u32, seq: u32, message: &[u8], iv: [u8; 16]) -> Vec<u8> {
    // Confidentiality trailer: pad bytes 1, 2, ... then the pad length, to a block (§13.29).
    let pad = (16 - (message.len() + 1) % 16) % 16;
    let mut plain = Vec::with_capacity(message.len() + pad + 1);
    plain.extend_from_slice(message);
    plain.extend((1..=pad as u8).collect::<Vec<u8>>());
    plain.push(pad as u8);
    let mut encrypted = Vec::with_capacity(16 + plain.len());
    encrypted.extend_from_slice(&iv);
    let start = encrypted.len();
    encrypted.extend_from_slice(&plain);
    cbc::Encryptor::<aes::Aes128>::new(&keys.aes.into(), &iv.into())
        .encrypt_padded::<NoPadding>(&mut encrypted[start..], plain.len())
        .expect("the IPMI padding fills the last block");
    let mut out = header(
        PAYLOAD_ENCRYPTED | PAYLOAD_AUTHENTICATED | Payload::Ipmi as u8,
        session_id,
        seq,
        encrypted.len(),
    );
    out.extend_from_slice(&encrypted);
    // Integrity pad (0xFF) so that auth type .. next header is a multiple of 4 (§13.6).
    let covered = out.len() - 4 + 2;
    let integrity_pad = (4 - covered % 4) % 4;
    out.extend(std::iter::repeat_n(0xff, integrity_pad));
    out.push(integrity_pad as u8);
    out.push(NEXT_HEADER);
    let code = keys.suite.hmac(&keys.k1, &[&out[4..]]);
    out.extend_from_slice(&code[..keys.suite.icv_len()]);
    out
}

/// A packet of an established session, checked and decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPacket {
    /// The session ID in the header: ours (the remote console's) on a BMC's reply.
    pub session_id: u32,
    pub seq: u32,
    pub message: Vec<u8>,
}

/// Checks the AuthCode (before anything else is believed) and decrypts the payload.
pub fn parse_in_session(keys: &Keys, packet: &[u8]) -> Result<SessionPacket, WireError> {
    if packet.len() < 16 || packet[..4] != RMCP_HEADER || packet[4] != AUTH_TYPE_RMCP_PLUS {
        return Err(WireError::Malformed);
    }
    if packet[5] != PAYLOAD_ENCRYPTED | PAYLOAD_AUTHENTICATED | Payload::Ipmi as u8 {
        return Err(WireError::WrongPayload);
    }
    let icv = keys.suite.icv_len();
    let len = u16::from_le_bytes([packet[14], packet[15]]) as usize;
    let payload_end = 16 + len;
    // Integrity pad (0–3), pad length, next header, AuthCode.
    let trailer = packet
        .len()
        .checked_sub(payload_end)
        .ok_or(WireError::Malformed)?;
    if trailer < 2 + icv || trailer > 5 + icv {
        return Err(WireError::Malformed);
    }
    let (covered, code) = packet.split_at(packet.len() - icv);
    let authentic = match keys.suite {
        CipherSuite::Three => verify::<Hmac<Sha1>>(&keys.k1, &covered[4..], code),
        CipherSuite::Seventeen => verify::<Hmac<Sha256>>(&keys.k1, &covered[4..], code),
    };
    if !authentic {
        return Err(WireError::BadIntegrity);
    }
    let pad_len = covered[covered.len() - 2] as usize;
    if covered[covered.len() - 1] != NEXT_HEADER || payload_end + pad_len + 2 != covered.len() {
        return Err(WireError::Malformed);
    }
    let body = &packet[16..payload_end];
    if body.len() < 32 || !body.len().is_multiple_of(16) {
        return Err(WireError::Malformed);
    }
    let (iv, ciphertext) = body.split_at(16);
    let mut plain = ciphertext.to_vec();
    let iv: [u8; 16] = iv.try_into().expect("16 bytes split off");
    cbc::Decryptor::<aes::Aes128>::new(&keys.aes.into(), &iv.into())
        .decrypt_padded::<NoPadding>(&mut plain)
        .map_err(|_| WireError::Malformed)?;
    let conf_pad = *plain.last().ok_or(WireError::BadPadding)? as usize;
    if conf_pad + 1 > plain.len() {
        return Err(WireError::BadPadding);
    }
    let end = plain.len() - 1 - conf_pad;
    if plain[end..plain.len() - 1]
        .iter()
        .enumerate()
        .any(|(i, &b)| b as usize != i + 1)
    {
        return Err(WireError::BadPadding);
    }
    plain.truncate(end);
    Ok(SessionPacket {
        session_id: u32::from_le_bytes([packet[6], packet[7], packet[8], packet[9]]),
        seq: u32::from_le_bytes([packet[10], packet[11], packet[12], packet[13]]),
        message: plain,
    })
}

/// Checks a (truncated) HMAC in constant time.
fn verify<M: Mac + KeyInit>(key: &[u8], data: &[u8], code: &[u8]) -> bool {
    let Ok(mut m) = <M as KeyInit>::new_from_slice(key) else {
        return false;
    };
    m.update(data);
    m.verify_truncated_left(code).is_ok()
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// An IPMI request in LAN format (§13.8): to the BMC (0x20), LUN 0, from software ID 0x81.
pub fn ipmi_request(netfn: u8, cmd: u8, rq_seq: u8, data: &[u8]) -> Vec<u8> {
    let mut m = vec![BMC_SA, netfn << 2];
    m.push(checksum(&m));
    m.extend_from_slice(&[CONSOLE_SWID, (rq_seq & 0x3f) << 2, cmd]);
    m.extend_from_slice(data);
    m.push(checksum(&m[3..]));
    m
}

/// An IPMI response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpmiReply {
    /// The response's netfn (the request's + 1).
    pub netfn: u8,
    pub cmd: u8,
    pub rq_seq: u8,
    pub completion: u8,
    pub data: Vec<u8>,
}

pub fn parse_ipmi_reply(m: &[u8]) -> Result<IpmiReply, WireError> {
    if m.len() < 8 || checksum(&m[..2]) != m[2] || checksum(&m[3..m.len() - 1]) != m[m.len() - 1] {
        return Err(WireError::Malformed);
    }
    if m[0] != CONSOLE_SWID {
        return Err(WireError::Malformed);
    }
    Ok(IpmiReply {
        netfn: m[1] >> 2,
        cmd: m[5],
        rq_seq: m[4] >> 2,
        completion: m[6],
        data: m[7..m.len() - 1].to_vec(),
    })
}

/// A handshake reply's non-zero status. Some BMCs (ipmi_sim) send only the tag and the
/// status when they refuse; when the session ID is there, it must be ours.
fn refusal(b: &[u8], tag: u8, console_id: u32) -> Option<u8> {
    if b.len() < 2 || b[0] != tag || b[1] == 0 {
        return None;
    }
    if b.len() >= 8 && b[4..8] != console_id.to_le_bytes() {
        return None;
    }
    Some(b[1])
}

/// Open Session Request (§13.17): propose exactly one suite's algorithms.
pub fn open_session_request(
    tag: u8,
    privilege: u8,
    console_id: u32,
    suite: CipherSuite,
) -> Vec<u8> {
    let mut b = vec![tag, privilege, 0, 0];
    b.extend_from_slice(&console_id.to_le_bytes());
    for (kind, alg) in suite.algorithms().into_iter().enumerate() {
        b.extend_from_slice(&[kind as u8, 0, 0, 0x08, alg, 0, 0, 0]);
    }
    b
}

/// What an Open Session Response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenSession {
    Accepted { bmc_id: u32 },
    Refused { status: u8 },
}

pub fn parse_open_session_response(
    b: &[u8],
    tag: u8,
    console_id: u32,
    suite: CipherSuite,
) -> Result<OpenSession, WireError> {
    if let Some(status) = refusal(b, tag, console_id) {
        return Ok(OpenSession::Refused { status });
    }
    if b.len() < 8 || b[0] != tag || b[4..8] != console_id.to_le_bytes() {
        return Err(WireError::Malformed);
    }
    if b.len() < 36 {
        return Err(WireError::Malformed);
    }
    let chosen = [b[16], b[24], b[32]];
    if chosen != suite.algorithms() {
        return Ok(OpenSession::Refused { status: 0x11 });
    }
    Ok(OpenSession::Accepted {
        bmc_id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
    })
}

/// The facts both RAKP sides hash: IDs, random numbers, the role and the user name.
#[derive(Clone)]
pub struct Exchange {
    pub suite: CipherSuite,
    pub tag: u8,
    pub console_id: u32,
    pub bmc_id: u32,
    pub console_random: [u8; 16],
    /// Requested role: privilege in bits 3:0, bit 4 = name-only lookup.
    pub role: u8,
    pub user: Vec<u8>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Exchange(suite {}, console {:#x}, bmc {:#x})",
            self.suite.number(),
            self.console_id,
            self.bmc_id
        )
    }
}

/// What RAKP 2 brings: the BMC's random number and GUID, and its proof of the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rakp2 {
    pub bmc_random: [u8; 16],
    pub bmc_guid: [u8; 16],
    pub auth: Vec<u8>,
}

/// RAKP 2's status when it is not 0, else its content.
pub type Rakp2Result = Result<Rakp2, u8>;

impl Exchange {
    /// RAKP Message 1 (§13.20).
    pub fn rakp1(&self) -> Vec<u8> {
        let mut b = vec![self.tag, 0, 0, 0];
        b.extend_from_slice(&self.bmc_id.to_le_bytes());
        b.extend_from_slice(&self.console_random);
        b.extend_from_slice(&[self.role, 0, 0, self.user.len() as u8]);
        b.extend_from_slice(&self.user);
        b
    }

    /// Parses RAKP Message 2 (§13.21); `Err` of the outer result is a malformed packet.
    pub fn parse_rakp2(&self, b: &[u8]) -> Result<Rakp2Result, WireError> {
        if let Some(status) = refusal(b, self.tag, self.console_id) {
            return Ok(Err(status));
        }
        if b.len() < 8 || b[0] != self.tag || b[4..8] != self.console_id.to_le_bytes() {
            return Err(WireError::Malformed);
        }
        let n = self.suite.auth_len();
        if b.len() < 40 + n {
            return Err(WireError::Malformed);
        }
        let mut bmc_random = [0u8; 16];
        bmc_random.copy_from_slice(&b[8..24]);
        let mut bmc_guid = [0u8; 16];
        bmc_guid.copy_from_slice(&b[24..40]);
        Ok(Ok(Rakp2 {
            bmc_random,
            bmc_guid,
            auth: b[40..40 + n].to_vec(),
        }))
    }

    /// The code RAKP 2 must carry: HMAC_Kuid(SIDm, SIDc, Rm, Rc, GUIDc, Role, ULen, UName).
    pub fn rakp2_expected(&self, password: &[u8], r2: &Rakp2) -> Vec<u8> {
        self.suite.hmac(
            password,
            &[
                &self.console_id.to_le_bytes(),
                &self.bmc_id.to_le_bytes(),
                &self.console_random,
                &r2.bmc_random,
                &r2.bmc_guid,
                &[self.role, self.user.len() as u8],
                &self.user,
            ],
        )
    }

    /// Whether RAKP 2 proves the BMC knows the same password (constant time).
    pub fn rakp2_valid(&self, password: &[u8], r2: &Rakp2) -> bool {
        let expected = self.rakp2_expected(password, r2);
        expected.len() == r2.auth.len()
            && expected
                .iter()
                .zip(&r2.auth)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// RAKP Message 3 (§13.22): HMAC_Kuid(Rc, SIDm, Role, ULen, UName), or only a status.
    pub fn rakp3(&self, password: &[u8], r2: &Rakp2, status: u8) -> Vec<u8> {
        let mut b = vec![self.tag, status, 0, 0];
        b.extend_from_slice(&self.bmc_id.to_le_bytes());
        if status == 0 {
            b.extend_from_slice(&self.suite.hmac(
                password,
                &[
                    &r2.bmc_random,
                    &self.console_id.to_le_bytes(),
                    &[self.role, self.user.len() as u8],
                    &self.user,
                ],
            ));
        }
        b
    }

    /// SIK = HMAC_KG(Rm, Rc, Role, ULen, UName), KG being Kg when set, else the password.
    pub fn sik(&self, kg: &[u8], r2: &Rakp2) -> Vec<u8> {
        self.suite.hmac(
            kg,
            &[
                &self.console_random,
                &r2.bmc_random,
                &[self.role, self.user.len() as u8],
                &self.user,
            ],
        )
    }

    /// Checks RAKP Message 4 (§13.23): status, IDs and HMAC_SIK(Rm, SIDc, GUIDc) truncated.
    /// `Ok(Err(status))` when the BMC refused; `Ok(Ok(false))` when the check value is wrong.
    pub fn check_rakp4(
        &self,
        b: &[u8],
        sik: &[u8],
        r2: &Rakp2,
    ) -> Result<Result<bool, u8>, WireError> {
        if let Some(status) = refusal(b, self.tag, self.console_id) {
            return Ok(Err(status));
        }
        if b.len() < 8 || b[0] != self.tag || b[4..8] != self.console_id.to_le_bytes() {
            return Err(WireError::Malformed);
        }
        let n = self.suite.icv_len();
        if b.len() < 8 + n {
            return Err(WireError::Malformed);
        }
        let full = self.suite.hmac(
            sik,
            &[
                &self.console_random,
                &self.bmc_id.to_le_bytes(),
                &r2.bmc_guid,
            ],
        );
        let same = full[..n]
            .iter()
            .zip(&b[8..8 + n])
            .fold(0u8, |acc, (a, c)| acc | (a ^ c))
            == 0;
        Ok(Ok(same))
    }
}

/// RMCP+ status codes (§13.24), in the operator's words.
pub fn status_text(status: u8) -> String {
    let text = match status {
        0x01 => "insufficient resources to create a session",
        0x02 => "invalid session ID",
        0x03 => "invalid payload type",
        0x04 => "invalid authentication algorithm",
        0x05 => "invalid integrity algorithm",
        0x06 => "no matching authentication payload",
        0x07 => "no matching integrity payload",
        0x08 => "inactive session ID",
        0x09 => "invalid role",
        0x0a => "unauthorized role or privilege level requested",
        0x0b => "insufficient resources to create a session at the requested role",
        0x0c => "invalid name length",
        0x0d => "unauthorized name",
        0x0e => "unauthorized GUID",
        0x0f => "invalid integrity check value",
        0x10 => "invalid confidentiality algorithm",
        0x11 => "no cipher suite match with proposed security algorithms",
        0x12 => "illegal or unrecognized parameter",
        _ => return format!("status 0x{status:02X}"),
    };
    text.to_string()
}

/// Whether an Open Session refusal means "not this cipher suite" (try another).
pub fn suite_refused(status: u8) -> bool {
    matches!(status, 0x04 | 0x05 | 0x06 | 0x07 | 0x10 | 0x11)
}

/// IPMI completion codes (§5.2) worth naming to an operator.
pub fn completion_text(cc: u8) -> String {
    let text = match cc {
        0xc0 => "node busy",
        0xc1 => "invalid command",
        0xc3 => "timeout while processing",
        0xc7 => "request data length invalid",
        0xcc => "invalid data field in request",
        0xce => "command response could not be provided",
        0xd3 => "destination unavailable",
        0xd4 => "insufficient privilege",
        0xd5 => "command not supported in present state",
        0xff => "unspecified error",
        _ => return format!("completion code 0x{cc:02X}"),
    };
    format!("completion code 0x{cc:02X} ({text})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(suite: CipherSuite) -> Exchange {
        Exchange {
            suite,
            tag: 7,
            console_id: 0x1122_3344,
            bmc_id: 0x5566_7788,
            console_random: [3; 16],
            role: 0x13,
            user: b"admin".to_vec(),
        }
    }

    #[test]
    fn session_packets_round_trip_and_reject_tampering() {
        for suite in [CipherSuite::Three, CipherSuite::Seventeen] {
            let keys = Keys::derive(suite, b"a session integrity key");
            for len in [0usize, 1, 7, 15, 16, 17, 40] {
                let msg: Vec<u8> = (0..len as u8).collect();
                let p = in_session(&keys, 0xdead_beef, 42, &msg, [9; 16]);
                assert_eq!((p.len() - 4) % 4, suite.icv_len() % 4);
                let got = parse_in_session(&keys, &p).expect("own packet parses");
                assert_eq!(got.message, msg);
                assert_eq!((got.session_id, got.seq), (0xdead_beef, 42));
                for i in 4..p.len() {
                    let mut bad = p.clone();
                    bad[i] ^= 0x01;
                    assert!(parse_in_session(&keys, &bad).is_err(), "flip at {i}");
                }
                for cut in 0..p.len() {
                    assert!(parse_in_session(&keys, &p[..cut]).is_err());
                }
            }
            let other = Keys::derive(suite, b"another key");
            let p = in_session(&keys, 1, 1, b"x", [0; 16]);
            assert_eq!(parse_in_session(&other, &p), Err(WireError::BadIntegrity));
        }
    }

    #[test]
    fn payload_encryption_is_textbook_aes_cbc_with_the_ipmi_padding() {
        use aes::cipher::{BlockCipherEncrypt, KeyInit};
        // NIST SP 800-38A F.2.1's key and IV.
        let key: [u8; 16] = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let iv: [u8; 16] = std::array::from_fn(|i| i as u8);
        let keys = Keys {
            suite: CipherSuite::Seventeen,
            k1: vec![7; 32],
            aes: key,
        };
        let msg: Vec<u8> = (0..20u8).collect();
        let p = in_session(&keys, 1, 1, &msg, iv);
        // The reference: message, pad bytes 1..=11, pad length 11; each block XORed with
        // the previous ciphertext block (the IV first), then AES-128.
        let mut plain = msg.clone();
        plain.extend(1..=11u8);
        plain.push(11);
        let aes = aes::Aes128::new(&key.into());
        let mut prev = iv;
        let mut expected = iv.to_vec();
        for chunk in plain.chunks(16) {
            let mut b = aes::Block::default();
            for (i, x) in b.iter_mut().enumerate() {
                *x = chunk[i] ^ prev[i];
            }
            aes.encrypt_block(&mut b);
            prev.copy_from_slice(&b);
            expected.extend_from_slice(&b);
        }
        assert_eq!(p[16..16 + expected.len()], expected[..]);
        assert_eq!(parse_in_session(&keys, &p).expect("parses").message, msg);
    }

    #[test]
    fn ipmi_messages_carry_checksums() {
        let rq = ipmi_request(0x00, 0x02, 5, &[0x04]);
        assert_eq!(rq[..3], [0x20, 0x00, 0xe0]);
        assert_eq!(rq.iter().skip(3).fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        // A response: rqSA, netfn 0x01 << 2, chk, rsSA, seq, cmd, cc, chk.
        let mut rs = vec![0x81, 0x04];
        rs.push(checksum(&rs));
        rs.extend_from_slice(&[0x20, 5 << 2, 0x02, 0x00]);
        rs.push(checksum(&rs[3..]));
        let r = parse_ipmi_reply(&rs).expect("valid");
        assert_eq!((r.netfn, r.cmd, r.rq_seq, r.completion), (1, 2, 5, 0));
        rs[6] ^= 1;
        assert!(parse_ipmi_reply(&rs).is_err());
    }

    #[test]
    fn rakp_proofs_agree_only_on_the_same_password() {
        for suite in [CipherSuite::Three, CipherSuite::Seventeen] {
            let x = exchange(suite);
            let mut r2 = Rakp2 {
                bmc_random: [5; 16],
                bmc_guid: [6; 16],
                auth: Vec::new(),
            };
            r2.auth = x.rakp2_expected(b"labpassw0rd", &r2);
            assert_eq!(r2.auth.len(), suite.auth_len());
            assert!(x.rakp2_valid(b"labpassw0rd", &r2));
            assert!(!x.rakp2_valid(b"labpassw0rX", &r2));
            let sik = x.sik(b"labpassw0rd", &r2);
            let icv = suite.hmac(
                &sik,
                &[&x.console_random, &x.bmc_id.to_le_bytes(), &r2.bmc_guid],
            );
            let mut r4 = vec![x.tag, 0, 0, 0];
            r4.extend_from_slice(&x.console_id.to_le_bytes());
            r4.extend_from_slice(&icv[..suite.icv_len()]);
            assert_eq!(x.check_rakp4(&r4, &sik, &r2), Ok(Ok(true)));
            let wrong = x.sik(b"some kg", &r2);
            assert_eq!(x.check_rakp4(&r4, &wrong, &r2), Ok(Ok(false)));
            r4[1] = 0x0f;
            assert_eq!(x.check_rakp4(&r4, &sik, &r2), Ok(Err(0x0f)));
        }
    }

    #[test]
    fn sha1_matches_a_published_hmac_vector() {
        // RFC 2202 test case 2.
        let mac = CipherSuite::Three.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
        // RFC 4231 test case 2.
        let mac = CipherSuite::Seventeen.hmac(b"Jefe", &[b"what do ya want for nothing?"]);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
