//! The reset path: the UDP protocol between HA monitors (and node tools) and haconn.
//!
//! - [`codec`]: protocol v1 datagrams, HMAC authentication, the replay guard.
//! - [`fence_kdump`]: the message ClusterLabs' `fence_kdump_send` sends from a kdump kernel.

pub mod codec;
pub mod fence_kdump;
