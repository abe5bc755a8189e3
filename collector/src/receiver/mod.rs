//! OTLP receivers: gRPC ([`grpc`]) and HTTP ([`http`]) in front of one [`Ingest`].
//!
//! A request is answered with success only after the buffer said the data is durable.
//! Every refusal keeps its retry meaning on the wire ([`Refusal`]): a full buffer is
//! 429 / RESOURCE_EXHAUSTED with a retry delay, bad input is 400 / INVALID_ARGUMENT.

pub mod auth;
pub mod grpc;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use vigil_core::Signal;
use vigil_core::buffer::{Buffer, BufferError, Record};
use vigil_core::otlp::{self, Encoding, Inspected};

use crate::telemetry::Telemetry;

/// What the receivers share: the buffer, the counters and the rules.
pub struct Ingest {
    buffer: Arc<dyn Buffer>,
    telemetry: Telemetry,
    exported: [bool; 3],
    default_tenant: Option<String>,
    auth: Option<auth::Tokens>,
    limiter: Option<auth::RateLimiter>,
}

/// Who sent a request, as the transport read it: the raw tenant header or metadata, and
/// the raw `authorization` value.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub tenant: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
}

/// Why a request was not taken. Each maps to one HTTP status and one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("this collector has no {0} exporter configured, so it does not accept {0}")]
    NotExported(Signal),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("tenant `{tenant}` is over its rate limit of {limit} records per second")]
    RateLimited {
        tenant: String,
        limit: f64,
        retry_after: Duration,
    },
    #[error(transparent)]
    Buffer(#[from] BufferError),
}

impl Refusal {
    /// The reason label on `refused_items_total`.
    fn reason(&self) -> &'static str {
        match self {
            Refusal::NotExported(_) => "not_exported",
            Refusal::Invalid(_) => "invalid",
            Refusal::TooLarge(_) | Refusal::Buffer(BufferError::TooLarge { .. }) => "too_large",
            Refusal::UnsupportedMediaType(_) => "unsupported_media_type",
            Refusal::Unauthenticated(_) => "unauthenticated",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::RateLimited { .. } => "rate_limited",
            Refusal::Buffer(BufferError::Full { .. }) => "buffer_full",
            Refusal::Buffer(_) => "buffer_unavailable",
        }
    }

    /// HTTP status and gRPC code of a refusal; OTLP clients retry 429, 502, 503 and 504 only.
    pub fn status(&self) -> (axum::http::StatusCode, tonic::Code) {
        use axum::http::StatusCode;
        match self {
            Refusal::NotExported(_) => (StatusCode::NOT_IMPLEMENTED, tonic::Code::Unimplemented),
            Refusal::Invalid(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            Refusal::TooLarge(_) | Refusal::Buffer(BufferError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, tonic::Code::InvalidArgument)
            }
            Refusal::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                tonic::Code::InvalidArgument,
            ),
            Refusal::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, tonic::Code::Unauthenticated),
            Refusal::Forbidden(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            Refusal::Buffer(BufferError::Full { .. }) | Refusal::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
            ),
            Refusal::Buffer(_) => (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable),
        }
    }

    /// How long the client should wait before sending again, for retryable refusals.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Buffer(e) => e.retry_after(),
            Refusal::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// A request that was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub items: u64,
    /// Data points the client should know will not reach the backend (partial success).
    pub rejected: u64,
    pub message: String,
}

#[derive(Debug, Clone, Copy)]
pub enum Transport {
    Grpc,
    Http,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// The `Export*ServiceResponse` for a taken request, in the request's encoding; delta
/// points the exporters cannot write are reported as a partial success.
pub fn response_body(signal: Signal, encoding: Encoding, accepted: Accepted) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

    fn encode<M: prost::Message + serde::Serialize>(encoding: Encoding, message: &M) -> Vec<u8> {
        match encoding {
            Encoding::Protobuf => message.encode_to_vec(),
            // Serialising a plain message to JSON does not fail.
            Encoding::Json => serde_json::to_vec(message).unwrap_or_default(),
        }
    }
    match signal {
        Signal::Metrics => {
            let partial_success = (accepted.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: i64::try_from(accepted.rejected).unwrap_or(i64::MAX),
                error_message: accepted.message,
            });
            encode(encoding, &ExportMetricsServiceResponse { partial_success })
        }
        Signal::Logs => encode(
            encoding,
            &ExportLogsServiceResponse {
                partial_success: None,
            },
        ),
        Signal::Traces => encode(
            encoding,
            &ExportTraceServiceResponse {
                partial_success: None,
            },
        ),
    }
}

/// Longest tenant id accepted; Loki and Tempo refuse longer ones.
const MAX_TENANT_LEN: usize = 150;

/// Checks a tenant id against what Loki and Tempo accept as `X-Scope-OrgID`.
pub fn check_tenant(tenant: &str) -> Result<(), String> {
    let valid_chars = tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c));
    if tenant.is_empty()
        || tenant.len() > MAX_TENANT_LEN
        || !valid_chars
        || tenant == "."
        || tenant == ".."
    {
        return Err(format!(
            "invalid tenant `{}`: use 1 to {MAX_TENANT_LEN} characters of A-Z a-z 0-9 ! - _ . * ' ( )",
            tenant.escape_debug()
        ));
    }
    Ok(())
}

impl Ingest {
    pub fn new(
        buffer: Arc<dyn Buffer>,
        telemetry: Telemetry,
        exported: [bool; 3],
        default_tenant: Option<String>,
    ) -> Ingest {
        Ingest {
            buffer,
            telemetry,
            exported,
            default_tenant,
            auth: None,
            limiter: None,
        }
    }

    /// Requires one of `tokens` on every request; each token writes into its own tenant.
    pub fn with_auth(mut self, tokens: auth::Tokens) -> Ingest {
        self.auth = Some(tokens);
        self
    }

    /// Limits the records per second of each tenant.
    pub fn with_rate_limit(mut self, limiter: auth::RateLimiter) -> Ingest {
        self.limiter = Some(limiter);
        self
    }

    pub fn is_ready(&self) -> bool {
        self.buffer.is_ready()
    }

    /// Decodes a body (already decompressed) and stores it. The caller's credentials and
    /// tenant are checked here, the same for every transport, before the body is decoded.
    pub async fn accept_body(
        &self,
        signal: Signal,
        encoding: Encoding,
        body: Bytes,
        caller: Caller<'_>,
        transport: Transport,
    ) -> Result<Accepted, Refusal> {
        let mut items = None;
        let result = match self.check(signal, caller) {
            Ok(tenant) => match otlp::inspect(signal, encoding, body) {
                Ok(inspected) => {
                    items = Some(inspected.items);
                    let allowed = match &self.limiter {
                        Some(limiter) => limiter.take(tenant.as_deref(), inspected.items),
                        None => Ok(()),
                    };
                    allowed.map(|()| (tenant, inspected))
                }
                Err(e) => Err(Refusal::Invalid(e.to_string())),
            },
            Err(refusal) => Err(refusal),
        };
        let result = match result {
            Ok((tenant, inspected)) => self.store(signal, tenant, inspected).await,
            Err(refusal) => Err(refusal),
        };
        self.count(signal, transport, &result, items);
        result
    }

    fn check(&self, signal: Signal, caller: Caller<'_>) -> Result<Option<String>, Refusal> {
        if !self.exported[signal.index()] {
            return Err(Refusal::NotExported(signal));
        }
        if let Some(tokens) = &self.auth {
            return tokens.tenant_of(caller).map(Some);
        }
        match caller.tenant {
            // Bytes that are not UTF-8 become U+FFFD, which check_tenant refuses.
            Some(raw) => {
                let tenant = String::from_utf8_lossy(raw);
                check_tenant(&tenant)
                    .map(|()| Some(tenant.into_owned()))
                    .map_err(Refusal::Invalid)
            }
            None => Ok(self.default_tenant.clone()),
        }
    }

    async fn store(
        &self,
        signal: Signal,
        tenant: Option<String>,
        inspected: Inspected,
    ) -> Result<Accepted, Refusal> {
        let mut accepted = Accepted {
            items: inspected.items,
            rejected: 0,
            message: String::new(),
        };
        if inspected.unsupported_points > 0 {
            accepted.rejected = inspected.unsupported_points;
            accepted.message = format!(
                "{} data points use delta temporality, which Prometheus remote write cannot \
                 represent; they are dropped. Configure the SDK for cumulative temporality.",
                inspected.unsupported_points
            );
        }
        if inspected.items == 0 {
            return Ok(accepted);
        }
        for piece in self.pieces(signal, &tenant, inspected)? {
            let items = u32::try_from(piece.items).unwrap_or(u32::MAX);
            let started = std::time::Instant::now();
            // A later piece refused after earlier ones were stored makes the client send
            // the whole request again: the stored pieces arrive twice, none is lost.
            self.buffer
                .push(Record::new(signal, tenant.clone(), items, piece.protobuf))
                .await?;
            self.telemetry
                .buffer_write_duration
                .with_label_values(&[signal.as_str()])
                .observe(started.elapsed().as_secs_f64());
            self.telemetry
                .buffered_items
                .with_label_values(&[signal.as_str()])
                .inc_by(piece.items);
        }
        Ok(accepted)
    }

    /// The request as records the buffer takes: whole, or split by resource, scope and
    /// item where the buffer's largest record (a broker's message limit) is smaller.
    fn pieces(
        &self,
        signal: Signal,
        tenant: &Option<String>,
        inspected: Inspected,
    ) -> Result<Vec<otlp::Piece>, Refusal> {
        let whole = otlp::Piece {
            protobuf: inspected.protobuf,
            items: inspected.items,
        };
        let Some(limit) = self.buffer.max_record_bytes() else {
            return Ok(vec![whole]);
        };
        let overhead = Record::new(signal, tenant.clone(), 0, Bytes::new()).encoded_len();
        if whole.protobuf.len() + overhead <= limit {
            return Ok(vec![whole]);
        }
        let pieces = otlp::split(signal, whole.protobuf, limit.saturating_sub(overhead)).map_err(
            |e| match e {
                otlp::SplitError::Decode(_) => Refusal::Invalid(e.to_string()),
                otlp::SplitError::ItemTooLarge { .. } => Refusal::TooLarge(e.to_string()),
            },
        )?;
        self.telemetry
            .split_requests
            .with_label_values(&[signal.as_str()])
            .inc();
        Ok(pieces)
    }

    fn count(
        &self,
        signal: Signal,
        transport: Transport,
        result: &Result<Accepted, Refusal>,
        known_items: Option<u64>,
    ) {
        match result {
            Ok(accepted) => self
                .telemetry
                .received_items
                .with_label_values(&[signal.as_str(), transport.as_str()])
                .inc_by(accepted.items),
            Err(refusal) => self.count_refusal(signal, transport, refusal, known_items),
        }
    }

    /// Counts a refused request. Transports call it for what they refuse themselves
    /// before the body reaches [`Ingest`] (unreadable, too large, wrong media type), so
    /// `refused_requests_total` sees every refusal.
    pub fn count_refusal(
        &self,
        signal: Signal,
        transport: Transport,
        refusal: &Refusal,
        known_items: Option<u64>,
    ) {
        let labels = [signal.as_str(), refusal.reason()];
        self.telemetry
            .refused_requests
            .with_label_values(&labels)
            .inc();
        // An undecodable body has no item count; only the request is counted.
        if let Some(items) = known_items {
            self.telemetry
                .refused_items
                .with_label_values(&labels)
                .inc_by(items);
        }
        tracing::debug!(%signal, transport = transport.as_str(), error = %refusal, "request refused");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_are_checked_like_loki_does() {
        assert!(check_tenant("team-a").is_ok());
        assert!(check_tenant("Team_1.prod(eu)*").is_ok());
        assert!(check_tenant("").is_err());
        assert!(check_tenant("..").is_err());
        assert!(check_tenant("a/b").is_err());
        assert!(check_tenant("tenant with spaces").is_err());
        assert!(check_tenant(&"x".repeat(151)).is_err());
    }
}
