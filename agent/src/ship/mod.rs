//! Shipping to the collector: batching, retry, and checkpoints after delivery.
//!
//! - [`client`]: one OTLP/gRPC export, classified retryable or permanent.
//! - [`metrics`]: the [`metrics::MetricsQueue`] scrapers and host metrics push into, and
//!   the shipper that drains it.
//!
//! The [`LogShipper`] takes records from the tailer's bounded channel and sends one batch
//! at a time (`max_lines`, `max_bytes`, or whatever arrived within `max_wait`). A batch is
//! retried with backoff until the collector takes it; meanwhile the channel fills and the
//! tailer stops reading. Only then do the batch's files' checkpoints move, and are saved —
//! one batch in flight keeps acknowledgements in file order. A batch the collector refuses
//! for good (INVALID_ARGUMENT, ...) can never succeed: it is logged, counted and dropped,
//! and its checkpoints move too, or the agent would replay it forever.

pub mod client;
pub mod metrics;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};
use vigil_core::retry::Backoff;

use crate::checkpoint::{Checkpoints, FileKey};
use crate::config::CollectorConfig;
use crate::tail::{TailedRecord, lock};
use crate::telemetry::Telemetry;
use client::{Accepted, CollectorClient, ShipError};

/// The instrumentation scope of the records the agent makes.
pub const SCOPE_NAME: &str = "vigil-agent";

/// How a batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Accepted(Accepted),
    /// Refused for good; the reason.
    Refused(String),
}

/// Sends `attempt` until it succeeds or fails for good, backing off between tries and
/// honouring the collector's `RetryInfo` (capped at the backoff's maximum).
pub async fn deliver<F, Fut>(
    signal: &'static str,
    backoff: &Backoff,
    retry_max: Duration,
    telemetry: &Telemetry,
    mut attempt: F,
) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Accepted, ShipError>>,
{
    let mut tries: u32 = 0;
    loop {
        match attempt().await {
            Ok(accepted) => return Delivery::Accepted(accepted),
            Err(ShipError::Permanent { reason }) => {
                telemetry
                    .ship_failures
                    .with_label_values(&[signal, "permanent"])
                    .inc();
                return Delivery::Refused(reason);
            }
            Err(ShipError::Retryable {
                reason,
                retry_after,
            }) => {
                telemetry
                    .ship_failures
                    .with_label_values(&[signal, "retryable"])
                    .inc();
                let delay = backoff.delay_honouring(tries, retry_after, retry_max);
                warn!(signal, error = %reason, retry_in = ?delay, "export to the collector failed; retrying");
                tokio::time::sleep(delay).await;
                tries = tries.saturating_add(1);
            }
        }
    }
}

pub struct LogShipper {
    records: mpsc::Receiver<TailedRecord>,
    client: CollectorClient,
    checkpoints: Arc<Mutex<Checkpoints>>,
    telemetry: Telemetry,
    backoff: Backoff,
    retry_max: Duration,
    max_lines: usize,
    max_bytes: usize,
    max_wait: Duration,
    /// A record that did not fit the last batch.
    carry: Option<TailedRecord>,
}

impl LogShipper {
    pub fn new(
        records: mpsc::Receiver<TailedRecord>,
        client: CollectorClient,
        config: &CollectorConfig,
        checkpoints: Arc<Mutex<Checkpoints>>,
        telemetry: Telemetry,
    ) -> Result<LogShipper, vigil_core::retry::BackoffError> {
        Ok(LogShipper {
            records,
            client,
            checkpoints,
            telemetry,
            backoff: Backoff::new(config.retry.initial, config.retry.max)?,
            retry_max: config.retry.max,
            max_lines: config.batch.max_lines.max(1),
            max_bytes: config.batch.max_bytes.0 as usize,
            max_wait: config.batch.max_wait,
            carry: None,
        })
    }

    /// Ships until the tailer hangs up and everything it sent is delivered.
    pub async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.ship(batch).await;
        }
        debug!("log shipper stopped");
    }

    /// The next batch: full, or what arrived within `max_wait` of its first record. None
    /// once the channel is closed and empty.
    async fn next_batch(&mut self) -> Option<Vec<TailedRecord>> {
        let first = match self.carry.take() {
            Some(record) => record,
            None => self.records.recv().await?,
        };
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < self.max_lines && bytes < self.max_bytes {
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Ok(Some(record)) if bytes + record.size > self.max_bytes => {
                    self.carry = Some(record);
                    break;
                }
                Ok(Some(record)) => {
                    bytes += record.size;
                    batch.push(record);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Some(batch)
    }

    async fn ship(&mut self, batch: Vec<TailedRecord>) {
        let lines = batch.len() as u64;
        let request = logs_request(&batch);
        let client = &self.client;
        let outcome = deliver(
            "logs",
            &self.backoff,
            self.retry_max,
            &self.telemetry,
            || client.export_logs(request.clone()),
        )
        .await;
        match outcome {
            Delivery::Accepted(accepted) => {
                if accepted.rejected > 0 {
                    warn!(rejected = accepted.rejected, message = %accepted.message, "the collector took a batch but rejected some records");
                }
                self.telemetry.lines_shipped.inc_by(lines);
            }
            Delivery::Refused(reason) => {
                error!(lines, error = %reason, "the collector refused a batch for good; dropping it");
                self.telemetry
                    .lines_dropped
                    .with_label_values(&["refused"])
                    .inc_by(lines);
            }
        }
        self.acknowledge(&batch);
    }

    /// Moves the checkpoints of the batch's files and saves them.
    fn acknowledge(&self, batch: &[TailedRecord]) {
        let mut furthest: HashMap<(FileKey, u32), u64> = HashMap::new();
        for record in batch {
            let offset = furthest
                .entry((record.ack.key, record.ack.generation))
                .or_default();
            *offset = (*offset).max(record.ack.offset);
        }
        let mut checkpoints = lock(&self.checkpoints);
        for ((key, generation), offset) in furthest {
            checkpoints.ack(key, generation, offset);
        }
        if let Err(e) = checkpoints.save() {
            self.telemetry.checkpoint_failures.inc();
            error!(error = %e, "cannot save checkpoints; a restart would replay more");
        }
    }
}

/// One request for a batch: records of the same file share one `ResourceLogs`.
pub fn logs_request(batch: &[TailedRecord]) -> ExportLogsServiceRequest {
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for record in batch {
        let i = *index
            .entry(Arc::as_ptr(&record.resource))
            .or_insert_with(|| {
                resource_logs.push(ResourceLogs {
                    resource: Some((*record.resource).clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(
                            opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                                name: SCOPE_NAME.into(),
                                version: env!("CARGO_PKG_VERSION").into(),
                                ..Default::default()
                            },
                        ),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                resource_logs.len() - 1
            });
        resource_logs[i].scope_logs[0]
            .log_records
            .push(record.record.clone());
    }
    ExportLogsServiceRequest { resource_logs }
}

#[cfg(test)]
mod tests;
