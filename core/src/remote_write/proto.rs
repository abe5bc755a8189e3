//! The Prometheus remote write 1.0 messages, written by hand with `prost`'s derive.
//!
//! Hand-written rather than generated so the workspace needs neither `protoc` nor a build
//! script; the five messages are small and frozen (remote write 1.0 will not change). Field
//! numbers follow `prompb/remote.proto` and `prompb/types.proto` of Prometheus. Exemplars
//! (`TimeSeries` field 3) and native histograms (field 4) are left out: Vigil does not send
//! them, and prost skips them when decoding a request that carries them.

/// One remote write request: the body of `POST /api/v1/write` before snappy compression.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    // Tag 2 is reserved upstream (Cortex used it for the request source).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// One series: its labels (sorted by name, `__name__` included) and its samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// What Prometheus knows about a metric family besides its samples.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricMetadata {
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `MetricMetadata.MetricType`: the values match `prometheus/common/model/metadata.go`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unknown = 0,
    Counter = 1,
    Gauge = 2,
    Histogram = 3,
    GaugeHistogram = 4,
    Summary = 5,
    Info = 6,
    Stateset = 7,
}

impl Label {
    /// A label from anything string-like; spares call sites two `into()`s.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The series of a `WriteRequest` encoded straight from borrowed strings, with what prost
/// would write for the same messages byte for byte (fields in tag order, proto3 defaults
/// left out), so that decoding gives back exactly the `TimeSeries` it stands for
/// (`Converted::request`, and a property test checks the bytes re-encode unchanged).
pub(super) mod wire {
    use crate::wire::{self, string_len, varint_len};

    /// `WriteRequest.timeseries`.
    pub(crate) const TIMESERIES: u32 = 1;
    /// `WriteRequest.metadata`.
    pub(crate) const METADATA: u32 = 3;

    /// Keys of `TimeSeries.labels` (1), `Label.name` (1) and `Label.value` (2), all
    /// length-delimited.
    const KEY_LABELS: u8 = 1 << 3 | 2;
    const KEY_NAME: u8 = 1 << 3 | 2;
    const KEY_VALUE: u8 = 2 << 3 | 2;

    /// Appends one `TimeSeries.labels` field (tag 1): a `Label` of `name` and `value`.
    pub(crate) fn label(buf: &mut Vec<u8>, name: &str, value: &str) {
        let (n, v) = (name.len(), value.len());
        // The usual label: neither string empty, the whole under 128 bytes, so every length
        // is one byte and the keys and lengths go in as two small fixed writes.
        if n > 0 && v > 0 && n + v + 4 < 0x80 {
            let len = (n + v + 4) as u8;
            buf.reserve(usize::from(len) + 2);
            buf.extend_from_slice(&[KEY_LABELS, len, KEY_NAME, n as u8]);
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(&[KEY_VALUE, v as u8]);
            buf.extend_from_slice(value.as_bytes());
            return;
        }
        wire::delimited_header(buf, 1, string_len(name) + string_len(value));
        wire::string(buf, 1, name);
        wire::string(buf, 2, value);
    }

    /// Appends one `TimeSeries.samples` field (tag 2): a `Sample`.
    pub(crate) fn sample(buf: &mut Vec<u8>, value: f64, timestamp: i64) {
        // proto3 leaves a default out; prost's test is `!= 0.0`, so -0.0 goes too.
        let has_value = value != 0.0;
        let len = if has_value { 9 } else { 0 }
            + if timestamp != 0 {
                varint_len(timestamp as u64)
            } else {
                0
            };
        wire::delimited_header(buf, 2, len);
        if has_value {
            wire::fixed64(buf, 1, value.to_bits());
        }
        if timestamp != 0 {
            wire::varint(buf, 2, timestamp as u64);
        }
    }
}
