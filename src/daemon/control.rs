//! The control socket: a Unix socket (mode 0600, or 0660 with a group, from the moment it
//! appears) speaking the JSON-lines protocol of [`super::protocol`]. Peers are checked
//! with SO_PEERCRED (root, the daemon's user, `--socket-group`); at most
//! [`MAX_CONNECTIONS`] at once. Each connection has its own task, bounded line length, an
//! idle timeout and a write timeout, so a client that sends garbage, a huge line, or half
//! a request and then silence, or stops reading, gets an error or a hang-up and never
//! holds anyone else up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{
    self, FactsView, GetReply, HamonitorReply, IpduSettingReply, LiveCounts, MAX_LINE, MonitorRow,
    PduJobReply, Progress, RemoteDiagnostic, Request, ServerResetReply, SettingsView, StatusReply,
};
use super::supervisor::{Command, Command as SupervisorCommand, Origin, ReloadReply, Shared};
use crate::spec::model::Name;
use crate::spec::render::normalized_yaml;

/// How long a connection may stay silent in the middle of or between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may leave a reply or progress line unread (the socket's buffer
/// full) before it is dropped. A PDU job it started goes on to its end regardless.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; operators and ansible need a handful.
pub const MAX_CONNECTIONS: usize = 64;

/// Options of the control socket.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    pub test_hooks: bool,
    pub access: Access,
    /// The operator-command log: every action asked through the socket, by whom, and
    /// its result (`None`: not kept).
    pub operations: Option<Arc<crate::log::LogFile>>,
}

/// Binds the socket: refuses if another daemon answers on it, replaces a stale one,
/// creates the parent directory (0700) when missing. The socket appears at `path` with its
/// final mode and group already set: it is bound inside a fresh 0700 directory next to
/// `path`, given its mode there, and renamed into place, so there is no moment at which
/// it is reachable with the umask's mode.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; not replacing it",
                    path.display()
                ),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another haconn daemon is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let private = dir.join(format!(".haconn-bind.{}", std::process::id()));
    // A leftover of a crash of an earlier process with this pid.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let result = (|| {
        let staged = private.join("s");
        let listener = UnixListener::bind(&staged)?;
        let mode = if let Some(gid) = group {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
            0o660
        } else {
            0o600
        };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result
}

/// Who may use the socket: root, the daemon's own user, and members of `--socket-group`.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub own_uid: u32,
    pub group: Option<u32>,
}

impl Access {
    pub fn for_this_process(group: Option<u32>) -> Access {
        // SAFETY: geteuid cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        Access { own_uid, group }
    }

    /// Whether the peer of `stream` may talk to the daemon (SO_PEERCRED, and
    /// SO_PEERGROUPS for a group given as a supplementary one).
    fn allows(&self, stream: &UnixStream) -> bool {
        let Ok(cred) = stream.peer_cred() else {
            return false;
        };
        if cred.uid() == 0 || cred.uid() == self.own_uid {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        cred.gid() == group || peer_groups(stream).contains(&group)
    }
}

/// The supplementary groups of the peer when it connected (Linux 4.13+); empty if unknown.
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and getsockopt writes at most that.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && n > groups.len()
            && n <= 65_536
        {
            groups.resize(n, 0);
            continue;
        }
        return Vec::new();
    }
}

/// Accepts connections until the task is aborted: at most [`MAX_CONNECTIONS`] at once
/// (the next one is told `busy` and closed), each from a permitted peer only (others are
/// told `forbidden` and closed).
pub async fn serve(
    listener: UnixListener,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    opts: ControlOptions,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if !opts.access.allows(&stream) {
                    let cred = stream.peer_cred().ok();
                    tracing::warn!(
                        uid = cred.map(|c| c.uid()),
                        gid = cred.map(|c| c.gid()),
                        "control socket: connection refused (not root, the daemon's user or --socket-group)"
                    );
                    tokio::spawn(refuse(
                        stream,
                        protocol::error(
                            "forbidden",
                            "only root, the daemon's user and its --socket-group may use this socket",
                        ),
                    ));
                    continue;
                }
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tokio::spawn(refuse(
                        stream,
                        protocol::error(
                            "busy",
                            &format!("{MAX_CONNECTIONS} connections are open; try again"),
                        ),
                    ));
                    continue;
                };
                let (shared, commands, opts) = (shared.clone(), commands.clone(), opts.clone());
                tokio::spawn(async move {
                    connection(stream, shared, commands, opts).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Tells a refused peer why and closes. Its first request line is read (at most 64 KiB,
/// for at most a second) first, so that the client, still writing, is not cut off with a
/// broken pipe before it can read the reason; the whole is bounded to about 2 s.
async fn refuse(stream: UnixStream, reply: Value) {
    let (read, mut write) = stream.into_split();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        BufReader::new(read)
            .take(64 * 1024)
            .read_until(b'\n', &mut sink),
    )
    .await;
    let mut bytes = serde_json::to_vec(&reply).expect("json serializes");
    bytes.push(b'\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), write.write_all(&bytes)).await;
}

async fn connection(
    stream: UnixStream,
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    opts: ControlOptions,
) {
    let who = stream.peer_cred().ok().map_or_else(
        || "uid=? pid=?".to_string(),
        |c| {
            format!(
                "uid={} pid={}",
                c.uid(),
                c.pid().map_or_else(|| "?".to_string(), |p| p.to_string())
            )
        },
    );
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::time::timeout(
            IDLE_TIMEOUT,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await;
        let response = match read {
            Err(_) => {
                if !line.is_empty() {
                    let _ = send(
                        &mut write,
                        &protocol::error("timeout", "incomplete request; closing"),
                    )
                    .await;
                }
                return;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.len() > MAX_LINE => {
                let _ = send(
                    &mut write,
                    &protocol::error("too-long", "request line too long; closing"),
                )
                .await;
                return;
            }
            Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                // End of stream in the middle of a request.
                let _ = send(
                    &mut write,
                    &protocol::error("bad-request", "incomplete request"),
                )
                .await;
                return;
            }
            Ok(Ok(_)) => match protocol::parse(&line) {
                Ok(req) if req.operation().is_some() && opts.operations.is_some() => {
                    let what = req.operation().unwrap_or_default();
                    let log = opts.operations.clone();
                    let response = match answer(req, &shared, &commands, &opts, &mut write).await {
                        Some(v) => v,
                        None => {
                            if let Some(log) = &log {
                                let _ = log.write(&format!(
                                    "{who} {what} => the client went away; the action goes on"
                                ));
                            }
                            return;
                        }
                    };
                    if let Some(log) = &log {
                        let _ = log.write(&format!("{who} {what} => {}", result_text(&response)));
                    }
                    response
                }
                Ok(req) => match answer(req, &shared, &commands, &opts, &mut write).await {
                    Some(v) => v,
                    None => return,
                },
                Err(e) => e,
            },
        };
        if send(&mut write, &response).await.is_err() {
            return;
        }
    }
}

/// The result of an operation in the operator-command log's words.
fn result_text(v: &Value) -> String {
    if v["ok"] == true {
        let detail = ["summary", "message", "result", "action"]
            .iter()
            .find_map(|k| v[k].as_str().filter(|s| !s.is_empty()))
            .map(|s| s.lines().next().unwrap_or_default().to_string());
        let completed = v["completed"]
            .as_bool()
            .map(|c| if c { "completed" } else { "failed" }.to_string());
        match (completed, detail) {
            (Some(c), _) => format!("ok, {c}"),
            (None, Some(d)) => format!("ok: {d}"),
            (None, None) => "ok".into(),
        }
    } else {
        format!(
            "error {}: {}",
            v["error"]["code"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or_default()
        )
    }
}

/// One parsed request's answer; `None` when the client went away during a streamed
/// operation (which goes on).
async fn answer(
    req: Request,
    shared: &Arc<Shared>,
    commands: &mpsc::Sender<Command>,
    opts: &ControlOptions,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Option<Value> {
    match req {
        Request::ServerIpdu {
            server,
            pdu,
            mode,
            off_time,
            wait_time,
            force,
            ..
        } => {
            let req = PduJobArgs {
                server,
                mserver: false,
                pdu,
                mode,
                off_time,
                wait_time,
                force,
            };
            pdu_job(req, shared, write).await
        }
        Request::ServerReset {
            system, subsystem, ..
        } => server_reset(shared, system, subsystem, write).await,
        Request::MserverIpdu {
            role,
            mode,
            off_time,
            wait_time,
            ..
        } => {
            if role == "active" && shared.pair.is_some() {
                // In a pair: a handover first, then the new active tests.
                act_ipdusd(shared, mode, off_time, wait_time, write).await
            } else {
                match crate::pipeline::pdutest::same_refuses(mode, None, wait_time).map_or_else(
                    || own_pdu_test(shared, &role, mode),
                    |why| Err(protocol::error("bad-request", &why)),
                ) {
                    Ok(server) => {
                        let req = PduJobArgs {
                            server,
                            mserver: true,
                            pdu: None,
                            mode: Some(mode),
                            off_time,
                            wait_time,
                            force: false,
                        };
                        pdu_job(req, shared, write).await
                    }
                    Err(e) => Some(e),
                }
            }
        }
        req => Some(handle(req, shared, commands, opts).await),
    }
}

/// Writes one line; a client that leaves it unread for [`WRITE_TIMEOUT`] is an error.
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, v: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).expect("json serializes");
    bytes.push(b'\n');
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the client does not read its replies",
        )),
    }
}

/// What `status` answers (and the metrics read at each scrape).
pub async fn status_reply(shared: &Shared) -> Result<StatusReply, String> {
    let live = shared.pipeline.live();
    let hardware = shared.pipeline.health().await.map_err(|e| e.to_string())?;
    let mut hardware: protocol::Hardware = serde_json::from_value(hardware)
        .map_err(|e| format!("the hardware view does not fit the protocol: {e}"))?;
    let status = shared.status();
    let pair = shared.pair.as_ref().map(|p| p.status());
    match &pair {
        Some(p) => hardware.assign_pair(p),
        None => hardware.assign_roles(&status.local_management_server),
    }
    Ok(StatusReply {
        pair,
        hardware,
        status,
        reset_path: shared.pipeline.counters().into(),
        live: LiveCounts {
            management_servers: live.management_servers.len(),
            servers: live.servers.len(),
            systems: live.systems(),
            pdus: live.pdus.len(),
        },
    })
}

async fn handle(
    req: Request,
    shared: &Shared,
    commands: &mpsc::Sender<Command>,
    opts: &ControlOptions,
) -> Value {
    match req {
        Request::Status { .. } => match status_reply(shared).await {
            Ok(s) => protocol::ok(&s),
            Err(e) => protocol::error("pipeline", &e),
        },
        Request::Get { .. } => {
            let facts = match shared.pipeline.facts().await {
                Ok(f) => f,
                Err(e) => return protocol::error("pipeline", &e.to_string()),
            };
            let live = shared.pipeline.live();
            protocol::ok(&GetReply {
                spec: normalized_yaml(&live),
                settings: live.to_value(&crate::spec::model::Masked),
                view: SettingsView::of(&live),
                facts: FactsView {
                    monitors_active: facts.monitors_active.iter().map(Name::to_string).collect(),
                    resetting: facts.resetting.iter().map(Name::to_string).collect(),
                },
            })
        }
        Request::Plan { spec, .. } => reload(commands, spec, true).await,
        Request::Apply {
            spec,
            dry_run,
            file,
            force,
            ..
        } => {
            if !dry_run
                && !force
                && let Some(why) = not_the_watched_file(shared, &spec, file.as_deref()).await
            {
                return protocol::error("refused", &why);
            }
            reload(commands, spec, dry_run).await
        }
        Request::Simulate { simulation, .. } => {
            if !opts.test_hooks {
                return protocol::error("forbidden", "simulation needs the daemon's --test-hooks");
            }
            match shared.pipeline.simulate(simulation).await {
                Ok(()) => protocol::ok(&protocol::Empty {}),
                Err(e) => protocol::error("pipeline", &e.to_string()),
            }
        }
        Request::Hamonitor { name, .. } => hamonitor(shared, name.as_deref()).await,
        Request::Alert {
            address,
            server,
            kind,
            date,
            time,
            alert_id,
            ..
        } => alert_command(shared, address, server, kind, [date, time, alert_id]).await,
        Request::Alerts {
            since_ms, server, ..
        } => protocol::ok(&protocol::AlertsReply {
            listening: shared
                .pipeline
                .live()
                .alerts
                .as_ref()
                .map(|a| a.listen.to_string()),
            counts: shared.alerts.counts(),
            alerts: shared.alerts.recent(since_ms, server.as_deref()),
        }),
        Request::Fence { action, target, .. } => fence(shared, action, target).await,
        Request::ClearWarning { server, .. } => {
            if !shared.pipeline.live().servers.contains_key(server.as_str()) {
                return protocol::error(
                    "not-found",
                    &format!("no server named {server} in the live spec"),
                );
            }
            match shared.pipeline.clear_warning(server.clone()).await {
                Ok(cleared) => {
                    if cleared {
                        let _ = shared.events.write(&format!(
                            "failure warning of {server} cleared by an operator"
                        ));
                    }
                    protocol::ok(&protocol::ClearWarningReply { server, cleared })
                }
                Err(e) => protocol::error("pipeline", &e.to_string()),
            }
        }
        // Stream progress: handled by the connection itself.
        Request::ServerReset { .. } => protocol::error("bad-request", "not here"),
        Request::ServerIpdu { .. } => protocol::error("bad-request", "not here"),
        Request::IpduSetting { .. } => protocol::ok(&IpduSettingReply::of(&shared.pipeline.live())),
        Request::Version { .. } => protocol::ok(&protocol::VersionReply::this_build()),
        Request::PeerDump { .. } => match &shared.pair {
            None => protocol::error(
                "no-peer",
                "this management server has no peer (mode: single)",
            ),
            Some(pair) => match pair.peer_dump(PEER_DUMP_TIMEOUT).await {
                Ok(bytes) => {
                    use base64ct::Encoding;
                    protocol::ok(&protocol::PeerDumpReply {
                        peer: pair.status().peer,
                        archive: base64ct::Base64::encode_string(&bytes),
                    })
                }
                Err(e) => protocol::error("peer", &e),
            },
        },
        Request::MserverIpdu { .. } => protocol::error("bad-request", "not here"),
        Request::Pair { action, .. } => pair_command(shared, commands, action).await,
    }
}

/// A fence agent's action (Pacemaker through `fence_haconn`).
async fn fence(shared: &Shared, action: protocol::FenceAction, target: Option<String>) -> Value {
    use protocol::{FenceAction, FenceReply};
    let reply = |result: &str, message: String, systems: Vec<String>| {
        protocol::ok(&FenceReply {
            action,
            target: target.clone(),
            result: result.into(),
            message,
            systems,
        })
    };
    let standby = shared.pipeline.standing_by();
    let live = shared.pipeline.live();
    match action {
        FenceAction::Monitor => {
            let role = shared
                .pair
                .as_ref()
                .map_or_else(|| "active".to_string(), |p| p.status().role);
            return reply(
                "done",
                format!("haconn daemon {}: {role}", shared.local),
                Vec::new(),
            );
        }
        FenceAction::List => {
            let systems = live
                .servers
                .values()
                .flat_map(|s| match &s.esxi {
                    None => vec![s.name.to_string()],
                    Some(e) => e.guests.iter().map(|g| g.to_string()).collect(),
                })
                .collect();
            return reply("done", String::new(), systems);
        }
        _ => {}
    }
    let Some(name) = target.clone() else {
        return protocol::error(
            "bad-request",
            "this action needs a target (plug, port or nodename)",
        );
    };
    let Some(system) = live.system(&name) else {
        return protocol::error(
            "not-found",
            &format!("no system named {name} in the live spec"),
        );
    };
    if standby && action != FenceAction::Status {
        return protocol::error(
            "standby",
            "this management server is standby: fence through the active one",
        );
    }
    let event = |line: String| {
        let _ = shared.events.write(&line);
    };
    match action {
        FenceAction::Status => match shared.pipeline.power_now(name.clone()).await {
            Ok(Ok(p)) => {
                let word = match p {
                    crate::backend::PowerState::On => "on",
                    crate::backend::PowerState::Off => "off",
                };
                reply(word, format!("{name} is powered {word}"), Vec::new())
            }
            Ok(Err(why)) => protocol::error("failed", &format!("{name}: power unknown: {why}")),
            Err(e) => protocol::error("pipeline", &e.to_string()),
        },
        FenceAction::Reboot => {
            event(format!("fence agent: reboot of {name} asked"));
            match shared.pipeline.fence_reboot(name.clone()).await {
                Ok(Ok(state)) => {
                    let how = match state {
                        crate::resetpath::codec::AttentionState::Dump => {
                            "DUMP (its stop notice came after the NMI)"
                        }
                        crate::resetpath::codec::AttentionState::Reboot => {
                            "REBOOT (hard reset acknowledged, or every outlet cut)"
                        }
                        crate::resetpath::codec::AttentionState::Poff => "POFF (read powered off)",
                    };
                    event(format!("fence agent: {name} reset: {how}"));
                    reply("done", format!("{name} reset: {how}"), Vec::new())
                }
                Ok(Err(why)) => {
                    event(format!("fence agent: reset of {name} failed: {why}"));
                    protocol::error("failed", &format!("reset of {name} failed: {why}"))
                }
                Err(e) => protocol::error("pipeline", &e.to_string()),
            }
        }
        FenceAction::Off | FenceAction::On => {
            let on = action == FenceAction::On;
            let crate::spec::model::SystemRef::Physical(server) = system else {
                return protocol::error(
                    "failed",
                    &format!(
                        "{name} is a VMware guest: power off/on of guests is not supported yet; use reboot"
                    ),
                );
            };
            let word = if on { "on" } else { "off" };
            event(format!("fence agent: power {word} of {name} asked"));
            match shared
                .pipeline
                .fence_power(server.name.to_string(), on)
                .await
            {
                Ok(Ok(how)) => {
                    event(format!("fence agent: {name} powered {word}: {how}"));
                    reply(word, how, Vec::new())
                }
                Ok(Err(why)) => {
                    event(format!("fence agent: power {word} of {name} failed: {why}"));
                    protocol::error("failed", &format!("power {word} of {name} failed: {why}"))
                }
                Err(e) => protocol::error("pipeline", &e.to_string()),
            }
        }
        FenceAction::Monitor | FenceAction::List => {
            protocol::error("bad-request", "monitor and list take no target")
        }
    }
}

/// `haconn alert`: the alert of a management tool, through the same path as a trap.
async fn alert_command(
    shared: &Shared,
    address: Option<std::net::IpAddr>,
    server: Option<String>,
    kind: crate::spec::model::AlertKind,
    [date, time, alert_id]: [Option<String>; 3],
) -> Value {
    let live = shared.pipeline.live();
    let found = match (&server, address) {
        (Some(name), _) => match live.servers.get(name.as_str()) {
            Some(s) => Some(s.name.to_string()),
            None => {
                return protocol::error(
                    "not-found",
                    &format!("no server named {name} in the live spec"),
                );
            }
        },
        (None, Some(ip)) => super::alerts::server_at(&live, ip),
        (None, None) => {
            return protocol::error("bad-request", "an alert names an address or a server");
        }
    };
    if shared.pipeline.standing_by() {
        return protocol::error(
            "standby",
            "this management server is standby: send the alert to the active one",
        );
    }
    let mut detail = format!(
        "management tool alert {}",
        alert_id.as_deref().unwrap_or("----")
    );
    if let (Some(d), Some(t)) = (&date, &time) {
        detail.push_str(&format!(" at {d} {t}"));
    }
    let outcome = shared
        .alerts
        .handle(
            &shared.pipeline,
            "command".into(),
            address.map(|a| a.to_string()),
            found.clone(),
            Some(kind),
            detail,
        )
        .await;
    protocol::ok(&protocol::AlertReply {
        server: found,
        action: super::alerts::action_text(&outcome),
        outcome,
    })
}

/// How long the peer may take to pack and send its support archive.
pub const PEER_DUMP_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `act restart` waits for the standby to say it is active.
const HANDOVER_WAIT: Duration = Duration::from_secs(10);

/// Sends the supervisor `cmd` a moment from now, so that the reply saying so is written
/// before the daemon stops.
fn soon(commands: &mpsc::Sender<SupervisorCommand>, cmd: SupervisorCommand) {
    let commands = commands.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = commands.send(cmd).await;
    });
}

async fn pair_command(
    shared: &Shared,
    commands: &mpsc::Sender<SupervisorCommand>,
    action: protocol::PairAction,
) -> Value {
    use crate::pair::task::Command;
    let Some(pair) = &shared.pair else {
        return protocol::error(
            "refused",
            "this daemon runs a single management server (mode: single): there is no pair",
        );
    };
    let command = match action {
        protocol::PairAction::Handover => Command::Handover,
        protocol::PairAction::ConfirmPeerDown => Command::ConfirmPeerDown,
        protocol::PairAction::Copy => {
            let spec = crate::spec::render::state_yaml(&shared.pipeline.live());
            return match pair.push_spec(spec).await {
                Ok(ack) => protocol::ok(&protocol::PairReply {
                    message: format!("{}: {}", pair.status().peer, ack.message),
                    pair: pair.status(),
                }),
                Err(why) => protocol::error("refused", &format!("the spec was not copied: {why}")),
            };
        }
        protocol::PairAction::StandbyRestart | protocol::PairAction::StandbyShutdown => {
            let restart = action == protocol::PairAction::StandbyRestart;
            let verb = if restart { "restarts" } else { "stops" };
            let s = pair.status();
            if s.role != "active" {
                soon(
                    commands,
                    if restart {
                        SupervisorCommand::Restart
                    } else {
                        SupervisorCommand::Stop
                    },
                );
                return protocol::ok(&protocol::PairReply {
                    message: format!("{} ({}) {verb}", s.me, s.role),
                    pair: s,
                });
            }
            return match pair.peer_lifecycle(restart).await {
                Ok(_) => protocol::ok(&protocol::PairReply {
                    message: format!("{} (standby) {verb}", s.peer),
                    pair: pair.status(),
                }),
                Err(why) => protocol::error("refused", &format!("{}: {why}", s.peer)),
            };
        }
        protocol::PairAction::Shutdown => {
            let s = pair.status();
            if s.role != "active" {
                return protocol::error(
                    "refused",
                    &format!(
                        "{} is {}: run `act shutdown` on the active ({})",
                        s.me, s.role, s.peer
                    ),
                );
            }
            let peer = match pair.peer_lifecycle(false).await {
                Ok(_) => format!("{} stops", s.peer),
                Err(why) => format!("{} not stopped: {why}", s.peer),
            };
            shared
                .handover_on_stop
                .store(false, std::sync::atomic::Ordering::SeqCst);
            soon(commands, SupervisorCommand::Stop);
            return protocol::ok(&protocol::PairReply {
                message: format!("{peer}; {} stops", s.me),
                pair: pair.status(),
            });
        }
    };
    let reply = handover_or(pair, command).await;
    if action == protocol::PairAction::Handover && reply["ok"] == true {
        // The second half of `act restart`: this server starts again, as the standby.
        soon(commands, SupervisorCommand::Restart);
    }
    reply
}

/// Runs a pair command; a handover waits until the peer says it is active.
pub async fn handover_or(
    pair: &crate::pair::task::PairHandle,
    command: crate::pair::task::Command,
) -> Value {
    use crate::pair::task::Command;
    let mut message = match pair.command(command).await {
        Ok(m) => m,
        Err(why) => return protocol::error("refused", &why),
    };
    if command == Command::Handover {
        let done = pair
            .wait_for(HANDOVER_WAIT, |s| {
                s.role == "standby" && s.peer_role == "active" && s.peer_link == "OK"
            })
            .await;
        message = if done {
            format!("{} took over; {message}", pair.status().peer)
        } else {
            format!(
                "{} has not taken over within {} s; this server stays out of service and will \
                 fence it if it goes silent",
                pair.status().peer,
                HANDOVER_WAIT.as_secs()
            )
        };
        if !done {
            return protocol::error("handover", &message);
        }
    }
    protocol::ok(&protocol::PairReply {
        message,
        pair: pair.status(),
    })
}

/// Which management server a PDU test of `role` may run on, here and now. In a pair the
/// active tests the standby's outlets (`sby ipdusd`; cutting them all at once switches the
/// standby off and on again); `act ipdusd` is a handover first ([`act_ipdusd`]). A single management
/// server may test its own
/// outlets only one at a time: it stays powered through the other supply. Cutting them
/// all at once would switch it off with nobody left to switch it on.
fn own_pdu_test(
    shared: &Shared,
    role: &str,
    mode: crate::pipeline::pdutest::Mode,
) -> Result<String, Value> {
    use crate::spec::model::Mode;
    let live = shared.pipeline.live();
    let refuse = |why: &str| Err(protocol::error("refused", why));
    match (live.mode, role) {
        (Mode::Pair, role) => {
            let Some(pair) = &shared.pair else {
                return refuse("no pair task is running");
            };
            let s = pair.status();
            if s.role != "active" {
                return refuse(&format!(
                    "{} is {}: PDU-cut tests of the management servers run on the active ({})",
                    s.me, s.role, s.peer
                ));
            }
            if role == "active" {
                // `act ipdusd` in a pair goes through `act_ipdusd` (a handover first).
                return refuse("`act ipdusd` in a pair hands over first");
            }
            let Some(peer) = live.management_servers.get(s.peer.as_str()) else {
                return refuse("the standby is not in the live spec");
            };
            if peer.ipdu.as_ref().is_none_or(|i| i.outlets.is_empty()) {
                return refuse(&format!("{} has no PDU outlets in the spec", peer.name));
            }
            Ok(peer.name.to_string())
        }
        (Mode::Single, "active") => {
            let Some(m) = live.management_servers.values().next() else {
                return refuse("no management server in the live spec");
            };
            let outlets = m.ipdu.as_ref().map_or(0, |i| i.outlets.len());
            if mode == crate::pipeline::pdutest::Mode::Same {
                refuse(
                    "the active management server cannot cut all its own outlets at once (it \
                     would stay off with nobody to switch it on): use --mode serial",
                )
            } else if outlets < 2 {
                refuse(&format!(
                    "{} has {outlets} PDU outlet(s): cutting its only supply would switch it \
                     off; a serial test needs two",
                    m.name
                ))
            } else {
                Ok(m.name.to_string())
            }
        }
        (Mode::Single, _) => refuse("there is no standby management server (mode: single)"),
    }
}

/// How long `act ipdusd` waits for the new active's test of this server's outlets.
const ACT_IPDUSD_WAIT: Duration = Duration::from_secs(600);

/// A progress line of a streamed operation; `None` when the client is gone.
async fn progress_line(write: &mut tokio::net::unix::OwnedWriteHalf, line: String) -> Option<()> {
    let mut v = serde_json::to_value(Progress { progress: line }).expect("progress serializes");
    v["v"] = protocol::VERSION.into();
    send(write, &v).await.ok()
}

/// `act ipdusd` in a pair, the seed's way: this (active) server hands over to the standby
/// first, then the new active runs the PDU-cut test of this server's outlets (a server
/// cannot cut its own power and switch it back on). `None`: the client went away (the
/// test goes on).
async fn act_ipdusd(
    shared: &Shared,
    mode: crate::pipeline::pdutest::Mode,
    off_time: Option<u64>,
    wait_time: Option<u64>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Option<Value> {
    use crate::pair::task::Command;
    if let Some(why) = crate::pipeline::pdutest::same_refuses(mode, None, wait_time) {
        return Some(protocol::error("bad-request", &why));
    }
    let pair = shared.pair.as_ref()?;
    let s = pair.status();
    if s.role != "active" {
        return Some(protocol::error(
            "refused",
            &format!(
                "{} is {}: run `act ipdusd` on the active ({})",
                s.me, s.role, s.peer
            ),
        ));
    }
    let live = shared.pipeline.live();
    if live
        .management_servers
        .get(s.me.as_str())
        .and_then(|m| m.ipdu.as_ref())
        .is_none_or(|i| i.outlets.is_empty())
    {
        return Some(protocol::error(
            "refused",
            &format!("{} has no PDU outlets in the spec", s.me),
        ));
    }
    progress_line(
        write,
        format!(
            "handing over to {} first: it runs the test of {}'s outlets",
            s.peer, s.me
        ),
    )
    .await?;
    let handed = handover_or(pair, Command::Handover).await;
    if handed["ok"] != true {
        return Some(handed);
    }
    progress_line(
        write,
        format!("{} took over; it is testing {}'s outlets", s.peer, s.me),
    )
    .await?;
    Some(
        match pair
            .peer_pdu_test(mode, off_time, wait_time, ACT_IPDUSD_WAIT)
            .await
        {
            Ok(ack) => protocol::ok(&PduJobReply {
                server: s.me,
                summary: ack.message,
            }),
            Err(why) => protocol::error("failed", &format!("{}: {why}", s.peer)),
        },
    )
}

struct PduJobArgs {
    server: String,
    mserver: bool,
    pdu: Option<std::net::IpAddr>,
    mode: Option<crate::pipeline::pdutest::Mode>,
    off_time: Option<u64>,
    wait_time: Option<u64>,
    force: bool,
}

/// Runs a PDU job, writing its progress lines as they come; returns the final response,
/// or `None` when the client stopped reading its progress and was dropped. The job goes
/// on to its end if the operator goes away: outlets are never left off because a
/// terminal closed or stalled.
async fn pdu_job(
    a: PduJobArgs,
    shared: &Shared,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Option<Value> {
    Some(match pdu_job_run(a, shared, write).await {
        Ok(v) | Err(Some(v)) => v,
        Err(None) => return None,
    })
}

/// `Err(Some)` is an early response; `Err(None)` a dropped client.
async fn pdu_job_run(
    a: PduJobArgs,
    shared: &Shared,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Result<Value, Option<Value>> {
    use crate::pipeline::pdutest::{DEFAULT_SECONDS, SECONDS};
    use crate::pipeline::{PduJobEvent, PduRequest};
    let seconds = |v: Option<u64>, what: &str| match v.unwrap_or(DEFAULT_SECONDS) {
        s if SECONDS.contains(&s) => Ok(Duration::from_secs(s)),
        s => Err(protocol::error(
            "bad-request",
            &format!(
                "{what} must be {}–{} seconds (got {s})",
                SECONDS.start(),
                SECONDS.end()
            ),
        )),
    };
    let test = match a.mode {
        None => None,
        Some(mode) => {
            if let Some(why) = crate::pipeline::pdutest::same_refuses(mode, a.pdu, a.wait_time) {
                return Err(Some(protocol::error("bad-request", &why)));
            }
            let off = seconds(a.off_time, "offtime").map_err(Some)?;
            let wait = seconds(a.wait_time, "wtime").map_err(Some)?;
            Some((mode, off, wait))
        }
    };
    let request = PduRequest {
        server: a.server.clone(),
        mserver: a.mserver,
        pdu: a.pdu,
        test,
        force: a.force,
    };
    let mut rx = match shared.pipeline.pdu_job(request).await {
        Ok(Ok(rx)) => rx,
        Ok(Err(why)) => return Err(Some(protocol::error("refused", &why))),
        Err(e) => return Err(Some(protocol::error("pipeline", &e.to_string()))),
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            PduJobEvent::Line(line) => {
                let mut v =
                    serde_json::to_value(Progress { progress: line }).expect("progress serializes");
                v["v"] = protocol::VERSION.into();
                if let Err(e) = send(write, &v).await {
                    // Gone or not reading: drop the client; the job (on the pipeline
                    // thread, its progress sent nowhere from now on) goes on.
                    tracing::warn!(server = %a.server, error = %e, "PDU job client dropped; the job goes on");
                    return Err(None);
                }
            }
            PduJobEvent::Done(Ok(summary)) => {
                return Ok(protocol::ok(&PduJobReply {
                    server: a.server,
                    summary,
                }));
            }
            PduJobEvent::Done(Err(why)) => return Ok(protocol::error("failed", &why)),
        }
    }
    Ok(protocol::error(
        "pipeline",
        "the PDU job ended without a result",
    ))
}

/// Every system of the live spec (a physical server, or a guest of an ESXi host) joined
/// with the monitor registered for it; monitors of systems a reload removed come last.
async fn hamonitor(shared: &Shared, name: Option<&str>) -> Value {
    let monitors = match shared.pipeline.monitors().await {
        Ok(m) => m,
        Err(e) => return protocol::error("pipeline", &e.to_string()),
    };
    let warnings = shared.pipeline.warnings().await.unwrap_or_default();
    let live = shared.pipeline.live();
    let mut systems: Vec<(String, Option<String>, char)> = Vec::new();
    for server in live.servers.values() {
        match &server.esxi {
            None => systems.push((server.name.to_string(), Some(server.name.to_string()), 'P')),
            Some(esxi) => systems.extend(
                esxi.guests
                    .iter()
                    .map(|g| (g.to_string(), Some(server.name.to_string()), 'V')),
            ),
        }
    }
    for m in &monitors {
        if !systems.iter().any(|(s, _, _)| *s == m.system) {
            systems.push((m.system.clone(), None, '-'));
        }
    }
    let rows: Vec<MonitorRow> = systems
        .into_iter()
        .filter(|(system, server, _)| {
            name.is_none_or(|n| system == n || server.as_deref() == Some(n))
        })
        .map(|(system, server, kind)| {
            let m = monitors.iter().find(|m| m.system == system);
            let warning = server.as_ref().and_then(|s| warnings.get(s).cloned());
            // A failure warning shows where the system is otherwise normal.
            let state = match m.map_or("----", |m| m.state) {
                "normal" if warning.is_some() => "warning",
                s => s,
            };
            MonitorRow {
                state: state.to_string(),
                detail: m.map(|m| m.detail.to_string()),
                reason: m.and_then(|m| m.unresettable.clone()),
                warning,
                system,
                server,
                kind: kind.to_string(),
                subsystem: m.map(|m| m.subsystem),
                ip: m.map(|m| m.ip),
                port: m.map(|m| m.port),
                pair: m.and_then(|m| m.pair),
                last_check_ms_ago: m.map(|m| m.last_check_ms_ago),
            }
        })
        .collect();
    protocol::ok(&HamonitorReply { monitors: rows })
}

/// A test reset through the pipeline, answered when it ended (progress lines before);
/// `None` when the client stopped reading and was dropped (the test goes on). A system
/// whose monitor registered another subsystem number is refused here, so a typo cannot
/// reset it under a wrong number.
async fn server_reset(
    shared: &Shared,
    system: String,
    subsystem: u32,
    write: &mut tokio::net::unix::OwnedWriteHalf,
) -> Option<Value> {
    use crate::pipeline::TestEvent;
    if let Some(why) = known_unreachable(shared, &system).await {
        return Some(protocol::error("refused", &why));
    }
    match shared.pipeline.monitors().await {
        Ok(monitors) => {
            if let Some(m) = monitors.iter().find(|m| m.system == system)
                && m.subsystem != subsystem
            {
                return Some(protocol::error(
                    "refused",
                    &format!(
                        "{system} is registered as subsystem {}, not {subsystem}",
                        m.subsystem
                    ),
                ));
            }
        }
        Err(e) => return Some(protocol::error("pipeline", &e.to_string())),
    }
    let mut rx = match shared.pipeline.test_reset(system.clone(), subsystem).await {
        Ok(Ok(rx)) => rx,
        Ok(Err(why)) => return Some(protocol::error("refused", &why)),
        Err(e) => return Some(protocol::error("pipeline", &e.to_string())),
    };
    while let Some(ev) = rx.recv().await {
        match ev {
            TestEvent::Line(line) => {
                let mut v =
                    serde_json::to_value(Progress { progress: line }).expect("progress serializes");
                v["v"] = protocol::VERSION.into();
                if let Err(e) = send(write, &v).await {
                    tracing::warn!(%system, error = %e, "test reset client dropped; the test goes on");
                    return None;
                }
            }
            TestEvent::Done(outcome) => {
                return Some(protocol::ok(&ServerResetReply {
                    system,
                    subsystem,
                    outcome: outcome.code().to_string(),
                    message: outcome.message(),
                    stop_notice_from: match outcome {
                        crate::pipeline::core::TestOutcome::Stopped { from } => from,
                        _ => None,
                    },
                }));
            }
        }
    }
    Some(protocol::error(
        "pipeline",
        "the test reset ended without an outcome",
    ))
}

/// Why applying `spec` would be undone by the file watcher: the daemon watches its spec
/// file and `spec` is not what that file holds. `None` when it is, or without a watcher.
async fn not_the_watched_file(shared: &Shared, spec: &str, file: Option<&str>) -> Option<String> {
    if !shared.status().watching {
        return None;
    }
    let watched = shared.spec_path.display();
    let file = file.unwrap_or("this spec");
    match tokio::fs::read(&shared.spec_path).await {
        Ok(bytes) if bytes == spec.as_bytes() => None,
        Ok(_) => Some(format!(
            "{file} is not the spec file this daemon follows ({watched}): its file watcher \
             would undo this reload at the next change of {watched}. Put the spec in \
             {watched} (the watcher applies it), or apply with --force to run on {file} until \
             {watched} changes (a daemon started with --no-watch takes any file)"
        )),
        Err(e) => Some(format!(
            "the spec file this daemon follows ({watched}) cannot be read ({e}); applying \
             {file} would be undone when it is back. Fix {watched}, or apply with --force"
        )),
    }
}

/// Why a test reset of `system` cannot work now: the watch found the link it needs (its
/// BMC, or its ESXi host for a guest) NG. A test reset is an NMI only, never a PDU cut.
async fn known_unreachable(shared: &Shared, system: &str) -> Option<String> {
    let hardware: protocol::Hardware =
        serde_json::from_value(shared.pipeline.health().await.ok()?).ok()?;
    let live = shared.pipeline.live();
    let (server, guest) = live.servers.values().find_map(|s| {
        if s.name.as_str() == system && s.esxi.is_none() {
            Some((s.name.to_string(), false))
        } else if s
            .esxi
            .as_ref()
            .is_some_and(|e| e.guests.iter().any(|g| g.as_str() == system))
        {
            Some((s.name.to_string(), true))
        } else {
            None
        }
    })?;
    let row = hardware.servers.iter().find(|r| r.name == server)?;
    let (what, link) = if guest {
        ("ESXi host", &row.vmware)
    } else {
        ("BMC", &row.bmc)
    };
    (link.link == "NG").then(|| {
        format!(
            "the {what} of {system} is NG ({}): a test reset (NMI) cannot reach it",
            link.reason.as_deref().unwrap_or("no reason known")
        )
    })
}

async fn reload(commands: &mpsc::Sender<Command>, spec: String, dry_run: bool) -> Value {
    let (reply, rx) = oneshot::channel();
    let cmd = Command::Reload {
        spec: spec.into_bytes(),
        origin: Origin::Apply,
        dry_run,
        reply: Some(reply),
    };
    if commands.send(cmd).await.is_err() {
        return protocol::error("stopping", "the daemon is stopping");
    }
    match rx.await {
        Err(_) => protocol::error("stopping", "the daemon is stopping"),
        Ok(ReloadReply::Invalid(diags)) => protocol::ok(&protocol::ReloadReply {
            valid: false,
            diagnostics: diags.iter().map(RemoteDiagnostic::of).collect(),
            ..Default::default()
        }),
        Ok(ReloadReply::Planned {
            diff,
            plan,
            summary,
            changes,
            completed,
            plan_changes,
        }) => protocol::ok(&protocol::ReloadReply {
            valid: true,
            dry_run: true,
            diff: Some(diff),
            plan,
            summary,
            changes,
            completed,
            plan_changes,
            ..Default::default()
        }),
        Ok(ReloadReply::Applied {
            plan,
            summary,
            completed,
            changes,
        }) => protocol::ok(&protocol::ReloadReply {
            valid: true,
            plan,
            summary,
            changes,
            completed,
            ..Default::default()
        }),
        Ok(ReloadReply::Failed(why)) => protocol::error("failed", &why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Someone watching the socket path never sees the socket with any mode but its
    /// final one: the umask's (0755 under the usual 022) between bind and chmod would let
    /// any local user connect in that window.
    #[tokio::test]
    async fn the_socket_appears_with_its_final_mode() {
        use std::os::unix::fs::PermissionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (path, done) = (path.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        seen.insert(m.permissions().mode() & 0o7777);
                    }
                }
                seen
            })
        };
        for _ in 0..300 {
            let listener = bind(&path, None).unwrap();
            drop(listener);
            std::fs::remove_file(&path).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            vec![0o600],
            "modes seen at the socket path"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "the private bind directory is left behind"
        );
    }
}
