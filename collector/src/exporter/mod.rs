//! Exporters: each one only knows how to turn buffered records into one backend request
//! and send it ([`Exporter::export`]). Batching, retry with backoff, acks and dead-lettering
//! wrap every exporter the same way, in [`pump`].
//!
//! - [`victoriametrics`]: Prometheus remote write 1.0.
//! - [`loki`]: Loki push (protobuf + snappy).
//! - [`tempo`]: OTLP over gRPC or HTTP.
//! - [`http`]: the HTTP sending and error classification the HTTP exporters share.

pub mod http;
pub mod loki;
pub mod pump;
pub mod tempo;
pub mod victoriametrics;

use std::time::Duration;

use async_trait::async_trait;
use vigil_core::Signal;
use vigil_core::buffer::Record;

/// What one successful export carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Exported {
    /// Items the backend accepted.
    pub items: u64,
    /// Items left out because the backend cannot represent them, by reason.
    pub dropped: Vec<(&'static str, u64)>,
}

/// Why an export failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Network trouble, 429, 5xx, timeouts: try again later, after `retry_after` if the
    /// backend said so.
    #[error("{reason}")]
    Retryable {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The backend refused this data and will refuse it again (4xx other than 429), or the
    /// record cannot be converted: dead-letter it.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl ExportError {
    pub fn retryable(reason: impl Into<String>) -> ExportError {
        ExportError::Retryable {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> ExportError {
        ExportError::Permanent {
            reason: reason.into(),
        }
    }
}

/// Sends records to one backend.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// `victoriametrics`, `loki`, `tempo`: used in metrics, logs and dead letters.
    fn name(&self) -> &'static str;

    fn signal(&self) -> Signal;

    /// Sends `records`, all of one tenant, as one backend request.
    async fn export(
        &self,
        tenant: Option<&str>,
        records: &[Record],
    ) -> Result<Exported, ExportError>;
}

/// Decodes the protobuf payloads of buffered records. A payload that does not decode was
/// damaged after the receiver validated it; retrying cannot help.
pub fn decode_payloads<M: prost::Message + Default>(
    records: &[Record],
) -> Result<Vec<M>, ExportError> {
    records
        .iter()
        .map(|r| M::decode(r.payload.as_ref()).map_err(undecodable))
        .collect()
}

/// The error for a buffered payload that does not decode: permanent, see
/// [`decode_payloads`].
pub fn undecodable(e: prost::DecodeError) -> ExportError {
    ExportError::permanent(format!("buffered record does not decode: {e}"))
}
