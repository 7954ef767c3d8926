//! The SNMP PDU backend against real net-snmp `snmpd` agents on 127.0.0.1, each serving
//! emulated PDUs (tests/snmp_support/pdu_emulator.py: IBM, APC rPDU, APC MasterSwitch,
//! Eaton, Raritan views, 24 outlets, every SET logged). The real `snmpget` is the oracle
//! for outlet states; the emulator's SET log shows exactly what was switched.

use crate::support::daemon::Daemon;
use crate::support::run::haconn_within;
use crate::support::snmp as snmp_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use haconn::backend::snmp::{SnmpPdu, SnmpTiming};
use haconn::backend::{BackendError, OutletState, Pdu};
use haconn::spec::model::Pdu as PduSpec;
use haconn::spec::pdu_model::{OidValues, PduModel, builtin_model};
use haconn::spec::secret::{Secret, SecretRule};
use snmp_support::{COMMUNITY, IBM_SLEN_FIRMWARE, OUTLETS, Options, RO_COMMUNITY, SetLine, Snmpd};

fn backend_with(community: &str, timing: SnmpTiming) -> SnmpPdu {
    SnmpPdu::with_timing(
        Some(Secret::inline(community.into(), SecretRule::Community)),
        timing,
    )
}

fn backend() -> SnmpPdu {
    backend_with(COMMUNITY, SnmpTiming::default())
}

/// Short tries, for tests that wait for timeouts on purpose.
fn impatient() -> SnmpTiming {
    SnmpTiming {
        try_timeout: Duration::from_millis(150),
        tries: 2,
        settle: Duration::from_secs(5),
        ..SnmpTiming::default()
    }
}

fn model(name: &str) -> PduModel {
    builtin_model(name).expect("a built-in model")
}

fn pdu(d: &Snmpd, model: PduModel) -> PduSpec {
    PduSpec {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: d.port,
        model,
    }
}

/// The Raritan view described as an operator would in `pduModels` (control and status
/// columns differ, status values 7/8), with outlet count and firmware from other views
/// of the same agent.
fn user_model() -> PduModel {
    PduModel {
        name: "LAB_PX".into(),
        outlets: 24,
        first_index: 1,
        control: OidValues {
            oid: "1.3.6.1.4.1.13742.6.4.1.2.1.2.1".into(),
            on: 1,
            off: 0,
        },
        status: OidValues {
            oid: "1.3.6.1.4.1.13742.6.4.1.2.1.3.1".into(),
            on: 7,
            off: 8,
        },
        firmware_oid: Some("1.3.6.1.4.1.318.1.1.12.1.3.0".into()),
        outlet_count_oid: Some("1.3.6.1.4.1.2.6.223.8.2.1.0".into()),
        firmware_variants: vec![],
        builtin: false,
    }
}

/// The full OID of an outlet's status cell.
fn status_oid(m: &PduModel, outlet: u16) -> String {
    PduModel::outlet_oid(&m.status, m.first_index, outlet)
}

fn set(view: &str, outlet: u16, value: i64) -> (String, u16, i64) {
    (view.to_string(), outlet, value)
}

fn sets_of(lines: &[SetLine]) -> Vec<(String, u16, i64)> {
    lines
        .iter()
        .map(|l| (l.view.clone(), l.outlet, l.value))
        .collect()
}

#[tokio::test]
async fn every_model_switches_only_the_outlet_asked() {
    let d = Snmpd::start(Options::default());
    let b = backend();
    let cases = [
        (model("IBM_PDU"), "ibm", 3),
        (model("APC_RPDU"), "apc", 17),
        (model("APC_MASTERSWITCH"), "masterswitch", 8),
        (model("EATON_EPDU"), "eaton", 1),
        (model("RARITAN_PDU2"), "raritan", 24),
        (user_model(), "raritan", 5),
    ];
    let mut expected = Vec::new();
    for (m, view, outlet) in cases {
        let p = pdu(&d, m.clone());
        let ctx = format!("{} outlet {outlet}", m.name);
        b.set_outlet(&p, outlet, false).await.expect(&ctx);
        assert_eq!(d.get_int(&status_oid(&m, outlet)), m.status.off, "{ctx}");
        assert_eq!(
            b.outlet_state(&p, outlet).await,
            Ok(OutletState::Off),
            "{ctx}"
        );
        // Its neighbour (or outlet 1) is untouched.
        let other = if outlet > 1 { outlet - 1 } else { 2 };
        assert_eq!(
            b.outlet_state(&p, other).await,
            Ok(OutletState::On),
            "{ctx}"
        );
        b.set_outlet(&p, outlet, true).await.expect(&ctx);
        assert_eq!(d.get_int(&status_oid(&m, outlet)), m.status.on, "{ctx}");
        assert_eq!(
            b.outlet_state(&p, outlet).await,
            Ok(OutletState::On),
            "{ctx}"
        );
        expected.push(set(view, outlet, m.control.off));
        expected.push(set(view, outlet, m.control.on));
    }
    assert_eq!(sets_of(&d.sets()), expected);
}

#[tokio::test]
async fn set_outlet_returns_only_once_the_pdu_reports_the_new_state() {
    const TRANSIENT: Duration = Duration::from_millis(400);
    let d = Snmpd::start(Options {
        transient_ms: TRANSIENT.as_millis() as u64,
        ..Options::default()
    });
    let b = backend();
    // IBM shows cycling (2), Eaton pendingOff (2), APC keeps showing "on" while switching.
    for (name, outlet) in [("IBM_PDU", 3), ("EATON_EPDU", 4), ("APC_RPDU", 5)] {
        let m = model(name);
        let p = pdu(&d, m.clone());
        let start = Instant::now();
        b.set_outlet(&p, outlet, false).await.expect(name);
        let took = start.elapsed();
        assert!(
            took >= TRANSIENT,
            "{name}: set_outlet returned after {took:?}, before the outlet switched"
        );
        assert_eq!(d.get_int(&status_oid(&m, outlet)), m.status.off, "{name}");

        // Switched by someone else: the backend reports the transient state as it is.
        let next = outlet + 5;
        d.set_int(
            &PduModel::outlet_oid(&m.control, m.first_index, next),
            m.control.off,
        );
        let during = b.outlet_state(&p, next).await;
        let want = if name == "APC_RPDU" {
            OutletState::On
        } else {
            OutletState::Changing
        };
        assert_eq!(during, Ok(want), "{name} during the switch");
        tokio::time::sleep(TRANSIENT + Duration::from_millis(100)).await;
        assert_eq!(
            b.outlet_state(&p, next).await,
            Ok(OutletState::Off),
            "{name}"
        );
    }
}

#[tokio::test]
async fn slen_firmware_uses_the_variant_columns() {
    let d = Snmpd::start(Options {
        ibm_firmware: IBM_SLEN_FIRMWARE.into(),
        ..Options::default()
    });
    let b = backend();
    let p = pdu(&d, model("IBM_PDU"));
    b.set_outlet(&p, 2, false)
        .await
        .expect("cut on sLEN firmware");
    assert_eq!(d.get_int(".1.3.6.1.4.1.2.6.223.8.2.2.1.13.2"), 0);
    assert!(
        d.snmpget(RO_COMMUNITY, &[".1.3.6.1.4.1.2.6.223.8.2.2.1.11.2"], 1.0)
            .is_err(),
        "the emulator must not serve column 11 on sLEN firmware"
    );
    assert_eq!(b.outlet_state(&p, 2).await, Ok(OutletState::Off));
    assert_eq!(b.outlet_state(&p, 1).await, Ok(OutletState::On));
    assert_eq!(sets_of(&d.sets()), [set("ibm", 2, 0)]);
}

#[tokio::test]
async fn info_reads_firmware_and_outlet_count() {
    let mut d = Snmpd::start(Options::default());
    let b = backend();
    let ibm = b.info(&pdu(&d, model("IBM_PDU"))).await.expect("IBM info");
    assert_eq!(ibm.firmware.as_deref(), Some(snmp_support::IBM_FIRMWARE));
    assert_eq!(ibm.outlets, Some(u32::from(OUTLETS)));
    let apc = b.info(&pdu(&d, model("APC_RPDU"))).await.expect("APC info");
    assert_eq!(
        (apc.firmware.as_deref(), apc.outlets),
        (Some("v6.8.2"), Some(24))
    );
    let user = b
        .info(&pdu(&d, user_model()))
        .await
        .expect("user model info");
    assert_eq!(
        (user.firmware.as_deref(), user.outlets),
        (Some("v6.8.2"), Some(24))
    );
    // No firmware or count OID: the link is still checked (outlet 1's state is read).
    let ms = b.info(&pdu(&d, model("APC_MASTERSWITCH"))).await;
    assert_eq!(ms.map(|i| (i.firmware, i.outlets)), Ok((None, None)));
    let mut broken = user_model();
    broken.outlet_count_oid = Some("1.3.6.1.4.1.318.1.1.12.3.1.99.0".into());
    let e = b.info(&pdu(&d, broken)).await.expect_err("missing OID");
    assert!(
        matches!(&e, BackendError::Refused { reason, .. } if reason.contains("noSuch") && reason.contains("1.3.6.1.4.1.318.1.1.12.3.1.99.0")),
        "{e}"
    );
    d.kill();
    let e = b
        .info(&pdu(&d, model("IBM_PDU")))
        .await
        .expect_err("agent gone");
    assert!(matches!(e, BackendError::Unreachable { .. }), "{e}");
}

#[tokio::test]
async fn concurrent_cuts_touch_exactly_those_outlets() {
    // Outlets take 500 ms to switch: if the four SETs all land within that window the
    // cuts ran in parallel, not one after another.
    const TRANSIENT_MS: u64 = 500;
    let opts = Options {
        transient_ms: TRANSIENT_MS,
        ..Options::default()
    };
    let (a, bb) = (Snmpd::start(opts.clone()), Snmpd::start(opts));
    let b = backend();
    let (pa, pb) = (pdu(&a, model("APC_RPDU")), pdu(&bb, model("IBM_PDU")));
    let cuts = [(&pa, 3u16), (&pa, 7), (&pb, 2), (&pb, 11)];
    let start = Instant::now();
    let results =
        futures_util::future::join_all(cuts.iter().map(|(p, o)| b.set_outlet(p, *o, false))).await;
    let took = start.elapsed();
    for ((p, o), r) in cuts.iter().zip(&results) {
        assert_eq!(r, &Ok(()), "{} outlet {o}", p.model.name);
    }
    let (sa, sb) = (a.sets(), bb.sets());
    let mut got_a = sets_of(&sa);
    got_a.sort();
    let mut got_b = sets_of(&sb);
    got_b.sort();
    assert_eq!(got_a, [set("apc", 3, 2), set("apc", 7, 2)]);
    assert_eq!(got_b, [set("ibm", 2, 0), set("ibm", 11, 0)]);
    let times: Vec<u128> = sa.iter().chain(&sb).map(|s| s.epoch_ns).collect();
    let spread_ms = (times.iter().max().unwrap() - times.iter().min().unwrap()) / 1_000_000;
    assert!(
        spread_ms < u128::from(TRANSIENT_MS),
        "the SETs were {spread_ms} ms apart: the cuts were serialized (took {took:?})"
    );
    // Every other outlet of both PDUs is still on.
    for (d, p) in [(&a, &pa), (&bb, &pb)] {
        for n in 1..=p.model.outlets.min(OUTLETS) {
            let want = if cuts.iter().any(|(cp, co)| cp.port == p.port && *co == n) {
                p.model.status.off
            } else {
                p.model.status.on
            };
            assert_eq!(
                d.get_int(&status_oid(&p.model, n)),
                want,
                "{} outlet {n}",
                p.model.name
            );
        }
    }
}

#[tokio::test]
async fn wrong_community_is_a_clear_error_and_switches_nothing() {
    let d = Snmpd::start(Options::default());
    let p = pdu(&d, model("APC_RPDU"));
    let wrong = backend_with("notTheCommunity7", impatient());
    let e = wrong
        .set_outlet(&p, 1, false)
        .await
        .expect_err("wrong community");
    let text = e.to_string();
    assert!(matches!(e, BackendError::Unreachable { .. }), "{text}");
    assert!(
        text.contains("no answer within 300 ms after 2 tries (wrong community?)"),
        "{text}"
    );
    assert!(!text.contains("notTheCommunity7"), "{text}");
    for b in [&wrong, &backend()] {
        let dbg = format!("{b:?}");
        assert!(
            !dbg.contains("notTheCommunity7") && !dbg.contains(COMMUNITY),
            "{dbg}"
        );
    }

    // A read-only community: the agent answers noAccess.
    let ro = backend_with(RO_COMMUNITY, impatient());
    let e = ro
        .set_outlet(&p, 1, false)
        .await
        .expect_err("read-only community");
    let text = e.to_string();
    assert!(matches!(e, BackendError::Refused { .. }), "{text}");
    assert!(
        text.contains("SNMP error noAccess on 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.1"),
        "{text}"
    );
    assert_eq!(ro.outlet_state(&p, 1).await, Ok(OutletState::On));
    assert_eq!(d.sets(), []);
    assert_eq!(d.get_int(&status_oid(&p.model, 1)), 1);
}

#[tokio::test]
async fn a_paused_agent_never_yields_a_stale_reply() {
    let mut d = Snmpd::start(Options::default());
    let b = backend_with(COMMUNITY, impatient());
    let p = pdu(&d, model("IBM_PDU"));
    b.set_outlet(&p, 1, false).await.expect("outlet 1 off");
    // Outlet 1 is off and outlet 2 on: a reply meant for outlet 1 read as outlet 2's
    // would be taken for "off", or refused for naming the wrong OID.
    for round in 0..4 {
        d.pause();
        let e = b.outlet_state(&p, 1).await.expect_err("paused agent");
        assert!(matches!(e, BackendError::Unreachable { .. }), "{e}");
        // A caller that gives up mid-request (its future dropped at an await).
        let dropped = tokio::time::timeout(Duration::from_millis(50), b.outlet_state(&p, 1)).await;
        assert!(dropped.is_err(), "round {round}: answered while paused");
        d.resume();
        // The agent now answers the queued outlet-1 requests; none may be read here.
        assert_eq!(
            b.outlet_state(&p, 2).await,
            Ok(OutletState::On),
            "round {round}"
        );
        assert_eq!(
            b.outlet_state(&p, 1).await,
            Ok(OutletState::Off),
            "round {round}"
        );
        assert_eq!(
            b.info(&p).await.map(|i| i.outlets),
            Ok(Some(24)),
            "round {round}"
        );
    }
    assert_eq!(sets_of(&d.sets()), [set("ibm", 1, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_paused_mid_cut_is_retried_cleanly() {
    let mut d = Snmpd::start(Options {
        transient_ms: 300,
        ..Options::default()
    });
    let b = std::sync::Arc::new(backend_with(COMMUNITY, impatient()));
    let p = pdu(&d, model("IBM_PDU"));
    let cut = tokio::spawn({
        let (b, p) = (b.clone(), p.clone());
        async move { b.set_outlet(&p, 5, false).await }
    });
    // Freeze the agent once the SET has landed, while the read-back is under way.
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.sets().is_empty() {
        assert!(Instant::now() < deadline, "the SET never reached the PDU");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    d.pause();
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.resume();
    let r = tokio::time::timeout(Duration::from_secs(10), cut)
        .await
        .expect("set_outlet is bounded")
        .expect("no panic");
    assert_eq!(r, Ok(()), "the read-back resumes once the agent answers");
    assert_eq!(b.outlet_state(&p, 5).await, Ok(OutletState::Off));
    assert_eq!(b.outlet_state(&p, 6).await, Ok(OutletState::On));
    assert_eq!(d.get_int(&status_oid(&p.model, 5)), 0);
    assert_eq!(sets_of(&d.sets()), [set("ibm", 5, 0)]);
}

#[tokio::test]
async fn a_killed_agent_is_unreachable_quickly() {
    let mut d = Snmpd::start(Options::default());
    let b = backend();
    let p = pdu(&d, model("APC_RPDU"));
    assert_eq!(b.outlet_state(&p, 1).await, Ok(OutletState::On));
    d.kill();
    let start = Instant::now();
    let e = b.set_outlet(&p, 1, false).await.expect_err("agent killed");
    let took = start.elapsed();
    let text = e.to_string();
    assert!(matches!(e, BackendError::Unreachable { .. }), "{text}");
    assert!(text.contains("nothing listens on UDP port"), "{text}");
    // The ICMP port-unreachable ends each try at once: far below 3 × 500 ms of timeouts.
    assert!(took < Duration::from_millis(1000), "took {took:?}");
}

#[tokio::test]
async fn bad_outlets_and_missing_cells_are_refused() {
    let d = Snmpd::start(Options::default());
    let b = backend();
    let ibm = pdu(&d, model("IBM_PDU"));
    for outlet in [0, 13] {
        let e = b
            .set_outlet(&ibm, outlet, false)
            .await
            .expect_err("no such outlet");
        assert!(
            e.to_string().contains(&format!(
                "outlet {outlet} does not exist (model IBM_PDU has outlets 1–12)"
            )),
            "{e}"
        );
    }
    let mut wrong = user_model();
    wrong.control.oid = "1.3.6.1.4.1.13742.6.4.1.2.1.9.1".into();
    wrong.status.oid = "1.3.6.1.4.1.13742.6.4.1.2.1.9.1".into();
    let wp = pdu(&d, wrong);
    let e = b.outlet_state(&wp, 1).await.expect_err("missing column");
    assert!(
        matches!(&e, BackendError::Refused { reason, .. } if reason.contains("noSuchInstance") || reason.contains("noSuchObject")),
        "{e}"
    );
    let e = b
        .set_outlet(&wp, 1, false)
        .await
        .expect_err("unwritable column");
    assert!(
        matches!(&e, BackendError::Refused { reason, .. } if reason.contains("SNMP error notWritable")),
        "{e}"
    );
    // A status column is not writable either.
    let mut ro = model("APC_RPDU");
    ro.control = ro.status.clone();
    let e = b
        .set_outlet(&pdu(&d, ro), 1, false)
        .await
        .expect_err("status column");
    assert!(e.to_string().contains("notWritable"), "{e}");
    assert_eq!(d.sets(), []);
}

/// End to end: the real daemon, a server whose BMC cannot be reached (nothing listens on
/// its port) and whose two outlets are on this snmpd: `haconn node reset` cuts exactly
/// those outlets, the HA monitors hear REBOOT, and after `recoveryTime` they are back on.
#[test]
fn daemon_cuts_the_outlets_of_a_server_whose_bmc_is_unreachable() {
    let d = Snmpd::start(Options::default());
    let mut daemon = Daemon::new("").no_watch().without_test_hooks();
    let dir = daemon.path("");
    let p = |rel: &str| dir.join(rel).display().to_string();
    std::fs::write(p("key"), "haconn-snmp-e2e-key-0123456789\n").expect("key");
    let [dead1, dead2, dead3, mon1, mon2] = [(); 5].map(|_| snmp_support::free_port());
    let spec = format!(
        r#"apiVersion: haconn/v1
mode: single
resetPath:
  address: 127.0.0.1/8
  port: 15001
  broadcast: 127.255.255.255
  auth: {{key: {{file: "{key}"}}}}
hispeed: 1000
snmp: {{community: {COMMUNITY}}}
pdus:
  - {{address: 127.0.0.1, port: {port}, model: APC_RPDU}}
managementServers:
  - name: labms01
    bmc: {{address: 127.0.0.2, port: {dead1}, username: admin, password: labpassw0rd}}
    mlan: {{address: 127.0.0.1, port: 15002}}
servers:
  - name: labnode01
    bmc: {{address: 127.0.0.11, port: {dead2}, username: admin, password: labpassw0rd}}
    cluster: true
  - name: labnode02
    bmc: {{address: 127.0.0.12, port: {dead3}, username: admin, password: labpassw0rd}}
    cluster: true
    ipdu: {{enabled: true, timeout: 5, recoveryTime: 5, outlets: [{{pdu: 127.0.0.1, outlet: 3}}, {{pdu: 127.0.0.1, outlet: 4}}]}}
"#,
        key = p("key"),
        port = d.port,
    );
    for word in spec.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let parts: Vec<&str> = word.split('.').collect();
        if parts.len() == 4 && parts.iter().all(|x| x.parse::<u8>().is_ok()) {
            assert_eq!(parts[0], "127", "non-loopback address {word} in the spec");
        }
    }
    daemon.write("cluster.yaml", &spec);
    daemon.spawn();
    let log = |name: &str| std::fs::read_to_string(p(&format!("log/{name}"))).unwrap_or_default();
    let diag = || {
        format!(
            "--- init.log\n{}--- reset.log\n{}--- error.log\n{}--- stderr\n{}\n{}",
            log("init.log"),
            log("reset.log"),
            log("error.log"),
            daemon.stderr(),
            d.diagnostics()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let connector = loop {
        let found = log("init.log").lines().find_map(|l| {
            l.split_once("reset path listening on ")
                .map(|(_, a)| a.trim().to_string())
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "daemon not ready\n{}", diag());
        std::thread::sleep(Duration::from_millis(10));
    };
    let node = |args: &[&str]| {
        // Each node's own key file (per-node keys, derived from the spec's key).
        let system = args
            .iter()
            .position(|a| *a == "--system")
            .map(|i| args[i + 1])
            .expect("--system");
        let key = p(&format!("{system}.key"));
        let own = haconn::resetpath::keys::node_key(b"haconn-snmp-e2e-key-0123456789", system);
        std::fs::write(&key, format!("{own}\n")).expect("key");
        let mut a = vec!["node", args[0], "--connector", &connector, "--key-file"];
        a.push(&key);
        a.extend_from_slice(&args[1..]);
        run_bounded(&a, Duration::from_secs(60))
    };
    for (system, sub, port) in [("labnode01", "1", mon1), ("labnode02", "2", mon2)] {
        let port = port.to_string();
        let out = node(&[
            "check",
            "--system",
            system,
            "--subsystem",
            sub,
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--pair",
            "1",
        ]);
        // Registered, whatever it says about resettability (the BMC is unreachable).
        assert!(
            out.1.contains(&format!("CHECK-REPLY system={system} ")),
            "check {system}: {out:?}\n{}",
            diag()
        );
    }
    let before = Instant::now();
    let mon1s = mon1.to_string();
    let (code, stdout, stderr) = node(&[
        "reset",
        "--system",
        "labnode01",
        "--subsystem",
        "1",
        "--port",
        &mon1s,
        "--bind",
        "127.0.0.1",
        "--target-system",
        "labnode02",
        "--target",
        "2",
        "--req",
        "7",
    ]);
    let run = format!("exit {code:?}\n{stdout}\n{stderr}\n{}", diag());
    assert!(stdout.contains("result=DUMP"), "{run}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("ATTENTION") && l.contains("state=REBOOT")),
        "{run}"
    );
    // Exactly labnode02's outlets were cut, and nothing else was switched.
    let mut cut = sets_of(&d.sets());
    cut.sort();
    assert_eq!(cut, [set("apc", 3, 2), set("apc", 4, 2)], "{run}");
    assert_eq!(d.get_int(&status_oid(&model("APC_RPDU"), 3)), 2);
    assert_eq!(d.get_int(&status_oid(&model("APC_RPDU"), 5)), 1);
    let reset_log = log("reset.log");
    for outlet in [3, 4] {
        assert!(
            reset_log
                .lines()
                .any(|l| l.contains("IPDUSD") && l.contains(&format!(" {outlet} OFF"))),
            "{run}"
        );
    }
    // recoveryTime: 5 s later both are switched back on.
    let sets = d.wait_sets(4, Duration::from_secs(20));
    let mut back: Vec<_> = sets_of(&sets[2.min(sets.len())..]);
    back.sort();
    assert_eq!(back, [set("apc", 3, 1), set("apc", 4, 1)], "{}", diag());
    assert!(
        before.elapsed() >= Duration::from_secs(5),
        "switched on before recoveryTime"
    );
    assert_eq!(d.get_int(&status_oid(&model("APC_RPDU"), 3)), 1);
}

/// Runs `haconn ARGS`, killed if it outlives `limit`: (exit code, stdout, stderr).
fn run_bounded(args: &[&str], limit: Duration) -> (Option<i32>, String, String) {
    let r = haconn_within(args, limit);
    (r.code, r.stdout, r.stderr)
}
