//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (the buffer is open and the receivers are bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use vigil_core::buffer::Buffer;

use crate::telemetry::Telemetry;

pub struct AdminState {
    pub telemetry: Telemetry,
    pub buffer: Arc<dyn Buffer>,
    /// Set once every receiver is bound.
    pub receivers_bound: AtomicBool,
}

pub fn app(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    state.telemetry.observe_buffer(&state.buffer.stats().await);
    (
        [(header::CONTENT_TYPE, vigil_core::telemetry::CONTENT_TYPE)],
        state.telemetry.render(),
    )
}

async fn readyz(State(state): State<Arc<AdminState>>) -> impl IntoResponse {
    let bound = state.receivers_bound.load(Ordering::Acquire);
    let buffer = state.buffer.is_ready();
    match (bound, buffer) {
        (true, true) => (StatusCode::OK, "ready\n".to_string()),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: receivers bound={bound}, buffer ready={buffer}\n"),
        ),
    }
}
