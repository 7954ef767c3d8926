//! Attention fan-out (PROTOCOL.md `attention`): one notification to many destinations,
//! sent and logged from a thread of its own, so telling thousands of monitors never
//! holds up the next reset request on the pipeline thread.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::log::LogSink;
use crate::resetpath::codec::{self, AttentionState, Envelope, Message};
use crate::resetpath::keys::KeyRing;
use crate::spec::model::Name;

use super::Counters;
use super::resetlog::{self, Dir, Kind, Peer};

/// One destination of an attention notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    pub addr: SocketAddr,
    /// The requester's request number, on the copies sent to requesters.
    pub req: Option<u32>,
    /// The monitor's system (the requester's, for a requester): with per-node keys, its
    /// key signs the copy.
    pub system: Name,
}

/// One attention notification. Destinations may repeat (a requester is often a
/// registered monitor too): the first occurrence of an address (with per-node keys, of an
/// address and system) is the one sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    pub system: String,
    pub subsystem: u32,
    pub kind: Kind,
    pub state: AttentionState,
    pub to: Vec<Dest>,
}

pub fn state_word(s: AttentionState) -> &'static str {
    match s {
        AttentionState::Dump => "DUMP",
        AttentionState::Reboot => "REBOOT",
        AttentionState::Poff => "POFF",
    }
}

/// The notifier thread's nice value (behind the process's; the pipeline thread is ahead,
/// [`super::limits::FENCING_NICE`]).
const NOTIFIER_NICE: libc::c_int = 10;

/// Starts the notifier thread; it ends when the returned sender is dropped.
pub fn spawn(
    sock: std::net::UdpSocket,
    keys: Arc<arc_swap::ArcSwap<KeyRing>>,
    reset_log: LogSink,
    counters: Arc<Counters>,
) -> std::io::Result<std::sync::mpsc::Sender<Fanout>> {
    let (tx, rx) = std::sync::mpsc::channel::<Fanout>();
    thread::Builder::new()
        .name("haconn-notify".into())
        .spawn(move || {
            // Below the pipeline thread: a fan-out to thousands of monitors takes a core
            // for milliseconds, and the next reset request must not wait behind it. (Linux
            // keeps a nice value per thread; where it cannot be set, nothing changes.)
            super::limits::nice_this_thread(NOTIFIER_NICE);
            for f in rx {
                let word = state_word(f.state);
                let keys = keys.load_full();
                let per_node = keys.per_node();
                let mut sent_to = HashSet::with_capacity(f.to.len());
                for Dest { addr, req, system } in f.to {
                    let Some(key) = keys.key_for(system.as_str()) else {
                        continue;
                    };
                    if !sent_to.insert((addr, per_node.then_some(system))) {
                        continue;
                    }
                    let msg = Message::Attention {
                        system: f.system.clone(),
                        subsystem: f.subsystem,
                        state: f.state,
                        req,
                    };
                    let bytes = codec::encode(&Envelope::new(msg), key);
                    // The socket is shared with the pipeline's non-blocking reads: when
                    // the send buffer is full, wait a little here (this is our own thread).
                    let mut sent = sock.send_to(&bytes, addr);
                    for _ in 0..50 {
                        match &sent {
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                thread::sleep(Duration::from_millis(1));
                                sent = sock.send_to(&bytes, addr);
                            }
                            _ => break,
                        }
                    }
                    if sent.is_err() {
                        counters.send_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    // SPEC §7: `<req#>` is `----` on every ATTENTION SEND.
                    let peer = Peer {
                        ip: Some(addr.ip()),
                        port: Some(addr.port()),
                        req: None,
                    };
                    reset_log.line(resetlog::attention(
                        &f.system,
                        f.subsystem,
                        Dir::Send,
                        peer,
                        f.kind,
                        word,
                    ));
                }
            }
        })?;
    Ok(tx)
}
