//! Prometheus metrics: what the daemon counts as it goes ([`Live`]: resets by outcome,
//! stage durations, queue delay, reloads), and a [`Scrape`] that adds, at each scrape,
//! what is read from the daemon's state then (reset-path counters, links, power, the pair).
//!
//! Written in the Prometheus text format 0.0.4 (`prometheus` crate). Every label value
//! comes from the spec or from a fixed set here, never from network input, so the number
//! of series is bounded by the spec.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The content type of what [`Scrape::finish`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Stage durations, 1 ms to about 65 s.
fn stage_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 2.0, 17).expect("valid buckets")
}

/// What the daemon counts as it goes; shared by the pipeline thread, the receive thread
/// and the supervisor. Updating any of these is a few atomic operations.
pub struct Live {
    registry: Registry,
    /// Resets of HA-monitor requests and fence agents, by kind (`P`/`V`) and outcome
    /// (`dump`, `reboot`, `poff`, `fail`).
    resets: IntCounterVec,
    /// Operators' test soft resets, by outcome (`stopped`, `poweredOff`, `fail`).
    test_resets: IntCounterVec,
    /// Stage durations: `nmi_to_stopped` (the NMI issued to the node's stop notice),
    /// `hard_reset_ack` (the hard reset sent to its acknowledgement), `pdu_cut` (an outlet
    /// OFF sent to its confirmation), `reset` (a reset's start to its end).
    stages: HistogramVec,
    /// How long an accepted reset-path datagram waited for the pipeline thread.
    queue_delay: Histogram,
    /// Reloads by result (`success`, `failed`).
    reloads: IntCounterVec,
    /// When the live spec was last applied (start or reload), Unix seconds.
    spec_applied: IntGauge,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

/// A reset's outcome, as the metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Dump,
    Reboot,
    Poff,
    Fail,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Dump => "dump",
            Outcome::Reboot => "reboot",
            Outcome::Poff => "poff",
            Outcome::Fail => "fail",
        }
    }
}

/// A timed stage of a reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    NmiToStopped,
    HardResetAck,
    PduCut,
    Whole,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::NmiToStopped => "nmi_to_stopped",
            Stage::HardResetAck => "hard_reset_ack",
            Stage::PduCut => "pdu_cut",
            Stage::Whole => "reset",
        }
    }
}

impl Live {
    pub fn new() -> Live {
        let registry = Registry::new();
        let resets = IntCounterVec::new(
            Opts::new(
                "haconn_resets_total",
                "Resets ended, by kind (P physical, V VMware guest) and outcome (dump, reboot, poff, fail).",
            ),
            &["kind", "outcome"],
        )
        .expect("valid metric");
        let test_resets = IntCounterVec::new(
            Opts::new(
                "haconn_test_resets_total",
                "Operators' test soft resets ended, by outcome (stopped, powered_off, fail).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let stages = HistogramVec::new(
            HistogramOpts::new(
                "haconn_reset_stage_duration_seconds",
                "Reset stage durations: nmi_to_stopped, hard_reset_ack, pdu_cut, and the whole reset.",
            )
            .buckets(stage_buckets()),
            &["stage"],
        )
        .expect("valid metric");
        let queue_delay = Histogram::with_opts(
            HistogramOpts::new(
                "haconn_pipeline_queue_delay_seconds",
                "How long an accepted reset-path datagram waited for the pipeline thread.",
            )
            .buckets(prometheus::exponential_buckets(0.000_01, 4.0, 10).expect("valid buckets")),
        )
        .expect("valid metric");
        let reloads = IntCounterVec::new(
            Opts::new(
                "haconn_reloads_total",
                "Reloads of the spec (file watcher, SIGHUP, haconn apply), by result.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let spec_applied = IntGauge::new(
            "haconn_spec_applied_timestamp_seconds",
            "When the live spec was applied (start or reload), Unix time.",
        )
        .expect("valid metric");
        for c in [
            Box::new(resets.clone()) as Box<dyn Collector>,
            Box::new(test_resets.clone()),
            Box::new(stages.clone()),
            Box::new(queue_delay.clone()),
            Box::new(reloads.clone()),
            Box::new(spec_applied.clone()),
        ] {
            registry.register(c).expect("names are unique");
        }
        // Every series of a fixed label set exists from the start, so a rate over it is
        // defined before the first event.
        for kind in ["P", "V"] {
            for o in [Outcome::Dump, Outcome::Reboot, Outcome::Poff, Outcome::Fail] {
                resets.with_label_values(&[kind, o.label()]);
            }
        }
        for o in ["stopped", "powered_off", "fail"] {
            test_resets.with_label_values(&[o]);
        }
        for s in [
            Stage::NmiToStopped,
            Stage::HardResetAck,
            Stage::PduCut,
            Stage::Whole,
        ] {
            stages.with_label_values(&[s.label()]);
        }
        for r in ["success", "failed"] {
            reloads.with_label_values(&[r]);
        }
        Live {
            registry,
            resets,
            test_resets,
            stages,
            queue_delay,
            reloads,
            spec_applied,
        }
    }

    /// A reset ended (`physical`: P, else V).
    pub fn reset_ended(&self, physical: bool, outcome: Outcome) {
        let kind = if physical { "P" } else { "V" };
        self.resets
            .with_label_values(&[kind, outcome.label()])
            .inc();
    }

    /// An operator's test soft reset ended: `stopped`, `powered_off` or `fail`.
    pub fn test_ended(&self, outcome: &'static str) {
        self.test_resets.with_label_values(&[outcome]).inc();
    }

    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stages
            .with_label_values(&[stage.label()])
            .observe(took.as_secs_f64());
    }

    pub fn queued(&self, waited: Duration) {
        self.queue_delay.observe(waited.as_secs_f64());
    }

    pub fn reloaded(&self, success: bool) {
        let r = if success { "success" } else { "failed" };
        self.reloads.with_label_values(&[r]).inc();
    }

    /// The live spec was applied (or changed by a reload) now.
    pub fn applied(&self) {
        self.spec_applied.set(chrono::Utc::now().timestamp());
    }
}

/// One scrape: [`Live`]'s metrics and those read from the daemon's state now.
pub struct Scrape {
    families: Vec<MetricFamily>,
}

impl Scrape {
    pub fn new(live: &Live) -> Scrape {
        Scrape {
            families: live.registry.gather(),
        }
    }

    /// A gauge family with one series per `(label values, value)`.
    pub fn gauges<I>(&mut self, name: &str, help: &str, labels: &[&str], series: I)
    where
        I: IntoIterator<Item = (Vec<String>, i64)>,
    {
        let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
        for (values, v) in series {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            g.with_label_values(&values).set(v);
        }
        self.families.extend(g.collect());
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let g = IntGauge::new(name, help).expect("valid metric");
        g.set(value);
        self.families.extend(g.collect());
    }

    /// A counter family with one series per `(label values, count)`: counts the daemon
    /// keeps elsewhere (atomics), read at the scrape.
    pub fn counters<I>(&mut self, name: &str, help: &str, labels: &[&str], series: I)
    where
        I: IntoIterator<Item = (Vec<String>, u64)>,
    {
        let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
        for (values, n) in series {
            let values: Vec<&str> = values.iter().map(String::as_str).collect();
            c.with_label_values(&values).inc_by(n);
        }
        self.families.extend(c.collect());
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, n: u64) {
        let c = IntCounter::new(name, help).expect("valid metric");
        c.inc_by(n);
        self.families.extend(c.collect());
    }

    /// The text, families sorted by name (a family without series, such as the guests'
    /// power when there are none, is left out: the format has no empty family).
    pub fn finish(mut self) -> String {
        self.families.retain(|f| !f.get_metric().is_empty());
        self.families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.families, &mut buf)
            .expect("encoding to memory");
        String::from_utf8(buf).expect("the text encoder writes UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_metrics_count_and_encode() {
        let live = Live::new();
        live.reset_ended(true, Outcome::Dump);
        live.reset_ended(false, Outcome::Reboot);
        live.stage(Stage::NmiToStopped, Duration::from_millis(1500));
        live.reloaded(true);
        live.applied();
        let mut s = Scrape::new(&live);
        s.gauges(
            "haconn_spec_info",
            "Spec.",
            &["checksum"],
            [(vec!["abc123".into()], 1)],
        );
        s.gauges(
            "haconn_link_up",
            "Link.",
            &["device", "name"],
            [(vec!["bmc".into(), "node01".into()], 1)],
        );
        s.counter("haconn_resetpath_checks_total", "Checks.", 7);
        s.gauges("haconn_empty", "No series.", &["x"], []);
        let text = s.finish();
        for want in [
            "haconn_resets_total{kind=\"P\",outcome=\"dump\"} 1",
            "haconn_resets_total{kind=\"V\",outcome=\"reboot\"} 1",
            "haconn_resets_total{kind=\"P\",outcome=\"fail\"} 0",
            "haconn_reset_stage_duration_seconds_bucket{stage=\"nmi_to_stopped\",le=\"2.048\"} 1",
            "haconn_reset_stage_duration_seconds_bucket{stage=\"nmi_to_stopped\",le=\"1.024\"} 0",
            "haconn_reloads_total{result=\"success\"} 1",
            "haconn_spec_info{checksum=\"abc123\"} 1",
            "haconn_link_up{device=\"bmc\",name=\"node01\"} 1",
            "haconn_resetpath_checks_total 7",
            "# TYPE haconn_resets_total counter",
        ] {
            assert!(text.contains(want), "no `{want}` in:\n{text}");
        }
        assert!(!text.contains("haconn_empty"), "{text}");
        assert_eq!(live.resets.with_label_values(&["P", "dump"]).get(), 1);
    }
}
