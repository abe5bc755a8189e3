//! The admin port: `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (checkpoints loaded, tailer and shippers running).

use crate::telemetry::Telemetry;

/// The admin port's state: the telemetry, and a flag set once everything is started and
/// cleared when shutting down.
pub type AdminState = vigil_core::admin::Running<Telemetry>;

impl vigil_core::admin::Metrics for Telemetry {
    fn render(&self) -> String {
        Telemetry::render(self)
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn app(state: Arc<AdminState>) -> Router {
        vigil_core::admin::router(state)
    }

    async fn get(app: Router, path: &str) -> (StatusCode, String) {
        let response = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let state = Arc::new(AdminState {
            telemetry: Telemetry::new(),
            running: AtomicBool::new(false),
        });
        state.telemetry.lines_read.inc_by(3);
        let (status, body) = get(app(state.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("vigil_agent_lines_read_total 3"), "{body}");
        for name in [
            "vigil_agent_files_watched",
            "vigil_agent_bytes_read_total",
            "vigil_agent_lines_shipped_total",
            "vigil_agent_lines_split_total",
            "vigil_agent_file_lag_bytes",
            "vigil_agent_ship_failures_total",
            "vigil_agent_metrics_dropped_total",
        ] {
            assert!(body.contains(name), "{name} missing");
        }
        assert_eq!(get(app(state.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(app(state.clone()), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.running.store(true, Ordering::Release);
        assert_eq!(get(app(state), "/readyz").await.0, StatusCode::OK);
    }
}
