//! Histogram and summary points from their `_bucket`/`_sum`/`_count`/quantile samples.
//!
//! A family becomes points only when every group of it is exact: for a histogram a `+Inf`
//! bucket equal to `_count`, integer cumulative counts that never decrease, increasing
//! bounds; for a summary a `_sum` and an integer `_count`. Anything else returns `None` and
//! the caller sends the samples one by one, so nothing is altered or lost.

use std::borrow::Cow;
use std::collections::HashMap;

use opentelemetry_proto::tonic::metrics::v1::{
    HistogramDataPoint, SummaryDataPoint, summary_data_point::ValueAtQuantile,
};

use super::otlp::{Relabeled, attributes, label, seconds_to_ns};

/// The job, instance and labels of a histogram or summary point: the sample's minus `le`
/// or `quantile`.
type GroupKey<'s> = (&'s str, &'s str, Vec<(&'s str, &'s str)>);

pub(crate) struct Group<'a, P> {
    pub job: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    pub point: P,
}

/// The samples of one point, with the job and instance they share.
struct Members<'s, 'a> {
    key: GroupKey<'s>,
    job: &'s Cow<'a, str>,
    instance: &'s Cow<'a, str>,
    samples: Vec<&'s Relabeled<'a>>,
}

/// Groups samples by their labels without `without`, keeping first-seen order.
fn group_by<'s, 'a>(samples: &'s [Relabeled<'a>], without: &str) -> Vec<Members<'s, 'a>> {
    let mut groups: Vec<Members<'s, 'a>> = Vec::new();
    let mut index: HashMap<GroupKey<'s>, usize> = HashMap::new();
    for s in samples {
        let labels = s
            .labels
            .iter()
            .filter(|(k, _)| k != without)
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
            .collect();
        let key = (s.job.as_ref(), s.instance.as_ref(), labels);
        match index.get(&key) {
            Some(&i) => groups[i].samples.push(s),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push(Members {
                    key,
                    job: &s.job,
                    instance: &s.instance,
                    samples: vec![s],
                });
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
pub(crate) fn histogram_points<'a>(
    family: &str,
    samples: &[Relabeled<'a>],
) -> Option<Vec<Group<'a, HistogramDataPoint>>> {
    let (bucket, sum, count, created) = (
        format!("{family}_bucket"),
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for group in group_by(samples, "le") {
        let (_, _, labels) = &group.key;
        let members = &group.samples;
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in members {
            if s.name == bucket {
                let le: f64 = label(&s.labels, "le")?.parse().ok()?;
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
            job: group.job.clone(),
            instance: group.instance.clone(),
            point: HistogramDataPoint {
                attributes: attributes(labels),
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
pub(crate) fn summary_points<'a>(
    family: &str,
    samples: &[Relabeled<'a>],
) -> Option<Vec<Group<'a, SummaryDataPoint>>> {
    let (sum, count, created) = (
        format!("{family}_sum"),
        format!("{family}_count"),
        format!("{family}_created"),
    );
    let mut out = Vec::new();
    for group in group_by(samples, "quantile") {
        let (_, _, labels) = &group.key;
        let members = &group.samples;
        let mut quantiles = Vec::new();
        let (mut total, mut sum_value, mut start) = (None, None, 0);
        for s in members {
            if s.name == family {
                let quantile: f64 = label(&s.labels, "quantile")?.parse().ok()?;
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
            job: group.job.clone(),
            instance: group.instance.clone(),
            point: SummaryDataPoint {
                attributes: attributes(labels),
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
