//! Every self-metric of the collector, named in one place.
//!
//! Names follow `vigil_collector_<thing>_<unit>`. Items are data points, log records or
//! spans, labelled by `signal`. Each [`Telemetry`] has its own registry so several
//! collectors can run in one process (tests) without sharing counters.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use vigil_core::Signal;
use vigil_core::buffer::BufferStats;
use vigil_core::telemetry::register;

#[derive(Clone)]
pub struct Telemetry {
    registry: Registry,
    /// Items received and answered with success, by signal and transport (grpc, http).
    pub received_items: IntCounterVec,
    /// Requests refused at the receiver, by signal and reason (buffer_full, invalid, ...).
    pub refused_requests: IntCounterVec,
    /// Items in refused requests, where the request could be decoded to count them.
    pub refused_items: IntCounterVec,
    /// Items written to the buffer.
    pub buffered_items: IntCounterVec,
    /// Requests split into several buffer records to fit the broker's message limit.
    pub split_requests: IntCounterVec,
    /// Items the backend accepted, by signal and exporter.
    pub exported_items: IntCounterVec,
    /// Export attempts that failed with a retryable error, by signal and exporter.
    pub export_retries: IntCounterVec,
    /// Items converted away at an exporter because the backend cannot represent them, by
    /// signal and reason (e.g. delta_temporality).
    pub dropped_items: IntCounterVec,
    /// Items sent to the dead-letter store, by signal and exporter.
    pub dead_lettered_items: IntCounterVec,
    /// Backend request latency, by exporter and outcome.
    pub export_duration: HistogramVec,
    /// Time a write to the buffer took until it was durable (disk fsync, Redis XADD
    /// reply, JetStream publish ack): the broker round trip for shared buffers.
    pub buffer_write_duration: HistogramVec,
    /// Records handed to this process again after an unacked earlier delivery.
    pub buffer_redelivered_records: IntCounterVec,
    /// Records this process took over from another consumer (Redis XAUTOCLAIM).
    pub buffer_reclaimed_records: IntCounterVec,
    pub buffer_used_bytes: IntGauge,
    pub buffer_capacity_bytes: IntGauge,
    pub buffer_pending_records: IntGaugeVec,
    pub buffer_oldest_unacked_age_seconds: IntGaugeVec,
    /// Records no consumer has taken yet (Redis, NATS, memory): what autoscaling reads.
    pub buffer_undelivered_records: IntGaugeVec,
    /// Dead letters the buffer dropped (oldest first) because its dead-letter store was full.
    pub dead_letters_dropped: IntGauge,
    /// Damage found and cut off when the disk buffer opened.
    pub buffer_corrupt_records: IntGauge,
    pub buffer_truncated_bytes: IntGauge,
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(format!("vigil_collector_{name}"), help), labels)
                .expect("metric definitions are static and valid");
            register(&registry, c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(format!("vigil_collector_{name}"), help), labels)
                .expect("metric definitions are static and valid");
            register(&registry, g)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("vigil_collector_{name}"), help)
                .expect("metric definitions are static and valid");
            register(&registry, g)
        };
        let export_duration = HistogramVec::new(
            HistogramOpts::new(
                "vigil_collector_export_duration_seconds",
                "Time one backend request took",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["exporter", "outcome"],
        )
        .expect("metric definitions are static and valid");
        let export_duration = register(&registry, export_duration);

        let buffer_write_duration = HistogramVec::new(
            HistogramOpts::new(
                "vigil_collector_buffer_write_duration_seconds",
                "Time a buffer write took until durable (fsync, XADD reply, publish ack)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
            &["signal"],
        )
        .expect("metric definitions are static and valid");
        let buffer_write_duration = register(&registry, buffer_write_duration);

        let telemetry = Telemetry {
            received_items: counter(
                "received_items_total",
                "Items received and acknowledged",
                &["signal", "transport"],
            ),
            refused_requests: counter(
                "refused_requests_total",
                "Requests refused at the receiver",
                &["signal", "reason"],
            ),
            refused_items: counter(
                "refused_items_total",
                "Items refused at the receiver",
                &["signal", "reason"],
            ),
            buffered_items: counter(
                "buffered_items_total",
                "Items written to the buffer",
                &["signal"],
            ),
            split_requests: counter(
                "split_requests_total",
                "Requests split into several buffer records to fit the broker's message limit",
                &["signal"],
            ),
            exported_items: counter(
                "exported_items_total",
                "Items accepted by a backend",
                &["signal", "exporter"],
            ),
            export_retries: counter(
                "export_retries_total",
                "Backend requests that failed and will be retried",
                &["signal", "exporter"],
            ),
            dropped_items: counter(
                "dropped_items_total",
                "Items an exporter could not represent for its backend",
                &["signal", "reason"],
            ),
            dead_lettered_items: counter(
                "dead_lettered_items_total",
                "Items sent to the dead-letter store",
                &["signal", "exporter"],
            ),
            export_duration,
            buffer_write_duration,
            buffer_redelivered_records: counter(
                "buffer_redelivered_records_total",
                "Requests handed to this collector again after an unacked delivery",
                &["signal"],
            ),
            buffer_reclaimed_records: counter(
                "buffer_reclaimed_records_total",
                "Requests this collector took over from a consumer that held them too long",
                &["signal"],
            ),
            buffer_used_bytes: gauge("buffer_used_bytes", "Bytes held by the buffer"),
            buffer_capacity_bytes: gauge("buffer_capacity_bytes", "The buffer's configured bound"),
            buffer_pending_records: gauge_vec(
                "buffer_pending_records",
                "Requests buffered and not yet acknowledged by an exporter",
                &["signal"],
            ),
            buffer_oldest_unacked_age_seconds: gauge_vec(
                "buffer_oldest_unacked_age_seconds",
                "Age of the oldest request not yet exported",
                &["signal"],
            ),
            dead_letters_dropped: gauge(
                "dead_letters_dropped",
                "Dead letters dropped, oldest first, because the dead-letter store was full",
            ),
            buffer_undelivered_records: gauge_vec(
                "buffer_undelivered_records",
                "Requests buffered that no exporter has taken yet (consumer lag)",
                &["signal"],
            ),
            buffer_corrupt_records: gauge(
                "buffer_recovery_corrupt_records",
                "Damaged records cut off when the disk buffer opened",
            ),
            buffer_truncated_bytes: gauge(
                "buffer_recovery_truncated_bytes",
                "Bytes cut off when the disk buffer opened",
            ),
            registry,
        };
        // Zero-valued series exist from the start, so dashboards and rate() see them.
        for signal in Signal::ALL {
            telemetry
                .buffered_items
                .with_label_values(&[signal.as_str()]);
            telemetry
                .buffer_pending_records
                .with_label_values(&[signal.as_str()]);
        }
        telemetry
    }

    /// Copies a buffer snapshot into the gauges.
    pub fn observe_buffer(&self, stats: &BufferStats) {
        self.buffer_used_bytes.set(stats.used_bytes as i64);
        self.buffer_capacity_bytes.set(stats.capacity_bytes as i64);
        self.dead_letters_dropped
            .set(stats.dead_letters_dropped as i64);
        for signal in Signal::ALL {
            let s = &stats.signals[signal.index()];
            self.buffer_pending_records
                .with_label_values(&[signal.as_str()])
                .set(s.pending_records as i64);
            self.buffer_oldest_unacked_age_seconds
                .with_label_values(&[signal.as_str()])
                .set(s.oldest_unacked_age.map_or(0, |d| d.as_secs() as i64));
            // The buffer counts; the counters catch up with its totals.
            for (counter, total) in [
                (&self.buffer_redelivered_records, s.redelivered_records),
                (&self.buffer_reclaimed_records, s.reclaimed_records),
            ] {
                let counter = counter.with_label_values(&[signal.as_str()]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
            if let Some(undelivered) = s.undelivered_records {
                self.buffer_undelivered_records
                    .with_label_values(&[signal.as_str()])
                    .set(undelivered as i64);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    /// Creates the zero-valued series of an exporter, so its graphs start at 0 rather than
    /// "no data" until its first retry or dead letter.
    pub fn expect_exporter(&self, signal: Signal, exporter: &str) {
        for counter in [
            &self.exported_items,
            &self.export_retries,
            &self.dead_lettered_items,
        ] {
            counter.with_label_values(&[signal.as_str(), exporter]);
        }
    }

    /// Creates the zero-valued series of a receiver transport for a signal.
    pub fn expect_receiver(&self, signal: Signal, transport: &str) {
        self.received_items
            .with_label_values(&[signal.as_str(), transport]);
    }

    pub fn render(&self) -> String {
        vigil_core::telemetry::render(&self.registry)
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}
