//! The compose stack (`compose/docker-compose.yml`; no Docker engine here, so it is
//! validated, not run): the file against the Compose specification's JSON schema, every
//! file and directory it mounts or builds from exists, and each Vigil service's config
//! passes its binary's `--check-config` with the service's environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;
use vigil_e2e::deploy::{self, output};
use vigil_e2e::process::binary;

fn compose_dir() -> PathBuf {
    deploy::repo().join("compose")
}

fn compose() -> Value {
    let text = std::fs::read_to_string(compose_dir().join("docker-compose.yml")).unwrap();
    let mut value: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    value.apply_merge().expect("merge keys resolve");
    value
}

#[test]
fn compose_file_follows_the_compose_specification() {
    let (ok, out, err) = output(
        Command::new(deploy::python())
            .arg(deploy::repo().join("tests/deploy/validate_compose.py"))
            .arg(deploy::tool("compose-spec.json"))
            .arg(compose_dir().join("docker-compose.yml")),
    );
    assert!(ok && out.trim() == "valid", "{out}{err}");
}

#[test]
fn every_mounted_file_exists_and_ports_are_loopback_only() {
    let compose = compose();
    let services = compose["services"].as_mapping().unwrap();
    let mut mounts = 0;
    for (name, service) in services {
        let name = name.as_str().unwrap();
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                let path = compose_dir().join(source);
                assert!(
                    path.exists(),
                    "{name} mounts {source}, which does not exist"
                );
                mounts += 1;
            }
        }
        if let Some(context) = service["build"]["context"].as_str() {
            let context = compose_dir().join(context);
            let dockerfile = service["build"]["dockerfile"]
                .as_str()
                .unwrap_or("Dockerfile");
            assert!(
                context.join(dockerfile).is_file(),
                "{name}: no {dockerfile}"
            );
        }
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = port.as_str().unwrap();
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name} publishes {port} beyond loopback"
            );
        }
    }
    assert!(mounts >= 10, "only {mounts} mounted files found");
    // Grafana's provisioning comes from the dashboards folder.
    let grafana = strings(&compose["services"]["grafana"]["volumes"]);
    assert!(
        grafana
            .iter()
            .any(|v| v.starts_with("../dashboards/provisioning:/etc/grafana/provisioning"))
    );
    assert!(grafana.iter().any(|v| v.starts_with("../dashboards:")));
    // Every backend URL the provisioned datasources read from the environment is set.
    let datasources = std::fs::read_to_string(
        deploy::repo().join("dashboards/provisioning/datasources/vigil.yaml"),
    )
    .expect("dashboards/provisioning/datasources/vigil.yaml");
    let env = &compose["services"]["grafana"]["environment"];
    let mut wanted = 0;
    for part in datasources.split("${").skip(1) {
        let name = part.split('}').next().unwrap();
        if name.starts_with("VIGIL_") {
            wanted += 1;
            assert!(
                env[name].as_str().is_some_and(|u| u.starts_with("http://")),
                "grafana needs {name}"
            );
        }
    }
    assert!(
        wanted >= 4,
        "the datasources read {wanted} VIGIL_* variables"
    );
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_vigil_config_passes_check_config() {
    let compose = compose();
    let mut checked = Vec::new();
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        let Some(command) = service["command"].as_sequence() else {
            continue;
        };
        let command: Vec<&str> = command.iter().map(|c| c.as_str().unwrap()).collect();
        let program = command[0];
        if !program.starts_with("vigil-") {
            continue;
        }
        let at = command
            .iter()
            .position(|c| *c == "--config")
            .expect("--config");
        let in_container = command[at + 1];
        // The host file mounted at that path.
        let host = strings(&service["volumes"])
            .into_iter()
            .find_map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                (parts[1] == in_container).then(|| compose_dir().join(parts[0]))
            })
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {in_container}"));
        let env: BTreeMap<String, String> = service["environment"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    v.as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        let (ok, out, err) = output(
            Command::new(binary(program))
                .arg("--config")
                .arg(&host)
                .arg("--check-config")
                .env_clear()
                .envs(env),
        );
        assert!(
            ok,
            "{program} --check-config {}:\n{out}{err}",
            host.display()
        );
        checked.push(program.to_string());
    }
    checked.sort();
    assert_eq!(checked, ["vigil-agent", "vigil-anomaly", "vigil-collector"]);
}
