//! Checks a protobuf OTLP request the way prost's decoder would and counts its items,
//! without building it.
//!
//! The receiver has to refuse what the exporters could not decode (a 400 now rather than a
//! dead letter later) and count points, records or spans; it does not need the request as
//! Rust values. Decoding it into them allocated every string and vector of the request
//! only to free them again, and that was a fifth of the collector's CPU. This walks the
//! bytes against a table of the OTLP messages instead and accepts exactly what prost
//! accepts: the same wire types per field (repeated numbers packed or not), UTF-8 in
//! string fields, lengths within their message, unknown fields skipped (groups included),
//! and prost's recursion limit of 100 nested messages. Property tests hold it to prost's
//! verdict on mutated requests.
//!
//! The tables follow the messages of `opentelemetry-proto` 0.33 field for field; a field
//! missing here would be skipped unchecked, which the tests would catch as a disagreement.

use std::str;

use prost::encoding::{WireType, decode_key, decode_varint};

/// A request prost would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(&'static str);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Invalid {}

/// prost's `RECURSION_LIMIT`: how many messages deep a request may nest.
const RECURSION_LIMIT: u32 = 100;

/// What a field holds, as far as decoding goes.
#[derive(Clone, Copy)]
enum Kind {
    /// Any varint: (u)int32/64, sint32/64, bool, enum. prost truncates, never refuses.
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    String,
    Message(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    tag: u32,
    kind: Kind,
    /// Repeated numbers may come packed (one delimited run) or one by one.
    repeated: bool,
}

const fn one(tag: u32, kind: Kind) -> Field {
    Field {
        tag,
        kind,
        repeated: false,
    }
}

const fn many(tag: u32, kind: Kind) -> Field {
    Field {
        tag,
        kind,
        repeated: true,
    }
}

use Kind::{Bytes, Fixed32, Fixed64, Message, String, Varint};

// common.v1 and resource.v1
static ANY_VALUE: [Field; 8] = [
    one(1, String),
    one(2, Varint),
    one(3, Varint),
    one(4, Fixed64),
    one(5, Message(&ARRAY_VALUE)),
    one(6, Message(&KEY_VALUE_LIST)),
    one(7, Bytes),
    one(8, Varint),
];
static ARRAY_VALUE: [Field; 1] = [many(1, Message(&ANY_VALUE))];
static KEY_VALUE_LIST: [Field; 1] = [many(1, Message(&KEY_VALUE))];
static KEY_VALUE: [Field; 3] = [one(1, String), one(2, Message(&ANY_VALUE)), one(3, Varint)];
static SCOPE: [Field; 4] = [
    one(1, String),
    one(2, String),
    many(3, Message(&KEY_VALUE)),
    one(4, Varint),
];
static ENTITY_REF: [Field; 4] = [
    one(1, String),
    one(2, String),
    many(3, String),
    many(4, String),
];
static RESOURCE: [Field; 3] = [
    many(1, Message(&KEY_VALUE)),
    one(2, Varint),
    many(3, Message(&ENTITY_REF)),
];

/// `Resource{Metrics,Logs,Spans}`: the resource (1), its scopes (2), a schema URL (3).
const fn per_resource(scopes: &'static [Field]) -> [Field; 3] {
    [
        one(1, Message(&RESOURCE)),
        many(2, Message(scopes)),
        one(3, String),
    ]
}

/// `Scope{Metrics,Logs,Spans}`: the scope (1), its items (2), a schema URL (3).
const fn per_scope(items: &'static [Field]) -> [Field; 3] {
    [
        one(1, Message(&SCOPE)),
        many(2, Message(items)),
        one(3, String),
    ]
}

// metrics.v1
static METRICS_REQUEST: [Field; 1] = [many(1, Message(&RESOURCE_METRICS))];
static RESOURCE_METRICS: [Field; 3] = per_resource(&SCOPE_METRICS);
static SCOPE_METRICS: [Field; 3] = per_scope(&METRIC);
static METRIC: [Field; 9] = [
    one(1, String),
    one(2, String),
    one(3, String),
    one(GAUGE, Message(&GAUGE_DATA)),
    one(SUM, Message(&SUM_DATA)),
    one(HISTOGRAM, Message(&HISTOGRAM_DATA)),
    one(EXPONENTIAL_HISTOGRAM, Message(&EXPONENTIAL_HISTOGRAM_DATA)),
    one(SUMMARY, Message(&SUMMARY_DATA)),
    many(12, Message(&KEY_VALUE)),
];
static GAUGE_DATA: [Field; 1] = [many(1, Message(&NUMBER_POINT))];
static SUM_DATA: [Field; 3] = [
    many(1, Message(&NUMBER_POINT)),
    one(2, Varint),
    one(3, Varint),
];
static HISTOGRAM_DATA: [Field; 2] = [many(1, Message(&HISTOGRAM_POINT)), one(2, Varint)];
static EXPONENTIAL_HISTOGRAM_DATA: [Field; 2] = [
    many(1, Message(&EXPONENTIAL_HISTOGRAM_POINT)),
    one(2, Varint),
];
static SUMMARY_DATA: [Field; 1] = [many(1, Message(&SUMMARY_POINT))];
static NUMBER_POINT: [Field; 7] = [
    many(7, Message(&KEY_VALUE)),
    one(2, Fixed64),
    one(3, Fixed64),
    one(4, Fixed64),
    one(6, Fixed64),
    many(5, Message(&EXEMPLAR)),
    one(8, Varint),
];
static HISTOGRAM_POINT: [Field; 11] = [
    many(9, Message(&KEY_VALUE)),
    one(2, Fixed64),
    one(3, Fixed64),
    one(4, Fixed64),
    one(5, Fixed64),
    many(6, Fixed64),
    many(7, Fixed64),
    many(8, Message(&EXEMPLAR)),
    one(10, Varint),
    one(11, Fixed64),
    one(12, Fixed64),
];
static EXPONENTIAL_HISTOGRAM_POINT: [Field; 14] = [
    many(1, Message(&KEY_VALUE)),
    one(2, Fixed64),
    one(3, Fixed64),
    one(4, Fixed64),
    one(5, Fixed64),
    one(6, Varint),
    one(7, Fixed64),
    one(8, Message(&BUCKETS)),
    one(9, Message(&BUCKETS)),
    one(10, Varint),
    many(11, Message(&EXEMPLAR)),
    one(12, Fixed64),
    one(13, Fixed64),
    one(14, Fixed64),
];
static BUCKETS: [Field; 2] = [one(1, Varint), many(2, Varint)];
static SUMMARY_POINT: [Field; 7] = [
    many(7, Message(&KEY_VALUE)),
    one(2, Fixed64),
    one(3, Fixed64),
    one(4, Fixed64),
    one(5, Fixed64),
    many(6, Message(&VALUE_AT_QUANTILE)),
    one(8, Varint),
];
static VALUE_AT_QUANTILE: [Field; 2] = [one(1, Fixed64), one(2, Fixed64)];
static EXEMPLAR: [Field; 6] = [
    many(7, Message(&KEY_VALUE)),
    one(2, Fixed64),
    one(3, Fixed64),
    one(6, Fixed64),
    one(4, Bytes),
    one(5, Bytes),
];

// logs.v1
static LOGS_REQUEST: [Field; 1] = [many(1, Message(&RESOURCE_LOGS))];
static RESOURCE_LOGS: [Field; 3] = per_resource(&SCOPE_LOGS);
static SCOPE_LOGS: [Field; 3] = per_scope(&LOG_RECORD);
static LOG_RECORD: [Field; 11] = [
    one(1, Fixed64),
    one(11, Fixed64),
    one(2, Varint),
    one(3, String),
    one(5, Message(&ANY_VALUE)),
    many(6, Message(&KEY_VALUE)),
    one(7, Varint),
    one(8, Fixed32),
    one(9, Bytes),
    one(10, Bytes),
    one(12, String),
];

// trace.v1
static TRACES_REQUEST: [Field; 1] = [many(1, Message(&RESOURCE_SPANS))];
static RESOURCE_SPANS: [Field; 3] = per_resource(&SCOPE_SPANS);
static SCOPE_SPANS: [Field; 3] = per_scope(&SPAN);
static SPAN: [Field; 16] = [
    one(1, Bytes),
    one(2, Bytes),
    one(3, String),
    one(4, Bytes),
    one(16, Fixed32),
    one(5, String),
    one(6, Varint),
    one(7, Fixed64),
    one(8, Fixed64),
    many(9, Message(&KEY_VALUE)),
    one(10, Varint),
    many(11, Message(&EVENT)),
    one(12, Varint),
    many(13, Message(&LINK)),
    one(14, Varint),
    one(15, Message(&STATUS)),
];
static EVENT: [Field; 4] = [
    one(1, Fixed64),
    one(2, String),
    many(3, Message(&KEY_VALUE)),
    one(4, Varint),
];
static LINK: [Field; 6] = [
    one(1, Bytes),
    one(2, Bytes),
    one(3, String),
    many(4, Message(&KEY_VALUE)),
    one(5, Varint),
    one(6, Fixed32),
];
static STATUS: [Field; 2] = [one(2, String), one(3, Varint)];

// The `Metric.data` oneof's fields.
const GAUGE: u32 = 5;
const SUM: u32 = 7;
const HISTOGRAM: u32 = 9;
const EXPONENTIAL_HISTOGRAM: u32 = 10;
const SUMMARY: u32 = 11;

/// What [`metrics`] finds: data points, and those with delta temporality.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricCounts {
    pub points: u64,
    pub delta_points: u64,
}

/// Checks an `ExportMetricsServiceRequest` and counts its data points as the decoded
/// request would have them (`otlp::metric_points`).
pub fn metrics(body: &[u8]) -> Result<MetricCounts, Invalid> {
    message(body, &METRICS_REQUEST, RECURSION_LIMIT)?;
    let mut counts = MetricCounts::default();
    for resource in fields(body, 1) {
        for scope in fields(resource, 2) {
            for metric in fields(scope, 2) {
                count_metric(metric, &mut counts);
            }
        }
    }
    Ok(counts)
}

/// Checks an `ExportLogsServiceRequest` and counts its log records.
pub fn logs(body: &[u8]) -> Result<u64, Invalid> {
    message(body, &LOGS_REQUEST, RECURSION_LIMIT)?;
    Ok(count_nested(body))
}

/// Checks an `ExportTraceServiceRequest` and counts its spans.
pub fn traces(body: &[u8]) -> Result<u64, Invalid> {
    message(body, &TRACES_REQUEST, RECURSION_LIMIT)?;
    Ok(count_nested(body))
}

/// Items of a checked logs or traces request: field 1 (resource), 2 (scope), 2 (item).
fn count_nested(body: &[u8]) -> u64 {
    let mut items = 0;
    for resource in fields(body, 1) {
        for scope in fields(resource, 2) {
            items += fields(scope, 2).count() as u64;
        }
    }
    items
}

/// Adds the points of one checked `Metric`. `data` is a oneof: as prost decodes it, a
/// field of another member replaces what came before, and a second field of the same
/// member merges into it (its points add up; a temporality on the wire overwrites).
fn count_metric(metric: &[u8], counts: &mut MetricCounts) {
    let mut data: Option<(u32, u64, i32)> = None;
    let mut cursor = metric;
    while let Some((tag, field)) = next_field(&mut cursor) {
        let FieldValue::Delimited(value) = field else {
            continue;
        };
        if !matches!(
            tag,
            GAUGE | SUM | HISTOGRAM | EXPONENTIAL_HISTOGRAM | SUMMARY
        ) {
            continue;
        }
        let points = fields(value, 1).count() as u64;
        let temporality = last_varint(value, 2).map(|v| v as i32);
        data = match data {
            Some((member, before, kept)) if member == tag => {
                Some((member, before + points, temporality.unwrap_or(kept)))
            }
            _ => Some((tag, points, temporality.unwrap_or(0))),
        };
    }
    if let Some((member, points, temporality)) = data {
        counts.points += points;
        let has_temporality = matches!(member, SUM | HISTOGRAM | EXPONENTIAL_HISTOGRAM);
        if has_temporality && temporality == DELTA {
            counts.delta_points += points;
        }
    }
}

/// `AggregationTemporality::Delta`.
const DELTA: i32 = 1;

/// Checks one message's fields against its table; `depth` is how many more messages may
/// nest inside it.
fn message(mut buf: &[u8], table: &'static [Field], depth: u32) -> Result<(), Invalid> {
    while !buf.is_empty() {
        let (tag, wire) = key(&mut buf)?;
        match table.iter().find(|f| f.tag == tag) {
            Some(field) => value(&mut buf, field, wire, depth)?,
            None => skip(&mut buf, tag, wire, depth)?,
        }
    }
    Ok(())
}

fn value(buf: &mut &[u8], field: &Field, wire: WireType, depth: u32) -> Result<(), Invalid> {
    let width = match field.kind {
        Kind::Varint => None,
        Kind::Fixed64 => Some(8),
        Kind::Fixed32 => Some(4),
        Kind::Bytes => {
            expect(wire, WireType::LengthDelimited)?;
            delimited(buf)?;
            return Ok(());
        }
        Kind::String => {
            expect(wire, WireType::LengthDelimited)?;
            str::from_utf8(delimited(buf)?).map_err(|_| Invalid("a string field is not UTF-8"))?;
            return Ok(());
        }
        Kind::Message(table) => {
            expect(wire, WireType::LengthDelimited)?;
            if depth == 0 {
                return Err(Invalid("messages nest too deep"));
            }
            return message(delimited(buf)?, table, depth - 1);
        }
    };
    if field.repeated && wire == WireType::LengthDelimited {
        let mut packed = delimited(buf)?;
        while !packed.is_empty() {
            number(&mut packed, width)?;
        }
        return Ok(());
    }
    expect(
        wire,
        match width {
            None => WireType::Varint,
            Some(8) => WireType::SixtyFourBit,
            Some(_) => WireType::ThirtyTwoBit,
        },
    )?;
    number(buf, width)
}

/// One varint (`width` `None`) or fixed-width number.
fn number(buf: &mut &[u8], width: Option<usize>) -> Result<(), Invalid> {
    match width {
        None => varint(buf).map(drop),
        Some(n) => take(buf, n).map(drop),
    }
}

/// Skips a field the table does not know, as prost does (groups included).
fn skip(buf: &mut &[u8], tag: u32, wire: WireType, depth: u32) -> Result<(), Invalid> {
    #[cfg(test)]
    tests::SKIPPED.with(|n| n.set(n.get() + 1));
    if depth == 0 {
        return Err(Invalid("messages nest too deep"));
    }
    match wire {
        WireType::Varint => varint(buf).map(drop),
        WireType::SixtyFourBit => take(buf, 8).map(drop),
        WireType::ThirtyTwoBit => take(buf, 4).map(drop),
        WireType::LengthDelimited => delimited(buf).map(drop),
        WireType::StartGroup => loop {
            let (inner_tag, inner_wire) = key(buf)?;
            if inner_wire == WireType::EndGroup {
                if inner_tag != tag {
                    return Err(Invalid("a group ends with another field's tag"));
                }
                return Ok(());
            }
            skip(buf, inner_tag, inner_wire, depth - 1)?;
        },
        WireType::EndGroup => Err(Invalid("a group ends where none began")),
    }
}

fn expect(wire: WireType, expected: WireType) -> Result<(), Invalid> {
    match wire == expected {
        true => Ok(()),
        false => Err(Invalid("a field has the wrong wire type")),
    }
}

/// A field key, read by prost: its tag and wire type.
fn key(buf: &mut &[u8]) -> Result<(u32, WireType), Invalid> {
    decode_key(buf).map_err(|_| Invalid("a field key is malformed"))
}

/// A varint, read by prost (at most 10 bytes, fitting 64 bits).
fn varint(buf: &mut &[u8]) -> Result<u64, Invalid> {
    decode_varint(buf).map_err(|_| Invalid("a varint is malformed or cut short"))
}

fn take<'b>(buf: &mut &'b [u8], n: usize) -> Result<&'b [u8], Invalid> {
    if buf.len() < n {
        return Err(Invalid("a field runs past the end of its message"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// A length prefix and the bytes it covers.
fn delimited<'b>(buf: &mut &'b [u8]) -> Result<&'b [u8], Invalid> {
    let len = varint(buf)?;
    let len = usize::try_from(len).map_err(|_| Invalid("a length is too large"))?;
    take(buf, len)
}

/// What the counting walk needs of a field of a checked message.
enum FieldValue<'b> {
    Delimited(&'b [u8]),
    Varint(u64),
    /// A fixed-width number or a group.
    Other,
}

/// The next field of a message already checked; `None` at the end.
fn next_field<'b>(buf: &mut &'b [u8]) -> Option<(u32, FieldValue<'b>)> {
    if buf.is_empty() {
        return None;
    }
    let (tag, wire) = key(buf).ok()?;
    let value = match wire {
        WireType::LengthDelimited => FieldValue::Delimited(delimited(buf).ok()?),
        WireType::Varint => FieldValue::Varint(varint(buf).ok()?),
        _ => {
            skip(buf, tag, wire, RECURSION_LIMIT).ok()?;
            FieldValue::Other
        }
    };
    Some((tag, value))
}

/// The bytes of each delimited field `tag` of a checked message.
fn fields(mut buf: &[u8], tag: u32) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        loop {
            match next_field(&mut buf)? {
                (t, FieldValue::Delimited(value)) if t == tag => return Some(value),
                _ => {}
            }
        }
    })
}

/// The last varint field `tag` of a checked message, as prost keeps it.
fn last_varint(mut buf: &[u8], tag: u32) -> Option<u64> {
    let mut last = None;
    while let Some(field) = next_field(&mut buf) {
        if let (t, FieldValue::Varint(v)) = field
            && t == tag
        {
            last = Some(v);
        }
    }
    last
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;

    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
        any_value::Value,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
        SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric::Data,
        number_data_point, summary_data_point::ValueAtQuantile,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status,
        span::{Event, Link},
    };
    use proptest::prelude::*;
    use prost::Message;

    use super::*;
    use crate::otlp;

    const VARINT: u8 = WireType::Varint as u8;
    const FIXED64: u8 = WireType::SixtyFourBit as u8;
    const DELIMITED: u8 = WireType::LengthDelimited as u8;
    const START_GROUP: u8 = WireType::StartGroup as u8;
    const END_GROUP: u8 = WireType::EndGroup as u8;
    const FIXED32: u8 = WireType::ThirtyTwoBit as u8;

    thread_local! {
        /// Fields `skip` passed over on this thread.
        pub(super) static SKIPPED: Cell<usize> = const { Cell::new(0) };
    }

    fn some(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: some(value),
            key_strindex: 0,
        }
    }

    /// One attribute of every kind of value, nested ones included; every field set.
    fn attributes() -> Vec<KeyValue> {
        let nested = KeyValueList {
            values: vec![kv("inner", Value::StringValue("é".into()))],
        };
        vec![
            kv("s", Value::StringValue("text".into())),
            kv("b", Value::BoolValue(true)),
            kv("i", Value::IntValue(-5)),
            kv("d", Value::DoubleValue(0.25)),
            kv("bytes", Value::BytesValue(vec![0xff, 0xfe, 0])),
            kv(
                "a",
                Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(Value::IntValue(1)),
                        },
                        AnyValue {
                            value: Some(Value::KvlistValue(nested.clone())),
                        },
                    ],
                }),
            ),
            kv("kv", Value::KvlistValue(nested)),
            KeyValue {
                key: std::string::String::new(),
                value: some(Value::StringValueStrindex(3)),
                key_strindex: 2,
            },
        ]
    }

    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: attributes(),
            dropped_attributes_count: 3,
            entity_refs: vec![EntityRef {
                schema_url: "https://schema".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into(), "x".into()],
                description_keys: vec!["d".into()],
            }],
        })
    }

    fn scope() -> Option<InstrumentationScope> {
        Some(InstrumentationScope {
            name: "scope".into(),
            version: "1".into(),
            attributes: attributes(),
            dropped_attributes_count: 1,
        })
    }

    fn exemplars() -> Vec<Exemplar> {
        [exemplar::Value::AsDouble(1.5), exemplar::Value::AsInt(-2)]
            .into_iter()
            .map(|value| Exemplar {
                filtered_attributes: attributes(),
                time_unix_nano: 9,
                value: Some(value),
                span_id: vec![1; 8],
                trace_id: vec![0xff; 16],
            })
            .collect()
    }

    fn number_points() -> Vec<NumberDataPoint> {
        [
            number_data_point::Value::AsDouble(2.5),
            number_data_point::Value::AsInt(-7),
        ]
        .into_iter()
        .map(|value| NumberDataPoint {
            attributes: attributes(),
            start_time_unix_nano: 1,
            time_unix_nano: 2,
            value: Some(value),
            exemplars: exemplars(),
            flags: 1,
        })
        .collect()
    }

    fn metric(name: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            description: "help".into(),
            unit: "s".into(),
            metadata: attributes(),
            data: Some(data),
        }
    }

    /// Every metric kind with every field set: 2 gauge, 2 delta sum, 1 histogram, 1 delta
    /// exponential histogram and 1 summary point.
    pub(crate) fn metrics_request() -> ExportMetricsServiceRequest {
        let buckets = Some(Buckets {
            offset: -3,
            bucket_counts: vec![1, 300, 0],
        });
        let metrics = vec![
            metric(
                "gauge",
                Data::Gauge(Gauge {
                    data_points: number_points(),
                }),
            ),
            metric(
                "sum",
                Data::Sum(Sum {
                    data_points: number_points(),
                    aggregation_temporality: 1,
                    is_monotonic: true,
                }),
            ),
            metric(
                "histogram",
                Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes: attributes(),
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        count: 3,
                        sum: Some(4.0),
                        bucket_counts: vec![1, 2],
                        explicit_bounds: vec![0.5],
                        exemplars: exemplars(),
                        flags: 1,
                        min: Some(0.1),
                        max: Some(9.0),
                    }],
                    aggregation_temporality: 2,
                }),
            ),
            metric(
                "exponential",
                Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: vec![ExponentialHistogramDataPoint {
                        attributes: attributes(),
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        count: 301,
                        sum: Some(4.0),
                        scale: -2,
                        zero_count: 1,
                        positive: buckets.clone(),
                        negative: buckets,
                        flags: 1,
                        exemplars: exemplars(),
                        min: Some(0.1),
                        max: Some(9.0),
                        zero_threshold: 0.001,
                    }],
                    aggregation_temporality: 1,
                }),
            ),
            metric(
                "summary",
                Data::Summary(Summary {
                    data_points: vec![SummaryDataPoint {
                        attributes: attributes(),
                        start_time_unix_nano: 1,
                        time_unix_nano: 2,
                        count: 3,
                        sum: 4.0,
                        quantile_values: vec![ValueAtQuantile {
                            quantile: 0.5,
                            value: 1.0,
                        }],
                        flags: 1,
                    }],
                }),
            ),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource(),
                scope_metrics: vec![ScopeMetrics {
                    scope: scope(),
                    metrics,
                    schema_url: "https://schema".into(),
                }],
                schema_url: "https://schema".into(),
            }],
        }
    }

    fn logs_request() -> ExportLogsServiceRequest {
        let record = LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 2,
            severity_number: 9,
            severity_text: "INFO".into(),
            body: some(Value::StringValue("line".into())),
            attributes: attributes(),
            dropped_attributes_count: 1,
            flags: 1,
            trace_id: vec![0xff; 16],
            span_id: vec![1; 8],
            event_name: "event".into(),
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource(),
                scope_logs: vec![ScopeLogs {
                    scope: scope(),
                    log_records: vec![record.clone(), record],
                    schema_url: "https://schema".into(),
                }],
                schema_url: "https://schema".into(),
            }],
        }
    }

    fn traces_request() -> ExportTraceServiceRequest {
        let span = Span {
            trace_id: vec![0xff; 16],
            span_id: vec![1; 8],
            trace_state: "k=v".into(),
            parent_span_id: vec![2; 8],
            flags: 1,
            name: "span".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: attributes(),
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 1,
                name: "event".into(),
                attributes: attributes(),
                dropped_attributes_count: 1,
            }],
            dropped_events_count: 1,
            links: vec![Link {
                trace_id: vec![0xfe; 16],
                span_id: vec![3; 8],
                trace_state: "k=v".into(),
                attributes: attributes(),
                dropped_attributes_count: 1,
                flags: 1,
            }],
            dropped_links_count: 1,
            status: Some(Status {
                message: "ok".into(),
                code: 1,
            }),
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource(),
                scope_spans: vec![ScopeSpans {
                    scope: scope(),
                    spans: vec![span.clone(), span.clone(), span],
                    schema_url: "https://schema".into(),
                }],
                schema_url: "https://schema".into(),
            }],
        }
    }

    /// prost's verdict on a metrics body and what it counts, next to this module's.
    /// prost's answer and this module's: counts, or `None` for a refusal.
    type Verdicts<T> = (Option<T>, Option<T>);

    fn both_metrics(body: &[u8]) -> Verdicts<(u64, u64)> {
        let prost = ExportMetricsServiceRequest::decode(body)
            .ok()
            .map(|r| otlp::metric_points(&r));
        let skimmed = metrics(body).ok().map(|c| (c.points, c.delta_points));
        (prost, skimmed)
    }

    fn both_logs(body: &[u8]) -> Verdicts<u64> {
        let prost = ExportLogsServiceRequest::decode(body)
            .ok()
            .map(|r| otlp::log_records(&r));
        (prost, logs(body).ok())
    }

    fn both_traces(body: &[u8]) -> Verdicts<u64> {
        let prost = ExportTraceServiceRequest::decode(body)
            .ok()
            .map(|r| otlp::spans(&r));
        (prost, traces(body).ok())
    }

    /// Every field of the full requests is in the tables (none is skipped unchecked), and
    /// they are counted as the decoded requests are.
    #[test]
    fn full_requests_pass_with_every_field_known_and_are_counted() {
        SKIPPED.with(|n| n.set(0));
        let body = metrics_request().encode_to_vec();
        assert_eq!(
            metrics(&body),
            Ok(MetricCounts {
                points: 7,
                delta_points: 3
            })
        );
        assert_eq!(both_metrics(&body).0, Some((7, 3)));
        assert_eq!(logs(&logs_request().encode_to_vec()), Ok(2));
        assert_eq!(traces(&traces_request().encode_to_vec()), Ok(3));
        assert_eq!(SKIPPED.with(Cell::get), 0, "a field was not in the tables");
    }

    #[test]
    fn a_string_that_is_not_utf8_is_refused_and_bytes_are_not() {
        let mut request = logs_request();
        let record = &mut request.resource_logs[0].scope_logs[0].log_records[0];
        record.severity_text = "\u{7f}".into();
        let mut body = request.encode_to_vec();
        let at = body.iter().position(|&b| b == 0x7f).unwrap();
        body[at] = 0xff;
        assert_eq!(both_logs(&body), (None, None));
    }

    /// An attribute whose value nests arrays `levels` deep.
    fn nested(levels: usize) -> ExportLogsServiceRequest {
        let mut value = AnyValue {
            value: Some(Value::IntValue(1)),
        };
        for _ in 0..levels {
            value = AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let mut request = logs_request();
        request.resource_logs[0].scope_logs[0].log_records[0].body = Some(value);
        request
    }

    #[test]
    fn nesting_is_refused_exactly_where_prost_stops() {
        let mut verdicts = Vec::new();
        for levels in 40..56 {
            let body = nested(levels).encode_to_vec();
            let (prost, skimmed) = both_logs(&body);
            assert_eq!(prost, skimmed, "{levels} levels");
            verdicts.push(prost.is_some());
        }
        assert!(verdicts.first() == Some(&true) && verdicts.last() == Some(&false));
    }

    /// A field key and, for groups, what prost does with unknown ones.
    fn key_bytes(tag: u32, wire: u8) -> u8 {
        (tag << 3) as u8 | wire
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped_as_prost_skips_them() {
        let base = metrics_request().encode_to_vec();
        let cases: Vec<Vec<u8>> = vec![
            // Unknown varint, fixed32, fixed64 and delimited fields at the top.
            vec![key_bytes(9, VARINT), 1],
            vec![key_bytes(9, FIXED32), 1, 2, 3, 4],
            vec![key_bytes(9, FIXED64), 1, 2, 3, 4, 5, 6, 7, 8],
            vec![key_bytes(9, DELIMITED), 2, 0xff, 0xff],
            // A group with a field inside, properly ended; then mis-ended; then unended.
            vec![
                key_bytes(9, START_GROUP),
                key_bytes(1, VARINT),
                5,
                key_bytes(9, END_GROUP),
            ],
            vec![key_bytes(9, START_GROUP), key_bytes(8, END_GROUP)],
            vec![key_bytes(9, START_GROUP), key_bytes(1, VARINT), 5],
            vec![key_bytes(9, END_GROUP)],
            // Wire types 6 and 7, tag 0, a cut-short fixed64, an overlong varint.
            vec![key_bytes(9, 6)],
            vec![key_bytes(9, 7)],
            vec![0],
            vec![key_bytes(9, FIXED64), 1],
            vec![
                key_bytes(9, VARINT),
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                2,
            ],
            vec![
                key_bytes(9, VARINT),
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                1,
            ],
            // A known message field with the wrong wire type.
            vec![key_bytes(1, VARINT), 0],
        ];
        for extra in cases {
            let mut body = base.clone();
            body.extend_from_slice(&extra);
            let (prost, skimmed) = both_metrics(&body);
            assert_eq!(prost, skimmed, "{extra:?}");
        }
    }

    /// Each table next to prost's decoder of the same message.
    /// A message's name, its table, and whether prost decodes a body as that message.
    type Checked = (&'static str, &'static [Field], fn(&[u8]) -> bool);

    fn messages() -> Vec<Checked> {
        fn ok<M: Message + Default>(body: &[u8]) -> bool {
            M::decode(body).is_ok()
        }
        use opentelemetry_proto::tonic::common::v1 as common;
        use opentelemetry_proto::tonic::metrics::v1 as m;
        use opentelemetry_proto::tonic::trace::v1 as t;
        vec![
            ("AnyValue", &ANY_VALUE, ok::<common::AnyValue>),
            ("ArrayValue", &ARRAY_VALUE, ok::<common::ArrayValue>),
            ("KeyValueList", &KEY_VALUE_LIST, ok::<common::KeyValueList>),
            ("KeyValue", &KEY_VALUE, ok::<common::KeyValue>),
            (
                "InstrumentationScope",
                &SCOPE,
                ok::<common::InstrumentationScope>,
            ),
            ("EntityRef", &ENTITY_REF, ok::<common::EntityRef>),
            ("Resource", &RESOURCE, ok::<Resource>),
            (
                "ExportMetricsServiceRequest",
                &METRICS_REQUEST,
                ok::<ExportMetricsServiceRequest>,
            ),
            (
                "ResourceMetrics",
                &RESOURCE_METRICS,
                ok::<m::ResourceMetrics>,
            ),
            ("ScopeMetrics", &SCOPE_METRICS, ok::<m::ScopeMetrics>),
            ("Metric", &METRIC, ok::<m::Metric>),
            ("Gauge", &GAUGE_DATA, ok::<m::Gauge>),
            ("Sum", &SUM_DATA, ok::<m::Sum>),
            ("Histogram", &HISTOGRAM_DATA, ok::<m::Histogram>),
            (
                "ExponentialHistogram",
                &EXPONENTIAL_HISTOGRAM_DATA,
                ok::<m::ExponentialHistogram>,
            ),
            ("Summary", &SUMMARY_DATA, ok::<m::Summary>),
            ("NumberDataPoint", &NUMBER_POINT, ok::<m::NumberDataPoint>),
            (
                "HistogramDataPoint",
                &HISTOGRAM_POINT,
                ok::<m::HistogramDataPoint>,
            ),
            (
                "ExponentialHistogramDataPoint",
                &EXPONENTIAL_HISTOGRAM_POINT,
                ok::<m::ExponentialHistogramDataPoint>,
            ),
            ("Buckets", &BUCKETS, ok::<Buckets>),
            (
                "SummaryDataPoint",
                &SUMMARY_POINT,
                ok::<m::SummaryDataPoint>,
            ),
            ("ValueAtQuantile", &VALUE_AT_QUANTILE, ok::<ValueAtQuantile>),
            ("Exemplar", &EXEMPLAR, ok::<m::Exemplar>),
            (
                "ExportLogsServiceRequest",
                &LOGS_REQUEST,
                ok::<ExportLogsServiceRequest>,
            ),
            ("ResourceLogs", &RESOURCE_LOGS, ok::<ResourceLogs>),
            ("ScopeLogs", &SCOPE_LOGS, ok::<ScopeLogs>),
            ("LogRecord", &LOG_RECORD, ok::<LogRecord>),
            (
                "ExportTraceServiceRequest",
                &TRACES_REQUEST,
                ok::<ExportTraceServiceRequest>,
            ),
            ("ResourceSpans", &RESOURCE_SPANS, ok::<t::ResourceSpans>),
            ("ScopeSpans", &SCOPE_SPANS, ok::<t::ScopeSpans>),
            ("Span", &SPAN, ok::<t::Span>),
            ("Event", &EVENT, ok::<Event>),
            ("Link", &LINK, ok::<Link>),
            ("Status", &STATUS, ok::<t::Status>),
        ]
    }

    /// Every tag from 1 to 20 of every message, with every wire type and payloads that are
    /// valid for some field kinds and not others (a packed run, a string that is not UTF-8,
    /// a fixed64 run of the wrong length, an empty message, a group): each table says yes
    /// or no exactly where prost does, so a wrong kind, a wrong `repeated` or a missing
    /// field shows up here even where mutation would rarely reach it.
    #[test]
    fn every_tag_and_wire_type_gets_prosts_verdict_in_every_message() {
        let payloads: [&[u8]; 7] = [
            &[],
            &[1],
            &[0xff],
            &[0; 8],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            &[0x08, 1],
            &[0x80],
        ];
        let mut checked = 0;
        for (name, table, prost_ok) in messages() {
            for tag in 1..=20u32 {
                let key = |wire: u8| {
                    let mut k = Vec::new();
                    prost::encoding::encode_varint(u64::from(tag << 3 | u32::from(wire)), &mut k);
                    k
                };
                let mut bodies = vec![
                    [key(VARINT), vec![1]].concat(),
                    [key(VARINT), vec![0x80]].concat(),
                    [key(FIXED64), vec![0; 8]].concat(),
                    [key(FIXED32), vec![0; 4]].concat(),
                    [key(START_GROUP), key(END_GROUP)].concat(),
                    key(END_GROUP),
                ];
                for payload in payloads {
                    let mut body = key(DELIMITED);
                    body.push(payload.len() as u8);
                    body.extend_from_slice(payload);
                    bodies.push(body);
                }
                for body in bodies {
                    let ours = message(&body, table, RECURSION_LIMIT).is_ok();
                    assert_eq!(ours, prost_ok(&body), "{name}, tag {tag}: {body:?}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 34 * 20 * 13);
    }

    /// A oneof member twice merges; another member replaces.
    #[test]
    fn metric_data_counts_follow_prost_oneof_merging() {
        let sum = |temporality, points| {
            Data::Sum(Sum {
                data_points: vec![NumberDataPoint::default(); points],
                aggregation_temporality: temporality,
                is_monotonic: false,
            })
        };
        let gauge = Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint::default(); 4],
        });
        let encoded = |data: Data| metric("m", data).encode_to_vec();
        let request = |parts: &[Vec<u8>]| {
            // Metric fields one after another merge into one Metric.
            let metric = parts.concat();
            let mut scope = Vec::new();
            crate::wire::bytes(&mut scope, 2, &metric);
            let mut resource = Vec::new();
            crate::wire::bytes(&mut resource, 2, &scope);
            let mut body = Vec::new();
            crate::wire::bytes(&mut body, 1, &resource);
            body
        };
        for parts in [
            vec![encoded(sum(1, 2)), encoded(sum(2, 3))],
            vec![encoded(sum(1, 2)), encoded(sum(0, 3))],
            vec![encoded(sum(1, 2)), encoded(gauge.clone())],
            vec![encoded(gauge.clone()), encoded(sum(1, 2))],
            vec![encoded(sum(1, 2)), encoded(gauge), encoded(sum(0, 1))],
        ] {
            let body = request(&parts);
            let (prost, skimmed) = both_metrics(&body);
            assert!(prost.is_some());
            assert_eq!(prost, skimmed);
        }
    }

    /// A body with a few bytes changed, cut short or with bytes let in.
    pub(crate) fn mutated(body: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = body.len();
        let changes = prop::collection::vec((0..len, any::<u8>()), 1..4);
        let flips = (Just(body.clone()), changes).prop_map(|(mut body, changes)| {
            for (at, byte) in changes {
                body[at] = byte;
            }
            body
        });
        let cut = (Just(body.clone()), 0..len).prop_map(|(mut body, at)| {
            body.truncate(at);
            body
        });
        let inserted = (Just(body), 0..len, prop::collection::vec(any::<u8>(), 1..6)).prop_map(
            |(mut body, at, bytes)| {
                body.splice(at..at, bytes);
                body
            },
        );
        prop_oneof![3 => flips, 1 => cut, 1 => inserted]
    }

    proptest! {
        #![proptest_config(crate::testing::cases(512))]

        #[test]
        fn mutated_metrics_get_prosts_verdict_and_counts(
            body in mutated(metrics_request().encode_to_vec())
        ) {
            let (prost, skimmed) = both_metrics(&body);
            prop_assert_eq!(prost, skimmed);
        }

        #[test]
        fn mutated_logs_get_prosts_verdict_and_counts(
            body in mutated(logs_request().encode_to_vec())
        ) {
            let (prost, skimmed) = both_logs(&body);
            prop_assert_eq!(prost, skimmed);
        }

        #[test]
        fn mutated_traces_get_prosts_verdict_and_counts(
            body in mutated(traces_request().encode_to_vec())
        ) {
            let (prost, skimmed) = both_traces(&body);
            prop_assert_eq!(prost, skimmed);
        }

        #[test]
        fn arbitrary_bytes_get_prosts_verdict(
            body in prop::collection::vec(any::<u8>(), 0..64)
        ) {
            let (prost, skimmed) = both_metrics(&body);
            prop_assert_eq!(prost, skimmed);
            let (prost, skimmed) = both_logs(&body);
            prop_assert_eq!(prost, skimmed);
            let (prost, skimmed) = both_traces(&body);
            prop_assert_eq!(prost, skimmed);
        }
    }
}
