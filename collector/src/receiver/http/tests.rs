use std::io::Write;

use axum::http::{Request, StatusCode};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tower::ServiceExt;
use vigil_core::buffer::memory::MemoryBuffer;
use vigil_core::buffer::{BatchLimits, Buffer, Record};

use super::*;
use crate::telemetry::Telemetry;

const MIB: usize = 1 << 20;

/// An OTLP/HTTP app over a memory buffer, with handles on what it writes to.
struct Harness {
    app: Router,
    buffer: MemoryBuffer,
    telemetry: Telemetry,
}

struct Options {
    exported: [bool; 3],
    buffer_bytes: u64,
    limits: Limits,
    default_tenant: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            exported: [true; 3],
            buffer_bytes: 64 * MIB as u64,
            limits: Limits {
                max_request_bytes: MIB,
                max_decompressed_bytes: 2 * MIB,
            },
            default_tenant: None,
        }
    }
}

impl Harness {
    fn new() -> Harness {
        Harness::with(Options::default())
    }

    fn with(options: Options) -> Harness {
        let buffer = MemoryBuffer::new(options.buffer_bytes);
        let telemetry = Telemetry::new();
        let ingest = Arc::new(Ingest::new(
            Arc::new(buffer.clone()),
            telemetry.clone(),
            options.exported,
            options.default_tenant,
        ));
        let app = app(
            ingest,
            options.limits,
            header::HeaderName::from_static("x-scope-orgid"),
        );
        Harness {
            app,
            buffer,
            telemetry,
        }
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, body)
    }

    /// Every record in the buffer for `signal`, in order.
    async fn buffered(&self, signal: Signal) -> Vec<Record> {
        let pending = self.buffer.stats().await.signals[signal.index()].pending_records;
        if pending == 0 {
            return Vec::new();
        }
        let mut consumer = self.buffer.consumer(signal).await.unwrap();
        let batch = consumer
            .next_batch(BatchLimits {
                max_records: usize::MAX,
                max_bytes: usize::MAX,
            })
            .await
            .unwrap();
        // The consumer is dropped unacked, so the records stay buffered.
        batch.into_iter().map(|d| d.record).collect()
    }

    fn received(&self, signal: Signal) -> u64 {
        self.telemetry
            .received_items
            .with_label_values(&[signal.as_str(), "http"])
            .get()
    }

    fn buffered_items(&self, signal: Signal) -> u64 {
        self.telemetry
            .buffered_items
            .with_label_values(&[signal.as_str()])
            .get()
    }

    fn refused(&self, signal: Signal, reason: &str) -> (u64, u64) {
        let labels = [signal.as_str(), reason];
        (
            self.telemetry
                .refused_requests
                .with_label_values(&labels)
                .get(),
            self.telemetry
                .refused_items
                .with_label_values(&labels)
                .get(),
        )
    }
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn logs(records: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); records],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn traces(spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); spans],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn sums(temporality: AggregationTemporality, points: usize) -> Metric {
    Metric {
        name: "requests".into(),
        data: Some(Data::Sum(Sum {
            data_points: vec![NumberDataPoint::default(); points],
            aggregation_temporality: temporality as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn metrics(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// The google.rpc.Status of a protobuf error answer.
fn status_of(body: &[u8]) -> tonic_types::Status {
    tonic_types::Status::decode(body).expect("error body is a google.rpc.Status")
}

#[tokio::test]
async fn protobuf_logs_are_buffered_and_answered_in_protobuf() {
    let h = Harness::new();
    let request = logs(3);
    let (status, headers, body) = h
        .send(post("/v1/logs", PROTOBUF, request.encode_to_vec()))
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], PROTOBUF);
    let response = ExportLogsServiceResponse::decode(body).unwrap();
    assert_eq!(response.partial_success, None);

    let records = h.buffered(Signal::Logs).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].items, 3);
    assert_eq!(records[0].tenant, None);
    assert_eq!(
        ExportLogsServiceRequest::decode(records[0].payload.clone()).unwrap(),
        request,
        "the body is stored as it came"
    );
    assert_eq!(h.received(Signal::Logs), 3);
    assert_eq!(h.buffered_items(Signal::Logs), 3);
}

#[tokio::test]
async fn json_traces_are_stored_as_protobuf_and_answered_in_json() {
    let h = Harness::new();
    let request = traces(2);
    let json = serde_json::to_vec(&request).unwrap();
    let (status, headers, body) = h
        .send(post("/v1/traces", "application/json; charset=utf-8", json))
        .await;

    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers[header::CONTENT_TYPE], JSON);
    let response: ExportTraceServiceResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(response.partial_success, None);

    let records = h.buffered(Signal::Traces).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].items, 2);
    assert_eq!(
        ExportTraceServiceRequest::decode(records[0].payload.clone()).unwrap(),
        request
    );
    assert_eq!(h.received(Signal::Traces), 2);
}

#[tokio::test]
async fn unknown_json_fields_are_ignored() {
    // OTLP: receivers MUST ignore unknown fields, so newer senders keep working.
    let h = Harness::new();
    let json = r#"{
        "resourceLogs": [{
            "resource": { "attributes": [], "fromTheFuture": 1 },
            "scopeLogs": [{
                "logRecords": [
                    { "body": { "stringValue": "hello" }, "newField": { "x": [1, 2] } }
                ],
                "alsoNew": "yes"
            }]
        }],
        "topLevelNew": true
    }"#;
    let (status, _, body) = h.send(post("/v1/logs", JSON, json)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h.received(Signal::Logs), 1);
}

#[tokio::test]
async fn a_gzip_body_is_decompressed() {
    let h = Harness::new();
    let request = Request::post("/v1/logs")
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(gzip(&logs(4).encode_to_vec())))
        .unwrap();
    let (status, _, _) = h.send(request).await;
    assert_eq!(status, StatusCode::OK);
    let records = h.buffered(Signal::Logs).await;
    assert_eq!(records.len(), 1);
    assert_eq!(
        ExportLogsServiceRequest::decode(records[0].payload.clone()).unwrap(),
        logs(4),
        "the buffer holds the decompressed request"
    );
}

#[tokio::test]
async fn media_types_are_case_insensitive() {
    let h = Harness::new();
    let request = Request::post("/v1/logs")
        .header(header::CONTENT_TYPE, "Application/X-Protobuf")
        .header(header::CONTENT_ENCODING, "GZIP")
        .body(Body::from(gzip(&logs(1).encode_to_vec())))
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test]
async fn an_empty_request_succeeds_and_stores_nothing() {
    let h = Harness::new();
    let (status, _, _) = h.send(post("/v1/metrics", PROTOBUF, Vec::new())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(h.buffered(Signal::Metrics).await.is_empty());
    assert_eq!(h.buffered_items(Signal::Metrics), 0);
}

#[tokio::test]
async fn garbage_protobuf_is_a_400_naming_the_message() {
    let h = Harness::new();
    let (status, headers, body) = h
        .send(post(
            "/v1/metrics",
            PROTOBUF,
            &b"\xff\xff\xff\xff not protobuf"[..],
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], PROTOBUF);
    let rpc = status_of(&body);
    assert_eq!(rpc.code, tonic::Code::InvalidArgument as i32);
    assert!(
        rpc.message.contains("ExportMetricsServiceRequest"),
        "{}",
        rpc.message
    );
    assert!(h.buffered(Signal::Metrics).await.is_empty());
    // An undecodable body has no item count: the request is counted, no items.
    assert_eq!(h.refused(Signal::Metrics, "invalid"), (1, 0));
    assert_eq!(h.received(Signal::Metrics), 0);
}

#[tokio::test]
async fn invalid_json_is_a_400_answered_in_json() {
    let h = Harness::new();
    let (status, headers, body) = h
        .send(post("/v1/logs", JSON, r#"{"resourceLogs": 7}"#))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[header::CONTENT_TYPE], JSON);
    let rpc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rpc["code"], tonic::Code::InvalidArgument as i32);
    let message = rpc["message"].as_str().unwrap();
    assert!(message.contains("ExportLogsServiceRequest"), "{message}");
}

#[tokio::test]
async fn an_unsupported_content_type_is_a_415() {
    let h = Harness::new();
    for content_type in [None, Some("text/plain"), Some("application/grpc")] {
        let mut request = Request::post("/v1/logs");
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request.body(Body::from(logs(1).encode_to_vec())).unwrap();
        let (status, headers, body) = h.send(request).await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        // The encoding is unknown, so the answer uses OTLP's default, protobuf.
        assert_eq!(headers[header::CONTENT_TYPE], PROTOBUF);
        assert!(status_of(&body).message.contains("Content-Type"));
    }
    assert!(h.buffered(Signal::Logs).await.is_empty());
    assert_eq!(h.refused(Signal::Logs, "unsupported_media_type"), (3, 0));
}

#[tokio::test]
async fn an_unknown_content_encoding_is_a_415() {
    let h = Harness::new();
    let request = Request::post("/v1/logs")
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(header::CONTENT_ENCODING, "br")
        .body(Body::from(logs(1).encode_to_vec()))
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(status_of(&body).message.contains("Content-Encoding `br`"));
    assert_eq!(h.refused(Signal::Logs, "unsupported_media_type").0, 1);
}

#[tokio::test]
async fn a_gzip_header_on_a_plain_body_is_a_400() {
    let h = Harness::new();
    let request = Request::post("/v1/logs")
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(logs(1).encode_to_vec()))
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(status_of(&body).message.contains("invalid gzip body"));
}

#[tokio::test]
async fn a_body_over_max_request_bytes_is_a_413() {
    let h = Harness::with(Options {
        limits: Limits {
            max_request_bytes: 1024,
            max_decompressed_bytes: 1024,
        },
        ..Options::default()
    });
    let (status, _, body) = h.send(post("/v1/logs", PROTOBUF, vec![0u8; 1025])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(status_of(&body).message.contains("exceeds 1024 bytes"));
    assert_eq!(h.refused(Signal::Logs, "too_large"), (1, 0));
}

#[tokio::test]
async fn a_gzip_bomb_is_a_413() {
    // 50 MiB of zeros compress to about 50 KiB.
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let zeros = vec![0u8; MIB];
    for _ in 0..50 {
        encoder.write_all(&zeros).unwrap();
    }
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < MIB / 4, "{} bytes", bomb.len());

    let h = Harness::with(Options {
        limits: Limits {
            max_request_bytes: MIB,
            max_decompressed_bytes: MIB,
        },
        ..Options::default()
    });
    let request = Request::post("/v1/logs")
        .header(header::CONTENT_TYPE, PROTOBUF)
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(bomb.clone()))
        .unwrap();
    let (status, _, body) = h.send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        status_of(&body).message.contains("once decompressed"),
        "{:?}",
        status_of(&body)
    );
    assert_eq!(h.refused(Signal::Logs, "too_large"), (1, 0));
}

#[test]
fn gunzip_stops_one_byte_past_the_limit() {
    let exactly = gzip(&[7u8; 1000]);
    assert_eq!(gunzip(&exactly, 1000).unwrap().len(), 1000);
    assert!(matches!(gunzip(&exactly, 999), Err(Refusal::TooLarge(_))));
    // Concatenated gzip members are one body (RFC 1952), and the limit covers them all.
    let two = [gzip(&[1u8; 600]), gzip(&[2u8; 600])].concat();
    assert_eq!(gunzip(&two, 1200).unwrap().len(), 1200);
    assert!(matches!(gunzip(&two, 1000), Err(Refusal::TooLarge(_))));
    assert!(matches!(gunzip(b"plain", 1000), Err(Refusal::Invalid(_))));
}

#[tokio::test]
async fn a_full_buffer_is_a_429_with_retry_after() {
    let body = logs(2).encode_to_vec();
    let one_record = Record::new(Signal::Logs, None, 2, Bytes::from(body.clone())).encoded_len();
    let h = Harness::with(Options {
        buffer_bytes: one_record as u64,
        ..Options::default()
    });
    let (status, _, _) = h.send(post("/v1/logs", PROTOBUF, body.clone())).await;
    assert_eq!(status, StatusCode::OK);

    let (status, headers, response) = h.send(post("/v1/logs", PROTOBUF, body)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(
        status_of(&response).code,
        tonic::Code::ResourceExhausted as i32
    );
    assert_eq!(h.refused(Signal::Logs, "buffer_full"), (1, 2));
    assert_eq!(h.received(Signal::Logs), 2, "only the first request");
    assert_eq!(h.buffered_items(Signal::Logs), 2);
}

#[tokio::test]
async fn a_request_larger_than_the_whole_buffer_is_a_413_not_a_429() {
    let h = Harness::with(Options {
        buffer_bytes: 64,
        ..Options::default()
    });
    let mut request = logs(1);
    request.resource_logs[0].scope_logs[0].log_records[0].severity_text = "x".repeat(100);
    let (status, headers, _) = h
        .send(post("/v1/logs", PROTOBUF, request.encode_to_vec()))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        headers.get(header::RETRY_AFTER).is_none(),
        "retrying cannot help"
    );
}

#[tokio::test]
async fn a_signal_without_exporter_is_a_501() {
    let h = Harness::with(Options {
        exported: [true, true, false],
        ..Options::default()
    });
    let (status, _, body) = h
        .send(post("/v1/traces", PROTOBUF, traces(3).encode_to_vec()))
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED);
    let rpc = status_of(&body);
    assert_eq!(rpc.code, tonic::Code::Unimplemented as i32);
    assert!(
        rpc.message.contains("no traces exporter"),
        "{}",
        rpc.message
    );
    assert!(h.buffered(Signal::Traces).await.is_empty());
    // Refused before decoding, so the items are not known.
    assert_eq!(h.refused(Signal::Traces, "not_exported"), (1, 0));
}

#[tokio::test]
async fn the_tenant_header_is_checked_and_stored() {
    let h = Harness::new();
    let with_tenant = |tenant: &[u8]| {
        Request::post("/v1/logs")
            .header(header::CONTENT_TYPE, PROTOBUF)
            .header("X-Scope-OrgID", HeaderValue::from_bytes(tenant).unwrap())
            .body(Body::from(logs(1).encode_to_vec()))
            .unwrap()
    };

    let (status, _, _) = h.send(with_tenant(b"team-a")).await;
    assert_eq!(status, StatusCode::OK);

    for bad in [&b"a/b"[..], b"..", "caf\u{e9}".as_bytes()] {
        let (status, _, body) = h.send(with_tenant(bad)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(status_of(&body).code, tonic::Code::InvalidArgument as i32);
    }
    let records = h.buffered(Signal::Logs).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].tenant.as_deref(), Some("team-a"));
    assert_eq!(h.refused(Signal::Logs, "invalid").0, 3);
}

#[tokio::test]
async fn requests_without_tenant_get_the_default_tenant() {
    let h = Harness::with(Options {
        default_tenant: Some("fallback".into()),
        ..Options::default()
    });
    let (status, _, _) = h
        .send(post("/v1/logs", PROTOBUF, logs(1).encode_to_vec()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let records = h.buffered(Signal::Logs).await;
    assert_eq!(records[0].tenant.as_deref(), Some("fallback"));
}

#[tokio::test]
async fn delta_metrics_are_accepted_with_a_partial_success() {
    let h = Harness::new();
    let request = metrics(vec![
        sums(AggregationTemporality::Cumulative, 2),
        sums(AggregationTemporality::Delta, 3),
    ]);

    let (status, _, body) = h
        .send(post("/v1/metrics", PROTOBUF, request.encode_to_vec()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let partial = ExportMetricsServiceResponse::decode(body)
        .unwrap()
        .partial_success
        .expect("delta points are reported as rejected");
    assert_eq!(partial.rejected_data_points, 3);
    assert!(partial.error_message.contains("delta temporality"));

    let (status, headers, body) = h
        .send(post(
            "/v1/metrics",
            JSON,
            serde_json::to_vec(&request).unwrap(),
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], JSON);
    let response: ExportMetricsServiceResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_data_points, 3);

    // The whole request is buffered; the exporter drops and counts the delta points.
    let records = h.buffered(Signal::Metrics).await;
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.items == 5));
    assert_eq!(h.received(Signal::Metrics), 10);
}

#[tokio::test]
async fn cumulative_metrics_have_no_partial_success() {
    let h = Harness::new();
    let request = metrics(vec![sums(AggregationTemporality::Cumulative, 2)]);
    let (status, _, body) = h
        .send(post("/v1/metrics", PROTOBUF, request.encode_to_vec()))
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = ExportMetricsServiceResponse::decode(body).unwrap();
    assert_eq!(response.partial_success, None);
}

#[tokio::test]
async fn only_post_on_the_three_paths_is_served() {
    let h = Harness::new();
    let (status, _, _) = h.send(post("/v1/profiles", PROTOBUF, Vec::new())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let get = Request::get("/v1/logs").body(Body::empty()).unwrap();
    let (status, _, _) = h.send(get).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
