//! Tests of [`super::convert()`] through the public API, with literal expected outputs.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

fn s(v: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(v.into())),
    }
}

fn kv(key: &str, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

fn record(time: u64, body: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: time,
        body: Some(s(body)),
        ..Default::default()
    }
}

fn request(
    resource: Vec<KeyValue>,
    scope: Vec<KeyValue>,
    records: Vec<LogRecord>,
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    attributes: scope,
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// (labels, [(seconds, nanos, line, [(name, value)])]) per stream, for literal comparisons.
type Flat = Vec<(String, Vec<(i64, i32, String, Vec<(String, String)>)>)>;

fn flat(c: &Converted) -> Flat {
    c.request
        .streams
        .iter()
        .map(|st| {
            let entries = st
                .entries
                .iter()
                .map(|e| {
                    let ts = e.timestamp.unwrap_or_default();
                    let md = e
                        .structured_metadata
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect();
                    (ts.seconds, ts.nanos, e.line.clone(), md)
                })
                .collect();
            (st.labels.clone(), entries)
        })
        .collect()
}

fn labels_of(c: &Converted) -> Vec<&str> {
    c.request
        .streams
        .iter()
        .map(|s| s.labels.as_str())
        .collect()
}

fn lines_of(c: &Converted) -> Vec<&str> {
    c.request
        .streams
        .iter()
        .flat_map(|s| s.entries.iter().map(|e| e.line.as_str()))
        .collect()
}

fn md(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn default_labels_and_unknown_service() {
    let with_k8s = request(
        vec![
            kv("service.name", s("checkout")),
            kv("k8s.namespace.name", s("shop")),
            kv("k8s.pod.name", s("checkout-7d9f")),
            kv("k8s.container.name", s("app")),
            kv("service.namespace", s("")),
            kv("host.name", s("node-1")),
        ],
        vec![],
        vec![LogRecord {
            severity_text: "INFO".into(),
            attributes: vec![kv("deployment.environment", s("prod"))],
            ..record(5, "hi")
        }],
    );
    let anonymous = request(vec![], vec![], vec![record(6, "who")]);
    let out = convert(&[with_k8s, anonymous], &LokiOptions::default(), 0);
    assert_eq!(
        flat(&out),
        vec![
            (
                r#"{deployment_environment="prod", k8s_container_name="app", k8s_namespace_name="shop", k8s_pod_name="checkout-7d9f", level="info", service_name="checkout"}"#.to_string(),
                vec![(0, 5, "hi".to_string(), md(&[("host_name", "node-1"), ("service_namespace", "")]))],
            ),
            (
                r#"{level="unknown", service_name="unknown_service"}"#.to_string(),
                vec![(0, 6, "who".to_string(), vec![])],
            ),
        ]
    );
    assert_eq!((out.entries, out.dropped), (2, 0));
}

#[test]
fn custom_rules_are_sanitised_and_level_cannot_be_overridden() {
    let opts = LokiOptions {
        labels: vec![
            LabelRule::new("team", "team.name"),
            LabelRule::new("cluster", "level"),
            LabelRule::new("other", "team_name"),
        ],
        structured_metadata: true,
    };
    let req = request(
        vec![
            kv("team", s("core")),
            kv("cluster", s("eu")),
            kv("other", s("x")),
        ],
        vec![],
        vec![record(1, "a")],
    );
    let out = convert(&[req], &opts, 0);
    // No service.name rule, so no unknown_service either: level alone keeps the set non-empty.
    assert_eq!(labels_of(&out), [r#"{level="unknown", team_name="core"}"#]);
    assert_eq!(
        flat(&out)[0].1[0].3,
        md(&[("cluster", "eu"), ("other", "x")])
    );
}

#[test]
fn severity_mapping() {
    let cases: [(&str, i32, &str); 12] = [
        ("", 0, "unknown"),
        ("", 1, "trace"),
        ("", 4, "trace"),
        ("", 5, "debug"),
        ("", 9, "info"),
        ("", 12, "info"),
        ("", 13, "warn"),
        ("", 17, "error"),
        ("", 21, "fatal"),
        ("", 24, "fatal"),
        ("", 25, "unknown"),
        ("Warning", 17, "warning"),
    ];
    for (text, number, want) in cases {
        let rec = LogRecord {
            severity_text: text.into(),
            severity_number: number,
            ..record(1, "x")
        };
        let out = convert(
            &[request(vec![], vec![], vec![rec])],
            &LokiOptions::default(),
            0,
        );
        let expected = format!(r#"{{level="{want}", service_name="unknown_service"}}"#);
        assert_eq!(labels_of(&out), [expected.as_str()], "{text:?} {number}");
    }
}

#[test]
fn records_split_into_streams_by_level_and_record_labels() {
    let records = vec![
        LogRecord {
            severity_number: 9,
            ..record(3, "a")
        },
        LogRecord {
            severity_number: 17,
            ..record(2, "b")
        },
        LogRecord {
            severity_number: 9,
            attributes: vec![kv("k8s.pod.name", s("p1"))],
            ..record(1, "c")
        },
        LogRecord {
            severity_number: 10,
            ..record(0, "d")
        },
    ];
    let req = request(vec![kv("service.name", s("api"))], vec![], records);
    let out = convert(&[req], &LokiOptions::default(), 0);
    assert_eq!(
        labels_of(&out),
        [
            r#"{k8s_pod_name="p1", level="info", service_name="api"}"#,
            r#"{level="error", service_name="api"}"#,
            r#"{level="info", service_name="api"}"#,
        ]
    );
    assert_eq!(lines_of(&out), ["c", "b", "d", "a"]);
    // The attribute that became a label is not repeated as metadata.
    assert!(
        out.request.streams[0].entries[0]
            .structured_metadata
            .is_empty()
    );
}

#[test]
fn structured_metadata_contents() {
    let rec = LogRecord {
        attributes: vec![
            kv(
                "http.status_code",
                AnyValue {
                    value: Some(Value::IntValue(503)),
                },
            ),
            kv(
                "retry",
                AnyValue {
                    value: Some(Value::BoolValue(true)),
                },
            ),
            kv("host.name", s("from-record")),
            kv("", s("nameless")),
            // Same key as the resource's label attribute: not the label, so kept.
            kv("service.name", s("other")),
        ],
        trace_id: vec![0x0a; 16],
        span_id: vec![0xb0, 1, 2, 3, 4, 5, 6, 0xff],
        ..record(1, "x")
    };
    let req = request(
        vec![
            kv("service.name", s("api")),
            kv("host.name", s("from-resource")),
            kv(
                "process.pid",
                AnyValue {
                    value: Some(Value::IntValue(42)),
                },
            ),
        ],
        vec![kv(
            "scope.attr",
            AnyValue {
                value: Some(Value::DoubleValue(0.25)),
            },
        )],
        vec![rec],
    );
    let out = convert(&[req], &LokiOptions::default(), 0);
    assert_eq!(
        flat(&out)[0].1[0].3,
        md(&[
            ("host_name", "from-record"),
            ("http_status_code", "503"),
            ("process_pid", "42"),
            ("retry", "true"),
            ("scope_attr", "0.25"),
            ("service_name", "other"),
            ("span_id", "b0010203040506ff"),
            ("trace_id", "0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a"),
        ])
    );
}

/// Attribute values print as `vigil_core::otlp::any_value_text` prints them, the same as
/// remote write's label values: doubles in Prometheus' spelling (`2`, `1e+06`; this module
/// printed `2.0` and `1000000.0` before the two were made one) and maps as JSON with sorted
/// keys, so one attribute reads the same in Prometheus and in Loki. The body (the line) keeps
/// its own spelling: `2.0`, and a map's keys in the order sent.
#[test]
fn attribute_values_print_as_in_remote_write_but_the_line_as_logged() {
    let double = |d| AnyValue {
        value: Some(Value::DoubleValue(d)),
    };
    let map = || AnyValue {
        value: Some(Value::KvlistValue(KeyValueList {
            values: vec![kv("z", double(2.0)), kv("a", s("x"))],
        })),
    };
    let rec = LogRecord {
        attributes: vec![
            kv("ratio", double(2.0)),
            kv("big", double(1e6)),
            kv("map", map()),
        ],
        ..record(1, "")
    };
    let body = LogRecord {
        body: Some(double(2.0)),
        ..record(2, "")
    };
    let map_body = LogRecord {
        body: Some(map()),
        ..record(3, "")
    };
    let opts = LokiOptions {
        labels: vec![LabelRule::new("ratio", "ratio")],
        ..LokiOptions::default()
    };
    let req = request(vec![], vec![], vec![rec, body, map_body]);
    let out = convert(&[req], &opts, 0);
    assert_eq!(
        labels_of(&out),
        [r#"{level="unknown", ratio="2"}"#, r#"{level="unknown"}"#,]
    );
    assert_eq!(
        flat(&out)[0].1[0].3,
        md(&[("big", "1e+06"), ("map", r#"{"a":"x","z":2.0}"#)])
    );
    assert_eq!(lines_of(&out), ["", "2.0", r#"{"z":2.0,"a":"x"}"#]);
}

#[test]
fn without_structured_metadata_pairs_go_to_the_line() {
    let rec = LogRecord {
        attributes: vec![
            kv("user", s("ann lee")),
            kv("q", s("a=\"b\"")),
            kv("empty", s("")),
        ],
        span_id: vec![1, 2, 3, 4, 5, 6, 7, 8],
        ..record(1, "GET /")
    };
    let req = request(
        vec![kv("service.name", s("api")), kv("zone", s("eu-1"))],
        vec![],
        vec![rec],
    );
    let opts = LokiOptions {
        structured_metadata: false,
        ..LokiOptions::default()
    };
    let out = convert(&[req], &opts, 0);
    assert_eq!(
        lines_of(&out),
        [r#"GET / empty="" q="a=\"b\"" span_id=0102030405060708 user="ann lee" zone=eu-1"#]
    );
    assert!(
        out.request.streams[0].entries[0]
            .structured_metadata
            .is_empty()
    );
}

#[test]
fn body_kinds() {
    let body = |v: Option<Value>| LogRecord {
        body: Some(AnyValue { value: v }),
        ..record(1, "")
    };
    let records = vec![
        body(Some(Value::StringValue("plain \"text\"\n".into()))),
        body(Some(Value::IntValue(-7))),
        body(Some(Value::DoubleValue(3.5))),
        body(Some(Value::BoolValue(false))),
        body(Some(Value::BytesValue(b"\x00hi".to_vec()))),
        body(Some(Value::ArrayValue(ArrayValue {
            values: vec![
                s("a"),
                AnyValue {
                    value: Some(Value::DoubleValue(f64::NAN)),
                },
                AnyValue { value: None },
            ],
        }))),
        body(Some(Value::KvlistValue(KeyValueList {
            values: vec![
                kv("msg", s("tab\there")),
                kv(
                    "n",
                    AnyValue {
                        value: Some(Value::IntValue(1)),
                    },
                ),
                kv(
                    "raw",
                    AnyValue {
                        value: Some(Value::BytesValue(vec![0xff])),
                    },
                ),
                kv(
                    "nested",
                    AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![kv(
                                "ok",
                                AnyValue {
                                    value: Some(Value::BoolValue(true)),
                                },
                            )],
                        })),
                    },
                ),
            ],
        }))),
        body(None),
        LogRecord {
            body: None,
            ..record(1, "")
        },
    ];
    let out = convert(
        &[request(vec![], vec![], records)],
        &LokiOptions::default(),
        0,
    );
    assert_eq!(
        lines_of(&out),
        [
            "plain \"text\"\n",
            "-7",
            "3.5",
            "false",
            "AGhp",
            r#"["a","NaN",null]"#,
            r#"{"msg":"tab\there","n":1,"raw":"/w==","nested":{"ok":true}}"#,
            "",
            "",
        ]
    );
}

#[test]
fn entries_sorted_stably_within_a_stream_and_streams_by_labels() {
    let a = request(
        vec![kv("service.name", s("b-svc"))],
        vec![],
        vec![
            record(30, "late"),
            record(10, "first"),
            record(20, "tie-1"),
            record(20, "tie-2"),
        ],
    );
    // Same stream again from a second request, out of order with the first.
    let b = request(
        vec![kv("service.name", s("b-svc"))],
        vec![],
        vec![record(20, "tie-3"), record(5, "earliest")],
    );
    let c = request(
        vec![kv("service.name", s("a-svc"))],
        vec![],
        vec![record(1, "other")],
    );
    let out = convert(&[a, b, c], &LokiOptions::default(), 0);
    assert_eq!(
        labels_of(&out),
        [
            r#"{level="unknown", service_name="a-svc"}"#,
            r#"{level="unknown", service_name="b-svc"}"#,
        ]
    );
    assert_eq!(
        lines_of(&out),
        [
            "other", "earliest", "first", "tie-1", "tie-2", "tie-3", "late"
        ]
    );
}

#[test]
fn timestamp_fallback() {
    let records = vec![
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_001,
            observed_time_unix_nano: 2_000_000_000_000_000_000,
            ..record(0, "event time")
        },
        LogRecord {
            observed_time_unix_nano: 1_700_000_001_500_000_000,
            ..record(0, "observed")
        },
        record(0, "neither"),
    ];
    let out = convert(
        &[request(vec![], vec![], records)],
        &LokiOptions::default(),
        1_700_000_002_000_000_007,
    );
    let got: Vec<(i64, i32, String)> = flat(&out)[0]
        .1
        .iter()
        .map(|(s, n, l, _)| (*s, *n, l.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1_700_000_000, 1, "event time".to_string()),
            (1_700_000_001, 500_000_000, "observed".to_string()),
            (1_700_000_002, 7, "neither".to_string()),
        ]
    );
}

#[test]
fn label_values_escape_and_parse_back() {
    let nasty = "pod \"x\"\\y\nz";
    let req = request(
        vec![kv("service.name", s(nasty))],
        vec![],
        vec![record(1, "x")],
    );
    let out = convert(&[req], &LokiOptions::default(), 0);
    assert_eq!(
        labels_of(&out),
        [r#"{level="unknown", service_name="pod \"x\"\\y\nz"}"#]
    );
    assert_eq!(
        parse_labels(labels_of(&out)[0]).unwrap(),
        vec![
            ("level".to_string(), "unknown".to_string()),
            ("service_name".to_string(), nasty.to_string()),
        ]
    );
}

#[test]
fn converted_request_survives_the_wire() {
    let req = request(
        vec![kv("service.name", s("api"))],
        vec![],
        vec![LogRecord {
            trace_id: vec![1; 16],
            ..record(9, "hello")
        }],
    );
    let out = convert(&[req], &LokiOptions::default(), 0);
    let body = encode(&out.request).unwrap();
    assert_eq!(decode(&body, 1 << 20).unwrap(), out.request);
}

#[test]
fn empty_input_is_an_empty_request() {
    let out = convert(&[], &LokiOptions::default(), 0);
    assert_eq!(out, Converted::default());
    let out = convert(
        &[ExportLogsServiceRequest::default()],
        &LokiOptions::default(),
        0,
    );
    assert!(out.request.streams.is_empty());
}
