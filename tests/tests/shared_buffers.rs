//! Collectors that scale out on a shared buffer: two collectors join one Redis Streams
//! consumer group, or one set of NATS JetStream durable consumers, and everything sent to
//! either reaches the backend exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_collector::Collector;
use vigil_e2e::collector;
use vigil_e2e::collector::CollectorProcess;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::servers::Server;

const PER_COLLECTOR: usize = 20;

async fn send_lines(collector: &Collector, tag: &str) {
    let client = vigil_e2e::http_client();
    for i in 0..PER_COLLECTOR {
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","body":{{"stringValue":"{tag}-{i}"}}}}]}}]}}]}}"#,
            1_700_000_000_000_000_000u64 + i as u64
        );
        let response = client
            .post(format!("http://{}/v1/logs", collector.http_addr().unwrap()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{tag}-{i}");
    }
}

async fn two_collectors_deliver_everything_once(buffer_yaml: impl Fn(&str) -> String) {
    let loki = FakeLoki::start().await;
    let exporters = format!(
        "exporters:\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 10ms }} }}\n",
        loki.push_url()
    );
    let a = collector::start(&collector::yaml_on_free_ports(&format!(
        "{}{exporters}",
        buffer_yaml("collector-a")
    )))
    .await;
    let b = collector::start(&collector::yaml_on_free_ports(&format!(
        "{}{exporters}",
        buffer_yaml("collector-b")
    )))
    .await;
    for c in [&a, &b] {
        let ready = vigil_e2e::http_client()
            .get(format!("http://{}/readyz", c.admin_addr()))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
    }
    send_lines(&a, "a").await;
    send_lines(&b, "b").await;

    let counts = loki.line_counts(2 * PER_COLLECTOR).await;
    let expected: BTreeMap<String, usize> = ["a", "b"]
        .iter()
        .flat_map(|tag| (0..PER_COLLECTOR).map(move |i| (format!("{tag}-{i}"), 1)))
        .collect();
    assert_eq!(counts, expected);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_a_redis_streams_buffer() {
    let redis = Server::redis().await;
    let port = redis.port;
    two_collectors_deliver_everything_once(|consumer| {
        format!(
            "buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{port}\", consumer: {consumer}, claim_idle: 2s }}\n"
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_a_nats_jetstream_buffer() {
    let nats = Server::nats().await;
    let port = nats.port;
    two_collectors_deliver_everything_once(|_| {
        format!("buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{port}\", max_bytes: 64MiB, ack_wait: 5s }}\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_makes_receivers_answer_503_and_readyz_false() {
    let mut redis = Some(Server::redis().await);
    let port = redis.as_ref().unwrap().port;
    let loki = FakeLoki::start().await;
    let c = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{port}\" }}\nexporters:\n  loki: {{ endpoint: \"{}\" }}\n",
        loki.push_url()
    )))
    .await;
    drop(redis.take());
    let client = vigil_e2e::http_client();
    let url = format!("http://{}/v1/logs", c.http_addr().unwrap());
    let body =
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;
    let response = vigil_e2e::eventually(
        Duration::from_secs(10),
        "a 503 while redis is down",
        || async {
            let r = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .ok()?;
            (r.status() == 503).then_some(r)
        },
    )
    .await;
    assert!(response.headers().contains_key("retry-after"));
    vigil_e2e::eventually(Duration::from_secs(10), "/readyz to turn false", || async {
        let r = client
            .get(format!("http://{}/readyz", c.admin_addr()))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    c.shutdown().await;
}

/// Two collectors on one shared buffer; the backend is down, so both hold records they
/// read but could not export. One is killed with SIGKILL; once the backend is up, the
/// survivor takes over the dead one's records and everything arrives.
async fn a_killed_collectors_records_are_taken_over(buffer_yaml: impl Fn(&str) -> String) {
    let loki_port = vigil_e2e::free_port();
    let loki_url = format!("http://127.0.0.1:{loki_port}/loki/api/v1/push");
    let exporters = format!(
        "exporters:\n  loki: {{ endpoint: \"{loki_url}\", batch: {{ linger: 10ms, max_records: 8 }}, retry: {{ initial: 100ms, max: 300ms }} }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let (http_port, admin_port) = (vigil_e2e::free_port(), vigil_e2e::free_port());
    let config = dir.path().join("doomed.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:{http_port}\" }}\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n{}{exporters}",
            buffer_yaml("doomed")
        ),
    )
    .unwrap();
    let doomed = CollectorProcess::start(&config, admin_port, http_port).await;
    let survivor = collector::start(&collector::yaml_on_free_ports(&format!(
        "{}{exporters}",
        buffer_yaml("survivor")
    )))
    .await;

    let client = vigil_e2e::http_client();
    let total = 2 * PER_COLLECTOR;
    for i in 0..total {
        let target = match i % 2 {
            0 => format!("http://127.0.0.1:{http_port}/v1/logs"),
            _ => format!("http://{}/v1/logs", survivor.http_addr().unwrap()),
        };
        let body = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","body":{{"stringValue":"r-{i}"}}}}]}}]}}]}}"#,
            1_700_000_000_000_000_000u64 + i as u64
        );
        let r = client
            .post(target)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "r-{i}");
    }
    // Let both collectors read records into their in-flight batches before the kill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.kill_9();

    let loki = FakeLoki::start_on(([127, 0, 0, 1], loki_port).into()).await;
    let counts = loki.line_counts(total).await;
    let missing: Vec<String> = (0..total)
        .map(|i| format!("r-{i}"))
        .filter(|l| !counts.contains_key(l))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    // The killed collector never delivered anything (the backend was down), so nothing
    // may arrive twice.
    assert!(counts.values().all(|n| *n == 1), "duplicates: {counts:?}");
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_killed_collectors_records_are_taken_over() {
    let redis = Server::redis().await;
    let port = redis.port;
    a_killed_collectors_records_are_taken_over(|consumer| {
        format!("buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{port}\", consumer: {consumer}, claim_idle: 1s }}\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_killed_collectors_records_are_taken_over() {
    let nats = Server::nats().await;
    let port = nats.port;
    a_killed_collectors_records_are_taken_over(|_| {
        format!("buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{port}\", max_bytes: 64MiB, ack_wait: 2s }}\n")
    })
    .await;
}
