//! `fence_haconn` with the real thing: Debian's `pacemaker-fenced` (on a one-node corosync,
//! without the rest of Pacemaker) and `stonith_admin` fencing through the agent, the agent asking a real haconn
//! daemon, the daemon driving `ipmi_sim` BMCs — and the effect checked where it happens:
//! the NMI and the hard reset at the simulator, the lines in haconn's reset log, the
//! fencer's history. Also the agent alone under its own name (stdin and options, the
//! metadata against fence-agents' RelaxNG schema, a daemon that never answers).

use crate::support::ipmi as ipmi_support;
use crate::support::pacemaker::{self as pcmk, Fencer, stonith_admin};
use crate::support::resetpath::Lab;
use crate::support::run::{Run, execute};

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ipmi_support::{PASSWORD, SimBmc, SimConfig, USER};

/// The systems of the spec, in order, and the simulators' addresses.
const NODES: [(&str, u8); 3] = [("labnode01", 91), ("labnode02", 92), ("labnode03", 93)];

/// Runs `fence_haconn` (a symlink of that name in `dir`) with `args` and `stdin`.
fn agent(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let link = dir.join("fence_haconn");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_haconn"), &link).expect("symlink");
    }
    let mut run = execute(
        Command::new(&link),
        args.iter().map(|a| a.to_string()).collect(),
        stdin.as_bytes().to_vec(),
    );
    run.args.insert(0, "(fence_haconn)".into());
    run
}

#[test]
fn the_agent_under_its_own_name_takes_stdin_and_options_and_bounds_its_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    // Metadata, by option and by stdin, valid against the schema fence-agents ships.
    let md = agent(d, &["-o", "metadata"], "");
    md.code(0);
    pcmk::xmllint_metadata(&md.stdout).code(0);
    let again = agent(d, &[], "# as Pacemaker asks\naction=metadata\n");
    again.code(0);
    assert_eq!(again.stdout, md.stdout);

    // validate-all checks parameters only; unknown names are ignored.
    agent(
        d,
        &[],
        "action=validate-all\nplug=labnode02\npasswd=unused\nnodeid=2\npower_timeout=30\n",
    )
    .code(0);
    let bad = agent(d, &[], "action=validate-all\ncontrol_socket=rel\ndelay=x\n");
    bad.code(1);
    assert!(
        bad.stderr.contains("absolute path") && bad.stderr.contains("delay:"),
        "{bad}"
    );

    // A power action needs its system; an unknown action is said to be unrecognised.
    let r = agent(d, &[], "action=status\n");
    r.code(1);
    assert!(r.stderr.contains("status needs the system"), "{r}");
    let r = agent(d, &["-o", "dance", "-n", "labnode02"], "");
    r.code(1);
    assert!(r.stderr.contains("unrecognised action"), "{r}");
    let r = agent(d, &["--bogus"], "");
    r.code(1);
    assert!(r.stderr.contains("unknown option --bogus"), "{r}");

    // No daemon: a failure (status too: 1, never 0 or 2).
    let missing = d.join("no-such.sock").display().to_string();
    for action in ["reboot", "status", "list", "monitor"] {
        let r = agent(
            d,
            &[
                "-o",
                action,
                "-n",
                "labnode02",
                "--control-socket",
                &missing,
            ],
            "",
        );
        r.code(1);
        assert!(r.stderr.contains("cannot reach the haconn daemon"), "{r}");
    }

    // A daemon that accepts and never answers: the agent gives up at its timeout and
    // says "timed out" (which Pacemaker reads as a timeout), a failure.
    let hung = d.join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&hung).expect("bind");
    let held = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let started = Instant::now();
    let r = agent(
        d,
        &[],
        &format!(
            "action=reboot\nnodename=labnode02\ncontrol_socket={}\npower_timeout=2\n",
            hung.display()
        ),
    );
    r.code(1);
    assert!(r.stderr.contains("timed out after 2 s"), "{r}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
    drop(held);
}

/// The spec of the lab daemon with labnode01..03 on these simulators.
fn on_sims(sims: &[SimBmc]) -> impl FnOnce(String) -> String {
    let servers: String = NODES
        .iter()
        .zip(sims)
        .map(|((name, _), b)| {
            format!(
                "  - {{name: {name}, bmc: {{address: {}, port: {}, username: {USER}, password: {PASSWORD}}}, cluster: true}}\n",
                b.address, b.port
            )
        })
        .collect();
    move |text: String| {
        let (head, _) = text.split_once("servers:\n").expect("servers");
        format!("{head}servers:\n{servers}")
    }
}

#[test]
fn pacemaker_fenced_reboots_fences_and_unfences_through_haconn() {
    if let Some(why) = pcmk::unavailable() {
        eprintln!("SKIPPED pacemaker_fenced_reboots_fences_and_unfences_through_haconn: {why}");
        return;
    }
    let sims: Vec<SimBmc> = NODES
        .iter()
        .map(|(_, octet)| {
            SimBmc::with(SimConfig {
                address: Ipv4Addr::new(127, 0, 0, *octet),
                ..SimConfig::default()
            })
        })
        .collect();
    let lab = Lab::start_real(1000, 1000, on_sims(&sims));
    let socket = lab.path("sock").display().to_string();
    let fencer = Fencer::start();
    let scratch = tempfile::tempdir().expect("tempdir");
    let why = |run: &Run| format!("{run}\n{}\n{}", fencer.diagnostics(), lab.diagnostics());

    // The agent as the fencer sees it: installed, its metadata valid, a configuration
    // validated by running the agent's validate-all.
    let installed = stonith_admin(&["--list-installed"]);
    installed.code(0);
    assert!(
        installed.stdout.contains("fence_haconn"),
        "{}",
        why(&installed)
    );
    // (What stonith_admin prints is the fencer's edit of the agent's metadata — start and
    // stop actions added, plug and port made optional — so it is checked for what the
    // fencer took from the agent; the agent's own output is checked against the schema.)
    let md = stonith_admin(&["--metadata", "--agent", "fence_haconn"]);
    md.code(0);
    for needle in [
        "<resource-agent name=\"fence_haconn\"",
        "<parameter name=\"control_socket\"",
        "<action name=\"reboot\"",
    ] {
        assert!(md.stdout.contains(needle), "{needle}: {}", why(&md));
    }
    let own = crate::support::run::haconn(&["fence-agent", "-o", "metadata"]);
    own.code(0);
    pcmk::xmllint_metadata(&own.stdout).code(0);
    let sock_opt = format!("control_socket={socket}");
    let valid = stonith_admin(&[
        "--validate",
        "--agent",
        "fence_haconn",
        "--option",
        &sock_opt,
    ]);
    assert_eq!(valid.code, Some(0), "{}", why(&valid));
    let invalid = stonith_admin(&[
        "--validate",
        "--agent",
        "fence_haconn",
        "--option",
        "control_socket=relative/sock",
    ]);
    assert_ne!(invalid.code, Some(0), "{}", why(&invalid));

    // One device for the three nodes; the fencer learns its targets from the agent's list
    // (dynamic-list, the default when no pcmk_host_list is given).
    let reg = stonith_admin(&[
        "--register",
        "haconn",
        "--agent",
        "fence_haconn",
        "--option",
        &sock_opt,
    ]);
    assert_eq!(reg.code, Some(0), "{}", why(&reg));
    let registered = stonith_admin(&["--list-registered"]);
    assert!(registered.stdout.contains("haconn"), "{}", why(&registered));
    let targets = stonith_admin(&["--list-targets", "haconn", "--timeout", "30"]);
    assert_eq!(targets.code, Some(0), "{}", why(&targets));
    for (name, _) in NODES {
        assert!(targets.stdout.contains(name), "{name}: {}", why(&targets));
    }
    let can = stonith_admin(&["--list", "labnode02", "--timeout", "30"]);
    assert!(can.stdout.contains("haconn"), "{}", why(&can));
    let query = stonith_admin(&["--query", "haconn", "--timeout", "30"]);
    assert_eq!(query.code, Some(0), "monitor: {}", why(&query));

    // Reboot: haconn's reset — the NMI, no stop notice from the node (a simulator), so
    // the hard reset after hispeed — then the fencer's success.
    let (b1, b2, b3) = (&sims[0], &sims[1], &sims[2]);
    let reboot = stonith_admin(&["--reboot", "labnode02", "--timeout", "90"]);
    assert_eq!(reboot.code, Some(0), "{}", why(&reboot));
    let (nmis, resets) = (b2.nmis(), b2.resets());
    assert_eq!((nmis.len(), resets.len()), (1, 1), "{}", why(&reboot));
    assert!(resets[0] > nmis[0], "the hard reset comes after the NMI");
    assert!(
        b1.nmis().is_empty() && b3.nmis().is_empty() && b1.resets().is_empty(),
        "no other node touched"
    );
    let log = lab.log("reset.log");
    assert!(
        log.contains("SOFTRESET labnode02") && log.contains("HARDRESET labnode02"),
        "reset log:\n{log}\n{}",
        why(&reboot)
    );

    // Fence (off, confirmed by a power read of off), then the agent's status says off
    // (2) through the fencer's own status check, and unfence (on) brings it back.
    let off = stonith_admin(&["--fence", "labnode02", "--timeout", "90"]);
    assert_eq!(off.code, Some(0), "{}", why(&off));
    assert!(!b2.powered(), "labnode02 is off at its BMC");
    assert!(
        b2.chassis().iter().any(|(_, a)| a == "set power 0"),
        "{:?}",
        b2.chassis()
    );
    let status = agent(
        scratch.path(),
        &[
            "-o",
            "status",
            "-n",
            "labnode02",
            "--control-socket",
            &socket,
        ],
        "",
    );
    status.code(2);
    let on = stonith_admin(&["--unfence", "labnode02", "--timeout", "90"]);
    assert_eq!(on.code, Some(0), "{}", why(&on));
    assert!(b2.powered(), "labnode02 is on again");
    agent(
        scratch.path(),
        &[
            "-o",
            "status",
            "-n",
            "labnode02",
            "--control-socket",
            &socket,
        ],
        "",
    )
    .code(0);

    // The fencer's history has all three, successful, done by the one node.
    let history = stonith_admin(&["--history", "labnode02", "--verbose"]);
    history.code(0);
    for done in ["reboot of", "turning off of", "unfencing of"] {
        let line = format!(
            "{done} labnode02 successful: delegate={}",
            pcmk::FENCER_NODE
        );
        assert!(history.stdout.contains(&line), "{line}: {}", why(&history));
    }

    // A node haconn does not manage: the device does not claim it (it is not in the
    // agent's list), so the fencer has no device for it and the fencing fails.
    let ghost = stonith_admin(&["--reboot", "ghost01", "--timeout", "30"]);
    assert_ne!(ghost.code, Some(0), "{}", why(&ghost));

    // The same device with a static host list naming it: the agent is run, haconn says
    // it has no such system, and the fencing fails (never a success without evidence).
    let reg = stonith_admin(&[
        "--register",
        "haconn-static",
        "--agent",
        "fence_haconn",
        "--option",
        &sock_opt,
        "--option",
        "pcmk_host_list=ghost02",
    ]);
    assert_eq!(reg.code, Some(0), "{}", why(&reg));
    let ghost = stonith_admin(&["--reboot", "ghost02", "--timeout", "30"]);
    assert_ne!(ghost.code, Some(0), "{}", why(&ghost));
    assert!(
        fencer
            .log()
            .contains("reboot of ghost02: the haconn daemon refused the request (not-found)"),
        "the agent was run for ghost02 and haconn said no: {}",
        why(&ghost)
    );
    assert_eq!(b2.resets().len(), 1, "nothing more reset");
}
