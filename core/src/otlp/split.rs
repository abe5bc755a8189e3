//! Splitting one OTLP export request into several that each fit a size limit.
//!
//! A broker has a largest message (NATS' `max_payload`, 1 MiB by default), and OTLP clients
//! send requests far larger than that. The request is cut along its own structure, never
//! inside an item: resources are packed greedily into requests; a resource too large alone
//! is cut into copies of itself each carrying some of its scopes; a scope too large alone
//! into copies carrying some of its log records, spans or metrics. Every piece keeps its
//! resource, scope and schema URLs, so each is a complete request an exporter reads like
//! any other. An item (one log record, span or metric) larger than the limit on its own
//! cannot be cut without changing what it says, and is refused.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{Metric, ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use super::{log_records, metric_points, spans};
use crate::Signal;

/// The largest a length-delimited field's key and length prefix can be (1-byte key for the
/// low field numbers OTLP uses, 10-byte varint length at most).
const FIELD_OVERHEAD: usize = 11;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("the request does not decode as {0}")]
    Decode(&'static str),
    #[error("one {what} alone is {size} bytes, over the {limit}-byte limit; it cannot be split")]
    ItemTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
}

/// One piece of a split request: protobuf bytes and the items (data points, log records,
/// spans) it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub protobuf: Bytes,
    pub items: u64,
}

/// Splits a protobuf export request of `signal` into pieces of at most `limit` bytes each.
/// A request already within the limit comes back whole, as it was.
pub fn split(signal: Signal, protobuf: Bytes, limit: usize) -> Result<Vec<Piece>, SplitError> {
    match signal {
        Signal::Metrics => pieces(protobuf, limit, "ExportMetricsServiceRequest", |r| {
            metric_points(r).0
        }),
        Signal::Logs => pieces(protobuf, limit, "ExportLogsServiceRequest", log_records),
        Signal::Traces => pieces(protobuf, limit, "ExportTraceServiceRequest", spans),
    }
}

fn pieces<R: Level>(
    protobuf: Bytes,
    limit: usize,
    message: &'static str,
    items: impl Fn(&R) -> u64,
) -> Result<Vec<Piece>, SplitError> {
    let request = R::decode(protobuf.as_ref()).map_err(|_| SplitError::Decode(message))?;
    if protobuf.len() <= limit {
        // The bytes as they came: a re-encoding need not be byte for byte the same.
        return Ok(vec![Piece {
            items: items(&request),
            protobuf,
        }]);
    }
    Ok(cut(request, limit)?
        .into_iter()
        .map(|r| Piece {
            items: items(&r),
            protobuf: Bytes::from(r.encode_to_vec()),
        })
        .collect())
}

/// A message with one repeated field of children it can be cut along: a request (of
/// resources), a resource (of scopes), a scope (of items).
trait Level: Message + Default + Clone + Sized {
    type Child: Cuttable;
    fn take_children(&mut self) -> Vec<Self::Child>;
    fn set_children(&mut self, children: Vec<Self::Child>);
}

/// What a child too large for the budget does: a level cuts itself further; an item is
/// refused.
trait Cuttable: Message + Sized {
    fn cut_to(self, budget: usize) -> Result<Vec<Self>, SplitError>;
}

/// Cuts `parent` into copies of itself, each with some of its children, each encoding to
/// at most `limit` bytes. Children keep their order.
fn cut<L: Level>(mut parent: L, limit: usize) -> Result<Vec<L>, SplitError> {
    if parent.encoded_len() <= limit {
        return Ok(vec![parent]);
    }
    let children = parent.take_children();
    let shell = parent;
    let budget = limit.saturating_sub(shell.encoded_len());
    let mut out = Vec::new();
    let mut group = Vec::new();
    let mut used = 0;
    for child in children {
        let size = child.encoded_len() + FIELD_OVERHEAD;
        let parts = match size > budget {
            true => child.cut_to(budget.saturating_sub(FIELD_OVERHEAD))?,
            false => vec![child],
        };
        for part in parts {
            let size = part.encoded_len() + FIELD_OVERHEAD;
            if used + size > budget && !group.is_empty() {
                let mut piece = shell.clone();
                piece.set_children(std::mem::take(&mut group));
                out.push(piece);
                used = 0;
            }
            used += size;
            group.push(part);
        }
    }
    if !group.is_empty() {
        let mut piece = shell;
        piece.set_children(group);
        out.push(piece);
    }
    Ok(out)
}

macro_rules! level {
    ($parent:ty, $field:ident, $child:ty) => {
        impl Level for $parent {
            type Child = $child;
            fn take_children(&mut self) -> Vec<$child> {
                std::mem::take(&mut self.$field)
            }
            fn set_children(&mut self, children: Vec<$child>) {
                self.$field = children;
            }
        }
    };
}

macro_rules! cuttable_level {
    ($($t:ty),*) => {$(
        impl Cuttable for $t {
            fn cut_to(self, budget: usize) -> Result<Vec<Self>, SplitError> {
                cut(self, budget)
            }
        }
    )*};
}

macro_rules! item {
    ($t:ty, $what:literal) => {
        impl Cuttable for $t {
            fn cut_to(self, budget: usize) -> Result<Vec<Self>, SplitError> {
                Err(SplitError::ItemTooLarge {
                    what: $what,
                    size: self.encoded_len(),
                    limit: budget,
                })
            }
        }
    };
}

level!(ExportLogsServiceRequest, resource_logs, ResourceLogs);
level!(ResourceLogs, scope_logs, ScopeLogs);
level!(ScopeLogs, log_records, LogRecord);
level!(ExportTraceServiceRequest, resource_spans, ResourceSpans);
level!(ResourceSpans, scope_spans, ScopeSpans);
level!(ScopeSpans, spans, Span);
level!(
    ExportMetricsServiceRequest,
    resource_metrics,
    ResourceMetrics
);
level!(ResourceMetrics, scope_metrics, ScopeMetrics);
level!(ScopeMetrics, metrics, Metric);
cuttable_level!(
    ResourceLogs,
    ScopeLogs,
    ResourceSpans,
    ScopeSpans,
    ResourceMetrics,
    ScopeMetrics
);
item!(LogRecord, "log record");
item!(Span, "span");
item!(Metric, "metric");

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn kv(key: &str, value: &str) -> opentelemetry_proto::tonic::common::v1::KeyValue {
        opentelemetry_proto::tonic::common::v1::KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    fn record(n: usize, size: usize) -> LogRecord {
        LogRecord {
            time_unix_nano: n as u64,
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue(format!(
                    "{n:06}{}",
                    "x".repeat(size)
                ))),
            }),
            ..Default::default()
        }
    }

    /// `resources` resources of `scopes` scopes of `records` records of about `size` bytes.
    fn logs(
        resources: usize,
        scopes: usize,
        records: usize,
        size: usize,
    ) -> ExportLogsServiceRequest {
        let mut n = 0;
        ExportLogsServiceRequest {
            resource_logs: (0..resources)
                .map(|r| ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![kv("service.name", &format!("svc-{r}"))],
                        ..Default::default()
                    }),
                    scope_logs: (0..scopes)
                        .map(|s| ScopeLogs {
                            scope: Some(InstrumentationScope {
                                name: format!("scope-{s}"),
                                ..Default::default()
                            }),
                            log_records: (0..records)
                                .map(|_| {
                                    n += 1;
                                    record(n, size)
                                })
                                .collect(),
                            schema_url: "https://opentelemetry.io/schemas/1.24.0".into(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    /// Every log record with its resource and scope, in order, across pieces.
    fn flatten(pieces: &[Piece]) -> Vec<(String, String, LogRecord)> {
        pieces
            .iter()
            .flat_map(|p| {
                ExportLogsServiceRequest::decode(p.protobuf.as_ref())
                    .unwrap()
                    .resource_logs
            })
            .flat_map(|rl| {
                let resource = format!("{:?}", rl.resource);
                rl.scope_logs.into_iter().flat_map(move |sl| {
                    let scope = format!("{:?}{}", sl.scope, sl.schema_url);
                    let resource = resource.clone();
                    sl.log_records
                        .into_iter()
                        .map(move |r| (resource.clone(), scope.clone(), r))
                })
            })
            .collect()
    }

    #[test]
    fn a_request_within_the_limit_comes_back_as_it_was() {
        let bytes = Bytes::from(logs(2, 2, 3, 10).encode_to_vec());
        let pieces = split(Signal::Logs, bytes.clone(), bytes.len()).unwrap();
        assert_eq!(
            pieces,
            vec![Piece {
                protobuf: bytes,
                items: 12
            }]
        );
    }

    #[test]
    fn resources_scopes_and_records_are_cut_to_fit_and_nothing_is_lost() {
        let request = logs(3, 4, 50, 200);
        let whole = Bytes::from(request.encode_to_vec());
        let limit = 4096;
        let pieces = split(Signal::Logs, whole.clone(), limit).unwrap();
        assert!(pieces.len() > 3, "{} pieces", pieces.len());
        assert!(pieces.iter().all(|p| p.protobuf.len() <= limit));
        assert_eq!(pieces.iter().map(|p| p.items).sum::<u64>(), 600);
        let one = vec![Piece {
            protobuf: whole,
            items: 600,
        }];
        assert_eq!(
            flatten(&pieces),
            flatten(&one),
            "same records, same order, same owners"
        );
    }

    #[test]
    fn a_single_resource_larger_than_the_limit_is_cut_by_scope_and_record() {
        let request = logs(1, 1, 100, 100);
        let pieces = split(Signal::Logs, request.encode_to_vec().into(), 1000).unwrap();
        assert!(pieces.len() >= 10);
        for piece in &pieces {
            let r = ExportLogsServiceRequest::decode(piece.protobuf.as_ref()).unwrap();
            assert_eq!(r.resource_logs.len(), 1);
            assert_eq!(
                r.resource_logs[0].scope_logs[0]
                    .scope
                    .as_ref()
                    .unwrap()
                    .name,
                "scope-0"
            );
        }
    }

    #[test]
    fn one_record_over_the_limit_is_refused_not_truncated() {
        let request = logs(1, 1, 2, 5000);
        let e = split(Signal::Logs, request.encode_to_vec().into(), 1000).unwrap_err();
        assert!(
            matches!(
                e,
                SplitError::ItemTooLarge {
                    what: "log record",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn spans_and_metrics_split_too() {
        let spans = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..40)
                        .map(|i| Span {
                            name: format!("span-{i}-{}", "y".repeat(100)),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let pieces = split(Signal::Traces, spans.encode_to_vec().into(), 1000).unwrap();
        assert!(pieces.len() > 4);
        assert_eq!(pieces.iter().map(|p| p.items).sum::<u64>(), 40);

        use opentelemetry_proto::tonic::metrics::v1::{Gauge, NumberDataPoint, metric};
        let metrics = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: (0..30)
                        .map(|i| Metric {
                            name: format!("m{i}"),
                            data: Some(metric::Data::Gauge(Gauge {
                                data_points: vec![NumberDataPoint::default(); 3],
                            })),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let pieces = split(Signal::Metrics, metrics.encode_to_vec().into(), 200).unwrap();
        assert!(pieces.len() > 2);
        assert_eq!(pieces.iter().map(|p| p.items).sum::<u64>(), 90);
        assert!(pieces.iter().all(|p| p.protobuf.len() <= 200));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        let garbage = Bytes::from_static(&[0xff; 64]);
        assert!(matches!(
            split(Signal::Logs, garbage, 10),
            Err(SplitError::Decode(_))
        ));
    }
}
