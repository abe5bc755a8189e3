//! The agent's log path, whole: files in the kubelet's layout → vigil-agent → a real
//! collector (OTLP/gRPC, disk buffer) → a Loki push receiver that decodes exactly what
//! was sent. Then rotation of every kind, also while the collector is down: every line
//! arrives exactly once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::{agent, collector, eventually, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_lines_reach_loki_with_kubernetes_labels_and_merged_partials() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&agent::collector_to_loki_yaml(
        &loki,
        &dir.path().join("buffer"),
        "127.0.0.1:0",
    ))
    .await;
    let grpc = collector.grpc_addr().unwrap().to_string();

    let pods = dir.path().join("var/log/pods");
    let container = pods.join("shop_checkout-5d8f9-abcde_6f1c2b9a-0000-4000-8000-000000000001/app");
    std::fs::create_dir_all(&container).unwrap();
    let file = container.join("2.log");
    agent::append(
        &file,
        "2024-05-01T10:00:00.000000001Z stdout F hello from checkout\n\
         2024-05-01T10:00:01Z stderr P this message was \n\
         2024-05-01T10:00:01Z stderr P cut by the runtime \n\
         2024-05-01T10:00:02Z stderr F into three parts\n",
    );
    let logs = format!(
        "  - include: [\"{}/*/*/*.log\"]\n    format: cri\n    start_at: beginning\n    scan_interval: 100ms\n    attributes: {{ cluster: e2e }}\n",
        pods.display()
    );
    let agent = agent::start(&agent::yaml(&grpc, &dir.path().join("state"), &logs)).await;
    // Written after the agent started: found and read as it grows, with invalid UTF-8.
    let mut tail = b"2024-05-01T10:00:03Z stdout F bytes \xff\xfe kept\n".to_vec();
    tail.extend_from_slice(b"2024-05-01T10:00:04Z stdout F last\n");
    OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap()
        .write_all(&tail)
        .unwrap();

    let counts = loki.line_counts(4).await;
    let expected: BTreeMap<String, usize> = [
        "hello from checkout",
        "this message was cut by the runtime into three parts",
        "bytes \u{fffd}\u{fffd} kept",
        "last",
    ]
    .into_iter()
    .map(|l| (l.to_string(), 1))
    .collect();
    assert_eq!(counts, expected);

    let streams: Vec<_> = loki
        .pushes()
        .into_iter()
        .flat_map(|p| p.request.streams)
        .collect();
    for stream in &streams {
        assert_eq!(
            stream.labels,
            r#"{k8s_container_name="app", k8s_namespace_name="shop", k8s_pod_name="checkout-5d8f9-abcde", level="unknown", service_name="app"}"#
        );
    }
    let entries: Vec<_> = streams.iter().flat_map(|s| s.entries.iter()).collect();
    let merged = entries
        .iter()
        .find(|e| e.line.starts_with("this message"))
        .unwrap();
    let meta: BTreeMap<&str, &str> = merged
        .structured_metadata
        .iter()
        .map(|p| (p.name.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(meta.get("log_iostream"), Some(&"stderr"));
    assert_eq!(
        meta.get("k8s_pod_uid"),
        Some(&"6f1c2b9a-0000-4000-8000-000000000001")
    );
    assert_eq!(meta.get("k8s_container_restart_count"), Some(&"2"));
    assert_eq!(meta.get("cluster"), Some(&"e2e"));
    assert_eq!(
        meta.get("log_file_path").copied(),
        Some(file.display().to_string().as_str())
    );
    assert!(!meta.contains_key("vigil_line_split"));
    let ts = merged.timestamp.as_ref().unwrap();
    assert_eq!(
        (ts.seconds, ts.nanos),
        (1_714_557_601, 0),
        "the first part's CRI time"
    );
    let first = entries
        .iter()
        .find(|e| e.line == "hello from checkout")
        .unwrap();
    assert_eq!(first.timestamp.as_ref().unwrap().nanos, 1);

    let metrics = vigil_e2e::metrics_text(agent.admin_addr()).await;
    assert!(
        metrics.contains("vigil_agent_lines_shipped_total 4"),
        "{metrics}"
    );
    assert!(metrics.contains("vigil_agent_files_watched 1"), "{metrics}");
    agent.shutdown().await;
    collector.shutdown().await;
}

/// Lines `prefix-from` .. `prefix-to` (exclusive), one per line.
fn lines(prefix: &str, from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{prefix}-{i:05}\n")).collect()
}

/// Appends lines `prefix-from` .. `prefix-to` to `path` (if given: else they were written
/// another way) and expects each once.
fn write(
    expected: &mut BTreeMap<String, usize>,
    path: Option<&Path>,
    prefix: &str,
    from: usize,
    to: usize,
) {
    if let Some(path) = path {
        agent::append(path, &lines(prefix, from, to));
    }
    for i in from..to {
        expected.insert(format!("{prefix}-{i:05}"), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_of_every_kind_deliver_every_line_exactly_once() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let buffer = dir.path().join("buffer");
    let collector = collector::start(&agent::collector_to_loki_yaml(&loki, &buffer, &grpc)).await;
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    let log = |name: &str| logs_dir.join(name);
    let logs = format!(
        "  - include: [\"{}/*.log\"]\n    format: raw\n    start_at: beginning\n    scan_interval: 100ms\n",
        logs_dir.display()
    );
    let agent = agent::start(&agent::yaml(&grpc, &dir.path().join("state"), &logs)).await;
    let read = |n: u64| {
        let telemetry = agent.telemetry().clone();
        async move {
            eventually(Duration::from_secs(10), &format!("{n} lines read"), || {
                let telemetry = telemetry.clone();
                async move { (telemetry.lines_read.get() >= n).then_some(()) }
            })
            .await
        }
    };
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();

    // Rename rotation: the writer keeps writing to the renamed file for a moment.
    write(&mut expected, Some(&log("app.log")), "rename", 0, 100);
    read(100).await;
    let mut old = OpenOptions::new()
        .append(true)
        .open(log("app.log"))
        .unwrap();
    std::fs::rename(log("app.log"), log("app.log.1")).unwrap();
    old.write_all(lines("rename", 100, 120).as_bytes()).unwrap();
    write(&mut expected, None, "rename", 100, 120);
    drop(old);
    write(&mut expected, Some(&log("app.log")), "rename", 120, 200);

    // copytruncate: copied away (not tailed), then cut to zero and written again.
    write(&mut expected, Some(&log("ct.log")), "copytruncate", 0, 100);
    read(300).await;
    std::fs::copy(log("ct.log"), log("ct.log.1")).unwrap();
    File::create(log("ct.log")).unwrap();
    write(
        &mut expected,
        Some(&log("ct.log")),
        "copytruncate",
        100,
        150,
    );

    // Deleted while open: the rest written through the open handle still arrives.
    let mut doomed = File::create(log("del.log")).unwrap();
    doomed
        .write_all(lines("deleted", 0, 50).as_bytes())
        .unwrap();
    write(&mut expected, None, "deleted", 0, 80);
    read(400).await;
    std::fs::remove_file(log("del.log")).unwrap();
    doomed
        .write_all(lines("deleted", 50, 80).as_bytes())
        .unwrap();
    drop(doomed);
    read(430).await;
    let counts = loki.line_counts(430).await;
    assert_eq!(counts, expected, "before the collector stops");

    // Two rename rotations while the collector is down, with more lines than the agent
    // holds (a batch in flight, two in its channel, one read held back): it stops reading
    // but keeps finding files, so the file rotated first — deleted by the second rotation
    // with lines still unread — is open already and is read to its end later.
    collector.shutdown().await;
    let down = format!("down-{}", "x".repeat(90)); // ~100-byte lines: files span reads
    let opened = || agent.telemetry().files_opened.get();
    let opened_before = opened();
    write(&mut expected, Some(&log("app.log")), &down, 0, 2400);
    std::fs::rename(log("app.log"), log("app.log.1")).unwrap();
    write(&mut expected, Some(&log("app.log")), &down, 2400, 3000);
    eventually(
        Duration::from_secs(10),
        "the first new file opened",
        || async { (opened() > opened_before).then_some(()) },
    )
    .await;
    std::fs::rename(log("app.log"), log("app.log.1")).unwrap();
    write(&mut expected, Some(&log("app.log")), &down, 3000, 3600);
    eventually(
        Duration::from_secs(10),
        "the second new file opened",
        || async { (opened() > opened_before + 1).then_some(()) },
    )
    .await;
    let read_while_down = agent.telemetry().lines_read.get() - 430;
    assert!(
        read_while_down < 2400,
        "the agent read {read_while_down} lines although the collector was away"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // a few failed exports
    let collector = collector::start(&agent::collector_to_loki_yaml(&loki, &buffer, &grpc)).await;

    let counts = loki.line_counts(expected.len()).await;
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicates: {duplicated:?}");
    assert_eq!(counts, expected);
    assert!(
        agent
            .telemetry()
            .ship_failures
            .with_label_values(&["logs", "retryable"])
            .get()
            > 0,
        "the collector was really down"
    );
    agent.shutdown().await;
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_while_the_collector_is_away_keeps_the_lines_for_the_next_start() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    let logs = format!(
        "  - include: [\"{}/*.log\"]\n    start_at: beginning\n    scan_interval: 100ms\n",
        logs_dir.display()
    );
    let yaml = agent::yaml(&grpc, &dir.path().join("state"), &logs);
    agent::append(&logs_dir.join("app.log"), &lines("kept", 0, 50));

    // Nothing listens at the collector's address: the lines are read, never acknowledged.
    let first = agent::start(&yaml).await;
    let telemetry = first.telemetry().clone();
    eventually(Duration::from_secs(10), "a failed export", || async {
        let failures = telemetry
            .ship_failures
            .with_label_values(&["logs", "retryable"])
            .get();
        (telemetry.lines_read.get() == 50 && failures > 0).then_some(())
    })
    .await;
    let stopping = std::time::Instant::now();
    first.shutdown().await;
    assert!(
        stopping.elapsed() < vigil_agent::SHUTDOWN_GRACE + Duration::from_secs(2),
        "shutdown took {:?}",
        stopping.elapsed()
    );

    let collector = collector::start(&agent::collector_to_loki_yaml(
        &loki,
        &dir.path().join("buffer"),
        &grpc,
    ))
    .await;
    let second = agent::start(&yaml).await;
    let counts = loki.line_counts(50).await;
    let expected: BTreeMap<String, usize> = (0..50).map(|i| (format!("kept-{i:05}"), 1)).collect();
    assert_eq!(counts, expected);
    second.shutdown().await;
    collector.shutdown().await;
}
