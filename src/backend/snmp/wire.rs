//! SNMP v2c messages: encoding GET/SET requests and judging a datagram as the answer to one.
//!
//! snmp2 keeps its encoder private to its session types (`pdu::Buf` and `build_*` are
//! `pub(crate)`), so requests are encoded here (BER, definite lengths: a few dozen lines).
//! Replies are decoded with snmp2's public `Pdu::from_bytes`, then checked field by field:
//! only a response to *this* request id and community, naming exactly the requested OIDs in
//! order, is an answer; anything else from the socket is not ours and is dropped.

use std::fmt;

use snmp2::{MessageType, Pdu, Value, Version};

pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
const TAG_GET: u8 = 0xa0;
pub(crate) const TAG_RESPONSE: u8 = 0xa2;
const TAG_SET: u8 = 0xa3;
pub(crate) const VERSION_2C: i64 = 1;

/// A numeric OID, as a PDU model writes it (`1.3.6.1.4.1...`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Oid {
    arcs: Vec<u32>,
    /// BER content octets, to compare with a reply's OID byte for byte.
    content: Vec<u8>,
}

impl Oid {
    /// Parses dotted decimal (a leading dot is allowed). `None` for anything else, or an
    /// OID BER cannot carry (fewer than two arcs, first arc above 2, second above 39).
    pub fn parse(text: &str) -> Option<Oid> {
        let text = text.strip_prefix('.').unwrap_or(text);
        let arcs: Vec<u32> = text
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if arcs.len() < 2 || arcs[0] > 2 || (arcs[0] < 2 && arcs[1] > 39) {
            return None;
        }
        let mut content = Vec::with_capacity(arcs.len() + 4);
        base128(&mut content, arcs[0].checked_mul(40)?.checked_add(arcs[1])?);
        for &a in &arcs[2..] {
            base128(&mut content, a);
        }
        Some(Oid { arcs, content })
    }

    /// Decodes BER content octets (what follows an OBJECT IDENTIFIER's tag and length).
    /// `None` for an empty or cut encoding, a sub-identifier with a redundant leading
    /// 0x80 octet (BER says minimal), or one above 2^32-1 (RFC 2578 §7.1.3). The number
    /// of arcs is not bounded here: the content is.
    pub(crate) fn from_ber(content: &[u8]) -> Option<Oid> {
        let mut arcs = Vec::with_capacity(content.len() + 1);
        let mut value: u32 = 0;
        let mut fresh = true;
        for &b in content {
            if fresh && b == 0x80 {
                return None;
            }
            value = value.checked_mul(128)? | u32::from(b & 0x7f);
            fresh = b & 0x80 == 0;
            if fresh {
                if arcs.is_empty() {
                    let first = (value / 40).min(2);
                    arcs.push(first);
                    arcs.push(value - first * 40);
                } else {
                    arcs.push(value);
                }
                value = 0;
            }
        }
        if !fresh || arcs.is_empty() {
            return None;
        }
        Some(Oid {
            arcs,
            content: content.to_vec(),
        })
    }

    pub(crate) fn arcs(&self) -> &[u32] {
        &self.arcs
    }

    #[cfg(test)]
    pub(crate) fn content(&self) -> &[u8] {
        &self.content
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.arcs.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

fn base128(out: &mut Vec<u8>, mut v: u32) {
    let mut groups = [0u8; 5];
    let mut n = 0;
    loop {
        groups[n] = (v & 0x7f) as u8;
        n += 1;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    for i in (0..n).rev() {
        out.push(groups[i] | if i > 0 { 0x80 } else { 0 });
    }
}

pub(crate) fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
}

pub(crate) fn integer(out: &mut Vec<u8>, v: i64) {
    let bytes = v.to_be_bytes();
    // Minimal two's complement: drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    tlv(out, TAG_INTEGER, &bytes[start..]);
}

/// What a request asks.
#[derive(Debug, Clone, Copy)]
pub enum Request<'a> {
    Get(&'a [Oid]),
    /// Integer values only: every outlet control column is an INTEGER enumeration.
    Set(&'a [(Oid, i64)]),
}

impl Request<'_> {
    pub fn oids(&self) -> Vec<&Oid> {
        match self {
            Request::Get(o) => o.iter().collect(),
            Request::Set(v) => v.iter().map(|(o, _)| o).collect(),
        }
    }
}

/// One SNMP v2c message carrying `request`.
pub fn encode(community: &[u8], req_id: i32, request: Request<'_>) -> Vec<u8> {
    let mut varbinds = Vec::new();
    let mut push = |oid: &Oid, value: Option<i64>| {
        let mut vb = Vec::new();
        tlv(&mut vb, TAG_OID, &oid.content);
        match value {
            Some(v) => integer(&mut vb, v),
            None => tlv(&mut vb, TAG_NULL, &[]),
        }
        tlv(&mut varbinds, TAG_SEQUENCE, &vb);
    };
    let tag = match request {
        Request::Get(oids) => {
            oids.iter().for_each(|o| push(o, None));
            TAG_GET
        }
        Request::Set(values) => {
            values.iter().for_each(|(o, v)| push(o, Some(*v)));
            TAG_SET
        }
    };
    let mut pdu = Vec::new();
    integer(&mut pdu, i64::from(req_id));
    integer(&mut pdu, 0); // error-status
    integer(&mut pdu, 0); // error-index
    tlv(&mut pdu, TAG_SEQUENCE, &varbinds);
    let mut msg = Vec::new();
    integer(&mut msg, VERSION_2C);
    tlv(&mut msg, TAG_OCTET_STRING, community);
    tlv(&mut msg, tag, &pdu);
    let mut out = Vec::with_capacity(msg.len() + 4);
    tlv(&mut out, TAG_SEQUENCE, &msg);
    out
}

/// A value the PDU answered, reduced to what the backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Integer(i64),
    Text(String),
    /// Anything else, described for a message.
    Other(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Integer(v) => write!(f, "INTEGER {v}"),
            Answer::Text(t) => write!(f, "STRING {t:?}"),
            Answer::Other(o) => f.write_str(o),
        }
    }
}

/// Why an answer to our request is not a success: the PDU said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentError {
    /// A non-zero error-status, on the OID at error-index (or the first requested).
    Status { status: u32, oid: String },
    /// noSuchObject / noSuchInstance / endOfMibView in place of a value.
    Missing { what: &'static str, oid: String },
    /// The reply carries our request id but other OIDs than we asked for.
    WrongOids { asked: String, got: String },
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Status { status, oid } => {
                write!(f, "SNMP error {} on {oid}", error_name(*status))
            }
            AgentError::Missing { what, oid } => write!(f, "{what} for {oid}"),
            AgentError::WrongOids { asked, got } => {
                write!(f, "the reply names {got} where {asked} was asked")
            }
        }
    }
}

/// RFC 3416 error-status names.
pub fn error_name(status: u32) -> String {
    const NAMES: [&str; 19] = [
        "noError",
        "tooBig",
        "noSuchName",
        "badValue",
        "readOnly",
        "genErr",
        "noAccess",
        "wrongType",
        "wrongLength",
        "wrongEncoding",
        "wrongValue",
        "noCreation",
        "inconsistentValue",
        "resourceUnavailable",
        "commitFailed",
        "undoFailed",
        "authorizationError",
        "notWritable",
        "inconsistentName",
    ];
    NAMES
        .get(status as usize)
        .map_or_else(|| format!("status {status}"), |n| (*n).to_string())
}

/// What a datagram is to the request that waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a reply to this request (undecodable, another version, type, request id or
    /// community): drop it and keep waiting.
    NotOurs,
    /// The reply to this request.
    Reply(Result<Vec<Answer>, AgentError>),
}

/// Judges `datagram` as the reply to request `req_id` for `asked`.
pub fn judge(datagram: &[u8], community: &[u8], req_id: i32, asked: &[&Oid]) -> Verdict {
    let Ok(pdu) = Pdu::from_bytes(datagram) else {
        return Verdict::NotOurs;
    };
    if pdu.version() != Ok(Version::V2C)
        || pdu.message_type != MessageType::Response
        || pdu.req_id != req_id
        || pdu.community != community
    {
        return Verdict::NotOurs;
    }
    let first = || asked.first().map(|o| o.to_string()).unwrap_or_default();
    if pdu.error_status != 0 {
        let oid = (pdu.error_index as usize)
            .checked_sub(1)
            .and_then(|i| asked.get(i))
            .map_or_else(first, |o| o.to_string());
        return Verdict::Reply(Err(AgentError::Status {
            status: pdu.error_status,
            oid,
        }));
    }
    let mut answers = Vec::with_capacity(asked.len());
    let mut varbinds = pdu.varbinds.clone();
    for oid in asked {
        let Some((name, value)) = varbinds.next() else {
            return Verdict::Reply(Err(AgentError::WrongOids {
                asked: oid.to_string(),
                got: "nothing".into(),
            }));
        };
        if name.as_bytes() != oid.content.as_slice() {
            return Verdict::Reply(Err(AgentError::WrongOids {
                asked: oid.to_string(),
                got: name.to_id_string(),
            }));
        }
        let missing = |what| {
            Verdict::Reply(Err(AgentError::Missing {
                what,
                oid: oid.to_string(),
            }))
        };
        answers.push(match value {
            Value::Integer(v) => Answer::Integer(v),
            Value::Unsigned32(v) | Value::Counter32(v) => Answer::Integer(i64::from(v)),
            Value::OctetString(s) => Answer::Text(String::from_utf8_lossy(s).into_owned()),
            Value::NoSuchObject => return missing("noSuchObject"),
            Value::NoSuchInstance => return missing("noSuchInstance"),
            Value::EndOfMibView => return missing("endOfMibView"),
            other => Answer::Other(format!("{other:?}")),
        });
    }
    if let Some((extra, _)) = varbinds.next() {
        return Verdict::Reply(Err(AgentError::WrongOids {
            asked: "no more".into(),
            got: extra.to_id_string(),
        }));
    }
    Verdict::Reply(Ok(answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> Oid {
        Oid::parse(s).unwrap()
    }

    /// A v2c response built by hand (snmp2 cannot build one through its public API).
    fn response(
        community: &[u8],
        req_id: i32,
        status: i64,
        index: i64,
        vbs: &[(&Oid, &[u8])],
    ) -> Vec<u8> {
        let mut varbinds = Vec::new();
        for (o, value_tlv) in vbs {
            let mut vb = Vec::new();
            tlv(&mut vb, TAG_OID, &o.content);
            vb.extend_from_slice(value_tlv);
            tlv(&mut varbinds, TAG_SEQUENCE, &vb);
        }
        let mut pdu = Vec::new();
        integer(&mut pdu, i64::from(req_id));
        integer(&mut pdu, status);
        integer(&mut pdu, index);
        tlv(&mut pdu, TAG_SEQUENCE, &varbinds);
        let mut msg = Vec::new();
        integer(&mut msg, VERSION_2C);
        tlv(&mut msg, TAG_OCTET_STRING, community);
        tlv(&mut msg, 0xa2, &pdu);
        let mut out = Vec::new();
        tlv(&mut out, TAG_SEQUENCE, &msg);
        out
    }

    fn int_tlv(v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        integer(&mut out, v);
        out
    }

    #[test]
    fn oids_parse_and_print() {
        let o = oid(".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4");
        assert_eq!(o.to_string(), "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4");
        // Arcs above 127 take several base-128 octets.
        assert_eq!(oid("1.3.300").content, [0x2b, 0x82, 0x2c]);
        for bad in ["", "1", "1.x.3", "3.1", "1.40", "1..2", "1.3.99999999999"] {
            assert!(Oid::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn oids_decode_from_ber() {
        for text in [
            "1.3.6.1.4.1.3183.1.1.0.65793",
            "2.999.3",
            "0.0",
            "1.39.4294967295",
        ] {
            let o = oid(text);
            assert_eq!(Oid::from_ber(&o.content), Some(o.clone()), "{text}");
            assert_eq!(Oid::from_ber(&o.content).unwrap().to_string(), text);
        }
        // Empty, cut in a sub-identifier, a redundant 0x80, an arc past 2^32-1.
        for bad in [
            &[][..],
            &[0x2b, 0x86],
            &[0x2b, 0x80, 0x01],
            &[0x2b, 0x90, 0x80, 0x80, 0x80, 0x00],
        ] {
            assert!(Oid::from_ber(bad).is_none(), "{bad:02x?}");
        }
    }

    #[test]
    fn integers_are_minimal_twos_complement() {
        for (v, want) in [
            (0, vec![0x02, 1, 0]),
            (127, vec![0x02, 1, 0x7f]),
            (128, vec![0x02, 2, 0, 0x80]),
            (-1, vec![0x02, 1, 0xff]),
            (-129, vec![0x02, 2, 0xff, 0x7f]),
            (i64::from(i32::MAX), vec![0x02, 4, 0x7f, 0xff, 0xff, 0xff]),
        ] {
            assert_eq!(int_tlv(v), want, "{v}");
        }
    }

    #[test]
    fn requests_decode_with_snmp2() {
        let a = oid("1.3.6.1.4.1.2.6.223.8.2.2.1.11.3");
        let b = oid("1.3.6.1.4.1.2.6.223.7.3.0");
        let get = encode(b"public", -5, Request::Get(&[a.clone(), b.clone()]));
        let p = Pdu::from_bytes(&get).unwrap();
        assert_eq!(p.message_type, MessageType::GetRequest);
        assert_eq!((p.req_id, p.community), (-5, &b"public"[..]));
        let names: Vec<String> = p.varbinds.map(|(o, _)| o.to_id_string()).collect();
        assert_eq!(names, [a.to_string(), b.to_string()]);

        let long = "c".repeat(200);
        let set = encode(long.as_bytes(), 77, Request::Set(&[(a.clone(), 2)]));
        let p = Pdu::from_bytes(&set).unwrap();
        assert_eq!(p.message_type, MessageType::SetRequest);
        assert_eq!(p.community, long.as_bytes());
        let vals: Vec<String> = p.varbinds.map(|(_, v)| format!("{v:?}")).collect();
        assert_eq!(vals, ["INTEGER: 2"]);
    }

    #[test]
    fn only_the_reply_to_this_request_is_an_answer() {
        let a = oid("1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1");
        let b = oid("1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.2");
        let ok = response(b"pw", 9, 0, 0, &[(&a, &int_tlv(2))]);
        assert_eq!(
            judge(&ok, b"pw", 9, &[&a]),
            Verdict::Reply(Ok(vec![Answer::Integer(2)]))
        );
        // Another request id (a late reply), another community, garbage: not ours.
        assert_eq!(judge(&ok, b"pw", 10, &[&a]), Verdict::NotOurs);
        assert_eq!(judge(&ok, b"other", 9, &[&a]), Verdict::NotOurs);
        assert_eq!(
            judge(&ok[..ok.len() - 3], b"pw", 9, &[&a]),
            Verdict::NotOurs
        );
        assert_eq!(judge(b"\x30\x00", b"pw", 9, &[&a]), Verdict::NotOurs);
        // Our request echoed back is not a reply.
        let echo = encode(b"pw", 9, Request::Get(std::slice::from_ref(&a)));
        assert_eq!(judge(&echo, b"pw", 9, &[&a]), Verdict::NotOurs);
        // Our id, but the varbind of another outlet: refused, never taken as outlet 2's.
        assert!(matches!(
            judge(&ok, b"pw", 9, &[&b]),
            Verdict::Reply(Err(AgentError::WrongOids { .. }))
        ));
    }

    #[test]
    fn agent_errors_and_exceptions_are_failures() {
        let a = oid("1.3.6.1.4.1.2.6.223.8.2.2.1.11.1");
        let err = response(b"pw", 1, 6, 1, &[(&a, &int_tlv(0))]);
        let Verdict::Reply(Err(e)) = judge(&err, b"pw", 1, &[&a]) else {
            panic!("noAccess taken as success")
        };
        assert_eq!(e.to_string(), format!("SNMP error noAccess on {a}"));
        let missing = response(b"pw", 1, 0, 0, &[(&a, &[0x81, 0])]);
        let Verdict::Reply(Err(e)) = judge(&missing, b"pw", 1, &[&a]) else {
            panic!("noSuchInstance taken as a value")
        };
        assert_eq!(e.to_string(), format!("noSuchInstance for {a}"));
        let none = response(b"pw", 1, 0, 0, &[]);
        assert!(matches!(
            judge(&none, b"pw", 1, &[&a]),
            Verdict::Reply(Err(AgentError::WrongOids { .. }))
        ));
        assert_eq!(error_name(17), "notWritable");
        assert_eq!(error_name(99), "status 99");
    }
}
