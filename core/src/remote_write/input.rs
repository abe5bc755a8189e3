//! The OTLP metrics messages the conversion reads, decoded without copying a string.
//!
//! Decoded into `opentelemetry-proto`'s messages, every attribute key and string value of a
//! buffered request becomes its own `String`: allocating, copying and freeing them was a
//! third of the collector's time in the scrape benchmark, for strings that are read once and
//! thrown away. These messages have the same fields on the wire (tags and types from
//! `opentelemetry/proto/metrics/v1/metrics.proto` and `common/v1/common.proto`) and are
//! decoded by the same `prost` derive, so merging, oneofs, packed and unpacked repeats and
//! unknown fields behave exactly alike. Three things differ:
//!
//! - Strings are [`Bytes`] slices of the request's buffer (a reference count, no copy);
//!   [`text`] reads them.
//! - Fields the conversion never reads (start times, exemplars, min and max, schema URLs,
//!   scope attributes, dropped-attribute counts, entity references, metric metadata, key
//!   string-table indexes) are not declared, so prost skips them as unknown fields instead
//!   of building them. None of them is part of a oneof, where skipping would change which
//!   value wins.
//! - The points of gauges, sums and histograms, most of what arrives, stay bytes.
//!   [`NumberPoint::read`] and [`HistogramPoint::read`] read one with prost's field
//!   readers, and an attribute of the usual shape (a key and one string value) in place,
//!   without building a message for it.
//!
//! Property tests (`tests.rs`) hold these to `opentelemetry-proto`: any request read here
//! and written back decodes there to the original with only the skipped fields gone; and
//! any number or histogram point, mutated or not, reads here as prost's decoding reads it,
//! and fails where that fails.

use std::borrow::Cow;

use bytes::Bytes;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// The text of a string field. The receiver refuses a request with a string that is not
/// UTF-8 (prost's rule, see [`crate::otlp::skim`]), so a buffered one always is; should one
/// have been damaged after that, its text is U+FFFD rather than a panic or a lost batch.
pub fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or("\u{FFFD}")
}

/// `ExportMetricsServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricsRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_metrics: Vec<ResourceMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceMetrics {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_metrics: Vec<ScopeMetrics>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeMetrics {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub version: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<Value>,
}

/// `AnyValue.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(bytes = "bytes", tag = "1")]
    StringValue(Bytes),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    ArrayValue(ArrayValue),
    #[prost(message, tag = "6")]
    KvlistValue(KeyValueList),
    #[prost(bytes = "bytes", tag = "7")]
    BytesValue(Bytes),
    /// Declared although it is never read (it reads as no value, see
    /// [`crate::otlp::any_value_text`]): a later value of the oneof replaces an earlier one,
    /// so skipping this one would let the value before it through.
    #[prost(int32, tag = "8")]
    StringValueStrindex(i32),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub description: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    pub unit: Bytes,
    #[prost(oneof = "Data", tags = "5, 7, 9, 10, 11")]
    pub data: Option<Data>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Data {
    #[prost(message, tag = "5")]
    Gauge(Gauge),
    #[prost(message, tag = "7")]
    Sum(Sum),
    #[prost(message, tag = "9")]
    Histogram(Histogram),
    #[prost(message, tag = "10")]
    ExponentialHistogram(ExponentialHistogram),
    #[prost(message, tag = "11")]
    Summary(Summary),
}

/// `Gauge`. Its points stay bytes, read one at a time by [`NumberPoint::read`]: decoded
/// as messages, each point's vector of attributes, each attribute's value and their
/// reference counts were a third of the conversion of a scrape.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Gauge {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub data_points: Vec<Bytes>,
}

/// `Sum`; its points stay bytes as [`Gauge`]'s do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sum {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub data_points: Vec<Bytes>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
    #[prost(bool, tag = "3")]
    pub is_monotonic: bool,
}

/// `Histogram`; its points stay bytes as [`Gauge`]'s do, read by [`HistogramPoint::read`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Histogram {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub data_points: Vec<Bytes>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExponentialHistogram {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<ExponentialHistogramDataPoint>,
    #[prost(int32, tag = "2")]
    pub aggregation_temporality: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub data_points: Vec<SummaryDataPoint>,
}

/// `NumberDataPoint` as a message: what [`NumberPoint::read`] must read alike.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct NumberDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(uint32, tag = "8")]
    pub flags: u32,
    #[prost(oneof = "NumberValue", tags = "4, 6")]
    pub value: Option<NumberValue>,
}

#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum NumberValue {
    #[prost(double, tag = "4")]
    AsDouble(f64),
    #[prost(sfixed64, tag = "6")]
    AsInt(i64),
}

/// `HistogramDataPoint` as a message: what [`HistogramPoint::read`] must read alike.
#[cfg(test)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramDataPoint {
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    #[prost(fixed64, repeated, tag = "6")]
    pub bucket_counts: Vec<u64>,
    #[prost(double, repeated, tag = "7")]
    pub explicit_bounds: Vec<f64>,
    #[prost(uint32, tag = "10")]
    pub flags: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExponentialHistogramDataPoint {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, optional, tag = "5")]
    pub sum: Option<f64>,
    #[prost(sint32, tag = "6")]
    pub scale: i32,
    #[prost(fixed64, tag = "7")]
    pub zero_count: u64,
    #[prost(message, optional, tag = "8")]
    pub positive: Option<Buckets>,
    #[prost(message, optional, tag = "9")]
    pub negative: Option<Buckets>,
    #[prost(uint32, tag = "10")]
    pub flags: u32,
    #[prost(double, tag = "14")]
    pub zero_threshold: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Buckets {
    #[prost(sint32, tag = "1")]
    pub offset: i32,
    #[prost(uint64, repeated, tag = "2")]
    pub bucket_counts: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryDataPoint {
    #[prost(message, repeated, tag = "7")]
    pub attributes: Vec<KeyValue>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(fixed64, tag = "4")]
    pub count: u64,
    #[prost(double, tag = "5")]
    pub sum: f64,
    #[prost(message, repeated, tag = "6")]
    pub quantile_values: Vec<ValueAtQuantile>,
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ValueAtQuantile {
    #[prost(double, tag = "1")]
    pub quantile: f64,
    #[prost(double, tag = "2")]
    pub value: f64,
}

/// An attribute value as label text, by the rules of [`crate::otlp::any_value_text`]:
/// strings borrowed as they are; the rarer kinds are rebuilt as `opentelemetry-proto`
/// values and printed there, so both readings always agree.
pub fn value_text(value: Option<&AnyValue>) -> Cow<'_, str> {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Value::StringValueStrindex(_)) => Cow::Borrowed(""),
        Some(Value::StringValue(s)) => Cow::Borrowed(text(s)),
        Some(Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(other) => {
            let owned = owned_value(other);
            Cow::Owned(crate::otlp::any_value_text(Some(&owned)).into_owned())
        }
    }
}

/// The same value as an `opentelemetry-proto` message.
fn owned_value(value: &Value) -> opentelemetry_proto::tonic::common::v1::AnyValue {
    use opentelemetry_proto::tonic::common::v1 as otel;
    use otel::any_value::Value as V;
    let any = |v: &AnyValue| otel::AnyValue {
        value: v.value.as_ref().and_then(|v| owned_value(v).value),
    };
    let value = match value {
        Value::StringValue(s) => V::StringValue(text(s).to_owned()),
        Value::BoolValue(b) => V::BoolValue(*b),
        Value::IntValue(i) => V::IntValue(*i),
        Value::DoubleValue(d) => V::DoubleValue(*d),
        Value::BytesValue(b) => V::BytesValue(b.to_vec()),
        Value::StringValueStrindex(i) => V::StringValueStrindex(*i),
        Value::ArrayValue(a) => V::ArrayValue(otel::ArrayValue {
            values: a.values.iter().map(any).collect(),
        }),
        Value::KvlistValue(kv) => V::KvlistValue(otel::KeyValueList {
            values: kv
                .values
                .iter()
                .map(|kv| otel::KeyValue {
                    key: text(&kv.key).to_owned(),
                    value: kv.value.as_ref().map(any),
                    ..Default::default()
                })
                .collect(),
        }),
    };
    otel::AnyValue { value: Some(value) }
}

/// An attribute as label text: its key and its value by [`value_text`].
pub type Attribute<'a> = (&'a str, Cow<'a, str>);

/// The fields of a `NumberDataPoint` the conversion uses, read from the point's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberPoint {
    pub time_unix_nano: u64,
    pub flags: u32,
    pub value: Option<NumberValue>,
}

impl NumberPoint {
    /// Reads a point as prost reads [`NumberDataPoint`], with prost's own field readers: the
    /// last value of a field wins, unknown fields are skipped, a wrong wire type or a cut
    /// field is an error. Its attributes are appended to `attributes`.
    pub fn read<'a>(
        point: &'a Bytes,
        attributes: &mut Vec<Attribute<'a>>,
    ) -> Result<NumberPoint, DecodeError> {
        use prost::encoding::{double, fixed64, sfixed64, skip_field, uint32};
        let mut read = NumberPoint {
            time_unix_nano: 0,
            flags: 0,
            value: None,
        };
        each_field(point, |tag, wire, buf, ctx| {
            match tag {
                3 => fixed64::merge(wire, &mut read.time_unix_nano, buf, ctx)?,
                4 => {
                    let mut v = 0.0;
                    double::merge(wire, &mut v, buf, ctx)?;
                    read.value = Some(NumberValue::AsDouble(v));
                }
                6 => {
                    let mut v = 0;
                    sfixed64::merge(wire, &mut v, buf, ctx)?;
                    read.value = Some(NumberValue::AsInt(v));
                }
                7 => attributes.push(attribute_field(point, buf, tag, wire)?),
                8 => uint32::merge(wire, &mut read.flags, buf, ctx)?,
                _ => skip_field(wire, tag, buf, ctx)?,
            }
            Ok(())
        })?;
        Ok(read)
    }
}

/// The fields of a `HistogramDataPoint` the conversion uses, read from the point's bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramPoint {
    pub time_unix_nano: u64,
    pub count: u64,
    pub sum: Option<f64>,
    pub flags: u32,
}

impl HistogramPoint {
    /// Reads a point as prost reads [`HistogramDataPoint`] (see [`NumberPoint::read`]),
    /// appending its attributes, bucket counts and bounds (packed or not) to the three
    /// vectors, which the caller clears and reuses from point to point: decoded as
    /// messages, growing two new vectors per point was a seventh of a histogram's
    /// conversion.
    pub fn read<'a>(
        point: &'a Bytes,
        attributes: &mut Vec<Attribute<'a>>,
        counts: &mut Vec<u64>,
        bounds: &mut Vec<f64>,
    ) -> Result<HistogramPoint, DecodeError> {
        use prost::encoding::{double, fixed64, skip_field, uint32};
        let mut read = HistogramPoint {
            time_unix_nano: 0,
            count: 0,
            sum: None,
            flags: 0,
        };
        each_field(point, |tag, wire, buf, ctx| {
            match tag {
                3 => fixed64::merge(wire, &mut read.time_unix_nano, buf, ctx)?,
                4 => fixed64::merge(wire, &mut read.count, buf, ctx)?,
                5 => double::merge(wire, read.sum.get_or_insert(0.0), buf, ctx)?,
                6 => fixed64::merge_repeated(wire, counts, buf, ctx)?,
                7 => double::merge_repeated(wire, bounds, buf, ctx)?,
                9 => attributes.push(attribute_field(point, buf, tag, wire)?),
                10 => uint32::merge(wire, &mut read.flags, buf, ctx)?,
                _ => skip_field(wire, tag, buf, ctx)?,
            }
            Ok(())
        })?;
        Ok(read)
    }
}

/// Calls `field` with each field's tag and wire type and `buf` at its value, which `field`
/// reads or skips with prost's readers.
fn each_field<'a>(
    mut buf: &'a [u8],
    mut field: impl FnMut(u32, WireType, &mut &'a [u8], DecodeContext) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        let (tag, wire) = prost::encoding::decode_key(&mut buf)?;
        field(tag, wire, &mut buf, DecodeContext::default())?;
    }
    Ok(())
}

/// The attribute in the `KeyValue` field at the front of `buf` (its key just read), which
/// lies in `point`; `buf` moves past it.
fn attribute_field<'a>(
    point: &'a Bytes,
    buf: &mut &'a [u8],
    tag: u32,
    wire: WireType,
) -> Result<Attribute<'a>, DecodeError> {
    prost::encoding::check_wire_type(WireType::LengthDelimited, wire)?;
    // Skipped by prost first, so a cut field fails as it fails there.
    let field = *buf;
    prost::encoding::skip_field(wire, tag, buf, DecodeContext::default())?;
    let mut kv = &field[..field.len() - buf.len()];
    prost::encoding::decode_varint(&mut kv)?;
    attribute(point, kv)
}

/// One `KeyValue` from its bytes `kv`, which lie in `point`. The usual attribute (its key,
/// then a value holding one string, each once) is read in place; any other shape goes
/// through prost's decoding of [`KeyValue`], so merged and repeated fields mean what they
/// mean there.
fn attribute<'a>(point: &'a Bytes, kv: &'a [u8]) -> Result<Attribute<'a>, DecodeError> {
    if let Some((key, value)) = plain_attribute(kv) {
        return Ok((text(key), Cow::Borrowed(text(value))));
    }
    let decoded = KeyValue::decode(point.slice_ref(kv))?;
    // A decoded key that is not empty shares the point's buffer: borrow it from there.
    let key = match decoded.key.is_empty() {
        true => "",
        false => within(kv, &decoded.key).map_or("\u{FFFD}", text),
    };
    Ok((
        key,
        Cow::Owned(value_text(decoded.value.as_ref()).into_owned()),
    ))
}

/// The key and string value of a `KeyValue` that is exactly `key` (1) and `value` (2)
/// holding only `string_value` (1), in either order, each once; `None` for anything else.
fn plain_attribute(mut kv: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut key, mut value) = (None, None);
    while !kv.is_empty() {
        let field = kv[0];
        let body = short_delimited(&mut kv)?;
        match field {
            0x0a if key.is_none() => key = Some(body),
            0x12 if value.is_none() => {
                let mut any = body;
                if any.first() != Some(&0x0a) {
                    return None;
                }
                let string = short_delimited(&mut any)?;
                if !any.is_empty() {
                    return None;
                }
                value = Some(string);
            }
            _ => return None,
        }
    }
    Some((key?, value?))
}

/// Past a one-byte key and a one-byte length (under 128), the field's bytes; `None` if
/// the length takes more bytes or runs past the end.
fn short_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::from(*buf.get(1)?);
    if len >= 0x80 {
        return None;
    }
    let body = buf.get(2..2 + len)?;
    *buf = &buf[2 + len..];
    Some(body)
}

/// `inner` as a subslice of `outer` with `outer`'s lifetime, if it lies there.
fn within<'a>(outer: &'a [u8], inner: &[u8]) -> Option<&'a [u8]> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    outer.get(start..start + inner.len())
}
