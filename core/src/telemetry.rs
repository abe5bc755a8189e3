//! Self-metrics plumbing every binary shares: registering a metric and rendering a registry
//! for `/metrics`. Each binary names its own metrics, in one place.

use prometheus::core::Collector;
use prometheus::{Encoder, Registry, TextEncoder};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers `metric` and hands it back. Metric definitions are static and each is
/// registered once, so a failure here is a bug, not a runtime condition.
pub fn register<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
    metric
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    // Encoding in-memory metric families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
