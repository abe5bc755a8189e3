//! The agent binary's command line: `--check-config` on the shipped example and on a
//! broken file.

fn run(args: &[&str]) -> (i32, String, String) {
    vigil_e2e::process::run("vigil-agent", args, &["VIGIL_COLLECTOR", "VIGIL_STATE_DIR"])
}

#[test]
fn the_shipped_example_config_is_valid() {
    vigil_e2e::process::assert_example_config_valid(
        "vigil-agent",
        "agent.yaml",
        &["VIGIL_COLLECTOR", "VIGIL_STATE_DIR"],
    );
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "collector: { endpoint: \"not a url\", batch: { max_wait: soon } }\n\
         logs:\n  - include: [\"/var/log/*.log\"]\n    format: journald\n    colour: blue\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "collector.endpoint: invalid URL `not a url`",
        "collector.batch.max_wait: `soon` is not a duration",
        "logs.0.format: unknown variant `journald`",
        "logs.0.colour: unknown field `colour`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_cleanly_and_saves_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("app.log"), "a line\n").unwrap();
    let admin_port = vigil_e2e::free_port();
    let config = dir.path().join("agent.yaml");
    // No collector: the line is read and never acknowledged.
    let yaml = vigil_e2e::agent::yaml_with_admin(
        &format!("127.0.0.1:{}", vigil_e2e::free_port()),
        &dir.path().join("state"),
        &format!("127.0.0.1:{admin_port}"),
        &format!(
            "  - include: [\"{}/*.log\"]\n    start_at: beginning\n",
            logs.display()
        ),
    );
    std::fs::write(&config, yaml).unwrap();
    let agent = vigil_e2e::agent::start_process(&config, admin_port).await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || agent.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < vigil_agent::SHUTDOWN_GRACE + std::time::Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    let saved = std::fs::read_to_string(dir.path().join("state/checkpoints.json")).unwrap();
    assert!(saved.contains("app.log"), "{saved}");
    assert!(
        saved.contains("\"offset\":0"),
        "nothing was delivered: {saved}"
    );
}
