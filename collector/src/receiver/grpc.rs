//! OTLP/gRPC: the three `Export` services from `opentelemetry-proto`, gzip accepted.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vigil_core::otlp;

use super::{Accepted, Ingest, Refusal, Transport};

/// One handle serving all three services.
#[derive(Clone)]
pub struct OtlpGrpc {
    ingest: Arc<Ingest>,
    tenant_key: String,
}

/// The three services, ready to add to a tonic server. `max_message_bytes` bounds a
/// message after decompression.
pub fn services(
    ingest: Arc<Ingest>,
    tenant_header: &str,
    max_message_bytes: usize,
) -> (
    MetricsServiceServer<OtlpGrpc>,
    LogsServiceServer<OtlpGrpc>,
    TraceServiceServer<OtlpGrpc>,
) {
    let svc = OtlpGrpc {
        ingest,
        tenant_key: tenant_header.to_ascii_lowercase(),
    };
    (
        MetricsServiceServer::new(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
        LogsServiceServer::new(svc.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
        TraceServiceServer::new(svc)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_message_bytes),
    )
}

impl OtlpGrpc {
    async fn accept<T>(
        &self,
        request: Request<T>,
        wrap: fn(T) -> otlp::Request,
    ) -> Result<Accepted, Status> {
        let tenant = match request.metadata().get(&self.tenant_key) {
            Some(v) => v
                .to_str()
                .map(|t| Some(t.to_string()))
                .map_err(|_| Refusal::Invalid(format!("{} is not visible ASCII", self.tenant_key))),
            None => Ok(None),
        };
        let request = wrap(request.into_inner());
        let tenant = match tenant {
            Ok(t) => t,
            Err(refusal) => {
                self.ingest.count_refusal(
                    request.signal(),
                    Transport::Grpc,
                    &refusal,
                    Some(request.items()),
                );
                return Err(grpc_status(&refusal));
            }
        };
        self.ingest
            .accept_request(request, tenant.as_deref(), Transport::Grpc)
            .await
            .map_err(|refusal| grpc_status(&refusal))
    }
}

/// A refusal as a gRPC status; retryable ones carry `RetryInfo`, which OTLP clients read.
fn grpc_status(refusal: &Refusal) -> Status {
    let (_, code) = refusal.status();
    match refusal.retry_after() {
        Some(delay) => Status::with_error_details(
            code,
            refusal.to_string(),
            ErrorDetails::with_retry_info(Some(delay)),
        ),
        None => Status::new(code, refusal.to_string()),
    }
}

#[tonic::async_trait]
impl MetricsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let accepted = self.accept(request, otlp::Request::Metrics).await?;
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (accepted.rejected > 0).then_some(ExportMetricsPartialSuccess {
                rejected_data_points: accepted.rejected as i64,
                error_message: accepted.message,
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.accept(request, otlp::Request::Logs).await?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.accept(request, otlp::Request::Traces).await?;
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data,
    };
    use tonic::metadata::AsciiMetadataValue;
    use vigil_core::Signal;
    use vigil_core::buffer::Buffer;
    use vigil_core::buffer::memory::MemoryBuffer;

    use super::*;
    use crate::telemetry::Telemetry;

    fn service(buffer: &MemoryBuffer, exported: [bool; 3]) -> (OtlpGrpc, Telemetry) {
        let telemetry = Telemetry::new();
        let ingest = Ingest::new(Arc::new(buffer.clone()), telemetry.clone(), exported, None);
        let svc = OtlpGrpc {
            ingest: Arc::new(ingest),
            tenant_key: "x-scope-orgid".into(),
        };
        (svc, telemetry)
    }

    fn logs(records: usize) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord::default(); records],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn refused(telemetry: &Telemetry, signal: Signal, reason: &str) -> (u64, u64) {
        let labels = [signal.as_str(), reason];
        (
            telemetry.refused_requests.with_label_values(&labels).get(),
            telemetry.refused_items.with_label_values(&labels).get(),
        )
    }

    #[tokio::test]
    async fn logs_are_buffered_with_the_tenant_from_metadata() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, telemetry) = service(&buffer, [true; 3]);
        let mut request = Request::new(logs(2));
        request
            .metadata_mut()
            .insert("x-scope-orgid", AsciiMetadataValue::from_static("team-a"));
        LogsService::export(&svc, request).await.unwrap();

        let stats = buffer.stats().await;
        assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 1);
        assert_eq!(
            telemetry
                .received_items
                .with_label_values(&["logs", "grpc"])
                .get(),
            2
        );
    }

    #[tokio::test]
    async fn a_tenant_that_is_not_visible_ascii_is_refused_and_counted() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, telemetry) = service(&buffer, [true; 3]);
        let mut request = Request::new(logs(2));
        let value = AsciiMetadataValue::try_from("caf\u{e9}".as_bytes()).unwrap();
        request.metadata_mut().insert("x-scope-orgid", value);

        let status = LogsService::export(&svc, request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(refused(&telemetry, Signal::Logs, "invalid"), (1, 2));
        let stats = buffer.stats().await;
        assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 0);
    }

    #[tokio::test]
    async fn a_full_buffer_is_resource_exhausted_with_a_retry_delay() {
        let buffer = MemoryBuffer::new(64);
        let (svc, telemetry) = service(&buffer, [true; 3]);
        let mut big = logs(1);
        big.resource_logs[0].scope_logs[0].log_records[0].severity_text = "x".repeat(30);
        LogsService::export(&svc, Request::new(big.clone()))
            .await
            .unwrap();

        let status = LogsService::export(&svc, Request::new(big))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status
            .get_details_retry_info()
            .expect("RetryInfo is attached");
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));
        assert_eq!(refused(&telemetry, Signal::Logs, "buffer_full"), (1, 1));
    }

    #[tokio::test]
    async fn a_signal_without_exporter_is_unimplemented() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, telemetry) = service(&buffer, [true, false, true]);
        let status = LogsService::export(&svc, Request::new(logs(3)))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(refused(&telemetry, Signal::Logs, "not_exported"), (1, 3));
    }

    #[tokio::test]
    async fn delta_metrics_get_a_partial_success() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, _) = service(&buffer, [true; 3]);
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "requests".into(),
                        data: Some(Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default(); 2],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let response = MetricsService::export(&svc, Request::new(request))
            .await
            .unwrap()
            .into_inner();
        let partial = response.partial_success.unwrap();
        assert_eq!(partial.rejected_data_points, 2);
    }
}
