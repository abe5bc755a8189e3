//! Decoding and inspecting OTLP export requests.
//!
//! Receivers accept OTLP as protobuf or JSON; the buffer always stores protobuf, so JSON is
//! decoded and re-encoded once, at the edge. Protobuf bodies are checked as prost would
//! decode them, without building them ([`skim`]), and stored byte for byte as they came.
//!
//! OTLP/JSON per the OTLP specification: field names in lowerCamelCase, trace and span ids
//! in hex, 64-bit integers as strings or numbers, enums as integers. Unknown fields are
//! ignored, as the specification requires of receivers (forward compatibility).
//!
//! [`any_value_text`] is how every exporter prints an attribute value (a Prometheus label
//! value, a Loki label or structured-metadata value), so one attribute reads the same
//! everywhere.

pub mod skim;
mod split;

pub use split::{Piece, SplitError, split};

use std::borrow::Cow;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric::Data};
use prost::Message;

use crate::Signal;
use crate::remote_write::naming::format_float;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid OTLP protobuf {message}: {source}")]
    Protobuf {
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("invalid OTLP JSON {message}: {source}")]
    Json {
        message: &'static str,
        source: serde_json::Error,
    },
}

/// A decoded request of any signal.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
    Traces(ExportTraceServiceRequest),
}

/// What the receiver needs to know about a valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspected {
    /// The request as protobuf: the body itself for protobuf, re-encoded for JSON.
    pub protobuf: Bytes,
    /// Data points, log records or spans in the request.
    pub items: u64,
    /// Metric data points no exporter can write as they are (delta temporality); the
    /// receiver reports them as rejected in the OTLP partial-success answer.
    pub unsupported_points: u64,
}

fn message_name(signal: Signal) -> &'static str {
    match signal {
        Signal::Metrics => "ExportMetricsServiceRequest",
        Signal::Logs => "ExportLogsServiceRequest",
        Signal::Traces => "ExportTraceServiceRequest",
    }
}

impl Request {
    pub fn decode(signal: Signal, encoding: Encoding, body: &[u8]) -> Result<Request, DecodeError> {
        let message = message_name(signal);
        match encoding {
            Encoding::Protobuf => {
                let wrap = |source| DecodeError::Protobuf { message, source };
                Ok(match signal {
                    Signal::Metrics => Request::Metrics(Message::decode(body).map_err(wrap)?),
                    Signal::Logs => Request::Logs(Message::decode(body).map_err(wrap)?),
                    Signal::Traces => Request::Traces(Message::decode(body).map_err(wrap)?),
                })
            }
            Encoding::Json => {
                let wrap = |source| DecodeError::Json { message, source };
                Ok(match signal {
                    Signal::Metrics => {
                        Request::Metrics(serde_json::from_slice(body).map_err(wrap)?)
                    }
                    Signal::Logs => Request::Logs(serde_json::from_slice(body).map_err(wrap)?),
                    Signal::Traces => Request::Traces(serde_json::from_slice(body).map_err(wrap)?),
                })
            }
        }
    }

    pub fn encode_to_vec(&self) -> Vec<u8> {
        match self {
            Request::Metrics(r) => r.encode_to_vec(),
            Request::Logs(r) => r.encode_to_vec(),
            Request::Traces(r) => r.encode_to_vec(),
        }
    }
}

/// Checks a request body and counts what it holds.
pub fn inspect(signal: Signal, encoding: Encoding, body: Bytes) -> Result<Inspected, DecodeError> {
    if encoding == Encoding::Protobuf {
        let skimmed = match signal {
            Signal::Metrics => skim::metrics(&body).map(|c| (c.points, c.delta_points)),
            Signal::Logs => skim::logs(&body).map(|n| (n, 0)),
            Signal::Traces => skim::traces(&body).map(|n| (n, 0)),
        };
        // A refusal goes through prost below, whose error says what is wrong (and whose
        // verdict would stand, were the two ever to disagree).
        if let Ok((items, unsupported_points)) = skimmed {
            return Ok(Inspected {
                protobuf: body,
                items,
                unsupported_points,
            });
        }
    }
    let request = Request::decode(signal, encoding, &body)?;
    let (items, unsupported_points) = match &request {
        Request::Metrics(r) => metric_points(r),
        Request::Logs(r) => (log_records(r), 0),
        Request::Traces(r) => (spans(r), 0),
    };
    let protobuf = match encoding {
        Encoding::Protobuf => body,
        Encoding::Json => Bytes::from(request.encode_to_vec()),
    };
    Ok(Inspected {
        protobuf,
        items,
        unsupported_points,
    })
}

/// (all data points, delta-temporality data points)
pub fn metric_points(request: &ExportMetricsServiceRequest) -> (u64, u64) {
    let delta = AggregationTemporality::Delta as i32;
    let mut all = 0u64;
    let mut delta_points = 0u64;
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics);
    for metric in metrics {
        let (points, temporality) = match &metric.data {
            Some(Data::Gauge(g)) => (g.data_points.len(), None),
            Some(Data::Sum(s)) => (s.data_points.len(), Some(s.aggregation_temporality)),
            Some(Data::Histogram(h)) => (h.data_points.len(), Some(h.aggregation_temporality)),
            Some(Data::ExponentialHistogram(h)) => {
                (h.data_points.len(), Some(h.aggregation_temporality))
            }
            Some(Data::Summary(s)) => (s.data_points.len(), None),
            None => (0, None),
        };
        all += points as u64;
        if temporality == Some(delta) {
            delta_points += points as u64;
        }
    }
    (all, delta_points)
}

pub fn log_records(request: &ExportLogsServiceRequest) -> u64 {
    request
        .resource_logs
        .iter()
        .flat_map(|rl| &rl.scope_logs)
        .map(|sl| sl.log_records.len() as u64)
        .sum()
}

pub fn spans(request: &ExportTraceServiceRequest) -> u64 {
    request
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len() as u64)
        .sum()
}

/// An attribute value as text, following the OpenTelemetry attribute rules the Prometheus
/// compatibility spec points to: strings as they are, booleans and integers printed, doubles
/// as Prometheus prints floats ([`format_float`]: `2`, `0.25`, `1e+06`, `+Inf`, `NaN`), byte
/// arrays as [`base64`], arrays and maps as JSON (map keys sorted, so the same map always
/// gives the same text). A missing value is empty.
pub fn any_value_text(value: Option<&AnyValue>) -> Cow<'_, str> {
    match value.and_then(|v| v.value.as_ref()) {
        // A string-table index only means something inside an OTLP profile; metrics and logs
        // have no table to resolve it against, so it carries no value here.
        None | Some(Value::StringValueStrindex(_)) => Cow::Borrowed(""),
        Some(Value::StringValue(s)) => Cow::Borrowed(s),
        Some(Value::BoolValue(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => Cow::Owned(i.to_string()),
        Some(Value::DoubleValue(d)) => Cow::Owned(format_float(*d)),
        Some(Value::BytesValue(b)) => Cow::Owned(base64(b)),
        Some(v @ (Value::ArrayValue(_) | Value::KvlistValue(_))) => Cow::Owned(json(v).to_string()),
    }
}

/// JSON for [`any_value_text`]; non-finite doubles, which JSON cannot hold, become `null`.
fn json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let any = |v: &AnyValue| v.value.as_ref().map_or(J::Null, json);
    match value {
        Value::StringValue(s) => J::String(s.clone()),
        Value::StringValueStrindex(_) => J::Null,
        Value::BoolValue(b) => J::Bool(*b),
        Value::IntValue(i) => J::from(*i),
        Value::DoubleValue(d) => J::from(*d),
        Value::BytesValue(b) => J::String(base64(b)),
        Value::ArrayValue(a) => J::Array(a.values.iter().map(any).collect()),
        Value::KvlistValue(kv) => J::Object(
            kv.values
                .iter()
                .map(|KeyValue { key, value, .. }| {
                    (key.clone(), value.as_ref().map_or(J::Null, any))
                })
                .collect(),
        ),
    }
}

/// Standard base64 with padding (RFC 4648 §4), as OTLP/JSON writes bytes. Small enough not
/// to warrant a dependency.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    const METRICS_JSON: &str = r#"{
      "resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
        "scopeMetrics": [{
          "scope": {"name": "demo"},
          "metrics": [
            {"name": "requests", "sum": {"aggregationTemporality": 2, "isMonotonic": true,
              "dataPoints": [{"asInt": "5", "timeUnixNano": "1700000000000000000"},
                             {"asInt": 7, "timeUnixNano": "1700000000000000000"}]}},
            {"name": "inflight", "sum": {"aggregationTemporality": 1,
              "dataPoints": [{"asDouble": 1.5, "timeUnixNano": "1700000000000000000"}]}},
            {"name": "temp", "gauge": {"dataPoints": [{"asDouble": 21.5}]}, "futureField": true}
          ]
        }]
      }]
    }"#;

    #[test]
    fn json_doubles_are_read_bit_for_bit() {
        // Found by the property tests: serde_json's default float parser reads this one
        // 1 ULP off; the workspace enables its `float_roundtrip` feature.
        let value: f64 = -8.936495064004062e173;
        let body = format!(
            r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"m",
                "gauge":{{"dataPoints":[{{"asDouble":{value:e}}}]}}}}]}}]}}]}}"#
        );
        let Request::Metrics(request) =
            Request::decode(Signal::Metrics, Encoding::Json, body.as_bytes()).unwrap()
        else {
            panic!("not metrics");
        };
        let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
        let Some(Data::Gauge(gauge)) = &metric.data else {
            panic!("not a gauge: {metric:?}");
        };
        let read = match gauge.data_points[0].value {
            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                v,
            )) => v,
            ref other => panic!("{other:?}"),
        };
        assert_eq!(read.to_bits(), value.to_bits(), "{read:e} != {value:e}");
    }

    #[test]
    fn json_is_decoded_counted_and_reencoded() {
        let inspected = inspect(
            Signal::Metrics,
            Encoding::Json,
            Bytes::from_static(METRICS_JSON.as_bytes()),
        )
        .unwrap();
        assert_eq!(inspected.items, 4);
        assert_eq!(inspected.unsupported_points, 1);
        let back = ExportMetricsServiceRequest::decode(inspected.protobuf).unwrap();
        let metrics = &back.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics[0].name, "requests");
        assert_eq!(metrics.len(), 3);
    }

    #[test]
    fn protobuf_is_kept_byte_for_byte() {
        let request =
            Request::decode(Signal::Metrics, Encoding::Json, METRICS_JSON.as_bytes()).unwrap();
        let body = Bytes::from(request.encode_to_vec());
        let inspected = inspect(Signal::Metrics, Encoding::Protobuf, body.clone()).unwrap();
        assert_eq!(inspected.protobuf, body);
        assert_eq!(inspected.items, 4);
    }

    #[test]
    fn garbage_is_an_error_naming_the_message() {
        let err = inspect(
            Signal::Logs,
            Encoding::Protobuf,
            Bytes::from_static(b"\xff\xff\xff\xff"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid OTLP protobuf ExportLogsServiceRequest"),
            "{err}"
        );
        let err = inspect(
            Signal::Traces,
            Encoding::Json,
            Bytes::from_static(b"{\"resourceSpans\": 3}"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid OTLP JSON ExportTraceServiceRequest"),
            "{err}"
        );
    }

    #[test]
    fn logs_and_spans_are_counted() {
        let logs = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a"}},{"body":{"stringValue":"b"}}]}]}]}"#;
        let inspected = inspect(
            Signal::Logs,
            Encoding::Json,
            Bytes::from_static(logs.as_bytes()),
        )
        .unwrap();
        assert_eq!(inspected.items, 2);
        let spans = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /"}]}]}]}"#;
        let inspected = inspect(
            Signal::Traces,
            Encoding::Json,
            Bytes::from_static(spans.as_bytes()),
        )
        .unwrap();
        assert_eq!(inspected.items, 1);
    }

    fn any(value: Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(value) })
    }

    fn text(value: Option<AnyValue>) -> String {
        any_value_text(value.as_ref()).into_owned()
    }

    #[test]
    fn any_values_as_text() {
        assert_eq!(text(any(Value::StringValue("x".into()))), "x");
        assert_eq!(text(any(Value::IntValue(-3))), "-3");
        assert_eq!(text(any(Value::BoolValue(true))), "true");
        // Doubles as Prometheus prints them (Go's 'g' format), not Rust's `{:?}` (`2.0`).
        assert_eq!(text(any(Value::DoubleValue(1.5))), "1.5");
        assert_eq!(text(any(Value::DoubleValue(2.0))), "2");
        assert_eq!(text(any(Value::DoubleValue(1e6))), "1e+06");
        assert_eq!(text(any(Value::DoubleValue(f64::NEG_INFINITY))), "-Inf");
        assert_eq!(text(any(Value::BytesValue(b"hello".to_vec()))), "aGVsbG8=");
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(Value::StringValue("a".into())),
                },
                AnyValue {
                    value: Some(Value::IntValue(1)),
                },
                AnyValue {
                    value: Some(Value::DoubleValue(f64::NAN)),
                },
                AnyValue { value: None },
            ],
        });
        assert_eq!(text(any(array)), r#"["a",1,null,null]"#);
        let kv = |key: &str, value| KeyValue {
            key: key.into(),
            value: any(value),
            ..KeyValue::default()
        };
        let map = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("z", Value::BytesValue(vec![0xff])),
                kv("a", Value::DoubleValue(0.5)),
            ],
        });
        assert_eq!(text(any(map)), r#"{"a":0.5,"z":"/w=="}"#);
        assert_eq!(text(Some(AnyValue { value: None })), "");
        assert_eq!(text(None), "");
    }

    #[test]
    fn base64_pads_like_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }
}
