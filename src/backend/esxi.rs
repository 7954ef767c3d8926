//! VMware ESXi over SSH: placeholder until the backend lands; every call fails.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{BackendResult, Hypervisor, PowerState, Unavailable};
use crate::spec::model::Esxi;

#[derive(Debug, Default)]
pub struct EsxiHosts {
    _known_hosts: Option<PathBuf>,
}

impl EsxiHosts {
    /// `known_hosts` records keys accepted on first use (hosts whose spec allows it).
    pub fn new(known_hosts: Option<PathBuf>) -> Self {
        EsxiHosts {
            _known_hosts: known_hosts,
        }
    }
}

#[async_trait]
impl Hypervisor for EsxiHosts {
    async fn vm_power_state(&self, h: &Esxi, vm: &str) -> BackendResult<PowerState> {
        Unavailable.vm_power_state(h, vm).await
    }
    async fn vm_nmi(&self, h: &Esxi, vm: &str) -> BackendResult<()> {
        Unavailable.vm_nmi(h, vm).await
    }
    async fn vm_reset(&self, h: &Esxi, vm: &str) -> BackendResult<()> {
        Unavailable.vm_reset(h, vm).await
    }
}
