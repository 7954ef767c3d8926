//! Watching (SPEC §3): every BMC, PDU and ESXi guest of the live spec is polled on an
//! interval, and what they answer feeds the check replies, `haconn show status` and the
//! POFF attention that a pon→poff transition sends.
//!
//! A poll is a task of its own per device, at most one in flight per device, each under
//! the pipeline's operation timeout: a BMC that hangs delays only its own next poll. The
//! results come back to the pipeline thread as messages and land in [`Health`], which
//! only that thread touches, so reading it for a check reply costs a map lookup.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend::{BackendError, Backends, OutletState, PduInfo, PowerState};
use crate::spec::model::{Esxi, OutletLink, PhysicalServer, Spec};

use super::reset::OPERATION_TIMEOUT;

/// The default poll interval (the old product needed up to 20 s to notice a power-off).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// One thing polled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Probe {
    /// A physical server's BMC, by server name.
    ServerBmc(String),
    /// A management server's BMC, by name.
    MserverBmc(String),
    Pdu(IpAddr),
    /// Every guest on the ESXi host of a server, in one poll.
    Host(String),
    /// A guest on the ESXi host of a server: (server, VM). What a `Host` poll records.
    Guest(String, String),
}

/// What a poll found.
#[derive(Debug, Clone)]
pub enum Answer {
    Power(Result<PowerState, BackendError>),
    Pdu {
        info: Result<PduInfo, BackendError>,
        outlets: Vec<(u16, Result<OutletState, BackendError>)>,
    },
    /// A host's guests; `Err` when the host could not be asked.
    Guests(Result<crate::backend::GuestStates, BackendError>),
}

/// A device's link as the last poll found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not polled yet (`--`, like "not configured", as the old product showed it).
    Unknown,
    Ok,
    Ng(String),
}

impl Link {
    fn of<T>(r: &Result<T, BackendError>) -> Link {
        match r {
            Ok(_) => Link::Ok,
            Err(e) => Link::Ng(e.to_string()),
        }
    }

    /// The SPEC §8 column: OK / NG / `--` (not polled yet).
    pub fn word(&self) -> &'static str {
        match self {
            Link::Unknown => "--",
            Link::Ok => "OK",
            Link::Ng(_) => "NG",
        }
    }

    fn value(&self) -> Value {
        match self {
            Link::Ng(reason) => json!({"link": "NG", "reason": reason}),
            other => json!({"link": other.word()}),
        }
    }

    pub fn is_ng(&self) -> bool {
        matches!(self, Link::Ng(_))
    }
}

/// The last answer of one power-polled device, with the address it came from (a reload
/// may move a server to another BMC; an answer from the old one means nothing).
#[derive(Debug, Clone)]
struct Powered {
    from: (IpAddr, u16),
    result: Result<PowerState, BackendError>,
    /// The last power state this device reported, kept while it does not answer (what
    /// `show status` prints then, as the old product did).
    last: Option<PowerState>,
    at: Instant,
}

impl Powered {
    fn link(&self) -> Link {
        Link::of(&self.result)
    }
}

#[derive(Debug, Clone)]
struct PduSeen {
    link: Link,
    firmware: Option<String>,
    outlet_count: Option<u32>,
    outlets: BTreeMap<u16, Result<OutletState, String>>,
    at: Instant,
}

/// A pon→poff transition the pipeline must tell the cluster about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerLoss {
    /// The HA-monitor systems that lost power (a server, or every guest of an ESXi host).
    pub systems: Vec<(String, bool)>,
    pub what: String,
}

/// A change the operator must hear of: a link going NG or coming back, a system that
/// can no longer be reset or can again. Made once per change, never per poll; the shell
/// writes it to the error log and the system log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchNote {
    /// Losing the ability to fence is a warning; a link going NG an error; recoveries info.
    pub level: tracing::Level,
    pub text: String,
}

/// Everything the watch knows, owned by the pipeline thread.
#[derive(Debug, Default)]
pub struct Health {
    power: HashMap<Probe, Powered>,
    pdus: HashMap<IpAddr, PduSeen>,
    in_flight: HashSet<Probe>,
    rounds: u64,
    /// Link changes since [`Health::take_notes`] last ran.
    notes: Vec<WatchNote>,
    /// Systems last found not resettable, with why.
    not_resettable: BTreeMap<String, String>,
    /// Failure warnings by server name, from alerts: until an operator clears them.
    warnings: BTreeMap<String, ServerWarning>,
    /// Polls that found a device's link NG, per device of the spec (for the metrics).
    link_errors: BTreeMap<Probe, u64>,
}

/// A failure warning of a server (a predictive-failure or degradation alert it takes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerWarning {
    pub kind: crate::spec::model::AlertKind,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Local>,
}

/// What a power read made of a power-off alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    /// The BMC says off, and it was not known off before: the systems it takes down.
    Lost(PowerLoss),
    /// The BMC says off, as the watch already knew (it has been reported).
    AlreadyOff,
    /// The BMC says on: not confirmed.
    On,
    /// The BMC could not be read: not confirmed.
    Unknown(String),
}

/// A note for a link that went NG or came back (`None` for Unknown → OK and NG → NG).
fn link_note(device: String, before: &Link, after: &Link) -> Option<WatchNote> {
    match (before.is_ng(), after) {
        (false, Link::Ng(why)) => Some(WatchNote {
            level: tracing::Level::ERROR,
            text: format!("{device}: link NG: {why}"),
        }),
        (true, Link::Ok) => Some(WatchNote {
            level: tracing::Level::INFO,
            text: format!("{device}: link OK again"),
        }),
        _ => None,
    }
}

impl Health {
    /// Probes to start now: every device of the spec with no poll in flight. Forgets what
    /// the spec no longer holds.
    pub fn due(&mut self, spec: &Spec) -> Vec<Probe> {
        let all = probes(spec);
        let guests = guest_keys(spec);
        let keep: HashSet<&Probe> = all.iter().chain(&guests).collect();
        self.power.retain(|p, _| keep.contains(p));
        self.link_errors.retain(|p, _| keep.contains(p));
        self.pdus.retain(|a, _| spec.pdus.contains_key(a));
        self.warnings
            .retain(|s, _| spec.servers.contains_key(s.as_str()));
        self.rounds += 1;
        all.into_iter()
            .filter(|p| self.in_flight.insert(p.clone()))
            .collect()
    }

    /// Whether the server's BMC answered "power on" at or after `since`, from the address
    /// the spec now gives it.
    pub fn power_on_since(&self, server: &PhysicalServer, since: Instant) -> bool {
        self.power
            .get(&Probe::ServerBmc(server.name.to_string()))
            .is_some_and(|p| {
                p.at >= since
                    && p.from == (server.bmc.address, server.bmc.port)
                    && matches!(p.result, Ok(PowerState::On))
            })
    }

    /// The link changes noted since the last call, then every system that became not
    /// resettable (a warning: the cluster cannot fence it) or resettable again.
    pub fn take_notes(&mut self, spec: &Spec) -> Vec<WatchNote> {
        let mut notes = std::mem::take(&mut self.notes);
        if notes.is_empty() {
            return notes;
        }
        let mut now = BTreeMap::new();
        let mut all = HashSet::new();
        for s in spec.servers.values() {
            let systems: Vec<(String, Option<&str>)> = match &s.esxi {
                None => vec![(s.name.to_string(), None)],
                Some(e) => e
                    .guests
                    .iter()
                    .map(|g| (g.to_string(), Some(g.as_str())))
                    .collect(),
            };
            for (system, vm) in systems {
                all.insert(system.clone());
                let v = self.resettable(s, vm);
                if !v.resettable {
                    now.insert(system, v.problem.unwrap_or_default());
                }
            }
        }
        for (system, why) in &now {
            if !self.not_resettable.contains_key(system) {
                notes.push(WatchNote {
                    level: tracing::Level::WARN,
                    text: format!("{system} is not resettable: {why}"),
                });
            }
        }
        for system in self.not_resettable.keys() {
            if !now.contains_key(system) && all.contains(system) {
                notes.push(WatchNote {
                    level: tracing::Level::INFO,
                    text: format!("{system} is resettable again"),
                });
            }
        }
        self.not_resettable = now;
        notes
    }

    /// The failure warning of server `server`, as a check reply and `show hamonitor` say it.
    pub fn warning(&self, server: &str) -> Option<String> {
        self.warnings
            .get(server)
            .map(|w| format!("{}: {}", w.kind.as_str(), w.reason))
    }

    pub fn warnings(&self) -> &BTreeMap<String, ServerWarning> {
        &self.warnings
    }

    /// Marks `server` with a failure warning (the latest one stands).
    pub fn set_warning(&mut self, server: &str, warning: ServerWarning) {
        self.warnings.insert(server.to_string(), warning);
    }

    /// An operator cleared `server`'s warning; whether it had one.
    pub fn clear_warning(&mut self, server: &str) -> bool {
        self.warnings.remove(server).is_some()
    }

    /// A power read made for a power-off alert: recorded like a poll (a poll of the same
    /// BMC may be in flight: it stays so), and judged. Unlike a poll, "off" after no
    /// reading at all is a power loss: the alert is the event, the read confirms it.
    pub fn confirm(&mut self, spec: &Spec, probe: Probe, answer: Answer) -> Confirmed {
        let from = probe_address(spec, &probe);
        let before = self
            .power
            .get(&probe)
            .filter(|p| Some(p.from) == from)
            .and_then(|p| p.last);
        let read = match &answer {
            Answer::Power(Ok(p)) => Ok(*p),
            Answer::Power(Err(e)) => Err(e.to_string()),
            _ => Err("not a power reading".to_string()),
        };
        let polling = self.in_flight.contains(&probe);
        let loss = self.record(spec, probe.clone(), answer);
        if polling {
            self.in_flight.insert(probe.clone());
        }
        match read {
            Err(e) => Confirmed::Unknown(e),
            Ok(PowerState::On) => Confirmed::On,
            Ok(PowerState::Off) => match loss.or_else(|| {
                (before != Some(PowerState::Off))
                    .then(|| power_loss(spec, &probe))
                    .flatten()
            }) {
                Some(loss) => Confirmed::Lost(loss),
                None => Confirmed::AlreadyOff,
            },
        }
    }

    /// A poll whose device left the spec while it ran.
    pub fn forget(&mut self, probe: &Probe) {
        self.in_flight.remove(probe);
    }

    /// Takes a poll's answer; returns the power loss it shows, if any.
    pub fn record(&mut self, spec: &Spec, probe: Probe, answer: Answer) -> Option<PowerLoss> {
        self.in_flight.remove(&probe);
        // A guest's link is its host's (counted once, for the `Host` poll).
        let link_failed = match (&answer, &probe) {
            (Answer::Pdu { info, outlets }, Probe::Pdu(_)) => {
                info.is_err() && outlets.iter().all(|(_, r)| r.is_err())
            }
            (Answer::Guests(r), Probe::Host(_)) => r.is_err(),
            (Answer::Power(r), Probe::ServerBmc(_) | Probe::MserverBmc(_)) => r.is_err(),
            _ => false,
        };
        if link_failed && probe_address(spec, &probe).is_some() {
            *self.link_errors.entry(probe.clone()).or_default() += 1;
        }
        let now = Instant::now();
        match (answer, &probe) {
            (Answer::Pdu { info, outlets }, Probe::Pdu(addr)) => {
                if !spec.pdus.contains_key(addr) {
                    return None;
                }
                let (firmware, outlet_count) = match &info {
                    Ok(i) => (i.firmware.clone(), i.outlets),
                    Err(_) => (None, None),
                };
                // The link is NG when the PDU did not answer at all; an outlet it refuses
                // to report shows on that outlet only.
                let link = match (&info, outlets.iter().find(|(_, r)| r.is_ok())) {
                    (Ok(_), _) | (_, Some(_)) => Link::Ok,
                    (Err(e), None) => Link::Ng(e.to_string()),
                };
                self.notes.extend(link_note(
                    format!("PDU {addr}"),
                    &self.pdu_link(*addr),
                    &link,
                ));
                self.pdus.insert(
                    *addr,
                    PduSeen {
                        link,
                        firmware,
                        outlet_count,
                        outlets: outlets
                            .into_iter()
                            .map(|(o, r)| (o, r.map_err(|e| e.to_string())))
                            .collect(),
                        at: now,
                    },
                );
                None
            }
            (Answer::Guests(r), Probe::Host(server)) => {
                let host = spec.servers.get(server.as_str())?;
                let esxi = host.esxi.as_ref()?;
                let link_before = self.esxi(host);
                let vms: Vec<String> = esxi.guests.iter().map(|g| g.to_string()).collect();
                let mut lost = Vec::new();
                for vm in vms {
                    let answer = match &r {
                        Err(e) => Err(e.clone()),
                        Ok(list) => match list.iter().find(|(n, _)| *n == vm) {
                            Some((_, a)) => a.clone(),
                            // Asked before a reload added it: the next poll will tell.
                            None => continue,
                        },
                    };
                    let key = Probe::Guest(server.clone(), vm);
                    if let Some(loss) = self.record(spec, key, Answer::Power(answer)) {
                        lost.extend(loss.systems);
                    }
                }
                let device = format!("ESXi host {} of {server}", esxi.address);
                let after = self.esxi(host);
                self.notes.extend(link_note(device, &link_before, &after));
                (!lost.is_empty()).then(|| PowerLoss {
                    what: format!(
                        "ESXi host of {server} reports {} powered off",
                        lost.iter()
                            .map(|(s, _)| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    systems: lost,
                })
            }
            (Answer::Power(r), _) => {
                let from = probe_address(spec, &probe)?;
                // Compared with the last state it reported, even across a spell without
                // answers: on, then silence, then off is a power loss all the same.
                let before = self
                    .power
                    .get(&probe)
                    .filter(|p| p.from == from)
                    .and_then(|p| p.last);
                let power = r.as_ref().ok().copied();
                // A guest's link is its host's, noted once per host by the `Host` poll.
                let device = match &probe {
                    Probe::ServerBmc(n) => Some(format!("BMC {} of {n}", from.0)),
                    Probe::MserverBmc(n) => {
                        Some(format!("BMC {} of management server {n}", from.0))
                    }
                    _ => None,
                };
                if let Some(device) = device {
                    let link_before = self
                        .power
                        .get(&probe)
                        .filter(|p| p.from == from)
                        .map_or(Link::Unknown, Powered::link);
                    self.notes
                        .extend(link_note(device, &link_before, &Link::of(&r)));
                }
                self.power.insert(
                    probe.clone(),
                    Powered {
                        from,
                        result: r,
                        last: power.or(before),
                        at: now,
                    },
                );
                if before == Some(PowerState::On) && power == Some(PowerState::Off) {
                    power_loss(spec, &probe)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The last answer for `probe`, if it came from the device now at `from` (the callers
    /// hold the spec's server, so no lookup by name is needed on a check's path).
    fn powered(&self, probe: &Probe, from: (IpAddr, u16)) -> Option<&Powered> {
        self.power.get(probe).filter(|p| p.from == from)
    }

    fn server_bmc(&self, s: &PhysicalServer) -> Option<&Powered> {
        self.powered(
            &Probe::ServerBmc(s.name.to_string()),
            (s.bmc.address, s.bmc.port),
        )
    }

    fn guest(&self, s: &PhysicalServer, host: &Esxi, vm: &str) -> Option<&Powered> {
        self.powered(
            &Probe::Guest(s.name.to_string(), vm.to_string()),
            (host.address, host.port),
        )
    }

    /// A server's BMC link (`Unknown` until polled).
    pub fn bmc(&self, server: &PhysicalServer) -> Link {
        self.server_bmc(server).map_or(Link::Unknown, Powered::link)
    }

    pub fn pdu_link(&self, addr: IpAddr) -> Link {
        self.pdus
            .get(&addr)
            .map_or(Link::Unknown, |p| p.link.clone())
    }

    /// The ESXi link of a server: OK when the host answered for any guest (even to say it
    /// does not know the VM), NG when it could not be reached for any of them.
    pub fn esxi(&self, server: &PhysicalServer) -> Link {
        let Some(e) = &server.esxi else {
            return Link::Unknown;
        };
        let mut link = Link::Unknown;
        for g in &e.guests {
            match self.guest(server, e, g.as_str()).map(|p| &p.result) {
                Some(Ok(_)) | Some(Err(BackendError::Refused { .. })) => return Link::Ok,
                Some(Err(e)) => link = Link::Ng(e.to_string()),
                None => {}
            }
        }
        link
    }

    /// The PDU side of a server with PDU forced reset on: OK when every feeding PDU
    /// answers, NG (with the first reason) otherwise; `None` when PDU forced reset is off.
    pub fn server_pdus(&self, server: &PhysicalServer) -> Option<Link> {
        let ipdu = server.ipdu.as_ref().filter(|i| i.enabled)?;
        Some(self.links_of(&ipdu.outlets))
    }

    fn links_of(&self, outlets: &[OutletLink]) -> Link {
        let mut all = Link::Ok;
        for o in outlets {
            match self.pdu_link(o.pdu) {
                Link::Ng(r) => return Link::Ng(format!("PDU {}: {r}", o.pdu)),
                Link::Unknown => all = Link::Unknown,
                Link::Ok => {}
            }
        }
        all
    }

    /// Whether a check can call a system resettable, through what, and what is degraded.
    pub fn resettable(&self, server: &PhysicalServer, vm: Option<&str>) -> Verdict {
        if let (Some(vm), Some(host)) = (vm, &server.esxi) {
            return match self.guest(server, host, vm).map(|p| &p.result) {
                Some(Err(e)) => Verdict {
                    resettable: false,
                    via: "none",
                    problem: Some(format!("ESXi: {e}")),
                    warning: None,
                },
                _ => Verdict {
                    resettable: true,
                    via: "esxi",
                    problem: None,
                    warning: None,
                },
            };
        }
        let pdus = self.server_pdus(server);
        match self.bmc(server) {
            Link::Ng(bmc) => match pdus {
                Some(Link::Ng(pdu)) => Verdict {
                    resettable: false,
                    via: "none",
                    problem: Some(format!("BMC: {bmc}; {pdu}")),
                    warning: None,
                },
                Some(_) => Verdict {
                    resettable: true,
                    via: "pdu",
                    problem: Some(format!("BMC: {bmc}; resettable through PDU")),
                    warning: None,
                },
                None => Verdict {
                    resettable: false,
                    via: "none",
                    problem: Some(format!("BMC: {bmc}")),
                    warning: None,
                },
            },
            _ => Verdict {
                resettable: true,
                via: "bmc",
                problem: match pdus {
                    Some(Link::Ng(pdu)) => Some(pdu),
                    _ => None,
                },
                warning: None,
            },
        }
    }

    /// The `show status` view (SPEC §8): mservers role/state/BMC/PDU; servers
    /// power/BMC/PDU/VMware; PDUs with firmware and outlets. `--` where not configured.
    pub fn view(&self, spec: &Spec, interval: Option<Duration>) -> Value {
        let not_set = || json!({"link": "--"});
        let mservers: Vec<Value> = spec
            .management_servers
            .values()
            .map(|m| {
                let polled = self.powered(
                    &Probe::MserverBmc(m.name.to_string()),
                    (m.bmc.address, m.bmc.port),
                );
                let bmc = polled.map_or(Link::Unknown, Powered::link);
                let pdu = match m.ipdu.as_ref().filter(|i| i.enabled) {
                    Some(i) => self.links_of(&i.outlets).value(),
                    None => not_set(),
                };
                json!({
                    "name": m.name.as_str(),
                    "bmcAddress": m.bmc.address.to_string(),
                    // Which one is active is the daemon's to say (it knows which server it
                    // runs on): the watch does not know, as the manual's undecided `----`.
                    "role": "----",
                    // From its BMC, as the old product: normal (powered on) or poff.
                    "status": match polled.and_then(|p| p.last) {
                        Some(PowerState::On) => "normal",
                        Some(PowerState::Off) => "poff",
                        None => "--",
                    },
                    "bmc": bmc.value(),
                    "pdu": pdu,
                })
            })
            .collect();
        let servers: Vec<Value> = spec
            .servers
            .values()
            .map(|s| {
                let bmc = self.server_bmc(s);
                let power = power_word(bmc.and_then(|p| p.last));
                let mut v = json!({
                    "name": s.name.as_str(),
                    "power": power,
                    "bmc": bmc.map_or(Link::Unknown, Powered::link).value(),
                    "pdu": self.server_pdus(s).map_or_else(not_set, |l| l.value()),
                    "vmware": match &s.esxi {
                        Some(e) if e.enabled => self.esxi(s).value(),
                        Some(_) => json!({"link": "--", "reason": "ESXi management disabled"}),
                        None => not_set(),
                    },
                });
                if let Some(w) = self.warnings.get(s.name.as_str()) {
                    v["warning"] = json!({
                        "kind": w.kind.as_str(),
                        "reason": w.reason,
                        "at": w.at.format("%Y/%m/%d %H:%M:%S").to_string(),
                    });
                }
                if let Some(e) = &s.esxi {
                    v["guests"] = e
                        .guests
                        .iter()
                        .map(|g| {
                            let p = self.guest(s, e, g.as_str());
                            let mut gv = json!({
                                "name": g.as_str(),
                                "power": power_word(p.and_then(|p| p.last)),
                            });
                            if let Some(Err(e)) = p.map(|p| &p.result) {
                                gv["reason"] = e.to_string().into();
                            }
                            gv
                        })
                        .collect();
                }
                v
            })
            .collect();
        let pdus: Vec<Value> = spec
            .pdus
            .values()
            .map(|p| {
                let seen = self.pdus.get(&p.address);
                let mut v = json!({
                    "address": p.address.to_string(),
                    "model": p.model.name,
                    "firmware": seen.and_then(|s| s.firmware.clone()),
                    "outletCount": seen.and_then(|s| s.outlet_count),
                });
                if let Value::Object(l) = self.pdu_link(p.address).value()
                    && let Value::Object(o) = &mut v
                {
                    o.extend(l);
                }
                v["outlets"] = fed_outlets(spec, p.address)
                    .into_iter()
                    .map(|(outlet, fed, kind, enabled)| {
                        let state = match seen.and_then(|s| s.outlets.get(&outlet)) {
                            Some(Ok(OutletState::On)) => "on",
                            Some(Ok(OutletState::Off)) => "off",
                            Some(Ok(OutletState::Changing)) => "changing",
                            Some(Err(_)) => "NG",
                            None => "--",
                        };
                        json!({
                            "outlet": outlet,
                            // The seed's words: powered, cut, or not known.
                            "status": match state {
                                "on" => "Enable",
                                "off" => "Disable",
                                _ => "--",
                            },
                            "state": state,
                            "kind": kind,
                            "server": fed,
                            "forcedReset": enabled,
                        })
                    })
                    .collect();
                v
            })
            .collect();
        json!({
            "mode": match spec.mode {
                crate::spec::model::Mode::Single => "single",
                crate::spec::model::Mode::Pair => "pair",
            },
            // The link between the two management servers: the pair task fills it in.
            "peerLink": "--",
            "intervalMs": interval.map(|i| i.as_millis() as u64),
            "rounds": self.rounds,
            "lastPollAgoMs": self.power.values().map(|p| p.at).chain(self.pdus.values().map(|p| p.at)).max().map(|t| t.elapsed().as_millis() as u64),
            "mservers": mservers,
            "servers": servers,
            "pdus": pdus,
            "linkErrors": self.link_errors.iter().filter_map(|(p, n)| {
                let (device, name) = match p {
                    Probe::ServerBmc(s) => ("bmc", s.clone()),
                    Probe::MserverBmc(m) => ("mserverBmc", m.clone()),
                    Probe::Pdu(a) => ("pdu", a.to_string()),
                    Probe::Host(s) => ("esxi", s.clone()),
                    Probe::Guest(..) => return None,
                };
                Some(json!({"device": device, "name": name, "errors": n}))
            }).collect::<Vec<_>>(),
        })
    }
}

/// pon / poff / `--` (never answered).
fn power_word(p: Option<PowerState>) -> &'static str {
    match p {
        Some(PowerState::On) => "pon",
        Some(PowerState::Off) => "poff",
        None => "--",
    }
}

/// What a check reply says about a system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub resettable: bool,
    pub via: &'static str,
    pub problem: Option<String>,
    /// A failure warning of the system's server (set by the pipeline from the alerts).
    pub warning: Option<String>,
}

/// Every outlet of a PDU that feeds something: (outlet, server, `P`/`M`, PDU forced reset on).
pub fn fed_outlets(spec: &Spec, pdu: IpAddr) -> Vec<(u16, String, &'static str, bool)> {
    let mut v = Vec::new();
    for s in spec.servers.values() {
        if let Some(i) = &s.ipdu {
            for o in i.outlets.iter().filter(|o| o.pdu == pdu) {
                v.push((o.outlet, s.name.to_string(), "P", i.enabled));
            }
        }
    }
    for m in spec.management_servers.values() {
        if let Some(i) = &m.ipdu {
            for o in i.outlets.iter().filter(|o| o.pdu == pdu) {
                v.push((o.outlet, m.name.to_string(), "M", i.enabled));
            }
        }
    }
    v.sort();
    v
}

/// Every probe of a spec: each BMC, each PDU, each guest of an enabled ESXi host.
pub fn probes(spec: &Spec) -> Vec<Probe> {
    let mut v = Vec::new();
    for m in spec.management_servers.values() {
        v.push(Probe::MserverBmc(m.name.to_string()));
    }
    for s in spec.servers.values() {
        v.push(Probe::ServerBmc(s.name.to_string()));
        if s.esxi
            .as_ref()
            .is_some_and(|e| e.enabled && !e.guests.is_empty())
        {
            v.push(Probe::Host(s.name.to_string()));
        }
    }
    for p in spec.pdus.keys() {
        v.push(Probe::Pdu(*p));
    }
    v
}

/// The keys under which a `Host` poll records each guest.
fn guest_keys(spec: &Spec) -> Vec<Probe> {
    spec.servers
        .values()
        .filter_map(|s| Some((s, s.esxi.as_ref().filter(|e| e.enabled)?)))
        .flat_map(|(s, e)| {
            e.guests
                .iter()
                .map(|g| Probe::Guest(s.name.to_string(), g.to_string()))
        })
        .collect()
}

fn probe_address(spec: &Spec, probe: &Probe) -> Option<(IpAddr, u16)> {
    match probe {
        Probe::ServerBmc(s) => spec
            .servers
            .get(s.as_str())
            .map(|x| (x.bmc.address, x.bmc.port)),
        Probe::MserverBmc(m) => spec
            .management_servers
            .get(m.as_str())
            .map(|x| (x.bmc.address, x.bmc.port)),
        Probe::Guest(s, _) | Probe::Host(s) => spec
            .servers
            .get(s.as_str())
            .and_then(|x| x.esxi.as_ref())
            .map(|e| (e.address, e.port)),
        Probe::Pdu(a) => spec.pdus.get(a).map(|p| (p.address, p.port)),
    }
}

/// The systems a power loss takes down: the server itself, or every guest of its host.
fn power_loss(spec: &Spec, probe: &Probe) -> Option<PowerLoss> {
    match probe {
        Probe::ServerBmc(s) => {
            let server = spec.servers.values().find(|x| x.name.as_str() == s)?;
            let systems = match &server.esxi {
                None => vec![(s.clone(), false)],
                Some(e) => e.guests.iter().map(|g| (g.to_string(), true)).collect(),
            };
            Some(PowerLoss {
                systems,
                what: format!("BMC of {s} reports power off"),
            })
        }
        Probe::Guest(s, vm) => Some(PowerLoss {
            systems: vec![(vm.clone(), true)],
            what: format!("ESXi host of {s} reports {vm} powered off"),
        }),
        _ => None,
    }
}

/// One call under the pipeline's operation timeout.
async fn within<T>(
    device: String,
    f: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    crate::backend::bounded(device, OPERATION_TIMEOUT, f).await
}

/// Runs one probe against the hardware; `None` when the spec no longer holds its device.
pub async fn poll(spec: &Spec, probe: &Probe, b: &Backends) -> Option<Answer> {
    use crate::backend::device;
    Some(match probe {
        Probe::ServerBmc(s) => {
            let bmc = &spec.servers.values().find(|x| x.name.as_str() == s)?.bmc;
            Answer::Power(within(device("BMC", bmc.address), b.bmc.power_state(bmc)).await)
        }
        Probe::MserverBmc(m) => {
            let bmc = &spec.management_servers.get(m.as_str())?.bmc;
            Answer::Power(within(device("BMC", bmc.address), b.bmc.power_state(bmc)).await)
        }
        Probe::Host(s) => {
            let host = spec.servers.get(s.as_str())?.esxi.as_ref()?;
            let vms: Vec<String> = host.guests.iter().map(|g| g.to_string()).collect();
            Answer::Guests(
                within(
                    device("ESXi", host.address),
                    b.hypervisor.vm_power_states(host, &vms),
                )
                .await,
            )
        }
        // Recorded from a `Host` poll, never polled on its own.
        Probe::Guest(..) => return None,
        Probe::Pdu(addr) => {
            let pdu = spec.pdus.get(addr)?;
            let outlets: std::collections::BTreeSet<u16> = fed_outlets(spec, *addr)
                .into_iter()
                .map(|(o, ..)| o)
                .collect();
            let info = within(device("PDU", *addr), b.pdu.info(pdu));
            let states = futures_util::future::join_all(outlets.iter().map(|o| async move {
                (
                    *o,
                    within(device("PDU", *addr), b.pdu.outlet_state(pdu, *o)).await,
                )
            }));
            let (info, outlets) = futures_util::future::join(info, states).await;
            Answer::Pdu { info, outlets }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{CheckOptions, check_bytes};

    const SPEC: &str = "apiVersion: haconn/v1
mode: single
resetPath: {address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: none}
snmp: {community: lab}
pdus:
  - {address: 127.0.0.31, model: IBM_PDU}
managementServers:
  - name: ms1
    bmc: {address: 127.0.0.2, username: admin, password: passw0rd}
    mlan: {address: 127.0.0.1, port: 15002}
servers:
  - name: node1
    bmc: {address: 127.0.0.11, username: admin, password: passw0rd}
    ipdu: {timeout: 10, recoveryTime: 0, outlets: [{pdu: 127.0.0.31, outlet: 3}]}
  - name: node2
    bmc: {address: 127.0.0.12, username: admin, password: passw0rd}
";

    fn spec(text: &str) -> Spec {
        let c = check_bytes(text.as_bytes(), CheckOptions::default());
        c.spec.unwrap_or_else(|| panic!("{:?}", c.diagnostics))
    }

    fn node<'a>(spec: &'a Spec, name: &str) -> &'a PhysicalServer {
        spec.servers.get(name).expect("a server of the test spec")
    }

    fn bmc(s: &str) -> Probe {
        Probe::ServerBmc(s.into())
    }

    fn on() -> Answer {
        Answer::Power(Ok(PowerState::On))
    }

    fn off() -> Answer {
        Answer::Power(Ok(PowerState::Off))
    }

    fn dead(what: &str) -> BackendError {
        BackendError::unreachable(what, "no answer within 2000 ms")
    }

    /// Issue 18.3: a link going NG, and coming back, is noted once per change with the
    /// reason, not once per poll; a system that can no longer be reset is a warning.
    #[test]
    fn link_changes_are_noted_once_per_change() {
        let spec = spec(SPEC);
        let texts = |h: &mut Health| -> Vec<(tracing::Level, String)> {
            h.take_notes(&spec)
                .into_iter()
                .map(|n| (n.level, n.text))
                .collect()
        };
        let mut h = Health::default();
        // The first OK is no change.
        h.record(&spec, bmc("node2"), on());
        assert_eq!(texts(&mut h), []);
        for _ in 0..3 {
            h.record(
                &spec,
                bmc("node2"),
                Answer::Power(Err(dead("BMC 127.0.0.12"))),
            );
        }
        assert_eq!(
            texts(&mut h),
            [
                (
                    tracing::Level::ERROR,
                    "BMC 127.0.0.12 of node2: link NG: BMC 127.0.0.12 unreachable: no answer within 2000 ms".to_string()
                ),
                (
                    tracing::Level::WARN,
                    "node2 is not resettable: BMC: BMC 127.0.0.12 unreachable: no answer within 2000 ms".to_string()
                ),
            ]
        );
        h.record(
            &spec,
            bmc("node2"),
            Answer::Power(Err(dead("BMC 127.0.0.12"))),
        );
        assert_eq!(texts(&mut h), []);
        h.record(&spec, bmc("node2"), on());
        h.record(&spec, bmc("node2"), on());
        assert_eq!(
            texts(&mut h),
            [
                (
                    tracing::Level::INFO,
                    "BMC 127.0.0.12 of node2: link OK again".to_string()
                ),
                (
                    tracing::Level::INFO,
                    "node2 is resettable again".to_string()
                ),
            ]
        );
        // A PDU: NG at the first poll is a change.
        let pdu = Probe::Pdu("127.0.0.31".parse().unwrap());
        let pdu_dead = || Answer::Pdu {
            info: Err(dead("PDU 127.0.0.31")),
            outlets: vec![],
        };
        h.record(&spec, pdu.clone(), pdu_dead());
        h.record(&spec, pdu.clone(), pdu_dead());
        assert_eq!(
            texts(&mut h),
            [(
                tracing::Level::ERROR,
                "PDU 127.0.0.31: link NG: PDU 127.0.0.31 unreachable: no answer within 2000 ms"
                    .to_string()
            )]
        );
    }

    #[test]
    fn only_a_pon_to_poff_transition_is_a_power_loss() {
        let spec = spec(SPEC);
        let mut h = Health::default();
        // Off from the first poll: nothing was lost while we watched.
        assert_eq!(h.record(&spec, bmc("node2"), off()), None);
        assert_eq!(h.record(&spec, bmc("node1"), on()), None);
        assert_eq!(h.record(&spec, bmc("node1"), on()), None);
        let loss = h.record(&spec, bmc("node1"), off()).expect("a loss");
        assert_eq!(loss.systems, vec![("node1".to_string(), false)]);
        // Off again is not a second loss; an unanswered poll in between is not "on".
        assert_eq!(h.record(&spec, bmc("node1"), off()), None);
        assert_eq!(
            h.record(&spec, bmc("node1"), Answer::Power(Err(dead("BMC")))),
            None
        );
        assert_eq!(h.record(&spec, bmc("node1"), off()), None);
        // On, then silence, then off: lost while nobody could see, a loss all the same;
        // meanwhile status shows the last state the BMC reported.
        let mut h = Health::default();
        h.record(&spec, bmc("node1"), on());
        h.record(&spec, bmc("node1"), Answer::Power(Err(dead("BMC"))));
        assert_eq!(h.view(&spec, None)["servers"][0]["power"], "pon");
        assert_eq!(h.view(&spec, None)["servers"][0]["bmc"]["link"], "NG");
        assert!(h.record(&spec, bmc("node1"), off()).is_some());
    }

    /// Issue 15.2: a power-off alert is a loss only when its read says off; unlike a poll,
    /// off after no reading at all is one (the alert is the event); a read already known
    /// off is not reported twice; a poll in flight stays in flight.
    #[test]
    fn an_alert_is_a_power_loss_only_when_the_bmc_reads_off() {
        let spec = spec(SPEC);
        let mut h = Health::default();
        assert_eq!(h.confirm(&spec, bmc("node1"), on()), Confirmed::On);
        assert!(matches!(
            h.confirm(&spec, bmc("node1"), Answer::Power(Err(dead("BMC")))),
            Confirmed::Unknown(_)
        ));
        let Confirmed::Lost(loss) = h.confirm(&spec, bmc("node1"), off()) else {
            panic!("on, then off: a loss");
        };
        assert_eq!(loss.systems, vec![("node1".to_string(), false)]);
        assert_eq!(h.confirm(&spec, bmc("node1"), off()), Confirmed::AlreadyOff);
        assert_eq!(
            h.record(&spec, bmc("node1"), off()),
            None,
            "not reported twice"
        );
        // Never read before: the alert's read of "off" is a loss.
        let mut h = Health::default();
        assert!(matches!(
            h.confirm(&spec, bmc("node2"), off()),
            Confirmed::Lost(_)
        ));
        // A poll of the same BMC in flight stays in flight.
        let mut h = Health::default();
        assert!(h.due(&spec).contains(&bmc("node1")));
        h.confirm(&spec, bmc("node1"), on());
        assert!(
            !h.due(&spec).contains(&bmc("node1")),
            "a second poll started"
        );
        // Warnings: set, shown, cleared; gone with the server.
        let mut h = Health::default();
        h.set_warning(
            "node1",
            ServerWarning {
                kind: crate::spec::model::AlertKind::Degradation,
                reason: "fan 3 slow".into(),
                at: chrono::Local::now(),
            },
        );
        assert_eq!(
            h.warning("node1").as_deref(),
            Some("degradation: fan 3 slow")
        );
        assert_eq!(
            h.view(&spec, None)["servers"][0]["warning"]["kind"],
            "degradation"
        );
        assert!(h.clear_warning("node1"));
        assert!(!h.clear_warning("node1"));
        assert_eq!(h.warning("node1"), None);
    }

    #[test]
    fn an_answer_from_a_bmc_the_spec_moved_away_from_is_not_compared() {
        let mut h = Health::default();
        let before = spec(SPEC);
        assert_eq!(h.record(&before, bmc("node1"), on()), None);
        let moved = spec(&SPEC.replace("127.0.0.11", "127.0.0.21"));
        assert_eq!(h.record(&moved, bmc("node1"), off()), None);
        assert_eq!(h.bmc(node(&moved, "node1")), Link::Ok);
        // Asked about the old address, it knows nothing.
        assert_eq!(h.bmc(node(&before, "node1")), Link::Unknown);
    }

    #[test]
    fn a_dead_bmc_is_resettable_through_a_live_pdu_only() {
        let spec = spec(SPEC);
        let node1 = &spec
            .servers
            .values()
            .find(|s| s.name.as_str() == "node1")
            .unwrap();
        let node2 = &spec
            .servers
            .values()
            .find(|s| s.name.as_str() == "node2")
            .unwrap();
        let mut h = Health::default();
        // Not polled yet: resettable (the first poll is a second away).
        assert!(h.resettable(node1, None).resettable);
        h.record(
            &spec,
            bmc("node1"),
            Answer::Power(Err(dead("BMC 127.0.0.11"))),
        );
        h.record(
            &spec,
            bmc("node2"),
            Answer::Power(Err(dead("BMC 127.0.0.12"))),
        );
        let pdu_ok = Answer::Pdu {
            info: Ok(PduInfo::default()),
            outlets: vec![(3, Ok(OutletState::On))],
        };
        h.record(&spec, Probe::Pdu("127.0.0.31".parse().unwrap()), pdu_ok);
        let v = h.resettable(node1, None);
        assert_eq!((v.resettable, v.via), (true, "pdu"), "{v:?}");
        assert!(v.problem.unwrap().contains("resettable through PDU"));
        // node2 has no PDU forced reset: its dead BMC leaves nothing.
        let v = h.resettable(node2, None);
        assert_eq!((v.resettable, v.via), (false, "none"), "{v:?}");
        assert!(v.problem.unwrap().contains("127.0.0.12"));
        // The PDU dies too: node1 is not resettable either.
        let pdu_dead = Answer::Pdu {
            info: Err(dead("PDU 127.0.0.31")),
            outlets: vec![(3, Err(dead("PDU 127.0.0.31")))],
        };
        h.record(&spec, Probe::Pdu("127.0.0.31".parse().unwrap()), pdu_dead);
        let v = h.resettable(node1, None);
        assert_eq!((v.resettable, v.via), (false, "none"), "{v:?}");
        // The BMC answers again: resettable through it, the PDU's trouble still reported.
        h.record(&spec, bmc("node1"), on());
        let v = h.resettable(node1, None);
        assert_eq!((v.resettable, v.via), (true, "bmc"), "{v:?}");
        assert!(v.problem.unwrap().contains("PDU 127.0.0.31"));
    }

    #[test]
    fn one_poll_per_device_in_flight_and_removed_devices_are_forgotten() {
        let full = spec(SPEC);
        let mut h = Health::default();
        let first = h.due(&full);
        assert_eq!(first.len(), 4, "{first:?}"); // ms1, node1, node2, the PDU
        assert!(
            h.due(&full).is_empty(),
            "nothing is due while every poll is in flight"
        );
        h.record(&full, bmc("node2"), on());
        assert_eq!(h.due(&full), vec![bmc("node2")]);
        let smaller = spec(&SPEC.replace(
            "  - name: node2\n    bmc: {address: 127.0.0.12, username: admin, password: passw0rd}\n",
            "",
        ));
        h.due(&smaller);
        assert_eq!(
            h.view(&smaller, None)["servers"].as_array().unwrap().len(),
            1
        );
    }

    #[test]
    fn a_host_poll_records_each_guest_and_reports_only_those_that_went_off() {
        let spec = spec(&SPEC.replace(
            "  - name: node2\n",
            "  - name: esx\n    bmc: {address: 127.0.0.13, username: admin, password: passw0rd}\n    esxi: {address: 127.0.0.14, username: root, password: pw, hostKey: \"SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\", guests: [vm1, vm2, vm3]}\n  - name: node2\n",
        ));
        let host = Probe::Host("esx".into());
        assert!(probes(&spec).contains(&host));
        let answer = |states: [PowerState; 3]| {
            Answer::Guests(Ok(["vm1", "vm2", "vm3"]
                .into_iter()
                .zip(states)
                .map(|(n, p)| (n.to_string(), Ok(p)))
                .collect()))
        };
        use PowerState::{Off, On};
        assert_eq!(h_record(&spec, &host, answer([On, On, Off])), None);
        let mut h = Health::default();
        h.record(&spec, host.clone(), answer([On, On, Off]));
        let loss = h
            .record(&spec, host.clone(), answer([On, Off, Off]))
            .expect("vm2 lost");
        assert_eq!(loss.systems, vec![("vm2".to_string(), true)]);
        // The host cannot be asked: every guest unknown, nobody "lost power".
        let down = Answer::Guests(Err(dead("ESXi 127.0.0.14")));
        assert_eq!(h.record(&spec, host.clone(), down), None);
        let esx = spec
            .servers
            .values()
            .find(|s| s.name.as_str() == "esx")
            .unwrap();
        assert!(h.esxi(esx).is_ng());
        assert!(!h.resettable(esx, Some("vm1")).resettable);
        let v = h.view(&spec, None);
        assert_eq!(v["servers"][0]["guests"][0]["power"], "pon", "{v:#}");
        // The guests survive the pruning of a new round.
        h.due(&spec);
        assert_eq!(h.record(&spec, host, answer([On, On, On])), None);
        assert!(h.resettable(esx, Some("vm1")).resettable);
    }

    fn h_record(spec: &Spec, probe: &Probe, answer: Answer) -> Option<PowerLoss> {
        Health::default().record(spec, probe.clone(), answer)
    }

    #[test]
    fn the_status_view_has_the_spec_columns() {
        let spec = spec(SPEC);
        let mut h = Health::default();
        h.record(&spec, bmc("node1"), off());
        h.record(
            &spec,
            bmc("node2"),
            Answer::Power(Err(dead("BMC 127.0.0.12"))),
        );
        let v = h.view(&spec, Some(DEFAULT_INTERVAL));
        let servers = v["servers"].as_array().unwrap();
        assert_eq!(servers[0]["power"], "poff");
        assert_eq!(servers[0]["bmc"]["link"], "OK");
        assert_eq!(servers[0]["pdu"]["link"], "--", "enabled, not polled yet");
        assert_eq!(servers[0]["vmware"]["link"], "--");
        assert_eq!(servers[1]["power"], "--");
        assert_eq!(servers[1]["bmc"]["link"], "NG");
        assert_eq!(servers[1]["pdu"]["link"], "--");
        assert!(
            servers[1]["bmc"]["reason"]
                .as_str()
                .unwrap()
                .contains("2000 ms")
        );
        assert_eq!(v["mservers"][0]["bmc"]["link"], "--");
        assert_eq!(v["mservers"][0]["status"], "--");
        assert_eq!(v["pdus"][0]["outlets"][0]["server"], "node1");
        assert_eq!(v["pdus"][0]["outlets"][0]["kind"], "P");
    }
}
