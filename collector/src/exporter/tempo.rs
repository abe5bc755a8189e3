//! Grafana Tempo through OTLP, over gRPC or HTTP.
//!
//! API: <https://grafana.com/docs/tempo/latest/api_docs/> (the distributor's OTLP
//! receivers). Spans need no conversion: the buffered requests of one tenant are merged
//! into one `ExportTraceServiceRequest`. The tenant becomes `X-Scope-OrgID`. gRPC codes are
//! classified as the OTLP specification says: UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED,
//! CANCELLED, OUT_OF_RANGE, DATA_LOSS, and RESOURCE_EXHAUSTED with a retry delay are
//! retried; everything else is permanent.

use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use tonic_types::StatusExt;
use vigil_core::Signal;
use vigil_core::buffer::Record;
use vigil_core::tls::ClientFiles;

use super::http::{BuildError, HttpSender, tenant_header};
use super::{ExportError, Exported, Exporter, decode_payloads};
use crate::config::{TempoConfig, TempoProtocol};

pub struct Tempo {
    transport: TempoTransport,
}

enum TempoTransport {
    /// The client, and the configured `headers` as metadata sent with every request.
    Grpc(TraceServiceClient<Channel>, tonic::metadata::MetadataMap),
    Http(HttpSender),
}

#[derive(Debug, thiserror::Error)]
pub enum TempoBuildError {
    #[error(transparent)]
    Http(#[from] BuildError),
    #[error("header `{0}` cannot be sent as gRPC metadata")]
    Metadata(String),
    #[error("invalid gRPC endpoint `{0}`: {1}")]
    Grpc(String, tonic::transport::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

impl Tempo {
    pub fn new(config: &TempoConfig) -> Result<Tempo, TempoBuildError> {
        let delivery = config.delivery();
        let transport = match config.protocol {
            TempoProtocol::Grpc => {
                let endpoint = Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| TempoBuildError::Grpc(config.endpoint.clone(), e))?
                    .user_agent(crate::USER_AGENT)
                    .map_err(|e| TempoBuildError::Grpc(config.endpoint.clone(), e))?
                    .timeout(delivery.timeout)
                    .connect_timeout(delivery.timeout.min(Duration::from_secs(10)));
                let endpoint = match &delivery.tls {
                    Some(tls) => {
                        let files = ClientFiles::load(tls).map_err(TempoBuildError::Tls)?;
                        endpoint
                            .tls_config(crate::tls::grpc_client_config(&files))
                            .map_err(|e| TempoBuildError::Grpc(config.endpoint.clone(), e))?
                    }
                    None => endpoint,
                };
                // Lazy: Tempo may come up after the collector; the first export connects.
                let client = TraceServiceClient::new(endpoint.connect_lazy())
                    .send_compressed(CompressionEncoding::Gzip)
                    .accept_compressed(CompressionEncoding::Gzip);
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (name, value) in &delivery.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(
                        name.to_ascii_lowercase().as_bytes(),
                    )
                    .map_err(|_| TempoBuildError::Metadata(name.clone()))?;
                    let value = value
                        .parse()
                        .map_err(|_| TempoBuildError::Metadata(name.clone()))?;
                    metadata.insert(key, value);
                }
                TempoTransport::Grpc(client, metadata)
            }
            TempoProtocol::Http => {
                let mut endpoint = config.endpoint.clone();
                if url::Url::parse(&endpoint).is_ok_and(|u| u.path() == "/") {
                    endpoint = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
                }
                TempoTransport::Http(HttpSender::new(&endpoint, &delivery, crate::USER_AGENT)?)
            }
        };
        Ok(Tempo { transport })
    }
}

#[async_trait]
impl Exporter for Tempo {
    fn name(&self) -> &'static str {
        "tempo"
    }

    fn signal(&self) -> Signal {
        Signal::Traces
    }

    async fn export(
        &self,
        tenant: Option<&str>,
        records: &[Record],
    ) -> Result<Exported, ExportError> {
        let requests: Vec<ExportTraceServiceRequest> = decode_payloads(records)?;
        let merged = ExportTraceServiceRequest {
            resource_spans: requests
                .into_iter()
                .flat_map(|r| r.resource_spans)
                .collect(),
        };
        let items = vigil_core::otlp::spans(&merged);
        match &self.transport {
            TempoTransport::Grpc(client, metadata) => {
                let mut request = tonic::Request::new(merged);
                *request.metadata_mut() = metadata.clone();
                if let Some(tenant) = tenant {
                    let value = tenant.parse().map_err(|_| {
                        ExportError::permanent(format!(
                            "tenant `{tenant}` is not valid gRPC metadata"
                        ))
                    })?;
                    request.metadata_mut().insert("x-scope-orgid", value);
                }
                client
                    .clone()
                    .export(request)
                    .await
                    .map_err(|s| classify(&s))?;
            }
            TempoTransport::Http(sender) => {
                let tenant = tenant_header(tenant)?;
                let mut headers = vec![(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-protobuf"),
                )];
                headers.extend(tenant);
                sender.post(merged.encode_to_vec(), &headers).await?;
            }
        }
        Ok(Exported {
            items,
            dropped: Vec::new(),
        })
    }
}

fn classify(status: &tonic::Status) -> ExportError {
    use tonic::Code;
    let reason = format!("tempo answered {:?}: {}", status.code(), status.message());
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss => ExportError::Retryable {
            reason,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Retryable {
            reason,
            retry_after,
        },
        _ => ExportError::Permanent { reason },
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use tonic_types::ErrorDetails;

    use super::*;

    #[test]
    fn grpc_codes_are_retryable_or_permanent_as_otlp_says() {
        let retryable = [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Cancelled,
            Code::OutOfRange,
            Code::DataLoss,
        ];
        let permanent = [
            Code::Unknown,
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::Unimplemented,
            Code::Internal,
            Code::Unauthenticated,
        ];
        for code in retryable {
            let error = classify(&tonic::Status::new(code, "boom"));
            assert!(
                matches!(
                    error,
                    ExportError::Retryable {
                        retry_after: None,
                        ..
                    }
                ),
                "{code:?}: {error:?}"
            );
        }
        for code in permanent {
            let error = classify(&tonic::Status::new(code, "boom"));
            assert!(
                matches!(error, ExportError::Permanent { .. }),
                "{code:?}: {error:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_is_retried_only_with_a_retry_delay() {
        let without = classify(&tonic::Status::resource_exhausted("ingestion rate limit"));
        assert!(
            matches!(without, ExportError::Permanent { .. }),
            "{without:?}"
        );

        let delay = Duration::from_secs(3);
        let with = classify(&tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "ingestion rate limit",
            ErrorDetails::with_retry_info(Some(delay)),
        ));
        assert_eq!(
            with,
            ExportError::Retryable {
                reason: "tempo answered ResourceExhausted: ingestion rate limit".into(),
                retry_after: Some(delay),
            }
        );
    }

    #[test]
    fn a_retry_delay_travels_with_any_retryable_code() {
        let delay = Duration::from_millis(1500);
        let error = classify(&tonic::Status::with_error_details(
            Code::Unavailable,
            "overloaded",
            ErrorDetails::with_retry_info(Some(delay)),
        ));
        assert!(
            matches!(error, ExportError::Retryable { retry_after: Some(d), .. } if d == delay),
            "{error:?}"
        );
    }
}
