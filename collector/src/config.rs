//! The collector's configuration: one YAML file, `--config PATH`.
//!
//! ```yaml
//! receivers:
//!   otlp: { grpc: { listen: "0.0.0.0:4317" }, http: { listen: "0.0.0.0:4318" } }
//! buffer:
//!   kind: disk                      # disk | memory
//!   disk: { path: ./data/buffer, max_bytes: 1GiB }
//! exporters:
//!   victoriametrics: { endpoint: "http://127.0.0.1:8428/api/v1/write" }
//!   loki: { endpoint: "http://127.0.0.1:3100/loki/api/v1/push" }
//!   tempo: { endpoint: "http://127.0.0.1:4317", protocol: grpc }
//! admin: { listen: "127.0.0.1:8888" }
//! ```
//!
//! A signal whose exporter is absent is refused at the receiver, never buffered forever.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;
use vigil_core::Signal;
use vigil_core::config::{ByteSize, ConfigErrors, Errors, Validate, duration, join};
pub use vigil_core::tls::ClientTls;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub receivers: Receivers,
    #[serde(default)]
    pub buffer: BufferConfig,
    #[serde(default)]
    pub exporters: Exporters,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
}

/// What SIGTERM does.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After the receivers stopped (their requests in flight answered), how long exporters
    /// may finish requests in flight and keep sending what is buffered. Keep it below the
    /// pod's `terminationGracePeriodSeconds`.
    #[serde(default = "default_drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
}

fn default_drain_timeout() -> Duration {
    crate::exporter::pump::DEFAULT_DRAIN
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: default_drain_timeout(),
        }
    }
}

impl Config {
    /// Loads a config from YAML text with `${ENV}` substitution from `env`.
    pub fn from_yaml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        vigil_core::config::load(text, env)
    }

    /// Whether some exporter takes this signal.
    pub fn exports(&self, signal: Signal) -> bool {
        match signal {
            Signal::Metrics => self.exporters.victoriametrics.is_some(),
            Signal::Logs => self.exporters.loki.is_some(),
            Signal::Traces => self.exporters.tempo.is_some(),
        }
    }
}

impl Validate for Config {
    fn validate(&self, path: &str, errors: &mut Errors) {
        self.receivers.validate(&join(path, "receivers"), errors);
        if let Some(tls) = &self.admin.tls {
            tls.validate(&join(path, "admin.tls"), errors);
        }
        self.buffer.validate(&join(path, "buffer"), errors);
        self.exporters.validate(&join(path, "exporters"), errors);
        if Signal::ALL.iter().all(|s| !self.exports(*s)) {
            errors.add(
                join(path, "exporters"),
                "no exporter is configured: set at least one of victoriametrics, loki, tempo",
            );
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receivers {
    #[serde(default)]
    pub otlp: OtlpReceiver,
}

impl Validate for Receivers {
    fn validate(&self, path: &str, errors: &mut Errors) {
        self.otlp.validate(&join(path, "otlp"), errors);
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpReceiver {
    /// OTLP/gRPC; `null` turns it off.
    #[serde(default = "default_grpc")]
    pub grpc: Option<Listen>,
    /// OTLP/HTTP (`/v1/metrics`, `/v1/logs`, `/v1/traces`); `null` turns it off.
    #[serde(default = "default_http")]
    pub http: Option<Listen>,
    /// Largest request body accepted as sent (compressed); larger gets 413.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: ByteSize,
    /// Largest request once decompressed; a gzip bomb gets 413 instead of memory.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: ByteSize,
    /// Request header (HTTP) or metadata key (gRPC) naming the tenant.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Tenant for requests that name none; without it they carry no tenant.
    #[serde(default)]
    pub default_tenant: Option<String>,
    /// Bearer tokens, each writing into exactly one tenant. When set, every request must
    /// carry one of them (`authorization: Bearer <token>`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Records (data points, log records, spans) per second each tenant may send.
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One client credential: a token (inline, normally `${ENV}`, or read from a file) and the
/// tenant it writes into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    pub tenant: String,
}

impl std::fmt::Display for TokenConfig {
    // Never shows the token itself.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "token of tenant {}", self.tenant)
    }
}

impl TokenConfig {
    /// The token's value; a file's content is trimmed of surrounding whitespace.
    pub fn value(&self) -> Result<String, String> {
        match (&self.token, &self.token_file) {
            (Some(t), None) => Ok(t.clone()),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
            _ => Err("set exactly one of token and token_file".into()),
        }
    }
}

/// Shortest token accepted: a guessable token is no lock.
const MIN_TOKEN_LEN: usize = 16;

impl Validate for AuthConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.tokens.is_empty() {
            errors.add(join(path, "tokens"), "at least one token is needed");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let at = join(path, &format!("tokens.{i}"));
            if let Err(e) = crate::receiver::check_tenant(&token.tenant) {
                errors.add(join(&at, "tenant"), e);
            }
            match token.value() {
                Ok(value) if value.len() < MIN_TOKEN_LEN => errors.add(
                    &at,
                    format!("the token must be at least {MIN_TOKEN_LEN} characters"),
                ),
                Ok(value) if http::HeaderValue::from_str(&value).is_err() => {
                    errors.add(&at, "the token contains characters not allowed in a header")
                }
                Ok(value) => {
                    if !seen.insert(value) {
                        errors.add(&at, "the same token is given twice");
                    }
                }
                Err(e) => errors.add(&at, e),
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained records per second, per tenant (requests without a tenant share one).
    pub records_per_second: f64,
    /// Records a tenant may send at once after being idle; default one second's worth.
    #[serde(default)]
    pub burst: Option<f64>,
}

impl Validate for RateLimitConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if !(self.records_per_second.is_finite() && self.records_per_second > 0.0) {
            errors.add(join(path, "records_per_second"), "must be a number > 0");
        }
        if let Some(burst) = self.burst
            && !(burst.is_finite() && burst >= 1.0)
        {
            errors.add(join(path, "burst"), "must be a number >= 1");
        }
    }
}

/// TLS of a listening port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain, the server's own certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate they signed.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl Validate for ServerTls {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if let Err(e) = crate::tls::server_config(self) {
            errors.add(path, e);
        }
    }
}

fn default_grpc() -> Option<Listen> {
    Some(Listen {
        listen: SocketAddr::from(([0, 0, 0, 0], 4317)),
        tls: None,
    })
}

fn default_http() -> Option<Listen> {
    Some(Listen {
        listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
        tls: None,
    })
}

fn default_max_request_bytes() -> ByteSize {
    ByteSize::mib(64)
}

fn default_max_decompressed_bytes() -> ByteSize {
    ByteSize::mib(128)
}

fn default_tenant_header() -> String {
    "X-Scope-OrgID".to_string()
}

impl Default for OtlpReceiver {
    fn default() -> Self {
        OtlpReceiver {
            grpc: default_grpc(),
            http: default_http(),
            max_request_bytes: default_max_request_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            tenant_header: default_tenant_header(),
            default_tenant: None,
            auth: None,
            rate_limit: None,
        }
    }
}

impl Validate for OtlpReceiver {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.grpc.is_none() && self.http.is_none() {
            errors.add(
                path,
                "both grpc and http are off: nothing would receive data",
            );
        }
        if self.max_request_bytes.0 == 0 {
            errors.add(join(path, "max_request_bytes"), "must be greater than zero");
        }
        if self.max_decompressed_bytes < self.max_request_bytes {
            errors.add(
                join(path, "max_decompressed_bytes"),
                format!(
                    "must be at least max_request_bytes ({})",
                    self.max_request_bytes
                ),
            );
        }
        if http::HeaderName::from_bytes(self.tenant_header.as_bytes()).is_err() {
            errors.add(join(path, "tenant_header"), "not a valid header name");
        }
        if let Some(tenant) = &self.default_tenant
            && let Err(e) = crate::receiver::check_tenant(tenant)
        {
            errors.add(join(path, "default_tenant"), e);
        }
        if let Some(auth) = &self.auth {
            auth.validate(&join(path, "auth"), errors);
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate(&join(path, "rate_limit"), errors);
        }
        for (name, listen) in [("grpc", &self.grpc), ("http", &self.http)] {
            if let Some(tls) = listen.as_ref().and_then(|l| l.tls.as_ref()) {
                tls.validate(&join(path, &format!("{name}.tls")), errors);
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// Address and port to bind, e.g. `0.0.0.0:4317`; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Serve TLS (and optionally require client certificates).
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// Embedded, durable, survives kill -9: the default.
    Disk,
    /// Bounded, in memory, lost on exit: tests and throwaway runs.
    Memory,
    /// Redis Streams, shared by every collector in one consumer group.
    Redis,
    /// NATS JetStream, shared by every collector through durable pull consumers.
    Nats,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    #[serde(default = "default_buffer_kind")]
    pub kind: BufferKind,
    #[serde(default)]
    pub disk: DiskConfig,
    #[serde(default)]
    pub memory: MemoryConfig,
    /// Required with `kind: redis`.
    #[serde(default)]
    pub redis: Option<RedisConfig>,
    /// Required with `kind: nats`.
    #[serde(default)]
    pub nats: Option<NatsConfig>,
}

fn default_buffer_kind() -> BufferKind {
    BufferKind::Disk
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: default_buffer_kind(),
            disk: DiskConfig::default(),
            memory: MemoryConfig::default(),
            redis: None,
            nats: None,
        }
    }
}

impl Validate for BufferConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        match self.kind {
            BufferKind::Disk => {
                let path = join(path, "disk");
                if self.disk.max_bytes.0 < (1 << 20) {
                    errors.add(join(&path, "max_bytes"), "must be at least 1MiB");
                }
                if self.disk.path.as_os_str().is_empty() {
                    errors.add(join(&path, "path"), "must not be empty");
                }
                if self.disk.fsync == Fsync::Interval && self.disk.fsync_interval.is_zero() {
                    errors.add(join(&path, "fsync_interval"), "must be greater than zero");
                }
            }
            BufferKind::Memory => {
                if self.memory.max_bytes.0 == 0 {
                    errors.add(join(path, "memory.max_bytes"), "must be greater than zero");
                }
            }
            BufferKind::Redis => match &self.redis {
                None => errors.add(join(path, "redis"), "required with kind: redis"),
                Some(redis) => redis.validate(&join(path, "redis"), errors),
            },
            BufferKind::Nats => match &self.nats {
                None => errors.add(join(path, "nats"), "required with kind: nats"),
                Some(nats) => nats.validate(&join(path, "nats"), errors),
            },
        }
    }
}

/// Redis Streams buffer: `<stream_prefix>:metrics|logs|traces`, one consumer group that
/// every collector joins. One Redis (`url` alone), a master found through Redis Sentinel
/// (`sentinel`), or a Redis Cluster (`cluster`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://` for TLS (`#insecure` at the
    /// end skips certificate checks). With `sentinel`, how to talk to the master: only the
    /// scheme, user, password and db count, so write the master's name as the host
    /// (`rediss://vigil:${REDIS_PASSWORD}@mymaster/0`). With `cluster`, the first seed node.
    pub url: String,
    /// Find the master through Redis Sentinel, and find it again after a failover.
    #[serde(default)]
    pub sentinel: Option<RedisSentinelConfig>,
    /// Use a Redis Cluster. The buffer's keys share one hash tag (`{vigil}:logs`), so
    /// they live on one shard: the cluster gives failover, not sharding.
    #[serde(default)]
    pub cluster: Option<RedisClusterConfig>,
    /// In a cluster it becomes a hash tag (`{vigil}`) unless it holds one already.
    #[serde(default = "crate::buffer::redis::default_stream_prefix")]
    pub stream_prefix: String,
    /// Most entries per stream; beyond it receivers answer 429.
    #[serde(default = "crate::buffer::redis::default_max_len")]
    pub max_len: u64,
    /// Unacked entries idle this long are taken over from a dead collector.
    #[serde(
        default = "crate::buffer::redis::default_claim_idle",
        with = "duration"
    )]
    pub claim_idle: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream.
    #[serde(default = "crate::buffer::redis::default_max_deliveries")]
    pub max_deliveries: u64,
    /// This collector's consumer name; default hostname-pid. Keep it stable (e.g. the pod
    /// name of a StatefulSet) to resume this collector's unacked work after a restart.
    #[serde(default)]
    pub consumer: Option<String>,
    #[serde(default = "crate::buffer::redis::default_group")]
    pub group: String,
}

/// The sentinels that watch the master holding the buffer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSentinelConfig {
    /// The master's name, as in the sentinels' `sentinel monitor <name> ...`.
    pub master: String,
    /// `redis://[user:password@]host:port` of each sentinel (usually port 26379);
    /// `rediss://` for TLS to the sentinels. Their credentials are the sentinels' own.
    pub nodes: Vec<String>,
}

/// A Redis Cluster.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisClusterConfig {
    /// Further seed nodes besides `url`, in the same form (same scheme and credentials);
    /// the rest of the cluster is learnt from them.
    #[serde(default)]
    pub nodes: Vec<String>,
}

impl RedisConfig {
    pub fn options(&self) -> crate::buffer::redis::RedisOptions {
        use crate::buffer::redis::Topology;
        let mut options = crate::buffer::redis::RedisOptions::new(self.url.clone());
        options.topology = match (&self.sentinel, &self.cluster) {
            (Some(sentinel), _) => Topology::Sentinel {
                master: sentinel.master.clone(),
                sentinels: sentinel.nodes.clone(),
            },
            (None, Some(cluster)) => Topology::Cluster {
                seeds: cluster.nodes.clone(),
            },
            (None, None) => Topology::Single,
        };
        options.stream_prefix = self.stream_prefix.clone();
        options.max_len = self.max_len;
        options.claim_idle = self.claim_idle;
        options.max_deliveries = self.max_deliveries;
        options.group = self.group.clone();
        if let Some(consumer) = &self.consumer {
            options.consumer = consumer.clone();
        }
        options
    }
}

/// Adds an error unless `url` is a `redis://` or `rediss://` URL.
fn validate_redis_url(url: &str, path: &str, errors: &mut Errors) {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "redis" | "rediss") => {}
        Ok(u) => errors.add(
            path,
            format!("scheme must be redis or rediss, not `{}`", u.scheme()),
        ),
        Err(e) => errors.add(path, format!("invalid URL: {e}")),
    }
}

impl Validate for RedisConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        validate_redis_url(&self.url, &join(path, "url"), errors);
        if self.sentinel.is_some() && self.cluster.is_some() {
            errors.add(
                join(path, "cluster"),
                "set either sentinel or cluster, not both",
            );
        }
        if let Some(sentinel) = &self.sentinel {
            let path = join(path, "sentinel");
            if sentinel.master.is_empty() {
                errors.add(join(&path, "master"), "must not be empty");
            }
            if sentinel.nodes.is_empty() {
                errors.add(join(&path, "nodes"), "name at least one sentinel");
            }
            for (i, node) in sentinel.nodes.iter().enumerate() {
                validate_redis_url(node, &format!("{}[{i}]", join(&path, "nodes")), errors);
            }
        }
        if let Some(cluster) = &self.cluster {
            if Url::parse(&self.url).is_ok_and(|u| !matches!(u.path(), "" | "/" | "/0")) {
                errors.add(
                    join(path, "url"),
                    "a Redis Cluster has only db 0: drop the /db",
                );
            }
            let path = join(path, "cluster");
            for (i, node) in cluster.nodes.iter().enumerate() {
                validate_redis_url(node, &format!("{}[{i}]", join(&path, "nodes")), errors);
            }
        }
        if self.max_len == 0 {
            errors.add(join(path, "max_len"), "must be greater than zero");
        }
        if self.claim_idle.is_zero() {
            errors.add(join(path, "claim_idle"), "must be greater than zero");
        }
        if self.max_deliveries == 0 {
            errors.add(join(path, "max_deliveries"), "must be greater than zero");
        }
        for (key, value) in [
            ("stream_prefix", &self.stream_prefix),
            ("group", &self.group),
        ] {
            if value.is_empty() {
                errors.add(join(path, key), "must not be empty");
            }
        }
    }
}

/// NATS JetStream buffer: one work-queue stream with subjects
/// `<subject_prefix>.metrics|logs|traces`, a durable pull consumer per signal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222` (`tls://` for TLS).
    pub url: String,
    #[serde(default = "default_nats_stream")]
    pub stream: String,
    #[serde(default = "default_nats_subject_prefix")]
    pub subject_prefix: String,
    /// The stream's byte limit; beyond it receivers answer 429.
    #[serde(default = "default_nats_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_nats_replicas")]
    pub replicas: usize,
    /// Unacked messages are redelivered (to any collector) after this long.
    #[serde(default = "default_nats_ack_wait", with = "duration")]
    pub ack_wait: Duration,
    /// Deliveries after which a message goes to the dead-letter stream.
    #[serde(default = "default_nats_max_deliver")]
    pub max_deliver: u32,
    /// A `.creds` file (JWT + NKey).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// A token; use `${NATS_TOKEN}` rather than writing it here.
    #[serde(default)]
    pub token: Option<String>,
}

fn default_nats_stream() -> String {
    "VIGIL".to_string()
}

fn default_nats_subject_prefix() -> String {
    "vigil".to_string()
}

fn default_nats_max_bytes() -> ByteSize {
    ByteSize::gib(1)
}

fn default_nats_replicas() -> usize {
    1
}

fn default_nats_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_nats_max_deliver() -> u32 {
    10
}

impl NatsConfig {
    pub fn options(&self) -> crate::buffer::nats::NatsOptions {
        let mut options = crate::buffer::nats::NatsOptions::new(self.url.clone());
        options.stream = self.stream.clone();
        options.subject_prefix = self.subject_prefix.clone();
        options.max_bytes = self.max_bytes.0;
        options.replicas = self.replicas;
        options.ack_wait = self.ack_wait;
        options.max_deliver = self.max_deliver;
        options.credentials_file = self.credentials_file.clone();
        options.token = self.token.clone();
        options
    }
}

impl Validate for NatsConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        match Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "nats" | "tls") => {}
            Ok(u) => errors.add(
                join(path, "url"),
                format!("scheme must be nats or tls, not `{}`", u.scheme()),
            ),
            Err(e) => errors.add(join(path, "url"), format!("invalid URL: {e}")),
        }
        if self.max_bytes.0 < (1 << 16) {
            errors.add(join(path, "max_bytes"), "must be at least 64KiB");
        }
        if !(1..=5).contains(&self.replicas) {
            errors.add(join(path, "replicas"), "must be 1 to 5 (JetStream's limit)");
        }
        if self.ack_wait.is_zero() {
            errors.add(join(path, "ack_wait"), "must be greater than zero");
        }
        if self.max_deliver == 0 {
            errors.add(join(path, "max_deliver"), "must be greater than zero");
        }
        for (key, value) in [
            ("stream", &self.stream),
            ("subject_prefix", &self.subject_prefix),
        ] {
            let valid = !value.is_empty()
                && !value.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>'));
            if !valid {
                errors.add(
                    join(path, key),
                    "must be a non-empty name without spaces, `.`, `*` or `>`",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Every acknowledged request is on disk (concurrent requests share one fsync).
    Always,
    /// fsync every `fsync_interval`: survives a crash of the collector, not of the machine.
    Interval,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    #[serde(default = "default_disk_path")]
    pub path: PathBuf,
    #[serde(default = "default_disk_max_bytes")]
    pub max_bytes: ByteSize,
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    #[serde(default = "default_fsync_interval", with = "duration")]
    pub fsync_interval: Duration,
}

fn default_disk_path() -> PathBuf {
    PathBuf::from("./data/buffer")
}

fn default_disk_max_bytes() -> ByteSize {
    ByteSize::gib(1)
}

fn default_fsync() -> Fsync {
    Fsync::Always
}

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

impl DiskConfig {
    pub fn options(&self) -> vigil_core::buffer::disk::DiskOptions {
        let mut options =
            vigil_core::buffer::disk::DiskOptions::new(self.path.clone(), self.max_bytes.0);
        options.fsync = match self.fsync {
            Fsync::Always => vigil_core::buffer::disk::FsyncPolicy::Always,
            Fsync::Interval => vigil_core::buffer::disk::FsyncPolicy::Interval(self.fsync_interval),
        };
        options
    }
}

impl Default for DiskConfig {
    fn default() -> Self {
        DiskConfig {
            path: default_disk_path(),
            max_bytes: default_disk_max_bytes(),
            fsync: default_fsync(),
            fsync_interval: default_fsync_interval(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    #[serde(default = "default_memory_max_bytes")]
    pub max_bytes: ByteSize,
}

fn default_memory_max_bytes() -> ByteSize {
    ByteSize::mib(256)
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            max_bytes: default_memory_max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exporters {
    pub victoriametrics: Option<VictoriaMetricsConfig>,
    pub loki: Option<LokiConfig>,
    pub tempo: Option<TempoConfig>,
}

impl Validate for Exporters {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if let Some(vm) = &self.victoriametrics {
            let path = join(path, "victoriametrics");
            check_http_url(&vm.endpoint, &join(&path, "endpoint"), errors);
            vm.delivery().validate(&path, errors);
        }
        if let Some(loki) = &self.loki {
            let path = join(path, "loki");
            check_http_url(&loki.endpoint, &join(&path, "endpoint"), errors);
            loki.delivery().validate(&path, errors);
            for (i, rule) in loki.labels.iter().enumerate() {
                let valid = !rule.label.is_empty()
                    && !rule.label.starts_with(|c: char| c.is_ascii_digit())
                    && rule
                        .label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    errors.add(
                        join(&path, &format!("labels.{i}.label")),
                        format!("`{}` is not a valid Loki label name", rule.label),
                    );
                }
            }
        }
        if let Some(tempo) = &self.tempo {
            let path = join(path, "tempo");
            check_http_url(&tempo.endpoint, &join(&path, "endpoint"), errors);
            tempo.delivery().validate(&path, errors);
        }
    }
}

fn check_http_url(url: &str, path: &str, errors: &mut Errors) {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => errors.add(
            path,
            format!(
                "invalid URL `{url}`: scheme must be http or https with a host, not `{}`",
                u.scheme()
            ),
        ),
        Err(e) => errors.add(path, format!("invalid URL `{url}`: {e}")),
    }
}

/// How an exporter batches, retries and times out: the same knobs for every exporter.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Upper bound of one backend request's wait.
    pub timeout: Duration,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    pub headers: BTreeMap<String, String>,
    pub tls: Option<ClientTls>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Validate for Delivery {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.timeout.is_zero() {
            errors.add(join(path, "timeout"), "must be greater than zero");
        }
        if self.batch.max_records == 0 {
            errors.add(join(path, "batch.max_records"), "must be greater than zero");
        }
        if self.batch.max_bytes.0 == 0 {
            errors.add(join(path, "batch.max_bytes"), "must be greater than zero");
        }
        if let Err(e) = vigil_core::retry::Backoff::new(self.retry.initial, self.retry.max) {
            errors.add(join(path, "retry"), e.to_string());
        }
        if let Some(tls) = &self.tls {
            tls.validate(&join(path, "tls"), errors);
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.add(
                    join(path, &format!("headers.{name}")),
                    "not a valid header name",
                );
            }
            if http::HeaderValue::from_str(value).is_err() {
                errors.add(
                    join(path, &format!("headers.{name}")),
                    "not a valid header value",
                );
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Most buffered requests merged into one backend request.
    #[serde(default = "default_batch_records")]
    pub max_records: usize,
    /// Most payload bytes merged into one backend request (one larger request goes alone).
    #[serde(default = "default_batch_bytes")]
    pub max_bytes: ByteSize,
    /// How long to wait for more data before sending a batch that is not full.
    #[serde(default = "default_linger", with = "duration")]
    pub linger: Duration,
}

fn default_batch_records() -> usize {
    256
}

fn default_batch_bytes() -> ByteSize {
    ByteSize::mib(8)
}

fn default_linger() -> Duration {
    Duration::from_millis(200)
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: default_batch_records(),
            max_bytes: default_batch_bytes(),
            linger: default_linger(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First backoff delay; doubles per attempt, with jitter.
    #[serde(default = "default_retry_initial", with = "duration")]
    pub initial: Duration,
    /// Backoff cap.
    #[serde(default = "default_retry_max", with = "duration")]
    pub max: Duration,
    /// Longest `Retry-After` honoured; a backend asking for more is retried after this.
    #[serde(default = "default_max_retry_after", with = "duration")]
    pub max_retry_after: Duration,
}

fn default_retry_initial() -> Duration {
    Duration::from_millis(500)
}

fn default_retry_max() -> Duration {
    Duration::from_secs(30)
}

fn default_max_retry_after() -> Duration {
    Duration::from_secs(300)
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial: default_retry_initial(),
            max: default_retry_max(),
            max_retry_after: default_max_retry_after(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VictoriaMetricsConfig {
    /// Remote write URL, e.g. `http://victoriametrics:8428/api/v1/write`.
    pub endpoint: String,
    /// Append unit and `_total` suffixes to metric names, as the OTel spec says.
    #[serde(default = "default_true")]
    pub add_suffixes: bool,
    /// Write resource attributes to a `target_info` series.
    #[serde(default = "default_true")]
    pub target_info: bool,
    /// Resource attributes also copied onto every series as labels.
    #[serde(default)]
    pub promote_resource_attributes: Vec<String>,
    /// Upper bound of one backend request's wait.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiConfig {
    /// Push URL, e.g. `http://loki:3100/loki/api/v1/push`.
    pub endpoint: String,
    /// Attributes that become stream labels; the rest become structured metadata.
    #[serde(default = "default_loki_labels")]
    pub labels: Vec<LokiLabel>,
    /// Send other attributes as structured metadata (needs Loki ≥ 2.9).
    #[serde(default = "default_true")]
    pub structured_metadata: bool,
    /// Upper bound of one backend request's wait.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LokiLabel {
    /// Resource or log attribute, e.g. `k8s.namespace.name`.
    pub attribute: String,
    /// Loki label name, e.g. `k8s_namespace_name`.
    pub label: String,
}

fn default_loki_labels() -> Vec<LokiLabel> {
    vigil_core::loki::LokiOptions::default()
        .labels
        .into_iter()
        .map(|rule| LokiLabel {
            attribute: rule.attribute,
            label: rule.label,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TempoProtocol {
    Grpc,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TempoConfig {
    /// OTLP endpoint of Tempo's distributor: `http://tempo:4317` for gRPC,
    /// `http://tempo:4318` for HTTP (`/v1/traces` is appended when the path is empty).
    pub endpoint: String,
    #[serde(default = "default_tempo_protocol")]
    pub protocol: TempoProtocol,
    /// Upper bound of one backend request's wait.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default)]
    pub batch: BatchConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Extra request headers, e.g. `Authorization: Bearer ${TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// TLS towards an `https://` endpoint: a private CA, a client certificate.
    #[serde(default)]
    pub tls: Option<ClientTls>,
}

fn default_tempo_protocol() -> TempoProtocol {
    TempoProtocol::Grpc
}

/// The delivery knobs every exporter config carries under the same names
/// (`timeout`, `batch`, `retry`, `headers`). Serde's `flatten` would say this once but
/// cannot be combined with `deny_unknown_fields`.
macro_rules! delivery_of {
    ($($exporter:ty),*) => {$(
        impl $exporter {
            pub fn delivery(&self) -> Delivery {
                Delivery {
                    timeout: self.timeout,
                    batch: self.batch.clone(),
                    retry: self.retry.clone(),
                    headers: self.headers.clone(),
                    tls: self.tls.clone(),
                }
            }
        }
    )*};
}

delivery_of!(VictoriaMetricsConfig, LokiConfig, TempoConfig);

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Serves /metrics, /healthz, /readyz.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<ServerTls>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8888))
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: default_admin_listen(),
            tls: None,
        }
    }
}

#[cfg(test)]
mod tests;
