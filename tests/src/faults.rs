//! The fault-injection suite's parts (see `tests/tests/faults.rs`): a proxy in front of each
//! backend that passes requests, answers 503 or hangs; a load generator of uniquely numbered
//! records that retries like an SDK until each is acknowledged; and a checker that reads
//! everything back and counts lost, duplicated and reordered records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::kv;

/// What the backends do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward it and relay the answer.
    Pass,
    /// Answer 503 without forwarding.
    Unavailable,
    /// Accept it and never answer: the client's timeout must end it.
    Hang,
}

/// The mode every backend proxy of one run follows, switched by the scheduler.
#[derive(Clone)]
pub struct Faults(Arc<AtomicU8>);

impl Default for Faults {
    fn default() -> Self {
        Faults(Arc::new(AtomicU8::new(0)))
    }
}

impl Faults {
    pub fn set(&self, mode: Mode) {
        let v = match mode {
            Mode::Pass => 0,
            Mode::Unavailable => 1,
            Mode::Hang => 2,
        };
        self.0.store(v, Ordering::SeqCst);
    }

    pub fn get(&self) -> Mode {
        match self.0.load(Ordering::SeqCst) {
            0 => Mode::Pass,
            1 => Mode::Unavailable,
            _ => Mode::Hang,
        }
    }
}

/// Reads the record numbers out of a request body a backend accepted.
pub type Observer = fn(&[u8]) -> Vec<u64>;

struct ProxyState {
    upstream: String,
    faults: Faults,
    client: reqwest::Client,
    observe: Option<Observer>,
    /// Record numbers in the order the backend accepted them (with an observer).
    arrivals: Mutex<Vec<u64>>,
    /// Requests answered 503, and requests left hanging.
    unavailable: AtomicUsize,
    hung: AtomicUsize,
}

/// An HTTP proxy on a free loopback port in front of one backend, following [`Faults`].
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://host:port`); `observe` records what the backend took.
    pub async fn start(upstream: String, faults: Faults, observe: Option<Observer>) -> FaultProxy {
        let state = Arc::new(ProxyState {
            upstream,
            faults,
            client: crate::http_client(),
            observe,
            arrivals: Mutex::new(Vec::new()),
            unavailable: AtomicUsize::new(0),
            hung: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(proxy).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fault proxy");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { addr, state, task }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered 503 and requests left hanging so far: proof the faults were met.
    pub fn faulted(&self) -> (usize, usize) {
        (
            self.state.unavailable.load(Ordering::SeqCst),
            self.state.hung.load(Ordering::SeqCst),
        )
    }

    /// Record numbers the backend accepted through this proxy, in arrival order.
    pub fn arrivals(&self) -> Vec<u64> {
        self.state.arrivals.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy(
    State(state): State<Arc<ProxyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match state.faults.get() {
        Mode::Unavailable => {
            state.unavailable.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::SERVICE_UNAVAILABLE, "fault: unavailable").into_response();
        }
        Mode::Hang => {
            state.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await
        }
        Mode::Pass => {}
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = state
        .client
        .request(method, format!("{}{path}", state.upstream))
        .timeout(Duration::from_secs(60));
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            request = request.header(name, value);
        }
    }
    let response = match request.body(body.clone()).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = response.status();
    let content_type = response.headers().get("content-type").cloned();
    let answer = response.bytes().await.unwrap_or_default();
    if status.is_success()
        && let Some(observe) = state.observe
    {
        let seqs = observe(&body);
        state.arrivals.lock().unwrap().extend(seqs);
    }
    let mut out = (status, answer).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert("content-type", ct);
    }
    out
}

/// The metric every generated point belongs to.
pub const METRIC: &str = "fault_probe";

/// The record numbers in a Prometheus remote-write body (the values of [`METRIC`]).
pub fn remote_write_seqs(body: &[u8]) -> Vec<u64> {
    let Ok(request) = vigil_core::remote_write::decode(body, 256 << 20) else {
        return Vec::new();
    };
    request
        .timeseries
        .iter()
        .filter(|ts| {
            ts.labels
                .iter()
                .any(|l| l.name == "__name__" && l.value == METRIC)
        })
        .flat_map(|ts| ts.samples.iter().map(|s| s.value as u64))
        .collect()
}

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![kv("service.name", "faults")],
        ..Default::default()
    })
}

/// One OTLP metrics request: a gauge point per record `seq`, value `seq`, at
/// `base_ms + seq` milliseconds (so every point has its own timestamp).
pub fn metrics_request(seqs: std::ops::Range<u64>, base_ms: u64) -> Vec<u8> {
    let data_points = seqs
        .map(|seq| NumberDataPoint {
            time_unix_nano: (base_ms + seq) * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(seq as f64)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource(),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: METRIC.into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// One OTLP traces request: a span per record `seq`, named `s<seq>`, with ids made of it.
pub fn spans_request(seqs: std::ops::Range<u64>, base_ms: u64) -> Vec<u8> {
    let spans = seqs
        .map(|seq| {
            let start = (base_ms + seq) * 1_000_000;
            let mut trace_id = vec![0xfa; 8];
            trace_id.extend((seq + 1).to_be_bytes());
            Span {
                trace_id,
                span_id: (seq + 1).to_be_bytes().to_vec(),
                name: format!("s{seq}"),
                kind: 2,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 1_000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The record number of a span [`spans_request`] made.
pub fn span_seq(span: &Span) -> Option<u64> {
    span.name.strip_prefix('s')?.parse().ok()
}

/// The log line of record `seq`.
pub fn log_line(seq: u64) -> String {
    format!("fault-log {seq:09} the quick brown fox jumps over the lazy dog")
}

/// The record number of a line [`log_line`] made.
pub fn log_seq(line: &str) -> Option<u64> {
    line.strip_prefix("fault-log ")?.get(..9)?.parse().ok()
}

/// Spreads `total` records over `over`: record `n` is due at `start + over * n / total`.
#[derive(Clone, Copy)]
pub struct Pace {
    pub start: Instant,
    pub over: Duration,
    pub total: u64,
}

impl Pace {
    pub fn due(&self, n: u64) -> Instant {
        self.start + self.over.mul_f64(n as f64 / self.total.max(1) as f64)
    }
}

/// What one sender saw: acknowledged records and the refusals on the way.
#[derive(Debug, Default)]
pub struct Sent {
    pub acked: u64,
    /// Non-2xx answers and transport errors, by kind, each retried.
    pub refusals: BTreeMap<String, usize>,
}

/// Sends `total` records in requests of `per_request`, one request at a time, each retried
/// (as an SDK retries 429, 503 and connection errors) until acknowledged with a 2xx or
/// `give_up` passes. `request(range)` builds a request body.
pub async fn send_until_acked(
    url: String,
    total: u64,
    per_request: u64,
    pace: Pace,
    give_up: Duration,
    request: impl Fn(std::ops::Range<u64>) -> Vec<u8>,
) -> Sent {
    let client = crate::http_client();
    let mut sent = Sent::default();
    let mut first = 0;
    while first < total {
        tokio::time::sleep_until(pace.due(first)).await;
        let range = first..(first + per_request).min(total);
        let body = request(range.clone());
        let deadline = Instant::now() + give_up;
        loop {
            let answer = client
                .post(&url)
                .header("content-type", "application/x-protobuf")
                .timeout(Duration::from_secs(30))
                .body(body.clone())
                .send()
                .await;
            let refusal = match answer {
                Ok(r) if r.status().is_success() => break,
                Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                    r.status().as_u16().to_string()
                }
                Ok(r) => panic!(
                    "{url} refused records {range:?} for good: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ),
                Err(e) if e.is_timeout() => "timeout".into(),
                Err(_) => "connection".into(),
            };
            *sent.refusals.entry(refusal).or_default() += 1;
            if Instant::now() > deadline {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent.acked = range.end;
        first = range.end;
    }
    sent
}

/// Appends `total` numbered lines to the file at `path` in chunks, paced, as an application
/// logs. Runs on a blocking thread.
pub fn write_log_lines(path: std::path::PathBuf, total: u64, pace: Pace) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log file");
    let chunk = (total / 500).clamp(1, 2_000);
    let mut first = 0;
    while first < total {
        let wait = pace.due(first).saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        let end = (first + chunk).min(total);
        let text: String = (first..end).map(|s| log_line(s) + "\n").collect();
        file.write_all(text.as_bytes()).expect("append log lines");
        first = end;
    }
}

/// One signal's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub signal: &'static str,
    /// Records acknowledged to the sender (for logs: written to the file).
    pub sent: u64,
    /// Distinct records that arrived.
    pub received: u64,
    pub lost: u64,
    /// Arrivals beyond the first of a record.
    pub duplicated: u64,
    /// First arrivals of a record after a higher-numbered one.
    pub reordered: u64,
    /// Arrivals of numbers never sent.
    pub unexpected: u64,
}

impl Tally {
    /// Counts `arrivals` (record numbers, in arrival order) against records `0..sent`.
    /// Reordering is counted on `order`, the arrival order where `arrivals` has none (a
    /// time-series database returns samples sorted by time).
    pub fn count(
        signal: &'static str,
        sent: u64,
        arrivals: &[u64],
        order: Option<&[u64]>,
    ) -> Tally {
        let mut seen = vec![0u32; sent as usize];
        let mut unexpected = 0;
        for &seq in arrivals {
            match seen.get_mut(seq as usize) {
                Some(n) => *n += 1,
                None => unexpected += 1,
            }
        }
        let received = seen.iter().filter(|n| **n > 0).count() as u64;
        let duplicated = seen.iter().map(|n| u64::from(n.saturating_sub(1))).sum();
        Tally {
            signal,
            sent,
            received,
            lost: sent - received,
            duplicated,
            reordered: reordered(order.unwrap_or(arrivals)),
            unexpected,
        }
    }
}

/// First arrivals of a number that come after a higher number arrived.
pub fn reordered(arrivals: &[u64]) -> u64 {
    let mut first = std::collections::HashSet::with_capacity(arrivals.len());
    let mut highest = None;
    let mut late = 0;
    for &seq in arrivals {
        if !first.insert(seq) {
            continue;
        }
        match highest {
            Some(h) if seq < h => late += 1,
            _ => highest = Some(seq),
        }
    }
    late
}

/// A markdown table of runs: one row per (run, signal).
pub fn table(rows: &[(String, Tally)]) -> String {
    let mut out = String::from(
        "| buffer | faults | signal | sent | received | lost | duplicated | reordered |\n|---|---|---|---:|---:|---:|---:|---:|\n",
    );
    for (run, t) in rows {
        let _ = writeln!(
            out,
            "| {run} | {} | {} | {} | {} | {} | {} |",
            t.signal, t.sent, t.received, t.lost, t.duplicated, t.reordered
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_loss_duplicates_reordering_and_strangers() {
        let t = Tally::count("logs", 6, &[0, 2, 1, 2, 4, 3, 9], None);
        assert_eq!(
            (t.received, t.lost, t.duplicated, t.reordered, t.unexpected),
            (5, 1, 1, 2, 1)
        );
        // A replayed batch is duplication, not reordering.
        assert_eq!(reordered(&[0, 1, 2, 0, 1, 2, 3]), 0);
    }

    #[test]
    fn generated_records_carry_their_numbers() {
        assert_eq!(log_seq(&log_line(42)), Some(42));
        let request = ExportTraceServiceRequest::decode(&spans_request(5..7, 0)[..]).unwrap();
        let seqs: Vec<_> = request.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .filter_map(span_seq)
            .collect();
        assert_eq!(seqs, [5, 6]);
    }
}
