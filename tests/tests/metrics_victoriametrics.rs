//! OTLP metrics from the OpenTelemetry Rust SDK, through the collector and its disk buffer,
//! into a real VictoriaMetrics, read back through `/api/v1/export`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
// The SDK's default reader exports from a plain thread, where tonic and the async reqwest
// client have no runtime; this one exports on the test's tokio runtime.
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use prost::Message;
use serde_json::Value;
use vigil_e2e::servers::VictoriaMetrics;
use vigil_e2e::{collector, kv};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn collector_yaml(vm: &VictoriaMetrics, buffer_dir: &std::path::Path) -> String {
    collector::yaml_on_free_ports(&format!(
        "buffer:\n  kind: disk\n  disk: {{ path: \"{}\", max_bytes: 64MiB }}\nexporters:\n  victoriametrics:\n    endpoint: \"{}\"\n    batch: {{ linger: 50ms }}\n",
        buffer_dir.display(),
        vm.write_url()
    ))
}

/// Records a counter, a gauge and a histogram with the SDK and flushes them once.
fn record_with_sdk(provider: &SdkMeterProvider, service_suffix: &str) {
    let meter = provider.meter("e2e-meter");
    let counter = meter
        .u64_counter("http.server.requests")
        .with_unit("{request}")
        .build();
    counter.add(5, &[KeyValue::new("http.route", "/pay")]);
    counter.add(2, &[KeyValue::new("http.route", "/cart")]);
    let gauge = meter.f64_gauge("queue.depth").with_unit("By").build();
    gauge.record(42.5, &[KeyValue::new("queue", service_suffix.to_string())]);
    let histogram = meter
        .f64_histogram("request.duration")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0])
        .build();
    for v in [0.05, 0.3, 0.7, 2.0] {
        histogram.record(v, &[]);
    }
    provider
        .force_flush()
        .expect("SDK flush reaches the collector");
}

fn provider_with(exporter: opentelemetry_otlp::MetricExporter, service: &str) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_interval(Duration::from_secs(3600))
        .build();
    SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .with_attribute(KeyValue::new("service.instance.id", "pod-1"))
                .with_attribute(KeyValue::new("deployment.environment", "test"))
                .build(),
        )
        .build()
}

/// One series' labels (without `__name__`) and its (timestamp, value) samples.
/// A series' labels and its (timestamp ms, value) samples.
type Series = (BTreeMap<String, String>, Vec<(i64, f64)>);

fn series(found: &[Value]) -> BTreeMap<String, Series> {
    let mut out = BTreeMap::new();
    for s in found {
        let labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let values = s["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap());
        let stamps = s["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap());
        let key = format!("{labels:?}");
        out.insert(key, (labels, stamps.zip(values).collect()));
    }
    out
}

fn only_value(found: &[Value], want: &[(&str, &str)]) -> (i64, f64) {
    let all = series(found);
    let matching: Vec<_> = all
        .values()
        .filter(|(labels, _)| {
            want.iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one series with {want:?}, found {all:#?}"
    );
    // The SDK exports cumulative state on flush and again on shutdown: every sample of a
    // series must carry the same value.
    let samples = &matching[0].1;
    assert!(!samples.is_empty());
    assert!(
        samples.iter().all(|(_, v)| *v == samples[0].1),
        "samples disagree: {:?}",
        matching[0]
    );
    samples[0]
}

async fn assert_sdk_metrics_arrived(
    vm: &VictoriaMetrics,
    service: &str,
    before_ms: i64,
    after_ms: i64,
) {
    let sel = |name: &str| format!("{{__name__=\"{name}\",job=\"{service}\"}}");

    let counters = vm
        .wait_for_series(&sel("http_server_requests_total"), 2)
        .await;
    let (ts, v) = only_value(
        &counters,
        &[
            ("http_route", "/pay"),
            ("instance", "pod-1"),
            ("otel_scope_name", "e2e-meter"),
        ],
    );
    assert_eq!(v, 5.0);
    assert!(
        (before_ms..=after_ms).contains(&ts),
        "timestamp {ts} outside [{before_ms}, {after_ms}]"
    );
    assert_eq!(only_value(&counters, &[("http_route", "/cart")]).1, 2.0);

    let gauges = vm.wait_for_series(&sel("queue_depth_bytes"), 1).await;
    assert_eq!(only_value(&gauges, &[("queue", service)]).1, 42.5);

    let buckets = vm
        .wait_for_series(&sel("request_duration_seconds_bucket"), 4)
        .await;
    for (le, count) in [("0.1", 1.0), ("0.5", 2.0), ("1", 3.0), ("+Inf", 4.0)] {
        assert_eq!(
            only_value(&buckets, &[("le", le)]).1,
            count,
            "bucket le={le}"
        );
    }
    let sum = vm
        .wait_for_series(&sel("request_duration_seconds_sum"), 1)
        .await;
    assert!((only_value(&sum, &[]).1 - 3.05).abs() < 1e-9);
    let count = vm
        .wait_for_series(&sel("request_duration_seconds_count"), 1)
        .await;
    assert_eq!(only_value(&count, &[]).1, 4.0);

    // Resource attributes other than service.* land on target_info, not on every series.
    let info = vm.wait_for_series(&sel("target_info"), 1).await;
    let (_, v) = only_value(
        &info,
        &[
            ("deployment_environment", "test"),
            ("telemetry_sdk_language", "rust"),
        ],
    );
    assert_eq!(v, 1.0);
    assert!(
        series(&counters)
            .values()
            .all(|(labels, _)| !labels.contains_key("deployment_environment")),
        "resource attributes must not be copied onto every series"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_over_grpc_and_http_arrive_in_victoriametrics() {
    vigil_e2e::http_client(); // installs the TLS provider the SDK's HTTP client needs
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector_yaml(&vm, dir.path())).await;
    let grpc = collector.grpc_addr().unwrap();
    let http = collector.http_addr().unwrap();

    let before = now_ms();
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{grpc}"))
        .build()
        .unwrap();
    let provider = provider_with(exporter, "checkout-grpc");
    tokio::task::spawn_blocking(move || record_with_sdk(&provider, "checkout-grpc"))
        .await
        .unwrap();

    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("http://{http}/v1/metrics"))
        .build()
        .unwrap();
    let provider = provider_with(exporter, "checkout-http");
    tokio::task::spawn_blocking(move || record_with_sdk(&provider, "checkout-http"))
        .await
        .unwrap();
    let after = now_ms();

    assert_sdk_metrics_arrived(&vm, "checkout-grpc", before, after).await;
    assert_sdk_metrics_arrived(&vm, "checkout-http", before, after).await;
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_timestamps_and_values_survive_the_pipeline() {
    let vm = VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector_yaml(&vm, dir.path())).await;

    // Whole seconds an hour ago: old enough to be clearly not "now", recent enough for
    // VictoriaMetrics' default acceptance window.
    let base_ms = (now_ms() / 1000 - 3600) * 1000;
    let points: Vec<NumberDataPoint> = (0..3)
        .map(|i| NumberDataPoint {
            time_unix_nano: ((base_ms + i * 15_000) as u64) * 1_000_000,
            value: Some(number_data_point::Value::AsDouble(10.25 + i as f64)),
            ..Default::default()
        })
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(PbResource {
                attributes: vec![kv("service.name", "billing")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "cpu.temperature".into(),
                    unit: "Cel".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: points,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let response = vigil_e2e::http_client()
        .post(format!(
            "http://{}/v1/metrics",
            collector.http_addr().unwrap()
        ))
        .header("content-type", "application/x-protobuf")
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let selector = "{__name__=\"cpu_temperature_celsius\",job=\"billing\"}";
    let found = vigil_e2e::eventually(Duration::from_secs(30), "three samples", || async {
        let f = vm.export(selector).await;
        let n = f
            .first()
            .map_or(0, |s| s["values"].as_array().map_or(0, Vec::len));
        (n >= 3).then_some(f)
    })
    .await;
    let (_, samples) = series(&found).into_values().next().unwrap();
    assert_eq!(
        samples,
        vec![
            (base_ms, 10.25),
            (base_ms + 15_000, 11.25),
            (base_ms + 30_000, 12.25)
        ]
    );
    collector.shutdown().await;
}
