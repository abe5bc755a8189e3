//! Which series a target had in its previous scrape, so that the ones that vanish get a
//! Prometheus staleness marker, and when each was first seen.
//!
//! A series is identified by its name, its kind, its labels (job and instance included)
//! and, for histograms and summaries, its bucket bounds or quantiles, since those are what
//! make the `_bucket`/`quantile` series downstream. For each one the marker to send when it
//! vanishes is built once, when it first appears.

use std::collections::HashMap;

use opentelemetry_proto::tonic::metrics::v1::{DataPointFlags, Metric, metric::Data};

/// The flag that tells core's remote write conversion to write Prometheus' stale NaN.
pub(crate) const NO_RECORDED_VALUE: u32 = DataPointFlags::NoRecordedValueMask as u32;

/// A series of the previous scrape: where it belongs and its marker-to-be.
#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub job: String,
    pub instance: String,
    /// When the series was first seen in this run of scrapes (Unix ns): the start time of
    /// a cumulative sum or histogram without an OpenMetrics `_created`.
    pub first_seen_ns: u64,
    /// The metric with one point flagged "no recorded value", its timestamp set on use;
    /// `None` for a series exposed with its own timestamps, which Prometheus does not
    /// mark stale either (the exporter owns its timeline).
    pub stale: Option<Metric>,
}

/// The series of one target's last successful scrape and of the scrape under way: one map,
/// each series marked with the last scrape that saw it (a map per scrape would move every
/// entry from one to the other each time, and hold two tables).
#[derive(Debug, Default)]
pub struct SeriesMemory {
    series: HashMap<String, Known>,
    /// The number of the scrape under way.
    scrape: u64,
}

#[derive(Debug)]
struct Known {
    remembered: Remembered,
    /// The last scrape that saw the series.
    seen: u64,
}

impl SeriesMemory {
    /// Notes that the series `key` is in this scrape; returns when it was first seen.
    /// `remember` builds its record when it is new.
    pub(crate) fn see(&mut self, key: String, remember: impl FnOnce() -> Remembered) -> u64 {
        let scrape = self.scrape;
        if let Some(known) = self.series.get_mut(&key) {
            known.seen = scrape;
            return known.remembered.first_seen_ns;
        }
        let remembered = remember();
        let first_seen = remembered.first_seen_ns;
        self.series.insert(
            key,
            Known {
                remembered,
                seen: scrape,
            },
        );
        first_seen
    }

    /// Ends a successful scrape: the series of the previous one that were not seen again,
    /// as stale markers at `now_ns`.
    pub(crate) fn finish(&mut self, now_ns: u64) -> Vec<Remembered> {
        let scrape = self.scrape;
        self.scrape += 1;
        markers(
            self.series.extract_if(|_, known| known.seen != scrape),
            now_ns,
        )
    }

    /// Ends a failed scrape, or a target that went away: every known series is stale.
    pub(crate) fn forget_all(&mut self, now_ns: u64) -> Vec<Remembered> {
        self.scrape += 1;
        markers(self.series.drain(), now_ns)
    }
}

fn markers(series: impl Iterator<Item = (String, Known)>, now_ns: u64) -> Vec<Remembered> {
    let mut out: Vec<(String, Remembered)> = series
        .map(|(key, known)| (key, known.remembered))
        .filter(|(_, r)| r.stale.is_some())
        .collect();
    for (_, r) in &mut out {
        if let Some(metric) = &mut r.stale {
            set_time(metric, now_ns);
        }
    }
    // Stable output order makes batches (and tests) deterministic.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, r)| r).collect()
}

fn set_time(metric: &mut Metric, now_ns: u64) {
    match &mut metric.data {
        Some(Data::Gauge(g)) => g
            .data_points
            .iter_mut()
            .for_each(|p| p.time_unix_nano = now_ns),
        Some(Data::Sum(s)) => s
            .data_points
            .iter_mut()
            .for_each(|p| p.time_unix_nano = now_ns),
        Some(Data::Histogram(h)) => h
            .data_points
            .iter_mut()
            .for_each(|p| p.time_unix_nano = now_ns),
        Some(Data::Summary(s)) => s
            .data_points
            .iter_mut()
            .for_each(|p| p.time_unix_nano = now_ns),
        Some(Data::ExponentialHistogram(_)) | None => {}
    }
}
