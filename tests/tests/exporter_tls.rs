//! The collector's exporters over TLS to backends with a private CA and, where the backend
//! requires one, a client certificate (certificates made by `openssl` for the test):
//! remote write to a real VictoriaMetrics serving HTTPS only, trusting `tls.ca_file`; OTLP
//! traces over gRPC and over HTTP to a second real collector whose receivers require client
//! certificates, with `tls.cert_file`/`key_file`. Without the CA the export is refused at
//! the handshake, retried and counted, and nothing arrives.

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use vigil_e2e::fakes::FakeTempo;
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{collector, eventually, http_client, metric_sum};

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

fn gauge(name: &str) -> Vec<u8> {
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now_ns,
                            value: Some(number_data_point::Value::AsDouble(42.0)),
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

fn span(name: &str) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![7; 16],
                    span_id: vec![9; 8],
                    name: name.into(),
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_100_000_000,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post(http: std::net::SocketAddr, path: &str, body: Vec<u8>) {
    let response = http_client()
        .post(format!("http://{http}{path}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200, "{path}");
}

/// A collector receiving OTLP/HTTP in the clear, exporting with `exporters` (YAML lines).
fn sender_yaml(dir: &Path, name: &str, exporters: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
         buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n{exporters}",
        dir.join(name).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_trusts_the_ca_file_and_refuses_an_unknown_certificate() {
    let dir = tempfile::tempdir().unwrap();
    vigil_e2e::certs::make(dir.path());
    let d = dir.path();
    let vm = VictoriaMetrics::start_tls(
        &d.join("server.pem"),
        &d.join("server.key"),
        &d.join("ca.pem"),
    )
    .await;
    let exporter = |ca: &str| {
        format!(
            "  victoriametrics:\n    endpoint: \"{}\"\n    batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n{ca}",
            vm.write_url()
        )
    };
    let trusting = collector::start(&sender_yaml(
        d,
        "trusting",
        &exporter(&format!(
            "    tls: {{ ca_file: \"{}\" }}\n",
            file(d, "ca.pem")
        )),
    ))
    .await;
    let untrusting = collector::start(&sender_yaml(d, "untrusting", &exporter(""))).await;
    post(
        trusting.http_addr().unwrap(),
        "/v1/metrics",
        gauge("over_tls"),
    )
    .await;
    post(
        untrusting.http_addr().unwrap(),
        "/v1/metrics",
        gauge("not_trusted"),
    )
    .await;

    vm.wait_for_series("over_tls", 1).await;
    let admin = untrusting.admin_addr();
    eventually(
        Duration::from_secs(20),
        "the untrusting exporter's failed attempts",
        || async move {
            let retries = metric_sum(
                admin,
                "vigil_collector_export_retries_total",
                &["exporter=\"victoriametrics\""],
            )
            .await;
            (retries > 0.0).then_some(())
        },
    )
    .await;
    assert!(
        vm.export("not_trusted").await.is_empty(),
        "a certificate of an unknown CA was accepted"
    );
    trusting.shutdown().await;
    untrusting.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tempo_exporters_present_a_client_certificate_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    vigil_e2e::certs::make(dir.path());
    let d = dir.path();
    // The backend: a collector whose OTLP receivers require client certificates, passing
    // traces on to a Tempo receiver.
    let tempo = FakeTempo::start().await;
    let server_tls = format!(
        "tls: {{ cert_file: \"{}\", key_file: \"{}\", client_ca_file: \"{}\" }}",
        file(d, "server.pem"),
        file(d, "server.key"),
        file(d, "ca.pem")
    );
    let backend = collector::start(&format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\", {server_tls} }}\n    http: {{ listen: \"127.0.0.1:0\", {server_tls} }}\n\
         admin: {{ listen: \"127.0.0.1:0\" }}\nbuffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\n\
         exporters:\n  tempo:\n    endpoint: \"{}\"\n    batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n",
        d.join("backend").display(),
        tempo.endpoint()
    ))
    .await;
    let client_tls = format!(
        "    tls: {{ ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\" }}\n",
        file(d, "ca.pem"),
        file(d, "client.pem"),
        file(d, "client.key")
    );
    let grpc = backend.grpc_addr().unwrap().port();
    let http = backend.http_addr().unwrap().port();
    let mut senders = Vec::new();
    for (name, endpoint, protocol) in [
        ("grpc", format!("https://localhost:{grpc}"), "grpc"),
        ("http", format!("https://localhost:{http}"), "http"),
    ] {
        let sender = collector::start(&sender_yaml(
            d,
            name,
            &format!(
                "  tempo:\n    endpoint: \"{endpoint}\"\n    protocol: {protocol}\n    batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n{client_tls}"
            ),
        ))
        .await;
        post(
            sender.http_addr().unwrap(),
            "/v1/traces",
            span(&format!("via-{name}")),
        )
        .await;
        senders.push(sender);
    }
    let names = eventually(Duration::from_secs(30), "both spans at Tempo", || async {
        let mut names: Vec<String> = tempo
            .exports()
            .iter()
            .flat_map(|e| &e.request.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names.dedup();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert_eq!(names, ["via-grpc", "via-http"]);
    for sender in senders {
        sender.shutdown().await;
    }
    backend.shutdown().await;
}
