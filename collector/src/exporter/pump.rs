//! The loop around every exporter: read a batch from the buffer, send it per tenant,
//! retry what can be retried, dead-letter what cannot, and ack only what the backend took.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};
use vigil_core::buffer::{
    BatchLimits, Buffer, Consumer, DeadLetter, Delivery, DeliveryId, Record, now_ms,
};
use vigil_core::retry::Backoff;

use super::{ExportError, Exporter};
use crate::config::Delivery as DeliveryConfig;
use crate::telemetry::Telemetry;

pub struct Pump {
    exporter: Arc<dyn Exporter>,
    buffer: Arc<dyn Buffer>,
    config: DeliveryConfig,
    backoff: Backoff,
    telemetry: Telemetry,
    drain: Duration,
}

/// How long a draining pump waits for more records before it decides the buffer is empty.
const DRAIN_IDLE: Duration = Duration::from_millis(200);
/// Default of [`Pump::with_drain`].
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

/// When a pump stops. Shutdown starts a *drain*: requests in flight may finish (and be
/// acked, so a restart does not send them again), and what is ready in the buffer is still
/// sent while the backend takes it; nothing is retried any more. `drain` after shutdown,
/// whatever is still in progress is abandoned and stays in the buffer.
struct Stop {
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    deadline: Option<Instant>,
}

impl Stop {
    fn draining(&mut self) -> bool {
        if self.deadline.is_none() && *self.shutdown.borrow_and_update() {
            self.deadline = Some(Instant::now() + self.drain);
        }
        self.deadline.is_some()
    }

    /// Completes when work in progress must be abandoned. Cancel-safe.
    async fn abandon(&mut self) {
        if self.deadline.is_none() {
            let _ = self.shutdown.wait_for(|s| *s).await;
            self.deadline = Some(Instant::now() + self.drain);
        }
        if let Some(deadline) = self.deadline {
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Completes when shutdown is asked (at once if it was).
    async fn asked(&mut self) {
        let _ = self.shutdown.wait_for(|s| *s).await;
    }
}

/// How delivering one group ended.
enum Outcome {
    /// Delivered or dead-lettered: ack it.
    Done,
    /// Shutdown came first: leave it unacked, it is delivered again after restart.
    Interrupted,
}

impl Pump {
    pub fn new(
        exporter: Arc<dyn Exporter>,
        buffer: Arc<dyn Buffer>,
        config: DeliveryConfig,
        telemetry: Telemetry,
    ) -> Result<Pump, vigil_core::retry::BackoffError> {
        let backoff = Backoff::new(config.retry.initial, config.retry.max)?;
        Ok(Pump {
            exporter,
            buffer,
            config,
            backoff,
            telemetry,
            drain: DEFAULT_DRAIN,
        })
    }

    /// How long a shutdown may wait for requests in flight and for sending what is ready.
    pub fn with_drain(mut self, drain: Duration) -> Pump {
        self.drain = drain;
        self
    }

    /// Runs until `shutdown` turns true, then drains (see [`Stop`]). Records not acked by
    /// the end stay in the buffer.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let name = self.exporter.name();
        let mut stop = Stop {
            shutdown,
            drain: self.drain,
            deadline: None,
        };
        let mut consumer = match self.open_consumer(&mut stop).await {
            Some(c) => c,
            None => return,
        };
        info!(exporter = name, "exporter started");
        loop {
            let batch = if stop.draining() {
                // Draining: what is ready now; an empty buffer or the deadline ends it.
                tokio::select! {
                    biased;
                    _ = stop.abandon() => break,
                    batch = tokio::time::timeout(DRAIN_IDLE, self.fill_batch(consumer.as_mut())) => match batch {
                        Ok(batch) => batch,
                        Err(_) => break,
                    },
                }
            } else {
                tokio::select! {
                    biased;
                    _ = stop.asked() => continue,
                    batch = self.fill_batch(consumer.as_mut()) => batch,
                }
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    warn!(exporter = name, error = %e, "reading the buffer failed; retrying");
                    if stop.draining() || sleep_or_abandon(Duration::from_secs(1), &mut stop).await
                    {
                        break;
                    }
                    continue;
                }
            };
            let mut acks = Vec::with_capacity(batch.len());
            let mut interrupted = false;
            let in_hand: Vec<DeliveryId> = batch.iter().map(|d| d.id).collect();
            for group in by_tenant(batch) {
                let delivery = self.deliver(&group, &mut stop);
                match keeping_alive(consumer.as_mut(), &in_hand, delivery).await {
                    Outcome::Done => acks.extend(group.iter().map(|d| d.id)),
                    Outcome::Interrupted => {
                        interrupted = true;
                        break;
                    }
                }
            }
            self.ack(consumer.as_mut(), &acks, &mut stop).await;
            if interrupted {
                break;
            }
        }
        info!(exporter = name, "exporter stopped");
    }

    async fn open_consumer(&self, stop: &mut Stop) -> Option<Box<dyn Consumer>> {
        let mut attempt = 0;
        loop {
            match self.buffer.consumer(self.exporter.signal()).await {
                Ok(c) => return Some(c),
                Err(e) => {
                    warn!(exporter = self.exporter.name(), error = %e, "cannot open the buffer; retrying");
                    if stop.draining() || sleep_or_abandon(self.backoff.delay(attempt), stop).await
                    {
                        return None;
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// One batch: what is ready now, topped up for at most `linger` while not full.
    async fn fill_batch(
        &self,
        consumer: &mut dyn Consumer,
    ) -> Result<Vec<Delivery>, vigil_core::buffer::BufferError> {
        let max_records = self.config.batch.max_records;
        let max_bytes = self.config.batch.max_bytes.0 as usize;
        let mut batch = consumer
            .next_batch(BatchLimits {
                max_records,
                max_bytes,
            })
            .await?;
        let deadline = Instant::now() + self.config.batch.linger;
        loop {
            let bytes: usize = batch.iter().map(|d| d.record.payload.len()).sum();
            if batch.len() >= max_records || bytes >= max_bytes {
                return Ok(batch);
            }
            let limits = BatchLimits {
                max_records: max_records - batch.len(),
                max_bytes: max_bytes - bytes,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(batch),
                more = consumer.next_batch(limits) => match more {
                    // A consumer returns one record even when it alone exceeds the byte
                    // limit, so a batch may exceed max_bytes by at most one record.
                    Ok(more) => batch.extend(more),
                    // What is in hand was handed out and must be delivered now: the
                    // consumer counts it as in flight until acked, so dropping it here
                    // would strand it. The error shows again on the next read.
                    Err(e) => {
                        warn!(exporter = self.exporter.name(), error = %e, "topping up a batch failed; sending what is in hand");
                        return Ok(batch);
                    }
                },
            }
        }
    }

    async fn deliver(&self, group: &[Delivery], stop: &mut Stop) -> Outcome {
        let records: Vec<Record> = group.iter().map(|d| d.record.clone()).collect();
        match self.send_with_retry(&records, stop).await {
            Ok(()) => Outcome::Done,
            Err(None) => Outcome::Interrupted,
            Err(Some(reason)) if records.len() > 1 => {
                // One bad record must not take good ones down with it: send each alone.
                warn!(exporter = self.exporter.name(), records = records.len(), %reason,
                    "backend refused a batch; sending its records one by one");
                for record in &records {
                    match self
                        .send_with_retry(std::slice::from_ref(record), stop)
                        .await
                    {
                        Ok(()) => {}
                        Err(None) => return Outcome::Interrupted,
                        Err(Some(reason)) => {
                            if !self.dead_letter(record, reason, stop).await {
                                return Outcome::Interrupted;
                            }
                        }
                    }
                }
                Outcome::Done
            }
            Err(Some(reason)) => match self.dead_letter(&records[0], reason, stop).await {
                true => Outcome::Done,
                false => Outcome::Interrupted,
            },
        }
    }

    /// Ok when delivered; Err(Some(reason)) when permanently refused; Err(None) when
    /// stopping: a request in flight may finish within the drain, nothing is retried.
    async fn send_with_retry(
        &self,
        records: &[Record],
        stop: &mut Stop,
    ) -> Result<(), Option<String>> {
        let name = self.exporter.name();
        let signal = self.exporter.signal();
        let tenant = records.first().and_then(|r| r.tenant.as_deref());
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = stop.abandon() => return Err(None),
                r = tokio::time::timeout(self.config.timeout, self.exporter.export(tenant, records)) => r,
            };
            let result = result.unwrap_or_else(|_| {
                Err(ExportError::retryable(format!(
                    "no answer within {:?}",
                    self.config.timeout
                )))
            });
            let outcome = match &result {
                Ok(_) => "success",
                Err(ExportError::Retryable { .. }) => "retryable",
                Err(ExportError::Permanent { .. }) => "permanent",
            };
            self.telemetry
                .export_duration
                .with_label_values(&[name, outcome])
                .observe(started.elapsed().as_secs_f64());
            match result {
                Ok(exported) => {
                    self.telemetry
                        .exported_items
                        .with_label_values(&[signal.as_str(), name])
                        .inc_by(exported.items);
                    for (reason, count) in exported.dropped {
                        self.telemetry
                            .dropped_items
                            .with_label_values(&[signal.as_str(), reason])
                            .inc_by(count);
                    }
                    return Ok(());
                }
                Err(ExportError::Permanent { reason }) => return Err(Some(reason)),
                Err(ExportError::Retryable {
                    reason,
                    retry_after,
                }) => {
                    // Counts attempts, as the metric's help says, not the items they carried.
                    self.telemetry
                        .export_retries
                        .with_label_values(&[signal.as_str(), name])
                        .inc();
                    let delay = self.backoff.delay_honouring(
                        attempt,
                        retry_after,
                        self.config.retry.max_retry_after,
                    );
                    if stop.draining() {
                        warn!(exporter = name, error = %reason, "export failed while shutting down; left in the buffer");
                        return Err(None);
                    }
                    warn!(exporter = name, attempt, error = %reason, retry_in = ?delay, "export failed; retrying");
                    if sleep_or_asked(delay, stop).await {
                        return Err(None);
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Stores a refused record in the dead-letter store. False only on shutdown; a failing
    /// store is retried, because acking without it would lose the record.
    async fn dead_letter(&self, record: &Record, reason: String, stop: &mut Stop) -> bool {
        let name = self.exporter.name();
        error!(exporter = name, items = record.items, %reason, "backend refused data for good; dead-lettering it");
        let letter = DeadLetter {
            record: record.clone(),
            exporter: name.to_string(),
            reason,
            failed_at_ms: now_ms(),
        };
        let mut attempt = 0;
        loop {
            match self.buffer.dead_letter(letter.clone()).await {
                Ok(()) => {
                    self.telemetry
                        .dead_lettered_items
                        .with_label_values(&[record.signal.as_str(), name])
                        .inc_by(u64::from(record.items));
                    return true;
                }
                Err(e) => {
                    error!(exporter = name, error = %e, "cannot store dead letter; retrying");
                    if sleep_or_abandon(self.backoff.delay(attempt), stop).await {
                        return false;
                    }
                    attempt += 1;
                }
            }
        }
    }

    async fn ack(&self, consumer: &mut dyn Consumer, ids: &[DeliveryId], stop: &mut Stop) {
        if ids.is_empty() {
            return;
        }
        let mut attempt = 0;
        while let Err(e) = consumer.ack(ids).await {
            // Not acking means the batch is delivered again: a duplicate, never a loss.
            warn!(exporter = self.exporter.name(), error = %e, "ack failed; retrying");
            if sleep_or_abandon(self.backoff.delay(attempt), stop).await {
                return;
            }
            attempt += 1;
        }
    }
}

/// Splits a batch into runs of one tenant each, keeping order.
fn by_tenant(batch: Vec<Delivery>) -> Vec<Vec<Delivery>> {
    let mut groups: Vec<Vec<Delivery>> = Vec::new();
    for delivery in batch {
        match groups
            .iter_mut()
            .find(|g| g[0].record.tenant == delivery.record.tenant)
        {
            Some(group) => group.push(delivery),
            None => groups.push(vec![delivery]),
        }
    }
    groups
}

/// Runs `delivery`, meanwhile declaring the records `in_hand` still in progress as often
/// as the buffer asks, so a slow backend does not make them look abandoned and exported
/// twice by another collector. A failed keep-alive is only logged: the worst it costs is
/// that duplicate.
async fn keeping_alive<T>(
    consumer: &mut dyn Consumer,
    in_hand: &[DeliveryId],
    delivery: impl Future<Output = T>,
) -> T {
    let Some(every) = consumer.keep_alive_every().filter(|d| !d.is_zero()) else {
        return delivery.await;
    };
    tokio::pin!(delivery);
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            outcome = &mut delivery => return outcome,
            _ = tick.tick() => {
                if let Err(e) = consumer.keep_alive(in_hand).await {
                    warn!(error = %e, "declaring records in progress failed; another collector may export them too");
                }
            }
        }
    }
}

/// Sleeps; true if the drain deadline came first.
async fn sleep_or_abandon(delay: Duration, stop: &mut Stop) -> bool {
    tokio::select! {
        _ = stop.abandon() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

/// Sleeps; true if shutdown was asked first.
async fn sleep_or_asked(delay: Duration, stop: &mut Stop) -> bool {
    tokio::select! {
        _ = stop.asked() => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

#[cfg(test)]
mod tests;
