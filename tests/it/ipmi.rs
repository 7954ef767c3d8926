//! The IPMI backend against real BMC simulators (`ipmi_sim` on 127.0.0.1 ports), and the
//! daemon resetting through it end to end. See tests/ipmi_support/ for the harness.

use crate::support::ipmi as ipmi_support;
use crate::support::resetpath as resetpath_support;

use std::time::{Duration, Instant};

use haconn::backend::ipmi::IpmiBmc;
use haconn::backend::{BackendError, Bmc, PowerState};
use haconn::spec::model::CipherSuite;
use ipmi_support::{Relay, Seen, SimBmc, SimConfig, now_ns};
use resetpath_support::{Lab, free_ports, haconn};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn power_status_nmi_reset_off_on_reach_the_bmc() {
    let sim = SimBmc::start();
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    rt().block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        // Warm session: no new session for the next calls.
        let before = now_ns();
        bmc.nmi(&spec).await.expect("NMI acknowledged");
        let nmis = sim.nmis();
        assert_eq!(nmis.len(), 1, "one NMI recorded: {nmis:?}");
        assert!(nmis[0] >= before);
        assert!(sim.resets().is_empty());

        bmc.hard_reset(&spec).await.expect("reset acknowledged");
        assert_eq!(sim.resets().len(), 1, "{:?}", sim.chassis());

        bmc.power_off(&spec).await.expect("power off acknowledged");
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::Off));
        assert!(!sim.powered());
        bmc.power_on(&spec).await.expect("power on acknowledged");
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        let chassis: Vec<String> = sim.chassis().into_iter().map(|(_, a)| a).collect();
        assert_eq!(
            chassis,
            ["set reset 1", "set power 0", "set power 1"],
            "the script saw exactly the requested operations"
        );
        assert_eq!(sim.nmis().len(), 1, "no further NMI");
        let stats = bmc.stats();
        assert_eq!(stats.sessions_opened, 1, "one session reused: {stats:?}");
        assert_eq!(
            bmc.cipher_suite(&spec),
            Some(3),
            "ipmi_sim offers suite 3 only"
        );
        bmc.shutdown().await;
        assert_eq!(bmc.stats().sessions_closed, 1);
    });
}

#[test]
fn wrong_password_or_user_is_refused_with_the_reason_and_nothing_happens() {
    let sim = SimBmc::start();
    let bmc = IpmiBmc::new();
    rt().block_on(async {
        let wrong = sim.spec_as(ipmi_support::USER, "wrongpassw0rd");
        for r in [
            bmc.nmi(&wrong).await,
            bmc.hard_reset(&wrong).await,
            bmc.power_off(&wrong).await,
        ] {
            match r {
                Err(BackendError::Refused { device, reason }) => {
                    assert_eq!(device, "BMC 127.0.0.1");
                    assert_eq!(reason, "wrong password (RAKP 2 HMAC mismatch)");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        let stranger = sim.spec_as("nosuchuser", ipmi_support::PASSWORD);
        match bmc.power_state(&stranger).await {
            Err(BackendError::Refused { reason, .. }) => {
                assert_eq!(
                    reason,
                    "authentication failed: RAKP 2 says unauthorized name"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The error never carries a secret.
        let text = format!("{:?} {}", bmc, bmc.nmi(&wrong).await.unwrap_err());
        assert!(
            !text.contains("wrongpassw0rd") && !text.contains("labpassw0rd"),
            "{text}"
        );
        assert_eq!(bmc.stats().sessions_opened, 0);
        // The right password still works afterwards, on the same client.
        assert_eq!(bmc.power_state(&sim.spec()).await, Ok(PowerState::On));
    });
    assert!(sim.nmis().is_empty(), "{:?}", sim.module_records());
    assert!(sim.chassis().is_empty(), "{:?}", sim.chassis());
    assert!(sim.powered());
}

#[test]
fn several_bmcs_at_once_each_get_their_own_nmi() {
    let sims: Vec<SimBmc> = (0..4).map(|_| SimBmc::start()).collect();
    let bmc = IpmiBmc::new();
    rt().block_on(async {
        // Cold start: every BMC's session is opened concurrently, several calls per BMC.
        let polls = sims
            .iter()
            .flat_map(|s| (0..5).map(move |_| s.spec()))
            .collect::<Vec<_>>();
        let states = futures_util::future::join_all(polls.iter().map(|s| bmc.power_state(s))).await;
        assert!(
            states.iter().all(|s| *s == Ok(PowerState::On)),
            "{states:?}"
        );
        assert_eq!(bmc.stats().sessions_opened, 4, "one session per BMC");
        let specs: Vec<_> = sims.iter().map(|s| s.spec()).collect();
        let nmis = futures_util::future::join_all(specs.iter().map(|s| bmc.nmi(s))).await;
        assert!(nmis.iter().all(Result::is_ok), "{nmis:?}");
        // Only the second BMC is hard reset.
        bmc.hard_reset(&specs[1]).await.expect("reset");
    });
    for (i, s) in sims.iter().enumerate() {
        assert_eq!(s.nmis().len(), 1, "BMC {i}: {:?}", s.module_records());
        assert_eq!(
            s.resets().len(),
            usize::from(i == 1),
            "BMC {i}: {:?}",
            s.chassis()
        );
    }
}

#[test]
fn paused_bmc_times_out_then_a_new_session_gives_the_true_state() {
    let mut sim = SimBmc::start();
    let spec = sim.spec();
    let bmc = IpmiBmc::new();
    // Another client (say, an operator's), with its own warm session.
    let other = std::sync::Arc::new(IpmiBmc::new());
    let runtime = rt();
    runtime.block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        assert_eq!(other.power_state(&spec).await, Ok(PowerState::On));
    });
    sim.pause();
    runtime.block_on(async {
        // Four tries of a status query queue in the stopped simulator's socket; their late
        // answers will all say "on".
        let started = Instant::now();
        let status = bmc.power_state(&spec).await;
        let took = started.elapsed();
        match status {
            Err(BackendError::Unreachable { reason, .. }) => assert!(
                reason.starts_with("no answer within 2") && reason.contains(" ms after 4 tries"),
                "{reason}"
            ),
            other => panic!("expected no answer, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(1900) && took < Duration::from_millis(4500),
            "{took:?}"
        );
    });
    // Queued behind them: the other client's power-off (from another thread and runtime).
    let off = {
        let (other, spec) = (other.clone(), spec.clone());
        std::thread::spawn(move || rt().block_on(other.power_off(&spec)))
    };
    std::thread::sleep(Duration::from_millis(150));
    assert!(sim.chassis().is_empty(), "nothing ran while stopped");
    sim.resume();
    assert_eq!(
        off.join().expect("no panic"),
        Ok(()),
        "the power-off was answered"
    );
    runtime.block_on(async {
        // A stale answer from the first session would say "on".
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::Off));
    });
    assert!(!sim.powered());
    let stats = bmc.stats();
    assert_eq!(stats.sessions_opened, 2, "{stats:?}");
    assert_eq!(stats.retransmissions, 3, "{stats:?}");
}

#[test]
fn a_call_dropped_mid_request_retires_the_session() {
    let sim = SimBmc::start();
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    rt().block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        for round in 0..200u64 {
            // Polled once (the request goes out on the warm session), then dropped: the
            // pipeline's timeout does this to a call at any await.
            {
                let call = bmc.power_state(&spec);
                tokio::pin!(call);
                assert!(futures_util::poll!(call.as_mut()).is_pending());
            }
            // The next call must not use that session (its late reply could answer it).
            assert_eq!(
                bmc.power_state(&spec).await,
                Ok(PowerState::On),
                "round {round}"
            );
            assert_eq!(bmc.stats().sessions_opened, round + 2);
        }
        bmc.shutdown().await;
    });
    // Every replaced session was closed: ipmi_sim (10 sessions per user here) never ran out.
    let stats = bmc.stats();
    assert_eq!(stats.sessions_closed, stats.sessions_opened, "{stats:?}");
    assert!(sim.ping(Duration::from_secs(1)), "ipmi_sim still answers");
}

#[test]
fn sessions_are_closed_so_many_reopenings_do_not_exhaust_the_bmc() {
    let sim = SimBmc::with(SimConfig {
        sessions_per_user: 4,
        ..SimConfig::default()
    });
    let spec = sim.spec();
    rt().block_on(async {
        for round in 0..200 {
            let bmc = IpmiBmc::new();
            assert_eq!(
                bmc.power_state(&spec).await,
                Ok(PowerState::On),
                "round {round}"
            );
            bmc.shutdown().await;
            assert_eq!(bmc.stats().sessions_closed, 1);
        }
    });
}

#[test]
fn many_concurrent_calls_share_one_session() {
    // The module answers status queries itself: fast enough that nothing is retransmitted.
    let sim = SimBmc::with(SimConfig {
        module_power: true,
        ..SimConfig::default()
    });
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    rt().block_on(async {
        for _ in 0..20 {
            let calls = (0..40).map(|_| bmc.power_state(&spec));
            let r = futures_util::future::join_all(calls).await;
            assert!(r.iter().all(|s| *s == Ok(PowerState::On)), "{r:?}");
        }
    });
    let stats = bmc.stats();
    assert_eq!(stats.sessions_opened, 1, "{stats:?}");
    assert_eq!(stats.replies_dropped, 0, "{stats:?}");
}

#[test]
fn a_late_answer_to_a_retransmitted_request_is_dropped() {
    let mut sim = SimBmc::start();
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    let runtime = rt();
    runtime.block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
    });
    // Paused across the first try (250 ms): the query is sent twice, and both copies are
    // answered once the simulator resumes.
    sim.pause();
    let pid = sim.pid();
    let resume = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        // SAFETY: kill(2) on the simulator the test owns and has not reaped.
        unsafe { libc::kill(pid, libc::SIGCONT) }
    });
    runtime.block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
    });
    assert_eq!(resume.join().expect("resumed"), 0);
    sim.resumed();
    runtime.block_on(async {
        bmc.power_off(&spec).await.expect("power off");
        // The second answer ("on") comes now, or already came: it must answer nothing,
        // while the session carries on.
        for _ in 0..100 {
            assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::Off));
        }
    });
    let stats = bmc.stats();
    assert!(stats.retransmissions >= 1, "{stats:?}");
    assert!(
        stats.replies_dropped >= 1,
        "the second answer was dropped: {stats:?}"
    );
    assert_eq!(stats.sessions_opened, 1, "{stats:?}");
}

// --- Retransmission over a lossy or strict network (a relay in between) ---------------

/// A simulator behind a relay on 127.0.0.31, and a client with a warm session through it.
fn behind_relay() -> (SimBmc, Relay, IpmiBmc, haconn::spec::model::Bmc) {
    let sim = SimBmc::start();
    let relay = Relay::start(&sim, std::net::Ipv4Addr::new(127, 0, 0, 31));
    let spec = relay.spec(sim.spec());
    let bmc = IpmiBmc::new();
    rt().block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
    });
    (sim, relay, bmc, spec)
}

#[test]
fn a_retry_carries_a_fresh_sequence_number_that_a_strict_bmc_accepts() {
    let (_sim, relay, bmc, spec) = behind_relay();
    relay.strict();
    rt().block_on(async {
        for round in 0..3 {
            relay.drop_replies(1);
            assert_eq!(
                bmc.power_state(&spec).await,
                Ok(PowerState::On),
                "round {round}: the retry was answered\n{:?}",
                relay.seen()
            );
        }
    });
    let requests: Vec<(u32, bool)> = relay
        .seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Request { seq, forwarded } => Some((seq, forwarded)),
            _ => None,
        })
        .collect();
    assert!(
        requests.iter().all(|&(_, forwarded)| forwarded),
        "no copy was dropped as a replay: {requests:?}"
    );
    let mut seqs: Vec<u32> = requests.iter().map(|&(s, _)| s).collect();
    seqs.dedup();
    assert_eq!(seqs.len(), requests.len(), "every copy has its own number");
    assert_eq!(bmc.stats().retransmissions, 3, "{:?}", bmc.stats());
    assert_eq!(bmc.stats().sessions_opened, 1, "{:?}", bmc.stats());
}

#[test]
fn a_lost_answer_to_power_off_or_on_is_confirmed_by_the_state_and_not_sent_again() {
    let (sim, relay, bmc, spec) = behind_relay();
    rt().block_on(async {
        relay.drop_replies(1);
        assert_eq!(bmc.power_off(&spec).await, Ok(()), "{:?}", relay.seen());
        assert!(!sim.powered());
        relay.drop_replies(1);
        assert_eq!(bmc.power_on(&spec).await, Ok(()), "{:?}", relay.seen());
        assert!(sim.powered());
    });
    // Anything late would have come by now.
    std::thread::sleep(Duration::from_millis(300));
    let chassis: Vec<String> = sim.chassis().into_iter().map(|(_, a)| a).collect();
    assert_eq!(
        chassis,
        ["set power 0", "set power 1"],
        "each control acted exactly once"
    );
    let stats = bmc.stats();
    assert_eq!(stats.confirmed_by_state, 2, "{stats:?}");
    assert_eq!(stats.sessions_opened, 1, "{stats:?}");
}

#[test]
fn a_lost_request_to_power_off_is_sent_again_after_the_state_shows_it_not_done() {
    let (sim, relay, bmc, spec) = behind_relay();
    rt().block_on(async {
        relay.drop_requests(1);
        assert_eq!(bmc.power_off(&spec).await, Ok(()), "{:?}", relay.seen());
    });
    let chassis: Vec<String> = sim.chassis().into_iter().map(|(_, a)| a).collect();
    assert_eq!(chassis, ["set power 0"]);
    let stats = bmc.stats();
    assert_eq!(
        (stats.retransmissions, stats.confirmed_by_state),
        (1, 0),
        "{stats:?}"
    );
}

#[test]
fn a_lost_answer_to_an_nmi_or_hard_reset_is_never_followed_by_a_second_one() {
    let (sim, relay, bmc, spec) = behind_relay();
    rt().block_on(async {
        relay.drop_replies(1);
        let started = Instant::now();
        match bmc.nmi(&spec).await {
            Err(BackendError::Unreachable { reason, .. }) => assert!(
                reason.contains("may have been carried out, so it was not sent again"),
                "{reason}"
            ),
            other => panic!("an NMI whose answer was lost is not confirmed: {other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(1900),
            "the whole window waited"
        );
        // A new session (its set-up answers must get through), then the hard reset.
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        relay.drop_replies(1);
        assert!(matches!(
            bmc.hard_reset(&spec).await,
            Err(BackendError::Unreachable { .. })
        ));
        // On a new session, the next one goes through.
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
        bmc.nmi(&spec).await.expect("the next NMI");
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sim.nmis().len(), 2, "{:?}", sim.module_records());
    assert_eq!(sim.resets().len(), 1, "{:?}", sim.chassis());
    let requests = relay
        .seen()
        .iter()
        .filter(|s| matches!(s, Seen::Request { .. }))
        .count();
    assert!(requests >= 3, "{:?}", relay.seen());
}

// --- Cipher suites ----------------------------------------------------------------------

#[test]
fn a_refusal_moves_one_attempt_down_the_spec_list_and_is_not_remembered() {
    let sim = SimBmc::start();
    let relay = Relay::start(&sim, std::net::Ipv4Addr::new(127, 0, 0, 32));
    let spec = relay.spec(sim.spec());
    let bmc = IpmiBmc::new();
    rt().block_on(async {
        for _ in 0..2 {
            assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
            assert_eq!(bmc.cipher_suite(&spec), Some(3));
            bmc.shutdown().await;
        }
    });
    // ipmi_sim has no suite 17: its (unauthenticated) refusal does not make the next
    // session start below the spec's first choice.
    assert_eq!(relay.proposed_suites(), [17, 3, 17, 3]);
}

#[test]
fn a_forged_refusal_never_leads_to_a_suite_the_spec_does_not_allow() {
    let sim = SimBmc::start();
    let relay = Relay::start(&sim, std::net::Ipv4Addr::new(127, 0, 0, 33));
    let only = |suites: &[CipherSuite]| {
        let mut spec = relay.spec(sim.spec());
        spec.cipher_suites = suites.to_vec();
        spec
    };
    rt().block_on(async {
        // Only suite 3 allowed, and the BMC's "no" to it forged once: the call fails, and
        // no other suite is proposed.
        relay.forge_refusals(1);
        let bmc = IpmiBmc::new();
        match bmc.nmi(&only(&[CipherSuite::Three])).await {
            Err(BackendError::Refused { reason, .. }) => assert_eq!(
                reason,
                "the BMC refuses cipher suite 3 (the only one the spec's cipherSuites allows)"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(relay.proposed_suites(), [3]);
        // Nothing remembered: the next call proposes 3 again and gets through.
        bmc.nmi(&only(&[CipherSuite::Three])).await.expect("NMI");
        assert_eq!(relay.proposed_suites(), [3, 3]);
        assert_eq!(bmc.stats().suspect_refusals, 0);
        // Once this BMC has authenticated with suite 3, a refusal of 3 is named suspect.
        bmc.shutdown().await;
        relay.forge_refusals(1);
        match bmc.power_state(&only(&[CipherSuite::Three])).await {
            Err(BackendError::Refused { reason, .. }) => assert!(
                reason.ends_with(
                    "it authenticated with it before: a forged refusal, or the BMC was reconfigured"
                ),
                "{reason}"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(bmc.stats().suspect_refusals, 1);
        bmc.nmi(&only(&[CipherSuite::Three])).await.expect("NMI");
        assert_eq!(relay.proposed_suites(), [3, 3, 3, 3]);
        // Only suite 17 allowed (ipmi_sim refuses it): never a fall back to 3, and the
        // suite-3 session this client has open is not used for it (as after a reload).
        match bmc.power_state(&only(&[CipherSuite::Seventeen])).await {
            Err(BackendError::Refused { reason, .. }) => assert_eq!(
                reason,
                "the BMC refuses cipher suite 17 (the only one the spec's cipherSuites allows)"
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(relay.proposed_suites(), [3, 3, 3, 3, 17]);
    });
    assert_eq!(sim.nmis().len(), 2, "{:?}", sim.module_records());
}

#[test]
fn killed_bmc_is_unreachable_quickly_and_nothing_panics() {
    let mut sim = SimBmc::start();
    let bmc = IpmiBmc::new();
    let spec = sim.spec();
    let runtime = rt();
    runtime.block_on(async {
        assert_eq!(bmc.power_state(&spec).await, Ok(PowerState::On));
    });
    sim.kill();
    runtime.block_on(async {
        for call in 0..3 {
            let started = Instant::now();
            let r = bmc.nmi(&spec).await;
            match r {
                Err(BackendError::Unreachable { device, reason }) => {
                    assert_eq!(device, "BMC 127.0.0.1");
                    assert!(reason.contains("refused"), "call {call}: {reason}");
                }
                other => panic!("expected unreachable, got {other:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
        }
        // Shutting down with a dead BMC is bounded too.
        let started = Instant::now();
        bmc.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn a_bmc_that_never_answers_costs_one_bounded_call() {
    // A bound socket that never answers: no ICMP, only silence.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let sim = SimBmc::start();
    let mut spec = sim.spec();
    spec.port = port;
    let bmc = IpmiBmc::new();
    rt().block_on(async {
        let started = Instant::now();
        let r = bmc.power_state(&spec).await;
        assert!(matches!(r, Err(BackendError::Unreachable { .. })), "{r:?}");
        assert!(
            started.elapsed() < haconn::backend::ipmi::CALL_DEADLINE + Duration::from_millis(500)
        );
    });
}

// --- The daemon resetting through real BMCs -------------------------------------------

const RESET_TIMEOUT: Duration = Duration::from_secs(30);

/// Two simulated BMCs on their own addresses (the spec wants one address per server).
fn two_nodes() -> (SimBmc, SimBmc) {
    let at = |last: u8| SimConfig {
        address: std::net::Ipv4Addr::new(127, 0, 0, last),
        ..SimConfig::default()
    };
    (SimBmc::with(at(11)), SimBmc::with(at(12)))
}

/// Registers labnode01 and labnode02 as HA monitors (their checks); returns their ports.
fn register(lab: &Lab) -> [u16; 2] {
    let ports = free_ports::<2>();
    for (i, (system, port)) in [("labnode01", ports[0]), ("labnode02", ports[1])]
        .into_iter()
        .enumerate()
    {
        let (sub, port) = ((i + 1).to_string(), port.to_string());
        let run = haconn(&lab.node_args(
            "check",
            &[
                "--system",
                system,
                "--subsystem",
                &sub,
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--pair",
                "1",
            ],
        ));
        assert_eq!(
            run.code,
            Some(0),
            "check of {system}\n{run}\n{}",
            lab.diagnostics()
        );
    }
    ports
}

#[test]
fn daemon_reset_sends_the_nmi_then_hard_resets_after_hispeed() {
    let (node1, node2) = two_nodes();
    let lab = Lab::start_real(1000, 1000, ipmi_support::on_sims(&node1, &node2));
    let [p1, _] = register(&lab);
    let sent = now_ns();
    let run = lab.reset_node02(p1, 7).finish(RESET_TIMEOUT);
    run.code(0);
    assert_eq!(
        run.lines_with("RESET-REPLY", &["req=7", "result=DUMP"])
            .len(),
        1,
        "{run}"
    );
    assert!(
        !run.lines_with("ATTENTION", &["system=labnode02", "state=REBOOT"])
            .is_empty(),
        "{run}"
    );

    let nmis = node2.nmis();
    assert_eq!(
        nmis.len(),
        1,
        "one NMI at labnode02's BMC: {:?}\n{}",
        node2.module_records(),
        lab.diagnostics()
    );
    let resets = node2.resets();
    assert_eq!(
        resets.len(),
        1,
        "one hard reset: {:?}\n{}",
        node2.chassis(),
        lab.diagnostics()
    );
    assert!(nmis[0] > sent, "the NMI came after the request");
    // hispeed (1000 ms) counts from the NMI request: the reset comes that long after it.
    let gap = (resets[0] - nmis[0]) / 1_000_000;
    assert!((900..3000).contains(&gap), "NMI → hard reset took {gap} ms");
    // Nothing reached labnode01's BMC but power queries.
    assert!(node1.nmis().is_empty() && node1.chassis().is_empty());
    // Nothing about the reset went wrong (the lab's other BMCs are not simulated here: the
    // watch logs them NG once, which is not this reset's business).
    let errors = lab.log("error.log");
    assert!(
        !errors.lines().any(|l| l.contains("labnode02")
            || l.contains("reset path:")
            || l.contains("refused (")),
        "{}",
        lab.diagnostics()
    );
}

#[test]
fn daemon_reset_with_a_stop_notification_sends_no_hard_reset() {
    let (node1, node2) = two_nodes();
    // A wide window, so a loaded machine cannot make the test flaky.
    let lab = Lab::start_real(5000, 1000, ipmi_support::on_sims(&node1, &node2));
    let [p1, _] = register(&lab);
    let reset = lab.reset_node02(p1, 11);
    node2.wait_for("the NMI at labnode02's BMC", Duration::from_secs(5), |s| {
        s.nmis().len() == 1
    });
    let stopped = haconn(&lab.node_args("stopped", &["--system", "labnode02", "--subsystem", "2"]));
    stopped
        .code(0)
        .stdout_has("STOPPED-ACK system=labnode02 subsystem=2");
    let run = reset.finish(RESET_TIMEOUT);
    run.code(0);
    assert_eq!(
        run.lines_with("RESET-REPLY", &["req=11", "result=DUMP"])
            .len(),
        1,
        "{run}"
    );
    assert!(
        !run.lines_with("ATTENTION", &["system=labnode02", "state=DUMP"])
            .is_empty(),
        "{run}"
    );
    assert_eq!(node2.nmis().len(), 1);
    assert!(
        node2.resets().is_empty(),
        "a hard reset despite the stop: {:?}",
        node2.chassis()
    );
    assert!(node1.nmis().is_empty() && node1.chassis().is_empty());
}

/// Issue 18.4: `haconn server reset` waits for the test soft reset's outcome and prints
/// it, like `stonith_admin`: the NMI at the real BMC, its acknowledgement, the node's stop
/// notice → `stopped (dump)`, exit 0; never a hard reset, even long after hispeed.
#[test]
fn server_reset_waits_for_the_stop_notice_and_prints_the_outcome() {
    let (node1, node2) = two_nodes();
    let lab = Lab::start_real(1000, 1000, ipmi_support::on_sims(&node1, &node2));
    register(&lab);
    let socket = lab.socket_arg();
    let mut run = resetpath_support::Bg::spawn(
        [
            "server",
            "reset",
            "labnode02",
            "--subsystem",
            "2",
            "--control-socket",
            &socket,
        ]
        .map(String::from)
        .to_vec(),
    );
    run.wait_line(resetpath_support::Stream::Out, "NMI acknowledged by BMC");
    node2.wait_for("the NMI at labnode02's BMC", Duration::from_secs(5), |s| {
        s.nmis().len() == 1
    });
    // Past hispeed (1 s): a monitor's reset would hard-reset by now; a test never does.
    std::thread::sleep(Duration::from_millis(1500));
    lab.node("stopped", &["--system", "labnode02", "--subsystem", "2"])
        .code(0);
    let run = run.finish(RESET_TIMEOUT);
    run.code(0)
        .stdout_has("NMI sent to BMC")
        .stdout_has("waiting up to 60 s for the node's stop notice")
        .stdout_has(
            "labnode02 (subsystem 2): stopped (dump): NMI acknowledged, stop notice from 127.0.0.1",
        );
    assert_eq!(node2.nmis().len(), 1);
    assert!(node2.resets().is_empty(), "{:?}", node2.chassis());
    assert!(node1.nmis().is_empty());
    lab.wait_log("reset.log", "the test's ATTENTION RECV", |l| {
        l.contains("ATTENTION labnode02 2 RECV 127.0.0.1")
    });
}

/// Issue 18.4: a test soft reset whose NMI fails says so and exits 1; in JSON the outcome
/// is the last object. The watch is off here, so the daemon does not know the BMC is gone
/// (with the watch on, the request is refused at once: daemon.rs).
#[test]
fn server_reset_reports_a_failed_nmi_and_exits_1() {
    let (node1, mut node2) = two_nodes();
    let lab = Lab::start_real(1000, 0, ipmi_support::on_sims(&node1, &node2));
    register(&lab);
    node2.kill();
    let socket = lab.socket_arg();
    let args = [
        "server",
        "reset",
        "labnode02",
        "--subsystem",
        "2",
        "--control-socket",
        &socket,
    ];
    let started = Instant::now();
    let run = haconn(&args);
    run.code(1)
        .stdout_has("NMI sent to BMC")
        .stderr_has("haconn server reset: labnode02 (subsystem 2): NMI failed: ");
    assert!(started.elapsed() < Duration::from_secs(20), "{run}");
    // --quiet (issue 18.11): no progress lines; the failure still prints.
    let mut quiet = args.to_vec();
    quiet.push("--quiet");
    let run = haconn(&quiet);
    run.code(1)
        .stderr_has("haconn server reset: labnode02 (subsystem 2): NMI failed: ");
    assert_eq!(run.stdout, "", "{run}");
    let mut json = args.to_vec();
    json.extend(["--output", "json"]);
    let run = haconn(&json);
    run.code(1);
    let last: serde_json::Value =
        serde_json::from_str(&run.stdout[run.stdout.rfind("\n{\n").map_or(0, |i| i + 1)..])
            .unwrap_or_else(|e| panic!("{e}: {run}"));
    assert_eq!(last["outcome"], "nmi-failed", "{run}");
    assert_eq!(last["system"], "labnode02");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("NMI failed: "),
        "{run}"
    );
    assert!(last.get("v").is_none() && last.get("ok").is_none(), "{run}");
}

#[test]
fn bmc_key_kg_is_used_when_the_spec_sets_one() {
    let sim = SimBmc::with(SimConfig {
        kg: Some("kgsecret42".into()),
        ..SimConfig::default()
    });
    let with_kg = |kg: Option<&str>| {
        let mut spec = sim.spec();
        spec.kg = kg.map(|k| {
            haconn::spec::secret::Secret::inline(k.into(), haconn::spec::secret::SecretRule::Kg)
        });
        spec
    };
    rt().block_on(async {
        for kg in [None, Some("otherkey")] {
            let bmc = IpmiBmc::new();
            match bmc.nmi(&with_kg(kg)).await {
                Err(BackendError::Refused { reason, .. }) => assert_eq!(
                    reason, "RAKP 4 integrity check failed (wrong BMC key Kg?)",
                    "Kg {kg:?}"
                ),
                other => panic!("Kg {kg:?}: expected a refusal, got {other:?}"),
            }
        }
        assert!(sim.nmis().is_empty());
        let bmc = IpmiBmc::new();
        bmc.nmi(&with_kg(Some("kgsecret42")))
            .await
            .expect("NMI with the right Kg");
    });
    assert_eq!(sim.nmis().len(), 1);
}
