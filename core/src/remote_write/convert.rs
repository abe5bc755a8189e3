//! OTLP export requests → one remote write request.
//!
//! The walk is resource → scope → metric → data point. What is the same for every series of
//! a resource (`job`, `instance`, promoted attributes) or a scope (`otel_scope_*`) is built
//! once, in [`super::labels`]; per data point only the attributes are added.
//!
//! The requests are read with [`super::input`], whose strings stay in the buffered payload.
//! Series are protobuf-encoded as they are written ([`super::proto::wire`]), straight from
//! those strings: no `TimeSeries` or `Label` is built, so a series costs no allocation at
//! all (they were most of the collector's time: building, encoding and freeing owned label
//! strings). [`Converted::request`] decodes the bytes for whoever wants messages.

use std::borrow::Cow;
use std::collections::HashSet;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, DataPointFlags};

use super::EncodeError;
use super::input::{
    Attribute, Data, ExponentialHistogramDataPoint, HistogramPoint, InstrumentationScope, KeyValue,
    Metric, MetricsRequest, NumberPoint, NumberValue, SummaryDataPoint, text, value_text,
};
use super::labels::{
    self, Entry, FixedLabel, IDENTITY, Identity, PROMOTED, each_series_label, gather, push_fixed,
};
use super::naming::{PromUnit, format_float, metric_name};
use super::proto::{MetricMetadata, MetricType, WriteRequest, wire};
use prost::Message;

/// How OTLP metrics become Prometheus series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Append the unit (`_seconds`) and, for counters, `_total` to metric names, as the
    /// spec asks by default. Off keeps names as sanitised OTLP names.
    pub add_suffixes: bool,
    /// Write one `target_info` series per resource carrying its other attributes, so they
    /// can be joined in PromQL without multiplying every series' labels.
    pub target_info: bool,
    /// Resource attributes (OTLP keys, e.g. `k8s.namespace.name`) also copied onto every
    /// series of that resource, for the few that queries filter on all the time.
    pub promote_resource_attributes: Vec<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            add_suffixes: true,
            target_info: true,
            promote_resource_attributes: Vec::new(),
        }
    }
}

/// The result of [`convert`]: what to send, and what could not be sent and why.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Converted {
    /// The remote write `WriteRequest`, protobuf-encoded (not yet compressed).
    pub protobuf: Vec<u8>,
    /// Samples in the request (a histogram point gives several), one per series.
    pub samples: u64,
    /// Data points not written, one entry per reason that occurred.
    pub dropped: Vec<Dropped>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub reason: DropReason,
    pub data_points: u64,
}

/// Why data points were not written. Dropping is final (retrying cannot help), so these
/// are counted, never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Delta sums and histograms: Prometheus series are cumulative, and writing a delta as
    /// if it were cumulative would corrupt every `rate()` over it.
    DeltaTemporality,
    /// Sums and histograms whose temporality is unspecified (0) or unknown: invalid OTLP.
    UnspecifiedTemporality,
    /// A number point without a value.
    InvalidValue,
    /// Histogram buckets that do not fit their bounds (counts ≠ bounds + 1, bounds not
    /// increasing or not finite), or an exponential scale outside OTLP's [-10, 20].
    MalformedHistogram,
    /// A metric name with nothing left after sanitising (an empty name).
    InvalidMetricName,
}

impl DropReason {
    /// Every reason, in the order [`Converted::dropped`] lists them.
    pub const ALL: [DropReason; 5] = [
        DropReason::DeltaTemporality,
        DropReason::UnspecifiedTemporality,
        DropReason::InvalidValue,
        DropReason::MalformedHistogram,
        DropReason::InvalidMetricName,
    ];

    /// The reason as a metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::DeltaTemporality => "delta_temporality",
            DropReason::UnspecifiedTemporality => "unspecified_temporality",
            DropReason::InvalidValue => "invalid_value",
            DropReason::MalformedHistogram => "malformed_histogram",
            DropReason::InvalidMetricName => "invalid_metric_name",
        }
    }
}

impl Converted {
    /// The request as messages, decoded from [`Converted::protobuf`]: for tests and tools.
    pub fn request(&self) -> WriteRequest {
        // Written by `wire` from valid strings: it always decodes.
        WriteRequest::decode(self.protobuf.as_slice()).unwrap_or_default()
    }

    /// The remote write body: the request compressed as one snappy block.
    pub fn body(&self) -> Result<Vec<u8>, EncodeError> {
        crate::snappy::compress(&self.protobuf)
    }
}

/// Prometheus' staleness marker: a NaN with this exact payload tells it the series ended,
/// which is what OTLP's "no recorded value" flag means.
pub const STALE_NAN: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

const NO_RECORDED_VALUE: u32 = DataPointFlags::NoRecordedValueMask as u32;

/// Converts buffered OTLP metrics (protobuf `ExportMetricsServiceRequest`s) to one remote
/// write request, reading their strings where they lie ([`super::input`]). Fails only on a
/// payload that does not decode; what cannot be written is counted in
/// [`Converted::dropped`].
pub fn convert_payloads<'p>(
    payloads: impl IntoIterator<Item = &'p Bytes>,
    opts: &ConvertOptions,
) -> Result<Converted, prost::DecodeError> {
    let requests = payloads
        .into_iter()
        .map(|payload| MetricsRequest::decode(payload.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    convert_requests(&requests, opts)
}

/// [`convert_payloads`] for requests already decoded: for tests and tools.
pub fn convert(requests: &[ExportMetricsServiceRequest], opts: &ConvertOptions) -> Converted {
    let payloads: Vec<Bytes> = requests
        .iter()
        .map(|r| Bytes::from(r.encode_to_vec()))
        .collect();
    // What prost encoded, prost decodes.
    convert_payloads(&payloads, opts).unwrap_or_default()
}

fn convert_requests(
    requests: &[MetricsRequest],
    opts: &ConvertOptions,
) -> Result<Converted, prost::DecodeError> {
    let mut out = Output::with_capacity(estimate_series(requests).saturating_mul(SERIES_BYTES));
    let mut targets_written: HashSet<(String, String)> = HashSet::new();
    for resource_metrics in requests.iter().flat_map(|r| &r.resource_metrics) {
        let attributes = resource_metrics
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        let identity = Identity::of(attributes);
        let mut fixed = identity.labels();
        for kv in attributes {
            let key = text(&kv.key);
            if opts.promote_resource_attributes.iter().any(|p| p == key) {
                push_fixed(&mut fixed, key, value_text(kv.value.as_ref()), PROMOTED);
            }
        }
        out.latest_ms = None;
        for scope_metrics in &resource_metrics.scope_metrics {
            let mut scope_fixed = fixed.clone();
            if let Some(InstrumentationScope { name, version }) = &scope_metrics.scope {
                push_fixed(
                    &mut scope_fixed,
                    "otel_scope_name",
                    Cow::Borrowed(text(name)),
                    IDENTITY,
                );
                push_fixed(
                    &mut scope_fixed,
                    "otel_scope_version",
                    Cow::Borrowed(text(version)),
                    IDENTITY,
                );
            }
            let mut scratch = Vec::with_capacity(scope_fixed.len() + 8);
            let mut point_attributes = Vec::with_capacity(8);
            let mut histogram_scratch = Default::default();
            for metric in &scope_metrics.metrics {
                MetricWriter {
                    out: &mut out,
                    fixed: &scope_fixed,
                    scratch: &mut scratch,
                    attributes: &mut point_attributes,
                    histogram_scratch: &mut histogram_scratch,
                    opts,
                }
                .write(metric);
            }
        }
        if let (true, Some(ts)) = (opts.target_info, out.latest_ms) {
            let key = (identity.job.clone(), identity.instance.clone());
            if !targets_written.contains(&key)
                && write_target_info(&mut out, &identity, attributes, ts)
            {
                targets_written.insert(key);
            }
        }
    }
    match out.damaged.take() {
        Some(e) => Err(e),
        None => Ok(out.finish()),
    }
}

/// What an encoded series usually takes (labels of a typical service), to reserve the
/// request's buffer once; a larger request grows it.
const SERIES_BYTES: usize = 96;

/// Where series, metadata and counts accumulate.
struct Output {
    /// The request's `timeseries` fields, encoded as the series are written.
    protobuf: Vec<u8>,
    /// One series being encoded, before its length is known (reused).
    series: Vec<u8>,
    /// The encoded labels of a histogram point's `_bucket` series before `le` and after
    /// it: the same for each of its buckets, so written once per point (reused).
    bucket_before: Vec<u8>,
    bucket_after: Vec<u8>,
    /// The `le` text of the bound each bucket position had last, with the bound's bits:
    /// the points of a histogram share their bounds, so each is printed once (reused).
    le_texts: Vec<(u64, String)>,
    metadata: Vec<MetricMetadata>,
    families: HashSet<String>,
    samples: u64,
    dropped: [u64; DropReason::ALL.len()],
    /// Newest sample timestamp of the current resource: the `target_info` timestamp.
    latest_ms: Option<i64>,
    /// Why a point that stayed bytes did not read, if one did not: the payload is refused
    /// as a whole, as if it had not decoded.
    damaged: Option<prost::DecodeError>,
}

impl Output {
    fn with_capacity(bytes: usize) -> Self {
        Output {
            protobuf: Vec::with_capacity(bytes),
            series: Vec::with_capacity(SERIES_BYTES * 2),
            bucket_before: Vec::new(),
            bucket_after: Vec::new(),
            le_texts: Vec::new(),
            metadata: Vec::new(),
            families: HashSet::new(),
            samples: 0,
            dropped: [0; DropReason::ALL.len()],
            latest_ms: None,
            damaged: None,
        }
    }

    /// Writes one series: the gathered labels with `__name__` and `extra` (see
    /// [`each_series_label`]), and one sample.
    fn push(
        &mut self,
        entries: &[Entry<'_>],
        name: &str,
        extra: Option<(&'static str, &str)>,
        value: f64,
        timestamp: i64,
    ) {
        let series = &mut self.series;
        series.clear();
        each_series_label(entries, name, extra, |n, v| wire::label(series, n, v));
        self.finish_series(value, timestamp);
    }

    /// Encodes the labels of a point's `_bucket` series around its `le`, for
    /// [`Output::push_bucket`].
    fn bucket_labels(&mut self, entries: &[Entry<'_>], bucket: &str) {
        let (before, after) = (&mut self.bucket_before, &mut self.bucket_after);
        before.clear();
        after.clear();
        let mut past_le = false;
        // `le` comes exactly once: the extra label wins over an attribute of that name.
        each_series_label(entries, bucket, Some(("le", "")), |n, v| match n {
            "le" => past_le = true,
            _ if past_le => wire::label(after, n, v),
            _ => wire::label(before, n, v),
        });
    }

    /// Writes the `_bucket` series at position `at` of the point whose labels
    /// [`Output::bucket_labels`] encoded, for the bucket bounded by `upper`: the same bytes
    /// [`Output::push`] would write.
    fn push_bucket(&mut self, at: usize, upper: f64, value: f64, timestamp: i64) {
        if self.le_texts.len() == at {
            // Never the bits of a bound (NaN bounds are not written): the first use prints.
            self.le_texts.push((f64::NAN.to_bits(), String::new()));
        }
        let (bits, le) = &mut self.le_texts[at];
        if *bits != upper.to_bits() {
            *bits = upper.to_bits();
            le.clear();
            super::naming::push_float(le, upper);
        }
        let series = &mut self.series;
        series.clear();
        series.extend_from_slice(&self.bucket_before);
        wire::label(series, "le", le);
        series.extend_from_slice(&self.bucket_after);
        self.finish_series(value, timestamp);
    }

    /// Adds the sample to the series being encoded and the series to the request.
    fn finish_series(&mut self, value: f64, timestamp: i64) {
        wire::sample(&mut self.series, value, timestamp);
        crate::wire::bytes(&mut self.protobuf, wire::TIMESERIES, &self.series);
        self.samples += 1;
        self.latest_ms = Some(self.latest_ms.map_or(timestamp, |t| t.max(timestamp)));
    }

    /// A point that stayed bytes did not read. The receiver checked every point, so the
    /// payload was damaged since: it is refused whole (the first error is kept).
    fn point_damaged(&mut self, e: prost::DecodeError) {
        self.damaged.get_or_insert(e);
    }

    fn drop_points(&mut self, reason: DropReason, points: usize) {
        if let Some(slot) = DropReason::ALL.iter().position(|r| *r == reason) {
            self.dropped[slot] += points as u64;
        }
    }

    /// Records a family's metadata the first time it is seen in this request; later
    /// conflicting HELP or UNIT lose, as the spec allows.
    fn metadata(&mut self, family: &str, kind: MetricType, help: &str, unit: String) {
        if self.families.contains(family) {
            return;
        }
        self.families.insert(family.to_owned());
        self.metadata.push(MetricMetadata {
            r#type: kind as i32,
            metric_family_name: family.to_owned(),
            help: help.to_owned(),
            unit,
        });
    }

    fn finish(self) -> Converted {
        let dropped = DropReason::ALL
            .iter()
            .zip(self.dropped)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, data_points)| Dropped {
                reason: *reason,
                data_points,
            })
            .collect();
        let mut protobuf = self.protobuf;
        for metadata in &self.metadata {
            prost::encoding::message::encode(wire::METADATA, metadata, &mut protobuf);
        }
        Converted {
            protobuf,
            samples: self.samples,
            dropped,
        }
    }
}

/// Enough capacity for the usual case without walking the data twice in detail.
fn estimate_series(requests: &[MetricsRequest]) -> usize {
    let metrics = requests
        .iter()
        .flat_map(|r| &r.resource_metrics)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics);
    metrics
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            // A bucket is 16 bytes of a point (its count and its bound).
            Some(Data::Histogram(h)) => h.data_points.iter().map(|p| p.len() / 16 + 3).sum(),
            Some(Data::ExponentialHistogram(h)) => h
                .data_points
                .iter()
                .map(|p| {
                    let positive = p.positive.as_ref().map_or(0, |b| b.bucket_counts.len());
                    let negative = p.negative.as_ref().map_or(0, |b| b.bucket_counts.len());
                    positive + negative + 4
                })
                .sum(),
            Some(Data::Summary(s)) => s
                .data_points
                .iter()
                .map(|p| p.quantile_values.len() + 2)
                .sum(),
            None => 0,
        })
        .sum()
}

fn millis(unix_nano: u64) -> i64 {
    (unix_nano / 1_000_000) as i64
}

fn is_stale(flags: u32) -> bool {
    flags & NO_RECORDED_VALUE != 0
}

/// Why a sum or histogram of this temporality cannot be written, if it cannot.
fn temporality_problem(temporality: i32) -> Option<DropReason> {
    match AggregationTemporality::try_from(temporality) {
        Ok(AggregationTemporality::Cumulative) => None,
        Ok(AggregationTemporality::Delta) => Some(DropReason::DeltaTemporality),
        _ => Some(DropReason::UnspecifiedTemporality),
    }
}

/// Writes `target_info` for a resource that has attributes besides the identifying ones;
/// returns whether it wrote one.
fn write_target_info(
    out: &mut Output,
    identity: &Identity,
    attributes: &[KeyValue],
    ts: i64,
) -> bool {
    let mut others = labels::attributes(attributes)
        .filter(|(key, _)| !Identity::is_identifying(key))
        .peekable();
    if others.peek().is_none() {
        return false;
    }
    let fixed = identity.labels();
    let mut scratch = Vec::with_capacity(fixed.len() + attributes.len());
    gather(&mut scratch, &fixed, others);
    out.push(&scratch, "target_info", None, 1.0, ts);
    out.metadata(
        "target_info",
        MetricType::Gauge,
        "Target metadata",
        String::new(),
    );
    true
}

/// Writes the series of one metric.
struct MetricWriter<'o, 's, 'a> {
    out: &'o mut Output,
    fixed: &'a [FixedLabel],
    scratch: &'s mut Vec<Entry<'a>>,
    /// A number or histogram point's attributes as read (reused).
    attributes: &'s mut Vec<Attribute<'a>>,
    /// A histogram point's bucket counts and bounds as read (reused).
    histogram_scratch: &'s mut (Vec<u64>, Vec<f64>),
    opts: &'o ConvertOptions,
}

impl<'a> MetricWriter<'_, '_, 'a> {
    fn write(mut self, metric: &'a Metric) {
        let Some(data) = &metric.data else {
            return;
        };
        let (points, problem) = match data {
            Data::Gauge(g) => (g.data_points.len(), None),
            Data::Sum(s) => (
                s.data_points.len(),
                temporality_problem(s.aggregation_temporality),
            ),
            Data::Histogram(h) => (
                h.data_points.len(),
                temporality_problem(h.aggregation_temporality),
            ),
            Data::ExponentialHistogram(h) => (
                h.data_points.len(),
                temporality_problem(h.aggregation_temporality),
            ),
            Data::Summary(s) => (s.data_points.len(), None),
        };
        if points == 0 {
            return;
        }
        if let Some(reason) = problem {
            self.out.drop_points(reason, points);
            return;
        }
        let (kind, counter) = match data {
            Data::Gauge(_) => (MetricType::Gauge, false),
            Data::Sum(s) if s.is_monotonic => (MetricType::Counter, true),
            Data::Sum(_) => (MetricType::Gauge, false),
            Data::Histogram(_) | Data::ExponentialHistogram(_) => (MetricType::Histogram, false),
            Data::Summary(_) => (MetricType::Summary, false),
        };
        let unit = PromUnit::from_otlp(text(&metric.unit), matches!(data, Data::Gauge(_)));
        let name = metric_name(text(&metric.name), &unit, counter, self.opts.add_suffixes);
        let Some(name) = name else {
            self.out.drop_points(DropReason::InvalidMetricName, points);
            return;
        };
        self.out
            .metadata(&name, kind, text(&metric.description), unit.word());
        match data {
            Data::Gauge(g) => self.numbers(&name, &g.data_points),
            Data::Sum(s) => self.numbers(&name, &s.data_points),
            Data::Histogram(h) => {
                let names = SeriesNames::new(&name);
                for p in &h.data_points {
                    self.histogram(&names, p);
                }
            }
            Data::ExponentialHistogram(h) => {
                let names = SeriesNames::new(&name);
                for p in &h.data_points {
                    self.exponential_histogram(&names, p);
                }
            }
            Data::Summary(s) => {
                let names = SeriesNames::new(&name);
                for p in &s.data_points {
                    self.summary(&name, &names, p);
                }
            }
        }
    }

    fn numbers(&mut self, name: &str, points: &'a [Bytes]) {
        for bytes in points {
            self.attributes.clear();
            let p = match NumberPoint::read(bytes, self.attributes) {
                Ok(p) => p,
                Err(e) => return self.out.point_damaged(e),
            };
            let value = match (&p.value, is_stale(p.flags)) {
                (_, true) => STALE_NAN,
                (Some(NumberValue::AsDouble(d)), false) => *d,
                (Some(NumberValue::AsInt(i)), false) => *i as f64,
                (None, false) => {
                    self.out.drop_points(DropReason::InvalidValue, 1);
                    continue;
                }
            };
            gather(self.scratch, self.fixed, self.attributes.drain(..));
            self.out
                .push(self.scratch, name, None, value, millis(p.time_unix_nano));
        }
    }

    fn histogram(&mut self, names: &SeriesNames, bytes: &'a Bytes) {
        self.attributes.clear();
        // Taken out while the point is written, which needs the writer whole.
        let (mut counts, mut bounds) = std::mem::take(self.histogram_scratch);
        counts.clear();
        bounds.clear();
        match HistogramPoint::read(bytes, self.attributes, &mut counts, &mut bounds) {
            Ok(p) => self.classic_histogram(names, &p, &counts, &bounds),
            Err(e) => self.out.point_damaged(e),
        }
        *self.histogram_scratch = (counts, bounds);
    }

    fn classic_histogram(
        &mut self,
        names: &SeriesNames,
        p: &HistogramPoint,
        counts: &[u64],
        bounds: &[f64],
    ) {
        let fits = counts.is_empty() || counts.len() == bounds.len() + 1;
        let increasing =
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]);
        if !fits || !increasing {
            self.out.drop_points(DropReason::MalformedHistogram, 1);
            return;
        }
        let stale = is_stale(p.flags);
        let ts = millis(p.time_unix_nano);
        gather(self.scratch, self.fixed, self.attributes.drain(..));
        let mut buckets = Buckets::new(self, names, stale, ts);
        // Without bucket counts only the +Inf bucket (the count) is known.
        if !counts.is_empty() {
            for (bound, count) in bounds.iter().zip(counts) {
                buckets.add(*bound, *count);
            }
        }
        buckets.finish(p.count, p.sum);
    }

    /// Exponential buckets as classic ones. With base = 2^(2^-scale), positive bucket k
    /// holds (base^k, base^(k+1)] and negative bucket k its mirror [-base^(k+1), -base^k);
    /// the zero bucket holds [-zero_threshold, zero_threshold]. Walking from -Inf: negative
    /// buckets from the highest index down (upper bound -base^k), then the zero bucket
    /// (upper bound zero_threshold), then positive buckets (upper bound base^(k+1)). One
    /// inexactness is inherent: a value of exactly -base^k sits in negative bucket k-1, so
    /// `le="-base^k"` misses it; for positive values the bounds match exactly.
    fn exponential_histogram(&mut self, names: &SeriesNames, p: &'a ExponentialHistogramDataPoint) {
        if !(-10..=20).contains(&p.scale) {
            self.out.drop_points(DropReason::MalformedHistogram, 1);
            return;
        }
        // 2^-scale: exact for every allowed scale, so bounds at scale <= 0 are exact powers of
        // two, and at any scale the same index always prints the same `le`.
        let step = f64::powi(2.0, -p.scale);
        let bound = |index: i64| f64::exp2(index as f64 * step);
        let stale = is_stale(p.flags);
        let ts = millis(p.time_unix_nano);
        gather(self.scratch, self.fixed, labels::attributes(&p.attributes));
        let mut buckets = Buckets::new(self, names, stale, ts);
        let negative = p
            .negative
            .as_ref()
            .map_or(&[][..], |b| b.bucket_counts.as_slice());
        let negative_offset = p.negative.as_ref().map_or(0, |b| i64::from(b.offset));
        for (i, count) in negative.iter().enumerate().rev() {
            buckets.add(-bound(negative_offset + i as i64), *count);
        }
        if p.zero_count > 0 || !negative.is_empty() {
            let threshold = if p.zero_threshold > 0.0 {
                p.zero_threshold
            } else {
                0.0
            };
            buckets.add(threshold, p.zero_count);
        }
        if let Some(positive) = &p.positive {
            let offset = i64::from(positive.offset);
            for (i, count) in positive.bucket_counts.iter().enumerate() {
                buckets.add(bound(offset + i as i64 + 1), *count);
            }
        }
        buckets.finish(p.count, p.sum);
    }

    fn summary(&mut self, name: &str, names: &SeriesNames, p: &'a SummaryDataPoint) {
        let stale = is_stale(p.flags);
        let value = |v: f64| if stale { STALE_NAN } else { v };
        let ts = millis(p.time_unix_nano);
        gather(self.scratch, self.fixed, labels::attributes(&p.attributes));
        for q in &p.quantile_values {
            let quantile = format_float(q.quantile);
            let extra = Some(("quantile", quantile.as_str()));
            self.out.push(self.scratch, name, extra, value(q.value), ts);
        }
        self.out
            .push(self.scratch, &names.sum, None, value(p.sum), ts);
        let count = value(p.count as f64);
        self.out.push(self.scratch, &names.count, None, count, ts);
    }
}

/// `_bucket`, `_sum` and `_count` names of a histogram or summary family, built once per
/// metric rather than per point.
struct SeriesNames {
    bucket: String,
    sum: String,
    count: String,
}

impl SeriesNames {
    fn new(name: &str) -> Self {
        SeriesNames {
            bucket: format!("{name}_bucket"),
            sum: format!("{name}_sum"),
            count: format!("{name}_count"),
        }
    }
}

/// Cumulative `_bucket` series of one histogram point, in increasing `le` order.
struct Buckets<'w, 'o, 's, 'a> {
    writer: &'w mut MetricWriter<'o, 's, 'a>,
    names: &'w SeriesNames,
    stale: bool,
    ts: i64,
    cumulative: u64,
    last_le: f64,
    /// Buckets written so far: the position in `Output::le_texts`.
    written: usize,
}

impl<'w, 'o, 's, 'a> Buckets<'w, 'o, 's, 'a> {
    fn new(
        writer: &'w mut MetricWriter<'o, 's, 'a>,
        names: &'w SeriesNames,
        stale: bool,
        ts: i64,
    ) -> Self {
        writer.out.bucket_labels(writer.scratch, &names.bucket);
        Buckets {
            writer,
            names,
            stale,
            ts,
            cumulative: 0,
            last_le: f64::NEG_INFINITY,
            written: 0,
        }
    }

    fn value(&self, v: f64) -> f64 {
        if self.stale { STALE_NAN } else { v }
    }

    /// Adds a bucket's count and writes its `le` series. A bound that is not finite or not
    /// above the previous one (an exponential bound that overflowed, a zero threshold
    /// above the first positive bounds) gets no series of its own; its count still reaches
    /// the next one, so the cumulative counts never go down.
    fn add(&mut self, upper: f64, count: u64) {
        self.cumulative = self.cumulative.saturating_add(count);
        if !upper.is_finite() || upper <= self.last_le {
            return;
        }
        self.last_le = upper;
        let value = self.value(self.cumulative as f64);
        self.writer
            .out
            .push_bucket(self.written, upper, value, self.ts);
        self.written += 1;
    }

    /// Writes the `+Inf` bucket (the point's count, as the spec says), `_sum` when the
    /// point has one, and `_count`.
    fn finish(self, count: u64, sum: Option<f64>) {
        let out = &mut *self.writer.out;
        let scratch = &*self.writer.scratch;
        let count = if self.stale { STALE_NAN } else { count as f64 };
        out.push_bucket(self.written, f64::INFINITY, count, self.ts);
        if let Some(sum) = sum {
            let sum = if self.stale { STALE_NAN } else { sum };
            out.push(scratch, &self.names.sum, None, sum, self.ts);
        }
        out.push(scratch, &self.names.count, None, count, self.ts);
    }
}
