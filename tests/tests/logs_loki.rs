//! OTLP logs through the collector to a Loki push receiver that decodes exactly what was
//! sent (snappy + protobuf, Loki's `push.proto`). Loki has no Debian package, so this is
//! the documented wire contract rather than a real Loki.

use std::collections::BTreeMap;

use vigil_e2e::collector;
use vigil_e2e::fakes::FakeLoki;

fn yaml(loki: &FakeLoki, dir: &std::path::Path) -> String {
    collector::yaml_on_free_ports(&format!(
        "buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\nexporters:\n  loki:\n    endpoint: \"{}\"\n    batch: {{ linger: 50ms }}\n    retry: {{ initial: 50ms, max: 200ms }}\n",
        dir.display(),
        loki.push_url()
    ))
}

/// Two resources; records out of time order; severities by text and by number; a trace id.
const LOGS: &str = r#"{"resourceLogs": [
  {"resource": {"attributes": [
      {"key": "service.name", "value": {"stringValue": "checkout"}},
      {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
      {"key": "host.name", "value": {"stringValue": "node-7"}}]},
   "scopeLogs": [{"scope": {"name": "app"}, "logRecords": [
      {"timeUnixNano": "1700000003000000000", "severityText": "ERROR", "body": {"stringValue": "payment failed"},
       "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
       "attributes": [{"key": "user.id", "value": {"intValue": "42"}}]},
      {"timeUnixNano": "1700000001000000000", "severityNumber": 17, "body": {"stringValue": "card declined"}},
      {"timeUnixNano": "1700000002000000000", "severityNumber": 9, "body": {"stringValue": "retrying"}}]}]},
  {"resource": {"attributes": []},
   "scopeLogs": [{"logRecords": [
      {"observedTimeUnixNano": "1700000005000000000", "body": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": true}}]}}}]}]}
]}"#;

/// An entry as the test compares it: timestamp (ns), line, structured metadata.
type Entry = (i64, String, BTreeMap<String, String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_reach_loki_as_sorted_labelled_streams_with_metadata_and_tenant() {
    let loki = FakeLoki::start().await;
    let dir = tempfile::tempdir().unwrap();
    let collector = collector::start(&yaml(&loki, dir.path())).await;
    let response = vigil_e2e::http_client()
        .post(format!("http://{}/v1/logs", collector.http_addr().unwrap()))
        .header("content-type", "application/json")
        .header("x-scope-orgid", "team-a")
        .body(LOGS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");

    let pushes = vigil_e2e::eventually(
        std::time::Duration::from_secs(20),
        "a push at loki",
        || async {
            let p = loki.pushes();
            (!p.is_empty()).then_some(p)
        },
    )
    .await;
    assert_eq!(pushes.len(), 1);
    let push = &pushes[0];
    assert_eq!(push.tenant.as_deref(), Some("team-a"));
    assert_eq!(push.content_encoding.as_deref(), Some("snappy"));
    assert_eq!(push.content_type.as_deref(), Some("application/x-protobuf"));

    let streams: BTreeMap<String, Vec<Entry>> = push
        .request
        .streams
        .iter()
        .map(|s| {
            let entries = s
                .entries
                .iter()
                .map(|e| {
                    let ts = e
                        .timestamp
                        .as_ref()
                        .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos));
                    let meta = e
                        .structured_metadata
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect();
                    (ts, e.line.clone(), meta)
                })
                .collect();
            (s.labels.clone(), entries)
        })
        .collect();
    let labels: Vec<&str> = streams.keys().map(String::as_str).collect();
    assert_eq!(
        labels,
        vec![
            r#"{k8s_namespace_name="shop", level="error", service_name="checkout"}"#,
            r#"{k8s_namespace_name="shop", level="info", service_name="checkout"}"#,
            r#"{level="unknown", service_name="unknown_service"}"#,
        ]
    );
    let errors = &streams[labels[0]];
    // Sorted by time within the stream, although sent newest first.
    let lines: Vec<(i64, &str)> = errors
        .iter()
        .map(|(ts, line, _)| (*ts, line.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![
            (1_700_000_001_000_000_000, "card declined"),
            (1_700_000_003_000_000_000, "payment failed")
        ]
    );
    let failed_meta = &errors[1].2;
    assert_eq!(failed_meta.get("user_id").map(String::as_str), Some("42"));
    assert_eq!(
        failed_meta.get("host_name").map(String::as_str),
        Some("node-7")
    );
    assert_eq!(
        failed_meta.get("trace_id").map(String::as_str),
        Some("5b8efff798038103d269b633813fc60c")
    );
    assert_eq!(
        failed_meta.get("span_id").map(String::as_str),
        Some("eee19b7ec3c1b174")
    );
    assert!(
        !failed_meta.contains_key("service_name"),
        "labels are not repeated as metadata"
    );

    let unknown = &streams[labels[2]];
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        unknown[0].0, 1_700_000_005_000_000_000,
        "observed time is used when time is unset"
    );
    assert_eq!(unknown[0].1, r#"{"k":true}"#);
    collector.shutdown().await;
}
