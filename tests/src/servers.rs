//! Real servers from Debian packages, one instance per test: VictoriaMetrics, Redis, NATS,
//! Alertmanager.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{eventually, free_port, require_program};

/// A VictoriaMetrics single-node server on a free loopback port with its own data dir.
pub struct VictoriaMetrics {
    pub port: u16,
    /// `http`, or `https` when started with [`VictoriaMetrics::start_tls`].
    scheme: &'static str,
    /// Talks to it (trusting its CA when it serves TLS).
    client: reqwest::Client,
    _server: Server,
}

impl VictoriaMetrics {
    pub async fn start() -> VictoriaMetrics {
        Self::start_on(free_port()).await
    }

    /// Starts on a given port (a test may hand the port to a collector before the backend
    /// is up).
    pub async fn start_on(port: u16) -> VictoriaMetrics {
        Self::start_with(port, Vec::new(), "http", crate::http_client()).await
    }

    /// Serving HTTPS only, with the certificate `cert` and key `key` (PEM); queried by a
    /// client that trusts `ca`.
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> VictoriaMetrics {
        vigil_core::process::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).expect("read the CA"))
            .expect("the CA is PEM");
        let client = reqwest::Client::builder()
            .tls_certs_merge([ca])
            .timeout(Duration::from_secs(30))
            .build()
            .expect("https client");
        let args = vec![
            "-tls".to_string(),
            format!("-tlsCertFile={}", cert.display()),
            format!("-tlsKeyFile={}", key.display()),
        ];
        Self::start_with(free_port(), args, "https", client).await
    }

    async fn start_with(
        port: u16,
        extra: Vec<String>,
        scheme: &'static str,
        client: reqwest::Client,
    ) -> VictoriaMetrics {
        let program = require_program("victoria-metrics", "victoria-metrics");
        let server = Server::spawn(program, port, |port, dir| {
            let mut args = vec![
                format!("-httpListenAddr=127.0.0.1:{port}"),
                format!("-storageDataPath={dir}"),
                "-retentionPeriod=100y".into(),
                "-search.disableCache".into(),
                // Instant queries see just-written samples (and stale markers) at once.
                "-search.latencyOffset=0s".into(),
                "-loggerLevel=ERROR".into(),
            ];
            args.extend(extra);
            args
        });
        let vm = VictoriaMetrics {
            port,
            scheme,
            client,
            _server: server,
        };
        let health = format!("{}/health", vm.base());
        eventually(
            Duration::from_secs(30),
            "victoria-metrics to answer /health",
            || {
                let (health, client) = (health.clone(), vm.client.clone());
                async move {
                    let r = client.get(&health).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        vm
    }

    /// A client for it (trusting its CA when it serves TLS).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// `http://127.0.0.1:port`, or `https://localhost:port` (the name its test certificate has).
    pub fn base(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.port),
            _ => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    /// Every raw sample of the series matching `selector`, via `/api/v1/export`: one JSON
    /// object per series with `metric`, `values`, `timestamps`.
    pub async fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let client = &self.client;
        // Make just-written samples searchable now rather than in a second.
        let _ = client
            .get(format!("{}/internal/force_flush", self.base()))
            .send()
            .await;
        let text = client
            .get(format!("{}/api/v1/export", self.base()))
            .query(&[("match[]", selector)])
            .send()
            .await
            .expect("export request")
            .text()
            .await
            .expect("export body");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("export line is JSON"))
            .collect()
    }

    /// `GET` a query API path with `params`, as JSON; `Err` with the body when not a success.
    async fn get_json(
        &self,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<serde_json::Value, String> {
        let response = self
            .client
            .get(format!("{}{path}", self.base()))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    }

    /// The series `expr` returns over the last ten minutes at a 5 s step
    /// (`/api/v1/query_range`); `Err` when VictoriaMetrics refuses the query.
    pub async fn query_range(&self, expr: &str) -> Result<Vec<serde_json::Value>, String> {
        let end = unix_seconds();
        let params = [
            ("query", expr.to_string()),
            ("start", (end - 600).to_string()),
            ("end", end.to_string()),
            ("step", "5s".to_string()),
        ];
        let json = self.get_json("/api/v1/query_range", &params).await?;
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Values of `label` over the last hour on series matching `selector` (any series
    /// when `None`).
    pub async fn label_values(&self, selector: Option<&str>, label: &str) -> Vec<String> {
        let mut params = vec![("start", (unix_seconds() - 3600).to_string())];
        if let Some(s) = selector {
            params.push(("match[]", s.to_string()));
        }
        let json = self
            .get_json(&format!("/api/v1/label/{label}/values"), &params)
            .await
            .unwrap_or_else(|e| panic!("label values of {label} for {selector:?}: {e}"));
        json["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    /// Every metric name stored, just-written ones included.
    pub async fn metric_names(&self) -> std::collections::BTreeSet<String> {
        let _ = self
            .client
            .get(format!("{}/internal/force_flush", self.base()))
            .send()
            .await;
        self.label_values(None, "__name__")
            .await
            .into_iter()
            .collect()
    }

    /// Waits until `selector` matches at least `series` series, and returns them.
    pub async fn wait_for_series(&self, selector: &str, series: usize) -> Vec<serde_json::Value> {
        eventually(
            Duration::from_secs(30),
            &format!("{series} series matching {selector}"),
            || async {
                let found = self.export(selector).await;
                (found.len() >= series).then_some(found)
            },
        )
        .await
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A server process on a loopback port with a temporary data dir, killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    program: PathBuf,
    args: Vec<String>,
    _data: TempDir,
    /// A configuration file the server reads, kept as long as it runs.
    _config: Option<tempfile::NamedTempFile>,
}

impl Server {
    /// `redis-server` without persistence, ready once its port accepts connections.
    pub async fn redis() -> Server {
        Self::redis_with("no").await
    }

    /// `redis-server` with the append-only file fsynced on every write, so a kill -9 loses
    /// nothing it acknowledged: what a broker restart test needs.
    pub async fn redis_aof() -> Server {
        Self::redis_with("yes").await
    }

    async fn redis_with(appendonly: &str) -> Server {
        let program = require_program("redis-server", "redis-server");
        let server = Server::spawn(program, free_port(), |port, dir| {
            let args = [
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                appendonly,
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ];
            args.map(String::from).to_vec()
        });
        server.wait_listening("redis-server").await;
        server
    }

    /// `nats-server` with JetStream storing under the temporary dir, ready once its port
    /// accepts connections.
    pub async fn nats() -> Server {
        let program = require_program("nats-server", "nats-server");
        let server = Server::spawn(program, free_port(), |port, dir| {
            let args = [
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
                dir,
            ];
            args.map(String::from).to_vec()
        });
        server.wait_listening("nats-server").await;
        server
    }

    /// `prometheus-alertmanager` with the configuration `config` (YAML), clustering off,
    /// ready once `/-/ready` answers.
    pub async fn alertmanager(config: &str) -> Server {
        let program = require_program("prometheus-alertmanager", "prometheus-alertmanager");
        let config_file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(config_file.path(), config).expect("write alertmanager config");
        let config_path = config_file.path().display().to_string();
        let mut server = Server::spawn(program, free_port(), |port, dir| {
            vec![
                format!("--config.file={config_path}"),
                format!("--storage.path={dir}"),
                format!("--web.listen-address=127.0.0.1:{port}"),
                "--cluster.listen-address=".into(),
                "--log.level=warn".into(),
            ]
        });
        server._config = Some(config_file);
        let ready = format!("http://127.0.0.1:{}/-/ready", server.port);
        eventually(Duration::from_secs(30), "alertmanager to be ready", || {
            let ready = ready.clone();
            async move {
                let r = crate::http_client().get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        server
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL, so nothing but what it already made durable survives.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port and data dir, after [`Server::kill_9`].
    pub async fn restart(&mut self) {
        self.kill_9();
        self.child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot restart {}: {e}", self.program.display()));
        self.wait_listening("the restarted server").await;
    }

    /// Starts `program` with the arguments `args(port, data_dir)` returns.
    fn spawn(program: PathBuf, port: u16, args: impl FnOnce(u16, &str) -> Vec<String>) -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let args = args(port, &data.path().display().to_string());
        let child = Command::new(&program)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Server {
            child,
            port,
            program,
            args,
            _data: data,
            _config: None,
        }
    }

    async fn wait_listening(&self, what: &str) {
        let port = self.port;
        eventually(
            Duration::from_secs(30),
            &format!("{what} to listen"),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
