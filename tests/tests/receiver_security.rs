//! The collector's doors: TLS on OTLP/gRPC, OTLP/HTTP (with client certificates) and the
//! admin port; bearer tokens that each write into one tenant, and cannot be pointed at
//! another one with the tenant header; per-tenant rate limits answered with 429 /
//! RESOURCE_EXHAUSTED. Certificates are made by `openssl` for the test.

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::{collector, eventually};

const TOKEN_A: &str = "team-a-token-0123456789";
const TOKEN_B: &str = "team-b-token-9876543210";

fn logs(lines: &[&str]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: lines
                    .iter()
                    .map(|l| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                            value: Some(
                                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                    l.to_string(),
                                ),
                            ),
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

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// A collector with TLS everywhere (client certificates on OTLP/HTTP), two tokens, and a
/// Loki exporter; `extra` goes under `receivers.otlp`.
fn yaml(dir: &Path, loki: &FakeLoki, extra: &str) -> String {
    let tls = format!(
        "cert_file: \"{}\", key_file: \"{}\"",
        path(dir, "server.pem"),
        path(dir, "server.key")
    );
    format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\", tls: {{ {tls} }} }}\n    http: {{ listen: \"127.0.0.1:0\", tls: {{ {tls}, client_ca_file: \"{ca}\" }} }}\n    auth:\n      tokens:\n        - {{ token: {TOKEN_A}, tenant: team-a }}\n        - {{ token_file: \"{token_b}\", tenant: team-b }}\n{extra}\
         admin: {{ listen: \"127.0.0.1:0\", tls: {{ {tls} }} }}\n\
         buffer: {{ kind: disk, disk: {{ path: \"{buffer}\" }} }}\n\
         exporters:\n  loki: {{ endpoint: \"{loki}\", batch: {{ linger: 50ms }}, retry: {{ initial: 50ms, max: 200ms }} }}\n",
        ca = path(dir, "ca.pem"),
        token_b = path(dir, "token-b"),
        buffer = path(dir, "buffer"),
        loki = loki.push_url(),
    )
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    vigil_e2e::certs::make(dir.path());
    std::fs::write(dir.path().join("token-b"), format!("{TOKEN_B}\n")).unwrap();
    dir
}

async fn grpc_client(dir: &Path, port: u16) -> LogsServiceClient<Channel> {
    vigil_e2e::http_client();
    let ca = Certificate::from_pem(std::fs::read(dir.join("ca.pem")).unwrap());
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))
        .unwrap()
        .connect()
        .await
        .expect("TLS connection to the gRPC receiver");
    LogsServiceClient::new(channel)
}

fn request(
    body: ExportLogsServiceRequest,
    token: Option<&str>,
    tenant: Option<&str>,
) -> tonic::Request<ExportLogsServiceRequest> {
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    if let Some(tenant) = tenant {
        request
            .metadata_mut()
            .insert("x-scope-orgid", tenant.parse().unwrap());
    }
    request
}

/// POSTs a protobuf logs request, with a bearer token and a tenant header when given.
async fn post_logs(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    token: Option<&str>,
    tenant: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    request.send().await
}

/// An HTTPS client trusting the test CA, presenting the client certificate or not.
fn https(dir: &Path, with_client_cert: bool) -> reqwest::Client {
    vigil_e2e::http_client();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10));
    if with_client_cert {
        let mut pem = std::fs::read(dir.join("client.pem")).unwrap();
        pem.extend(std::fs::read(dir.join("client.key")).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_and_tokens_that_own_their_tenant() {
    let dir = setup();
    let loki = FakeLoki::start().await;
    let collector = collector::start(&yaml(dir.path(), &loki, "")).await;
    let grpc_port = collector.grpc_addr().unwrap().port();
    let http_url = format!(
        "https://localhost:{}/v1/logs",
        collector.http_addr().unwrap().port()
    );

    // gRPC over TLS: the token decides the tenant.
    let mut client = grpc_client(dir.path(), grpc_port).await;
    client
        .export(request(logs(&["from a over grpc"]), Some(TOKEN_A), None))
        .await
        .expect("a valid token is accepted");
    let status = client
        .export(request(logs(&["no token"]), None, None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = client
        .export(request(
            logs(&["wrong token"]),
            Some("x".repeat(23).as_str()),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = client
        .export(request(logs(&["a into b"]), Some(TOKEN_A), Some("team-b")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // HTTP over TLS with a client certificate: the token from a file.
    let body = logs(&["from b over http"]).encode_to_vec();
    let with_cert = https(dir.path(), true);
    let response = post_logs(
        &with_cert,
        &http_url,
        body.clone(),
        Some(TOKEN_B),
        Some("team-b"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let response = post_logs(&with_cert, &http_url, body.clone(), None, None)
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = post_logs(
        &with_cert,
        &http_url,
        body.clone(),
        Some(TOKEN_B),
        Some("team-a"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 403);
    // Without a client certificate, or in plain HTTP, there is no conversation at all.
    let no_cert = post_logs(
        &https(dir.path(), false),
        &http_url,
        body.clone(),
        Some(TOKEN_B),
        None,
    )
    .await;
    assert!(no_cert.is_err(), "{no_cert:?}");
    let plain = vigil_e2e::http_client()
        .post(http_url.replace("https://", "http://"))
        .body(body)
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP must not be served"
    );

    // Exactly the two accepted requests arrive, each under its token's tenant.
    let pushes = eventually(Duration::from_secs(20), "both lines at Loki", || async {
        let p = loki.pushes();
        let lines: usize = p
            .iter()
            .flat_map(|p| &p.request.streams)
            .map(|s| s.entries.len())
            .sum();
        (lines >= 2).then_some(p)
    })
    .await;
    let mut by_tenant: Vec<(String, String)> = pushes
        .iter()
        .flat_map(|p| {
            p.request.streams.iter().flat_map(move |s| {
                s.entries
                    .iter()
                    .map(move |e| (p.tenant.clone().unwrap_or_default(), e.line.clone()))
            })
        })
        .collect();
    by_tenant.sort();
    assert_eq!(
        by_tenant,
        [
            ("team-a".to_string(), "from a over grpc".to_string()),
            ("team-b".to_string(), "from b over http".to_string()),
        ]
    );

    // The admin port answers over TLS, and counts the refusals.
    let metrics = https(dir.path(), false)
        .get(format!(
            "https://localhost:{}/metrics",
            collector.admin_addr().port()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused = |reason: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("vigil_collector_refused_requests_total{")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(refused("unauthenticated"), 3.0, "{metrics}");
    assert_eq!(refused("forbidden"), 2.0, "{metrics}");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_limit_is_told_to_wait_and_others_are_not() {
    let dir = setup();
    let loki = FakeLoki::start().await;
    let collector = collector::start(&yaml(
        dir.path(),
        &loki,
        "    rate_limit: { records_per_second: 10, burst: 100 }\n",
    ))
    .await;
    let mut client = grpc_client(dir.path(), collector.grpc_addr().unwrap().port()).await;
    let hundred: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    let hundred: Vec<&str> = hundred.iter().map(String::as_str).collect();

    client
        .export(request(logs(&hundred), Some(TOKEN_A), None))
        .await
        .expect("the burst is allowed");
    let status = client
        .export(request(logs(&hundred), Some(TOKEN_A), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("team-a"), "{status:?}");
    let details = tonic_types::StatusExt::get_error_details(&status);
    let retry = details.retry_info().and_then(|r| r.retry_delay).unwrap();
    assert!(
        retry > Duration::from_secs(5) && retry <= Duration::from_secs(10),
        "{retry:?}"
    );

    // Another tenant has its own bucket.
    let client = https(dir.path(), true);
    let url = format!(
        "https://localhost:{}/v1/logs",
        collector.http_addr().unwrap().port()
    );
    let body = logs(&hundred).encode_to_vec();
    let response = post_logs(&client, &url, body, Some(TOKEN_B), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Fifty more need five seconds of refill: refused however slow this machine is.
    let body = logs(&hundred[..50]).encode_to_vec();
    let response = post_logs(&client, &url, body, Some(TOKEN_B), None)
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "{wait}");
    collector.shutdown().await;
}
