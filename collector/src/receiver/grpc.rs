//! OTLP/gRPC: the three `Export` methods, gzip and zstd accepted.
//!
//! The services are served with a pass-through codec rather than the prost-generated
//! servers of `opentelemetry-proto`: the request bytes reach [`Ingest`] exactly as they
//! came, so they are validated by the same code as OTLP/HTTP, stored in the buffer without
//! a decode-and-re-encode round trip, and an undecodable message is answered
//! INVALID_ARGUMENT and counted (the generated servers answer INTERNAL before our code
//! runs, which OTLP clients treat as a different kind of failure).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tonic::body::Body as TonicBody;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use vigil_core::Signal;
use vigil_core::otlp::Encoding;

use super::{Caller, Ingest, Refusal, Transport};

/// Which OTLP service a [`ExportServer`] serves.
pub trait OtlpService: Send + Sync + 'static {
    const NAME: &'static str;
    const SIGNAL: Signal;
}

pub enum Metrics {}
pub enum Logs {}
pub enum Traces {}

impl OtlpService for Metrics {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const SIGNAL: Signal = Signal::Metrics;
}

impl OtlpService for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const SIGNAL: Signal = Signal::Logs;
}

impl OtlpService for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const SIGNAL: Signal = Signal::Traces;
}

/// The `Export` method of one signal, on raw request bytes.
#[derive(Clone)]
pub struct Export {
    ingest: Arc<Ingest>,
    tenant_key: String,
    signal: Signal,
}

impl Export {
    /// Stores one export request; the answer is the encoded `Export*ServiceResponse`.
    pub async fn export(&self, request: Request<Bytes>) -> Result<Response<Bytes>, Status> {
        let (metadata, _, body) = request.into_parts();
        let caller = Caller {
            tenant: metadata.get(&self.tenant_key).map(|v| v.as_encoded_bytes()),
            authorization: metadata.get("authorization").map(|v| v.as_encoded_bytes()),
        };
        let accepted = self
            .ingest
            .accept_body(
                self.signal,
                Encoding::Protobuf,
                body,
                caller,
                Transport::Grpc,
            )
            .await
            .map_err(|refusal| grpc_status(&refusal))?;
        Ok(Response::new(Bytes::from(super::response_body(
            self.signal,
            Encoding::Protobuf,
            accepted,
        ))))
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

/// One OTLP gRPC service, ready for `tonic::transport::Server::add_service`.
pub struct ExportServer<S> {
    export: Export,
    max_message_bytes: usize,
    _service: PhantomData<S>,
}

impl<S> Clone for ExportServer<S> {
    fn clone(&self) -> Self {
        ExportServer {
            export: self.export.clone(),
            max_message_bytes: self.max_message_bytes,
            _service: PhantomData,
        }
    }
}

impl<S: OtlpService> NamedService for ExportServer<S> {
    const NAME: &'static str = S::NAME;
}

/// The three services. `max_message_bytes` bounds a message after decompression.
pub fn services(
    ingest: Arc<Ingest>,
    tenant_header: &str,
    max_message_bytes: usize,
) -> (
    ExportServer<Metrics>,
    ExportServer<Logs>,
    ExportServer<Traces>,
) {
    (
        server(ingest.clone(), tenant_header, max_message_bytes),
        server(ingest.clone(), tenant_header, max_message_bytes),
        server(ingest, tenant_header, max_message_bytes),
    )
}

fn server<S: OtlpService>(
    ingest: Arc<Ingest>,
    tenant_header: &str,
    max_message_bytes: usize,
) -> ExportServer<S> {
    ExportServer {
        export: Export {
            ingest,
            tenant_key: tenant_header.to_ascii_lowercase(),
            signal: S::SIGNAL,
        },
        max_message_bytes,
        _service: PhantomData,
    }
}

struct ExportMethod(Export);

impl UnaryService<Bytes> for ExportMethod {
    type Response = Bytes;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let export = self.0.clone();
        Box::pin(async move { export.export(request).await })
    }
}

impl<S, B> tower::Service<http::Request<B>> for ExportServer<S>
where
    S: OtlpService,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<TonicBody>;
    type Error = Infallible;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let is_export = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(S::NAME))
            == Some("/Export");
        if !is_export {
            let status = Status::unimplemented(format!("{} has only Export", S::NAME));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = ExportMethod(self.export.clone());
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut accepted = EnabledCompressionEncodings::default();
            accepted.enable(CompressionEncoding::Gzip);
            accepted.enable(CompressionEncoding::Zstd);
            // Answers go uncompressed whatever the client accepts: an export response is a
            // few bytes, and compressing one cost a new zstd context (megabytes allocated
            // and zeroed) or gzip state per request, on both ends, for nothing.
            let mut grpc = Grpc::new(PassThrough)
                .apply_compression_config(accepted, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// A codec that hands over message bytes as they are, both ways.
#[derive(Clone, Copy, Default)]
struct PassThrough;

impl Codec for PassThrough {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = PassThrough;
    type Decoder = PassThrough;

    fn encoder(&mut self) -> PassThrough {
        PassThrough
    }

    fn decoder(&mut self) -> PassThrough {
        PassThrough
    }
}

impl Encoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for PassThrough {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data,
    };
    use prost::Message;
    use tonic::metadata::AsciiMetadataValue;
    use vigil_core::buffer::Buffer;
    use vigil_core::buffer::memory::MemoryBuffer;

    use super::*;
    use crate::telemetry::Telemetry;

    fn service(buffer: &MemoryBuffer, exported: [bool; 3], signal: Signal) -> (Export, Telemetry) {
        let telemetry = Telemetry::new();
        let ingest = Ingest::new(Arc::new(buffer.clone()), telemetry.clone(), exported, None);
        let svc = Export {
            ingest: Arc::new(ingest),
            tenant_key: "x-scope-orgid".into(),
            signal,
        };
        (svc, telemetry)
    }

    fn request(message: impl Message) -> Request<Bytes> {
        Request::new(Bytes::from(message.encode_to_vec()))
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
        let (svc, telemetry) = service(&buffer, [true; 3], Signal::Logs);
        let mut request = request(logs(2));
        request
            .metadata_mut()
            .insert("x-scope-orgid", AsciiMetadataValue::from_static("team-a"));
        svc.export(request).await.unwrap();

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
        let (svc, telemetry) = service(&buffer, [true; 3], Signal::Logs);
        let mut request = request(logs(2));
        let value = AsciiMetadataValue::try_from("caf\u{e9}".as_bytes()).unwrap();
        request.metadata_mut().insert("x-scope-orgid", value);

        let status = svc.export(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        // Refused before decoding, like OTLP/HTTP: the request is counted, its items unknown.
        assert_eq!(refused(&telemetry, Signal::Logs, "invalid"), (1, 0));
        let stats = buffer.stats().await;
        assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 0);
    }

    #[tokio::test]
    async fn a_full_buffer_is_resource_exhausted_with_a_retry_delay() {
        let buffer = MemoryBuffer::new(64);
        let (svc, telemetry) = service(&buffer, [true; 3], Signal::Logs);
        let mut big = logs(1);
        big.resource_logs[0].scope_logs[0].log_records[0].severity_text = "x".repeat(30);
        svc.export(request(big.clone())).await.unwrap();

        let status = svc.export(request(big)).await.unwrap_err();
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
        let (svc, telemetry) = service(&buffer, [true, false, true], Signal::Logs);
        let status = svc.export(request(logs(3))).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
        assert_eq!(refused(&telemetry, Signal::Logs, "not_exported"), (1, 0));
    }

    #[tokio::test]
    async fn garbage_is_invalid_argument_and_counted() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, telemetry) = service(&buffer, [true; 3], Signal::Logs);
        let garbage = Request::new(Bytes::from_static(b"\xff\xff\xff\xff not protobuf"));
        let status = svc.export(garbage).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("ExportLogsServiceRequest"),
            "{}",
            status.message()
        );
        assert_eq!(refused(&telemetry, Signal::Logs, "invalid"), (1, 0));
    }

    /// Two delta points, which the collector refuses in a partial success.
    fn delta_metrics() -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
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
        }
    }

    #[tokio::test]
    async fn delta_metrics_get_a_partial_success() {
        let buffer = MemoryBuffer::new(1 << 20);
        let (svc, _) = service(&buffer, [true; 3], Signal::Metrics);
        let response = svc
            .export(super::tests::request(delta_metrics()))
            .await
            .unwrap()
            .into_inner();
        let response = ExportMetricsServiceResponse::decode(response).unwrap();
        let partial = response.partial_success.unwrap();
        assert_eq!(partial.rejected_data_points, 2);
    }

    #[tokio::test]
    async fn answers_are_not_compressed_even_when_the_client_accepts_it() {
        use http_body_util::BodyExt;
        use tower::Service;

        let buffer = MemoryBuffer::new(1 << 20);
        let telemetry = Telemetry::new();
        let ingest = Ingest::new(Arc::new(buffer), telemetry, [true; 3], None);
        let mut server = server::<Metrics>(Arc::new(ingest), "x-scope-orgid", 1 << 20);

        let message = delta_metrics().encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
        frame.extend_from_slice(&message);
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("/{}/Export", Metrics::NAME))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-accept-encoding", "zstd,gzip")
            .body(http_body_util::Full::new(Bytes::from(frame)))
            .unwrap();
        let response = server.call(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers().get("grpc-encoding"), None);

        let body = response.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().unwrap_or_default();
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..])
        );
        let bytes = body.to_bytes();
        assert_eq!(bytes[0], 0, "the answer's frame is flagged uncompressed");
        let answer = ExportMetricsServiceResponse::decode(&bytes[5..]).unwrap();
        assert_eq!(answer.partial_success.unwrap().rejected_data_points, 2);
    }
}
