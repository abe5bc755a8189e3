//! Histogram and summary points from their `_bucket`/`_sum`/`_count`/quantile samples.
//!
//! A family becomes points only when every group of it is exact: for a histogram a `+Inf`
//! bucket equal to `_count`, integer cumulative counts that never decrease, increasing
//! bounds; for a summary a `_sum` and an integer `_count`. Anything else returns `None` and
//! the caller sends the samples one by one, so nothing is altered or lost.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, SummaryDataPoint, summary_data_point::ValueAtQuantile,
};

use super::otlp::{Relabeled, label, seconds_to_ns, string_kv};
use super::parse::Label;

pub(crate) struct Group<'a, P> {
    pub job: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    pub point: P,
}

/// Groups samples by job, instance and labels without `without`, keeping first-seen order;
/// `labels` holds the samples' labels. Every group has at least one sample.
fn group_by<'s, 'a>(
    samples: &'s [Relabeled<'a>],
    labels: &'s [Label<'a>],
    without: &str,
) -> Vec<Vec<&'s Relabeled<'a>>> {
    type Key<'s> = (&'s str, &'s str, Vec<(&'s str, &'s str)>);
    let mut groups: Vec<Vec<&Relabeled>> = Vec::new();
    let mut index: HashMap<Key<'s>, usize> = HashMap::new();
    for s in samples {
        let labels = labels[s.labels.clone()]
            .iter()
            .filter(|(k, _)| k != without)
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        let at = *index
            .entry((s.job.as_ref(), s.instance.as_ref(), labels))
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[at].push(s);
    }
    groups
}

/// The group a point of `first`'s group goes to, its labels without `without` as the
/// point's attributes.
fn group<'a, P>(
    first: &Relabeled<'a>,
    labels: &[Label<'_>],
    without: &str,
    point: impl FnOnce(Vec<KeyValue>) -> P,
) -> Group<'a, P> {
    let attributes = labels[first.labels.clone()]
        .iter()
        .filter(|(k, _)| k != without)
        .map(|(k, v)| string_kv(k.as_ref(), v.as_ref()))
        .collect();
    Group {
        job: first.job.clone(),
        instance: first.instance.clone(),
        point: point(attributes),
    }
}

/// A sample's own timestamp as a point's, or 0 (none).
fn point_time(timestamp_ms: Option<i64>) -> u64 {
    timestamp_ms.map_or(0, |ms| (ms.max(0) as u64) * 1_000_000)
}

/// A count as OTLP's integer, when the float is one.
fn exact_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Histogram points of a family, or `None` when any group is not an exact histogram.
pub(crate) fn histogram_points<'a>(
    family: &str,
    samples: &[Relabeled<'a>],
    labels: &[Label<'a>],
) -> Option<Vec<Group<'a, HistogramDataPoint>>> {
    let (bucket, sum, count, created) = (
        format!("{family}_bucket"),
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for members in group_by(samples, labels, "le") {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in &members {
            if s.name == bucket {
                let le: f64 = label(&labels[s.labels.clone()], "le")?.parse().ok()?;
                buckets.push((le, s.value));
            } else if s.name == sum {
                sum_value = Some(s.value);
            } else if s.name == count {
                total = Some(exact_count(s.value)?);
            } else if s.name == created {
                start = seconds_to_ns(s.value);
            } else {
                return None;
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (inf, finite) = buckets.split_last()?;
        if inf.0 != f64::INFINITY || exact_count(inf.1)? != total? {
            return None;
        }
        let mut bounds = Vec::with_capacity(finite.len());
        let mut counts = Vec::with_capacity(buckets.len());
        let mut previous = 0u64;
        for &(le, cumulative) in &buckets {
            let cumulative = exact_count(cumulative)?;
            let in_bucket = cumulative.checked_sub(previous)?;
            if le.is_finite() {
                if bounds.last().is_some_and(|&b| b >= le) {
                    return None;
                }
                bounds.push(le);
            }
            counts.push(in_bucket);
            previous = cumulative;
        }
        if finite.iter().any(|b| !b.0.is_finite()) {
            return None;
        }
        let timestamp_ms = members.first().and_then(|s| s.timestamp_ms);
        let (count, time) = (total?, point_time(timestamp_ms));
        out.push(group(members[0], labels, "le", |attributes| {
            HistogramDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count,
                sum: sum_value,
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            }
        }));
    }
    Some(out)
}

/// Summary points of a family, or `None` when any group lacks `_sum` or `_count`.
pub(crate) fn summary_points<'a>(
    family: &str,
    samples: &[Relabeled<'a>],
    labels: &[Label<'a>],
) -> Option<Vec<Group<'a, SummaryDataPoint>>> {
    let (sum, count, created) = (
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for members in group_by(samples, labels, "quantile") {
        let mut quantiles = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in &members {
            if s.name == family {
                let quantile: f64 = label(&labels[s.labels.clone()], "quantile")?.parse().ok()?;
                quantiles.push(ValueAtQuantile {
                    quantile,
                    value: s.value,
                });
            } else if s.name == sum {
                sum_value = Some(s.value);
            } else if s.name == count {
                total = Some(exact_count(s.value)?);
            } else if s.name == created {
                start = seconds_to_ns(s.value);
            } else {
                return None;
            }
        }
        let timestamp_ms = members.first().and_then(|s| s.timestamp_ms);
        let (count, sum, time) = (total?, sum_value?, point_time(timestamp_ms));
        out.push(group(members[0], labels, "quantile", |attributes| {
            SummaryDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                count,
                sum,
                quantile_values: quantiles,
                ..Default::default()
            }
        }));
    }
    Some(out)
}
