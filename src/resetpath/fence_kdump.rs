//! Messages from ClusterLabs' `fence_kdump_send`, sent from a kdump kernel to say the node
//! is dumping. The message carries no name: the sender's address identifies the node.

/// The message's magic number (network byte order), as fence-agents defines it.
pub const MAGIC: u32 = 0x1B30_2A40;

/// Whether `bytes` is a fence_kdump message of a version we understand.
pub fn is_message(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == MAGIC.to_be_bytes()
}
