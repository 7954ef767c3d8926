//! The command line, end to end: `haconn validate`, `haconn schema` and `haconn diff`
//! run as a real process on files in a temporary directory. Each test checks the exit
//! code and that the message names the problem and where it is.

use crate::support::harness as support;
use crate::support::run;
use crate::support::secret_leaks;

use std::time::{Duration, Instant};

use support::{Output, Test, edit, line_of, repo};

/// A valid spec: every secret by reference except node01's BMC password, which is
/// inline so the inline-secret rules have something to act on.
const BASE: &str = r#"# A valid spec used as the starting point of most tests.
apiVersion: haconn/v1
resetPath:
  address: 192.168.10.100/24
  port: 5001
  auth:
    key: {env: HACONN_TEST_RESET_KEY}
hispeed: 1500
snmp:
  community: {env: HACONN_TEST_COMMUNITY}
pdus:
  - {address: 192.168.30.1, model: IBM_PDU}
  - {address: 192.168.30.2, model: APC_RPDU}
managementServers:
  - name: mserver01
    bmc: {address: 192.168.20.1, username: admin, password: {env: HACONN_TEST_MS1}}
    mlan: {address: 10.0.0.1, port: 5002}
  - name: mserver02
    bmc: {address: 192.168.20.2, username: admin, password: {env: HACONN_TEST_MS2}}
    mlan: {address: 10.0.0.2, port: 5002}
servers:
  - name: node01
    bmc:
      address: 192.168.20.11
      port: 623
      username: fenceop
      password: Sup3rS3cret!
    cluster: true
    ipdu:
      timeout: 10
      recoveryTime: 0
      outlets:
        - {pdu: 192.168.30.1, outlet: 1}
        - {pdu: 192.168.30.2, outlet: 1}
  - name: node02
    bmc:
      address: 192.168.20.12
      username: admin
      password: {file: /etc/haconn/node02-bmc}
    cluster: true
"#;

const SECRET: &str = "Sup3rS3cret!";

/// `haconn validate spec.yaml` on `spec`, plus `extra` arguments.
fn validate(spec: &str, extra: &[&str]) -> Output {
    Test::new()
        .file("spec.yaml", spec)
        .args(&["validate", "spec.yaml"])
        .args(extra)
        .run()
}

/// Values for every `{env: ...}` of `BASE`, valid under their rules.
fn with_base_env(t: Test) -> Test {
    t.env("HACONN_TEST_RESET_KEY", "a-reset-path-key-of-32-chars....")
        .env("HACONN_TEST_COMMUNITY", "haconnro")
        .env("HACONN_TEST_MS1", "Mserver01pw")
        .env("HACONN_TEST_MS2", "Mserver02pw")
}

// ---- validate: a valid spec ------------------------------------------------------------

#[test]
fn base_spec_is_valid_without_warnings_outside_git() {
    validate(BASE, &[])
        .status(0)
        .stdout_is("spec.yaml: valid (0 errors, 0 warnings)\n");
}

#[test]
fn spec_from_stdin() {
    Test::new()
        .args(&["validate", "-"])
        .stdin(BASE)
        .run()
        .status(0)
        .stdout_contains("-: valid (0 errors, 0 warnings)");
}

/// The manual's limit of 33 guests running on one ESXi host (HA monitor guests or not):
/// more listed for one host (three `esxi` blocks naming one address, 12 guests each) is a
/// warning — not an error: the spec stays valid — at the block that passes the limit,
/// with its line and column; 33 is fine.
#[test]
fn more_guests_than_can_run_on_one_esxi_host_is_a_warning() {
    let host = |name: &str, bmc: u8, prefix: &str, n: usize| {
        let guests: Vec<String> = (1..=n).map(|i| format!("{prefix}{i:02}")).collect();
        format!(
            "  - name: {name}\n    bmc: {{address: 192.168.20.{bmc}, username: admin, password: {{env: BMC}}}}\n    esxi: {{address: 192.168.20.131, username: root, password: {{env: ESX}}, trustOnFirstUse: true,\n      guests: [{}]}}\n",
            guests.join(", ")
        )
    };
    let spec = |third: usize| {
        format!(
            "{BASE}{}{}{}",
            host("esx01", 31, "a", 12),
            host("esx02", 32, "b", 12),
            host("esx03", 33, "c", third)
        )
    };
    let over = spec(12);
    validate(&over, &[])
        .status(0)
        .diagnostic(
            "spec.yaml",
            line_of(&over, "guests: [c01"),
            "warning[guest-limit]",
            "servers[4].esxi.guests",
            &[
                "36 guests listed for ESXi host 192.168.20.131",
                "esx01, esx02, esx03",
                "at most 33",
            ],
        )
        .stdout_contains("spec.yaml: valid (0 errors, 1 warning)");
    validate(&spec(9), &[])
        .status(0)
        .stdout_is("spec.yaml: valid (0 errors, 0 warnings)\n");
}

// ---- validate: one problem each, named with its line --------------------------------

#[test]
fn invalid_yaml_syntax() {
    let spec = edit(BASE, "  port: 5001\n", "  port: 5001: 5002\n");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "port: 5001: 5002"),
            "error[yaml]",
            "",
            &["invalid YAML", "mapping values are not allowed"],
        )
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
}

/// Issue 18.12: a tab in the indentation is reported at the tab's own line and column
/// (the scanner notices it at the end of the line before), saying tabs are not allowed.
#[test]
fn a_tab_in_the_indentation_is_reported_at_the_tab() {
    for (from, to, column) in [
        ("  auth:\n", "\tauth:\n", 1),
        (
            "    key: {env: HACONN_TEST_RESET_KEY}\n",
            "  \tkey: {env: HACONN_TEST_RESET_KEY}\n",
            3,
        ),
    ] {
        let spec = edit(BASE, from, to);
        let line = line_of(&spec, to.trim());
        validate(&spec, &[])
            .status(1)
            .stdout_contains(&format!(
                "spec.yaml:{line}:{column}: error[yaml]: invalid YAML: tabs are not allowed for \
                 indentation (indent with spaces)\n"
            ))
            .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
    }
}

/// Issue 18.11: `--quiet` drops what is only informational (a valid file's summary, the
/// diff and plan); problems and errors still print, and the exit code is unchanged.
#[test]
fn quiet_validate_and_diff_print_only_problems() {
    validate(BASE, &["--quiet"]).status(0).stdout_is("");
    let bad = edit(BASE, "timeout: 10", "timeout: 70");
    validate(&bad, &["-q"])
        .status(1)
        .stdout_contains("error[range]: servers[0].ipdu.timeout")
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
    let quiet_diff = |new: &str| {
        Test::new()
            .file("old.yaml", BASE)
            .file("new.yaml", new)
            .args(&["diff", "old.yaml", "new.yaml", "--quiet"])
            .run()
    };
    quiet_diff(&edit(BASE, "timeout: 10", "timeout: 20"))
        .status(2)
        .stdout_is("");
    quiet_diff(BASE).status(0).stdout_is("");
    quiet_diff(&bad)
        .status(1)
        .stdout_is("")
        .stderr_contains("servers[0].ipdu.timeout: timeout must be 5–60 seconds (got 70)");
}

#[test]
fn string_where_a_port_number_belongs() {
    let spec = edit(BASE, "port: 623", "port: \"623\"");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "port: \"623\""),
        "error[schema]",
        "servers[0].bmc.port",
        &["\"623\"", "integer"],
    );
}

#[test]
fn ipdu_timeout_out_of_range() {
    let spec = edit(BASE, "timeout: 10", "timeout: 70");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "timeout: 70"),
        "error[range]",
        "servers[0].ipdu.timeout",
        &["5–60", "70"],
    );
}

#[test]
fn reset_path_port_out_of_range() {
    let spec = edit(BASE, "port: 5001", "port: 80");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "port: 80"),
        "error[range]",
        "resetPath.port",
        &["5001–65535", "80"],
    );
}

#[test]
fn name_with_a_dash() {
    let spec = edit(BASE, "name: node01", "name: node-01");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "name: node-01"),
        "error[name]",
        "servers[0].name",
        &["`node-01`", "letters and digits"],
    );
}

#[test]
fn account_with_a_space() {
    let spec = edit(BASE, "username: fenceop", "username: fence op");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "username: fence op"),
        "error[credential]",
        "servers[0].bmc.username",
        &["BMC account", "space"],
    );
}

#[test]
fn account_with_a_dollar() {
    let spec = edit(BASE, "username: fenceop", "username: fence$op");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        line_of(&spec, "username: fence$op"),
        "error[credential]",
        "servers[0].bmc.username",
        &["BMC account", "$"],
    );
}

#[test]
fn password_too_short() {
    let spec = edit(BASE, SECRET, "Sh0rt!");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "Sh0rt!"),
            "error[credential]",
            "servers[0].bmc.password",
            &["BMC password", "8–20"],
        )
        .never_shows("Sh0rt!");
}

#[test]
fn password_with_a_hash() {
    let spec = edit(BASE, SECRET, "Pass#word1");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "Pass#word1"),
            "error[credential]",
            "servers[0].bmc.password",
            &["BMC password", "#"],
        )
        .never_shows("Pass#word1");
}

#[test]
fn misspelled_key_is_reported_at_the_key() {
    let spec = edit(
        BASE,
        "managementServers:\n",
        "clustr: demo\nmanagementServers:\n",
    );
    validate(&spec, &[])
        .status(1)
        .stdout_contains(&format!(
            "spec.yaml:{}:1: error[unknown-key]: clustr: unknown key `clustr`",
            line_of(&spec, "clustr:")
        ))
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
}

#[test]
fn misspelled_nested_key_names_key_and_missing_one() {
    let spec = edit(
        BASE,
        "      password: Sup3rS3cret!",
        "      pasword: Sup3rS3cret!",
    );
    let line = line_of(&spec, "pasword:");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line,
            "error[unknown-key]",
            "servers[0].bmc.pasword",
            &["unknown key `pasword`"],
        )
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "address: 192.168.20.11"),
            "error[required]",
            "servers[0].bmc",
            &["password"],
        )
        .never_shows(SECRET);
}

#[test]
fn duplicate_key_names_both_lines() {
    let spec = edit(
        BASE,
        "  - name: node02\n",
        "  - name: node02\n    name: node03\n",
    );
    let first = line_of(&spec, "name: node02");
    let second = line_of(&spec, "name: node03");
    validate(&spec, &[]).status(1).diagnostic(
        "spec.yaml",
        second,
        "error[yaml]",
        "",
        &["duplicate key `name`", &format!("line {first}")],
    );
}

#[test]
fn alias_bomb_is_refused_fast() {
    // Billion laughs: ten levels of ten aliases each, under 1 KiB on disk.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    assert!(bomb.len() < 1024);
    let started = Instant::now();
    let out = validate(&bomb, &[]);
    let elapsed = started.elapsed();
    // a5 is the first level past a million nodes (1 + 10 * 111_111).
    out.status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&bomb, "a5:"),
            "error[yaml]",
            "",
            &["alias bomb", "refused"],
        )
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A few large leaves aliased many times: few nodes, gigabytes once expanded.
#[cfg(unix)]
#[test]

fn alias_bomb_of_long_strings_is_refused_without_exhausting_memory() {
    let big = format!(
        "a: &a {}\nb: [{}]\n",
        "x".repeat(1_000_000),
        vec!["*a"; 1000].join(", ")
    );
    let t = Test::new().file("spec.yaml", &big);
    // Cap the address space so the bug shows as a failed allocation, not a swapping host.
    t.args(&[
        "-c",
        r#"ulimit -v 524288 && exec "$0" validate spec.yaml"#,
        env!("CARGO_BIN_EXE_haconn"),
    ])
    .run_with("/bin/sh")
    .status(1)
    .stdout_contains("alias");
}

#[test]
fn oversize_file_is_refused() {
    let huge = vec![b'#'; 8 * 1024 * 1024 + 1];
    validate_bytes(&huge)
        .status(1)
        .stdout_contains(
            "spec.yaml: error[yaml]: file is 8388609 bytes, larger than the 8388608 byte limit",
        )
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
}

#[test]
fn oversize_stdin_is_refused() {
    Test::new()
        .args(&["validate", "-"])
        .stdin(vec![b'#'; 8 * 1024 * 1024 + 10])
        .run()
        .status(1)
        .stdout_contains(
            "-: error[yaml]: file is 8388609 bytes, larger than the 8388608 byte limit",
        );
}

#[test]
fn non_utf8_bytes_are_refused_at_their_line() {
    let mut bytes = BASE.as_bytes().to_vec();
    let at = BASE.find("mserver02").expect("anchor");
    bytes[at + 1] = 0xff;
    validate_bytes(&bytes).status(1).diagnostic(
        "spec.yaml",
        line_of(BASE, "name: mserver02"),
        "error[yaml]",
        "",
        &["not valid UTF-8"],
    );
}

fn validate_bytes(bytes: &[u8]) -> Output {
    Test::new()
        .file("spec.yaml", bytes)
        .args(&["validate", "spec.yaml"])
        .run()
}

// ---- secrets --------------------------------------------------------------------------

#[test]
fn missing_secret_file_is_an_error_only_with_resolve_secrets() {
    let t = Test::new();
    let missing = t.path("secrets/node02-bmc");
    let missing = missing.to_str().expect("utf-8 temp path");
    let spec = edit(BASE, "/etc/haconn/node02-bmc", missing);
    let t = with_base_env(t).file("spec.yaml", &spec);
    t.args(&["validate", "--resolve-secrets", "spec.yaml"])
        .run()
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "secrets/node02-bmc"),
            "error[secret]",
            "servers[1].bmc.password",
            &["cannot read secret file", missing],
        )
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");

    validate(&spec, &[])
        .status(0)
        .stdout_contains("spec.yaml: valid");
}

#[test]
fn resolved_secrets_are_checked_and_never_shown() {
    let t = Test::new();
    let file = t.path("node02-bmc");
    let spec = edit(
        BASE,
        "/etc/haconn/node02-bmc",
        file.to_str().expect("utf-8"),
    );
    let base = || with_base_env(Test::new()).file("spec.yaml", &spec);

    // All references resolve to valid values.
    base()
        .file(file.to_str().expect("utf-8"), "GoodPassw0rd\n")
        .args(&["validate", "--resolve-secrets", "spec.yaml"])
        .run()
        .status(0)
        .stdout_contains("spec.yaml: valid (0 errors, 0 warnings)");

    // The file holds a value the BMC rule refuses; the message says why, not what.
    base()
        .file(file.to_str().expect("utf-8"), "Bad#Passw0rd\n")
        .args(&["validate", "--resolve-secrets", "spec.yaml"])
        .run()
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "node02-bmc"),
            "error[secret]",
            "servers[1].bmc.password",
            &["not valid", "BMC password"],
        )
        .never_shows("Bad#Passw0rd");

    // An unset environment variable is named.
    Test::new()
        .file("spec.yaml", &spec)
        .file(file.to_str().expect("utf-8"), "GoodPassw0rd\n")
        .env("HACONN_TEST_RESET_KEY", "a-reset-path-key-of-32-chars....")
        .env("HACONN_TEST_COMMUNITY", "haconnro")
        .env("HACONN_TEST_MS1", "Mserver01pw")
        .args(&["validate", "--resolve-secrets", "spec.yaml"])
        .run()
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "HACONN_TEST_MS2"),
            "error[secret]",
            "managementServers[1].bmc.password",
            &["HACONN_TEST_MS2", "not set"],
        );
}

#[test]
fn inline_secret_never_printed_by_validate() {
    let git = Test::new().dir(".git").file("specs/cluster.yaml", BASE);
    git.args(&["validate", "specs/cluster.yaml"])
        .run()
        .status(0)
        .never_shows(SECRET);
    validate(BASE, &["--deny-inline-secrets"])
        .status(1)
        .never_shows(SECRET);
    validate(BASE, &["--format", "json", "--deny-inline-secrets"])
        .status(1)
        .never_shows(SECRET);
    // An inline secret that breaks the rules is still not quoted, nor its length told.
    let long = edit(BASE, SECRET, "Sup3rS3cret!Sup3rS3cret!");
    validate(&long, &[])
        .status(1)
        .stdout_contains("8–20 characters")
        .never_shows(SECRET)
        .never_shows("has 24");
}

#[test]

fn numeric_inline_password_is_not_printed() {
    let spec = edit(BASE, SECRET, "73920581");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "73920581"),
            "error",
            "servers[0].bmc.password",
            &[],
        )
        .never_shows("73920581");
}

#[test]

fn invalid_inline_secret_not_printed_when_another_key_has_a_type_error() {
    let spec = edit(BASE, SECRET, "Sup3rS3cret!Sup3rS3cret!");
    let spec = edit(&spec, "port: 623", "port: \"623\"");
    validate(&spec, &[])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(&spec, "port: \"623\""),
            "error[schema]",
            "servers[0].bmc.port",
            &["integer"],
        )
        .never_shows(SECRET);
}

#[test]
fn deny_inline_secrets_turns_them_into_errors() {
    validate(BASE, &["--deny-inline-secrets"])
        .status(1)
        .diagnostic(
            "spec.yaml",
            line_of(BASE, SECRET),
            "error[inline-secret]",
            "servers[0].bmc.password",
            &["--deny-inline-secrets", "{env: NAME}"],
        )
        .stdout_contains("spec.yaml: invalid (1 error, 0 warnings)");
    let by_reference = edit(BASE, SECRET, "{env: HACONN_TEST_NODE01}");
    validate(&by_reference, &["--deny-inline-secrets"])
        .status(0)
        .stdout_is("spec.yaml: valid (0 errors, 0 warnings)\n");
}

#[test]
fn inline_secret_warning_inside_a_git_work_tree() {
    Test::new()
        .dir(".git")
        .file("specs/cluster.yaml", BASE)
        .args(&["validate", "specs/cluster.yaml"])
        .run()
        .status(0)
        .diagnostic(
            "specs/cluster.yaml",
            line_of(BASE, SECRET),
            "warning[inline-secret]",
            "servers[0].bmc.password",
            &["inline"],
        )
        .stdout_contains("specs/cluster.yaml: valid (0 errors, 1 warning)");
}

#[test]
fn no_inline_secret_warning_outside_a_git_work_tree() {
    let t = Test::new().file("specs/cluster.yaml", BASE);
    let inside_git = t.path("specs").ancestors().any(|d| d.join(".git").exists());
    assert!(
        !inside_git,
        "the temporary directory must not be inside a git work tree"
    );
    t.args(&["validate", "specs/cluster.yaml"])
        .run()
        .status(0)
        .stdout_is("specs/cluster.yaml: valid (0 errors, 0 warnings)\n");
}

// ---- several files, I/O errors, usage ---------------------------------------------------

#[test]
fn several_files_one_bad() {
    let bad = edit(BASE, "timeout: 10", "timeout: 70");
    Test::new()
        .file("good.yaml", BASE)
        .file("bad.yaml", &bad)
        .args(&["validate", "good.yaml", "bad.yaml"])
        .run()
        .status(1)
        .stdout_contains("good.yaml: valid (0 errors, 0 warnings)")
        .diagnostic(
            "bad.yaml",
            line_of(&bad, "timeout: 70"),
            "error[range]",
            "servers[0].ipdu.timeout",
            &["70"],
        )
        .stdout_contains("bad.yaml: invalid (1 error, 0 warnings)");
}

#[test]
fn missing_file_is_an_io_error() {
    Test::new()
        .file("good.yaml", BASE)
        .args(&["validate", "missing.yaml", "good.yaml"])
        .run()
        .status(2)
        .stderr_contains("missing.yaml: error[io]: cannot read")
        .stdout_contains("good.yaml: valid");
}

#[test]
fn directory_is_an_io_error() {
    Test::new()
        .dir("specs")
        .args(&["validate", "specs"])
        .run()
        .status(2)
        .stderr_contains("specs: error[io]: cannot read");
}

#[test]
fn io_error_in_json_output() {
    let out = Test::new()
        .args(&["validate", "--format", "json", "missing.yaml"])
        .run()
        .status(2);
    let doc = out.json();
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["files"][0]["file"], "missing.yaml");
    assert!(doc["files"][0]["ioError"].is_string(), "{doc:#}");
}

#[test]
fn no_file_is_a_usage_error() {
    Test::new()
        .args(&["validate"])
        .run()
        .status(2)
        .stderr_contains("<FILE>");
}

// ---- JSON output, every problem at once --------------------------------------------------

#[test]
fn json_output_shape() {
    let spec = edit(BASE, "timeout: 10", "timeout: 70");
    let out = validate(&spec, &["--format", "json"]).status(1);
    let doc = out.json();
    assert_eq!(doc["version"], 1, "{doc:#}");
    assert_eq!(doc["valid"], false);
    let files = doc["files"].as_array().expect("files");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["file"], "spec.yaml");
    assert_eq!(files[0]["valid"], false);
    let diags = files[0]["diagnostics"].as_array().expect("diagnostics");
    assert_eq!(diags.len(), 1, "{doc:#}");
    let d = &diags[0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["code"], "range");
    assert_eq!(d["path"], "servers[0].ipdu.timeout");
    assert_eq!(d["line"], line_of(&spec, "timeout: 70"));
    assert_eq!(d["column"], 16);
    assert!(
        d["message"].as_str().expect("message").contains("70"),
        "{d}"
    );

    let ok = validate(BASE, &["--format", "json"]).status(0).json();
    assert_eq!(ok["valid"], true);
    assert_eq!(ok["files"][0]["diagnostics"], serde_json::json!([]));
}

#[test]
fn every_problem_is_reported_at_once() {
    let spec = edit(BASE, "port: 5001", "port: 80");
    let spec = edit(&spec, "name: node01", "name: node-01");
    let spec = edit(&spec, "username: fenceop", "username: fence op");
    let spec = edit(&spec, SECRET, "Sh0rt!");
    let spec = edit(&spec, "timeout: 10", "timeout: 70");

    let text = validate(&spec, &[]).status(1);
    assert_eq!(text.diagnostic_count("spec.yaml"), 5, "{}", text.stdout);
    text.stdout_contains("spec.yaml: invalid (5 errors, 0 warnings)");

    let doc = validate(&spec, &["--format", "json"]).status(1).json();
    let diags = doc["files"][0]["diagnostics"]
        .as_array()
        .expect("diagnostics");
    let mut found: Vec<(String, u64)> = diags
        .iter()
        .map(|d| {
            assert_eq!(d["severity"], "error", "{d}");
            (
                d["path"].as_str().expect("path").to_string(),
                d["line"].as_u64().expect("line"),
            )
        })
        .collect();
    found.sort();
    let line = |n: &str| line_of(&spec, n) as u64;
    let mut expected = vec![
        ("resetPath.port".to_string(), line("port: 80")),
        ("servers[0].name".to_string(), line("node-01")),
        ("servers[0].bmc.username".to_string(), line("fence op")),
        ("servers[0].bmc.password".to_string(), line("Sh0rt!")),
        ("servers[0].ipdu.timeout".to_string(), line("timeout: 70")),
    ];
    expected.sort();
    assert_eq!(found, expected);
}

// ---- examples and schema ----------------------------------------------------------------

fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| p.to_str().expect("utf-8 path").to_string())
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates() {
    let files = example_files();
    assert!(files.len() >= 5, "{files:?}");
    let mut t = Test::new().args(&["validate"]);
    for f in &files {
        t = t.arg(f.as_str());
        let text = std::fs::read_to_string(f).expect("example");
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schema/haconn.schema.json\n"),
            "{f} should start with the schema modeline"
        );
    }
    let out = t.run().status(0);
    for f in &files {
        assert!(
            out.stdout.contains(&format!("{f}: valid (0 errors,")),
            "{f} not reported valid:\n{}",
            out.stdout
        );
    }
}

#[test]
fn examples_keep_secrets_out_of_the_file() {
    let files: Vec<String> = example_files()
        .into_iter()
        .filter(|f| !f.ends_with("lab-single.yaml"))
        .collect();
    assert!(files.len() >= 4, "{files:?}");
    let mut t = Test::new().args(&["validate", "--deny-inline-secrets"]);
    for f in &files {
        t = t.arg(f.as_str());
    }
    t.run().status(0);
}

#[test]
fn schema_matches_the_committed_file() {
    let committed =
        std::fs::read_to_string(repo().join("schema/haconn.schema.json")).expect("schema file");
    let out = Test::new().args(&["schema"]).run().status(0);
    assert!(
        out.stdout == committed,
        "`haconn schema` differs from schema/haconn.schema.json; regenerate it with `haconn schema > schema/haconn.schema.json`"
    );
    let parsed: serde_json::Value = serde_json::from_str(&committed).expect("schema is JSON");
    assert_eq!(parsed["title"], "haconn cluster spec");
}

// ---- diff -------------------------------------------------------------------------------

/// `BASE` reordered everywhere order carries no meaning, restyled and recommented.
const REORDERED: &str = r#"# Same cluster, written differently.
servers:
  - name: node02
    cluster: true
    bmc: {password: {file: /etc/haconn/node02-bmc}, username: admin, address: 192.168.20.12}
  - cluster: true
    name: node01
    ipdu:
      outlets:
        - {outlet: 1, pdu: 192.168.30.2}
        - {pdu: 192.168.30.1, outlet: 1}
      recoveryTime: 0
      timeout: 10
    bmc:
      password: Sup3rS3cret!
      username: fenceop
      port: 623
      address: 192.168.20.11
managementServers:
  - name: mserver02
    mlan: {port: 5002, address: 10.0.0.2}
    bmc: {address: 192.168.20.2, username: admin, password: {env: HACONN_TEST_MS2}}
  - name: mserver01
    mlan: {address: 10.0.0.1, port: 5002}
    bmc: {address: 192.168.20.1, username: admin, password: {env: HACONN_TEST_MS1}}
pdus:
  - {model: APC_RPDU, address: 192.168.30.2}
  - {address: 192.168.30.1, model: IBM_PDU}
snmp: {community: {env: HACONN_TEST_COMMUNITY}}
hispeed: 1500
resetPath:
  auth: {key: {env: HACONN_TEST_RESET_KEY}}
  port: 5001
  address: 192.168.10.100/24
apiVersion: haconn/v1
"#;

fn diff(old: &str, new: &str) -> Output {
    Test::new()
        .file("old.yaml", old)
        .file("new.yaml", new)
        .args(&["diff", "old.yaml", "new.yaml"])
        .run()
}

#[test]
fn diff_of_a_reordered_spec_is_no_change() {
    diff(BASE, REORDERED).status(0).stdout_is("No changes.\n");
}

#[test]
fn diff_reports_a_change_with_exit_2() {
    let new = edit(BASE, "timeout: 10", "timeout: 20");
    let out = diff(BASE, &new).status(2);
    // The unified diff of the normalized specs, then the plan.
    let diff_line = |sign: char, text: &str| {
        out.stdout
            .lines()
            .any(|l| l.strip_prefix(sign).is_some_and(|rest| rest.trim() == text))
    };
    assert!(diff_line('-', "timeout: 10"), "{}", out.stdout);
    assert!(diff_line('+', "timeout: 20"), "{}", out.stdout);
    out.stdout_contains("--- old.yaml")
        .stdout_contains("+++ new.yaml")
        .stdout_contains("~ physical server node01")
        .stdout_contains("~ ipdu.timeout: 10 -> 20")
        .stdout_contains("Plan: 0 to add, 1 to change, 0 to delete")
        // Two files: no daemon is involved, and nothing speaks of one (issue 18.12).
        .never_shows("live")
        .never_shows("daemon");
}

#[test]
fn diff_of_invalid_input_exits_1() {
    let bad = edit(BASE, "timeout: 10", "timeout: 70");
    diff(BASE, &bad)
        .status(1)
        .stderr_contains(&format!("new.yaml:{}:", line_of(&bad, "timeout: 70")))
        .stderr_contains("servers[0].ipdu.timeout: timeout must be 5–60 seconds (got 70)")
        .stderr_contains("new.yaml: invalid; nothing to compare")
        .stdout_is("");
}

#[test]
fn diff_of_a_missing_file_exits_1() {
    Test::new()
        .file("old.yaml", BASE)
        .args(&["diff", "old.yaml", "missing.yaml"])
        .run()
        .status(1)
        .stderr_contains("missing.yaml: error[io]: cannot read");
}

#[test]
fn diff_reports_a_changed_secret_without_showing_it() {
    let new = edit(BASE, SECRET, "An0therS3cret");
    diff(BASE, &new)
        .status(2)
        .stdout_contains("~ physical server node01")
        .stdout_contains("~ bmc.password: (secret changed, value hidden)")
        .never_shows(SECRET)
        .never_shows("An0therS3cret");
    // Moving a secret out of the file is a change too, and still shows no value.
    let by_reference = edit(BASE, SECRET, "{env: HACONN_TEST_NODE01}");
    let out = diff(BASE, &by_reference)
        .status(2)
        .stdout_contains("~ physical server node01")
        .never_shows(SECRET);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("~ bmc.password:")
                && l.contains("HACONN_TEST_NODE01")),
        "{}",
        out.stdout
    );
}

/// Every secret field of the schema, holding a recognizable value next to an error
/// elsewhere (or being wrong itself): `validate` never shows the value, as text or JSON,
/// with or without --deny-inline-secrets, and each file is reported invalid.
#[test]
fn no_secret_field_ever_shows_in_validate() {
    let variants = secret_leaks::variants(include_str!("../../examples/lab-single.yaml"));
    let mut t = Test::new();
    let mut names = Vec::new();
    for (i, (what, text)) in variants.iter().enumerate() {
        let name = format!("v{i}.yaml");
        t = t.file(&name, text);
        names.push((name, what.clone()));
    }
    for flags in [
        &["--format", "text"][..],
        &["--format", "json"],
        &["--format", "text", "--deny-inline-secrets"],
        &["--format", "json", "--resolve-secrets"],
    ] {
        let mut run = Test::new().args(&["validate"]).args(flags);
        for (name, _) in &names {
            run = run.arg(t.path(name).display().to_string());
        }
        let out = run.run().status(1).never_shows(secret_leaks::MARK);
        if flags[1] == "text" {
            for (name, what) in &names {
                let file = t.path(name).display().to_string();
                assert!(
                    out.stdout
                        .lines()
                        .any(|l| l.starts_with(&format!("{file}:")) && l.contains(": error[")),
                    "no error for {what}:\n{}",
                    out.stdout
                );
            }
        }
    }
}

// ---- a closed pipe (issue 18.6) --------------------------------------------------------

/// Every command that works without a daemon, its stdout a pipe nobody reads (`| head`):
/// no panic, no "Broken pipe" message, and the exit code its work earned.
#[test]
fn every_offline_command_is_quiet_on_a_closed_pipe() {
    let examples = repo().join("examples");
    let ex = |f: &str| examples.join(f).display().to_string();
    let (minimal, pdus) = (ex("minimal.yaml"), ex("pdus.yaml"));
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["schema"], 0),
        (vec!["validate", &minimal, &pdus], 0),
        (vec!["validate", "--format", "json", &minimal], 0),
        (vec!["diff", &minimal, &pdus], 2),
        (vec!["--help"], 0),
        (vec!["show", "--help"], 0),
        (vec!["--version"], 0),
        (vec!["lab", "--scenario", "dump", "--show-spec"], 0),
    ];
    for (args, code) in cases {
        run::assert_quiet_on_epipe(&run::haconn_into_closed_pipe(&args), code);
    }
}

// ---- exit codes (issue 18.7) -----------------------------------------------------------

/// README.md's exit-code table is the one in the code (`UPDATE_EXPECT=1` rewrites it).
#[test]
fn readme_exit_code_table_is_the_codes() {
    let path = repo().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (open, close) = ("<!-- exit-codes -->\n", "<!-- /exit-codes -->");
    let start = readme.find(open).expect("README has the exit-code markers") + open.len();
    let end = readme
        .find(close)
        .expect("README has the exit-code end marker");
    let want = haconn::cli::exit_code_table();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let new = format!("{}{want}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(
        &readme[start..end],
        want,
        "README.md's exit-code table differs from src/cli/mod.rs (UPDATE_EXPECT=1 rewrites it)"
    );
}

/// The codes the table promises, where they used to collide: a usage error of `diff` is
/// 1, never 2 (= changes); a daemon that cannot be reached is 2 for every command.
#[test]
fn exit_codes_keep_their_meaning_across_commands() {
    let t = || Test::new().file("a.yaml", BASE).file("b.yaml", BASE);
    t().args(&["diff", "a.yaml"]).run().status(1);
    t().args(&["diff", "a.yaml", "b.yaml", "--bogus"])
        .run()
        .status(1);
    t().args(&["diff", "a.yaml", "missing.yaml"])
        .run()
        .status(1);
    t().args(&["diff", "a.yaml", "b.yaml"]).run().status(0);
    t().args(&["validate", "--bogus", "a.yaml"]).run().status(2);
    t().args(&["validate", "missing.yaml"]).run().status(2);
    let nobody = ["--control-socket", "nobody-here.sock"];
    for cmd in [
        &["show", "status"][..],
        &["show", "hamonitor"],
        &["show", "ipdu"],
        &["apply", "--spec", "a.yaml"],
        &["server", "reset", "node01", "--address", "1"],
        &["server", "acrecovery", "node01"],
    ] {
        t().args(cmd).args(&nobody).run().status(2);
    }
}

/// `--output json` is the spelling of `validate` too; `--format json` stays as an alias.
#[test]
fn validate_output_json_and_its_old_spelling_agree() {
    let new = validate(BASE, &["--output", "json"]).status(0);
    let old = validate(BASE, &["--format", "json"]).status(0);
    let v: serde_json::Value = serde_json::from_str(&new.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(new.stdout, old.stdout);
}

// ---- help texts (issue 18.10) ----------------------------------------------------------

/// Every command says what it does, every argument is described, no help refers to a
/// document users do not have ("SPEC §"), and every runnable command ends its help with
/// its exit codes.
#[test]
fn every_command_and_argument_has_help_and_exit_codes() {
    fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
        let here = format!("{path} {}", cmd.get_name()).trim().to_string();
        if cmd.get_about().is_none() && here != "haconn" {
            problems.push(format!("{here}: no description"));
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            match arg.get_help() {
                None => problems.push(format!("{here} {id}: no help")),
                Some(h) if h.to_string().contains("SPEC") => {
                    problems.push(format!("{here} {id}: refers to SPEC"))
                }
                Some(_) => {}
            }
        }
        let text = cmd.clone().render_long_help().to_string();
        if text.contains("SPEC §") {
            problems.push(format!("{here}: help refers to SPEC §"));
        }
        let runnable = !cmd.has_subcommands();
        if runnable && here != "haconn" && !text.contains("Exit codes:") {
            problems.push(format!("{here}: no exit codes in its help"));
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                walk(sub, &here, problems);
            }
        }
    }
    let mut problems = Vec::new();
    let mut cmd = haconn::cli::command();
    cmd.build();
    walk(&cmd, "", &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `diff --output json`: the unified diff and one object per change; an error is JSON too.
#[test]
fn diff_output_json() {
    let changed = BASE.replace("hispeed: 1500", "hispeed: 2000");
    let run = Test::new()
        .file("a.yaml", BASE)
        .file("b.yaml", &changed)
        .args(&["diff", "a.yaml", "b.yaml", "--output", "json"])
        .run()
        .status(2);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        v["diff"].as_str().unwrap().contains("+hispeed: 2000"),
        "{v:#}"
    );
    let c = &v["changes"][0];
    assert_eq!(
        (&c["kind"], &c["name"], &c["op"], &c["class"]),
        (
            &"global".into(),
            &"hispeed".into(),
            &"Change".into(),
            &"needs restart".into()
        ),
        "{v:#}"
    );
    let run = Test::new()
        .file("a.yaml", BASE)
        .file("b.yaml", "apiVersion: haconn/v1\nservers: 3\n")
        .args(&["diff", "a.yaml", "b.yaml", "--output", "json"])
        .run()
        .status(1);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["error"]["code"], "invalid", "{v:#}");
}

/// `node` speaks `--output json` too (`--json` kept as an alias); its errors are JSON then.
#[test]
fn node_output_json_errors_are_json() {
    for flag in [&["--output", "json"][..], &["--json"]] {
        let run = Test::new()
            .args(&["node", "check", "--connector", "nonsense", "--system", "a"])
            .args(&["--subsystem", "1"])
            .args(flag)
            .run()
            .status(2);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--connector nonsense"),
            "{v:#}"
        );
    }
}

/// Issue 17.5: completions for each shell and a man page per command, from the clap
/// definitions (so a new command or flag is in both at once).
#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let run = run::haconn(&["completions", shell]);
        run.code(0);
        for word in ["history", "alert", "clear-warning", "since"] {
            assert!(run.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    run::haconn(&["completions", "tcsh-ish"]).code(2);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let run = run::haconn(&["man", &out.display().to_string()]);
    run.code(0).stdout_has("man pages written");
    for page in [
        "haconn.1",
        "haconn-show.1",
        "haconn-show-alerts.1",
        "haconn-server-clear-warning.1",
        "haconn-history.1",
        "haconn-sby-takeover.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not roff"
        );
    }
    let alerts = std::fs::read_to_string(out.join("haconn-show-alerts.1")).unwrap();
    assert!(alerts.contains("since"), "{alerts}");
    assert!(
        !out.join("haconn-help.1").exists(),
        "no pages for clap's help"
    );
}
