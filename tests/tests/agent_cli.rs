//! The agent binary's command line: `--check-config` on the shipped example and on a
//! broken file.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(vigil_e2e::agent::binary())
        .args(args)
        .env_remove("VIGIL_COLLECTOR")
        .env_remove("VIGIL_STATE_DIR")
        .output()
        .expect("run vigil-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/agent.yaml");
    let (code, stdout, stderr) = run(&["--config", example, "--check-config"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
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
