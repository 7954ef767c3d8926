//! Management-server duplication (SPEC §4): two daemons, one active, one standby.
//!
//! - `role.rs`: the role core, pure: who serves, when to fence the peer.
//! - `wire.rs`: the mlan heartbeat datagram (signed, fresh, ordered).
//! - `sync.rs`: the active's spec sent to the standby over TCP on the mlan.
//! - `task.rs`: the I/O shell on the main runtime: mlan socket, fencing, address, gate.
//! - `addr.rs`: the reset path's virtual address: added, removed and announced.
pub mod addr;
pub mod role;
pub mod sync;
pub mod task;
pub mod wire;
