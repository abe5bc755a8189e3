//! OTLP/HTTP: `POST /v1/metrics`, `/v1/logs`, `/v1/traces`, protobuf or JSON, optionally
//! gzip-compressed. Answers mirror the request's encoding: an `Export*ServiceResponse` on
//! success, a `google.rpc.Status` on failure, as the OTLP specification says.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use prost::Message;
use vigil_core::Signal;
use vigil_core::gzip::GzipError;
use vigil_core::otlp::Encoding;

use super::{Accepted, Caller, Ingest, Refusal, Transport};

/// Limits of one HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body bytes as sent.
    pub max_request_bytes: usize,
    /// Body bytes after gzip.
    pub max_decompressed_bytes: usize,
}

struct HttpState {
    ingest: Arc<Ingest>,
    limits: Limits,
    tenant_header: header::HeaderName,
}

/// The OTLP/HTTP routes; serving is the caller's business (tests call it without a socket).
pub fn app(ingest: Arc<Ingest>, limits: Limits, tenant_header: header::HeaderName) -> Router {
    let state = Arc::new(HttpState {
        ingest,
        limits,
        tenant_header,
    });
    Router::new()
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .route("/v1/traces", post(traces))
        .with_state(state)
}

async fn metrics(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Metrics, &headers, body).await
}

async fn logs(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Logs, &headers, body).await
}

async fn traces(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    handle(&s, Signal::Traces, &headers, body).await
}

async fn handle(state: &HttpState, signal: Signal, headers: &HeaderMap, body: Body) -> Response {
    // Errors before the encoding is known are answered in protobuf, OTLP's default.
    let encoding = match content_encoding(headers) {
        Ok(e) => e,
        Err(refusal) => return refuse(state, signal, &refusal, Encoding::Protobuf),
    };
    let caller = Caller {
        tenant: headers.get(&state.tenant_header).map(|v| v.as_bytes()),
        authorization: headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
    };
    let body = match read_body(state, headers, body).await {
        Ok(b) => b,
        Err(refusal) => return refuse(state, signal, &refusal, encoding),
    };
    let result = state
        .ingest
        .accept_body(signal, encoding, body, caller, Transport::Http)
        .await;
    match result {
        Ok(accepted) => success_response(signal, encoding, accepted),
        Err(refusal) => refusal_response(&refusal, encoding),
    }
}

/// Answers a request refused before it reached [`Ingest`], counting it as Ingest would.
fn refuse(state: &HttpState, signal: Signal, refusal: &Refusal, encoding: Encoding) -> Response {
    state
        .ingest
        .count_refusal(signal, Transport::Http, refusal, None);
    refusal_response(refusal, encoding)
}

fn content_encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Media types are case-insensitive (RFC 9110, section 8.3.1).
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal::UnsupportedMediaType(format!(
            "unsupported Content-Type `{content_type}`: use application/x-protobuf or application/json"
        ))),
    }
}

async fn read_body(state: &HttpState, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
    let max = state.limits.max_request_bytes;
    let raw = Limited::new(body, max)
        .collect()
        .await
        .map_err(
            |e| match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => Refusal::TooLarge(format!("request body exceeds {max} bytes")),
                None => Refusal::Invalid(format!("could not read request body: {e}")),
            },
        )?
        .to_bytes();
    let coding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match coding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => gunzip(&raw, state.limits.max_decompressed_bytes),
        other => Err(Refusal::UnsupportedMediaType(format!(
            "unsupported Content-Encoding `{other}`: use gzip or none"
        ))),
    }
}

/// Decompresses at most `max` bytes: one more means the body is refused, whatever its
/// declared size, so a small bomb cannot make a large allocation.
pub fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, Refusal> {
    match vigil_core::gzip::decompress(compressed, max) {
        Ok(out) => Ok(Bytes::from(out)),
        Err(GzipError::TooLarge { .. }) => Err(Refusal::TooLarge(format!(
            "request body exceeds {max} bytes once decompressed"
        ))),
        Err(e @ GzipError::Invalid(_)) => Err(Refusal::Invalid(e.to_string())),
    }
}

fn content_type(encoding: Encoding) -> HeaderValue {
    match encoding {
        Encoding::Protobuf => HeaderValue::from_static("application/x-protobuf"),
        Encoding::Json => HeaderValue::from_static("application/json"),
    }
}

fn success_response(signal: Signal, encoding: Encoding, accepted: Accepted) -> Response {
    let body = super::response_body(signal, encoding, accepted);
    ([(header::CONTENT_TYPE, content_type(encoding))], body).into_response()
}

fn refusal_response(refusal: &Refusal, encoding: Encoding) -> Response {
    let (status, code) = refusal.status();
    let message = refusal.to_string();
    let body = match encoding {
        Encoding::Protobuf => tonic_types::Status {
            code: code as i32,
            message,
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code as i32, "message": message }))
                .unwrap_or_default()
        }
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type(encoding))],
        body,
    )
        .into_response();
    if let Some(after) = refusal.retry_after() {
        let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if matches!(refusal, Refusal::Unauthenticated(_)) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests;
