use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use vigil_core::remote_write::{ConvertOptions, convert};

use super::*;

/// Labels of a series without `__name__`, and its value.
type Series = (BTreeMap<String, String>, f64);

/// `__name__` → every series of that name core's conversion writes.
fn converted(metrics: ResourceMetrics) -> BTreeMap<String, Vec<Series>> {
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![metrics],
    };
    let out = convert(&[request], &ConvertOptions::default());
    assert!(out.dropped.is_empty(), "{:?}", out.dropped);
    let mut series: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for ts in out.request().timeseries {
        let mut labels: BTreeMap<String, String> =
            ts.labels.into_iter().map(|l| (l.name, l.value)).collect();
        let name = labels.remove("__name__").unwrap_or_default();
        series
            .entry(name)
            .or_default()
            .push((labels, ts.samples[0].value));
    }
    series
}

#[test]
fn names_survive_remote_write_conversion_unchanged() {
    let mut host = HostMetrics::new(&HostMetricsConfig::default()).unwrap();
    let metrics = host.collect();
    let otlp_names: Vec<String> = metrics.scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.clone())
        .collect();
    let series = converted(metrics);
    for name in &otlp_names {
        assert!(
            series.contains_key(name),
            "{name} was renamed; got {:?}",
            series.keys()
        );
    }
    let mut written: Vec<&String> = series.keys().filter(|n| *n != "target_info").collect();
    written.dedup();
    assert_eq!(written.len(), otlp_names.len(), "{written:?}");
}

#[test]
fn collects_cpu_and_memory_on_this_machine() {
    let mut host = HostMetrics::new(&HostMetricsConfig::default()).unwrap();
    let node = host.node().to_owned();
    let series = converted(host.collect());
    let cpu = &series["node_cpu_seconds_total"];
    assert!(cpu.len() >= 8, "{cpu:?}");
    let (labels, _) = &cpu[0];
    assert_eq!(labels["job"], "node");
    assert_eq!(labels["instance"], node);
    assert!(labels.contains_key("cpu") && labels.contains_key("mode"));
    assert!(cpu.iter().any(|(l, v)| l["mode"] == "idle" && *v > 0.0));
    assert!(series["node_memory_MemTotal_bytes"][0].1 > 0.0);
    assert!(series.contains_key("node_memory_MemAvailable_bytes"));
    assert!(series.contains_key("node_load1"));
    assert!(series.contains_key("node_network_receive_bytes_total"));
    assert!(series.contains_key("node_time_seconds"));
    let root = series["node_filesystem_size_bytes"]
        .iter()
        .find(|(l, _)| l["mountpoint"] == "/");
    assert!(
        root.is_some_and(|(_, v)| *v > 0.0),
        "{:?}",
        series.get("node_filesystem_size_bytes")
    );
    // host.name is not an identifying attribute: it reaches target_info.
    assert_eq!(series["target_info"][0].0["host_name"], node);
}

#[test]
fn a_root_prefix_reads_the_mounted_host() {
    let dir = tempfile::tempdir().unwrap();
    let proc = dir.path().join("proc");
    std::fs::create_dir_all(proc.join("1")).unwrap();
    std::fs::create_dir_all(proc.join("net")).unwrap();
    std::fs::write(
        proc.join("stat"),
        "cpu0 100 0 50 1000 0 0 0 0 0 0\nbtime 1700000000\n",
    )
    .unwrap();
    std::fs::write(proc.join("meminfo"), "MemTotal: 1000 kB\n").unwrap();
    std::fs::write(proc.join("loadavg"), "1.5 1.0 0.5 1/100 42\n").unwrap();
    std::fs::write(
        proc.join("1/mounts"),
        "/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\noverlay /var/lib/docker/overlay2/x overlay rw 0 0\n",
    )
    .unwrap();
    std::fs::write(
        proc.join("diskstats"),
        " 253 0 vda 10 0 8 5 20 0 16 7 0 9 12 0 0 0 0\n 253 1 vda1 1 0 1 1 1 0 1 1 0 1 1 0 0 0 0\n",
    )
    .unwrap();
    std::fs::write(
        proc.join("net/dev"),
        "h\nh\n eth0: 1 2 3 4 0 0 0 0 5 6 7 8 0 0 0 0\n",
    )
    .unwrap();
    let config = HostMetricsConfig {
        root: dir.path().to_owned(),
        ..Default::default()
    };
    let mut host = HostMetrics::new(&config).unwrap();
    let metrics = host.collect();
    let cpu = metrics.scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "node_cpu_seconds_total")
        .unwrap();
    let Some(Data::Sum(sum)) = &cpu.data else {
        panic!("cpu is not a sum")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        1_700_000_000_000_000_000
    );
    let series = converted(metrics);
    let hz = ticks_per_second();
    let user = series["node_cpu_seconds_total"]
        .iter()
        .find(|(l, _)| l["mode"] == "user")
        .unwrap();
    assert_eq!(user.1, 100.0 / hz);
    assert_eq!(series["node_memory_MemTotal_bytes"][0].1, 1_024_000.0);
    assert_eq!(series["node_load5"][0].1, 1.0);
    let fs = &series["node_filesystem_avail_bytes"];
    assert_eq!(fs.len(), 1, "pseudo and docker mounts are skipped: {fs:?}");
    assert_eq!(fs[0].0["mountpoint"], "/");
    assert_eq!(fs[0].0["fstype"], "ext4");
    assert_eq!(series["node_filesystem_readonly"][0].1, 0.0);
    let read = &series["node_disk_read_bytes_total"];
    assert_eq!(read.len(), 1, "partitions are skipped: {read:?}");
    assert_eq!(read[0].1, 8.0 * 512.0);
    assert_eq!(series["node_disk_io_time_seconds_total"][0].1, 0.009);
    assert_eq!(series["node_network_transmit_drop_total"][0].1, 8.0);
    assert_eq!(series["node_boot_time_seconds"][0].1, 1_700_000_000.0);
}

#[test]
fn missing_files_leave_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(dir.path().join("proc/loadavg"), "0.1 0.2 0.3 1/1 1\n").unwrap();
    let config = HostMetricsConfig {
        root: dir.path().to_owned(),
        ..Default::default()
    };
    let metrics = HostMetrics::new(&config).unwrap().collect();
    let names: Vec<&str> = metrics.scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "node_load1",
            "node_load5",
            "node_load15",
            "node_time_seconds"
        ]
    );
}

#[test]
fn exclusion_patterns_match_node_exporter_defaults() {
    let host = HostMetrics::new(&HostMetricsConfig::default()).unwrap();
    for device in ["loop0", "ram1", "zram0", "sda1", "vda2", "nvme0n1p1", "fd0"] {
        assert!(host.excluded_disks.is_match(device), "{device}");
    }
    for device in ["sda", "vda", "nvme0n1", "dm-0", "md0"] {
        assert!(!host.excluded_disks.is_match(device), "{device}");
    }
    for mp in [
        "/proc",
        "/sys/fs/cgroup",
        "/dev",
        "/var/lib/docker/overlay2/x",
    ] {
        assert!(host.excluded_mount_points.is_match(mp), "{mp}");
    }
    for mp in ["/", "/home", "/devices", "/var/lib/docker"] {
        assert!(!host.excluded_mount_points.is_match(mp), "{mp}");
    }
    assert!(!host.excluded_fs_types.is_match("tmpfs"));
    assert!(host.excluded_fs_types.is_match("cgroup2"));
}

#[test]
fn config_defaults_and_validation() {
    let config: HostMetricsConfig = vigil_core::config::load("{}", |_| None).unwrap();
    assert_eq!(config, HostMetricsConfig::default());
    assert!(config.enabled);
    assert_eq!(config.root, PathBuf::from("/"));
    let err = vigil_core::config::load::<HostMetricsConfig>(
        "interval: 0s\nroot: host\nbogus: 1\n",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("bogus: unknown field"), "{err}");
    assert!(err.contains("interval: must be greater than zero"), "{err}");
    assert!(err.contains("root: must be an absolute path"), "{err}");
}

#[tokio::test]
async fn run_collects_until_shutdown() {
    let config = HostMetricsConfig {
        interval: Duration::from_millis(50),
        ..Default::default()
    };
    let host = HostMetrics::new(&config).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let shutdown = tokio::time::sleep(Duration::from_millis(180));
    host.run(
        |batch| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(batch).await;
            }
        },
        shutdown,
    )
    .await;
    drop(tx);
    let mut rounds = 0;
    while let Some(batch) = rx.recv().await {
        assert_eq!(batch.len(), 1);
        rounds += 1;
    }
    assert!(rounds >= 2, "{rounds}");
}
