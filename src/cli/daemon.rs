//! `haconn daemon`: run the service.

use std::path::PathBuf;
use std::time::Duration;

use super::Outcome;
use crate::daemon::{DaemonOptions, FenceKdumpBind, run};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The cluster spec to follow.
    #[arg(long, env = "HACONN_SPEC", default_value = "/etc/haconn/cluster.yaml")]
    pub spec: PathBuf,
    /// Where the last applied spec is kept.
    #[arg(long, env = "HACONN_STATE_DIR", default_value = "/var/lib/haconn")]
    pub state_dir: PathBuf,
    /// Where the event log is written.
    #[arg(long, env = "HACONN_LOG_DIR", default_value = "/var/log/haconn")]
    pub log_dir: PathBuf,
    #[command(flatten)]
    pub socket: super::SocketArg,
    /// Group allowed to use the control socket (mode 0660 instead of 0600), by name or
    /// GID; its members (primary or supplementary) may connect besides root and the
    /// daemon's user.
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    pub socket_group: Option<u32>,
    /// Refuse `{file:}` secret references outside this directory (links resolved).
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Which management server of the spec this is (default: the host name).
    #[arg(long, value_name = "NAME")]
    pub mserver: Option<String>,
    /// Do not follow the spec file (reload with SIGHUP or `haconn apply` only).
    #[arg(long)]
    pub no_watch: bool,
    /// Quiet time after a change of the spec file before it is read, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub debounce_ms: u64,
    /// Interval of the fallback poll of the spec file, in milliseconds.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub poll_ms: u64,
    /// Size at which each log file (event, reset, error, init) is rotated, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub log_max_bytes: u64,
    /// Old generations kept of each log file (event.log.1 ...).
    #[arg(long, default_value_t = 5)]
    pub log_generations: u32,
    /// Accept `simulate` requests on the control socket (tests and labs only).
    #[arg(long, hide = true)]
    pub test_hooks: bool,
    /// Listen for the reset path here instead of the spec's resetPath address and port.
    #[arg(long, value_name = "ADDR:PORT", env = "HACONN_RESET_PATH_BIND")]
    pub reset_path_bind: Option<std::net::SocketAddr>,
    /// Where fence_kdump_send messages arrive: ADDR:PORT, or `off` (default: the reset-path
    /// address, port 7410).
    #[arg(long, value_name = "ADDR:PORT|off", env = "HACONN_FENCE_KDUMP_BIND")]
    pub fence_kdump_bind: Option<String>,
    /// Drive simulated BMCs, PDUs and ESXi hosts instead of real ones (labs only).
    #[arg(long, hide = true)]
    pub simulate_hardware: bool,
    /// Poll every BMC, PDU and ESXi guest this often for power state and link;
    /// 0 turns the hardware watch off.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub hardware_poll_ms: u64,
}

pub fn run_daemon(args: &Args) -> Outcome {
    init_tracing();
    let fence_kdump_bind = match args.fence_kdump_bind.as_deref() {
        None => FenceKdumpBind::Default,
        Some("off") => FenceKdumpBind::Off,
        Some(a) => match a.parse() {
            Ok(addr) => FenceKdumpBind::At(addr),
            Err(_) => {
                errln!("haconn daemon: --fence-kdump-bind takes ADDR:PORT or off, not `{a}`");
                return Outcome::Trouble;
            }
        },
    };
    let opts = DaemonOptions {
        spec: args.spec.clone(),
        state_dir: args.state_dir.clone(),
        log_dir: args.log_dir.clone(),
        control_socket: args.socket.control_socket.clone(),
        socket_group: args.socket_group,
        secrets_dir: args.secrets_dir.clone(),
        mserver: args.mserver.clone(),
        watch: !args.no_watch,
        debounce: Duration::from_millis(args.debounce_ms),
        poll: Duration::from_millis(args.poll_ms.max(100)),
        log_max_bytes: args.log_max_bytes,
        log_generations: args.log_generations,
        test_hooks: args.test_hooks,
        reset_path_bind: args.reset_path_bind,
        fence_kdump_bind,
        simulate_hardware: args.simulate_hardware,
        hardware_poll: (args.hardware_poll_ms > 0)
            .then(|| Duration::from_millis(args.hardware_poll_ms.max(100))),
    };
    match run(opts) {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            // Once, on stderr (journald under systemd): not also through tracing.
            errln!("haconn daemon: {e:#}");
            Outcome::Failed
        }
    }
}

/// One line per event on stderr (journald adds its own timestamps under systemd).
fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("HACONN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// `--socket-group`: a numeric GID as it is, else a group name looked up in the group
/// database (a packaged unit names the `haconn` group, whose GID differs per machine).
fn parse_group(value: &str) -> Result<u32, String> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map_err(|_| format!("GID {value} is out of range"));
    }
    match group_id(value) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(format!(
            "no group named `{value}` (create it, or give a numeric GID)"
        )),
        Err(e) => Err(format!("cannot look up group `{value}`: {e}")),
    }
}

/// The GID of group `name`, `None` when there is no such group.
fn group_id(name: &str) -> std::io::Result<Option<u32>> {
    nix::unistd::Group::from_name(name)
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::parse_group;

    #[test]
    fn socket_group_is_a_gid_or_a_group_name() {
        assert_eq!(parse_group("4242"), Ok(4242));
        assert_eq!(parse_group("root"), Ok(0));
        let missing = parse_group("haconn-no-such-group").unwrap_err();
        assert!(
            missing.contains("no group named `haconn-no-such-group`"),
            "{missing}"
        );
        assert!(
            parse_group("99999999999")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_group("").is_err());
    }
}
