//! `RawSpec`: the cluster spec exactly as written in YAML.
//!
//! These types mirror the file one to one and carry the JSON Schema (schemars): key names,
//! types, and every single-field constraint (ranges, lengths, patterns), so an editor
//! with the schema flags most mistakes while typing. Numbers are kept wide here so a
//! wrong value reaches the semantic validator and gets its own message; everything
//! cross-field lives in `validate`. Nothing outside `spec` should use these types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::SecretRule;

/// Pattern for SNMP communities: letters and digits.
pub const COMMUNITY_PATTERN: &str = "^[A-Za-z0-9]*$";
/// Pattern for HMAC keys: printable ASCII.
pub const KEY_PATTERN: &str = "^[ -~]*$";
/// Pattern for numeric OIDs.
pub const OID_PATTERN: &str = r"^[0-9]+(\.[0-9]+)+$";
/// Pattern for names (systems, VMs, management servers): 1–31 letters and digits.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9]{1,31}$";
/// Printable ASCII without `" $ ' \ # ;` and space (accounts and passwords, SPEC §5).
pub const CREDENTIAL_PATTERN: &str = r"^[!%&(-:<-\[\]-~]*$";

/// A haconn cluster spec (`apiVersion: haconn/v1`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "haconn cluster spec")]
pub struct RawSpec {
    /// Version of this format; always `haconn/v1`.
    pub api_version: ApiVersion,
    /// `pair` (two management servers, the default) or `single` (one; labs only, reported as not redundant).
    pub mode: Option<Mode>,
    /// `standard` enforces the seed product's limits (32 servers, 256 systems, 132 PDUs);
    /// `large` allows 1024 servers, 8192 systems and 4096 PDUs.
    pub scale: Option<Scale>,
    /// The reset path: where HA monitors send reset requests and reset-path checks.
    pub reset_path: RawResetPath,
    /// Hard-reset issue time in milliseconds (1000–5000) after a soft reset (NMI) of a
    /// physical server, or `off` (then 5000 ms).
    pub hispeed: Option<RawHispeed>,
    /// SNMP v2c settings for the PDUs; required when any PDU is declared.
    pub snmp: Option<RawSnmp>,
    /// The management servers running haconn: two, or one with `mode: single`.
    pub management_servers: Vec<RawManagementServer>,
    /// How the two management servers watch each other over the mlan (`mode: pair`).
    pub pair: Option<RawPair>,
    /// Switched PDUs whose outlets feed servers (at most 132 at `scale: standard`).
    #[serde(default)]
    pub pdus: Vec<RawPdu>,
    /// PDU models beyond the built-in ones (IBM_PDU, APC_RPDU, RARITAN_PDU2, EATON_EPDU, APC_MASTERSWITCH).
    #[serde(default)]
    pub pdu_models: Vec<RawPduModel>,
    /// Managed physical servers (at most 32 at `scale: standard`).
    #[serde(default)]
    pub servers: Vec<RawServer>,
    /// Hardware alerts: the SNMP trap receiver for BMC traps (IPMI Platform Event Traps
    /// and vendor traps). Without it no trap is received; `haconn alert` works either way.
    pub alerts: Option<RawAlerts>,
    /// Prometheus metrics over HTTP (`GET /metrics`), off without this block. Served
    /// without authentication: keep it on loopback (the default) or a management network.
    pub metrics: Option<RawMetrics>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawMetrics {
    /// The address the metrics endpoint listens on (default `127.0.0.1`).
    pub address: Option<String>,
    /// Its TCP port (default 9464).
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAlerts {
    /// The address the trap receiver listens on (default `0.0.0.0`, every address).
    pub address: Option<String>,
    /// Its UDP port (default 162, SNMP's trap port).
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
    /// The SNMP v1/v2c community the BMCs' traps carry; other traps are refused.
    pub community: RawCommunity,
    /// Vendor trap OIDs and what they mean, beyond the IPMI Platform Event Traps haconn
    /// reads itself: a trap whose OID is `oid` or below it means `means`.
    #[serde(default)]
    pub traps: Vec<RawVendorTrap>,
    /// A command (absolute path) run on a failure warning of a server that asks for it,
    /// with the event as arguments and environment, e.g. to start a planned failover.
    pub warning_command: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawVendorTrap {
    /// Dotted-decimal OID (e.g. `1.3.6.1.4.1.674.10892.5.3.2.5`).
    #[schemars(regex(pattern = r"^\.?[0-9]+(\.[0-9]+)+$"))]
    pub oid: String,
    pub means: AlertKind,
}

/// What an alert means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// The server is powered off: confirmed over its BMC, then POFF to the cluster.
    PowerOff,
    /// A part predicts its own failure (a failure warning).
    PredictiveFailure,
    /// Performance, redundancy or health degraded (a failure warning).
    Degradation,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawWarnings {
    /// A predictive-failure trap from this server's BMC marks it "warning" (default false).
    pub predictive_failure: Option<bool>,
    /// A performance-degradation trap from this server's BMC marks it "warning" (default
    /// false).
    pub degradation: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "haconn/v1")]
    V1,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Pair,
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Standard,
    Large,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawResetPath {
    /// Virtual IP of the reset path with its mask: `192.168.10.100/24` or `192.168.10.100/255.255.255.0`.
    pub address: String,
    /// UDP port of the reset path (5001–65535).
    #[schemars(range(min = 5001, max = 65535))]
    pub port: u64,
    /// Broadcast address for attention notifications; default: derived from `address`.
    pub broadcast: Option<String>,
    /// Datagram authentication: `{key: <secret>}` (HMAC-SHA256) or `none` (labs only).
    pub auth: RawAuth,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawAuth {
    None(NoneWord),
    Key(RawAuthKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum NoneWord {
    #[serde(rename = "none")]
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAuthKey {
    /// The cluster's HMAC key (16–256 printable characters). With `keyMode: perNode` it is
    /// the master key each system's own key is derived from (`haconn node key`).
    pub key: RawHmacKey,
    /// `perNode` (default): each system signs with its own key, derived from `key` with
    /// HKDF-SHA256 and its name, so a node cannot sign as another. `shared`: every node
    /// holds `key` itself (weaker: any node can sign as any other; for migration).
    #[serde(default)]
    pub key_mode: KeyMode,
}

/// How the reset-path key is held by the nodes (PROTOCOL.md, "Authentication").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KeyMode {
    /// Each system has its own key, derived from the cluster key and its name.
    #[default]
    PerNode,
    /// Every node holds the cluster key itself.
    Shared,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RawHispeed {
    /// 1000–5000 in steps of 100 ms (the original fixes the last two digits at 00).
    Millis(#[schemars(range(min = 1000, max = 5000), extend("multipleOf" = 100))] u64),
    Off(OffWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum OffWord {
    #[serde(rename = "off")]
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSnmp {
    /// SNMP v2c community of the PDUs (1–30 letters and digits).
    pub community: RawCommunity,
}

/// Where a secret comes from, when not written inline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum RawSecretRef {
    /// Read from this environment variable where it is used.
    Env(#[schemars(regex(pattern = "^[A-Za-z_][A-Za-z0-9_]*$"))] String),
    /// Read from this file (one trailing newline dropped) where it is used.
    File(#[schemars(length(min = 1))] String),
}

/// The schema keyword that marks a secret type. Every secret type's schema carries
/// `"writeOnly": true` (JSON Schema's "a value that is written, never read back"), and
/// every place that renders a spec value finds secrets by this mark, not by a list of
/// key names: a new secret field is masked as soon as it has a secret type.
pub const SECRET_MARK: &str = "writeOnly";

/// A field type that holds a secret. Its schema carries [`SECRET_MARK`] and its `Debug`
/// masks inline text; validation makes a [`Secret`](super::secret::Secret) from nothing
/// else, so a secret field cannot be added without being marked.
pub trait SecretField: JsonSchema {
    /// The rule the value must follow.
    const RULE: SecretRule;
    /// The inline text, or the reference.
    fn parts(&self) -> Result<String, RawSecretRef>;
}

/// Declares a secret type: inline text with the kind's own rule in the schema, or a
/// reference; marked secret in the schema ([`SECRET_MARK`]); `Debug` never shows the text.
macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident, $rule:expr, $min:literal, $max:literal, $pattern:expr) => {
        $(#[$doc])*
        #[derive(Clone, Deserialize, Serialize, JsonSchema)]
        #[serde(untagged)]
        #[schemars(extend("writeOnly" = true))]
        pub enum $name {
            Inline(#[schemars(length(min = $min, max = $max), regex(pattern = $pattern))] String),
            Reference(RawSecretRef),
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    $name::Inline(_) => f.write_str(super::secret::MASK),
                    $name::Reference(r) => r.fmt(f),
                }
            }
        }

        impl SecretField for $name {
            const RULE: SecretRule = $rule;

            fn parts(&self) -> Result<String, RawSecretRef> {
                match self {
                    $name::Inline(s) => Ok(s.clone()),
                    $name::Reference(r) => Err(r.clone()),
                }
            }
        }
    };
}

secret_type!(
    /// A BMC password (8–20 characters): inline, `{env: NAME}` or `{file: /path}`.
    RawBmcPassword, SecretRule::BmcPassword, 8, 20, CREDENTIAL_PATTERN
);
secret_type!(
    /// An ESXi password (1–38 characters): inline, `{env: NAME}` or `{file: /path}`.
    RawEsxiPassword, SecretRule::EsxiPassword, 1, 38, CREDENTIAL_PATTERN
);
secret_type!(
    /// A BMC key Kg (1–20 characters): inline, `{env: NAME}` or `{file: /path}`.
    RawKg, SecretRule::Kg, 1, 20, CREDENTIAL_PATTERN
);
secret_type!(
    /// An SNMP community (1–30 letters and digits): inline, `{env: NAME}` or `{file: /path}`.
    RawCommunity, SecretRule::Community, 1, 30, COMMUNITY_PATTERN
);
secret_type!(
    /// A reset-path HMAC key (16–256 printable characters): inline, `{env: NAME}` or `{file: /path}`.
    RawHmacKey, SecretRule::HmacKey, 16, 256, KEY_PATTERN
);

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBmc {
    /// IP address of the BMC (iLO / RMC / any IPMI 2.0 BMC).
    pub address: String,
    /// RMCP+ UDP port; default 623.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
    /// BMC account (1–16 printable characters, none of `" $ ' \ # ;` or space).
    #[schemars(length(min = 1, max = 16), regex(pattern = CREDENTIAL_PATTERN))]
    pub username: String,
    /// BMC password (8–20 characters, same character rule).
    pub password: RawBmcPassword,
    /// Optional BMC key (Kg) for RMCP+ sessions.
    pub kg: Option<RawKg>,
    /// RMCP+ cipher suites haconn may use with this BMC, tried in this order: 17
    /// (HMAC-SHA256, AES-CBC-128) and/or 3 (HMAC-SHA1, AES-CBC-128); default `[17, 3]`.
    /// A BMC's refusal is not authenticated: list only the suites you accept.
    #[serde(default)]
    #[schemars(schema_with = "cipher_suites_schema")]
    pub cipher_suites: Option<Vec<u64>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEndpoint {
    /// IP address on the management LAN between the two management servers.
    pub address: String,
    /// UDP port (5001–65535), different from the reset-path port.
    #[schemars(range(min = 5001, max = 65535))]
    pub port: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawManagementServer {
    /// Host name of the management server (1–31 letters and digits).
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The management server's own BMC (used when its peer fences it).
    pub bmc: RawBmc,
    /// Its end of the management LAN.
    pub mlan: RawEndpoint,
    /// PDU forced reset of this management server.
    pub ipdu: Option<RawManagementIpdu>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPair {
    /// Milliseconds between heartbeats on the mlan (50–2000; default 200).
    #[schemars(range(min = 50, max = 2000))]
    pub heartbeat_interval: Option<u64>,
    /// Heartbeats missed before the standby fences the active and takes over (2–20;
    /// default 4: the peer is lost after 800 ms).
    #[schemars(range(min = 2, max = 20))]
    pub heartbeat_misses: Option<u64>,
    /// Seconds a starting server waits to hear its peer before fencing it and serving
    /// alone (5–600; default 30).
    #[schemars(range(min = 5, max = 600))]
    pub startup_grace: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawManagementIpdu {
    /// Whether PDU forced reset is on; default true when this block is present.
    pub enabled: Option<bool>,
    /// Seconds to wait for the BMC's hard-reset acknowledgement before cutting outlets (5–60); required when enabled.
    #[schemars(range(min = 5, max = 60))]
    pub timeout: Option<u64>,
    /// Outlets feeding this management server (at most 2).
    #[serde(default)]
    #[schemars(length(max = 2))]
    pub outlets: Vec<RawOutlet>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawServer {
    /// System name (HA monitor "partition name"): 1–31 letters and digits, unique.
    #[schemars(regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// The server's BMC.
    pub bmc: RawBmc,
    /// Monitor-pair arbitration: of two crossing resets in a mutual pair only the first runs.
    pub cluster: Option<bool>,
    /// PDU forced reset when the BMC fails.
    pub ipdu: Option<RawServerIpdu>,
    /// Present when the server runs VMware ESXi whose guests run HA monitors (a vserver).
    pub esxi: Option<RawEsxi>,
    /// Which failure warnings of its BMC mark this server "warning" (the seed's two
    /// per-server options). A warning never resets anything.
    pub warnings: Option<RawWarnings>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawServerIpdu {
    /// Whether PDU forced reset is on; default true when this block is present.
    pub enabled: Option<bool>,
    /// Seconds to wait for the BMC's hard-reset acknowledgement before cutting outlets (5–60); required when enabled.
    #[schemars(range(min = 5, max = 60))]
    pub timeout: Option<u64>,
    /// Seconds before outlets are switched back on (0 = leave off, else 5–60); required when enabled.
    #[serde(default)]
    #[schemars(schema_with = "recovery_time_schema")]
    pub recovery_time: Option<u64>,
    /// Outlets feeding this server (at most 4).
    #[serde(default)]
    #[schemars(length(max = 4))]
    pub outlets: Vec<RawOutlet>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawOutlet {
    /// Address of a PDU declared under `pdus`.
    pub pdu: String,
    /// Outlet number on that PDU (1 .. the model's outlet count).
    #[schemars(range(min = 1))]
    pub outlet: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("anyOf" = [{"required": ["password"]}, {"required": ["privateKey"]}]))]
pub struct RawEsxi {
    /// Management address of the ESXi host.
    pub address: String,
    /// SSH port; default 22.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
    /// ESXi account (1–39 characters, same character rule as BMC accounts).
    #[schemars(length(min = 1, max = 39), regex(pattern = CREDENTIAL_PATTERN))]
    pub username: String,
    /// ESXi password (1–38 characters), tried with keyboard-interactive, then `password`; optional when `privateKey` is given.
    pub password: Option<RawEsxiPassword>,
    /// SSH private key (OpenSSH format, no passphrase) for key login, tried before the password; by reference only: `{file: /path}` or `{env: NAME}`.
    #[serde(default)]
    pub private_key: Option<RawPrivateKey>,
    /// Whether haconn manages this host's guests; default true.
    pub enabled: Option<bool>,
    /// Pinned SSH host key fingerprint, `SHA256:<base64>`.
    #[schemars(regex(pattern = "^SHA256:[A-Za-z0-9+/]{43}=?$"))]
    pub host_key: Option<String>,
    /// Accept and record an unknown host key on first connection (instead of refusing).
    pub trust_on_first_use: Option<bool>,
    /// VM names of the guests that run an HA monitor (at most 16; 1–31 letters and digits).
    #[schemars(length(max = 16))]
    pub guests: Vec<GuestName>,
}

/// An SSH private key: only a reference is valid; an inline value is kept here so the
/// validator can refuse it with its own message (which never quotes it).
#[derive(Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawPrivateKey {
    Reference(RawSecretRef),
    Inline(String),
}

impl std::fmt::Debug for RawPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawPrivateKey::Inline(_) => f.write_str(super::secret::MASK),
            RawPrivateKey::Reference(r) => r.fmt(f),
        }
    }
}

impl SecretField for RawPrivateKey {
    const RULE: SecretRule = SecretRule::SshPrivateKey;

    fn parts(&self) -> Result<String, RawSecretRef> {
        match self {
            RawPrivateKey::Inline(s) => Ok(s.clone()),
            RawPrivateKey::Reference(r) => Err(r.clone()),
        }
    }
}

/// `privateKey` in the schema: a secret reference, never an inline value; a secret type.
impl JsonSchema for RawPrivateKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RawPrivateKey".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mut schema = generator.subschema_for::<RawSecretRef>();
        schema.insert(SECRET_MARK.into(), true.into());
        schema
    }
}

/// A VM name (1–31 letters and digits).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct GuestName(#[schemars(regex(pattern = NAME_PATTERN))] pub String);

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPdu {
    /// IP address of the PDU.
    pub address: String,
    /// SNMP UDP port; default 161.
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u64>,
    /// Model: a built-in one or a name from `pduModels`.
    pub model: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPduModel {
    /// Model name used by `pdus[].model` (letters, digits, `_`; must not be a built-in name).
    #[schemars(regex(pattern = "^[A-Za-z][A-Za-z0-9_]{0,31}$"))]
    pub name: String,
    /// Number of outlets (1–96).
    #[schemars(range(min = 1, max = 96))]
    pub outlets: u64,
    /// Index in the OID of outlet 1 (1 for most, 0 for Eaton-style tables); default 1.
    #[schemars(range(max = 1))]
    pub first_index: Option<u64>,
    /// The writable outlet-control column and its values.
    pub control: RawOidValues,
    /// The outlet-state column; default: the control column and values.
    pub status: Option<RawOidValues>,
    /// OID of the firmware version string.
    #[schemars(regex(pattern = OID_PATTERN))]
    pub firmware_oid: Option<String>,
    /// OID of the outlet count.
    #[schemars(regex(pattern = OID_PATTERN))]
    pub outlet_count_oid: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawOidValues {
    /// Column OID without the outlet index (`1.3.6.1.4.1...`).
    #[schemars(regex(pattern = OID_PATTERN))]
    pub oid: String,
    /// Integer value meaning "on".
    pub on: i64,
    /// Integer value meaning "off".
    pub off: i64,
}

/// `cipherSuites`: 1–2 distinct suites out of 17 and 3.
fn cipher_suites_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "integer", "enum": [17, 3]},
        "minItems": 1,
        "maxItems": 2,
        "uniqueItems": true
    })
}

/// `recoveryTime`: 0 (leave outlets off) or 5–60 seconds.
fn recovery_time_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Seconds before outlets are switched back on: 0 = leave them off, else 5–60; required when enabled.",
        "anyOf": [
            {"type": "integer", "const": 0},
            {"type": "integer", "minimum": 5, "maximum": 60}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked<T: SecretField>() -> bool {
        schemars::schema_for!(T).get(SECRET_MARK) == Some(&serde_json::Value::Bool(true))
    }

    #[test]
    fn every_secret_type_is_marked_and_never_debugs_its_text() {
        assert!(marked::<RawBmcPassword>());
        assert!(marked::<RawEsxiPassword>());
        assert!(marked::<RawKg>());
        assert!(marked::<RawCommunity>());
        assert!(marked::<RawHmacKey>());
        assert!(marked::<RawPrivateKey>());
        let shown = format!(
            "{:?} {:?}",
            RawBmcPassword::Inline("Sup3rS3cret".into()),
            RawPrivateKey::Inline("-----BEGIN KEY".into())
        );
        assert!(
            !shown.contains("Sup3r") && !shown.contains("BEGIN"),
            "{shown}"
        );
    }

    /// The schema walk finds (at least) every secret field there is today.
    #[test]
    fn the_schema_lists_every_secret_field() {
        let fields = crate::spec::secret_fields();
        for f in [
            "resetPath.auth.key",
            "snmp.community",
            "managementServers[].bmc.password",
            "managementServers[].bmc.kg",
            "servers[].bmc.password",
            "servers[].bmc.kg",
            "servers[].esxi.password",
            "servers[].esxi.privateKey",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
    }
}
