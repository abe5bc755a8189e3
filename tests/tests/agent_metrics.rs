//! The agent's metric inputs, whole: Prometheus endpoints scraped by vigil-agent (a test
//! endpoint with known samples, and a real VictoriaMetrics' own /metrics) and the node's
//! host metrics → OTLP/gRPC → a real collector → a real VictoriaMetrics, read back with
//! the names and labels a Prometheus user expects.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{agent, collector, eventually};

const EXPOSITION: &str = "\
# HELP shop_orders_total Orders taken.
# TYPE shop_orders_total counter
shop_orders_total{payment=\"card\"} 42
shop_orders_total{payment=\"cash\"} 7
# HELP shop_queue_depth_bytes Bytes waiting.
# TYPE shop_queue_depth_bytes gauge
shop_queue_depth_bytes 1024.5
# TYPE shop_latency_seconds histogram
shop_latency_seconds_bucket{le=\"0.1\"} 3
shop_latency_seconds_bucket{le=\"1\"} 5
shop_latency_seconds_bucket{le=\"+Inf\"} 6
shop_latency_seconds_sum 2.5
shop_latency_seconds_count 6
";

/// A Prometheus endpoint on a free loopback port serving [`EXPOSITION`].
async fn shop_endpoint() -> std::net::SocketAddr {
    let app = Router::new().route("/metrics", get(|| async { EXPOSITION }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// `metric` of each series VictoriaMetrics exported, with its last value.
fn last_values(found: &[serde_json::Value]) -> Vec<(serde_json::Value, f64)> {
    found
        .iter()
        .map(|s| {
            let last = s["values"]
                .as_array()
                .and_then(|v| v.last())
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(f64::NAN);
            (s["metric"].clone(), last)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_and_host_metrics_reach_victoriametrics_with_prometheus_names() {
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  victoriametrics: {{ endpoint: \"{}\", batch: {{ linger: 50ms }} }}\n",
        dir.path().join("buffer").display(),
        vm.write_url()
    )))
    .await;
    let shop = shop_endpoint().await;
    let grpc = collector.grpc_addr().unwrap().to_string();
    let yaml = format!(
        "{}scrape:\n  interval: 1s\n  static:\n    - {{ url: \"http://{shop}/metrics\", labels: {{ job: shop, team: payments }} }}\n    - {{ url: \"{}/metrics\", labels: {{ job: victoriametrics }} }}\nhost_metrics: {{ enabled: true, interval: 1s }}\n",
        // gzip here: the log tests ship the default (zstd), and each encoding the collector
        // takes over gRPC is then crossed by one whole-pipeline test.
        agent::yaml(&grpc, &dir.path().join("state"), "  []\n").replacen(
            "  timeout: 5s\n",
            "  timeout: 5s\n  compression: gzip\n",
            1
        ),
        vm.base()
    );
    let agent = agent::start(&yaml).await;

    // The test endpoint: exact names, values and labels, as Prometheus would store them.
    let orders = vm
        .wait_for_series("{__name__=\"shop_orders_total\"}", 2)
        .await;
    let mut got = last_values(&orders);
    got.sort_by(|a, b| a.0["payment"].as_str().cmp(&b.0["payment"].as_str()));
    let instance = shop.to_string();
    assert_eq!(
        got,
        vec![
            (
                serde_json::json!({"__name__": "shop_orders_total", "job": "shop", "instance": instance, "team": "payments", "payment": "card"}),
                42.0
            ),
            (
                serde_json::json!({"__name__": "shop_orders_total", "job": "shop", "instance": instance, "team": "payments", "payment": "cash"}),
                7.0
            ),
        ]
    );
    let depth = vm
        .wait_for_series("{__name__=\"shop_queue_depth_bytes\",job=\"shop\"}", 1)
        .await;
    assert_eq!(last_values(&depth)[0].1, 1024.5);
    let buckets = vm
        .wait_for_series("{__name__=\"shop_latency_seconds_bucket\",job=\"shop\"}", 3)
        .await;
    let mut by_le: Vec<(String, f64)> = last_values(&buckets)
        .into_iter()
        .map(|(m, v)| (m["le"].as_str().unwrap_or("").to_string(), v))
        .collect();
    by_le.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        by_le,
        vec![("+Inf".into(), 6.0), ("0.1".into(), 3.0), ("1".into(), 5.0)]
    );
    let up = vm
        .wait_for_series("{__name__=\"up\",job=\"shop\"}", 1)
        .await;
    assert_eq!(last_values(&up)[0].1, 1.0);

    // A real server's own exposition: VictoriaMetrics describing itself.
    let vm_self = vm
        .wait_for_series("{__name__=\"vm_app_version\",job=\"victoriametrics\"}", 1)
        .await;
    assert_eq!(
        vm_self[0]["metric"]["instance"].as_str(),
        Some(format!("127.0.0.1:{}", vm.port).as_str())
    );
    vm.wait_for_series(
        "{__name__=\"process_cpu_seconds_total\",job=\"victoriametrics\"}",
        1,
    )
    .await;

    // Host metrics under node_exporter's names.
    for name in [
        "node_cpu_seconds_total",
        "node_memory_MemTotal_bytes",
        "node_load1",
        "node_network_receive_bytes_total",
    ] {
        let found = vm
            .wait_for_series(&format!("{{__name__=\"{name}\",job=\"node\"}}"), 1)
            .await;
        assert!(last_values(&found)[0].1 >= 0.0, "{name}");
    }
    let cpu = vm
        .wait_for_series("{__name__=\"node_cpu_seconds_total\",mode=\"idle\"}", 1)
        .await;
    assert!(cpu[0]["metric"]["cpu"].is_string());

    // The agent's own /metrics shows the scrapes.
    let scrapes = eventually(Duration::from_secs(10), "scrapes counted", || async {
        let n = vigil_e2e::metric_sum(agent.admin_addr(), "vigil_agent_scrape_scrapes_total", &[])
            .await;
        (n >= 2.0).then_some(n)
    })
    .await;
    assert!(scrapes >= 2.0);
    agent.shutdown().await;
    collector.shutdown().await;
}
