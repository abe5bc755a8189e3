//! The Helm chart (`helm/vigil`) with a real `helm`: lint and render for the default values
//! and each variant under `helm/vigil/ci/`, validate the manifests against Kubernetes 1.30's
//! schemas (kubernetes-validate, strict), check the agent's DaemonSet and RBAC exactly, the
//! KEDA ScaledObject's fields against the names the collector's buffers use, that
//! values.schema.json rejects bad values, and that every rendered config passes its
//! binary's `--check-config`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;
use vigil_e2e::deploy::{self, helm, output};
use vigil_e2e::process::binary;

const VARIANTS: [&str; 7] = [
    "",
    "ci/minimal-values.yaml",
    "ci/redis-values.yaml",
    "ci/nats-values.yaml",
    "ci/keda-redis-values.yaml",
    "ci/keda-nats-values.yaml",
    "ci/tls-values.yaml",
];

fn chart() -> PathBuf {
    deploy::repo().join("helm/vigil")
}

fn helm_command(verb: &str, values: &str, sets: &[&str]) -> Command {
    let mut command = Command::new(helm());
    command.arg(verb);
    if verb == "template" {
        command.args(["vigil", "--namespace", "observability"]);
    }
    command.arg(chart());
    if !values.is_empty() {
        command.arg("-f").arg(chart().join(values));
    }
    for set in sets {
        command.args(["--set", set]);
    }
    command
}

/// The manifests rendered with `values` (a file under the chart, or "" for the defaults).
fn render(values: &str) -> Vec<Value> {
    let (ok, out, err) = output(&mut helm_command("template", values, &[]));
    assert!(ok, "helm template {values}: {err}");
    serde_yaml::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found = kind(docs, k);
    assert_eq!(found.len(), 1, "expected one {k}");
    found[0]
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn chart_lints_with_every_variant() {
    for values in VARIANTS {
        let (ok, out, err) = output(&mut helm_command("lint", values, &[]));
        assert!(ok, "helm lint {values}:\n{out}{err}");
    }
}

#[test]
fn rendered_manifests_validate_against_kubernetes_schemas() {
    let validate = deploy::tool("venv/bin/kubernetes-validate");
    let dir = tempfile::tempdir().unwrap();
    for values in VARIANTS {
        let docs = render(values);
        // KEDA's CRD is not among Kubernetes' schemas: its ScaledObject is checked field by
        // field in `keda_scales_collectors_on_the_buffer_backlog`.
        let (crds, core): (Vec<_>, Vec<_>) = docs
            .into_iter()
            .partition(|d| d["apiVersion"] == "keda.sh/v1alpha1" && d["kind"] == "ScaledObject");
        assert!(crds.is_empty() || values.contains("keda") || values.contains("tls"));
        let file = dir.path().join("manifests.yaml");
        let text = core
            .iter()
            .map(|d| serde_yaml::to_string(d).unwrap())
            .collect::<Vec<_>>()
            .join("---\n");
        std::fs::write(&file, text).unwrap();
        let (ok, out, err) = output(
            Command::new(&validate)
                .args(["--strict", "--kubernetes-version", "1.30.0"])
                .arg(&file),
        );
        assert!(ok, "kubernetes-validate ({values}):\n{out}{err}");
        let passed = out.lines().filter(|l| l.contains(" passed ")).count();
        assert_eq!(
            passed,
            core.len(),
            "every manifest validated ({values}):\n{out}{err}"
        );
    }
}

#[test]
fn agent_daemonset_mounts_tolerations_node_name_and_rbac() {
    let docs = render("");
    let ds = one(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(
        pod["tolerations"],
        serde_yaml::from_str::<Value>("[{operator: Exists}]").unwrap()
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["serviceAccountName"], "vigil-agent");
    let container = &pod["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let node_name = env
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );

    let hostpaths: Vec<(String, String)> = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|v| !v["hostPath"].is_null())
        .map(|v| {
            let name = v["name"].as_str().unwrap().to_string();
            (name, v["hostPath"]["path"].as_str().unwrap().to_string())
        })
        .collect();
    let mount = |volume: &str| {
        container["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("no mount of {volume}"))
            .clone()
    };
    for (host, at, read_only) in [
        ("/var/log/pods", "/var/log/pods", true),
        ("/var/log/containers", "/var/log/containers", true),
        ("/", "/host", true),
        ("/var/lib/vigil-agent", "/var/lib/vigil-agent", false),
    ] {
        let (volume, _) = hostpaths
            .iter()
            .find(|(_, p)| p == host)
            .unwrap_or_else(|| panic!("no hostPath {host}: {hostpaths:?}"));
        let m = mount(volume);
        assert_eq!(m["mountPath"], at);
        assert_eq!(
            m["readOnly"].as_bool().unwrap_or(false),
            read_only,
            "{host}"
        );
    }
    assert_eq!(hostpaths.len(), 4, "no other hostPath: {hostpaths:?}");

    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&security["capabilities"]["add"]),
        ["DAC_READ_SEARCH"]
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8686);
    assert!(!container["resources"]["requests"].is_null());
    assert!(!container["resources"]["limits"].is_null());

    let role = one(&docs, "ClusterRole");
    assert_eq!(
        role["rules"],
        serde_yaml::from_str::<Value>(
            "[{apiGroups: [''], resources: [pods, namespaces, nodes], verbs: [get, list, watch]}]"
        )
        .unwrap(),
        "read-only access to pods, namespaces and nodes, nothing else"
    );
    let binding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], "vigil-agent");
    assert_eq!(binding["subjects"][0]["namespace"], "observability");
}

#[test]
fn collector_workload_follows_the_buffer() {
    // Disk buffer: a StatefulSet with a volume per replica.
    let docs = render("");
    let sts = one(&docs, "StatefulSet");
    assert_eq!(
        sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "buffer"
    );
    assert!(
        kind(&docs, "Deployment")
            .iter()
            .all(|d| d["metadata"]["name"] != "vigil-collector")
    );
    assert_eq!(
        one(&docs, "PodDisruptionBudget")["spec"]["maxUnavailable"],
        1
    );
    let svc = kind(&docs, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "vigil-collector")
        .unwrap();
    let ports: Vec<i64> = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(ports, [4317, 4318, 8888]);

    // A shared buffer: a Deployment, scaled by a CPU HPA (autoscaling/v2).
    let docs = render("ci/redis-values.yaml");
    assert!(kind(&docs, "StatefulSet").is_empty());
    let hpa = one(&docs, "HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["kind"], "Deployment");
    let deployment = kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "vigil-collector")
        .unwrap();
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "the HPA owns replicas"
    );
}

#[test]
fn keda_scales_collectors_on_the_buffer_backlog() {
    let signals = vigil_core::Signal::ALL.map(|s| s.as_str());

    let docs = render("ci/keda-redis-values.yaml");
    assert!(
        kind(&docs, "HorizontalPodAutoscaler").is_empty(),
        "KEDA makes its own"
    );
    let so = one(&docs, "ScaledObject");
    assert_eq!(so["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "vigil-collector");
    assert_eq!(so["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(so["spec"]["minReplicaCount"], 2);
    assert_eq!(so["spec"]["maxReplicaCount"], 12);
    let triggers = so["spec"]["triggers"].as_sequence().unwrap();
    assert_eq!(triggers.len(), 3);
    for (trigger, signal) in triggers.iter().zip(signals) {
        assert_eq!(trigger["type"], "redis-streams");
        let m = &trigger["metadata"];
        // The collector's streams and group (collector/src/buffer/redis.rs).
        let stream = format!(
            "{}:{signal}",
            vigil_collector::buffer::redis::default_stream_prefix()
        );
        assert_eq!(m["stream"].as_str(), Some(stream.as_str()));
        assert_eq!(
            m["consumerGroup"].as_str(),
            Some(vigil_collector::buffer::redis::default_group().as_str())
        );
        assert_eq!(m["address"], "redis-master.data:6379");
        assert_eq!(m["lagCount"], "5000");
        assert_eq!(m["passwordFromEnv"], "REDIS_PASSWORD");
        let keys: Vec<&str> = m
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "address",
                "stream",
                "consumerGroup",
                "lagCount",
                "passwordFromEnv"
            ]
        );
    }

    let docs = render("ci/keda-nats-values.yaml");
    let so = one(&docs, "ScaledObject");
    let triggers = so["spec"]["triggers"].as_sequence().unwrap();
    assert_eq!(triggers.len(), 3);
    for (trigger, signal) in triggers.iter().zip(signals) {
        assert_eq!(trigger["type"], "nats-jetstream");
        let m = &trigger["metadata"];
        assert_eq!(m["natsServerMonitoringEndpoint"], "nats.data:8222");
        assert_eq!(m["account"], "$G");
        assert_eq!(m["stream"], "VIGIL");
        // The durable consumer per signal (collector/src/buffer/nats.rs, `durable_name`).
        assert_eq!(
            m["consumer"].as_str(),
            Some(format!("vigil-{signal}").as_str())
        );
        assert_eq!(m["lagThreshold"], "2000");
    }

    // TLS: rediss:// makes KEDA speak TLS too.
    let docs = render("ci/tls-values.yaml");
    let so = one(&docs, "ScaledObject");
    assert_eq!(so["spec"]["triggers"][0]["metadata"]["enableTLS"], "true");
    assert_eq!(
        so["spec"]["triggers"][0]["metadata"]["address"],
        "redis.example.com:6380"
    );
}

#[test]
fn values_schema_rejects_bad_values() {
    for (set, complaint) in [
        ("collector.buffer.kind=kafka", "/collector/buffer/kind"),
        ("collector.keda.enabled=true", "/collector/buffer/kind"),
        ("backends.loki.url=loki:3100", "/backends/loki/url"),
        (
            "collector.buffer.disk.maxBytes=8 parsecs",
            "/collector/buffer/disk/maxBytes",
        ),
        ("agent.tls.enabled=true", "/agent/tls/caSecret/name"),
        (
            "collector.tls.clientCaSecret.name=ca",
            "collector.tls.clientCaSecret needs collector.tls.enabled",
        ),
        (
            "agent.tls.clientCertSecret=agent-tls",
            "agent.tls.clientCertSecret needs TLS to the collector",
        ),
        ("agent.logs.startAt=middle", "/agent/logs/startAt"),
        ("anomaly.interval=soon", "/anomaly/interval"),
        ("collector.replicas=0", "/collector/replicas"),
        ("collector.unknown=1", "unknown"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ] {
        let (ok, _, err) = output(&mut helm_command("template", "", &[set]));
        assert!(!ok, "helm template accepted --set {set}");
        assert!(
            err.contains(complaint),
            "--set {set}: {complaint} not in:\n{err}"
        );
    }
}

/// Runs `binary --config file --check-config` with the env the chart's pods get.
fn check_config(name: &str, file: &Path) -> (bool, String) {
    let (ok, out, err) = output(
        Command::new(binary(name))
            .arg("--config")
            .arg(file)
            .arg("--check-config")
            .envs([
                ("NODE_NAME", "node-1"),
                ("POD_NAME", "vigil-collector-0"),
                ("REDIS_PASSWORD", "redis-pw"),
                ("NATS_TOKEN", "nats-token"),
                ("GRAFANA_TOKEN", "glsa_token"),
                ("VIGIL_TOKEN", "agent-token-0123456789abcdef"),
                ("VM_TOKEN", "vm-token"),
                ("LOKI_TOKEN", "loki-token"),
            ]),
    );
    (ok, format!("{out}{err}"))
}

#[test]
fn every_rendered_config_passes_check_config() {
    let dir = tempfile::tempdir().unwrap();
    // The certificate Secret and the CA are mounted files in the pods; here real ones (the
    // collector loads them at --check-config) at a temporary path.
    vigil_e2e::certs::make(dir.path());
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let client = dir.path().join("client-tls");
    std::fs::create_dir_all(&client).unwrap();
    for (from, to) in [
        ("server.pem", tls.join("tls.crt")),
        ("server.key", tls.join("tls.key")),
        ("ca.pem", tls.join("ca.crt")),
        ("client.pem", client.join("tls.crt")),
        ("client.key", client.join("tls.key")),
    ] {
        std::fs::copy(dir.path().join(from), to).unwrap();
    }
    let tls_dir = tls.display().to_string();
    let client_dir = client.display().to_string();
    let mut checked = 0;
    for values in VARIANTS {
        for map in kind(&render(values), "ConfigMap") {
            for (key, binary_name) in [
                ("collector.yaml", "vigil-collector"),
                ("agent.yaml", "vigil-agent"),
                ("anomaly.yaml", "vigil-anomaly"),
            ] {
                let Some(text) = map["data"][key].as_str() else {
                    continue;
                };
                let text = text
                    .replace("/etc/vigil-tls", &tls_dir)
                    .replace("/etc/vigil-ca", &tls_dir)
                    .replace("/etc/vigil-client-ca", &tls_dir)
                    .replace("/etc/vigil-client-tls", &client_dir);
                let file = dir.path().join(key);
                std::fs::write(&file, &text).unwrap();
                let (ok, said) = check_config(binary_name, &file);
                assert!(
                    ok,
                    "{binary_name} --check-config ({values}):\n{said}\n{text}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, VARIANTS.len() * 3);
    // And a broken one is refused, so the check above means something.
    std::fs::write(
        dir.path().join("bad.yaml"),
        "collector: { endpoint: nope }\n",
    )
    .unwrap();
    assert!(!check_config("vigil-agent", &dir.path().join("bad.yaml")).0);
}

#[test]
fn alertmanager_config_in_the_chart_is_the_compose_one() {
    for file in ["alertmanager.yml", "vigil.tmpl"] {
        let chart = std::fs::read(chart().join("files/alertmanager").join(file)).unwrap();
        let compose =
            std::fs::read(deploy::repo().join("compose/alertmanager").join(file)).unwrap();
        assert!(
            chart == compose,
            "helm/vigil/files/alertmanager/{file} differs from compose/"
        );
    }
    let docs = render("ci/tls-values.yaml");
    let map = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == "vigil-alertmanager-config")
        .expect("the Alertmanager ConfigMap");
    let shipped =
        std::fs::read_to_string(deploy::repo().join("compose/alertmanager/alertmanager.yml"))
            .unwrap();
    assert_eq!(
        map["data"]["alertmanager.yml"].as_str().unwrap().trim_end(),
        shipped.trim_end()
    );
}

#[test]
fn notes_say_where_otlp_goes() {
    let (ok, out, err) = output(
        Command::new(helm())
            .args([
                "install",
                "vigil",
                "--dry-run=client",
                "--namespace",
                "observability",
            ])
            .arg(chart()),
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://vigil-collector.observability.svc:4317"),
        "{out}"
    );
}

/// The value paths of `values` down to its leaves; maps a user sets as a whole
/// (resources, secret references, strategies, free-form config) count as leaves.
fn leaf_paths(prefix: &str, value: &Value, out: &mut Vec<String>) {
    const WHOLE: [&str; 9] = [
        "resources",
        "updateStrategy",
        "headers",
        "config",
        "passwordSecret",
        "tokenSecret",
        "caSecret",
        "bearerTokenSecret",
        "annotations",
    ];
    let last = prefix.rsplit('.').next().unwrap_or("");
    match value.as_mapping() {
        Some(map) if !map.is_empty() && !WHOLE.contains(&last) => {
            for (k, v) in map {
                let key = k.as_str().unwrap();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(&path, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn chart_readme_lists_every_value() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap())
            .unwrap();
    let mut leaves = Vec::new();
    leaf_paths("", &values, &mut leaves);
    // The README's table names values as `a.b.c`, then siblings as `.d`.
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let table = readme.split("## Values").nth(1).expect("a Values section");
    let mut documented = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split(" | ").next().unwrap();
        let mut parent = String::new();
        for token in first_cell.split('`').skip(1).step_by(2) {
            if let Some(sibling) = token.strip_prefix('.') {
                documented.push(format!("{parent}.{sibling}"));
            } else {
                parent = token.rsplit_once('.').map_or("", |(p, _)| p).to_string();
                documented.push(token.to_string());
            }
        }
    }
    let missing: Vec<&String> = leaves
        .iter()
        .filter(|leaf| {
            !documented
                .iter()
                .any(|d| *leaf == d || leaf.starts_with(&format!("{d}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from helm/vigil/README.md: {missing:?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_symlink() {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn dashboards_become_configmaps_for_grafanas_sidecar() {
    // The chart's dashboards/ links to the repository's: whatever JSON is there is shipped.
    let shipped = std::fs::read_dir(deploy::repo().join("dashboards"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    let (ok, out, err) = output(&mut helm_command(
        "template",
        "",
        &["grafanaDashboards.enabled=true"],
    ));
    assert!(ok, "{err}");
    assert_eq!(out.matches("grafana_dashboard: \"1\"").count(), shipped);

    // The mechanism, on a copy of the chart with one dashboard of known content.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("vigil");
    copy_dir(&chart(), &copy);
    std::fs::create_dir_all(copy.join("dashboards")).unwrap();
    let json = r#"{"title": "Vigil / Pipeline", "uid": "vigil-pipeline", "panels": []}"#;
    std::fs::write(copy.join("dashboards/Vigil_Pipeline.json"), json).unwrap();
    let (ok, out, err) = output(
        Command::new(helm())
            .args([
                "template",
                "vigil",
                "--set",
                "grafanaDashboards.enabled=true",
            ])
            .args([
                "--set",
                "grafanaDashboards.annotations.grafana_folder=Vigil",
            ])
            .arg(&copy),
    );
    assert!(ok, "{err}");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let map = kind(&docs, "ConfigMap")
        .into_iter()
        .find(|m| m["metadata"]["name"] == "vigil-dashboards-vigil-pipeline")
        .expect("the dashboard's ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Vigil");
    assert_eq!(map["data"]["Vigil_Pipeline.json"], json);
}

#[test]
fn tls_variant_wires_the_collector_certificate_to_the_agent() {
    let docs = render("ci/tls-values.yaml");
    let maps = kind(&docs, "ConfigMap");
    let config = |key: &str| -> Value {
        let text = maps
            .iter()
            .find_map(|m| m["data"][key].as_str())
            .unwrap_or_else(|| panic!("no {key}"));
        serde_yaml::from_str(text).unwrap()
    };
    let collector = config("collector.yaml");
    for receiver in ["grpc", "http"] {
        let tls = &collector["receivers"]["otlp"][receiver]["tls"];
        assert_eq!(tls["cert_file"], "/etc/vigil-tls/tls.crt");
        assert_eq!(tls["key_file"], "/etc/vigil-tls/tls.key");
        assert_eq!(tls["client_ca_file"], "/etc/vigil-client-ca/ca.crt");
    }
    let agent = config("agent.yaml");
    assert_eq!(
        agent["collector"]["endpoint"],
        "https://vigil-collector.observability.svc:4317"
    );
    assert_eq!(agent["collector"]["tls"]["ca_file"], "/etc/vigil-ca/ca.crt");
    assert_eq!(
        agent["collector"]["tls"]["cert_file"],
        "/etc/vigil-client-tls/tls.crt"
    );
    assert_eq!(
        agent["collector"]["tls"]["key_file"],
        "/etc/vigil-client-tls/tls.key"
    );
    assert_eq!(agent["collector"]["bearer_token"], "${VIGIL_TOKEN}");

    // The item called `name` of a pod's list `list` (volumes, a container's mounts).
    let named = |list: &Value, name: &str| -> Value {
        list.as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {list:?}"))
            .clone()
    };
    let secret_volume = |pod: &Value, name: &str| named(&pod["volumes"], name)["secret"].clone();
    let collector_pod = &kind(&docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "vigil-collector")
        .unwrap()["spec"]["template"]["spec"];
    assert_eq!(
        secret_volume(collector_pod, "tls")["secretName"],
        "vigil-collector-tls"
    );
    let agent_pod = &one(&docs, "DaemonSet")["spec"]["template"]["spec"];
    let ca = secret_volume(agent_pod, "collector-ca");
    assert_eq!(ca["secretName"], "vigil-collector-tls");
    assert_eq!(ca["items"][0]["key"], "ca.crt");
    assert_eq!(ca["items"][0]["path"], "ca.crt");
    assert_eq!(
        secret_volume(agent_pod, "client-tls")["secretName"],
        "vigil-agent-tls"
    );
    let client_ca = secret_volume(collector_pod, "client-ca");
    assert_eq!(client_ca["secretName"], "vigil-agent-ca");
    assert_eq!(client_ca["items"][0]["path"], "ca.crt");
    // Each mounted where its config says.
    let mounted = |pod: &Value, volume: &str| {
        named(&pod["containers"][0]["volumeMounts"], volume)["mountPath"].clone()
    };
    assert_eq!(mounted(collector_pod, "client-ca"), "/etc/vigil-client-ca");
    assert_eq!(mounted(agent_pod, "client-tls"), "/etc/vigil-client-tls");
}
