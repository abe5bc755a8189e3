//! Which series a target had in its previous scrape, so that the ones that vanish get a
//! Prometheus staleness marker, and when each was first seen.
//!
//! A series is identified by its name, its kind, its labels (job and instance included)
//! and, for histograms and summaries, its bucket bounds or quantiles, since those are what
//! make the `_bucket`/`quantile` series downstream. For each one the marker to send when it
//! vanishes is built once, when it first appears.
//!
//! This holds every series of every target, so it is the agent's memory per series: each
//! entry is kept small. The key is a boxed string (no spare capacity), job and instance
//! are shared by all series of a target, and the marker is kept protobuf-encoded (a few
//! dozen bytes instead of a `Metric` with its attribute vectors and strings); it is decoded
//! only when the series vanishes.
//!
//! Every sample of every scrape is looked up here, and a target lists its series in the
//! same order scrape after scrape. So the series are kept in a vector in the order they
//! were first seen, and a lookup first compares the key with the entry after the last one
//! found: one comparison of bytes read in sequence, no hashing. Only a series out of that
//! order (new, gone, or a target that shuffles) goes through the hash index, which holds
//! positions in the vector rather than the keys a second time.

use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;

use opentelemetry_proto::tonic::metrics::v1::{DataPointFlags, Metric, metric::Data};
use prost::Message;

/// The flag that tells core's remote write conversion to write Prometheus' stale NaN.
pub(crate) const NO_RECORDED_VALUE: u32 = DataPointFlags::NoRecordedValueMask as u32;

/// How many distinct job and instance values are shared rather than copied per series. A
/// target has one of each unless metric relabeling rewrites them per sample; past this
/// many, each series gets its own copy (correct, just larger).
const SHARED_NAMES: usize = 64;

/// A series of the previous scrape that vanished: where it belongs and its marker.
#[derive(Debug, Clone)]
pub(crate) struct Remembered {
    pub job: Arc<str>,
    pub instance: Arc<str>,
    /// The metric with one point flagged "no recorded value", timestamped when it vanished;
    /// `None` for a series exposed with its own timestamps, which Prometheus does not
    /// mark stale either (the exporter owns its timeline).
    pub stale: Option<Metric>,
}

/// The series of one target's last successful scrape and of the scrape under way: one map,
/// each series marked with the last scrape that saw it (a map per scrape would move every
/// entry from one to the other each time, and hold two tables).
#[derive(Debug, Default)]
pub struct SeriesMemory {
    /// Every known series, in the order first seen.
    series: Vec<Series>,
    /// Positions in `series`, by the hash of their keys.
    index: HashTable<usize>,
    /// foldhash, not SipHash: keys are a hundred bytes or so and come from the targets the
    /// operator configured; foldhash is still seeded per process.
    hasher: foldhash::fast::RandomState,
    /// Where the next series of the scrape under way is expected.
    cursor: usize,
    /// The number of the scrape under way.
    scrape: u64,
    /// Job and instance values shared by the series that carry them.
    names: Vec<Arc<str>>,
}

#[derive(Debug)]
struct Series {
    key: Box<str>,
    known: Known,
}

#[derive(Debug)]
struct Known {
    job: Arc<str>,
    instance: Arc<str>,
    /// When the series was first seen in this run of scrapes (Unix ns): the start time of
    /// a cumulative sum or histogram without an OpenMetrics `_created`.
    first_seen_ns: u64,
    /// The marker-to-be, protobuf-encoded; its timestamp is set when it is sent.
    marker: Option<Box<[u8]>>,
    /// The last scrape that saw the series.
    seen: u64,
}

/// A series seen for the first time.
pub(crate) struct NewSeries<'a> {
    pub job: &'a str,
    pub instance: &'a str,
    pub first_seen_ns: u64,
    /// Its stale marker, or `None` when it is never to be marked stale.
    pub marker: Option<Metric>,
}

impl SeriesMemory {
    /// Notes that the series `key` is in this scrape; returns when it was first seen.
    /// `new` describes it when it was not known (only then is it called).
    pub(crate) fn see<'a>(&mut self, key: &str, new: impl FnOnce() -> NewSeries<'a>) -> u64 {
        let scrape = self.scrape;
        let at = match self.series.get(self.cursor) {
            Some(next) if *next.key == *key => Some(self.cursor),
            _ => {
                let hash = self.hasher.hash_one(key);
                let series = &self.series;
                self.index.find(hash, |&i| *series[i].key == *key).copied()
            }
        };
        if let Some(at) = at {
            self.cursor = at + 1;
            let known = &mut self.series[at].known;
            known.seen = scrape;
            return known.first_seen_ns;
        }
        let new = new();
        let known = Known {
            job: self.shared(new.job),
            instance: self.shared(new.instance),
            first_seen_ns: new.first_seen_ns,
            marker: new.marker.map(|m| m.encode_to_vec().into_boxed_slice()),
            seen: scrape,
        };
        let at = self.series.len();
        self.series.push(Series {
            key: Box::from(key),
            known,
        });
        let (series, hasher) = (&self.series, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), at, |&i| {
            hasher.hash_one(&*series[i].key)
        });
        new.first_seen_ns
    }

    fn shared(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.iter().find(|n| ***n == *name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        if self.names.len() < SHARED_NAMES {
            self.names.push(Arc::clone(&name));
        }
        name
    }

    /// Ends a successful scrape: the series of the previous one that were not seen again,
    /// as stale markers at `now_ns`.
    pub(crate) fn finish(&mut self, now_ns: u64) -> Vec<Remembered> {
        let scrape = self.scrape;
        self.scrape += 1;
        self.cursor = 0;
        let gone: Vec<Series> = self
            .series
            .extract_if(.., |s| s.known.seen != scrape)
            .collect();
        if !gone.is_empty() {
            self.reindex();
        }
        markers(gone.into_iter(), now_ns)
    }

    /// Rebuilds the index after series left the vector (positions moved).
    fn reindex(&mut self) {
        self.index.clear();
        let (series, hasher) = (&self.series, &self.hasher);
        for (at, s) in series.iter().enumerate() {
            self.index
                .insert_unique(hasher.hash_one(&*s.key), at, |&i| {
                    hasher.hash_one(&*series[i].key)
                });
        }
    }

    /// Ends a failed scrape, or a target that went away: every known series is stale.
    pub(crate) fn forget_all(&mut self, now_ns: u64) -> Vec<Remembered> {
        self.scrape += 1;
        self.cursor = 0;
        self.names.clear();
        self.index.clear();
        let gone: Vec<Series> = self.series.drain(..).collect();
        markers(gone.into_iter(), now_ns)
    }

    /// How many series are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }
}

fn markers(series: impl Iterator<Item = Series>, now_ns: u64) -> Vec<Remembered> {
    let mut out: Vec<Series> = series.filter(|s| s.known.marker.is_some()).collect();
    // Stable output order makes batches (and tests) deterministic.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.into_iter()
        .map(|Series { known, .. }| {
            // The bytes are our own encoding of a `Metric`: decoding them cannot fail.
            let stale = known
                .marker
                .and_then(|bytes| Metric::decode(&bytes[..]).ok())
                .map(|mut metric| {
                    set_time(&mut metric, now_ns);
                    metric
                });
            Remembered {
                job: known.job,
                instance: known.instance,
                stale,
            }
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::otlp::{gauge, number_point, string_kv};

    fn marker(name: &str) -> Metric {
        let point = number_point(vec![string_kv("mode", "idle")], 0, 5, 0.0);
        gauge(name, "", vec![point])
    }

    #[test]
    fn a_vanished_series_comes_back_as_its_marker_at_the_time_it_vanished() {
        let mut memory = SeriesMemory::default();
        let new = |marker| {
            move || NewSeries {
                job: "node",
                instance: "a:9100",
                first_seen_ns: 7,
                marker,
            }
        };
        assert_eq!(memory.see("kept", new(Some(marker("kept")))), 7);
        assert_eq!(memory.see("gone", new(Some(marker("gone")))), 7);
        assert_eq!(memory.see("own_time", new(None)), 7);
        assert!(memory.finish(10).is_empty());

        // Known series keep their first-seen time; `new` is not called for them.
        assert_eq!(memory.see("kept", || unreachable!("known series")), 7);
        let vanished = memory.finish(20);
        assert_eq!(vanished.len(), 1, "{vanished:?}");
        let gone = &vanished[0];
        assert_eq!((&*gone.job, &*gone.instance), ("node", "a:9100"));
        let mut expected = marker("gone");
        set_time(&mut expected, 20);
        assert_eq!(gone.stale.as_ref(), Some(&expected));
        // The series without a marker vanished too, silently.
        assert_eq!(memory.len(), 1);

        let all = memory.forget_all(30);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].stale.as_ref().map(|m| m.name.as_str()), Some("kept"));
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn series_of_one_target_share_its_job_and_instance() {
        let mut memory = SeriesMemory::default();
        for key in ["a", "b"] {
            memory.see(key, || NewSeries {
                job: "node",
                instance: "a:9100",
                first_seen_ns: 1,
                marker: Some(marker(key)),
            });
        }
        memory.finish(2);
        let vanished = memory.finish(3);
        assert_eq!(vanished.len(), 2);
        assert!(Arc::ptr_eq(&vanished[0].job, &vanished[1].job));
        assert!(Arc::ptr_eq(&vanished[0].instance, &vanished[1].instance));
    }

    #[test]
    fn series_are_found_in_order_out_of_order_and_after_others_vanished() {
        let mut memory = SeriesMemory::default();
        let new = |key: &'static str, at: u64| {
            move || NewSeries {
                job: "node",
                instance: "a:9100",
                first_seen_ns: at,
                marker: Some(marker(key)),
            }
        };
        let known = || -> NewSeries<'static> { unreachable!("a known series") };
        for key in ["a", "b", "c", "d"] {
            assert_eq!(memory.see(key, new(key, 1)), 1);
        }
        assert!(memory.finish(2).is_empty());
        for key in ["a", "b", "c", "d"] {
            assert_eq!(memory.see(key, known), 1);
        }
        assert!(memory.finish(3).is_empty());
        // Shuffled, a new one in between, `b` gone.
        assert_eq!(memory.see("c", known), 1);
        assert_eq!(memory.see("x", new("x", 4)), 4);
        assert_eq!(memory.see("a", known), 1);
        assert_eq!(memory.see("d", known), 1);
        let gone = memory.finish(5);
        let names: Vec<&str> = gone
            .iter()
            .map(|r| r.stale.as_ref().unwrap().name.as_str())
            .collect();
        assert_eq!(names, ["b"]);
        // The rest moved in the vector: all still found, first-seen times kept.
        for (key, first_seen) in [("x", 4), ("d", 1), ("a", 1), ("c", 1)] {
            assert_eq!(memory.see(key, known), first_seen, "{key}");
        }
        assert!(memory.finish(6).is_empty());
        assert_eq!(memory.len(), 4);
        // `b` comes back as a new series.
        assert_eq!(memory.see("b", new("b", 7)), 7);
    }
}
