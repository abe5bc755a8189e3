//! The buffer between receivers and exporters.
//!
//! Receivers [`Buffer::push`] a [`Record`] (one OTLP export request, encoded as protobuf)
//! and answer the client only after `push` returned `Ok`: from then on the buffer owns the
//! data. Exporters open one [`Consumer`] per signal, read batches, and [`Consumer::ack`] them
//! only after the backend accepted them. Records that can never be delivered go to
//! [`Buffer::dead_letter`] with the reason.
//!
//! Implementations: [`disk`] (default, embedded, survives kill -9), [`memory`] (bounded,
//! for tests and throwaway runs). Redis Streams and NATS JetStream implement the same trait
//! in the collector crate.

pub mod disk;
pub mod memory;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes};

use crate::Signal;

/// One OTLP export request as it travels through the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub signal: Signal,
    /// The tenant the data belongs to; becomes `X-Scope-OrgID` at Loki and Tempo.
    pub tenant: Option<String>,
    /// When the receiver accepted the request, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// How many items (data points, log records, spans) the payload holds.
    pub items: u32,
    /// The export request, protobuf-encoded (`Export{Metrics,Logs,Trace}ServiceRequest`).
    pub payload: Bytes,
}

/// Errors decoding a stored [`Record`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("unknown record version {0}")]
    Version(u8),
    #[error("unknown signal {0}")]
    Signal(u8),
    #[error("tenant is not UTF-8")]
    Tenant,
}

const RECORD_VERSION: u8 = 1;

impl Record {
    pub fn new(signal: Signal, tenant: Option<String>, items: u32, payload: Bytes) -> Record {
        Record {
            signal,
            tenant,
            received_at_ms: now_ms(),
            items,
            payload,
        }
    }

    /// Bytes this record takes when encoded.
    pub fn encoded_len(&self) -> usize {
        1 + 1 + 8 + 4 + 2 + self.tenant.as_ref().map_or(0, |t| t.len()) + self.payload.len()
    }

    /// Appends the record's storage encoding: version, signal, received_at, items, tenant
    /// (u16 length + bytes), payload (the rest). Little-endian throughout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let tenant = self.tenant.as_deref().unwrap_or("");
        let tenant = &tenant.as_bytes()[..tenant.len().min(u16::MAX as usize)];
        out.reserve(self.encoded_len());
        out.put_u8(RECORD_VERSION);
        out.put_u8(self.signal as u8);
        out.put_u64_le(self.received_at_ms);
        out.put_u32_le(self.items);
        out.put_u16_le(tenant.len() as u16);
        out.put_slice(tenant);
        out.put_slice(&self.payload);
    }

    /// Decodes what [`Record::encode`] wrote. The payload shares `bytes`' allocation.
    pub fn decode(mut bytes: Bytes) -> Result<Record, RecordError> {
        if bytes.len() < 16 {
            return Err(RecordError::Truncated);
        }
        let version = bytes.get_u8();
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let raw_signal = bytes.get_u8();
        let signal = Signal::from_u8(raw_signal).ok_or(RecordError::Signal(raw_signal))?;
        let received_at_ms = bytes.get_u64_le();
        let items = bytes.get_u32_le();
        let tenant_len = bytes.get_u16_le() as usize;
        if bytes.len() < tenant_len {
            return Err(RecordError::Truncated);
        }
        let tenant = bytes.split_to(tenant_len);
        let tenant = match tenant.is_empty() {
            true => None,
            false => Some(String::from_utf8(tenant.to_vec()).map_err(|_| RecordError::Tenant)?),
        };
        Ok(Record {
            signal,
            tenant,
            received_at_ms,
            items,
            payload: bytes,
        })
    }
}

/// A record an exporter gave up on, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub record: Record,
    /// Which exporter gave up (`victoriametrics`, `loki`, `tempo`).
    pub exporter: String,
    /// The backend's answer or the conversion error, verbatim enough to act on.
    pub reason: String,
    pub failed_at_ms: u64,
}

const DEAD_LETTER_VERSION: u8 = 1;

impl DeadLetter {
    /// Appends the dead letter's storage encoding: version, failed_at, exporter (u16 length
    /// and bytes), reason (u32 length and bytes), then the record as [`Record::encode`]
    /// writes it (the rest). Little-endian throughout. Over-long exporter names and reasons
    /// are cut at their length field's limit, at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let exporter = cut_at_char_boundary(&self.exporter, u16::MAX as usize);
        let reason = cut_at_char_boundary(&self.reason, u32::MAX as usize);
        out.reserve(1 + 8 + 2 + exporter.len() + 4 + reason.len() + self.record.encoded_len());
        out.put_u8(DEAD_LETTER_VERSION);
        out.put_u64_le(self.failed_at_ms);
        out.put_u16_le(exporter.len() as u16);
        out.put_slice(exporter.as_bytes());
        out.put_u32_le(reason.len() as u32);
        out.put_slice(reason.as_bytes());
        self.record.encode(out);
    }

    /// Decodes what [`DeadLetter::encode`] wrote. Exporter and reason are decoded lossily:
    /// they are text for a human, and a damaged character is no reason to lose the record.
    pub fn decode(mut bytes: Bytes) -> Result<DeadLetter, RecordError> {
        if bytes.len() < 1 + 8 + 2 {
            return Err(RecordError::Truncated);
        }
        let version = bytes.get_u8();
        if version != DEAD_LETTER_VERSION {
            return Err(RecordError::Version(version));
        }
        let failed_at_ms = bytes.get_u64_le();
        let exporter_len = bytes.get_u16_le() as usize;
        if bytes.len() < exporter_len + 4 {
            return Err(RecordError::Truncated);
        }
        let exporter = String::from_utf8_lossy(&bytes.split_to(exporter_len)).into_owned();
        let reason_len = bytes.get_u32_le() as usize;
        if bytes.len() < reason_len {
            return Err(RecordError::Truncated);
        }
        let reason = String::from_utf8_lossy(&bytes.split_to(reason_len)).into_owned();
        Ok(DeadLetter {
            record: Record::decode(bytes)?,
            exporter,
            reason,
            failed_at_ms,
        })
    }
}

fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A record handed to an exporter, with the id to ack it by.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: DeliveryId,
    pub record: Record,
}

/// Opaque handle of one delivered record, meaningful only to the [`Consumer`] that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub u64);

/// How much one [`Consumer::next_batch`] may return.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_records: usize,
    /// Sum of payload bytes; a single record larger than this is still returned, alone.
    pub max_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// Over capacity: the client should retry later (429 / RESOURCE_EXHAUSTED).
    #[error("buffer is full ({}); retry later", .bound.describe(*.used, *.capacity))]
    Full {
        used: u64,
        capacity: u64,
        /// What `used` and `capacity` count.
        bound: Bound,
        retry_after: Duration,
    },
    /// The record can never fit (413 / INVALID_ARGUMENT).
    #[error("record of {size} bytes exceeds the buffer's limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The buffer (or the broker behind it) cannot be reached now (503 / UNAVAILABLE).
    #[error("buffer unavailable: {0}")]
    Unavailable(String),
    /// The buffer is closed (shutting down).
    #[error("buffer is closed")]
    Closed,
    #[error("buffer I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// What a full buffer ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Its byte bound (disk, memory, a JetStream stream's `max_bytes`).
    Bytes,
    /// Its entry bound (a Redis stream's `max_len`).
    Entries,
    /// The broker's own memory (Redis `maxmemory`): no figures of ours to give.
    BrokerMemory,
}

impl Bound {
    fn describe(self, used: u64, capacity: u64) -> String {
        match self {
            Bound::Bytes => format!("{used} of {capacity} bytes used"),
            Bound::Entries => format!("{used} of {capacity} entries used"),
            Bound::BrokerMemory => "the broker is out of memory".into(),
        }
    }
}

impl BufferError {
    /// How long a client should wait before retrying, when retrying makes sense.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            BufferError::Full { retry_after, .. } => Some(*retry_after),
            BufferError::Unavailable(_) | BufferError::Closed | BufferError::Io(_) => {
                Some(Duration::from_secs(1))
            }
            BufferError::TooLarge { .. } => None,
        }
    }
}

/// A point-in-time view of a buffer, for self-metrics and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BufferStats {
    /// Bytes the buffer holds (unacked records and not yet reclaimed space).
    pub used_bytes: u64,
    /// The configured bound.
    pub capacity_bytes: u64,
    /// Per signal, indexed by [`Signal::index`].
    pub signals: [SignalStats; 3],
    /// Dead letters dropped, oldest first, because the dead-letter store was full.
    pub dead_letters_dropped: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SignalStats {
    /// Records stored and not yet acked.
    pub pending_records: u64,
    /// Age of the oldest record not yet acked, if any.
    pub oldest_unacked_age: Option<Duration>,
    /// Records not yet handed to any consumer: the backlog an autoscaler scales on.
    /// `None` where the buffer does not tell it apart from `pending_records`.
    pub undelivered_records: Option<u64>,
    /// Records this process was handed again after an earlier delivery went unacked
    /// (a crash, a restart, an ack that never arrived); cumulative.
    pub redelivered_records: u64,
    /// Records this process took over from another consumer that held them too long
    /// (Redis XAUTOCLAIM); cumulative.
    pub reclaimed_records: u64,
}

/// Redeliveries and reclaims per signal, counted by a shared buffer's consumers and
/// reported in its [`BufferStats`].
#[derive(Debug, Default)]
pub struct DeliveryCounters {
    redelivered: [std::sync::atomic::AtomicU64; 3],
    reclaimed: [std::sync::atomic::AtomicU64; 3],
}

impl DeliveryCounters {
    pub fn redelivered(&self, signal: Signal, n: u64) {
        self.redelivered[signal.index()].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn reclaimed(&self, signal: Signal, n: u64) {
        self.reclaimed[signal.index()].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Copies the counts into `stats`.
    pub fn report(&self, stats: &mut BufferStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for signal in Signal::ALL {
            let s = &mut stats.signals[signal.index()];
            s.redelivered_records = self.redelivered[signal.index()].load(Relaxed);
            s.reclaimed_records = self.reclaimed[signal.index()].load(Relaxed);
        }
    }
}

/// Durable storage between receivers and exporters. See the module docs.
#[async_trait]
pub trait Buffer: Send + Sync + 'static {
    /// Stores one record; returns once it is durable under the buffer's policy.
    /// Errors say whether the client should retry ([`BufferError::retry_after`]).
    async fn push(&self, record: Record) -> Result<(), BufferError>;

    /// Opens the reading side for one signal. Each signal is consumed by one exporter per
    /// process; shared buffers (Redis, NATS) spread records over the consumers of all
    /// processes.
    async fn consumer(&self, signal: Signal) -> Result<Box<dyn Consumer>, BufferError>;

    /// The largest encoded record the buffer stores, when it has a limit well below the
    /// receivers' body limit (a broker's largest message). Receivers split larger
    /// requests into records that fit.
    fn max_record_bytes(&self) -> Option<usize> {
        None
    }

    /// Keeps a record no exporter will ever deliver, with the reason, for inspection and
    /// replay. The caller acks the original afterwards.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BufferError>;

    /// True while pushes can succeed (open, broker reachable).
    fn is_ready(&self) -> bool;

    async fn stats(&self) -> BufferStats;

    /// Flushes and closes. Pending pushes finish; later pushes get [`BufferError::Closed`].
    async fn close(&self) -> Result<(), BufferError>;
}

/// The reading side of one signal's queue.
#[async_trait]
pub trait Consumer: Send {
    /// Waits until at least one unacked, undelivered record is available, then returns as
    /// many as are ready within `limits` (always at least one). Cancel-safe: dropping the
    /// future loses nothing.
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Vec<Delivery>, BufferError>;

    /// Marks records as delivered to the backend; they will not be delivered again.
    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError>;

    /// How often records in hand must be declared still in progress, for buffers that hand
    /// records held too long to another consumer (Redis `claim_idle`, NATS `ack_wait`).
    /// `None`: records stay with this consumer until acked or dropped.
    fn keep_alive_every(&self) -> Option<Duration> {
        None
    }

    /// Declares handed-out records still in progress, so a slow export is not mistaken
    /// for a dead consumer and its records are not exported twice.
    async fn keep_alive(&mut self, _ids: &[DeliveryId]) -> Result<(), BufferError> {
        Ok(())
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips() {
        let record = Record {
            signal: Signal::Logs,
            tenant: Some("team-a".into()),
            received_at_ms: 1_700_000_000_123,
            items: 42,
            payload: Bytes::from_static(b"\x0a\x02hi"),
        };
        let mut buf = Vec::new();
        record.encode(&mut buf);
        assert_eq!(buf.len(), record.encoded_len());
        assert_eq!(Record::decode(Bytes::from(buf)).unwrap(), record);
    }

    #[test]
    fn record_without_tenant_round_trips() {
        let record = Record::new(Signal::Traces, None, 1, Bytes::from_static(b"x"));
        let mut buf = Vec::new();
        record.encode(&mut buf);
        assert_eq!(Record::decode(Bytes::from(buf)).unwrap(), record);
    }

    #[test]
    fn dead_letter_round_trips_and_rejects_truncation() {
        let letter = DeadLetter {
            record: Record::new(
                Signal::Logs,
                Some("team-a".into()),
                3,
                Bytes::from_static(b"p"),
            ),
            exporter: "loki".into(),
            reason: "400 Bad Request: entry out of order — ünïcode".into(),
            failed_at_ms: 1_700_000_000_999,
        };
        let mut buf = Vec::new();
        letter.encode(&mut buf);
        assert_eq!(DeadLetter::decode(Bytes::from(buf.clone())), Ok(letter));
        for cut in [0, 5, 12, 20] {
            assert_eq!(
                DeadLetter::decode(Bytes::from(buf[..cut].to_vec())),
                Err(RecordError::Truncated),
                "cut at {cut}"
            );
        }
        buf[0] = 2;
        assert_eq!(
            DeadLetter::decode(Bytes::from(buf)),
            Err(RecordError::Version(2))
        );
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        assert_eq!(
            Record::decode(Bytes::from_static(b"\x01\x00")),
            Err(RecordError::Truncated)
        );
        let mut buf = Vec::new();
        Record::new(Signal::Metrics, Some("t".into()), 1, Bytes::new()).encode(&mut buf);
        let mut bad_version = buf.clone();
        bad_version[0] = 9;
        assert_eq!(
            Record::decode(Bytes::from(bad_version)),
            Err(RecordError::Version(9))
        );
        let mut bad_signal = buf.clone();
        bad_signal[1] = 7;
        assert_eq!(
            Record::decode(Bytes::from(bad_signal)),
            Err(RecordError::Signal(7))
        );
        let mut bad_tenant_len = buf;
        bad_tenant_len[14] = 200;
        assert_eq!(
            Record::decode(Bytes::from(bad_tenant_len)),
            Err(RecordError::Truncated)
        );
    }
}
