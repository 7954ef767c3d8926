//! PDU models: how to switch and read an outlet over SNMP, per vendor MIB.

/// A column OID with the integer values meaning on and off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OidValues {
    pub oid: String,
    pub on: i64,
    pub off: i64,
}

impl OidValues {
    fn new(oid: &str, on: i64, off: i64) -> Self {
        OidValues {
            oid: oid.to_string(),
            on,
            off,
        }
    }
}

/// Firmware whose version string contains `contains` uses other columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FirmwareVariant {
    pub contains: String,
    pub control: OidValues,
    pub status: OidValues,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PduModel {
    pub name: String,
    /// Outlets numbered 1..=outlets in the spec.
    pub outlets: u16,
    /// The OID index of outlet 1 (the index of outlet n is `n - 1 + first_index`).
    pub first_index: u32,
    pub control: OidValues,
    pub status: OidValues,
    pub firmware_oid: Option<String>,
    pub outlet_count_oid: Option<String>,
    pub firmware_variants: Vec<FirmwareVariant>,
    pub builtin: bool,
}

impl PduModel {
    /// The full OID of a column cell for outlet `n` (1-based, as in the spec).
    pub fn outlet_oid(column: &OidValues, first_index: u32, n: u16) -> String {
        format!("{}.{}", column.oid, u32::from(n) - 1 + first_index)
    }
}

const IBM: &str = "1.3.6.1.4.1.2.6.223";

/// The models haconn knows without a `pduModels` entry.
pub fn builtin_models() -> Vec<PduModel> {
    let ibm_col = |c: u32| OidValues::new(&format!("{IBM}.8.2.2.1.{c}"), 1, 0);
    vec![
        PduModel {
            name: "IBM_PDU".into(),
            outlets: 12,
            first_index: 1,
            control: ibm_col(11),
            status: ibm_col(11),
            firmware_oid: Some(format!("{IBM}.7.3.0")),
            outlet_count_oid: Some(format!("{IBM}.8.2.1.0")),
            firmware_variants: vec![FirmwareVariant {
                contains: "sLEN".into(),
                control: ibm_col(13),
                status: ibm_col(13),
            }],
            builtin: true,
        },
        PduModel {
            name: "APC_RPDU".into(),
            outlets: 24,
            first_index: 1,
            control: OidValues::new("1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 1, 2),
            status: OidValues::new("1.3.6.1.4.1.318.1.1.12.3.5.1.1.4", 1, 2),
            firmware_oid: Some("1.3.6.1.4.1.318.1.1.12.1.3.0".into()),
            outlet_count_oid: Some("1.3.6.1.4.1.318.1.1.12.3.1.4.0".into()),
            firmware_variants: vec![],
            builtin: true,
        },
        PduModel {
            name: "APC_MASTERSWITCH".into(),
            outlets: 8,
            first_index: 1,
            control: OidValues::new("1.3.6.1.4.1.318.1.1.4.4.2.1.3", 1, 2),
            status: OidValues::new("1.3.6.1.4.1.318.1.1.4.4.2.1.3", 1, 2),
            firmware_oid: None,
            outlet_count_oid: None,
            firmware_variants: vec![],
            builtin: true,
        },
        PduModel {
            name: "RARITAN_PDU2".into(),
            outlets: 48,
            first_index: 1,
            control: OidValues::new("1.3.6.1.4.1.13742.6.4.1.2.1.2.1", 1, 0),
            status: OidValues::new("1.3.6.1.4.1.13742.6.4.1.2.1.3.1", 7, 8),
            firmware_oid: None,
            outlet_count_oid: None,
            firmware_variants: vec![],
            builtin: true,
        },
        PduModel {
            name: "EATON_EPDU".into(),
            outlets: 48,
            first_index: 0,
            control: OidValues::new("1.3.6.1.4.1.534.6.6.6.1.2.2.1.3", 1, 0),
            status: OidValues::new("1.3.6.1.4.1.534.6.6.6.1.2.2.1.3", 1, 0),
            firmware_oid: None,
            outlet_count_oid: None,
            firmware_variants: vec![],
            builtin: true,
        },
    ]
}

/// Looks up a built-in model by name.
pub fn builtin_model(name: &str) -> Option<PduModel> {
    builtin_models().into_iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlet_oids_follow_the_first_index() {
        let ibm = builtin_model("IBM_PDU").unwrap();
        assert_eq!(
            PduModel::outlet_oid(&ibm.control, ibm.first_index, 3),
            "1.3.6.1.4.1.2.6.223.8.2.2.1.11.3"
        );
        let eaton = builtin_model("EATON_EPDU").unwrap();
        assert_eq!(
            PduModel::outlet_oid(&eaton.control, eaton.first_index, 1),
            "1.3.6.1.4.1.534.6.6.6.1.2.2.1.3.0"
        );
    }
}
