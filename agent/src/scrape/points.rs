//! Histogram and summary points from their `_bucket`/`_sum`/`_count`/quantile samples.
//!
//! A family becomes points only when every group of it is exact: for a histogram a `+Inf`
//! bucket equal to `_count`, integer cumulative counts that never decrease, increasing
//! bounds; for a summary a `_sum` and an integer `_count`. Anything else returns `None` and
//! the caller sends the samples one by one, so nothing is altered or lost.

use std::collections::HashMap;

use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, SummaryDataPoint, summary_data_point::ValueAtQuantile,
};

use super::otlp::{Relabeled, attributes, seconds_to_ns};
use super::relabel::Labels;

/// The labels of a histogram or summary point: the sample's minus `le` or `quantile`.
type GroupKey = (String, String, Labels);

pub(crate) struct Group<P> {
    pub job: String,
    pub instance: String,
    pub point: P,
}

/// Groups samples by their labels without `label`, keeping first-seen order.
fn group_by<'s>(samples: &'s [Relabeled], label: &str) -> Vec<(GroupKey, Vec<&'s Relabeled>)> {
    let mut groups: Vec<(GroupKey, Vec<&Relabeled>)> = Vec::new();
    let mut index: HashMap<GroupKey, usize> = HashMap::new();
    for s in samples {
        let mut labels = s.labels.clone();
        labels.remove(label);
        let key = (s.job.clone(), s.instance.clone(), labels);
        match index.get(&key) {
            Some(&i) => groups[i].1.push(s),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![s]));
            }
        }
    }
    groups
}

/// A count as OTLP's integer, when the float is one.
fn exact_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Histogram points of a family, or `None` when any group is not an exact histogram.
pub(crate) fn histogram_points(
    family: &str,
    samples: &[Relabeled],
) -> Option<Vec<Group<HistogramDataPoint>>> {
    let (bucket, sum, count, created) = (
        format!("{family}_bucket"),
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for ((job, instance, labels), members) in group_by(samples, "le") {
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in &members {
            if s.name == bucket {
                let le: f64 = s.labels.get("le")?.parse().ok()?;
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
        out.push(Group {
            job,
            instance,
            point: HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: timestamp_ms.map_or(0, |ms| (ms.max(0) as u64) * 1_000_000),
                count: total?,
                sum: sum_value,
                bucket_counts: counts,
                explicit_bounds: bounds,
                ..Default::default()
            },
        });
    }
    Some(out)
}

/// Summary points of a family, or `None` when any group lacks `_sum` or `_count`.
pub(crate) fn summary_points(
    family: &str,
    samples: &[Relabeled],
) -> Option<Vec<Group<SummaryDataPoint>>> {
    let (sum, count, created) = (
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for ((job, instance, labels), members) in group_by(samples, "quantile") {
        let mut quantiles = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in &members {
            if s.name == family {
                let quantile: f64 = s.labels.get("quantile")?.parse().ok()?;
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
        out.push(Group {
            job,
            instance,
            point: SummaryDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: timestamp_ms.map_or(0, |ms| (ms.max(0) as u64) * 1_000_000),
                count: total?,
                sum: sum_value?,
                quantile_values: quantiles,
                ..Default::default()
            },
        });
    }
    Some(out)
}
