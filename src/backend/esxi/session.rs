//! One SSH session to one ESXi host: connect (host key checked against the pin or the
//! trust-on-first-use record, then key, keyboard-interactive and password logins), and one
//! command per channel.

use std::borrow::Cow;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Sig, kex};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::Options;
use crate::backend::BackendError;
use crate::spec::model::Esxi;

/// At most this much output is kept per command.
const MAX_OUTPUT: usize = 1 << 20;

/// Host keys accepted on first use, one `<address>:<port> SHA256:...` line each.
#[derive(Debug)]
pub(super) struct KnownHosts {
    path: Option<PathBuf>,
    /// Keys accepted by this process (all of them when there is no file).
    seen: Mutex<Vec<(SocketAddr, String)>>,
}

impl KnownHosts {
    pub(super) fn new(path: Option<PathBuf>) -> Self {
        KnownHosts {
            path,
            seen: Mutex::new(Vec::new()),
        }
    }

    /// The recorded key of `at`, or records `fp` as its key. `Err` when the file cannot be
    /// read or written (then nothing is trusted).
    fn recorded_or_record(&self, at: SocketAddr, fp: &str) -> Result<Option<String>, String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.path {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
            };
            let endpoint = at.to_string();
            if let Some(k) = text.lines().find_map(|l| {
                let (who, key) = l.split_once(' ')?;
                (who == endpoint).then(|| key.trim().to_string())
            }) {
                return Ok(Some(k));
            }
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .and_then(|f| crate::log::restrict(&f, 0o600).map(|()| f))
                .map_err(|e| format!("cannot record the key in {}: {e}", path.display()))?;
            f.write_all(format!("{endpoint} {fp}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot record the key in {}: {e}", path.display()))?;
        } else if let Some((_, k)) = seen.iter().find(|(a, _)| *a == at) {
            return Ok(Some(k.clone()));
        }
        seen.push((at, fp.to_string()));
        Ok(None)
    }

    fn where_recorded(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "memory".into(),
        }
    }
}

/// What the host-key check decided, for the error message.
#[derive(Debug, Default)]
struct Verdict {
    refused: Option<String>,
}

struct Client {
    at: SocketAddr,
    pin: Option<String>,
    trust_on_first_use: bool,
    known: Arc<KnownHosts>,
    verdict: Arc<Mutex<Verdict>>,
}

/// `SHA256:abc=` and `SHA256:abc` are the same fingerprint.
fn same_fingerprint(a: &str, b: &str) -> bool {
    a.trim_end_matches('=') == b.trim_end_matches('=')
}

impl Client {
    fn check(&self, fp: &str) -> Result<(), String> {
        if let Some(pin) = &self.pin {
            return if same_fingerprint(fp, pin) {
                Ok(())
            } else {
                Err(format!(
                    "host key {fp} does not match the pinned {pin} — nothing was run"
                ))
            };
        }
        if !self.trust_on_first_use {
            return Err(format!(
                "host key {fp} is not pinned: set `hostKey: {fp}` after checking it on the host \
                 (or allow `trustOnFirstUse`) — nothing was run"
            ));
        }
        match self.known.recorded_or_record(self.at, fp) {
            Ok(None) => Ok(()),
            Ok(Some(k)) if same_fingerprint(fp, &k) => Ok(()),
            Ok(Some(k)) => Err(format!(
                "host key {fp} does not match {k} recorded on first use in {} — nothing was run; \
                 if the host was reinstalled, remove its line",
                self.known.where_recorded()
            )),
            Err(e) => Err(format!("host key {fp} not trusted: {e} — nothing was run")),
        }
    }
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            self.verdict
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refused = Some(
                "the host presented a certificate; pin its key instead — nothing was run".into(),
            );
            return Ok(false);
        };
        let fp = key.fingerprint(HashAlg::Sha256).to_string();
        match self.check(&fp) {
            Ok(()) => Ok(true),
            Err(e) => {
                self.verdict
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused = Some(e);
                Ok(false)
            }
        }
    }
}

/// An authenticated session; channels are opened on it concurrently.
pub(super) struct Conn {
    handle: Handle<Client>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("closed", &self.handle.is_closed())
            .finish()
    }
}

impl Conn {
    pub(super) fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    pub(super) async fn disconnect(&self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "haconn stopping", "en")
            .await;
    }
}

fn config(opts: &Options) -> Arc<client::Config> {
    use russh::keys::{Algorithm, EcdsaCurve};
    // ESXi in FIPS mode has no curve25519/ed25519; ECDH P-256 avoids the slow 8192-bit
    // group exchange the default order ends in.
    let preferred = russh::Preferred {
        kex: Cow::Owned(vec![
            kex::ECDH_SHA2_NISTP256,
            kex::ECDH_SHA2_NISTP384,
            kex::ECDH_SHA2_NISTP521,
            kex::CURVE25519,
            kex::DH_G14_SHA256,
            kex::DH_G16_SHA512,
            kex::DH_GEX_SHA256,
            kex::EXTENSION_SUPPORT_AS_CLIENT,
            kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
        ]),
        key: Cow::Owned(vec![
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP521,
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha512),
            },
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256),
            },
            Algorithm::Ed25519,
        ]),
        ..russh::Preferred::DEFAULT
    };
    Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: Some(opts.keepalive),
        keepalive_max: 3,
        preferred,
        ..Default::default()
    })
}

/// Connects, checks the host key and logs in; bounded by `opts.connect_timeout`.
pub(super) async fn connect(
    host: Esxi,
    known: Arc<KnownHosts>,
    opts: Options,
    dev: String,
) -> Result<Arc<Conn>, BackendError> {
    let limit = opts.connect_timeout;
    match tokio::time::timeout(limit, connect_inner(&host, known, &opts, &dev)).await {
        Ok(r) => r,
        Err(_) => Err(BackendError::unreachable(
            dev,
            format!(
                "no SSH session within {} ms (port {})",
                limit.as_millis(),
                host.port
            ),
        )),
    }
}

async fn connect_inner(
    host: &Esxi,
    known: Arc<KnownHosts>,
    opts: &Options,
    dev: &str,
) -> Result<Arc<Conn>, BackendError> {
    let at = SocketAddr::new(host.address, host.port);
    let verdict = Arc::new(Mutex::new(Verdict::default()));
    let client = Client {
        at,
        pin: host.host_key.clone(),
        trust_on_first_use: host.trust_on_first_use,
        known,
        verdict: verdict.clone(),
    };
    let mut handle = match client::connect(config(opts), at, client).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(why) = verdict
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .refused
                .take()
            {
                return Err(BackendError::refused(dev, why));
            }
            return Err(BackendError::unreachable(
                dev,
                format!("SSH to port {}: {e}", host.port),
            ));
        }
    };
    authenticate(&mut handle, host, dev).await?;
    Ok(Arc::new(Conn { handle }))
}

fn lost(dev: &str, e: russh::Error) -> BackendError {
    BackendError::unreachable(dev, format!("SSH session lost while logging in: {e}"))
}

/// Key first, then the password by keyboard-interactive (what ESXi's sshd offers), then
/// by the `password` method.
async fn authenticate(
    handle: &mut Handle<Client>,
    host: &Esxi,
    dev: &str,
) -> Result<(), BackendError> {
    let user = host.username.as_str();
    let mut tried = Vec::new();
    if let Some(k) = &host.private_key {
        let text = k.resolve().map_err(|e| {
            BackendError::refused(dev, format!("privateKey: {e} — nothing was run"))
        })?;
        let key = russh::keys::decode_secret_key(&text, None).map_err(|_| {
            BackendError::refused(
                dev,
                format!(
                    "privateKey {k} is not a usable private key (OpenSSH or PEM, without a passphrase) — nothing was run"
                ),
            )
        })?;
        let hash = if key.algorithm().is_rsa() {
            match handle.best_supported_rsa_hash().await {
                Ok(Some(h)) => h,
                _ => Some(HashAlg::Sha256),
            }
        } else {
            None
        };
        let r = handle
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(|e| lost(dev, e))?;
        if r.success() {
            return Ok(());
        }
        tried.push("public key");
    }
    if let Some(p) = &host.password {
        let password = p
            .resolve()
            .map_err(|e| BackendError::refused(dev, format!("password: {e} — nothing was run")))?;
        let mut r = handle
            .authenticate_keyboard_interactive_start(user, None)
            .await
            .map_err(|e| lost(dev, e))?;
        // PAM may ask more than once (an empty round, then the password); bounded.
        for _ in 0..4 {
            match r {
                KeyboardInteractiveAuthResponse::Success => return Ok(()),
                KeyboardInteractiveAuthResponse::Failure { .. } => break,
                KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                    let answers = prompts
                        .iter()
                        .map(|p| {
                            if p.echo {
                                String::new()
                            } else {
                                password.clone()
                            }
                        })
                        .collect();
                    r = handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await
                        .map_err(|e| lost(dev, e))?;
                }
            }
        }
        tried.push("keyboard-interactive");
        let r = handle
            .authenticate_password(user, password)
            .await
            .map_err(|e| lost(dev, e))?;
        if r.success() {
            return Ok(());
        }
        tried.push("password");
    }
    Err(BackendError::refused(
        dev,
        format!(
            "login as {user} failed (tried {}): check the account, password and key — nothing was run",
            tried.join(", ")
        ),
    ))
}

/// What a command printed.
#[derive(Debug, Clone, Default)]
pub(super) struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: Option<u32>,
}

impl Output {
    /// stdout and stderr together (vim-cmd prints faults on either).
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Why a command did not complete.
#[derive(Debug, Clone)]
pub(super) enum CmdError {
    /// No channel: the command was not started, so it is safe to try again.
    NotStarted(String),
    /// The session closed under the command.
    Closed(String),
    /// No end within the time limit; the channel was killed and closed.
    Timeout(Duration),
}

/// Runs `command` on its own channel, holding `permit` (a place under the host's channel
/// limit) until the channel is closed. Runs as its own task so that a caller giving up never
/// leaves a channel half-used: on the time limit it signals KILL and closes the channel.
pub(super) fn spawn_command(
    conn: Arc<Conn>,
    permit: OwnedSemaphorePermit,
    command: String,
    limit: Duration,
) -> tokio::task::JoinHandle<Result<Output, CmdError>> {
    tokio::spawn(async move {
        let r = run_command(&conn, &command, limit).await;
        drop(permit);
        r
    })
}

async fn run_command(conn: &Conn, command: &str, limit: Duration) -> Result<Output, CmdError> {
    let deadline = Instant::now() + limit;
    // sshd frees a session slot only once our close of the previous channel reached it, so
    // an open refused for want of sessions is tried again shortly (bounded by the deadline).
    let mut refusals = 0u32;
    let mut ch = loop {
        match tokio::time::timeout_at(deadline, conn.handle.channel_open_session()).await {
            Ok(Ok(ch)) => break ch,
            Ok(Err(e)) if conn.is_closed() => return Err(CmdError::Closed(e.to_string())),
            Ok(Err(e)) => {
                refusals += 1;
                let pause = Duration::from_millis(5 * u64::from(refusals.min(20)));
                if refusals > 50 || Instant::now() + pause >= deadline {
                    return Err(CmdError::NotStarted(e.to_string()));
                }
                tokio::time::sleep(pause).await;
            }
            Err(_) => return Err(CmdError::Timeout(limit)),
        }
    };
    if let Err(e) = ch.exec(true, command).await {
        return Err(CmdError::Closed(e.to_string()));
    }
    let mut out = Output::default();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    loop {
        let msg = match tokio::time::timeout_at(deadline, ch.wait()).await {
            Ok(m) => m,
            Err(_) => {
                let _ = ch.signal(Sig::KILL).await;
                let _ = ch.close().await;
                return Err(CmdError::Timeout(limit));
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => keep(&mut stdout, &data),
            Some(ChannelMsg::ExtendedData { data, .. }) => keep(&mut stderr, &data),
            Some(ChannelMsg::ExitStatus { exit_status }) => out.status = Some(exit_status),
            Some(ChannelMsg::Failure) => {
                let _ = ch.close().await;
                return Err(CmdError::NotStarted(
                    "the host refused to run the command".into(),
                ));
            }
            Some(ChannelMsg::Close) => break,
            None => {
                if out.status.is_none() {
                    return Err(CmdError::Closed(
                        "the channel closed before the command ended".into(),
                    ));
                }
                break;
            }
            Some(_) => {}
        }
    }
    out.stdout = String::from_utf8_lossy(&stdout).into_owned();
    out.stderr = String::from_utf8_lossy(&stderr).into_owned();
    Ok(out)
}

fn keep(buf: &mut Vec<u8>, data: &[u8]) {
    let room = MAX_OUTPUT.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}
