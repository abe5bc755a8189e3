//! Every self-metric of the anomaly service, named in one place (`vigil_anomaly_*`).
//!
//! Per-query series are created for every configured query at start, so dashboards see
//! zeros rather than nothing before the first event.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use vigil_core::telemetry::register;

#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Points scored, by query.
    pub points_scored: IntCounterVec,
    /// Points above the query's threshold, by query.
    pub points_anomalous: IntCounterVec,
    /// Series being tracked, by query.
    pub series: IntGaugeVec,
    /// Cold starts: a query warmed from `backfill` history because it had no saved state.
    pub warmups: IntCounterVec,
    /// Series restored from the last snapshot at start, by query.
    pub series_restored: IntGaugeVec,
    /// Series beyond `max_series`, ignored, by query (last evaluation).
    pub series_over_limit: IntGaugeVec,
    /// Series forgotten after being absent too long, by query.
    pub series_evicted: IntCounterVec,
    /// Alerts firing in Alertmanager, by query (overflow summary included).
    pub alerts_firing: IntGaugeVec,
    /// Anomalous series not alerted individually because `max_alerts` was reached.
    pub alerts_suppressed: IntGaugeVec,
    /// Failed evaluations (query to VictoriaMetrics), by query.
    pub query_errors: IntCounterVec,
    /// Time to read and score one query's new points.
    pub evaluation_duration: HistogramVec,
    /// Requests to a sink that failed, by sink (`writeback`, `alertmanager`, `grafana`).
    pub sink_failures: IntCounterVec,
    /// Samples written back (score, expected, lower, upper each count).
    pub samples_written: IntCounter,
    /// Snapshots of detector state that failed.
    pub snapshot_failures: IntCounter,
    /// Unix time of the last successful snapshot.
    pub last_snapshot: IntGauge,
}

impl Telemetry {
    pub fn new<'a>(queries: impl IntoIterator<Item = &'a str>) -> Telemetry {
        let registry = Registry::new();
        let name = |n: &str| format!("vigil_anomaly_{n}");
        let by = |n: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(n), help), labels)
                .expect("metric definitions are valid");
            register(&registry, c)
        };
        let gauge_by = |n: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name(n), help), &["query"])
                .expect("metric definitions are valid");
            register(&registry, g)
        };
        let evaluation_duration = HistogramVec::new(
            HistogramOpts::new(
                name("evaluation_duration_seconds"),
                "Time to read and score one query's new points",
            )
            .buckets(vec![
                0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0,
            ]),
            &["query"],
        )
        .expect("metric definitions are valid");
        let telemetry = Telemetry {
            points_scored: by("points_scored_total", "Points scored", &["query"]),
            points_anomalous: by(
                "points_anomalous_total",
                "Points scored above the query's threshold",
                &["query"],
            ),
            series: gauge_by("series", "Series being tracked"),
            warmups: by(
                "warmups_total",
                "Queries warmed from backfill history because no state was saved",
                &["query"],
            ),
            series_restored: gauge_by(
                "series_restored",
                "Series whose detector state was restored from the last snapshot at start",
            ),
            series_over_limit: gauge_by(
                "series_over_limit",
                "Series beyond max_series, ignored at the last evaluation",
            ),
            series_evicted: by(
                "series_evicted_total",
                "Series forgotten after being absent too long",
                &["query"],
            ),
            alerts_firing: gauge_by("alerts_firing", "Alerts firing in Alertmanager"),
            alerts_suppressed: gauge_by(
                "alerts_suppressed",
                "Anomalous series beyond max_alerts, summarised in one overflow alert",
            ),
            query_errors: by(
                "query_errors_total",
                "Evaluations whose query to VictoriaMetrics failed",
                &["query"],
            ),
            evaluation_duration: register(&registry, evaluation_duration),
            sink_failures: by(
                "sink_failures_total",
                "Requests to write-back, Alertmanager or Grafana that failed",
                &["sink"],
            ),
            samples_written: register(
                &registry,
                IntCounter::new(name("samples_written_total"), "Samples written back")
                    .expect("metric definitions are valid"),
            ),
            snapshot_failures: register(
                &registry,
                IntCounter::new(name("snapshot_failures_total"), "Failed state snapshots")
                    .expect("metric definitions are valid"),
            ),
            last_snapshot: register(
                &registry,
                IntGauge::new(
                    name("last_snapshot_timestamp_seconds"),
                    "Unix time of the last successful state snapshot",
                )
                .expect("metric definitions are valid"),
            ),
            registry,
        };
        for query in queries {
            for vec in [
                &telemetry.points_scored,
                &telemetry.points_anomalous,
                &telemetry.series_evicted,
                &telemetry.query_errors,
                &telemetry.warmups,
            ] {
                vec.with_label_values(&[query]);
            }
            for vec in [
                &telemetry.series,
                &telemetry.series_restored,
                &telemetry.series_over_limit,
                &telemetry.alerts_firing,
                &telemetry.alerts_suppressed,
            ] {
                vec.with_label_values(&[query]);
            }
        }
        for sink in ["writeback", "alertmanager", "grafana", "state"] {
            telemetry.sink_failures.with_label_values(&[sink]);
        }
        telemetry
    }

    pub fn render(&self) -> String {
        vigil_core::telemetry::render(&self.registry)
    }
}
