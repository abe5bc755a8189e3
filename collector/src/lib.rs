//! vigil-collector: receives OTLP, buffers it durably, exports it to VictoriaMetrics,
//! Grafana Loki and Grafana Tempo.
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`receiver`]: OTLP/gRPC and OTLP/HTTP receivers; success only once data is durable.
//! - [`exporter`]: the exporters and the [`exporter::pump::Pump`] that batches, retries,
//!   acks and dead-letters for all of them.
//! - [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`buffer`]: buffers shared by several collectors: Redis Streams and NATS JetStream.
//! - [`telemetry`]: every self-metric.
//! - [`tools`]: the operator commands `buffer verify|repair` and `dlq list|show|replay`.
//!
//! [`Collector::start`] binds everything and returns a handle; `main` and the tests both
//! use it.

pub mod admin;
pub mod buffer;
pub mod config;
pub mod exporter;
pub mod receiver;
pub mod telemetry;
pub mod tls;
pub mod tools;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use vigil_core::Signal;
use vigil_core::buffer::disk::DiskBuffer;
use vigil_core::buffer::memory::MemoryBuffer;
use vigil_core::buffer::{Buffer, BufferError};

use crate::admin::AdminState;
use crate::buffer::nats::NatsBuffer;
use crate::buffer::redis::RedisBuffer;
use crate::config::{BufferKind, Config};
use crate::exporter::Exporter;
use crate::exporter::pump::Pump;
use crate::receiver::Ingest;
use crate::telemetry::Telemetry;

pub const USER_AGENT: &str = concat!("vigil-collector/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the {kind} buffer: {source}")]
    Buffer {
        kind: &'static str,
        source: BufferError,
    },
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("exporter {name}: {message}")]
    Exporter { name: &'static str, message: String },
    #[error("{what}: {message}")]
    Security { what: &'static str, message: String },
}

/// A running collector.
pub struct Collector {
    grpc_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    admin_addr: SocketAddr,
    buffer: Arc<dyn Buffer>,
    stop_receivers: watch::Sender<bool>,
    stop_exporters: watch::Sender<bool>,
    /// The OTLP receivers' servers.
    receivers: JoinSet<()>,
    /// The admin server, up until the exporters stopped.
    admin: JoinSet<()>,
    pumps: JoinSet<()>,
}

impl Collector {
    /// Opens the buffer, binds every port and starts the exporters. Fails fast: any error
    /// here is a configuration or environment problem the operator must fix.
    pub async fn start(config: Config) -> Result<Collector, StartError> {
        let telemetry = Telemetry::new();
        let buffer = open_buffer(&config, &telemetry).await?;
        let exporters = build_exporters(&config)?;

        // Bind everything before serving anything, so a port clash fails start-up whole.
        let bind = |what: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })
        };
        let otlp = &config.receivers.otlp;
        let grpc_listener = match &otlp.grpc {
            Some(l) => Some(bind("OTLP/gRPC", l.listen).await?),
            None => None,
        };
        let http_listener = match &otlp.http {
            Some(l) => Some(bind("OTLP/HTTP", l.listen).await?),
            None => None,
        };
        let admin_listener = bind("admin", config.admin.listen).await?;
        let local = |l: &TcpListener| l.local_addr().ok();
        let grpc_addr = grpc_listener.as_ref().and_then(local);
        let http_addr = http_listener.as_ref().and_then(local);
        let admin_addr = local(&admin_listener).unwrap_or(config.admin.listen);

        let security = |what: &'static str| move |message| StartError::Security { what, message };
        let tls_of = |listen: &Option<config::Listen>| listen.as_ref().and_then(|l| l.tls.clone());
        let grpc_tls = tls_of(&otlp.grpc)
            .map(|t| tls::grpc_config(&t))
            .transpose()
            .map_err(security("receivers.otlp.grpc.tls"))?;
        let http_tls = tls_of(&otlp.http)
            .map(|t| tls::server_config(&t))
            .transpose()
            .map_err(security("receivers.otlp.http.tls"))?;
        let admin_tls = config
            .admin
            .tls
            .as_ref()
            .map(tls::server_config)
            .transpose()
            .map_err(security("admin.tls"))?;

        let exported = Signal::ALL.map(|s| config.exports(s));
        let mut ingest = Ingest::new(
            buffer.clone(),
            telemetry.clone(),
            exported,
            otlp.default_tenant.clone(),
        );
        if let Some(auth) = &otlp.auth {
            let tokens = receiver::auth::Tokens::new(auth, &otlp.tenant_header)
                .map_err(security("receivers.otlp.auth"))?;
            ingest = ingest.with_auth(tokens);
        }
        if let Some(limit) = &otlp.rate_limit {
            ingest = ingest.with_rate_limit(receiver::auth::RateLimiter::new(limit));
        }
        let ingest = Arc::new(ingest);
        let (stop_receivers, receivers_stopped) = watch::channel(false);
        let (stop_exporters, exporters_stopped) = watch::channel(false);
        let mut receivers = JoinSet::new();
        let mut admin = JoinSet::new();

        if let Some(listener) = grpc_listener {
            let (metrics, logs, traces) = receiver::grpc::services(
                ingest.clone(),
                &otlp.tenant_header,
                otlp.max_decompressed_bytes.0 as usize,
            );
            let mut stop = receivers_stopped.clone();
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            // Windows that grow with the connection's bandwidth-delay product: with the
            // fixed 64 KiB default, a large uncompressed export crawls in round trips.
            let mut builder = tonic::transport::Server::builder().http2_adaptive_window(Some(true));
            if let Some(tls) = grpc_tls {
                builder = builder.tls_config(tls).map_err(|e| StartError::Security {
                    what: "receivers.otlp.grpc.tls",
                    message: e.to_string(),
                })?;
            }
            receivers.spawn(async move {
                let result = builder
                    .add_service(metrics)
                    .add_service(logs)
                    .add_service(traces)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    warn!(error = %e, "OTLP/gRPC server stopped with an error");
                }
            });
        }
        if let Some(listener) = http_listener {
            let limits = receiver::http::Limits {
                max_request_bytes: otlp.max_request_bytes.0 as usize,
                max_decompressed_bytes: otlp.max_decompressed_bytes.0 as usize,
            };
            let header = http::HeaderName::from_bytes(otlp.tenant_header.as_bytes())
                .unwrap_or(http::HeaderName::from_static("x-scope-orgid"));
            let app = receiver::http::app(ingest.clone(), limits, header);
            receivers.spawn(serve_http(
                "OTLP/HTTP",
                listener,
                http_tls,
                app,
                receivers_stopped.clone(),
            ));
        }
        let admin_state = Arc::new(AdminState {
            telemetry: telemetry.clone(),
            buffer: buffer.clone(),
            receivers_bound: Default::default(),
        });
        // The admin port stays up until the exporters stop, so a draining collector can
        // still be scraped.
        admin.spawn(serve_http(
            "admin",
            admin_listener,
            admin_tls,
            vigil_core::admin::router(admin_state.clone()),
            exporters_stopped.clone(),
        ));
        admin_state.receivers_bound.store(true, Ordering::Release);

        let mut pumps = JoinSet::new();
        // Zero-valued series for what this collector serves, so graphs start at 0.
        for signal in Signal::ALL.into_iter().filter(|s| config.exports(*s)) {
            if otlp.grpc.is_some() {
                telemetry.expect_receiver(signal, "grpc");
            }
            if otlp.http.is_some() {
                telemetry.expect_receiver(signal, "http");
            }
        }
        for (exporter, delivery) in exporters {
            telemetry.expect_exporter(exporter.signal(), exporter.name());
            let pump =
                Pump::new(exporter, buffer.clone(), delivery, telemetry.clone()).map_err(|e| {
                    StartError::Exporter {
                        name: "pump",
                        message: e.to_string(),
                    }
                })?;
            let pump = pump.with_drain(config.shutdown.drain_timeout);
            pumps.spawn(pump.run(exporters_stopped.clone()));
        }
        info!(grpc = ?grpc_addr, http = ?http_addr, admin = %admin_addr, "collector started");
        Ok(Collector {
            grpc_addr,
            http_addr,
            admin_addr,
            buffer,
            stop_receivers,
            stop_exporters,
            receivers,
            admin,
            pumps,
        })
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Stops in order, so a restart afterwards neither loses nor repeats anything:
    /// receivers stop accepting and answer the requests in flight (their data is in the
    /// buffer by then); exporters then drain for up to `shutdown.drain_timeout` (requests
    /// in flight finish and are acked, what is ready keeps going out, nothing is retried);
    /// last the buffer is closed, with what was not acked still in it.
    pub async fn shutdown(mut self) {
        let _ = self.stop_receivers.send(true);
        while self.receivers.join_next().await.is_some() {}
        let _ = self.stop_exporters.send(true);
        while self.pumps.join_next().await.is_some() {}
        while self.admin.join_next().await.is_some() {}
        if let Err(e) = self.buffer.close().await {
            warn!(error = %e, "closing the buffer failed");
        }
        info!("collector stopped");
    }
}

/// Starts a collector and runs it until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let collector = Collector::start(config).await?;
    shutdown.await;
    info!("shutting down");
    collector.shutdown().await;
    Ok(())
}

async fn open_buffer(
    config: &Config,
    telemetry: &Telemetry,
) -> Result<Arc<dyn Buffer>, StartError> {
    let failed = |kind: &'static str| move |source| StartError::Buffer { kind, source };
    // Validation requires the section of the chosen kind; a Config built in code may lack it.
    fn section<'c, T>(section: &'c Option<T>, kind: &'static str) -> Result<&'c T, StartError> {
        section.as_ref().ok_or_else(|| StartError::Buffer {
            kind,
            source: BufferError::Unavailable(format!("buffer.{kind} is not configured")),
        })
    }
    let buffer = &config.buffer;
    match buffer.kind {
        BufferKind::Memory => Ok(Arc::new(MemoryBuffer::new(buffer.memory.max_bytes.0))),
        BufferKind::Redis => {
            let redis = section(&buffer.redis, "redis")?;
            let opened = RedisBuffer::connect(redis.options())
                .await
                .map_err(failed("redis"))?;
            info!(url = %redact(&redis.url), "redis buffer connected");
            Ok(Arc::new(opened))
        }
        BufferKind::Nats => {
            let nats = section(&buffer.nats, "nats")?;
            let opened = NatsBuffer::open(nats.options())
                .await
                .map_err(failed("nats"))?;
            info!(url = %redact(&nats.url), stream = %nats.stream, "nats buffer connected");
            Ok(Arc::new(opened))
        }
        BufferKind::Disk => {
            let opened = DiskBuffer::open(buffer.disk.options())
                .await
                .map_err(failed("disk"))?;
            let report = opened.recovery();
            telemetry
                .buffer_corrupt_records
                .set(report.corrupt_records as i64);
            telemetry
                .buffer_truncated_bytes
                .set(report.truncated_bytes as i64);
            info!(path = %buffer.disk.path.display(), pending = ?report.pending, "disk buffer open");
            Ok(Arc::new(opened))
        }
    }
}

/// A URL for logs: the password, if any, replaced.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid URL>".to_string(),
    }
}

type BuiltExporters = Vec<(Arc<dyn Exporter>, config::Delivery)>;

fn build_exporters(config: &Config) -> Result<BuiltExporters, StartError> {
    let mut built: BuiltExporters = Vec::new();
    let e = &config.exporters;
    if let Some(c) = &e.victoriametrics {
        let exporter = exporter::victoriametrics::VictoriaMetrics::new(c).map_err(|err| {
            StartError::Exporter {
                name: "victoriametrics",
                message: err.to_string(),
            }
        })?;
        built.push((Arc::new(exporter), c.delivery()));
    }
    if let Some(c) = &e.loki {
        let exporter = exporter::loki::Loki::new(c).map_err(|err| StartError::Exporter {
            name: "loki",
            message: err.to_string(),
        })?;
        built.push((Arc::new(exporter), c.delivery()));
    }
    if let Some(c) = &e.tempo {
        let exporter = exporter::tempo::Tempo::new(c).map_err(|err| StartError::Exporter {
            name: "tempo",
            message: err.to_string(),
        })?;
        built.push((Arc::new(exporter), c.delivery()));
    }
    Ok(built)
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until `stop` turns true.
async fn serve_http(
    what: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
) {
    if let Some(config) = tls {
        return tls::serve_https(what, listener, config, app, stop).await;
    }
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = result {
        warn!(server = what, error = %e, "server stopped with an error");
    }
}

#[cfg(test)]
mod proptests;
