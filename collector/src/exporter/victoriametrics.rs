//! VictoriaMetrics through Prometheus remote write 1.0.
//!
//! API: <https://docs.victoriametrics.com/victoriametrics/integrations/prometheus/> and the
//! remote write 1.0 specification (<https://prometheus.io/docs/specs/prw/remote_write_spec/>).
//! One backend request carries the series of up to `batch.max_records` buffered OTLP
//! requests. Conversion follows the OpenTelemetry Prometheus-compatibility specification
//! ([`vigil_core::remote_write`]); what cannot be represented (delta temporality) is counted
//! as dropped, never written wrongly. VictoriaMetrics accepts out-of-order samples, so
//! replays after a crash are harmless (the same sample twice is deduplicated by
//! VictoriaMetrics' `-dedup.minScrapeInterval` if set, and is the same value anyway).
//! Single-node VictoriaMetrics has no tenants; for the cluster version put the account in
//! the endpoint path (`/insert/<account>/prometheus/api/v1/write`).

use async_trait::async_trait;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue};
use vigil_core::Signal;
use vigil_core::buffer::Record;
use vigil_core::remote_write::{self, ConvertOptions};

use super::http::{BuildError, HttpSender};
use super::{ExportError, Exported, Exporter, undecodable};
use crate::config::VictoriaMetricsConfig;

pub struct VictoriaMetrics {
    sender: HttpSender,
    options: ConvertOptions,
}

impl VictoriaMetrics {
    pub fn new(config: &VictoriaMetricsConfig) -> Result<VictoriaMetrics, BuildError> {
        Ok(VictoriaMetrics {
            sender: HttpSender::new(&config.endpoint, &config.delivery(), crate::USER_AGENT)?,
            options: ConvertOptions {
                add_suffixes: config.add_suffixes,
                target_info: config.target_info,
                promote_resource_attributes: config.promote_resource_attributes.clone(),
            },
        })
    }
}

#[async_trait]
impl Exporter for VictoriaMetrics {
    fn name(&self) -> &'static str {
        "victoriametrics"
    }

    fn signal(&self) -> Signal {
        Signal::Metrics
    }

    async fn export(
        &self,
        _tenant: Option<&str>,
        records: &[Record],
    ) -> Result<Exported, ExportError> {
        let converted =
            remote_write::convert_payloads(records.iter().map(|r| &r.payload), &self.options)
                .map_err(undecodable)?;
        let dropped: Vec<(&'static str, u64)> = converted
            .dropped
            .iter()
            .map(|d| (d.reason.as_str(), d.data_points))
            .collect();
        let dropped_points: u64 = dropped.iter().map(|(_, n)| n).sum();
        let items = records
            .iter()
            .map(|r| u64::from(r.items))
            .sum::<u64>()
            .saturating_sub(dropped_points);
        if converted.samples > 0 {
            let body = converted
                .body()
                .map_err(|e| ExportError::permanent(format!("cannot encode remote write: {e}")))?;
            self.sender
                .post(
                    body,
                    &[
                        (
                            CONTENT_ENCODING,
                            HeaderValue::from_static(remote_write::CONTENT_ENCODING),
                        ),
                        (
                            CONTENT_TYPE,
                            HeaderValue::from_static(remote_write::CONTENT_TYPE),
                        ),
                        (
                            HeaderName::from_static("x-prometheus-remote-write-version"),
                            HeaderValue::from_static(remote_write::VERSION),
                        ),
                    ],
                )
                .await?;
        }
        Ok(Exported { items, dropped })
    }
}
