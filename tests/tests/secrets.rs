//! Secrets never reach the logs: the collector and the agent run as processes with
//! `VIGIL_LOG=debug` (every crate's debug events, ours and the libraries'), with bearer
//! tokens from the environment and from a file, a Redis password in the buffer URL and an
//! exporter's `authorization` header. The test drives the paths that log: a wrong token,
//! a token pointed at another tenant, a backend answering 503 then 401 (retries, a dead
//! letter), the agent shipping with its token, and `--check-config` errors. Then it reads
//! both processes' whole stderr and finds none of the secrets in it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_e2e::fakes::FakeLoki;
use vigil_e2e::process::{self, VigilProcess};
use vigil_e2e::servers::Server;
use vigil_e2e::{agent, eventually_or, free_port, http_client, metric_sum, require_program};

const TOKEN_A: &str = "tok-a-6b1e9d0c2f4a8e37";
const TOKEN_B: &str = "tok-b-93f0a4c1d7e25b68";
const REDIS_PASSWORD: &str = "redis-pw-5d2c8e1f0a7b";
const EXPORTER_SECRET: &str = "exp-hdr-2e7a9c4b1f06d3";
/// A token nobody configured: what a client sends must not be logged either.
const WRONG_TOKEN: &str = "wrong-tok-8a3f1c5e9b2d";
const SECRETS: [&str; 5] = [
    TOKEN_A,
    TOKEN_B,
    REDIS_PASSWORD,
    EXPORTER_SECRET,
    WRONG_TOKEN,
];

/// Binary `name` with the secrets in its environment, its stderr (debug log) into `log`.
async fn start_logged(name: &str, config: &Path, admin: u16, log: &Path) -> VigilProcess {
    let stderr = Stdio::from(std::fs::File::create(log).unwrap());
    VigilProcess::start_with(name, config, admin, &ENV, stderr).await
}

/// The last lines of a log file, for a failure message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn collector_yaml(
    dir: &Path,
    redis_port: u16,
    loki: &FakeLoki,
    grpc: u16,
    http: u16,
    admin: u16,
) -> String {
    format!(
        "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:{grpc}\" }}\n    http: {{ listen: \"127.0.0.1:{http}\" }}\n\
         \x20   auth:\n      tokens:\n        - {{ token: \"${{VIGIL_TEST_TOKEN_A}}\", tenant: team-a }}\n        - {{ token_file: \"{token_b}\", tenant: team-b }}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
         buffer:\n  kind: redis\n  redis: {{ url: \"redis://:${{VIGIL_TEST_REDIS_PASSWORD}}@127.0.0.1:{redis_port}\" }}\n\
         exporters:\n  loki:\n    endpoint: \"{loki}\"\n    headers: {{ authorization: \"Bearer ${{VIGIL_TEST_EXPORTER_SECRET}}\" }}\n\
         \x20   batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n",
        token_b = dir.join("token-b").display(),
        loki = loki.push_url(),
    )
}

const ENV: [(&str, &str); 4] = [
    ("VIGIL_TEST_TOKEN_A", TOKEN_A),
    ("VIGIL_TEST_REDIS_PASSWORD", REDIS_PASSWORD),
    ("VIGIL_TEST_EXPORTER_SECRET", EXPORTER_SECRET),
    ("VIGIL_LOG", "debug"),
];

/// `--check-config` of `yaml` with the secrets in the environment: its whole output.
fn check_config(dir: &Path, name: &str, yaml: &str) -> (bool, String) {
    let path = dir.join(format!("check-{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(process::binary("vigil-collector"))
        .arg("--config")
        .arg(&path)
        .arg("--check-config")
        .envs(ENV)
        .output()
        .expect("run vigil-collector --check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn post_logs(http: u16, token: &str, tenant: Option<&str>) -> u16 {
    let mut request = http_client()
        .post(format!("http://127.0.0.1:{http}/v1/logs"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"over http"}}]}]}]}"#);
    if let Some(tenant) = tenant {
        request = request.header("x-scope-orgid", tenant);
    }
    request.send().await.expect("post logs").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_logs_or_config_errors() {
    let redis_cli = require_program("redis-cli", "redis-tools");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token-b"), format!("{TOKEN_B}\n")).unwrap();

    let redis = Server::redis().await;
    let set = Command::new(&redis_cli)
        .args([
            "-p",
            &redis.port.to_string(),
            "CONFIG",
            "SET",
            "requirepass",
            REDIS_PASSWORD,
        ])
        .output()
        .expect("run redis-cli");
    assert!(
        set.status.success(),
        "redis-cli CONFIG SET requirepass: {set:?}"
    );

    let loki = FakeLoki::start().await;
    let (grpc, http, admin) = (free_port(), free_port(), free_port());
    let yaml = collector_yaml(dir.path(), redis.port, &loki, grpc, http, admin);
    let config = dir.path().join("collector.yaml");
    std::fs::write(&config, &yaml).unwrap();
    let collector_log = dir.path().join("collector.log");
    let collector = start_logged("vigil-collector", &config, admin, &collector_log).await;

    // The agent ships over OTLP/gRPC with token A.
    let logs_dir = dir.path().join("logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    let agent_admin = free_port();
    let agent_yaml = agent::yaml_with_admin(
        &format!("127.0.0.1:{grpc}"),
        &dir.path().join("agent-state"),
        &format!("127.0.0.1:{agent_admin}"),
        &format!(
            "  - include: [\"{}/*.log\"]\n    format: raw\n    start_at: beginning\n    scan_interval: 100ms\n",
            logs_dir.display()
        ),
    )
    .replace(
        "  timeout: 5s\n",
        "  timeout: 5s\n  bearer_token: \"${VIGIL_TEST_TOKEN_A}\"\n",
    );
    assert!(agent_yaml.contains("bearer_token"), "{agent_yaml}");
    let agent_config = dir.path().join("agent.yaml");
    std::fs::write(&agent_config, &agent_yaml).unwrap();
    let agent_log = dir.path().join("agent.log");
    let agent = start_logged("vigil-agent", &agent_config, agent_admin, &agent_log).await;
    agent::append(
        &logs_dir.join("app.log"),
        "from the agent 1\nfrom the agent 2\n",
    );
    let logs = || {
        format!(
            "--- collector log (tail):\n{}\n--- agent log (tail):\n{}",
            tail(&collector_log),
            tail(&agent_log)
        )
    };
    eventually_or(
        Duration::from_secs(60),
        "the agent's lines at Loki",
        || format!("Loki has {:?}\n{}", loki.lines(), logs()),
        || async {
            loki.lines()
                .iter()
                .any(|l| l.contains("from the agent 2"))
                .then_some(())
        },
    )
    .await;

    // The doors: an unknown token, a token pointed at another tenant.
    assert_eq!(
        post_logs(http, WRONG_TOKEN, None).await,
        401,
        "an unknown token"
    );
    assert_eq!(
        post_logs(http, TOKEN_A, Some("team-b")).await,
        403,
        "token A naming team-b"
    );
    // The exporter's failure paths, which log the backend's answer: 503 (retried), then
    // 401 (permanent: dead-lettered with the reason).
    loki.answer_next(&[503, 401, 401]);
    assert_eq!(post_logs(http, TOKEN_B, None).await, 200, "token B");
    eventually_or(
        Duration::from_secs(60),
        "the record refused with 401 to be dead-lettered",
        logs,
        || async {
            let dead = metric_sum(
                format!("127.0.0.1:{admin}"),
                "vigil_collector_dead_lettered_items_total",
                &[],
            )
            .await;
            (dead >= 1.0).then_some(())
        },
    )
    .await;

    assert!(agent.terminate().success(), "the agent stops cleanly");
    assert!(
        collector.terminate().success(),
        "the collector stops cleanly"
    );

    let collector_text = std::fs::read_to_string(&collector_log).unwrap();
    let agent_text = std::fs::read_to_string(&agent_log).unwrap();
    // The logs were written at debug level and saw the paths above, so finding no secret
    // means something.
    for (what, text, expected) in [
        ("collector log", &collector_text, "request refused"),
        ("collector log", &collector_text, "redis buffer connected"),
        ("collector log", &collector_text, "503"),
        ("collector log", &collector_text, "401"),
        ("agent log", &agent_text, "DEBUG"),
    ] {
        assert!(
            text.contains(expected),
            "the {what} has no `{expected}`:\n{text}"
        );
    }
    assert_no_secret("the collector's log", &collector_text);
    assert_no_secret("the agent's log", &agent_text);

    // Configuration errors name the field, not its value: a token too short to accept, a
    // Redis URL that does not parse with the password in it, a header value that cannot be
    // sent.
    const SHORT_TOKEN: &str = "short-tok-73";
    for (name, broken, secret) in [
        (
            "short-token",
            yaml.replace("${VIGIL_TEST_TOKEN_A}", SHORT_TOKEN),
            SHORT_TOKEN,
        ),
        (
            "bad-url",
            yaml.replace(
                "redis://:${VIGIL_TEST_REDIS_PASSWORD}@",
                &format!("redis://:{REDIS_PASSWORD}@[::"),
            ),
            REDIS_PASSWORD,
        ),
        (
            "bad-header",
            yaml.replace(
                "Bearer ${VIGIL_TEST_EXPORTER_SECRET}",
                &format!("Bearer {EXPORTER_SECRET}\\n"),
            ),
            EXPORTER_SECRET,
        ),
    ] {
        let (ok, text) = check_config(dir.path(), name, &broken);
        assert!(
            !ok,
            "{name}: --check-config accepted a broken config:\n{text}\n---\n{broken}"
        );
        assert!(
            !text.contains(secret),
            "--check-config ({name}) shows {secret}:\n{text}"
        );
        assert_no_secret(&format!("--check-config ({name})"), &text);
    }
}
