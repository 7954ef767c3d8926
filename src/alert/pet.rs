//! IPMI Platform Event Traps (PET): the SNMP specific-trap number and the one OCTET STRING
//! varbind a BMC sends with it, decoded field by field, and what the event means to a
//! fencing service ([`Meaning`]).
//!
//! # The format, and where it was checked
//! - Enterprise `1.3.6.1.4.1.3183.1.1` (IANA 3183 is the IPMI/ASF forum's "wired for
//!   management" arc); the data varbind is `1.3.6.1.4.1.3183.1.1.1`, an OCTET STRING.
//!   OpenIPMI's trap handler matches exactly that varbind OID and OCTET STRING type.
//! - Varbind bytes, in order (IPMI PET v1.0, Intel/HP/NEC/Dell, 1998; the same layout is
//!   drawn in DMTF ASF 2.0 DSP0136 §3.1.4, and both FreeIPMI's `ipmi-pet` and OpenIPMI's
//!   `ipmi_handle_snmp_trap_data` read these offsets): GUID 0..16, sequence number/cookie
//!   16..18, local timestamp 18..22, UTC offset 22..24, trap source type 24, event source
//!   type 25, event severity 26, sensor device 27, sensor number 28, entity 29, entity
//!   instance 30, event data 31..39, language code 39, manufacturer IANA id 40..44, system
//!   id 44..46, OEM custom fields from 46. Multi-byte fields are most significant byte
//!   first (both implementations assemble them so; OpenIPMI with `ntohl`/`ntohs`).
//! - ASF §3.1.4: when there are no OEM custom fields the field still holds one byte, its
//!   type `C1h`, so a well-formed varbind has at least 47 bytes.
//! - The local timestamp counts seconds from 1998-01-01 00:00:00 (OpenIPMI converts with
//!   883 612 800 s, 1970→1998); 0 means unspecified. The UTC offset is signed minutes,
//!   `FFFFh` unspecified. FreeIPMI adds the offset to the local time and OpenIPMI
//!   subtracts it, so no UTC conversion is offered here: both raw values are.
//! - Severity values (IPMI PEF "event severity", the names FreeIPMI's `ipmi-pet` prints):
//!   00h unspecified, 01h Monitor, 02h Information, 04h OK, 08h Non-critical,
//!   10h Critical, 20h Non-recoverable.
//! - The specific-trap number (ASF §3.1.3 names the fields "Reserved | Event Sensor Type |
//!   Event Type | Event Offset"; FreeIPMI masks sensor type, event type, event direction
//!   and event offset out of it separately): bits 23..16 sensor type, 15..8 event/reading
//!   type code, 7 event direction (1 = deassertion), 3..0 event offset. OpenIPMI instead
//!   copies bits 15..8 whole into a SEL record's "event dir | event type" byte, where bit 7
//!   is the direction; event/reading type codes end at 7Fh, so bit 15 is read as a
//!   deassertion too and never as part of the type.

use thiserror::Error;

use super::Meaning;

/// The enterprise OID of every PET.
pub const ENTERPRISE: &str = "1.3.6.1.4.1.3183.1.1";
/// The OID of the varbind that carries the PET data.
pub const VARBIND: &str = "1.3.6.1.4.1.3183.1.1.1";
/// The shortest well-formed PET varbind: 46 bytes of fixed fields and the OEM custom
/// fields' type byte.
pub const MIN_LEN: usize = 47;

/// Seconds from the Unix epoch to the PET epoch, 1998-01-01 00:00:00.
const PET_EPOCH_UNIX: u32 = 883_612_800;

/// Why a PET varbind cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PetError {
    #[error("the PET trap has no {VARBIND} varbind")]
    MissingVarbind,
    #[error("the PET varbind {VARBIND} is not an OCTET STRING")]
    NotOctetString,
    #[error("the PET varbind has {len} bytes; a PET has at least {MIN_LEN}")]
    Truncated { len: usize },
}

/// IPMI event severity as the PET carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Unspecified,
    Monitor,
    Information,
    Ok,
    NonCritical,
    Critical,
    NonRecoverable,
    Unknown(u8),
}

impl From<u8> for Severity {
    fn from(b: u8) -> Severity {
        match b {
            0x00 => Severity::Unspecified,
            0x01 => Severity::Monitor,
            0x02 => Severity::Information,
            0x04 => Severity::Ok,
            0x08 => Severity::NonCritical,
            0x10 => Severity::Critical,
            0x20 => Severity::NonRecoverable,
            other => Severity::Unknown(other),
        }
    }
}

/// The specific-trap number of a PET, split into its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpecificTrap {
    /// The number as sent.
    pub raw: u32,
    /// IPMI sensor type code (bits 23..16).
    pub sensor_type: u8,
    /// IPMI event/reading type code (bits 14..8).
    pub event_type: u8,
    /// The event offset (bits 3..0).
    pub offset: u8,
    /// Bit 7 (or bit 15) set: the condition went away.
    pub deassertion: bool,
}

impl From<u32> for SpecificTrap {
    fn from(raw: u32) -> SpecificTrap {
        let [_, sensor_type, type_byte, offset_byte] = raw.to_be_bytes();
        SpecificTrap {
            raw,
            sensor_type,
            event_type: type_byte & 0x7f,
            offset: offset_byte & 0x0f,
            deassertion: (type_byte | offset_byte) & 0x80 != 0,
        }
    }
}

/// One Platform Event Trap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pet {
    pub specific: SpecificTrap,
    pub guid: [u8; 16],
    /// Sequence number or cookie: the same for the retransmissions of one event.
    pub sequence: u16,
    /// Seconds since 1998-01-01 00:00:00 in the sender's local time; `None` unspecified.
    pub local_timestamp: Option<u32>,
    /// The sender's offset from UTC in minutes; `None` unspecified (`FFFFh`).
    pub utc_offset_minutes: Option<i16>,
    pub trap_source_type: u8,
    pub event_source_type: u8,
    pub severity: Severity,
    pub sensor_device: u8,
    pub sensor_number: u8,
    pub entity: u8,
    pub entity_instance: u8,
    /// Event data 1..8; the first three are the IPMI event message's data 1..3.
    pub event_data: [u8; 8],
    pub language_code: u8,
    /// The manufacturer's IANA enterprise number.
    pub manufacturer_id: u32,
    pub system_id: u16,
    /// The OEM custom fields, from their first type byte on.
    pub oem_custom: Vec<u8>,
}

/// Decodes the PET varbind `bytes` sent with specific-trap number `specific`.
pub fn parse(specific: u32, bytes: &[u8]) -> Result<Pet, PetError> {
    if bytes.len() < MIN_LEN {
        return Err(PetError::Truncated { len: bytes.len() });
    }
    let (fixed, oem) = bytes.split_at(46);
    let array = |at: usize| -> [u8; 4] { [fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]] };
    let pair = |at: usize| -> [u8; 2] { [fixed[at], fixed[at + 1]] };
    let mut guid = [0; 16];
    guid.copy_from_slice(&fixed[..16]);
    let mut event_data = [0; 8];
    event_data.copy_from_slice(&fixed[31..39]);
    let local = u32::from_be_bytes(array(18));
    let offset = pair(22);
    Ok(Pet {
        specific: SpecificTrap::from(specific),
        guid,
        sequence: u16::from_be_bytes(pair(16)),
        local_timestamp: (local != 0).then_some(local),
        utc_offset_minutes: (offset != [0xff, 0xff]).then(|| i16::from_be_bytes(offset)),
        trap_source_type: fixed[24],
        event_source_type: fixed[25],
        severity: Severity::from(fixed[26]),
        sensor_device: fixed[27],
        sensor_number: fixed[28],
        entity: fixed[29],
        entity_instance: fixed[30],
        event_data,
        language_code: fixed[39],
        manufacturer_id: u32::from_be_bytes(array(40)),
        system_id: u16::from_be_bytes(pair(44)),
        oem_custom: oem.to_vec(),
    })
}

impl Pet {
    /// The local timestamp as seconds since the Unix epoch (still the sender's local
    /// time: see the module doc on the UTC offset).
    pub fn local_unix_seconds(&self) -> Option<u64> {
        self.local_timestamp
            .map(|t| u64::from(t) + u64::from(PET_EPOCH_UNIX))
    }

    /// What the event means to a fencing service; see [`meaning`].
    pub fn meaning(&self) -> Meaning {
        meaning(self.specific)
    }
}

// Sensor type codes (IPMI 2.0 Table 42-3).
const SENSOR_POWER_SUPPLY: u8 = 0x08;
const SENSOR_POWER_UNIT: u8 = 0x09;
const SENSOR_MEMORY: u8 = 0x0c;
const SENSOR_DRIVE_SLOT: u8 = 0x0d;
const SENSOR_ACPI_POWER_STATE: u8 = 0x22;
// Event/reading type codes (IPMI 2.0 Table 42-1 and 42-2).
const EVENT_PREDICTIVE_FAILURE: u8 = 0x04;
const EVENT_PERFORMANCE: u8 = 0x06;
const EVENT_SEVERITY: u8 = 0x07;
const EVENT_REDUNDANCY: u8 = 0x0b;
const EVENT_SENSOR_SPECIFIC: u8 = 0x6f;

/// Classifies a PET by sensor type, event/reading type and offset. A deassertion (the
/// condition went away) is never a meaning of its own: [`Meaning::Other`].
///
/// The rules, with the IPMI 2.0 table entry each one reads:
/// - Power off: sensor-specific (6Fh) offsets that say the machine is not running.
///   Power Unit (09h) 00h "Power Off / Power Down", 02h "240VA Power Down", 03h
///   "Interlock Power Down". System ACPI Power State (22h) 05h "S5/G2 soft-off", 06h
///   "S4/S5 soft-off, particular state unknown", 07h "G3 mechanical off", 0Ah "S5
///   entered by override", 0Ch "Legacy OFF state". Power Unit 04h "AC lost" is left
///   out: with redundant supplies the machine keeps running.
/// - Predictive failure: the generic Predictive Failure type (04h) offset 01h
///   "asserted", whatever the sensor; sensor-specific Drive Slot (0Dh) 02h, Power Supply
///   (08h) 02h and Power Unit (09h) 07h, each "Predictive Failure"; Memory (0Ch) 05h
///   "Correctable ECC logging limit reached", which BMC vendors raise as a DIMM's
///   predictive failure.
/// - Degradation: Performance (06h) 01h "Performance Lags"; Severity (07h) 01h..06h,
///   every transition into Non-critical, Critical or Non-recoverable (the machine may
///   still run; nothing here says it is off, and there is no class above this one short
///   of power off); Redundancy (0Bh) 01h "Redundancy Lost" and 02h "Redundancy
///   Degraded".
/// - Everything else, threshold crossings included (their weight depends on the sensor;
///   a caller can name such trap OIDs in its vendor table), is [`Meaning::Other`].
pub fn meaning(t: SpecificTrap) -> Meaning {
    if t.deassertion {
        return Meaning::Other;
    }
    match (t.event_type, t.sensor_type, t.offset) {
        (EVENT_SENSOR_SPECIFIC, SENSOR_POWER_UNIT, 0x00 | 0x02 | 0x03)
        | (EVENT_SENSOR_SPECIFIC, SENSOR_ACPI_POWER_STATE, 0x05 | 0x06 | 0x07 | 0x0a | 0x0c) => {
            Meaning::PowerOff
        }
        (EVENT_PREDICTIVE_FAILURE, _, 0x01)
        | (EVENT_SENSOR_SPECIFIC, SENSOR_DRIVE_SLOT | SENSOR_POWER_SUPPLY, 0x02)
        | (EVENT_SENSOR_SPECIFIC, SENSOR_POWER_UNIT, 0x07)
        | (EVENT_SENSOR_SPECIFIC, SENSOR_MEMORY, 0x05) => Meaning::PredictiveFailure,
        (EVENT_PERFORMANCE, _, 0x01)
        | (EVENT_SEVERITY, _, 0x01..=0x06)
        | (EVENT_REDUNDANCY, _, 0x01 | 0x02) => Meaning::Degradation,
        _ => Meaning::Other,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// The specific-trap number of an assertion.
    pub(crate) fn specific(sensor_type: u8, event_type: u8, offset: u8) -> u32 {
        u32::from_be_bytes([0, sensor_type, event_type, offset])
    }

    /// A 47-byte PET varbind with recognisable values in every field.
    pub(crate) fn sample() -> Vec<u8> {
        let mut b: Vec<u8> = (0x10..0x20).collect(); // GUID
        b.extend_from_slice(&0x1234u16.to_be_bytes()); // sequence
        b.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes()); // local timestamp
        b.extend_from_slice(&(-300i16).to_be_bytes()); // UTC offset: UTC-5
        b.extend_from_slice(&[0x20, 0xf0, 0x10, 0x20, 0x51, 0x07, 0x01]);
        b.extend_from_slice(&[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]); // event data
        b.push(0x19); // language code
        b.extend_from_slice(&674u32.to_be_bytes()); // manufacturer (Dell)
        b.extend_from_slice(&0x0102u16.to_be_bytes()); // system id
        b.push(0xc1); // no OEM custom fields
        assert_eq!(b.len(), MIN_LEN);
        b
    }

    #[test]
    fn every_field_is_read_from_its_offset() {
        let p = parse(specific(0x09, 0x6f, 0x00), &sample()).unwrap();
        let guid: Vec<u8> = (0x10..0x20).collect();
        assert_eq!(p.guid.to_vec(), guid);
        assert_eq!(p.sequence, 0x1234);
        assert_eq!(p.local_timestamp, Some(0x0a0b_0c0d));
        assert_eq!(
            p.local_unix_seconds(),
            Some(0x0a0b_0c0d + 883_612_800),
            "1998-01-01 is 883612800 s after 1970-01-01"
        );
        assert_eq!(p.utc_offset_minutes, Some(-300));
        assert_eq!((p.trap_source_type, p.event_source_type), (0x20, 0xf0));
        assert_eq!(p.severity, Severity::Critical);
        assert_eq!((p.sensor_device, p.sensor_number), (0x20, 0x51));
        assert_eq!((p.entity, p.entity_instance), (0x07, 0x01));
        assert_eq!(
            p.event_data,
            [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]
        );
        assert_eq!(p.language_code, 0x19);
        assert_eq!(p.manufacturer_id, 674);
        assert_eq!(p.system_id, 0x0102);
        assert_eq!(p.oem_custom, [0xc1]);
        assert_eq!(
            p.specific,
            SpecificTrap {
                raw: 0x0009_6f00,
                sensor_type: 0x09,
                event_type: 0x6f,
                offset: 0,
                deassertion: false
            }
        );
        assert_eq!(p.meaning(), Meaning::PowerOff);
    }

    #[test]
    fn unspecified_times_and_oem_fields() {
        let mut b = sample();
        b[18..22].fill(0);
        b[22..24].fill(0xff);
        b.extend_from_slice(b"OEM data");
        let p = parse(0, &b).unwrap();
        assert_eq!((p.local_timestamp, p.local_unix_seconds()), (None, None));
        assert_eq!(p.utc_offset_minutes, None);
        assert_eq!(p.oem_custom, b"\xc1OEM data");
    }

    #[test]
    fn severities() {
        for (b, s) in [
            (0x00, Severity::Unspecified),
            (0x01, Severity::Monitor),
            (0x02, Severity::Information),
            (0x04, Severity::Ok),
            (0x08, Severity::NonCritical),
            (0x10, Severity::Critical),
            (0x20, Severity::NonRecoverable),
            (0x03, Severity::Unknown(0x03)),
            (0xff, Severity::Unknown(0xff)),
        ] {
            assert_eq!(Severity::from(b), s, "{b:#04x}");
        }
    }

    #[test]
    fn every_cut_below_47_bytes_is_an_error() {
        let b = sample();
        for len in 0..MIN_LEN {
            assert_eq!(
                parse(0, &b[..len]),
                Err(PetError::Truncated { len }),
                "{len} bytes"
            );
        }
        assert!(parse(0, &b).is_ok());
    }

    #[test]
    fn specific_trap_fields() {
        let t = SpecificTrap::from(0x0022_6f85);
        assert_eq!((t.sensor_type, t.event_type, t.offset), (0x22, 0x6f, 0x05));
        assert!(t.deassertion, "bit 7: deassertion");
        // Bit 15 (a SEL "event dir" bit copied along with the type) is read the same way.
        let t = SpecificTrap::from(0x0022_ef05);
        assert_eq!((t.event_type, t.offset, t.deassertion), (0x6f, 0x05, true));
        let t = SpecificTrap::from(0xff0d_6f02);
        assert_eq!((t.sensor_type, t.event_type, t.offset), (0x0d, 0x6f, 0x02));
        assert!(!t.deassertion);
    }

    #[test]
    fn classification_table() {
        use Meaning::*;
        let table: &[(u8, u8, u8, Meaning)] = &[
            // (sensor type, event type, offset, meaning)
            (0x09, 0x6f, 0x00, PowerOff),
            (0x09, 0x6f, 0x02, PowerOff),
            (0x09, 0x6f, 0x03, PowerOff),
            (0x09, 0x6f, 0x01, Other), // power cycle: it comes back
            (0x09, 0x6f, 0x04, Other), // AC lost: maybe on the other supply
            (0x09, 0x6f, 0x07, PredictiveFailure),
            (0x22, 0x6f, 0x00, Other), // S0/G0 working
            (0x22, 0x6f, 0x05, PowerOff),
            (0x22, 0x6f, 0x06, PowerOff),
            (0x22, 0x6f, 0x07, PowerOff),
            (0x22, 0x6f, 0x0a, PowerOff),
            (0x22, 0x6f, 0x0c, PowerOff),
            (0x22, 0x6f, 0x0b, Other), // legacy ON
            (0x0d, 0x6f, 0x02, PredictiveFailure),
            (0x0d, 0x6f, 0x01, Other), // drive fault: failed, not about to
            (0x08, 0x6f, 0x02, PredictiveFailure),
            (0x0c, 0x6f, 0x05, PredictiveFailure),
            (0x0c, 0x6f, 0x00, Other), // one correctable ECC error
            (0x04, 0x04, 0x01, PredictiveFailure), // fan, generic predictive failure
            (0x04, 0x04, 0x00, Other), // predictive failure deasserted
            (0x07, 0x06, 0x01, Degradation),
            (0x07, 0x06, 0x00, Other), // performance met
            (0x01, 0x07, 0x00, Other), // transition to OK
            (0x01, 0x07, 0x01, Degradation),
            (0x01, 0x07, 0x04, Degradation),
            (0x01, 0x07, 0x06, Degradation),
            (0x01, 0x07, 0x07, Other), // monitor
            (0x01, 0x07, 0x08, Other), // informational
            (0x08, 0x0b, 0x01, Degradation),
            (0x08, 0x0b, 0x02, Degradation),
            (0x08, 0x0b, 0x00, Other), // fully redundant
            (0x01, 0x01, 0x09, Other), // upper critical going high: a threshold
            (0x09, 0x70, 0x00, Other), // OEM event type
            (0x09, 0x01, 0x00, Other), // power unit offset 0 but not sensor-specific
        ];
        for &(sensor, event, offset, want) in table {
            let s = specific(sensor, event, offset);
            assert_eq!(meaning(SpecificTrap::from(s)), want, "{s:#010x}");
            let deasserted = SpecificTrap::from(s | 0x80);
            assert_eq!(meaning(deasserted), Other, "{s:#010x} deasserted");
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        for _ in 0..5000 {
            let len = rng.random_range(0..120);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let number: u32 = rng.random();
            match parse(number, &bytes) {
                Ok(p) => {
                    assert!(len >= MIN_LEN);
                    assert_eq!(p.oem_custom.len(), len - 46);
                    assert_eq!(p.specific.raw, number);
                    let _ = p.meaning();
                }
                Err(e) => assert_eq!(e, PetError::Truncated { len }),
            }
        }
    }
}
