//! vigil-anomaly: scores metric series read from VictoriaMetrics, writes the scores and
//! bands back, fires and resolves alerts in Alertmanager, annotates Grafana.

pub mod backtest;
pub mod config;
pub mod detector;
pub mod peers;

use vigil_core::process::Shutdown;

/// Runs the service until `shutdown` completes.
pub async fn run(_config: config::Config, _shutdown: Shutdown) -> Result<(), String> {
    Err("the anomaly service loop is not built yet".into())
}
