//! Whole-scrape tests without a network: a body goes through parsing, relabeling, OTLP
//! and core's remote write conversion, and the resulting Prometheus series are checked.

use std::collections::BTreeMap;
use std::time::Instant;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use vigil_core::remote_write::{ConvertOptions, STALE_NAN, convert};

use super::parse::Format;
use super::*;

const NOW_NS: u64 = 1_700_000_000_000_000_000;
const NOW_MS: i64 = 1_700_000_000_000;

fn scraper(yaml: &str) -> Scraper {
    let config: ScrapeConfig = vigil_core::config::load(yaml, |_| None).unwrap();
    Scraper::new(&config).unwrap()
}

fn node() -> Scraper {
    scraper(
        "static: [ { url: 'http://127.0.0.1:9100/metrics', labels: { job: node, env: prod } } ]\n",
    )
}

/// One scrape of target 0 with `body` (or a failure).
fn record(
    s: &mut Scraper,
    body: Result<(&str, Format), ScrapeError>,
    at_ns: u64,
) -> Vec<ResourceMetrics> {
    let fetched = body.map(|(b, f)| (b.to_owned(), f));
    decoded(s.targets[0].record(fetched, at_ns, Instant::now(), &s.context))
}

/// The batch's encoded `ResourceMetrics`, decoded.
fn decoded(encoded: Vec<Vec<u8>>) -> Vec<ResourceMetrics> {
    encoded
        .iter()
        .map(|bytes| ResourceMetrics::decode(bytes.as_slice()).expect("the batch decodes"))
        .collect()
}

/// The series core's remote write conversion makes of `metrics`, as `name{labels}` →
/// (value, timestamp ms), without the scrape's own report series.
fn series(metrics: Vec<ResourceMetrics>) -> BTreeMap<String, (f64, i64)> {
    all_series(metrics)
        .into_iter()
        .filter(|(k, _)| !is_report(k))
        .collect()
}

fn is_report(key: &str) -> bool {
    ["up{", "scrape_duration_seconds{", "scrape_samples_"]
        .iter()
        .any(|p| key.starts_with(p))
}

fn all_series(metrics: Vec<ResourceMetrics>) -> BTreeMap<String, (f64, i64)> {
    let request = ExportMetricsServiceRequest {
        resource_metrics: metrics,
    };
    let converted = convert(&[request], &ConvertOptions::default());
    assert!(converted.dropped.is_empty(), "{:?}", converted.dropped);
    let mut out = BTreeMap::new();
    for ts in converted.request().timeseries {
        let name = ts
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.clone())
            .unwrap_or_default();
        let labels: Vec<String> = ts
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}={:?}", l.name, l.value))
            .collect();
        let key = format!("{name}{{{}}}", labels.join(","));
        let sample = &ts.samples[0];
        let previous = out.insert(key.clone(), (sample.value, sample.timestamp));
        assert!(previous.is_none(), "duplicate series {key}");
    }
    out
}

const TEXT: &str = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} 1027
http_requests_total{code="500",method="get"} 3 1699999999000
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE legacy_counter counter
legacy_counter 7
# TYPE foo_bytes gauge
foo_bytes 1024
plain_untyped{a="b"} 2
# TYPE rpc_seconds histogram
rpc_seconds_bucket{le="0.1"} 1
rpc_seconds_bucket{le="1.0"} 3
rpc_seconds_bucket{le="+Inf"} 4
rpc_seconds_sum 2.5
rpc_seconds_count 4
# TYPE gc_seconds summary
gc_seconds{quantile="0.5"} 0.01
gc_seconds{quantile="0.99"} NaN
gc_seconds_sum 0.5
gc_seconds_count 40
"#;

#[test]
fn names_and_labels_come_out_as_prometheus_would_store_them() {
    let mut s = node();
    let got = series(record(&mut s, Ok((TEXT, Format::Text)), NOW_NS));
    let t = r#"env="prod",instance="127.0.0.1:9100",job="node""#;
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    let want = [
        format!(r#"foo_bytes{{{t}}}"#),
        format!(r#"gc_seconds_count{{{t}}}"#),
        format!(r#"gc_seconds_sum{{{t}}}"#),
        format!(r#"gc_seconds{{{t},quantile="0.5"}}"#),
        format!(r#"gc_seconds{{{t},quantile="0.99"}}"#),
        format!(r#"http_requests_total{{code="200",{t},method="get"}}"#),
        format!(r#"http_requests_total{{code="500",{t},method="get"}}"#),
        format!(r#"legacy_counter{{{t}}}"#),
        format!(r#"plain_untyped{{a="b",{t}}}"#),
        format!(r#"process_cpu_seconds_total{{{t}}}"#),
        format!(r#"rpc_seconds_bucket{{{t},le="+Inf"}}"#),
        format!(r#"rpc_seconds_bucket{{{t},le="0.1"}}"#),
        format!(r#"rpc_seconds_bucket{{{t},le="1"}}"#),
        format!(r#"rpc_seconds_count{{{t}}}"#),
        format!(r#"rpc_seconds_sum{{{t}}}"#),
    ];
    assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
    let value = |k: &str| got[&k.replace("T", t)];
    assert_eq!(value("rpc_seconds_bucket{T,le=\"1\"}"), (3.0, NOW_MS));
    assert_eq!(value("rpc_seconds_bucket{T,le=\"+Inf\"}").0, 4.0);
    assert_eq!(
        value("http_requests_total{code=\"500\",T,method=\"get\"}"),
        (3.0, 1699999999000)
    );
    assert!(value("gc_seconds{T,quantile=\"0.99\"}").0.is_nan());
}

#[test]
fn the_scrape_reports_up_duration_and_sample_counts() {
    let mut s = node();
    let got = all_series(record(&mut s, Ok((TEXT, Format::Text)), NOW_NS));
    let t = r#"env="prod",instance="127.0.0.1:9100",job="node""#;
    assert_eq!(got[&format!("up{{{t}}}")], (1.0, NOW_MS));
    assert_eq!(got[&format!("scrape_samples_scraped{{{t}}}")].0, 15.0);
    assert_eq!(
        got[&format!("scrape_samples_post_metric_relabeling{{{t}}}")].0,
        15.0
    );
    assert!(got.contains_key(&format!("scrape_duration_seconds{{{t}}}")));
}

#[test]
fn otlp_shape_counters_sums_histograms_summaries() {
    let mut s = node();
    let out = record(&mut s, Ok((TEXT, Format::Text)), NOW_NS);
    assert_eq!(out.len(), 1);
    let resource = out[0].resource.as_ref().unwrap();
    let keys: Vec<&str> = resource
        .attributes
        .iter()
        .map(|kv| kv.key.as_str())
        .collect();
    assert_eq!(keys, ["service.name", "service.instance.id"]);
    assert!(out[0].scope_metrics[0].scope.is_none());
    let kinds: BTreeMap<&str, &str> = out[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| {
            let kind = match &m.data {
                Some(Data::Sum(s)) if s.is_monotonic => "counter",
                Some(Data::Gauge(_)) => "gauge",
                Some(Data::Histogram(_)) => "histogram",
                Some(Data::Summary(_)) => "summary",
                _ => "other",
            };
            (m.name.as_str(), kind)
        })
        .collect();
    assert_eq!(kinds["http_requests_total"], "counter");
    assert_eq!(kinds["legacy_counter"], "gauge");
    assert_eq!(kinds["foo_bytes"], "gauge");
    assert_eq!(kinds["rpc_seconds"], "histogram");
    assert_eq!(kinds["gc_seconds"], "summary");
    let counter = out[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "process_cpu_seconds_total")
        .unwrap();
    let Some(Data::Sum(sum)) = &counter.data else {
        panic!("not a sum")
    };
    assert_eq!(sum.data_points[0].start_time_unix_nano, NOW_NS);
    // Start time stays at first sight on the next scrape.
    let out = record(&mut s, Ok((TEXT, Format::Text)), NOW_NS + 15_000_000_000);
    let counter = out[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "process_cpu_seconds_total")
        .unwrap();
    let Some(Data::Sum(sum)) = &counter.data else {
        panic!("not a sum")
    };
    assert_eq!(sum.data_points[0].start_time_unix_nano, NOW_NS);
    assert_eq!(sum.data_points[0].time_unix_nano, NOW_NS + 15_000_000_000);
}

const OPENMETRICS: &str = r#"# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
process_cpu_seconds_total 4.2
process_cpu_seconds_created 1600000000.5
# TYPE build info
build_info{version="1.2"} 1
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.5"} 1
lat_seconds_bucket{le="+Inf"} 2
lat_seconds_count 2
lat_seconds_sum 0.7
lat_seconds_created 1600000000
# EOF
"#;

#[test]
fn openmetrics_counters_keep_their_total_name_and_created_time() {
    let mut s = node();
    let out = record(&mut s, Ok((OPENMETRICS, Format::OpenMetrics)), NOW_NS);
    let metrics = &out[0].scope_metrics[0].metrics;
    let cpu = metrics
        .iter()
        .find(|m| m.name == "process_cpu_seconds_total")
        .unwrap();
    let Some(Data::Sum(sum)) = &cpu.data else {
        panic!("not a sum")
    };
    assert_eq!(
        sum.data_points[0].start_time_unix_nano,
        1_600_000_000_500_000_000
    );
    let lat = metrics.iter().find(|m| m.name == "lat_seconds").unwrap();
    let Some(Data::Histogram(h)) = &lat.data else {
        panic!("not a histogram")
    };
    assert_eq!(
        h.data_points[0].start_time_unix_nano,
        1_600_000_000_000_000_000
    );
    assert_eq!(h.data_points[0].bucket_counts, [1, 1]);
    let names: Vec<String> = series(out)
        .keys()
        .map(|k| k.split('{').next().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "build_info",
            "lat_seconds_bucket",
            "lat_seconds_bucket",
            "lat_seconds_count",
            "lat_seconds_sum",
            "process_cpu_seconds_total"
        ]
    );
}

#[test]
fn incomplete_histograms_go_out_sample_by_sample() {
    let body = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1.5\nh_count 2\n";
    let mut s = node();
    let got = series(record(&mut s, Ok((body, Format::Text)), NOW_NS));
    let names: Vec<&str> = got
        .keys()
        .map(|k| k.split('{').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["h_bucket", "h_bucket", "h_count"]);
    let t = r#"env="prod",instance="127.0.0.1:9100",job="node""#;
    assert_eq!(got[&format!("h_bucket{{{t},le=\"2\"}}")].0, 1.5);
}

#[test]
fn conflicting_scraped_labels_become_exported_unless_honoured() {
    let body = "m{job=\"app\",instance=\"pod-1\",env=\"dev\",exported_env=\"x\"} 1\n";
    let mut s = node();
    let got = series(record(&mut s, Ok((body, Format::Text)), NOW_NS));
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(
        keys,
        [
            r#"m{env="prod",exported_env="x",exported_exported_env="dev",exported_instance="pod-1",exported_job="app",instance="127.0.0.1:9100",job="node"}"#
        ]
    );
    let mut s = scraper(
        "honor_labels: true\nstatic: [ { url: 'http://127.0.0.1:9100/metrics', labels: { job: node, env: prod } } ]\n",
    );
    let got = series(record(&mut s, Ok((body, Format::Text)), NOW_NS));
    let keys: Vec<&String> = got.keys().collect();
    assert_eq!(
        keys,
        [r#"m{env="dev",exported_env="x",instance="pod-1",job="app"}"#]
    );
}

#[test]
fn metric_relabeling_drops_and_renames() {
    let mut s = scraper(
        "static: [ { url: 'http://h:9100/metrics', labels: { job: node } } ]\n\
         metric_relabel:\n\
         - { source_labels: [__name__], regex: 'go_.*', action: drop }\n\
         - { source_labels: [__name__], regex: 'old_(.*)', target_label: __name__, replacement: 'new_$1' }\n\
         - { regex: 'secret', action: labeldrop }\n",
    );
    let body = "go_threads 5\nold_thing{secret=\"s\"} 1\nkept 2\n";
    let got = all_series(record(&mut s, Ok((body, Format::Text)), NOW_NS));
    let names: Vec<&str> = got
        .keys()
        .filter(|k| !is_report(k))
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            r#"kept{instance="h:9100",job="node"}"#,
            r#"new_thing{instance="h:9100",job="node"}"#
        ]
    );
    assert_eq!(
        got[r#"scrape_samples_scraped{instance="h:9100",job="node"}"#].0,
        3.0
    );
    assert_eq!(
        got[r#"scrape_samples_post_metric_relabeling{instance="h:9100",job="node"}"#].0,
        2.0
    );
}

#[test]
fn vanished_series_get_stale_markers() {
    let mut s = node();
    let t = r#"env="prod",instance="127.0.0.1:9100",job="node""#;
    record(&mut s, Ok((TEXT, Format::Text)), NOW_NS);
    let without: String = TEXT
        .lines()
        .filter(|l| !l.starts_with("foo_bytes") && !l.contains("rpc_seconds"))
        .map(|l| format!("{l}\n"))
        .collect();
    let later = NOW_NS + 15_000_000_000;
    let got = series(record(&mut s, Ok((&without, Format::Text)), later));
    let stale = |k: &str| {
        let (v, ts) = got[&k.replace('T', t)];
        v.to_bits() == STALE_NAN.to_bits() && ts == NOW_MS + 15_000
    };
    assert!(stale("foo_bytes{T}"));
    // Every series of a vanished histogram goes stale: buckets, sum and count.
    assert!(stale("rpc_seconds_bucket{T,le=\"0.1\"}"));
    assert!(stale("rpc_seconds_bucket{T,le=\"+Inf\"}"));
    assert!(stale("rpc_seconds_sum{T}"));
    assert!(!stale("process_cpu_seconds_total{T}"));
    // A third scrape without them sends no second marker.
    let got = series(record(
        &mut s,
        Ok((&without, Format::Text)),
        later + 15_000_000_000,
    ));
    assert!(!got.contains_key(&format!("foo_bytes{{{t}}}")));
}

#[test]
fn a_failed_scrape_is_up_zero_and_makes_everything_stale() {
    let mut s = node();
    let t = r#"env="prod",instance="127.0.0.1:9100",job="node""#;
    record(&mut s, Ok((TEXT, Format::Text)), NOW_NS);
    let got = all_series(record(&mut s, Err(ScrapeError::Status(500)), NOW_NS + 1));
    assert_eq!(got[&format!("up{{{t}}}")].0, 0.0);
    let stale: Vec<&String> = got
        .iter()
        .filter(|(_, (v, _))| v.to_bits() == STALE_NAN.to_bits())
        .map(|(k, _)| k)
        .collect();
    // All but the one with its own timestamp (see the test below).
    assert_eq!(stale.len(), 14, "{stale:?}");
    assert_eq!(s.telemetry().failures_total(), 1);
    assert_eq!(s.telemetry().stale_markers.get(), 7);
    // Back up: the series are new again, no markers.
    let got = all_series(record(&mut s, Ok((TEXT, Format::Text)), NOW_NS + 2));
    assert!(
        got.values()
            .all(|(v, _)| v.to_bits() != STALE_NAN.to_bits())
    );
}

#[test]
fn sample_limit_fails_the_scrape() {
    let mut s =
        scraper("sample_limit: 2\nstatic: [ { url: 'http://h:1/m', labels: { job: j } } ]\n");
    let got = all_series(record(
        &mut s,
        Ok(("a 1\nb 2\nc 3\n", Format::Text)),
        NOW_NS,
    ));
    assert_eq!(got[r#"up{instance="h:1",job="j"}"#].0, 0.0);
    assert_eq!(got.len(), 4, "{got:?}");
    let got = all_series(record(&mut s, Ok(("a 1\nb 2\n", Format::Text)), NOW_NS));
    assert_eq!(got[r#"up{instance="h:1",job="j"}"#].0, 1.0);
}

#[test]
fn target_relabeling_builds_url_and_labels() {
    let s = scraper(
        "static:\n\
         - { url: 'https://10.0.0.1/probe?module=http_2xx', labels: { job: blackbox, __param_target: 'example.com' } }\n\
         - { url: 'http://10.0.0.2:9100/metrics', labels: { job: node, drop_me: 'yes' } }\n\
         relabel:\n\
         - { source_labels: [drop_me], regex: 'yes', action: drop }\n\
         - { source_labels: [__param_target], target_label: instance }\n\
         - { source_labels: [__address__], regex: '(.*):443', target_label: __address__, replacement: '$${1}:8443' }\n",
    );
    assert_eq!(s.targets.len(), 1);
    let t = &s.targets[0];
    assert_eq!(
        t.url.as_str(),
        "https://10.0.0.1:8443/probe?module=http_2xx&target=example.com"
    );
    assert_eq!(t.job, "blackbox");
    assert_eq!(t.instance, "example.com");
    assert!(t.labels.is_empty(), "{:?}", t.labels);
}

#[test]
fn a_target_without_job_is_refused() {
    let config: ScrapeConfig = vigil_core::config::parse(
        "static: [ { url: 'http://h:1/m' } ]\nrelabel: [ { source_labels: [nothing], target_label: job } ]\n",
    )
    .unwrap();
    let err = Scraper::new(&config).err().unwrap();
    assert!(
        matches!(err, BuildError::Target(TargetError::NoJob(_))),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn run_scrapes_each_interval_until_shutdown() {
    // A closed port: every round is `up` 0, quickly.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let s = scraper(&format!(
        "interval: 10s\nstatic: [ {{ url: 'http://127.0.0.1:{port}/metrics', labels: {{ job: j }} }} ]\n"
    ));
    let telemetry = s.telemetry().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let shutdown = async {
        tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    };
    s.run(
        |batch| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(batch).await;
            }
        },
        shutdown,
    )
    .await;
    drop(tx);
    let mut rounds = 0;
    while rx.recv().await.is_some() {
        rounds += 1;
    }
    // Offset within the first 10s, then every 10s until 35s: 3 or 4 rounds.
    assert!((3..=4).contains(&rounds), "{rounds} rounds");
    assert_eq!(telemetry.scrapes.get(), rounds);
}

#[test]
fn a_type_change_is_not_a_vanished_series() {
    let mut s = node();
    record(
        &mut s,
        Ok(("# TYPE x_total gauge\nx_total 1\n", Format::Text)),
        NOW_NS,
    );
    let got = series(record(
        &mut s,
        Ok(("# TYPE x_total counter\nx_total 2\n", Format::Text)),
        NOW_NS + 1,
    ));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got.values().next().map(|v| v.0), Some(2.0));
    assert_eq!(s.telemetry().stale_markers.get(), 0);
}

#[test]
fn series_with_their_own_timestamps_get_no_stale_marker() {
    let mut s = node();
    record(
        &mut s,
        Ok(("a 1 1699999999000\nb 2\n", Format::Text)),
        NOW_NS,
    );
    let got = series(record(&mut s, Ok(("", Format::Text)), NOW_NS + 1));
    let keys: Vec<&str> = got
        .keys()
        .map(|k| k.split('{').next().unwrap_or(""))
        .collect();
    assert_eq!(keys, ["b"]);
    assert_eq!(s.telemetry().stale_markers.get(), 1);
}

#[test]
fn a_retired_target_marks_all_its_series_and_the_scrape_gauges_stale() {
    let mut s = node();
    record(&mut s, Ok(("a 1\nb 2\n", Format::Text)), NOW_NS);
    let stale = all_series(decoded(s.targets[0].retire(&s.context)));
    let names: Vec<&str> = stale.keys().map(|k| k.split('{').next().unwrap()).collect();
    assert_eq!(
        names,
        vec![
            "a",
            "b",
            "scrape_duration_seconds",
            "scrape_samples_post_metric_relabeling",
            "scrape_samples_scraped",
            "up"
        ]
    );
    assert!(
        stale
            .values()
            .all(|(v, _)| v.to_bits() == STALE_NAN.to_bits()),
        "{stale:?}"
    );
    assert_eq!(s.telemetry().stale_markers.get(), 6);
}

#[tokio::test(start_paused = true)]
async fn pod_slots_follow_the_pods() {
    let s = scraper("{}");
    let interval = Duration::from_secs(15);
    let target = |port: u16| {
        let labels: relabel::Labels = [
            ("__address__".to_owned(), format!("10.0.0.1:{port}")),
            ("job".to_owned(), "kubernetes-pods".to_owned()),
        ]
        .into();
        Target::from_labels(labels, &[], "pod").unwrap().unwrap()
    };
    let wanted = |port: Option<u16>| -> HashMap<String, Target> {
        port.map(|p| ("u1".to_owned(), target(p)))
            .into_iter()
            .collect()
    };
    let mut slots = Vec::new();
    let sync =
        |slots: &mut Vec<Slot>, port| sync_pod_slots(slots, wanted(port), interval, &s.context);
    assert!(sync(&mut slots, Some(1)).is_empty());
    assert!(matches!(slots[0].state, SlotState::Idle(_)));
    assert!(sync(&mut slots, Some(1)).is_empty(), "unchanged: kept");
    // Its port changed: the old target is retired, the new one takes its slot.
    assert_eq!(sync(&mut slots, Some(2)).len(), 1);
    assert_eq!(slots.len(), 1);
    let SlotState::Idle(t) = &slots[0].state else {
        panic!("idle")
    };
    assert_eq!(t.url.port(), Some(2));
    // Gone while being scraped: retired once the scrape is back.
    slots[0].state = SlotState::Scraping;
    assert!(sync(&mut slots, None).is_empty());
    assert!(slots[0].retire);
    // Gone while idle: retired now.
    slots[0] = Slot {
        state: SlotState::Idle(Box::new(target(2))),
        due: Instant::now().into(),
        pod: Some(("u1".to_owned(), target(2).fingerprint())),
        retire: false,
    };
    assert_eq!(sync(&mut slots, None).len(), 1);
    assert!(matches!(slots[0].state, SlotState::Gone));
}

#[test]
fn stale_markers_keep_the_kind_labels_and_start_of_their_series() {
    let mut s = node();
    // A label value holding a NUL, the separator of series keys, takes the other road
    // (its marker is kept whole) and must come out the same.
    let body = "# TYPE c counter\nc_total{a=\"x\"} 1\ng{b=\"y\"} 2\nn{v=\"a\u{0}b\"} 3\n";
    record(&mut s, Ok((body, Format::Text)), NOW_NS);
    let later = NOW_NS + 15_000_000_000;
    let got = record(&mut s, Ok(("", Format::Text)), later);
    let mut markers = BTreeMap::new();
    for metric in got
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        let (kind, points) = match &metric.data {
            Some(Data::Sum(sum)) => ("sum", &sum.data_points),
            Some(Data::Gauge(gauge)) => ("gauge", &gauge.data_points),
            other => panic!("unexpected {other:?}"),
        };
        for p in points {
            let labels: Vec<(String, String)> = p
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), otlp_text(kv)))
                .filter(|(k, _)| k != "env")
                .collect();
            markers.insert(
                metric.name.clone(),
                (
                    kind,
                    labels,
                    p.value.is_none(),
                    p.flags,
                    p.start_time_unix_nano,
                    p.time_unix_nano,
                ),
            );
        }
    }
    let label = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
    let marker = |kind, labels, start| (kind, labels, true, 1, start, later);
    assert_eq!(markers["c_total"], marker("sum", label("a", "x"), NOW_NS));
    assert_eq!(markers["g"], marker("gauge", label("b", "y"), 0));
    assert_eq!(markers["n"], marker("gauge", label("v", "a\u{0}b"), 0));
    assert_eq!(s.telemetry().stale_markers.get(), 3);
}

fn otlp_text(kv: &opentelemetry_proto::tonic::common::v1::KeyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        other => panic!("not a string: {other:?}"),
    }
}
