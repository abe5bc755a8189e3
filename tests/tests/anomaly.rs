//! The anomaly service end to end: a real VictoriaMetrics holding a seasonal series, the
//! real `vigil-anomaly` binary scoring it, a real Alertmanager receiving its alerts, and an
//! in-test Grafana annotations API.
//!
//! The series is sampled every second with a one-hour season, so the test can watch live
//! points being scored within seconds: three hours of history warm the model (`backfill`),
//! then a writer appends a point every second, normal, then anomalous for a while, then
//! normal again.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_e2e::fakes::FakeGrafana;
use vigil_e2e::process::VigilProcess;
use vigil_e2e::servers::{Server, VictoriaMetrics};
use vigil_e2e::{eventually, free_port, http_client, metric_sum};

const QUERY: &str = "CheckoutLatency";
const METRIC: &str = "checkout_latency_seconds";
const PERIOD_S: f64 = 3600.0;
const HISTORY_S: i64 = 3 * 3600;
/// What the anomalous points add: ten times the seasonal amplitude.
const SPIKE: f64 = 5.0;

/// The normal value at second `t`: a one-hour wave plus deterministic jitter.
fn normal(t: i64) -> f64 {
    let phase = 2.0 * std::f64::consts::PI * (t as f64) / PERIOD_S;
    let jitter = ((t.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0 - 0.5) * 0.05;
    1.0 + 0.5 * phase.sin() + jitter
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The test series' points (seconds, value) as one `/api/v1/import` line.
fn import_line(points: &[(i64, f64)]) -> String {
    serde_json::json!({
        "metric": {"__name__": METRIC, "service": "checkout"},
        "values": points.iter().map(|p| p.1).collect::<Vec<_>>(),
        "timestamps": points.iter().map(|p| p.0 * 1000).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn import(vm: &VictoriaMetrics, points: &[(i64, f64)]) {
    let response = vm
        .client()
        .post(format!("{}/api/v1/import", vm.base()))
        .body(import_line(points))
        .send()
        .await
        .expect("import");
    assert!(response.status().is_success(), "{}", response.status());
}

/// Three hours of normal history ending now, flushed so range queries see it.
async fn import_history(vm: &VictoriaMetrics) {
    let now = now_s();
    let points: Vec<(i64, f64)> = (now - HISTORY_S..now).map(|t| (t, normal(t))).collect();
    import(vm, &points).await;
    flush(vm).await;
}

async fn flush(vm: &VictoriaMetrics) {
    let _ = vm
        .client()
        .get(format!("{}/internal/force_flush", vm.base()))
        .send()
        .await;
}

/// Appends a point every second until dropped: normal, or spiked while `anomalous`.
struct Writer {
    anomalous: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(vm: &VictoriaMetrics) -> Writer {
        let anomalous = Arc::new(AtomicBool::new(false));
        let flag = anomalous.clone();
        let base = vm.base();
        let task = tokio::spawn(async move {
            let vm_client = http_client();
            let mut last = now_s();
            loop {
                let now = now_s();
                for t in last..=now {
                    let spike = if flag.load(Ordering::Relaxed) {
                        SPIKE
                    } else {
                        0.0
                    };
                    let line = import_line(&[(t, normal(t) + spike)]);
                    let _ = vm_client
                        .post(format!("{base}/api/v1/import"))
                        .body(line)
                        .send()
                        .await;
                }
                let _ = vm_client
                    .get(format!("{base}/internal/force_flush"))
                    .send()
                    .await;
                last = now + 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Writer { anomalous, task }
    }

    fn set_anomalous(&self, on: bool) {
        self.anomalous.store(on, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Sinks<'a> {
    alertmanager: &'a Server,
    grafana: Option<&'a FakeGrafana>,
    /// `state:` of the config.
    state: String,
}

fn config(vm: &VictoriaMetrics, sinks: &Sinks<'_>, admin_port: u16) -> String {
    let grafana = match sinks.grafana {
        Some(g) => format!(
            "grafana: {{ endpoint: \"{}\", token: test-token, dashboard_uid: vigil-anomalies, datasource_uid: vigil-victoriametrics }}\n",
            g.url()
        ),
        None => String::new(),
    };
    format!(
        r#"source: {{ victoriametrics: "{vm}" }}
interval: 1s
backfill: 3h
delay: 2s
queries:
  - name: {QUERY}
    expr: '{METRIC}{{service="checkout"}}'
    detector: {{ kind: ensemble, seasonality: [1h] }}
    direction: above
    min_deviation: 0.2
    severity: page
writeback: {{ endpoint: "{vm}/api/v1/import" }}
alertmanager: {{ endpoint: "{am}" }}
{grafana}state: {state}
admin: {{ listen: "127.0.0.1:{admin_port}" }}
"#,
        vm = vm.base(),
        am = sinks.alertmanager.base(),
        state = sinks.state,
    )
}

const ALERTMANAGER_CONFIG: &str =
    "route:\n  receiver: 'null'\n  group_wait: 1s\nreceivers:\n  - name: 'null'\n";

async fn start_anomaly(dir: &Path, config_text: &str, admin_port: u16) -> VigilProcess {
    let path = dir.join(format!("anomaly-{admin_port}.yaml"));
    std::fs::write(&path, config_text).unwrap();
    VigilProcess::start("vigil-anomaly", &path, admin_port).await
}

/// Active alerts in Alertmanager (`GET /api/v2/alerts` leaves resolved ones out).
async fn active_alerts(am: &Server) -> Vec<Value> {
    let text = http_client()
        .get(format!("{}/api/v2/alerts", am.base()))
        .send()
        .await
        .expect("GET alerts")
        .text()
        .await
        .expect("alerts body");
    let body: Value = serde_json::from_str(&text).expect("alerts JSON");
    body.as_array().cloned().unwrap_or_default()
}

/// Waits until the history is scored: all of it but the warm-up, which lasts one season
/// (an hour of points here).
async fn wait_warm(admin: &str) {
    eventually(
        Duration::from_secs(60),
        "the history to be scored",
        || async {
            let scored = metric_sum(admin, "vigil_anomaly_points_scored_total", &[]).await;
            (scored >= (HISTORY_S - 3600 - 60) as f64).then_some(())
        },
    )
    .await;
}

/// Score samples of the test series written back to VictoriaMetrics: `(ms, score)`.
async fn scores(vm: &VictoriaMetrics) -> Vec<(i64, f64)> {
    let found = vm
        .export(&format!(
            "anomaly_score{{query=\"{QUERY}\",service=\"checkout\"}}"
        ))
        .await;
    let mut points: Vec<(i64, f64)> = found
        .iter()
        .flat_map(|s| {
            let ts = s["timestamps"].as_array().cloned().unwrap_or_default();
            let vs = s["values"].as_array().cloned().unwrap_or_default();
            ts.into_iter()
                .zip(vs)
                .map(|(t, v)| (t.as_i64().unwrap(), v.as_f64().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    points.sort_by_key(|p| p.0);
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seasonal_anomaly_fires_resolves_writes_scores_and_annotates() {
    let vm = VictoriaMetrics::start().await;
    let am = Server::alertmanager(ALERTMANAGER_CONFIG).await;
    let grafana = FakeGrafana::start().await;
    let dir = tempfile::tempdir().unwrap();
    import_history(&vm).await;
    let writer = Writer::start(&vm);

    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let sinks = Sinks {
        alertmanager: &am,
        grafana: Some(&grafana),
        state: format!(
            "{{ path: \"{}\", snapshot_every: 5s }}",
            dir.path().join("state.bin").display()
        ),
    };
    let _anomaly = start_anomaly(dir.path(), &config(&vm, &sinks, admin_port), admin_port).await;
    wait_warm(&admin).await;
    assert_eq!(
        metric_sum(&admin, "vigil_anomaly_warmups_total", &[]).await,
        1.0
    );

    // Normal live data: seen, scored, nothing fires.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        active_alerts(&am).await.is_empty(),
        "normal seasonal data must not alert"
    );
    let anomaly_from_ms = now_s() * 1000;
    writer.set_anomalous(true);

    let alert = eventually(Duration::from_secs(30), "the alert to fire", || async {
        active_alerts(&am)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == QUERY)
    })
    .await;
    let labels = &alert["labels"];
    assert_eq!(labels["service"], "checkout");
    assert_eq!(labels["severity"], "page");
    assert_eq!(labels["query"], QUERY);
    assert_eq!(alert["status"]["state"], "active");
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("outside the expected range"),
        "{description}"
    );
    let value: f64 = alert["annotations"]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let upper: f64 = alert["annotations"]["upper"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        value > upper,
        "value {value} should be above the band's top {upper}"
    );
    let link = alert["generatorURL"].as_str().unwrap();
    assert!(
        link.starts_with(&format!("{}/explore?", grafana.url())),
        "{link}"
    );
    assert_eq!(
        metric_sum(&admin, "vigil_anomaly_alerts_firing", &[]).await,
        1.0
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    let anomaly_to_ms = now_s() * 1000;
    writer.set_anomalous(false);
    eventually(Duration::from_secs(30), "the alert to resolve", || async {
        let firing = active_alerts(&am)
            .await
            .into_iter()
            .any(|a| a["labels"]["alertname"] == QUERY);
        (!firing).then_some(())
    })
    .await;

    // Grafana: one region for the episode, opened then closed, tagged for the dashboard.
    let requests = eventually(
        Duration::from_secs(10),
        "the annotation to close",
        || async {
            let r = grafana.requests();
            r.iter().any(|r| r.method == "PATCH").then_some(r)
        },
    )
    .await;
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let (open, close) = (&requests[0], &requests[1]);
    assert_eq!(open.method, "POST");
    assert_eq!(open.authorization.as_deref(), Some("Bearer test-token"));
    assert_eq!(open.body["dashboardUID"], "vigil-anomalies");
    let tags: Vec<&str> = open.body["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["vigil", QUERY, "service=checkout"]);
    let start = open.body["time"].as_i64().unwrap();
    assert!(
        (anomaly_from_ms - 2000..=anomaly_to_ms).contains(&start),
        "annotation starts at {start}, anomaly was {anomaly_from_ms}..{anomaly_to_ms}"
    );
    assert_eq!(close.path, "/api/annotations/1");
    let end = close.body["timeEnd"].as_i64().unwrap();
    assert!(
        end > start,
        "annotation ends at {end}, before its start {start}"
    );

    // Scores, expected values and bands are in VictoriaMetrics, under the query's name.
    let scores = scores(&vm).await;
    let during: Vec<f64> = scores
        .iter()
        .filter(|(t, _)| (anomaly_from_ms + 2000..anomaly_to_ms).contains(t))
        .map(|p| p.1)
        .collect();
    let before: Vec<f64> = scores
        .iter()
        .filter(|(t, _)| (anomaly_from_ms - 3_600_000..anomaly_from_ms).contains(t))
        .map(|p| p.1)
        .collect();
    assert!(
        !during.is_empty() && before.len() > 1000,
        "{} / {}",
        during.len(),
        before.len()
    );
    assert!(
        during.iter().all(|s| *s > 1.0),
        "every spiked point scores above 1: {during:?}"
    );
    let false_positives = before.iter().filter(|s| **s > 1.0).count();
    assert!(
        false_positives * 100 <= before.len(),
        "{false_positives} of the last hour's {} normal points score above 1",
        before.len()
    );
    // `direction: above` scores every point under the expected value 0 (about half of a
    // normal series); the points above it must rank, not share a few constants.
    let above: Vec<u64> = before
        .iter()
        .filter(|s| **s > 0.0)
        .map(|s| s.to_bits())
        .collect();
    let mut distinct = above.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        above.len() > before.len() / 5 && distinct.len() * 10 > above.len() * 9,
        "scores above the expected value are continuous: {} distinct of {} (of {})",
        distinct.len(),
        above.len(),
        before.len()
    );
    for name in ["anomaly_expected", "anomaly_lower", "anomaly_upper"] {
        let series = vm
            .export(&format!("{name}{{query=\"{QUERY}\",service=\"checkout\"}}"))
            .await;
        assert_eq!(series.len(), 1, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_restores_state_from_redis_without_warming_up_again() {
    let vm = VictoriaMetrics::start().await;
    let am = Server::alertmanager(ALERTMANAGER_CONFIG).await;
    let redis = Server::redis().await;
    let dir = tempfile::tempdir().unwrap();
    import_history(&vm).await;
    let _writer = Writer::start(&vm);

    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let sinks = Sinks {
        alertmanager: &am,
        grafana: None,
        state: format!(
            "{{ redis: \"redis://127.0.0.1:{}\", snapshot_every: 1h }}",
            redis.port
        ),
    };
    let text = config(&vm, &sinks, admin_port);
    let first = start_anomaly(dir.path(), &text, admin_port).await;
    wait_warm(&admin).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // SIGTERM writes the snapshot (the periodic one is an hour away).
    assert!(first.terminate().success());
    let stopped_ms = now_s() * 1000;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let _second = start_anomaly(dir.path(), &text, admin_port).await;
    assert_eq!(
        metric_sum(&admin, "vigil_anomaly_series_restored", &[]).await,
        1.0,
        "the series' state comes back from Redis"
    );
    eventually(
        Duration::from_secs(20),
        "points after the restart to be scored",
        || async {
            let after = metric_sum(&admin, "vigil_anomaly_points_scored_total", &[]).await;
            (after >= 10.0).then_some(())
        },
    )
    .await;
    assert_eq!(
        metric_sum(&admin, "vigil_anomaly_warmups_total", &[]).await,
        0.0,
        "a restart with saved state does not warm up from history"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        active_alerts(&am).await.is_empty(),
        "no false positives after the restart"
    );

    // The score series has no hole around the restart: the points missed while the
    // service was down are scored by the restored model at once, with no warm-up gap.
    flush(&vm).await;
    let scores = scores(&vm).await;
    let around: Vec<i64> = scores
        .iter()
        .map(|p| p.0)
        .filter(|t| (stopped_ms - 10_000..stopped_ms + 10_000).contains(t))
        .collect();
    assert_eq!(
        around.len(),
        20,
        "one score per second around the restart: {around:?}"
    );
    assert!(
        scores
            .iter()
            .filter(|(t, _)| *t >= stopped_ms - 10_000)
            .all(|(_, s)| *s <= 1.0),
        "no point near the restart scores as anomalous"
    );
}

/// Reading from and writing back to a VictoriaMetrics that serves HTTPS only, with a
/// private CA given as `tls.ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_back_over_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    vigil_e2e::certs::make(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let vm = VictoriaMetrics::start_tls(
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
        &dir.path().join("ca.pem"),
    )
    .await;
    import_history(&vm).await;
    let admin_port = free_port();
    let tls = format!("tls: {{ ca_file: \"{}\" }}", file("ca.pem"));
    let config = format!(
        r#"source: {{ victoriametrics: "{vm}", {tls} }}
interval: 1s
backfill: 3h
delay: 2s
queries:
  - name: {QUERY}
    expr: '{METRIC}{{service="checkout"}}'
    detector: {{ kind: ensemble, seasonality: [1h] }}
    direction: above
writeback: {{ endpoint: "{vm}/api/v1/import", {tls} }}
state: {{ path: "{state}" }}
admin: {{ listen: "127.0.0.1:{admin_port}" }}
"#,
        vm = vm.base(),
        state = file("state.bin"),
    );
    let _service = start_anomaly(dir.path(), &config, admin_port).await;
    wait_warm(&format!("127.0.0.1:{admin_port}")).await;
    let written = eventually(
        Duration::from_secs(30),
        "scores written back over https",
        || async {
            let found = scores(&vm).await;
            (!found.is_empty()).then_some(found)
        },
    )
    .await;
    assert!(
        written.iter().all(|(_, score)| score.is_finite()),
        "{written:?}"
    );
}
