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

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::parse::MetricKind;
use super::points::{histogram_points, summary_points};
use super::relabel::Labels;
use super::staleness::{NO_RECORDED_VALUE, Remembered, SeriesMemory};

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

/// A sample after the target's labels were merged in and metric relabeling ran.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Relabeled {
    pub name: String,
    pub job: String,
    pub instance: String,
    /// Every other label, sorted; no `__name__`, `job` or `instance`.
    pub labels: Labels,
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

/// One data point on its way into a batch.
enum Point {
    Gauge(NumberDataPoint),
    Counter(NumberDataPoint),
    Histogram(HistogramDataPoint),
    Summary(SummaryDataPoint),
}

impl Point {
    fn shape(&self) -> u8 {
        match self {
            Point::Gauge(_) => 0,
            Point::Counter(_) => 1,
            Point::Histogram(_) => 2,
            Point::Summary(_) => 3,
        }
    }

    /// The shape as far as series identity goes: a gauge and a counter of the same name
    /// and labels are one Prometheus series, so a type change is not a vanished series.
    fn series_shape(&self) -> u8 {
        match self {
            Point::Counter(_) => 0,
            other => other.shape(),
        }
    }

    /// The same point with no value and the "no recorded value" flag: its stale marker.
    fn stale_metric(&self, name: &str) -> Metric {
        let marker = |p: &NumberDataPoint| NumberDataPoint {
            value: None,
            flags: NO_RECORDED_VALUE,
            ..p.clone()
        };
        match self {
            Point::Gauge(p) => gauge(name, "", vec![marker(p)]),
            Point::Counter(p) => counter(name, "", vec![marker(p)]),
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

struct ResourceOut {
    job: String,
    instance: String,
    metrics: Vec<Metric>,
    /// (name, shape) → index in `metrics`, so points of one metric share one `Metric`.
    index: HashMap<(String, u8), usize>,
    /// The (index, shape) of the metric the last point went to.
    last: Option<(usize, u8)>,
}

/// The OTLP output of one target's scrape, remembering its series as they pass.
pub(crate) struct Batch<'m> {
    now_ns: u64,
    memory: &'m mut SeriesMemory,
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
    fn add(&mut self, to: Destination<'_>, mut point: Point, identity: &str, explicit_time: bool) {
        let Destination {
            job,
            instance,
            name,
            help,
        } = to;
        let key = series_key(
            job,
            instance,
            name,
            point.series_shape(),
            attributes_of(&point),
            identity,
        );
        let now = self.now_ns;
        let first_seen = self.memory.see(key, || Remembered {
            job: job.to_owned(),
            instance: instance.to_owned(),
            first_seen_ns: now,
            stale: (!explicit_time).then(|| point.stale_metric(name)),
        });
        match &mut point {
            Point::Counter(p) if p.start_time_unix_nano == 0 => p.start_time_unix_nano = first_seen,
            Point::Histogram(p) if p.start_time_unix_nano == 0 => {
                p.start_time_unix_nano = first_seen
            }
            Point::Summary(p) if p.start_time_unix_nano == 0 => p.start_time_unix_nano = first_seen,
            _ => {}
        }
        self.add_untracked(job, instance, name, help, point);
    }

    fn add_untracked(&mut self, job: &str, instance: &str, name: &str, help: &str, point: Point) {
        self.points += 1;
        let resource = self.resource(job, instance);
        let shape = point.shape();
        // The samples of a family come one after another: most points go to the metric the
        // previous one went to, found without building a key.
        let last = resource
            .last
            .filter(|&(at, last_shape)| last_shape == shape && resource.metrics[at].name == name);
        let at = match last {
            Some((at, _)) => at,
            None => match resource.index.get(&(name.to_owned(), shape)) {
                Some(&at) => at,
                None => {
                    let empty = match point {
                        Point::Gauge(_) => gauge(name, help, Vec::new()),
                        Point::Counter(_) => counter(name, help, Vec::new()),
                        Point::Histogram(_) => Metric {
                            name: name.to_owned(),
                            description: help.to_owned(),
                            data: Some(Data::Histogram(Histogram {
                                data_points: Vec::new(),
                                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            })),
                            ..Default::default()
                        },
                        Point::Summary(_) => Metric {
                            name: name.to_owned(),
                            description: help.to_owned(),
                            data: Some(Data::Summary(Summary::default())),
                            ..Default::default()
                        },
                    };
                    resource.metrics.push(empty);
                    resource
                        .index
                        .insert((name.to_owned(), shape), resource.metrics.len() - 1);
                    resource.metrics.len() - 1
                }
            },
        };
        resource.last = Some((at, shape));
        match (&mut resource.metrics[at].data, point) {
            (Some(Data::Gauge(g)), Point::Gauge(p)) => g.data_points.push(p),
            (Some(Data::Sum(s)), Point::Counter(p)) => s.data_points.push(p),
            (Some(Data::Histogram(h)), Point::Histogram(p)) => h.data_points.push(p),
            (Some(Data::Summary(s)), Point::Summary(p)) => s.data_points.push(p),
            _ => {}
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
        let point = number_point(attributes(labels), 0, self.now_ns, value);
        self.add_untracked(job, instance, name, "", Point::Gauge(point));
    }

    /// A stale marker for a gauge about the scrape itself, when its target went away.
    pub(crate) fn report_stale(&mut self, job: &str, instance: &str, labels: &Labels, name: &str) {
        let point = NumberDataPoint {
            value: None,
            flags: NO_RECORDED_VALUE,
            ..number_point(attributes(labels), 0, self.now_ns, 0.0)
        };
        self.stale_markers += 1;
        self.add_untracked(job, instance, name, "", Point::Gauge(point));
    }

    /// Adds stale markers for series that vanished.
    pub(crate) fn stale(&mut self, vanished: Vec<Remembered>) {
        for r in vanished {
            if let Some(metric) = r.stale {
                self.points += 1;
                self.stale_markers += 1;
                self.resource(&r.job, &r.instance).metrics.push(metric);
            }
        }
    }

    /// Ends a successful scrape: markers for the series of the previous one not seen again.
    pub(crate) fn end_of_scrape(&mut self) {
        let vanished = self.memory.finish(self.now_ns);
        self.stale(vanished);
    }

    /// Adds the samples of one family.
    pub(crate) fn family(
        &mut self,
        family: &str,
        kind: MetricKind,
        help: &str,
        samples: Vec<Relabeled>,
    ) {
        match kind {
            MetricKind::Counter => self.counter_family(family, help, samples),
            MetricKind::Histogram => match histogram_points(family, &samples) {
                Some(groups) => {
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
                None => self.gauges(help, samples),
            },
            MetricKind::Summary => match summary_points(family, &samples) {
                Some(groups) => {
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
                None => self.gauges(help, samples),
            },
            MetricKind::Gauge
            | MetricKind::Untyped
            | MetricKind::Info
            | MetricKind::StateSet
            | MetricKind::GaugeHistogram => self.gauges(help, samples),
        }
    }

    fn gauges(&mut self, help: &str, samples: Vec<Relabeled>) {
        for s in samples {
            let point = number_point(
                into_attributes(s.labels),
                0,
                self.time(s.timestamp_ms),
                s.value,
            );
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

    fn counter_family(&mut self, family: &str, help: &str, samples: Vec<Relabeled>) {
        let created_name = format!("{family}_created");
        let (created_samples, values): (Vec<_>, Vec<_>) =
            samples.into_iter().partition(|s| s.name == created_name);
        // Borrowed keys: nothing is cloned per sample, and a family without `_created`
        // samples (the usual case) looks nothing up.
        let created: HashMap<(&str, &str, &Labels), u64> = created_samples
            .iter()
            .map(|s| {
                (
                    (s.job.as_str(), s.instance.as_str(), &s.labels),
                    seconds_to_ns(s.value),
                )
            })
            .collect();
        for s in values {
            let time = self.time(s.timestamp_ms);
            let start = match created.is_empty() {
                true => 0,
                false => created
                    .get(&(s.job.as_str(), s.instance.as_str(), &s.labels))
                    .copied()
                    .unwrap_or(0),
            };
            let point = number_point(into_attributes(s.labels), start, time, s.value);
            let point = match s.name.ends_with("_total") {
                true => Point::Counter(point),
                false => Point::Gauge(NumberDataPoint {
                    start_time_unix_nano: 0,
                    ..point
                }),
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

    /// The batch as OTLP, one `ResourceMetrics` per (job, instance).
    pub(crate) fn finish(self) -> Vec<ResourceMetrics> {
        self.resources
            .into_iter()
            .map(|r| {
                let mut attributes = Vec::with_capacity(2);
                if !r.job.is_empty() {
                    attributes.push(string_kv("service.name", r.job));
                }
                if !r.instance.is_empty() {
                    attributes.push(string_kv("service.instance.id", r.instance));
                }
                resource_metrics(attributes, r.metrics)
            })
            .collect()
    }
}

fn attributes_of(point: &Point) -> &[KeyValue] {
    match point {
        Point::Gauge(p) | Point::Counter(p) => &p.attributes,
        Point::Histogram(p) => &p.attributes,
        Point::Summary(p) => &p.attributes,
    }
}

fn series_key(
    job: &str,
    instance: &str,
    name: &str,
    shape: u8,
    attrs: &[KeyValue],
    identity: &str,
) -> String {
    let mut key = String::with_capacity(64);
    for part in [name, job, instance, identity] {
        key.push_str(part);
        key.push('\u{0}');
    }
    key.push(char::from(b'0' + shape));
    for kv in attrs {
        key.push('\u{0}');
        key.push_str(&kv.key);
        key.push('=');
        if let Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }) = &kv.value
        {
            key.push_str(v);
        }
    }
    key
}

/// [`attributes`], moving the strings rather than copying them.
fn into_attributes(labels: Labels) -> Vec<KeyValue> {
    labels.into_iter().map(|(k, v)| string_kv(k, v)).collect()
}

pub(crate) fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| string_kv(k.as_str(), v.as_str()))
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
