//! Messages from ClusterLabs' `fence_kdump_send`, sent from a kdump kernel to say the node
//! is dumping. The message carries no name: the sender's address identifies the node.
//!
//! The message, as `fence_kdump_send` 0.1 (fence-agents 4.12) puts it on the wire, is 8
//! bytes: a 32-bit magic number then a 32-bit version (1), both in the *sender's* byte
//! order, with nothing after them. An x86-64 or arm64 node therefore sends
//! `40 2a 30 1b 01 00 00 00`; a big-endian node (s390x) `1b 30 2a 40 00 00 00 01`. The
//! magic tells which order was used, so both are accepted. It carries no authentication:
//! PROTOCOL.md explains what haconn does and does not trust it for.

/// The message's magic number.
pub const MAGIC: u32 = 0x1B30_2A40;
/// The only message version there is.
pub const VERSION: u32 = 1;
/// The exact length of a message.
pub const LEN: usize = 8;

/// The byte order a sender used (its native one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    Little,
    Big,
}

/// Why bytes are not a fence_kdump message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a fence_kdump message is {LEN} bytes, not {0}")]
    Length(usize),
    #[error("not a fence_kdump message (bad magic number)")]
    Magic,
    #[error("unsupported fence_kdump message version {0}")]
    Version(u32),
}

/// Checks the length, the magic number and the version; returns the sender's byte order.
pub fn decode(bytes: &[u8]) -> Result<ByteOrder, Error> {
    let bytes: &[u8; LEN] = bytes.try_into().map_err(|_| Error::Length(bytes.len()))?;
    let (magic, version) = bytes.split_at(4);
    let word = |b: &[u8]| -> [u8; 4] { b.try_into().expect("split at 4 of 8") };
    let (magic, version) = (word(magic), word(version));
    let (order, version) = if magic == MAGIC.to_le_bytes() {
        (ByteOrder::Little, u32::from_le_bytes(version))
    } else if magic == MAGIC.to_be_bytes() {
        (ByteOrder::Big, u32::from_be_bytes(version))
    } else {
        return Err(Error::Magic);
    };
    if version != VERSION {
        return Err(Error::Version(version));
    }
    Ok(order)
}

/// The message as a node of byte order `order` sends it (for tests and lab tools).
pub fn encode(order: ByteOrder) -> [u8; LEN] {
    let mut out = [0u8; LEN];
    let (magic, version) = match order {
        ByteOrder::Little => (MAGIC.to_le_bytes(), VERSION.to_le_bytes()),
        ByteOrder::Big => (MAGIC.to_be_bytes(), VERSION.to_be_bytes()),
    };
    out[..4].copy_from_slice(&magic);
    out[4..].copy_from_slice(&version);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on 127.0.0.1 from Debian 12's fence-agents 4.12.1-1
    /// (`/usr/libexec/fence-agents/fence_kdump_send -p PORT -c 2 -i 1 127.0.0.1`, x86-64):
    /// both datagrams were these 8 bytes.
    const CAPTURED_X86_64: [u8; 8] = [0x40, 0x2a, 0x30, 0x1b, 0x01, 0x00, 0x00, 0x00];

    #[test]
    fn accepts_the_captured_message() {
        assert_eq!(decode(&CAPTURED_X86_64), Ok(ByteOrder::Little));
        assert!(decode(&CAPTURED_X86_64).is_ok());
        assert_eq!(encode(ByteOrder::Little), CAPTURED_X86_64);
    }

    #[test]
    fn accepts_a_big_endian_sender() {
        let be = [0x1b, 0x30, 0x2a, 0x40, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(decode(&be), Ok(ByteOrder::Big));
        assert_eq!(encode(ByteOrder::Big), be);
    }

    #[test]
    fn refuses_wrong_length_magic_and_version() {
        assert_eq!(decode(&CAPTURED_X86_64[..7]), Err(Error::Length(7)));
        let mut long = CAPTURED_X86_64.to_vec();
        long.push(0);
        assert_eq!(decode(&long), Err(Error::Length(9)));
        assert_eq!(decode(&[]), Err(Error::Length(0)));
        let mut magic = CAPTURED_X86_64;
        magic[0] ^= 1;
        assert_eq!(decode(&magic), Err(Error::Magic));
        let mut v2 = CAPTURED_X86_64;
        v2[4] = 2;
        assert_eq!(decode(&v2), Err(Error::Version(2)));
        // Magic in one order, version in the other: version 0x01000000.
        let mixed = [0x40, 0x2a, 0x30, 0x1b, 0x00, 0x00, 0x00, 0x01];
        assert_eq!(decode(&mixed), Err(Error::Version(0x0100_0000)));
        assert!(decode(b"HCN1\x00{}").is_err());
    }
}
