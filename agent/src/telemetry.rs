//! Every self-metric of the agent, named in one place.
//!
//! Names follow `vigil_agent_<thing>_<unit>`. Each [`Telemetry`] has its own registry so
//! several agents can run in one process (tests) without sharing counters.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use vigil_core::telemetry::register;

#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Files being tailed.
    pub files_watched: IntGauge,
    /// Files opened for tailing, and closed once gone and delivered.
    pub files_opened: IntCounter,
    pub files_closed: IntCounter,
    /// Bytes read from log files.
    pub bytes_read: IntCounter,
    /// Lines read from log files (pieces of cut lines count once each).
    pub lines_read: IntCounter,
    /// Lines longer than `max_line_bytes`, or merged messages over it, cut into pieces.
    pub lines_split: IntCounter,
    /// Lines that did not parse in their source's format and were kept raw.
    pub lines_malformed: IntCounter,
    /// Bytes written to the watched files and not read yet, summed over the files.
    pub file_lag_bytes: IntGauge,
    /// Log records the collector acknowledged.
    pub lines_shipped: IntCounter,
    /// Log records the collector refused for good (and that were dropped), by reason.
    pub lines_dropped: IntCounterVec,
    /// Export requests that failed, by signal and kind (retryable, permanent).
    pub ship_failures: IntCounterVec,
    /// Resource-metrics entries the collector acknowledged.
    pub metrics_shipped: IntCounter,
    /// Resource-metrics entries dropped, oldest first, because the metrics queue was full,
    /// or refused for good by the collector (by reason).
    pub metrics_dropped: IntCounterVec,
    /// Checkpoint writes that failed (they are retried at the next acknowledgement).
    pub checkpoint_failures: IntCounter,
    /// Pods of this node known from the Kubernetes API (deleted ones in their grace too).
    pub kubernetes_pods: IntGauge,
    /// Failed LIST/WATCH requests to the Kubernetes API (each retried with backoff).
    pub kubernetes_watch_errors: IntCounter,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let name = |n: &str| format!("vigil_agent_{n}");
        let counter = |n: &str, help: &str| {
            let c = IntCounter::new(name(n), help).expect("metric definitions are valid");
            register(&registry, c)
        };
        let gauge = |n: &str, help: &str| {
            let g = IntGauge::new(name(n), help).expect("metric definitions are valid");
            register(&registry, g)
        };
        let counter_vec = |n: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(n), help), labels)
                .expect("metric definitions are valid");
            register(&registry, c)
        };
        let telemetry = Telemetry {
            files_watched: gauge("files_watched", "Log files being tailed"),
            files_opened: counter("files_opened_total", "Log files opened for tailing"),
            files_closed: counter(
                "files_closed_total",
                "Log files closed once gone and fully delivered",
            ),
            bytes_read: counter("bytes_read_total", "Bytes read from log files"),
            lines_read: counter("lines_read_total", "Lines read from log files"),
            lines_split: counter(
                "lines_split_total",
                "Lines or merged messages longer than max_line_bytes, sent in pieces",
            ),
            lines_malformed: counter(
                "lines_malformed_total",
                "Lines that did not parse in their format and were sent raw",
            ),
            file_lag_bytes: gauge(
                "file_lag_bytes",
                "Bytes in the watched files not read yet, summed over the files",
            ),
            lines_shipped: counter(
                "lines_shipped_total",
                "Log records the collector acknowledged",
            ),
            lines_dropped: counter_vec(
                "lines_dropped_total",
                "Log records the collector refused for good",
                &["reason"],
            ),
            ship_failures: counter_vec(
                "ship_failures_total",
                "Export requests to the collector that failed",
                &["signal", "kind"],
            ),
            metrics_shipped: counter(
                "metrics_shipped_total",
                "Resource-metrics entries the collector acknowledged",
            ),
            metrics_dropped: counter_vec(
                "metrics_dropped_total",
                "Resource-metrics entries dropped (queue full: oldest first; or refused)",
                &["reason"],
            ),
            checkpoint_failures: counter(
                "checkpoint_failures_total",
                "Checkpoint writes that failed",
            ),
            kubernetes_pods: gauge(
                "kubernetes_pods",
                "Pods of this node known from the Kubernetes API, deleted ones within their grace included",
            ),
            kubernetes_watch_errors: counter(
                "kubernetes_watch_errors_total",
                "Failed LIST/WATCH requests to the Kubernetes API (retried with backoff)",
            ),
            registry,
        };
        // Zero-valued series exist from the start, so dashboards and rate() see them.
        for signal in ["logs", "metrics"] {
            for kind in ["retryable", "permanent"] {
                telemetry.ship_failures.with_label_values(&[signal, kind]);
            }
        }
        telemetry.metrics_dropped.with_label_values(&["queue_full"]);
        telemetry.lines_dropped.with_label_values(&["refused"]);
        telemetry
    }

    /// The registry the agent's inputs (scraper) register their own metrics in, so one
    /// `/metrics` shows them all.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        vigil_core::telemetry::render(&self.registry)
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
