//! The admin port every binary serves: `/metrics` (Prometheus text), `/healthz` (the
//! process answers) and `/readyz`. Each binary says what its metrics are and when it is
//! ready; the routes and answers are the same everywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// What a binary's admin port reports.
#[async_trait]
pub trait Admin: Send + Sync + 'static {
    /// The Prometheus text exposition of the binary's self-metrics.
    async fn metrics(&self) -> String;

    /// `Ok` when ready to serve; otherwise why not (empty when there is nothing to add).
    fn ready(&self) -> Result<(), String>;
}

/// A binary's self-metrics, rendered as Prometheus text.
pub trait Metrics: Send + Sync + 'static {
    fn render(&self) -> String;
}

/// The admin state of a binary that is ready exactly while it runs: its metrics, and a flag
/// set once everything is started and cleared when shutting down.
pub struct Running<M> {
    pub telemetry: M,
    pub running: AtomicBool,
}

#[async_trait]
impl<M: Metrics> Admin for Running<M> {
    async fn metrics(&self) -> String {
        self.telemetry.render()
    }

    fn ready(&self) -> Result<(), String> {
        match self.running.load(Ordering::Acquire) {
            true => Ok(()),
            false => Err(String::new()),
        }
    }
}

/// The three routes over `admin`; serving them is the caller's business.
pub fn router<A: Admin>(admin: Arc<A>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<A>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<A>))
        .with_state(admin)
}

async fn metrics<A: Admin>(State(admin): State<Arc<A>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)],
        admin.metrics().await,
    )
}

async fn readyz<A: Admin>(State(admin): State<Arc<A>>) -> impl IntoResponse {
    match admin.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) if why.is_empty() => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
