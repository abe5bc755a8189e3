//! The buffer and dead-letter commands of the real collector binary: dead letters made by a
//! Loki that answers 400 are listed, shown, survive a damaged and repaired buffer, and once
//! replayed arrive at Loki exactly once. On the shared buffers (a real redis-server and
//! nats-server), dead letters are listed, shown and replayed into the work queue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use vigil_collector::buffer::nats::{NatsBuffer, NatsOptions};
use vigil_collector::buffer::redis::{RedisBuffer, RedisOptions};
use vigil_core::Signal;
use vigil_core::buffer::{BatchLimits, Buffer, DeadLetter, Record};
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::process::{VigilProcess, run};
use vigil_e2e::{eventually, free_port, metric_sum};

fn log_request(line: &str) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1_700_000_000_000_000_000,
                    body: Some(AnyValue {
                        value: Some(Value::StringValue(line.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post_log(http_port: u16, line: &str) {
    let response = vigil_e2e::http_client()
        .post(format!("http://127.0.0.1:{http_port}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(log_request(line))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{line}");
}

fn collector(args: &[&str]) -> (i32, String, String) {
    run("vigil-collector", args, &[])
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_exactly_once_after_a_repair() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let (http_port, admin_port) = (free_port(), free_port());
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:{http_port}\" }}\n\
             buffer:\n  kind: disk\n  disk: {{ path: \"{}\", max_bytes: 64MiB }}\n\
             exporters:\n\
             \x20 loki: {{ endpoint: \"{}\", retry: {{ initial: 50ms, max: 200ms }}, batch: {{ linger: 10ms }} }}\n\
             admin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n",
            buffer.display(),
            loki.push_url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let running = VigilProcess::start("vigil-collector", Path::new(config), admin_port).await;
    // One request at a time, so that each is its own push and gets its own 400.
    let refused = ["refused-0", "refused-1", "refused-2"];
    loki.answer_next(&[400, 400, 400]);
    for (i, line) in refused.iter().enumerate() {
        post_log(http_port, line).await;
        eventually(Duration::from_secs(20), "the 400", || async {
            (loki.requests_seen() > i).then_some(())
        })
        .await;
    }
    post_log(http_port, "delivered-normally").await;
    eventually(Duration::from_secs(20), "three dead letters", || async {
        let n = metric_sum(
            format!("127.0.0.1:{admin_port}"),
            "vigil_collector_dead_lettered_items_total",
            &["signal=\"logs\""],
        )
        .await;
        (n == 3.0).then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "the good line", || async {
        loki.lines()
            .contains(&"delivered-normally".to_string())
            .then_some(())
    })
    .await;

    // Next to a running collector: verify and list read, repair and replay refuse.
    let (code, out, err) = collector(&["buffer", "verify", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("a collector has this buffer open"), "{out}");
    let (code, out, err) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 dead letter(s)"), "{out}");
    for args in [
        &["buffer", "repair", "--config", config][..],
        &["dlq", "replay", "--all", "--config", config][..],
    ] {
        let (code, out, err) = collector(args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("stop it first"), "{args:?}: {err}");
    }
    let status = running.terminate();
    assert!(status.success(), "{status:?}");

    // The dead letters, with the backend's answer as the reason.
    let (code, out, err) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(" loki ")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for (id, row) in rows.iter().enumerate() {
        assert!(row.starts_with(&format!("{id} ")), "{row}");
        assert!(row.contains("logs"), "{row}");
        assert!(row.contains("400"), "{row}");
    }
    let (code, out, _) = collector(&["dlq", "list", "--config", config, "--limit", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 of 3 dead letters shown"), "{out}");
    let (code, out, _) = collector(&[
        "dlq",
        "list",
        "--path",
        buffer.to_str().unwrap(),
        "--signal",
        "traces",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("no dead letters"), "{out}");

    let (code, out, err) = collector(&["dlq", "show", "1", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("exporter:      loki"), "{out}");
    assert!(out.contains("resourceLogs"), "{out}");
    assert!(out.contains("refused-1"), "{out}");
    let (code, _, err) = collector(&["dlq", "show", "7", "--config", config]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter with id 7"), "{err}");

    let (code, out, err) = collector(&["buffer", "verify", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: clean"), "{out}");

    // A flipped byte in the logs queue: verify names the file and fails; repair fixes it.
    let logs = segments(&buffer.join("logs"));
    let damaged = logs.last().expect("a logs segment");
    let mut bytes = std::fs::read(damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(damaged, &bytes).unwrap();
    let (code, out, err) = collector(&["buffer", "verify", "--path", buffer.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("checksum mismatch"), "{out}");
    assert!(out.contains(&damaged.display().to_string()), "{out}");
    let (code, out, err) = collector(&["buffer", "repair", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cut 1 damaged place"), "{out}");
    let (code, out, err) = collector(&["buffer", "verify", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("result: clean"), "{out}");

    // Replay, then a collector with Loki accepting delivers each record once.
    let (code, out, err) = collector(&["dlq", "replay", "--all", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 3 dead letter(s) (logs 3)"), "{out}");
    let (code, out, _) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.contains("no dead letters"), "{out}");

    let running = VigilProcess::start("vigil-collector", Path::new(config), admin_port).await;
    let counts = loki.line_counts(4).await;
    let expected: std::collections::BTreeMap<String, usize> = refused
        .iter()
        .chain(&["delivered-normally"])
        .map(|l| (l.to_string(), 1))
        .collect();
    assert_eq!(counts, expected);
    let status = running.terminate();
    assert!(status.success(), "{status:?}");

    let (code, out, _) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0);
    assert!(out.contains("no dead letters"), "{out}");
    let (code, out, err) = collector(&["buffer", "verify", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("logs") && out.contains("result: clean"),
        "{out}"
    );
}

#[test]
fn usage_errors_exit_2_and_the_old_flags_still_work() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing = missing.to_str().unwrap();
    let (code, _, err) = collector(&["buffer", "verify", "--path", missing]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = collector(&["buffer", "verify"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = collector(&["dlq", "replay", "--path", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all"), "{err}");
    // Not a buffer: refused rather than reported as an empty, clean one.
    let (code, _, err) = collector(&["buffer", "verify", "--path", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("does not look like a disk buffer"), "{err}");

    let redis = dir.path().join("redis.yaml");
    std::fs::write(
        &redis,
        "buffer:\n  kind: redis\n  redis: { url: \"redis://127.0.0.1:1\" }\nexporters:\n  loki: { endpoint: \"http://127.0.0.1:1/loki/api/v1/push\" }\n",
    )
    .unwrap();
    let redis = redis.to_str().unwrap();
    // Integrity is the broker's on a shared buffer; its dead letters are ours, but this
    // Redis cannot be reached.
    let (code, _, err) = collector(&["buffer", "verify", "--config", redis]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("disk buffer only"), "{err}");
    let (code, _, err) = collector(&["dlq", "list", "--config", redis]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot open the buffer"), "{err}");
    let (code, out, err) = collector(&["--config", redis, "--check-config"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// Three dead letters (logs, logs, traces) in a shared buffer, as exporters leave them.
async fn dead_letter_three(buffer: &dyn Buffer) {
    for (n, signal) in [(1, Signal::Logs), (2, Signal::Logs), (3, Signal::Traces)] {
        let payload = match signal {
            Signal::Logs => log_request(&format!("dead line {n}")),
            _ => Vec::new(),
        };
        let letter = DeadLetter {
            record: Record::new(signal, Some("team-a".into()), 1, payload.into()),
            exporter: "loki".into(),
            reason: format!("400 Bad Request: entry {n} too far behind"),
            failed_at_ms: 1_700_000_000_000,
        };
        buffer.dead_letter(letter).await.expect("dead-letter");
    }
}

/// `dlq list`, `show` and `replay --signal logs` against the shared buffer `config`
/// describes, whose dead letters `dead_letter_three` wrote; then the logs queue holds the
/// two replayed records and the store only the traces letter.
async fn shared_dlq_round_trip(config: &Path, buffer: &dyn Buffer) {
    let config = config.to_str().unwrap();
    dead_letter_three(buffer).await;

    let (code, out, err) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 dead letter(s)"), "{out}");
    assert!(out.contains("too far behind"), "{out}");
    let ids: Vec<String> = out
        .lines()
        .filter(|l| l.contains("too far behind"))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{out}");
    let (code, out, _) = collector(&["dlq", "list", "--config", config, "--signal", "traces"]);
    assert_eq!(code, 0);
    assert!(out.contains("1 dead letter(s)"), "{out}");

    let (code, out, err) = collector(&["dlq", "show", &ids[1], "--config", config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("dead line 2"),
        "the record as OTLP JSON: {out}"
    );
    assert!(out.contains("tenant:        team-a"), "{out}");
    let (code, _, err) = collector(&["dlq", "show", "no-such-id", "--config", config]);
    assert_eq!(code, 1, "{err}");

    let (code, out, err) = collector(&["dlq", "replay", "--config", config, "--signal", "logs"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("replayed 2 dead letter(s) (logs 2)"), "{out}");
    assert!(out.contains("(2 removed)"), "{out}");
    let (code, out, _) = collector(&["dlq", "list", "--config", config]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1 dead letter(s)") && out.contains("traces"),
        "{out}"
    );

    // The replayed records are in the logs queue, as a receiver would have put them.
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lines.len() < 2 && tokio::time::Instant::now() < deadline {
        let batch = consumer
            .next_batch(BatchLimits {
                max_records: 10,
                max_bytes: 1 << 20,
            })
            .await
            .unwrap();
        for delivery in batch {
            let request =
                ExportLogsServiceRequest::decode(delivery.record.payload.clone()).unwrap();
            lines.extend(
                request
                    .resource_logs
                    .iter()
                    .flat_map(|r| &r.scope_logs)
                    .flat_map(|s| &s.log_records)
                    .filter_map(|l| match l.body.as_ref()?.value.as_ref()? {
                        Value::StringValue(text) => Some(text.clone()),
                        _ => None,
                    }),
            );
            assert_eq!(delivery.record.tenant.as_deref(), Some("team-a"));
        }
    }
    lines.sort();
    assert_eq!(lines, ["dead line 1", "dead line 2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dead_letters_are_listed_shown_and_replayed() {
    let redis = vigil_e2e::servers::Server::redis().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.yaml");
    let url = format!("redis://127.0.0.1:{}", redis.port);
    std::fs::write(
        &config,
        format!("buffer:\n  kind: redis\n  redis: {{ url: \"{url}\", consumer: cli-test }}\nexporters:\n  loki: {{ endpoint: \"http://127.0.0.1:1/loki/api/v1/push\" }}\n"),
    )
    .unwrap();
    let options = RedisOptions {
        consumer: "test".into(),
        ..RedisOptions::new(url)
    };
    let buffer = RedisBuffer::connect(options).await.unwrap();
    shared_dlq_round_trip(&config, &buffer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dead_letters_are_listed_shown_and_replayed() {
    let nats = vigil_e2e::servers::Server::nats().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.yaml");
    let url = format!("nats://127.0.0.1:{}", nats.port);
    std::fs::write(
        &config,
        format!("buffer:\n  kind: nats\n  nats: {{ url: \"{url}\" }}\nexporters:\n  loki: {{ endpoint: \"http://127.0.0.1:1/loki/api/v1/push\" }}\n"),
    )
    .unwrap();
    // JetStream may still be starting when the port accepts connections.
    let buffer = eventually(Duration::from_secs(20), "the NATS buffer to open", || {
        let url = url.clone();
        async move { NatsBuffer::open(NatsOptions::new(url)).await.ok() }
    })
    .await;
    shared_dlq_round_trip(&config, &buffer).await;
}
