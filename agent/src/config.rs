//! The agent's configuration: one YAML file, `--config PATH`.
//!
//! ```yaml
//! collector:
//!   endpoint: "http://127.0.0.1:4317"     # OTLP/gRPC; https:// for TLS
//!   bearer_token: "${TOKEN}"              # optional: `authorization: Bearer ...`
//!   tls: { ca_file: /etc/vigil/ca.pem }   # optional, https only
//!   timeout: 10s
//!   retry: { initial: 500ms, max: 30s }
//!   batch: { max_lines: 1000, max_bytes: 1MiB, max_wait: 1s }
//! state_dir: /var/lib/vigil-agent
//! logs:
//!   - include: ["/var/log/pods/*/*/*.log"]
//!     exclude: []
//!     format: cri                          # cri | docker | raw
//!     start_at: end                        # end | beginning (first start only)
//!     multiline: { start_pattern: '^\S', timeout: 1s }
//!     max_line_bytes: 256KiB
//!     attributes: { cluster: prod }
//! admin: { listen: "127.0.0.1:8686" }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use vigil_core::config::{ByteSize, ConfigErrors, Errors, Validate, duration, join};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub collector: CollectorConfig,
    /// Where checkpoints (read offsets of delivered lines) are kept.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Log files to tail; a file matched by several sources belongs to the first.
    #[serde(default)]
    pub logs: Vec<LogSource>,
    /// Prometheus endpoints to scrape; none by default.
    #[serde(default)]
    pub scrape: crate::scrape::ScrapeConfig,
    /// CPU, memory, load, filesystems, disks and network of the node; on by default.
    #[serde(default)]
    pub host_metrics: crate::host::HostMetricsConfig,
    /// Pod metadata from the Kubernetes API; off by default.
    #[serde(default)]
    pub kubernetes: crate::kubernetes::KubernetesConfig,
    #[serde(default)]
    pub admin: Admin,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/vigil-agent")
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
        self.collector.validate(&join(path, "collector"), errors);
        if self.state_dir.as_os_str().is_empty() {
            errors.add(join(path, "state_dir"), "must not be empty");
        }
        for (i, source) in self.logs.iter().enumerate() {
            source.validate(&join(path, &format!("logs.{i}")), errors);
        }
        self.scrape.validate(&join(path, "scrape"), errors);
        self.host_metrics
            .validate(&join(path, "host_metrics"), errors);
        self.kubernetes.validate(&join(path, "kubernetes"), errors);
        if self.scrape.kubernetes_pods.enabled && !self.kubernetes.enabled {
            errors.add(
                join(path, "scrape.kubernetes_pods.enabled"),
                "needs `kubernetes.enabled: true` (pods are found through its watch)",
            );
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://vigil-collector:4317`.
    pub endpoint: String,
    /// Sent as `authorization: Bearer <token>`; use `${TOKEN}` rather than writing it here.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// TLS settings for an `https://` endpoint.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Upper bound of one export request, connection included.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Request compression. zstd (the default) saves as many bytes as gzip for a fraction
    /// of its CPU; `gzip` for a receiver that has no zstd; `none` for a collector on the same
    /// node or a fast network.
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Most bytes of encoded metrics waiting for the collector (scrapes and host metrics
    /// while it is away or slow); past it the oldest are dropped and counted.
    #[serde(default = "default_metrics_queue")]
    pub metrics_queue: ByteSize,
}

fn default_metrics_queue() -> ByteSize {
    ByteSize::mib(64)
}

/// How requests to the collector are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Validate for CollectorConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        let endpoint = join(path, "endpoint");
        match Url::parse(&self.endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if u.scheme() == "http" && self.tls.is_some() {
                    errors.add(join(path, "tls"), "needs an https:// endpoint");
                }
            }
            Ok(u) => errors.add(
                &endpoint,
                format!(
                    "scheme must be http or https with a host, not `{}`",
                    u.scheme()
                ),
            ),
            Err(e) => errors.add(&endpoint, format!("invalid URL `{}`: {e}", self.endpoint)),
        }
        if let Some(token) = &self.bearer_token
            && tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).is_err()
        {
            errors.add(
                join(path, "bearer_token"),
                "contains characters not allowed in a header",
            );
        }
        if let Some(tls) = &self.tls {
            tls.validate(&join(path, "tls"), errors);
        }
        if self.timeout.is_zero() {
            errors.add(join(path, "timeout"), "must be greater than zero");
        }
        if let Err(e) = vigil_core::retry::Backoff::new(self.retry.initial, self.retry.max) {
            errors.add(join(path, "retry"), e.to_string());
        }
        self.batch.validate(&join(path, "batch"), errors);
        if self.metrics_queue < self.batch.max_bytes {
            errors.add(
                join(path, "metrics_queue"),
                format!(
                    "must hold at least one batch (batch.max_bytes, {})",
                    self.batch.max_bytes
                ),
            );
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA that signed the collector's certificate; without it the system's
    /// roots are trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the certificate against, when it is not the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// PEM certificate (chain) the agent presents, for a collector that requires client
    /// certificates (`client_ca_file` on its receiver). Needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Not supported: the agent always verifies the collector's certificate.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Validate for TlsConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.insecure_skip_verify {
            errors.add(
                join(path, "insecure_skip_verify"),
                "is not supported: give the collector's CA with `ca_file` instead",
            );
        }
        for (name, file) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(file) = file
                && !file.is_file()
            {
                errors.add(
                    join(path, name),
                    format!("{} is not a readable file", file.display()),
                );
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            errors.add(
                path.to_string(),
                "cert_file and key_file go together (a client certificate and its key)",
            );
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff delay; doubles per attempt, with jitter.
    #[serde(default = "default_retry_initial", with = "duration")]
    pub initial: Duration,
    /// Backoff cap (also the longest `RetryInfo` delay honoured).
    #[serde(default = "default_retry_max", with = "duration")]
    pub max: Duration,
}

fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_retry_initial(),
            max: default_retry_max(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most log lines (or resource-metrics entries) in one export request.
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    /// Most payload bytes in one export request (one larger line goes alone).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// How long a batch that is not full waits for more.
    #[serde(default = "default_max_wait", with = "duration")]
    pub max_wait: Duration,
}

fn default_max_lines() -> usize {
    1000
}

fn default_max_bytes() -> ByteSize {
    ByteSize::mib(1)
}

fn default_max_wait() -> Duration {
    Duration::from_secs(1)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_lines: default_max_lines(),
            max_bytes: default_max_bytes(),
            max_wait: default_max_wait(),
        }
    }
}

impl Validate for BatchConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.max_lines == 0 {
            errors.add(join(path, "max_lines"), "must be greater than zero");
        }
        // The collector refuses gRPC messages over 4MiB by default.
        if self.max_bytes.0 == 0 || self.max_bytes > ByteSize::mib(3) {
            errors.add(join(path, "max_bytes"), "must be between 1B and 3MiB");
        }
    }
}

/// How lines are framed in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Kubernetes CRI: `<RFC3339Nano time> <stdout|stderr> <P|F> <log>`.
    Cri,
    /// Docker json-file: `{"log":"...\n","stream":"stdout","time":"..."}`.
    Docker,
    /// One line is one record.
    Raw,
}

/// Where files present at the agent's first start are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    Beginning,
    End,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSource {
    /// Glob patterns of files to tail (`*`, `?`, `[...]`, `**`).
    pub include: Vec<String>,
    /// Glob patterns of files to leave alone. Compressed files (`.gz`, `.bz2`, `.xz`,
    /// `.zst`, `.zip`, `.lz4`) are always left alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default = "default_format")]
    pub format: LogFormat,
    /// Files present when the agent starts for the first time (no checkpoints yet) are read
    /// from here; files found later are always read from the beginning.
    #[serde(default = "default_start_at")]
    pub start_at: StartAt,
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// Longer lines are cut into pieces of this size, each flagged `vigil.line.split`.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: ByteSize,
    /// How often the globs are re-evaluated to find new and rotated files.
    #[serde(default = "default_scan_interval", with = "duration")]
    pub scan_interval: Duration,
    /// Static resource attributes added to every record of these files.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

fn default_format() -> LogFormat {
    LogFormat::Raw
}

fn default_start_at() -> StartAt {
    StartAt::End
}

fn default_max_line_bytes() -> ByteSize {
    ByteSize(256 << 10)
}

fn default_scan_interval() -> Duration {
    Duration::from_secs(5)
}

impl Validate for LogSource {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.include.is_empty() {
            errors.add(join(path, "include"), "must list at least one pattern");
        }
        for (key, patterns) in [("include", &self.include), ("exclude", &self.exclude)] {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(e) = glob::Pattern::new(pattern) {
                    errors.add(
                        join(path, &format!("{key}.{i}")),
                        format!("invalid glob `{pattern}`: {e}"),
                    );
                }
            }
        }
        if let Some(multiline) = &self.multiline {
            let path = join(path, "multiline");
            if let Err(e) = regex::bytes::Regex::new(&multiline.start_pattern) {
                errors.add(join(&path, "start_pattern"), format!("invalid regex: {e}"));
            }
            if multiline.timeout.is_zero() {
                errors.add(join(&path, "timeout"), "must be greater than zero");
            }
        }
        if self.max_line_bytes.0 < 64 || self.max_line_bytes > ByteSize::mib(2) {
            errors.add(join(path, "max_line_bytes"), "must be between 64B and 2MiB");
        }
        if self.scan_interval < Duration::from_millis(10) {
            errors.add(join(path, "scan_interval"), "must be at least 10ms");
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A line matching this regex starts a new record; other lines are appended to the
    /// record before them (stack traces).
    pub start_pattern: String,
    /// A record is sent when no line was appended to it for this long.
    #[serde(default = "default_multiline_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_multiline_timeout() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Serves /metrics, /healthz, /readyz.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8686))
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: default_admin_listen(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, Vec<String>> {
        Config::from_yaml(yaml, |name| (name == "TOKEN").then(|| "s3cret".to_string()))
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = load("collector: { endpoint: \"http://127.0.0.1:4317\" }\n").unwrap();
        assert_eq!(config.collector.timeout, Duration::from_secs(10));
        assert_eq!(config.collector.batch.max_lines, 1000);
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/vigil-agent"));
        assert!(config.logs.is_empty());
        assert_eq!(config.admin.listen.port(), 8686);
    }

    #[test]
    fn full_config_parses_with_env_substitution() {
        let yaml = r#"
collector:
  endpoint: "http://collector:4317"
  bearer_token: "${TOKEN}"
  timeout: 5s
  batch: { max_lines: 10, max_bytes: 64KiB, max_wait: 200ms }
state_dir: /tmp/state
logs:
  - include: ["/var/log/pods/*/*/*.log"]
    exclude: ["/var/log/pods/kube-system_*/*/*.log"]
    format: cri
    start_at: beginning
    multiline: { start_pattern: '^\S', timeout: 2s }
    max_line_bytes: 16KiB
    attributes: { cluster: prod }
admin: { listen: "0.0.0.0:8686" }
"#;
        let config = load(yaml).unwrap();
        assert_eq!(config.collector.bearer_token.as_deref(), Some("s3cret"));
        let source = &config.logs[0];
        assert_eq!(source.format, LogFormat::Cri);
        assert_eq!(source.start_at, StartAt::Beginning);
        assert_eq!(source.max_line_bytes, ByteSize(16 << 10));
        assert_eq!(
            source.multiline.as_ref().unwrap().timeout,
            Duration::from_secs(2)
        );
        assert_eq!(source.attributes["cluster"], "prod");
    }

    #[test]
    fn kubernetes_needs_a_node_and_discovery_needs_kubernetes() {
        let base = "collector: { endpoint: \"http://127.0.0.1:4317\" }\n";
        let errors = load(&format!("{base}kubernetes: {{ enabled: true }}\n")).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "kubernetes.node_name: is required when enabled (only this node's pods are watched)"
            ]
        );
        let config = load(&format!(
            "{base}kubernetes: {{ enabled: true, node_name: n1, pod_labels: false }}\nscrape: {{ kubernetes_pods: {{ enabled: true }} }}\n"
        ))
        .unwrap();
        assert_eq!(
            config.kubernetes.deleted_pod_grace,
            Duration::from_secs(300)
        );
        assert!(!config.kubernetes.pod_labels);
        assert!(!load(base).unwrap().kubernetes.enabled, "off by default");
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let yaml = r#"
collector:
  endpoint: "ftp://x"
  batch: { max_lines: 0, max_bytes: 2MiB }
  metrics_queue: 1MiB
  tls: { insecure_skip_verify: true, cert_file: /nonexistent/client.pem }
logs:
  - include: []
    format: syslog
  - include: ["/a/[", "/b/*"]
    multiline: { start_pattern: '(' }
    max_line_bytes: 1
scrape: { interval: 0s, kubernetes_pods: { enabled: true } }
kubernetes: { enabled: false }
shipping: {}
"#;
        let errors = load(yaml).unwrap_err();
        let has = |prefix: &str| errors.iter().any(|e| e.starts_with(prefix));
        for prefix in [
            "shipping: unknown field",
            "scrape.interval: must be greater than zero",
            "scrape.kubernetes_pods.enabled: needs `kubernetes.enabled: true`",
            "logs.0.format: unknown variant `syslog`",
            "collector.endpoint: scheme must be http or https",
            "collector.batch.max_lines: must be greater than zero",
            "collector.metrics_queue: must hold at least one batch",
            "collector.tls.insecure_skip_verify: is not supported",
            "collector.tls.cert_file: /nonexistent/client.pem is not a readable file",
            "collector.tls: cert_file and key_file go together",
            "logs.1.include.0: invalid glob",
            "logs.1.multiline.start_pattern: invalid regex",
            "logs.1.max_line_bytes: must be between",
        ] {
            assert!(has(prefix), "missing `{prefix}` in {errors:#?}");
        }
    }
}
