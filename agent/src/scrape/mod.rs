//! Scraping Prometheus endpoints, as Prometheus does, into OTLP metrics.
//!
//! - [`config`]: the `scrape:` section ([`ScrapeConfig`]) and its validation.
//! - [`discovery`]: which pods of the node's pod cache are scraped, with which labels.
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
//! With `kubernetes_pods.enabled` (and `kubernetes.enabled`), the pods of this node that
//! ask for it are scraped too; [`discovery`] says which and with what labels.

pub mod config;
pub mod discovery;
mod http;
pub(crate) mod otlp;
pub mod parse;
mod points;
pub mod relabel;
mod staleness;
mod target;
mod telemetry;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use prost::Message;
use tokio::time::Instant;
use url::Url;
use vigil_core::config::{ConfigErrors, Errors, Validate};

pub use config::{KubernetesPods, ScrapeConfig, StaticTarget};
pub use http::{ACCEPT_HEADER, ScrapeError};
pub use target::TargetError;
pub(crate) use target::unix_nanos;
pub use telemetry::ScrapeTelemetry;

use crate::kubernetes::PodCache;
use crate::ship::metrics::EncodedMetrics;
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

/// Scrapes its targets, remembering each one's series between scrapes: the static ones,
/// and with a pod cache ([`Scraper::with_pods`]) the pods discovered from it, which come
/// and go at run time.
pub struct Scraper {
    targets: Vec<Target>,
    context: ScrapeContext,
    interval: Duration,
    /// Rules run on every target's labels, also on those of pods found later.
    target_rules: Vec<RelabelRule>,
    pods: Option<PodCache>,
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
        vigil_core::process::install_crypto_provider();
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
            target_rules,
            pods: None,
        })
    }

    /// Also scrapes the pods of `cache` that ask for it (see [`discovery`]), as they come
    /// and go.
    pub fn with_pods(mut self, cache: PodCache) -> Scraper {
        self.pods = Some(cache);
        self
    }

    /// The counters of this scraper, to register in the admin registry.
    pub fn telemetry(&self) -> &ScrapeTelemetry {
        &self.context.telemetry
    }

    /// The URLs of the static targets, after relabeling.
    pub fn target_urls(&self) -> impl Iterator<Item = &Url> {
        self.targets.iter().map(|t| &t.url)
    }

    /// Scrapes every static target once, concurrently, each bounded by the timeout.
    /// Decoded: this serves tests and tools; [`Scraper::run`] hands on the bytes.
    pub async fn scrape_all(&mut self) -> Vec<ResourceMetrics> {
        let all: Vec<usize> = (0..self.targets.len()).collect();
        self.scrape_some(&all)
            .await
            .iter()
            // Our own encoding of valid messages: it always decodes.
            .filter_map(|bytes| ResourceMetrics::decode(bytes.as_slice()).ok())
            .collect()
    }

    /// What a scrape of the first static target makes of `body` (Prometheus' text format),
    /// without HTTP: parse, relabel, staleness, OTLP. For the scrape benchmark, which
    /// measures this path alone; `None` without a static target.
    #[doc(hidden)]
    pub fn record_body(&mut self, body: String) -> Option<Vec<EncodedMetrics>> {
        let target = self.targets.first_mut()?;
        let now_ns = unix_nanos(std::time::SystemTime::now());
        let fetched = Ok((body, parse::Format::Text));
        Some(target.record(fetched, now_ns, std::time::Instant::now(), &self.context))
    }

    async fn scrape_some(&mut self, which: &[usize]) -> Vec<EncodedMetrics> {
        let context = &self.context;
        let scrapes = self
            .targets
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .map(|(_, t)| t.scrape(context));
        join_all(scrapes).await.into_iter().flatten().collect()
    }

    /// The pod targets the cache asks for now, by pod uid.
    fn pod_targets(&self) -> HashMap<String, Target> {
        let Some(cache) = &self.pods else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        for pod in cache.live() {
            let Some(labels) = discovery::pod_target_labels(&pod) else {
                continue;
            };
            let what = format!("pod {}/{}", pod.namespace, pod.name);
            match Target::from_labels(labels, &self.target_rules, &what) {
                Ok(Some(target)) => {
                    out.insert(pod.uid.clone(), target);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "pod not scraped"),
            }
        }
        out
    }

    /// Scrapes every target each interval, at its own offset, and hands each scrape's
    /// metrics to `sink` until `shutdown` completes. Each target keeps its own rhythm: a
    /// slow target delays nobody else. `sink` is awaited (a bounded queue behind it pushes
    /// back); scrapes in flight pause meanwhile, their timeouts still running. Pod targets
    /// are added and removed as the pod cache changes; a removed one gets stale markers
    /// for all its series (after its scrape in flight, if any).
    pub async fn run<S, F>(mut self, mut sink: S, shutdown: impl Future<Output = ()>)
    where
        S: FnMut(Vec<EncodedMetrics>) -> F,
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let start = Instant::now();
        let interval = self.interval;
        let mut changes = self.pods.as_ref().map(PodCache::subscribe);
        let mut slots: Vec<Slot> = std::mem::take(&mut self.targets)
            .into_iter()
            .map(|t| Slot {
                due: start + offset(&t.url, interval),
                state: SlotState::Idle(Box::new(t)),
                pod: None,
                retire: false,
            })
            .collect();
        let mut resync = changes.is_some();
        let context = &self.context;
        let mut in_flight = FuturesUnordered::new();
        loop {
            if std::mem::take(&mut resync) {
                let wanted = self.pod_targets();
                let retired = sync_pod_slots(&mut slots, wanted, interval, context);
                for metrics in retired {
                    sink(metrics).await;
                }
            }
            let next = slots
                .iter()
                .filter(|s| matches!(s.state, SlotState::Idle(_)))
                .map(|s| s.due)
                .min();
            let wake = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let changed = async {
                match &mut changes {
                    Some(changes) => changes.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                alive = changed => {
                    match alive {
                        true => resync = true,
                        false => changes = None,
                    }
                }
                () = wake => {
                    let now = Instant::now();
                    for (i, slot) in slots.iter_mut().enumerate() {
                        if slot.due > now || !matches!(slot.state, SlotState::Idle(_)) {
                            continue;
                        }
                        let SlotState::Idle(mut target) =
                            std::mem::replace(&mut slot.state, SlotState::Scraping)
                        else {
                            continue;
                        };
                        // A scrape that overran skips the missed slots rather than bursting.
                        while slot.due <= now {
                            slot.due += interval;
                        }
                        in_flight.push(async move {
                            let metrics = target.scrape(context).await;
                            (i, target, metrics)
                        });
                    }
                }
                Some((i, mut target, metrics)) = in_flight.next() => {
                    if !metrics.is_empty() {
                        sink(metrics).await;
                    }
                    let slot = &mut slots[i];
                    if slot.retire {
                        sink(target.retire(context)).await;
                        slot.state = SlotState::Gone;
                        slot.retire = false;
                    } else {
                        slot.state = SlotState::Idle(target);
                    }
                }
            }
        }
    }
}

/// A target's place in the scrape loop.
struct Slot {
    state: SlotState,
    due: Instant,
    /// The pod uid of a discovered target, and its [`Target::fingerprint`].
    pod: Option<(String, String)>,
    /// Its pod went away while it was being scraped: retire it once the scrape is back.
    retire: bool,
}

enum SlotState {
    Idle(Box<Target>),
    Scraping,
    /// A retired pod target; the slot is free for another.
    Gone,
}

/// Makes the pod slots match `wanted` (targets by pod uid): a pod target no longer wanted,
/// or changed, is retired (its stale markers returned, or retired after its scrape in
/// flight); a new one gets a slot, scraped at its offset in the interval.
fn sync_pod_slots(
    slots: &mut Vec<Slot>,
    mut wanted: HashMap<String, Target>,
    interval: Duration,
    context: &ScrapeContext,
) -> Vec<Vec<EncodedMetrics>> {
    let mut retired = Vec::new();
    for slot in slots.iter_mut() {
        let Some((uid, fingerprint)) = &slot.pod else {
            continue;
        };
        if slot.retire || matches!(slot.state, SlotState::Gone) {
            continue;
        }
        if wanted
            .get(uid)
            .is_some_and(|t| t.fingerprint() == *fingerprint)
        {
            wanted.remove(uid);
            continue;
        }
        match std::mem::replace(&mut slot.state, SlotState::Gone) {
            SlotState::Idle(mut target) => {
                tracing::info!(url = %target.url, "pod target removed");
                retired.push(target.retire(context));
            }
            SlotState::Scraping => {
                slot.state = SlotState::Scraping;
                slot.retire = true;
            }
            SlotState::Gone => {}
        }
    }
    let now = Instant::now();
    for (uid, target) in wanted {
        tracing::info!(url = %target.url, job = %target.job, "pod target added");
        let slot = Slot {
            due: now + offset(&target.url, interval),
            pod: Some((uid, target.fingerprint())),
            state: SlotState::Idle(Box::new(target)),
            retire: false,
        };
        match slots
            .iter()
            .position(|s| matches!(s.state, SlotState::Gone) && !s.retire)
        {
            Some(free) => slots[free] = slot,
            None => slots.push(slot),
        }
    }
    retired
}

/// Where in the interval a target is scraped: a fixed offset from a hash of its URL, as
/// Prometheus spreads targets so they are not all scraped at once.
fn offset(url: &Url, interval: Duration) -> Duration {
    let mut hasher = DefaultHasher::new();
    url.as_str().hash(&mut hasher);
    let nanos = interval.as_nanos().max(1);
    Duration::from_nanos((u128::from(hasher.finish()) % nanos) as u64)
}

#[cfg(test)]
mod tests;
