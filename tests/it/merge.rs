//! Reload merges: accepted objects take the desired form, refused ones keep the live form,
//! and the merged spec always stays valid.

use haconn::plan::merge::merge;
use haconn::plan::{LiveFacts, ObjectKind, Refusal, plan};
use haconn::spec::model::Spec;
use haconn::spec::render::state_yaml;
use haconn::spec::{CheckOptions, check_bytes};

fn spec(servers: &str, pdus: &str) -> Spec {
    let text = format!(
        r#"
apiVersion: haconn/v1
resetPath: {{address: 192.168.10.100/24, port: 5001, auth: {{key: "0123456789abcdef"}}}}
snmp: {{community: public}}
managementServers:
  - name: m1
    bmc: {{address: 192.168.20.1, username: admin, password: "Passw0rd!"}}
    mlan: {{address: 10.0.0.1, port: 5002}}
  - name: m2
    bmc: {{address: 192.168.20.2, username: admin, password: "Passw0rd!"}}
    mlan: {{address: 10.0.0.2, port: 5002}}
pdus: [{pdus}]
servers:
{servers}
"#
    );
    let c = check_bytes(text.as_bytes(), CheckOptions::default());
    c.spec
        .unwrap_or_else(|| panic!("invalid test spec: {:#?}", c.diagnostics))
}

fn server(name: &str, bmc: u8, outlets: &str) -> String {
    let ipdu = if outlets.is_empty() {
        String::new()
    } else {
        format!(", ipdu: {{timeout: 10, recoveryTime: 0, outlets: [{outlets}]}}")
    };
    format!(
        "  - {{name: {name}, bmc: {{address: 192.168.20.{bmc}, username: admin, password: \"Passw0rd!\"}}{ipdu}}}\n"
    )
}

const PDU1: &str = "{address: 192.168.30.1, model: IBM_PDU}";
const PDU2: &str = "{address: 192.168.30.2, model: IBM_PDU}";

fn assert_reloads(s: &Spec) {
    let again = check_bytes(state_yaml(s).as_bytes(), CheckOptions::default());
    assert_eq!(again.spec.as_ref(), Some(s), "{:#?}", again.diagnostics);
}

#[test]
fn everything_accepted_gives_the_desired_spec() {
    let live = spec(&server("a", 11, "{pdu: 192.168.30.1, outlet: 1}"), PDU1);
    let desired = spec(
        &(server("a", 11, "{pdu: 192.168.30.2, outlet: 1}") + &server("b", 12, "")),
        PDU2,
    );
    let p = plan(&live, &desired, &LiveFacts::default());
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    assert!(m.results.iter().all(|r| r.is_ok()), "{:?}", m.results);
    assert_eq!(m.spec, desired);
    assert_reloads(&m.spec);
}

#[test]
fn pdu_delete_is_refused_while_a_refused_server_still_uses_it() {
    // Server a moves from PDU1 to PDU2 and changes its BMC account: with its HA monitor
    // active the whole server change is refused, so it still needs PDU1.
    let live = spec(
        &server("a", 11, "{pdu: 192.168.30.1, outlet: 1}"),
        &format!("{PDU1}, {PDU2}"),
    );
    let desired_text = server("a", 11, "{pdu: 192.168.30.2, outlet: 1}").replace("admin", "root");
    let desired = spec(&desired_text, PDU2);
    let facts = LiveFacts {
        monitors_active: ["a".to_string()].into(),
        ..Default::default()
    };
    let p = plan(&live, &desired, &facts);
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    let result_of = |kind: ObjectKind| {
        let i = p.changes.iter().position(|c| c.kind == kind).unwrap();
        m.results[i].clone()
    };
    assert_eq!(
        result_of(ObjectKind::PhysicalServer),
        Err(Refusal::MonitorActive)
    );
    assert!(
        matches!(result_of(ObjectKind::Pdu), Err(Refusal::Conflict(why)) if why.contains("still feeds a")),
        "{:?}",
        m.results
    );
    assert_eq!(m.spec, live);
    assert_reloads(&m.spec);
}

#[test]
fn an_add_on_an_outlet_a_refused_change_still_holds_is_refused() {
    let live = spec(&server("a", 11, "{pdu: 192.168.30.1, outlet: 1}"), PDU1);
    let desired = spec(
        &(server("a", 11, "{pdu: 192.168.30.1, outlet: 2}")
            + &server("b", 12, "{pdu: 192.168.30.1, outlet: 1}")),
        PDU1,
    );
    let facts = LiveFacts {
        resetting: ["a".to_string()].into(),
        ..Default::default()
    };
    let p = plan(&live, &desired, &facts);
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    assert_eq!(m.results[0], Err(Refusal::ResetInProgress));
    assert!(
        matches!(&m.results[1], Err(Refusal::Conflict(why)) if why.contains("still used by a")),
        "{:?}",
        m.results
    );
    assert_eq!(m.spec, live);
}

#[test]
fn a_refused_delete_keeps_an_add_from_passing_the_limit() {
    let live_servers: String = (0..32)
        .map(|i| server(&format!("s{i}"), 100 + i, ""))
        .collect();
    let live = spec(&live_servers, PDU1);
    let desired_servers: String = (1..33)
        .map(|i| server(&format!("s{i}"), 100 + i, ""))
        .collect();
    let desired = spec(&desired_servers, PDU1);
    let facts = LiveFacts {
        monitors_active: ["s0".to_string()].into(),
        ..Default::default()
    };
    let p = plan(&live, &desired, &facts);
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    assert_eq!(m.spec, live);
    assert!(m.results.iter().all(|r| r.is_err()), "{:?}", m.results);
    assert_reloads(&m.spec);
}

#[test]
fn globals_are_never_merged() {
    let live = spec(&server("a", 11, ""), PDU1);
    let mut desired = live.clone();
    desired.hispeed = haconn::spec::model::Hispeed::new(1500).map(Some).unwrap();
    let p = plan(&live, &desired, &LiveFacts::default());
    let m = merge(&live, &desired, &p, |_| Ok(()));
    assert_eq!(m.results, vec![Err(Refusal::NeedsRestart)]);
    assert_eq!(m.spec, live);
}
