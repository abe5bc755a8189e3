//! The anomaly service's configuration: one YAML file, `--config PATH`.
//!
//! ```yaml
//! source: { victoriametrics: "http://127.0.0.1:8428" }
//! interval: 60s
//! backfill: 2d
//! queries:
//!   - name: HighErrorRate
//!     expr: 'sum(rate(http_requests_total{code=~"5.."}[5m])) by (service)'
//!     detector: { kind: ensemble, seasonality: [1d, 7d] }
//!     direction: above
//!     min_deviation: 0.5
//! writeback: { endpoint: "http://127.0.0.1:8428/api/v1/import" }
//! alertmanager: { endpoint: "http://127.0.0.1:9093" }
//! grafana: { endpoint: "http://127.0.0.1:3000", token: "${GRAFANA_TOKEN}", dashboard_uid: vigil-anomalies }
//! state: { redis: "redis://127.0.0.1:6379" }
//! admin: { listen: "127.0.0.1:8889" }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use vigil_core::config::{ConfigErrors, Errors, Validate, duration, join};
use vigil_core::tls::ClientTls;

use crate::detector::{DetectorConfig, Direction};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: Source,
    /// How often every query is evaluated; also the step of the series it reads.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// How much history warms a query's models on its first start (no saved state).
    #[serde(default = "default_backfill", with = "duration")]
    pub backfill: Duration,
    /// How far behind now each evaluation stops, so late samples (scrape and pipeline
    /// delay) are in VictoriaMetrics before a point is scored; points are never re-scored.
    #[serde(default = "default_delay", with = "duration")]
    pub delay: Duration,
    pub queries: Vec<Query>,
    /// Where `anomaly_score`, `anomaly_expected`, `anomaly_lower`, `anomaly_upper` go.
    #[serde(default)]
    pub writeback: Option<Writeback>,
    #[serde(default)]
    pub alertmanager: Option<Alertmanager>,
    #[serde(default)]
    pub grafana: Option<Grafana>,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub admin: Admin,
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_backfill() -> Duration {
    Duration::from_secs(2 * 86_400)
}

fn default_delay() -> Duration {
    Duration::from_secs(30)
}

impl Config {
    /// Loads a config from YAML text with `${ENV}` substitution from `env`.
    pub fn from_yaml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        vigil_core::config::load(text, env)
    }
}

impl Validate for Config {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_http_url(
            &self.source.victoriametrics,
            &join(path, "source.victoriametrics"),
            errors,
        );
        if let Some(tls) = &self.source.tls {
            tls.validate(&join(path, "source.tls"), errors);
        }
        if self.interval < Duration::from_secs(1) {
            errors.add(join(path, "interval"), "must be at least 1s");
        }
        if self.queries.is_empty() {
            errors.add(join(path, "queries"), "at least one query is needed");
        }
        let mut names = HashSet::new();
        for (i, query) in self.queries.iter().enumerate() {
            let at = join(path, &format!("queries.{i}"));
            query.validate(&at, errors);
            if !names.insert(query.name.as_str()) {
                errors.add(
                    join(&at, "name"),
                    format!("`{}` is used by an earlier query", query.name),
                );
            }
        }
        if let Some(w) = &self.writeback {
            validate_http_url(&w.endpoint, &join(path, "writeback.endpoint"), errors);
            if let Some(tls) = &w.tls {
                tls.validate(&join(path, "writeback.tls"), errors);
            }
        }
        if let Some(a) = &self.alertmanager {
            a.validate(&join(path, "alertmanager"), errors);
        }
        if let Some(g) = &self.grafana {
            g.validate(&join(path, "grafana"), errors);
        }
        self.state.validate(&join(path, "state"), errors);
    }
}

/// Where series are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Base URL of VictoriaMetrics (or vmselect's `/select/<account>/prometheus`).
    pub victoriametrics: String,
    /// Extra headers on every query (e.g. `authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One PromQL/MetricsQL query whose every resulting series is scored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Names the alert (`alertname`) and the `query` label of written-back series.
    pub name: String,
    pub expr: String,
    #[serde(default)]
    pub detector: DetectorConfig,
    #[serde(default)]
    pub direction: Direction,
    /// Deviations from the expected value smaller than this (absolute, in the series' unit)
    /// never count as anomalous.
    #[serde(default)]
    pub min_deviation: f64,
    /// Scores above this are anomalous; 1.0 is the calibrated boundary.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// How long the score must stay above the threshold before the alert fires (default:
    /// two intervals).
    #[serde(default, rename = "for", with = "optional_duration")]
    pub for_: Option<Duration>,
    /// `severity` label of the alert.
    #[serde(default = "default_severity")]
    pub severity: String,
    /// Extra labels on the alert.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// At most this many series of the query alert at once; beyond it one summary alert
    /// (`vigil_overflow="true"`) says how many more are anomalous.
    #[serde(default = "default_max_alerts")]
    pub max_alerts: usize,
    /// At most this many series are scored; further series are counted and ignored.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_threshold() -> f64 {
    1.0
}

fn default_severity() -> String {
    "warning".into()
}

fn default_max_alerts() -> usize {
    20
}

fn default_max_series() -> usize {
    100_000
}

impl Query {
    /// How many consecutive anomalous points fire the alert.
    pub fn for_points(&self, interval: Duration) -> u32 {
        let window = self.for_.unwrap_or(interval * 2);
        let points = window.as_secs_f64() / interval.as_secs_f64();
        (points.ceil() as u32).max(1)
    }
}

impl Validate for Query {
    fn validate(&self, path: &str, errors: &mut Errors) {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':');
        if !valid_name {
            errors.add(
                join(path, "name"),
                "must be non-empty letters, digits, `_`, `-` or `:`",
            );
        }
        if self.expr.trim().is_empty() {
            errors.add(join(path, "expr"), "must not be empty");
        }
        if !(self.min_deviation.is_finite() && self.min_deviation >= 0.0) {
            errors.add(join(path, "min_deviation"), "must be a number >= 0");
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            errors.add(join(path, "threshold"), "must be a number > 0");
        }
        if self.max_alerts == 0 {
            errors.add(join(path, "max_alerts"), "must be at least 1");
        }
        if self.max_series == 0 {
            errors.add(join(path, "max_series"), "must be at least 1");
        }
        for name in self.labels.keys() {
            if matches!(name.as_str(), "alertname" | "severity" | "query") {
                errors.add(
                    join(path, &format!("labels.{name}")),
                    "is set by the service",
                );
            }
        }
        self.detector.validate(&join(path, "detector"), errors);
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Writeback {
    /// VictoriaMetrics' `/api/v1/import` (JSON lines).
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alertmanager {
    /// Base URL; alerts go to `<endpoint>/api/v2/alerts`.
    pub endpoint: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// A firing alert's `endsAt` is this many intervals ahead, renewed every interval, so
    /// Alertmanager resolves it by itself if the service dies.
    #[serde(default = "default_resend_intervals")]
    pub ends_after_intervals: u32,
}

fn default_resend_intervals() -> u32 {
    4
}

impl Validate for Alertmanager {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_http_url(&self.endpoint, &join(path, "endpoint"), errors);
        if let Some(tls) = &self.tls {
            tls.validate(&join(path, "tls"), errors);
        }
        if self.ends_after_intervals < 2 {
            errors.add(
                join(path, "ends_after_intervals"),
                "must be at least 2, or alerts flap between re-sends",
            );
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grafana {
    pub endpoint: String,
    /// Service-account token; use `${GRAFANA_TOKEN}`.
    #[serde(default)]
    pub token: Option<String>,
    /// Dashboard the annotations belong to (organisation-wide when absent).
    #[serde(default)]
    pub dashboard_uid: Option<String>,
    /// Datasource uid used in the alerts' explore links.
    #[serde(default)]
    pub datasource_uid: Option<String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

impl Validate for Grafana {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_http_url(&self.endpoint, &join(path, "endpoint"), errors);
        if let Some(tls) = &self.tls {
            tls.validate(&join(path, "tls"), errors);
        }
        if let Some(token) = &self.token
            && reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).is_err()
        {
            errors.add(
                join(path, "token"),
                "contains characters not allowed in a header",
            );
        }
    }
}

/// Where detector state is snapshotted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// A Redis URL (`redis://` or `rediss://`); when set, state lives there.
    #[serde(default)]
    pub redis: Option<String>,
    /// Key prefix in Redis.
    #[serde(default = "default_state_key")]
    pub key: String,
    /// Local file used when no Redis is configured.
    #[serde(default = "default_state_path")]
    pub path: PathBuf,
    /// How often state is snapshotted (and always at shutdown).
    #[serde(default = "default_snapshot_every", with = "duration")]
    pub snapshot_every: Duration,
}

fn default_state_key() -> String {
    "vigil:anomaly".into()
}

fn default_state_path() -> PathBuf {
    PathBuf::from("/var/lib/vigil-anomaly/state.bin")
}

fn default_snapshot_every() -> Duration {
    Duration::from_secs(300)
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            redis: None,
            key: default_state_key(),
            path: default_state_path(),
            snapshot_every: default_snapshot_every(),
        }
    }
}

impl Validate for StateConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if let Some(url) = &self.redis {
            match Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "redis" | "rediss") => {}
                _ => errors.add(
                    join(path, "redis"),
                    format!("`{url}` is not a redis:// or rediss:// URL"),
                ),
            }
        }
        if self.snapshot_every < Duration::from_secs(1) {
            errors.add(join(path, "snapshot_every"), "must be at least 1s");
        }
        if self.key.is_empty() {
            errors.add(join(path, "key"), "must not be empty");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `/metrics`, `/healthz`, `/readyz`.
    pub listen: SocketAddr,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: SocketAddr::from(([127, 0, 0, 1], 8889)),
        }
    }
}

fn validate_http_url(url: &str, path: &str, errors: &mut Errors) {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => errors.add(path, format!("`{url}` is not an http:// or https:// URL")),
        Err(e) => errors.add(path, format!("invalid URL `{url}`: {e}")),
    }
}

/// Serde for an optional humantime duration.
mod optional_duration {
    use super::*;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        duration::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
source: { victoriametrics: "http://127.0.0.1:8428" }
interval: 60s
queries:
  - name: HighErrorRate
    expr: 'sum(rate(http_requests_total{code=~"5.."}[5m])) by (service)'
    detector: { kind: ensemble, seasonality: [1d, 7d] }
    direction: above
    min_deviation: 0.5
writeback: { endpoint: "http://127.0.0.1:8428/api/v1/import" }
alertmanager: { endpoint: "http://127.0.0.1:9093" }
grafana: { endpoint: "http://127.0.0.1:3000", token: "${GRAFANA_TOKEN}", dashboard_uid: vigil-anomalies }
state: { redis: "redis://127.0.0.1:6379" }
admin: { listen: "127.0.0.1:8889" }
"#;

    fn env(name: &str) -> Option<String> {
        (name == "GRAFANA_TOKEN").then(|| "glsa_x".to_string())
    }

    #[test]
    fn the_issue_example_loads_with_defaults() {
        let config = Config::from_yaml(EXAMPLE, env).unwrap();
        assert_eq!(config.interval, Duration::from_secs(60));
        assert_eq!(config.backfill, Duration::from_secs(2 * 86_400));
        let q = &config.queries[0];
        assert_eq!(q.direction, Direction::Above);
        assert_eq!(q.min_deviation, 0.5);
        assert_eq!(q.threshold, 1.0);
        assert_eq!(q.for_points(config.interval), 2);
        assert_eq!(config.grafana.unwrap().token.as_deref(), Some("glsa_x"));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
source: { victoriametrics: "ftp://x" }
interval: 0s
queries:
  - { name: "a b", expr: "", min_deviation: -1, labels: { severity: x } }
  - { name: "a b", expr: up, threshold: 0 }
alertmanager: { endpoint: "nope" }
state: { redis: "http://x" }
"#;
        let errors = Config::from_yaml(text, env).unwrap_err().to_string();
        for expected in [
            "source.victoriametrics:",
            "interval: must be at least 1s",
            "queries.0.name:",
            "queries.0.expr: must not be empty",
            "queries.0.min_deviation:",
            "queries.0.labels.severity: is set by the service",
            "queries.1.name: `a b` is used by an earlier query",
            "queries.1.threshold:",
            "alertmanager.endpoint:",
            "state.redis:",
        ] {
            assert!(
                errors.contains(expected),
                "missing {expected:?} in:\n{errors}"
            );
        }
    }

    #[test]
    fn for_is_rounded_up_to_whole_intervals() {
        let text = "source: { victoriametrics: \"http://vm:8428\" }\ninterval: 30s\nqueries:\n  - { name: q, expr: up, for: 100s }\n";
        let config = Config::from_yaml(text, env).unwrap();
        assert_eq!(config.queries[0].for_points(config.interval), 4);
    }
}
