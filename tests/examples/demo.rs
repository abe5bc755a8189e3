//! The demo behind `scripts/demo`: starts the collector binary on its defaults (disk
//! buffer) with VictoriaMetrics as the metrics backend and in-process Loki and Tempo
//! receivers, sends real OTLP telemetry with the OpenTelemetry SDK, and prints what arrived
//! at each backend.
//!
//! `demo --collector PATH --victoriametrics URL --workdir DIR`

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Tracer, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::metrics::periodic_reader_with_async_runtime::PeriodicReader;
use opentelemetry_sdk::trace::SdkTracerProvider;
use vigil_e2e::fakes::{FakeLoki, FakeTempo};
use vigil_e2e::{eventually, free_port, http_client};

struct Args {
    collector: PathBuf,
    victoriametrics: String,
    workdir: PathBuf,
}

fn args() -> Args {
    let mut collector = None;
    let mut victoriametrics = None;
    let mut workdir = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next();
        match flag.as_str() {
            "--collector" => collector = value.map(PathBuf::from),
            "--victoriametrics" => victoriametrics = value,
            "--workdir" => workdir = value.map(PathBuf::from),
            other => exit(&format!("unknown argument {other}")),
        }
    }
    match (collector, victoriametrics, workdir) {
        (Some(collector), Some(victoriametrics), Some(workdir)) => Args {
            collector,
            victoriametrics,
            workdir,
        },
        _ => exit("usage: demo --collector PATH --victoriametrics URL --workdir DIR"),
    }
}

fn exit(message: &str) -> ! {
    eprintln!("demo: {message}");
    std::process::exit(2)
}

const SERVICE: &str = "vigil-demo";

#[tokio::main]
async fn main() {
    let args = args();
    let client = http_client();
    let loki = FakeLoki::start().await;
    let tempo = FakeTempo::start().await;
    let (grpc, http, admin) = (free_port(), free_port(), free_port());

    // Only what differs from the collector's defaults: loopback ports, the buffer under
    // the work dir, and where the three backends are.
    let config_path = args.workdir.join("collector.yaml");
    let config = format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:{grpc}\" }}\n    http: {{ listen: \"127.0.0.1:{http}\" }}\n\
         buffer:\n  disk: {{ path: \"{}\" }}\n\
         exporters:\n  victoriametrics: {{ endpoint: \"{}/api/v1/write\" }}\n  loki: {{ endpoint: \"{}\" }}\n  tempo: {{ endpoint: \"{}\", protocol: grpc }}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n",
        args.workdir.join("buffer").display(),
        args.victoriametrics,
        loki.push_url(),
        tempo.endpoint(),
    );
    std::fs::write(&config_path, &config)
        .unwrap_or_else(|e| exit(&format!("cannot write config: {e}")));
    println!("── collector config ({})\n{config}", config_path.display());

    let mut collector = Command::new(&args.collector)
        .arg("--config")
        .arg(&config_path)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| exit(&format!("cannot start {}: {e}", args.collector.display())));
    let ready = format!("http://127.0.0.1:{admin}/readyz");
    eventually(
        Duration::from_secs(30),
        "the collector's /readyz",
        || async {
            client
                .get(&ready)
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        },
    )
    .await;

    println!(
        "── sending OTLP with the OpenTelemetry SDK: metrics and traces over gRPC, logs over HTTP/JSON"
    );
    // A fresh instance per run, so data of earlier runs (kept under the work dir) is not
    // mistaken for this run's.
    let instance = format!("demo-{}", vigil_core::buffer::now_ms());
    let resource = Resource::builder()
        .with_service_name(SERVICE)
        .with_attribute(KeyValue::new("service.instance.id", instance.clone()))
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .unwrap_or_else(|e| exit(&e.to_string()));
    let meters = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics, opentelemetry_sdk::runtime::Tokio).build())
        .with_resource(resource.clone())
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{grpc}"))
        .build()
        .unwrap_or_else(|e| exit(&e.to_string()));
    let tracers = SdkTracerProvider::builder()
        .with_simple_exporter(spans)
        .with_resource(resource)
        .build();
    let sent = tokio::task::spawn_blocking(move || {
        let meter = meters.meter("demo");
        let requests = meter
            .u64_counter("http.server.requests")
            .with_unit("{request}")
            .build();
        requests.add(5, &[KeyValue::new("http.route", "/checkout")]);
        requests.add(3, &[KeyValue::new("http.route", "/cart")]);
        meter
            .f64_gauge("queue.depth")
            .with_unit("By")
            .build()
            .record(1536.0, &[]);
        let latency = meter
            .f64_histogram("http.server.duration")
            .with_unit("s")
            .with_boundaries(vec![0.1, 0.5, 1.0])
            .build();
        for v in [0.05, 0.2, 0.7] {
            latency.record(v, &[]);
        }
        let tracer = tracers.tracer("demo");
        tracer.in_span("GET /checkout", |_| tracer.in_span("SELECT orders", |_| {}));
        let flushed = meters.force_flush().is_ok() && tracers.force_flush().is_ok();
        let _ = meters.shutdown();
        let _ = tracers.shutdown();
        flushed
    })
    .await
    .unwrap_or(false);
    if !sent {
        exit("the SDK could not deliver to the collector");
    }
    let logs = format!(
        r#"{{"resourceLogs":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{SERVICE}"}}}}]}},
        "scopeLogs":[{{"logRecords":[
          {{"severityText":"INFO","body":{{"stringValue":"order 1001 placed"}},"attributes":[{{"key":"order.id","value":{{"intValue":"1001"}}}}]}},
          {{"severityText":"WARN","body":{{"stringValue":"payment slow: 2.4s"}}}}]}}]}}]}}"#
    );
    let response = client
        .post(format!("http://127.0.0.1:{http}/v1/logs"))
        .header("content-type", "application/json")
        .body(logs)
        .send()
        .await
        .unwrap_or_else(|e| exit(&e.to_string()));
    if !response.status().is_success() {
        exit(&format!("collector answered {} to logs", response.status()));
    }

    println!("── what arrived");
    let export = format!("{}/api/v1/export", args.victoriametrics);
    let selector = format!("{{job=\"{SERVICE}\",instance=\"{instance}\"}}");
    let lines = eventually(
        Duration::from_secs(30),
        "metrics in VictoriaMetrics",
        || async {
            let _ = client
                .get(format!("{}/internal/force_flush", args.victoriametrics))
                .send()
                .await;
            let text = client
                .get(&export)
                .query(&[("match[]", selector.as_str())])
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            (lines.len() >= 10).then_some(lines)
        },
    )
    .await;
    println!(
        "VictoriaMetrics ({}) has {} series for {selector}:",
        args.victoriametrics,
        lines.len()
    );
    let mut shown: Vec<String> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|s| {
            let labels = s["metric"].as_object().cloned().unwrap_or_default();
            let name = labels
                .get("__name__")
                .and_then(|v| v.as_str())
                .unwrap_or("?")
                .to_string();
            let rest: Vec<String> = labels
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "__name__" | "job" | "instance" | "otel_scope_name"
                    )
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let value = s["values"]
                .as_array()
                .and_then(|v| v.last())
                .cloned()
                .unwrap_or_default();
            format!("  {name}{{{}}} {value}", rest.join(","))
        })
        .collect();
    shown.sort();
    for line in shown {
        println!("{line}");
    }

    let pushes = eventually(
        Duration::from_secs(30),
        "logs at the Loki receiver",
        || async {
            let p = loki.pushes();
            (p.iter()
                .map(|p| {
                    p.request
                        .streams
                        .iter()
                        .map(|s| s.entries.len())
                        .sum::<usize>()
                })
                .sum::<usize>()
                >= 2)
                .then_some(p)
        },
    )
    .await;
    println!("Loki receiver ({}) got:", loki.push_url());
    for stream in pushes.iter().flat_map(|p| &p.request.streams) {
        for entry in &stream.entries {
            let meta: Vec<String> = entry
                .structured_metadata
                .iter()
                .map(|m| format!("{}={}", m.name, m.value))
                .collect();
            println!(
                "  {} {:?} metadata[{}]",
                stream.labels,
                entry.line,
                meta.join(" ")
            );
        }
    }

    let exports = eventually(
        Duration::from_secs(30),
        "spans at the Tempo receiver",
        || async {
            let e = tempo.exports();
            (e.iter()
                .map(|x| vigil_core::otlp::spans(&x.request))
                .sum::<u64>()
                >= 2)
                .then_some(e)
        },
    )
    .await;
    println!("Tempo receiver ({}) got:", tempo.endpoint());
    for span in exports
        .iter()
        .flat_map(|e| &e.request.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
    {
        let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
        println!("  span {:?} trace_id={trace}", span.name);
    }

    let metrics = client
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| exit(&e.to_string()));
    let metrics = metrics.text().await.unwrap_or_default();
    println!("Collector self-metrics (http://127.0.0.1:{admin}/metrics):");
    for line in metrics.lines().filter(|l| {
        l.starts_with("vigil_collector_exported_items_total")
            || l.starts_with("vigil_collector_received_items_total")
    }) {
        println!("  {line}");
    }

    // SIGTERM, as an orchestrator would stop it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(collector.id().to_string())
        .status();
    let _ = collector.wait();
    println!("── done: metrics, logs and traces went OTLP → collector → disk buffer → backends");
}
