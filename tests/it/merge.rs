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
        monitors_active: [haconn::spec::model::Name::parse("a").expect("a name")].into(),
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
        resetting: [haconn::spec::model::Name::parse("a").expect("a name")].into(),
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
        monitors_active: [haconn::spec::model::Name::parse("s0").expect("a name")].into(),
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

/// The lab spec with an SNMP community, a PDU and a server fed by it added (issue 18.1):
/// the community needs a restart, so the PDU and the server that needs it are refused
/// with it, and the live spec keeps validating.
#[test]
fn changes_that_need_a_refused_snmp_community_are_refused_with_it() {
    let lab = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/lab-single.yaml"
    ))
    .unwrap();
    let load = |text: &str| {
        let c = check_bytes(text.as_bytes(), CheckOptions::default());
        c.spec
            .unwrap_or_else(|| panic!("invalid test spec: {:#?}", c.diagnostics))
    };
    let live = load(&lab);
    let desired_text = lab
        .replace(
            "hispeed: 1000\n",
            "hispeed: 1000\nsnmp: {community: public}\npdus: [{address: 127.0.2.1, model: IBM_PDU}]\n",
        )
        .replace(
            "    cluster: true\n  - name: labnode02",
            "    cluster: true\n    ipdu: {timeout: 10, recoveryTime: 0, outlets: [{pdu: 127.0.2.1, outlet: 1}]}\n  - name: labnode02",
        );
    let desired = load(&desired_text);
    let p = plan(&live, &desired, &LiveFacts::default());
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    let result_of = |name: &str| {
        let i = p.changes.iter().position(|c| c.name == name).unwrap();
        m.results[i].as_ref().map_err(|r| r.to_string()).map(|_| ())
    };
    assert_eq!(result_of("snmp"), Err("needs restart".into()));
    assert_eq!(
        result_of("127.0.2.1"),
        Err("depends on snmp: needs restart".into())
    );
    assert_eq!(
        result_of("labnode01"),
        Err("depends on pdu 127.0.2.1: depends on snmp: needs restart".into())
    );
    assert_eq!(m.spec, live);
    assert_reloads(&m.spec);
    // The plan shows the community as `(secret)`, never its fingerprint.
    assert!(
        p.render().contains(r#"+ snmp: {"community":"(secret)"}"#)
            && !p.render().contains("\\u0000"),
        "{}",
        p.render()
    );
    // The plan predicts the same.
    assert!(
        p.render()
            .contains("Error (depends on pdu 127.0.2.1: depends on snmp: needs restart)"),
        "{}",
        p.render()
    );
}

mod property {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use haconn::plan::merge::NOT_VALID;

    /// One server of the small world: which name, which BMC, its outlets and guests.
    #[derive(Debug, Clone)]
    struct Server {
        name: usize,
        bmc: usize,
        outlets: Vec<(usize, u8)>,
        guests: Vec<usize>,
        cluster: bool,
        account: usize,
    }

    #[derive(Debug, Clone)]
    struct World {
        community: bool,
        hispeed: bool,
        pdus: Vec<(usize, bool)>,
        model_outlets: u8,
        mserver_outlet: Option<(usize, u8)>,
        servers: Vec<Server>,
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const GUESTS: [&str; 3] = ["g1", "g2", "g3"];
    const PDUS: [&str; 3] = ["192.168.30.1", "192.168.30.2", "192.168.30.3"];

    fn server() -> impl Strategy<Value = Server> {
        (
            0..NAMES.len(),
            0..4usize,
            proptest::collection::vec((0..PDUS.len(), 1..5u8), 0..3),
            proptest::collection::vec(0..GUESTS.len(), 0..3),
            any::<bool>(),
            0..2usize,
        )
            .prop_map(|(name, bmc, outlets, guests, cluster, account)| Server {
                name,
                bmc,
                outlets,
                guests,
                cluster,
                account,
            })
    }

    fn world() -> impl Strategy<Value = World> {
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::vec((0..PDUS.len(), any::<bool>()), 0..4),
            prop_oneof![Just(4u8), Just(8u8)],
            proptest::option::of((0..PDUS.len(), 1..5u8)),
            proptest::collection::vec(server(), 0..5),
        )
            .prop_map(
                |(community, hispeed, pdus, model_outlets, mserver_outlet, servers)| World {
                    community,
                    hispeed,
                    pdus,
                    model_outlets,
                    mserver_outlet,
                    servers,
                },
            )
    }

    /// The world as a spec text, with the obvious clashes (a name, BMC, PDU, outlet or
    /// guest used twice) left out so that most worlds validate.
    fn text(w: &World) -> String {
        let mut s = String::from(
            "apiVersion: haconn/v1\nmode: single\nresetPath: {address: 127.0.0.1/8, port: 15001, auth: none}\n",
        );
        s += if w.hispeed {
            "hispeed: 1000\n"
        } else {
            "hispeed: off\n"
        };
        if w.community {
            s += "snmp: {community: public}\n";
        }
        let mut pdus = BTreeSet::new();
        let mut user_model = false;
        s += "pdus:\n";
        for (p, user) in &w.pdus {
            if pdus.insert(*p) {
                user_model |= user;
                let model = if *user { "LABPDU" } else { "IBM_PDU" };
                s += &format!("  - {{address: {}, model: {model}}}\n", PDUS[*p]);
            }
        }
        if pdus.is_empty() {
            s = s.replace("pdus:\n", "");
        }
        if user_model {
            s += &format!(
                "pduModels:\n  - {{name: LABPDU, outlets: {}, control: {{oid: 1.3.6.1.4.1.99999.1.2.1.3, on: 1, off: 2}}}}\n",
                w.model_outlets
            );
        }
        let mut taken = BTreeSet::new();
        s += "managementServers:\n  - name: ms\n    bmc: {address: 127.0.0.2, username: admin, password: labpassw0rd}\n    mlan: {address: 127.0.0.1, port: 15002}\n";
        if let Some((p, o)) = w.mserver_outlet
            && pdus.contains(&p)
        {
            taken.insert((p, o));
            s += &format!(
                "    ipdu: {{timeout: 10, outlets: [{{pdu: {}, outlet: {o}}}]}}\n",
                PDUS[p]
            );
        }
        let (mut names, mut bmcs, mut guests) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        let mut servers = String::new();
        for sv in &w.servers {
            if !names.insert(sv.name) || !bmcs.insert(sv.bmc) {
                continue;
            }
            let account = ["admin", "root"][sv.account];
            servers += &format!(
                "  - name: {}\n    bmc: {{address: 127.0.0.{}, username: {account}, password: labpassw0rd}}\n    cluster: {}\n",
                NAMES[sv.name],
                11 + sv.bmc,
                sv.cluster
            );
            let outlets: Vec<String> = sv
                .outlets
                .iter()
                .filter(|(p, o)| pdus.contains(p) && taken.insert((*p, *o)))
                .map(|(p, o)| format!("{{pdu: {}, outlet: {o}}}", PDUS[*p]))
                .collect();
            if !outlets.is_empty() {
                servers += &format!(
                    "    ipdu: {{timeout: 10, recoveryTime: 0, outlets: [{}]}}\n",
                    outlets.join(", ")
                );
            }
            let gs: Vec<&str> = sv
                .guests
                .iter()
                .filter(|g| guests.insert(**g))
                .map(|g| GUESTS[*g])
                .collect();
            if !gs.is_empty() {
                servers += &format!(
                    "    esxi: {{address: 127.0.1.{}, username: root, password: labpassw0rd, hostKey: \"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\", guests: [{}]}}\n",
                    11 + sv.bmc,
                    gs.join(", ")
                );
            }
        }
        if !servers.is_empty() {
            s += "servers:\n";
            s += &servers;
        }
        s
    }

    fn load(w: &World) -> Option<Spec> {
        check_bytes(text(w).as_bytes(), CheckOptions::default()).spec
    }

    fn valid_world() -> impl Strategy<Value = Spec> {
        world().prop_filter_map("invalid world", |w| load(&w))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Random live and desired specs, random refusals: the merge always validates,
        /// reads back from its state file as itself, and keeps every refused object as
        /// it was, without the last-resort "would not validate" refusal.
        #[test]
        fn a_merge_always_validates(
            live in valid_world(),
            desired in valid_world(),
            refuse in proptest::collection::btree_set(
                prop_oneof![
                    (0..NAMES.len()).prop_map(|i| NAMES[i].to_string()),
                    (0..PDUS.len()).prop_map(|i| PDUS[i].to_string()),
                    Just("ms".to_string()),
                ],
                0..4,
            ),
        ) {
            let p = plan(&live, &desired, &LiveFacts::default());
            let m = merge(&live, &desired, &p, |c| {
                if refuse.contains(&c.name) || c.renamed_from.as_ref().is_some_and(|f| refuse.contains(f)) {
                    Err(Refusal::MonitorActive)
                } else {
                    Ok(())
                }
            });
            for r in &m.results {
                prop_assert!(
                    !matches!(r, Err(Refusal::Failed(why)) if why.starts_with(NOT_VALID)),
                    "{r:?}\nplan:\n{}\nlive:\n{}\ndesired:\n{}",
                    p.render(),
                    state_yaml(&live),
                    state_yaml(&desired)
                );
            }
            let again = check_bytes(state_yaml(&m.spec).as_bytes(), CheckOptions::default());
            prop_assert_eq!(again.spec.as_ref(), Some(&m.spec), "{:#?}", again.diagnostics);
            for (c, r) in p.changes.iter().zip(&m.results) {
                if r.is_err() && c.kind == ObjectKind::PhysicalServer {
                    let old = c.renamed_from.as_deref().unwrap_or(&c.name);
                    let kept = m.spec.servers.values().find(|s| s.name.as_str() == old);
                    let was = live.servers.values().find(|s| s.name.as_str() == old);
                    prop_assert_eq!(kept, was);
                }
            }
        }
    }
}

/// Issue 15: which failure warnings a server takes changes at runtime, HA monitor active
/// or not (it touches nothing of a reset), and the merged spec has it.
#[test]
fn a_servers_warnings_change_at_runtime() {
    let live = spec(&server("a", 11, ""), PDU1);
    let desired = spec(
        &server("a", 11, "").replace("}}\n", "}, warnings: {degradation: true}}\n"),
        PDU1,
    );
    assert!(desired.servers["a"].warnings.degradation);
    let mut facts = LiveFacts::default();
    facts
        .monitors_active
        .insert(haconn::spec::model::Name::parse("a").unwrap());
    let p = plan(&live, &desired, &facts);
    assert_eq!(p.changes.len(), 1, "{:#?}", p.changes);
    assert_eq!(
        p.changes[0].class,
        haconn::plan::Class::Runtime,
        "{:#?}",
        p.changes
    );
    let m = merge(&live, &desired, &p, |c| c.predicted.clone());
    assert!(m.results.iter().all(|r| r.is_ok()), "{:?}", m.results);
    assert_eq!(m.spec, desired);
    assert_reloads(&m.spec);
}
