//! A collector under test: in-process (most tests) or as a child process (kill -9).

use std::path::{Path, PathBuf};

use vigil_collector::Collector;
use vigil_collector::config::Config;

use crate::process::VigilProcess;

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
    crate::process::binary("vigil-collector")
}

/// A collector running as a child process, with the port its OTLP/HTTP receiver listens on.
pub struct CollectorProcess {
    process: VigilProcess,
    pub http_port: u16,
}

impl CollectorProcess {
    /// Starts the binary with `config_path` and waits for `/readyz` on `admin_port`.
    pub async fn start(config_path: &Path, admin_port: u16, http_port: u16) -> CollectorProcess {
        CollectorProcess {
            process: VigilProcess::start("vigil-collector", config_path, admin_port).await,
            http_port,
        }
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.
    pub fn kill_9(self) {
        self.process.kill_9();
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.process.terminate()
    }
}
