//! Bad input and bad backends: each gets its documented answer, nothing is lost, and the
//! collector keeps serving.

use std::io::Write;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tonic_types::StatusExt;
use vigil_core::buffer::disk::{DiskBuffer, DiskOptions};
use vigil_e2e::collector;
use vigil_e2e::fakes::FakeLoki;

fn logs(lines: &[&str]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: lines
                    .iter()
                    .map(|l| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(l.to_string())),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn post(
    url: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = vigil_e2e::http_client()
        .post(url)
        .header("content-type", content_type);
    if let Some(e) = encoding {
        request = request.header("content-encoding", e);
    }
    request.body(body).send().await.unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn metric_value(admin: std::net::SocketAddr, series: &str) -> f64 {
    let text = vigil_e2e::metrics_text(admin).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_answers_and_the_collector_keeps_serving() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "  \nbuffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 10ms }} }}\n",
        dir.path().display(),
        loki.push_url()
    )))
    .await;
    let http = collector.http_addr().unwrap();
    let url = format!("http://{http}/v1/logs");
    let valid = logs(&["still serving"]).encode_to_vec();

    let garbage = post(
        &url,
        "application/x-protobuf",
        None,
        b"\xff\xff\xff\xff not protobuf".to_vec(),
    )
    .await;
    assert_eq!(garbage.status(), 400);
    let status = tonic_types::Status::decode(garbage.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, tonic::Code::InvalidArgument as i32);
    assert!(
        status.message.contains("ExportLogsServiceRequest"),
        "{}",
        status.message
    );

    let bad_json = post(
        &url,
        "application/json",
        None,
        br#"{"resourceLogs": "nope"}"#.to_vec(),
    )
    .await;
    assert_eq!(bad_json.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&bad_json.bytes().await.unwrap()).unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid OTLP JSON"),
        "{body}"
    );

    assert_eq!(
        post(&url, "text/plain", None, valid.clone()).await.status(),
        415
    );
    assert_eq!(
        post(&url, "application/x-protobuf", Some("br"), valid.clone())
            .await
            .status(),
        415
    );

    // 65 MiB: over the default 64 MiB body limit.
    let oversized = post(&url, "application/x-protobuf", None, vec![0u8; 65 << 20]).await;
    assert_eq!(oversized.status(), 413);

    // A gzip bomb: ~200 KiB that inflates to 200 MiB, over the 128 MiB decompressed limit.
    let bomb = gzip(&vec![0u8; 200 << 20]);
    assert!(bomb.len() < 1 << 20);
    let bombed = post(&url, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(bombed.status(), 413);

    // OTLP/JSON receivers must ignore unknown fields (forward compatibility).
    let unknown_fields = br#"{"resourceLogs":[{"futureField":1,"scopeLogs":[{"logRecords":[{"body":{"stringValue":"from the future"},"newThing":"x"}]}]}]}"#;
    assert_eq!(
        post(&url, "application/json", None, unknown_fields.to_vec())
            .await
            .status(),
        200
    );

    let gzipped = post(&url, "application/x-protobuf", Some("gzip"), gzip(&valid)).await;
    assert_eq!(gzipped.status(), 200);
    assert_eq!(
        post(&url, "application/x-protobuf", None, valid)
            .await
            .status(),
        200
    );

    // Metrics have no exporter here: refused, not buffered forever.
    let refused = post(
        &format!("http://{http}/v1/metrics"),
        "application/json",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(refused.status(), 501);

    let lines = vigil_e2e::eventually(Duration::from_secs(20), "three lines at loki", || async {
        let l = loki.lines();
        (l.len() >= 3).then_some(l)
    })
    .await;
    let mut lines = lines;
    lines.sort();
    assert_eq!(
        lines,
        vec!["from the future", "still serving", "still serving"]
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_429_and_resource_exhausted_with_a_retry_delay() {
    let dir = tempfile::tempdir().unwrap();
    // Loki is never up: nothing drains the 1 MiB buffer.
    let dead_port = vigil_e2e::free_port();
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\", max_bytes: 1MiB }} }}\nexporters:\n  loki: {{ endpoint: \"http://127.0.0.1:{dead_port}/loki/api/v1/push\" }}\n",
        dir.path().display()
    )))
    .await;
    let url = format!("http://{}/v1/logs", collector.http_addr().unwrap());
    let line = "x".repeat(100 << 10);
    let body = logs(&[&line]).encode_to_vec();
    let mut refused = None;
    for _ in 0..20 {
        let response = post(&url, "application/x-protobuf", None, body.clone()).await;
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a 1 MiB buffer must fill within 2 MiB of requests");
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);

    let mut client =
        LogsServiceClient::connect(format!("http://{}", collector.grpc_addr().unwrap()))
            .await
            .unwrap();
    let status = client.export(logs(&[&line])).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let retry = status
        .get_details_retry_info()
        .expect("RESOURCE_EXHAUSTED carries RetryInfo");
    assert!(
        retry
            .retry_delay
            .is_some_and(|d| d >= Duration::from_secs(1))
    );
    let admin = collector.admin_addr();
    assert!(
        metric_value(
            admin,
            "vigil_collector_refused_requests_total{reason=\"buffer_full\",signal=\"logs\"}"
        )
        .await
            >= 2.0
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_400_is_dead_lettered_and_503_is_retried() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let buffer_dir = dir.path().join("buffer");
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 10ms }}, retry: {{ initial: 50ms, max: 200ms }} }}\n",
        buffer_dir.display(),
        loki.push_url()
    )))
    .await;
    let url = format!("http://{}/v1/logs", collector.http_addr().unwrap());
    let admin = collector.admin_addr();

    loki.answer_next(&[400]);
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            logs(&["refused for good"]).encode_to_vec()
        )
        .await
        .status(),
        200
    );
    vigil_e2e::eventually(Duration::from_secs(20), "the dead letter", || async {
        let n = metric_value(
            admin,
            "vigil_collector_dead_lettered_items_total{exporter=\"loki\",signal=\"logs\"}",
        )
        .await;
        (n == 1.0).then_some(())
    })
    .await;

    loki.answer_next(&[503, 503]);
    assert_eq!(
        post(
            &url,
            "application/x-protobuf",
            None,
            logs(&["delivered on the third try"]).encode_to_vec()
        )
        .await
        .status(),
        200
    );
    let lines = vigil_e2e::eventually(Duration::from_secs(20), "the retried line", || async {
        let l = loki.lines();
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(lines, vec!["delivered on the third try"]);
    assert_eq!(loki.requests_seen(), 4, "one 400, two 503, one success");
    assert_eq!(
        metric_value(
            admin,
            "vigil_collector_export_retries_total{exporter=\"loki\",signal=\"logs\"}"
        )
        .await,
        2.0
    );
    assert_eq!(
        metric_value(
            admin,
            "vigil_collector_exported_items_total{exporter=\"loki\",signal=\"logs\"}"
        )
        .await,
        1.0
    );
    collector.shutdown().await;

    // The dead letter is on disk with the backend's answer as its reason.
    let buffer = DiskBuffer::open(DiskOptions::new(buffer_dir, 1 << 30))
        .await
        .unwrap();
    let letters = buffer.dead_letters().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].exporter, "loki");
    assert!(letters[0].reason.contains("400"), "{}", letters[0].reason);
    let request = ExportLogsServiceRequest::decode(letters[0].record.payload.clone()).unwrap();
    assert_eq!(vigil_core::otlp::log_records(&request), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_are_bounded_once_decompressed_whatever_the_encoding() {
    use tonic::codec::CompressionEncoding;
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\" }}\n    http: {{ listen: \"127.0.0.1:0\" }}\n    max_request_bytes: 1MiB\n    max_decompressed_bytes: 1MiB\nadmin: {{ listen: \"127.0.0.1:0\" }}\nbuffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 10ms }} }}\n",
        dir.path().display(),
        loki.push_url()
    ))
    .await;
    let endpoint = format!("http://{}", collector.grpc_addr().unwrap());
    // 4 MiB of one repeated byte: a few hundred bytes on the wire either way.
    let bomb = "x".repeat(4 << 20);
    for encoding in [CompressionEncoding::Zstd, CompressionEncoding::Gzip] {
        let mut client = LogsServiceClient::connect(endpoint.clone())
            .await
            .unwrap()
            .send_compressed(encoding);
        let status = client.export(logs(&[&bomb])).await.unwrap_err();
        // tonic stops inflating at the limit and refuses the message; no RetryInfo, so an
        // OTLP client does not resend it.
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{encoding}");
        assert!(status.message().contains("size limit"), "{status:?}");
        assert!(status.get_details_retry_info().is_none(), "{status:?}");
        client
            .export(logs(&[&format!("{encoding} still served")]))
            .await
            .unwrap();
    }
    let counts = loki.line_counts(2).await;
    let expected: std::collections::BTreeMap<String, usize> = [
        ("gzip still served".to_string(), 1),
        ("zstd still served".to_string(), 1),
    ]
    .into();
    assert_eq!(counts, expected);
    collector.shutdown().await;
}
