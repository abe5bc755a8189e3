//! OTLP metrics → Prometheus remote write 1.0, as VictoriaMetrics' `/api/v1/write` and
//! Prometheus' remote write receiver accept it.
//!
//! Wire format: <https://prometheus.io/docs/specs/prw/remote_write_spec/> — a protobuf
//! `WriteRequest` ([`proto`]), compressed with snappy's *block* format (not the framed
//! format), sent with the three headers below. Conversion rules: the OpenTelemetry
//! specification "Prometheus and OpenMetrics Compatibility", section "OTLP Metric points to
//! Prometheus" (<https://opentelemetry.io/docs/specs/otel/compatibility/prometheus_and_openmetrics/>).
//!
//! - [`proto`]: the remote write 1.0 messages.
//! - [`convert_payloads()`]: buffered OTLP export requests → one [`WriteRequest`], with what
//!   was dropped and why; [`convert()`] does the same for decoded requests (tests, tools).
//! - [`input`]: the OTLP messages as the conversion reads them, strings left in the payload.
//! - [`naming`]: metric names, unit suffixes, label names, float formatting. Attribute values
//!   become label values with [`crate::otlp::any_value_text`].
//! - [`encode`] / [`decode`]: protobuf + snappy ([`crate::snappy`]), both ways; `decode`
//!   serves tests and the remote write receiver, and refuses a body that claims to inflate
//!   past a limit before allocating anything.
//!
//! Choices made (each explained where it is implemented):
//!
//! - **Delta temporality is never written.** Delta sums and histograms are dropped and
//!   counted ([`DropReason::DeltaTemporality`]): turning them into cumulative needs state
//!   across batches and collectors, and writing a delta as if it were cumulative silently
//!   corrupts every `rate()`. Senders should use cumulative temporality (or a
//!   delta-to-cumulative processor in front of Vigil).
//! - **Exponential histograms become classic `_bucket`/`_sum`/`_count` series**, the "MAY be
//!   converted to fixed-bucket histograms" branch of the spec, because remote write 1.0 has
//!   no native histograms in the messages we send. Each exponential bucket boundary becomes
//!   one `le`, cumulative from −Inf through the negative buckets, the zero bucket and the
//!   positive buckets. The price: boundaries move when the SDK rescales, which starts new
//!   `le` series (the same happens to any classic histogram whose buckets change).
//! - **One sample per series**; series with the same labels in one request are not merged
//!   (receivers accept both shapes, and merging would cost a hash map on the hot path).
//! - **Empty label values are omitted** ("a label with an empty value is a label that does
//!   not exist" in Prometheus); so a resource without `service.instance.id` gets no
//!   `instance` label rather than `instance=""`.
//! - **Precedence of labels with the same name** (highest first): `__name__`, `le`,
//!   `quantile`; then `job`, `instance`, `otel_scope_name`, `otel_scope_version`; then data
//!   point attributes; then promoted resource attributes. Data point attributes whose names
//!   sanitise to the same label are joined with `;`, ordered by original key (as the spec
//!   says).
//! - **Metadata**: one entry per metric family per request, the first one seen; its unit is
//!   the Prometheus unit word (`seconds`), the same that suffixes the name.

mod convert;
pub mod input;
mod labels;
pub mod naming;
pub mod proto;

pub use convert::{
    ConvertOptions, Converted, DropReason, Dropped, STALE_NAN, convert, convert_payloads,
};
pub use proto::{Label, MetricMetadata, MetricType, Sample, TimeSeries, WriteRequest};

use crate::snappy::{self, SnappyError};

/// `Content-Encoding` of a remote write body: snappy block format.
pub const CONTENT_ENCODING: &str = "snappy";
/// `Content-Type` of a remote write 1.0 body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// Name of the header that tells the receiver which remote write version it gets.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
/// Value of [`VERSION_HEADER`] for remote write 1.0 (the spec fixes it at `0.1.0`).
pub const VERSION: &str = "0.1.0";
/// The three headers every remote write 1.0 request must carry, as `(name, value)`. The
/// spec also asks for a `User-Agent`; the caller sets it, since it knows its own version.
pub const HEADERS: [(&str, &str); 3] = [
    ("Content-Encoding", CONTENT_ENCODING),
    ("Content-Type", CONTENT_TYPE),
    (VERSION_HEADER, VERSION),
];

/// Why a request could not be encoded: only a request too large for snappy's block format
/// (about 4 GiB), which a batcher should never let happen.
pub type EncodeError = SnappyError;

/// Why a remote write body could not be decoded. Every variant but
/// [`SnappyError::Compress`], which decoding never returns, is the sender's fault: a
/// receiver answers it with HTTP 400.
pub type DecodeError = SnappyError;

/// Encodes a request as a remote write body: protobuf, then snappy block compression.
pub fn encode(req: &WriteRequest) -> Result<Vec<u8>, EncodeError> {
    snappy::encode_message(req)
}

/// Decodes a remote write body. The decompressed size that snappy's header declares is
/// checked against `max_decompressed` before anything is allocated, so a small hostile body
/// cannot make the receiver allocate gigabytes.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<WriteRequest, DecodeError> {
    snappy::decode_message(body, max_decompressed)
}

#[cfg(test)]
mod tests;
