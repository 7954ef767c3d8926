//! `fence_haconn`: a ClusterLabs fence agent that fences through the haconn daemon, so a
//! Pacemaker cluster gets haconn's whole reset (NMI so the node can dump, then a hard reset,
//! then its PDU outlets cut) and its confirmed outcome.
//!
//! Pacemaker's fencer runs the agent with its parameters as `name=value` lines on standard
//! input (the Fence Agent API); a person runs it with the same parameters as options
//! (`fence_haconn -o reboot -n labnode02`). Either way they become one [`Params`] map
//! ([`parse_stdin`], [`parse_argv`]), then one validated [`Invocation`]
//! ([`Invocation::from_params`]), then at most one control-socket request whose reply
//! [`judge`] turns into the API's exit code and output. All of that is pure; only [`run`]
//! does I/O, and every wait in it is bounded: standard input, the `delay`, the daemon.
//!
//! It is a mode of the `haconn` binary: run under the file name `fence_haconn` (a symlink,
//! since Pacemaker finds agents by name in /usr/sbin) or as `haconn fence-agent ARGS…`.
//!
//! Exit codes, the API's and not the rest of the CLI's: 0 success (`status`: on); 1
//! failure, refusal, unreachable daemon, timeout or invalid parameters; 2 only for
//! `status` (and never `monitor`: the daemon has no "off"): the target is off.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use crate::daemon::client::ClientError;
use crate::daemon::protocol::{FenceAction, FenceReply, Request, VERSION};

/// The name the agent is installed under, and the `name` of its metadata.
pub const AGENT_NAME: &str = "fence_haconn";
/// The `haconn` subcommand that runs the agent (for tests and a first try by hand).
pub const SUBCOMMAND: &str = "fence-agent";
const DEFAULT_SOCKET: &str = "/run/haconn/haconn.sock";
/// How long the agent waits for its parameters on standard input.
const STDIN_WAIT: Duration = Duration::from_secs(10);
/// Most bytes of parameters read from standard input.
const STDIN_MAX: u64 = 64 * 1024;
/// The longest timeout or delay accepted, in seconds.
const MAX_SECONDS: f64 = 3600.0;

/// The agent's arguments when this process runs as the agent: every argument after the
/// program name when that name is `fence_haconn`, or after `fence-agent` when it is run
/// as `haconn fence-agent …`; `None` for any other `haconn` command.
pub fn agent_args(argv: impl IntoIterator<Item = OsString>) -> Option<Vec<String>> {
    let mut argv = argv.into_iter();
    let program = argv.next()?;
    let rest = |argv: std::vec::IntoIter<OsString>| -> Vec<String> {
        argv.map(|a| a.to_string_lossy().into_owned()).collect()
    };
    let argv: Vec<OsString> = argv.collect();
    let file_name = std::path::Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    if file_name.as_deref() == Some(AGENT_NAME) {
        return Some(rest(argv.into_iter()));
    }
    if argv.first().and_then(|a| a.to_str()) == Some(SUBCOMMAND) {
        return Some(rest(
            argv.into_iter().skip(1).collect::<Vec<_>>().into_iter(),
        ));
    }
    None
}

/// What a parameter's value is, as the metadata's `content type` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    String,
    Second,
    Boolean,
    Integer,
}

impl Content {
    fn as_str(self) -> &'static str {
        match self {
            Content::String => "string",
            Content::Second => "second",
            Content::Boolean => "boolean",
            Content::Integer => "integer",
        }
    }
}

/// One parameter the agent knows: its stdin name, its command-line options, and what the
/// metadata says of it. [`PARAMS`] drives both the option parser and the metadata.
struct ParamDef {
    name: &'static str,
    short: Option<char>,
    long: &'static str,
    /// The value's name in `--long=[value]`; `None` for a flag.
    value: Option<&'static str>,
    content: Content,
    default: Option<&'static str>,
    required: bool,
    deprecated: bool,
    obsoletes: Option<&'static str>,
    shortdesc: &'static str,
}

const PARAMS: &[ParamDef] = &[
    ParamDef {
        name: "action",
        short: Some('o'),
        long: "action",
        value: Some("action"),
        content: Content::String,
        default: Some("reboot"),
        required: true,
        deprecated: false,
        obsoletes: None,
        shortdesc: "Fencing action: off, on, reboot, status, monitor, list, metadata or validate-all",
    },
    ParamDef {
        name: "plug",
        short: Some('n'),
        long: "plug",
        value: Some("name"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: Some("port"),
        shortdesc: "The system to fence, by its name in the haconn spec (Pacemaker passes the \
                    node's name, or its alias from pcmk_host_map)",
    },
    ParamDef {
        name: "port",
        short: None,
        long: "port",
        value: Some("name"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: true,
        obsoletes: None,
        shortdesc: "The system to fence, by its name in the haconn spec",
    },
    ParamDef {
        name: "nodename",
        short: None,
        long: "nodename",
        value: Some("name"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "The node to fence, used as the system's name when neither plug nor port \
                    is given",
    },
    ParamDef {
        name: "control_socket",
        short: None,
        long: "control-socket",
        value: Some("path"),
        content: Content::String,
        default: Some(DEFAULT_SOCKET),
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "The haconn daemon's control socket",
    },
    ParamDef {
        name: "connector",
        short: None,
        long: "connector",
        value: Some("host:port"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "The reset path (HOST:PORT, the address the HA monitors use): ask as this \
                    node's HA monitor over the authenticated reset path instead of the control \
                    socket, for a Pacemaker node that is not a management server (then \
                    key_file, system, subsystem and subsystem_map are needed; reboot is the full \
                    haconn reset; off, on and status are not available)",
    },
    ParamDef {
        name: "key_file",
        short: None,
        long: "key-file",
        value: Some("path"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "With connector: this node's reset-path key file (haconn node key)",
    },
    ParamDef {
        name: "system",
        short: None,
        long: "system",
        value: Some("name"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "With connector: this node's system name in the haconn spec (the requester)",
    },
    ParamDef {
        name: "subsystem",
        short: None,
        long: "subsystem",
        value: Some("number"),
        content: Content::Integer,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "With connector: this node's subsystem number",
    },
    ParamDef {
        name: "subsystem_map",
        short: None,
        long: "subsystem-map",
        value: Some("list"),
        content: Content::String,
        default: None,
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "With connector: the systems this device fences and their subsystem numbers \
                    (node01:1,node02:2)",
    },
    ParamDef {
        name: "power_timeout",
        short: None,
        long: "power-timeout",
        value: Some("seconds"),
        content: Content::Second,
        default: Some("50"),
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "Seconds to wait for the daemon's confirmed outcome of off, on or reboot \
                    (a reboot that goes on to the PDU takes longer than the hard-reset \
                    window plus the PDU timeout); no answer in time is a failure",
    },
    ParamDef {
        name: "login_timeout",
        short: None,
        long: "login-timeout",
        value: Some("seconds"),
        content: Content::Second,
        default: Some("20"),
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "Seconds to wait for the daemon's answer to status, list or monitor",
    },
    ParamDef {
        name: "delay",
        short: None,
        long: "delay",
        value: Some("seconds"),
        content: Content::Second,
        default: Some("0"),
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "Seconds to wait before an off or a reboot is asked for",
    },
    ParamDef {
        name: "verbose",
        short: Some('v'),
        long: "verbose",
        value: None,
        content: Content::Boolean,
        default: Some("0"),
        required: false,
        deprecated: false,
        obsoletes: None,
        shortdesc: "Say on standard error what is asked of the daemon and what it answered",
    },
];

/// The actions the agent performs, in the order the metadata lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    On,
    Off,
    Reboot,
    Status,
    Monitor,
    List,
    Metadata,
    ValidateAll,
}

impl Action {
    const ALL: [Action; 8] = [
        Action::On,
        Action::Off,
        Action::Reboot,
        Action::Status,
        Action::Monitor,
        Action::List,
        Action::Metadata,
        Action::ValidateAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::On => "on",
            Action::Off => "off",
            Action::Reboot => "reboot",
            Action::Status => "status",
            Action::Monitor => "monitor",
            Action::List => "list",
            Action::Metadata => "metadata",
            Action::ValidateAll => "validate-all",
        }
    }

    /// The API's action names are case-insensitive.
    pub fn parse(text: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(text.trim()))
    }

    /// The daemon's operation for this action (`None`: the agent answers alone).
    fn fence_action(self) -> Option<FenceAction> {
        Some(match self {
            Action::On => FenceAction::On,
            Action::Off => FenceAction::Off,
            Action::Reboot => FenceAction::Reboot,
            Action::Status => FenceAction::Status,
            Action::Monitor => FenceAction::Monitor,
            Action::List => FenceAction::List,
            Action::Metadata | Action::ValidateAll => return None,
        })
    }

    /// Whether the action is about one system.
    fn needs_target(self) -> bool {
        matches!(
            self,
            Action::On | Action::Off | Action::Reboot | Action::Status
        )
    }

    /// Whether the action changes a system's power (and so waits `power_timeout`).
    fn is_power_change(self) -> bool {
        matches!(self, Action::On | Action::Off | Action::Reboot)
    }
}

/// The parameters as given, by stdin name; the last value given for a name wins.
pub type Params = BTreeMap<String, String>;

/// Parses the API's standard-input form: one `name=value` per line; leading whitespace
/// and a line's trailing whitespace are dropped, as are blank lines, lines starting with
/// `#`, and lines without `=`. Names are kept whatever they are (unknown ones are ignored
/// later, not refused).
pub fn parse_stdin(text: &str) -> Params {
    let mut params = Params::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((name, value)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() {
                params.insert(name.to_string(), value.trim().to_string());
            }
        }
    }
    params
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    Params(Params),
    Help,
    Version,
}

/// Parses the command-line form: `--long=value`, `--long value`, `-s value`, `-svalue`,
/// flags (`-v`, `--verbose`), `-h`/`--help`, `-V`/`--version`. An unknown option or a
/// stray word is a usage error (on the command line a typo is a person's, so it is said,
/// unlike an unknown stdin name, which the API says to ignore).
pub fn parse_argv(args: &[String]) -> Result<CommandLine, String> {
    let mut params = Params::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Ok(CommandLine::Help);
        }
        if arg == "-V" || arg == "--version" {
            return Ok(CommandLine::Version);
        }
        let (def, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let def = PARAMS
                .iter()
                .find(|d| d.long == name)
                .ok_or_else(|| format!("unknown option --{name}"))?;
            (def, inline)
        } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let c = chars.next().expect("not empty");
            let rest = chars.as_str();
            let def = PARAMS
                .iter()
                .find(|d| d.short == Some(c))
                .ok_or_else(|| format!("unknown option -{c}"))?;
            let inline = (!rest.is_empty()).then(|| rest.to_string());
            (def, inline)
        } else {
            return Err(format!(
                "unexpected argument {arg:?}: parameters are options (-o ACTION, -n NAME, …)"
            ));
        };
        let value = match (def.value, inline) {
            (None, None) => "1".to_string(),
            (None, Some(_)) => return Err(format!("option --{} takes no value", def.long)),
            (Some(_), Some(v)) => v,
            (Some(_), None) => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("option --{} needs a value", def.long))?;
                i += 1;
                v.clone()
            }
        };
        params.insert(def.name.to_string(), value);
    }
    Ok(CommandLine::Params(params))
}

/// The parameters, known good.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    pub action: Action,
    /// The system to act on: `port`/`plug`, else `nodename`.
    pub target: Option<String>,
    pub control_socket: PathBuf,
    /// Set: over the reset path, as this node's HA monitor, not the control socket.
    pub reset_path: Option<ResetPathRoute>,
    pub power_timeout: Duration,
    pub login_timeout: Duration,
    pub delay: Duration,
    pub verbose: bool,
}

impl Invocation {
    /// Validates the parameters, reporting every problem at once. Unknown names are
    /// ignored; `option` is the API's old name of `action`; the target is `port` or
    /// `plug` (the API prefers them to `nodename`), else `nodename`.
    pub fn from_params(params: &Params) -> Result<Invocation, Vec<String>> {
        let mut problems = Vec::new();
        let get = |name: &str| params.get(name).map(String::as_str);
        let action_text = get("action").or(get("option")).unwrap_or("reboot");
        let action = Action::parse(action_text);
        if action.is_none() {
            problems.push(format!(
                "unrecognised action {action_text:?}: one of {}",
                Action::ALL.map(Action::name).join(", ")
            ));
        }
        let nonempty = |name: &str| get(name).map(str::trim).filter(|v| !v.is_empty());
        let target = nonempty("port")
            .or(nonempty("plug"))
            .or(nonempty("nodename"))
            .map(str::to_string);
        if let (Some(a), None) = (action, &target)
            && a.needs_target()
        {
            problems.push(format!(
                "{} needs the system: give plug (or port) or nodename",
                a.name()
            ));
        }
        let control_socket = PathBuf::from(get("control_socket").unwrap_or(DEFAULT_SOCKET));
        if !control_socket.is_absolute() {
            problems.push(format!(
                "control_socket must be an absolute path (got {:?})",
                control_socket.display().to_string()
            ));
        }
        let mut seconds = |name: &str, may_be_zero: bool| -> Duration {
            let def = PARAMS.iter().find(|d| d.name == name).expect("known");
            let text = get(name).or(def.default).expect("a default");
            match parse_seconds(text) {
                Ok(d) if d.is_zero() && !may_be_zero => {
                    problems.push(format!("{name}: must be more than 0 seconds"));
                    d
                }
                Ok(d) => d,
                Err(why) => {
                    problems.push(format!("{name}: {why}"));
                    Duration::ZERO
                }
            }
        };
        let power_timeout = seconds("power_timeout", false);
        let login_timeout = seconds("login_timeout", false);
        let delay = seconds("delay", true);
        let verbose = match get("verbose").map(parse_bool) {
            None => false,
            Some(Some(b)) => b,
            Some(None) => {
                problems.push("verbose: must be 1/0, yes/no, true/false or on/off".into());
                false
            }
        };
        let reset_path = match nonempty("connector") {
            None => None,
            Some(connector) => {
                let key_file = nonempty("key_file").map(PathBuf::from);
                let system = nonempty("system").map(str::to_string);
                let subsystem = nonempty("subsystem").map(|t| t.parse::<u32>());
                let map = parse_subsystem_map(get("subsystem_map").unwrap_or_default());
                if key_file.is_none() {
                    problems.push("connector: key_file (this node's key file) is needed".into());
                }
                if system.is_none() {
                    problems.push("connector: system (this node's system name) is needed".into());
                }
                let subsystem = match subsystem {
                    Some(Ok(n)) => Some(n),
                    Some(Err(_)) => {
                        problems.push("subsystem: must be a number".into());
                        None
                    }
                    None => {
                        problems.push("connector: subsystem (this node's number) is needed".into());
                        None
                    }
                };
                let map = match map {
                    Ok(m) => m,
                    Err(why) => {
                        problems.push(format!("subsystem_map: {why}"));
                        Vec::new()
                    }
                };
                if let (Some(t), Some(a)) = (&target, action)
                    && a.needs_target()
                    && !map.iter().any(|(n, _)| n == t)
                {
                    problems.push(format!("subsystem_map has no subsystem number for {t}"));
                }
                match (key_file, system, subsystem) {
                    (Some(key_file), Some(system), Some(subsystem)) => Some(ResetPathRoute {
                        connector: connector.to_string(),
                        key_file,
                        system,
                        subsystem,
                        map,
                    }),
                    _ => None,
                }
            }
        };
        match action {
            Some(action) if problems.is_empty() => Ok(Invocation {
                action,
                target,
                control_socket,
                reset_path,
                power_timeout,
                login_timeout,
                delay,
                verbose,
            }),
            _ => Err(problems),
        }
    }

    /// The longest the agent waits for the daemon's answer.
    pub fn answer_timeout(&self) -> Duration {
        if self.action.is_power_change() {
            self.power_timeout
        } else {
            self.login_timeout
        }
    }

    /// The control-socket request of this invocation (`None`: answered without the daemon).
    pub fn request(&self) -> Option<Request> {
        let action = self.action.fence_action()?;
        Some(Request::Fence {
            v: VERSION,
            action,
            target: if self.action.needs_target() {
                self.target.clone()
            } else {
                None
            },
        })
    }
}

/// How the agent reaches haconn over the reset path: as this node's HA monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPathRoute {
    pub connector: String,
    pub key_file: PathBuf,
    pub system: String,
    pub subsystem: u32,
    /// The systems this device fences, with their subsystem numbers.
    pub map: Vec<(String, u32)>,
}

/// `node01:1,node02:2` (spaces allowed, `=` as well as `:`).
pub fn parse_subsystem_map(text: &str) -> Result<Vec<(String, u32)>, String> {
    let mut map = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, n)) = part.split_once([':', '=']) else {
            return Err(format!("`{part}` is not NAME:NUMBER"));
        };
        let n: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{part}`: {n} is not a number"))?;
        map.push((name.trim().to_string(), n));
    }
    Ok(map)
}

/// An action over the reset path, as this node's HA monitor would ask: a check (which
/// registers it), then for off and reboot the reset request; its final reply (DUMP or
/// POFF) or the attention is the evidence. Bounded by `timeout`.
fn over_reset_path(inv: &Invocation, route: &ResetPathRoute, timeout: Duration) -> Ending {
    use crate::resetpath::client::{Client, read_key_file};
    use crate::resetpath::codec::{Message, ResetResult};
    use std::net::ToSocketAddrs;
    use std::time::Instant;
    let end = Instant::now() + timeout;
    let target = inv.target.clone().unwrap_or_default();
    match inv.action {
        Action::List => {
            return Ending::success(route.map.iter().map(|(n, _)| format!("{n},")).collect());
        }
        // Off is not a reset: a node asked to stay off must not come back rebooted.
        Action::On | Action::Off | Action::Status => {
            return Ending::failed(format!(
                "{} is not available over the reset path (it can only reset): use \
                 control_socket on a management server",
                inv.action.name()
            ));
        }
        _ => {}
    }
    let connector = match route
        .connector
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    {
        Some(a) => a,
        None => return Ending::failed(format!("connector {}: not HOST:PORT", route.connector)),
    };
    let key = match read_key_file(&route.key_file) {
        Ok(k) => k,
        Err(e) => return Ending::failed(format!("key_file {}: {e}", route.key_file.display())),
    };
    let any: std::net::IpAddr = if connector.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let mut client = match Client::bind(std::net::SocketAddr::new(any, 0), connector, key) {
        Ok(c) => c,
        Err(e) => return Ending::failed(format!("reset path: {e}")),
    };
    let port = client.local_addr().port();
    let check = Message::Check {
        system: route.system.clone(),
        subsystem: route.subsystem,
        port,
        pair: None,
    };
    // As `haconn node` retries: 150 ms, doubling up to 1 s; a reset's request six times
    // (its copies share the request number: the connector joins them).
    let until_answered = crate::resetpath::client::Retry {
        interval: Duration::from_millis(150),
        max_interval: Duration::from_secs(1),
        sends: u32::MAX,
    };
    let answered = client.request(&check, until_answered, end, |r| match &r.env.msg {
        Message::CheckReply { system, .. } if *system == route.system => Some(()),
        _ => None,
    });
    match answered {
        Ok(Some(())) => {}
        Ok(None) => {
            return Ending::failed(format!(
                "no check reply from {connector} within {} s",
                timeout.as_secs()
            ));
        }
        Err(e) => return Ending::failed(format!("reset path: {e}")),
    }
    if inv.action == Action::Monitor {
        return Ending::success(vec![format!("haconn at {connector} answered the check")]);
    }
    let Some((_, target_subsystem)) = route.map.iter().find(|(n, _)| *n == target) else {
        return Ending::failed(format!(
            "subsystem_map has no subsystem number for {target}"
        ));
    };
    let req = rand::random_range(1..=99_999u32);
    let reset = Message::Reset {
        req,
        system: route.system.clone(),
        subsystem: route.subsystem,
        port,
        target_system: target.clone(),
        target_subsystem: *target_subsystem,
    };
    // Sent until the first reply (copies share the request number: the connector joins
    // them), then only listened for: the final reply (or the attention) ends it.
    type Verdict = Option<Result<String, String>>;
    let judge_one = |r: &crate::resetpath::client::Received| -> Option<Verdict> {
        match &r.env.msg {
            Message::ResetReply {
                req: got,
                target_system,
                result,
                reason,
                ..
            } if *got == req && *target_system == target => Some(match result {
                ResetResult::Accepted => None,
                ResetResult::Dump | ResetResult::Poff => Some(Ok(format!("{result:?}"))),
                other => Some(Err(format!(
                    "{other:?}{}",
                    reason
                        .as_ref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ))),
            }),
            Message::Attention { system, state, .. } if *system == target => {
                Some(Some(Ok(format!("ATTENTION {state:?}"))))
            }
            _ => None,
        }
    };
    let reset_retry = crate::resetpath::client::Retry {
        interval: Duration::from_millis(150),
        max_interval: Duration::from_secs(1),
        sends: 6,
    };
    let first = client.request(&reset, reset_retry, end, |r| judge_one(r));
    let mut accepted = false;
    let verdict: Result<Verdict, _> = match first {
        Err(e) => Err(e),
        Ok(None) => Ok(None),
        Ok(Some(Some(v))) => Ok(Some(v)),
        Ok(Some(None)) => {
            accepted = true;
            loop {
                match client.recv(end) {
                    Err(e) => break Err(e),
                    Ok(None) => break Ok(None),
                    Ok(Some(r)) => {
                        if let Some(Some(v)) = judge_one(&r) {
                            break Ok(Some(v));
                        }
                    }
                }
            }
        }
    };
    let last = accepted.then(|| "accepted, under way".to_string());
    match verdict {
        Ok(Some(Ok(how))) => Ending::success(vec![format!(
            "Success: {} of {target}: haconn answered {how}",
            inv.action.name()
        )]),
        Ok(Some(Err(why))) => Ending::failed(format!("{} of {target}: {why}", inv.action.name())),
        Ok(None) => Ending::failed(format!(
            "timed out after {} s waiting for the reset of {target} ({})",
            timeout.as_secs(),
            last.unwrap_or_else(|| "no answer".into())
        )),
        Err(e) => Ending::failed(format!("reset path: {e}")),
    }
}

/// Whether the action is `metadata`, however the rest of the parameters are: metadata is
/// printed even when they are wrong (Pacemaker asks for it with no other parameter).
pub fn wants_metadata(params: &Params) -> bool {
    let action = params.get("action").or(params.get("option"));
    action.and_then(|a| Action::parse(a)) == Some(Action::Metadata)
}

/// Decimal seconds, at least 0 and at most an hour.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    let s: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {text:?}"))?;
    if !(0.0..=MAX_SECONDS).contains(&s) {
        return Err(format!("must be 0 to {MAX_SECONDS} seconds (got {text})"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// The spellings of a boolean that fence agents accept.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "true" | "on" => Some(true),
        "0" | "no" | "n" | "false" | "off" | "" => Some(false),
        _ => None,
    }
}

/// How an invocation ended: the exit code and what to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub code: u8,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

impl Ending {
    fn success(stdout: Vec<String>) -> Ending {
        Ending {
            code: 0,
            stdout,
            stderr: Vec::new(),
        }
    }

    fn failed(message: String) -> Ending {
        Ending {
            code: 1,
            stdout: Vec::new(),
            stderr: vec![format!("Failed: {message}")],
        }
    }
}

/// Why the daemon's answer was not had.
#[derive(Debug)]
pub enum NoAnswer {
    Client(ClientError),
    /// No answer within the timeout (always a failure, never a success).
    TimedOut(Duration),
}

/// Turns the daemon's answer to `inv` into the API's exit code and output. A power
/// change succeeds only on the result that is its evidence (`done`, `off`, `on`); status
/// is 0 on, 2 off, 1 anything else.
pub fn judge(inv: &Invocation, answer: Result<FenceReply, NoAnswer>) -> Ending {
    let what = match &inv.target {
        Some(t) if inv.action.needs_target() => format!("{} of {t}", inv.action.name()),
        _ => inv.action.name().to_string(),
    };
    let reply = match answer {
        Ok(r) => r,
        Err(NoAnswer::TimedOut(t)) => {
            return Ending::failed(format!(
                "timed out after {} s waiting for the haconn daemon's answer to {what}",
                t.as_secs_f64()
            ));
        }
        Err(NoAnswer::Client(e)) => return Ending::failed(format!("{what}: {e}")),
    };
    let unexpected = |reply: &FenceReply| {
        Ending::failed(format!(
            "{what}: the haconn daemon answered {:?}, not its confirmation: {}",
            reply.result, reply.message
        ))
    };
    let result = reply.result.as_str();
    match inv.action {
        Action::Reboot | Action::Off | Action::On => {
            let (evidence, done) = match inv.action {
                Action::Reboot => ("done", "Rebooted"),
                Action::Off => ("off", "Powered OFF"),
                _ => ("on", "Powered ON"),
            };
            if result == evidence {
                Ending::success(vec![format!("Success: {done}: {}", reply.message)])
            } else {
                unexpected(&reply)
            }
        }
        Action::Status => match result {
            "on" => Ending::success(vec!["Status: ON".into()]),
            "off" => Ending {
                code: 2,
                stdout: vec!["Status: OFF".into()],
                stderr: Vec::new(),
            },
            _ => unexpected(&reply),
        },
        Action::Monitor => Ending::success(vec![reply.message]),
        Action::List => Ending::success(reply.systems.iter().map(|s| format!("{s},")).collect()),
        Action::Metadata | Action::ValidateAll => {
            unreachable!("answered without the daemon")
        }
    }
}

/// Escapes text for an XML attribute or element.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The agent's metadata, valid against fence-agents' `metadata.rng`.
pub fn metadata() -> String {
    let mut x = String::from("<?xml version=\"1.0\" ?>\n");
    x.push_str(&format!(
        "<resource-agent name=\"{AGENT_NAME}\" shortdesc=\"{}\" >\n",
        xml_escape("Fence agent for haconn (NMI, hard reset, PDU cut)")
    ));
    x.push_str(&format!(
        "<longdesc>{}</longdesc>\n",
        xml_escape(
            "fence_haconn fences through the haconn daemon on the management server: a \
             reboot is haconn's whole reset of the system (an NMI through its BMC so the node \
             can dump, a hard reset when it does not stop in time, its PDU outlets cut when \
             the BMC fails), and succeeds only on evidence (the node's stop notice, the hard \
             reset's acknowledgement, outlets confirmed off, or a power read of off). off and \
             on switch the power and confirm it; status reads it. The system is named by \
             plug (or port), else nodename, as the haconn spec names it."
        )
    ));
    x.push_str("<vendor-url></vendor-url>\n<parameters>\n");
    for p in PARAMS {
        let mut attrs = format!(
            "name=\"{}\" unique=\"0\" required=\"{}\"",
            p.name, p.required as u8
        );
        if p.deprecated {
            attrs.push_str(" deprecated=\"1\"");
        }
        if let Some(o) = p.obsoletes {
            attrs.push_str(&format!(" obsoletes=\"{o}\""));
        }
        let mut getopt = String::new();
        if let Some(s) = p.short {
            getopt.push_str(&format!("-{s}, "));
        }
        getopt.push_str(&format!("--{}", p.long));
        if let Some(v) = p.value {
            getopt.push_str(&format!("=[{v}]"));
        }
        let default = p
            .default
            .map(|d| format!(" default=\"{}\"", xml_escape(d)))
            .unwrap_or_default();
        x.push_str(&format!(
            "\t<parameter {attrs}>\n\t\t<getopt mixed=\"{}\" />\n\t\t<content type=\"{}\"{default} />\n\t\t<shortdesc lang=\"en\">{}</shortdesc>\n\t</parameter>\n",
            xml_escape(&getopt),
            p.content.as_str(),
            xml_escape(p.shortdesc),
        ));
    }
    x.push_str("</parameters>\n<actions>\n");
    for a in Action::ALL {
        let extra = if a == Action::On {
            " automatic=\"0\""
        } else {
            ""
        };
        x.push_str(&format!("\t<action name=\"{}\"{extra} />\n", a.name()));
    }
    x.push_str("</actions>\n</resource-agent>\n");
    x
}

/// The usage text of `-h`.
pub fn usage() -> String {
    let mut s = format!(
        "Usage: {AGENT_NAME} [OPTION]...\n\
         A ClusterLabs fence agent that fences through the haconn daemon.\n\
         Without options, reads name=value lines on standard input (the Fence Agent API).\n\n"
    );
    for p in PARAMS {
        let short = p.short.map(|c| format!("-{c}, ")).unwrap_or_default();
        let value = p.value.map(|v| format!("=[{v}]")).unwrap_or_default();
        let default = p
            .default
            .map(|d| format!(" (default {d})"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  {short}--{}{value}\n      {}{default}\n",
            p.long, p.shortdesc
        ));
    }
    s.push_str("  -h, --help\n  -V, --version\n");
    s
}

/// Runs `f` on a thread of its own and waits at most `timeout` for its result; the
/// thread is left behind when it is late (the process exits soon after).
fn within<T: Send + 'static>(
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(timeout).ok()
}

fn print(ending: &Ending) -> u8 {
    for l in &ending.stdout {
        outln!("{l}");
    }
    for l in &ending.stderr {
        errln!("{l}");
    }
    ending.code
}

/// Runs the agent with these arguments (everything after the program name); returns the
/// exit code.
pub fn run(args: Vec<String>) -> u8 {
    let params = if args.is_empty() {
        let read = within(STDIN_WAIT, || {
            let mut text = String::new();
            std::io::stdin()
                .take(STDIN_MAX)
                .read_to_string(&mut text)
                .map(|_| text)
        });
        match read {
            Some(Ok(text)) => parse_stdin(&text),
            Some(Err(e)) => return print(&Ending::failed(format!("reading standard input: {e}"))),
            None => {
                return print(&Ending::failed(format!(
                    "timed out after {} s waiting for parameters on standard input (or give \
                     options: -h)",
                    STDIN_WAIT.as_secs()
                )));
            }
        }
    } else {
        match parse_argv(&args) {
            Ok(CommandLine::Params(p)) => p,
            Ok(CommandLine::Help) => {
                out!("{}", usage());
                return 0;
            }
            Ok(CommandLine::Version) => {
                outln!("{AGENT_NAME} (haconn {})", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            Err(why) => return print(&Ending::failed(format!("{why} (see -h)"))),
        }
    };
    if wants_metadata(&params) {
        out!("{}", metadata());
        return 0;
    }
    let inv = match Invocation::from_params(&params) {
        Ok(inv) => inv,
        Err(problems) => {
            for p in &problems {
                errln!("Failed: {p}");
            }
            return 1;
        }
    };
    let Some(request) = inv.request() else {
        // validate-all: the parameters are all it checks; it touches no system.
        outln!("fence_haconn: parameters valid");
        return 0;
    };
    if inv.verbose {
        errln!(
            "fence_haconn: asking {} for {}",
            inv.control_socket.display(),
            serde_json::to_string(&request).expect("a request serializes")
        );
    }
    if matches!(inv.action, Action::Off | Action::Reboot) && !inv.delay.is_zero() {
        std::thread::sleep(inv.delay);
    }
    if let Some(route) = inv.reset_path.clone() {
        let timeout = inv.answer_timeout();
        let inv2 = inv.clone();
        let ending = within(timeout + Duration::from_secs(1), move || {
            over_reset_path(&inv2, &route, timeout)
        })
        .unwrap_or_else(|| Ending::failed(format!("timed out after {} s", timeout.as_secs())));
        return print(&ending);
    }
    let socket = inv.control_socket.clone();
    let timeout = inv.answer_timeout();
    let answer = match within(timeout, move || {
        crate::daemon::client::request::<FenceReply>(&socket, &request)
    }) {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(e)) => Err(NoAnswer::Client(e)),
        None => Err(NoAnswer::TimedOut(timeout)),
    };
    if inv.verbose {
        match &answer {
            Ok(r) => errln!("fence_haconn: the daemon answered {r:?}"),
            Err(e) => errln!("fence_haconn: no answer: {e:?}"),
        }
    }
    print(&judge(&inv, answer))
}

#[cfg(test)]
#[path = "fence_agent_tests.rs"]
mod tests;
