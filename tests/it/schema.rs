//! The JSON Schema is committed, current, and agrees with the semantic validator on every
//! single-field rule: what one refuses the other refuses too.

use haconn::spec::{schema_errors, schema_text, semantic_errors, yaml::load_str};
use serde_json::{Value, json};

#[test]
fn committed_schema_is_current() {
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/haconn.schema.json"
    ))
    .expect("schema/haconn.schema.json exists");
    assert!(
        committed.trim_end() == schema_text().trim_end(),
        "schema/haconn.schema.json is stale: run `cargo run -- schema > schema/haconn.schema.json`"
    );
}

/// A valid spec touching every kind of field.
fn base() -> Value {
    load_str(
        r#"
apiVersion: haconn/v1
resetPath: {address: 192.168.10.100/24, port: 5001, auth: {key: {env: HACONN_KEY}}}
hispeed: 1500
snmp: {community: {env: HACONN_COMMUNITY}}
managementServers:
  - name: mserver01
    bmc: {address: 192.168.20.1, username: admin, password: {env: PW1}}
    mlan: {address: 10.0.0.1, port: 5002}
    ipdu: {timeout: 10, outlets: [{pdu: 192.168.30.1, outlet: 11}]}
  - name: mserver02
    bmc: {address: 192.168.20.2, username: admin, password: {file: /etc/haconn/pw2}}
    mlan: {address: 10.0.0.2, port: 5002}
pdus:
  - {address: 192.168.30.1, model: IBM_PDU}
  - {address: 192.168.30.2, model: LAB_PDU}
pduModels:
  - name: LAB_PDU
    outlets: 8
    control: {oid: 1.3.6.1.4.1.99999.1.2, on: 1, off: 0}
servers:
  - name: node01
    bmc: {address: 192.168.20.11, username: admin, password: "Passw0rd!", kg: {env: KG}}
    cluster: true
    ipdu: {timeout: 10, recoveryTime: 30, outlets: [{pdu: 192.168.30.1, outlet: 1}, {pdu: 192.168.30.2, outlet: 8}]}
    warnings: {predictiveFailure: true, degradation: true}
  - name: esx01
    bmc: {address: 192.168.20.12, username: admin, password: {env: PW3}}
    esxi:
      address: 192.168.20.50
      username: root
      password: {env: ESX}
      hostKey: SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s
      guests: [vm01, vm02]
alerts:
  address: 192.168.20.100
  port: 162
  community: {env: HACONN_TRAP_COMMUNITY}
  traps: [{oid: 1.3.6.1.4.1.674.10892.5.3.2.5, means: predictiveFailure}]
  warningCommand: /usr/local/sbin/planned-failover
"#,
    )
    .unwrap()
    .value
}

fn with(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = v.pointer_mut(parent).unwrap_or_else(|| panic!("{pointer}"));
    match target {
        Value::Object(o) => {
            if new.is_null() {
                o.remove(key);
            } else {
                o.insert(key.to_string(), new);
            }
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = new,
        _ => panic!("{pointer}"),
    }
    v
}

fn verdicts(v: &Value) -> (bool, bool) {
    let schema_ok = schema_errors(v).is_empty();
    let semantic_ok = matches!(semantic_errors(v), Ok(e) if e.is_empty());
    (schema_ok, semantic_ok)
}

#[test]
fn base_is_valid_for_both() {
    assert_eq!(
        verdicts(&base()),
        (true, true),
        "{:?}",
        semantic_errors(&base())
    );
}

#[test]
fn both_refuse_every_single_field_violation() {
    let cases: Vec<(&str, Value)> = vec![
        ("/apiVersion", json!("haconn/v2")),
        ("/mode", json!("triple")),
        ("/scale", json!("huge")),
        ("/resetPath/port", json!(5000)),
        ("/resetPath/port", json!(65536)),
        ("/resetPath/port", json!("5001")),
        ("/resetPath/auth", json!("nothing")),
        ("/resetPath/auth/key", json!("short")),
        ("/resetPath/auth/key", json!({"env": "1BAD"})),
        ("/resetPath/auth/key", json!({"file": ""})),
        ("/resetPath/auth/key", json!({"vault": "x"})),
        ("/hispeed", json!(999)),
        ("/hispeed", json!(5001)),
        ("/hispeed", json!(1250)),
        ("/hispeed", json!("on")),
        ("/snmp/community", json!("pub-lic")),
        ("/snmp/community", json!("a".repeat(31))),
        ("/managementServers/0/name", json!("mserver-01")),
        ("/managementServers/0/name", json!("m".repeat(32))),
        ("/managementServers/0/mlan/port", json!(80)),
        ("/managementServers/0/ipdu/timeout", json!(4)),
        ("/managementServers/0/ipdu/timeout", json!(61)),
        ("/pduModels/0/outlets", json!(0)),
        ("/pduModels/0/outlets", json!(97)),
        ("/pduModels/0/firstIndex", json!(2)),
        ("/pduModels/0/control/oid", json!("iso.3.6")),
        ("/pduModels/0/name", json!("9lives")),
        ("/alerts/port", json!(0)),
        ("/alerts/port", json!(65536)),
        ("/alerts/community", json!("pub-lic")),
        ("/alerts/traps/0/oid", json!("iso.3.6")),
        ("/alerts/traps/0/oid", json!("1")),
        ("/alerts/traps/0/means", json!("explode")),
        ("/alerts/bogus", json!(1)),
        ("/servers/0/warnings/degradation", json!("yes")),
        ("/servers/0/name", json!("node_01")),
        ("/servers/0/bmc/port", json!(0)),
        ("/servers/0/bmc/port", json!(70000)),
        ("/servers/0/bmc/username", json!("ad min")),
        ("/servers/0/bmc/username", json!("a".repeat(17))),
        ("/servers/0/bmc/username", json!("")),
        ("/servers/0/bmc/username", json!("adm$n")),
        ("/servers/0/bmc/password", json!("short")),
        ("/servers/0/bmc/password", json!("p".repeat(21))),
        ("/servers/0/bmc/password", json!("pass;word1")),
        ("/servers/0/bmc/password", json!("pass\\word1")),
        ("/servers/0/bmc/password", json!(12345678)),
        ("/servers/0/bmc/kg", json!("k".repeat(21))),
        ("/servers/0/bmc/cipherSuites", json!([])),
        ("/servers/0/bmc/cipherSuites", json!([5])),
        ("/servers/0/bmc/cipherSuites", json!([0])),
        ("/servers/0/bmc/cipherSuites", json!([17, 17])),
        ("/servers/0/bmc/cipherSuites", json!([17, 3, 17])),
        ("/servers/0/bmc/cipherSuites", json!(17)),
        ("/servers/0/bmc/cipherSuites", json!(["17"])),
        ("/servers/0/cluster", json!("yes")),
        ("/servers/0/ipdu/timeout", json!(70)),
        ("/servers/0/ipdu/recoveryTime", json!(3)),
        ("/servers/0/ipdu/recoveryTime", json!(61)),
        ("/servers/0/ipdu/outlets/0/outlet", json!(0)),
        ("/servers/1/esxi/port", json!(0)),
        ("/servers/1/esxi/username", json!("r".repeat(40))),
        ("/servers/1/esxi/password", json!("p".repeat(39))),
        ("/servers/1/esxi/password", json!("")),
        ("/servers/1/esxi/hostKey", json!("MD5:00:11")),
        ("/servers/1/esxi/guests/0", json!("vm-01")),
        (
            "/servers/1/esxi/guests",
            json!((0..17).map(|i| format!("vm{i}")).collect::<Vec<_>>()),
        ),
        ("/servers/0/bmc/colour", json!("red")),
    ];
    let mut disagreements = Vec::new();
    for (pointer, value) in cases {
        let doc = with(base(), pointer, value.clone());
        let (schema_ok, semantic_ok) = verdicts(&doc);
        if schema_ok || semantic_ok {
            disagreements.push(format!(
                "{pointer} = {value}: schema {}, semantic {}",
                if schema_ok { "accepts" } else { "refuses" },
                if semantic_ok { "accepts" } else { "refuses" },
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn both_accept_every_boundary_value() {
    let cases: Vec<(&str, Value)> = vec![
        ("/mode", json!("pair")),
        ("/scale", json!("large")),
        ("/resetPath/port", json!(65535)),
        ("/hispeed", json!(1000)),
        ("/hispeed", json!(5000)),
        ("/hispeed", json!(1100)),
        ("/hispeed", json!("off")),
        ("/snmp/community", json!("a".repeat(30))),
        ("/managementServers/0/name", json!("M".repeat(31))),
        ("/managementServers/0/ipdu/timeout", json!(5)),
        ("/managementServers/0/ipdu/timeout", json!(60)),
        ("/servers/0/bmc/port", json!(65535)),
        ("/servers/0/bmc/username", json!("a".repeat(16))),
        ("/servers/0/bmc/password", json!("p".repeat(20))),
        ("/servers/0/bmc/password", json!("!%&()*+,-./:<=>?@[]")),
        ("/servers/0/bmc/password", json!("^_`{|}~Aa0^_`{|}~")),
        ("/servers/0/bmc/cipherSuites", json!([17])),
        ("/servers/0/bmc/cipherSuites", json!([3])),
        ("/servers/0/bmc/cipherSuites", json!([3, 17])),
        ("/servers/0/bmc/cipherSuites", json!([17, 3])),
        ("/managementServers/0/bmc/cipherSuites", json!([17])),
        ("/servers/0/ipdu/recoveryTime", json!(0)),
        ("/servers/0/ipdu/recoveryTime", json!(5)),
        ("/servers/0/ipdu/recoveryTime", json!(60)),
        ("/servers/1/esxi/username", json!("r".repeat(39))),
        ("/servers/1/esxi/password", json!("p".repeat(38))),
        (
            "/servers/1/esxi/guests",
            json!((0..16).map(|i| format!("vm{i}")).collect::<Vec<_>>()),
        ),
    ];
    let mut disagreements = Vec::new();
    for (pointer, value) in cases {
        let doc = with(base(), pointer, value.clone());
        let (schema_ok, semantic_ok) = verdicts(&doc);
        if !(schema_ok && semantic_ok) {
            disagreements.push(format!(
                "{pointer} = {value}: schema {:?}, semantic {:?}",
                schema_errors(&doc),
                semantic_errors(&doc)
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

#[test]
fn cipher_suites_default_to_17_then_3_and_a_chosen_order_survives_rendering() {
    use haconn::spec::model::CipherSuite;
    use haconn::spec::{CheckOptions, check_bytes, render::normalized_yaml};
    let doc = with(base(), "/servers/0/bmc/cipherSuites", json!([3, 17]));
    let yaml = serde_json::to_string(&doc).expect("JSON is YAML");
    let spec = check_bytes(yaml.as_bytes(), CheckOptions::default())
        .spec
        .expect("valid");
    // Servers in name order: esx01, node01.
    let suites = |s: &haconn::spec::model::Spec, i: usize| {
        s.servers
            .values()
            .nth(i)
            .expect("server")
            .bmc
            .cipher_suites
            .clone()
    };
    assert_eq!(
        suites(&spec, 1),
        [CipherSuite::Three, CipherSuite::Seventeen]
    );
    assert_eq!(suites(&spec, 0), CipherSuite::DEFAULT);
    let text = normalized_yaml(&spec);
    assert_eq!(
        text.matches("cipherSuites").count(),
        1,
        "only where not the default:\n{text}"
    );
    let again = check_bytes(text.as_bytes(), CheckOptions::default());
    assert_eq!(
        again.spec.map(|s| suites(&s, 1)),
        Some(vec![CipherSuite::Three, CipherSuite::Seventeen]),
        "{:?}",
        again.diagnostics
    );
}
