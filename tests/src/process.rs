//! A Vigil binary (collector or agent) running as a child process: started with a config
//! file, ready once its admin port answers `/readyz`, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::eventually;

/// The binary `name` built by cargo next to this test binary.
pub fn binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary> → target/<profile>/<name>
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --workspace --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

/// The example `name` built by cargo (`cargo build --workspace --examples`, as scripts/test
/// does; `cargo test` builds examples too).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --workspace --examples` (scripts/test does)",
        bin.display()
    );
    bin
}

pub struct VigilProcess {
    child: Child,
}

impl VigilProcess {
    /// Starts binary `name` with `config_path` and waits for `/readyz` on `admin_port`.
    pub async fn start(name: &str, config_path: &Path, admin_port: u16) -> VigilProcess {
        Self::start_with(
            name,
            config_path,
            admin_port,
            &[("VIGIL_LOG", "warn")],
            Stdio::inherit(),
        )
        .await
    }

    /// As [`VigilProcess::start`], with environment variables `env` set and the process'
    /// own log (stderr) going to `stderr`.
    pub async fn start_with(
        name: &str,
        config_path: &Path,
        admin_port: u16,
        env: &[(&str, &str)],
        stderr: Stdio,
    ) -> VigilProcess {
        let child = Command::new(binary(name))
            .arg("--config")
            .arg(config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let ready = format!("http://127.0.0.1:{admin_port}/readyz");
        let mut process = VigilProcess { child };
        eventually(
            Duration::from_secs(30),
            &format!("{name} to be ready"),
            || {
                let ready = ready.clone();
                async move {
                    let r = crate::http_client().get(&ready).send().await.ok()?;
                    r.status().is_success().then_some(())
                }
            },
        )
        .await;
        assert!(
            process.child.try_wait().expect("wait").is_none(),
            "{name} exited"
        );
        process
    }

    /// The process id, to look at it from outside (`/proc/<pid>`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        self.child.wait().expect("wait for the process")
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for VigilProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs binary `name` with `args` (and without the environment variables `unset`) to its
/// end: `(exit code, stdout, stderr)`.
pub fn run(name: &str, args: &[&str], unset: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(binary(name));
    command.args(args);
    for var in unset {
        command.env_remove(var);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that binary `name` accepts its shipped example `config/<file>` with
/// `--check-config` (without the environment variables `unset`, so defaults are used).
pub fn assert_example_config_valid(name: &str, file: &str, unset: &[&str]) {
    let example = format!("{}/../config/{file}", env!("CARGO_MANIFEST_DIR"));
    let (code, stdout, stderr) = run(name, &["--config", &example, "--check-config"], unset);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
}
