//! Metrics end to end (issue 17): the real daemon with `metrics:` on loopback and
//! OpenIPMI's `ipmi_sim` as the servers' BMCs; the text checked by Debian's
//! `promtool check metrics`, and scraped by a real Prometheus server on loopback, queried
//! over its HTTP API: the target up, the BMCs' links and power, a reset counted.

use crate::support::ipmi as ipmi_support;
use crate::support::resetpath as resetpath_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipmi_support::{PASSWORD, SimBmc, sim_at};
use resetpath_support::{Lab, free_port};

/// A plain HTTP/1.0 request on loopback: the status code and the body.
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The value of the sample `series` (name and labels exactly as written) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `promtool check metrics` on `text`: its complaints, empty when none.
fn promtool(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        said
    } else {
        format!("exit {:?}: {said}", out.status.code())
    }
}

struct Metered {
    lab: Lab,
    bmcs: [SimBmc; 3],
    port: u16,
}

/// The lab spec on three simulators, polled every second, with metrics on loopback.
fn start() -> Metered {
    let bmcs = [sim_at(21), sim_at(22), sim_at(23)];
    let port = free_port();
    let lines: Vec<String> = bmcs
        .iter()
        .enumerate()
        .map(|(i, b)| ipmi_support::lab_server(i, b, PASSWORD))
        .collect();
    let lab = Lab::start_real(1000, 1000, move |text: String| {
        let (head, _) = text.split_once("servers:\n").expect("servers");
        format!(
            "{head}metrics:\n  address: 127.0.0.1\n  port: {port}\nservers:\n{}",
            lines.concat()
        )
    });
    lab.wait_log("event.log", "the metrics endpoint", |l| {
        l.contains(&format!(
            "metrics served at http://127.0.0.1:{port}/metrics"
        ))
    });
    Metered { lab, bmcs, port }
}

impl Metered {
    fn scrape(&self) -> String {
        let (code, body) = http(self.port, "GET", "/metrics").expect("GET /metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    /// Scrapes until `pred` holds of the text (the watch polls once a second).
    fn until(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.scrape();
            if pred(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "never {what}:\n{text}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_metrics_pass_promtool_and_count_a_reset_with_stage_times() {
    let m = start();
    let up = |t: &str| {
        (1..=3).all(|n| {
            sample(
                t,
                &format!("haconn_link_up{{device=\"bmc\",name=\"labnode0{n}\"}}"),
            ) == Some(1.0)
        })
    };
    let before = m.until("every BMC's link up", up);
    assert_eq!(promtool(&before), "", "promtool on:\n{before}");
    for want in [
        "haconn_server_power_state{server=\"labnode02\",state=\"on\"} 1",
        "haconn_server_power_state{server=\"labnode02\",state=\"off\"} 0",
        "haconn_resets_total{kind=\"P\",outcome=\"dump\"} 0",
        "haconn_pipeline_up 1",
        "haconn_active 1",
        "haconn_spec_objects{kind=\"servers\"} 3",
        "# TYPE haconn_reset_stage_duration_seconds histogram",
    ] {
        assert!(before.contains(want), "no `{want}` in:\n{before}");
    }
    assert!(
        !before.contains("haconn_pair_role"),
        "single mode has no pair metrics"
    );

    let port = free_port();
    m.lab.register("labnode01", 1, port, None);
    m.lab.register("labnode02", 2, free_port(), None);
    let run = m.lab.reset_node02(port, 1).finish(Duration::from_secs(30));
    run.code(0).stdout_has("result=DUMP");
    // The node sends no stop notice here: its hard reset, acknowledged, proves it (the
    // attention's REBOOT).
    let counted =
        |t: &str| sample(t, "haconn_resets_total{kind=\"P\",outcome=\"reboot\"}") == Some(1.0);
    let after = m.until("the reset counted", counted);
    assert_eq!(promtool(&after), "", "promtool on:\n{after}");
    for other in ["dump", "poff", "fail"] {
        let series = format!("haconn_resets_total{{kind=\"P\",outcome=\"{other}\"}}");
        assert_eq!(sample(&after, &series), Some(0.0), "{after}");
    }
    assert!(
        !m.bmcs[1].nmis().is_empty(),
        "the NMI reached labnode02's BMC"
    );
    // Its whole duration, and the hard reset's acknowledgement when there was one.
    assert_eq!(
        sample(
            &after,
            "haconn_reset_stage_duration_seconds_count{stage=\"reset\"}"
        ),
        Some(1.0),
        "{after}"
    );
    assert_eq!(
        sample(
            &after,
            "haconn_reset_stage_duration_seconds_count{stage=\"hard_reset_ack\"}"
        ),
        Some(1.0),
        "{after}"
    );
    let checks = sample(&after, "haconn_resetpath_checks_total").unwrap_or(0.0);
    assert!(checks >= 2.0, "two monitors checked in: {checks}");
    let queued = sample(&after, "haconn_pipeline_queue_delay_seconds_count").unwrap_or(0.0);
    assert!(
        queued >= 3.0,
        "the checks and the request were queued: {queued}"
    );

    // A second failure, after labnode02's monitor checked in again: this time its dump
    // agent reports the stop after the NMI, so the reset ends as DUMP, timed from the NMI.
    m.lab.register("labnode02", 2, free_port(), None);
    let nmis = m.bmcs[1].nmis().len();
    let run = m.lab.reset_node02(port, 2);
    m.bmcs[1].wait_for("the second NMI", Duration::from_secs(10), |s| {
        s.nmis().len() > nmis
    });
    m.lab
        .node("stopped", &["--system", "labnode02", "--subsystem", "2"])
        .code(0);
    run.finish(Duration::from_secs(30))
        .code(0)
        .stdout_has("result=DUMP");
    let dumped = m.until("the dump counted", |t| {
        sample(t, "haconn_resets_total{kind=\"P\",outcome=\"dump\"}") == Some(1.0)
    });
    assert_eq!(
        sample(
            &dumped,
            "haconn_reset_stage_duration_seconds_count{stage=\"nmi_to_stopped\"}"
        ),
        Some(1.0),
        "{dumped}"
    );
    assert_eq!(
        sample(
            &dumped,
            "haconn_resets_total{kind=\"P\",outcome=\"reboot\"}"
        ),
        Some(1.0),
        "{dumped}"
    );
    assert_eq!(promtool(&dumped), "", "promtool on:\n{dumped}");

    // Only GET (and HEAD) of /metrics and /.
    assert_eq!(http(m.port, "POST", "/metrics").expect("POST").0, 405);
    assert_eq!(http(m.port, "GET", "/nothing").expect("GET").0, 404);
    assert_eq!(http(m.port, "GET", "/").expect("GET /").0, 200);
}

/// A Prometheus server on loopback.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: haconn\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config)
            .output()
            .expect("promtool check config");
        assert!(check.status.success(), "{check:?}");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus) starts");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's first value, if it has one.
    fn query(&self, q: &str) -> Option<f64> {
        let v = self.ask(q)?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// An instant query's whole answer (`None`: no HTTP answer, or not JSON).
    fn ask(&self, q: &str) -> Option<serde_json::Value> {
        let enc: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (_, body) = http(self.port, "GET", &format!("/api/v1/query?query={enc}")).ok()?;
        serde_json::from_str(&body).ok()
    }

    fn until(&self, q: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = self.query(q);
            if got == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never had {q} = {want} (last {got:?}):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_and_sees_a_reset() {
    let m = start();
    let prom = Prometheus::start(m.port);
    prom.until("up{job=\"haconn\"}", 1.0);
    prom.until("haconn_link_up{device=\"bmc\",name=\"labnode02\"}", 1.0);
    prom.until(
        "haconn_server_power_state{server=\"labnode02\",state=\"on\"}",
        1.0,
    );
    prom.until("sum(haconn_resets_total)", 0.0);

    let port = free_port();
    m.lab.register("labnode01", 1, port, None);
    m.lab.register("labnode02", 2, free_port(), None);
    let run = m.lab.reset_node02(port, 7).finish(Duration::from_secs(30));
    run.code(0);
    prom.until("haconn_resets_total{kind=\"P\",outcome=\"reboot\"}", 1.0);
    prom.until("sum(haconn_resets_total)", 1.0);
    prom.until(
        "haconn_reset_stage_duration_seconds_count{stage=\"reset\"}",
        1.0,
    );

    // The Grafana dashboard's every query is valid PromQL that Prometheus evaluates, and
    // names only metrics the daemon exports.
    let text = http(m.port, "GET", "/metrics").expect("a scrape").1;
    let mut exported: std::collections::BTreeSet<String> = metric_names(&text);
    exported.extend(metric_names(&pair_status_text()));
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for e in &exprs {
        let q = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*");
        let v = prom.ask(&q).unwrap_or_else(|| panic!("no answer to {q}"));
        assert_eq!(v["status"], "success", "{q}: {v:#}");
        for name in referenced(e) {
            assert!(
                exported.contains(&name),
                "the dashboard's `{e}` names {name}, which the daemon does not export"
            );
        }
    }
}

/// The dashboard's queries (contrib/grafana/haconn.json).
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/haconn.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard")).expect("JSON");
    d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

/// The `haconn_*` metric names a query refers to (a histogram's by its family's name).
fn referenced(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("haconn_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metric names (series names, `_bucket`/`_sum`/`_count` included) in a scrape.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// A `status` answer of every shape: a pair, guests, PDUs, link errors.
fn pair_status() -> haconn::daemon::protocol::StatusReply {
    let status = serde_json::json!({
        "status": {
            "specFile": "/etc/haconn/cluster.yaml", "localManagementServer": "ms01",
            "startedFrom": "spec file", "degraded": null, "watching": true,
            "reloads": 2, "lastReload": null, "lastInvalid": null
        },
        "resetPath": {
            "checks": 10, "resets": 2, "stopped": 1, "malformed": 3, "rejectedAuth": 4,
            "replayed": 5, "sendErrors": 0, "highWaterErrors": 0, "repliesWithheld": 1,
            "rateLimited": 6, "busyDropped": 0, "socketDrops": 7, "receiveBuffer": 65536,
            "standbyDropped": 0, "heldForStandby": 2, "heldTimedOut": 1
        },
        "live": {"managementServers": 2, "servers": 2, "systems": 3, "pdus": 1},
        "hardware": {
            "mode": "pair", "peerLink": "OK", "intervalMs": 1000, "rounds": 42,
            "lastPollAgoMs": 100,
            "mservers": [
                {"name": "ms01", "bmcAddress": "127.0.0.1", "role": "active", "status": "normal",
                 "bmc": {"link": "OK"}, "pdu": {"link": "--"}},
                {"name": "ms02", "bmcAddress": "127.0.0.2", "role": "standby", "status": "normal",
                 "bmc": {"link": "NG", "reason": "no answer"}, "pdu": {"link": "--"}}
            ],
            "servers": [
                {"name": "node01", "power": "pon", "bmc": {"link": "OK"},
                 "pdu": {"link": "OK"}, "vmware": {"link": "--"}},
                {"name": "esx01", "power": "--", "bmc": {"link": "NG", "reason": "timeout"},
                 "pdu": {"link": "--"}, "vmware": {"link": "OK"},
                 "guests": [{"name": "vm01", "power": "pon"}, {"name": "vm02", "power": "poff"}]}
            ],
            "pdus": [
                {"address": "127.0.0.31", "model": "APC_RPDU", "firmware": null,
                 "outletCount": 8, "link": "OK", "outlets": []}
            ],
            "linkErrors": [
                {"device": "mserverBmc", "name": "ms02", "errors": 3},
                {"device": "bmc", "name": "esx01", "errors": 9}
            ]
        },
        "pair": {
            "me": "ms01", "peer": "ms02", "role": "active", "peerRole": "standby",
            "peerLink": "OK", "peerState": "normal", "fencing": false, "redundant": true,
            "address": "held on lo", "takeovers": 1, "peerSpec": "in sync (0123456789abcdef)",
            "specChecksum": "0123456789abcdef"
        }
    });
    serde_json::from_value(status).expect("a status reply")
}

fn pair_status_text() -> String {
    haconn::daemon::metrics::status_text(&pair_status())
}

/// Every shape `show status` can take (a pair, guests, PDUs, link errors) gives text that
/// promtool accepts, with the pair's role, link and redundancy.
#[test]
fn every_status_shape_passes_promtool() {
    let text = pair_status_text();
    assert_eq!(promtool(&text), "", "promtool on:\n{text}");
    for want in [
        "haconn_pair_role{role=\"active\"} 1",
        "haconn_pair_role{role=\"standby\"} 0",
        "haconn_pair_peer_link_up 1",
        "haconn_pair_redundant 1",
        "haconn_pair_spec_in_sync 1",
        "haconn_pair_takeovers_total 1",
        "haconn_pair_held_total{result=\"timed_out\"} 1",
        "haconn_active 1",
        "haconn_link_up{device=\"mserverBmc\",name=\"ms02\"} 0",
        "haconn_link_up{device=\"esxi\",name=\"esx01\"} 1",
        "haconn_link_up{device=\"pdu\",name=\"127.0.0.31\"} 1",
        "haconn_link_errors_total{device=\"bmc\",name=\"esx01\"} 9",
        "haconn_guest_power_state{guest=\"vm02\",server=\"esx01\",state=\"off\"} 1",
        "haconn_server_power_state{server=\"esx01\",state=\"unknown\"} 1",
        "haconn_resetpath_refused_total{reason=\"socket_full\"} 7",
        "haconn_watch_rounds_total 42",
    ] {
        assert!(text.contains(want), "no `{want}` in:\n{text}");
    }
    assert!(
        !text.contains("haconn_link_up{device=\"pdus\",name=\"esx01\"}"),
        "a link not configured (--) is absent:\n{text}"
    );
}
