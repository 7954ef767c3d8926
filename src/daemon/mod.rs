//! The daemon: start-up, the main runtime's tasks, and shutdown.
//!
//! Threads: the main tokio runtime (supervisor, control socket, file watcher, signals)
//! and the pipeline thread with its own runtime (see [`crate::pipeline`]). They share
//! only channels and the live-spec `ArcSwap`; no lock is held across an await.

pub mod alerts;
pub mod client;
pub mod control;
pub mod metrics;
pub mod protocol;
pub mod state;
pub mod supervisor;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use crate::backend::Backends;
use crate::log::{LogFile, LogSink};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::spec::model::Spec;
use crate::spec::{CheckOptions, check_bytes};
use crate::watch::{self, WatchConfig};
use state::StateDir;
use supervisor::{Command, Shared, Status};

/// Everything `haconn daemon` is told on its command line.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub spec: PathBuf,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub control_socket: PathBuf,
    pub socket_group: Option<u32>,
    /// Where every `{file:}` secret reference must lie, when set.
    pub secrets_dir: Option<PathBuf>,
    pub mserver: Option<String>,
    pub watch: bool,
    pub debounce: Duration,
    pub poll: Duration,
    pub log_max_bytes: u64,
    pub log_generations: u32,
    pub test_hooks: bool,
    /// Where the reset path listens; default: the spec's `resetPath` address and port.
    pub reset_path_bind: Option<std::net::SocketAddr>,
    /// Where fence_kdump_send messages are received; `None` turns that listener off.
    pub fence_kdump_bind: FenceKdumpBind,
    /// Use the in-process hardware simulator instead of real backends (labs only).
    pub simulate_hardware: bool,
    /// How often the hardware watch polls every device; `None` turns it off.
    pub hardware_poll: Option<Duration>,
}

/// The fence_kdump listener: on the reset-path address at the usual port, at an explicit
/// address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceKdumpBind {
    Default,
    At(std::net::SocketAddr),
    Off,
}

/// The port `fence_kdump_send` sends to by default.
pub const FENCE_KDUMP_PORT: u16 = 7410;

/// Where the daemon's first live configuration came from.
struct Start {
    spec: Spec,
    file_bytes: Option<Vec<u8>>,
    from_state: Option<String>,
}

fn start_spec(opts: &DaemonOptions, state: &StateDir, events: &LogFile) -> anyhow::Result<Start> {
    let check = CheckOptions {
        resolve_secrets: true,
        ..CheckOptions::default()
    };
    let file_problem = match std::fs::read(&opts.spec) {
        Ok(bytes) => {
            let checked = check_bytes(&bytes, check);
            match checked.spec {
                Some(spec) => {
                    return Ok(Start {
                        spec,
                        file_bytes: Some(bytes),
                        from_state: None,
                    });
                }
                None => {
                    let file = opts.spec.display().to_string();
                    let lines: Vec<String> = checked
                        .diagnostics
                        .iter()
                        .map(|d| d.render(&file))
                        .collect();
                    format!("the spec file is invalid:\n{}", lines.join("\n"))
                }
            }
        }
        Err(e) => format!("the spec file {} cannot be read: {e}", opts.spec.display()),
    };
    let saved = state
        .load()
        .with_context(|| format!("reading {}", state.applied_path().display()))?;
    let Some(bytes) = saved else {
        bail!(
            "{file_problem}\nand there is no last applied spec in {}; refusing to start",
            opts.state_dir.display()
        );
    };
    let checked = check_bytes(&bytes, check);
    let Some(spec) = checked.spec else {
        bail!(
            "{file_problem}\nand the last applied spec {} is not valid either; refusing to start",
            state.applied_path().display()
        );
    };
    let msg = format!(
        "STARTING FROM THE LAST APPLIED SPEC ({}) because {file_problem}",
        state.applied_path().display()
    );
    tracing::error!("{msg}");
    let _ = events.write(&msg);
    Ok(Start {
        spec,
        file_bytes: std::fs::read(&opts.spec).ok(),
        from_state: Some(file_problem),
    })
}

/// Which management server this daemon is: `--mserver` (it must name one of the spec),
/// else the host name, else the only one. A host name that is not a valid spec name is
/// matched by a rule: its first label (before the first `.`), letters and digits only,
/// ignoring case (`ms-01.example.com` is `ms01` or `MS01`).
fn local_name(opts: &DaemonOptions, spec: &Spec) -> anyhow::Result<String> {
    let names: Vec<&str> = spec.management_servers.keys().map(|n| n.as_str()).collect();
    if let Some(w) = &opts.mserver {
        if names.contains(&w.as_str()) {
            return Ok(w.clone());
        }
        bail!(
            "--mserver {w} is not a management server of the spec (it has: {})",
            names.join(", ")
        );
    }
    let host = hostname();
    if let Some(h) = &host
        && let Some(found) = names.iter().find(|n| host_matches(h, n))
    {
        return Ok(found.to_string());
    }
    if let [only] = names.as_slice() {
        return Ok(only.to_string());
    }
    bail!(
        "this host ({}) is not one of the management servers in the spec ({}); pass --mserver NAME",
        host.unwrap_or_else(|| "unknown".into()),
        names.join(", ")
    )
}

/// Whether a host name denotes a management server's spec name (see [`local_name`]).
fn host_matches(host: &str, name: &str) -> bool {
    let label = host.split('.').next().unwrap_or(host);
    let plain: String = label.chars().filter(char::is_ascii_alphanumeric).collect();
    host == name || plain.eq_ignore_ascii_case(name)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length and gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    Some(name.split('.').next()?.to_string())
}

/// Binds a UDP socket with IP_FREEBIND (IPV6_FREEBIND), so a standby can listen on the
/// reset path's virtual IP before it holds the address.
fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    match addr {
        std::net::SocketAddr::V4(_) => sock.set_freebind_v4(true)?,
        std::net::SocketAddr::V6(_) => sock.set_freebind_v6(true)?,
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Binds the reset-path and fence_kdump sockets and opens the pipeline's logs.
fn pipeline_config(
    opts: &DaemonOptions,
    spec: &Spec,
    init: &LogFile,
) -> anyhow::Result<PipelineConfig> {
    let reset_addr = opts.reset_path_bind.unwrap_or(std::net::SocketAddr::new(
        spec.reset_path.address,
        spec.reset_path.port.get(),
    ));
    let reset_path =
        bind_udp(reset_addr).with_context(|| format!("binding the reset path on {reset_addr}"))?;
    let _ = init.write(&format!(
        "reset path listening on {}",
        reset_path.local_addr()?
    ));
    let kdump_addr = match opts.fence_kdump_bind {
        FenceKdumpBind::Off => None,
        FenceKdumpBind::At(a) => Some(a),
        FenceKdumpBind::Default => {
            Some(std::net::SocketAddr::new(reset_addr.ip(), FENCE_KDUMP_PORT))
        }
    };
    let fence_kdump = match kdump_addr {
        None => None,
        Some(a) => {
            let s = bind_udp(a).with_context(|| {
                format!(
                    "binding the fence_kdump listener on {a} (--fence-kdump-bind off to disable)"
                )
            })?;
            let _ = init.write(&format!("fence_kdump listener on {}", s.local_addr()?));
            Some(s)
        }
    };
    let backends = if opts.simulate_hardware {
        let _ = init.write("SIMULATED HARDWARE: no real BMC, PDU or ESXi is touched");
        let sim = std::sync::Arc::new(crate::backend::sim::Sim::default());
        Backends {
            bmc: sim.clone(),
            pdu: sim.clone(),
            hypervisor: sim,
        }
    } else {
        use crate::backend::{esxi::EsxiHosts, ipmi::IpmiBmc, snmp::SnmpPdu};
        Backends {
            bmc: std::sync::Arc::new(IpmiBmc::new()),
            pdu: std::sync::Arc::new(SnmpPdu::new(spec.community.clone())),
            hypervisor: std::sync::Arc::new(EsxiHosts::new(Some(
                opts.state_dir.join("esxi_known_hosts"),
            ))),
        }
    };
    let sink = |name: &str| -> anyhow::Result<LogSink> {
        let f = LogFile::open(
            &opts.log_dir,
            name,
            opts.log_max_bytes,
            opts.log_generations,
        )
        .with_context(|| format!("opening {name} in {}", opts.log_dir.display()))?;
        Ok(LogSink::spawn(f)?)
    };
    Ok(PipelineConfig {
        backends,
        reset_path: Some(reset_path),
        fence_kdump,
        reset_log: sink("reset.log")?,
        error_log: sink("error.log")?,
        monitor_expiry: Duration::from_secs(60),
        watch: opts.hardware_poll,
        state_dir: Some(opts.state_dir.clone()),
        standing_by: spec.mode == crate::spec::model::Mode::Pair,
    })
}

/// In pair mode, starts the pair task: the pipeline's gate is closed until this server
/// is active. The mlan key is derived from the reset path's cluster key.
fn start_pair(
    opts: &DaemonOptions,
    pipeline: &Pipeline,
    local: &str,
    events: Arc<LogFile>,
    reset_log: crate::log::LogSink,
    specs: mpsc::Sender<(
        String,
        tokio::sync::oneshot::Sender<crate::pair::sync::SpecAck>,
    )>,
    lifecycle: mpsc::Sender<bool>,
) -> anyhow::Result<Option<crate::pair::task::PairHandle>> {
    use crate::pair::task::{self, PairSetup};
    use crate::spec::model::{Auth, Mode};
    let spec = pipeline.live();
    if spec.mode != Mode::Pair {
        return Ok(None);
    }
    let Some(me) = spec
        .management_servers
        .values()
        .find(|m| m.name.as_str() == local)
    else {
        bail!("{local} is not a management server of the spec");
    };
    let Some(peer) = spec
        .management_servers
        .values()
        .find(|m| m.name.as_str() != local)
    else {
        bail!("mode: pair needs a second management server");
    };
    let key = match &spec.reset_path.auth {
        Auth::None => None,
        Auth::Hmac(secret, _) => Some(
            secret
                .resolve()
                .context("reading the reset path key (the mlan key is derived from it)")?
                .into_bytes(),
        ),
    };
    let (bmc, pdu): (Arc<dyn crate::backend::Bmc>, Arc<dyn crate::backend::Pdu>) =
        if opts.simulate_hardware {
            let sim = Arc::new(crate::backend::sim::Sim::default());
            (sim.clone(), sim)
        } else {
            (
                Arc::new(crate::backend::ipmi::IpmiBmc::new()),
                Arc::new(crate::backend::snmp::SnmpPdu::new(spec.community.clone())),
            )
        };
    let local_mlan = std::net::SocketAddr::new(me.mlan.address, me.mlan.port.get());
    let address = spec.reset_path.address;
    let handle = task::spawn(PairSetup {
        me: me.name.clone(),
        local_mlan,
        peer: peer.clone(),
        pdus: spec.pdus.clone(),
        settings: spec.pair,
        key: crate::pair::wire::MlanKey::derive(key.as_deref()),
        reset_path: (address, spec.reset_path.prefix_len),
        move_address: !address.is_loopback() && !opts.simulate_hardware,
        bmc,
        pdu,
        pipeline: pipeline.clone(),
        log: Arc::new(move |line: &str| {
            let _ = events.write(line);
        }),
        reset_log: Arc::new(move |line: String| reset_log.line(line)),
        specs,
        lifecycle,
        dump: {
            let (state_dir, log_dir, socket) = (
                opts.state_dir.clone(),
                opts.log_dir.clone(),
                opts.control_socket.clone(),
            );
            Arc::new(move || crate::cli::dump::archive_bytes(&state_dir, &log_dir, &socket))
        },
    })
    .with_context(|| format!("binding the mlan on {local_mlan}"))?;
    Ok(Some(handle))
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    if let Some(dir) = &opts.secrets_dir {
        crate::spec::secret::confine_to(dir)
            .with_context(|| format!("--secrets-dir {}", dir.display()))?;
    }
    let events = LogFile::open(
        &opts.log_dir,
        "event.log",
        opts.log_max_bytes,
        opts.log_generations,
    )
    .with_context(|| format!("opening the event log in {}", opts.log_dir.display()))?;
    let state = StateDir::open(&opts.state_dir)
        .with_context(|| format!("opening the state dir {}", opts.state_dir.display()))?;
    let start = start_spec(&opts, &state, &events)?;
    let local = local_name(&opts, &start.spec)?;
    if start.from_state.is_none() {
        state
            .save(&start.spec)
            .with_context(|| format!("saving the applied spec in {}", opts.state_dir.display()))?;
    }
    let init = LogFile::open(
        &opts.log_dir,
        "init.log",
        opts.log_max_bytes,
        opts.log_generations,
    )
    .with_context(|| format!("opening the init log in {}", opts.log_dir.display()))?;
    let alert_log = LogFile::open(
        &opts.log_dir,
        "alert.log",
        opts.log_max_bytes,
        opts.log_generations,
    )
    .with_context(|| format!("opening the alert log in {}", opts.log_dir.display()))?;
    let config = pipeline_config(&opts, &start.spec, &init)?;
    let reset_log = config.reset_log.clone();
    let (pipeline, pipeline_thread) =
        Pipeline::start(start.spec, config).context("starting the pipeline thread")?;
    let status = Status {
        spec_file: opts.spec.display().to_string(),
        local_management_server: local.clone(),
        started_from: if start.from_state.is_some() {
            "state dir"
        } else {
            "spec file"
        }
        .into(),
        degraded: start.from_state.clone(),
        watching: opts.watch,
        simulated_hardware: opts.simulate_hardware,
        ..Status::default()
    };
    if opts.simulate_hardware {
        let msg =
            "SIMULATED HARDWARE: no real BMC, PDU or ESXi host is touched (--simulate-hardware)";
        tracing::warn!("{msg}");
        let _ = events.write(msg);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("haconn-main")
        .enable_all()
        .build()
        .context("starting the main runtime")?;
    let events = Arc::new(events);
    let (peer_specs, peer_spec_rx) = mpsc::channel(2);
    let (lifecycle, lifecycle_rx) = mpsc::channel(2);
    let pair = {
        let _in_runtime = runtime.enter();
        start_pair(
            &opts,
            &pipeline,
            &local,
            events.clone(),
            reset_log,
            peer_specs,
            lifecycle,
        )?
    };
    let shared = Arc::new(Shared {
        pipeline,
        status: Mutex::new(status),
        events,
        state,
        spec_path: opts.spec.clone(),
        local,
        pair,
        restart: std::sync::atomic::AtomicBool::new(false),
        handover_on_stop: std::sync::atomic::AtomicBool::new(true),
        alerts: Arc::new(alerts::AlertDesk::new(alert_log)),
    });
    let result = runtime.block_on(main_loop(
        opts,
        shared.clone(),
        start.file_bytes,
        peer_spec_rx,
        lifecycle_rx,
    ));
    runtime.shutdown_timeout(Duration::from_secs(2));
    let restart = shared.restart.load(std::sync::atomic::Ordering::SeqCst);
    drop(shared);
    pipeline_thread.join();
    if restart && result.is_ok() {
        return Err(restart_in_place());
    }
    result
}

/// Execs this program again with the same arguments (same pid, so systemd follows): a
/// restart that needs no service manager. Returns only if the exec failed.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return anyhow::anyhow!("restarting: cannot find this program: {e}"),
    };
    let e = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    anyhow::anyhow!("restarting: exec failed: {e}")
}

/// A spec the active of the pair sent, with where its result goes.
type PeerSpec = (
    String,
    tokio::sync::oneshot::Sender<crate::pair::sync::SpecAck>,
);

async fn main_loop(
    opts: DaemonOptions,
    shared: Arc<Shared>,
    file_bytes: Option<Vec<u8>>,
    mut peer_specs: mpsc::Receiver<PeerSpec>,
    mut lifecycle: mpsc::Receiver<bool>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener = control::bind(&opts.control_socket, opts.socket_group).with_context(|| {
        format!(
            "binding the control socket {}",
            opts.control_socket.display()
        )
    })?;
    let (tx, rx) = mpsc::channel::<Command>(64);
    let control = tokio::spawn(control::serve(
        listener,
        shared.clone(),
        tx.clone(),
        control::ControlOptions {
            test_hooks: opts.test_hooks,
            access: control::Access::for_this_process(opts.socket_group),
            operations: Some(Arc::new(
                LogFile::open(
                    &opts.log_dir,
                    "cli.log",
                    opts.log_max_bytes,
                    opts.log_generations,
                )
                .with_context(|| {
                    format!(
                        "opening the operator-command log in {}",
                        opts.log_dir.display()
                    )
                })?,
            )),
        },
    ));
    let (file_tx, mut file_rx) = mpsc::channel(4);
    let _watcher = opts.watch.then(|| {
        watch::spawn(
            WatchConfig {
                path: opts.spec.clone(),
                debounce: opts.debounce,
                poll: opts.poll,
            },
            file_bytes,
            file_tx,
        )
    });
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = file_rx.recv().await {
                if tx.send(Command::File(ev)).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let signals = {
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading the spec file");
                        if tx.send(Command::ReloadFromFile).await.is_err() { return; }
                    }
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
            tracing::info!("stopping");
            let _ = tx.send(Command::Stop).await;
        })
    };
    let watchdog = tokio::spawn(watchdog(tx.clone()));
    // The trap receiver: a fault here (the port taken, no privilege for 162) is said and
    // the daemon serves on without it.
    let traps = match shared.pipeline.live().alerts.as_ref().map(|a| a.listen) {
        None => None,
        Some(at) => match alerts::bind(at) {
            Ok(sock) => {
                let _ = shared
                    .events
                    .write(&format!("trap receiver listening on {at}"));
                Some(tokio::spawn(alerts::receive(
                    sock,
                    shared.alerts.clone(),
                    shared.pipeline.clone(),
                    shared.events.clone(),
                )))
            }
            Err(e) => {
                let line =
                    format!("the trap receiver cannot listen on {at}: {e}; no traps are received");
                tracing::error!("{line}");
                let _ = shared.events.write(&line);
                None
            }
        },
    };
    // The metrics endpoint: like the trap receiver, a fault here is said and the daemon
    // serves on without it.
    shared.pipeline.counters().metrics.applied();
    let metrics = match shared.pipeline.live().metrics {
        None => None,
        Some(at) => match metrics::bind(at) {
            Ok(listener) => {
                let at = listener.local_addr().unwrap_or(at);
                let _ = shared
                    .events
                    .write(&format!("metrics served at http://{at}/metrics"));
                Some(tokio::spawn(metrics::serve(listener, shared.clone())))
            }
            Err(e) => {
                let line = format!("metrics cannot be served on {at}: {e}; no metrics");
                tracing::error!("{line}");
                let _ = shared.events.write(&line);
                None
            }
        },
    };
    let peer_lifecycle = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(restart) = lifecycle.recv().await {
                let what = if restart { "restart" } else { "stop" };
                tracing::info!("the active management server asks this one to {what}");
                let cmd = if restart {
                    Command::Restart
                } else {
                    Command::Stop
                };
                if tx.send(cmd).await.is_err() {
                    return;
                }
            }
        })
    };
    let from_peer = {
        let tx = tx.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some((spec, ack)) = peer_specs.recv().await {
                let (reply, rx) = tokio::sync::oneshot::channel();
                let cmd = Command::Reload {
                    spec: spec.into_bytes(),
                    origin: supervisor::Origin::Peer,
                    dry_run: false,
                    reply: Some(reply),
                };
                if tx.send(cmd).await.is_err() {
                    return;
                }
                let reply = rx.await.ok();
                let _ = ack.send(supervisor::peer_ack(reply, &shared.pipeline.live()));
            }
        })
    };
    drop(tx);
    let _ = shared.events.write("haconn daemon started");
    tracing::info!(socket = %opts.control_socket.display(), "haconn daemon ready");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    supervisor::run(shared.clone(), rx).await;

    if let Some(pair) = &shared.pair {
        // A clean stop of the active hands over to a healthy standby first: otherwise the
        // standby would fence this host when the heartbeat stops.
        let s = pair.status();
        if s.role == "active"
            && s.redundant
            && shared
                .handover_on_stop
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            let _ = shared
                .events
                .write("stopping: handing over to the standby first");
            let _ = control::handover_or(pair, crate::pair::task::Command::Handover).await;
        }
        let _ = pair.command(crate::pair::task::Command::Shutdown).await;
    }

    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    control.abort();
    signals.abort();
    forward.abort();
    watchdog.abort();
    if let Some(t) = traps {
        t.abort();
    }
    if let Some(t) = metrics {
        t.abort();
    }
    from_peer.abort();
    peer_lifecycle.abort();
    let _ = std::fs::remove_file(&opts.control_socket);
    let _ = shared.events.write(
        if shared.restart.load(std::sync::atomic::Ordering::SeqCst) {
            "haconn daemon stopped; restarting"
        } else {
            "haconn daemon stopped"
        },
    );
    Ok(())
}

/// Feeds systemd's watchdog while the supervisor and the pipeline thread both answer.
async fn watchdog(commands: mpsc::Sender<Command>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        let (reply, rx) = tokio::sync::oneshot::channel();
        if commands.send(Command::Heartbeat(reply)).await.is_err() {
            return;
        }
        match tokio::time::timeout(interval / 4, rx).await {
            Ok(Ok(())) => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ => tracing::error!(
                "the supervisor or the pipeline thread did not answer; not feeding the watchdog"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_map_to_spec_names() {
        use super::host_matches;
        assert!(host_matches("mserver01", "mserver01"));
        assert!(host_matches("ms-01.example.com", "ms01"));
        assert!(host_matches("MS_01", "ms01"));
        assert!(!host_matches("ms-02.example.com", "ms01"));
        assert!(!host_matches("example.ms01", "ms01"));
    }
}
