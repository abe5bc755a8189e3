//! The metrics input: a bounded queue that Prometheus scraping and host metrics push
//! encoded `ResourceMetrics` into, and the shipper that sends them with the logs' batching and
//! retry.
//!
//! The queue is bounded by the bytes it holds (`collector.metrics_queue`), which is its
//! memory: entries are encoded, and one target's scrape may be a hundred bytes or a few
//! megabytes. Metrics are sampled again at the next interval, so when the collector is
//! away the queue keeps the newest: pushing into a full queue drops the *oldest* entries
//! and counts them (`vigil_agent_metrics_dropped_total{reason="queue_full"}`). Nothing
//! blocks the producers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, warn};
use vigil_core::retry::Backoff;
use vigil_core::wire;

use super::client::{CollectorClient, Encoded};
use super::{Delivery, deliver};
use crate::config::CollectorConfig;
use crate::telemetry::Telemetry;

/// One `ResourceMetrics`, protobuf-encoded: what the inputs queue and the shipper sends.
/// Queued as bytes, an entry takes a fraction of the memory of the message, its size for
/// batching is its length, and a request is the entries' bytes one after another.
pub type EncodedMetrics = Vec<u8>;

/// A cloneable handle to the agent's metrics queue.
#[derive(Clone)]
pub struct MetricsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    entries: Mutex<Queued>,
    /// Most bytes of entries held.
    max_bytes: usize,
    ready: Notify,
    telemetry: Telemetry,
}

impl MetricsQueue {
    /// A queue of at most `max_bytes` of entries; the newest entry stays even when it
    /// alone is larger.
    pub fn new(max_bytes: usize, telemetry: Telemetry) -> MetricsQueue {
        MetricsQueue {
            inner: Arc::new(Inner {
                entries: Mutex::new(Queued::default()),
                max_bytes,
                ready: Notify::new(),
                telemetry,
            }),
        }
    }

    /// Queues entries for the collector; if the queue is full the oldest entries make room.
    pub fn push(&self, metrics: Vec<EncodedMetrics>) {
        if metrics.is_empty() {
            return;
        }
        let mut dropped = 0;
        {
            let mut queued = self.lock();
            for entry in metrics {
                queued.bytes += entry.len();
                queued.entries.push_back(entry);
            }
            while queued.bytes > self.inner.max_bytes && queued.entries.len() > 1 {
                if let Some(oldest) = queued.entries.pop_front() {
                    queued.bytes -= oldest.len();
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.inner
                .telemetry
                .metrics_dropped
                .with_label_values(&["queue_full"])
                .inc_by(dropped);
            warn!(dropped, "metrics queue full; dropped the oldest entries");
        }
        self.inner.ready.notify_one();
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Bytes of the entries waiting.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes up to `max_entries` entries, and more only while under `max_bytes` encoded.
    fn take(&self, max_entries: usize, max_bytes: usize) -> Vec<EncodedMetrics> {
        let mut queued = self.lock();
        let mut taken = Vec::new();
        let mut bytes = 0;
        while taken.len() < max_entries {
            let Some(next) = queued.entries.front() else {
                break;
            };
            let size = next.len();
            if !taken.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            taken.extend(queued.entries.pop_front());
        }
        queued.bytes -= bytes;
        taken
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.inner
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The entries in the queue and their bytes.
#[derive(Default)]
struct Queued {
    entries: VecDeque<EncodedMetrics>,
    bytes: usize,
}

pub struct MetricsShipper {
    queue: MetricsQueue,
    client: CollectorClient,
    telemetry: Telemetry,
    backoff: Backoff,
    retry_max: Duration,
    max_entries: usize,
    max_bytes: usize,
    max_wait: Duration,
}

impl MetricsShipper {
    pub fn new(
        queue: MetricsQueue,
        client: CollectorClient,
        config: &CollectorConfig,
        telemetry: Telemetry,
    ) -> Result<MetricsShipper, vigil_core::retry::BackoffError> {
        Ok(MetricsShipper {
            queue,
            client,
            telemetry,
            backoff: Backoff::new(config.retry.initial, config.retry.max)?,
            retry_max: config.retry.max,
            max_entries: config.batch.max_lines.max(1),
            max_bytes: config.batch.max_bytes.0 as usize,
            max_wait: config.batch.max_wait,
        })
    }

    /// Ships until `stop` turns true, then sends what is queued (the caller bounds how long
    /// that may take).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let stopping = *stop.borrow();
            if self.queue.is_empty() {
                if stopping {
                    break;
                }
                tokio::select! {
                    _ = self.queue.inner.ready.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            if !stopping && self.queue.len() < self.max_entries {
                // Let a batch fill, as the logs do.
                tokio::select! {
                    _ = tokio::time::sleep(self.max_wait) => {}
                    _ = stop.changed() => {}
                }
            }
            let batch = self.queue.take(self.max_entries, self.max_bytes);
            self.ship(batch).await;
        }
        debug!("metrics shipper stopped");
    }

    async fn ship(&self, batch: Vec<EncodedMetrics>) {
        if batch.is_empty() {
            return;
        }
        let entries = batch.len() as u64;
        // ExportMetricsServiceRequest: each entry is a `resource_metrics` field (1).
        let len = batch.iter().map(|e| wire::delimited_len(e.len())).sum();
        let mut bytes = Vec::with_capacity(len);
        for entry in &batch {
            wire::bytes(&mut bytes, 1, entry);
        }
        drop(batch);
        let request = Encoded::<ExportMetricsServiceRequest>::from_encoded(bytes);
        let client = &self.client;
        let outcome = deliver(
            "metrics",
            &self.backoff,
            self.retry_max,
            &self.telemetry,
            || client.export_metrics(request.clone()),
        )
        .await;
        match outcome {
            Delivery::Accepted(accepted) => {
                if accepted.rejected > 0 {
                    warn!(rejected = accepted.rejected, message = %accepted.message, "the collector took metrics but rejected some points");
                }
                self.telemetry.metrics_shipped.inc_by(entries);
            }
            Delivery::Refused(reason) => {
                error!(entries, error = %reason, "the collector refused metrics for good; dropping them");
                self.telemetry
                    .metrics_dropped
                    .with_label_values(&["refused"])
                    .inc_by(entries);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    use super::*;
    use crate::tail::string_attribute;

    fn entry(i: usize) -> EncodedMetrics {
        ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string_attribute("i", i.to_string())],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    fn ids(entries: &[EncodedMetrics]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let e = ResourceMetrics::decode(e.as_slice()).unwrap();
                let value = &e.resource.as_ref().unwrap().attributes[0].value;
                format!("{value:?}")
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_them() {
        let telemetry = Telemetry::new();
        let size = entry(0).len();
        // Room for three entries and most of a fourth.
        let queue = MetricsQueue::new(4 * size - 1, telemetry.clone());
        let producer = queue.clone();
        producer.push((0..2).map(entry).collect());
        producer.push((2..5).map(entry).collect());
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.bytes(), 3 * size);
        assert_eq!(ids(&queue.take(10, 1 << 20)), vec!["2", "3", "4"]);
        assert_eq!(queue.bytes(), 0);
        assert_eq!(
            telemetry
                .metrics_dropped
                .with_label_values(&["queue_full"])
                .get(),
            2
        );
        assert!(queue.is_empty());

        // An entry larger than the whole queue still waits, alone.
        let big = vec![0u8; 4 * size];
        producer.push(vec![entry(5), big.clone()]);
        assert_eq!(queue.take(10, 1 << 20), vec![big]);
    }

    #[test]
    fn take_respects_entry_and_byte_limits() {
        let queue = MetricsQueue::new(1 << 20, Telemetry::new());
        queue.push((0..10).map(entry).collect());
        assert_eq!(queue.take(4, 1 << 20).len(), 4);
        let one = entry(0).len();
        assert_eq!(queue.take(100, one * 2).len(), 2);
        assert_eq!(queue.take(100, 1).len(), 1, "one entry always goes");
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.bytes(), 3 * one);
    }
}
