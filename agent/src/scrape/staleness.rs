//! Which series a target had in its previous scrape, so that the ones that vanish get a
//! Prometheus staleness marker, and when each was first seen.
//!
//! A series is identified by its name, its kind, its labels (job and instance included)
//! and, for histograms and summaries, its bucket bounds or quantiles, since those are what
//! make the `_bucket`/`quantile` series downstream. What each one sends when it vanishes
//! is decided when it first appears.
//!
//! This holds every series of every target, so it is the agent's memory per series: each
//! entry is 48 bytes and its key. The key (a boxed string, no spare capacity) already
//! names the series' metric, job, instance and labels, so a gauge or counter remembers only
//! which of the two it is and its marker is rebuilt from the key when it vanishes
//! ([`Marker::Number`]). Only histograms and summaries, whose markers need their bounds or
//! quantiles as numbers, and series whose key cannot be read back (a string holding a NUL)
//! keep their marker protobuf-encoded ([`Marker::Kept`]).
//!
//! Every sample of every scrape is looked up here, and a target lists its series in the
//! same order scrape after scrape. So the series are kept in a vector in the order they
//! were first seen, and a lookup first compares the key with the entry after the last one
//! found: one comparison of bytes read in sequence, no hashing. Only a series out of that
//! order (new, gone, or a target that shuffles) goes through the hash index, which holds
//! positions in the vector rather than the keys a second time.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use opentelemetry_proto::tonic::metrics::v1::{DataPointFlags, Metric, metric::Data};
use prost::Message;

/// The flag that tells core's remote write conversion to write Prometheus' stale NaN.
pub(crate) const NO_RECORDED_VALUE: u32 = DataPointFlags::NoRecordedValueMask as u32;

/// What a series sends when it vanishes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Marker {
    /// Nothing: the series is exposed with its own timestamps, and Prometheus does not
    /// mark those stale either (the exporter owns its timeline).
    Never,
    /// A gauge or counter point with no recorded value, built from the series key.
    Number { counter: bool },
    /// The whole marker metric, kept from when the series was first seen.
    Kept(Box<Kept>),
}

/// A marker that the series key cannot give back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Kept {
    pub job: Box<str>,
    pub instance: Box<str>,
    /// The `Metric` with one point flagged "no recorded value", protobuf-encoded; its
    /// timestamp is set when it is sent.
    metric: Box<[u8]>,
}

impl Kept {
    pub(crate) fn new(job: &str, instance: &str, metric: &Metric) -> Kept {
        Kept {
            job: job.into(),
            instance: instance.into(),
            metric: metric.encode_to_vec().into_boxed_slice(),
        }
    }

    /// The marker metric, timestamped `now_ns`.
    pub(crate) fn metric(&self, now_ns: u64) -> Option<Metric> {
        // Our own encoding of a `Metric`: decoding it does not fail.
        let mut metric = Metric::decode(&self.metric[..]).ok()?;
        set_time(&mut metric, now_ns);
        Some(metric)
    }
}

/// A series of the previous scrape that vanished.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Vanished {
    pub key: Box<str>,
    pub first_seen_ns: u64,
    pub marker: Marker,
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
}

#[derive(Debug)]
struct Series {
    key: Box<str>,
    /// When the series was first seen in this run of scrapes (Unix ns): the start time of
    /// a cumulative sum or histogram without an OpenMetrics `_created`.
    first_seen_ns: u64,
    /// The last scrape that saw the series.
    seen: u64,
    marker: Marker,
}

impl SeriesMemory {
    /// Notes that the series `key` is in this scrape; returns when it was first seen.
    /// When it was not known, `now_ns` is that time and `marker` is called for what it is
    /// to send when it vanishes.
    pub(crate) fn see(&mut self, key: &str, now_ns: u64, marker: impl FnOnce() -> Marker) -> u64 {
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
            let series = &mut self.series[at];
            series.seen = scrape;
            return series.first_seen_ns;
        }
        let at = self.series.len();
        self.series.push(Series {
            key: Box::from(key),
            first_seen_ns: now_ns,
            seen: scrape,
            marker: marker(),
        });
        let (series, hasher) = (&self.series, &self.hasher);
        self.index.insert_unique(hasher.hash_one(key), at, |&i| {
            hasher.hash_one(&*series[i].key)
        });
        now_ns
    }

    /// Ends a successful scrape: the series of the previous one that were not seen again
    /// and have a marker to send.
    pub(crate) fn finish(&mut self) -> Vec<Vanished> {
        let scrape = self.scrape;
        self.scrape += 1;
        self.cursor = 0;
        let gone: Vec<Series> = self.series.extract_if(.., |s| s.seen != scrape).collect();
        if !gone.is_empty() {
            self.reindex();
        }
        vanished(gone)
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
    pub(crate) fn forget_all(&mut self) -> Vec<Vanished> {
        self.scrape += 1;
        self.cursor = 0;
        self.index.clear();
        vanished(std::mem::take(&mut self.series))
    }

    /// How many series are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }
}

fn vanished(series: Vec<Series>) -> Vec<Vanished> {
    let mut out: Vec<Vanished> = series
        .into_iter()
        .filter(|s| s.marker != Marker::Never)
        .map(|s| Vanished {
            key: s.key,
            first_seen_ns: s.first_seen_ns,
            marker: s.marker,
        })
        .collect();
    // Stable output order makes batches (and tests) deterministic.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
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

    fn kept(name: &str) -> Marker {
        let point = number_point(vec![string_kv("mode", "idle")], 0, 5, 0.0);
        Marker::Kept(Box::new(Kept::new(
            "node",
            "a:9100",
            &gauge(name, "", vec![point]),
        )))
    }

    const GAUGE: Marker = Marker::Number { counter: false };

    #[test]
    fn a_vanished_series_comes_back_with_its_marker_and_first_seen_time() {
        let mut memory = SeriesMemory::default();
        assert_eq!(memory.see("kept", 7, || kept("kept")), 7);
        assert_eq!(memory.see("gone", 7, || GAUGE), 7);
        assert_eq!(memory.see("own_time", 7, || Marker::Never), 7);
        assert!(memory.finish().is_empty());

        // Known series keep their first-seen time; `marker` is not called for them.
        assert_eq!(memory.see("kept", 9, || unreachable!("known series")), 7);
        let vanished = memory.finish();
        assert_eq!(
            vanished,
            [Vanished {
                key: "gone".into(),
                first_seen_ns: 7,
                marker: GAUGE,
            }]
        );
        // The series without a marker vanished too, silently.
        assert_eq!(memory.len(), 1);

        let all = memory.forget_all();
        assert_eq!(all.len(), 1);
        assert_eq!(&*all[0].key, "kept");
        assert_eq!(all[0].marker, kept("kept"));
        assert_eq!(memory.len(), 0);
    }

    #[test]
    fn a_kept_marker_is_sent_with_the_time_its_series_vanished() {
        let Marker::Kept(marker) = kept("up") else {
            unreachable!()
        };
        let mut expected = gauge(
            "up",
            "",
            vec![number_point(vec![string_kv("mode", "idle")], 0, 5, 0.0)],
        );
        set_time(&mut expected, 20);
        assert_eq!(marker.metric(20), Some(expected));
        assert_eq!((&*marker.job, &*marker.instance), ("node", "a:9100"));
    }

    #[test]
    fn series_are_found_in_order_out_of_order_and_after_others_vanished() {
        let mut memory = SeriesMemory::default();
        let known = || -> Marker { unreachable!("a known series") };
        for key in ["a", "b", "c", "d"] {
            assert_eq!(memory.see(key, 1, || GAUGE), 1);
        }
        assert!(memory.finish().is_empty());
        for key in ["a", "b", "c", "d"] {
            assert_eq!(memory.see(key, 2, known), 1);
        }
        assert!(memory.finish().is_empty());
        // Shuffled, a new one in between, `b` gone.
        assert_eq!(memory.see("c", 4, known), 1);
        assert_eq!(memory.see("x", 4, || GAUGE), 4);
        assert_eq!(memory.see("a", 4, known), 1);
        assert_eq!(memory.see("d", 4, known), 1);
        let gone: Vec<Box<str>> = memory.finish().into_iter().map(|v| v.key).collect();
        assert_eq!(gone, [Box::from("b")]);
        // The rest moved in the vector: all still found, first-seen times kept.
        for (key, first_seen) in [("x", 4), ("d", 1), ("a", 1), ("c", 1)] {
            assert_eq!(memory.see(key, 6, known), first_seen, "{key}");
        }
        assert!(memory.finish().is_empty());
        assert_eq!(memory.len(), 4);
        // `b` comes back as a new series.
        assert_eq!(memory.see("b", 7, || GAUGE), 7);
    }

    #[test]
    fn a_series_entry_is_small() {
        // The key's bytes aside, this is the agent's memory per series.
        assert_eq!(std::mem::size_of::<Series>(), 48);
    }
}
