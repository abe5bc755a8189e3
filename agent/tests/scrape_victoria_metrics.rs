//! Scraping a real VictoriaMetrics process's own /metrics (Debian package
//! `victoria-metrics`), a closed port, and the same target after it stops.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tempfile::TempDir;
use vigil_agent::scrape::{ScrapeConfig, Scraper};
use vigil_core::remote_write::{ConvertOptions, STALE_NAN, convert};

const PROGRAM: &str = "/usr/bin/victoria-metrics";

/// A VictoriaMetrics server on a free loopback port with its own data dir, killed on drop.
struct VictoriaMetrics {
    child: Child,
    port: u16,
    _data: TempDir,
}

impl VictoriaMetrics {
    async fn start() -> VictoriaMetrics {
        assert!(
            Path::new(PROGRAM).exists(),
            "{PROGRAM} is missing: sudo apt-get install victoria-metrics"
        );
        let port = free_port();
        let data = tempfile::tempdir().unwrap();
        let child = Command::new(PROGRAM)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.path().display()))
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PROGRAM}: {e}"));
        let vm = VictoriaMetrics {
            child,
            port,
            _data: data,
        };
        // The agent's reqwest has no default TLS provider: install Vigil's.
        vigil_core::process::install_crypto_provider();
        let client = reqwest::Client::new();
        let health = format!("http://127.0.0.1:{port}/health");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = client
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return vm;
            }
            assert!(
                Instant::now() < deadline,
                "victoria-metrics did not answer /health"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `name{labels}` → value of every series core's remote write conversion makes.
fn series(out: Vec<ResourceMetrics>) -> BTreeMap<String, f64> {
    let request = ExportMetricsServiceRequest {
        resource_metrics: out,
    };
    let converted = convert(&[request], &ConvertOptions::default());
    assert!(converted.dropped.is_empty(), "{:?}", converted.dropped);
    converted
        .request()
        .timeseries
        .into_iter()
        .map(|ts| {
            let name = ts
                .labels
                .iter()
                .find(|l| l.name == "__name__")
                .map(|l| l.value.clone());
            let labels: Vec<String> = ts
                .labels
                .iter()
                .filter(|l| l.name != "__name__")
                .map(|l| format!("{}={:?}", l.name, l.value))
                .collect();
            (
                format!("{}{{{}}}", name.unwrap_or_default(), labels.join(",")),
                ts.samples[0].value,
            )
        })
        .collect()
}

#[tokio::test]
async fn scrapes_victoria_metrics_and_notices_when_it_stops() {
    let mut vm = VictoriaMetrics::start().await;
    let closed = free_port();
    let yaml = format!(
        "interval: 5s\ntimeout: 2s\nstatic:\n\
         - {{ url: 'http://127.0.0.1:{}/metrics', labels: {{ job: victoria-metrics }} }}\n\
         - {{ url: 'http://127.0.0.1:{closed}/metrics', labels: {{ job: closed }} }}\n",
        vm.port
    );
    let config: ScrapeConfig = vigil_core::config::load(&yaml, |_| None).unwrap();
    let mut scraper = Scraper::new(&config).unwrap();

    let got = series(scraper.scrape_all().await);
    let vm_labels = format!(r#"instance="127.0.0.1:{}",job="victoria-metrics""#, vm.port);
    let closed_labels = format!(r#"instance="127.0.0.1:{closed}",job="closed""#);
    assert_eq!(got[&format!("up{{{vm_labels}}}")], 1.0);
    assert_eq!(got[&format!("up{{{closed_labels}}}")], 0.0);
    // VictoriaMetrics' own families, under their own names, with job and instance.
    assert_eq!(got[&format!("vm_app_version{{{vm_labels}}}")], 1.0);
    assert!(got[&format!("process_cpu_seconds_total{{{vm_labels}}}")] >= 0.0);
    assert!(
        got.contains_key(&format!("go_goroutines{{{vm_labels}}}")),
        "{:?}",
        got.keys().take(20).collect::<Vec<_>>()
    );
    let scraped = got[&format!("scrape_samples_scraped{{{vm_labels}}}")];
    assert!(scraped > 100.0, "{scraped}");
    assert_eq!(scraper.telemetry().failures_total(), 1);
    assert_eq!(
        scraper
            .telemetry()
            .failures
            .with_label_values(&["http"])
            .get(),
        1
    );

    vm.stop();
    let got = series(scraper.scrape_all().await);
    assert_eq!(got[&format!("up{{{vm_labels}}}")], 0.0);
    for name in [
        "vm_app_version",
        "process_cpu_seconds_total",
        "go_goroutines",
    ] {
        let value = got[&format!("{name}{{{vm_labels}}}")];
        assert_eq!(
            value.to_bits(),
            STALE_NAN.to_bits(),
            "{name} is not marked stale"
        );
    }
    let stale = got
        .values()
        .filter(|v| v.to_bits() == STALE_NAN.to_bits())
        .count();
    assert!(stale as f64 >= scraped * 0.9, "{stale} stale of {scraped}");
    assert_eq!(scraper.telemetry().failures_total(), 3);
}
