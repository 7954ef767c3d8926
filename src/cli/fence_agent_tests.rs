//! The agent's parsing, validation and judgement, with data alone.

use super::*;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn inv(pairs: &[(&str, &str)]) -> Invocation {
    Invocation::from_params(&params(pairs)).expect("valid")
}

fn reply(result: &str, systems: &[&str]) -> FenceReply {
    FenceReply {
        action: FenceAction::Reboot,
        target: Some("labnode02".into()),
        result: result.into(),
        message: "the daemon's words".into(),
        systems: systems.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn stdin_lines_comments_blanks_last_wins_and_no_equals() {
    let text = "# pacemaker-fenced\n\naction=off\n  plug=labnode01 \nbroken line\nnodeid=2\naction=reboot\r\n=novalue\npasswd=x=y\n";
    let p = parse_stdin(text);
    assert_eq!(
        p,
        params(&[
            ("action", "reboot"),
            ("plug", "labnode01"),
            ("nodeid", "2"),
            ("passwd", "x=y"),
        ])
    );
}

#[test]
fn what_pacemaker_sends_becomes_an_invocation() {
    // As pacemaker-fenced writes it for `stonith_admin --reboot labnode02` of a device
    // registered with control_socket and pcmk_host_list (pcmk_* are not passed).
    let text = "action=reboot\nnodename=labnode02\nport=labnode02\ncontrol_socket=/tmp/x/sock\n";
    let inv = Invocation::from_params(&parse_stdin(text)).expect("valid");
    assert_eq!(inv.action, Action::Reboot);
    assert_eq!(inv.target.as_deref(), Some("labnode02"));
    assert_eq!(inv.control_socket, PathBuf::from("/tmp/x/sock"));
    assert_eq!(inv.power_timeout, Duration::from_secs(50));
    assert_eq!(inv.answer_timeout(), Duration::from_secs(50));
    let req = serde_json::to_value(inv.request().expect("asks the daemon")).expect("json");
    assert_eq!(
        req,
        serde_json::json!({"op": "fence", "v": 1, "action": "reboot", "target": "labnode02"})
    );
}

#[test]
fn defaults_reboot_and_the_default_socket() {
    let inv = inv(&[("nodename", "n1")]);
    assert_eq!(inv.action, Action::Reboot);
    assert_eq!(inv.control_socket, PathBuf::from("/run/haconn/haconn.sock"));
    assert_eq!(inv.delay, Duration::ZERO);
    assert!(!inv.verbose);
}

#[test]
fn port_then_plug_then_nodename() {
    let t = |pairs: &[(&str, &str)]| inv(pairs).target;
    assert_eq!(
        t(&[("nodename", "n"), ("plug", "p"), ("port", "o")]),
        Some("o".into())
    );
    assert_eq!(t(&[("nodename", "n"), ("plug", "p")]), Some("p".into()));
    assert_eq!(t(&[("nodename", "n"), ("plug", " ")]), Some("n".into()));
}

#[test]
fn actions_are_case_insensitive_and_option_is_the_old_name() {
    assert_eq!(inv(&[("action", "OFF"), ("plug", "n")]).action, Action::Off);
    assert_eq!(
        inv(&[("option", "status"), ("plug", "n")]).action,
        Action::Status
    );
    assert_eq!(
        inv(&[("option", "status"), ("action", "on"), ("plug", "n")]).action,
        Action::On
    );
    assert_eq!(
        inv(&[("action", "validate-all")]).action,
        Action::ValidateAll
    );
}

#[test]
fn list_and_monitor_need_no_target_and_send_none() {
    for action in ["list", "monitor"] {
        let i = inv(&[("action", action), ("nodename", "ignored")]);
        let req = serde_json::to_value(i.request().expect("asks")).expect("json");
        assert_eq!(req["action"], action);
        assert!(req.get("target").is_none(), "{req}");
        assert_eq!(i.answer_timeout(), Duration::from_secs(20));
    }
    assert!(inv(&[("action", "validate-all")]).request().is_none());
}

#[test]
fn every_problem_at_once() {
    let problems = Invocation::from_params(&params(&[
        ("action", "status"),
        ("control_socket", "relative/sock"),
        ("power_timeout", "soon"),
        ("login_timeout", "0"),
        ("delay", "7200"),
        ("verbose", "maybe"),
    ]))
    .expect_err("invalid");
    assert_eq!(problems.len(), 6, "{problems:#?}");
    assert!(
        problems[0].contains("status needs the system"),
        "{problems:#?}"
    );
    let all = problems.join("\n");
    for needle in [
        "absolute path",
        "power_timeout: not a number",
        "login_timeout: must be more than 0",
        "delay: must be 0 to 3600",
        "verbose:",
    ] {
        assert!(all.contains(needle), "{needle} in {all}");
    }
}

#[test]
fn an_unknown_action_is_unrecognised() {
    let problems = Invocation::from_params(&params(&[("action", "explode")])).expect_err("invalid");
    // "unrecognised action" is what Pacemaker reads as "not supported".
    assert!(
        problems[0].starts_with("unrecognised action"),
        "{problems:?}"
    );
}

#[test]
fn metadata_wins_over_bad_parameters() {
    assert!(wants_metadata(&params(&[
        ("action", "Metadata"),
        ("delay", "x")
    ])));
    assert!(wants_metadata(&params(&[("option", "metadata")])));
    assert!(!wants_metadata(&params(&[])));
}

#[test]
fn command_line_options() {
    let parsed = parse_argv(&args(&[
        "-o",
        "off",
        "-nlabnode01",
        "--control-socket=/s",
        "--power-timeout",
        "30",
        "-v",
        "--nodename",
        "x",
    ]))
    .expect("parses");
    assert_eq!(
        parsed,
        CommandLine::Params(params(&[
            ("action", "off"),
            ("plug", "labnode01"),
            ("control_socket", "/s"),
            ("power_timeout", "30"),
            ("verbose", "1"),
            ("nodename", "x"),
        ]))
    );
    assert_eq!(
        parse_argv(&args(&["--action=status", "--port", "p"])).expect("parses"),
        CommandLine::Params(params(&[("action", "status"), ("port", "p")]))
    );
    assert_eq!(
        parse_argv(&args(&["-o", "list", "--help"])),
        Ok(CommandLine::Help)
    );
    assert_eq!(parse_argv(&args(&["-V"])), Ok(CommandLine::Version));
}

#[test]
fn command_line_mistakes_are_said() {
    for (words, needle) in [
        (&["--bogus"][..], "unknown option --bogus"),
        (&["-x"][..], "unknown option -x"),
        (&["-o"][..], "--action needs a value"),
        (&["--verbose=1"][..], "--verbose takes no value"),
        (&["reboot"][..], "unexpected argument"),
    ] {
        let e = parse_argv(&args(words)).expect_err("a mistake");
        assert!(e.contains(needle), "{words:?}: {e}");
    }
}

#[test]
fn run_as_fence_haconn_or_as_a_subcommand() {
    let os = |w: &[&str]| w.iter().map(OsString::from).collect::<Vec<_>>();
    assert_eq!(
        agent_args(os(&["/usr/sbin/fence_haconn", "-o", "list"])),
        Some(args(&["-o", "list"]))
    );
    assert_eq!(agent_args(os(&["fence_haconn"])), Some(vec![]));
    assert_eq!(
        agent_args(os(&["haconn", "fence-agent", "-o", "metadata"])),
        Some(args(&["-o", "metadata"]))
    );
    assert_eq!(agent_args(os(&["haconn", "show", "status"])), None);
    assert_eq!(agent_args(os(&["haconn"])), None);
    assert_eq!(
        agent_args(os(&["/usr/sbin/fence_haconnx", "fence-agent"])),
        Some(vec![])
    );
}

#[test]
fn power_changes_succeed_only_on_their_evidence() {
    for (action, evidence, said) in [
        ("reboot", "done", "Success: Rebooted"),
        ("off", "off", "Success: Powered OFF"),
        ("on", "on", "Success: Powered ON"),
    ] {
        let i = inv(&[("action", action), ("plug", "labnode02")]);
        let ok = judge(&i, Ok(reply(evidence, &[])));
        assert_eq!(ok.code, 0, "{action}: {ok:?}");
        assert!(ok.stdout[0].starts_with(said), "{ok:?}");
        for other in ["done", "on", "off", "unknown"] {
            if other != evidence {
                let e = judge(&i, Ok(reply(other, &[])));
                assert_eq!(e.code, 1, "{action} answered {other:?}: {e:?}");
                assert!(e.stderr[0].starts_with("Failed:"), "{e:?}");
            }
        }
    }
}

#[test]
fn status_is_0_on_2_off_1_otherwise() {
    let i = inv(&[("action", "status"), ("plug", "labnode02")]);
    assert_eq!(judge(&i, Ok(reply("on", &[]))).code, 0);
    let off = judge(&i, Ok(reply("off", &[])));
    assert_eq!(
        (off.code, off.stdout.clone()),
        (2, vec!["Status: OFF".into()])
    );
    assert_eq!(judge(&i, Ok(reply("unknown", &[]))).code, 1);
    let refused = ClientError::Refused {
        code: "failed".into(),
        message: "the BMC does not answer".into(),
    };
    let e = judge(&i, Err(NoAnswer::Client(refused)));
    assert_eq!(e.code, 1);
    assert!(e.stderr[0].contains("status of labnode02"), "{e:?}");
    assert!(e.stderr[0].contains("the BMC does not answer"), "{e:?}");
}

#[test]
fn a_timeout_is_a_failure_pacemaker_recognises() {
    for action in ["reboot", "off", "on", "status", "monitor", "list"] {
        let i = inv(&[("action", action), ("plug", "labnode02")]);
        let e = judge(&i, Err(NoAnswer::TimedOut(Duration::from_secs(50))));
        assert_eq!(e.code, 1, "{action}");
        // Pacemaker maps "timed out" on stderr to a timeout.
        assert!(e.stderr[0].contains("timed out after 50 s"), "{e:?}");
    }
}

#[test]
fn list_prints_one_system_a_line_and_monitor_the_message() {
    let i = inv(&[("action", "list")]);
    let e = judge(&i, Ok(reply("unknown", &["labnode01", "vm01"])));
    assert_eq!(e.code, 0);
    assert_eq!(e.stdout, vec!["labnode01,".to_string(), "vm01,".into()]);
    let m = judge(&inv(&[("action", "monitor")]), Ok(reply("unknown", &[])));
    assert_eq!(
        (m.code, m.stdout),
        (0, vec!["the daemon's words".to_string()])
    );
}

#[test]
fn metadata_has_every_parameter_and_action() {
    let x = metadata();
    assert!(x.starts_with("<?xml version=\"1.0\" ?>\n<resource-agent name=\"fence_haconn\""));
    for p in PARAMS {
        assert!(
            x.contains(&format!("<parameter name=\"{}\" ", p.name)),
            "{}",
            p.name
        );
    }
    for a in Action::ALL {
        assert!(
            x.contains(&format!("<action name=\"{}\"", a.name())),
            "{a:?}"
        );
    }
    assert!(x.contains("<getopt mixed=\"-o, --action=[action]\" />"));
    assert!(x.contains("<content type=\"second\" default=\"50\" />"));
    assert!(x.contains("<parameter name=\"port\" unique=\"0\" required=\"0\" deprecated=\"1\">"));
    // The RNG check itself is in tests/it/pacemaker.rs (xmllint and the schema fence-agents ships).
    assert_eq!(x.matches("<parameter ").count(), PARAMS.len());
    assert_eq!(x.matches("</parameter>").count(), PARAMS.len());
    assert_eq!(x.matches("<action ").count(), Action::ALL.len());
    assert!(x.ends_with("</actions>\n</resource-agent>\n"));
}

#[test]
fn xml_text_is_escaped() {
    assert_eq!(
        xml_escape(r#"a<b>&"c"'"#),
        "a&lt;b&gt;&amp;&quot;c&quot;&apos;"
    );
}

#[test]
fn usage_names_every_option() {
    let u = usage();
    for p in PARAMS {
        assert!(u.contains(&format!("--{}", p.long)), "{}", p.long);
    }
}
