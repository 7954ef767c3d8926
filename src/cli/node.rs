//! `haconn node`: what runs on a cluster node, over the reset path (PROTOCOL.md).
//!
//! `check`, `reset` and `listen` play an HA monitor's part (for tests, labs and monitors
//! driven by scripts); `stopped` is the dump agent's notification, run from a kdump hook
//! (contrib/kdump/); `key` prints a system's own key for its key file (per-node keys,
//! derived from the spec's cluster key). Each prints one line per message it receives, `KIND key=value ...`,
//! or with `--output json` one JSON object per line; diagnostics go to stderr. Every wait is
//! bounded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;

use super::Outcome;
use crate::resetpath::client::{Client, Received, Retry, read_key_file};
use crate::resetpath::codec::{AttentionState, Key, Message, ResetResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Check the reset path, registering this monitor (system, subsystem, port, pair).
    ///
    /// Exit 0: the connector can reset this system now; 1: it cannot; 2: no answer.
    Check(CheckArgs),
    /// Ask the connector to reset another system; print the replies and the attention.
    ///
    /// Exit 0 on a final DUMP or POFF or an attention DUMP/REBOOT/POFF; 1 otherwise.
    Reset(ResetArgs),
    /// Tell the connector this system stopped and is dumping (the dump agent's message).
    ///
    /// Sent again (after 150 ms, backing off to every second) until acknowledged. Exit 0:
    /// acknowledged; 2: no answer.
    Stopped(StoppedArgs),
    /// Print each attention notification that arrives on a port.
    ///
    /// Exit 0 once --count arrived (or at --timeout without --count); 1 at --timeout short
    /// of --count.
    Listen(ListenArgs),
    /// Print a system's own reset-path key, for that node's --key-file.
    ///
    /// With `keyMode: perNode` (the default) each system signs with a key derived from the
    /// spec's cluster key and its name (PROTOCOL.md); the node holds only its own. Printed
    /// with one trailing newline, as a key file holds it. Exit 1: no such system, no key
    /// (auth: none), or `keyMode: shared` (every node holds the cluster key itself, which
    /// haconn never prints); 2: the spec or its key cannot be read.
    Key(KeyArgs),
}

#[derive(Debug, clap::Args)]
struct KeyArgs {
    /// The cluster spec (its `resetPath.auth.key` is read).
    #[arg(long, env = "HACONN_SPEC", default_value = "/etc/haconn/cluster.yaml")]
    spec: String,
    /// The system whose key to print (a server's or VM's name in the spec).
    #[arg(long, value_name = "NAME")]
    system: String,
    /// Write the key file here (created with mode 0600; an existing file is replaced)
    /// instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Where the connector is and how datagrams are signed.
#[derive(Debug, clap::Args)]
struct Connector {
    /// The connector's reset-path address (the virtual IP) and port.
    #[arg(long, value_name = "HOST:PORT")]
    connector: String,
    /// The reset-path key (trailing newline dropped); without it datagrams go unsigned,
    /// for reset paths with `auth: none`.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// `--output json`: one JSON object per received message instead of a text line.
    #[command(flatten)]
    output: super::OutputArg,
}

/// Which HA monitor system this is.
#[derive(Debug, clap::Args)]
struct Identity {
    /// This system's name (the server's or VM's name in the cluster spec).
    #[arg(long, value_name = "NAME")]
    system: String,
    /// This system's subsystem number (the HA monitor's host address).
    #[arg(long, value_name = "N")]
    subsystem: u32,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    #[command(flatten)]
    connector: Connector,
    #[command(flatten)]
    me: Identity,
    /// Monitor pair number (mutual-standby partners share one).
    #[arg(long, value_name = "N")]
    pair: Option<u32>,
    /// Local port: where this monitor receives replies and attention (default: ephemeral).
    #[arg(long, value_name = "P", default_value_t = 0)]
    port: u16,
    /// Local address to send from (default: any).
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// How long to wait for the answer, in seconds (sent again after 150 ms, backing off to every second).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    wait: u64,
}

#[derive(Debug, clap::Args)]
struct ResetArgs {
    #[command(flatten)]
    connector: Connector,
    #[command(flatten)]
    me: Identity,
    /// The system to reset.
    #[arg(long, value_name = "NAME")]
    target_system: String,
    /// Its subsystem number.
    #[arg(long, value_name = "N")]
    target: u32,
    /// Local port: where the replies and the attention are received (default: ephemeral).
    #[arg(long, value_name = "P", default_value_t = 0)]
    port: u16,
    /// Local address to send from (default: any).
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// How long to wait for the outcome, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    wait: u64,
    /// The request number, echoed in the replies and the reset log (default: random).
    #[arg(long, value_name = "N")]
    req: Option<u32>,
}

#[derive(Debug, clap::Args)]
struct StoppedArgs {
    #[command(flatten)]
    connector: Connector,
    #[command(flatten)]
    me: Identity,
    /// Local address to send from (default: any).
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// How long to keep sending until acknowledged, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    wait: u64,
}

#[derive(Debug, clap::Args)]
struct ListenArgs {
    /// The port to listen on (the port this monitor registers with `check`).
    #[arg(long, value_name = "P")]
    port: u16,
    /// Local address: any (default; receives both broadcast and unicast), a unicast
    /// address, or the reset-path broadcast address (broadcast copies only).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    bind: IpAddr,
    /// The reset-path key (trailing newline dropped); without it only unsigned
    /// notifications are accepted.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Stop after this many notifications.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// `--output json`: one JSON object per notification instead of a text line.
    #[command(flatten)]
    output: super::OutputArg,
}

/// Resends while nothing has come back, after 150 ms, then doubling up to every second: a
/// check or a stopped notification until answered (bounded by --wait); a reset at most six
/// times, and only until its first reply: the connector joins a repeat to the reset in
/// progress and answers one from its request cache for 10 s after the final reply, but
/// one arriving later would start another.
const UNTIL_ANSWERED: Retry = Retry {
    interval: Duration::from_millis(150),
    max_interval: Duration::from_secs(1),
    sends: u32::MAX,
};
/// Sends at 0, 0.15, 0.45, 1.05, 2.05 and 3.05 s: a datagram lost to a flood costs
/// 150 ms, not a second. The `req` is the same in every copy, so the connector answers a
/// repeat from its request cache without resetting twice.
const RESET_RETRY: Retry = Retry {
    interval: Duration::from_millis(150),
    max_interval: Duration::from_secs(1),
    sends: 6,
};
/// After the reset's final reply, how long to wait for the attention (and vice versa).
const SETTLE: Duration = Duration::from_secs(2);

pub fn run(args: &Args) -> Outcome {
    let r = match &args.command {
        NodeCommand::Check(a) => check(a),
        NodeCommand::Reset(a) => reset(a),
        NodeCommand::Stopped(a) => stopped(a),
        NodeCommand::Listen(a) => listen(a),
        NodeCommand::Key(a) => node_key(a),
    };
    let json = match &args.command {
        NodeCommand::Check(a) => a.connector.output.is_json(),
        NodeCommand::Reset(a) => a.connector.output.is_json(),
        NodeCommand::Stopped(a) => a.connector.output.is_json(),
        NodeCommand::Listen(a) => a.output.is_json(),
        NodeCommand::Key(_) => false,
    };
    r.unwrap_or_else(|e| {
        super::print_error(json, "node", "failed", &format!("{e:#}"));
        Outcome::Trouble
    })
}

/// `haconn node key`: the system's per-node key, from the spec's cluster key.
fn node_key(a: &KeyArgs) -> anyhow::Result<Outcome> {
    use crate::spec::model::{Auth, KeyMode};
    use anyhow::Context;
    let bytes = super::read_input(&a.spec).with_context(|| format!("cannot read {}", a.spec))?;
    let checked = crate::spec::check_bytes(&bytes, crate::spec::CheckOptions::default());
    let Some(spec) = checked.spec else {
        for d in checked.diagnostics.iter() {
            errln!("{}", d.render(&a.spec));
        }
        errln!("haconn node key: {} is not a valid spec", a.spec);
        return Ok(Outcome::Failed);
    };
    let refuse = |why: String| {
        errln!("haconn node key: {why}");
        Ok(Outcome::Failed)
    };
    let Some(system) = spec.system(&a.system) else {
        return refuse(format!(
            "{} holds no system named {}",
            a.spec,
            crate::pipeline::core::shown(&a.system)
        ));
    };
    let master = match &spec.reset_path.auth {
        Auth::None => return refuse("the reset path has no key (`auth: none`)".into()),
        Auth::Hmac(_, KeyMode::Shared) => {
            return refuse(
                "`keyMode: shared`: every node's key file holds the cluster key itself \
                 (resetPath.auth.key), which haconn does not print"
                    .into(),
            );
        }
        Auth::Hmac(secret, KeyMode::PerNode) => secret
            .resolve()
            .context("cannot read the reset-path key (resetPath.auth.key)")?,
    };
    if master.is_empty() {
        return refuse("the reset-path key (resetPath.auth.key) is empty".into());
    }
    let text = format!(
        "{}\n",
        crate::resetpath::keys::node_key(master.as_bytes(), system.name().as_str())
    );
    match &a.out {
        None => out!("{text}"),
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            // An existing file keeps its mode on open: make it private before writing.
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
            f.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(Outcome::Ok)
}

fn key(file: &Option<PathBuf>) -> anyhow::Result<Key> {
    Ok(match file {
        Some(f) => read_key_file(f)?,
        None => Key::None,
    })
}

fn resolve(connector: &str) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    connector
        .to_socket_addrs()
        .with_context(|| format!("--connector {connector}: expected HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--connector {connector}: no address"))
}

/// A client bound on `bind` (default: any address of the connector's family) and `port`.
fn client(c: &Connector, bind: Option<IpAddr>, port: u16) -> anyhow::Result<Client> {
    let to = resolve(&c.connector)?;
    let ip = bind.unwrap_or(match to {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    Ok(Client::bind(
        SocketAddr::new(ip, port),
        to,
        key(&c.key_file)?,
    )?)
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// Says on stderr that nothing answered, and what was dropped instead.
fn no_answer(client: &Client, what: &str, secs: u64) {
    let dropped = client
        .ignored_summary()
        .map(|s| format!("; ignored: {s}"))
        .unwrap_or_default();
    errln!(
        "haconn node: no {what} from {} within {secs} s{dropped}",
        client.connector()
    );
}

fn check(a: &CheckArgs) -> anyhow::Result<Outcome> {
    let mut client = client(&a.connector, a.bind, a.port)?;
    let msg = Message::Check {
        system: a.me.system.clone(),
        subsystem: a.me.subsystem,
        port: client.local_addr().port(),
        pair: a.pair,
    };
    let answer = client.request(&msg, UNTIL_ANSWERED, deadline(a.wait), |r| {
        match &r.env.msg {
            Message::CheckReply {
                system,
                subsystem,
                resettable,
                ..
            } if *system == a.me.system && *subsystem == a.me.subsystem => {
                print_received(r, a.connector.output.is_json());
                Some(*resettable)
            }
            _ => None,
        }
    })?;
    Ok(match answer {
        Some(true) => Outcome::Ok,
        Some(false) => Outcome::Failed,
        None => {
            no_answer(&client, "check reply", a.wait);
            Outcome::Trouble
        }
    })
}

/// What a reset requester has heard so far.
#[derive(Debug, Default)]
struct ResetProgress {
    accepted: bool,
    final_result: Option<ResetResult>,
    attention: Option<AttentionState>,
    /// When the first decisive message came: the other one is waited for until SETTLE after.
    decided_at: Option<Instant>,
}

impl ResetProgress {
    /// Whether the reset is known to have happened.
    fn succeeded(&self) -> bool {
        matches!(
            self.final_result,
            Some(ResetResult::Dump | ResetResult::Poff)
        ) || self.attention.is_some()
    }

    fn failed(&self) -> bool {
        matches!(
            self.final_result,
            Some(ResetResult::Fail | ResetResult::Error)
        )
    }

    /// Nothing more to wait for: refused, or both the final reply and the attention came.
    fn complete(&self) -> bool {
        self.failed() || (self.final_result.is_some() && self.attention.is_some())
    }
}

fn reset(a: &ResetArgs) -> anyhow::Result<Outcome> {
    let mut client = client(&a.connector, a.bind, a.port)?;
    let req = a.req.unwrap_or_else(|| rand::random_range(1..=99_999));
    let msg = Message::Reset {
        req,
        system: a.me.system.clone(),
        subsystem: a.me.subsystem,
        port: client.local_addr().port(),
        target_system: a.target_system.clone(),
        target_subsystem: a.target,
    };
    let end = deadline(a.wait);
    let mut progress = ResetProgress::default();
    let json = a.connector.output.is_json();
    // Records (and prints, once) what concerns this request; false for anything else.
    let note = |r: &Received, progress: &mut ResetProgress| match &r.env.msg {
        Message::ResetReply {
            req: got,
            target_system,
            result,
            ..
        } if *got == req && *target_system == a.target_system => {
            // A retransmitted request joined to the reset is answered again: print once.
            let repeat = match result {
                ResetResult::Accepted => std::mem::replace(&mut progress.accepted, true),
                other => {
                    let repeat = progress.final_result.is_some();
                    progress.final_result.get_or_insert(*other);
                    progress.decided_at.get_or_insert_with(Instant::now);
                    repeat
                }
            };
            if !repeat {
                print_received(r, json);
            }
            true
        }
        Message::Attention { system, state, .. } if *system == a.target_system => {
            print_received(r, json);
            progress.attention = Some(*state);
            progress.decided_at.get_or_insert_with(Instant::now);
            true
        }
        _ => false,
    };
    // Retransmitted until the first reply, then only listened for.
    let first = client.request(&msg, RESET_RETRY, end, |r| {
        note(r, &mut progress).then_some(())
    })?;
    if first.is_none() {
        no_answer(&client, "reply", a.wait);
        return Ok(Outcome::Failed);
    }
    while !progress.complete() {
        let until = match progress.decided_at {
            Some(t) => end.min(t + SETTLE),
            None => end,
        };
        match client.recv(until)? {
            Some(r) => {
                note(&r, &mut progress);
            }
            None => break,
        }
    }
    if progress.succeeded() {
        return Ok(Outcome::Ok);
    }
    if !progress.failed() {
        let what = if progress.accepted {
            "final reply"
        } else {
            "reply"
        };
        no_answer(&client, what, a.wait);
    }
    Ok(Outcome::Failed)
}

fn stopped(a: &StoppedArgs) -> anyhow::Result<Outcome> {
    let mut client = client(&a.connector, a.bind, 0)?;
    let msg = Message::Stopped {
        system: a.me.system.clone(),
        subsystem: a.me.subsystem,
    };
    let acked = client.request(&msg, UNTIL_ANSWERED, deadline(a.wait), |r| {
        match &r.env.msg {
            Message::StoppedAck { system, subsystem }
                if *system == a.me.system && *subsystem == a.me.subsystem =>
            {
                print_received(r, a.connector.output.is_json());
                Some(())
            }
            _ => None,
        }
    })?;
    Ok(match acked {
        Some(()) => Outcome::Ok,
        None => {
            no_answer(&client, "acknowledgement", a.wait);
            Outcome::Trouble
        }
    })
}

fn listen(a: &ListenArgs) -> anyhow::Result<Outcome> {
    let mut client = Client::listen(SocketAddr::new(a.bind, a.port), key(&a.key_file)?)?;
    errln!("haconn node: listening on {}", client.local_addr());
    let end = a.timeout.map(deadline);
    let mut seen = 0;
    while a.count.is_none_or(|n| seen < n) {
        // Without --timeout, wait in hour-long steps until --count (or forever).
        let until = end.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        match client.recv(until)? {
            Some(r) if matches!(r.env.msg, Message::Attention { .. }) => {
                print_received(&r, a.output.is_json());
                seen += 1;
                if super::out::Quiet::stdout().is_gone() {
                    // Nobody reads the notifications any more (`| head -1`).
                    return Ok(Outcome::Ok);
                }
            }
            Some(_) => {}
            None if end.is_some() => {
                if a.count.is_none() {
                    return Ok(Outcome::Ok);
                }
                if let Some(s) = client.ignored_summary() {
                    errln!("haconn node: ignored: {s}");
                }
                errln!(
                    "haconn node: {seen} of {} notifications within {} s",
                    a.count.unwrap_or_default(),
                    a.timeout.unwrap_or_default()
                );
                return Ok(Outcome::Failed);
            }
            None => {}
        }
    }
    Ok(Outcome::Ok)
}

fn print_received(r: &Received, json: bool) {
    use std::io::Write;
    let line = if json {
        let mut v = serde_json::to_value(&r.env.msg).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.insert("from".into(), r.from.to_string().into());
        }
        v.to_string()
    } else {
        format!("{} from={}", describe(&r.env.msg), r.from)
    };
    let mut out = super::out::Quiet::stdout();
    // Line by line, so a caller reading a pipe sees each message as it arrives.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A message as one `KIND key=value ...` line.
fn describe(msg: &Message) -> String {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let reason = |r: &Option<String>| {
        r.as_ref()
            .map(|r| format!(" reason={r:?}"))
            .unwrap_or_default()
    };
    match msg {
        Message::CheckReply {
            system,
            subsystem,
            resettable,
            via,
            redundant,
            reason: why,
            warning,
        } => format!(
            "CHECK-REPLY system={system} subsystem={subsystem} resettable={} via={via} redundant={}{}{}",
            yes(*resettable),
            yes(*redundant),
            reason(why),
            warning
                .as_ref()
                .map(|w| format!(" warning={w:?}"))
                .unwrap_or_default()
        ),
        Message::ResetReply {
            req,
            target_system,
            target_subsystem,
            result,
            reason: why,
        } => format!(
            "RESET-REPLY req={req} target-system={target_system} target={target_subsystem} result={}{}",
            word(result),
            reason(why)
        ),
        Message::Attention {
            system,
            subsystem,
            state,
            req,
        } => format!(
            "ATTENTION system={system} subsystem={subsystem} state={} req={}",
            word(state),
            req.map_or_else(|| "----".to_string(), |r| r.to_string())
        ),
        Message::StoppedAck { system, subsystem } => {
            format!("STOPPED-ACK system={system} subsystem={subsystem}")
        }
        other => format!("{other:?}"),
    }
}

/// The protocol's upper-case word for a result or state (its JSON spelling).
fn word<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}
