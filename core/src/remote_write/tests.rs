//! Conversion and wire tests with literal expected series, rendered one per line as
//! `{labels in stored order} value @timestamp`.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::naming::format_float;
use super::*;

const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
const DELTA: i32 = AggregationTemporality::Delta as i32;
/// 1 s after the epoch, in nanoseconds: 1000 ms on the wire.
const T: u64 = 1_000_000_000;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metric(name: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        description: format!("about {name}"),
        data: Some(data),
        ..Default::default()
    }
}

fn number(value: f64, attributes: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        time_unix_nano: T,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..Default::default()
    }
}

fn sum(monotonic: bool, temporality: i32, points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: temporality,
        is_monotonic: monotonic,
    })
}

fn render(req: &WriteRequest) -> Vec<String> {
    req.timeseries
        .iter()
        .map(|ts| {
            let labels: Vec<String> = ts
                .labels
                .iter()
                .map(|l| format!("{}=\"{}\"", l.name, l.value))
                .collect();
            let samples: Vec<String> = ts
                .samples
                .iter()
                .map(|s| {
                    let v = if s.value.to_bits() == STALE_NAN.to_bits() {
                        "stale".into()
                    } else {
                        format_float(s.value)
                    };
                    format!("{v} @{}", s.timestamp)
                })
                .collect();
            format!("{{{}}} {}", labels.join(","), samples.join(" "))
        })
        .collect()
}

/// Converts with no resource identity and no scope, so expected lines stay short.
fn bare(metrics: Vec<Metric>) -> Converted {
    let mut req = request(vec![], metrics);
    req.resource_metrics[0].scope_metrics[0].scope = None;
    convert(&[req], &ConvertOptions::default())
}

#[test]
fn gauges_counters_and_updowncounters_with_job_instance_scope_and_target_info() {
    let resource = vec![
        s("service.name", "api"),
        s("service.namespace", "shop"),
        s("service.instance.id", "pod-1"),
        s("host.name", "node-a"),
        kv("k8s.pod.restarts", any_value::Value::IntValue(3)),
    ];
    let metrics = vec![
        metric(
            "memory.usage",
            "By",
            Data::Gauge(Gauge {
                data_points: vec![number(512.0, vec![s("state", "used")])],
            }),
        ),
        metric(
            "http.requests",
            "{request}",
            sum(
                true,
                CUMULATIVE,
                vec![number(7.0, vec![s("http.method", "GET")])],
            ),
        ),
        metric(
            "queue.depth",
            "{item}",
            sum(false, CUMULATIVE, vec![number(-2.0, vec![])]),
        ),
    ];
    let converted = convert(&[request(resource, metrics)], &ConvertOptions::default());
    let scope = r#"otel_scope_name="lib",otel_scope_version="1.2""#;
    assert_eq!(
        render(&converted.request()),
        [
            format!(r#"{{__name__="memory_usage_bytes",instance="pod-1",job="shop/api",{scope},state="used"}} 512 @1000"#),
            format!(r#"{{__name__="http_requests_total",http_method="GET",instance="pod-1",job="shop/api",{scope}}} 7 @1000"#),
            format!(r#"{{__name__="queue_depth",instance="pod-1",job="shop/api",{scope}}} -2 @1000"#),
            r#"{__name__="target_info",host_name="node-a",instance="pod-1",job="shop/api",k8s_pod_restarts="3"} 1 @1000"#.to_string(),
        ]
    );
    assert_eq!(converted.samples, 4);
    assert!(converted.dropped.is_empty());
    let request = converted.request();
    let metadata: Vec<_> = request
        .metadata
        .iter()
        .map(|m| {
            (
                m.r#type,
                m.metric_family_name.as_str(),
                m.help.as_str(),
                m.unit.as_str(),
            )
        })
        .collect();
    assert_eq!(
        metadata,
        [
            (
                MetricType::Gauge as i32,
                "memory_usage_bytes",
                "about memory.usage",
                "bytes"
            ),
            (
                MetricType::Counter as i32,
                "http_requests_total",
                "about http.requests",
                ""
            ),
            (
                MetricType::Gauge as i32,
                "queue_depth",
                "about queue.depth",
                ""
            ),
            (
                MetricType::Gauge as i32,
                "target_info",
                "Target metadata",
                ""
            ),
        ]
    );
}

#[test]
fn options_turn_off_suffixes_and_target_info_and_promote_attributes() {
    let resource = vec![s("service.name", "api"), s("k8s.namespace.name", "prod")];
    let metrics = vec![metric(
        "rpc.duration",
        "s",
        sum(true, CUMULATIVE, vec![number(1.5, vec![])]),
    )];
    let opts = ConvertOptions {
        add_suffixes: false,
        target_info: false,
        promote_resource_attributes: vec!["k8s.namespace.name".into()],
    };
    let mut req = request(resource, metrics);
    req.resource_metrics[0].scope_metrics[0].scope = None;
    let converted = convert(&[req], &opts);
    assert_eq!(
        render(&converted.request()),
        [r#"{__name__="rpc_duration",job="api",k8s_namespace_name="prod"} 1.5 @1000"#]
    );
}

#[test]
fn histogram_buckets_are_cumulative_with_prometheus_le() {
    let point = HistogramDataPoint {
        time_unix_nano: T,
        count: 10,
        sum: Some(4.25),
        bucket_counts: vec![2, 3, 0, 5],
        explicit_bounds: vec![0.25, 0.5, 1.0],
        attributes: vec![s("route", "/")],
        ..Default::default()
    };
    let h = Histogram {
        data_points: vec![point],
        aggregation_temporality: CUMULATIVE,
    };
    let converted = bare(vec![metric(
        "http.server.duration",
        "s",
        Data::Histogram(h),
    )]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="http_server_duration_seconds_bucket",le="0.25",route="/"} 2 @1000"#,
            r#"{__name__="http_server_duration_seconds_bucket",le="0.5",route="/"} 5 @1000"#,
            r#"{__name__="http_server_duration_seconds_bucket",le="1",route="/"} 5 @1000"#,
            r#"{__name__="http_server_duration_seconds_bucket",le="+Inf",route="/"} 10 @1000"#,
            r#"{__name__="http_server_duration_seconds_sum",route="/"} 4.25 @1000"#,
            r#"{__name__="http_server_duration_seconds_count",route="/"} 10 @1000"#,
        ]
    );
    assert_eq!(
        converted.request().metadata[0].r#type,
        MetricType::Histogram as i32
    );
    assert_eq!(converted.samples, 6);
}

/// Points of one request with other bounds, fewer and more of them, get their own `le`
/// (each bucket position's text is printed once and kept while the bound repeats).
#[test]
fn histogram_points_with_different_bounds_each_get_their_own_le() {
    let point = |bounds: &[f64], route: &str| HistogramDataPoint {
        time_unix_nano: T,
        count: bounds.len() as u64 + 1,
        bucket_counts: vec![1; bounds.len() + 1],
        explicit_bounds: bounds.to_vec(),
        attributes: vec![s("route", route)],
        ..Default::default()
    };
    let h = Histogram {
        data_points: vec![
            point(&[0.5, 1.0], "a"),
            point(&[0.5, 2.0, 4.0], "b"),
            point(&[0.25], "c"),
            point(&[0.5, 1.0], "d"),
        ],
        aggregation_temporality: CUMULATIVE,
    };
    let converted = bare(vec![metric("h", "", Data::Histogram(h))]);
    let buckets: Vec<String> = render(&converted.request())
        .into_iter()
        .filter(|line| line.contains("h_bucket"))
        .map(|line| line.split(" @").next().unwrap().to_string())
        .collect();
    assert_eq!(
        buckets,
        [
            r#"{__name__="h_bucket",le="0.5",route="a"} 1"#,
            r#"{__name__="h_bucket",le="1",route="a"} 2"#,
            r#"{__name__="h_bucket",le="+Inf",route="a"} 3"#,
            r#"{__name__="h_bucket",le="0.5",route="b"} 1"#,
            r#"{__name__="h_bucket",le="2",route="b"} 2"#,
            r#"{__name__="h_bucket",le="4",route="b"} 3"#,
            r#"{__name__="h_bucket",le="+Inf",route="b"} 4"#,
            r#"{__name__="h_bucket",le="0.25",route="c"} 1"#,
            r#"{__name__="h_bucket",le="+Inf",route="c"} 2"#,
            r#"{__name__="h_bucket",le="0.5",route="d"} 1"#,
            r#"{__name__="h_bucket",le="1",route="d"} 2"#,
            r#"{__name__="h_bucket",le="+Inf",route="d"} 3"#,
        ]
    );
}

#[test]
fn histogram_without_sum_or_buckets_and_malformed_histograms() {
    let ok = HistogramDataPoint {
        time_unix_nano: T,
        count: 4,
        ..Default::default()
    };
    let wrong_len = HistogramDataPoint {
        bucket_counts: vec![1, 2],
        explicit_bounds: vec![1.0, 2.0],
        ..Default::default()
    };
    let unordered = HistogramDataPoint {
        bucket_counts: vec![1, 2, 3],
        explicit_bounds: vec![2.0, 1.0],
        ..Default::default()
    };
    let h = Histogram {
        data_points: vec![ok, wrong_len, unordered],
        aggregation_temporality: CUMULATIVE,
    };
    let converted = bare(vec![metric("h", "", Data::Histogram(h))]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="h_bucket",le="+Inf"} 4 @1000"#,
            r#"{__name__="h_count"} 4 @1000"#
        ]
    );
    assert_eq!(
        converted.dropped,
        [Dropped {
            reason: DropReason::MalformedHistogram,
            data_points: 2
        }]
    );
}

#[test]
fn exponential_histogram_becomes_classic_buckets() {
    // Scale 0: base 2. Negative bucket 1 holds [-4, -2), zero bucket holds 0, positive
    // buckets 0 and 1 hold (1, 2] and (2, 4].
    let point = ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count: 7,
        sum: Some(9.0),
        scale: 0,
        zero_count: 1,
        positive: Some(Buckets {
            offset: 0,
            bucket_counts: vec![2, 3],
        }),
        negative: Some(Buckets {
            offset: 1,
            bucket_counts: vec![1],
        }),
        ..Default::default()
    };
    let h = ExponentialHistogram {
        data_points: vec![point],
        aggregation_temporality: CUMULATIVE,
    };
    let converted = bare(vec![metric("latency", "ms", Data::ExponentialHistogram(h))]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="latency_milliseconds_bucket",le="-2"} 1 @1000"#,
            r#"{__name__="latency_milliseconds_bucket",le="0"} 2 @1000"#,
            r#"{__name__="latency_milliseconds_bucket",le="2"} 4 @1000"#,
            r#"{__name__="latency_milliseconds_bucket",le="4"} 7 @1000"#,
            r#"{__name__="latency_milliseconds_bucket",le="+Inf"} 7 @1000"#,
            r#"{__name__="latency_milliseconds_sum"} 9 @1000"#,
            r#"{__name__="latency_milliseconds_count"} 7 @1000"#,
        ]
    );
}

#[test]
fn exponential_histogram_at_negative_scale_and_out_of_range_scale() {
    // Scale -1: base 4. Positive offset -1: buckets (0.25, 1] and (1, 4]; no zero bucket.
    let point = ExponentialHistogramDataPoint {
        time_unix_nano: T,
        count: 3,
        scale: -1,
        positive: Some(Buckets {
            offset: -1,
            bucket_counts: vec![1, 2],
        }),
        ..Default::default()
    };
    let bad = ExponentialHistogramDataPoint {
        scale: 21,
        ..Default::default()
    };
    let h = ExponentialHistogram {
        data_points: vec![point, bad],
        aggregation_temporality: CUMULATIVE,
    };
    let converted = bare(vec![metric("size", "", Data::ExponentialHistogram(h))]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="size_bucket",le="1"} 1 @1000"#,
            r#"{__name__="size_bucket",le="4"} 3 @1000"#,
            r#"{__name__="size_bucket",le="+Inf"} 3 @1000"#,
            r#"{__name__="size_count"} 3 @1000"#,
        ]
    );
    assert_eq!(converted.dropped[0].reason, DropReason::MalformedHistogram);
}

#[test]
fn summary_gives_quantiles_sum_and_count() {
    let point = SummaryDataPoint {
        time_unix_nano: T,
        count: 100,
        sum: 42.5,
        quantile_values: vec![
            ValueAtQuantile {
                quantile: 0.5,
                value: 0.3,
            },
            ValueAtQuantile {
                quantile: 0.99,
                value: 1.2,
            },
        ],
        ..Default::default()
    };
    let converted = bare(vec![metric(
        "rpc.latency",
        "s",
        Data::Summary(Summary {
            data_points: vec![point],
        }),
    )]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="rpc_latency_seconds",quantile="0.5"} 0.3 @1000"#,
            r#"{__name__="rpc_latency_seconds",quantile="0.99"} 1.2 @1000"#,
            r#"{__name__="rpc_latency_seconds_sum"} 42.5 @1000"#,
            r#"{__name__="rpc_latency_seconds_count"} 100 @1000"#,
        ]
    );
    assert_eq!(
        converted.request().metadata[0].r#type,
        MetricType::Summary as i32
    );
}

#[test]
fn delta_and_unspecified_temporality_are_dropped_and_counted() {
    let delta_hist = Histogram {
        data_points: vec![HistogramDataPoint::default(); 3],
        aggregation_temporality: DELTA,
    };
    let delta_exp = ExponentialHistogram {
        data_points: vec![ExponentialHistogramDataPoint::default()],
        aggregation_temporality: DELTA,
    };
    let converted = bare(vec![
        metric(
            "a",
            "",
            sum(true, DELTA, vec![number(1.0, vec![]), number(2.0, vec![])]),
        ),
        metric("b", "", Data::Histogram(delta_hist)),
        metric("c", "", Data::ExponentialHistogram(delta_exp)),
        metric("d", "", sum(true, 0, vec![number(1.0, vec![])])),
        metric(
            "e",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(1.0, vec![])],
            }),
        ),
    ]);
    assert_eq!(render(&converted.request()), [r#"{__name__="e"} 1 @1000"#]);
    assert_eq!(
        converted.dropped,
        [
            Dropped {
                reason: DropReason::DeltaTemporality,
                data_points: 6
            },
            Dropped {
                reason: DropReason::UnspecifiedTemporality,
                data_points: 1
            },
        ]
    );
    // No series, no metadata: a dropped family is not announced.
    assert_eq!(converted.request().metadata.len(), 1);
    assert_eq!(DropReason::DeltaTemporality.as_str(), "delta_temporality");
}

#[test]
fn no_recorded_value_becomes_stale_nan_and_nan_passes() {
    let mut stale = number(5.0, vec![]);
    stale.flags = 1;
    let mut stale_without_value = NumberDataPoint {
        time_unix_nano: T,
        flags: 1,
        ..Default::default()
    };
    stale_without_value.attributes = vec![s("x", "1")];
    let missing = NumberDataPoint::default();
    let nan = number(f64::NAN, vec![s("x", "2")]);
    let stale_hist = HistogramDataPoint {
        time_unix_nano: T,
        flags: 1,
        bucket_counts: vec![1, 1],
        explicit_bounds: vec![1.0],
        count: 2,
        sum: Some(1.0),
        ..Default::default()
    };
    let converted = bare(vec![
        metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![stale, stale_without_value, missing, nan],
            }),
        ),
        metric(
            "h",
            "",
            Data::Histogram(Histogram {
                data_points: vec![stale_hist],
                aggregation_temporality: CUMULATIVE,
            }),
        ),
    ]);
    assert_eq!(
        render(&converted.request()),
        [
            r#"{__name__="g"} stale @1000"#,
            r#"{__name__="g",x="1"} stale @1000"#,
            r#"{__name__="g",x="2"} NaN @1000"#,
            r#"{__name__="h_bucket",le="1"} stale @1000"#,
            r#"{__name__="h_bucket",le="+Inf"} stale @1000"#,
            r#"{__name__="h_sum"} stale @1000"#,
            r#"{__name__="h_count"} stale @1000"#,
        ]
    );
    // A plain NaN is not the staleness marker.
    assert_ne!(
        converted.request().timeseries[2].samples[0].value.to_bits(),
        STALE_NAN.to_bits()
    );
    assert_eq!(
        converted.dropped,
        [Dropped {
            reason: DropReason::InvalidValue,
            data_points: 1
        }]
    );
}

#[test]
fn labels_are_sanitised_joined_and_ordered_with_precedence() {
    let resource = vec![s("service.name", "api"), s("team", "from-resource")];
    let attributes = vec![
        s("http.method", "GET"),
        s("http_method", "POST"),
        s("2xx", "yes"),
        s("job", "spoofed"),
        s("team", "from-point"),
        s("__name__", "not-a-name"),
        s("le", "spoofed"),
        s("Upper", "u"),
        s("empty", ""),
        kv("ok", any_value::Value::BoolValue(true)),
        kv("ratio", any_value::Value::DoubleValue(0.25)),
    ];
    let h = Histogram {
        data_points: vec![HistogramDataPoint {
            attributes,
            time_unix_nano: T,
            count: 1,
            ..Default::default()
        }],
        aggregation_temporality: CUMULATIVE,
    };
    let opts = ConvertOptions {
        promote_resource_attributes: vec!["team".into()],
        target_info: false,
        ..Default::default()
    };
    let mut req = request(resource, vec![metric("m", "", Data::Histogram(h))]);
    req.resource_metrics[0].scope_metrics[0].scope = None;
    let converted = convert(&[req], &opts);
    let rendered = render(&converted.request());
    // `http.method` and `http_method` both become `http_method`: joined by original key
    // order. `job` from the resource beats the attribute; the attribute `team` beats the
    // promoted one; `le` is the converter's own; `__name__` collapses to `_name_`.
    assert_eq!(
        rendered[0],
        r#"{Upper="u",__name__="m_bucket",_name_="not-a-name",http_method="GET;POST",job="api",key_2xx="yes",le="+Inf",ok="true",ratio="0.25",team="from-point"}"#
            .to_string()
            + " 1 @1000"
    );
    for ts in &converted.request().timeseries {
        assert!(
            ts.labels.windows(2).all(|w| w[0].name < w[1].name),
            "{:?}",
            ts.labels
        );
    }
}

#[test]
fn one_target_info_per_job_and_instance() {
    let resource = vec![s("service.name", "api"), s("host.name", "a")];
    let g = || {
        metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![number(1.0, vec![])],
            }),
        )
    };
    let first = request(resource.clone(), vec![g()]);
    let second = request(resource, vec![g()]);
    let converted = convert(&[first, second], &ConvertOptions::default());
    let target_infos = render(&converted.request())
        .iter()
        .filter(|l| l.contains("target_info"))
        .count();
    assert_eq!(target_infos, 1);
    // Metadata is announced once per family per request.
    assert_eq!(converted.request().metadata.len(), 2);
}

#[test]
fn encode_decode_round_trip() {
    let converted = bare(vec![metric(
        "g",
        "s",
        Data::Gauge(Gauge {
            data_points: vec![number(0.5, vec![s("a", "b")])],
        }),
    )]);
    let body = converted.body().expect("small request encodes");
    // Snappy block format, not framed: the body starts with the varint length.
    assert_eq!(
        snap::raw::decompress_len(&body).ok(),
        Some(converted.protobuf.len())
    );
    let decoded = decode(&body, 1 << 20).expect("own encoding decodes");
    assert_eq!(decoded, converted.request());
    // The series written straight to bytes are what prost writes for the messages.
    assert_eq!(encode(&decoded).expect("encodes"), body);
    assert_eq!(decoded.encoded_len(), converted.protobuf.len());
    // The size limit and garbage bodies are tested once, in `crate::snappy`.
    assert_eq!(HEADERS[2], ("X-Prometheus-Remote-Write-Version", "0.1.0"));
}

/// `request` as the conversion reads it: without the fields [`input`] leaves out.
fn read_fields(mut request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest {
    fn attributes(attributes: &mut [KeyValue]) {
        for kv in attributes {
            kv.key_strindex = 0;
            if let Some(value) = &mut kv.value {
                any(value);
            }
        }
    }
    fn any(value: &mut AnyValue) {
        match &mut value.value {
            Some(any_value::Value::ArrayValue(a)) => a.values.iter_mut().for_each(any),
            Some(any_value::Value::KvlistValue(kv)) => attributes(&mut kv.values),
            _ => {}
        }
    }
    for rm in &mut request.resource_metrics {
        rm.schema_url.clear();
        if let Some(resource) = &mut rm.resource {
            resource.dropped_attributes_count = 0;
            resource.entity_refs.clear();
            attributes(&mut resource.attributes);
        }
        for sm in &mut rm.scope_metrics {
            sm.schema_url.clear();
            if let Some(scope) = &mut sm.scope {
                scope.attributes.clear();
                scope.dropped_attributes_count = 0;
            }
            for metric in &mut sm.metrics {
                metric.metadata.clear();
                match &mut metric.data {
                    // Number and histogram points stay bytes (`input::NumberPoint` and
                    // `input::HistogramPoint` read them), so they are written back whole.
                    Some(Data::Gauge(_) | Data::Sum(_) | Data::Histogram(_)) => {}
                    Some(Data::ExponentialHistogram(h)) => {
                        for p in &mut h.data_points {
                            attributes(&mut p.attributes);
                            (p.start_time_unix_nano, p.min, p.max) = (0, None, None);
                            p.exemplars.clear();
                        }
                    }
                    Some(Data::Summary(s)) => {
                        for p in &mut s.data_points {
                            attributes(&mut p.attributes);
                            p.start_time_unix_nano = 0;
                        }
                    }
                    None => {}
                }
            }
        }
    }
    request
}

/// Reads `body` with [`input`] and writes it back, for `opentelemetry-proto` to decode.
fn through_input(body: &[u8]) -> Result<ExportMetricsServiceRequest, prost::DecodeError> {
    let ours = input::MetricsRequest::decode(bytes::Bytes::copy_from_slice(body))?;
    Ok(ExportMetricsServiceRequest::decode(ours.encode_to_vec().as_slice()).expect("re-encoded"))
}

#[test]
fn the_conversion_reads_every_field_it_uses_as_opentelemetry_proto_does() {
    let request = crate::otlp::skim::tests::metrics_request();
    let back = through_input(&request.encode_to_vec()).unwrap();
    assert_eq!(back, read_fields(request));
}

#[test]
fn strings_share_the_payload_instead_of_being_copied() {
    let body = bytes::Bytes::from(crate::otlp::skim::tests::metrics_request().encode_to_vec());
    let ours = input::MetricsRequest::decode(body.clone()).unwrap();
    let name = &ours.resource_metrics[0].scope_metrics[0].metrics[0].name;
    assert_eq!(input::text(name), "gauge");
    assert!(body.as_ptr_range().contains(&name.as_ptr()));
}

#[test]
fn a_string_that_is_not_utf8_reads_as_a_replacement_character() {
    assert_eq!(input::text(&bytes::Bytes::from_static(b"ok")), "ok");
    assert_eq!(input::text(&bytes::Bytes::from_static(b"\xff")), "\u{FFFD}");
}

#[test]
fn payloads_that_do_not_decode_are_an_error() {
    let good = bytes::Bytes::from(crate::otlp::skim::tests::metrics_request().encode_to_vec());
    let bad = bytes::Bytes::from_static(b"\x0a\x05ab");
    let options = ConvertOptions::default();
    assert!(convert_payloads([&good], &options).is_ok());
    assert!(convert_payloads([&good, &bad], &options).is_err());
}

/// A number point read by [`input::NumberPoint`] and by prost's decoding of
/// [`input::NumberDataPoint`], each as (time, flags, value bits, attributes as text).
type PointReading = (u64, u32, Option<(bool, u64)>, Vec<(String, String)>);

fn both_readings(body: &[u8]) -> (Option<PointReading>, Option<PointReading>) {
    fn bits(value: Option<input::NumberValue>) -> Option<(bool, u64)> {
        value.map(|v| match v {
            input::NumberValue::AsDouble(d) => (true, d.to_bits()),
            input::NumberValue::AsInt(i) => (false, i as u64),
        })
    }
    let bytes = bytes::Bytes::copy_from_slice(body);
    let mut attributes = Vec::new();
    let ours = input::NumberPoint::read(&bytes, &mut attributes)
        .ok()
        .map(|p| {
            let text = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()));
            (p.time_unix_nano, p.flags, bits(p.value), text.collect())
        });
    let prost = input::NumberDataPoint::decode(bytes.clone()).ok().map(|p| {
        let text = p.attributes.iter().map(|kv| {
            let value = input::value_text(kv.value.as_ref());
            (input::text(&kv.key).to_owned(), value.into_owned())
        });
        (p.time_unix_nano, p.flags, bits(p.value), text.collect())
    });
    (ours, prost)
}

/// A histogram point read by [`input::HistogramPoint`] and by prost's decoding of
/// [`input::HistogramDataPoint`]: (time, count, sum bits, flags, counts, bound bits,
/// attributes as text).
type HistogramReading = (
    u64,
    u64,
    Option<u64>,
    u32,
    Vec<u64>,
    Vec<u64>,
    Vec<(String, String)>,
);

fn both_histogram_readings(body: &[u8]) -> (Option<HistogramReading>, Option<HistogramReading>) {
    let reading = |time, count, sum: Option<f64>, flags, counts, bounds: &[f64], text| {
        let bounds = bounds.iter().map(|v| v.to_bits()).collect();
        (
            time,
            count,
            sum.map(f64::to_bits),
            flags,
            counts,
            bounds,
            text,
        )
    };
    let bytes = bytes::Bytes::copy_from_slice(body);
    let (mut attributes, mut counts, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
    let ours = input::HistogramPoint::read(&bytes, &mut attributes, &mut counts, &mut bounds)
        .ok()
        .map(|p| {
            let text = attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()));
            let (time, count, sum, flags) = (p.time_unix_nano, p.count, p.sum, p.flags);
            reading(time, count, sum, flags, counts, &bounds, text.collect())
        });
    let prost = input::HistogramDataPoint::decode(bytes.clone())
        .ok()
        .map(|p| {
            let text = p.attributes.iter().map(|kv| {
                let value = input::value_text(kv.value.as_ref());
                (input::text(&kv.key).to_owned(), value.into_owned())
            });
            let (time, count, sum, flags) = (p.time_unix_nano, p.count, p.sum, p.flags);
            reading(
                time,
                count,
                sum,
                flags,
                p.bucket_counts,
                &p.explicit_bounds,
                text.collect(),
            )
        });
    (ours, prost)
}

/// The histogram point of the test request: every kind of attribute value, min and max.
fn rich_histogram_point() -> HistogramDataPoint {
    let request = crate::otlp::skim::tests::metrics_request();
    match &request.resource_metrics[0].scope_metrics[0].metrics[2].data {
        Some(Data::Histogram(h)) => h.data_points[0].clone(),
        other => panic!("the test request's third metric is a histogram, not {other:?}"),
    }
}

#[test]
fn histogram_points_read_as_prost_reads_them() {
    let mut unpacked = Vec::new();
    // Bucket counts and bounds one field each instead of packed: prost takes both.
    crate::wire::fixed64(&mut unpacked, 6, 4);
    crate::wire::fixed64(&mut unpacked, 6, 5);
    crate::wire::fixed64(&mut unpacked, 7, 0.25f64.to_bits());
    for body in [rich_histogram_point().encode_to_vec(), unpacked] {
        let (ours, prost) = both_histogram_readings(&body);
        assert!(prost.is_some());
        assert_eq!(ours, prost);
    }
}

/// The gauge's first point of the test request: every kind of attribute value, exemplars,
/// a start time.
fn rich_point() -> NumberDataPoint {
    let request = crate::otlp::skim::tests::metrics_request();
    match &request.resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(Data::Gauge(g)) => g.data_points[0].clone(),
        other => panic!("the test request's first metric is a gauge, not {other:?}"),
    }
}

/// A point as agents send them: a few string attributes.
fn plain_point() -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![s("cpu", "0"), s("mode", "idle")],
        time_unix_nano: 1_700_000_000_000_000_000,
        value: Some(number_data_point::Value::AsInt(42)),
        ..Default::default()
    }
}

#[test]
fn number_points_read_as_prost_reads_them() {
    for point in [rich_point(), plain_point()] {
        let (ours, prost) = both_readings(&point.encode_to_vec());
        assert!(prost.is_some());
        assert_eq!(ours, prost);
    }
}

#[test]
fn plain_attributes_are_borrowed_and_the_others_decoded() {
    let mut point = plain_point();
    // A repeated key: prost keeps the last, so this one cannot be read in place.
    let mut twice = s("host", "a").encode_to_vec();
    twice.extend(s("host", "b").encode_to_vec());
    let mut body = point.encode_to_vec();
    crate::wire::bytes(&mut body, 7, &twice);
    point
        .attributes
        .push(kv("code", any_value::Value::IntValue(200)));
    crate::wire::bytes(&mut body, 7, &point.attributes[2].encode_to_vec());
    // A value of a string and then an int: the later member of the oneof wins.
    crate::wire::bytes(&mut body, 7, b"\x0a\x04late\x12\x05\x0a\x01x\x18\x07");

    let bytes = bytes::Bytes::from(body);
    let mut attributes = Vec::new();
    input::NumberPoint::read(&bytes, &mut attributes).unwrap();
    let read: Vec<_> = attributes.iter().map(|(k, v)| (*k, v.as_ref())).collect();
    assert_eq!(
        read,
        [
            ("cpu", "0"),
            ("mode", "idle"),
            ("host", "b"),
            ("code", "200"),
            ("late", "7")
        ]
    );
    assert!(matches!(attributes[0].1, std::borrow::Cow::Borrowed(_)));
    assert!(bytes.as_ptr_range().contains(&attributes[2].0.as_ptr()));
}

#[test]
fn a_damaged_number_point_fails_the_payload() {
    let mut request = crate::otlp::skim::tests::metrics_request();
    let point = plain_point().encode_to_vec();
    // The point's last field cut short inside a gauge whose own framing is intact.
    let cut = bytes::Bytes::copy_from_slice(&point[..point.len() - 1]);
    let mut gauge = Vec::new();
    crate::wire::bytes(&mut gauge, 1, &cut);
    let mut metric = Vec::new();
    crate::wire::string(&mut metric, 1, "damaged");
    crate::wire::bytes(&mut metric, 5, &gauge);
    request.resource_metrics[0].scope_metrics[0].metrics.clear();
    let mut body = request.encode_to_vec();
    // Appended to the first resource's first scope would need re-framing; a resource of
    // its own is simpler: ResourceMetrics { scope_metrics: [ { metrics: [metric] } ] }.
    let mut scope = Vec::new();
    crate::wire::bytes(&mut scope, 2, &metric);
    let mut resource = Vec::new();
    crate::wire::bytes(&mut resource, 2, &scope);
    crate::wire::bytes(&mut body, 1, &resource);
    let body = bytes::Bytes::from(body);
    assert!(
        input::MetricsRequest::decode(body.clone()).is_ok(),
        "framing intact"
    );
    assert!(convert_payloads([&body], &ConvertOptions::default()).is_err());
}

proptest::proptest! {
    #![proptest_config(crate::testing::cases(512))]

    /// A histogram point read in place gives what prost's decoding gives, and fails where
    /// it fails.
    #[test]
    fn mutated_histogram_points_read_as_prost_reads_them(
        body in crate::otlp::skim::tests::mutated(rich_histogram_point().encode_to_vec())
    ) {
        let (ours, prost) = both_histogram_readings(&body);
        proptest::prop_assert_eq!(ours, prost);
    }

    /// A point read in place gives what prost's decoding gives, and fails where it fails.
    #[test]
    fn mutated_number_points_read_as_prost_reads_them(
        body in proptest::prop_oneof![
            crate::otlp::skim::tests::mutated(rich_point().encode_to_vec()),
            crate::otlp::skim::tests::mutated(plain_point().encode_to_vec()),
        ]
    ) {
        let (ours, prost) = both_readings(&body);
        proptest::prop_assert_eq!(ours, prost);
    }

    /// Whatever prost reads as `opentelemetry-proto` messages, [`input`] reads the same,
    /// merged fields, replaced oneofs and packed repeats included.
    #[test]
    fn mutated_requests_read_the_same_as_opentelemetry_proto_reads_them(
        body in crate::otlp::skim::tests::mutated(
            crate::otlp::skim::tests::metrics_request().encode_to_vec()
        )
    ) {
        if let Ok(request) = ExportMetricsServiceRequest::decode(body.as_slice()) {
            // Compared encoded: a changed byte can make a double NaN, which is not equal to
            // itself.
            proptest::prop_assert_eq!(
                through_input(&body).unwrap().encode_to_vec(),
                read_fields(request).encode_to_vec()
            );
        }
    }
}
