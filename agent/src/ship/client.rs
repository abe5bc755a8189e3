//! One OTLP/gRPC export to the collector: compression, bearer token, TLS, and a typed
//! answer that says whether to retry.
//!
//! Requests go out compressed with zstd unless configured otherwise. A receiver without
//! zstd answers UNIMPLEMENTED with the encodings it does take (`grpc-accept-encoding`, as
//! the gRPC compression spec says); the client then resends the same request with the best
//! of those (gzip, else none) and keeps to it, so an agent pointed at an older receiver
//! loses nothing and only logs one warning.
//!
//! A request is encoded once ([`Encoded`]) and each attempt sends those bytes: a retry
//! costs neither a deep copy of the request nor a second protobuf encoding.
//!
//! Codes are classified as the OTLP specification says: UNAVAILABLE, DEADLINE_EXCEEDED,
//! ABORTED, CANCELLED, OUT_OF_RANGE, DATA_LOSS, and RESOURCE_EXHAUSTED (the collector's
//! "buffer full", which comes with a `RetryInfo`) are retried; every other code
//! (INVALID_ARGUMENT, UNIMPLEMENTED, UNAUTHENTICATED, ...) is permanent. A connection that
//! breaks before any answer (the collector killed mid-request) is not an answer at all:
//! tonic reports it as UNKNOWN "transport error", and it is retried like UNAVAILABLE.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use prost::bytes::BufMut;
use tonic::client::Grpc;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

use crate::config::{CollectorConfig, Compression};

pub const USER_AGENT: &str = concat!("vigil-agent/", env!("CARGO_PKG_VERSION"));

/// Why an export failed, and whether it can succeed later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShipError {
    #[error("{reason}")]
    Retryable {
        reason: String,
        /// The delay the collector asked for (`RetryInfo`).
        retry_after: Option<Duration>,
    },
    #[error("{reason}")]
    Permanent { reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid collector endpoint `{endpoint}`: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("cannot read the TLS file {path}: {source}")]
    TlsFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the bearer token cannot be sent as gRPC metadata")]
    Token,
}

/// What an export reported besides success.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Items the collector took but could not use (OTLP partial success).
    pub rejected: i64,
    pub message: String,
}

/// An export request, protobuf-encoded once; cloning it shares the bytes.
#[derive(Debug)]
pub struct Encoded<T> {
    bytes: Arc<Vec<u8>>,
    _request: PhantomData<fn() -> T>,
}

// By hand: a derive would ask `T: Clone`, and only the bytes are cloned.
impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Encoded {
            bytes: self.bytes.clone(),
            _request: PhantomData,
        }
    }
}

impl<T: Message> Encoded<T> {
    pub fn new(request: &T) -> Self {
        Self::from_encoded(request.encode_to_vec())
    }

    /// Bytes that already are the protobuf encoding of a `T`.
    pub fn from_encoded(bytes: Vec<u8>) -> Self {
        Encoded {
            bytes: Arc::new(bytes),
            _request: PhantomData,
        }
    }
}

const METRICS_EXPORT: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The collector's OTLP/gRPC services over one lazily connected channel.
#[derive(Clone)]
pub struct CollectorClient {
    channel: Channel,
    /// The compression requests go out with: the configured one until the receiver turns
    /// it down, then what it accepts. Shared by every clone.
    compression: Arc<Mutex<Compression>>,
    metadata: MetadataMap,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "identity",
        }
    }

    /// What to send instead when the receiver refused this encoding and listed `accepted`
    /// (its `grpc-accept-encoding`); `None` when nothing cheaper in CPU is left to try.
    pub(crate) fn fallback(self, accepted: &str) -> Option<Compression> {
        let listed = |name: &str| accepted.split(',').any(|e| e.trim() == name);
        if listed(self.name()) {
            // It says it takes what it refused: the refusal was about something else.
            return None;
        }
        match self {
            Compression::Zstd if listed("gzip") => Some(Compression::Gzip),
            Compression::Zstd | Compression::Gzip => Some(Compression::None),
            Compression::None => None,
        }
    }
}

impl CollectorClient {
    /// Builds the client; nothing connects until the first export, so the agent starts
    /// (and reads, until its channel fills) while the collector is still down.
    pub fn new(config: &CollectorConfig) -> Result<CollectorClient, ClientError> {
        let endpoint_error = |source| ClientError::Endpoint {
            endpoint: config.endpoint.clone(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
            .map_err(endpoint_error)?
            .user_agent(USER_AGENT)
            .map_err(endpoint_error)?
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true);
        if config.endpoint.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(tls_config) = &config.tls {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|source| ClientError::TlsFile {
                        path: path.clone(),
                        source,
                    })
                };
                if let Some(path) = &tls_config.ca_file {
                    tls = tls.ca_certificate(Certificate::from_pem(read(path)?));
                }
                // A client certificate, for a collector that requires one (mutual TLS).
                if let (Some(cert), Some(key)) = (&tls_config.cert_file, &tls_config.key_file) {
                    tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
                }
                if let Some(name) = &tls_config.server_name {
                    tls = tls.domain_name(name.clone());
                }
            }
            endpoint = endpoint.tls_config(tls).map_err(endpoint_error)?;
        }
        let channel = endpoint.connect_lazy();
        let mut metadata = MetadataMap::new();
        if let Some(token) = &config.bearer_token {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| ClientError::Token)?;
            metadata.insert("authorization", value);
        }
        Ok(CollectorClient {
            channel,
            compression: Arc::new(Mutex::new(config.compression)),
            metadata,
        })
    }

    /// The compression requests go out with now.
    pub fn compression(&self) -> Compression {
        *self
            .compression
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// One unary call; a refusal of the request's compression is answered by sending the
    /// same bytes again with what the receiver accepts.
    async fn call<Req, Resp>(
        &self,
        path: &'static str,
        request: Encoded<Req>,
    ) -> Result<Resp, ShipError>
    where
        Resp: Message + Default + Send + 'static,
    {
        loop {
            let compression = self.compression();
            match self.call_once(path, request.clone(), compression).await {
                Err(status) => {
                    let Some(fallback) = refused_encoding(&status)
                        .and_then(|accepted| compression.fallback(accepted))
                    else {
                        return Err(classify(&status));
                    };
                    // Only the first caller to see the refusal switches and logs; the others
                    // just send again.
                    let switched = {
                        let mut now = self
                            .compression
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        let first = *now == compression;
                        if first {
                            *now = fallback;
                        }
                        first
                    };
                    if switched {
                        tracing::warn!(
                            refused = compression.name(),
                            now = fallback.name(),
                            "the collector does not accept this compression; sending with what it accepts (set collector.compression to silence this)"
                        );
                    }
                }
                Ok(response) => return Ok(response),
            }
        }
    }

    /// One unary call with already encoded request bytes, as the generated clients make it.
    async fn call_once<Req, Resp>(
        &self,
        path: &'static str,
        request: Encoded<Req>,
        compression: Compression,
    ) -> Result<Resp, tonic::Status>
    where
        Resp: Message + Default + Send + 'static,
    {
        let mut grpc = Grpc::new(self.channel.clone())
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip);
        match compression {
            Compression::Zstd => grpc = grpc.send_compressed(CompressionEncoding::Zstd),
            Compression::Gzip => grpc = grpc.send_compressed(CompressionEncoding::Gzip),
            Compression::None => {}
        }
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("service was not ready: {e}")))?;
        let mut request = tonic::Request::new(request.bytes);
        *request.metadata_mut() = self.metadata.clone();
        let codec = EncodedCodec::<Resp>(PhantomData);
        let response = grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await?;
        Ok(response.into_inner())
    }

    pub async fn export_logs(
        &self,
        request: Encoded<ExportLogsServiceRequest>,
    ) -> Result<Accepted, ShipError> {
        let response: ExportLogsServiceResponse = self.call(LOGS_EXPORT, request).await?;
        Ok(response
            .partial_success
            .map(|p| Accepted {
                rejected: p.rejected_log_records,
                message: p.error_message,
            })
            .unwrap_or_default())
    }

    pub async fn export_metrics(
        &self,
        request: Encoded<ExportMetricsServiceRequest>,
    ) -> Result<Accepted, ShipError> {
        let response: ExportMetricsServiceResponse = self.call(METRICS_EXPORT, request).await?;
        Ok(response
            .partial_success
            .map(|p| Accepted {
                rejected: p.rejected_data_points,
                message: p.error_message,
            })
            .unwrap_or_default())
    }
}

/// Sends the encoded request bytes as they are; decodes the response with prost.
struct EncodedCodec<Resp>(PhantomData<fn() -> Resp>);

impl<Resp: Message + Default + Send + 'static> Codec for EncodedCodec<Resp> {
    type Encode = Arc<Vec<u8>>;
    type Decode = Resp;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder<Resp>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder<Resp> {
        ResponseDecoder(PhantomData)
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Arc<Vec<u8>>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Arc<Vec<u8>>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

struct ResponseDecoder<Resp>(PhantomData<fn() -> Resp>);

impl<Resp: Message + Default> Decoder for ResponseDecoder<Resp> {
    type Item = Resp;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Resp>, tonic::Status> {
        Resp::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("cannot decode the response: {e}")))
    }
}

/// The receiver's `grpc-accept-encoding` when `status` is its refusal of the request's
/// compression (UNIMPLEMENTED with that header, per the gRPC compression spec).
fn refused_encoding(status: &tonic::Status) -> Option<&str> {
    if status.code() != tonic::Code::Unimplemented {
        return None;
    }
    status.metadata().get("grpc-accept-encoding")?.to_str().ok()
}

pub fn classify(status: &tonic::Status) -> ShipError {
    use tonic::Code;
    if status.code() == Code::Unknown && broken_connection(status) {
        return ShipError::Retryable {
            reason: format!(
                "the connection to the collector broke: {}",
                status.message()
            ),
            retry_after: None,
        };
    }
    let reason = format!(
        "collector answered {:?}: {}",
        status.code(),
        status.message()
    );
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss
        | Code::ResourceExhausted => ShipError::Retryable {
            reason,
            retry_after,
        },
        _ => ShipError::Permanent { reason },
    }
}

/// Whether tonic made `status` from a failed connection on this side (its source chain holds
/// a transport or I/O error) rather than received it from the collector.
fn broken_connection(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn codes_are_retryable_or_permanent() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Cancelled,
            Code::OutOfRange,
            Code::DataLoss,
            Code::ResourceExhausted,
        ] {
            assert!(
                matches!(
                    classify(&tonic::Status::new(code, "x")),
                    ShipError::Retryable { .. }
                ),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::Unimplemented,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Internal,
            Code::Unknown,
        ] {
            assert!(
                matches!(
                    classify(&tonic::Status::new(code, "x")),
                    ShipError::Permanent { .. }
                ),
                "{code:?}"
            );
        }
    }

    /// The collector killed while a request is in flight: the connection closes with no
    /// answer. That batch must be retried, not dropped.
    #[tokio::test]
    async fn a_connection_closed_mid_request_is_retryable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            while let Ok((mut socket, _)) = listener.accept().await {
                // Read the client's preface and request, then vanish without answering.
                let mut buf = [0u8; 1024];
                let _ = socket.read(&mut buf).await;
                drop(socket);
            }
        });
        let config: CollectorConfig =
            vigil_core::config::parse(&format!("endpoint: \"http://{addr}\"\n")).unwrap();
        let client = CollectorClient::new(&config).unwrap();
        let error = client
            .export_logs(Encoded::new(&ExportLogsServiceRequest::default()))
            .await
            .unwrap_err();
        assert!(matches!(error, ShipError::Retryable { .. }), "{error:?}");
    }

    #[test]
    fn retry_info_is_read() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "buffer full",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(
            classify(&status),
            ShipError::Retryable {
                reason: "collector answered ResourceExhausted: buffer full".into(),
                retry_after: Some(Duration::from_secs(3)),
            }
        );
    }
}
