//! The node side of the reset path: what an HA monitor or a dump agent does with a UDP
//! socket. Sends protocol v1 datagrams to the connector, waits for valid answers against a
//! deadline, retransmits, and drops whatever does not verify (wrong key, replayed, stale,
//! malformed), counting why so a caller that got no answer can say what it did get.
//!
//! Blocking std sockets: a node tool does one exchange at a time, and the kdump environment
//! it also runs in has no use for a runtime. Every wait is bounded by a deadline.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::codec::{self, Envelope, Key, MAX_DATAGRAM, Message};
use super::replay::ReplayGuard;

/// Why the client could not do its part (the answer not coming is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot bind a UDP socket on {addr}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot send to {to}")]
    Send { to: SocketAddr, source: io::Error },
    #[error("cannot receive")]
    Recv(#[source] io::Error),
}

/// Why a key file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}")]
    Read { path: String, source: io::Error },
    #[error("the key file {0} is empty")]
    Empty(String),
}

/// Reads the reset-path key from a file, dropping one trailing newline (as the daemon does
/// for `{file: ...}` secrets, so both ends read the same file the same way).
pub fn read_key_file(path: &Path) -> Result<Key, KeyFileError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| KeyFileError::Read {
        path: name.clone(),
        source,
    })?;
    let key = bytes
        .strip_suffix(b"\r\n")
        .or_else(|| bytes.strip_suffix(b"\n"))
        .unwrap_or(&bytes);
    if key.is_empty() {
        return Err(KeyFileError::Empty(name));
    }
    Ok(Key::Hmac(key.to_vec()))
}

/// How often a request is sent again while no answer has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Time between the first two sends; it doubles after each send, up to `max_interval`.
    pub interval: Duration,
    pub max_interval: Duration,
    /// Sends in all, the first included.
    pub sends: u32,
}

/// A verified datagram and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub from: SocketAddr,
    pub env: Envelope,
}

/// One UDP socket on the node, talking to one connector address.
#[derive(Debug)]
pub struct Client {
    sock: UdpSocket,
    local: SocketAddr,
    connector: SocketAddr,
    key: Key,
    replay: ReplayGuard,
    ignored: BTreeMap<String, u32>,
}

impl Client {
    /// Binds `local` (port 0: an ephemeral port) to talk to `connector`.
    pub fn bind(local: SocketAddr, connector: SocketAddr, key: Key) -> Result<Client, ClientError> {
        let bind_error = |source| ClientError::Bind {
            addr: local,
            source,
        };
        let sock = UdpSocket::bind(local).map_err(bind_error)?;
        let local = sock.local_addr().map_err(bind_error)?;
        Ok(Client {
            sock,
            local,
            connector,
            key,
            replay: ReplayGuard::default(),
            ignored: BTreeMap::new(),
        })
    }

    /// A receive-only client (attention listeners): `connector` is never sent to.
    pub fn listen(local: SocketAddr, key: Key) -> Result<Client, ClientError> {
        Client::bind(local, local, key)
    }

    /// The bound address (with the ephemeral port filled in).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn connector(&self) -> SocketAddr {
        self.connector
    }

    /// Sends `msg` in a fresh envelope (new timestamp and nonce): a retransmission is a new
    /// datagram, so the connector's replay guard lets it through.
    pub fn send(&self, msg: &Message) -> Result<(), ClientError> {
        let bytes = codec::encode(&Envelope::new(msg.clone()), &self.key);
        self.sock
            .send_to(&bytes, self.connector)
            .map(drop)
            .map_err(|source| ClientError::Send {
                to: self.connector,
                source,
            })
    }

    /// The next datagram that verifies, or `None` once `deadline` has passed.
    pub fn recv(&mut self, deadline: Instant) -> Result<Option<Received>, ClientError> {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Ok(None);
            };
            self.sock
                .set_read_timeout(Some(left))
                .map_err(ClientError::Recv)?;
            let (n, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // An ICMP port-unreachable from an earlier send shows up here on Linux;
                // it says nothing about the answers still to come.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(ClientError::Recv(e)),
            };
            let env = match codec::decode(&buf[..n], &self.key) {
                Ok(env) => env,
                Err(e) => {
                    self.ignore(e.to_string());
                    continue;
                }
            };
            // Everything here comes from one connector: one set.
            if let Err(e) = self.replay.check("connector", &env, codec::now_ms()) {
                self.ignore(e.to_string());
                continue;
            }
            return Ok(Some(Received { from, env }));
        }
    }

    /// Sends `msg`, sends it again every `retry.interval` (up to `retry.sends` in all) while
    /// nothing `accept`ed has come, and returns the first accepted answer; `None` at
    /// `deadline`. Datagrams `accept` declines are skipped.
    pub fn request<T>(
        &mut self,
        msg: &Message,
        retry: Retry,
        deadline: Instant,
        mut accept: impl FnMut(&Received) -> Option<T>,
    ) -> Result<Option<T>, ClientError> {
        let mut sent = 0;
        let mut next_send = Instant::now();
        let mut interval = retry.interval;
        loop {
            if sent < retry.sends.max(1) && Instant::now() >= next_send {
                self.send(msg)?;
                sent += 1;
                next_send = Instant::now() + interval;
                interval = (interval * 2).min(retry.max_interval.max(retry.interval));
            }
            let wait_until = if sent < retry.sends.max(1) {
                deadline.min(next_send)
            } else {
                deadline
            };
            match self.recv(wait_until)? {
                Some(r) => {
                    if let Some(t) = accept(&r) {
                        return Ok(Some(t));
                    }
                }
                None if Instant::now() >= deadline => return Ok(None),
                None => {}
            }
        }
    }

    /// Datagrams dropped so far, by reason.
    pub fn ignored(&self) -> &BTreeMap<String, u32> {
        &self.ignored
    }

    /// The dropped datagrams as one phrase (`2 × bad authentication tag (wrong key?)`), or
    /// `None` when nothing was dropped.
    pub fn ignored_summary(&self) -> Option<String> {
        (!self.ignored.is_empty()).then(|| {
            self.ignored
                .iter()
                .map(|(why, n)| format!("{n} × {why}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
    }

    fn ignore(&mut self, why: String) {
        *self.ignored.entry(why).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resetpath::codec::ResetResult;

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn key() -> Key {
        Key::Hmac(b"0123456789abcdef0123".to_vec())
    }

    fn check() -> Message {
        Message::Check {
            system: "node01".into(),
            subsystem: 1,
            port: 1,
            pair: None,
        }
    }

    #[test]
    fn key_file_drops_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        for (text, want) in [
            ("secretsecretsecret\n", "secretsecretsecret"),
            ("secretsecretsecret\r\n", "secretsecretsecret"),
            ("secretsecretsecret", "secretsecretsecret"),
            ("secretsecretsecret\n\n", "secretsecretsecret\n"),
        ] {
            std::fs::write(&f, text).unwrap();
            match read_key_file(&f).unwrap() {
                Key::Hmac(k) => assert_eq!(k, want.as_bytes()),
                Key::None => panic!("a key"),
            }
        }
        std::fs::write(&f, "\n").unwrap();
        assert!(matches!(read_key_file(&f), Err(KeyFileError::Empty(_))));
        assert!(matches!(
            read_key_file(&dir.path().join("missing")),
            Err(KeyFileError::Read { .. })
        ));
    }

    #[test]
    fn retransmits_until_answered_and_drops_what_does_not_verify() {
        let server = UdpSocket::bind(loopback()).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut client = Client::bind(loopback(), server.local_addr().unwrap(), key()).unwrap();
        let retry = Retry {
            interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(50),
            sends: 10,
        };
        let to = client.local_addr();
        let answer = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Ignore the first two sends, as a lossy network would.
            for _ in 0..3 {
                let (n, _) = server.recv_from(&mut buf).unwrap();
                assert!(codec::decode(&buf[..n], &key()).is_ok());
            }
            let wrong = Key::Hmac(b"not-the-right-key-at-all".to_vec());
            let reply = Message::ResetReply {
                req: 1,
                target_system: "node02".into(),
                target_subsystem: 2,
                result: ResetResult::Accepted,
                reason: None,
            };
            server
                .send_to(&codec::encode(&Envelope::new(reply.clone()), &wrong), to)
                .unwrap();
            server.send_to(b"garbage", to).unwrap();
            let good = codec::encode(&Envelope::new(reply), &key());
            server.send_to(&good, to).unwrap();
            server.send_to(&good, to).unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let got = client
            .request(&check(), retry, deadline, |r| Some(r.env.msg.clone()))
            .unwrap();
        assert!(matches!(got, Some(Message::ResetReply { req: 1, .. })));
        answer.join().unwrap();
        // The replayed copy is dropped; nothing else arrives before the deadline.
        let soon = Instant::now() + Duration::from_millis(200);
        assert_eq!(client.recv(soon).unwrap(), None);
        let ignored = client.ignored();
        assert_eq!(ignored.get("bad authentication tag (wrong key?)"), Some(&1));
        assert_eq!(ignored.get("not a haconn datagram"), Some(&1));
        assert_eq!(
            ignored.get("nonce already seen (replayed datagram)"),
            Some(&1)
        );
    }

    #[test]
    fn gives_up_at_the_deadline_after_the_last_send() {
        let server = UdpSocket::bind(loopback()).unwrap();
        let mut client = Client::bind(loopback(), server.local_addr().unwrap(), key()).unwrap();
        let start = Instant::now();
        let retry = Retry {
            interval: Duration::from_millis(30),
            max_interval: Duration::from_millis(30),
            sends: 3,
        };
        let got = client
            .request(&check(), retry, start + Duration::from_millis(300), |_| {
                Some(())
            })
            .unwrap();
        assert_eq!(got, None);
        assert!(start.elapsed() >= Duration::from_millis(300));
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        let mut sends = 0;
        while server.recv_from(&mut buf).is_ok() {
            sends += 1;
        }
        assert_eq!(sends, 3);
    }
}
