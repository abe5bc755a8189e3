//! Scraping a real HTTP server on loopback: content negotiation, gzip, OpenMetrics, body
//! limits, timeouts, and a series that vanishes between scrapes.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, number_data_point};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vigil_agent::scrape::{ACCEPT_HEADER, ScrapeConfig, Scraper};

/// What the server answers, and the request headers it last saw.
#[derive(Clone, Default)]
struct Exposition {
    content_type: &'static str,
    gzip: bool,
    body: String,
    delay: Duration,
    last_request: String,
}

/// A minimal HTTP/1.1 server: one response per connection, then close.
async fn serve(exposition: Arc<Mutex<Exposition>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let exposition = exposition.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let current = {
                    let mut e = exposition.lock().unwrap();
                    e.last_request = String::from_utf8_lossy(&request).into_owned();
                    e.clone()
                };
                tokio::time::sleep(current.delay).await;
                let body = match current.gzip {
                    true => {
                        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
                        enc.write_all(current.body.as_bytes()).unwrap();
                        enc.finish().unwrap()
                    }
                    false => current.body.into_bytes(),
                };
                let encoding = if current.gzip {
                    "Content-Encoding: gzip\r\n"
                } else {
                    ""
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\n{encoding}Content-Length: {}\r\nConnection: close\r\n\r\n",
                    current.content_type,
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    port
}

fn scraper(port: u16, extra: &str) -> Scraper {
    let yaml = format!(
        "interval: 5s\ntimeout: 2s\n{extra}static: [ {{ url: 'http://127.0.0.1:{port}/metrics', labels: {{ job: app }} }} ]\n"
    );
    let config: ScrapeConfig = vigil_core::config::load(&yaml, |_| None).unwrap();
    Scraper::new(&config).unwrap()
}

/// Gauge or sum value of the point of `name` whose attributes include `attrs`; `None` for
/// a stale marker.
fn value(out: &[ResourceMetrics], name: &str) -> Option<Option<f64>> {
    let metric = out
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .find(|m| m.name == name)?;
    let point = match &metric.data {
        Some(Data::Gauge(g)) => g.data_points.first()?,
        Some(Data::Sum(s)) => s.data_points.first()?,
        _ => return Some(None),
    };
    Some(match point.value {
        Some(number_data_point::Value::AsDouble(v)) => Some(v),
        _ => None,
    })
}

fn resource_attr(out: &[ResourceMetrics], key: &str) -> String {
    let attributes = &out[0].resource.as_ref().unwrap().attributes;
    let kv = attributes.iter().find(|kv| kv.key == key).unwrap();
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => panic!("{key}: {other:?}"),
    }
}

const TEXT: &str = "# TYPE requests_total counter\nrequests_total{path=\"/\"} 10\n# TYPE temperature gauge\ntemperature 21.5\n";

const OPENMETRICS: &str = "# TYPE requests counter\nrequests_total{path=\"/\"} 11\nrequests_created{path=\"/\"} 1700000000\n# TYPE lat_seconds histogram\nlat_seconds_bucket{le=\"0.5\"} 3\nlat_seconds_bucket{le=\"+Inf\"} 4\nlat_seconds_count 4\nlat_seconds_sum 1.5\n# EOF\n";

#[tokio::test]
async fn scrapes_text_and_gzipped_openmetrics() {
    let exposition = Arc::new(Mutex::new(Exposition {
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        body: TEXT.into(),
        ..Default::default()
    }));
    let port = serve(exposition.clone()).await;
    let mut s = scraper(port, "");
    let out = s.scrape_all().await;
    let request = exposition.lock().unwrap().last_request.to_lowercase();
    assert!(
        request.contains(&format!("accept: {}", ACCEPT_HEADER.to_lowercase())),
        "{request}"
    );
    assert!(request.contains("accept-encoding: gzip"), "{request}");
    assert_eq!(resource_attr(&out, "service.name"), "app");
    assert_eq!(
        resource_attr(&out, "service.instance.id"),
        format!("127.0.0.1:{port}")
    );
    assert_eq!(value(&out, "requests_total"), Some(Some(10.0)));
    assert_eq!(value(&out, "temperature"), Some(Some(21.5)));
    assert_eq!(value(&out, "up"), Some(Some(1.0)));

    {
        let mut e = exposition.lock().unwrap();
        e.content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        e.gzip = true;
        e.body = OPENMETRICS.into();
    }
    let out = s.scrape_all().await;
    assert_eq!(value(&out, "up"), Some(Some(1.0)));
    assert_eq!(value(&out, "requests_total"), Some(Some(11.0)));
    let hist = out[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "lat_seconds")
        .expect("histogram");
    let Some(Data::Histogram(h)) = &hist.data else {
        panic!("not a histogram: {hist:?}")
    };
    assert_eq!(h.data_points[0].explicit_bounds, [0.5]);
    assert_eq!(h.data_points[0].bucket_counts, [3, 1]);
    // `temperature` vanished: its stale marker has no value.
    assert_eq!(value(&out, "temperature"), Some(None));
    assert_eq!(s.telemetry().stale_markers.get(), 1);
}

#[tokio::test]
async fn oversized_bodies_and_slow_targets_fail_the_scrape() {
    let exposition = Arc::new(Mutex::new(Exposition {
        content_type: "text/plain; version=0.0.4",
        gzip: true,
        // Compresses to almost nothing, inflates past the limit.
        body: "a 1\n".repeat(10_000),
        ..Default::default()
    }));
    let port = serve(exposition.clone()).await;
    let mut s = scraper(port, "body_limit: 1KiB\n");
    let out = s.scrape_all().await;
    assert_eq!(value(&out, "up"), Some(Some(0.0)));
    assert_eq!(
        s.telemetry()
            .failures
            .with_label_values(&["body_limit"])
            .get(),
        1
    );

    {
        let mut e = exposition.lock().unwrap();
        e.body = TEXT.into();
        e.delay = Duration::from_secs(3);
    }
    let mut s = scraper(port, "");
    let started = std::time::Instant::now();
    let out = s.scrape_all().await;
    assert!(started.elapsed() < Duration::from_millis(2900));
    assert_eq!(value(&out, "up"), Some(Some(0.0)));
    assert_eq!(
        s.telemetry().failures.with_label_values(&["timeout"]).get(),
        1
    );
}

/// Timestamps (ns) of the `up` points of the target whose instance is `instance`.
fn up_times(batches: &[Vec<Vec<u8>>], instance: &str) -> Vec<u64> {
    let decoded: Vec<ResourceMetrics> = batches
        .iter()
        .flatten()
        .map(|bytes| ResourceMetrics::decode(bytes.as_slice()).expect("batches decode"))
        .collect();
    decoded
        .iter()
        .filter(|rm| resource_attr(std::slice::from_ref(rm), "service.instance.id") == instance)
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .filter(|m| m.name == "up")
        .filter_map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.first().map(|p| p.time_unix_nano),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_slow_target_does_not_delay_the_others() {
    let fast = serve(Arc::new(Mutex::new(Exposition {
        content_type: "text/plain",
        body: TEXT.into(),
        ..Default::default()
    })))
    .await;
    let slow = serve(Arc::new(Mutex::new(Exposition {
        content_type: "text/plain",
        body: TEXT.into(),
        delay: Duration::from_secs(30),
        ..Default::default()
    })))
    .await;
    let yaml = format!(
        "interval: 1s\ntimeout: 900ms\nstatic:\n\
         - {{ url: 'http://127.0.0.1:{fast}/metrics', labels: {{ job: fast }} }}\n\
         - {{ url: 'http://127.0.0.1:{slow}/metrics', labels: {{ job: slow }} }}\n"
    );
    let config: ScrapeConfig = vigil_core::config::load(&yaml, |_| None).unwrap();
    let scraper = Scraper::new(&config).unwrap();
    let batches = Arc::new(Mutex::new(Vec::new()));
    let sink_batches = batches.clone();
    scraper
        .run(
            move |batch| {
                sink_batches.lock().unwrap().push(batch);
                std::future::ready(())
            },
            tokio::time::sleep(Duration::from_millis(4500)),
        )
        .await;
    let batches = batches.lock().unwrap();
    let times = up_times(&batches, &format!("127.0.0.1:{fast}"));
    assert!(times.len() >= 3, "{times:?}");
    for pair in times.windows(2) {
        let gap = Duration::from_nanos(pair[1] - pair[0]);
        assert!(
            gap > Duration::from_millis(900) && gap < Duration::from_millis(1100),
            "fast target scraped {gap:?} apart"
        );
    }
    let slow_times = up_times(&batches, &format!("127.0.0.1:{slow}"));
    assert!(slow_times.len() >= 3, "{slow_times:?}");
}
