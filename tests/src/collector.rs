//! A collector under test: in-process (most tests) or as a child process (kill -9).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigil_collector::Collector;
use vigil_collector::config::Config;

use crate::eventually;

/// Parses a YAML config the way the binary does (with this process' environment).
pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, |name| std::env::var(name).ok())
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}\n---\n{yaml}"))
}

/// Starts an in-process collector from YAML.
pub async fn start(yaml: &str) -> Collector {
    Collector::start(config(yaml))
        .await
        .expect("collector starts")
}

/// The YAML of a collector listening on free loopback ports, with `rest` (buffer and
/// exporters) appended.
pub fn yaml_on_free_ports(rest: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\" }}\n    http: {{ listen: \"127.0.0.1:0\" }}\nadmin: {{ listen: \"127.0.0.1:0\" }}\n{rest}"
    )
}

/// The collector binary built by cargo next to this test binary.
pub fn binary() -> PathBuf {
    // target/<profile>/deps/<test binary> → target/<profile>/vigil-collector
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vigil-collector");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p vigil-collector` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A collector running as a child process.
pub struct CollectorProcess {
    child: Child,
    pub http_port: u16,
}

impl CollectorProcess {
    /// Starts the binary with `config_path` and waits for `/readyz` on `admin_port`.
    pub async fn start(config_path: &Path, admin_port: u16, http_port: u16) -> CollectorProcess {
        let child = Command::new(binary())
            .arg("--config")
            .arg(config_path)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start vigil-collector");
        let ready = format!("http://127.0.0.1:{admin_port}/readyz");
        let mut process = CollectorProcess { child, http_port };
        eventually(Duration::from_secs(30), "the collector to be ready", || {
            let ready = ready.clone();
            async move {
                let r = crate::http_client().get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        assert!(
            process.child.try_wait().expect("wait").is_none(),
            "collector exited"
        );
        process
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
