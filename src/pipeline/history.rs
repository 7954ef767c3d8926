//! The fence history (issue 16): every reset, who asked for it, its stages with their
//! times, how it ended and on what evidence — kept in the state dir, so it survives
//! restarts and the rotation of the text logs, and read by `haconn history` whether the
//! daemon runs or not.
//!
//! The pipeline thread queues one event per fact (a reset started, a stage, its end) to a
//! writer thread (the thread never waits for the disk); the writer appends each as a JSON
//! line to `history.jsonl`, and when that passes [`MAX_FILE`] moves it to `history.jsonl.1`
//! (one older generation kept: at most twice [`MAX_FILE`] on disk). Events of one reset
//! share its key, unique across restarts (the daemon's start time and the reset's id), so
//! a reset cut short by a crash still shows, as unfinished, and a stage that comes after
//! the end (outlets switched back on) joins its reset.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The current file's name in the state dir.
pub const FILE: &str = "history.jsonl";
/// Past this size the current file becomes the previous generation.
pub const MAX_FILE: u64 = 4 << 20;

/// One line of the history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The reset this is about: `<daemon start, Unix ms>-<reset id>`.
    pub reset: String,
    /// Local time, RFC 3339 with microseconds.
    pub at: String,
    #[serde(flatten)]
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum What {
    Start {
        system: String,
        /// `P` or `V`.
        kind: String,
        /// Who asked: `HA monitor NAME (IP:PORT, req N)`, `operator (test soft reset)`,
        /// `fence agent`, with `, carried on after a takeover` when it was.
        by: String,
    },
    Stage {
        stage: String,
    },
    End {
        /// `DUMP`, `REBOOT`, `POFF` or `FAIL`.
        outcome: String,
        /// What proved it, or why it failed.
        evidence: String,
    },
}

/// A reset as `haconn history` shows it, from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub reset: String,
    pub system: String,
    pub kind: String,
    pub by: String,
    pub started: String,
    pub stages: Vec<Stage>,
    /// `None` while running, or when the daemon stopped before it ended.
    pub ended: Option<String>,
    pub outcome: Option<String>,
    pub evidence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub at: String,
    pub stage: String,
}

/// Queues history events for the writer thread.
#[derive(Debug, Clone)]
pub struct HistorySink {
    tx: Option<std::sync::mpsc::Sender<Event>>,
    boot: i64,
}

impl HistorySink {
    /// Starts the writer of `dir/history.jsonl`.
    pub fn spawn(dir: &Path) -> io::Result<HistorySink> {
        let path = dir.join(FILE);
        let (tx, rx) = std::sync::mpsc::channel::<Event>();
        std::thread::Builder::new()
            .name("haconn-history".into())
            .spawn(move || {
                for ev in rx {
                    if let Err(e) = append(&path, &ev) {
                        tracing::error!(error = %e, path = %path.display(), "cannot write the history");
                    }
                }
            })?;
        Ok(HistorySink {
            tx: Some(tx),
            boot: chrono::Local::now().timestamp_millis(),
        })
    }

    /// A sink that keeps nothing (no state dir).
    pub fn discard() -> HistorySink {
        HistorySink { tx: None, boot: 0 }
    }

    pub fn record(&self, reset: u64, what: What) {
        self.record_as(&reset.to_string(), what);
    }

    /// [`HistorySink::record`] for an action that is not a reset of the core (a fence
    /// agent's power off or on): `key` must not be a reset id.
    pub fn record_as(&self, key: &str, what: What) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Event {
                reset: format!("{}-{key}", self.boot),
                at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                what,
            });
        }
    }
}

/// Appends one event, moving the file to its previous generation first when it is full.
fn append(path: &Path, ev: &Event) -> io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() >= MAX_FILE) {
        std::fs::rename(path, previous(path))?;
    }
    let mut line = serde_json::to_string(ev).map_err(io::Error::other)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

fn previous(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Every reset in the history of state dir `dir`, oldest first. Lines that do not parse
/// (a line cut by a crash) are skipped.
pub fn read(dir: &Path) -> io::Result<Vec<Entry>> {
    let path = dir.join(FILE);
    let mut events = Vec::new();
    for p in [previous(&path), path] {
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in io::BufReader::new(f).lines() {
            if let Ok(ev) = serde_json::from_str::<Event>(&line?) {
                events.push(ev);
            }
        }
    }
    Ok(entries(events))
}

/// Events grouped into resets, in the order they started; events of a reset whose start
/// is no longer kept (rotated away) are dropped.
pub fn entries(events: Vec<Event>) -> Vec<Entry> {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Entry> = BTreeMap::new();
    for ev in events {
        match ev.what {
            What::Start {
                system,
                kind,
                by: who,
            } => {
                order.push(ev.reset.clone());
                by.insert(
                    ev.reset.clone(),
                    Entry {
                        reset: ev.reset,
                        system,
                        kind,
                        by: who,
                        started: ev.at,
                        stages: Vec::new(),
                        ended: None,
                        outcome: None,
                        evidence: None,
                    },
                );
            }
            What::Stage { stage } => {
                if let Some(e) = by.get_mut(&ev.reset) {
                    e.stages.push(Stage { at: ev.at, stage });
                }
            }
            What::End { outcome, evidence } => {
                if let Some(e) = by.get_mut(&ev.reset) {
                    e.ended = Some(ev.at);
                    e.outcome = Some(outcome);
                    e.evidence = Some(evidence);
                }
            }
        }
    }
    order.into_iter().filter_map(|k| by.remove(&k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(reset: &str, at: &str, what: What) -> Event {
        Event {
            reset: reset.into(),
            at: at.into(),
            what,
        }
    }

    #[test]
    fn events_make_resets_in_order_with_late_stages_and_unfinished_ones() {
        let start = |s: &str| What::Start {
            system: s.into(),
            kind: "P".into(),
            by: "fence agent".into(),
        };
        let stage = |s: &str| What::Stage { stage: s.into() };
        let list = entries(vec![
            ev("1-1", "t1", start("node02")),
            ev("1-1", "t2", stage("NMI issued")),
            ev("1-2", "t3", start("node03")),
            ev(
                "1-1",
                "t4",
                What::End {
                    outcome: "REBOOT".into(),
                    evidence: "hard reset acknowledged".into(),
                },
            ),
            ev("1-1", "t5", stage("PDU outlet on")),
            ev("0-9", "t0", stage("its start was rotated away")),
        ]);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].system, "node02");
        assert_eq!(list[0].stages.len(), 2);
        assert_eq!(list[0].outcome.as_deref(), Some("REBOOT"));
        assert_eq!(list[1].system, "node03");
        assert_eq!(list[1].ended, None, "unfinished");
    }

    #[test]
    fn the_file_is_bounded_to_two_generations_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let big = "x".repeat(1 << 20);
        for i in 0..12 {
            let e = ev(
                &format!("1-{i}"),
                "t",
                What::Start {
                    system: format!("node{i}"),
                    kind: "P".into(),
                    by: big.clone(),
                },
            );
            append(&path, &e).unwrap();
        }
        let total = std::fs::metadata(&path).unwrap().len()
            + std::fs::metadata(previous(&path)).unwrap().len();
        assert!(total <= 2 * MAX_FILE + (2 << 20), "{total}");
        let list = read(dir.path()).unwrap();
        assert!(!list.is_empty() && list.len() < 12, "{}", list.len());
        assert_eq!(list.last().unwrap().system, "node11");
        // A cut line is skipped, not fatal.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"reset\":\"1-99\",\"at\"")
            .unwrap();
        assert_eq!(read(dir.path()).unwrap().len(), list.len());
        // No history yet: empty, not an error.
        assert!(read(&dir.path().join("none")).unwrap().is_empty());
    }
}
