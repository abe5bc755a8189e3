//! The Grafana dashboards (`dashboards/*.json`) against the real pipeline.
//!
//! A real VictoriaMetrics, two real `vigil-collector` processes (a disk buffer, and a
//! Redis Streams buffer on a real `redis-server`), a real `vigil-anomaly` process scoring
//! one query and writing back to that VictoriaMetrics, and a real `vigil-agent` process
//! that tails a log file, reads host metrics and scrapes the collectors', the anomaly
//! service's and its own admin `/metrics`. OTLP metrics, logs and traces go through the collectors to VictoriaMetrics
//! and to the in-test Loki and Tempo receivers, which are scripted to answer one 503
//! (a retry) and one 400 (a dead letter); a delta sum is dropped at the remote write
//! edge, and a logs request to the collector without a Loki exporter is refused. So the
//! conditions behind the "retried", "dead-lettered", "dropped" and "refused" panels
//! really happen.
//!
//! Then every PromQL expression of every dashboard (panel targets, annotations,
//! `label_values` variables) runs against that VictoriaMetrics, with the variables as
//! Grafana fills them: `All` (`.*`) and a concrete value. Each must succeed and return
//! data, and each metric name it reads must be one the pipeline wrote (the names come from
//! VictoriaMetrics' `__name__` values after the run, not from a list kept here). Every
//! datasource reference must resolve to a provisioned uid; the LogQL and TraceQL queries
//! and the trace-to-logs links must use labels and attributes the collector really sends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyKind;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;
use vigil_e2e::collector::CollectorProcess;
use vigil_e2e::fakes::{FakeLoki, FakeTempo};
use vigil_e2e::grafana::{self, Query};
use vigil_e2e::process::VigilProcess;
use vigil_e2e::servers::{Server, VictoriaMetrics};
use vigil_e2e::{agent, eventually, free_port, kv};

const TRACE_ID: [u8; 16] = [
    0x5b, 0x8e, 0xfa, 0xa3, 0x16, 0x0c, 0x4f, 0x1e, 0x9d, 0x6a, 0x01, 0x22, 0x7c, 0x3d, 0xee, 0x42,
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.instance.id", "checkout-1"),
            kv("k8s.namespace.name", "shop"),
        ],
        ..Default::default()
    })
}

/// A gauge, and a delta sum, which remote write cannot carry (dropped and counted).
fn metrics_request() -> Vec<u8> {
    let point = |v: f64| NumberDataPoint {
        time_unix_nano: now_ns(),
        start_time_unix_nano: now_ns() - 1_000_000_000,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("checkout"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    Metric {
                        name: "checkout_queue_depth".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: vec![point(3.0)],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "checkout_orders".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![point(1.0)],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn logs_request(line: &str) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("checkout"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: now_ns(),
                    body: Some(AnyValue {
                        value: Some(AnyKind::StringValue(line.into())),
                    }),
                    trace_id: TRACE_ID.to_vec(),
                    span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn traces_request() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("checkout"),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: TRACE_ID.to_vec(),
                    span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    name: "POST /orders".into(),
                    start_time_unix_nano: now_ns() - 5_000_000,
                    end_time_unix_nano: now_ns(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn post(port: u16, signal: &str, body: Vec<u8>) -> u16 {
    vigil_e2e::http_client()
        .post(format!("http://127.0.0.1:{port}/v1/{signal}"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /v1/{signal}: {e}"))
        .status()
        .as_u16()
}

fn is_prometheus(datasource: &Value) -> bool {
    datasource["type"] == "prometheus"
}

/// One expression to run against VictoriaMetrics.
struct Check {
    at: String,
    expr: String,
    need_data: bool,
}

impl Check {
    /// Why the check fails, if it does.
    async fn run(&self, vm: &VictoriaMetrics) -> Option<String> {
        match vm.query_range(&self.expr).await {
            Err(e) => Some(e),
            Ok(result) if result.is_empty() && self.need_data => Some("no data".into()),
            Ok(_) => None,
        }
    }
}

/// `$var` values for one pass: `.*` for every variable (Grafana's `All`), except a
/// repeated panel's variable, which Grafana always fills with one value, and concrete
/// values from `concrete`.
fn values_for(
    board: &Value,
    concrete: &BTreeMap<String, String>,
    repeat: Option<&str>,
    all: bool,
) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (name, var) in grafana::variables(board) {
        let value = match var["type"].as_str() {
            Some("datasource") => var["current"]["value"].as_str().unwrap_or("").to_string(),
            Some("textbox") => String::new(),
            _ => {
                let one = concrete.get(&name).map(|v| grafana::regex_value(v));
                if all && repeat != Some(name.as_str()) {
                    ".*".to_string()
                } else {
                    one.unwrap_or_else(|| ".*".to_string())
                }
            }
        };
        values.insert(name, value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_the_real_pipeline() {
    let boards = grafana::dashboards();
    let provisioned = grafana::provisioned_datasources();
    grafana::check_structure(&boards, &provisioned);

    let vm = VictoriaMetrics::start().await;
    let loki = FakeLoki::start().await;
    let tempo = FakeTempo::start().await;
    let redis = Server::redis().await;
    let dir = tempfile::tempdir().unwrap();
    let write = format!("{}?extra_label=cluster=e2e", vm.write_url());
    let fast = "batch: { linger: 50ms }, retry: { initial: 50ms, max: 200ms }";

    // Collector A: disk buffer, all three exporters; the agent ships to it.
    let (a_grpc, a_http, a_admin) = (free_port(), free_port(), free_port());
    let a_config = dir.path().join("collector-a.yaml");
    std::fs::write(
        &a_config,
        format!(
            "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:{a_grpc}\" }}\n    http: {{ listen: \"127.0.0.1:{a_http}\" }}\n\
             admin: {{ listen: \"127.0.0.1:{a_admin}\" }}\n\
             buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\n\
             exporters:\n\
             \x20 victoriametrics: {{ endpoint: \"{write}\", {fast} }}\n\
             \x20 loki: {{ endpoint: \"{}\", batch: {{ max_records: 1, linger: 50ms }}, retry: {{ initial: 50ms, max: 200ms }} }}\n\
             \x20 tempo: {{ endpoint: \"{}\", protocol: grpc, {fast} }}\n",
            dir.path().join("buffer").display(),
            loki.push_url(),
            tempo.endpoint(),
        ),
    )
    .unwrap();
    let _collector_a = CollectorProcess::start(&a_config, a_admin, a_http).await;

    // Collector B: a shared Redis Streams buffer (its consumer lag is a dashboard panel),
    // metrics only.
    let (b_http, b_admin) = (free_port(), free_port());
    let b_config = dir.path().join("collector-b.yaml");
    std::fs::write(
        &b_config,
        format!(
            "receivers:\n  otlp:\n    grpc: null\n    http: {{ listen: \"127.0.0.1:{b_http}\" }}\n\
             admin: {{ listen: \"127.0.0.1:{b_admin}\" }}\n\
             buffer:\n  kind: redis\n  redis: {{ url: \"redis://127.0.0.1:{}\" }}\n\
             exporters:\n  victoriametrics: {{ endpoint: \"{write}\", {fast} }}\n",
            redis.port
        ),
    )
    .unwrap();
    let _collector_b = CollectorProcess::start(&b_config, b_admin, b_http).await;

    // The first Loki push is answered 503 (retried), its retry 400 (dead-lettered: one
    // record per push, so the exporter has no batch to split and resend one by one).
    loki.answer_next(&[503, 400]);

    // The anomaly service: one query over the agent's host metrics, scored every second
    // (ten points warm a series up), written back to VictoriaMetrics.
    let anomaly_admin = free_port();
    let anomaly_config = dir.path().join("anomaly.yaml");
    std::fs::write(
        &anomaly_config,
        format!(
            "source: {{ victoriametrics: \"{vm}\" }}\ninterval: 1s\nbackfill: 5m\ndelay: 1s\n\
             queries:\n  - name: NodeCpuBusy\n    expr: 'sum by (instance) (rate(node_cpu_seconds_total{{job=\"node\",mode!=\"idle\"}}[5s]))'\n\
             writeback: {{ endpoint: \"{vm}/api/v1/import\" }}\n\
             state: {{ path: \"{}\", snapshot_every: 1s }}\nadmin: {{ listen: \"127.0.0.1:{anomaly_admin}\" }}\n",
            dir.path().join("anomaly-state.bin").display(),
            vm = vm.base(),
        ),
    )
    .unwrap();
    let _anomaly = VigilProcess::start("vigil-anomaly", &anomaly_config, anomaly_admin).await;

    // The agent: tails a log file, reads host metrics, scrapes the collectors and itself.
    let agent_admin = free_port();
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    let log_source = format!(
        "  - {{ include: [\"{}/*.log\"], format: raw, start_at: beginning, scan_interval: 100ms, attributes: {{ service.name: checkout, k8s.namespace.name: shop }} }}\n",
        logs_dir.display()
    );
    let target = |port: u16, job: &str| {
        format!(
            "    - {{ url: \"http://127.0.0.1:{port}/metrics\", labels: {{ job: {job}, namespace: vigil }} }}\n"
        )
    };
    let agent_yaml = format!(
        "{}scrape:\n  interval: 1s\n  static:\n{}{}{}{}host_metrics: {{ enabled: true, interval: 1s }}\n",
        agent::yaml_with_admin(
            &format!("127.0.0.1:{a_grpc}"),
            &dir.path().join("state"),
            &format!("127.0.0.1:{agent_admin}"),
            &log_source
        ),
        target(a_admin, "vigil-collector"),
        target(b_admin, "vigil-collector"),
        target(agent_admin, "vigil-agent"),
        target(anomaly_admin, "vigil-anomaly"),
    );
    let agent_config = dir.path().join("agent.yaml");
    std::fs::write(&agent_config, agent_yaml).unwrap();
    let _agent = agent::start_process(&agent_config, agent_admin).await;

    // Traffic of every signal, and the refusals.
    agent::append(
        &logs_dir.join("app.log"),
        "order 1 placed\norder 2 placed\n",
    );
    for i in 0..3 {
        assert_eq!(post(a_http, "metrics", metrics_request()).await, 200);
        assert_eq!(
            post(a_http, "logs", logs_request(&format!("checkout {i}"))).await,
            200
        );
        assert_eq!(post(a_http, "traces", traces_request()).await, 200);
        assert_eq!(post(b_http, "metrics", metrics_request()).await, 200);
    }
    assert_eq!(
        post(b_http, "logs", logs_request("no loki here")).await,
        501
    );
    assert_eq!(post(a_http, "metrics", b"\x0a\xff\xff".to_vec()).await, 400);
    // Once Loki has answered both scripted statuses, lines that must arrive.
    eventually(
        Duration::from_secs(20),
        "the 503 and the 400 at loki",
        || async { (loki.requests_seen() >= 2).then_some(()) },
    )
    .await;
    agent::append(&logs_dir.join("app.log"), "order 3 placed\n");
    assert_eq!(
        post(a_http, "logs", logs_request("checkout last")).await,
        200
    );

    // Every name the dashboards read, written by the pipeline.
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, board) in &boards {
        for q in grafana::queries(board) {
            if is_prometheus(&q.datasource) {
                for name in grafana::metric_names(&q.expr) {
                    wanted
                        .entry(name)
                        .or_default()
                        .insert(format!("{file} {}", q.at));
                }
            }
        }
    }
    let awaited: BTreeSet<String> = wanted.keys().cloned().collect();
    let mut last_missing = Vec::new();
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let names = vm.metric_names().await;
            last_missing = awaited.difference(&names).cloned().collect();
            if last_missing.is_empty() {
                return names;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await;
    let Ok(names) = waited else {
        // Say whether a missing name is on a binary's /metrics at all.
        let mut detail = Vec::new();
        for name in &last_missing {
            let mut exposed = Vec::new();
            for (binary, port) in [
                ("collector-a", a_admin),
                ("collector-b", b_admin),
                ("agent", agent_admin),
                ("anomaly", anomaly_admin),
            ] {
                let text = vigil_e2e::metrics_text(format!("127.0.0.1:{port}")).await;
                if text.lines().any(|l| {
                    l.strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with(['{', ' ']))
                }) {
                    exposed.push(binary);
                }
            }
            detail.push(format!(
                "{n} (read by {:?}; on /metrics of {exposed:?})",
                wanted[name],
                n = name
            ));
        }
        panic!(
            "metrics the dashboards read never reached VictoriaMetrics:\n{}",
            detail.join("\n")
        )
    };
    assert!(awaited.is_subset(&names));

    let mut checks = Vec::new();
    for (file, board) in &boards {
        // Variables from their own label_values queries, dependencies at `All`.
        let mut concrete = BTreeMap::new();
        for (name, var) in grafana::variables(board) {
            if var["type"] != "query" || !is_prometheus(&var["datasource"]) {
                continue;
            }
            let definition = var["definition"].as_str().unwrap_or("");
            let (selector, label) = grafana::parse_label_values(definition).unwrap_or_else(|| {
                panic!("{file}: ${name}: not a label_values query: {definition}")
            });
            let all = values_for(board, &BTreeMap::new(), None, true);
            let selector = selector.map(|s| {
                grafana::substitute(&s, &all).unwrap_or_else(|e| panic!("{file}: ${name}: {e}"))
            });
            let what = format!("{file}: values of ${name} ({definition})");
            let first = eventually(Duration::from_secs(30), &what, || async {
                vm.label_values(selector.as_deref(), &label)
                    .await
                    .into_iter()
                    .next()
            })
            .await;
            concrete.insert(name, first);
        }
        for q in grafana::queries(board) {
            if !is_prometheus(&q.datasource) {
                continue;
            }
            let at = |pass: &str| format!("{file} {} ({pass})", q.at);
            let expr = |all: bool| {
                let values = values_for(board, &concrete, q.repeat.as_deref(), all);
                grafana::substitute(&q.expr, &values)
                    .unwrap_or_else(|e| panic!("{file} {}: {e}", q.at))
            };
            let all = expr(true);
            if q.annotation {
                // An annotation marks events, which this run may not have: the series it
                // filters must have data.
                let bare = grafana::without_event_filter(&all)
                    .unwrap_or(&all)
                    .to_string();
                checks.push(Check {
                    at: at("All, without its event filter"),
                    expr: bare,
                    need_data: true,
                });
                checks.push(Check {
                    at: at("All"),
                    expr: all.clone(),
                    need_data: false,
                });
            } else {
                checks.push(Check {
                    at: at("All"),
                    expr: all.clone(),
                    need_data: true,
                });
            }
            // `... or vector(0)` shows 0 before a counter's first increment; here the
            // counter must have data of its own.
            if let Some(bare) = all.strip_suffix(" or vector(0)") {
                checks.push(Check {
                    at: at("All, without `or vector(0)`"),
                    expr: bare.to_string(),
                    need_data: true,
                });
            }
            // One concrete value per variable: must parse and run. Data is not required:
            // the first collector need not have every exporter.
            checks.push(Check {
                at: at("one value"),
                expr: expr(false),
                need_data: false,
            });
        }
    }

    // The pipeline is eventually consistent (scrapes every second, write-back of scores
    // as they are made): a check that fails is tried again until a deadline.
    let executed = checks.len();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let mut failed = Vec::new();
        for check in checks {
            if let Some(why) = check.run(&vm).await {
                failed.push((check, why));
            }
        }
        if failed.is_empty() || tokio::time::Instant::now() > deadline {
            break failed;
        }
        checks = failed.into_iter().map(|(c, _)| c).collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let report: Vec<String> = failures
        .iter()
        .map(|(c, why)| format!("{}: {why}\n  {}", c.at, c.expr))
        .collect();
    assert!(
        report.is_empty(),
        "{} of {executed} dashboard queries failed:\n{}",
        report.len(),
        report.join("\n")
    );

    check_logs_and_traces(&boards, &loki, &tempo).await;
}

/// LogQL stream selectors, Loki variables and the Tempo → Loki link use labels the
/// collector really pushes; the Loki → Tempo link finds the trace id where the collector
/// puts it; TraceQL filters on an attribute the spans carry.
async fn check_logs_and_traces(
    boards: &BTreeMap<String, Value>,
    loki: &FakeLoki,
    tempo: &FakeTempo,
) {
    let pushes = eventually(
        Duration::from_secs(20),
        "our log records at loki",
        || async {
            let pushes = loki.pushes();
            let lines: Vec<String> = pushes
                .iter()
                .flat_map(|p| p.request.streams.iter())
                .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
                .collect();
            (lines.iter().any(|l| l.contains("order 3"))
                && lines.iter().any(|l| l.contains("checkout last")))
            .then_some(pushes)
        },
    )
    .await;
    let stream_labels: BTreeSet<String> = pushes
        .iter()
        .flat_map(|p| p.request.streams.iter())
        .flat_map(|s| grafana::logql_stream_labels(&s.labels))
        .collect();
    let trace_ids: BTreeSet<String> = pushes
        .iter()
        .flat_map(|p| p.request.streams.iter())
        .flat_map(|s| s.entries.iter())
        .flat_map(|e| e.structured_metadata.iter())
        .filter(|m| m.name == "trace_id")
        .map(|m| m.value.clone())
        .collect();
    assert!(
        trace_ids.contains(&hex(&TRACE_ID)),
        "trace_id structured metadata: {trace_ids:?}"
    );

    let mut loki_queries: Vec<Query> = Vec::new();
    for board in boards.values() {
        loki_queries.extend(
            grafana::queries(board)
                .into_iter()
                .filter(|q| q.datasource["type"] == "loki"),
        );
        for var in grafana::variables(board).values() {
            if var["datasource"]["type"] == "loki" {
                let label = var["query"]["label"].as_str().unwrap_or("");
                assert!(
                    stream_labels.contains(label),
                    "Loki variable label {label} is not a stream label: {stream_labels:?}"
                );
            }
        }
    }
    assert!(!loki_queries.is_empty(), "a dashboard queries Loki");
    for q in &loki_queries {
        let labels = grafana::logql_stream_labels(&q.expr);
        assert!(!labels.is_empty(), "{}: no stream selector", q.at);
        for label in labels {
            assert!(
                stream_labels.contains(&label),
                "{}: {label} is not a stream label the collector sends: {stream_labels:?}",
                q.at
            );
        }
    }

    let path = grafana::dashboards_dir().join("provisioning/datasources/vigil.yaml");
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let by_uid = |uid: &str| {
        yaml["datasources"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|d| d["uid"].as_str() == Some(uid))
            .cloned()
            .unwrap()
    };
    let loki_ds = by_uid("vigil-loki");
    let derived = loki_ds["jsonData"]["derivedFields"]
        .as_sequence()
        .expect("Loki derived fields");
    assert!(
        derived
            .iter()
            .any(|f| f["matcherType"].as_str() == Some("label")
                && f["matcherRegex"].as_str() == Some("trace_id")
                && f["datasourceUid"].as_str() == Some("vigil-tempo")),
        "a derived field links the trace_id structured metadata to Tempo"
    );
    let tempo_ds = by_uid("vigil-tempo");
    let to_logs = &tempo_ds["jsonData"]["tracesToLogsV2"];
    assert_eq!(to_logs["datasourceUid"].as_str(), Some("vigil-loki"));
    let link = to_logs["query"].as_str().expect("trace-to-logs query");
    for label in grafana::logql_stream_labels(link) {
        assert!(
            stream_labels.contains(&label),
            "trace-to-logs selects on {label}, which the collector does not send"
        );
    }
    assert!(
        link.contains("| trace_id="),
        "trace-to-logs filters on the trace_id structured metadata: {link}"
    );
    assert_eq!(
        by_uid("vigil-alertmanager")["jsonData"]["implementation"].as_str(),
        Some("prometheus")
    );

    // TraceQL `resource.service.name`: the spans Tempo got carry it.
    let exports = eventually(Duration::from_secs(20), "spans at tempo", || async {
        let e = tempo.exports();
        (!e.is_empty()).then_some(e)
    })
    .await;
    let services: BTreeSet<String> = exports
        .iter()
        .flat_map(|e| e.request.resource_spans.iter())
        .flat_map(|r| r.resource.iter().flat_map(|r| r.attributes.iter()))
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyKind::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(
        services.contains("checkout"),
        "service.name on spans: {services:?}"
    );
    for board in boards.values() {
        for q in grafana::queries(board)
            .into_iter()
            .filter(|q| q.datasource["type"] == "tempo")
        {
            assert!(
                q.expr.contains("resource.service.name"),
                "{}: {}",
                q.at,
                q.expr
            );
        }
    }
}
