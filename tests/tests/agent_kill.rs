//! At least once across a crash: the agent binary is `kill -9`ed while a 100K-line stream
//! is being written and shipped, then restarted. Every line arrives; the only duplicates
//! are lines the collector took but the agent had not yet checkpointed — at most the
//! batch in flight and the one whose checkpoint was being saved.

use std::io::Write;
use std::time::Duration;

use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::{agent, collector, free_port};

const LINES: usize = 100_000;
const MAX_LINES: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_replays_at_most_the_unacknowledged_batches_and_skips_nothing() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\" }}\n    http: null\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
         buffer: {{ kind: disk, disk: {{ path: \"{}\", max_bytes: 256MiB }} }}\nexporters:\n  loki:\n    endpoint: \"{}\"\n    batch: {{ linger: 20ms, max_records: 64 }}\n    retry: {{ initial: 50ms, max: 200ms }}\n",
        dir.path().join("buffer").display(),
        loki.push_url()
    ))
    .await;
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    let admin_port = free_port();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        agent::yaml_with_admin(
            &collector.grpc_addr().unwrap().to_string(),
            &dir.path().join("state"),
            &format!("127.0.0.1:{admin_port}"),
            &format!(
                "  - include: [\"{}/*.log\"]\n    format: raw\n    start_at: beginning\n    scan_interval: 100ms\n",
                logs_dir.display()
            ),
        )
        .replace("max_lines: 500", &format!("max_lines: {MAX_LINES}")),
    )
    .unwrap();

    let first = vigil_e2e::agent::start_process(&config, admin_port).await;
    // The writer keeps going across the crash, in bursts, as an application would.
    let path = logs_dir.join("app.log");
    let writer = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::create(path).unwrap();
        for chunk in (0..LINES).collect::<Vec<_>>().chunks(2_000) {
            let text: String = chunk.iter().map(|i| format!("line-{i:06}\n")).collect();
            file.write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    vigil_e2e::eventually(
        Duration::from_secs(20),
        "a third of the lines shipped",
        || async { (loki.lines().len() >= LINES / 3).then_some(()) },
    )
    .await;
    first.kill_9();
    let shipped_before_kill = loki.lines().len();
    assert!(
        shipped_before_kill < LINES,
        "the kill came too late to test anything"
    );

    let _second = vigil_e2e::agent::start_process(&config, admin_port).await;
    writer.await.unwrap();
    let counts = loki.line_counts(LINES).await;
    let missing: Vec<String> = (0..LINES)
        .map(|i| format!("line-{i:06}"))
        .filter(|l| !counts.contains_key(l))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "lines lost, e.g. {missing:?}");
    assert_eq!(counts.len(), LINES, "unexpected lines");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!("{shipped_before_kill} lines at loki before the kill; {duplicates} duplicates");
    assert!(
        duplicates <= 2 * MAX_LINES,
        "{duplicates} duplicates: more than the two batches that can be unacknowledged"
    );
    collector.shutdown().await;
}
