//! Grafana Loki through its push API (`POST /loki/api/v1/push`, protobuf + snappy).
//!
//! API: <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>.
//! Stream labels come from an allow-list of attributes, everything else travels as
//! structured metadata ([`vigil_core::loki`]); entries are sorted per stream because Loki
//! refuses entries older than the newest of their stream unless out-of-order ingestion is
//! on. The tenant becomes `X-Scope-OrgID`. Loki answers 400 for data it will never take
//! (too old, too long, bad labels): such batches are dead-lettered, not retried.

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue};
use vigil_core::Signal;
use vigil_core::buffer::Record;
use vigil_core::loki::{self, LabelRule, LokiOptions};

use super::http::{BuildError, HttpSender, tenant_header};
use super::{ExportError, Exported, Exporter, decode_payloads};
use crate::config::LokiConfig;

pub struct Loki {
    sender: HttpSender,
    options: LokiOptions,
}

impl Loki {
    pub fn new(config: &LokiConfig) -> Result<Loki, BuildError> {
        Ok(Loki {
            sender: HttpSender::new(&config.endpoint, &config.delivery(), crate::USER_AGENT)?,
            options: LokiOptions {
                labels: config
                    .labels
                    .iter()
                    .map(|l| LabelRule {
                        attribute: l.attribute.clone(),
                        label: l.label.clone(),
                    })
                    .collect(),
                structured_metadata: config.structured_metadata,
            },
        })
    }
}

#[async_trait]
impl Exporter for Loki {
    fn name(&self) -> &'static str {
        "loki"
    }

    fn signal(&self) -> Signal {
        Signal::Logs
    }

    async fn export(
        &self,
        tenant: Option<&str>,
        records: &[Record],
    ) -> Result<Exported, ExportError> {
        let requests: Vec<ExportLogsServiceRequest> = decode_payloads(records)?;
        let received_ns = records.iter().map(|r| r.received_at_ms).min().unwrap_or(0) * 1_000_000;
        let converted = loki::convert(&requests, &self.options, received_ns);
        let mut headers = vec![
            (CONTENT_ENCODING, HeaderValue::from_static("snappy")),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
        ];
        headers.extend(tenant_header(tenant)?);
        if !converted.request.streams.is_empty() {
            let body = loki::encode(&converted.request)
                .map_err(|e| ExportError::permanent(format!("cannot encode Loki push: {e}")))?;
            self.sender.post(body, &headers).await?;
        }
        let mut dropped = Vec::new();
        if converted.dropped > 0 {
            dropped.push(("unrepresentable_log_record", converted.dropped));
        }
        Ok(Exported {
            items: converted.entries,
            dropped,
        })
    }
}
