//! The agent speaks TLS to an `https://` collector endpoint, trusting the CA in
//! `tls.ca_file`, and sends its bearer token; the real collector serves OTLP/gRPC over TLS
//! (certificates made by `openssl` for the test), maps the token to its tenant, and the
//! lines reach Loki under that tenant.

use std::time::Duration;

use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::{agent, collector, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_the_ca_file_and_get_the_token() {
    let dir = tempfile::tempdir().unwrap();
    vigil_e2e::certs::make(dir.path());
    let cert = |name: &str| dir.path().join(name).display().to_string();
    let loki = FakeLoki::start().await;
    let yaml = agent::collector_to_loki_yaml(&loki, &dir.path().join("buffer"), "127.0.0.1:0")
        .replace(
            "grpc: { listen: \"127.0.0.1:0\" }",
            &format!(
                "grpc: {{ listen: \"127.0.0.1:0\", tls: {{ cert_file: \"{}\", key_file: \"{}\" }} }}\n    auth: {{ tokens: [{{ token: agent-token-0123456789, tenant: node-logs }}] }}",
                cert("server.pem"),
                cert("server.key")
            ),
        );
    let collector = collector::start(&yaml).await;
    let port = collector.grpc_addr().unwrap().port();

    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    std::fs::write(logs_dir.join("app.log"), "over tls\n").unwrap();
    let yaml = agent::yaml(
        &format!("localhost:{port}"),
        &dir.path().join("state"),
        &format!(
            "  - include: [\"{}/*.log\"]\n    start_at: beginning\n",
            logs_dir.display()
        ),
    )
    .replace("http://", "https://")
    .replace(
        "  timeout: 5s\n",
        &format!(
            "  timeout: 5s\n  bearer_token: agent-token-0123456789\n  tls: {{ ca_file: \"{}\" }}\n",
            cert("ca.pem")
        ),
    );
    let agent = agent::start(&yaml).await;
    let push = eventually(Duration::from_secs(20), "the line at Loki", || async {
        loki.pushes().into_iter().next()
    })
    .await;
    assert_eq!(push.tenant.as_deref(), Some("node-logs"));
    assert_eq!(push.request.streams[0].entries[0].line, "over tls");
    agent.shutdown().await;
    collector.shutdown().await;
}
