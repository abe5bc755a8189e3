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
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::sync::mpsc;
use tracing::{debug, error, warn};
use vigil_core::retry::Backoff;

use crate::checkpoint::{Checkpoints, FileKey};
use crate::config::CollectorConfig;
use crate::tail::{TailedRecord, lock};
use crate::telemetry::Telemetry;
use client::{Accepted, CollectorClient, Encoded, ShipError};

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
        let request = Encoded::from_encoded(encode_logs_request(&batch));
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

/// The protobuf encoding of [`logs_request`]`(batch)`, written straight from the batch:
/// no record is copied into a request first (for a file tailed at full speed, that copy of
/// every line was a good part of the agent's work).
pub fn encode_logs_request(batch: &[TailedRecord]) -> Vec<u8> {
    use prost::encoding::{
        WireType, encode_key, encode_varint, encoded_len_varint, key_len, message,
    };
    let scope = scope();
    // Records grouped by file, files in the order they first appear, as in `logs_request`.
    let mut groups: Vec<(&Resource, Vec<&LogRecord>)> = Vec::new();
    let mut index: HashMap<*const Resource, usize> = HashMap::new();
    for record in batch {
        let i = *index
            .entry(Arc::as_ptr(&record.resource))
            .or_insert_with(|| {
                groups.push((&record.resource, Vec::new()));
                groups.len() - 1
            });
        groups[i].1.push(&record.record);
    }
    // ResourceLogs { resource = 1, scope_logs = 2 } and ScopeLogs { scope = 1,
    // log_records = 2 }, each behind its length.
    let lengths: Vec<(usize, usize)> = groups
        .iter()
        .map(|(resource, records)| {
            let scope_logs = message::encoded_len(1, &scope)
                + records
                    .iter()
                    .map(|r| message::encoded_len(2, *r))
                    .sum::<usize>();
            let resource_logs = message::encoded_len(1, *resource)
                + key_len(2)
                + encoded_len_varint(scope_logs as u64)
                + scope_logs;
            (scope_logs, resource_logs)
        })
        .collect();
    let total = lengths
        .iter()
        .map(|&(_, r)| key_len(1) + encoded_len_varint(r as u64) + r)
        .sum();
    let mut out = Vec::with_capacity(total);
    for ((resource, records), &(scope_logs, resource_logs)) in groups.iter().zip(&lengths) {
        encode_key(1, WireType::LengthDelimited, &mut out);
        encode_varint(resource_logs as u64, &mut out);
        message::encode(1, *resource, &mut out);
        encode_key(2, WireType::LengthDelimited, &mut out);
        encode_varint(scope_logs as u64, &mut out);
        message::encode(1, &scope, &mut out);
        for record in records {
            message::encode(2, *record, &mut out);
        }
    }
    out
}

fn scope() -> opentelemetry_proto::tonic::common::v1::InstrumentationScope {
    opentelemetry_proto::tonic::common::v1::InstrumentationScope {
        name: SCOPE_NAME.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
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
                        scope: Some(scope()),
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
