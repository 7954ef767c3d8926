//! Management-server duplication (SPEC §4): two daemons, one active, one standby.
//!
//! - `role.rs`: the role core, pure: who serves, when to fence the peer.
//! - `addr.rs`: the reset path's virtual address: added, removed and announced.
pub mod addr;
pub mod role;
