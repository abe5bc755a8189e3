//! An agent under test: in-process (most tests) or as a child process (kill -9).

use std::path::{Path, PathBuf};

use vigil_agent::Agent;
use vigil_agent::config::Config;

use crate::process::VigilProcess;

/// Parses a YAML config the way the binary does (with this process' environment).
pub fn config(yaml: &str) -> Config {
    Config::from_yaml(yaml, |name| std::env::var(name).ok())
        .unwrap_or_else(|e| panic!("test agent config is invalid:\n{e}\n---\n{yaml}"))
}

/// Starts an in-process agent from YAML.
pub async fn start(yaml: &str) -> Agent {
    Agent::start(config(yaml)).await.expect("agent starts")
}

/// The YAML of an agent shipping to `collector_grpc` (`host:port`) with fast batching and
/// retries, its state in `state_dir`, admin on a free port, with `logs` (a YAML list, each
/// item starting `  - `) appended.
pub fn yaml(collector_grpc: &str, state_dir: &Path, logs: &str) -> String {
    yaml_with_admin(collector_grpc, state_dir, "127.0.0.1:0", logs)
}

pub fn yaml_with_admin(collector_grpc: &str, state_dir: &Path, admin: &str, logs: &str) -> String {
    format!(
        "collector:\n  endpoint: \"http://{collector_grpc}\"\n  timeout: 5s\n  retry: {{ initial: 50ms, max: 300ms }}\n  batch: {{ max_lines: 500, max_wait: 100ms }}\n\
         state_dir: \"{}\"\nadmin: {{ listen: \"{admin}\" }}\nlogs:\n{logs}",
        state_dir.display()
    )
}

/// The agent binary built by cargo next to this test binary.
pub fn binary() -> PathBuf {
    crate::process::binary("vigil-agent")
}

/// Starts the agent binary with `config_path`, ready once `/readyz` on `admin_port` says so.
pub async fn start_process(config_path: &Path, admin_port: u16) -> VigilProcess {
    VigilProcess::start("vigil-agent", config_path, admin_port).await
}

/// The YAML of a collector for agent log tests: OTLP/gRPC on `grpc` (`host:port`, port 0
/// for any), a disk buffer at `buffer`, and a fast-retrying Loki exporter to `loki`.
pub fn collector_to_loki_yaml(loki: &crate::fakes::FakeLoki, buffer: &Path, grpc: &str) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"{grpc}\" }}\n    http: null\nadmin: {{ listen: \"127.0.0.1:0\" }}\n\
         buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  loki:\n    endpoint: \"{}\"\n    batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n",
        buffer.display(),
        loki.push_url()
    )
}

/// Appends `text` to the file at `path`, creating it, as a logging process would.
pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log file");
    f.write_all(text.as_bytes())
        .expect("append to the log file");
}
