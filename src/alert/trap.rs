//! One SNMP notification datagram (v1 Trap, v2c Trap or InformRequest) into a [`Trap`],
//! and the Response-PDU that acknowledges an inform.
//!
//! snmp2's public `Pdu::from_bytes` decodes the BER; its reader (`AsnReader`) walks the
//! same bytes once more to find the varbind list, because snmp2's varbind iterator stops
//! quietly at the first varbind it cannot read: a list it did not read to the end is an
//! error here, not a shorter list. Everything is bounded (datagram size, varbinds, OID
//! arcs) and every refusal is a [`TrapError`]; nothing panics, whatever the bytes
//! (fuzzed: `crate::fuzz::snmp_trap`).
//!
//! A v1 trap gets the trap OID RFC 3584 §3.1 gives it when translated to SNMPv2:
//! `enterprise.0.specific` for an enterpriseSpecific trap (generic-trap 6), else
//! `snmpTraps.(generic-trap + 1)` (`1.3.6.1.6.3.1.1.5.1` is coldStart). A v2c
//! notification's first two varbinds must be `sysUpTime.0` and `snmpTrapOID.0` (RFC 3416
//! §4.2.6); they become [`Trap::uptime`] and [`Trap::trap_oid`] and are not repeated in
//! [`Trap::varbinds`], so the varbinds of a v1 trap and of its v2c translation match.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use snmp2::asn1::AsnReader;
use snmp2::{MessageType, Pdu, Value, snmp as tags};
use thiserror::Error;

use super::pet::{self, Pet, PetError};
use crate::backend::snmp::wire::{self, Oid};

/// The largest datagram read: UDP's own limit, rounded up.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// The most varbinds a notification may carry (after the v2c header).
pub const MAX_VARBINDS: usize = 64;
/// The most arcs an OID may have: the SMI's limit (RFC 2578 §3.5).
pub const MAX_OID_ARCS: usize = 128;

const SYS_UP_TIME: &str = "1.3.6.1.2.1.1.3.0";
const SNMP_TRAP_OID: &str = "1.3.6.1.6.3.1.1.4.1.0";
const SNMP_TRAPS: &str = "1.3.6.1.6.3.1.1.5";
const ENTERPRISE_SPECIFIC: i64 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2c,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A v1 Trap-PDU or a v2c SNMPv2-Trap-PDU: nobody answers it.
    Trap,
    /// A v2c InformRequest-PDU: the sender waits for [`inform_response`].
    Inform,
}

/// A varbind's value, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue {
    Integer(i64),
    OctetString(Vec<u8>),
    Null,
    /// Dotted decimal.
    ObjectId(String),
    IpAddress(Ipv4Addr),
    Counter32(u32),
    /// Unsigned32 or Gauge32 (one tag).
    Unsigned32(u32),
    TimeTicks(u32),
    Opaque(Vec<u8>),
    Counter64(u64),
    NoSuchObject,
    NoSuchInstance,
    EndOfMibView,
}

/// One decoded notification. `Debug` never shows the community.
#[derive(Clone, PartialEq, Eq)]
pub struct Trap {
    pub version: Version,
    pub community: Vec<u8>,
    pub kind: Kind,
    /// v2c only.
    pub request_id: Option<i32>,
    /// Dotted decimal: v2c `snmpTrapOID.0`, or the RFC 3584 translation of a v1 trap.
    pub trap_oid: String,
    /// v1 only: the agent-addr field.
    pub agent_addr: Option<Ipv4Addr>,
    /// Hundredths of a second: v1 time-stamp, v2c `sysUpTime.0`.
    pub uptime: u32,
    /// (OID in dotted decimal, value), in order; without the v2c header.
    pub varbinds: Vec<(String, VarValue)>,
    /// `Some` when the trap OID is `1.3.6.1.4.1.3183.1.1.0.<specific>`: an IPMI PET.
    pub pet: Option<Result<Pet, PetError>>,
}

impl fmt::Debug for Trap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trap")
            .field("version", &self.version)
            .field("community", &"<hidden>")
            .field("kind", &self.kind)
            .field("request_id", &self.request_id)
            .field("trap_oid", &self.trap_oid)
            .field("agent_addr", &self.agent_addr)
            .field("uptime", &self.uptime)
            .field("varbinds", &self.varbinds)
            .field("pet", &self.pet)
            .finish()
    }
}

/// Why a datagram is not a notification this module reads.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrapError {
    #[error("the datagram has {len} bytes; at most {MAX_DATAGRAM} are read")]
    TooLarge { len: usize },
    #[error("not a well-formed SNMP message: {0}")]
    Undecodable(String),
    #[error("SNMP version field {0} is not read (only v1 = 0 and v2c = 1)")]
    UnsupportedVersion(i64),
    #[error("a {pdu} in an SNMP {version} message is not a notification")]
    NotANotification { pdu: String, version: &'static str },
    #[error("more than {MAX_VARBINDS} varbinds")]
    TooManyVarbinds,
    #[error("the varbind list cannot be read past varbind {read}")]
    MalformedVarbinds { read: usize },
    #[error("a malformed OBJECT IDENTIFIER ({what})")]
    BadOid { what: &'static str },
    #[error("an OBJECT IDENTIFIER ({what}) of more than {MAX_OID_ARCS} arcs")]
    OidTooLong { what: &'static str },
    #[error("the value of {oid} is of a type SNMP does not use in varbinds")]
    UnsupportedValue { oid: String },
    #[error("generic-trap {0} is not one of 0..=6")]
    BadGenericTrap(i64),
    #[error("specific-trap {0} does not fit an OID arc")]
    BadSpecificTrap(i64),
    #[error("an SNMPv2 notification must begin with sysUpTime.0 (TimeTicks) and snmpTrapOID.0")]
    MissingHeader,
}

fn undecodable(e: snmp2::Error) -> TrapError {
    TrapError::Undecodable(e.to_string())
}

/// The parts of a message that snmp2's `Pdu` does not hand out whole.
struct Layout<'a> {
    version: i64,
    community: &'a [u8],
    pdu_tag: u8,
    /// Every PDU but a v1 Trap.
    request_id: Option<i64>,
    /// The content of the VarBindList SEQUENCE.
    varbinds: &'a [u8],
}

fn layout(raw: &[u8]) -> Result<Layout<'_>, TrapError> {
    let mut outer = AsnReader::from_bytes(raw);
    let message = outer
        .read_raw(snmp2::asn1::TYPE_SEQUENCE)
        .map_err(undecodable)?;
    if outer.bytes_left() != 0 {
        return Err(TrapError::Undecodable("bytes after the message".into()));
    }
    let mut r = AsnReader::from_bytes(message);
    let version = r.read_asn_integer().map_err(undecodable)?;
    if version != 0 && version != 1 {
        return Err(TrapError::UnsupportedVersion(version));
    }
    let community = r.read_asn_octetstring().map_err(undecodable)?;
    let pdu_tag = r.peek_byte().map_err(undecodable)?;
    let mut pdu = AsnReader::from_bytes(r.read_raw(pdu_tag).map_err(undecodable)?);
    let request_id = if pdu_tag == tags::MSG_TRAP_V1 {
        pdu.read_asn_objectidentifier().map_err(undecodable)?;
        pdu.read_snmp_ipaddress().map_err(undecodable)?;
        pdu.read_asn_integer().map_err(undecodable)?;
        pdu.read_asn_integer().map_err(undecodable)?;
        pdu.read_snmp_timeticks().map_err(undecodable)?;
        None
    } else {
        let id = pdu.read_asn_integer().map_err(undecodable)?;
        pdu.read_asn_integer().map_err(undecodable)?;
        pdu.read_asn_integer().map_err(undecodable)?;
        Some(id)
    };
    let varbinds = pdu
        .read_raw(snmp2::asn1::TYPE_SEQUENCE)
        .map_err(undecodable)?;
    Ok(Layout {
        version,
        community,
        pdu_tag,
        request_id,
        varbinds,
    })
}

/// The number of varbind SEQUENCEs in a VarBindList's content, at most [`MAX_VARBINDS`]
/// plus the header of a v2c notification.
fn count_varbinds(list: &[u8], max: usize) -> Result<usize, TrapError> {
    let mut r = AsnReader::from_bytes(list);
    let mut n = 0;
    while r.bytes_left() > 0 {
        if r.read_raw(snmp2::asn1::TYPE_SEQUENCE).is_err() {
            return Err(TrapError::MalformedVarbinds { read: n });
        }
        n += 1;
        if n > max {
            return Err(TrapError::TooManyVarbinds);
        }
    }
    Ok(n)
}

fn oid(content: &[u8], what: &'static str) -> Result<Oid, TrapError> {
    // Each arc takes at least one octet: a longer content is too long without decoding.
    if content.len() > MAX_OID_ARCS * 5 {
        return Err(TrapError::OidTooLong { what });
    }
    let o = Oid::from_ber(content).ok_or(TrapError::BadOid { what })?;
    if o.arcs().len() > MAX_OID_ARCS {
        return Err(TrapError::OidTooLong { what });
    }
    Ok(o)
}

fn var_value(v: Value<'_>, name: &str) -> Result<VarValue, TrapError> {
    Ok(match v {
        Value::Integer(i) => VarValue::Integer(i),
        Value::OctetString(s) => VarValue::OctetString(s.to_vec()),
        Value::Null => VarValue::Null,
        Value::ObjectIdentifier(o) => VarValue::ObjectId(oid(o.as_bytes(), "value")?.to_string()),
        Value::IpAddress(a) => VarValue::IpAddress(Ipv4Addr::from(a)),
        Value::Counter32(n) => VarValue::Counter32(n),
        Value::Unsigned32(n) => VarValue::Unsigned32(n),
        Value::Timeticks(n) => VarValue::TimeTicks(n),
        Value::Opaque(b) => VarValue::Opaque(b.to_vec()),
        Value::Counter64(n) => VarValue::Counter64(n),
        Value::NoSuchObject => VarValue::NoSuchObject,
        Value::NoSuchInstance => VarValue::NoSuchInstance,
        Value::EndOfMibView => VarValue::EndOfMibView,
        _ => {
            return Err(TrapError::UnsupportedValue {
                oid: name.to_string(),
            });
        }
    })
}

/// RFC 3584 §3.1: the SNMPv2 trap OID of a v1 trap.
fn v1_trap_oid(enterprise: &Oid, generic: i64, specific: i64) -> Result<String, TrapError> {
    match generic {
        0..=5 => Ok(format!("{SNMP_TRAPS}.{}", generic + 1)),
        ENTERPRISE_SPECIFIC => {
            let specific =
                u32::try_from(specific).map_err(|_| TrapError::BadSpecificTrap(specific))?;
            if enterprise.arcs().len() + 2 > MAX_OID_ARCS {
                return Err(TrapError::OidTooLong { what: "trap OID" });
            }
            Ok(format!("{enterprise}.0.{specific}"))
        }
        other => Err(TrapError::BadGenericTrap(other)),
    }
}

/// The PET of a trap whose trap OID is `ENTERPRISE.0.<specific>`.
fn pet_of(trap_oid: &str, varbinds: &[(String, VarValue)]) -> Option<Result<Pet, PetError>> {
    let specific: u32 = trap_oid
        .strip_prefix(pet::ENTERPRISE)?
        .strip_prefix(".0.")?
        .parse()
        .ok()?;
    let value = varbinds.iter().find(|(name, _)| name == pet::VARBIND);
    Some(match value {
        None => Err(PetError::MissingVarbind),
        Some((_, VarValue::OctetString(bytes))) => pet::parse(specific, bytes),
        Some(_) => Err(PetError::NotOctetString),
    })
}

/// Decodes one datagram as an SNMP v1 Trap, v2c Trap or v2c InformRequest.
pub fn decode(raw: &[u8]) -> Result<Trap, TrapError> {
    if raw.len() > MAX_DATAGRAM {
        return Err(TrapError::TooLarge { len: raw.len() });
    }
    let layout = layout(raw)?;
    let count = count_varbinds(layout.varbinds, MAX_VARBINDS + 2)?;
    let pdu = Pdu::from_bytes(raw).map_err(undecodable)?;
    let mut varbinds = Vec::with_capacity(count);
    for (name, value) in pdu.varbinds.clone() {
        let name = oid(name.as_bytes(), "varbind name")?.to_string();
        let value = var_value(value, &name)?;
        varbinds.push((name, value));
    }
    if varbinds.len() != count {
        return Err(TrapError::MalformedVarbinds {
            read: varbinds.len(),
        });
    }
    let not_a_notification = |version| TrapError::NotANotification {
        pdu: format!("{:?}", pdu.message_type),
        version,
    };
    let (version, kind, request_id, trap_oid, agent_addr, uptime) =
        match (layout.version, pdu.message_type) {
            (0, MessageType::TrapV1) => {
                let Some(info) = &pdu.v1_trap_info else {
                    return Err(TrapError::Undecodable(
                        "a v1 trap without its fields".into(),
                    ));
                };
                let IpAddr::V4(agent) = info.agent_addr else {
                    return Err(TrapError::Undecodable("agent-addr is not IPv4".into()));
                };
                let enterprise = oid(info.enterprise.as_bytes(), "enterprise")?;
                let trap_oid = v1_trap_oid(&enterprise, info.generic_trap, info.specific_trap)?;
                (
                    Version::V1,
                    Kind::Trap,
                    None,
                    trap_oid,
                    Some(agent),
                    info.timestamp,
                )
            }
            (0, _) => return Err(not_a_notification("v1")),
            (_, MessageType::Trap | MessageType::InformRequest) => {
                let header = varbinds.get(..2);
                let Some(
                    [
                        (up_name, VarValue::TimeTicks(uptime)),
                        (oid_name, VarValue::ObjectId(trap_oid)),
                    ],
                ) = header
                else {
                    return Err(TrapError::MissingHeader);
                };
                if up_name != SYS_UP_TIME || oid_name != SNMP_TRAP_OID {
                    return Err(TrapError::MissingHeader);
                }
                let (uptime, trap_oid) = (*uptime, trap_oid.clone());
                varbinds.drain(..2);
                if varbinds.len() > MAX_VARBINDS {
                    return Err(TrapError::TooManyVarbinds);
                }
                let kind = if pdu.message_type == MessageType::Trap {
                    Kind::Trap
                } else {
                    Kind::Inform
                };
                (Version::V2c, kind, Some(pdu.req_id), trap_oid, None, uptime)
            }
            _ => return Err(not_a_notification("v2c")),
        };
    if version == Version::V1 && varbinds.len() > MAX_VARBINDS {
        return Err(TrapError::TooManyVarbinds);
    }
    let pet = pet_of(&trap_oid, &varbinds);
    Ok(Trap {
        version,
        community: pdu.community.to_vec(),
        kind,
        request_id,
        trap_oid,
        agent_addr,
        uptime,
        varbinds,
        pet,
    })
}

/// The SNMPv2c Response-PDU that acknowledges `inform`, which was decoded from `raw`:
/// the same request id and community, the variable bindings of `raw` byte for byte,
/// error-status noError and error-index 0 (RFC 3416 §4.2.7). snmp2 builds responses only
/// inside its sessions, so the message is encoded with the SNMP backend's BER helpers.
/// `None` unless `inform` is an inform and `raw` the datagram it came from.
pub fn inform_response(inform: &Trap, raw: &[u8]) -> Option<Vec<u8>> {
    if inform.kind != Kind::Inform || raw.len() > MAX_DATAGRAM {
        return None;
    }
    let layout = layout(raw).ok()?;
    let request_id = inform.request_id?;
    if layout.version != wire::VERSION_2C
        || layout.pdu_tag != tags::MSG_INFORM
        || layout.community != inform.community.as_slice()
        || layout.request_id != Some(i64::from(request_id))
    {
        return None;
    }
    let mut pdu = Vec::with_capacity(layout.varbinds.len() + 16);
    wire::integer(&mut pdu, i64::from(request_id));
    wire::integer(&mut pdu, 0); // error-status: noError
    wire::integer(&mut pdu, 0); // error-index
    wire::tlv(&mut pdu, wire::TAG_SEQUENCE, layout.varbinds);
    let mut msg = Vec::with_capacity(pdu.len() + inform.community.len() + 16);
    wire::integer(&mut msg, wire::VERSION_2C);
    wire::tlv(&mut msg, wire::TAG_OCTET_STRING, &inform.community);
    wire::tlv(&mut msg, wire::TAG_RESPONSE, &pdu);
    let mut out = Vec::with_capacity(msg.len() + 6);
    wire::tlv(&mut out, wire::TAG_SEQUENCE, &msg);
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    //! Notifications built by hand (BER with the backend's helpers), for these tests, the
    //! classifier's and the fuzz seeds.

    use super::*;
    use crate::alert::Meaning;
    use crate::alert::pet::tests::{sample, specific};
    use rand::{RngExt, SeedableRng};

    pub(crate) const COMMUNITY: &[u8] = b"s3cret-community";

    fn tagged_int(tag: u8, v: i64) -> Vec<u8> {
        let mut b = Vec::new();
        wire::integer(&mut b, v);
        b[0] = tag;
        b
    }

    pub(crate) fn oid_tlv(text: &str) -> Vec<u8> {
        let mut b = Vec::new();
        let o = Oid::parse(text).expect("a valid OID");
        wire::tlv(&mut b, wire::TAG_OID, o.content());
        b
    }

    pub(crate) fn octets(bytes: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        wire::tlv(&mut b, wire::TAG_OCTET_STRING, bytes);
        b
    }

    pub(crate) fn int(v: i64) -> Vec<u8> {
        tagged_int(wire::TAG_INTEGER, v)
    }

    fn varbind_list(varbinds: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut list = Vec::new();
        for (name, value) in varbinds {
            let mut vb = oid_tlv(name);
            vb.extend_from_slice(value);
            wire::tlv(&mut list, wire::TAG_SEQUENCE, &vb);
        }
        let mut out = Vec::new();
        wire::tlv(&mut out, wire::TAG_SEQUENCE, &list);
        out
    }

    fn message(version: i64, community: &[u8], tag: u8, pdu: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        wire::integer(&mut msg, version);
        wire::tlv(&mut msg, wire::TAG_OCTET_STRING, community);
        wire::tlv(&mut msg, tag, pdu);
        let mut out = Vec::new();
        wire::tlv(&mut out, wire::TAG_SEQUENCE, &msg);
        out
    }

    /// A v1 Trap-PDU from 192.0.2.7, time-stamp 4242.
    pub(crate) fn v1(
        enterprise: &str,
        generic: i64,
        specific: i64,
        varbinds: &[(&str, Vec<u8>)],
    ) -> Vec<u8> {
        let mut pdu = oid_tlv(enterprise);
        wire::tlv(&mut pdu, tags::TYPE_IPADDRESS, &[192, 0, 2, 7]);
        wire::integer(&mut pdu, generic);
        wire::integer(&mut pdu, specific);
        pdu.extend(tagged_int(tags::TYPE_TIMETICKS, 4242));
        pdu.extend(varbind_list(varbinds));
        message(0, COMMUNITY, tags::MSG_TRAP_V1, &pdu)
    }

    /// A v2c Trap or InformRequest, request id 77, sysUpTime 4242, then `varbinds`.
    pub(crate) fn v2c(kind: Kind, trap_oid: &str, varbinds: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut all = vec![
            (SYS_UP_TIME, tagged_int(tags::TYPE_TIMETICKS, 4242)),
            (SNMP_TRAP_OID, oid_tlv(trap_oid)),
        ];
        all.extend_from_slice(varbinds);
        let mut pdu = Vec::new();
        wire::integer(&mut pdu, 77);
        wire::integer(&mut pdu, 0);
        wire::integer(&mut pdu, 0);
        pdu.extend(varbind_list(&all));
        let tag = match kind {
            Kind::Trap => tags::MSG_TRAP,
            Kind::Inform => tags::MSG_INFORM,
        };
        message(1, COMMUNITY, tag, &pdu)
    }

    /// A v1 PET as a BMC sends it.
    pub(crate) fn pet_v1(specific: u32, pet_bytes: &[u8]) -> Vec<u8> {
        v1(
            pet::ENTERPRISE,
            6,
            i64::from(specific),
            &[(pet::VARBIND, octets(pet_bytes))],
        )
    }

    #[test]
    fn a_v1_pet() {
        let number = specific(0x22, 0x6f, 0x07); // ACPI: G3 mechanical off
        let t = decode(&pet_v1(number, &sample())).unwrap();
        assert_eq!(
            (t.version, t.kind, t.request_id),
            (Version::V1, Kind::Trap, None)
        );
        assert_eq!(t.community, COMMUNITY);
        assert_eq!(t.trap_oid, format!("1.3.6.1.4.1.3183.1.1.0.{number}"));
        assert_eq!(t.agent_addr, Some(Ipv4Addr::new(192, 0, 2, 7)));
        assert_eq!(t.uptime, 4242);
        assert_eq!(
            t.varbinds,
            [(pet::VARBIND.to_string(), VarValue::OctetString(sample()))]
        );
        let p = t.pet.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(p.specific.sensor_type, 0x22);
        assert_eq!(p.manufacturer_id, 674);
        assert_eq!(p.meaning(), Meaning::PowerOff);
    }

    #[test]
    fn v1_trap_oids_follow_rfc_3584() {
        for (generic, want) in [
            (0, "1.3.6.1.6.3.1.1.5.1"),
            (2, "1.3.6.1.6.3.1.1.5.3"),
            (5, "1.3.6.1.6.3.1.1.5.6"),
            (6, "1.3.6.1.4.1.674.0.1234"),
        ] {
            let t = decode(&v1("1.3.6.1.4.1.674", generic, 1234, &[])).unwrap();
            assert_eq!(t.trap_oid, want, "generic {generic}");
            assert_eq!(t.pet, None);
        }
        // The PET enterprise with a generic trap is not a PET.
        let t = decode(&v1(
            pet::ENTERPRISE,
            2,
            0,
            &[(pet::VARBIND, octets(&sample()))],
        ))
        .unwrap();
        assert_eq!(
            (t.trap_oid.as_str(), &t.pet),
            ("1.3.6.1.6.3.1.1.5.3", &None)
        );
        assert_eq!(
            decode(&v1("1.3.6.1.4.1.674", 7, 0, &[])),
            Err(TrapError::BadGenericTrap(7))
        );
        for bad in [-1, i64::from(u32::MAX) + 1] {
            assert_eq!(
                decode(&v1("1.3.6.1.4.1.674", 6, bad, &[])),
                Err(TrapError::BadSpecificTrap(bad))
            );
        }
        // With another generic trap, specific-trap is not read.
        assert!(decode(&v1("1.3.6.1.4.1.674", 1, -1, &[])).is_ok());
    }

    #[test]
    fn v2c_traps_and_informs() {
        let number = specific(0x0d, 0x6f, 0x02); // drive slot: predictive failure
        let trap_oid = format!("{}.0.{number}", pet::ENTERPRISE);
        let extra = [
            (pet::VARBIND, octets(&sample())),
            ("1.3.6.1.2.1.1.5.0", octets(b"node01")),
            ("1.3.6.1.4.1.674.1", int(-5)),
        ];
        for kind in [Kind::Trap, Kind::Inform] {
            let t = decode(&v2c(kind, &trap_oid, &extra)).unwrap();
            assert_eq!((t.version, t.kind), (Version::V2c, kind));
            assert_eq!(
                (t.request_id, t.agent_addr, t.uptime),
                (Some(77), None, 4242)
            );
            assert_eq!(t.trap_oid, trap_oid);
            assert_eq!(
                t.varbinds,
                [
                    (pet::VARBIND.into(), VarValue::OctetString(sample())),
                    (
                        "1.3.6.1.2.1.1.5.0".into(),
                        VarValue::OctetString(b"node01".to_vec())
                    ),
                    ("1.3.6.1.4.1.674.1".into(), VarValue::Integer(-5)),
                ]
            );
            let p = t.pet.as_ref().unwrap().as_ref().unwrap();
            assert_eq!(p.meaning(), Meaning::PredictiveFailure);
        }
        // Only `ENTERPRISE.0.<number>` is a PET trap OID.
        for other in [
            "1.3.6.1.4.1.3183.1.1",
            "1.3.6.1.4.1.3183.1.1.1",
            "1.3.6.1.4.1.3183.1.1.0.5.1",
        ] {
            let t = decode(&v2c(Kind::Trap, other, &extra)).unwrap();
            assert_eq!(t.pet, None, "{other}");
        }
    }

    #[test]
    fn pet_errors_stay_inside_the_trap() {
        let number = specific(0x09, 0x6f, 0x00);
        let t = decode(&pet_v1(number, &sample()[..46])).unwrap();
        assert_eq!(t.pet, Some(Err(PetError::Truncated { len: 46 })));
        let t = decode(&v1(pet::ENTERPRISE, 6, number.into(), &[])).unwrap();
        assert_eq!(t.pet, Some(Err(PetError::MissingVarbind)));
        let t = decode(&v1(
            pet::ENTERPRISE,
            6,
            number.into(),
            &[(pet::VARBIND, int(3))],
        ))
        .unwrap();
        assert_eq!(t.pet, Some(Err(PetError::NotOctetString)));
    }

    #[test]
    fn the_inform_response_is_a_response_snmp2_reads() {
        let extra = [
            ("1.3.6.1.2.1.1.5.0", octets(b"node01")),
            ("1.3.6.1.4.1.674.1", int(1 << 40)),
        ];
        let raw = v2c(Kind::Inform, "1.3.6.1.4.1.674.0.9", &extra);
        let inform = decode(&raw).unwrap();
        let response = inform_response(&inform, &raw).unwrap();
        let p = Pdu::from_bytes(&response).unwrap();
        assert_eq!(p.version(), Ok(snmp2::Version::V2C));
        assert_eq!(p.message_type, MessageType::Response);
        assert_eq!((p.req_id, p.error_status, p.error_index), (77, 0, 0));
        assert_eq!(p.community, COMMUNITY);
        let names: Vec<String> = p.varbinds.map(|(o, _)| o.to_id_string()).collect();
        assert_eq!(
            names,
            [
                SYS_UP_TIME,
                SNMP_TRAP_OID,
                "1.3.6.1.2.1.1.5.0",
                "1.3.6.1.4.1.674.1"
            ]
        );
        // Only the same bytes differ: the PDU tag.
        let diff: Vec<usize> = (0..raw.len()).filter(|&i| raw[i] != response[i]).collect();
        assert_eq!(response.len(), raw.len());
        assert_eq!(diff.len(), 1);
        assert_eq!((raw[diff[0]], response[diff[0]]), (0xa6, 0xa2));

        // Not for a trap, nor for another datagram.
        let trap_raw = v2c(Kind::Trap, "1.3.6.1.4.1.674.0.9", &extra);
        let trap = decode(&trap_raw).unwrap();
        assert_eq!(inform_response(&trap, &trap_raw), None);
        assert_eq!(inform_response(&inform, &trap_raw), None);
        let mut other = inform.clone();
        other.request_id = Some(78);
        assert_eq!(inform_response(&other, &raw), None);
        other = inform.clone();
        other.community = b"public".to_vec();
        assert_eq!(inform_response(&other, &raw), None);
    }

    #[test]
    fn bounds() {
        let big = vec![0x30; MAX_DATAGRAM + 1];
        assert_eq!(
            decode(&big),
            Err(TrapError::TooLarge {
                len: MAX_DATAGRAM + 1
            })
        );

        let names: Vec<String> = (0..=MAX_VARBINDS)
            .map(|i| format!("1.3.6.1.4.1.9.{i}"))
            .collect();
        let varbinds: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), int(1))).collect();
        let at_limit = &varbinds[..MAX_VARBINDS];
        assert_eq!(
            decode(&v2c(Kind::Trap, "1.3.6.1.4.1.9.0.1", at_limit))
                .unwrap()
                .varbinds
                .len(),
            MAX_VARBINDS
        );
        assert_eq!(
            decode(&v1("1.3.6.1.4.1.9", 6, 1, at_limit))
                .unwrap()
                .varbinds
                .len(),
            MAX_VARBINDS
        );
        assert_eq!(
            decode(&v2c(Kind::Trap, "1.3.6.1.4.1.9.0.1", &varbinds)),
            Err(TrapError::TooManyVarbinds)
        );
        assert_eq!(
            decode(&v1("1.3.6.1.4.1.9", 6, 1, &varbinds)),
            Err(TrapError::TooManyVarbinds)
        );

        let arcs = |n: usize| {
            let mut s = "1.3".to_string();
            for i in 2..n {
                s.push_str(&format!(".{}", i * 1000));
            }
            s
        };
        let longest = arcs(MAX_OID_ARCS);
        let t = decode(&v2c(Kind::Trap, &longest, &[(&longest, int(1))])).unwrap();
        assert_eq!(
            (t.trap_oid.as_str(), t.varbinds[0].0.as_str()),
            (longest.as_str(), longest.as_str())
        );
        let too_long = arcs(MAX_OID_ARCS + 1);
        assert_eq!(
            decode(&v2c(
                Kind::Trap,
                "1.3.6.1.4.1.9.0.1",
                &[(&too_long, int(1))]
            )),
            Err(TrapError::OidTooLong {
                what: "varbind name"
            })
        );
        assert_eq!(
            decode(&v2c(Kind::Trap, &too_long, &[])),
            Err(TrapError::OidTooLong { what: "value" })
        );
        assert_eq!(
            decode(&v1(&longest, 6, 1, &[])),
            Err(TrapError::OidTooLong { what: "trap OID" })
        );
    }

    #[test]
    fn refusals() {
        // v3, and a GET request.
        let mut v3 = v2c(Kind::Trap, "1.3.6.1.4.1.9.0.1", &[]);
        v3[4] = 3; // SEQUENCE header (2), INTEGER tag and length (2), the version
        assert_eq!(decode(&v3), Err(TrapError::UnsupportedVersion(3)));
        let get = wire::encode(
            b"public",
            5,
            wire::Request::Get(&[Oid::parse("1.3.6.1.2.1.1.3.0").unwrap()]),
        );
        assert!(matches!(
            decode(&get),
            Err(TrapError::NotANotification { version: "v2c", .. })
        ));
        // A v2c trap PDU in a v1 message.
        let mut v1_trap2 = v2c(Kind::Trap, "1.3.6.1.4.1.9.0.1", &[]);
        v1_trap2[4] = 0;
        assert!(matches!(
            decode(&v1_trap2),
            Err(TrapError::NotANotification { version: "v1", .. })
        ));
        // A v2c notification without its header.
        let mut pdu = Vec::new();
        wire::integer(&mut pdu, 1);
        wire::integer(&mut pdu, 0);
        wire::integer(&mut pdu, 0);
        pdu.extend(varbind_list(&[("1.3.6.1.4.1.9.1", int(1))]));
        assert_eq!(
            decode(&message(1, b"c", tags::MSG_TRAP, &pdu)),
            Err(TrapError::MissingHeader)
        );
        // A value SNMP does not use (an empty SEQUENCE), and one snmp2 cannot read (an
        // unknown tag), where its varbind iterator would stop quietly.
        let mut raw = v2c(
            Kind::Trap,
            "1.3.6.1.4.1.9.0.1",
            &[("1.3.6.1.4.1.9.1", vec![0x30, 0x00])],
        );
        assert_eq!(
            decode(&raw),
            Err(TrapError::UnsupportedValue {
                oid: "1.3.6.1.4.1.9.1".into()
            })
        );
        let last = raw.len() - 2;
        raw[last] = 0x1f;
        assert_eq!(decode(&raw), Err(TrapError::MalformedVarbinds { read: 2 }));
        // Bytes after the message; garbage.
        let mut after = v2c(Kind::Trap, "1.3.6.1.4.1.9.0.1", &[]);
        after.push(0);
        assert!(matches!(decode(&after), Err(TrapError::Undecodable(_))));
        for junk in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"hello"] {
            assert!(
                matches!(decode(junk), Err(TrapError::Undecodable(_))),
                "{junk:02x?}"
            );
        }
    }

    #[test]
    fn debug_hides_the_community() {
        let t = decode(&pet_v1(0, &sample())).unwrap();
        let text = format!("{t:?} {t:#?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<hidden>"));
    }

    #[test]
    fn mutated_and_random_datagrams_never_panic() {
        let seeds = [
            pet_v1(specific(0x09, 0x6f, 0), &sample()),
            v2c(
                Kind::Inform,
                "1.3.6.1.4.1.3183.1.1.0.2322176",
                &[(pet::VARBIND, octets(&sample()))],
            ),
            v1(
                "1.3.6.1.4.1.674",
                6,
                3,
                &[("1.3.6.1.4.1.674.1", oid_tlv("1.3.6.1"))],
            ),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for i in 0..20_000 {
            let bytes = if i % 4 == 0 {
                let len = rng.random_range(0..200);
                (0..len).map(|_| rng.random()).collect()
            } else {
                let mut b = seeds[i % seeds.len()].clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..b.len());
                    match rng.random_range(0..3) {
                        0 => b[at] = rng.random(),
                        1 => b.truncate(at),
                        _ => b.insert(at, rng.random()),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            };
            if let Ok(t) = decode(&bytes) {
                if t.kind == Kind::Inform {
                    let r = inform_response(&t, &bytes).expect("a response to a decoded inform");
                    let p = Pdu::from_bytes(&r).expect("snmp2 reads our response");
                    assert_eq!(
                        (p.message_type, Some(p.req_id)),
                        (MessageType::Response, t.request_id)
                    );
                }
                let _ = crate::alert::classify(&t, &[]);
            }
        }
    }
}
