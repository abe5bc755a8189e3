//! An agent under test: in-process (most tests) or as a child process (kill -9).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigil_agent::Agent;
use vigil_agent::config::Config;

use crate::eventually;

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
    // target/<profile>/deps/<test binary> → target/<profile>/vigil-agent
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("vigil-agent");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build -p vigil-agent` (scripts/test does)",
        bin.display()
    );
    bin
}

/// An agent running as a child process.
pub struct AgentProcess {
    child: Child,
}

impl AgentProcess {
    /// Starts the binary with `config_path` and waits for `/readyz` on `admin_port`.
    pub async fn start(config_path: &Path, admin_port: u16) -> AgentProcess {
        let child = Command::new(binary())
            .arg("--config")
            .arg(config_path)
            .env("VIGIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start vigil-agent");
        let ready = format!("http://127.0.0.1:{admin_port}/readyz");
        let mut process = AgentProcess { child };
        eventually(Duration::from_secs(30), "the agent to be ready", || {
            let ready = ready.clone();
            async move {
                let r = crate::http_client().get(&ready).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
        assert!(
            process.child.try_wait().expect("wait").is_none(),
            "agent exited"
        );
        process
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait for the agent")
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
