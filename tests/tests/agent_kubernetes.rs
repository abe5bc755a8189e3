//! The agent with the Kubernetes API: pod metadata on log records, and pods discovered for
//! scraping. No API server can be installed here, so a fake one speaks the documented LIST
//! and WATCH protocol for pods ([`vigil_e2e::kubeapi`]); the agent reaches it through a
//! kubeconfig, as it would outside a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::json;
use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::kubeapi::{FakeKubeApi, TestPod, pod};
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{agent, collector, eventually};

const UID: &str = "6f1c2b9a-0000-4000-8000-000000000001";

fn cri(line: &str) -> String {
    format!("2024-05-01T10:00:00Z stdout F {line}\n")
}

/// The structured metadata of the Loki entry whose line is `line`, once it arrived.
async fn metadata_of(loki: &FakeLoki, line: &str) -> BTreeMap<String, String> {
    eventually(
        Duration::from_secs(15),
        &format!("`{line}` in Loki"),
        || {
            let pushes = loki.pushes();
            async move {
                pushes
                    .iter()
                    .flat_map(|p| p.request.streams.iter())
                    .flat_map(|s| s.entries.iter())
                    .find(|e| e.line == line)
                    .map(|e| {
                        e.structured_metadata
                            .iter()
                            .map(|p| (p.name.clone(), p.value.clone()))
                            .collect()
                    })
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_records_get_the_pods_api_metadata_also_after_it_was_deleted() {
    let loki = FakeLoki::start().await;
    let api = FakeKubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&agent::collector_to_loki_yaml(
        &loki,
        &dir.path().join("buffer"),
        "127.0.0.1:0",
    ))
    .await;
    let grpc = collector.grpc_addr().unwrap().to_string();

    let container = dir
        .path()
        .join(format!("var/log/pods/shop_checkout-5d8f9-abcde_{UID}/app"));
    std::fs::create_dir_all(&container).unwrap();
    let file = container.join("0.log");
    agent::append(&file, &cri("before the api knows the pod"));
    let logs = format!(
        "  - include: [\"{}/var/log/pods/*/*/*.log\"]\n    format: cri\n    start_at: beginning\n    scan_interval: 100ms\n",
        dir.path().display()
    );
    let yaml = format!(
        "{}kubernetes:\n  enabled: true\n  node_name: node-1\n  deleted_pod_grace: 5m\n  kubeconfig: \"{}\"\n",
        agent::yaml(&grpc, &dir.path().join("state"), &logs),
        api.kubeconfig(dir.path()).display()
    );
    let agent = agent::start(&yaml).await;

    // The API knows nothing yet: the line goes out with its path's metadata alone.
    let meta = metadata_of(&loki, "before the api knows the pod").await;
    assert_eq!(meta.get("k8s_pod_uid").map(String::as_str), Some(UID));
    assert!(!meta.contains_key("k8s_deployment_name"), "{meta:?}");

    eventually(Duration::from_secs(10), "the agent to watch pods", || {
        let watching = api.watches() > 0;
        async move { watching.then_some(()) }
    })
    .await;
    api.put(pod(TestPod {
        namespace: "shop",
        name: "checkout-5d8f9-abcde",
        uid: UID,
        node: "node-1",
        ip: "10.1.2.3",
        labels: json!({ "app": "checkout", "pod-template-hash": "5d8f9" }),
        annotations: json!({}),
        owner: Some(("ReplicaSet", "checkout-5d8f9")),
    }));
    // The file was opened before the pod was known; its next lines get the metadata.
    let mut known = None;
    for i in 0..50 {
        let line = format!("known {i}");
        agent::append(&file, &cri(&line));
        let meta = metadata_of(&loki, &line).await;
        if meta.contains_key("k8s_deployment_name") {
            known = Some(meta);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = known.expect("the pod's metadata reached the records");
    let expected = [
        ("k8s_deployment_name", "checkout"),
        ("k8s_replicaset_name", "checkout-5d8f9"),
        ("k8s_pod_label_app", "checkout"),
        ("k8s_pod_label_pod_template_hash", "5d8f9"),
        ("k8s_node_name", "node-1"),
        ("k8s_pod_uid", UID),
    ];
    for (name, value) in expected {
        assert_eq!(
            meta.get(name).map(String::as_str),
            Some(value),
            "{name} in {meta:?}"
        );
    }

    // Deleted: its last lines, also of a file first seen after the deletion, keep the
    // metadata for the grace. Events arrive within milliseconds on loopback; the pause
    // makes sure the DELETED one was handled before the late lines are read.
    api.delete(UID);
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent::append(&file, &cri("late line"));
    agent::append(&container.join("1.log"), &cri("late line of a new file"));
    for line in ["late line", "late line of a new file"] {
        let meta = metadata_of(&loki, line).await;
        for (name, value) in expected {
            assert_eq!(
                meta.get(name).map(String::as_str),
                Some(value),
                "{line}: {name} in {meta:?}"
            );
        }
    }

    assert!(
        api.field_selectors()
            .iter()
            .all(|s| s == "spec.nodeName=node-1"),
        "{:?}",
        api.field_selectors()
    );
    let telemetry = agent.telemetry();
    assert_eq!(
        telemetry.kubernetes_pods.get(),
        1,
        "the deleted pod, within its grace"
    );
    assert_eq!(telemetry.kubernetes_watch_errors.get(), 0);
    agent.shutdown().await;
    collector.shutdown().await;
}

/// An endpoint on a free loopback port serving `body` at `/metrics`, counting its scrapes.
async fn counted_endpoint(body: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, hits)
}

/// The agent's `vigil_agent_scrape_stale_markers_total`.
async fn stale_markers(agent: &vigil_agent::Agent) -> u64 {
    let text = vigil_e2e::metrics_text(agent.admin_addr()).await;
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_agent_scrape_stale_markers_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The series an instant query returns now.
async fn instant(vm: &VictoriaMetrics, query: &str) -> Vec<serde_json::Value> {
    let client = vigil_e2e::http_client();
    let _ = client
        .get(format!("{}/internal/force_flush", vm.base()))
        .send()
        .await;
    let text = client
        .get(format!("{}/api/v1/query", vm.base()))
        .query(&[("query", query)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_pods_are_scraped_into_victoriametrics_until_they_are_deleted() {
    let vm = VictoriaMetrics::start().await;
    let api = FakeKubeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  victoriametrics: {{ endpoint: \"{}\", batch: {{ linger: 50ms }} }}\n",
        dir.path().join("buffer").display(),
        vm.write_url()
    )))
    .await;
    let grpc = collector.grpc_addr().unwrap().to_string();
    let (shop, shop_hits) =
        counted_endpoint("# TYPE shop_orders_total counter\nshop_orders_total 42\n").await;
    let (other, other_hits) = counted_endpoint("other_total 1\n").await;
    api.put(pod(TestPod {
        namespace: "shop",
        name: "checkout-0",
        uid: "uid-annotated",
        node: "node-1",
        ip: "127.0.0.1",
        labels: json!({ "app": "checkout" }),
        annotations: json!({ "prometheus.io/scrape": "true", "prometheus.io/port": shop.port().to_string() }),
        owner: Some(("StatefulSet", "checkout")),
    }));
    // Same IP, a port annotation, but no scrape annotation: left alone.
    api.put(pod(TestPod {
        namespace: "shop",
        name: "quiet-0",
        uid: "uid-quiet",
        node: "node-1",
        ip: "127.0.0.1",
        labels: json!({}),
        annotations: json!({ "prometheus.io/port": other.port().to_string() }),
        owner: None,
    }));
    let yaml = format!(
        "{}scrape:\n  interval: 1s\n  kubernetes_pods: {{ enabled: true }}\nhost_metrics: {{ enabled: false }}\n\
         kubernetes:\n  enabled: true\n  node_name: node-1\n  kubeconfig: \"{}\"\n",
        agent::yaml(&grpc, &dir.path().join("state"), "  []\n"),
        api.kubeconfig(dir.path()).display()
    );
    let agent = agent::start(&yaml).await;

    let found = vm
        .wait_for_series("{__name__=\"shop_orders_total\"}", 1)
        .await;
    let metric = &found[0]["metric"];
    assert_eq!(metric["job"], "kubernetes-pods", "{metric}");
    assert_eq!(metric["namespace"], "shop", "{metric}");
    assert_eq!(metric["pod"], "checkout-0", "{metric}");
    assert_eq!(
        metric["instance"],
        format!("127.0.0.1:{}", shop.port()),
        "{metric}"
    );
    assert!(
        metric.get("__meta_kubernetes_pod_name").is_none(),
        "meta labels are dropped: {metric}"
    );
    let up = "up{job=\"kubernetes-pods\"}";
    vm.wait_for_series(up, 1).await;
    let markers_before = stale_markers(&agent).await;
    assert_eq!(
        other_hits.load(Ordering::SeqCst),
        0,
        "a pod without the annotation"
    );

    // Deleted: no more scrapes; stale markers for its series (the scraped one and the four
    // scrape gauges), and the series are gone from VictoriaMetrics' instant queries.
    api.delete("uid-annotated");
    eventually(
        Duration::from_secs(10),
        "stale markers for the deleted pod",
        || {
            let agent = &agent;
            async move { (stale_markers(agent).await >= markers_before + 5).then_some(()) }
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the pod's series to go stale",
        || {
            let vm = &vm;
            async move {
                let orders = instant(vm, "shop_orders_total").await;
                let up = instant(vm, up).await;
                (orders.is_empty() && up.is_empty()).then_some(())
            }
        },
    )
    .await;
    let hits = shop_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        shop_hits.load(Ordering::SeqCst),
        hits,
        "scraped after deletion"
    );
    assert_eq!(other_hits.load(Ordering::SeqCst), 0);
    assert!(
        api.field_selectors()
            .iter()
            .all(|s| s == "spec.nodeName=node-1")
    );
    agent.shutdown().await;
    collector.shutdown().await;
}
