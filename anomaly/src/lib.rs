//! vigil-anomaly: scores metric series read from VictoriaMetrics, writes the scores and
//! bands back, fires and resolves alerts in Alertmanager, annotates Grafana.
//!
//! - [`config`]: the YAML configuration.
//! - [`detector`]: the models (the `Detector` seam) and their per-series state.
//! - [`peers`]: one timestamp scored across a query's series.
//! - [`reader`]: range queries against VictoriaMetrics.
//! - [`service`]: the evaluation loop, one [`service::QueryRuntime`] per query.
//! - [`writeback`], [`alerts`], [`grafana`]: what the loop reports to.
//! - [`state`]: snapshots, so a restart is not a cold start.
//! - [`backtest`]: the detector run over a CSV, with a window-based evaluation.

pub mod admin;
pub mod alerts;
pub mod backtest;
pub mod config;
pub mod detector;
pub mod grafana;
pub mod http;
pub mod peers;
pub mod reader;
pub mod service;
pub mod state;
pub mod telemetry;
pub mod writeback;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use vigil_core::process::Shutdown;

pub use vigil_core::error_chain;

use crate::admin::AdminState;
use crate::config::Config;
use crate::service::Service;
use crate::state::Store;
use crate::telemetry::Telemetry;

/// How long a failed state load waits before it is tried again.
const STATE_RETRY: Duration = Duration::from_secs(5);

/// Runs the service until `shutdown` completes: restores state, evaluates every query each
/// `interval`, snapshots state every `state.snapshot_every` and at shutdown.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), String> {
    vigil_core::process::install_crypto_provider();
    let mut shutdown = shutdown;
    let telemetry = Telemetry::new(config.queries.iter().map(|q| q.name.as_str()));
    let admin = Arc::new(AdminState {
        telemetry: telemetry.clone(),
        running: AtomicBool::new(false),
    });
    let listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.admin.listen))?;
    let admin_task =
        tokio::spawn(axum::serve(listener, vigil_core::admin::router(admin.clone())).into_future());

    let names: Vec<&str> = config.queries.iter().map(|q| q.name.as_str()).collect();
    let (mut store, mut saved) = loop {
        let attempt = async {
            let mut store = Store::open(&config.state).await?;
            let saved = match store.load(&names).await {
                Ok(saved) => saved,
                // A snapshot that cannot be decoded is not worth refusing to start over:
                // the queries warm up again from history.
                Err(e) if matches!(store, Store::File(_)) => {
                    tracing::error!(error = %e, "state snapshot unreadable; warming up from history");
                    Default::default()
                }
                Err(e) => return Err(e),
            };
            Ok::<_, String>((store, saved))
        };
        tokio::select! {
            result = attempt => match result {
                Ok(found) => break found,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load state; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(STATE_RETRY) => continue,
                        _ = &mut shutdown => { admin_task.abort(); return Ok(()); }
                    }
                }
            },
            _ = &mut shutdown => { admin_task.abort(); return Ok(()); }
        }
    };
    tracing::info!(
        state = %store.describe(),
        restored = saved.len(),
        queries = config.queries.len(),
        "vigil-anomaly started"
    );
    let mut service = Service::new(&config, &mut saved, telemetry.clone())?;
    admin.running.store(true, Ordering::Release);

    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshots = tokio::time::interval(config.state.snapshot_every);
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    snapshots.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                tokio::select! {
                    _ = service.tick() => {}
                    // An evaluation stopped half way loses nothing: the next start reads
                    // again from the last saved step.
                    _ = &mut shutdown => break,
                }
            }
            _ = snapshots.tick() => save(&mut store, &service, &telemetry).await,
            _ = &mut shutdown => break,
        }
    }
    admin.running.store(false, Ordering::Release);
    save(&mut store, &service, &telemetry).await;
    admin_task.abort();
    tracing::info!("vigil-anomaly stopped");
    Ok(())
}

async fn save(store: &mut Store, service: &Service, telemetry: &Telemetry) {
    match store.save(&service.state()).await {
        Ok(()) => telemetry
            .last_snapshot
            .set(service::now_ms().div_euclid(1000)),
        Err(e) => {
            telemetry.snapshot_failures.inc();
            telemetry.sink_failures.with_label_values(&["state"]).inc();
            tracing::warn!(error = %e, "state snapshot failed");
        }
    }
}

#[cfg(test)]
mod proptests;
