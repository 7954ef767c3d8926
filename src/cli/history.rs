//! `haconn history`: every reset in the fence history of the state dir — who asked, each
//! stage with its time, how it ended and on what evidence. Read from the files, so it
//! works whether the daemon runs or not.

use std::path::PathBuf;

use super::{Outcome, OutputArg, print_error, print_json};
use crate::pipeline::history::{self, Entry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only resets of this system.
    #[arg(long, value_name = "NAME")]
    pub system: Option<String>,
    /// Only resets started at or after this time: `30m`, `2h`, `1d` ago, or a local time
    /// (`2026-11-30 14:00`, RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = super::show::parse_since)]
    pub since: Option<i64>,
    /// The daemon's state dir.
    #[arg(long, env = "HACONN_STATE_DIR", default_value = "/var/lib/haconn")]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub output: OutputArg,
}

#[derive(serde::Serialize)]
struct Reply<'a> {
    resets: Vec<&'a Entry>,
}

pub fn run(args: &Args) -> Outcome {
    let json = args.output.is_json();
    let all = match history::read(&args.state_dir) {
        Ok(a) => a,
        Err(e) => {
            let msg = format!(
                "cannot read the history in {}: {e}",
                args.state_dir.display()
            );
            print_error(json, "history", "io", &msg);
            return Outcome::Trouble;
        }
    };
    let started_ms = |e: &Entry| {
        chrono::DateTime::parse_from_rfc3339(&e.started)
            .map(|t| t.timestamp_millis())
            .unwrap_or(i64::MAX)
    };
    let resets: Vec<&Entry> = all
        .iter()
        .filter(|e| args.system.as_deref().is_none_or(|s| e.system == s))
        .filter(|e| args.since.is_none_or(|s| started_ms(e) >= s))
        .collect();
    if json {
        print_json(&Reply { resets });
    } else {
        out!("{}", render(&resets));
    }
    Outcome::Ok
}

/// A block per reset: the header line, then its stages, then the end.
pub fn render(resets: &[&Entry]) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    if resets.is_empty() {
        t.push_str("no resets in the history\n");
    }
    let time = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s).map_or_else(
            |_| s.to_string(),
            |d| d.format("%Y/%m/%d %H:%M:%S%.6f").to_string(),
        )
    };
    for e in resets {
        let _ = writeln!(
            t,
            "[{}] {} ({}) asked by {}",
            time(&e.started),
            e.system,
            e.kind,
            e.by
        );
        for s in &e.stages {
            let _ = writeln!(t, "    [{}] {}", time(&s.at), s.stage);
        }
        match (&e.ended, &e.outcome, &e.evidence) {
            (Some(at), Some(outcome), Some(evidence)) => {
                let _ = writeln!(t, "    [{}] {outcome}: {evidence}", time(at));
            }
            _ => t.push_str("    unfinished (running, or the daemon stopped before it ended)\n"),
        }
    }
    t
}
