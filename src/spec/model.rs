//! `Spec`: a cluster spec known to be good.
//!
//! Only `validate` builds these. Fields use types that cannot hold a value outside its
//! SPEC §5 range, collections are keyed by identity (name or address) so that reordering
//! in the file is not a change, and code past validation never re-checks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::pdu_model::PduModel;
use super::secret::Secret;

pub use super::raw::{KeyMode, Mode, Scale};

/// A system, VM or management server name: 1–31 ASCII letters and digits.
///
/// Held inline (32 bytes, no allocation): the reset core clones names into its tables,
/// its request cache and the live facts a reload plans against, and a clone is a copy of
/// 32 bytes (it is not `Copy` only to keep clones visible).
#[derive(Clone, PartialEq, Eq)]
pub struct Name {
    len: u8,
    bytes: [u8; Name::MAX],
}

impl Name {
    /// The longest name.
    pub const MAX: usize = 31;

    /// Whether `s` is a valid name (what [`Name::parse`] accepts), without allocating.
    pub fn is_valid(s: &str) -> bool {
        (1..=Name::MAX).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    pub fn parse(s: &str) -> Result<Name, String> {
        if s.is_empty() || s.len() > Name::MAX {
            return Err(format!(
                "name must be 1–31 characters (`{s}` has {})",
                s.chars().count()
            ));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("name `{s}` may hold letters and digits only"));
        }
        let mut bytes = [0u8; Name::MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Name {
            len: s.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: a `Name` is made only by `parse`, from ASCII letters and digits.
        unsafe { std::str::from_utf8_unchecked(&self.bytes[..usize::from(self.len)]) }
    }
}

// Hashed and ordered as the text is (as `Borrow<str>` requires: maps keyed by names are
// looked up by `&str`), not by the inline layout.
impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // The padding is zeros and a name holds none, so the padded bytes compare as the
        // text does ("ab" < "abc" as 0 < b'c').
        self.bytes.cmp(&other.bytes)
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({:?})", self.as_str())
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounded whole number of seconds or milliseconds, checked at construction.
macro_rules! bounded {
    ($(#[$doc:meta])* $name:ident, $unit:ident, $lo:expr, $hi:expr, $allow_zero:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u32);

        impl $name {
            pub const MIN: u32 = $lo;
            pub const MAX: u32 = $hi;

            pub fn new(v: u64) -> Option<Self> {
                let ok = ($allow_zero && v == 0) || ((Self::MIN as u64)..=(Self::MAX as u64)).contains(&v);
                ok.then_some($name(v as u32))
            }

            pub fn get(self) -> u32 {
                self.0
            }

            pub fn duration(self) -> Duration {
                Duration::$unit(u64::from(self.0))
            }
        }
    };
}

bounded!(
    /// How long to wait for the BMC's hard-reset acknowledgement before cutting PDU outlets: 5–60 s.
    IpduTimeout, from_secs, 5, 60, false
);
bounded!(
    /// How long outlets stay off after a PDU forced reset: 0 (stay off) or 5–60 s.
    RecoveryTime, from_secs, 5, 60, true
);
bounded!(
    /// Hard-reset issue time after a soft reset (hispeed): 1000–5000 ms.
    Hispeed, from_millis, 1000, 5000, false
);

/// A UDP port of the reset path or mlan: 5001–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePort(u16);

impl ServicePort {
    pub fn new(v: u64) -> Option<Self> {
        (5001..=65535).contains(&v).then_some(ServicePort(v as u16))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// The cluster key, and whether nodes hold it or keys derived from it.
    Hmac(Secret, KeyMode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPath {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub port: ServicePort,
    pub broadcast: Option<IpAddr>,
    /// `broadcast`, else derived from `address` and `prefix_len` at validation.
    pub broadcast_resolved: Option<IpAddr>,
    pub auth: Auth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    pub address: IpAddr,
    pub port: u16,
    pub username: String,
    pub password: Secret,
    pub kg: Option<Secret>,
    /// Tried in this order; never empty, no suite twice.
    pub cipher_suites: Vec<CipherSuite>,
}

/// The RMCP+ cipher suites haconn speaks (IPMI 2.0 §22.15.2); both use AES-CBC-128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Three,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Seventeen,
}

impl CipherSuite {
    /// The default order: the stronger suite first.
    pub const DEFAULT: [CipherSuite; 2] = [CipherSuite::Seventeen, CipherSuite::Three];

    pub fn number(self) -> u8 {
        match self {
            CipherSuite::Three => 3,
            CipherSuite::Seventeen => 17,
        }
    }

    pub fn from_number(n: u64) -> Option<CipherSuite> {
        match n {
            3 => Some(CipherSuite::Three),
            17 => Some(CipherSuite::Seventeen),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: IpAddr,
    pub port: ServicePort,
}

/// One outlet of one PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutletLink {
    pub pdu: IpAddr,
    pub outlet: u16,
}

impl fmt::Display for OutletLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.pdu, self.outlet)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementIpdu {
    pub enabled: bool,
    pub timeout: Option<IpduTimeout>,
    pub outlets: Vec<OutletLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementServer {
    pub name: Name,
    pub bmc: Bmc,
    pub mlan: Endpoint,
    pub ipdu: Option<ManagementIpdu>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerIpdu {
    pub enabled: bool,
    pub timeout: Option<IpduTimeout>,
    pub recovery_time: Option<RecoveryTime>,
    pub outlets: Vec<OutletLink>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Esxi {
    pub address: IpAddr,
    pub port: u16,
    pub username: String,
    /// At least one of `password` and `private_key` is set.
    pub password: Option<Secret>,
    /// A reference (never inline) to an SSH private key.
    pub private_key: Option<Secret>,
    pub enabled: bool,
    pub host_key: Option<String>,
    pub trust_on_first_use: bool,
    /// HA guests by VM name, sorted.
    pub guests: Vec<Name>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalServer {
    pub name: Name,
    pub bmc: Bmc,
    pub cluster: bool,
    pub ipdu: Option<ServerIpdu>,
    pub esxi: Option<Esxi>,
    /// Which failure warnings of its BMC mark it "warning".
    pub warnings: Warnings,
}

/// The seed's two per-server options: which failure warnings count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warnings {
    pub predictive_failure: bool,
    pub degradation: bool,
}

impl Warnings {
    /// Whether an alert of `kind` marks the server.
    pub fn takes(&self, kind: AlertKind) -> bool {
        match kind {
            AlertKind::PowerOff => false,
            AlertKind::PredictiveFailure => self.predictive_failure,
            AlertKind::Degradation => self.degradation,
        }
    }
}

pub use super::raw::AlertKind;

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::PowerOff => "powerOff",
            AlertKind::PredictiveFailure => "predictiveFailure",
            AlertKind::Degradation => "degradation",
        }
    }
}

/// The trap receiver's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alerts {
    pub listen: std::net::SocketAddr,
    pub community: Secret,
    /// Vendor trap OIDs (dotted decimal, no leading dot) and their meaning.
    pub traps: Vec<(String, AlertKind)>,
    pub warning_command: Option<std::path::PathBuf>,
}

impl PhysicalServer {
    /// HA monitor systems on this server: its guests when it is a vserver, else itself.
    pub fn systems(&self) -> usize {
        self.esxi.as_ref().map_or(1, |e| e.guests.len())
    }

    pub fn outlets(&self) -> &[OutletLink] {
        self.ipdu.as_ref().map_or(&[], |i| &i.outlets)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    pub address: IpAddr,
    pub port: u16,
    pub model: PduModel,
}

/// How the two management servers watch each other (`pair` in the spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSettings {
    /// 50–2000 ms.
    pub heartbeat_interval: Duration,
    /// 2–20.
    pub heartbeat_misses: u32,
    /// 5–600 s.
    pub startup_grace: Duration,
}

impl Default for PairSettings {
    fn default() -> Self {
        PairSettings {
            heartbeat_interval: Duration::from_millis(200),
            heartbeat_misses: 4,
            startup_grace: Duration::from_secs(30),
        }
    }
}

/// A validated cluster spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub mode: Mode,
    pub scale: Scale,
    pub reset_path: ResetPath,
    /// `None` is hispeed off: the hard reset follows the soft reset after 5000 ms.
    pub hispeed: Option<Hispeed>,
    pub community: Option<Secret>,
    pub management_servers: BTreeMap<Name, ManagementServer>,
    /// The pair's heartbeat and start-up timings (defaults in single mode, unused).
    pub pair: PairSettings,
    pub pdus: BTreeMap<IpAddr, Pdu>,
    pub servers: BTreeMap<Name, PhysicalServer>,
    /// The trap receiver (`None`: no traps are received).
    pub alerts: Option<Alerts>,
    /// Where `GET /metrics` is served (`None`: no metrics endpoint).
    pub metrics: Option<std::net::SocketAddr>,
    /// Which server holds each HA monitor system: built by `validate` (and again by the
    /// reload merge, [`Spec::reindex`]), so the reset path finds a system by key.
    pub(crate) index: SystemIndex,
}

/// An HA monitor system of the spec: a physical server without ESXi, or a guest.
#[derive(Debug, Clone, Copy)]
pub enum SystemRef<'a> {
    Physical(&'a PhysicalServer),
    Guest {
        server: &'a PhysicalServer,
        host: &'a Esxi,
        vm: &'a Name,
    },
}

impl<'a> SystemRef<'a> {
    /// The server the system runs on (the ESXi host's server for a guest).
    pub fn server(self) -> &'a PhysicalServer {
        match self {
            SystemRef::Physical(s) | SystemRef::Guest { server: s, .. } => s,
        }
    }

    pub fn name(self) -> &'a Name {
        match self {
            SystemRef::Physical(s) => &s.name,
            SystemRef::Guest { vm, .. } => vm,
        }
    }

    pub fn is_guest(self) -> bool {
        matches!(self, SystemRef::Guest { .. })
    }
}

/// System name → the name of the server that holds it. Not part of a spec's identity
/// (two specs that differ only here are equal: it is derived from `servers`).
#[derive(Debug, Clone, Default)]
pub struct SystemIndex(std::collections::HashMap<Name, Name>);

impl PartialEq for SystemIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for SystemIndex {}

impl SystemIndex {
    pub(crate) fn build(servers: &BTreeMap<Name, PhysicalServer>) -> SystemIndex {
        let mut index = std::collections::HashMap::with_capacity(servers.len());
        for s in servers.values() {
            match &s.esxi {
                None => {
                    index.insert(s.name.clone(), s.name.clone());
                }
                Some(e) => {
                    for g in &e.guests {
                        index.insert(g.clone(), s.name.clone());
                    }
                }
            }
        }
        SystemIndex(index)
    }
}

/// The hard-reset issue time when hispeed is off.
pub const HISPEED_OFF: Duration = Duration::from_millis(5000);

impl Spec {
    /// When to follow a soft reset with a hard reset on a physical server.
    pub fn hard_reset_after(&self) -> Duration {
        self.hispeed.map_or(HISPEED_OFF, Hispeed::duration)
    }

    pub fn systems(&self) -> usize {
        self.servers.values().map(PhysicalServer::systems).sum()
    }

    /// The system named `name`, found by key. A name the index holds is checked against
    /// the server it points at, so a stale index can hide a system but never give the
    /// wrong one.
    pub fn system(&self, name: &str) -> Option<SystemRef<'_>> {
        let server = self.servers.get(self.index.0.get(name)?.as_str())?;
        match &server.esxi {
            None => (server.name.as_str() == name).then_some(SystemRef::Physical(server)),
            Some(host) => {
                let i = host
                    .guests
                    .binary_search_by(|g| g.as_str().cmp(name))
                    .ok()?;
                Some(SystemRef::Guest {
                    server,
                    host,
                    vm: &host.guests[i],
                })
            }
        }
    }

    /// Rebuilds the system index after `servers` changed.
    pub fn reindex(&mut self) {
        self.index = SystemIndex::build(&self.servers);
    }

    /// Where attention broadcasts go: `resetPath.broadcast`, else the IPv4 broadcast of
    /// the reset-path address's prefix (none for IPv6 without one).
    pub fn attention_broadcast(&self) -> Option<IpAddr> {
        self.reset_path.broadcast_resolved
    }
}

// Normalized renderings. The plan compares these values field by field and `diff` prints
// them as YAML, so they hold everything that matters and secrets only in masked form;
// secrets are compared separately, by value, through `SecretView`.

/// How a secret appears in a comparison: masked for printing, plus a private equality key.
pub trait SecretView {
    fn secret(&self, s: &Secret) -> Value;
}

/// Masks every inline secret: for printing.
pub struct Masked;

impl SecretView for Masked {
    fn secret(&self, s: &Secret) -> Value {
        s.masked()
    }
}

/// Keeps inline secrets as they are: the lossless form for the daemon's state file only.
pub(crate) struct Revealed;

impl SecretView for Revealed {
    fn secret(&self, s: &Secret) -> Value {
        s.spec_value()
    }
}

/// Masks like [`Masked`] and keeps the inline values it masked: what `haconn dump` masks
/// wherever it finds them, as a second guard behind packing no file that holds one.
#[derive(Default)]
pub(crate) struct InlineValues(std::cell::RefCell<Vec<String>>);

impl SecretView for InlineValues {
    fn secret(&self, s: &Secret) -> Value {
        if s.is_inline()
            && let Value::String(v) = s.spec_value()
        {
            self.0.borrow_mut().push(v);
        }
        s.masked()
    }
}

impl Spec {
    /// Every inline secret's value, longest first, without repeats.
    pub(crate) fn inline_secret_values(&self) -> Vec<String> {
        let seen = InlineValues::default();
        self.to_value(&seen);
        let mut v = seen.0.into_inner();
        v.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        v.dedup();
        v
    }
}

/// Prefix of a fingerprinted inline secret in a comparison value.
pub const SECRET_FINGERPRINT: &str = "\u{0}secret:";

/// Replaces every inline secret by a keyed hash, so two specs compared through the same
/// `Fingerprinted` see a changed secret without the value being in the comparison. The key
/// is random per instance: the hash means nothing outside one comparison.
#[derive(Default)]
pub struct Fingerprinted {
    state: std::collections::hash_map::RandomState,
}

impl SecretView for Fingerprinted {
    fn secret(&self, s: &Secret) -> Value {
        use std::hash::BuildHasher;
        if s.is_inline() {
            Value::String(format!(
                "{SECRET_FINGERPRINT}{:016x}",
                self.state.hash_one(s)
            ))
        } else {
            s.masked()
        }
    }
}

impl Bmc {
    pub fn to_value(&self, v: &dyn SecretView) -> Value {
        let mut m = json!({
            "address": self.address.to_string(),
            "port": self.port,
            "username": self.username,
            "password": v.secret(&self.password),
        });
        if let Some(kg) = &self.kg {
            m["kg"] = v.secret(kg);
        }
        if self.cipher_suites != CipherSuite::DEFAULT {
            m["cipherSuites"] = self.cipher_suites.iter().map(|c| c.number()).collect();
        }
        m
    }
}

fn outlets_value(outlets: &[OutletLink]) -> Value {
    Value::Array(
        outlets
            .iter()
            .map(|o| json!({"pdu": o.pdu.to_string(), "outlet": o.outlet}))
            .collect(),
    )
}

impl ManagementServer {
    pub fn to_value(&self, v: &dyn SecretView) -> Value {
        let mut m = json!({
            "name": self.name.as_str(),
            "bmc": self.bmc.to_value(v),
            "mlan": {"address": self.mlan.address.to_string(), "port": self.mlan.port.get()},
        });
        if let Some(i) = &self.ipdu {
            let mut ipdu = json!({"enabled": i.enabled});
            if let Some(t) = i.timeout {
                ipdu["timeout"] = t.get().into();
            }
            ipdu["outlets"] = outlets_value(&i.outlets);
            m["ipdu"] = ipdu;
        }
        m
    }
}

impl PhysicalServer {
    pub fn to_value(&self, v: &dyn SecretView) -> Value {
        let mut m = json!({
            "name": self.name.as_str(),
            "bmc": self.bmc.to_value(v),
            "cluster": self.cluster,
        });
        if let Some(i) = &self.ipdu {
            let mut ipdu = json!({"enabled": i.enabled});
            if let Some(t) = i.timeout {
                ipdu["timeout"] = t.get().into();
            }
            if let Some(r) = i.recovery_time {
                ipdu["recoveryTime"] = r.get().into();
            }
            ipdu["outlets"] = outlets_value(&i.outlets);
            m["ipdu"] = ipdu;
        }
        if let Some(e) = &self.esxi {
            let mut esxi = json!({
                "address": e.address.to_string(),
                "port": e.port,
                "username": e.username,
            });
            if let Some(p) = &e.password {
                esxi["password"] = v.secret(p);
            }
            if let Some(k) = &e.private_key {
                esxi["privateKey"] = v.secret(k);
            }
            esxi["enabled"] = e.enabled.into();
            if let Some(k) = &e.host_key {
                esxi["hostKey"] = k.as_str().into();
            }
            if e.trust_on_first_use {
                esxi["trustOnFirstUse"] = true.into();
            }
            esxi["guests"] = e.guests.iter().map(|g| g.as_str()).collect();
            m["esxi"] = esxi;
        }
        if self.warnings != Warnings::default() {
            m["warnings"] = json!({
                "predictiveFailure": self.warnings.predictive_failure,
                "degradation": self.warnings.degradation,
            });
        }
        m
    }
}

impl Pdu {
    pub fn to_value(&self) -> Value {
        let mut m = json!({
            "address": self.address.to_string(),
            "port": self.port,
            "model": self.model.name,
        });
        if !self.model.builtin {
            m["modelDefinition"] = model_value(&self.model);
        }
        m
    }
}

fn model_value(model: &PduModel) -> Value {
    let col = |c: &super::pdu_model::OidValues| json!({"oid": c.oid, "on": c.on, "off": c.off});
    let mut m = json!({
        "outlets": model.outlets,
        "firstIndex": model.first_index,
        "control": col(&model.control),
        "status": col(&model.status),
    });
    if let Some(f) = &model.firmware_oid {
        m["firmwareOid"] = f.as_str().into();
    }
    if let Some(c) = &model.outlet_count_oid {
        m["outletCountOid"] = c.as_str().into();
    }
    m
}

impl Spec {
    /// The global settings (everything that is not a server or a PDU), by top-level key.
    pub fn globals_value(&self, v: &dyn SecretView) -> Value {
        let rp = &self.reset_path;
        let mut reset_path = json!({
            "address": format!("{}/{}", rp.address, rp.prefix_len),
            "port": rp.port.get(),
        });
        if let Some(b) = rp.broadcast {
            reset_path["broadcast"] = b.to_string().into();
        }
        reset_path["auth"] = match &rp.auth {
            Auth::None => "none".into(),
            Auth::Hmac(k, mode) => json!({
                "key": v.secret(k),
                "keyMode": match mode { KeyMode::PerNode => "perNode", KeyMode::Shared => "shared" },
            }),
        };
        let mut m = json!({
            "mode": match self.mode { Mode::Pair => "pair", Mode::Single => "single" },
            "scale": match self.scale { Scale::Standard => "standard", Scale::Large => "large" },
            "resetPath": reset_path,
            "hispeed": match self.hispeed { Some(h) => h.get().into(), None => Value::from("off") },
        });
        if let Some(c) = &self.community {
            m["snmp"] = json!({"community": v.secret(c)});
        }
        if let Some(a) = &self.alerts {
            let mut alerts = json!({
                "address": a.listen.ip().to_string(),
                "port": a.listen.port(),
                "community": v.secret(&a.community),
                "traps": a.traps.iter().map(|(oid, k)| json!({"oid": oid, "means": k.as_str()})).collect::<Vec<_>>(),
            });
            if let Some(c) = &a.warning_command {
                alerts["warningCommand"] = c.display().to_string().into();
            }
            m["alerts"] = alerts;
        }
        if let Some(at) = &self.metrics {
            m["metrics"] = json!({"address": at.ip().to_string(), "port": at.port()});
        }
        if self.mode == Mode::Pair {
            m["pair"] = json!({
                "heartbeatInterval": self.pair.heartbeat_interval.as_millis() as u64,
                "heartbeatMisses": self.pair.heartbeat_misses,
                "startupGrace": self.pair.startup_grace.as_secs(),
            });
        }
        m
    }

    /// The whole spec in normalized form (sorted by identity, defaults filled in).
    pub fn to_value(&self, v: &dyn SecretView) -> Value {
        let mut m = json!({"apiVersion": "haconn/v1"});
        if let Value::Object(g) = self.globals_value(v) {
            for (k, val) in g {
                m[k] = val;
            }
        }
        m["managementServers"] = self
            .management_servers
            .values()
            .map(|s| s.to_value(v))
            .collect();
        let mut models = BTreeMap::new();
        let mut pdus = Vec::new();
        for p in self.pdus.values() {
            let mut pv = p.to_value();
            if let Value::Object(o) = &mut pv {
                o.remove("modelDefinition");
            }
            pdus.push(pv);
            if !p.model.builtin {
                let mut def = json!({"name": p.model.name});
                if let (Value::Object(d), Value::Object(rest)) = (&mut def, model_value(&p.model)) {
                    d.extend(rest);
                }
                models.insert(p.model.name.clone(), def);
            }
        }
        m["pdus"] = pdus.into();
        if !models.is_empty() {
            m["pduModels"] = models.into_values().collect();
        }
        m["servers"] = self.servers.values().map(|s| s.to_value(v)).collect();
        m
    }
}

#[cfg(test)]
mod name_tests {
    use super::Name;
    use std::collections::{BTreeSet, HashMap};

    #[test]
    fn a_name_is_found_by_its_text_and_ordered_as_text() {
        let names = ["node2", "node10", "a", "Z9", &"x".repeat(31)];
        let map: HashMap<Name, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (Name::parse(n).unwrap(), i))
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert_eq!(map.get(*n), Some(&i), "{n}");
        }
        let set: BTreeSet<Name> = names.iter().map(|n| Name::parse(n).unwrap()).collect();
        let mut sorted = names.to_vec();
        sorted.sort();
        assert_eq!(set.iter().map(Name::as_str).collect::<Vec<_>>(), sorted);
        assert!(set.contains("node10"));
    }

    #[test]
    fn names_are_checked_wherever_they_come_from() {
        for bad in ["", "node-1", "nöde", &"x".repeat(32)] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
            assert!(!Name::is_valid(bad), "{bad:?}");
            assert!(serde_json::from_str::<Name>(&format!("{bad:?}")).is_err());
        }
        let n: Name = serde_json::from_str("\"node01\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"node01\"");
        assert_eq!(format!("{n} {n:?}"), "node01 Name(\"node01\")");
    }
}
