//! vigil-agent: the node agent. Tails log files and ships them, with the metrics other
//! parts of the agent produce, as OTLP/gRPC to the collector — at least once: a file's
//! checkpoint moves only after the collector acknowledged its lines.
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`tail`]: finding, identifying, following and reading log files; CRI, Docker and raw
//!   formats; multiline; Kubernetes metadata from paths.
//! - [`checkpoint`]: file identity (device, inode, fingerprint) and delivered offsets,
//!   saved atomically in `state_dir`.
//! - [`ship`]: batching, retry and the gRPC client; the [`ship::metrics::MetricsQueue`]
//!   that metrics producers push into.
//! - [`scrape`]: scrapes Prometheus endpoints and turns the samples into OTLP metrics.
//! - [`kubernetes`]: this node's pods from the Kubernetes API (watch-backed cache), for
//!   log metadata and scrape discovery.
//! - [`host`]: reads host metrics from /proc and /sys under node_exporter's names.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`telemetry`]: every self-metric.
//!
//! [`Agent::start`] starts everything and returns a handle; `main` and the tests both use
//! it (through [`run`]).

pub mod admin;
pub mod checkpoint;
pub mod config;
pub mod host;
pub mod kubernetes;
pub mod scrape;
pub mod ship;
pub mod tail;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::admin::AdminState;
use crate::checkpoint::{CheckpointError, Checkpoints};
use crate::config::Config;
use crate::kubernetes::PodCache;
use crate::ship::LogShipper;
use crate::ship::client::{ClientError, CollectorClient};
use crate::ship::metrics::{MetricsQueue, MetricsShipper};
use crate::tail::Tailer;
use crate::telemetry::Telemetry;

/// How long a stopping agent keeps trying to deliver what it has read.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Checkpoints(#[from] CheckpointError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("collector.retry: {0}")]
    Retry(#[from] vigil_core::retry::BackoffError),
    #[error(transparent)]
    Scrape(#[from] scrape::BuildError),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubernetesError),
    #[error(transparent)]
    HostMetrics(#[from] host::HostMetricsError),
    #[error("self-metrics: {0}")]
    Telemetry(#[from] prometheus::Error),
    #[error("cannot listen on {addr} (admin): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running agent.
pub struct Agent {
    admin_addr: SocketAddr,
    admin_state: Arc<AdminState>,
    metrics: MetricsQueue,
    checkpoints: Arc<Mutex<Checkpoints>>,
    stop_tailer: StopOnDrop,
    tailer: JoinHandle<()>,
    log_shipper: JoinHandle<()>,
    stop_inputs: watch::Sender<bool>,
    inputs: Vec<JoinHandle<()>>,
    stop_metrics: watch::Sender<bool>,
    metrics_shipper: JoinHandle<()>,
    stop_admin: watch::Sender<bool>,
    admin: JoinHandle<()>,
}

impl Agent {
    /// Loads the checkpoints, binds the admin port and starts tailing and shipping. Fails
    /// fast: any error here is a configuration or environment problem.
    pub async fn start(config: Config) -> Result<Agent, StartError> {
        let telemetry = Telemetry::new();
        let checkpoints = Arc::new(Mutex::new(Checkpoints::open(&config.state_dir)?));
        let client = CollectorClient::new(&config.collector)?;
        let listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.admin.listen,
                source,
            })?;
        let admin_addr = listener.local_addr().unwrap_or(config.admin.listen);

        // Twice a batch: one being filled while one is in flight.
        let capacity = config.collector.batch.max_lines.saturating_mul(2).max(2);
        let (records, received) = mpsc::channel(capacity);
        let log_shipper = LogShipper::new(
            received,
            client.clone(),
            &config.collector,
            checkpoints.clone(),
            telemetry.clone(),
        )?;
        let metrics =
            MetricsQueue::new(config.collector.metrics_queue.0 as usize, telemetry.clone());
        let metrics_shipper = MetricsShipper::new(
            metrics.clone(),
            client,
            &config.collector,
            telemetry.clone(),
        )?;
        let pods = match config.kubernetes.enabled {
            true => Some((
                kubernetes::client(&config.kubernetes).await?,
                PodCache::new(config.kubernetes.deleted_pod_grace),
            )),
            false => None,
        };
        let mut tailer = Tailer::new(
            &config.logs,
            checkpoints.clone(),
            telemetry.clone(),
            records,
            std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()),
        );
        if let Some((_, cache)) = &pods {
            tailer = tailer.with_pods(cache.clone(), config.kubernetes.pod_labels);
        }

        // After the tailer learnt whether this is a first start: this creates the file,
        // and finds an unwritable state directory now rather than at the first delivery.
        tail::lock(&checkpoints)
            .save()
            .map_err(|source| CheckpointError::Dir {
                path: config.state_dir.clone(),
                source,
            })?;

        let stop_tailer = Arc::new(AtomicBool::new(false));
        let stop = stop_tailer.clone();
        let tailer = tokio::task::spawn_blocking(move || tailer.run(&stop));
        let log_shipper = tokio::spawn(log_shipper.run());
        let (stop_metrics, metrics_stopped) = watch::channel(false);
        let metrics_shipper = tokio::spawn(metrics_shipper.run(metrics_stopped));
        let (stop_inputs, inputs) = start_inputs(&config, &metrics, &telemetry, pods)?;

        let admin_state = Arc::new(AdminState {
            telemetry,
            running: AtomicBool::new(false),
        });
        let (stop_admin, mut admin_stopped) = watch::channel(false);
        let app = vigil_core::admin::router(admin_state.clone());
        let admin = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = admin_stopped.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                warn!(error = %e, "admin server stopped with an error");
            }
        });
        admin_state.running.store(true, Ordering::Release);
        info!(admin = %admin_addr, collector = %config.collector.endpoint, sources = config.logs.len(), "agent started");
        Ok(Agent {
            admin_addr,
            admin_state,
            metrics,
            checkpoints,
            stop_tailer: StopOnDrop(stop_tailer),
            tailer,
            log_shipper,
            stop_inputs,
            inputs,
            stop_metrics,
            metrics_shipper,
            stop_admin,
            admin,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The queue metrics producers push `ResourceMetrics` into.
    pub fn metrics_queue(&self) -> MetricsQueue {
        self.metrics.clone()
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.admin_state.telemetry
    }

    /// Stops reading, delivers what was read for up to [`SHUTDOWN_GRACE`], and saves the
    /// checkpoints of what the collector acknowledged. What was read and not delivered is
    /// read again after the next start.
    pub async fn shutdown(self) {
        self.admin_state.running.store(false, Ordering::Release);
        self.stop_tailer.0.store(true, Ordering::Release);
        // Inputs first, so what they produced last is in the queue when its shipper drains.
        let _ = self.stop_inputs.send(true);
        for input in self.inputs {
            let _ = input.await;
        }
        let _ = self.stop_metrics.send(true);
        let mut log_shipper = self.log_shipper;
        let mut metrics_shipper = self.metrics_shipper;
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            let _ = (&mut log_shipper).await;
            let _ = (&mut metrics_shipper).await;
        })
        .await;
        if drained.is_err() {
            warn!(
                "the collector did not take everything within the shutdown grace; the rest is read again after a restart"
            );
            log_shipper.abort();
            metrics_shipper.abort();
            let _ = log_shipper.await;
            let _ = metrics_shipper.await;
        }
        // The shipper is gone, so a tailer blocked on the full channel is released.
        let _ = self.tailer.await;
        if let Err(e) = tail::lock(&self.checkpoints).save() {
            error!(error = %e, "cannot save checkpoints at shutdown");
        }
        let _ = self.stop_admin.send(true);
        let _ = self.admin.await;
        info!("agent stopped");
    }
}

/// Starts the inputs: the pod watch (with `pods`), the scraper when there are targets, host
/// metrics when enabled, the metric ones pushing into `metrics`; they stop when the
/// returned sender says so.
fn start_inputs(
    config: &Config,
    metrics: &MetricsQueue,
    telemetry: &Telemetry,
    pods: Option<(kube::Client, PodCache)>,
) -> Result<(watch::Sender<bool>, Vec<JoinHandle<()>>), StartError> {
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let sink = |queue: MetricsQueue| {
        move |batch| {
            queue.push(batch);
            std::future::ready(())
        }
    };
    let mut inputs = Vec::new();
    let mut discovered = None;
    if let Some((client, cache)) = pods {
        let node = config.kubernetes.node_name.clone().unwrap_or_default();
        let discovery = config.scrape.kubernetes_pods.enabled;
        if discovery {
            discovered = Some(cache.clone());
        }
        inputs.push(tokio::spawn(kubernetes::watch_pods(
            client,
            node,
            cache,
            discovery,
            telemetry.clone(),
            until_stopped(),
        )));
    }
    if !config.scrape.static_targets.is_empty() || discovered.is_some() {
        let mut scraper = scrape::Scraper::new(&config.scrape)?;
        if let Some(cache) = discovered {
            scraper = scraper.with_pods(cache);
        }
        scraper.telemetry().register(telemetry.registry())?;
        inputs.push(tokio::spawn(
            scraper.run(sink(metrics.clone()), until_stopped()),
        ));
    }
    if config.host_metrics.enabled {
        let host = host::HostMetrics::new(&config.host_metrics)?;
        inputs.push(tokio::spawn(
            host.run(sink(metrics.clone()), until_stopped()),
        ));
    }
    Ok((stop, inputs))
}

/// Tells the tailer's blocking thread to stop when the agent is dropped without
/// [`Agent::shutdown`] (a panicking test, an aborted task), so the process can exit.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Starts an agent and runs it until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let agent = Agent::start(config).await?;
    shutdown.await;
    info!("shutting down");
    agent.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod proptests;
