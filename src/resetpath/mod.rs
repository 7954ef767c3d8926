//! The reset path: the UDP protocol between HA monitors (and node tools) and haconn.
//!
//! - [`codec`]: protocol v1 datagrams, HMAC authentication.
//! - [`keys`]: which key signs and verifies each datagram: per node (HKDF-SHA256 of the
//!   cluster key and the system's name) or shared.
//! - [`replay`]: freshness: the replay guard per claimed system, the high-water mark kept
//!   across restarts.
//! - [`client`]: the node side: send, wait for a verified answer, retransmit.
//! - [`fence_kdump`]: the message ClusterLabs' `fence_kdump_send` sends from a kdump kernel.

pub mod client;
pub mod codec;
pub mod fence_kdump;
pub mod keys;
pub mod replay;
