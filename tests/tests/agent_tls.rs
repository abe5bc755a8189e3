//! The agent speaks TLS to an `https://` collector endpoint, trusting the CA in
//! `tls.ca_file`, and sends its bearer token. The collector's receivers do not serve TLS
//! yet, so the far end is an OTLP/gRPC logs service with a real certificate (made by
//! `openssl` for the test) that records what it received.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use tokio::net::TcpListener;
use tonic::transport::{Identity, ServerTlsConfig};
use vigil_e2e::{agent, eventually};

type Received = Arc<Mutex<Vec<(Option<String>, ExportLogsServiceRequest)>>>;

#[derive(Clone)]
struct Recorder(Received);

#[tonic::async_trait]
impl LogsService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0
            .lock()
            .unwrap()
            .push((authorization, request.into_inner()));
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is missing: `apt-get install openssl`, or run `scripts/test`");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA, and a certificate it signed for `localhost` and 127.0.0.1.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=vigil-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_are_verified_against_the_ca_file_and_get_the_token() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let identity = Identity::from_pem(
        std::fs::read(dir.path().join("server.pem")).unwrap(),
        std::fs::read(dir.path().join("server.key")).unwrap(),
    );
    let received: Received = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = LogsServiceServer::new(Recorder(received.clone()))
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

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
            "  timeout: 5s\n  bearer_token: s3cret\n  tls: {{ ca_file: \"{}\" }}\n",
            dir.path().join("ca.pem").display()
        ),
    );
    let agent = agent::start(&yaml).await;
    let (authorization, request) =
        eventually(Duration::from_secs(20), "an export over TLS", || async {
            received.lock().unwrap().first().cloned()
        })
        .await;
    assert_eq!(authorization.as_deref(), Some("Bearer s3cret"));
    let record = &request.resource_logs[0].scope_logs[0].log_records[0];
    assert_eq!(
        format!("{:?}", record.body.as_ref().unwrap().value),
        r#"Some(StringValue("over tls"))"#
    );
    agent.shutdown().await;
    server.abort();
}
