//! Collectors that scale out on a shared buffer: two collectors join one Redis Streams
//! consumer group, or one set of NATS JetStream durable consumers, and everything sent to
//! either reaches the backend exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use vigil_collector::Collector;
use vigil_e2e::collector;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::servers::Broker;

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
    let redis = Broker::redis().await;
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
    let nats = Broker::nats().await;
    let port = nats.port;
    two_collectors_deliver_everything_once(|_| {
        format!("buffer:\n  kind: nats\n  nats: {{ url: \"nats://127.0.0.1:{port}\", max_bytes: 64MiB, ack_wait: 5s }}\n")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_makes_receivers_answer_503_and_readyz_false() {
    let mut redis = Some(Broker::redis().await);
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
