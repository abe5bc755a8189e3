//! The agent speaks TLS to an `https://` collector endpoint, trusting the CA in
//! `tls.ca_file`, and sends its bearer token; the real collector serves OTLP/gRPC over TLS
//! (certificates made by `openssl` for the test), maps the token to its tenant, and the
//! lines reach Loki under that tenant. With `cert_file`/`key_file` the agent presents a
//! client certificate to a collector that requires one.

use std::path::Path;
use std::time::Duration;

use vigil_collector::Collector;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::{agent, collector, eventually};

/// A collector serving OTLP/gRPC over TLS with the test's server certificate, plus
/// `grpc_tls_extra` inside its `tls:` and `receiver_extra` under `receivers.otlp`, exporting
/// to `loki`; and the port it listens on.
async fn tls_collector(
    dir: &Path,
    loki: &FakeLoki,
    grpc_tls_extra: &str,
    receiver_extra: &str,
) -> (Collector, u16) {
    let yaml = agent::collector_to_loki_yaml(loki, &dir.join("buffer"), "127.0.0.1:0").replace(
        "grpc: { listen: \"127.0.0.1:0\" }",
        &format!(
            "grpc: {{ listen: \"127.0.0.1:0\", tls: {{ cert_file: \"{}\", key_file: \"{}\"{grpc_tls_extra} }} }}{receiver_extra}",
            file(dir, "server.pem"),
            file(dir, "server.key"),
        ),
    );
    let collector = collector::start(&yaml).await;
    let port = collector.grpc_addr().unwrap().port();
    (collector, port)
}

/// An agent shipping to `https://localhost:port` with `collector_extra` (YAML lines under
/// `collector:`), tailing a file whose one line is `name`.
fn tls_agent_yaml(dir: &Path, port: u16, name: &str, collector_extra: &str) -> String {
    let logs_dir = dir.join(name);
    std::fs::create_dir_all(&logs_dir).unwrap();
    std::fs::write(logs_dir.join("app.log"), format!("{name}\n")).unwrap();
    agent::yaml(
        &format!("localhost:{port}"),
        &dir.join(format!("{name}-state")),
        &format!(
            "  - include: [\"{}/*.log\"]\n    start_at: beginning\n",
            logs_dir.display()
        ),
    )
    .replace("http://", "https://")
    .replace(
        "  timeout: 5s\n",
        &format!("  timeout: 5s\n{collector_extra}"),
    )
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_the_ca_file_and_get_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vigil_e2e::certs::make(d);
    let loki = FakeLoki::start().await;
    let (collector, port) = tls_collector(
        d,
        &loki,
        "",
        "\n    auth: { tokens: [{ token: agent-token-0123456789, tenant: node-logs }] }",
    )
    .await;
    let agent = agent::start(&tls_agent_yaml(
        d,
        port,
        "over tls",
        &format!(
            "  bearer_token: agent-token-0123456789\n  tls: {{ ca_file: \"{}\" }}\n",
            file(d, "ca.pem")
        ),
    ))
    .await;
    let push = eventually(Duration::from_secs(20), "the line at Loki", || async {
        loki.pushes().into_iter().next()
    })
    .await;
    assert_eq!(push.tenant.as_deref(), Some("node-logs"));
    assert_eq!(push.request.streams[0].entries[0].line, "over tls");
    agent.shutdown().await;
    collector.shutdown().await;
}

/// A collector that requires client certificates on OTLP/gRPC: the agent with `cert_file`
/// and `key_file` delivers; an agent without them is refused at the handshake (its
/// failures counted, its line never delivered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_opens_a_collector_that_requires_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    vigil_e2e::certs::make(d);
    let loki = FakeLoki::start().await;
    let (collector, port) = tls_collector(
        d,
        &loki,
        &format!(", client_ca_file: \"{}\"", file(d, "ca.pem")),
        "",
    )
    .await;
    let without = agent::start(&tls_agent_yaml(
        d,
        port,
        "without-certificate",
        &format!("  tls: {{ ca_file: \"{}\" }}\n", file(d, "ca.pem")),
    ))
    .await;
    let with = agent::start(&tls_agent_yaml(
        d,
        port,
        "with-certificate",
        &format!(
            "  tls: {{ ca_file: \"{}\", cert_file: \"{}\", key_file: \"{}\" }}\n",
            file(d, "ca.pem"),
            file(d, "client.pem"),
            file(d, "client.key")
        ),
    ))
    .await;
    eventually(
        Duration::from_secs(20),
        "the certified agent's line at Loki",
        || async {
            loki.lines()
                .iter()
                .any(|l| l == "with-certificate")
                .then_some(())
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the other agent's refused attempts",
        || async {
            let failures: u64 = ["retryable", "permanent"]
                .iter()
                .map(|kind| {
                    without
                        .telemetry()
                        .ship_failures
                        .with_label_values(&["logs", kind])
                        .get()
                })
                .sum();
            (failures > 0).then_some(())
        },
    )
    .await;
    assert!(
        !loki.lines().iter().any(|l| l == "without-certificate"),
        "an agent without a client certificate got through: {:?}",
        loki.lines()
    );
    with.shutdown().await;
    without.shutdown().await;
    collector.shutdown().await;
}
