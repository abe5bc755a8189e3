//! The reading side of one signal's stream: what a consumer owns, how it finds it again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, Value};
use tokio::time::Instant;
use tracing::warn;
use vigil_core::Signal;
use vigil_core::buffer::{
    BatchLimits, BufferError, Consumer, Delivery, DeliveryId, Record, now_ms,
};

use super::connection::Connection;
use super::reply::{self, StreamEntry};
use super::{BUFFER_EXPORTER, Inner};

/// The reading connection's response timeout: the longest block and some slack.
pub(super) fn reader_timeout(block: Duration) -> Duration {
    block + Duration::from_secs(5)
}

/// How the consumer re-lists its own PEL.
#[derive(Debug, Clone)]
enum Resync {
    /// At start: XREADGROUP from this id. Counts as a delivery, so a record that crashes
    /// the collector every time still reaches `max_deliveries`.
    Startup(String),
    /// After a dropped `next_batch`: XPENDING after this id, then XRANGE for the bodies.
    /// Reads only, so records still being exported are not counted as delivered again.
    Recover(String),
}

/// The reading side of one signal.
///
/// Cancel safety: every entry Redis hands out is in the group's PEL under this consumer
/// until it is acked, so dropping `next_batch` never loses data — at worst this consumer
/// no longer knows an entry it owns. Before each read that might be dropped with entries
/// in hand, the consumer sets `resync`; only when the entries are in `ready` is it cleared.
/// If the future is dropped in between, the next call lists its own PEL (XPENDING) and
/// picks up every owned entry it has not handed out. Those reads run on the same
/// connection as the dropped read, so Redis answers them only after that read finished.
/// Anything still missed is reclaimed by XAUTOCLAIM after `claim_idle`.
pub(super) struct RedisConsumer {
    inner: Arc<Inner>,
    signal: Signal,
    key: String,
    /// Dedicated to this consumer's reads (blocking XREADGROUP, XAUTOCLAIM, XPENDING).
    reader: Connection,
    /// `Endpoint::generation` when `reader` was opened; older means the master moved.
    generation: u64,
    block: Duration,
    next_id: u64,
    /// Read from Redis (owned in the PEL), not yet handed out.
    ready: VecDeque<(String, Record)>,
    /// Handed out, not yet acked.
    handed_out: HashMap<DeliveryId, String>,
    /// Stream ids in `ready` or `handed_out`.
    known: HashSet<String>,
    resync: Option<Resync>,
    /// Where the next XAUTOCLAIM scan continues.
    claim_cursor: String,
    last_claim: Option<Instant>,
}

impl RedisConsumer {
    pub(super) fn new(
        inner: Arc<Inner>,
        signal: Signal,
        reader: Connection,
        generation: u64,
        block: Duration,
    ) -> RedisConsumer {
        RedisConsumer {
            key: inner.keys[signal.index()].clone(),
            inner,
            signal,
            reader,
            generation,
            block,
            next_id: 0,
            ready: VecDeque::new(),
            handed_out: HashMap::new(),
            known: HashSet::new(),
            resync: Some(Resync::Startup("0".into())),
            claim_cursor: "0-0".into(),
            last_claim: None,
        }
    }

    async fn read<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, BufferError> {
        self.reconnect_if_moved().await?;
        match cmd.query_async(&mut self.reader.clone()).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost the group (restarted without persistence): recreate, retry.
                self.inner.ensure_group(&self.key).await?;
                let result = cmd.query_async(&mut self.reader.clone()).await;
                self.inner.settle(result)
            }
            result => self.inner.settle(result),
        }
    }

    /// Reopens the reading connection when Sentinel named a new master since it was opened.
    /// Entries already read keep their stream ids: the new master has them if they were
    /// replicated, and acking ids it never had does nothing.
    async fn reconnect_if_moved(&mut self) -> Result<(), BufferError> {
        let generation = self.inner.endpoint.generation();
        if generation == self.generation {
            return Ok(());
        }
        self.reader = self
            .inner
            .endpoint
            .connect(Some(reader_timeout(self.block)))
            .await
            .map_err(|e| self.inner.error(e))?;
        self.generation = generation;
        Ok(())
    }

    /// Marks the consumer unsure of its PEL until [`RedisConsumer::settled`].
    fn unsure(&mut self) -> bool {
        let was_sure = self.resync.is_none();
        if was_sure {
            self.resync = Some(Resync::Recover("0".into()));
        }
        was_sure
    }

    fn settled(&mut self, was_sure: bool) {
        if was_sure {
            self.resync = None;
        }
    }

    fn claim_due(&self) -> bool {
        self.claim_cursor != "0-0"
            || self
                .last_claim
                .is_none_or(|at| at.elapsed() >= self.inner.options.claim_idle / 2)
    }

    async fn fill(&mut self, limits: BatchLimits) -> Result<(), BufferError> {
        let count = limits.max_records.max(1);
        if let Some(resync) = self.resync.clone() {
            let (entries, startup) = match &resync {
                Resync::Startup(from) => {
                    let cmd = self.read_group(count, None, from);
                    let entries = reply::read_group(&self.read::<Value>(&cmd).await?);
                    let counts = self.delivery_counts(&entries).await?;
                    (with_counts(entries, &counts), true)
                }
                Resync::Recover(from) => (self.owned_after(from, count).await?, false),
            };
            // Move the cursor only once the page is admitted: a drop in between redoes it.
            let next = entries.last().map(|(e, _)| match startup {
                true => Resync::Startup(e.id.clone()),
                false => Resync::Recover(e.id.clone()),
            });
            self.admit(entries).await?;
            self.resync = next;
            return Ok(());
        }
        if self.claim_due() {
            let was_sure = self.unsure();
            let mut cmd = redis::cmd("XAUTOCLAIM");
            cmd.arg(&self.key)
                .arg(&self.inner.options.group)
                .arg(&self.inner.options.consumer)
                .arg(self.inner.options.claim_idle.as_millis() as u64)
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(count);
            let answer: Value = self.read(&cmd).await?;
            let parts = reply::array(&answer).unwrap_or_default();
            let entries = parts.get(1).map(reply::entries).unwrap_or_default();
            let counts = self.delivery_counts(&entries).await?;
            let taken_over = entries
                .iter()
                .filter(|e| e.record.is_some() && !self.known.contains(&e.id))
                .count();
            self.admit(with_counts(entries, &counts)).await?;
            self.inner
                .deliveries
                .reclaimed(self.signal, taken_over as u64);
            self.claim_cursor = parts
                .first()
                .and_then(reply::string)
                .unwrap_or_else(|| "0-0".into());
            self.last_claim = Some(Instant::now());
            self.settled(was_sure);
            if !self.ready.is_empty() {
                return Ok(());
            }
        }
        let was_sure = self.unsure();
        let cmd = self.read_group(count, Some(self.block), ">");
        let entries = reply::read_group(&self.read::<Value>(&cmd).await?);
        self.admit(entries.into_iter().map(|e| (e, 1)).collect())
            .await?;
        self.settled(was_sure);
        Ok(())
    }

    /// `XREADGROUP` of up to `count` entries after `from` (`>`: never delivered; an id:
    /// this consumer's own pending entries), blocking up to `block` when given.
    fn read_group(&self, count: usize, block: Option<Duration>, from: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.inner.options.group)
            .arg(&self.inner.options.consumer)
            .arg("COUNT")
            .arg(count);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        cmd
    }

    /// Owned PEL entries after `from` this consumer does not know, with their bodies.
    async fn owned_after(
        &mut self,
        from: &str,
        count: usize,
    ) -> Result<Vec<(StreamEntry, u64)>, BufferError> {
        let start = match from {
            "0" => "-".to_string(),
            id => format!("({id}"),
        };
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.key)
            .arg(&self.inner.options.group)
            .arg(start)
            .arg("+")
            .arg(count)
            .arg(&self.inner.options.consumer);
        let pending = reply::pending_counts(&self.read::<Value>(&cmd).await?);
        let mut out = Vec::with_capacity(pending.len());
        for (id, deliveries) in pending {
            if self.known.contains(&id) {
                // Keep the cursor moving past entries already handed out.
                out.push((StreamEntry { id, record: None }, 0));
                continue;
            }
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&self.key).arg(&id).arg(&id);
            let found = reply::entries(&self.read::<Value>(&cmd).await?);
            let record = found.into_iter().next().and_then(|e| e.record);
            out.push((StreamEntry { id, record }, deliveries));
        }
        Ok(out)
    }

    /// Delivery counts of `entries` (now owned by this consumer), from XPENDING.
    async fn delivery_counts(
        &mut self,
        entries: &[StreamEntry],
    ) -> Result<HashMap<String, u64>, BufferError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let mut cmd = redis::cmd("XPENDING");
        cmd.arg(&self.key)
            .arg(&self.inner.options.group)
            .arg(&first.id)
            .arg(&last.id)
            .arg(entries.len())
            .arg(&self.inner.options.consumer);
        Ok(reply::pending_counts(&self.read::<Value>(&cmd).await?)
            .into_iter()
            .collect())
    }

    /// Puts read entries into `ready`; dead-letters the undecodable and the over-delivered;
    /// acks entries Redis says were deleted.
    async fn admit(&mut self, entries: Vec<(StreamEntry, u64)>) -> Result<(), BufferError> {
        let max = self.inner.options.max_deliveries;
        for (entry, deliveries) in entries {
            if self.known.contains(&entry.id) {
                continue;
            }
            let Some(raw) = entry.record else {
                if deliveries > 0 {
                    // Deleted while pending: nothing to deliver, drop it from the PEL.
                    self.release(&entry.id).await?;
                }
                continue;
            };
            let reason = match Record::decode(raw.clone()) {
                Err(e) => Some(format!("record in redis does not decode: {e}")),
                Ok(_) if deliveries > max => Some(format!(
                    "delivered {deliveries} times without an ack (max_deliveries {max})"
                )),
                Ok(record) => {
                    if deliveries > 1 {
                        self.inner.deliveries.redelivered(self.signal, 1);
                    }
                    self.known.insert(entry.id.clone());
                    self.ready.push_back((entry.id.clone(), record));
                    None
                }
            };
            if let Some(reason) = reason {
                warn!(stream = %self.key, id = %entry.id, %reason, "dead-lettering a buffer entry");
                self.inner
                    .add_dead_letter(
                        &raw,
                        BUFFER_EXPORTER,
                        &reason,
                        now_ms(),
                        Some((&self.key, &entry.id)),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn release(&mut self, id: &str) -> Result<(), BufferError> {
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.key).arg(&self.inner.options.group).arg(id);
        self.read::<Value>(&cmd).await.map(drop)
    }

    /// The stream ids of handed-out deliveries; ids this consumer does not hold are skipped.
    fn stream_ids(&self, ids: &[DeliveryId]) -> Vec<&String> {
        ids.iter()
            .filter_map(|id| self.handed_out.get(id))
            .collect()
    }

    fn take(&mut self, limits: BatchLimits) -> Vec<Delivery> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, record)) = self.ready.front() {
            let size = record.payload.len();
            if !batch.is_empty()
                && (batch.len() >= limits.max_records || bytes + size > limits.max_bytes)
            {
                break;
            }
            let Some((stream_id, record)) = self.ready.pop_front() else {
                break;
            };
            bytes += size;
            let id = DeliveryId(self.next_id);
            self.next_id += 1;
            self.handed_out.insert(id, stream_id);
            batch.push(Delivery { id, record });
        }
        batch
    }
}

fn with_counts(
    entries: Vec<StreamEntry>,
    counts: &HashMap<String, u64>,
) -> Vec<(StreamEntry, u64)> {
    entries
        .into_iter()
        .map(|e| {
            // Not in the PEL any more (acked meanwhile): treat as a first delivery.
            let n = counts.get(&e.id).copied().unwrap_or(1);
            (e, n)
        })
        .collect()
}

#[async_trait]
impl Consumer for RedisConsumer {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Vec<Delivery>, BufferError> {
        loop {
            if !self.ready.is_empty() {
                return Ok(self.take(limits));
            }
            self.fill(limits).await?;
        }
    }

    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.inner.options.claim_idle / 3)
    }

    /// XCLAIM to itself with JUSTID: resets the entries' idle time without counting a
    /// delivery, so XAUTOCLAIM elsewhere leaves them alone.
    async fn keep_alive(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        let stream_ids = self.stream_ids(ids);
        if stream_ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(&self.key)
            .arg(&self.inner.options.group)
            .arg(&self.inner.options.consumer)
            .arg(0)
            .arg(&stream_ids)
            .arg("JUSTID");
        self.inner.query::<Value>(&cmd).await.map(drop)
    }

    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        let stream_ids = self.stream_ids(ids);
        if stream_ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XACK")
            .arg(&self.key)
            .arg(&self.inner.options.group)
            .arg(&stream_ids)
            .ignore();
        pipe.cmd("XDEL").arg(&self.key).arg(&stream_ids).ignore();
        self.inner.query_pipe(&pipe).await?;
        for id in ids {
            if let Some(stream_id) = self.handed_out.remove(id) {
                self.known.remove(&stream_id);
            }
        }
        Ok(())
    }
}
