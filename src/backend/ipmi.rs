//! IPMI 2.0 over LAN (RMCP+): placeholder until the backend lands; every call fails.

use async_trait::async_trait;

use super::{BackendResult, Bmc, PowerState, Unavailable};
use crate::spec::model::Bmc as BmcSpec;

#[derive(Debug, Default)]
pub struct IpmiBmc;

impl IpmiBmc {
    pub fn new() -> Self {
        IpmiBmc
    }
}

#[async_trait]
impl Bmc for IpmiBmc {
    async fn power_state(&self, b: &BmcSpec) -> BackendResult<PowerState> {
        Unavailable.power_state(b).await
    }
    async fn nmi(&self, b: &BmcSpec) -> BackendResult<()> {
        Unavailable.nmi(b).await
    }
    async fn hard_reset(&self, b: &BmcSpec) -> BackendResult<()> {
        Unavailable.hard_reset(b).await
    }
    async fn power_off(&self, b: &BmcSpec) -> BackendResult<()> {
        Unavailable.power_off(b).await
    }
    async fn power_on(&self, b: &BmcSpec) -> BackendResult<()> {
        Unavailable.power_on(b).await
    }
}
