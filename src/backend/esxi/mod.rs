//! VMware ESXi over SSH: the [`Hypervisor`] behind VMware guests.
//!
//! One SSH session per host, opened on first use and kept (keepalive; reopened after it
//! closes, with backoff after failures), shared by every call: each command gets its own
//! channel, at most [`Options::max_channels`] at once per host (sshd's `MaxSessions` is 10
//! by default), the rest queue. The host key must match the spec's pin, or the key recorded
//! on first use where the spec allows it; nothing runs otherwise. Guests are found by exact
//! VM name in `vim-cmd vmsvc/getallvms` (cached; re-read on reconnect and when a vmid goes
//! stale). Soft reset is an NMI through `vmdumper` (the world id is looked up just before,
//! as it changes at every power-on); hard reset is `vim-cmd vmsvc/power.reset`.
//!
//! Every call is cancel-safe: connecting is shared by the callers waiting for it and
//! outlives any one of them, and a command runs as its own task that closes its channel
//! by itself at its time limit.

mod parse;
mod session;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{BackendError, BackendResult, Hypervisor, PowerState, device};
use crate::spec::model::Esxi;
use session::{CmdError, Conn, KnownHosts, Output};

/// Concurrent channels per host: below OpenSSH's default `MaxSessions 10`.
pub const MAX_CHANNELS: usize = 8;
/// How long one command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting and logging in may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Limits and intervals of the backend; the defaults suit production.
#[derive(Debug, Clone)]
pub struct Options {
    pub command_timeout: Duration,
    pub connect_timeout: Duration,
    /// Concurrent channels per host; more commands wait for a place.
    pub max_channels: usize,
    /// SSH keepalive interval; the session is dropped after 3 unanswered.
    pub keepalive: Duration,
    /// First wait before reconnecting after a failed connect; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            command_timeout: COMMAND_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            max_channels: MAX_CHANNELS,
            keepalive: Duration::from_secs(5),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(5),
        }
    }
}

/// The ESXi hosts haconn talks to, each with its session.
pub struct EsxiHosts {
    known: Arc<KnownHosts>,
    options: Options,
    hosts: Mutex<HashMap<(IpAddr, u16), Arc<Host>>>,
}

impl std::fmt::Debug for EsxiHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EsxiHosts")
            .field("known_hosts", &self.known)
            .field("options", &self.options)
            .field("hosts", &self.lock_hosts().len())
            .finish()
    }
}

impl Default for EsxiHosts {
    fn default() -> Self {
        EsxiHosts::new(None)
    }
}

type Connecting = Shared<BoxFuture<'static, Result<Arc<Conn>, BackendError>>>;

/// A host's session, as far as it got.
enum Slot {
    Idle {
        failures: u32,
        /// After a failure with these settings: no new attempt with them before this
        /// instant, the error stands.
        retry: Option<(Instant, Esxi, BackendError)>,
    },
    Connecting {
        attempt: u64,
        failures: u32,
        settings: Esxi,
        fut: Connecting,
    },
    Up {
        settings: Esxi,
        conn: Arc<Conn>,
    },
}

struct Host {
    slot: Mutex<Slot>,
    channels: Arc<Semaphore>,
    /// VM name → vmids, from the current session.
    vms: Mutex<Option<HashMap<String, Vec<u32>>>>,
}

/// The settings that make a session: a changed password, key or pin needs a new one.
fn same_login(a: &Esxi, b: &Esxi) -> bool {
    a.username == b.username
        && a.password == b.password
        && a.private_key == b.private_key
        && a.host_key == b.host_key
        && a.trust_on_first_use == b.trust_on_first_use
}

static ATTEMPTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl EsxiHosts {
    /// `known_hosts` records keys accepted on first use (hosts whose spec allows it).
    pub fn new(known_hosts: Option<PathBuf>) -> Self {
        EsxiHosts::with_options(known_hosts, Options::default())
    }

    pub fn with_options(known_hosts: Option<PathBuf>, options: Options) -> Self {
        EsxiHosts {
            known: Arc::new(KnownHosts::new(known_hosts)),
            options,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn lock_hosts(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, u16), Arc<Host>>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn host(&self, h: &Esxi) -> Arc<Host> {
        self.lock_hosts()
            .entry((h.address, h.port))
            .or_insert_with(|| {
                Arc::new(Host {
                    slot: Mutex::new(Slot::Idle {
                        failures: 0,
                        retry: None,
                    }),
                    channels: Arc::new(Semaphore::new(self.options.max_channels.max(1))),
                    vms: Mutex::new(None),
                })
            })
            .clone()
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        self.options
            .backoff_min
            .saturating_mul(1 << exp)
            .min(self.options.backoff_max)
    }

    /// The host's open session, connecting (or joining a connect under way) if needed.
    async fn conn(&self, host: &Host, h: &Esxi) -> BackendResult<Arc<Conn>> {
        let (attempt, fut) = {
            let mut slot = host.slot.lock().unwrap_or_else(|p| p.into_inner());
            let next = match &*slot {
                Slot::Up { settings, conn } if same_login(settings, h) && !conn.is_closed() => {
                    return Ok(conn.clone());
                }
                Slot::Connecting {
                    attempt,
                    settings,
                    fut,
                    ..
                } if same_login(settings, h) => Err((*attempt, fut.clone())),
                Slot::Idle {
                    retry: Some((at, settings, e)),
                    ..
                } if Instant::now() < *at && same_login(settings, h) => return Err(e.clone()),
                Slot::Idle { failures, .. } | Slot::Connecting { failures, .. } => Ok(*failures),
                Slot::Up { .. } => Ok(0),
            };
            match next {
                Err(joined) => joined,
                Ok(failures) => {
                    let attempt = ATTEMPTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let fut = session::connect(
                        h.clone(),
                        self.known.clone(),
                        self.options.clone(),
                        device("ESXi", h.address),
                    )
                    .boxed()
                    .shared();
                    *slot = Slot::Connecting {
                        attempt,
                        failures,
                        settings: h.clone(),
                        fut: fut.clone(),
                    };
                    (attempt, fut)
                }
            }
        };
        let r = fut.await;
        let mut slot = host.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Slot::Connecting {
            attempt: a,
            failures,
            settings,
            ..
        } = &*slot
            && *a == attempt
        {
            *slot = match &r {
                Ok(conn) => {
                    *host.vms.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    Slot::Up {
                        settings: settings.clone(),
                        conn: conn.clone(),
                    }
                }
                Err(e) => {
                    let failures = failures + 1;
                    let until = Instant::now() + self.backoff(failures);
                    Slot::Idle {
                        failures,
                        retry: Some((until, settings.clone(), e.clone())),
                    }
                }
            };
        }
        r
    }

    /// Forgets a session that turned out closed, so the next call reconnects at once.
    fn closed(&self, host: &Host, conn: &Arc<Conn>) {
        let mut slot = host.slot.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(&*slot, Slot::Up { conn: c, .. } if Arc::ptr_eq(c, conn)) {
            *slot = Slot::Idle {
                failures: 0,
                retry: None,
            };
        }
    }

    /// Runs one command under the channel limit and the command timeout.
    async fn run(&self, host: &Host, h: &Esxi, command: &str) -> BackendResult<Output> {
        let dev = device("ESXi", h.address);
        // A session found closed when opening the channel is reopened once: the command
        // was not started, so running it on the new session runs it once.
        for first in [true, false] {
            let conn = self.conn(host, h).await?;
            let permit = host
                .channels
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| BackendError::unreachable(&dev, "backend shut down"))?;
            let task = session::spawn_command(
                conn.clone(),
                permit,
                command.to_string(),
                self.options.command_timeout,
            );
            let r = match task.await {
                Ok(r) => r,
                Err(e) => return Err(BackendError::unreachable(&dev, format!("`{command}`: {e}"))),
            };
            match r {
                Ok(out) => return Ok(out),
                Err(CmdError::Timeout(d)) => {
                    return Err(BackendError::unreachable(
                        &dev,
                        format!("`{command}` did not finish within {} ms", d.as_millis()),
                    ));
                }
                Err(CmdError::NotStarted(_)) if first && conn.is_closed() => {
                    self.closed(host, &conn);
                    continue;
                }
                Err(CmdError::Closed(e)) | Err(CmdError::NotStarted(e)) if conn.is_closed() => {
                    self.closed(host, &conn);
                    return Err(BackendError::unreachable(
                        &dev,
                        format!("SSH session closed during `{command}`: {e}"),
                    ));
                }
                Err(CmdError::Closed(e)) => {
                    return Err(BackendError::unreachable(
                        &dev,
                        format!("`{command}` was cut off: {e}"),
                    ));
                }
                Err(CmdError::NotStarted(e)) => {
                    return Err(BackendError::refused(
                        &dev,
                        format!("cannot run `{command}`: {e}"),
                    ));
                }
            }
        }
        Err(BackendError::unreachable(&dev, "SSH session keeps closing"))
    }

    /// The vmid of the VM named exactly `vm`; `refresh` re-reads the inventory.
    async fn vmid(&self, host: &Host, h: &Esxi, vm: &str, refresh: bool) -> BackendResult<u32> {
        let cached = (!refresh)
            .then(|| {
                host.vms
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .and_then(|m| m.get(vm).cloned())
            })
            .flatten();
        let ids = match cached {
            Some(ids) => ids,
            None => {
                let out = self.run(host, h, "vim-cmd vmsvc/getallvms").await?;
                let text = out.text();
                if let Some(f) = parse::fault(&text) {
                    return Err(BackendError::refused(
                        device("ESXi", h.address),
                        format!("listing VMs: {f}"),
                    ));
                }
                let map = parse::all_vms(&text);
                let ids = map.get(vm).cloned().unwrap_or_default();
                *host.vms.lock().unwrap_or_else(|p| p.into_inner()) = Some(map);
                ids
            }
        };
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => Err(BackendError::refused(
                device("ESXi", h.address),
                format!("no VM named {vm} on this host (vim-cmd vmsvc/getallvms)"),
            )),
            many => Err(BackendError::refused(
                device("ESXi", h.address),
                format!(
                    "{} VMs are named {vm} on this host (vmids {many:?}); rename one",
                    many.len()
                ),
            )),
        }
    }

    /// Runs `vim-cmd vmsvc/<op> <vmid>` for `vm`; when the vmid turns out stale, re-reads
    /// the inventory and tries once more.
    async fn vmsvc(&self, h: &Esxi, vm: &str, op: &str) -> BackendResult<(u32, Output)> {
        let host = self.host(h);
        let mut vmid = self.vmid(&host, h, vm, false).await?;
        let mut out = self
            .run(&host, h, &format!("vim-cmd vmsvc/{op} {vmid}"))
            .await?;
        if parse::fault(&out.text()).is_some_and(|f| f.is_not_found()) {
            let fresh = self.vmid(&host, h, vm, true).await?;
            if fresh != vmid {
                vmid = fresh;
                out = self
                    .run(&host, h, &format!("vim-cmd vmsvc/{op} {vmid}"))
                    .await?;
            }
        }
        Ok((vmid, out))
    }
}

/// Refuses output that holds a fault, or lacks `marker`, or came with a failing status.
fn expect(h: &Esxi, what: &str, out: &Output, marker: &str) -> BackendResult<()> {
    let text = out.text();
    let dev = device("ESXi", h.address);
    if let Some(f) = parse::fault(&text) {
        return Err(BackendError::refused(dev, format!("{what}: {f}")));
    }
    if out.status != Some(0) || !text.contains(marker) {
        return Err(BackendError::refused(
            dev,
            format!(
                "{what}: unexpected answer (exit status {}): {}",
                out.status.map_or("none".into(), |s| s.to_string()),
                parse::excerpt(&text)
            ),
        ));
    }
    Ok(())
}

#[async_trait]
impl Hypervisor for EsxiHosts {
    async fn vm_power_state(&self, h: &Esxi, vm: &str) -> BackendResult<PowerState> {
        let (vmid, out) = self.vmsvc(h, vm, "power.getstate").await?;
        parse::power_state(&out.text()).map_err(|e| {
            BackendError::refused(
                device("ESXi", h.address),
                format!("power state of {vm} (vmid {vmid}): {e}"),
            )
        })
    }

    async fn vm_nmi(&self, h: &Esxi, vm: &str) -> BackendResult<()> {
        let host = self.host(h);
        let dev = device("ESXi", h.address);
        let list = self.run(&host, h, "vmdumper -l").await?;
        if list.status != Some(0) {
            return Err(BackendError::refused(
                &dev,
                format!(
                    "vmdumper -l failed (exit status {}): {}; no NMI sent",
                    list.status.map_or("none".into(), |s| s.to_string()),
                    parse::excerpt(&list.text())
                ),
            ));
        }
        let wid = parse::world_id(&list.stdout, vm)
            .map_err(|e| BackendError::refused(&dev, e))?
            .ok_or_else(|| {
                BackendError::refused(
                    &dev,
                    format!("VM {vm} is not running (not listed by vmdumper -l); no NMI sent"),
                )
            })?;
        let out = self.run(&host, h, &format!("vmdumper {wid} nmi")).await?;
        expect(
            h,
            &format!("NMI to {vm} (world {wid})"),
            &out,
            "Sending NMI",
        )
    }

    async fn vm_reset(&self, h: &Esxi, vm: &str) -> BackendResult<()> {
        let (vmid, out) = self.vmsvc(h, vm, "power.reset").await?;
        expect(h, &format!("reset of {vm} (vmid {vmid})"), &out, "Reset VM")
    }

    /// One `vmdumper -l` per host lists the running VMs: a guest listed is on. A guest not
    /// listed is confirmed with `power.getstate` before it counts as off, so a host that
    /// lists nothing for a moment never makes the watch report a power-off that did not
    /// happen; when the listing itself fails, every guest is asked on its own.
    async fn vm_power_states(
        &self,
        h: &Esxi,
        vms: &[String],
    ) -> BackendResult<crate::backend::GuestStates> {
        let host = self.host(h);
        let list = self.run(&host, h, "vmdumper -l").await?;
        let listed = (list.status == Some(0) && parse::fault(&list.text()).is_none())
            .then_some(&list.stdout);
        // The confirmations run at once (the channel limit queues them).
        let answers = vms.iter().map(|vm| async move {
            let answer = match listed.map(|l| parse::world_id(l, vm)) {
                Some(Ok(Some(_))) => Ok(PowerState::On),
                _ => self.vm_power_state(h, vm).await,
            };
            (vm.clone(), answer)
        });
        Ok(futures_util::future::join_all(answers).await)
    }

    async fn shutdown(&self) {
        let hosts: Vec<Arc<Host>> = self.lock_hosts().values().cloned().collect();
        for host in hosts {
            let conn = {
                let mut slot = host.slot.lock().unwrap_or_else(|p| p.into_inner());
                let old = std::mem::replace(
                    &mut *slot,
                    Slot::Idle {
                        failures: 0,
                        retry: None,
                    },
                );
                match old {
                    Slot::Up { conn, .. } => Some(conn),
                    _ => None,
                }
            };
            if let Some(c) = conn {
                let _ = tokio::time::timeout(Duration::from_secs(1), c.disconnect()).await;
            }
        }
    }
}
