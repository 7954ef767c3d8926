//! The metrics endpoint (`metrics:` in the spec): `GET /metrics` over HTTP/1.1, in the
//! Prometheus text format. What [`crate::metrics::Live`] counts as it goes, plus what
//! `haconn show status` reads, read again at each scrape.
//!
//! It runs on the main runtime, never on the pipeline thread: a scrape asks the pipeline
//! for its hardware view as `show status` does (a message, answered between datagrams).
//! At most [`CONNECTIONS`] connections at once, each bounded in time; a fault here is
//! said in the event log and the daemon serves on without metrics.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::protocol::StatusReply;
use super::supervisor::Shared;
use crate::metrics::{CONTENT_TYPE, Scrape};

/// Connections served at once; more wait in the listen backlog.
const CONNECTIONS: usize = 16;
/// A connection's request headers must arrive within this …
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// … and the whole connection (keep-alive included) ends after this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds the metrics listener.
pub fn bind(at: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = match at {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    sock.bind(at)?;
    sock.listen(64)
}

/// Serves scrapes until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("metrics: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "GET /metrics only\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, CONTENT_TYPE, render(shared).await),
        "/" => text(
            StatusCode::OK,
            plain,
            "haconn: metrics at /metrics\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "not found: see /metrics\n".into(),
        ),
    }
}

/// One scrape's text.
pub async fn render(shared: &Shared) -> String {
    let counters = shared.pipeline.counters();
    let mut s = Scrape::new(&counters.metrics);
    let version = super::protocol::VersionReply::this_build();
    s.gauges(
        "haconn_build_info",
        "The daemon's version and build (always 1).",
        &["version", "commit"],
        [(
            vec![
                version.version,
                version.build.commit.unwrap_or_else(|| "unknown".into()),
            ],
            1,
        )],
    );
    let live = shared.pipeline.live();
    s.gauges(
        "haconn_spec_info",
        "The live spec's checksum, the same on both management servers when in sync (always 1).",
        &["checksum"],
        [(
            vec![crate::pair::sync::checksum(
                &crate::spec::render::state_yaml(&live),
            )],
            1,
        )],
    );
    match super::control::status_reply(shared).await {
        Ok(status) => {
            s.gauge(
                "haconn_pipeline_up",
                "Whether the reset pipeline thread answered this scrape.",
                1,
            );
            status_metrics(&mut s, &status);
        }
        Err(e) => {
            tracing::warn!("metrics: no status from the pipeline: {e}");
            s.gauge(
                "haconn_pipeline_up",
                "Whether the reset pipeline thread answered this scrape.",
                0,
            );
        }
    }
    let a = shared.alerts.counts();
    s.counters(
        "haconn_traps_total",
        "SNMP traps the trap receiver read, by what became of them.",
        &["result"],
        [
            ("received", a.received),
            ("malformed", a.malformed),
            ("bad_community", a.bad_community),
            ("unknown_source", a.unknown_source),
            ("busy_dropped", a.busy_dropped),
        ]
        .map(|(r, n)| (vec![r.to_string()], n)),
    );
    s.finish()
}

/// The metrics of a `status` answer alone, with [`crate::metrics::Live`]'s at zero (the
/// tests' view of the whole text for a status of any shape).
pub fn status_text(status: &StatusReply) -> String {
    let mut s = Scrape::new(&crate::metrics::Live::new());
    status_metrics(&mut s, status);
    s.finish()
}

fn up(link: &str) -> Option<i64> {
    match link {
        "OK" => Some(1),
        "NG" => Some(0),
        _ => None,
    }
}

/// The metrics `show status` holds.
fn status_metrics(s: &mut Scrape, st: &StatusReply) {
    let r = &st.reset_path;
    s.counter(
        "haconn_resetpath_checks_total",
        "Check datagrams handled (HA monitors' check-ins).",
        r.checks,
    );
    s.counter(
        "haconn_resetpath_requests_total",
        "Reset request datagrams handled (retransmissions included).",
        r.resets,
    );
    s.counter(
        "haconn_resetpath_stop_notices_total",
        "Stop notices handled (haconn node stopped, fence_kdump).",
        r.stopped,
    );
    s.counters(
        "haconn_resetpath_refused_total",
        "Reset-path datagrams refused or dropped unread, by reason.",
        &["reason"],
        [
            ("malformed", r.malformed),
            ("auth", r.rejected_auth),
            ("replayed", r.replayed),
            ("rate_limited", r.rate_limited),
            ("busy", r.busy_dropped),
            ("socket_full", r.socket_drops),
            ("standby", r.standby_dropped),
        ]
        .map(|(why, n)| (vec![why.to_string()], n)),
    );
    s.counters(
        "haconn_resetpath_replies_not_sent_total",
        "Replies not sent: longer than their request, or to an address no monitor registered.",
        &["reason"],
        [
            ("longer_than_request", r.replies_withheld),
            ("unregistered", r.replies_unregistered),
        ]
        .map(|(why, n)| (vec![why.to_string()], n)),
    );
    s.counter(
        "haconn_resetpath_send_errors_total",
        "Replies and attention datagrams the socket failed to send.",
        r.send_errors,
    );
    s.gauge(
        "haconn_resetpath_receive_buffer_bytes",
        "The reset-path socket's receive buffer, as the kernel granted it.",
        r.receive_buffer as i64,
    );

    let hw = &st.hardware;
    let mut links: Vec<(Vec<String>, i64)> = Vec::new();
    for m in &hw.mservers {
        if let Some(v) = up(&m.bmc.link) {
            links.push((vec!["mserverBmc".into(), m.name.clone()], v));
        }
    }
    for srv in &hw.servers {
        for (device, l) in [("bmc", &srv.bmc), ("esxi", &srv.vmware), ("pdus", &srv.pdu)] {
            if let Some(v) = up(&l.link) {
                links.push((vec![device.into(), srv.name.clone()], v));
            }
        }
    }
    for p in &hw.pdus {
        if let Some(v) = up(&p.link) {
            links.push((vec!["pdu".into(), p.address.clone()], v));
        }
    }
    s.gauges(
        "haconn_link_up",
        "Whether a device answered its last poll: device bmc, esxi or pdus (all of a server's \
         outlets) by server, mserverBmc by management server, pdu by address. Absent until polled.",
        &["device", "name"],
        links,
    );
    s.counters(
        "haconn_link_errors_total",
        "Polls that found a device's link NG (the reason is in show status and the error log).",
        &["device", "name"],
        hw.link_errors
            .iter()
            .map(|e| (vec![e.device.clone(), e.name.clone()], e.errors)),
    );
    // One series per state, 1 for the current one: `pon`, `poff`, else unknown.
    let states = |labels: Vec<String>, word: &str| {
        let now = match word {
            "pon" => "on",
            "poff" => "off",
            _ => "unknown",
        };
        ["on", "off", "unknown"].map(move |state| {
            let mut l = labels.clone();
            l.push(state.to_string());
            (l, i64::from(state == now))
        })
    };
    s.gauges(
        "haconn_server_power_state",
        "Each physical server's power as its BMC last reported it (1 for the current state: \
         on, off or unknown).",
        &["server", "state"],
        hw.servers
            .iter()
            .flat_map(|srv| states(vec![srv.name.clone()], &srv.power)),
    );
    s.gauges(
        "haconn_guest_power_state",
        "Each VMware guest's power as its ESXi host last reported it (1 for the current state).",
        &["server", "guest", "state"],
        hw.servers.iter().flat_map(|srv| {
            srv.guests
                .iter()
                .flatten()
                .flat_map(|g| states(vec![srv.name.clone(), g.name.clone()], &g.power))
        }),
    );
    s.counter(
        "haconn_watch_rounds_total",
        "Rounds of the hardware watch.",
        hw.rounds,
    );
    s.gauges(
        "haconn_spec_objects",
        "Objects in the live spec.",
        &["kind"],
        [
            ("management_servers", st.live.management_servers),
            ("servers", st.live.servers),
            ("systems", st.live.systems),
            ("pdus", st.live.pdus),
        ]
        .map(|(k, n)| (vec![k.to_string()], n as i64)),
    );
    s.gauge(
        "haconn_degraded",
        "Whether the daemon runs on a fallback spec (its spec file was invalid at start).",
        i64::from(st.status.degraded.is_some()),
    );
    let active = match &st.pair {
        None => 1,
        Some(p) => i64::from(p.role == "active"),
    };
    s.gauge(
        "haconn_active",
        "Whether this management server is the active one (the one that resets).",
        active,
    );
    if let Some(p) = &st.pair {
        s.gauges(
            "haconn_pair_role",
            "This management server's role in its pair (1 for the current one).",
            &["role"],
            ["undecided", "standby", "active", "leaving"]
                .map(|r| (vec![r.to_string()], i64::from(p.role == r))),
        );
        s.gauge(
            "haconn_pair_peer_link_up",
            "Whether the peer's heartbeat is current.",
            i64::from(p.peer_link == "OK"),
        );
        s.gauge(
            "haconn_pair_redundant",
            "Whether the pair is redundant now (a healthy standby could take over).",
            i64::from(p.redundant),
        );
        s.gauge(
            "haconn_pair_spec_in_sync",
            "Whether the peer applied the same spec (as the active last heard).",
            i64::from(p.peer_spec.starts_with("in sync")),
        );
        s.counter(
            "haconn_pair_takeovers_total",
            "Times this management server took over as active.",
            p.takeovers,
        );
        s.counters(
            "haconn_pair_held_total",
            "Ends of resets held until the standby took them, and of those released after \
             a second without its word.",
            &["result"],
            [
                ("held", r.held_for_standby),
                ("timed_out", r.held_timed_out),
            ]
            .map(|(k, n)| (vec![k.to_string()], n)),
        );
    }
}
