//! Hardware behind traits: the pipeline sees only [`Bmc`], [`Pdu`] and [`Hypervisor`].
//!
//! Each has one real implementation (IPMI, SNMP, SSH: their own issues) and one in-process
//! simulator ([`sim`]) for unit tests and `haconn lab`. Every call is bounded by the caller
//! (the pipeline wraps each in a timeout), and an error in one device never affects another.

pub mod esxi;
pub mod ipmi;
pub mod sim;
pub mod snmp;

use std::net::IpAddr;

use async_trait::async_trait;

use crate::spec::model::{Bmc as BmcSpec, Esxi, Pdu as PduSpec};

/// A node's power as a BMC or hypervisor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

/// Why a device did not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("{device} unreachable: {reason}")]
    Unreachable { device: String, reason: String },
    #[error("{device} refused: {reason}")]
    Refused { device: String, reason: String },
    /// The caller's bound ran out before the device answered ([`bounded`]). For what
    /// follows (fallback to the PDU, link NG) it counts as unreachable.
    #[error("{device}: no answer within {} ms", after.as_millis())]
    Timeout {
        device: String,
        after: std::time::Duration,
    },
}

impl BackendError {
    pub fn unreachable(device: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        BackendError::Unreachable {
            device: device.to_string(),
            reason: reason.into(),
        }
    }

    pub fn refused(device: impl std::fmt::Display, reason: impl Into<String>) -> Self {
        BackendError::Refused {
            device: device.to_string(),
            reason: reason.into(),
        }
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

/// One backend call under the caller's time limit: the one place a call to hardware is
/// bounded. Dropping the call at the limit is safe (every backend is cancel-safe).
pub async fn bounded<T>(
    device: impl std::fmt::Display,
    limit: std::time::Duration,
    call: impl std::future::Future<Output = BackendResult<T>>,
) -> BackendResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::Timeout {
            device: device.to_string(),
            after: limit,
        }),
    }
}

/// Switches every outlet of `outlets` off at once, each call bounded by `limit`, as a fence
/// does when a BMC cannot: `note(link, confirmed)` is told before each switch (`false`) and
/// after the PDU confirmed it (`true`). Every failure, as `PDU ip#outlet: why`; none when
/// every outlet is confirmed off.
pub async fn cut_outlets(
    pdus: &std::collections::BTreeMap<IpAddr, PduSpec>,
    outlets: &[crate::spec::model::OutletLink],
    pdu: &dyn Pdu,
    limit: std::time::Duration,
    note: &(dyn Fn(&crate::spec::model::OutletLink, bool) + Sync),
) -> Vec<String> {
    let cuts = outlets.iter().map(|o| async move {
        let Some(spec) = pdus.get(&o.pdu) else {
            return Err(format!("{o}: PDU not in the spec"));
        };
        note(o, false);
        bounded(
            format!("PDU {o}"),
            limit,
            pdu.set_outlet(spec, o.outlet, false),
        )
        .await
        .map(|()| note(o, true))
        .map_err(|e| e.to_string())
    });
    futures_util::future::join_all(cuts)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Guests of one host by VM name, each with its power state or why it is unknown.
pub type GuestStates = Vec<(String, BackendResult<PowerState>)>;

/// A server's BMC (IPMI over LAN).
#[async_trait]
pub trait Bmc: Send + Sync + std::fmt::Debug {
    async fn power_state(&self, bmc: &BmcSpec) -> BackendResult<PowerState>;
    /// Pulse the diagnostic interrupt (NMI) so the node can dump.
    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()>;
    /// Hard reset; `Ok` is the BMC's acknowledgement.
    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()>;
    /// Power down (`on` false) or up; `Ok` is the BMC's acknowledgement, not yet the
    /// power state (read it to confirm).
    async fn power(&self, bmc: &BmcSpec, on: bool) -> BackendResult<()>;
    /// Closes whatever the backend keeps open (sessions); called once at shutdown.
    async fn shutdown(&self) {}
}

/// A PDU outlet's state as the PDU reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutletState {
    On,
    Off,
    /// Switching (IBM "cycling", Eaton "pending"): read again.
    Changing,
}

/// What a PDU says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PduInfo {
    /// `None` where the model defines no firmware OID.
    pub firmware: Option<String>,
    /// `None` where the model defines no outlet-count OID.
    pub outlets: Option<u32>,
}

/// A switched PDU (SNMP).
#[async_trait]
pub trait Pdu: Send + Sync + std::fmt::Debug {
    /// Switches one outlet and returns once the PDU reports the new state.
    async fn set_outlet(&self, pdu: &PduSpec, outlet: u16, on: bool) -> BackendResult<()>;
    async fn outlet_state(&self, pdu: &PduSpec, outlet: u16) -> BackendResult<OutletState>;
    /// Firmware version and outlet count (the PDU watch's link check).
    async fn info(&self, pdu: &PduSpec) -> BackendResult<PduInfo>;
    async fn shutdown(&self) {}
}

/// An ESXi host and its guests (SSH).
#[async_trait]
pub trait Hypervisor: Send + Sync + std::fmt::Debug {
    async fn vm_power_state(&self, host: &Esxi, vm: &str) -> BackendResult<PowerState>;
    async fn vm_nmi(&self, host: &Esxi, vm: &str) -> BackendResult<()>;
    async fn vm_reset(&self, host: &Esxi, vm: &str) -> BackendResult<()>;
    /// The power state of several guests of one host (the watch's poll): `Err` when the
    /// host could not be asked at all, else one answer per guest. The default asks for each
    /// guest in turn; a backend that can ask once per host does.
    async fn vm_power_states(&self, host: &Esxi, vms: &[String]) -> BackendResult<GuestStates> {
        let mut answers = Vec::with_capacity(vms.len());
        for vm in vms {
            answers.push((vm.clone(), self.vm_power_state(host, vm).await));
        }
        Ok(answers)
    }
    async fn shutdown(&self) {}
}

/// The three backends the pipeline uses.
#[derive(Debug, Clone)]
pub struct Backends {
    pub bmc: std::sync::Arc<dyn Bmc>,
    pub pdu: std::sync::Arc<dyn Pdu>,
    pub hypervisor: std::sync::Arc<dyn Hypervisor>,
}

/// Identifies a device in messages: its address.
pub fn device(kind: &str, addr: IpAddr) -> String {
    format!("{kind} {addr}")
}
