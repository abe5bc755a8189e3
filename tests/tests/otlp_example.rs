//! `examples/otlp-service` (the compose stack's demo traffic) against a collector: its
//! traces, metrics and logs arrive at VictoriaMetrics (real), Loki and Tempo (in-test
//! receivers), and its incident shows as errors.

use std::process::Command;

use vigil_e2e::fakes::{FakeLoki, FakeTempo};
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{collector, eventually, process};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_service_sends_traces_metrics_and_logs() {
    let vm = VictoriaMetrics::start().await;
    let loki = FakeLoki::start().await;
    let tempo = FakeTempo::start().await;
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: memory }}\nexporters:\n  victoriametrics: {{ endpoint: \"{}\", batch: {{ linger: 50ms }} }}\n  loki: {{ endpoint: \"{}\", batch: {{ linger: 50ms }} }}\n  tempo: {{ endpoint: \"{}\", protocol: grpc, batch: {{ linger: 50ms }} }}\n",
        vm.write_url(),
        loki.push_url(),
        tempo.endpoint()
    )))
    .await;

    // Four seconds at 100 requests/s, in an incident from the first second on.
    let endpoint = format!("http://{}", collector.grpc_addr().unwrap());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(process::example("otlp-service"))
            .args(["--rate", "100", "--duration", "4"])
            .args(["--anomaly-every", "1", "--anomaly-for", "10"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_SERVICE_NAME", "demo-test")
            .output()
            .expect("run the example")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "otlp-service failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Metrics: requests per route and outcome, and the latency histogram.
    let series = vm
        .wait_for_series(r#"{__name__="demo_requests_total",job="demo-test"}"#, 6)
        .await;
    let errors: f64 = series
        .iter()
        .filter(|s| s["metric"]["outcome"] == "error")
        .filter_map(|s| s["values"].as_array()?.last()?.as_f64())
        .sum();
    assert!(errors >= 20.0, "the incident's errors: {errors}");
    for s in &series {
        assert!(
            ["/cart", "/search", "/checkout"]
                .contains(&s["metric"]["http_route"].as_str().unwrap()),
            "{s}"
        );
    }
    vm.wait_for_series(
        r#"{__name__=~"demo_request_duration_seconds_(sum|count)",job="demo-test"}"#,
        12,
    )
    .await;

    // Traces: a request span with its database child, errors marked.
    let spans = eventually(
        std::time::Duration::from_secs(30),
        "spans at tempo",
        || async {
            let spans: Vec<_> = tempo
                .exports()
                .into_iter()
                .flat_map(|e| e.request.resource_spans)
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .collect();
            (spans.len() >= 200).then_some(spans)
        },
    )
    .await;
    assert!(spans.iter().any(|s| s.name == "SELECT products"));
    let failed = spans
        .iter()
        .find(|s| s.status.as_ref().is_some_and(|st| st.code == 2))
        .expect("a failed request span");
    assert!(failed.name.starts_with("GET /"), "{}", failed.name);
    let trace_ids: std::collections::HashSet<String> = spans
        .iter()
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();

    // Logs: the failures, at level error, carrying their span's trace id.
    let streams = eventually(
        std::time::Duration::from_secs(30),
        "error logs at loki",
        || async {
            let streams: Vec<_> = loki
                .pushes()
                .into_iter()
                .flat_map(|p| p.request.streams)
                .filter(|s| s.labels.contains("level=\"error\""))
                .collect();
            (!streams.is_empty()).then_some(streams)
        },
    )
    .await;
    assert!(
        streams[0].labels.contains("service_name=\"demo-test\""),
        "{}",
        streams[0].labels
    );
    let entry = &streams[0].entries[0];
    assert!(
        entry.line.contains("failed: upstream inventory timed out"),
        "{}",
        entry.line
    );
    let trace_id = entry
        .structured_metadata
        .iter()
        .find(|p| p.name == "trace_id")
        .map(|p| p.value.clone())
        .expect("trace_id in structured metadata");
    assert!(
        trace_ids.contains(&trace_id),
        "the log's trace {trace_id} was exported"
    );
}
