use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

/// The errors of a config that must not load, as `path: message` lines.
fn errors_of(text: &str) -> Vec<String> {
    match Config::from_yaml(text, no_env) {
        Ok(config) => panic!("config loaded but should not have: {config:?}"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

/// The example in the module doc, verbatim.
const EXAMPLE: &str = r#"
receivers:
  otlp: { grpc: { listen: "0.0.0.0:4317" }, http: { listen: "0.0.0.0:4318" } }
buffer:
  kind: disk                      # disk | memory
  disk: { path: ./data/buffer, max_bytes: 1GiB }
exporters:
  victoriametrics: { endpoint: "http://127.0.0.1:8428/api/v1/write" }
  loki: { endpoint: "http://127.0.0.1:3100/loki/api/v1/push" }
  tempo: { endpoint: "http://127.0.0.1:4317", protocol: grpc }
admin: { listen: "127.0.0.1:8888" }
"#;

#[test]
fn the_documented_example_loads_with_defaults() {
    let config = Config::from_yaml(EXAMPLE, no_env).unwrap();

    let otlp = &config.receivers.otlp;
    assert_eq!(
        otlp.grpc.as_ref().unwrap().listen,
        "0.0.0.0:4317".parse().unwrap()
    );
    assert_eq!(
        otlp.http.as_ref().unwrap().listen,
        "0.0.0.0:4318".parse().unwrap()
    );
    assert_eq!(otlp.max_request_bytes, ByteSize::mib(64));
    assert_eq!(otlp.max_decompressed_bytes, ByteSize::mib(128));
    assert_eq!(otlp.tenant_header, "X-Scope-OrgID");
    assert_eq!(otlp.default_tenant, None);

    assert_eq!(config.buffer.kind, BufferKind::Disk);
    assert_eq!(config.buffer.disk.path, PathBuf::from("./data/buffer"));
    assert_eq!(config.buffer.disk.max_bytes, ByteSize::gib(1));
    assert_eq!(config.buffer.disk.fsync, Fsync::Always);

    let vm = config.exporters.victoriametrics.as_ref().unwrap();
    assert_eq!(vm.endpoint, "http://127.0.0.1:8428/api/v1/write");
    assert!(vm.add_suffixes && vm.target_info);
    let delivery = vm.delivery();
    assert_eq!(delivery.timeout, Duration::from_secs(30));
    assert_eq!(delivery.batch.max_records, 256);
    assert_eq!(delivery.batch.max_bytes, ByteSize::mib(8));
    assert_eq!(delivery.batch.linger, Duration::from_millis(200));
    assert_eq!(delivery.retry.initial, Duration::from_millis(500));
    assert_eq!(delivery.retry.max, Duration::from_secs(30));
    assert_eq!(delivery.retry.max_retry_after, Duration::from_secs(300));
    assert!(delivery.headers.is_empty());

    let loki = config.exporters.loki.as_ref().unwrap();
    assert!(loki.structured_metadata);
    assert!(!loki.labels.is_empty(), "the default label rules apply");
    assert_eq!(
        config.exporters.tempo.as_ref().unwrap().protocol,
        TempoProtocol::Grpc
    );
    assert_eq!(config.admin.listen, "127.0.0.1:8888".parse().unwrap());
    assert!(Signal::ALL.iter().all(|s| config.exports(*s)));
}

#[test]
fn a_minimal_config_fills_in_every_default() {
    let config = Config::from_yaml(
        "exporters: { loki: { endpoint: \"http://loki:3100/loki/api/v1/push\" } }",
        no_env,
    )
    .unwrap();
    assert!(config.receivers.otlp.grpc.is_some() && config.receivers.otlp.http.is_some());
    assert_eq!(config.buffer.kind, BufferKind::Disk);
    assert_eq!(config.admin.listen, default_admin_listen());
    assert!(config.exports(Signal::Logs));
    assert!(!config.exports(Signal::Metrics));
    assert!(!config.exports(Signal::Traces));
}

#[test]
fn semantic_problems_are_all_reported_at_once_with_their_paths() {
    let errors = errors_of(
        r#"
receivers:
  otlp:
    tenant_header: "bad header"
    max_request_bytes: 2MiB
    max_decompressed_bytes: 1MiB
buffer:
  disk: { max_bytes: 1KiB }
exporters:
  loki:
    endpoint: "not a url"
    batch: { max_records: 0 }
  tempo:
    endpoint: "ftp://tempo:4317"
    retry: { initial: 0s }
"#,
    );
    let expected = [
        "receivers.otlp.max_decompressed_bytes: must be at least max_request_bytes",
        "receivers.otlp.tenant_header: not a valid header name",
        "buffer.disk.max_bytes: must be at least 1MiB",
        "exporters.loki.endpoint: invalid URL `not a url`: relative URL without a base",
        "exporters.loki.batch.max_records: must be greater than zero",
        "exporters.tempo.endpoint: invalid URL `ftp://tempo:4317`: scheme must be http or https",
        "exporters.tempo.retry: backoff base must be greater than zero",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn no_exporter_at_all_is_an_error_on_exporters() {
    assert_eq!(
        errors_of("admin: { listen: \"127.0.0.1:0\" }"),
        ["exporters: no exporter is configured: set at least one of victoriametrics, loki, tempo"]
    );
    // An empty file is a config with only defaults, and so has the same problem.
    assert_eq!(errors_of("").len(), 1);
}

// One typo (a structural error) must not hide the semantic problems elsewhere.
#[test]
fn structural_and_semantic_problems_are_reported_together() {
    let errors = errors_of(
        r#"
receivers:
  otlp: { tenant_header: "bad header" }
buffer:
  kind: memory
  memory: { max_bytes: 0 }
exporters:
  victoriametrics:
    endpoint: "http://vm:8428/api/v1/write"
    add_sufixes: false
  loki:
    endpoint: "loki:3100"
    batch: { max_records: 0 }
"#,
    );
    let expected = [
        "exporters.victoriametrics.add_sufixes: unknown field `add_sufixes`",
        "receivers.otlp.tenant_header: not a valid header name",
        "buffer.memory.max_bytes: must be greater than zero",
        "exporters.loki.endpoint: invalid URL `loki:3100`",
        "exporters.loki.batch.max_records: must be greater than zero",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn several_unknown_keys_are_all_named() {
    let errors = errors_of(
        r#"
recievers: {}
exporters:
  loki: { endpoint: "http://loki:3100/loki/api/v1/push", timout: 5s }
  tempo: { endpoint: "http://tempo:4317", protocol: thrift }
"#,
    );
    for want in [
        "recievers: unknown field `recievers`",
        "exporters.loki.timout: unknown field `timout`",
        "exporters.tempo.protocol: unknown variant `thrift`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
}

#[test]
fn turning_off_both_receivers_and_bad_loki_labels_are_errors() {
    let errors = errors_of(
        r#"
receivers:
  otlp: { grpc: null, http: null, default_tenant: "a/b" }
exporters:
  loki:
    endpoint: "https://loki.example/loki/api/v1/push"
    labels: [{ attribute: service.name, label: service.name }, { attribute: x, label: 1x }]
    headers: { "bad name": v }
"#,
    );
    for want in [
        "receivers.otlp: both grpc and http are off",
        "receivers.otlp.default_tenant: invalid tenant `a/b`",
        "exporters.loki.labels.0.label: `service.name` is not a valid Loki label name",
        "exporters.loki.labels.1.label: `1x` is not a valid Loki label name",
        "exporters.loki.headers.bad name: not a valid header name",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
}

#[test]
fn environment_variables_are_substituted_before_parsing() {
    let env = |name: &str| match name {
        "VM_URL" => Some("http://vm:8428/api/v1/write".to_string()),
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    let config = Config::from_yaml(
        r#"
exporters:
  victoriametrics:
    endpoint: "${VM_URL}"
    headers: { Authorization: "Bearer ${TOKEN}" }
  tempo:
    endpoint: "${TEMPO_URL:-http://tempo:4317}"
admin: { listen: "127.0.0.1:${ADMIN_PORT:-9999}" }
"#,
        env,
    )
    .unwrap();
    let vm = config.exporters.victoriametrics.unwrap();
    assert_eq!(vm.endpoint, "http://vm:8428/api/v1/write");
    assert_eq!(vm.headers["Authorization"], "Bearer s3cret");
    assert_eq!(
        config.exporters.tempo.unwrap().endpoint,
        "http://tempo:4317"
    );
    assert_eq!(config.admin.listen.port(), 9999);
}

#[test]
fn an_unset_environment_variable_names_its_line() {
    let errors = errors_of("exporters:\n  loki: { endpoint: \"${LOKI_URL}\" }\n");
    assert_eq!(errors, ["line 2: environment variable LOKI_URL is not set"]);
}

#[test]
fn redis_sentinel_and_cluster_become_the_buffer_topology() {
    use crate::buffer::redis::Topology;
    let load = |redis: &str| {
        let text = format!(
            "buffer:\n  kind: redis\n  redis: {redis}\n\
             exporters:\n  loki: {{ endpoint: \"http://127.0.0.1:3100/loki/api/v1/push\" }}\n"
        );
        let config = Config::from_yaml(&text, no_env).unwrap();
        config.buffer.redis.unwrap().options()
    };
    let sentinel = load(
        r#"{ url: "rediss://vigil:pw@mymaster/2", sentinel: { master: mymaster, nodes: ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"] } }"#,
    );
    assert_eq!(
        sentinel.topology,
        Topology::Sentinel {
            master: "mymaster".into(),
            sentinels: vec![
                "redis://10.0.0.1:26379".into(),
                "redis://10.0.0.2:26379".into()
            ],
        }
    );
    let cluster =
        load(r#"{ url: "redis://10.0.0.1:6379", cluster: { nodes: ["redis://10.0.0.2:6379"] } }"#);
    assert_eq!(
        cluster.topology,
        Topology::Cluster {
            seeds: vec!["redis://10.0.0.2:6379".into()]
        }
    );
    assert_eq!(
        load(r#"{ url: "redis://10.0.0.1:6379" }"#).topology,
        Topology::Single
    );
}

#[test]
fn bad_redis_sentinel_and_cluster_settings_are_reported_with_their_paths() {
    let errors = errors_of(
        r#"
buffer:
  kind: redis
  redis:
    url: "redis://10.0.0.1:6379/3"
    sentinel: { master: "", nodes: ["http://10.0.0.1:26379"] }
    cluster: { nodes: ["not a url"] }
exporters:
  loki: { endpoint: "http://127.0.0.1:3100/loki/api/v1/push" }
"#,
    );
    let expected = [
        "buffer.redis.cluster: set either sentinel or cluster, not both",
        "buffer.redis.sentinel.master: must not be empty",
        "buffer.redis.sentinel.nodes[0]: scheme must be redis or rediss, not `http`",
        "buffer.redis.url: a Redis Cluster has only db 0",
        "buffer.redis.cluster.nodes[0]: invalid URL",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    let unknown = errors_of(
        r#"
buffer:
  kind: redis
  redis: { url: "redis://a:6379", sentinel: { master: m, nodes: ["redis://a:26379"], name: x } }
exporters:
  loki: { endpoint: "http://127.0.0.1:3100/loki/api/v1/push" }
"#,
    );
    assert!(unknown.iter().any(|e| e.contains("name")), "{unknown:#?}");
}

#[test]
fn auth_rate_limit_and_tls_problems_name_their_place_and_never_the_token() {
    let errors = errors_of(
        r#"
receivers:
  otlp:
    grpc: { listen: "127.0.0.1:4317", tls: { cert_file: /nonexistent/cert.pem, key_file: /nonexistent/key.pem } }
    auth:
      tokens:
        - { token: short-secret, tenant: team-a }
        - { token: a-long-enough-token-1, tenant: "bad tenant" }
        - { token: a-long-enough-token-1, tenant: team-c }
        - { token: a-long-enough-token-2, token_file: /x, tenant: team-d }
    rate_limit: { records_per_second: 0, burst: 0.5 }
exporters:
  tempo: { endpoint: "http://tempo:4317" }
"#,
    );
    let expected = [
        "receivers.otlp.grpc.tls: cannot read certificates from /nonexistent/cert.pem",
        "receivers.otlp.auth.tokens.0: the token must be at least 16 characters",
        "receivers.otlp.auth.tokens.1.tenant: invalid tenant `bad tenant`",
        "receivers.otlp.auth.tokens.2: the same token is given twice",
        "receivers.otlp.auth.tokens.3: set exactly one of token and token_file",
        "receivers.otlp.rate_limit.records_per_second: must be a number > 0",
        "receivers.otlp.rate_limit.burst: must be a number >= 1",
    ];
    for want in expected {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing `{want}` in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| !e.contains("short-secret") && !e.contains("long-enough")),
        "{errors:#?}"
    );
}
