//! Scraped families → OTLP metrics, shaped so that core's remote write conversion gives
//! back exactly the series Prometheus would have stored.
//!
//! - One `ResourceMetrics` per (`job`, `instance`) — normally one per target — with
//!   `service.name` = job and `service.instance.id` = instance and nothing else, so no
//!   `target_info` appears; other labels are data point attributes. No scope, so no
//!   `otel_scope_*` labels.
//! - Units stay empty and names are the sample names, so no suffix is added: a counter
//!   sample ending in `_total` becomes a monotonic cumulative Sum (core keeps the one
//!   `_total`), a counter sample without it becomes a Gauge (a Sum would gain `_total`).
//!   Gauges, untyped, info, stateset and gauge-histogram samples are Gauges.
//! - Histograms become explicit-bound cumulative Histograms and summaries Summaries when
//!   they are complete and exact (a `+Inf` bucket equal to `_count`, integer counts, a
//!   `_sum`/`_count` where core would write one); otherwise their samples go out as Gauges
//!   under their own names, which loses the type but not one sample.
//! - Start time of sums, histograms and summaries: the OpenMetrics `_created` sample when
//!   there is one, else when this agent first saw the series. Prometheus itself has no
//!   start time; this is the OTLP-conforming choice that never claims more than we know.
//! - Timestamp: the sample's own, else the start of the scrape.
//!
//! A batch is protobuf-encoded as its points are added (one `ResourceMetrics` per
//! resource, see [`Batch::finish`]): a gauge or counter point is written straight from the
//! relabeled label strings, never becoming `KeyValue`s, and nothing of a scrape outlives it
//! but those bytes. Building owned OTLP, encoding it and freeing it was most of the agent's
//! time per sample.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::parse::{Label, MetricKind};
use super::points::{histogram_points, summary_points};
use super::relabel::Labels;
use super::staleness::{Kept, Marker, NO_RECORDED_VALUE, SeriesMemory, Vanished};
use prost::Message;
use vigil_core::wire;

/// A string attribute.
pub(crate) fn string_kv(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// A resource with the given attributes and one scope-less `ScopeMetrics`.
pub(crate) fn resource_metrics(attributes: Vec<KeyValue>, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: None,
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

/// A number point with a double value.
pub(crate) fn number_point(
    attributes: Vec<KeyValue>,
    start_ns: u64,
    time_ns: u64,
    value: f64,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start_ns,
        time_unix_nano: time_ns,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

/// A Gauge metric without unit.
pub(crate) fn gauge(name: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        data: Some(Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

/// A monotonic cumulative Sum (a Prometheus counter) without unit.
pub(crate) fn counter(name: &str, description: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        data: Some(Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

/// A sample's labels, sorted by name, no name twice. Each string is borrowed from the
/// scrape body or the target unless relabeling made it. A scrape keeps the labels of all
/// its samples in one such vector (see [`Relabeled::labels`]).
pub(crate) type SampleLabels<'a> = Vec<Label<'a>>;

/// The value of `name` in `labels`.
pub(crate) fn label<'l>(labels: &'l [Label<'_>], name: &str) -> Option<&'l str> {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_ref())
}

/// A target's labels as a sample's (a `Labels` map is sorted already).
pub(crate) fn borrowed(labels: &Labels) -> SampleLabels<'_> {
    labels
        .iter()
        .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
        .collect()
}

/// A sample after the target's labels were merged in and metric relabeling ran.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relabeled<'a> {
    pub name: Cow<'a, str>,
    pub job: Cow<'a, str>,
    pub instance: Cow<'a, str>,
    /// Where its other labels are in the scrape's labels ([`Scraped::labels`]): no
    /// `__name__`, `job` or `instance`.
    ///
    /// [`Scraped::labels`]: super::target::Scraped
    pub labels: Range<usize>,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

/// Where a point goes: its resource (job, instance) and its metric (name, help).
#[derive(Clone, Copy)]
struct Destination<'a> {
    job: &'a str,
    instance: &'a str,
    name: &'a str,
    help: &'a str,
}

/// A gauge or counter point before it is encoded: its labels stay the strings relabeling
/// made, written straight into the batch's bytes.
struct Number<'a> {
    /// Every label but `__name__`, `job` and `instance`: the point's attributes.
    labels: &'a [Label<'a>],
    start_ns: u64,
    time_ns: u64,
    /// `None` for a stale marker ("no recorded value").
    value: Option<f64>,
    flags: u32,
}

impl<'a> Number<'a> {
    fn sample(labels: &'a [Label<'a>], start_ns: u64, time_ns: u64, value: f64) -> Self {
        Number {
            labels,
            start_ns,
            time_ns,
            value: Some(value),
            flags: 0,
        }
    }

    /// The point with no value and the "no recorded value" flag, as OTLP.
    fn marker(&self) -> NumberDataPoint {
        NumberDataPoint {
            value: None,
            flags: NO_RECORDED_VALUE,
            ..number_point(attributes(self.labels), self.start_ns, self.time_ns, 0.0)
        }
    }

    /// Bytes of the `NumberDataPoint` message.
    fn encoded_len(&self) -> usize {
        let attributes: usize = self
            .labels
            .iter()
            .map(|(k, v)| wire::delimited_len(key_value_len(k, v)))
            .sum();
        let fixed = |present: bool| if present { 9 } else { 0 };
        attributes
            + fixed(self.start_ns != 0)
            + fixed(self.time_ns != 0)
            + fixed(self.value.is_some())
            + match self.flags {
                0 => 0,
                flags => wire::varint_len(u64::from(flags)),
            }
    }

    /// Appends the `NumberDataPoint` message (its fields, by their tags in the proto).
    fn encode(&self, buf: &mut Vec<u8>) {
        for (k, v) in self.labels {
            key_value(buf, 7, k, v);
        }
        if self.start_ns != 0 {
            wire::fixed64(buf, 2, self.start_ns);
        }
        if self.time_ns != 0 {
            wire::fixed64(buf, 3, self.time_ns);
        }
        if let Some(value) = self.value {
            wire::fixed64(buf, 4, value.to_bits());
        }
        if self.flags != 0 {
            wire::varint(buf, 8, u64::from(self.flags));
        }
    }
}

/// Bytes of a `KeyValue` with a string value.
fn key_value_len(key: &str, value: &str) -> usize {
    // The value is an `AnyValue` whose `string_value` (a oneof) is written even when empty.
    wire::string_len(key) + wire::delimited_len(wire::delimited_len(value.len()))
}

/// Appends a `KeyValue` field with a string value.
fn key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    wire::delimited_header(buf, tag, key_value_len(key, value));
    wire::string(buf, 1, key);
    wire::delimited_header(buf, 2, wire::delimited_len(value.len()));
    wire::bytes(buf, 1, value.as_bytes());
}

/// One data point on its way into a batch.
enum Point<'a> {
    Gauge(Number<'a>),
    Counter(Number<'a>),
    Histogram(HistogramDataPoint),
    Summary(SummaryDataPoint),
}

/// Which OTLP data a metric of the batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shape {
    Gauge,
    /// A monotonic cumulative Sum.
    Counter,
    /// A cumulative explicit-bound Histogram.
    Histogram,
    Summary,
}

/// A cumulative monotonic `Sum`'s fields after its points: `aggregation_temporality` (2)
/// = CUMULATIVE and `is_monotonic` (3) = true, each a one-byte key and a one-byte varint.
const SUM_TAIL: [u8; 4] = [2 << 3, AggregationTemporality::Cumulative as u8, 3 << 3, 1];
/// A cumulative `Histogram`'s field after its points: `aggregation_temporality` (2).
const HISTOGRAM_TAIL: [u8; 2] = [2 << 3, AggregationTemporality::Cumulative as u8];

impl Shape {
    /// The `Metric` field that holds this data (the `data` oneof).
    fn data_tag(self) -> u32 {
        match self {
            Shape::Gauge => 5,
            Shape::Counter => 7,
            Shape::Histogram => 9,
            Shape::Summary => 11,
        }
    }

    /// The data's fields after its points, encoded.
    fn data_tail(self) -> &'static [u8] {
        match self {
            Shape::Counter => &SUM_TAIL,
            Shape::Histogram => &HISTOGRAM_TAIL,
            Shape::Gauge | Shape::Summary => &[],
        }
    }
}

impl Point<'_> {
    fn shape(&self) -> Shape {
        match self {
            Point::Gauge(_) => Shape::Gauge,
            Point::Counter(_) => Shape::Counter,
            Point::Histogram(_) => Shape::Histogram,
            Point::Summary(_) => Shape::Summary,
        }
    }

    /// The shape as far as series identity goes: a gauge and a counter of the same name
    /// and labels are one Prometheus series, so a type change is not a vanished series.
    fn series_shape(&self) -> Shape {
        match self.shape() {
            Shape::Counter => Shape::Gauge,
            other => other,
        }
    }

    /// Bytes of the `NumberDataPoint`, `HistogramDataPoint` or `SummaryDataPoint`.
    fn encoded_len(&self) -> usize {
        match self {
            Point::Gauge(n) | Point::Counter(n) => n.encoded_len(),
            Point::Histogram(p) => p.encoded_len(),
            Point::Summary(p) => p.encoded_len(),
        }
    }

    /// Appends the point as a `data_points` field of its metric's data.
    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Point::Gauge(n) | Point::Counter(n) => {
                wire::delimited_header(buf, 1, n.encoded_len());
                n.encode(buf);
            }
            Point::Histogram(p) => prost::encoding::message::encode(1, p, buf),
            Point::Summary(p) => prost::encoding::message::encode(1, p, buf),
        }
    }

    /// The same point with no value and the "no recorded value" flag: its stale marker.
    fn stale_metric(&self, name: &str) -> Metric {
        match self {
            Point::Gauge(n) => gauge(name, "", vec![n.marker()]),
            Point::Counter(n) => counter(name, "", vec![n.marker()]),
            Point::Histogram(p) => Metric {
                name: name.to_owned(),
                data: Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        flags: NO_RECORDED_VALUE,
                        bucket_counts: vec![0; p.bucket_counts.len()],
                        count: 0,
                        sum: p.sum.map(|_| 0.0),
                        ..p.clone()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            },
            Point::Summary(p) => Metric {
                name: name.to_owned(),
                data: Some(Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        flags: NO_RECORDED_VALUE,
                        quantile_values: p
                            .quantile_values
                            .iter()
                            .map(|q| ValueAtQuantile {
                                quantile: q.quantile,
                                value: 0.0,
                            })
                            .collect(),
                        sum: 0.0,
                        count: 0,
                        ..p.clone()
                    }],
                })),
                ..Default::default()
            },
        }
    }
}

/// A metric of a batch, encoded.
enum MetricOut {
    /// A metric whose points are still coming.
    Open(OpenMetric),
    /// A whole `Metric` message (a stale marker made when its series was first seen).
    Done(Vec<u8>),
}

/// A metric whose points are still coming: its `data_points` fields so far.
struct OpenMetric {
    name: String,
    help: String,
    shape: Shape,
    points: Vec<u8>,
}

impl OpenMetric {
    /// Bytes of the data message: the points and the fields after them.
    fn data_len(&self) -> usize {
        self.points.len() + self.shape.data_tail().len()
    }

    /// Bytes of the `Metric` message.
    fn encoded_len(&self) -> usize {
        wire::string_len(&self.name)
            + wire::string_len(&self.help)
            + wire::delimited_len(self.data_len())
    }

    /// Appends the `Metric` message.
    fn encode(&self, buf: &mut Vec<u8>) {
        wire::string(buf, 1, &self.name);
        wire::string(buf, 2, &self.help);
        wire::delimited_header(buf, self.shape.data_tag(), self.data_len());
        buf.extend_from_slice(&self.points);
        buf.extend_from_slice(self.shape.data_tail());
    }
}

impl MetricOut {
    fn encoded_len(&self) -> usize {
        match self {
            MetricOut::Open(metric) => metric.encoded_len(),
            MetricOut::Done(bytes) => bytes.len(),
        }
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            MetricOut::Open(metric) => metric.encode(buf),
            MetricOut::Done(bytes) => buf.extend_from_slice(bytes),
        }
    }
}

struct ResourceOut {
    job: String,
    instance: String,
    metrics: Vec<MetricOut>,
    /// (name, shape) → index in `metrics`, so points of one metric share one `Metric`.
    index: HashMap<(String, Shape), usize>,
    /// The (index, shape) of the metric the last point went to.
    last: Option<(usize, Shape)>,
}

/// Most bytes reserved at once for a metric's points (see `Batch::reserve_points`).
const MAX_RESERVED: usize = 1 << 20;

/// The OTLP output of one target's scrape, remembering its series as they pass.
pub(crate) struct Batch<'m> {
    now_ns: u64,
    memory: &'m mut SeriesMemory,
    /// The series key of the point being added, reused from point to point.
    key: String,
    /// Points a family will add, set by [`Batch::family`] and taken by its first point: if
    /// that point opens a metric, the metric's bytes are reserved once rather than grown by
    /// doubling. Only the first point takes it, so a family whose samples go to many
    /// metrics (other names, or each its own job and instance, as from a federation
    /// endpoint) does not reserve its size once per metric.
    reserve_points: Option<usize>,
    resources: Vec<ResourceOut>,
    /// Data points added (a histogram or summary counts as one), markers included.
    pub points: usize,
    /// Stale markers added.
    pub stale_markers: usize,
}

impl<'m> Batch<'m> {
    pub(crate) fn new(now_ns: u64, memory: &'m mut SeriesMemory) -> Self {
        Batch {
            now_ns,
            memory,
            key: String::new(),
            reserve_points: None,
            resources: Vec::new(),
            points: 0,
            stale_markers: 0,
        }
    }

    fn resource(&mut self, job: &str, instance: &str) -> &mut ResourceOut {
        let at = match self
            .resources
            .iter()
            .position(|r| r.job == job && r.instance == instance)
        {
            Some(at) => at,
            None => {
                self.resources.push(ResourceOut {
                    job: job.to_owned(),
                    instance: instance.to_owned(),
                    metrics: Vec::new(),
                    index: HashMap::new(),
                    last: None,
                });
                self.resources.len() - 1
            }
        };
        &mut self.resources[at]
    }

    fn time(&self, timestamp_ms: Option<i64>) -> u64 {
        match timestamp_ms {
            Some(ms) => (ms.max(0) as u64).saturating_mul(1_000_000),
            None => self.now_ns,
        }
    }

    /// Adds a point of a scraped series, tracking it for staleness; `identity` is what
    /// besides name, labels and shape tells its series apart (histogram bounds, quantiles).
    fn add(
        &mut self,
        to: Destination<'_>,
        mut point: Point<'_>,
        identity: &str,
        explicit_time: bool,
    ) {
        let Destination {
            job,
            instance,
            name,
            help,
        } = to;
        series_key(&mut self.key, [name, job, instance, identity], &point);
        let key = &self.key;
        let first_seen = self.memory.see(key, self.now_ns, || match &point {
            _ if explicit_time => Marker::Never,
            Point::Gauge(n) | Point::Counter(n) if reads_back(key, [name, job, instance], n) => {
                Marker::Number {
                    counter: matches!(point, Point::Counter(_)),
                }
            }
            _ => Marker::Kept(Box::new(Kept::new(
                job,
                instance,
                &point.stale_metric(name),
            ))),
        });
        match &mut point {
            Point::Counter(n) if n.start_ns == 0 => n.start_ns = first_seen,
            Point::Histogram(p) if p.start_time_unix_nano == 0 => {
                p.start_time_unix_nano = first_seen
            }
            Point::Summary(p) if p.start_time_unix_nano == 0 => p.start_time_unix_nano = first_seen,
            _ => {}
        }
        self.add_untracked(job, instance, name, help, point);
    }

    fn add_untracked(
        &mut self,
        job: &str,
        instance: &str,
        name: &str,
        help: &str,
        point: Point<'_>,
    ) {
        self.points += 1;
        let reserve = self.reserve_points.take();
        let resource = self.resource(job, instance);
        let shape = point.shape();
        // The samples of a family come one after another: most points go to the metric the
        // previous one went to, found without building a key.
        let last = resource.last.filter(|&(at, last_shape)| {
            last_shape == shape
                && matches!(&resource.metrics[at], MetricOut::Open(m) if m.name == name)
        });
        let at = match last {
            Some((at, _)) => at,
            None => match resource.index.get(&(name.to_owned(), shape)) {
                Some(&at) => at,
                None => {
                    // A point's field header is at most 3 bytes for points under 2 MiB.
                    let bytes = reserve.map_or(0, |points| {
                        (point.encoded_len() + 3)
                            .saturating_mul(points)
                            .min(MAX_RESERVED)
                    });
                    resource.metrics.push(MetricOut::Open(OpenMetric {
                        name: name.to_owned(),
                        help: help.to_owned(),
                        shape,
                        points: Vec::with_capacity(bytes),
                    }));
                    resource
                        .index
                        .insert((name.to_owned(), shape), resource.metrics.len() - 1);
                    resource.metrics.len() - 1
                }
            },
        };
        resource.last = Some((at, shape));
        if let MetricOut::Open(metric) = &mut resource.metrics[at] {
            point.encode(&mut metric.points);
        }
    }

    /// A gauge about the scrape itself (`up`, `scrape_duration_seconds`, …): not tracked
    /// for staleness, as in Prometheus, where these only go stale with the target.
    pub(crate) fn report(
        &mut self,
        job: &str,
        instance: &str,
        labels: &Labels,
        name: &str,
        value: f64,
    ) {
        let labels = borrowed(labels);
        let point = Number::sample(&labels, 0, self.now_ns, value);
        self.add_untracked(job, instance, name, "", Point::Gauge(point));
    }

    /// A stale marker for a gauge about the scrape itself, when its target went away.
    pub(crate) fn report_stale(&mut self, job: &str, instance: &str, labels: &Labels, name: &str) {
        let labels = borrowed(labels);
        let point = Number {
            value: None,
            flags: NO_RECORDED_VALUE,
            ..Number::sample(&labels, 0, self.now_ns, 0.0)
        };
        self.stale_markers += 1;
        self.add_untracked(job, instance, name, "", Point::Gauge(point));
    }

    /// Adds stale markers for series that vanished.
    pub(crate) fn stale(&mut self, vanished: Vec<Vanished>) {
        for v in vanished {
            match v.marker {
                Marker::Never => continue,
                Marker::Number { counter } => {
                    // Only keys that read back get this marker (see `reads_back`).
                    let Some((name, job, instance, labels)) = read_key(&v.key) else {
                        continue;
                    };
                    let point = Number {
                        labels: &labels,
                        start_ns: if counter { v.first_seen_ns } else { 0 },
                        time_ns: self.now_ns,
                        value: None,
                        flags: NO_RECORDED_VALUE,
                    };
                    let point = match counter {
                        true => Point::Counter(point),
                        false => Point::Gauge(point),
                    };
                    self.add_untracked(job, instance, name, "", point);
                }
                Marker::Kept(kept) => {
                    let Some(metric) = kept.metric(self.now_ns) else {
                        continue;
                    };
                    self.points += 1;
                    let metric = MetricOut::Done(metric.encode_to_vec());
                    self.resource(&kept.job, &kept.instance)
                        .metrics
                        .push(metric);
                }
            }
            self.stale_markers += 1;
        }
    }

    /// Ends a successful scrape: markers for the series of the previous one not seen again.
    pub(crate) fn end_of_scrape(&mut self) {
        let vanished = self.memory.finish();
        self.stale(vanished);
    }

    /// Adds the samples of one family; `labels` holds theirs (see [`Relabeled::labels`]).
    pub(crate) fn family(
        &mut self,
        family: &str,
        kind: MetricKind,
        help: &str,
        samples: &[Relabeled<'_>],
        labels: &[Label<'_>],
    ) {
        self.reserve_points = Some(samples.len());
        match kind {
            MetricKind::Counter => self.counter_family(family, help, samples, labels),
            MetricKind::Histogram => match histogram_points(family, samples, labels) {
                Some(groups) => {
                    self.reserve_points = Some(groups.len());
                    for mut g in groups {
                        let explicit_time = g.point.time_unix_nano != 0;
                        if !explicit_time {
                            g.point.time_unix_nano = self.now_ns;
                        }
                        let identity = join_floats(&g.point.explicit_bounds);
                        let to = Destination {
                            job: &g.job,
                            instance: &g.instance,
                            name: family,
                            help,
                        };
                        self.add(to, Point::Histogram(g.point), &identity, explicit_time);
                    }
                }
                None => self.gauges(help, samples, labels),
            },
            MetricKind::Summary => match summary_points(family, samples, labels) {
                Some(groups) => {
                    self.reserve_points = Some(groups.len());
                    for mut g in groups {
                        let explicit_time = g.point.time_unix_nano != 0;
                        if !explicit_time {
                            g.point.time_unix_nano = self.now_ns;
                        }
                        let quantiles: Vec<f64> =
                            g.point.quantile_values.iter().map(|q| q.quantile).collect();
                        let identity = join_floats(&quantiles);
                        let to = Destination {
                            job: &g.job,
                            instance: &g.instance,
                            name: family,
                            help,
                        };
                        self.add(to, Point::Summary(g.point), &identity, explicit_time);
                    }
                }
                None => self.gauges(help, samples, labels),
            },
            MetricKind::Gauge
            | MetricKind::Untyped
            | MetricKind::Info
            | MetricKind::StateSet
            | MetricKind::GaugeHistogram => self.gauges(help, samples, labels),
        }
        self.reserve_points = None;
    }

    fn gauges(&mut self, help: &str, samples: &[Relabeled<'_>], labels: &[Label<'_>]) {
        for s in samples {
            let labels = &labels[s.labels.clone()];
            let point = Number::sample(labels, 0, self.time(s.timestamp_ms), s.value);
            let explicit_time = s.timestamp_ms.is_some();
            let point = Point::Gauge(point);
            let to = Destination {
                job: &s.job,
                instance: &s.instance,
                name: &s.name,
                help,
            };
            self.add(to, point, "", explicit_time);
        }
    }

    fn counter_family(
        &mut self,
        family: &str,
        help: &str,
        samples: &[Relabeled<'_>],
        labels: &[Label<'_>],
    ) {
        let is_created = |s: &Relabeled| s.name.strip_prefix(family) == Some("_created");
        // Borrowed keys: nothing is cloned per sample, and a family without `_created`
        // samples (the usual case) allocates and looks up nothing.
        let created: HashMap<(&str, &str, &[Label]), u64> = samples
            .iter()
            .filter(|s| is_created(s))
            .map(|s| {
                (
                    (
                        s.job.as_ref(),
                        s.instance.as_ref(),
                        &labels[s.labels.clone()],
                    ),
                    seconds_to_ns(s.value),
                )
            })
            .collect();
        for s in samples.iter().filter(|s| !is_created(s)) {
            let time = self.time(s.timestamp_ms);
            let labels = &labels[s.labels.clone()];
            let start = match created.is_empty() {
                true => 0,
                false => created
                    .get(&(s.job.as_ref(), s.instance.as_ref(), labels))
                    .copied()
                    .unwrap_or(0),
            };
            let point = match s.name.ends_with("_total") {
                true => Point::Counter(Number::sample(labels, start, time, s.value)),
                false => Point::Gauge(Number::sample(labels, 0, time, s.value)),
            };
            let explicit_time = s.timestamp_ms.is_some();
            let to = Destination {
                job: &s.job,
                instance: &s.instance,
                name: &s.name,
                help,
            };
            self.add(to, point, "", explicit_time);
        }
    }

    /// The batch as OTLP: one encoded `ResourceMetrics` per (job, instance), with
    /// `service.name` and `service.instance.id` and one scope-less `ScopeMetrics`.
    pub(crate) fn finish(self) -> Vec<Vec<u8>> {
        self.resources
            .into_iter()
            .map(ResourceOut::encode)
            .collect()
    }
}

impl ResourceOut {
    fn encode(self) -> Vec<u8> {
        let mut resource = Vec::new();
        if !self.job.is_empty() {
            key_value(&mut resource, 1, "service.name", &self.job);
        }
        if !self.instance.is_empty() {
            key_value(&mut resource, 1, "service.instance.id", &self.instance);
        }
        let metrics: usize = self
            .metrics
            .iter()
            .map(|m| wire::delimited_len(m.encoded_len()))
            .sum();
        let mut out =
            Vec::with_capacity(wire::delimited_len(resource.len()) + wire::delimited_len(metrics));
        // ResourceMetrics: resource (1), then scope_metrics (2): one ScopeMetrics, no scope,
        // whose body is its `metrics` fields (2).
        wire::bytes(&mut out, 1, &resource);
        wire::delimited_header(&mut out, 2, metrics);
        for metric in &self.metrics {
            wire::delimited_header(&mut out, 2, metric.encoded_len());
            metric.encode(&mut out);
        }
        out
    }
}

/// Writes into `key` what tells a series apart: `parts` (name, job, instance, identity),
/// the point's shape and its attributes.
fn series_key(key: &mut String, parts: [&str; 4], point: &Point<'_>) {
    key.clear();
    for part in parts {
        key.push_str(part);
        key.push('\u{0}');
    }
    key.push(char::from(b'0' + point.series_shape() as u8));
    let mut attribute = |name: &str, value: &str| {
        key.push('\u{0}');
        key.push_str(name);
        key.push('=');
        key.push_str(value);
    };
    let attributes = match point {
        Point::Gauge(n) | Point::Counter(n) => {
            n.labels.iter().for_each(|(k, v)| attribute(k, v));
            return;
        }
        Point::Histogram(p) => &p.attributes,
        Point::Summary(p) => &p.attributes,
    };
    for kv in attributes {
        let value = match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }) => v.as_str(),
            _ => "",
        };
        attribute(&kv.key, value);
    }
}

/// Whether [`read_key`] gives back `parts` (name, job, instance) and the point's labels
/// from its series `key`; it does not when one of them holds the NUL that separates them,
/// or a label name holds `=`. Checked once, when a series is first seen.
fn reads_back(key: &str, parts: [&str; 3], point: &Number<'_>) -> bool {
    read_key(key).is_some_and(|(name, job, instance, labels)| {
        [name, job, instance] == parts && labels == point.labels
    })
}

/// The name, job, instance and labels of a gauge or counter from its series key (see
/// [`series_key`]); `None` when the key is not one.
fn read_key(key: &str) -> Option<(&str, &str, &str, SampleLabels<'_>)> {
    let mut parts = key.split('\0');
    let (name, job, instance) = (parts.next()?, parts.next()?, parts.next()?);
    // The identity (empty for gauges and counters) and the shape.
    parts.next()?;
    parts.next()?;
    let labels = parts
        .map(|label| {
            let (k, v) = label.split_once('=')?;
            Some((Cow::Borrowed(k), Cow::Borrowed(v)))
        })
        .collect::<Option<_>>()?;
    Some((name, job, instance, labels))
}

fn attributes(labels: &[Label<'_>]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| string_kv(k.as_ref(), v.as_ref()))
        .collect()
}

pub(crate) fn seconds_to_ns(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1e9) as u64
    } else {
        0
    }
}

fn join_floats(values: &[f64]) -> String {
    let mut out = String::new();
    for v in values {
        vigil_core::remote_write::naming::push_float(&mut out, *v);
        out.push(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&'static str, &'static str)]) -> Labels {
        crate::scrape::relabel::tests::labels(pairs)
    }

    fn sample_labels(pairs: &[(&'static str, &'static str)]) -> SampleLabels<'static> {
        pairs
            .iter()
            .map(|&(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect()
    }

    /// What prost decodes from a number point written straight from its labels is the
    /// point as OTLP messages, for values, markers, empty values and start times.
    #[test]
    fn a_number_point_decodes_to_the_messages_it_stands_for() {
        let labels = [
            sample_labels(&[("cpu", "0"), ("mode", "idle")]),
            sample_labels(&[]),
            sample_labels(&[("empty", ""), ("k", "v")]),
            sample_labels(&[("a", "b")]),
        ];
        let cases = [
            Number::sample(&labels[0], 0, 5, 1.5),
            Number::sample(&labels[1], 7, 0, 0.0),
            Number::sample(&labels[2], 1 << 40, 1 << 41, -0.0),
            Number {
                value: None,
                flags: NO_RECORDED_VALUE,
                ..Number::sample(&labels[3], 3, 4, 9.0)
            },
        ];
        for n in cases {
            let mut bytes = Vec::new();
            n.encode(&mut bytes);
            assert_eq!(bytes.len(), n.encoded_len());
            let expected = NumberDataPoint {
                value: n.value.map(number_data_point::Value::AsDouble),
                flags: n.flags,
                ..number_point(attributes(n.labels), n.start_ns, n.time_ns, 0.0)
            };
            assert_eq!(NumberDataPoint::decode(bytes.as_slice()).unwrap(), expected);
        }
    }

    /// The fields a sum or histogram writes after its points are prost's encoding of the
    /// same messages without points.
    #[test]
    fn data_tails_are_the_encoding_of_cumulative_sums_and_histograms() {
        let cumulative = AggregationTemporality::Cumulative as i32;
        let sum = Sum {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        };
        assert_eq!(Shape::Counter.data_tail(), sum.encode_to_vec());
        let histogram = Histogram {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
        };
        assert_eq!(Shape::Histogram.data_tail(), histogram.encode_to_vec());
    }

    /// A whole batch decodes to one `ResourceMetrics` per target with one metric per name
    /// and shape, in the order they came, markers included.
    #[test]
    fn a_batch_decodes_to_resources_metrics_and_points() {
        let mut memory = SeriesMemory::default();
        let mut batch = Batch::new(10, &mut memory);
        let target = labels(&[("env", "prod")]);
        batch.report("node", "a:9100", &target, "up", 1.0);
        batch.report("node", "a:9100", &target, "scrape_samples_scraped", 3.0);
        batch.report_stale("node", "b:9100", &labels(&[]), "up");
        let encoded = batch.finish();
        let decoded: Vec<ResourceMetrics> = encoded
            .iter()
            .map(|b| ResourceMetrics::decode(b.as_slice()).unwrap())
            .collect();
        let point = |labels: &Labels, value| NumberDataPoint {
            value,
            flags: if value.is_none() {
                NO_RECORDED_VALUE
            } else {
                0
            },
            ..number_point(attributes(&borrowed(labels)), 0, 10, 0.0)
        };
        let resource = |instance: &str, metrics| {
            let attributes = vec![
                string_kv("service.name", "node"),
                string_kv("service.instance.id", instance),
            ];
            resource_metrics(attributes, metrics)
        };
        let one = |v: f64| Some(number_data_point::Value::AsDouble(v));
        assert_eq!(
            decoded,
            vec![
                resource(
                    "a:9100",
                    vec![
                        gauge("up", "", vec![point(&target, one(1.0))]),
                        gauge("scrape_samples_scraped", "", vec![point(&target, one(3.0))]),
                    ]
                ),
                resource(
                    "b:9100",
                    vec![gauge("up", "", vec![point(&labels(&[]), None)])]
                ),
            ]
        );
    }
}
