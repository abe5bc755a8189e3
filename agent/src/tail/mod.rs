//! Tailing log files: discovery, identity, rotation, reading, decoding.
//!
//! - [`line`]: bytes → lines, long lines cut into flagged pieces.
//! - [`format`]: lines → entries for CRI, Docker json-file and raw files.
//! - [`multiline`]: entries of one message (stack traces) merged by a start pattern.
//! - [`k8s`]: Kubernetes metadata from the kubelet's log paths.
//!
//! With a [`PodCache`] ([`Tailer::with_pods`]) a file whose path names a pod also gets
//! what the API says about the pod (owner workload, labels). The resource is built once
//! when a file is opened, from its path; before each read the tailer looks the pod up by
//! uid and, when the cache has it (or a newer version of it), rebuilds the file's resource
//! from the path's plus the pod's. So a file opened before the cache synced gets the
//! metadata from the first read after the pod is known, and lines are never held back
//! waiting for the API. A pod that leaves the cache (deleted longer ago than the grace)
//! leaves the last metadata on its files.
//!
//! The [`Tailer`] runs on its own thread (file reads block) and hands [`TailedRecord`]s to
//! the shipper through a bounded channel: when the collector is unreachable the channel
//! fills and the tailer stops reading — the files themselves are the buffer. It never
//! blocks on the channel, though: it keeps scanning, so files rotated while the collector
//! is away are opened (and so kept readable) before a later rotation deletes them.
//!
//! Rotation: every `scan_interval` the globs are evaluated again. A file is known by its
//! device and inode, so a renamed file is followed (read on to its end, never re-read) and
//! the new file at the old path is read from its beginning. A file whose size drops below
//! the read offset was truncated (copytruncate) and is read again from 0. A file no glob
//! finds any more (renamed away, deleted) is read to its end, and closed once what was read
//! from it is delivered and a scan interval passed with no growth.

pub mod format;
pub mod k8s;
pub mod line;
pub mod multiline;

mod file;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::checkpoint::{Checkpoints, FileKey};
use crate::config::{LogSource, StartAt};
use crate::kubernetes::PodCache;
use crate::telemetry::Telemetry;
use file::TrackedFile;

/// How often open files are checked for new data.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a tailer whose channel is full tries again.
const BLOCKED_INTERVAL: Duration = Duration::from_millis(10);
/// Most bytes read from one file before the others get their turn.
const READ_BUDGET: usize = 1 << 20;
/// Most files tailed at once; more are left alone, with a warning.
const MAX_FILES: usize = 4096;
/// Compressed (rotated) files are never tailed.
const COMPRESSED: [&str; 6] = ["gz", "bz2", "xz", "zst", "zip", "lz4"];

/// One log record on its way to the collector, and what delivering it completes.
#[derive(Debug, Clone)]
pub struct TailedRecord {
    /// The file's resource: shared by every record of the file.
    pub resource: Arc<Resource>,
    pub record: LogRecord,
    pub ack: Ack,
    /// Roughly the record's encoded size, for batching.
    pub size: usize,
}

/// Delivering a record lets its file resume from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub key: FileKey,
    pub generation: u32,
    pub offset: u64,
}

/// A source's settings, compiled.
struct Source {
    config: LogSource,
    exclude: Vec<glob::Pattern>,
    /// The start pattern and timeout, when lines of one message are merged.
    multiline: Option<(regex::bytes::Regex, Duration)>,
}

/// The shipper is gone: nothing read any more can be delivered.
#[derive(Debug)]
struct ShipperGone;

/// How a round of the tailer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tick {
    /// A file has more to read right away.
    Busy,
    /// Everything is read.
    Idle,
    /// The channel to the shipper is full: records are held back and nothing is read.
    Blocked,
}

/// Hands a record to the shipper without blocking: when the channel is full it is held
/// back (after any already held, to keep the order). False once records are held.
fn forward(
    records: &mpsc::Sender<TailedRecord>,
    held: &mut VecDeque<TailedRecord>,
    record: TailedRecord,
) -> Result<bool, ShipperGone> {
    if !held.is_empty() {
        held.push_back(record);
        return Ok(false);
    }
    match records.try_send(record) {
        Ok(()) => Ok(true),
        Err(mpsc::error::TrySendError::Full(record)) => {
            held.push_back(record);
            Ok(false)
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(ShipperGone),
    }
}

pub struct Tailer {
    sources: Vec<Source>,
    scan_interval: Duration,
    files: HashMap<FileKey, TrackedFile>,
    checkpoints: Arc<Mutex<Checkpoints>>,
    telemetry: Telemetry,
    records: mpsc::Sender<TailedRecord>,
    node_name: Option<String>,
    /// Files found by the first scan of the agent's first start are read from `start_at`.
    initial_scan: bool,
    last_scan: Option<Instant>,
    /// Records read while the channel was full, oldest first: at most one read's worth.
    held: VecDeque<TailedRecord>,
    /// Paths already warned about, so a broken file is not reported every scan.
    warned: HashSet<PathBuf>,
    /// Pod metadata from the API, and whether pod labels are copied.
    pods: Option<(PodCache, bool)>,
    /// Files whose path names a pod, when there is a pod cache.
    pod_files: HashMap<FileKey, PodFile>,
}

/// A file of a pod: its resource from the path, and the pod version it was enriched with.
struct PodFile {
    uid: String,
    base: Arc<Resource>,
    version: u64,
}

impl Tailer {
    /// A tailer for validated sources. `node_name` becomes `host.name` and `k8s.node.name`.
    pub fn new(
        sources: &[LogSource],
        checkpoints: Arc<Mutex<Checkpoints>>,
        telemetry: Telemetry,
        records: mpsc::Sender<TailedRecord>,
        node_name: Option<String>,
    ) -> Tailer {
        let sources: Vec<Source> = sources
            .iter()
            .map(|config| Source {
                exclude: config
                    .exclude
                    .iter()
                    .filter_map(|p| glob::Pattern::new(p).ok())
                    .collect(),
                multiline: config.multiline.as_ref().and_then(|m| {
                    let start = regex::bytes::Regex::new(&m.start_pattern).ok()?;
                    Some((start, m.timeout))
                }),
                config: config.clone(),
            })
            .collect();
        let scan_interval = sources
            .iter()
            .map(|s| s.config.scan_interval)
            .min()
            .unwrap_or(Duration::from_secs(5));
        let initial_scan = lock(&checkpoints).first_start();
        Tailer {
            sources,
            scan_interval,
            files: HashMap::new(),
            checkpoints,
            telemetry,
            records,
            node_name,
            initial_scan,
            last_scan: None,
            held: VecDeque::new(),
            warned: HashSet::new(),
            pods: None,
            pod_files: HashMap::new(),
        }
    }

    /// Adds the API's metadata of each file's pod from `cache`; `pod_labels` copies the
    /// pod's labels as `k8s.pod.label.<key>`.
    pub fn with_pods(mut self, cache: PodCache, pod_labels: bool) -> Tailer {
        self.pods = Some((cache, pod_labels));
        self
    }

    /// Rebuilds a file's resource when the cache knows its pod, or knows it better.
    fn enrich(&mut self, key: FileKey) {
        let (Some((cache, pod_labels)), Some(link)) = (&self.pods, self.pod_files.get_mut(&key))
        else {
            return;
        };
        let Some((version, pod)) = cache.get(&link.uid) else {
            return;
        };
        if version == link.version {
            return;
        }
        let Some(file) = self.files.get_mut(&key) else {
            return;
        };
        let mut resource = (*link.base).clone();
        let present: HashSet<String> = resource.attributes.iter().map(|a| a.key.clone()).collect();
        // The path's and the source's attributes win over the API's.
        for (name, value) in pod.attributes(*pod_labels) {
            if !present.contains(&name) {
                resource.attributes.push(string_attribute(name, value));
            }
        }
        file.set_resource(Arc::new(resource));
        link.version = version;
        debug!(path = %file.path.display(), pod = %pod.name, "pod metadata from the API");
    }

    /// Tails until `stop` is set or the shipper is gone. Blocks: run it on its own thread.
    pub fn run(mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            match self.tick(Instant::now()) {
                Ok(Tick::Busy) => {}
                Ok(Tick::Idle) => std::thread::sleep(POLL_INTERVAL),
                Ok(Tick::Blocked) => std::thread::sleep(BLOCKED_INTERVAL),
                Err(ShipperGone) => break,
            }
        }
        debug!("tailer stopped");
    }

    /// One round: scan if due, read every file (unless the channel is full), close
    /// finished ones.
    fn tick(&mut self, now: Instant) -> Result<Tick, ShipperGone> {
        let scan_due = self
            .last_scan
            .is_none_or(|at| now.duration_since(at) >= self.scan_interval);
        if scan_due {
            self.scan(now);
            self.last_scan = Some(now);
        }
        self.flush_held()?;
        let mut busy = false;
        let keys: Vec<FileKey> = self.files.keys().copied().collect();
        let mut lag = Some(0).filter(|_| scan_due);
        for key in keys {
            self.enrich(key);
            let Some(file) = self.files.get_mut(&key) else {
                continue;
            };
            let checkpoints = &self.checkpoints;
            // While records are held back nothing is read, so each file's records stay in
            // order and what is held stays within one read's worth.
            if self.held.is_empty() {
                let records = &self.records;
                let held = &mut self.held;
                let mut send = |record: TailedRecord| forward(records, held, record);
                busy |= file.poll(
                    now,
                    READ_BUDGET,
                    self.scan_interval,
                    checkpoints,
                    &self.telemetry,
                    &mut send,
                )?;
            }
            if file.is_done(now, self.scan_interval, checkpoints) {
                info!(path = %file.path.display(), "closing a file that is gone and fully delivered");
                lock(checkpoints).forget(key);
                self.files.remove(&key);
                self.pod_files.remove(&key);
                self.telemetry.files_closed.inc();
                continue;
            }
            // Measured at each scan, also while nothing is read: that is when lag grows.
            if let Some(lag) = &mut lag {
                *lag += file.lag();
            }
        }
        self.telemetry.files_watched.set(self.files.len() as i64);
        if let Some(lag) = lag {
            self.telemetry.file_lag_bytes.set(lag as i64);
        }
        Ok(match (self.held.is_empty(), busy) {
            (false, _) => Tick::Blocked,
            (true, true) => Tick::Busy,
            (true, false) => Tick::Idle,
        })
    }

    /// Moves held-back records into the channel, as far as it has room.
    fn flush_held(&mut self) -> Result<(), ShipperGone> {
        while let Some(record) = self.held.pop_front() {
            match self.records.try_send(record) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(record)) => {
                    self.held.push_front(record);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(ShipperGone),
            }
        }
        Ok(())
    }

    /// Evaluates every glob: new files are opened, moved ones followed, missing ones marked.
    fn scan(&mut self, now: Instant) {
        let mut seen: HashSet<FileKey> = HashSet::new();
        for index in 0..self.sources.len() {
            for path in self.matching_paths(index) {
                let metadata = match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => m,
                    _ => continue,
                };
                let key = FileKey::of(&metadata);
                if !seen.insert(key) {
                    continue; // also found under another path or source: first one wins
                }
                if let Some(file) = self.files.get_mut(&key) {
                    file.found_at(&path, &self.checkpoints);
                    continue;
                }
                if self.files.len() >= MAX_FILES {
                    self.warn_once(&path, "too many files tailed; this one is left alone");
                    continue;
                }
                self.open(index, &path);
            }
        }
        for (key, file) in &mut self.files {
            if !seen.contains(key) {
                file.missing_since(now);
            }
        }
        if self.last_scan.is_none() {
            // Files that went away while the agent was stopped.
            lock(&self.checkpoints).retain(|key| self.files.contains_key(key));
        }
        if self.initial_scan {
            // Where `start_at: end` put each file must survive a crash before the first
            // delivery, or the next start would take them for new files.
            if let Err(e) = lock(&self.checkpoints).save() {
                self.telemetry.checkpoint_failures.inc();
                warn!(error = %e, "cannot save checkpoints");
            }
        }
        self.initial_scan = false;
    }

    fn matching_paths(&mut self, index: usize) -> Vec<PathBuf> {
        let source = &self.sources[index];
        let mut paths = Vec::new();
        for pattern in &source.config.include {
            let Ok(found) = glob::glob(pattern) else {
                continue;
            };
            for path in found.flatten() {
                let compressed = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| COMPRESSED.contains(&e));
                if compressed || source.exclude.iter().any(|p| p.matches_path(&path)) {
                    continue;
                }
                paths.push(path);
            }
        }
        paths
    }

    fn open(&mut self, index: usize, path: &Path) {
        let source = &self.sources[index];
        let from_end = self.initial_scan && source.config.start_at == StartAt::End;
        let resource = Arc::new(resource_for(
            path,
            &source.config,
            self.node_name.as_deref(),
        ));
        match TrackedFile::open(
            path,
            &source.config,
            source.multiline.clone(),
            resource.clone(),
            from_end,
            &self.checkpoints,
        ) {
            Ok(file) => {
                let uid = resource
                    .attributes
                    .iter()
                    .find(|a| a.key == "k8s.pod.uid")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        any_value::Value::StringValue(uid) => Some(uid.clone()),
                        _ => None,
                    });
                if let (Some(_), Some(uid)) = (&self.pods, uid) {
                    let base = resource;
                    self.pod_files.insert(
                        file.key,
                        PodFile {
                            uid,
                            base,
                            version: 0,
                        },
                    );
                }
                info!(path = %path.display(), offset = file.offset(), "tailing");
                self.warned.remove(path);
                self.files.insert(file.key, file);
                self.telemetry.files_opened.inc();
            }
            Err(e) => self.warn_once(path, &format!("cannot open: {e}")),
        }
    }

    fn warn_once(&mut self, path: &Path, message: &str) {
        if self.warned.len() < 1024 && self.warned.insert(path.to_path_buf()) {
            warn!(path = %path.display(), "{message}");
        }
    }
}

/// The resource of a file's records: Kubernetes metadata from its path, the file path, the
/// node, and the source's static attributes (which win).
pub fn resource_for(path: &Path, source: &LogSource, node_name: Option<&str>) -> Resource {
    let mut attributes: BTreeMap<String, String> = BTreeMap::new();
    // `/var/log/containers/*.log` are symlinks into `/var/log/pods`: the target says more.
    let pod = k8s::PodLogPath::parse(path).or_else(|| {
        let target = std::fs::canonicalize(path).ok()?;
        k8s::PodLogPath::parse(&target)
    });
    if let Some(pod) = pod {
        // Loki and Grafana group by service; a container is the closest thing to one.
        attributes.insert("service.name".into(), pod.container.clone());
        for (key, value) in pod.attributes() {
            attributes.insert(key.into(), value);
        }
    }
    attributes.insert("log.file.path".into(), path.display().to_string());
    if let Some(node) = node_name {
        attributes.insert("host.name".into(), node.to_string());
        attributes.insert("k8s.node.name".into(), node.to_string());
    }
    for (key, value) in &source.attributes {
        attributes.insert(key.clone(), value.clone());
    }
    Resource {
        attributes: attributes
            .into_iter()
            .map(|(key, value)| string_attribute(key, value))
            .collect(),
        ..Default::default()
    }
}

pub fn string_attribute(key: impl Into<String>, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// Locks the checkpoints; a panic elsewhere while holding them leaves them usable, since
/// every update is a single assignment.
pub fn lock(checkpoints: &Mutex<Checkpoints>) -> std::sync::MutexGuard<'_, Checkpoints> {
    checkpoints
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests;
