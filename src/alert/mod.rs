//! Hardware alerts (issue 15): SNMP traps and informs from BMCs and other hardware,
//! decoded and classified. Pure: bytes in, values out; no sockets, no clocks.
//!
//! - [`trap`]: one SNMP v1/v2c datagram (snmp2 decodes the BER) into a [`trap::Trap`],
//!   bounded and with typed errors, and the Response-PDU that acknowledges an inform.
//! - [`pet`]: the IPMI Platform Event Trap a BMC sends, and its [`Meaning`].
//! - Here: [`classify`], a trap's meaning from its PET or the caller's vendor table.

pub mod pet;
pub mod trap;

/// What an alert says about a machine, as far as fencing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Meaning {
    /// The machine is powered off or going down.
    PowerOff,
    /// A part reports that it is about to fail.
    PredictiveFailure,
    /// The machine runs with reduced performance, redundancy or health.
    Degradation,
    /// Nothing of the above, or not known.
    Other,
}

impl From<crate::spec::model::AlertKind> for Meaning {
    fn from(k: crate::spec::model::AlertKind) -> Meaning {
        use crate::spec::model::AlertKind;
        match k {
            AlertKind::PowerOff => Meaning::PowerOff,
            AlertKind::PredictiveFailure => Meaning::PredictiveFailure,
            AlertKind::Degradation => Meaning::Degradation,
        }
    }
}

impl Meaning {
    /// The spec's kind of alert this is; `None` for [`Meaning::Other`].
    pub fn kind(self) -> Option<crate::spec::model::AlertKind> {
        use crate::spec::model::AlertKind;
        match self {
            Meaning::PowerOff => Some(AlertKind::PowerOff),
            Meaning::PredictiveFailure => Some(AlertKind::PredictiveFailure),
            Meaning::Degradation => Some(AlertKind::Degradation),
            Meaning::Other => None,
        }
    }
}

/// One entry of a caller's table: traps whose trap OID is `oid_prefix` or lies below it
/// mean `meaning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorOid {
    /// Dotted decimal, without a leading dot.
    pub oid_prefix: String,
    pub meaning: Meaning,
}

/// The meaning of `trap`: its PET's when it carries a readable PET whose meaning is not
/// [`Meaning::Other`]; else that of the longest `vendor` prefix of its trap OID (whole
/// arcs: `1.3.6.1.4.1.31` is not a prefix of `1.3.6.1.4.1.318`); else `Other`.
pub fn classify(trap: &trap::Trap, vendor: &[VendorOid]) -> Meaning {
    if let Some(Ok(p)) = &trap.pet {
        let m = p.meaning();
        if m != Meaning::Other {
            return m;
        }
    }
    let oid = trap.trap_oid.as_str();
    vendor
        .iter()
        .filter(|v| {
            let prefix = v.oid_prefix.strip_prefix('.').unwrap_or(&v.oid_prefix);
            oid.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .max_by_key(|v| v.oid_prefix.len())
        .map_or(Meaning::Other, |v| v.meaning)
}

#[cfg(test)]
mod tests {
    use super::trap::tests::{pet_v1, v2c};
    use super::trap::{Kind, decode};
    use super::*;

    fn vendor(prefix: &str, meaning: Meaning) -> VendorOid {
        VendorOid {
            oid_prefix: prefix.into(),
            meaning,
        }
    }

    #[test]
    fn pet_first_then_the_longest_vendor_prefix() {
        let table = [
            vendor("1.3.6.1.4.1.674", Meaning::Degradation),
            vendor("1.3.6.1.4.1.674.10892.5.3.2.5", Meaning::PredictiveFailure),
            vendor(".1.3.6.1.4.1.3183.1.1.0", Meaning::Degradation),
            vendor("1.3.6.1.4.1.31", Meaning::PowerOff),
        ];
        let classify_v2 = |oid: &str| {
            let t = decode(&v2c(Kind::Trap, oid, &[])).unwrap();
            classify(&t, &table)
        };
        assert_eq!(
            classify_v2("1.3.6.1.4.1.674.10892.5.3.2.5.0.2102"),
            Meaning::PredictiveFailure
        );
        assert_eq!(
            classify_v2("1.3.6.1.4.1.674.10892.5.3.2.4.0.2102"),
            Meaning::Degradation
        );
        assert_eq!(classify_v2("1.3.6.1.4.1.674"), Meaning::Degradation);
        // Whole arcs only.
        assert_eq!(classify_v2("1.3.6.1.4.1.6740.1"), Meaning::Other);
        assert_eq!(classify_v2("1.3.6.1.4.1.318.0.1"), Meaning::Other);
        assert_eq!(classify_v2("1.3.6.1.4.1.31.0.1"), Meaning::PowerOff);
        assert_eq!(classify_v2("1.3.6.1.6.3.1.1.5.1"), Meaning::Other);
        assert_eq!(
            classify(
                &decode(&v2c(Kind::Trap, "1.3.6.1.4.1.674.1", &[])).unwrap(),
                &[]
            ),
            Meaning::Other
        );

        // A PET with a meaning of its own wins over the table.
        let power_off = decode(&pet_v1(0x0009_6f00, &super::pet::tests::sample())).unwrap();
        assert_eq!(classify(&power_off, &table), Meaning::PowerOff);
        // A PET without one (here a deassertion) falls to the table, which names the PET
        // trap OIDs.
        let deasserted = decode(&pet_v1(0x0009_6f80, &super::pet::tests::sample())).unwrap();
        assert_eq!(classify(&deasserted, &table), Meaning::Degradation);
        assert_eq!(classify(&deasserted, &[]), Meaning::Other);
        // So does an unreadable PET.
        let cut = decode(&pet_v1(0x0009_6f00, &[0; 10])).unwrap();
        assert!(matches!(cut.pet, Some(Err(_))));
        assert_eq!(classify(&cut, &table), Meaning::Degradation);
        assert_eq!(classify(&cut, &[]), Meaning::Other);
    }
}
