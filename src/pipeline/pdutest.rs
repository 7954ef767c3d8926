//! Operator PDU actions (SPEC §8): the PDU-cut test of a server (`same`: every outlet at
//! once; `serial`: one outlet at a time) and the restore of its PDU power (`acrecovery`).
//!
//! Like a reset, each runs as a task of the pipeline thread over the [`Pdu`] trait and
//! tokio time. Every switch is logged as an `IPDUSD` reset-log line with `----` for the
//! requester and reported as a [`Progress`] line to the operator as it happens.
//!
//! [`Pdu`]: crate::backend::Pdu

use std::time::Duration;

use tokio::sync::mpsc;

use crate::backend::Backends;
use crate::log::LogSink;
use crate::spec::model::{OutletLink, Pdu};

use super::resetlog::{self, Dir, Peer};

/// Off time and wait time limits of a PDU test, in seconds (SPEC §8; the manual's
/// `offtime`/`wtime`: 5–60).
pub const SECONDS: std::ops::RangeInclusive<u64> = 5..=60;
/// The off time and wait time when the operator gives none (the manual's 5 s).
pub const DEFAULT_SECONDS: u64 = 5;
/// The least off time the manual asks for in a management server's `serial` test.
pub const MSERVER_SERIAL_OFF_ADVISED: u64 = 30;

/// Why a `same` test refuses options that belong to `serial` (the manual: `addr` and
/// `wtime` cannot be given with `mode=same`): all the outlets switch at once, so there is
/// no PDU to single out and no wait between outlets. `None` when nothing is refused.
pub fn same_refuses(
    mode: Mode,
    pdu: Option<std::net::IpAddr>,
    wait: Option<u64>,
) -> Option<String> {
    if mode != Mode::Same {
        return None;
    }
    let mut given = Vec::new();
    if let Some(p) = pdu {
        given.push(format!("--pdu {p}"));
    }
    if let Some(w) = wait {
        given.push(format!("--wtime {w}"));
    }
    (!given.is_empty()).then(|| {
        format!(
            "--mode same switches every outlet at once: {} is for --mode serial only (one \
             outlet at a time); drop it, or use --mode serial",
            given.join(" and ")
        )
    })
}
/// How long one outlet switch may take, read-back included.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every outlet off at once, then on at once.
    Same,
    /// One outlet at a time: off, off time, on, wait time, next.
    Serial,
}

/// What to switch, and for whom.
#[derive(Debug, Clone)]
pub struct Job {
    /// The server or management server the outlets feed (the reset log's name).
    pub target: String,
    pub outlets: Vec<(OutletLink, Pdu)>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy)]
pub enum Action {
    Test {
        mode: Mode,
        off_time: Duration,
        wait_time: Duration,
    },
    /// Every outlet on.
    Recover,
}

/// One line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub line: String,
}

/// Runs a job; `Err` says which outlets failed. Outlets that were switched off are
/// always switched on again, whatever else failed.
pub async fn run(
    job: Job,
    backends: Backends,
    logs: (LogSink, LogSink),
    progress: mpsc::UnboundedSender<Progress>,
) -> Result<String, String> {
    let (reset_log, error_log) = logs;
    let say = |line: String| {
        let _ = progress.send(Progress { line });
    };
    let switch = |link: OutletLink, pdu: Pdu, on: bool| {
        let backends = backends.clone();
        let reset_log = reset_log.clone();
        let error_log = error_log.clone();
        let target = job.target.clone();
        async move {
            // SPEC §7: SEND when the switch is asked of the PDU, RECV when it confirms.
            let line = |dir| {
                resetlog::ipdusd(
                    &target,
                    None,
                    dir,
                    Peer::default(),
                    link.pdu,
                    link.outlet,
                    on,
                )
            };
            reset_log.line(line(Dir::Send));
            let r = crate::backend::bounded(
                crate::backend::device("PDU", link.pdu),
                SWITCH_TIMEOUT,
                backends.pdu.set_outlet(&pdu, link.outlet, on),
            )
            .await
            .map_err(|e| e.to_string());
            let word = if on { "ON" } else { "OFF" };
            match &r {
                Ok(()) => {
                    reset_log.line(line(Dir::Recv));
                    say(format!(
                        "PDU {} outlet {} {word}: done",
                        link.pdu, link.outlet
                    ));
                }
                Err(e) => {
                    error_log.line(format!(
                        "PDU {} outlet {} {word} for {target} (test) failed: {e}",
                        link.pdu, link.outlet
                    ));
                    say(format!(
                        "PDU {} outlet {} {word}: FAILED: {e}",
                        link.pdu, link.outlet
                    ))
                }
            }
            (link, r)
        }
    };
    let all = |on: bool, outlets: &[(OutletLink, Pdu)]| {
        futures_util::future::join_all(
            outlets
                .iter()
                .map(|(l, p)| switch(*l, p.clone(), on))
                .collect::<Vec<_>>(),
        )
    };
    let mut failed: Vec<String> = Vec::new();
    let mut note = |results: Vec<(OutletLink, Result<(), String>)>, word: &str| {
        for (l, r) in results {
            if let Err(e) = r {
                failed.push(format!("{l} {word}: {e}"));
            }
        }
    };
    let n = job.outlets.len();
    match job.action {
        Action::Recover => {
            say(format!(
                "restoring power to {}: {n} outlet(s) on",
                job.target
            ));
            note(all(true, &job.outlets).await, "ON");
        }
        Action::Test {
            mode: Mode::Same,
            off_time,
            ..
        } => {
            say(format!(
                "PDU test of {} (same): {n} outlet(s) off for {} s",
                job.target,
                off_time.as_secs()
            ));
            note(all(false, &job.outlets).await, "OFF");
            tokio::time::sleep(off_time).await;
            note(all(true, &job.outlets).await, "ON");
        }
        Action::Test {
            mode: Mode::Serial,
            off_time,
            wait_time,
        } => {
            say(format!(
                "PDU test of {} (serial): {n} outlet(s), each off for {} s, {} s between",
                job.target,
                off_time.as_secs(),
                wait_time.as_secs()
            ));
            for (i, (l, p)) in job.outlets.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(wait_time).await;
                }
                let off = switch(*l, p.clone(), false).await;
                note(vec![off], "OFF");
                tokio::time::sleep(off_time).await;
                let on = switch(*l, p.clone(), true).await;
                note(vec![on], "ON");
            }
        }
    }
    if failed.is_empty() {
        Ok(format!("{}: all {n} outlet(s) switched", job.target))
    } else {
        Err(format!(
            "{}: {} of {n} outlet switch(es) failed: {}",
            job.target,
            failed.len(),
            failed.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::sim::{Behavior, DeviceId, Sim, SimEvent};
    use crate::spec::pdu_model;

    /// The manual: `addr` and `wtime` cannot be given with `mode=same`; both are fine
    /// with `serial`; the defaults and range are the manual's.
    #[test]
    fn same_refuses_the_options_of_serial() {
        let ip = Some("127.0.0.31".parse().unwrap());
        assert_eq!(same_refuses(Mode::Same, None, None), None);
        assert_eq!(same_refuses(Mode::Serial, ip, Some(5)), None);
        let why = same_refuses(Mode::Same, ip, None).unwrap();
        assert!(
            why.contains("--pdu 127.0.0.31 is for --mode serial only"),
            "{why}"
        );
        let why = same_refuses(Mode::Same, None, Some(7)).unwrap();
        assert!(why.contains("--wtime 7 is for --mode serial only"), "{why}");
        let why = same_refuses(Mode::Same, ip, Some(7)).unwrap();
        assert!(why.contains("--pdu 127.0.0.31 and --wtime 7"), "{why}");
        assert_eq!((DEFAULT_SECONDS, SECONDS), (5, 5..=60));
    }

    fn pdu(a: &str) -> Pdu {
        Pdu {
            address: a.parse().unwrap(),
            port: 161,
            model: pdu_model::builtin_model("IBM_PDU").expect("built-in"),
        }
    }

    fn job(action: Action) -> Job {
        let outlets = [("127.0.0.31", 1), ("127.0.0.31", 2), ("127.0.0.32", 5)]
            .iter()
            .map(|(a, o)| {
                (
                    OutletLink {
                        pdu: a.parse().unwrap(),
                        outlet: *o,
                    },
                    pdu(a),
                )
            })
            .collect();
        Job {
            target: "node1".into(),
            outlets,
            action,
        }
    }

    fn backends(sim: &Arc<Sim>) -> Backends {
        Backends {
            bmc: sim.clone(),
            pdu: sim.clone(),
            hypervisor: sim.clone(),
        }
    }

    /// (seconds since start, outlet, on) of every switch.
    fn switches(sim: &Sim, t0: tokio::time::Instant) -> Vec<(u64, u16, bool)> {
        sim.calls()
            .into_iter()
            .filter_map(|(at, e)| match e {
                SimEvent::Outlet { outlet, on, .. } => {
                    Some((at.duration_since(t0).as_secs(), outlet, on))
                }
                _ => None,
            })
            .collect()
    }

    async fn play(sim: &Arc<Sim>, action: Action) -> (Result<String, String>, Vec<String>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let r = run(
            job(action),
            backends(sim),
            (LogSink::discard(), LogSink::discard()),
            tx,
        )
        .await;
        let mut lines = Vec::new();
        while let Ok(p) = rx.try_recv() {
            lines.push(p.line);
        }
        (r, lines)
    }

    #[tokio::test(start_paused = true)]
    async fn serial_switches_one_outlet_at_a_time_with_the_given_times() {
        let sim = Arc::new(Sim::default());
        let t0 = tokio::time::Instant::now();
        let (r, lines) = play(
            &sim,
            Action::Test {
                mode: Mode::Serial,
                off_time: Duration::from_secs(7),
                wait_time: Duration::from_secs(11),
            },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        // Each switch takes the simulator's 1 ms: whole seconds are the waits.
        assert_eq!(
            switches(&sim, t0),
            vec![
                (0, 1, false),
                (7, 1, true),
                (18, 2, false),
                (25, 2, true),
                (36, 5, false),
                (43, 5, true),
            ]
        );
        assert_eq!(lines.len(), 7, "{lines:?}");
        assert!(sim.outlet_on("127.0.0.31".parse().unwrap(), 1));
    }

    #[tokio::test(start_paused = true)]
    async fn same_cuts_every_outlet_at_once_and_restores_them_after_the_off_time() {
        let sim = Arc::new(Sim::default());
        let t0 = tokio::time::Instant::now();
        let (r, _) = play(
            &sim,
            Action::Test {
                mode: Mode::Same,
                off_time: Duration::from_secs(5),
                wait_time: Duration::from_secs(60),
            },
        )
        .await;
        assert!(r.is_ok(), "{r:?}");
        let mut s = switches(&sim, t0);
        s.sort();
        assert_eq!(
            s,
            vec![
                (0, 1, false),
                (0, 2, false),
                (0, 5, false),
                (5, 1, true),
                (5, 2, true),
                (5, 5, true)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_pdu_is_reported_and_the_others_are_still_restored() {
        let sim = Arc::new(Sim::default());
        sim.set(DeviceId::Pdu("127.0.0.32".parse().unwrap()), |d| {
            d.behavior = Behavior::Refuses
        });
        let (r, lines) = play(
            &sim,
            Action::Test {
                mode: Mode::Same,
                off_time: Duration::from_secs(5),
                wait_time: Duration::from_secs(5),
            },
        )
        .await;
        let e = r.unwrap_err();
        assert!(e.contains("2 of 3"), "{e}");
        assert!(e.contains("127.0.0.32#5"), "{e}");
        assert!(lines.iter().any(|l| l.contains("FAILED")), "{lines:?}");
        assert!(sim.outlet_on("127.0.0.31".parse().unwrap(), 1));
        assert!(sim.outlet_on("127.0.0.31".parse().unwrap(), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_switches_every_outlet_on() {
        let sim = Arc::new(Sim::default());
        let (r, _) = play(&sim, Action::Recover).await;
        assert!(r.is_ok(), "{r:?}");
        let ons: Vec<_> = switches(&sim, tokio::time::Instant::now())
            .into_iter()
            .map(|(_, o, on)| (o, on))
            .collect();
        assert_eq!(ons.len(), 3);
        assert!(ons.iter().all(|(_, on)| *on));
    }
}
