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
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| {
                        Status::invalid_argument(format!(
                            "{} is not visible ASCII",
                            self.tenant_key
                        ))
                    })?
                    .to_string(),
            ),
            None => None,
        };
        self.ingest
            .accept_request(
                wrap(request.into_inner()),
                tenant.as_deref(),
                Transport::Grpc,
            )
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
