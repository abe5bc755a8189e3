//! Collectors that scale out on a shared buffer: two collectors join one Redis Streams
//! consumer group, or one set of NATS JetStream durable consumers, and everything sent to
//! either reaches the backend exactly once.

use std::time::Duration;

use vigil_e2e::collector;
use vigil_e2e::collector::CollectorProcess;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::servers::Server;

const PER_COLLECTOR: usize = 20;

/// Records in the scale-out tests, and how many go in one request.
const SCALE_OUT_RECORDS: usize = 100_000;
const RECORDS_PER_REQUEST: usize = 500;

/// One OTLP/JSON logs request carrying lines `first..first + n`.
fn lines_request(first: usize, n: usize) -> String {
    let records: Vec<String> = (first..first + n)
        .map(|i| {
            format!(
                r#"{{"timeUnixNano":"{}","body":{{"stringValue":"r-{i}"}}}}"#,
                1_700_000_000_000_000_000u64 + i as u64
            )
        })
        .collect();
    format!(
        r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{}]}}]}}]}}"#,
        records.join(",")
    )
}

/// A collector binary with `rest` (buffer and exporters) in its config, on free ports.
async fn collector_process(
    dir: &std::path::Path,
    name: &str,
    rest: &str,
) -> (CollectorProcess, u16) {
    let (http_port, admin_port) = (vigil_e2e::free_port(), vigil_e2e::free_port());
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:{http_port}\" }}\nadmin: {{ listen: \"127.0.0.1:{admin_port}\" }}\n{rest}"
        ),
    )
    .unwrap();
    (
        CollectorProcess::start(&config, admin_port, http_port).await,
        admin_port,
    )
}

/// Two collector processes on one shared buffer; 100K log records are sent, half to each,
/// and every one reaches Loki exactly once in total.
async fn two_collector_processes_deliver_everything_once(buffer_yaml: &str) {
    let loki = FakeLoki::start().await;
    let rest = format!(
        "{buffer_yaml}exporters:\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 20ms, max_records: 64 }} }}\n",
        loki.push_url()
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, a_admin) = collector_process(dir.path(), "a", &rest).await;
    let (b, b_admin) = collector_process(dir.path(), "b", &rest).await;
    let urls = [a.http_port, b.http_port].map(|p| format!("http://127.0.0.1:{p}/v1/logs"));

    let client = vigil_e2e::http_client();
    let requests = SCALE_OUT_RECORDS / RECORDS_PER_REQUEST;
    // Four requests in flight at a time, alternating between the collectors.
    for wave in (0..requests).collect::<Vec<_>>().chunks(4) {
        let sends = wave.iter().map(|&r| {
            let (client, url) = (client.clone(), urls[r % 2].clone());
            async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(lines_request(r * RECORDS_PER_REQUEST, RECORDS_PER_REQUEST))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "request {r}");
            }
        });
        futures_util::future::join_all(sends).await;
    }

    let counts = loki.line_counts(SCALE_OUT_RECORDS).await;
    let missing = (0..SCALE_OUT_RECORDS)
        .filter(|i| !counts.contains_key(&format!("r-{i}")))
        .count();
    assert_eq!(missing, 0, "records lost");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(
        twice.is_empty(),
        "records exported more than once: {twice:?}"
    );
    assert_eq!(counts.len(), SCALE_OUT_RECORDS);
    // The work was shared, and the two collectors' own counts add up to the total.
    let exported = |port: u16| {
        vigil_e2e::metric_sum(
            format!("127.0.0.1:{port}"),
            "vigil_collector_exported_items_total",
            &["signal=\"logs\""],
        )
    };
    let (by_a, by_b) = (exported(a_admin).await, exported(b_admin).await);
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "one collector did all the work: {by_a} / {by_b}"
    );
    assert_eq!(by_a + by_b, SCALE_OUT_RECORDS as f64);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collector_processes_share_100k_records_on_redis_streams() {
    let redis = Server::redis().await;
    two_collector_processes_deliver_everything_once(&format!(
        "buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{}\", claim_idle: 30s }}\n",
        redis.port
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collector_processes_share_100k_records_on_nats_jetstream() {
    let nats = Server::nats().await;
    two_collector_processes_deliver_everything_once(&format!(
        "buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{}\", max_bytes: 256MiB, ack_wait: 30s }}\n",
        nats.port
    ))
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
async fn a_killed_collectors_records_are_taken_over(
    buffer_yaml: impl Fn(&str) -> String,
    takeover_metric: &str,
) {
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
    // The survivor's self-metrics say it took records over.
    let taken_over =
        vigil_e2e::metric_sum(survivor.admin_addr(), takeover_metric, &["signal=\"logs\""]).await;
    assert!(taken_over > 0.0, "{takeover_metric} stayed 0");
    survivor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_killed_collectors_records_are_taken_over() {
    let redis = Server::redis().await;
    let port = redis.port;
    a_killed_collectors_records_are_taken_over(|consumer| {
        format!("buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{port}\", consumer: {consumer}, claim_idle: 1s }}\n")
    }, "vigil_collector_buffer_reclaimed_records_total")
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_a_killed_collectors_records_are_taken_over() {
    let nats = Server::nats().await;
    let port = nats.port;
    a_killed_collectors_records_are_taken_over(|_| {
        format!("buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{port}\", max_bytes: 64MiB, ack_wait: 2s }}\n")
    }, "vigil_collector_buffer_redelivered_records_total")
    .await;
}
