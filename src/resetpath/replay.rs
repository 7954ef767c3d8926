//! Freshness of reset-path datagrams: the replay guard and its persisted high-water mark.
//!
//! A datagram is remembered by what its tag covers — the system it claims to come from,
//! its timestamp and its nonce — never by the address it arrived from (which anyone can
//! choose). The connector keeps one bounded set per system of its spec; a datagram naming
//! a system the spec does not hold is checked for freshness only and never stored, so no
//! sender can grow the guard, and one system's datagrams never push out another's.
//!
//! Across restarts, [`HighWater`] keeps (in the state dir) a timestamp at or above every
//! timestamp the connector has accepted for a system; after a restart, nothing stamped at
//! or below it is accepted. PROTOCOL.md ("Freshness and replays") states the clock rules.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::codec::Envelope;

/// How far a datagram's timestamp may be from the receiver's clock.
pub const REPLAY_WINDOW_MS: u64 = 30_000;
/// Most datagrams remembered per system within one window (a monitor sends one check a
/// second and a few requests).
pub const MAX_REMEMBERED: usize = 1024;
/// The persisted mark is raised in steps of this much, so it is written at most about
/// twice a second however many datagrams arrive.
pub const HIGH_WATER_STEP_MS: u64 = 500;
/// With no mark in the state dir (first start, or a lost state dir), the connector
/// accepts nothing stamped more than this before its start.
pub const START_SKEW_MS: u64 = 5_000;

/// Why a fresh-looking datagram was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("nonce already seen (replayed datagram)")]
    Replayed,
    #[error("timestamp not after the connector's high-water mark (sent before a restart?)")]
    BeforeStart,
}

/// Remembers every (timestamp, nonce) of the last window per claimed system, so a captured
/// datagram is never accepted twice. Memory is bounded per system: past the bound, the
/// oldest entry is forgotten and nothing stamped at or before it is accepted any more
/// (it fails closed, never forgets early).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    /// Nothing stamped at or below this is accepted (the restart floor).
    floor_ms: u64,
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    set: BTreeSet<(u64, u64)>,
    /// Highest timestamp forgotten to stay within [`MAX_REMEMBERED`].
    floor_ms: u64,
}

impl ReplayGuard {
    /// A guard that accepts nothing stamped at or before `floor_ms`.
    pub fn new(floor_ms: u64) -> ReplayGuard {
        ReplayGuard {
            floor_ms,
            seen: HashMap::new(),
        }
    }

    /// Whether `env` is inside the window and after the floor; remembers nothing.
    pub fn fresh(&self, env: &Envelope, now_ms: u64) -> Result<(), ReplayError> {
        if env.ts.abs_diff(now_ms) > REPLAY_WINDOW_MS {
            return Err(ReplayError::Stale);
        }
        if env.ts <= self.floor_ms {
            return Err(ReplayError::BeforeStart);
        }
        Ok(())
    }

    /// Accepts `env`, claimed by `who`, at receiver time `now_ms` once.
    pub fn check(&mut self, who: &str, env: &Envelope, now_ms: u64) -> Result<(), ReplayError> {
        self.fresh(env, now_ms)?;
        let seen = match self.seen.get_mut(who) {
            Some(s) => s,
            None => self.seen.entry(who.to_string()).or_default(),
        };
        // Anything older than the window is refused as stale anyway.
        let oldest = now_ms.saturating_sub(REPLAY_WINDOW_MS);
        while seen.set.first().is_some_and(|&(ts, _)| ts < oldest) {
            seen.set.pop_first();
        }
        let id = (env.ts, env.nonce);
        if env.ts <= seen.floor_ms || seen.set.contains(&id) {
            return Err(ReplayError::Replayed);
        }
        if seen.set.len() >= MAX_REMEMBERED
            && let Some((ts, _)) = seen.set.pop_first()
        {
            seen.floor_ms = ts;
            if env.ts <= ts {
                return Err(ReplayError::Replayed);
            }
        }
        seen.set.insert(id);
        Ok(())
    }
}

/// A timestamp at or above every timestamp accepted, kept in a file so a restarted
/// connector starts its [`ReplayGuard`] above it.
#[derive(Debug)]
pub struct HighWater {
    path: PathBuf,
    mark_ms: u64,
}

impl HighWater {
    /// Reads the mark in `path`; with no file, the mark is `now_ms` − [`START_SKEW_MS`]. A
    /// file that cannot be read or parsed is an error: the caller must not guess.
    pub fn open(path: &Path, now_ms: u64) -> io::Result<HighWater> {
        let mark_ms = match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} does not hold a timestamp", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => now_ms.saturating_sub(START_SKEW_MS),
            Err(e) => return Err(e),
        };
        Ok(HighWater {
            path: path.to_path_buf(),
            mark_ms: mark_ms.max(now_ms.saturating_sub(START_SKEW_MS)),
        })
    }

    /// The floor for a guard started now.
    pub fn mark_ms(&self) -> u64 {
        self.mark_ms
    }

    /// Before a datagram stamped `ts` is acted on: raises the persisted mark above it when
    /// needed. On a write error the mark is still raised in memory (this run stays safe)
    /// and the error is returned for the caller to report.
    pub fn cover(&mut self, ts: u64) -> io::Result<()> {
        if ts <= self.mark_ms {
            return Ok(());
        }
        self.mark_ms = ts + HIGH_WATER_STEP_MS;
        let tmp = self.path.with_extension("tmp");
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            writeln!(f, "{}", self.mark_ms)?;
            std::fs::rename(&tmp, &self.path)
        };
        write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resetpath::codec::Message;

    fn check_msg(ts: u64) -> Envelope {
        let mut e = Envelope::new(Message::Check {
            system: "node01".into(),
            subsystem: 1,
            port: 20001,
            pair: Some(7),
        });
        e.ts = ts;
        e
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn refuses_repeats_stale_and_before_the_floor() {
        let mut g = ReplayGuard::new(NOW - 1000);
        let env = check_msg(NOW);
        assert_eq!(g.check("node01", &env, NOW), Ok(()));
        assert_eq!(g.check("node01", &env, NOW + 5), Err(ReplayError::Replayed));
        // Keyed by the claimed system: the same datagram is new only for another name
        // (which its tag would not verify under per-node keys).
        assert_eq!(g.check("node02", &env, NOW + 5), Ok(()));
        assert_eq!(
            g.check("node01", &check_msg(NOW), NOW + REPLAY_WINDOW_MS * 3),
            Err(ReplayError::Stale)
        );
        assert_eq!(
            g.check("node01", &check_msg(NOW - 1000), NOW),
            Err(ReplayError::BeforeStart)
        );
        assert_eq!(g.fresh(&check_msg(NOW - 999), NOW), Ok(()));
    }

    #[test]
    fn never_forgets_within_the_window_and_stays_bounded() {
        let mut g = ReplayGuard::new(0);
        let first = check_msg(NOW);
        g.check("node01", &first, NOW).unwrap();
        for i in 0..MAX_REMEMBERED as u64 * 3 {
            let e = check_msg(NOW + 1 + i / 8);
            g.check("node01", &e, NOW).unwrap();
        }
        assert!(g.seen["node01"].set.len() <= MAX_REMEMBERED);
        assert_eq!(g.check("node01", &first, NOW), Err(ReplayError::Replayed));
        // Another system is not crowded out.
        assert_eq!(g.check("node02", &check_msg(NOW), NOW), Ok(()));
    }

    #[test]
    fn high_water_persists_above_every_accepted_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark");
        let mut hw = HighWater::open(&path, NOW).unwrap();
        assert_eq!(hw.mark_ms(), NOW - START_SKEW_MS);
        hw.cover(NOW + 20_000).unwrap();
        hw.cover(NOW + 20_100).unwrap();
        let again = HighWater::open(&path, NOW + 1000).unwrap();
        assert!(again.mark_ms() >= NOW + 20_100);
        let g = ReplayGuard::new(again.mark_ms());
        assert_eq!(
            g.fresh(&check_msg(NOW + 20_000), NOW + 1000),
            Err(ReplayError::BeforeStart)
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(HighWater::open(&path, NOW).is_err());
    }
}
