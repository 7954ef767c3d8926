//! SNMP v2c switched PDUs: placeholder until the backend lands; every call fails.

use async_trait::async_trait;

use super::{BackendResult, OutletState, Pdu, PduInfo, Unavailable};
use crate::spec::model::Pdu as PduSpec;
use crate::spec::secret::Secret;

#[derive(Debug, Default)]
pub struct SnmpPdu {
    _community: Option<Secret>,
}

impl SnmpPdu {
    /// `community` is the spec's `snmp.community` (fixed for the daemon's life: changing it
    /// needs a restart).
    pub fn new(community: Option<Secret>) -> Self {
        SnmpPdu {
            _community: community,
        }
    }
}

#[async_trait]
impl Pdu for SnmpPdu {
    async fn set_outlet(&self, p: &PduSpec, outlet: u16, on: bool) -> BackendResult<()> {
        Unavailable.set_outlet(p, outlet, on).await
    }
    async fn outlet_state(&self, p: &PduSpec, outlet: u16) -> BackendResult<OutletState> {
        Unavailable.outlet_state(p, outlet).await
    }
    async fn info(&self, p: &PduSpec) -> BackendResult<PduInfo> {
        Unavailable.info(p).await
    }
}
