//! Durability: data acknowledged while the backends are down survives a kill -9 of the
//! collector and arrives, exactly once, when the backends come up after the restart.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil_e2e::collector::CollectorProcess;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{free_port, kv};

const N: usize = 40;

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", "restart-probe")],
        ..Default::default()
    })
}

fn metric_request(seq: usize, time_ms: u64) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "restart_probe".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv("seq", &seq.to_string())],
                            time_unix_nano: time_ms * 1_000_000,
                            value: Some(number_data_point::Value::AsDouble(seq as f64)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn log_request(seq: usize, time_ms: u64) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: time_ms * 1_000_000,
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(format!("line-{seq}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_data_survives_kill_9_and_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let (vm_port, loki_port, http_port, admin_port) =
        (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:{http_port}\" }}\n\
             buffer:\n  kind: disk\n  disk: {{ path: \"{}\", max_bytes: 64MiB }}\n\
             exporters:\n\
             \x20 victoriametrics: {{ endpoint: \"http://127.0.0.1:{vm_port}/api/v1/write\", retry: {{ initial: 100ms, max: 500ms }}, batch: {{ linger: 20ms }} }}\n\
             \x20 loki: {{ endpoint: \"http://127.0.0.1:{loki_port}/loki/api/v1/push\", retry: {{ initial: 100ms, max: 500ms }}, batch: {{ linger: 20ms }} }}\n\
             admin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n",
            dir.path().join("buffer").display()
        ),
    )
    .unwrap();

    // Backends down: the collector acknowledges (the data is on disk) but cannot export.
    let first = CollectorProcess::start(&config, admin_port, http_port).await;
    let client = vigil_e2e::http_client();
    let base_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        / 1000
        - 600)
        * 1000;
    for seq in 0..N {
        for (path, body) in [
            ("metrics", metric_request(seq, base_ms + seq as u64 * 1000)),
            ("logs", log_request(seq, base_ms + seq as u64)),
        ] {
            let response = client
                .post(format!("http://127.0.0.1:{http_port}/v1/{path}"))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path} #{seq}");
        }
    }
    first.kill_9();

    let _second = CollectorProcess::start(&config, admin_port, http_port).await;
    let loki = FakeLoki::start_on(([127, 0, 0, 1], loki_port).into()).await;
    let vm = VictoriaMetrics::start_on(vm_port).await;

    let series = vm
        .wait_for_series("{__name__=\"restart_probe\",job=\"restart-probe\"}", N)
        .await;
    let mut seen: Vec<usize> = series
        .iter()
        .map(|s| s["metric"]["seq"].as_str().unwrap().parse().unwrap())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    for s in &series {
        let seq: f64 = s["metric"]["seq"].as_str().unwrap().parse().unwrap();
        assert_eq!(s["values"][0].as_f64(), Some(seq));
    }

    let counts = loki.line_counts(N).await;
    let expected: BTreeMap<String, usize> = (0..N).map(|i| (format!("line-{i}"), 1)).collect();
    // Nothing was acknowledged before the kill, so every line arrives exactly once.
    assert_eq!(counts, expected);
}
