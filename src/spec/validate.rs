//! Semantic validation: `RawSpec` → `Spec`, collecting every problem with its path.
//!
//! Pure: reads no files and no environment (secret references are resolved elsewhere,
//! on request). Single-field rules here mirror the JSON Schema in `raw`; the cross-field
//! rules (uniqueness, references, counts) exist only here.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};

use super::diag::Diagnostic;
use super::model::*;
use super::path::Path;
use super::pdu_model::{OidValues, PduModel, builtin_model, builtin_models};
use super::raw::*;
use super::secret::{Secret, credential_char};

/// Count limits, per `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub servers: usize,
    pub systems: usize,
    pub pdus: usize,
}

impl Limits {
    pub fn of(scale: Scale) -> Limits {
        match scale {
            Scale::Standard => Limits {
                servers: 32,
                systems: 256,
                pdus: 132,
            },
            Scale::Large => Limits {
                servers: 1024,
                systems: 8192,
                pdus: 4096,
            },
        }
    }
}

pub const MAX_GUESTS_PER_HOST: usize = 16;
/// Guests that can run on one ESXi host at once, HA monitor guests or not (the manual's
/// limits table: 33). haconn sees only the guests a spec lists, so more listed for one
/// host (several `esxi` blocks naming the same address) is a warning: they cannot all run.
pub const MAX_RUNNING_GUESTS_PER_HOST: usize = 33;
pub const MAX_OUTLETS_PER_MSERVER: usize = 2;
pub const MAX_OUTLETS_PER_SERVER: usize = 4;

struct V<'a> {
    diags: Vec<Diagnostic>,
    check_reference: &'a dyn Fn(&Secret) -> Result<(), String>,
}

impl V<'_> {
    fn err(&mut self, code: &'static str, path: Path, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(code, path, msg));
    }

    fn warn(&mut self, code: &'static str, path: Path, msg: impl Into<String>) {
        self.diags.push(Diagnostic::warning(code, path, msg));
    }

    fn name(&mut self, path: Path, s: &str) -> Option<Name> {
        Name::parse(s).map_err(|e| self.err("name", path, e)).ok()
    }

    fn ip(&mut self, path: Path, s: &str) -> Option<IpAddr> {
        s.parse()
            .map_err(|_| self.err("address", path, format!("`{s}` is not an IP address")))
            .ok()
    }

    fn port(&mut self, path: Path, v: Option<u64>, default: u16) -> Option<u16> {
        match v {
            None => Some(default),
            Some(p) if (1..=65535).contains(&p) => Some(p as u16),
            Some(p) => {
                self.err("range", path, format!("port must be 1–65535 (got {p})"));
                None
            }
        }
    }

    fn service_port(&mut self, path: Path, v: u64) -> Option<ServicePort> {
        let p = ServicePort::new(v);
        if p.is_none() {
            self.err("range", path, format!("port must be 5001–65535 (got {v})"));
        }
        p
    }

    fn account(&mut self, path: Path, s: &str, max: usize, what: &str) -> Option<String> {
        let len = s.chars().count();
        if len == 0 || len > max {
            self.err(
                "credential",
                path,
                format!("{what} must be 1–{max} characters (this one has {len})"),
            );
            return None;
        }
        if !s.chars().all(credential_char) {
            self.err(
                "credential",
                path,
                format!("{what} may hold printable ASCII except \" $ ' \\ # ; and space"),
            );
            return None;
        }
        Some(s.to_string())
    }

    fn secret<T: SecretField>(&mut self, path: Path, raw: &T) -> Option<Secret> {
        let rule = T::RULE;
        match raw.parts() {
            Ok(inline) => match rule.check(&inline) {
                Ok(()) => {
                    self.warn(
                        "inline-secret",
                        path,
                        "secret written inline in the spec; prefer `{env: NAME}` or `{file: /path}` in a git-managed spec",
                    );
                    Some(Secret::inline(inline, rule))
                }
                Err(reason) => {
                    self.err("credential", path, reason);
                    None
                }
            },
            Err(r) => {
                match &r {
                    RawSecretRef::Env(n) if !valid_env_name(n) => {
                        self.err(
                            "secret",
                            path.key("env"),
                            format!("`{n}` is not an environment variable name"),
                        );
                        return None;
                    }
                    RawSecretRef::File(f) if f.is_empty() => {
                        self.err("secret", path.key("file"), "secret file path is empty");
                        return None;
                    }
                    _ => {}
                }
                let secret = Secret::reference(r, rule);
                if let Err(e) = (self.check_reference)(&secret) {
                    self.err("secret", path, e);
                    return None;
                }
                Some(secret)
            }
        }
    }

    fn bmc(&mut self, path: &Path, raw: &RawBmc) -> Option<Bmc> {
        let address = self.ip(path.key("address"), &raw.address);
        let port = self.port(path.key("port"), raw.port, 623);
        let username = self.account(path.key("username"), &raw.username, 16, "a BMC account");
        let password = self.secret(path.key("password"), &raw.password);
        let kg = match &raw.kg {
            None => Some(None),
            Some(k) => self.secret(path.key("kg"), k).map(Some),
        };
        let cipher_suites =
            self.cipher_suites(path.key("cipherSuites"), raw.cipher_suites.as_deref());
        Some(Bmc {
            address: address?,
            port: port?,
            username: username?,
            password: password?,
            kg: kg?,
            cipher_suites: cipher_suites?,
        })
    }

    fn cipher_suites(&mut self, path: Path, raw: Option<&[u64]>) -> Option<Vec<CipherSuite>> {
        let Some(raw) = raw else {
            return Some(CipherSuite::DEFAULT.to_vec());
        };
        if raw.is_empty() {
            self.err("range", path, "list at least one cipher suite (17 or 3)");
            return None;
        }
        let mut suites = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (i, &n) in raw.iter().enumerate() {
            match CipherSuite::from_number(n) {
                Some(c) if suites.contains(&c) => {
                    self.err(
                        "unique",
                        path.index(i),
                        format!("cipher suite {n} is listed twice"),
                    );
                    ok = false;
                }
                Some(c) => suites.push(c),
                None => {
                    self.err(
                        "range",
                        path.index(i),
                        format!("cipher suite must be 17 or 3 (got {n}): haconn speaks no other"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(suites)
    }
}

fn valid_env_name(n: &str) -> bool {
    let mut cs = n.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_oid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts.iter().all(|p| p.parse::<u32>().is_ok())
}

/// Parses `a.b.c.d/len` or `a.b.c.d/m.m.m.m` (contiguous mask).
fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let Some((addr, mask)) = s.split_once('/') else {
        return Err(format!(
            "`{s}` needs a mask: write it as address/prefix, e.g. 192.168.10.100/24"
        ));
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Ok(len) = mask.parse::<u8>() {
        if len == 0 || len > max {
            return Err(format!("prefix length must be 1–{max} (got {len})"));
        }
        return Ok((ip, len));
    }
    match (ip, mask.parse::<Ipv4Addr>()) {
        (IpAddr::V4(_), Ok(m)) => {
            let bits = u32::from(m);
            let len = bits.leading_ones();
            if bits.count_ones() != len || len == 0 {
                return Err(format!("`{mask}` is not a contiguous netmask"));
            }
            Ok((ip, len as u8))
        }
        _ => Err(format!("`{mask}` is neither a prefix length nor a netmask")),
    }
}

/// The broadcast address of an IPv4 network.
pub fn derived_broadcast(ip: IpAddr, prefix_len: u8) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => {
            let host_bits = 32 - u32::from(prefix_len);
            let mask = if host_bits >= 32 {
                0
            } else {
                u32::MAX << host_bits
            };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from(v4) | !mask)))
        }
        IpAddr::V6(_) => None,
    }
}

/// Validates a raw spec. Returns the spec when there is no error, and every diagnostic
/// (warnings included) either way. `check_reference` is called on every secret given by
/// reference: a no-op keeps validation pure, `Secret::resolve` checks that it resolves.
pub fn validate(
    raw: &RawSpec,
    check_reference: &dyn Fn(&Secret) -> Result<(), String>,
) -> (Option<Spec>, Vec<Diagnostic>) {
    let mut v = V {
        diags: Vec::new(),
        check_reference,
    };
    let spec = build(&mut v, raw);
    let ok = !v
        .diags
        .iter()
        .any(|d| d.severity == super::diag::Severity::Error);
    (spec.filter(|_| ok), v.diags)
}

fn build(v: &mut V, raw: &RawSpec) -> Option<Spec> {
    let root = Path::root();
    let mode = raw.mode.unwrap_or(Mode::Pair);
    let scale = raw.scale.unwrap_or(Scale::Standard);
    let limits = Limits::of(scale);

    let reset_path = reset_path(v, &root.key("resetPath"), &raw.reset_path);
    let reset_port = reset_path.as_ref().map(|r| r.port);

    let hispeed = match &raw.hispeed {
        None | Some(RawHispeed::Off(_)) => Some(None),
        Some(RawHispeed::Millis(ms)) => match Hispeed::new(*ms).filter(|_| ms % 100 == 0) {
            Some(h) => Some(Some(h)),
            None => {
                v.err(
                    "range",
                    root.key("hispeed"),
                    format!(
                        "hispeed must be 1000–5000 ms in steps of 100 (1000, 1100, … 5000) or \
                         `off` (got {ms})"
                    ),
                );
                None
            }
        },
    };

    let pair = pair_settings(v, &root.key("pair"), raw);
    let alerts = match &raw.alerts {
        None => {
            if raw.servers.iter().any(|s| {
                s.warnings.as_ref().is_some_and(|w| {
                    w.predictive_failure == Some(true) || w.degradation == Some(true)
                })
            }) {
                v.warn(
                    "unused",
                    root.key("alerts"),
                    "servers ask for failure warnings, but there is no `alerts` trap receiver to hear them",
                );
            }
            Some(None)
        }
        Some(a) => alerts(v, &root.key("alerts"), a, reset_port).map(Some),
    };

    let metrics = match &raw.metrics {
        None => Some(None),
        Some(m) => metrics(v, &root.key("metrics"), m).map(Some),
    };

    let community = match &raw.snmp {
        None => {
            if !raw.pdus.is_empty() {
                v.err(
                    "required",
                    root.key("snmp"),
                    "PDUs are declared, so `snmp.community` is required",
                );
            }
            Some(None)
        }
        Some(s) => v
            .secret(root.key("snmp").key("community"), &s.community)
            .map(Some),
    };

    // PDU models and PDUs.
    let models = pdu_models(v, &root.key("pduModels"), &raw.pdu_models);
    let mut pdus = BTreeMap::new();
    let mut used_models = std::collections::BTreeSet::new();
    let mut pdu_paths: HashMap<IpAddr, Path> = HashMap::new();
    if raw.pdus.len() > limits.pdus {
        v.err(
            "limit",
            root.key("pdus"),
            format!(
                "{} PDUs declared; at most {} at scale {}",
                raw.pdus.len(),
                limits.pdus,
                scale_name(scale)
            ),
        );
    }
    for (i, p) in raw.pdus.iter().enumerate() {
        let path = root.key("pdus").index(i);
        let address = v.ip(path.key("address"), &p.address);
        let port = v.port(path.key("port"), p.port, 161);
        let model = models
            .get(&p.model)
            .cloned()
            .or_else(|| builtin_model(&p.model));
        if model.is_none() {
            let mut known: Vec<String> = builtin_models().into_iter().map(|m| m.name).collect();
            known.extend(models.keys().cloned());
            v.err(
                "reference",
                path.key("model"),
                format!(
                    "unknown PDU model `{}` (known: {})",
                    p.model,
                    known.join(", ")
                ),
            );
        }
        used_models.insert(p.model.clone());
        if let Some(address) = address {
            if let Some(first) = pdu_paths.get(&address) {
                v.err(
                    "unique",
                    path.key("address"),
                    format!("PDU {address} is already declared at {first}"),
                );
                continue;
            }
            pdu_paths.insert(address, path.clone());
        }
        if let (Some(address), Some(port), Some(model)) = (address, port, model) {
            pdus.insert(
                address,
                Pdu {
                    address,
                    port,
                    model,
                },
            );
        }
    }
    for (i, m) in raw.pdu_models.iter().enumerate() {
        if !used_models.contains(&m.name) {
            v.warn(
                "unused",
                root.key("pduModels").index(i),
                format!("PDU model `{}` is not used by any PDU", m.name),
            );
        }
    }

    // Every outlet belongs to at most one server; remember who took it first.
    let mut outlet_owner: HashMap<OutletLink, Path> = HashMap::new();
    let mut bmc_owner: HashMap<IpAddr, Path> = HashMap::new();

    // Management servers.
    let ms_path = root.key("managementServers");
    let wanted = match mode {
        Mode::Pair => 2,
        Mode::Single => 1,
    };
    if raw.management_servers.len() != wanted {
        let msg = match mode {
            Mode::Pair => format!(
                "exactly 2 management servers are required (found {}); for a one-server lab set `mode: single`",
                raw.management_servers.len()
            ),
            Mode::Single => format!(
                "`mode: single` takes exactly 1 management server (found {})",
                raw.management_servers.len()
            ),
        };
        v.err("limit", ms_path.clone(), msg);
    }
    if mode == Mode::Single {
        v.warn(
            "single",
            root.key("mode"),
            "single management server: no standby, the reset service is not redundant",
        );
    }
    let mut management_servers = BTreeMap::new();
    let mut mlan_addresses: HashMap<IpAddr, Path> = HashMap::new();
    for (i, m) in raw.management_servers.iter().enumerate() {
        let path = ms_path.index(i);
        let name = v.name(path.key("name"), &m.name);
        let bmc = v.bmc(&path.key("bmc"), &m.bmc);
        claim_bmc(v, &mut bmc_owner, &path, &m.bmc);
        let mlan_addr = v.ip(path.key("mlan").key("address"), &m.mlan.address);
        let mlan_port = v.service_port(path.key("mlan").key("port"), m.mlan.port);
        if let (Some(mp), Some(rp)) = (mlan_port, reset_port)
            && mp == rp
        {
            v.err(
                "conflict",
                path.key("mlan").key("port"),
                format!(
                    "mlan port {} must differ from the reset-path port",
                    mp.get()
                ),
            );
        }
        if let Some(a) = mlan_addr
            && let Some(first) = mlan_addresses.insert(a, path.key("mlan").key("address"))
        {
            v.err(
                "unique",
                path.key("mlan").key("address"),
                format!("mlan address {a} is already used at {first}"),
            );
        }
        let ipdu = match &m.ipdu {
            None => Some(None),
            Some(ip) => {
                let ipath = path.key("ipdu");
                let enabled = ip.enabled.unwrap_or(true);
                let timeout = ipdu_timeout(v, &ipath, ip.timeout, enabled);
                let outlets = outlets(
                    v,
                    &ipath,
                    &ip.outlets,
                    MAX_OUTLETS_PER_MSERVER,
                    enabled,
                    &pdus,
                    &pdu_paths,
                    &mut outlet_owner,
                );
                match (timeout, outlets) {
                    (Some(timeout), Some(outlets)) => Some(Some(ManagementIpdu {
                        enabled,
                        timeout,
                        outlets,
                    })),
                    _ => None,
                }
            }
        };
        if let (Some(name), Some(bmc), Some(a), Some(p), Some(ipdu)) =
            (name, bmc, mlan_addr, mlan_port, ipdu)
        {
            if management_servers.contains_key(&name) {
                v.err(
                    "unique",
                    path.key("name"),
                    format!("management server `{name}` is declared twice"),
                );
                continue;
            }
            management_servers.insert(
                name.clone(),
                ManagementServer {
                    name,
                    bmc,
                    mlan: Endpoint {
                        address: a,
                        port: p,
                    },
                    ipdu,
                },
            );
        }
    }

    // Physical servers.
    let sv_path = root.key("servers");
    if raw.servers.len() > limits.servers {
        v.err(
            "limit",
            sv_path.clone(),
            format!(
                "{} servers declared; at most {} at scale {}",
                raw.servers.len(),
                limits.servers,
                scale_name(scale)
            ),
        );
    }
    let mut servers = BTreeMap::new();
    let mut system_names: HashMap<String, Path> = HashMap::new();
    let mut systems = 0usize;
    for (i, s) in raw.servers.iter().enumerate() {
        let path = sv_path.index(i);
        let name = v.name(path.key("name"), &s.name);
        if let Some(n) = &name {
            claim_system(v, &mut system_names, n.as_str(), path.key("name"));
        }
        let bmc = v.bmc(&path.key("bmc"), &s.bmc);
        claim_bmc(v, &mut bmc_owner, &path, &s.bmc);
        let ipdu = match &s.ipdu {
            None => Some(None),
            Some(ip) => {
                let ipath = path.key("ipdu");
                let enabled = ip.enabled.unwrap_or(true);
                let timeout = ipdu_timeout(v, &ipath, ip.timeout, enabled);
                let recovery_time = match ip.recovery_time {
                    None if enabled => {
                        v.err(
                            "required",
                            ipath.key("recoveryTime"),
                            "PDU forced reset is on, so `recoveryTime` is required (0 = leave outlets off, or 5–60 s)",
                        );
                        None
                    }
                    None => Some(None),
                    Some(r) => match RecoveryTime::new(r) {
                        Some(r) => Some(Some(r)),
                        None => {
                            v.err(
                                "range",
                                ipath.key("recoveryTime"),
                                format!("recoveryTime must be 0 or 5–60 seconds (got {r})"),
                            );
                            None
                        }
                    },
                };
                let outlets = outlets(
                    v,
                    &ipath,
                    &ip.outlets,
                    MAX_OUTLETS_PER_SERVER,
                    enabled,
                    &pdus,
                    &pdu_paths,
                    &mut outlet_owner,
                );
                match (timeout, recovery_time, outlets) {
                    (Some(timeout), Some(recovery_time), Some(outlets)) => Some(Some(ServerIpdu {
                        enabled,
                        timeout,
                        recovery_time,
                        outlets,
                    })),
                    _ => None,
                }
            }
        };
        let esxi = match &s.esxi {
            None => {
                systems += 1;
                Some(None)
            }
            Some(e) => {
                systems += e.guests.len();
                esxi(v, &path.key("esxi"), e, &mut system_names).map(Some)
            }
        };
        if let (Some(name), Some(bmc), Some(ipdu), Some(esxi)) = (name, bmc, ipdu, esxi) {
            if servers.contains_key(&name) {
                continue; // reported by claim_system
            }
            servers.insert(
                name.clone(),
                PhysicalServer {
                    name,
                    bmc,
                    cluster: s.cluster.unwrap_or(false),
                    ipdu,
                    esxi,
                    warnings: Warnings {
                        predictive_failure: s
                            .warnings
                            .as_ref()
                            .and_then(|w| w.predictive_failure)
                            .unwrap_or(false),
                        degradation: s
                            .warnings
                            .as_ref()
                            .and_then(|w| w.degradation)
                            .unwrap_or(false),
                    },
                },
            );
        }
    }
    running_guests(v, &sv_path, &raw.servers);
    if systems > limits.systems {
        v.err(
            "limit",
            sv_path,
            format!(
                "{systems} HA monitor systems (physical servers and guests) declared; at most {} at scale {}",
                limits.systems,
                scale_name(scale)
            ),
        );
    }

    Some(Spec {
        mode,
        scale,
        reset_path: reset_path?,
        hispeed: hispeed?,
        community: community?,
        management_servers,
        pair: pair?,
        alerts: alerts?,
        metrics: metrics?,
        pdus,
        index: crate::spec::model::SystemIndex::build(&servers),
        servers,
    })
}

fn pair_settings(v: &mut V, path: &Path, raw: &RawSpec) -> Option<PairSettings> {
    let mut p = PairSettings::default();
    let Some(r) = &raw.pair else {
        return Some(p);
    };
    if raw.mode == Some(Mode::Single) {
        v.warn(
            "unused",
            path.clone(),
            "`pair` settings have no effect with `mode: single`",
        );
    }
    let mut ok = true;
    let mut field = |key: &str, value: Option<u64>, lo: u64, hi: u64, unit: &str| {
        let x = value?;
        if (lo..=hi).contains(&x) {
            Some(x)
        } else {
            v.err(
                "range",
                path.key(key),
                format!("{key} must be {lo}–{hi} {unit} (got {x})"),
            );
            ok = false;
            None
        }
    };
    if let Some(ms) = field("heartbeatInterval", r.heartbeat_interval, 50, 2000, "ms") {
        p.heartbeat_interval = std::time::Duration::from_millis(ms);
    }
    if let Some(n) = field("heartbeatMisses", r.heartbeat_misses, 2, 20, "heartbeats") {
        p.heartbeat_misses = n as u32;
    }
    if let Some(s) = field("startupGrace", r.startup_grace, 5, 600, "s") {
        p.startup_grace = std::time::Duration::from_secs(s);
    }
    ok.then_some(p)
}

/// The trap receiver: where it listens, the community, vendor trap OIDs, the warning
/// command.
fn alerts(
    v: &mut V,
    path: &Path,
    raw: &RawAlerts,
    reset_port: Option<ServicePort>,
) -> Option<Alerts> {
    let address = match &raw.address {
        None => Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        Some(a) => v.ip(path.key("address"), a),
    };
    let port = v.port(path.key("port"), raw.port, 162);
    if let (Some(p), Some(rp)) = (port, reset_port)
        && p == rp.get()
    {
        v.err(
            "conflict",
            path.key("port"),
            format!("the trap receiver cannot listen on the reset path's port {p}"),
        );
    }
    let community = v.secret(path.key("community"), &raw.community);
    let mut ok = true;
    let mut traps: Vec<(String, AlertKind)> = Vec::new();
    for (i, t) in raw.traps.iter().enumerate() {
        let tp = path.key("traps").index(i).key("oid");
        let oid = t.oid.strip_prefix('.').unwrap_or(&t.oid);
        let arcs: Vec<&str> = oid.split('.').collect();
        if arcs.len() < 2
            || arcs.len() > 128
            || arcs
                .iter()
                .any(|a| a.is_empty() || a.parse::<u32>().is_err())
        {
            v.err(
                "oid",
                tp,
                format!(
                    "`{}` is not a dotted-decimal OID (2–128 arcs, each 0–4294967295)",
                    t.oid
                ),
            );
            ok = false;
        } else if traps.iter().any(|(o, _)| o == oid) {
            v.err("duplicate", tp, format!("trap OID {oid} is listed twice"));
            ok = false;
        } else {
            traps.push((oid.to_string(), t.means));
        }
    }
    let warning_command = match &raw.warning_command {
        None => Some(None),
        Some(c) if std::path::Path::new(c).is_absolute() => Some(Some(std::path::PathBuf::from(c))),
        Some(c) => {
            v.err(
                "path",
                path.key("warningCommand"),
                format!("warningCommand must be an absolute path (got `{c}`)"),
            );
            None
        }
    };
    let (address, port, community, warning_command) =
        (address?, port?, community?, warning_command?);
    ok.then_some(Alerts {
        listen: std::net::SocketAddr::new(address, port),
        community,
        traps,
        warning_command,
    })
}

/// The metrics endpoint: loopback by default; anything else is served as asked, with a
/// warning (the endpoint has no authentication).
fn metrics(v: &mut V, path: &Path, raw: &RawMetrics) -> Option<std::net::SocketAddr> {
    let address = match &raw.address {
        None => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        Some(a) => v.ip(path.key("address"), a),
    };
    let port = v.port(path.key("port"), raw.port, 9464);
    let (address, port) = (address?, port?);
    if !address.is_loopback() {
        v.warn(
            "exposed",
            path.key("address"),
            format!(
                "metrics are served without authentication on {address}: anyone who reaches \
                 it reads the cluster's state"
            ),
        );
    }
    Some(std::net::SocketAddr::new(address, port))
}

fn scale_name(s: Scale) -> &'static str {
    match s {
        Scale::Standard => "standard (set `scale: large` to raise the limits)",
        Scale::Large => "large",
    }
}

fn reset_path(v: &mut V, path: &Path, raw: &RawResetPath) -> Option<ResetPath> {
    let cidr = parse_cidr(&raw.address)
        .map_err(|e| v.err("address", path.key("address"), e))
        .ok();
    let port = v.service_port(path.key("port"), raw.port);
    let broadcast = match &raw.broadcast {
        None => {
            if let Some((IpAddr::V6(_), _)) = cidr {
                v.err(
                    "required",
                    path.key("broadcast"),
                    "an IPv6 reset path has no broadcast: set `broadcast` to a multicast group",
                );
                None
            } else {
                Some(None)
            }
        }
        Some(b) => {
            let addr = v.ip(path.key("broadcast"), b);
            match (addr, cidr) {
                (Some(a), Some((ip, _))) if a.is_ipv4() != ip.is_ipv4() => {
                    v.err(
                        "address",
                        path.key("broadcast"),
                        "broadcast and reset-path address must be of the same IP family",
                    );
                    None
                }
                (Some(a), _) => Some(Some(a)),
                (None, _) => None,
            }
        }
    };
    let auth = match &raw.auth {
        RawAuth::None(_) => {
            v.warn(
                "auth",
                path.key("auth"),
                "`auth: none`: anyone on the reset-path network can reset servers; for labs only",
            );
            Some(Auth::None)
        }
        RawAuth::Key(k) => {
            if k.key_mode == KeyMode::Shared {
                v.warn(
                    "auth",
                    path.key("auth").key("keyMode"),
                    "`keyMode: shared`: every node holds the cluster key and can sign as any \
                     other; prefer `perNode` (`haconn node key` prints each node's key)",
                );
            }
            v.secret(path.key("auth").key("key"), &k.key)
                .map(|key| Auth::Hmac(key, k.key_mode))
        }
    };
    let (address, prefix_len) = cidr?;
    let broadcast = broadcast?;
    Some(ResetPath {
        address,
        prefix_len,
        port: port?,
        broadcast,
        broadcast_resolved: broadcast.or_else(|| derived_broadcast(address, prefix_len)),
        auth: auth?,
    })
}

fn ipdu_timeout(
    v: &mut V,
    ipath: &Path,
    raw: Option<u64>,
    enabled: bool,
) -> Option<Option<IpduTimeout>> {
    match raw {
        None if enabled => {
            v.err(
                "required",
                ipath.key("timeout"),
                "PDU forced reset is on, so `timeout` (5–60 s) is required",
            );
            None
        }
        None => Some(None),
        Some(t) => match IpduTimeout::new(t) {
            Some(t) => Some(Some(t)),
            None => {
                v.err(
                    "range",
                    ipath.key("timeout"),
                    format!("timeout must be 5–60 seconds (got {t})"),
                );
                None
            }
        },
    }
}

#[allow(clippy::too_many_arguments)]
fn outlets(
    v: &mut V,
    ipath: &Path,
    raw: &[RawOutlet],
    max: usize,
    enabled: bool,
    pdus: &BTreeMap<IpAddr, Pdu>,
    pdu_paths: &HashMap<IpAddr, Path>,
    owner: &mut HashMap<OutletLink, Path>,
) -> Option<Vec<OutletLink>> {
    let opath = ipath.key("outlets");
    let mut ok = true;
    if raw.len() > max {
        v.err(
            "limit",
            opath.clone(),
            format!("{} outlet links; at most {max} here", raw.len()),
        );
        ok = false;
    }
    if enabled && raw.is_empty() {
        v.err(
            "required",
            opath.clone(),
            "PDU forced reset is on but no outlets are linked",
        );
        ok = false;
    }
    let mut links = Vec::new();
    for (j, o) in raw.iter().enumerate() {
        let lpath = opath.index(j);
        let Some(pdu) = v.ip(lpath.key("pdu"), &o.pdu) else {
            ok = false;
            continue;
        };
        let Some(declared) = pdus.get(&pdu) else {
            if !pdu_paths.contains_key(&pdu) {
                v.err(
                    "reference",
                    lpath.key("pdu"),
                    format!("PDU {pdu} is not declared under `pdus`"),
                );
            }
            ok = false;
            continue;
        };
        let count = u64::from(declared.model.outlets);
        if o.outlet == 0 || o.outlet > count {
            v.err(
                "range",
                lpath.key("outlet"),
                format!(
                    "outlet must be 1–{count} on PDU model {} (got {})",
                    declared.model.name, o.outlet
                ),
            );
            ok = false;
            continue;
        }
        let link = OutletLink {
            pdu,
            outlet: o.outlet as u16,
        };
        if let Some(first) = owner.get(&link) {
            v.err(
                "unique",
                lpath.clone(),
                format!("outlet {link} already feeds {first}"),
            );
            ok = false;
            continue;
        }
        owner.insert(link, owner_name(ipath));
        links.push(link);
    }
    links.sort();
    ok.then_some(links)
}

/// The owner of an `…ipdu` path: the server or management server it belongs to.
fn owner_name(ipath: &Path) -> Path {
    let mut p = ipath.clone();
    p.pop();
    p
}

fn claim_bmc(v: &mut V, owners: &mut HashMap<IpAddr, Path>, owner: &Path, bmc: &RawBmc) {
    let Ok(address) = bmc.address.parse::<IpAddr>() else {
        return; // reported by V::bmc
    };
    if let Some(first) = owners.get(&address) {
        v.err(
            "unique",
            owner.key("bmc").key("address"),
            format!("BMC address {address} is already used by {first}"),
        );
    } else {
        owners.insert(address, owner.clone());
    }
}

fn claim_system(v: &mut V, names: &mut HashMap<String, Path>, name: &str, here: Path) {
    if let Some(first) = names.get(name) {
        v.err(
            "unique",
            here,
            format!("system name `{name}` is already used at {first}"),
        );
    } else {
        names.insert(name.to_string(), here);
    }
}

/// Warns when the `esxi` blocks naming one host list more guests than can run on it at
/// once ([`MAX_RUNNING_GUESTS_PER_HOST`]), at the block that passes the limit.
fn running_guests(v: &mut V, sv_path: &Path, servers: &[RawServer]) {
    let mut hosts: HashMap<IpAddr, (usize, Vec<String>)> = HashMap::new();
    for (i, s) in servers.iter().enumerate() {
        let Some(e) = &s.esxi else { continue };
        let Ok(address) = e.address.parse::<IpAddr>() else {
            continue; // reported by `esxi`
        };
        let (listed, names) = hosts.entry(address).or_default();
        let before = *listed;
        *listed += e.guests.len();
        names.push(s.name.clone());
        if before <= MAX_RUNNING_GUESTS_PER_HOST && *listed > MAX_RUNNING_GUESTS_PER_HOST {
            v.warn(
                "guest-limit",
                sv_path.index(i).key("esxi").key("guests"),
                format!(
                    "{listed} guests listed for ESXi host {address} (servers {}); at most \
                     {MAX_RUNNING_GUESTS_PER_HOST} guests can run on one ESXi host at once, \
                     HA monitor guests or not",
                    names.join(", ")
                ),
            );
        }
    }
}

fn esxi(v: &mut V, path: &Path, e: &RawEsxi, names: &mut HashMap<String, Path>) -> Option<Esxi> {
    let address = v.ip(path.key("address"), &e.address);
    let port = v.port(path.key("port"), e.port, 22);
    let username = v.account(path.key("username"), &e.username, 39, "an ESXi account");
    let mut ok = true;
    let password = match &e.password {
        None => None,
        Some(p) => {
            let s = v.secret(path.key("password"), p);
            ok &= s.is_some();
            s
        }
    };
    let private_key = match &e.private_key {
        None => None,
        Some(RawPrivateKey::Inline(_)) => {
            v.err(
                "secret",
                path.key("privateKey"),
                "a private key is accepted by reference only: `{file: /path}` or `{env: NAME}`, never inline in the spec",
            );
            ok = false;
            None
        }
        Some(k @ RawPrivateKey::Reference(_)) => {
            let s = v.secret(path.key("privateKey"), k);
            ok &= s.is_some();
            s
        }
    };
    if e.password.is_none() && e.private_key.is_none() {
        v.err(
            "required",
            path.clone(),
            "an ESXi host needs `password` (keyboard-interactive or password login) or `privateKey` (key login), or both",
        );
        ok = false;
    }
    if let Some(k) = &e.host_key
        && !valid_fingerprint(k)
    {
        v.err(
            "format",
            path.key("hostKey"),
            "host key must be an OpenSSH SHA-256 fingerprint, `SHA256:` and 43 base64 characters",
        );
        ok = false;
    }
    if e.guests.len() > MAX_GUESTS_PER_HOST {
        v.err(
            "limit",
            path.key("guests"),
            format!(
                "{} HA guests; at most {MAX_GUESTS_PER_HOST} per ESXi host",
                e.guests.len()
            ),
        );
        ok = false;
    }
    let mut guests = Vec::new();
    for (i, g) in e.guests.iter().enumerate() {
        let gpath = path.key("guests").index(i);
        match v.name(gpath.clone(), &g.0) {
            Some(n) => {
                claim_system(v, names, n.as_str(), gpath);
                guests.push(n);
            }
            None => ok = false,
        }
    }
    guests.sort();
    guests.dedup();
    if !ok {
        return None;
    }
    Some(Esxi {
        address: address?,
        port: port?,
        username: username?,
        password,
        private_key,
        enabled: e.enabled.unwrap_or(true),
        host_key: e.host_key.clone(),
        trust_on_first_use: e.trust_on_first_use.unwrap_or(false),
        guests,
    })
}

fn valid_fingerprint(k: &str) -> bool {
    k.strip_prefix("SHA256:").is_some_and(|b| {
        let b = b.strip_suffix('=').unwrap_or(b);
        b.len() == 43
            && b.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
    })
}

fn pdu_models(v: &mut V, path: &Path, raw: &[RawPduModel]) -> BTreeMap<String, PduModel> {
    let mut out = BTreeMap::new();
    for (i, m) in raw.iter().enumerate() {
        let mpath = path.index(i);
        let mut ok = true;
        let name_ok = m.name.len() <= 32
            && m.name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && m.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            v.err(
                "name",
                mpath.key("name"),
                "model name must start with a letter and hold letters, digits and `_` (at most 32)",
            );
            ok = false;
        } else if builtin_model(&m.name).is_some() {
            v.err(
                "unique",
                mpath.key("name"),
                format!("`{}` is a built-in model; choose another name", m.name),
            );
            ok = false;
        } else if out.contains_key(&m.name) {
            v.err(
                "unique",
                mpath.key("name"),
                format!("PDU model `{}` is declared twice", m.name),
            );
            ok = false;
        }
        if !(1..=96).contains(&m.outlets) {
            v.err(
                "range",
                mpath.key("outlets"),
                format!("outlets must be 1–96 (got {})", m.outlets),
            );
            ok = false;
        }
        let first_index = m.first_index.unwrap_or(1);
        if first_index > 1 {
            v.err(
                "range",
                mpath.key("firstIndex"),
                format!("firstIndex must be 0 or 1 (got {first_index})"),
            );
            ok = false;
        }
        let mut col = |v: &mut V, p: Path, c: &RawOidValues| {
            if !valid_oid(&c.oid) {
                v.err(
                    "format",
                    p.key("oid"),
                    format!("`{}` is not a numeric OID", c.oid),
                );
                ok = false;
            }
            if c.on == c.off {
                v.err("conflict", p, "`on` and `off` must be different values");
                ok = false;
            }
            OidValues {
                oid: c.oid.clone(),
                on: c.on,
                off: c.off,
            }
        };
        let control = col(v, mpath.key("control"), &m.control);
        let status = match &m.status {
            Some(s) => col(v, mpath.key("status"), s),
            None => control.clone(),
        };
        for (key, oid) in [
            ("firmwareOid", &m.firmware_oid),
            ("outletCountOid", &m.outlet_count_oid),
        ] {
            if let Some(o) = oid
                && !valid_oid(o)
            {
                v.err(
                    "format",
                    mpath.key(key),
                    format!("`{o}` is not a numeric OID"),
                );
                ok = false;
            }
        }
        if ok {
            out.insert(
                m.name.clone(),
                PduModel {
                    name: m.name.clone(),
                    outlets: m.outlets as u16,
                    first_index: first_index as u32,
                    control,
                    status,
                    firmware_oid: m.firmware_oid.clone(),
                    outlet_count_oid: m.outlet_count_oid.clone(),
                    firmware_variants: vec![],
                    builtin: false,
                },
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_forms() {
        assert_eq!(
            parse_cidr("192.168.10.100/24").unwrap(),
            ("192.168.10.100".parse().unwrap(), 24)
        );
        assert_eq!(parse_cidr("10.0.0.1/255.255.0.0").unwrap().1, 16);
        assert!(parse_cidr("10.0.0.1/255.0.255.0").is_err());
        assert!(parse_cidr("10.0.0.1").is_err());
        assert!(parse_cidr("10.0.0.1/33").is_err());
        assert_eq!(
            derived_broadcast("192.168.10.100".parse().unwrap(), 24),
            Some("192.168.10.255".parse().unwrap())
        );
    }

    /// The spec `text` checks to, with its diagnostics as `PATH MESSAGE`.
    fn checked(text: &str) -> (Option<Spec>, Vec<String>) {
        let c = crate::spec::check_bytes(text.as_bytes(), crate::spec::CheckOptions::default());
        let diags = c
            .diagnostics
            .iter()
            .map(|d| format!("{} {}", d.path, d.message))
            .collect();
        (c.spec, diags)
    }

    /// Issue 15: the trap receiver's settings, each error at its field.
    #[test]
    fn alerts_settings_are_checked_field_by_field() {
        let base = "apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 5001, auth: none}
managementServers:
  - name: ms1
    bmc: {address: 127.0.0.2, username: admin, password: passw0rd}
    mlan: {address: 127.0.0.1, port: 5002}
servers:
  - name: node1
    bmc: {address: 127.0.0.11, username: admin, password: passw0rd}
    warnings: {predictiveFailure: true}
";
        let check = |alerts: &str| checked(&format!("{base}{alerts}"));
        let (spec, diags) = check(
            "alerts: {community: trapcomm, traps: [{oid: .1.3.6.1.4.1.674.1, means: degradation}], warningCommand: /usr/local/bin/hook}\n",
        );
        let spec = spec.unwrap_or_else(|| panic!("{diags:?}"));
        let a = spec.alerts.expect("alerts");
        assert_eq!(a.listen, "0.0.0.0:162".parse().unwrap());
        assert_eq!(
            a.traps,
            vec![("1.3.6.1.4.1.674.1".to_string(), AlertKind::Degradation)]
        );
        assert!(spec.servers["node1"].warnings.predictive_failure);
        assert!(!spec.servers["node1"].warnings.degradation);
        let (spec, diags) = check(
            "alerts: {address: 127.0.0.1, port: 5001, community: trapcomm, traps: [{oid: 1.3.6.1, means: powerOff}, {oid: 1.3.6.1, means: degradation}, {oid: 1.3.x, means: degradation}], warningCommand: hook.sh}\n",
        );
        assert!(spec.is_none());
        let has = |needle: &str| {
            assert!(
                diags.iter().any(|d| d.contains(needle)),
                "no {needle:?} in {diags:?}"
            )
        };
        has("alerts.port the trap receiver cannot listen on the reset path's port 5001");
        has("alerts.traps[1].oid trap OID 1.3.6.1 is listed twice");
        has("alerts.traps[2].oid `1.3.x` is not a dotted-decimal OID");
        has("alerts.warningCommand warningCommand must be an absolute path");
        // Warnings asked for with no receiver to hear them: a warning, still valid.
        let (spec, diags) = check("");
        assert!(spec.is_some());
        assert!(
            diags
                .iter()
                .any(|d| d.contains("no `alerts` trap receiver")),
            "{diags:?}"
        );
    }

    /// Issue 17: the metrics endpoint is off without `metrics:`, on loopback by default,
    /// anywhere else with a warning, and a bad field is an error at that field.
    #[test]
    fn metrics_settings() {
        let base = "apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 5001, auth: none}
managementServers:
  - name: ms1
    bmc: {address: 127.0.0.2, username: admin, password: passw0rd}
    mlan: {address: 127.0.0.1, port: 5002}
";
        let check = |tail: &str| checked(&format!("{base}{tail}"));
        let (spec, diags) = check("");
        assert_eq!(spec.unwrap_or_else(|| panic!("{diags:?}")).metrics, None);
        let (spec, diags) = check("metrics: {}\n");
        assert_eq!(
            spec.unwrap_or_else(|| panic!("{diags:?}")).metrics,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(!diags.iter().any(|d| d.starts_with("metrics")), "{diags:?}");
        let (spec, diags) = check("metrics: {address: 0.0.0.0, port: 9100}\n");
        assert_eq!(
            spec.unwrap_or_else(|| panic!("{diags:?}")).metrics,
            Some("0.0.0.0:9100".parse().unwrap())
        );
        assert!(
            diags
                .iter()
                .any(|d| d.starts_with("metrics.address metrics are served without authentication")),
            "{diags:?}"
        );
        let (spec, diags) = check("metrics: {address: localhost, port: 70000}\n");
        assert!(spec.is_none());
        assert!(
            diags.iter().any(|d| d.starts_with("metrics.address ")),
            "{diags:?}"
        );
        assert!(
            diags.iter().any(|d| d.starts_with("metrics.port ")),
            "{diags:?}"
        );
        let (spec, diags) = check("metrics: {listen: 127.0.0.1}\n");
        assert!(spec.is_none(), "{diags:?}");
    }

    #[test]
    fn oids_and_fingerprints() {
        assert!(valid_oid("1.3.6.1.4.1.2.6.223.8.2.2.1.11"));
        assert!(!valid_oid("1.3..6"));
        assert!(!valid_oid("iso.3.6"));
        assert!(valid_fingerprint(
            "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"
        ));
        assert!(!valid_fingerprint("MD5:aa"));
    }
}
