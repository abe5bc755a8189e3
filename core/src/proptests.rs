//! Property tests of the decoders that read untrusted bytes: they never panic, they never
//! inflate past their limit, and what Vigil writes it reads back. Case counts are kept low
//! so the set takes seconds in a debug build; `PROPTEST_CASES` raises them.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    exponential_histogram_data_point::Buckets, metric::Data, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use proptest::prelude::*;
use prost::Message;

use crate::Signal;
use crate::otlp::{self, Encoding, Request};
use crate::remote_write::{self, Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use crate::snappy::{self, SnappyError};
use crate::testing::cases;
use crate::{config, loki};

/// A snappy block header: the declared decompressed length as a varint.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

fn text() -> impl Strategy<Value = String> {
    // Mostly ASCII with the characters that need escaping or sanitising, some non-ASCII.
    prop::string::string_regex("[a-zA-Z0-9_.:/ \"\\\\{}=,\n\t\u{0}é😀-]{0,12}").unwrap()
}

fn any_value() -> impl Strategy<Value = Option<AnyValue>> {
    prop_oneof![
        Just(None),
        text().prop_map(|s| Some(AnyValue {
            value: Some(any_value::Value::StringValue(s))
        })),
        any::<i64>().prop_map(|n| Some(AnyValue {
            value: Some(any_value::Value::IntValue(n))
        })),
        any::<f64>().prop_map(|n| Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(n))
        })),
        any::<bool>().prop_map(|b| Some(AnyValue {
            value: Some(any_value::Value::BoolValue(b))
        })),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(AnyValue {
            value: Some(any_value::Value::BytesValue(b))
        })),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let key = prop_oneof![
        text(),
        Just("service.name".to_owned()),
        Just("service.instance.id".to_owned()),
        Just("k8s.namespace.name".to_owned()),
        Just("level".to_owned()),
    ];
    prop::collection::vec(
        (key, any_value()).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..4,
    )
}

fn number_point() -> impl Strategy<Value = NumberDataPoint> {
    (attributes(), any::<u64>(), any::<f64>(), any::<u32>()).prop_map(
        |(attributes, time, value, flags)| NumberDataPoint {
            attributes,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(value)),
            flags,
            ..Default::default()
        },
    )
}

fn temporality() -> impl Strategy<Value = i32> {
    prop_oneof![
        Just(AggregationTemporality::Cumulative as i32),
        Just(AggregationTemporality::Delta as i32),
        any::<i32>(),
    ]
}

fn data() -> impl Strategy<Value = Option<Data>> {
    let gauge = prop::collection::vec(number_point(), 0..3)
        .prop_map(|data_points| Some(Data::Gauge(Gauge { data_points })));
    let sum = (
        prop::collection::vec(number_point(), 0..3),
        temporality(),
        any::<bool>(),
    )
        .prop_map(|(data_points, aggregation_temporality, is_monotonic)| {
            Some(Data::Sum(Sum {
                data_points,
                aggregation_temporality,
                is_monotonic,
            }))
        });
    // Counts and bounds of independent lengths: a sender may get them wrong.
    let histogram = (
        attributes(),
        prop::collection::vec(any::<u64>(), 0..5),
        prop::collection::vec(any::<f64>(), 0..5),
        any::<u64>(),
        prop::option::of(any::<f64>()),
        temporality(),
    )
        .prop_map(
            |(attributes, bucket_counts, explicit_bounds, count, sum, t)| {
                Some(Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        attributes,
                        bucket_counts,
                        explicit_bounds,
                        count,
                        sum,
                        ..Default::default()
                    }],
                    aggregation_temporality: t,
                }))
            },
        );
    let buckets = (any::<i32>(), prop::collection::vec(any::<u64>(), 0..5)).prop_map(
        |(offset, bucket_counts)| Buckets {
            offset,
            bucket_counts,
        },
    );
    let exponential = (
        prop_oneof![-12i32..22, any::<i32>()],
        prop::option::of(buckets.clone()),
        prop::option::of(buckets),
        any::<u64>(),
        any::<u64>(),
        temporality(),
    )
        .prop_map(|(scale, positive, negative, count, zero_count, t)| {
            Some(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    scale,
                    positive,
                    negative,
                    count,
                    zero_count,
                    ..Default::default()
                }],
                aggregation_temporality: t,
            }))
        });
    prop_oneof![Just(None), gauge, sum, histogram, exponential]
}

fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let metric = (text(), text(), data()).prop_map(|(name, unit, data)| Metric {
        name,
        unit,
        data,
        ..Default::default()
    });
    (attributes(), prop::collection::vec(metric, 0..4)).prop_map(|(attributes, metrics)| {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    })
}

fn logs_request() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let record = (
        attributes(),
        any_value(),
        any::<u64>(),
        any::<i32>(),
        text(),
        prop::collection::vec(any::<u8>(), 0..17),
        prop::collection::vec(any::<u8>(), 0..9),
    )
        .prop_map(
            |(attributes, body, time, severity_number, severity_text, trace_id, span_id)| {
                LogRecord {
                    attributes,
                    body,
                    time_unix_nano: time,
                    severity_number,
                    severity_text,
                    trace_id,
                    span_id,
                    ..Default::default()
                }
            },
        );
    (attributes(), prop::collection::vec(record, 0..4)).prop_map(|(attributes, log_records)| {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    })
}

fn write_request() -> impl Strategy<Value = WriteRequest> {
    let label = (text(), text()).prop_map(|(name, value)| Label { name, value });
    let sample =
        (any::<f64>(), any::<i64>()).prop_map(|(value, timestamp)| Sample { value, timestamp });
    let series = (
        prop::collection::vec(label, 0..4),
        prop::collection::vec(sample, 0..4),
    )
        .prop_map(|(labels, samples)| TimeSeries { labels, samples });
    let metadata =
        (any::<i32>(), text(), text(), text()).prop_map(|(t, name, help, unit)| MetricMetadata {
            r#type: t,
            metric_family_name: name,
            help,
            unit,
        });
    (
        prop::collection::vec(series, 0..4),
        prop::collection::vec(metadata, 0..2),
    )
        .prop_map(|(timeseries, metadata)| WriteRequest {
            timeseries,
            metadata,
        })
}

const SIGNALS: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn snappy_arbitrary_bytes_are_an_error_or_within_the_limit(
        body in prop::collection::vec(any::<u8>(), 0..256),
        limit in 0usize..512,
    ) {
        // Whatever the bytes, decoding returns; when it succeeds, the body declared (and
        // inflated to) no more than the limit.
        if remote_write::decode(&body, limit).is_ok() {
            prop_assert!(snap::raw::decompress_len(&body).unwrap() <= limit);
        }
        let _ = loki::decode(&body, limit);
    }

    #[test]
    fn snappy_header_over_the_limit_is_refused_before_reading_on(
        declared in 1025u64..=u64::from(u32::MAX),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A header declaring up to 4 GiB with a few bytes behind it: refused on the header.
        let body = [varint(declared), tail].concat();
        match snappy::decode_message::<WriteRequest>(&body, 1024) {
            Err(SnappyError::TooLarge { declared: d, limit }) => {
                prop_assert_eq!((d as u64, limit), (declared, 1024));
            }
            other => prop_assert!(false, "expected TooLarge, got {:?}", other),
        }
    }

    #[test]
    fn remote_write_round_trips(request in write_request()) {
        let body = remote_write::encode(&request).unwrap();
        let raw = request.encode_to_vec();
        prop_assert_eq!(snap::raw::decompress_len(&body).unwrap(), raw.len());
        let back = remote_write::decode(&body, raw.len()).unwrap();
        // Compared as bytes: a NaN sample is not equal to itself as an f64.
        prop_assert_eq!(back.encode_to_vec(), raw.clone());
        if !raw.is_empty() {
            let refused = remote_write::decode(&body, raw.len() - 1);
            let too_large = matches!(refused, Err(SnappyError::TooLarge { .. }));
            prop_assert!(too_large);
        }
    }

    #[test]
    fn otlp_arbitrary_bytes_decode_or_fail(body in prop::collection::vec(any::<u8>(), 0..256)) {
        for signal in SIGNALS {
            for encoding in [Encoding::Protobuf, Encoding::Json] {
                let Ok(inspected) = otlp::inspect(signal, encoding, Bytes::from(body.clone()))
                else {
                    continue;
                };
                // What the receiver stores splits without panicking.
                let _ = otlp::split(signal, inspected.protobuf, 64);
            }
        }
    }

    #[test]
    fn otlp_json_arbitrary_text_decodes_or_fails(
        body in prop::string::string_regex(
            r#"[{}\[\]":,. 0-9a-zA-Z_-]{0,64}"#
        ).unwrap(),
    ) {
        for signal in SIGNALS {
            let _ = otlp::inspect(signal, Encoding::Json, Bytes::from(body.clone()));
        }
    }

    #[test]
    fn metrics_survive_protobuf_json_split_and_conversion(request in metrics_request()) {
        let protobuf = request.encode_to_vec();
        let inspected =
            otlp::inspect(Signal::Metrics, Encoding::Protobuf, Bytes::from(protobuf.clone()))
                .unwrap();
        prop_assert_eq!(&inspected.protobuf[..], &protobuf[..]);
        // JSON as the proto crate writes it reads back to the same protobuf (bytes, for NaN).
        let json = serde_json::to_vec(&request).unwrap();
        match Request::decode(Signal::Metrics, Encoding::Json, &json).unwrap() {
            Request::Metrics(back) => prop_assert_eq!(back.encode_to_vec(), protobuf.clone()),
            other => prop_assert!(false, "decoded as {:?}", other),
        }
        let pieces = otlp::split(Signal::Metrics, Bytes::from(protobuf), 256);
        if let Ok(pieces) = pieces {
            prop_assert_eq!(pieces.iter().map(|p| p.items).sum::<u64>(), inspected.items);
        }
        let converted = remote_write::convert(
            std::slice::from_ref(&request),
            &remote_write::ConvertOptions::default(),
        );
        // Written straight to bytes, the request is what prost writes for its messages.
        let request = converted.request();
        prop_assert_eq!(request.encode_to_vec(), converted.protobuf.clone());
        prop_assert_eq!(request.timeseries.len() as u64, converted.samples);
        converted.body().unwrap();
    }

    #[test]
    fn logs_survive_split_and_loki_conversion(request in logs_request()) {
        let protobuf = request.encode_to_vec();
        let inspected =
            otlp::inspect(Signal::Logs, Encoding::Protobuf, Bytes::from(protobuf.clone()))
                .unwrap();
        if let Ok(pieces) = otlp::split(Signal::Logs, Bytes::from(protobuf), 200) {
            prop_assert_eq!(pieces.iter().map(|p| p.items).sum::<u64>(), inspected.items);
        }
        for structured_metadata in [true, false] {
            let opts = loki::LokiOptions {
                structured_metadata,
                ..Default::default()
            };
            let converted = loki::convert(std::slice::from_ref(&request), &opts, 1);
            let body = loki::encode(&converted.request).unwrap();
            let back = loki::decode(&body, usize::MAX).unwrap();
            prop_assert_eq!(back, converted.request);
        }
    }

    #[test]
    fn loki_labels_format_and_parse_back(
        labels in prop::collection::vec(
            (prop::string::string_regex("[a-zA-Z_][a-zA-Z0-9_]{0,8}").unwrap(), text()),
            0..5,
        ),
    ) {
        let mut labels = labels;
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        let text = loki::format_labels(labels.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        prop_assert_eq!(loki::parse_labels(&text).unwrap(), labels);
    }

    #[test]
    fn loki_label_parser_never_panics(text in "\\PC{0,48}") {
        let _ = loki::parse_labels(&text);
        let _ = loki::parse_labels(&format!("{{{text}}}"));
    }

    #[test]
    fn config_env_substitution_never_panics(text in "\\PC{0,64}") {
        let _ = config::substitute_env(&text, |name| (name.len() % 2 == 0).then(|| "v".repeat(3)));
        let _ = config::parse::<serde_yaml::Value>(&text);
    }
}
