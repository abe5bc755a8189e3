//! Scraping Prometheus endpoints, as Prometheus does, into OTLP metrics.
//!
//! - [`config`]: the `scrape:` section ([`ScrapeConfig`]) and its validation.
//! - [`parse`]: the text format 0.0.4 and OpenMetrics 1.0, borrowed from the body.
//! - [`relabel`]: target and metric relabeling (`replace`, `keep`, `drop`, `labelmap`,
//!   `labeldrop`, `labelkeep`).
//! - `http`: one GET with Prometheus' `Accept` header, gzip, and a body limit.
//! - `target`: a target's labels and URL after relabeling, and one scrape of it.
//! - `otlp`: samples → OTLP so that core's remote write gives back Prometheus' series
//!   (its module doc lists the mapping choices); `points`: histogram and summary points;
//!   `staleness`: stale markers.
//! - [`ScrapeTelemetry`]: the `vigil_agent_scrape_*` counters.
//!
//! Behaviour that matches Prometheus: every target gets `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped` and `scrape_samples_post_metric_relabeling`; scraped labels
//! that clash with target labels become `exported_<name>` unless `honor_labels`; a
//! `sample_limit` overrun fails the scrape; series that vanish, and all series of a failed
//! target, get a staleness marker (an OTLP point flagged "no recorded value", which core
//! writes as Prometheus' stale NaN), except series exposed with their own timestamps;
//! targets are spread over the interval by a fixed per-target offset.
//!
//! Not built yet: Kubernetes pod discovery (`kubernetes_pods.enabled: true` is refused by
//! validation).

pub mod config;
mod http;
pub(crate) mod otlp;
pub mod parse;
mod points;
pub mod relabel;
mod staleness;
mod target;
mod telemetry;

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Once;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio::time::Instant;
use url::Url;
use vigil_core::config::{ConfigErrors, Errors, Validate};

pub use config::{KubernetesPods, ScrapeConfig, StaticTarget};
pub use http::{ACCEPT_HEADER, ScrapeError};
pub use target::TargetError;
pub(crate) use target::unix_nanos;
pub use telemetry::ScrapeTelemetry;

use relabel::RelabelRule;
use target::{ScrapeContext, Target};

/// Why a scraper could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid scrape config:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Scrapes a fixed set of targets, remembering each one's series between scrapes.
pub struct Scraper {
    targets: Vec<Target>,
    context: ScrapeContext,
    interval: Duration,
}

impl Scraper {
    /// Validates `config` (reporting under `scrape.`) and relabels its targets; targets
    /// that relabeling drops are left out.
    pub fn new(config: &ScrapeConfig) -> Result<Scraper, BuildError> {
        let mut errors = Errors::default();
        config.validate("scrape", &mut errors);
        errors.into_result()?;
        let rules = |configs: &[relabel::RelabelConfig]| -> Vec<RelabelRule> {
            // Validation compiled every rule already, so none is skipped here.
            configs
                .iter()
                .filter_map(|c| RelabelRule::new(c).ok())
                .collect()
        };
        let target_rules = rules(&config.relabel);
        let mut targets = Vec::with_capacity(config.static_targets.len());
        for entry in &config.static_targets {
            match Target::from_static(entry, &target_rules)? {
                Some(target) => targets.push(target),
                None => tracing::info!(url = %entry.url, "target dropped by relabeling"),
            }
        }
        install_crypto_provider();
        let timeout = config.effective_timeout();
        let client = reqwest::Client::builder()
            .user_agent(concat!("vigil-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout)
            .pool_idle_timeout(config.interval.saturating_mul(2))
            .build()?;
        Ok(Scraper {
            targets,
            context: ScrapeContext {
                client,
                timeout,
                body_limit: config.body_limit.0,
                sample_limit: config.sample_limit,
                honor_labels: config.honor_labels,
                metric_relabel: rules(&config.metric_relabel),
                telemetry: ScrapeTelemetry::new(),
            },
            interval: config.interval,
        })
    }

    /// The counters of this scraper, to register in the admin registry.
    pub fn telemetry(&self) -> &ScrapeTelemetry {
        &self.context.telemetry
    }

    /// The URLs scraped, after relabeling.
    pub fn target_urls(&self) -> impl Iterator<Item = &Url> {
        self.targets.iter().map(|t| &t.url)
    }

    /// Scrapes every target once, concurrently, each bounded by the timeout.
    pub async fn scrape_all(&mut self) -> Vec<ResourceMetrics> {
        let all: Vec<usize> = (0..self.targets.len()).collect();
        self.scrape_some(&all).await
    }

    async fn scrape_some(&mut self, which: &[usize]) -> Vec<ResourceMetrics> {
        let context = &self.context;
        let scrapes = self
            .targets
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .map(|(_, t)| t.scrape(context));
        join_all(scrapes).await.into_iter().flatten().collect()
    }

    /// Scrapes every target each interval, at its own offset, and hands each scrape's
    /// metrics to `sink` until `shutdown` completes. Each target keeps its own rhythm: a
    /// slow target delays nobody else. `sink` is awaited (a bounded queue behind it pushes
    /// back); scrapes in flight pause meanwhile, their timeouts still running.
    pub async fn run<S, F>(self, mut sink: S, shutdown: impl Future<Output = ()>)
    where
        S: FnMut(Vec<ResourceMetrics>) -> F,
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let start = Instant::now();
        let mut due: Vec<Instant> = (0..self.targets.len())
            .map(|i| start + self.offset(i))
            .collect();
        let Scraper {
            targets,
            context,
            interval,
        } = self;
        let context = &context;
        // A target is either idle here or moved into its scrape in flight.
        let mut idle: Vec<Option<Target>> = targets.into_iter().map(Some).collect();
        let mut in_flight = FuturesUnordered::new();
        loop {
            let next = (0..idle.len())
                .filter(|&i| idle[i].is_some())
                .map(|i| due[i])
                .min();
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = wake => {
                    let now = Instant::now();
                    for i in 0..idle.len() {
                        if due[i] > now {
                            continue;
                        }
                        let Some(mut target) = idle[i].take() else {
                            continue;
                        };
                        // A scrape that overran skips the missed slots rather than bursting.
                        while due[i] <= now {
                            due[i] += interval;
                        }
                        in_flight.push(async move {
                            let metrics = target.scrape(context).await;
                            (i, target, metrics)
                        });
                    }
                }
                Some((i, target, metrics)) = in_flight.next() => {
                    idle[i] = Some(target);
                    if !metrics.is_empty() {
                        sink(metrics).await;
                    }
                }
            }
        }
    }

    /// Where in the interval a target is scraped: a fixed offset from a hash of its URL,
    /// as Prometheus spreads targets so they are not all scraped at once.
    fn offset(&self, target: usize) -> Duration {
        let mut hasher = DefaultHasher::new();
        self.targets[target].url.as_str().hash(&mut hasher);
        let nanos = self.interval.as_nanos().max(1);
        Duration::from_nanos((u128::from(hasher.finish()) % nanos) as u64)
    }
}

/// TLS for scrapes uses rustls with the ring provider, as everywhere in Vigil; installed
/// once per process (another part of the process may have installed it first).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests;
