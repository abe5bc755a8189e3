//! A small service instrumented with the OpenTelemetry Rust SDK, exporting traces, metrics
//! and logs over OTLP/gRPC to Vigil's collector — the way any service sends to Vigil.
//!
//! ```sh
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \
//!   cargo run -p vigil-e2e --example otlp-service -- --anomaly-every 600
//! ```
//!
//! It simulates HTTP requests (`/cart`, `/search`, `/checkout`) at `--rate` per second:
//! one span per request with a child database span, the metrics `demo.requests`
//! (`demo_requests_total{http_route, outcome}` in VictoriaMetrics) and
//! `demo.request.duration` (`demo_request_duration_seconds_*`), and a log record per failed
//! request (and one in fifty of the others) carrying the span's trace context.
//! Every `--anomaly-every` seconds an incident starts: for `--anomaly-for` seconds two in
//! five requests fail and all are five times slower — what `vigil-anomaly` should flag.
//!
//! The SDK reads the standard variables itself: `OTEL_EXPORTER_OTLP_ENDPOINT` (default
//! `http://localhost:4317`), `OTEL_SERVICE_NAME` (default here `demo-shop`),
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_EXPORTER_OTLP_HEADERS`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

const ROUTES: [&str; 3] = ["/cart", "/search", "/checkout"];

struct Args {
    rate: f64,
    anomaly_every: Duration,
    anomaly_for: Duration,
    duration: Option<Duration>,
}

fn args() -> Args {
    let mut args = Args {
        rate: 20.0,
        anomaly_every: Duration::from_secs(600),
        anomaly_for: Duration::from_secs(90),
        duration: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value: f64 = match it.next().and_then(|v| v.parse().ok()) {
            Some(v) if v > 0.0 => v,
            _ => usage(&flag),
        };
        match flag.as_str() {
            "--rate" => args.rate = value,
            "--anomaly-every" => args.anomaly_every = Duration::from_secs_f64(value),
            "--anomaly-for" => args.anomaly_for = Duration::from_secs_f64(value),
            "--duration" => args.duration = Some(Duration::from_secs_f64(value)),
            _ => usage(&flag),
        }
    }
    args
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "bad argument {flag}\nusage: otlp-service [--rate N/s] [--anomaly-every SECS] [--anomaly-for SECS] [--duration SECS]"
    );
    std::process::exit(2);
}

/// xorshift64*: enough randomness for simulated traffic, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    // The tonic exporters need the runtime when built; they then export from the SDK's
    // own threads.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("demo-shop");
    }
    let resource = resource.build();
    let exit = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("otlp-service: {what}: {e}");
        std::process::exit(1);
    };
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .unwrap_or_else(|e| exit("span exporter", &e));
    let tracers = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .build()
        .unwrap_or_else(|e| exit("metric exporter", &e));
    let meters = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(metrics)
                .with_interval(Duration::from_secs(10))
                .build(),
        )
        .with_resource(resource.clone())
        .build();
    let logs = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .build()
        .unwrap_or_else(|e| exit("log exporter", &e));
    let loggers = SdkLoggerProvider::builder()
        .with_batch_exporter(logs)
        .with_resource(resource)
        .build();

    let tracer = tracers.tracer("otlp-service");
    let meter = meters.meter("otlp-service");
    let logger = loggers.logger("otlp-service");
    let requests = meter
        .u64_counter("demo.requests")
        .with_unit("{request}")
        .with_description("Requests served")
        .build();
    let durations = meter
        .f64_histogram("demo.request.duration")
        .with_unit("s")
        .with_boundaries(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        .build();

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    println!("otlp-service: sending traces, metrics and logs; Ctrl-C stops");
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        let elapsed = started.elapsed();
        if args.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        let cycle = elapsed.as_secs_f64() % args.anomaly_every.as_secs_f64();
        let incident = elapsed >= args.anomaly_every && cycle < args.anomaly_for.as_secs_f64();
        let route = ROUTES[(rng.next() * ROUTES.len() as f64) as usize % ROUTES.len()];
        let failed = rng.next() < if incident { 0.4 } else { 0.01 };
        // Latency around 40 ms (an exponential tail), five times that in an incident.
        let mut seconds = 0.02 + 0.02 * -(1.0 - rng.next()).ln();
        if incident {
            seconds *= 5.0;
        }

        let mut span = tracer.start(format!("GET {route}"));
        span.set_attribute(KeyValue::new("http.route", route));
        let cx = Context::current_with_span(span);
        {
            let mut db = tracer.start_with_context("SELECT products", &cx);
            db.set_attribute(KeyValue::new("db.system", "postgresql"));
            db.end();
        }
        let outcome = if failed { "error" } else { "ok" };
        let attributes = [
            KeyValue::new("http.route", route),
            KeyValue::new("outcome", outcome),
        ];
        requests.add(1, &attributes);
        durations.record(seconds, &attributes);
        if failed || rng.next() < 0.02 {
            let span_context = cx.span().span_context().clone();
            let mut record = logger.create_log_record();
            record.set_severity_number(if failed {
                Severity::Error
            } else {
                Severity::Info
            });
            record.set_severity_text(if failed { "ERROR" } else { "INFO" });
            record.set_body(AnyValue::from(if failed {
                format!("GET {route} failed: upstream inventory timed out after {seconds:.3}s")
            } else {
                format!("GET {route} served in {seconds:.3}s")
            }));
            record.add_attribute("http.route", route);
            record.set_trace_context(
                span_context.trace_id(),
                span_context.span_id(),
                Some(span_context.trace_flags()),
            );
            logger.emit(record);
        }
        if failed {
            cx.span()
                .set_status(Status::error("upstream inventory timed out"));
        }
        cx.span().end();
    }

    // Flush what is batched before leaving.
    let _ = tracers.shutdown();
    let _ = meters.shutdown();
    let _ = loggers.shutdown();
}
