//! A [`Buffer`] on Redis Streams, shared by several collectors
//! (<https://redis.io/docs/latest/develop/data-types/streams/>).
//!
//! Layout: one stream per signal, `<prefix>:metrics|logs|traces`, read by one consumer
//! group (`group`); dead letters go to `<prefix>:dead_letter` with the fields `record`,
//! `exporter`, `reason`, `failed_at`.
//!
//! Choices:
//! - **Bounded in entries.** A Lua script checks XLEN against `max_len` and XADDs in one
//!   step; over the bound the push is refused with [`BufferError::Full`]. XADD never trims
//!   (`MAXLEN` would drop unacked data). Acked entries are XACKed *and* XDELed, so a
//!   stream's length is its backlog. Redis' own OOM refusal is also `Full`.
//! - **Durability** is Redis' (the XADD reply; AOF/replication are the operator's choice).
//! - **Redelivery.** Entries idle in the group's PEL longer than `claim_idle` (a consumer
//!   died, or is too slow) are taken over with XAUTOCLAIM, so `claim_idle` must exceed the
//!   longest export including its retries, or records are delivered twice. An entry
//!   delivered more than `max_deliveries` times goes to the dead-letter stream with the
//!   reason and is acked.
//! - **Restart.** A consumer first re-reads its own PEL (XREADGROUP from id `0`), so a
//!   collector restarted with the same consumer name resumes its unacked work at once.
//! - **Cancel safety** (see the `consumer` module): everything read from Redis sits in the PEL
//!   until acked, so nothing a dropped `next_batch` had in hand is lost; the consumer notes
//!   that it may have lost track and re-lists its own PEL with XPENDING on the next call.
//!
//! - **Connections.** Pushes, acks, dead letters and stats share one multiplexed
//!   connection; each consumer has its own for its reads, because XREADGROUP ... BLOCK
//!   (at most 1 s, less for a short `claim_idle`) holds up whatever is queued behind it.
//! - **Sentinel and Cluster** (see the `connection` module). With Sentinel, the readiness
//!   check asks the sentinels for the master each second; when it moved, the shared
//!   connection is replaced and each consumer reconnects before its next read. As with
//!   any Redis failover, what the old master had not replicated is gone: pushes it
//!   confirmed are lost, entries it acked come back. In a Cluster the keys share a hash
//!   tag (`{vigil}:logs`), so the whole buffer lives on one shard: the cluster gives it
//!   failover, not sharding.
//! - **Readiness** follows every answer (a connection error or `READONLY` clears it, any
//!   other reply sets it) and a check each second that must answer within the second:
//!   PING, or in a cluster EXISTS of a buffer key, so that it asks the buffer's shard.
//! - **Units.** `Full` counts entries here (`Bound::Entries`), not bytes; stats'
//!   `used_bytes` is Redis' sampled MEMORY USAGE estimate and `capacity_bytes` is 0.
//!
//! Delivery ids are per consumer counters mapped to stream ids.

mod connection;
mod consumer;
mod reply;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, RedisError, Value};
use tokio::task::JoinHandle;
use vigil_core::Signal;
use vigil_core::buffer::{
    Bound, Buffer, BufferError, BufferStats, Consumer, DeadLetter, DeliveryCounters, Record,
    SignalStats, now_ms,
};

use connection::Endpoint;
use consumer::RedisConsumer;

pub use connection::Topology;

/// Redis refuses bulk strings over 512 MiB (`proto-max-bulk-len`'s default).
const MAX_RECORD_BYTES: u64 = 512 * 1024 * 1024;
/// How often the readiness flag is refreshed with a PING.
const PING_EVERY: Duration = Duration::from_secs(1);
/// The `exporter` of dead letters the buffer itself writes.
const BUFFER_EXPORTER: &str = "redis-buffer";

/// Checks the backlog and appends in one step, so concurrent pushes cannot overshoot.
/// Returns `{1, id}` when stored, `{0, len}` when full.
const PUSH_SCRIPT: &str = r#"
local len = redis.call('XLEN', KEYS[1])
if len >= tonumber(ARGV[1]) then return {0, len} end
local id = redis.call('XADD', KEYS[1], '*', 'record', ARGV[2], 'signal', ARGV[3],
  'tenant', ARGV[4], 'received_at', ARGV[5])
return {1, id}
"#;

/// Where and how to use Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS (system roots;
    /// append `#insecure` to skip verification). With Sentinel only its scheme, user,
    /// password and db count; with Cluster it is the first seed node.
    pub url: String,
    /// One server, Sentinel or Cluster.
    pub topology: Topology,
    /// Streams are `<prefix>:metrics|logs|traces` and `<prefix>:dead_letter`; in a cluster
    /// the prefix is made a hash tag (`{vigil}`) unless it holds one.
    pub stream_prefix: String,
    /// Most entries per stream (the backlog); pushes beyond it are refused as `Full`.
    /// Also bounds the dead-letter stream, whose oldest entries are trimmed (and counted).
    pub max_len: u64,
    /// How long an entry may stay delivered but unacked before another consumer takes it.
    pub claim_idle: Duration,
    /// Deliveries after which an entry is dead-lettered instead of delivered again.
    pub max_deliveries: u64,
    /// This process' name in the group; keep it stable across restarts to resume work.
    pub consumer: String,
    /// The consumer group all collectors share.
    pub group: String,
}

impl RedisOptions {
    /// Options with every default but the URL.
    pub fn new(url: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            topology: Topology::Single,
            stream_prefix: default_stream_prefix(),
            max_len: default_max_len(),
            claim_idle: default_claim_idle(),
            max_deliveries: default_max_deliveries(),
            consumer: default_consumer(),
            group: default_group(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.stream_prefix.is_empty() {
            errors.push("stream_prefix is empty");
        }
        if self.max_len == 0 {
            errors.push("max_len is 0");
        }
        if self.claim_idle.is_zero() {
            errors.push("claim_idle is 0");
        }
        if self.max_deliveries == 0 {
            errors.push("max_deliveries is 0");
        }
        if self.consumer.is_empty() {
            errors.push("consumer is empty");
        }
        if self.group.is_empty() {
            errors.push("group is empty");
        }
        if let Topology::Sentinel { master, sentinels } = &self.topology {
            if master.is_empty() {
                errors.push("sentinel master name is empty");
            }
            if sentinels.is_empty() {
                errors.push("no sentinels");
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }
}

pub fn default_stream_prefix() -> String {
    "vigil".into()
}

pub fn default_max_len() -> u64 {
    1_000_000
}

pub fn default_claim_idle() -> Duration {
    Duration::from_secs(30)
}

pub fn default_max_deliveries() -> u64 {
    10
}

pub fn default_group() -> String {
    "vigil".into()
}

/// `<hostname>-<pid>`: unique per process, stable only as long as the process lives. Set
/// a stable name (a pod name) to resume a crashed collector's work without waiting for
/// `claim_idle`.
pub fn default_consumer() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "vigil".into());
    format!("{host}-{}", std::process::id())
}

/// One signal's consumer group, as XINFO GROUPS reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupLag {
    /// Entries in the stream (stored, not yet acked).
    pub entries: u64,
    /// Entries delivered to some consumer and not yet acked.
    pub pending: u64,
    /// Entries not yet delivered to any consumer; `None` when Redis cannot tell (before
    /// 7.0, or after deletions it cannot count past).
    pub lag: Option<u64>,
}

/// See the module docs. Cloning shares the connection.
#[derive(Clone)]
pub struct RedisBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    options: RedisOptions,
    /// Its shared connection serves pushes, acks, dead letters and stats, never blocking
    /// reads.
    endpoint: Endpoint,
    keys: [String; 3],
    dead_key: String,
    reachable: AtomicBool,
    closed: AtomicBool,
    dead_letters_dropped: AtomicU64,
    deliveries: DeliveryCounters,
    pinger: Mutex<Option<JoinHandle<()>>>,
}

impl RedisBuffer {
    /// Connects (failing fast when Redis is unreachable), creates the consumer groups and
    /// starts the readiness check.
    pub async fn connect(options: RedisOptions) -> Result<RedisBuffer, BufferError> {
        options
            .validate()
            .map_err(|e| BufferError::Unavailable(format!("invalid redis options: {e}")))?;
        // `rediss://` URLs use rustls, which needs the process-wide crypto provider.
        vigil_core::process::install_crypto_provider();
        let endpoint = Endpoint::open(&options.url, &options.topology)
            .await
            .map_err(|e| BufferError::Unavailable(format!("redis: {e}")))?;
        let prefix = connection::key_prefix(&options.stream_prefix, &options.topology);
        let keys = Signal::ALL.map(|s| format!("{prefix}:{}", s.as_str()));
        let inner = Arc::new(Inner {
            dead_key: format!("{prefix}:dead_letter"),
            keys,
            options,
            endpoint,
            reachable: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            dead_letters_dropped: AtomicU64::new(0),
            deliveries: DeliveryCounters::default(),
            pinger: Mutex::new(None),
        });
        for key in &inner.keys {
            inner.ensure_group(key).await?;
        }
        let pinger = tokio::spawn(ping_loop(Arc::downgrade(&inner)));
        *inner.pinger.lock().unwrap_or_else(|e| e.into_inner()) = Some(pinger);
        Ok(RedisBuffer { inner })
    }

    /// Per signal (indexed by [`Signal::index`]): backlog, delivered-but-unacked and
    /// undelivered entries of the consumer group.
    pub async fn group_lag(&self) -> Result<[GroupLag; 3], BufferError> {
        let mut out = [GroupLag::default(); 3];
        for signal in Signal::ALL {
            let mut cmd = redis::cmd("XINFO");
            cmd.arg("GROUPS").arg(&self.inner.keys[signal.index()]);
            let groups: Value = self.inner.query(&cmd).await?;
            let group = reply::array(&groups).and_then(|groups| {
                groups.iter().find(|g| {
                    reply::field(g, "name").and_then(reply::string).as_deref()
                        == Some(self.inner.options.group.as_str())
                })
            });
            let Some(group) = group else { continue };
            let number = |name| {
                reply::field(group, name)
                    .and_then(reply::int)
                    .map(|n| n.max(0) as u64)
            };
            let mut xlen = redis::cmd("XLEN");
            xlen.arg(&self.inner.keys[signal.index()]);
            out[signal.index()] = GroupLag {
                entries: self.inner.query::<u64>(&xlen).await?,
                pending: number("pending").unwrap_or(0),
                lag: number("lag"),
            };
        }
        Ok(out)
    }

    /// The newest `count` dead letters, oldest first. Entries whose record does not decode
    /// (written raw because they were undecodable) are left out.
    pub async fn dead_letters(&self, count: usize) -> Result<Vec<DeadLetter>, BufferError> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(&self.inner.dead_key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count);
        let value: Value = self.inner.query(&cmd).await?;
        let mut letters: Vec<DeadLetter> = reply::array(&value)
            .unwrap_or_default()
            .iter()
            .filter_map(|entry| dead_letter_entry(entry)?.1.ok())
            .collect();
        letters.reverse();
        Ok(letters)
    }

    /// Up to `count` dead letters with their stream entry ids, oldest first, after the
    /// entry `after` (from the first when `None`). A letter whose record does not decode
    /// comes with why, so an operator sees it too.
    pub async fn dead_letter_page(
        &self,
        after: Option<&str>,
        count: usize,
    ) -> Result<Vec<(String, Result<DeadLetter, String>)>, BufferError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&self.inner.dead_key)
            .arg(after.map_or_else(|| "-".to_string(), |id| format!("({id}")))
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let value: Value = self.inner.query(&cmd).await?;
        Ok(reply::array(&value)
            .unwrap_or_default()
            .iter()
            .filter_map(dead_letter_entry)
            .collect())
    }

    /// Deletes the dead letter with entry id `id`; false when there was none.
    pub async fn remove_dead_letter(&self, id: &str) -> Result<bool, BufferError> {
        let mut cmd = redis::cmd("XDEL");
        cmd.arg(&self.inner.dead_key).arg(id);
        Ok(self.inner.query::<u64>(&cmd).await? > 0)
    }
}

/// One entry of the dead-letter stream: its id and the letter, or why it does not decode.
fn dead_letter_entry(entry: &Value) -> Option<(String, Result<DeadLetter, String>)> {
    let parts = reply::array(entry)?;
    let id = reply::string(parts.first()?)?;
    let body = parts.get(1)?;
    let text = |name| reply::field(body, name).and_then(reply::string);
    let letter = reply::field(body, "record")
        .and_then(reply::bytes)
        .ok_or_else(|| "the entry has no `record` field".to_string())
        .and_then(|record| {
            Record::decode(bytes::Bytes::copy_from_slice(record))
                .map_err(|e| format!("the record does not decode: {e}"))
        })
        .map(|record| DeadLetter {
            record,
            exporter: text("exporter").unwrap_or_default(),
            reason: text("reason").unwrap_or_default(),
            failed_at_ms: text("failed_at").and_then(|t| t.parse().ok()).unwrap_or(0),
        });
    Some((id, letter))
}

async fn ping_loop(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(PING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        // A sentinel that does not answer must not stop the readiness check for long.
        let _ = tokio::time::timeout(5 * PING_EVERY, inner.endpoint.follow_master()).await;
        // `query` updates the flag when Redis answers or the connection fails; a connection
        // that is still reconnecting to a dead server answers neither for seconds.
        let probe = inner.probe();
        if tokio::time::timeout(PING_EVERY, inner.query::<Value>(&probe))
            .await
            .is_err()
        {
            inner.error(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer to the readiness check",
            )));
        }
    }
}

impl Inner {
    /// PING; in a cluster EXISTS of a buffer key instead, which asks the shard holding the
    /// buffer (a cluster sends PING to every primary).
    fn probe(&self) -> Cmd {
        match self.options.topology {
            Topology::Cluster { .. } => {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(&self.dead_key);
                cmd
            }
            _ => redis::cmd("PING"),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, BufferError> {
        let result = cmd.query_async(&mut self.endpoint.shared()).await;
        self.settle(result)
    }

    async fn query_pipe(&self, pipe: &redis::Pipeline) -> Result<Vec<Value>, BufferError> {
        let result = pipe.query_async(&mut self.endpoint.shared()).await;
        self.settle(result)
    }

    /// Keeps the readiness flag in step with what Redis answers.
    fn settle<T>(&self, result: Result<T, RedisError>) -> Result<T, BufferError> {
        match result {
            Ok(v) => {
                self.reachable.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: RedisError) -> BufferError {
        // READONLY: a replica (a master demoted by a failover) cannot take the buffer's
        // writes, so it does not count as ready.
        if is_connection_error(&e) || e.code() == Some("READONLY") {
            self.reachable.store(false, Ordering::Relaxed);
        } else {
            // Redis answered, so it is reachable.
            self.reachable.store(true, Ordering::Relaxed);
        }
        if e.code() == Some("OOM") {
            return BufferError::Full {
                used: 0,
                capacity: 0,
                bound: Bound::BrokerMemory,
                retry_after: Duration::from_secs(1),
            };
        }
        BufferError::Unavailable(format!("redis: {e}"))
    }

    /// XGROUP CREATE from id 0, so entries pushed before the group existed (or after Redis
    /// lost it) are delivered too.
    async fn ensure_group(&self, key: &str) -> Result<(), BufferError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(key)
            .arg(&self.options.group)
            .arg("0")
            .arg("MKSTREAM");
        match cmd.query_async::<Value>(&mut self.endpoint.shared()).await {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            result => self.settle(result).map(drop),
        }
    }

    /// XADD to the dead-letter stream, trimming it to `max_len` and counting what the trim
    /// dropped; then, atomically with it, XACK and XDEL of `acked` in `key`.
    async fn add_dead_letter(
        &self,
        record: &[u8],
        exporter: &str,
        reason: &str,
        failed_at_ms: u64,
        acked: Option<(&str, &str)>,
    ) -> Result<(), BufferError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XLEN").arg(&self.dead_key);
        pipe.cmd("XADD")
            .arg(&self.dead_key)
            .arg("MAXLEN")
            .arg(self.options.max_len)
            .arg("*")
            .arg("record")
            .arg(record)
            .arg("exporter")
            .arg(exporter)
            .arg("reason")
            .arg(reason)
            .arg("failed_at")
            .arg(failed_at_ms)
            .ignore();
        pipe.cmd("XLEN").arg(&self.dead_key);
        if let Some((key, id)) = acked {
            pipe.cmd("XACK")
                .arg(key)
                .arg(&self.options.group)
                .arg(id)
                .ignore();
            pipe.cmd("XDEL").arg(key).arg(id).ignore();
        }
        let lens = self.query_pipe(&pipe).await?;
        let before = lens.first().and_then(reply::int).unwrap_or(0);
        let after = lens.get(1).and_then(reply::int).unwrap_or(0);
        let dropped = (before + 1 - after).max(0) as u64;
        if dropped > 0 {
            self.dead_letters_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(())
    }
}

fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
}

#[async_trait]
impl Buffer for RedisBuffer {
    async fn push(&self, record: Record) -> Result<(), BufferError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(BufferError::Closed);
        }
        let size = record.encoded_len() as u64;
        if size > MAX_RECORD_BYTES {
            return Err(BufferError::TooLarge {
                size,
                limit: MAX_RECORD_BYTES,
            });
        }
        let mut encoded = Vec::new();
        record.encode(&mut encoded);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PUSH_SCRIPT)
            .arg(1)
            .arg(&self.inner.keys[record.signal.index()])
            .arg(self.inner.options.max_len)
            .arg(encoded)
            .arg(record.signal.as_str())
            .arg(record.tenant.as_deref().unwrap_or(""))
            .arg(record.received_at_ms);
        let answer: Value = self.inner.query(&cmd).await?;
        let answer = reply::array(&answer).unwrap_or_default();
        match answer.first().and_then(reply::int) {
            Some(1) => Ok(()),
            Some(0) => Err(BufferError::Full {
                // In entries, not bytes: the bound of this buffer is a stream length.
                used: answer.get(1).and_then(reply::int).unwrap_or(0).max(0) as u64,
                capacity: self.inner.options.max_len,
                bound: Bound::Entries,
                retry_after: Duration::from_secs(1),
            }),
            _ => Err(BufferError::Unavailable(
                "redis: unexpected answer to the push script".into(),
            )),
        }
    }

    async fn consumer(&self, signal: Signal) -> Result<Box<dyn Consumer>, BufferError> {
        let block = (self.inner.options.claim_idle / 2)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        // A connection of its own: a blocking XREADGROUP holds up everything behind it.
        let generation = self.inner.endpoint.generation();
        let reader = self
            .inner
            .endpoint
            .connect(Some(consumer::reader_timeout(block)))
            .await
            .map_err(|e| self.inner.error(e))?;
        self.inner
            .ensure_group(&self.inner.keys[signal.index()])
            .await?;
        Ok(Box::new(RedisConsumer::new(
            self.inner.clone(),
            signal,
            reader,
            generation,
            block,
        )))
    }

    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BufferError> {
        let mut record = Vec::new();
        letter.record.encode(&mut record);
        self.inner
            .add_dead_letter(
                &record,
                &letter.exporter,
                &letter.reason,
                letter.failed_at_ms,
                None,
            )
            .await
    }

    fn is_ready(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed) && !self.inner.closed.load(Ordering::Relaxed)
    }

    /// `pending_records` is XLEN (acked entries are deleted); the oldest unacked age comes
    /// from the first entry's id. `used_bytes` is Redis' MEMORY USAGE estimate (sampled)
    /// of the three streams; `capacity_bytes` is 0, since the bound is in entries
    /// ([`RedisOptions::max_len`]). When Redis cannot be asked, the stats are empty.
    async fn stats(&self) -> BufferStats {
        let mut stats = BufferStats {
            dead_letters_dropped: self.inner.dead_letters_dropped.load(Ordering::Relaxed),
            ..Default::default()
        };
        self.inner.deliveries.report(&mut stats);
        let mut pipe = redis::pipe();
        for key in &self.inner.keys {
            pipe.cmd("XLEN").arg(key);
            pipe.cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1);
            pipe.cmd("MEMORY").arg("USAGE").arg(key);
        }
        let Ok(answers) = self.inner.query_pipe(&pipe).await else {
            return stats;
        };
        let now = now_ms();
        for (signal, answer) in Signal::ALL.iter().zip(answers.chunks(3)) {
            let [len, first, memory] = answer else {
                continue;
            };
            stats.used_bytes += reply::int(memory).unwrap_or(0).max(0) as u64;
            let oldest = reply::entries(first)
                .first()
                .and_then(|e| reply::id_ms(&e.id))
                .map(|ms| Duration::from_millis(now.saturating_sub(ms)));
            stats.signals[signal.index()] = SignalStats {
                pending_records: reply::int(len).unwrap_or(0).max(0) as u64,
                oldest_unacked_age: oldest,
                undelivered_records: None,
                ..stats.signals[signal.index()]
            };
        }
        // Acked entries are deleted, so every entry left is either delivered and pending
        // or not yet delivered (XINFO's own `lag` goes unknown after deletions).
        if let Ok(lags) = self.group_lag().await {
            for signal in Signal::ALL {
                let lag = &lags[signal.index()];
                stats.signals[signal.index()].undelivered_records =
                    Some(lag.entries.saturating_sub(lag.pending));
            }
        }
        stats
    }

    async fn close(&self) -> Result<(), BufferError> {
        self.inner.closed.store(true, Ordering::Relaxed);
        if let Some(pinger) = self
            .inner
            .pinger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            pinger.abort();
        }
        Ok(())
    }
}
