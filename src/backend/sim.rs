//! An in-process simulator of BMCs, PDUs and ESXi hosts, for unit tests and `haconn lab`.
//!
//! One [`Sim`] plays every device. Each device answers, fails, or hangs as told, and every
//! call is recorded as a [`SimEvent`] (and broadcast, so a lab can play the node's dump
//! agent when an NMI lands). Time is tokio time, so paused-clock tests see exact delays.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{
    BackendError, BackendResult, Bmc, Hypervisor, OutletState, Pdu, PduInfo, PowerState, device,
};
use crate::spec::model::{Bmc as BmcSpec, Esxi, Pdu as PduSpec};

/// How a simulated device answers a kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Does it, after the device's delay.
    #[default]
    Works,
    /// Answers with an error.
    Refuses,
    /// Never answers (the caller's timeout decides).
    Hangs,
}

/// One simulated device: a BMC (by address), a PDU (by address) or a VM (host address + name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceId {
    Bmc(IpAddr),
    Pdu(IpAddr),
    Vm(IpAddr, String),
}

#[derive(Debug, Clone)]
pub struct DeviceState {
    pub power: PowerState,
    pub behavior: Behavior,
    pub delay: Duration,
}

impl Default for DeviceState {
    fn default() -> Self {
        DeviceState {
            power: PowerState::On,
            behavior: Behavior::Works,
            delay: Duration::from_millis(1),
        }
    }
}

/// What a simulated device was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    PowerQuery(DeviceId),
    Nmi(DeviceId),
    HardReset(DeviceId),
    /// Power down (`on` false) or up.
    Power {
        id: DeviceId,
        on: bool,
    },
    OutletQuery {
        pdu: IpAddr,
        outlet: u16,
    },
    PduInfo(IpAddr),
    Outlet {
        pdu: IpAddr,
        outlet: u16,
        on: bool,
    },
}

#[derive(Debug)]
pub struct Sim {
    devices: Mutex<HashMap<DeviceId, DeviceState>>,
    outlets: Mutex<HashMap<(IpAddr, u16), bool>>,
    log: Mutex<Vec<(tokio::time::Instant, SimEvent)>>,
    events: broadcast::Sender<SimEvent>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            devices: Mutex::default(),
            outlets: Mutex::default(),
            log: Mutex::default(),
            events: broadcast::channel(1024).0,
        }
    }
}

impl Sim {
    /// Sets how a device behaves from now on.
    pub fn set(&self, id: DeviceId, f: impl FnOnce(&mut DeviceState)) {
        let mut d = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        f(d.entry(id).or_default());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SimEvent> {
        self.events.subscribe()
    }

    /// Every call so far, with when it arrived.
    pub fn calls(&self) -> Vec<(tokio::time::Instant, SimEvent)> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether an outlet is on (outlets start on).
    pub fn outlet_on(&self, pdu: IpAddr, outlet: u16) -> bool {
        *self
            .outlets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(pdu, outlet))
            .unwrap_or(&true)
    }

    fn state(&self, id: &DeviceId) -> DeviceState {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    fn record(&self, ev: SimEvent) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tokio::time::Instant::now(), ev.clone()));
        let _ = self.events.send(ev);
    }

    /// Plays one request against a device: records it, waits its delay, then behaves.
    async fn act(&self, id: &DeviceId, ev: SimEvent, what: &str) -> BackendResult<DeviceState> {
        self.record(ev);
        let st = self.state(id);
        let name = match id {
            DeviceId::Bmc(a) => device("BMC", *a),
            DeviceId::Pdu(a) => device("PDU", *a),
            DeviceId::Vm(a, vm) => format!("VM {vm} on {}", device("ESXi", *a)),
        };
        match st.behavior {
            Behavior::Hangs => std::future::pending().await,
            Behavior::Refuses => {
                tokio::time::sleep(st.delay).await;
                Err(BackendError::refused(
                    name,
                    format!("simulated refusal of {what}"),
                ))
            }
            Behavior::Works => {
                tokio::time::sleep(st.delay).await;
                Ok(st)
            }
        }
    }

    fn set_power(&self, id: DeviceId, power: PowerState) {
        self.set(id, |d| d.power = power);
    }
}

#[async_trait]
impl Bmc for Sim {
    async fn power_state(&self, bmc: &BmcSpec) -> BackendResult<PowerState> {
        let id = DeviceId::Bmc(bmc.address);
        Ok(self
            .act(&id, SimEvent::PowerQuery(id.clone()), "status")
            .await?
            .power)
    }

    async fn nmi(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let id = DeviceId::Bmc(bmc.address);
        self.act(&id, SimEvent::Nmi(id.clone()), "NMI")
            .await
            .map(drop)
    }

    async fn hard_reset(&self, bmc: &BmcSpec) -> BackendResult<()> {
        let id = DeviceId::Bmc(bmc.address);
        self.act(&id, SimEvent::HardReset(id.clone()), "hard reset")
            .await?;
        self.set_power(id, PowerState::On);
        Ok(())
    }

    async fn power(&self, bmc: &BmcSpec, on: bool) -> BackendResult<()> {
        let id = DeviceId::Bmc(bmc.address);
        self.act(&id, SimEvent::Power { id: id.clone(), on }, "power control")
            .await?;
        self.set_power(id, if on { PowerState::On } else { PowerState::Off });
        Ok(())
    }
}

#[async_trait]
impl Pdu for Sim {
    async fn set_outlet(&self, pdu: &PduSpec, outlet: u16, on: bool) -> BackendResult<()> {
        let id = DeviceId::Pdu(pdu.address);
        let ev = SimEvent::Outlet {
            pdu: pdu.address,
            outlet,
            on,
        };
        self.act(&id, ev, "outlet switch").await?;
        self.outlets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((pdu.address, outlet), on);
        Ok(())
    }

    async fn outlet_state(&self, pdu: &PduSpec, outlet: u16) -> BackendResult<OutletState> {
        let id = DeviceId::Pdu(pdu.address);
        let ev = SimEvent::OutletQuery {
            pdu: pdu.address,
            outlet,
        };
        self.act(&id, ev, "outlet status").await?;
        Ok(if self.outlet_on(pdu.address, outlet) {
            OutletState::On
        } else {
            OutletState::Off
        })
    }

    async fn info(&self, pdu: &PduSpec) -> BackendResult<PduInfo> {
        let id = DeviceId::Pdu(pdu.address);
        self.act(&id, SimEvent::PduInfo(pdu.address), "firmware query")
            .await?;
        Ok(PduInfo {
            firmware: Some("sim".into()),
            outlets: Some(u32::from(pdu.model.outlets)),
        })
    }
}

#[async_trait]
impl Hypervisor for Sim {
    async fn vm_power_state(&self, host: &Esxi, vm: &str) -> BackendResult<PowerState> {
        let id = DeviceId::Vm(host.address, vm.to_string());
        Ok(self
            .act(&id, SimEvent::PowerQuery(id.clone()), "power state")
            .await?
            .power)
    }

    async fn vm_nmi(&self, host: &Esxi, vm: &str) -> BackendResult<()> {
        let id = DeviceId::Vm(host.address, vm.to_string());
        self.act(&id, SimEvent::Nmi(id.clone()), "NMI")
            .await
            .map(drop)
    }

    async fn vm_reset(&self, host: &Esxi, vm: &str) -> BackendResult<()> {
        let id = DeviceId::Vm(host.address, vm.to_string());
        self.act(&id, SimEvent::HardReset(id.clone()), "reset")
            .await
            .map(drop)
    }
}
