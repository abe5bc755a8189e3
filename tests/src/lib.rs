//! Helpers for the whole-pipeline tests: real servers started on free loopback ports with
//! temporary data directories, and in-test receivers for the backends that have no Debian
//! package (Loki, Tempo), which decode exactly what was sent.
//!
//! - [`servers`]: VictoriaMetrics (real), started per test.
//! - [`fakes`]: a Loki push receiver and a Tempo OTLP receiver.
//! - [`faults`]: the fault-injection suite's backend proxy, load generator and checker.
//! - [`grafana`]: the dashboards and provisioning files, read as Grafana reads them.
//! - [`kubeapi`]: a Kubernetes API server for pods (LIST and WATCH).
//! - [`collector`]: a collector in-process or as a child process (for kill -9).
//! - [`agent`]: an agent in-process or as a child process (for kill -9).
//! - [`process`]: either binary as a child process.
//! - [`deploy`]: the tools and files of the deployment checks (Helm, compose, Alertmanager).
//! - [`certs`]: a CA, server and client certificates made by `openssl`.

pub mod agent;
pub mod certs;
pub mod collector;
pub mod deploy;
pub mod fakes;
pub mod faults;
pub mod grafana;
pub mod kubeapi;
pub mod process;
pub mod servers;

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// A free TCP port on 127.0.0.1, below the kernel's ephemeral range, never the same one
/// twice in a test process. The port is free when this returns; a test binds it soon after.
///
/// A port from `bind(0)` is ephemeral: between this check and the server's bind, any
/// outgoing connection on the machine (a client of another test, a scraper) may be given
/// it, which once failed a `scripts/bench` run with "Address already in use". Below the
/// ephemeral range only an explicit bind takes a port; tests in other processes pick at
/// random from ~20,000 ports and check by binding, so two rarely meet.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let (low, high) = (10_000u16, ephemeral_start().max(10_002) - 1);
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        // A fresh `RandomState` has fresh keys: its hash of nothing is a random number.
        let random = RandomState::new().hash_one(());
        let port = low + (random % u64::from(high - low)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a loopback port")
}

/// The first port of the kernel's ephemeral range (Linux's default when unknown).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768)
}

/// Polls `check` every 100 ms until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_or(limit, what, String::new, check).await
}

/// [`eventually`], whose timeout panic also shows what `context` says then (logs, state).
pub async fn eventually_or<T, F, Fut>(
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of a required program, or a panic that says how to install it.
pub fn require_program(program: &str, debian_package: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin"), "/usr/bin".into()])
    {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{program}` is not installed. Install it with `sudo apt-get install {debian_package}`, \
         or run `scripts/test`, which installs every test dependency."
    );
}

/// A string attribute, as OTLP carries it.
pub fn kv(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// An HTTP client for tests. Vigil links rustls with the ring provider, which must be
/// installed before any client is built (the SDK's exporters included).
pub fn http_client() -> reqwest::Client {
    vigil_core::process::install_crypto_provider();
    reqwest::Client::new()
}

/// The Prometheus text a binary's admin port (`host:port`) serves on `/metrics`.
pub async fn metrics_text(admin: impl std::fmt::Display) -> String {
    http_client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("/metrics body")
}

/// The sum of the samples of metric `name` on a binary's admin `/metrics` whose label set
/// contains every one of `labels` (written `key="value"`).
pub async fn metric_sum(admin: impl std::fmt::Display, name: &str, labels: &[&str]) -> f64 {
    metrics_text(admin)
        .await
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && labels.iter().all(|x| l.contains(x))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ports come from below the ephemeral range, each once, each bindable when given.
    #[test]
    fn free_ports_are_distinct_bindable_and_not_ephemeral() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            ports.len(),
            "a port was given twice: {ports:?}"
        );
        let below = 10_000..ephemeral_start();
        assert!(ports.iter().all(|p| below.contains(p)), "{ports:?}");
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("a given port binds");
        }
    }
}
