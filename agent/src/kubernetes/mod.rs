//! Pod metadata from the Kubernetes API, for log records and for scrape discovery.
//!
//! - [`pod`]: what is kept of a pod ([`PodMeta`]) and the OTel attributes it gives.
//! - [`PodCache`]: the pods of this node by uid, fed by [`watch_pods`]; a deleted pod is
//!   kept for `deleted_pod_grace`, so the last lines of its files still get its metadata.
//!
//! One watch (kube's `watcher`: LIST, then WATCH from its resourceVersion, relisting after
//! a gap) with `fieldSelector=spec.nodeName=<node>`: the agent only ever learns about the
//! pods of its own node. Nothing waits for the API: until a pod is known (cache not synced,
//! API unreachable) its lines go out with the metadata of their path alone.

pub mod pod;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use vigil_core::config::{Errors, Validate, duration, join};

pub use pod::PodMeta;

/// Most pods kept, deleted ones included; the kubelet runs at most 110 pods by default.
pub const MAX_PODS: usize = 1024;

/// The `kubernetes:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// Watch this node's pods through the API; off needs no API access.
    #[serde(default)]
    pub enabled: bool,
    /// Only pods on this node are watched (`fieldSelector=spec.nodeName=<node>`); usually
    /// `${NODE_NAME}` from the downward API.
    #[serde(default)]
    pub node_name: Option<String>,
    /// Metadata of a deleted pod is kept this long, so its last lines still get it.
    #[serde(default = "default_deleted_pod_grace", with = "duration")]
    pub deleted_pod_grace: Duration,
    /// Copy pod labels into records as `k8s.pod.label.<key>`.
    #[serde(default = "default_true")]
    pub pod_labels: bool,
    /// A kubeconfig file, to run outside the cluster. Unset: `KUBECONFIG` or
    /// `~/.kube/config` if there is one, else the pod's service account (in-cluster).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

fn default_deleted_pod_grace() -> Duration {
    Duration::from_secs(300)
}

fn default_true() -> bool {
    true
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            enabled: false,
            node_name: None,
            deleted_pod_grace: default_deleted_pod_grace(),
            pod_labels: true,
            kubeconfig: None,
        }
    }
}

impl Validate for KubernetesConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.enabled && self.node_name.as_deref().is_none_or(str::is_empty) {
            errors.add(
                join(path, "node_name"),
                "is required when enabled (only this node's pods are watched)",
            );
        }
        if let Some(file) = &self.kubeconfig
            && self.enabled
            && !file.is_file()
        {
            errors.add(
                join(path, "kubeconfig"),
                format!("{} is not a readable file", file.display()),
            );
        }
    }
}

/// Why the API client could not be made (at start: a configuration problem).
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubernetes: cannot read the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("kubernetes: no kubeconfig and not in a cluster: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("kubernetes: cannot build the API client: {0}")]
    Client(#[from] kube::Error),
}

/// The API client of `config`.
pub async fn client(config: &KubernetesConfig) -> Result<kube::Client, KubernetesError> {
    vigil_core::process::install_crypto_provider();
    let client_config = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(client_config)?)
}

struct Entry {
    pod: Arc<PodMeta>,
    /// Changes whenever the pod's metadata does.
    version: u64,
    deleted_at: Option<Instant>,
}

struct Pods {
    by_uid: HashMap<String, Entry>,
    next_version: u64,
    full_warned: bool,
}

/// The pods of this node by uid. Cheap to clone; read from the tailer's thread and the
/// scraper, written by [`watch_pods`].
#[derive(Clone)]
pub struct PodCache {
    pods: Arc<RwLock<Pods>>,
    grace: Duration,
    changes: watch::Sender<u64>,
}

impl PodCache {
    pub fn new(grace: Duration) -> PodCache {
        PodCache {
            pods: Arc::new(RwLock::new(Pods {
                by_uid: HashMap::new(),
                next_version: 1,
                full_warned: false,
            })),
            grace,
            changes: watch::channel(0).0,
        }
    }

    /// A pod and the version of its metadata, unless unknown or deleted longer ago than
    /// the grace.
    pub fn get(&self, uid: &str) -> Option<(u64, Arc<PodMeta>)> {
        let now = Instant::now();
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        let entry = pods.by_uid.get(uid)?;
        if entry
            .deleted_at
            .is_some_and(|at| now.duration_since(at) > self.grace)
        {
            return None;
        }
        Some((entry.version, entry.pod.clone()))
    }

    /// The pods that exist (not deleted).
    pub fn live(&self) -> Vec<Arc<PodMeta>> {
        let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
        pods.by_uid
            .values()
            .filter(|e| e.deleted_at.is_none())
            .map(|e| e.pod.clone())
            .collect()
    }

    /// How many pods are kept, deleted ones within their grace included.
    pub fn len(&self) -> usize {
        self.pods
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_uid
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells each time the set of pods or their metadata changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// A pod was added or changed.
    pub fn apply(&self, pod: PodMeta) {
        let now = Instant::now();
        let mut pods = self.write();
        if let Some(entry) = pods.by_uid.get(&pod.uid)
            && *entry.pod == pod
            && entry.deleted_at.is_none()
        {
            return; // a status change the agent does not keep
        }
        if !pods.by_uid.contains_key(&pod.uid) && pods.by_uid.len() >= MAX_PODS {
            self.purge_locked(&mut pods, now);
            evict_oldest_deleted(&mut pods);
            if pods.by_uid.len() >= MAX_PODS {
                if !pods.full_warned {
                    warn!(
                        max = MAX_PODS,
                        "too many pods on this node; new ones get no API metadata"
                    );
                    pods.full_warned = true;
                }
                return;
            }
        }
        let version = pods.next_version;
        pods.next_version += 1;
        pods.by_uid.insert(
            pod.uid.clone(),
            Entry {
                pod: Arc::new(pod),
                version,
                deleted_at: None,
            },
        );
        drop(pods);
        self.changes.send_modify(|v| *v += 1);
    }

    /// A pod was deleted: kept for the grace.
    pub fn delete(&self, uid: &str) {
        let now = Instant::now();
        let mut pods = self.write();
        if let Some(entry) = pods.by_uid.get_mut(uid)
            && entry.deleted_at.is_none()
        {
            entry.deleted_at = Some(now);
            drop(pods);
            self.changes.send_modify(|v| *v += 1);
        }
    }

    /// After a relist: pods not in `present` were deleted while the watch was down.
    pub fn retain_listed(&self, present: &HashSet<String>) {
        let gone: Vec<String> = {
            let pods = self.pods.read().unwrap_or_else(|p| p.into_inner());
            pods.by_uid
                .iter()
                .filter(|(uid, e)| e.deleted_at.is_none() && !present.contains(*uid))
                .map(|(uid, _)| uid.clone())
                .collect()
        };
        for uid in gone {
            self.delete(&uid);
        }
    }

    /// Forgets pods deleted longer ago than the grace.
    pub fn purge(&self) {
        let now = Instant::now();
        let mut pods = self.write();
        self.purge_locked(&mut pods, now);
    }

    fn purge_locked(&self, pods: &mut Pods, now: Instant) {
        let grace = self.grace;
        pods.by_uid.retain(|_, e| {
            e.deleted_at
                .is_none_or(|at| now.duration_since(at) <= grace)
        });
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Pods> {
        self.pods.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn evict_oldest_deleted(pods: &mut Pods) {
    let oldest = pods
        .by_uid
        .iter()
        .filter_map(|(uid, e)| Some((e.deleted_at?, uid.clone())))
        .min();
    if let Some((_, uid)) = oldest {
        pods.by_uid.remove(&uid);
    }
}

/// Keeps `cache` in step with the pods on `node` until `stop` completes. API errors are
/// logged and retried with kube's default backoff; they never stop the agent.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    cache: PodCache,
    annotations: bool,
    telemetry: crate::telemetry::Telemetry,
    stop: impl Future<Output = ()>,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let events = watcher::watcher(api, config).default_backoff();
    tokio::pin!(events);
    tokio::pin!(stop);
    let mut purge = tokio::time::interval(
        cache
            .grace
            .clamp(Duration::from_secs(1), Duration::from_secs(60)),
    );
    let mut listed: Option<HashSet<String>> = None;
    let mut failing = false;
    loop {
        telemetry.kubernetes_pods.set(cache.len() as i64);
        let event = tokio::select! {
            () = &mut stop => return,
            _ = purge.tick() => {
                cache.purge();
                continue;
            }
            event = events.next() => event,
        };
        let Some(event) = event else {
            return;
        };
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                telemetry.kubernetes_watch_errors.inc();
                if !failing {
                    warn!(error = %e, "watching pods failed; retrying (lines keep their path metadata meanwhile)");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            info!("watching pods again");
            failing = false;
        }
        match event {
            Event::Init => listed = Some(HashSet::new()),
            Event::InitApply(p) | Event::Apply(p) => {
                if let Some(meta) = PodMeta::from_pod(&p, annotations) {
                    if let Some(listed) = &mut listed {
                        listed.insert(meta.uid.clone());
                    }
                    cache.apply(meta);
                }
            }
            Event::Delete(p) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    cache.delete(uid);
                }
            }
            Event::InitDone => {
                if let Some(listed) = listed.take() {
                    debug!(pods = listed.len(), "pods listed");
                    cache.retain_listed(&listed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
