//! `haconn dump`: one tar.gz for a support case — every log generation, the state dir,
//! the applied spec normalized with every secret masked, the daemon's `show` outputs and
//! versions when it answers, and host facts — written with mode 0600, never over an
//! existing file.
//!
//! No secret of the spec goes in. Specs are packed only as normalized YAML with secrets
//! masked (the daemon's `show settings --output yaml`, and the state dir's `applied.yaml`
//! read and rendered the same way); of the state dir only files known to hold no key
//! material are packed, every other one is named in `README.txt` and left out. As a second
//! guard, every inline secret of the applied spec found in a packed file is masked, and
//! `README.txt` says where (which would be a bug elsewhere).
//!
//! Everything is bounded: the files packed ([`MAX_FILES`], [`MAX_FILE_BYTES`] each, a
//! longer one taken by its end), every control-socket answer ([`DAEMON_TIMEOUT`]) and
//! every command run for host facts ([`COMMAND_TIMEOUT`], [`COMMAND_BYTES`]).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Outcome, SocketArg};
use crate::daemon::client::{ClientError, request_within};
use crate::daemon::protocol::{
    AlertsReply, GetReply, HamonitorReply, IpduSettingReply, PeerDumpReply, Request, StatusReply,
    VERSION, VersionReply,
};

/// Longest file packed; a longer one is taken by its last this many bytes (rotation keeps
/// haconn's own files far below: 10 MiB by default).
pub const MAX_FILES: usize = 512;
pub const MAX_FILE_BYTES: u64 = 64 << 20;
/// How long the daemon may take for each answer.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command run for host facts may take, and how much of its output is kept.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
pub const COMMAND_BYTES: u64 = 256 << 10;
/// Inline secrets shorter than this are not searched for in packed files (a short one
/// would mask ordinary words); the first guard, packing nothing that holds one, is the
/// same for all.
const MASK_MIN_LEN: usize = 8;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the archive (mode 0600; an existing file is never overwritten).
    /// Default: `haconn-dump-HOST-YYYYmmdd-HHMMSS.tar.gz` in the current directory.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The daemon's state dir.
    #[arg(long, env = "HACONN_STATE_DIR", default_value = "/var/lib/haconn")]
    pub state_dir: PathBuf,
    /// The daemon's log dir.
    #[arg(long, env = "HACONN_LOG_DIR", default_value = "/var/log/haconn")]
    pub log_dir: PathBuf,
    #[command(flatten)]
    pub socket: SocketArg,
}

pub fn run(args: &Args) -> Outcome {
    let now = chrono::Local::now();
    let host = host_name();
    let base = default_name(&host, now);
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{base}.tar.gz")));
    let file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            errln!("haconn dump: cannot create {}: {e}", path.display());
            return Outcome::Trouble;
        }
    };
    let dump = collect(
        &args.state_dir,
        &args.log_dir,
        &args.socket.control_socket,
        true,
        now,
    );
    if let Some(Err(why)) = &dump.peer_archive {
        errln!(
            "haconn dump: the peer's archive could not be fetched ({why}); run haconn dump on {} too",
            dump.peer.as_deref().unwrap_or("the peer")
        );
    }
    match write_archive(file, &base, &dump, now) {
        Ok(bytes) => {
            if let Some(why) = &dump.daemon_down {
                errln!(
                    "haconn dump: the daemon did not answer ({why}); the archive has the logs, the state dir and the host facts, and says so"
                );
            }
            outln!(
                "{} ({} files, {bytes} bytes)",
                path.display(),
                dump.members.len() + 1
            );
            Outcome::Ok
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            errln!("haconn dump: cannot write {}: {e}", path.display());
            Outcome::Trouble
        }
    }
}

/// `haconn-dump-HOST-YYYYmmdd-HHMMSS`: the default file name without `.tar.gz`, and the
/// archive's top directory.
pub fn default_name(host: &str, at: chrono::DateTime<chrono::Local>) -> String {
    format!("haconn-dump-{host}-{}", at.format("%Y%m%d-%H%M%S"))
}

/// The host name, in the characters a file name takes safely (`unknown` when unknown).
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

/// One file of the archive, under its top directory.
struct Member {
    path: String,
    data: Vec<u8>,
    /// Seconds since the epoch.
    mtime: u64,
}

/// What goes in the archive, and what `README.txt` says about it.
#[derive(Default)]
struct Dump {
    members: Vec<Member>,
    /// Left out or cut, and why.
    notes: Vec<String>,
    /// Why the daemon did not answer (`None`: it did).
    daemon_down: Option<String>,
    /// The peer's name, in a pair.
    peer: Option<String>,
    /// The peer's own archive as fetched over the mlan: its size, or why not (`None`: not
    /// asked, as when this archive is itself for the peer).
    peer_archive: Option<Result<usize, String>>,
    /// The applied spec's inline secret values, masked wherever found.
    secrets: Vec<String>,
    /// Where one was found and masked: (member, occurrences).
    masked: Vec<(String, usize)>,
}

impl Dump {
    fn add(&mut self, path: &str, data: impl Into<Vec<u8>>, mtime: u64) {
        let mut data = data.into();
        let found = mask_secrets(&mut data, &self.secrets);
        if found > 0 {
            self.masked.push((path.to_string(), found));
        }
        self.members.push(Member {
            path: path.to_string(),
            data,
            mtime,
        });
    }

    fn json(&mut self, path: &str, v: &impl serde::Serialize, mtime: u64) {
        let mut text = serde_json::to_string_pretty(v).expect("json serializes");
        text.push('\n');
        self.add(path, text, mtime);
    }
}

/// Replaces every occurrence of each secret (longest first) with the mask; returns how
/// many were found.
fn mask_secrets(data: &mut Vec<u8>, secrets: &[String]) -> usize {
    let mut found = 0;
    for s in secrets.iter().filter(|s| s.len() >= MASK_MIN_LEN) {
        let needle = s.as_bytes();
        if !data.windows(needle.len()).any(|w| w == needle) {
            continue;
        }
        let mut out = Vec::with_capacity(data.len());
        let mut i = 0;
        while i < data.len() {
            if data[i..].starts_with(needle) {
                out.extend_from_slice(crate::spec::secret::MASK.as_bytes());
                i += needle.len();
                found += 1;
            } else {
                out.push(data[i]);
                i += 1;
            }
        }
        *data = out;
    }
    found
}

/// This server's archive as bytes, for the peer's `haconn dump` (sent over the mlan): what
/// `haconn dump` packs here, without asking the peer for its own in turn.
pub fn archive_bytes(state_dir: &Path, log_dir: &Path, socket: &Path) -> Result<Vec<u8>, String> {
    let now = chrono::Local::now();
    let base = default_name(&host_name(), now);
    let dump = collect(state_dir, log_dir, socket, false, now);
    write_tar(Vec::new(), &base, &dump, now).map_err(|e| format!("packing the archive: {e}"))
}

/// How long `haconn dump` waits for the peer's archive (the daemon's own bound, plus the
/// control socket's way).
const PEER_WAIT: Duration = Duration::from_secs(70);

fn collect(
    state_dir: &Path,
    log_dir: &Path,
    socket: &Path,
    with_peer: bool,
    now: chrono::DateTime<chrono::Local>,
) -> Dump {
    let mut dump = Dump::default();
    let t = now.timestamp().max(0) as u64;
    // The state dir first: its applied spec tells which values to mask everywhere.
    let state = read_state(state_dir, &mut dump);
    let client = VersionReply::this_build();
    let daemon_version = daemon_outputs(socket, &mut dump, t);
    if with_peer && let Some(peer) = dump.peer.clone() {
        // Packed by the peer with its own secrets masked; taken as it is (masking here
        // could only corrupt compressed bytes).
        let fetched =
            request_within::<PeerDumpReply>(socket, &Request::PeerDump { v: VERSION }, PEER_WAIT)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    use base64ct::Encoding;
                    base64ct::Base64::decode_vec(&r.archive)
                        .map_err(|e| format!("the archive is not base64: {e}"))
                });
        dump.peer_archive = Some(match fetched {
            Ok(bytes) => {
                let n = bytes.len();
                dump.members.push(Member {
                    path: format!("peer/{peer}.tar.gz"),
                    data: bytes,
                    mtime: t,
                });
                Ok(n)
            }
            Err(why) => Err(why),
        });
    }
    let versions = super::show::Versions::of(client, daemon_version);
    dump.json("versions.json", &versions, t);
    host_facts(now, &mut dump, t);
    for (name, data, mtime) in state {
        dump.add(&name, data, mtime);
    }
    read_logs(log_dir, &mut dump);
    dump
}

/// The daemon's answers under `daemon/`; its version when it gave it.
fn daemon_outputs(socket: &Path, dump: &mut Dump, t: u64) -> Option<VersionReply> {
    let v = VERSION;
    let mut errors = String::new();
    macro_rules! ask {
        ($what:expr, $req:expr) => {
            match request_within(socket, &$req, DAEMON_TIMEOUT) {
                Ok(r) => Some(r),
                Err(e) => {
                    let _ = writeln!(errors, "{}: {e}", $what);
                    None
                }
            }
        };
    }
    let status: StatusReply = match request_within(socket, &Request::Status { v }, DAEMON_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let why = e.to_string();
            let text = format!(
                "The daemon did not answer at {} when this dump was made:\n{why}\n\nSo this \
                 archive has no `show` outputs and no daemon version; the logs, the state dir \
                 and the host facts are here.\n",
                socket.display()
            );
            dump.add("daemon/UNREACHABLE.txt", text, t);
            dump.daemon_down = Some(match e {
                ClientError::Unreachable { source, .. } => source.to_string(),
                other => other.to_string(),
            });
            return None;
        }
    };
    dump.json("daemon/status.json", &status, t);
    dump.json(
        "daemon/ipdu.json",
        &super::show::PdusReply {
            pdus: status.hardware.pdus.iter().collect(),
        },
        t,
    );
    if let Some(pair) = &status.pair {
        dump.peer = Some(pair.peer.clone());
        let row = status
            .hardware
            .mservers
            .iter()
            .find(|m| m.name == pair.peer);
        dump.json(
            "daemon/peer-status.json",
            &serde_json::json!({"pair": pair, "peer": row}),
            t,
        );
    }
    let version: Option<VersionReply> = ask!("show version", Request::Version { v });
    if let Some(r) = &version {
        dump.json("daemon/version.json", r, t);
    }
    if let Some(r) = ask!("show settings", Request::Get { v }) {
        let r: GetReply = r;
        dump.add("daemon/spec.yaml", r.spec.clone(), t);
        dump.json("daemon/settings.json", &r.settings, t);
        dump.json(
            "daemon/mserver-settings.json",
            &super::show::MserverSettingsReply {
                management_servers: &r.view.management_servers,
            },
            t,
        );
    }
    let hamonitor: Option<HamonitorReply> =
        ask!("show hamonitor", Request::Hamonitor { v, name: None });
    if let Some(r) = hamonitor {
        dump.json("daemon/hamonitor.json", &r, t);
    }
    let ipdu: Option<IpduSettingReply> = ask!("show ipdu-setting", Request::IpduSetting { v });
    if let Some(r) = ipdu {
        dump.json("daemon/ipdu-setting.json", &r, t);
    }
    let alerts: Option<AlertsReply> = ask!(
        "show alerts",
        Request::Alerts {
            v,
            since_ms: None,
            server: None
        }
    );
    if let Some(r) = alerts {
        dump.json("daemon/alerts.json", &r, t);
    }
    if !errors.is_empty() {
        dump.add("daemon/ERRORS.txt", errors, t);
    }
    version
}

/// What of the state dir is packed as it is: files that hold no key material.
fn state_file_packed(name: &str) -> bool {
    [
        crate::pipeline::history::FILE,
        "history.jsonl.1",
        crate::pipeline::HIGH_WATER_FILE,
        // Public host keys, pinned or trusted on first use.
        "esxi_known_hosts",
    ]
    .contains(&name)
}

/// The state dir's files for `state/` (read now, packed after the daemon's answers), and
/// the applied spec's secrets into `dump.secrets`.
fn read_state(dir: &Path, dump: &mut Dump) -> Vec<(String, Vec<u8>, u64)> {
    let mut out = Vec::new();
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            dump.notes
                .push(format!("state dir {}: cannot read it: {e}", dir.display()));
            return out;
        }
    };
    for (name, path) in entries {
        let member = format!("state/{name}");
        if name == "applied.yaml" {
            match read_bounded(&path) {
                Ok(r) if !r.cut => match applied_masked(&r.data) {
                    Some((text, secrets)) => {
                        dump.secrets = secrets;
                        out.push((member, text.into_bytes(), r.mtime));
                    }
                    None => dump.notes.push(format!(
                        "{member}: left out: not a valid spec, so its secrets cannot be told \
                         apart from the rest"
                    )),
                },
                Ok(_) => dump
                    .notes
                    .push(format!("{member}: left out: larger than a spec can be")),
                Err(e) => dump.notes.push(format!("{member}: cannot read it: {e}")),
            }
        } else if state_file_packed(&name) {
            pack_file(&path, &member, dump, &mut out);
        } else if name != "lock" {
            dump.notes.push(format!(
                "{member}: left out: not a file haconn dump knows to hold no secret"
            ));
        }
    }
    out
}

/// The state file's spec as normalized YAML with every secret masked, and its inline
/// secret values; `None` when it is not a valid spec.
fn applied_masked(bytes: &[u8]) -> Option<(String, Vec<String>)> {
    let spec = crate::spec::check_bytes(bytes, crate::spec::CheckOptions::default()).spec?;
    let text = format!(
        "# haconn dump: the state dir's applied.yaml, normalized, every secret masked.\n{}",
        crate::spec::render::normalized_yaml(&spec)
    );
    Some((text, spec.inline_secret_values()))
}

/// Reads a file into `out` as `member`, saying in the notes when it was cut or unreadable.
fn pack_file(path: &Path, member: &str, dump: &mut Dump, out: &mut Vec<(String, Vec<u8>, u64)>) {
    match read_bounded(path) {
        Ok(r) => {
            if r.cut {
                dump.notes.push(format!(
                    "{member}: larger than {MAX_FILE_BYTES} bytes: its last {MAX_FILE_BYTES} bytes are here"
                ));
            }
            out.push((member.to_string(), r.data, r.mtime));
        }
        Err(e) => dump.notes.push(format!("{member}: cannot read it: {e}")),
    }
}

/// A log file of haconn's: `NAME.log` or a generation `NAME.log.N`.
pub fn is_log_generation(name: &str) -> bool {
    let Some((stem, rest)) = name.split_once(".log") else {
        return false;
    };
    let stem_ok = !stem.is_empty()
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let rest_ok = rest.is_empty()
        || rest.strip_prefix('.').is_some_and(|n| {
            !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit())
        });
    stem_ok && rest_ok
}

/// Every log generation of the log dir under `logs/`.
fn read_logs(dir: &Path, dump: &mut Dump) {
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            dump.notes
                .push(format!("log dir {}: cannot read it: {e}", dir.display()));
            return;
        }
    };
    let mut out = Vec::new();
    for (name, path) in entries {
        let member = format!("logs/{name}");
        if !is_log_generation(&name) {
            dump.notes
                .push(format!("{member}: left out: not a haconn log"));
        } else if dump.members.len() + out.len() >= MAX_FILES {
            dump.notes
                .push(format!("{member}: left out: more than {MAX_FILES} files"));
        } else {
            pack_file(&path, &member, dump, &mut out);
        }
    }
    for (name, data, mtime) in out {
        dump.add(&name, data, mtime);
    }
}

/// A directory's entries by name (`event.log`, `event.log.1`, … `event.log.10` in
/// numeric order), at most [`MAX_FILES`] of them.
fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .take(4 * MAX_FILES)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    let key = |n: &str| match n.rsplit_once('.') {
        Some((head, num)) if num.bytes().all(|b| b.is_ascii_digit()) && !num.is_empty() => {
            (head.to_string(), num.parse::<u64>().unwrap_or(u64::MAX))
        }
        _ => (n.to_string(), 0),
    };
    v.sort_by_key(|(n, _)| key(n));
    Ok(v)
}

struct FileRead {
    data: Vec<u8>,
    mtime: u64,
    /// Longer than [`MAX_FILE_BYTES`]: `data` is its end.
    cut: bool,
}

/// A regular file's content (not through a link; a FIFO or device is refused, never
/// read), at most [`MAX_FILE_BYTES`] of it.
fn read_bounded(path: &Path) -> std::io::Result<FileRead> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let cut = meta.len() > MAX_FILE_BYTES;
    if cut {
        f.seek(SeekFrom::Start(meta.len() - MAX_FILE_BYTES))?;
    }
    let mut data = Vec::new();
    (&mut f).take(MAX_FILE_BYTES).read_to_end(&mut data)?;
    Ok(FileRead {
        data,
        mtime: meta.mtime().max(0) as u64,
        cut,
    })
}

/// `host/`: what the host was like, read from /proc and commands that need no privilege.
fn host_facts(now: chrono::DateTime<chrono::Local>, dump: &mut Dump, t: u64) {
    let proc = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|e| format!("({p}: {e})"))
    };
    dump.add("host/uname.txt", command("uname", &["-a"]), t);
    dump.add(
        "host/hostname.txt",
        format!("{}\n", proc("/proc/sys/kernel/hostname")),
        t,
    );
    let up_secs = proc("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| s as u64);
    let mut up = String::new();
    if let Some(s) = up_secs {
        let _ = writeln!(
            up,
            "up {} days, {:02}:{:02}:{:02}",
            s / 86_400,
            s / 3600 % 24,
            s / 60 % 60,
            s % 60
        );
    }
    let _ = writeln!(up, "/proc/uptime: {}", proc("/proc/uptime"));
    let _ = writeln!(up, "/proc/loadavg: {}", proc("/proc/loadavg"));
    dump.add("host/uptime.txt", up, t);
    dump.add("host/ip-addr.txt", command("ip", &["-br", "addr"]), t);
    let mut time = String::new();
    let _ = writeln!(time, "local: {}", now.to_rfc3339());
    let _ = writeln!(
        time,
        "utc:   {}",
        now.with_timezone(&chrono::Utc).to_rfc3339()
    );
    let _ = writeln!(
        time,
        "TZ: {}",
        std::env::var("TZ").unwrap_or_else(|_| "(not set)".into())
    );
    let _ = writeln!(time, "/etc/timezone: {}", proc("/etc/timezone"));
    let _ = writeln!(
        time,
        "/etc/localtime: {}",
        std::fs::read_link("/etc/localtime")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("({e})"))
    );
    dump.add("host/time.txt", time, t);
    dump.add(
        "host/os-release.txt",
        format!("{}\n", proc("/etc/os-release")),
        t,
    );
}

/// A command's output (stdout and stderr together), at most [`COMMAND_BYTES`] of it and
/// [`COMMAND_TIMEOUT`] of its time (then killed); what went wrong is said in the text.
fn command(program: &str, args: &[&str]) -> String {
    let shown = std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let run = || -> std::io::Result<String> {
        let (mut reader, writer) = std::io::pipe()?;
        let mut child = std::process::Command::new(program)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(std::process::Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()?;
        // The command holds the only write ends now: the reader ends when it exits.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let r = (&mut reader).take(COMMAND_BYTES).read_to_end(&mut out);
            let _ = tx.send(r.map(|_| out));
        });
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = rx
            .recv_timeout(Duration::from_millis(500))
            .map_err(|_| std::io::Error::other("its output did not end"))??;
        let mut text = String::from_utf8_lossy(&out).into_owned();
        match status {
            Some(s) if s.success() => {}
            Some(s) => {
                let _ = writeln!(text, "({shown}: {s})");
            }
            None => {
                let _ = writeln!(text, "({shown}: killed after {COMMAND_TIMEOUT:?})");
            }
        }
        Ok(text)
    };
    let body = run().unwrap_or_else(|e| format!("({shown}: {e})\n"));
    format!("$ {shown}\n{body}")
}

/// Writes the archive to `file`, synced; returns its size.
fn write_archive(
    file: File,
    base: &str,
    dump: &Dump,
    now: chrono::DateTime<chrono::Local>,
) -> std::io::Result<u64> {
    let out = write_tar(std::io::BufWriter::new(file), base, dump, now)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(file.metadata()?.len())
}

/// The tar.gz: every member under `base/`, then `README.txt`; gives `w` back, flushed.
fn write_tar<W: Write>(
    w: W,
    base: &str,
    dump: &Dump,
    now: chrono::DateTime<chrono::Local>,
) -> std::io::Result<W> {
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let t = now.timestamp().max(0) as u64;
    let readme = readme(dump, now);
    let members = dump
        .members
        .iter()
        .map(|m| (m.path.as_str(), m.data.as_slice(), m.mtime))
        .chain(std::iter::once(("README.txt", readme.as_bytes(), t)));
    for (path, data, mtime) in members {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        tar.append_data(&mut header, format!("{base}/{path}"), data)?;
    }
    let gz = tar.into_inner()?;
    let mut out = gz.finish()?;
    out.flush()?;
    Ok(out)
}

fn readme(dump: &Dump, now: chrono::DateTime<chrono::Local>) -> String {
    let me = VersionReply::this_build();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "haconn dump of {} made {} by {}\n",
        host_name(),
        now.to_rfc3339(),
        me.line()
    );
    t.push_str(
        "What is here\n\
         \x20 README.txt     this file\n\
         \x20 versions.json  this client's version and the daemon's; `warning` when they differ\n\
         \x20 host/          uname -a, host name, uptime and load, ip -br addr, time and time zone, os-release\n\
         \x20 daemon/        the daemon's answers: show status, hamonitor, ipdu, ipdu-setting, settings,\n\
         \x20                mserver-settings, alerts (JSON), version, and spec.yaml (show settings --output\n\
         \x20                yaml: the live spec normalized, every secret masked)\n\
         \x20 state/         the state dir: applied.yaml (normalized, every secret masked), the fence\n\
         \x20                history (history.jsonl and .1), resetpath-highwater, esxi_known_hosts\n\
         \x20 logs/          every generation of every log in the log dir\n\n\
         Secrets\n\
         \x20 No secret of the spec is in this archive: specs are here only normalized with every\n\
         \x20 secret masked (********); a state-dir file that may hold key material is left out\n\
         \x20 (listed below). `{file:}` and `{env:}` references are shown: they are not secret.\n\n",
    );
    t.push_str("The daemon\n");
    match &dump.daemon_down {
        Some(why) => {
            let _ = writeln!(
                t,
                "  did NOT answer ({why}): no show outputs and no daemon version (daemon/UNREACHABLE.txt).\n"
            );
        }
        None => t.push_str(
            "  answered; daemon/ holds its answers (daemon/ERRORS.txt any it refused).\n\n",
        ),
    }
    t.push_str("Pair\n");
    match &dump.peer {
        Some(peer) => {
            let _ = writeln!(
                t,
                "  This server is one of a pair; its peer is {peer}. daemon/peer-status.json is the peer as\n  this server's pair status knows it (role, link, state, spec sync)."
            );
            let _ = match &dump.peer_archive {
                Some(Ok(n)) => writeln!(
                    t,
                    "  peer/{peer}.tar.gz ({n} bytes) is {peer}'s own dump (its logs, state dir, show outputs and\n  host facts, its secrets masked there), packed by its daemon and sent over the mlan.\n"
                ),
                Some(Err(why)) => writeln!(
                    t,
                    "  {peer}'s own dump could not be fetched over the mlan ({why}):\n  run `haconn dump` on {peer} too.\n"
                ),
                None => writeln!(
                    t,
                    "  This archive was packed for {peer}'s `haconn dump` and holds this server's files only.\n"
                ),
            };
        }
        None => t.push_str(
            "  No peer known (a single management server, or the daemon did not answer). In a pair,\n  run `haconn dump` on each management server: a peer's files cannot be reached over the mlan.\n\n",
        ),
    }
    if !dump.masked.is_empty() {
        t.push_str(
            "MASKED: a secret of the applied spec was found, and masked, in these files (a bug: report it):\n",
        );
        for (m, n) in &dump.masked {
            let _ = writeln!(t, "  {m}: {n} time(s)");
        }
        t.push('\n');
    }
    t.push_str("Left out, cut or unreadable\n");
    if dump.notes.is_empty() {
        t.push_str("  nothing\n");
    }
    for n in &dump.notes {
        let _ = writeln!(t, "  {n}");
    }
    t.push_str("\nFiles (bytes)\n");
    for m in &dump.members {
        let _ = writeln!(t, "  {:<40} {}", m.path, m.data.len());
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_packs_log_generations_only() {
        for ok in [
            "event.log",
            "reset.log.1",
            "error.log.12",
            "alert.log",
            "init.log.5",
        ] {
            assert!(is_log_generation(ok), "{ok}");
        }
        for no in [
            "event.log.tmp",
            "event.log.",
            ".log",
            "applied.yaml",
            "event.log.1.gz",
            "a b.log",
            "event.logx",
        ] {
            assert!(!is_log_generation(no), "{no}");
        }
    }

    #[test]
    fn dump_keeps_only_state_files_without_key_material() {
        for ok in [
            "history.jsonl",
            "history.jsonl.1",
            "resetpath-highwater",
            "esxi_known_hosts",
        ] {
            assert!(state_file_packed(ok), "{ok}");
        }
        for no in ["applied.yaml", ".applied.yaml.tmp.42", "lock", "key", "x"] {
            assert!(!state_file_packed(no), "{no}");
        }
    }

    #[test]
    fn dump_masks_every_occurrence_and_counts_them() {
        let secrets = vec!["Secret0Value".to_string(), "short".to_string()];
        let mut data = b"a Secret0Value b Secret0ValueSecret0Value short".to_vec();
        assert_eq!(mask_secrets(&mut data, &secrets), 3);
        assert_eq!(
            String::from_utf8(data).unwrap(),
            "a ******** b **************** short"
        );
    }

    #[test]
    fn dump_masks_the_applied_spec_and_knows_its_secrets() {
        let spec = "apiVersion: haconn/v1\nmode: single\nresetPath:\n  address: 127.0.0.1/8\n  port: 15001\n  auth: {key: Cluster0Key0Secret0123}\nmanagementServers:\n  - name: ms01\n    bmc: {address: 127.0.0.2, username: admin, password: Ms0Passw0rd}\n    mlan: {address: 127.0.0.1, port: 15002}\nservers:\n  - {name: node01, bmc: {address: 127.0.0.11, username: admin, password: Node0Passw0rd, kg: Kg0Secret}}\n";
        let (text, secrets) = applied_masked(spec.as_bytes()).expect("a valid spec");
        for s in [
            "Cluster0Key0Secret0123",
            "Ms0Passw0rd",
            "Node0Passw0rd",
            "Kg0Secret",
        ] {
            assert!(!text.contains(s), "{s} in\n{text}");
            assert!(secrets.iter().any(|x| x == s), "{s} not known: {secrets:?}");
        }
        assert!(text.contains("********"), "{text}");
        assert!(applied_masked(b"apiVersion: haconn/v1\nbogus: 1\n").is_none());
    }

    #[test]
    fn dump_sorts_generations_by_number() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["event.log.10", "event.log", "event.log.2", "alert.log"] {
            std::fs::write(dir.path().join(n), "x").unwrap();
        }
        let names: Vec<String> = sorted_entries(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            ["alert.log", "event.log", "event.log.2", "event.log.10"]
        );
    }

    #[test]
    fn dump_runs_commands_bounded() {
        let out = command("sh", &["-c", "echo hi; echo err >&2"]);
        assert!(out.starts_with("$ sh -c"), "{out}");
        assert!(out.contains("hi\n") && out.contains("err\n"), "{out}");
        assert!(command("haconn-no-such-command", &[]).contains("haconn-no-such-command:"));
        let t = Instant::now();
        let out = command("sleep", &["30"]);
        assert!(t.elapsed() < Duration::from_secs(10), "{out}");
        assert!(out.contains("killed after"), "{out}");
    }
}
