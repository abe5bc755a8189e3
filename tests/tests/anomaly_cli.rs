//! The anomaly binary's command line: `--check-config` on the shipped example and on a
//! broken file.

fn run(args: &[&str]) -> (i32, String, String) {
    vigil_e2e::process::run("vigil-anomaly", args, &["GRAFANA_TOKEN"])
}

#[test]
fn the_shipped_example_config_is_valid() {
    vigil_e2e::process::assert_example_config_valid(
        "vigil-anomaly",
        "anomaly.yaml",
        &["GRAFANA_TOKEN"],
    );
}

#[test]
fn check_config_reports_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "source: { victoriametrics: \"vm:8428\" }\n\
         interval: soon\n\
         queries:\n  - { name: Q, expr: up, direction: sideways }\n  - { name: Q, expr: up, max_alerts: 0 }\n",
    )
    .unwrap();
    let (code, _, stderr) = run(&["--config", path.to_str().unwrap(), "--check-config"]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "interval: `soon` is not a duration",
        "queries.0.direction: unknown variant `sideways`",
        "queries.1.name: `Q` is used by an earlier query",
        "queries.1.max_alerts: must be at least 1",
        "source.victoriametrics:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn without_a_config_it_says_what_is_needed() {
    let (code, _, stderr) = run(&[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--config"), "{stderr}");
}
