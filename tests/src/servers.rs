//! Real servers from Debian packages, one instance per test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{eventually, free_port, require_program};

/// A VictoriaMetrics single-node server on a free loopback port with its own data dir.
pub struct VictoriaMetrics {
    child: Child,
    pub port: u16,
    _data: TempDir,
}

impl VictoriaMetrics {
    pub async fn start() -> VictoriaMetrics {
        Self::start_on(free_port()).await
    }

    /// Starts on a given port (a test may hand the port to a collector before the backend
    /// is up).
    pub async fn start_on(port: u16) -> VictoriaMetrics {
        let program = require_program("victoria-metrics", "victoria-metrics");
        let data = tempfile::tempdir().expect("temp dir");
        let child = Command::new(program)
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg(format!("-storageDataPath={}", data.path().display()))
            .arg("-retentionPeriod=100y")
            .arg("-search.disableCache")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start victoria-metrics");
        let vm = VictoriaMetrics {
            child,
            port,
            _data: data,
        };
        let health = format!("{}/health", vm.base());
        eventually(
            Duration::from_secs(30),
            "victoria-metrics to answer /health",
            || {
                let health = health.clone();
                async move {
                    let r = crate::http_client().get(&health).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        vm
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base())
    }

    /// Every raw sample of the series matching `selector`, via `/api/v1/export`: one JSON
    /// object per series with `metric`, `values`, `timestamps`.
    pub async fn export(&self, selector: &str) -> Vec<serde_json::Value> {
        let client = crate::http_client();
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

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process on a free loopback port with a temporary data dir, killed on drop, ready once
/// the port accepts connections.
pub struct Broker {
    child: Child,
    pub port: u16,
    _data: TempDir,
}

impl Broker {
    /// `redis-server` without persistence.
    pub async fn redis() -> Broker {
        let program = require_program("redis-server", "redis-server");
        Self::start(program, |port, dir| {
            vec![
                "--bind".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--save".into(),
                String::new(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
                dir.to_string(),
            ]
        })
        .await
    }

    /// `nats-server` with JetStream, storing under the temporary dir.
    pub async fn nats() -> Broker {
        let program = require_program("nats-server", "nats-server");
        Self::start(program, |port, dir| {
            vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string(),
                "-js".into(),
                "-sd".into(),
                dir.to_string(),
            ]
        })
        .await
    }

    async fn start(program: std::path::PathBuf, args: impl Fn(u16, &str) -> Vec<String>) -> Broker {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(&program)
            .args(args(port, &data.path().display().to_string()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let broker = Broker {
            child,
            port,
            _data: data,
        };
        eventually(
            Duration::from_secs(30),
            &format!("{} to listen", program.display()),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
