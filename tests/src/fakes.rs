//! In-test receivers for backends with no Debian package. Each decodes exactly what was
//! sent, with the same protobuf definitions the real server uses, and records it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vigil_core::loki::proto::PushRequest;

/// One push as Loki would have received it.
#[derive(Debug, Clone)]
pub struct LokiPush {
    pub tenant: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub request: PushRequest,
}

#[derive(Default)]
struct LokiState {
    pushes: Vec<LokiPush>,
    /// Status codes to answer before accepting, front first; empty means 204.
    script: VecDeque<StatusCode>,
    requests_seen: usize,
}

/// A Loki push endpoint on a free loopback port: `POST /loki/api/v1/push`, snappy +
/// protobuf, as Loki's distributor reads it.
pub struct FakeLoki {
    pub addr: SocketAddr,
    state: Arc<Mutex<LokiState>>,
    task: JoinHandle<()>,
}

impl FakeLoki {
    pub async fn start() -> FakeLoki {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeLoki {
        let state = Arc::new(Mutex::new(LokiState::default()));
        let app = Router::new()
            .route("/loki/api/v1/push", post(loki_push))
            .with_state(state.clone());
        let listener = TcpListener::bind(addr).await.expect("bind fake loki");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeLoki { addr, state, task }
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Answers the next requests with these statuses (without storing them), then accepts.
    pub fn answer_next(&self, statuses: &[u16]) {
        let mut s = self.state.lock().unwrap();
        s.script
            .extend(statuses.iter().map(|c| StatusCode::from_u16(*c).unwrap()));
    }

    pub fn pushes(&self) -> Vec<LokiPush> {
        self.state.lock().unwrap().pushes.clone()
    }

    /// Requests received, including refused ones.
    pub fn requests_seen(&self) -> usize {
        self.state.lock().unwrap().requests_seen
    }

    /// Waits until at least `n` lines arrived, then a moment more so a late duplicate
    /// shows up too, and returns how often each line arrived.
    pub async fn line_counts(&self, n: usize) -> std::collections::BTreeMap<String, usize> {
        crate::eventually(
            std::time::Duration::from_secs(30),
            &format!("{n} lines at loki"),
            || async { (self.lines().len() >= n).then_some(()) },
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut counts = std::collections::BTreeMap::new();
        for line in self.lines() {
            *counts.entry(line).or_default() += 1;
        }
        counts
    }

    /// Every entry line accepted so far, in arrival order.
    pub fn lines(&self) -> Vec<String> {
        self.pushes()
            .iter()
            .flat_map(|p| p.request.streams.iter())
            .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
            .collect()
    }
}

impl Drop for FakeLoki {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn loki_push(
    State(state): State<Arc<Mutex<LokiState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut s = state.lock().unwrap();
    s.requests_seen += 1;
    if let Some(status) = s.script.pop_front() {
        return (status, format!("scripted answer {status}"));
    }
    match vigil_core::loki::decode(&body, 64 << 20) {
        Ok(request) => {
            s.pushes.push(LokiPush {
                tenant: header("x-scope-orgid"),
                content_type: header("content-type"),
                content_encoding: header("content-encoding"),
                request,
            });
            (StatusCode::NO_CONTENT, String::new())
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            format!("fake loki cannot decode push: {e}"),
        ),
    }
}

/// One OTLP trace export as Tempo's distributor would have received it.
#[derive(Debug, Clone)]
pub struct TempoExport {
    pub tenant: Option<String>,
    /// The `authorization` header or metadata, if sent.
    pub authorization: Option<String>,
    pub request: ExportTraceServiceRequest,
}

/// A Tempo OTLP/gRPC receiver on a free loopback port.
pub struct FakeTempo {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<TempoExport>>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct TempoService(Arc<Mutex<Vec<TempoExport>>>);

#[tonic::async_trait]
impl TraceService for TempoService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let tenant = request
            .metadata()
            .get("x-scope-orgid")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.0.lock().unwrap().push(TempoExport {
            tenant,
            authorization,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl FakeTempo {
    pub async fn start() -> FakeTempo {
        Self::start_on(([127, 0, 0, 1], 0).into()).await
    }

    /// Starts on a given address (a test may hand the port to a collector before the
    /// backend is up).
    pub async fn start_on(addr: SocketAddr) -> FakeTempo {
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind(addr).await.expect("bind fake tempo");
        let addr = listener.local_addr().expect("local addr");
        let service = TraceServiceServer::new(TempoService(received.clone()))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        FakeTempo {
            addr,
            received,
            task,
        }
    }

    /// A Tempo OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body.
    pub async fn start_http() -> FakeTempo {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(tempo_http))
            .with_state(received.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake tempo");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeTempo {
            addr,
            received,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn exports(&self) -> Vec<TempoExport> {
        self.received.lock().unwrap().clone()
    }
}

async fn tempo_http(
    State(received): State<Arc<Mutex<Vec<TempoExport>>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    use prost::Message;
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            let tenant = headers
                .get("x-scope-orgid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let authorization = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            received.lock().unwrap().push(TempoExport {
                tenant,
                authorization,
                request,
            });
            let response = ExportTraceServiceResponse {
                partial_success: None,
            };
            (StatusCode::OK, response.encode_to_vec())
        }
        Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
    }
}

impl Drop for FakeTempo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request to Grafana's annotations API, as Grafana's HTTP API would receive it.
#[derive(Debug, Clone)]
pub struct GrafanaRequest {
    /// `POST` (create) or `PATCH` (update).
    pub method: String,
    /// `/api/annotations` or `/api/annotations/<id>`.
    pub path: String,
    pub authorization: Option<String>,
    pub body: serde_json::Value,
}

/// Grafana's annotations API on a free loopback port: `POST /api/annotations` answers
/// `{"message":"Annotation added","id":N}` with ids from 1; `PATCH /api/annotations/:id`
/// answers `{"message":"Annotation patched"}` for an id it created and 404 otherwise. Bodies
/// that are not JSON objects get 400, as Grafana answers.
pub struct FakeGrafana {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<GrafanaRequest>>>,
    task: JoinHandle<()>,
}

impl FakeGrafana {
    pub async fn start() -> FakeGrafana {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/api/annotations", post(grafana_create))
            .route("/api/annotations/{id}", axum::routing::patch(grafana_patch))
            .with_state(requests.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake grafana");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGrafana {
            addr,
            requests,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<GrafanaRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeGrafana {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type GrafanaState = Arc<Mutex<Vec<GrafanaRequest>>>;

fn grafana_record(
    state: &GrafanaState,
    method: &str,
    path: String,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<usize, StatusCode> {
    let body: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| StatusCode::BAD_REQUEST)?;
    if !body.is_object() {
        return Err(StatusCode::BAD_REQUEST);
    }
    let mut requests = state.lock().unwrap();
    requests.push(GrafanaRequest {
        method: method.into(),
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        body,
    });
    Ok(requests.iter().filter(|r| r.method == "POST").count())
}

async fn grafana_create(
    State(state): State<GrafanaState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    match grafana_record(&state, "POST", "/api/annotations".into(), &headers, &body) {
        Ok(id) => (
            StatusCode::OK,
            serde_json::json!({"message": "Annotation added", "id": id}).to_string(),
        ),
        Err(status) => (status, String::new()),
    }
}

async fn grafana_patch(
    State(state): State<GrafanaState>,
    axum::extract::Path(id): axum::extract::Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let created = state
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    if id == 0 || id > created {
        return (StatusCode::NOT_FOUND, String::new());
    }
    let path = format!("/api/annotations/{id}");
    match grafana_record(&state, "PATCH", path, &headers, &body) {
        Ok(_) => (
            StatusCode::OK,
            serde_json::json!({"message": "Annotation patched"}).to_string(),
        ),
        Err(status) => (status, String::new()),
    }
}
