//! OTLP traces from the OpenTelemetry Rust SDK through the collector to a Tempo OTLP/gRPC
//! receiver (Tempo has no Debian package: the receiver decodes the exact OTLP request).

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Tracer, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use vigil_e2e::collector;
use vigil_e2e::fakes::FakeTempo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_spans_reach_tempo_with_the_tenant() {
    let tempo = FakeTempo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  tempo: {{ endpoint: \"{}\", protocol: grpc, batch: {{ linger: 50ms }}, headers: {{ Authorization: \"Bearer t0ken\" }} }}\n",
        dir.path().display(),
        tempo.endpoint()
    )))
    .await;

    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert("x-scope-orgid", "team-b".parse().unwrap());
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", collector.grpc_addr().unwrap()))
        .with_metadata(metadata)
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("checkout").build())
        .build();
    let tracer = provider.tracer("e2e-tracer");
    let trace_id = tokio::task::spawn_blocking(move || {
        let id = tracer.in_span("POST /pay", |cx| {
            use opentelemetry::trace::TraceContextExt;
            tracer.in_span("charge card", |_| {});
            cx.span()
                .set_attribute(KeyValue::new("http.response.status_code", 200));
            cx.span().span_context().trace_id()
        });
        provider.force_flush().unwrap();
        id
    })
    .await
    .unwrap();

    let exports = vigil_e2e::eventually(Duration::from_secs(20), "both spans at tempo", || async {
        let e = tempo.exports();
        let spans: usize = e
            .iter()
            .map(|x| vigil_core::otlp::spans(&x.request) as usize)
            .sum();
        (spans >= 2).then_some(e)
    })
    .await;
    let mut names = Vec::new();
    for export in &exports {
        assert_eq!(export.tenant.as_deref(), Some("team-b"));
        assert_eq!(export.authorization.as_deref(), Some("Bearer t0ken"));
        for rs in &export.request.resource_spans {
            let resource = rs.resource.as_ref().unwrap();
            assert!(
                resource
                    .attributes
                    .iter()
                    .any(|kv| kv.key == "service.name")
            );
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                assert_eq!(span.trace_id, trace_id.to_bytes().to_vec());
                names.push(span.name.clone());
            }
        }
    }
    names.sort();
    assert_eq!(names, vec!["POST /pay", "charge card"]);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_spans_reach_tempo_over_otlp_http_with_the_default_tenant() {
    let tempo = FakeTempo::start_http().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&format!(
        "receivers: {{ otlp: {{ grpc: null, http: {{ listen: \"127.0.0.1:0\" }}, default_tenant: ops }} }}\n\
         admin: {{ listen: \"127.0.0.1:0\" }}\n\
         buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\n\
         exporters:\n  tempo: {{ endpoint: \"{}\", protocol: http, batch: {{ linger: 10ms }} }}\n",
        dir.path().display(),
        tempo.endpoint()
    ))
    .await;
    let spans = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
        "name":"GET /cart","kind":2,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000250000000"}]}]}]}"#;
    let response = vigil_e2e::http_client()
        .post(format!(
            "http://{}/v1/traces",
            collector.http_addr().unwrap()
        ))
        .header("content-type", "application/json")
        .body(spans)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let exports = vigil_e2e::eventually(Duration::from_secs(20), "the span at tempo", || async {
        let e = tempo.exports();
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].tenant.as_deref(), Some("ops"));
    assert_eq!(exports[0].authorization, None);
    let span = &exports[0].request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "GET /cart");
    assert_eq!(
        span.span_id,
        vec![0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
    );
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        250_000_000
    );
    collector.shutdown().await;
}
