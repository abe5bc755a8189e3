//! The collector binary's command line: `--check-config` on the shipped example and on a
//! broken file.

fn run(args: &[&str]) -> (i32, String, String) {
    vigil_e2e::process::run("vigil-collector", args, &[])
}

#[test]
fn the_shipped_example_config_is_valid() {
    vigil_e2e::process::assert_example_config_valid("vigil-collector", "collector.yaml", &[]);
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "buffer: { disk: { max_bytes: 12 parsecs } }\n\
         exporters:\n  loki: { endpoint: \"not a url\", batch: { max_records: 0 } }\n  victoriametrics: { endpoint: \"${VIGIL_TEST_UNSET_VAR:-ftp://vm}\", colour: blue }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "buffer.disk.max_bytes: unknown size unit `parsecs`",
        "exporters.victoriametrics.colour: unknown field `colour`",
        "exporters.loki.endpoint: invalid URL `not a url`",
        "exporters.loki.batch.max_records: must be greater than zero",
        "exporters.victoriametrics.endpoint: invalid URL `ftp://vm`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (code, _, stderr) = run(&["--config", "/nonexistent/vigil.yaml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot read /nonexistent/vigil.yaml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collector_on_the_same_buffer_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let rest = format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  tempo: {{ endpoint: \"http://127.0.0.1:1\" }}\n",
        buffer.display()
    );
    let first = vigil_e2e::collector::start(&vigil_e2e::collector::yaml_on_free_ports(&rest)).await;
    let path = dir.path().join("second.yaml");
    std::fs::write(&path, vigil_e2e::collector::yaml_on_free_ports(&rest)).unwrap();
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run(&["--config", path.to_str().unwrap()]))
            .await
            .unwrap();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("another process has this disk buffer open"),
        "{stderr}"
    );
    first.shutdown().await;
}
