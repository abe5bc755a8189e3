//! Host metrics from /proc and statvfs, under **node_exporter's names**.
//!
//! Why node_exporter's names and not OpenTelemetry's `system.*`: the dashboards people
//! already have, and the PromQL they already write (`rate(node_cpu_seconds_total{mode=
//! "idle"}[5m])`), expect them. Each metric is built so that core's remote write
//! conversion leaves its name as is: no OTLP unit, counters named `…_total` as monotonic
//! cumulative Sums, everything else Gauges. Labels are node_exporter's (`cpu`, `mode`,
//! `device`, `fstype`, `mountpoint`).
//!
//! | source | series |
//! |---|---|
//! | /proc/stat | `node_cpu_seconds_total{cpu,mode}`, `node_boot_time_seconds`, `node_context_switches_total`, `node_forks_total`, `node_procs_running`, `node_procs_blocked` |
//! | /proc/meminfo | `node_memory_<Field>_bytes` (`node_memory_<Field>` for counts) |
//! | /proc/loadavg | `node_load1`, `node_load5`, `node_load15` |
//! | /proc/1/mounts + statvfs | `node_filesystem_{size,free,avail}_bytes`, `node_filesystem_files{,_free}`, `node_filesystem_readonly` |
//! | /proc/diskstats | `node_disk_{read,written}_bytes_total`, `node_disk_{reads,writes}_completed_total`, `node_disk_{read,write,io}_time_seconds_total` |
//! | /proc/net/dev | `node_network_{receive,transmit}_{bytes,packets,errs,drop}_total` |
//! | clock | `node_time_seconds` |
//!
//! Resource: `service.name` = `node` (so `job="node"`), `service.instance.id` and
//! `host.name` = the node name (`NODE_NAME`, else the host name). Counters start at boot
//! (`start_time_unix_nano` = `btime`). Pseudo file systems, mount points and devices are
//! skipped with node_exporter's default patterns. A DaemonSet mounts the host at `/host`
//! and sets `root: /host`; mount points are reported without that prefix.
//!
//! Not done: staleness markers for a file system or device that goes away (its series just
//! stop), and a timeout on statvfs (a hung NFS mount blocks one collection, which runs on
//! a blocking thread so the runtime is not stalled).

mod parse;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{Metric, NumberDataPoint, ResourceMetrics};
use prost::Message;
use regex::Regex;
use serde::{Deserialize, Serialize};
use vigil_core::config::{Errors, Validate, duration, join};

use crate::scrape::otlp::{counter, gauge, number_point, resource_metrics, string_kv};
use crate::ship::metrics::EncodedMetrics;

/// The `host_metrics:` section of the agent's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostMetricsConfig {
    /// Off: the agent does not start [`HostMetrics`] at all.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Time between two collections.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// Where the host's `/proc` and file systems are: `/`, or `/host` in a container that
    /// mounts the host there.
    #[serde(default = "default_root")]
    pub root: PathBuf,
}

fn default_enabled() -> bool {
    true
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_root() -> PathBuf {
    PathBuf::from("/")
}

impl Default for HostMetricsConfig {
    fn default() -> Self {
        HostMetricsConfig {
            enabled: default_enabled(),
            interval: default_interval(),
            root: default_root(),
        }
    }
}

impl Validate for HostMetricsConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.interval.is_zero() {
            errors.add(join(path, "interval"), "must be greater than zero");
        }
        if !self.root.is_absolute() {
            errors.add(join(path, "root"), "must be an absolute path");
        }
    }
}

/// node_exporter's default `--collector.filesystem.mount-points-exclude`.
const EXCLUDED_MOUNT_POINTS: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// node_exporter's default `--collector.filesystem.fs-types-exclude`.
const EXCLUDED_FS_TYPES: &str = r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|erofs|sysfs|tracefs)$";
/// node_exporter's default `--collector.diskstats.device-exclude`: RAM disks, loop
/// devices, floppies and partitions.
const EXCLUDED_DISKS: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// Bytes per sector in /proc/diskstats, whatever the device's real sector size.
const SECTOR_BYTES: f64 = 512.0;

/// Reads host metrics; one per agent.
pub struct HostMetrics {
    root: PathBuf,
    interval: Duration,
    node: String,
    ticks_per_second: f64,
    excluded_mount_points: Regex,
    excluded_fs_types: Regex,
    excluded_disks: Regex,
}

#[derive(Debug, thiserror::Error)]
pub enum HostMetricsError {
    #[error("invalid host_metrics config:\n{0}")]
    Config(#[from] vigil_core::config::ConfigErrors),
}

impl HostMetrics {
    pub fn new(config: &HostMetricsConfig) -> Result<HostMetrics, HostMetricsError> {
        let mut errors = Errors::default();
        config.validate("host_metrics", &mut errors);
        errors.into_result()?;
        let node = std::env::var("NODE_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "localhost".into());
        // The patterns are constants, tested below; they cannot fail to compile.
        let regex = |p: &str| Regex::new(p).unwrap_or_else(|e| panic!("pattern {p}: {e}"));
        Ok(HostMetrics {
            root: config.root.clone(),
            interval: config.interval,
            node,
            ticks_per_second: ticks_per_second(),
            excluded_mount_points: regex(EXCLUDED_MOUNT_POINTS),
            excluded_fs_types: regex(EXCLUDED_FS_TYPES),
            excluded_disks: regex(EXCLUDED_DISKS),
        })
    }

    /// The node name used as `instance` and `host.name`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Reads everything once. Files that cannot be read are skipped (logged at debug), so
    /// a container without some of /proc still reports the rest.
    pub fn collect(&mut self) -> ResourceMetrics {
        let now = SystemTime::now();
        let now_ns = crate::scrape::unix_nanos(now);
        let mut out = Collection {
            now_ns,
            start_ns: 0,
            metrics: Vec::new(),
        };
        if let Some(text) = self.read("proc/stat") {
            let stat = parse::stat(&text);
            out.start_ns = stat
                .boot_time
                .map_or(0, |s| s.saturating_mul(1_000_000_000));
            self.cpu(&mut out, &stat);
        }
        if let Some(text) = self.read("proc/meminfo") {
            for (name, value) in parse::meminfo(&text) {
                out.gauge(
                    &name,
                    "Memory information field from /proc/meminfo.",
                    vec![(Vec::new(), value)],
                );
            }
        }
        if let Some(load) = self.read("proc/loadavg").and_then(|t| parse::loadavg(&t)) {
            for (name, value) in ["node_load1", "node_load5", "node_load15"]
                .into_iter()
                .zip(load)
            {
                out.gauge(name, "Load average.", vec![(Vec::new(), value)]);
            }
        }
        self.filesystems(&mut out);
        if let Some(text) = self.read("proc/diskstats") {
            self.disks(&mut out, &parse::diskstats(&text));
        }
        if let Some(text) = self.read("proc/net/dev") {
            network(&mut out, &parse::net_dev(&text));
        }
        let now_seconds = now_ns as f64 / 1e9;
        out.gauge(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            vec![(Vec::new(), now_seconds)],
        );
        let attributes = vec![
            string_kv("service.name", "node"),
            string_kv("service.instance.id", self.node.clone()),
            string_kv("host.name", self.node.clone()),
        ];
        resource_metrics(attributes, out.metrics)
    }

    fn read(&self, relative: &str) -> Option<String> {
        let path = self.root.join(relative);
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "host metrics source unreadable");
                None
            }
        }
    }

    fn cpu(&self, out: &mut Collection, stat: &parse::Stat) {
        let mut points = Vec::new();
        for cpu in &stat.cpus {
            for (mode, ticks) in &cpu.modes {
                let labels = vec![string_kv("cpu", cpu.cpu.clone()), string_kv("mode", *mode)];
                points.push((labels, ticks / self.ticks_per_second));
            }
        }
        out.counter(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            points,
        );
        let single = |v: Option<u64>| v.map(|v| vec![(Vec::new(), v as f64)]);
        if let Some(p) = single(stat.boot_time) {
            out.gauge("node_boot_time_seconds", "Node boot time, in unixtime.", p);
        }
        if let Some(p) = single(stat.context_switches) {
            out.counter(
                "node_context_switches_total",
                "Total number of context switches.",
                p,
            );
        }
        if let Some(p) = single(stat.forks) {
            out.counter("node_forks_total", "Total number of forks.", p);
        }
        if let Some(p) = single(stat.procs_running) {
            out.gauge(
                "node_procs_running",
                "Number of processes in runnable state.",
                p,
            );
        }
        if let Some(p) = single(stat.procs_blocked) {
            out.gauge(
                "node_procs_blocked",
                "Number of processes blocked waiting for I/O to complete.",
                p,
            );
        }
    }

    fn filesystems(&self, out: &mut Collection) {
        // The host's mounts are those of its PID 1; /proc/mounts is ours, which in a
        // container differs.
        let Some(text) = self
            .read("proc/1/mounts")
            .or_else(|| self.read("proc/mounts"))
        else {
            return;
        };
        let mut rows: Vec<(Vec<KeyValue>, Statvfs, bool)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for mount in parse::mounts(&text) {
            if self.excluded_mount_points.is_match(&mount.mount_point)
                || self.excluded_fs_types.is_match(&mount.fs_type)
                || !seen.insert((mount.device.clone(), mount.mount_point.clone()))
            {
                continue;
            }
            let path = self.root.join(mount.mount_point.trim_start_matches('/'));
            let Some(stats) = statvfs(&path) else {
                continue;
            };
            let labels = vec![
                string_kv("device", mount.device),
                string_kv("fstype", mount.fs_type),
                string_kv("mountpoint", mount.mount_point),
            ];
            rows.push((labels, stats, mount.read_only));
        }
        type Field = fn(&Statvfs, bool) -> f64;
        let fields: [(&str, &str, Field); 6] = [
            (
                "node_filesystem_size_bytes",
                "Filesystem size in bytes.",
                |s, _| s.size,
            ),
            (
                "node_filesystem_free_bytes",
                "Filesystem free space in bytes.",
                |s, _| s.free,
            ),
            (
                "node_filesystem_avail_bytes",
                "Filesystem space available to non-root users in bytes.",
                |s, _| s.avail,
            ),
            (
                "node_filesystem_files",
                "Filesystem total file nodes.",
                |s, _| s.files,
            ),
            (
                "node_filesystem_files_free",
                "Filesystem total free file nodes.",
                |s, _| s.files_free,
            ),
            (
                "node_filesystem_readonly",
                "Filesystem read-only status.",
                |_, ro| f64::from(u8::from(ro)),
            ),
        ];
        for (name, help, field) in fields {
            let points = rows
                .iter()
                .map(|(labels, stats, ro)| (labels.clone(), field(stats, *ro)))
                .collect();
            out.gauge(name, help, points);
        }
    }

    fn disks(&self, out: &mut Collection, disks: &[parse::DiskStats]) {
        let disks: Vec<&parse::DiskStats> = disks
            .iter()
            .filter(|d| !self.excluded_disks.is_match(&d.device))
            .collect();
        type Field = fn(&parse::DiskStats) -> f64;
        let fields: [(&str, &str, Field); 7] = [
            (
                "node_disk_reads_completed_total",
                "The total number of reads completed successfully.",
                |d| d.reads_completed,
            ),
            (
                "node_disk_writes_completed_total",
                "The total number of writes completed successfully.",
                |d| d.writes_completed,
            ),
            (
                "node_disk_read_bytes_total",
                "The total number of bytes read successfully.",
                |d| d.read_sectors * SECTOR_BYTES,
            ),
            (
                "node_disk_written_bytes_total",
                "The total number of bytes written successfully.",
                |d| d.written_sectors * SECTOR_BYTES,
            ),
            (
                "node_disk_read_time_seconds_total",
                "The total number of seconds spent by all reads.",
                |d| d.read_time_ms / 1000.0,
            ),
            (
                "node_disk_write_time_seconds_total",
                "This is the total number of seconds spent by all writes.",
                |d| d.write_time_ms / 1000.0,
            ),
            (
                "node_disk_io_time_seconds_total",
                "Total seconds spent doing I/Os.",
                |d| d.io_time_ms / 1000.0,
            ),
        ];
        for (name, help, field) in fields {
            let points = disks
                .iter()
                .map(|d| (vec![string_kv("device", d.device.clone())], field(d)))
                .collect();
            out.counter(name, help, points);
        }
    }

    /// Collects every `interval` (on a blocking thread, since statvfs can block) and hands
    /// each collection to `sink` until `shutdown` completes.
    pub async fn run<S, F>(self, mut sink: S, shutdown: impl Future<Output = ()>)
    where
        S: FnMut(Vec<EncodedMetrics>) -> F,
        F: Future<Output = ()>,
    {
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut host = Some(self);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let Some(mut h) = host.take() else { return };
            let collected = tokio::task::spawn_blocking(move || {
                let metrics = h.collect();
                (h, metrics)
            });
            let (h, metrics) = tokio::select! {
                () = &mut shutdown => return,
                joined = collected => match joined {
                    Ok(done) => done,
                    Err(e) => {
                        tracing::error!(error = %e, "host metrics collection panicked; stopping");
                        return;
                    }
                },
            };
            host = Some(h);
            sink(vec![metrics.encode_to_vec()]).await;
        }
    }
}

fn network(out: &mut Collection, devices: &[parse::NetDev]) {
    type Field = fn(&parse::NetDev) -> f64;
    let fields: [(&str, Field); 8] = [
        ("node_network_receive_bytes_total", |d| d.receive_bytes),
        ("node_network_receive_packets_total", |d| d.receive_packets),
        ("node_network_receive_errs_total", |d| d.receive_errs),
        ("node_network_receive_drop_total", |d| d.receive_drop),
        ("node_network_transmit_bytes_total", |d| d.transmit_bytes),
        ("node_network_transmit_packets_total", |d| {
            d.transmit_packets
        }),
        ("node_network_transmit_errs_total", |d| d.transmit_errs),
        ("node_network_transmit_drop_total", |d| d.transmit_drop),
    ];
    for (name, field) in fields {
        let points = devices
            .iter()
            .map(|d| (vec![string_kv("device", d.device.clone())], field(d)))
            .collect();
        out.counter(name, "Network device statistic from /proc/net/dev.", points);
    }
}

/// The metrics of one collection.
struct Collection {
    now_ns: u64,
    /// Boot time: the start of every counter.
    start_ns: u64,
    metrics: Vec<Metric>,
}

impl Collection {
    fn points(&self, start_ns: u64, values: Vec<(Vec<KeyValue>, f64)>) -> Vec<NumberDataPoint> {
        values
            .into_iter()
            .map(|(labels, value)| number_point(labels, start_ns, self.now_ns, value))
            .collect()
    }

    fn gauge(&mut self, name: &str, help: &str, values: Vec<(Vec<KeyValue>, f64)>) {
        if !values.is_empty() {
            let points = self.points(0, values);
            self.metrics.push(gauge(name, help, points));
        }
    }

    fn counter(&mut self, name: &str, help: &str, values: Vec<(Vec<KeyValue>, f64)>) {
        if !values.is_empty() {
            let points = self.points(self.start_ns, values);
            self.metrics.push(counter(name, help, points));
        }
    }
}

/// What statvfs says of one file system, in bytes and inodes.
struct Statvfs {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

fn statvfs(path: &Path) -> Option<Statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut raw = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `raw` points to writable
    // memory of the right type; statvfs initialises it fully when it returns 0.
    let stats = unsafe {
        if libc::statvfs(c_path.as_ptr(), raw.as_mut_ptr()) != 0 {
            return None;
        }
        raw.assume_init()
    };
    let block = stats.f_frsize as f64;
    Some(Statvfs {
        size: stats.f_blocks as f64 * block,
        free: stats.f_bfree as f64 * block,
        avail: stats.f_bavail as f64 * block,
        files: stats.f_files as f64,
        files_free: stats.f_ffree as f64,
    })
}

/// USER_HZ, the unit of /proc/stat's CPU times: 100 on every mainstream kernel, asked
/// for anyway.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests;
