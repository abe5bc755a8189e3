//! A [`Buffer`] on NATS JetStream, shared by every collector connected to the same stream.
//!
//! Layout (see <https://docs.nats.io/nats-concepts/jetstream>):
//!
//! - One stream (`VIGIL` by default) with work-queue retention, file storage, a byte limit
//!   with discard-new, on the subjects `<prefix>.metrics`, `<prefix>.logs`,
//!   `<prefix>.traces`. A message leaves the stream when it is acked.
//! - One durable pull consumer per signal, `vigil-<signal>`, filtered on that signal's
//!   subject, with explicit ack and `ack_wait`. Every collector binds the same durable
//!   consumer, so the server spreads records over all of them, each delivered to one.
//! - Dead letters go to a second stream, `<STREAM>_DLQ` on `<prefix>.dead_letter`, with
//!   limits retention (a work queue would need a consumer to ever empty it) and discard-old:
//!   when it is full the oldest letters go, and [`BufferStats::dead_letters_dropped`] counts
//!   them from the stream's first sequence.
//!
//! Choices, for a server as old as 2.9 (nothing here needs a newer feature):
//!
//! - `push` waits for the publish ack. A stream at its byte limit answers error code 10077
//!   ("maximum bytes exceeded"; 10077 is "store failed", so the description is checked too)
//!   and becomes [`BufferError::Full`]; a client that is not connected answers
//!   [`BufferError::Unavailable`] at once instead of queueing the publish.
//! - `max_deliver` is enforced by Vigil, not by the server: the consumer is created with
//!   unlimited deliveries and a record delivered `max_deliver` times is dead-lettered with
//!   the reason, then acked. A server-side limit would leave such a record in the
//!   work-queue stream forever, holding space, if the collector that saw its last delivery
//!   died before dead-lettering it.
//! - Reading issues one bounded pull request at a time ([`Batch`], at most [`PULL_BATCH`]
//!   messages) and a new one only once everything pulled was handed out, so
//!   [`Consumer::next_batch`] only polls it and is cancel-safe: a message already pulled
//!   stays in the request's stream (or in the consumer's `ready` queue) for the next call.
//!   Messages pulled ahead of the exporter are kept alive together with those it holds
//!   ([`Consumer::keep_alive`]): otherwise a backend outage longer than `ack_wait` would
//!   have the server redeliver them into the same consumer's pull once per `ack_wait`
//!   (duplicates), and count those redeliveries towards `max_deliver` (dead-lettering
//!   records never tried). Messages of a collector that died are redelivered after
//!   `ack_wait`; about one batch per signal.
//! - A record held by an exporter for longer than `ack_wait` (a backend down for long) is
//!   redelivered to another collector: at least once, never at most once.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State as ConnectionState;
use async_nats::jetstream::consumer::pull::{Batch, Config as PullConfig};
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::stream::{
    Config as StreamConfig, DeleteMessageErrorKind, DiscardPolicy, RetentionPolicy, StorageType,
};
use async_nats::jetstream::{self, AckKind, ErrorCode};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::StreamExt;
use tracing::warn;
use vigil_core::Signal;
use vigil_core::buffer::{
    BatchLimits, Bound, Buffer, BufferError, BufferStats, Consumer, DeadLetter, Delivery,
    DeliveryCounters, DeliveryId, Record, SignalStats, now_ms,
};

/// Messages one pull request asks for; also the most a consumer holds client-side.
pub const PULL_BATCH: usize = 256;
/// How long one pull request waits on the server before the client renews it.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// Client-side timeout of connecting and of every JetStream API request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// What a client told "full" is asked to wait.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The dead-letter stream's byte limit.
const DEAD_LETTER_MAX_BYTES: i64 = 128 * 1024 * 1024;
/// The longest dead-letter reason kept; longer ones are cut.
const MAX_REASON_BYTES: usize = 8 << 10;
/// What a dead letter may add to its record (exporter name, reason, timestamps): records
/// are kept this much below the message limit so their dead letters fit too.
const DEAD_LETTER_HEADROOM: usize = 16 << 10;

/// Where the buffer lives and how it is shaped. Built from the collector's config.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URL(s), comma-separated: `nats://127.0.0.1:4222`.
    pub url: String,
    /// The work-queue stream's name; dead letters go to `<stream>_DLQ`.
    pub stream: String,
    /// Subjects are `<prefix>.<signal>` and `<prefix>.dead_letter`.
    pub subject_prefix: String,
    /// The stream's byte limit; a push beyond it is [`BufferError::Full`].
    pub max_bytes: u64,
    /// Stream replicas (1, 3 or 5 on a cluster).
    pub replicas: usize,
    /// How long a delivered record may stay unacked before the server delivers it again.
    pub ack_wait: Duration,
    /// Deliveries after which a record is dead-lettered instead of handed out again.
    pub max_deliver: u32,
    /// A `.creds` file (JWT and NKey seed) to authenticate with.
    pub credentials_file: Option<PathBuf>,
    /// A token to authenticate with.
    pub token: Option<String>,
}

impl NatsOptions {
    /// The defaults: stream `VIGIL`, prefix `vigil`, 1 GiB, one replica, 30 s ack wait,
    /// 10 deliveries.
    pub fn new(url: impl Into<String>) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            stream: "VIGIL".into(),
            subject_prefix: "vigil".into(),
            max_bytes: 1 << 30,
            replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: 10,
            credentials_file: None,
            token: None,
        }
    }

    fn subject(&self, signal: Signal) -> String {
        format!("{}.{}", self.subject_prefix, signal.as_str())
    }

    fn dead_letter_subject(&self) -> String {
        format!("{}.dead_letter", self.subject_prefix)
    }

    fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.stream)
    }
}

/// How far one signal's durable consumer is behind; what a KEDA `nats-jetstream` scaler
/// reads to scale collectors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    /// Records in the stream not yet delivered to any collector.
    pub num_pending: u64,
    /// Records delivered and not yet acked.
    pub num_ack_pending: u64,
}

/// See the module docs.
#[derive(Clone)]
pub struct NatsBuffer {
    shared: Arc<Shared>,
}

struct Shared {
    options: NatsOptions,
    /// The largest record pushed as one message, from the server's `max_payload` at
    /// connect. (A reconnect to a server with a smaller one shows as `TooLarge` on push.)
    max_record_bytes: usize,
    client: async_nats::Client,
    js: jetstream::Context,
    closed: AtomicBool,
    deliveries: DeliveryCounters,
}

impl NatsBuffer {
    /// Connects, then creates the streams and consumers or checks the existing ones.
    /// Fails if the server cannot be reached or an existing stream has another retention.
    pub async fn open(options: NatsOptions) -> Result<NatsBuffer, BufferError> {
        if options.max_deliver == 0 || options.ack_wait.is_zero() || options.max_bytes == 0 {
            return Err(BufferError::Unavailable(
                "nats: max_deliver, ack_wait and max_bytes must be above zero".into(),
            ));
        }
        let mut connect = async_nats::ConnectOptions::new()
            .name("vigil-collector")
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        if let Some(path) = &options.credentials_file {
            connect = connect.credentials_file(path).await.map_err(|e| {
                BufferError::Unavailable(format!(
                    "nats: cannot read credentials {}: {e}",
                    path.display()
                ))
            })?;
        }
        if let Some(token) = &options.token {
            connect = connect.token(token.clone());
        }
        let client = connect
            .connect(options.url.as_str())
            .await
            .map_err(|e| unavailable("connect", e))?;
        let js = jetstream::new(client.clone());
        // Room for what a dead letter adds to a record (exporter, reason), so a record that
        // fits also fits the dead-letter stream. Read once: `server_info` clones a struct.
        let max_record_bytes = client
            .server_info()
            .max_payload
            .min(usize::try_from(options.max_bytes).unwrap_or(usize::MAX))
            .saturating_sub(DEAD_LETTER_HEADROOM);
        let shared = Shared {
            options,
            max_record_bytes,
            client,
            js,
            closed: AtomicBool::new(false),
            deliveries: DeliveryCounters::default(),
        };
        shared.ensure_streams().await?;
        for signal in Signal::ALL {
            shared.durable(signal).await?;
        }
        Ok(NatsBuffer {
            shared: Arc::new(shared),
        })
    }

    /// The lag of one signal's durable consumer, shared by all collectors.
    pub async fn lag(&self, signal: Signal) -> Result<ConsumerLag, BufferError> {
        let shared = &self.shared;
        let info = shared
            .js
            .get_stream_no_info(&shared.options.stream)
            .await
            .map_err(|e| unavailable("get stream", e))?
            .consumer_info(durable_name(signal))
            .await
            .map_err(|e| unavailable("consumer info", e))?;
        Ok(ConsumerLag {
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending as u64,
        })
    }

    /// How long ago the receiver accepted the oldest record of `signal` still in the
    /// stream: in a work queue, the first message on the signal's subject is the oldest
    /// unacked one. `None` when there is none or the server cannot say.
    pub async fn oldest_unacked_age(&self, signal: Signal) -> Option<Duration> {
        let shared = &self.shared;
        let stream = shared
            .js
            .get_stream_no_info(&shared.options.stream)
            .await
            .ok()?;
        let message = stream
            .get_first_raw_message_by_subject(shared.options.subject(signal), 0)
            .await
            .ok()?;
        let record = Record::decode(message.payload).ok()?;
        Some(Duration::from_millis(
            now_ms().saturating_sub(record.received_at_ms),
        ))
    }

    /// Up to `max` dead letters, oldest first, read without removing them.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BufferError> {
        let (page, _) = self.dead_letter_page(0, max).await?;
        Ok(page
            .into_iter()
            .filter_map(|(seq, letter)| {
                letter
                    .map_err(|e| warn!(sequence = seq, error = %e, "undecodable dead letter"))
                    .ok()
            })
            .collect())
    }

    /// Up to `max` dead letters with their stream sequence numbers, oldest first, from
    /// sequence `from` on; and the sequence to continue from, `None` at the end. A letter
    /// that does not decode comes with why.
    pub async fn dead_letter_page(
        &self,
        from: u64,
        max: usize,
    ) -> Result<DeadLetterPage, BufferError> {
        let name = self.shared.options.dead_letter_stream();
        let stream = self
            .shared
            .js
            .get_stream(&name)
            .await
            .map_err(|e| unavailable("dead-letter stream", e))?;
        let state = stream.cached_info().state.clone();
        let mut letters = Vec::new();
        let mut seq = from.max(state.first_sequence);
        // Bounded even if an operator deleted letters and left gaps.
        let last = state
            .last_sequence
            .min(seq.saturating_add(max.saturating_mul(2) as u64));
        while letters.len() < max && seq <= last && state.messages > 0 {
            // A sequence may be missing (deleted or replayed); skip it.
            if let Ok(message) = stream.get_raw_message(seq).await {
                let letter = DeadLetter::decode(message.payload)
                    .map_err(|e| format!("the letter does not decode: {e}"));
                letters.push((seq, letter));
            }
            seq += 1;
        }
        let next = (state.messages > 0 && seq <= state.last_sequence).then_some(seq);
        Ok((letters, next))
    }

    /// Deletes the dead letter at stream sequence `seq`; false when there was none.
    pub async fn remove_dead_letter(&self, seq: u64) -> Result<bool, BufferError> {
        let name = self.shared.options.dead_letter_stream();
        let stream = self
            .shared
            .js
            .get_stream_no_info(&name)
            .await
            .map_err(|e| unavailable("dead-letter stream", e))?;
        match stream.delete_message(seq).await {
            Ok(deleted) => Ok(deleted),
            Err(e) => match e.kind() {
                // A message already gone: 10057 "no message found" from the delete (10037
                // from some server versions).
                DeleteMessageErrorKind::JetStream(error)
                    if [
                        ErrorCode::STREAM_MESSAGE_DELETE_FAILED,
                        ErrorCode::NO_MESSAGE_FOUND,
                    ]
                    .contains(&error.error_code())
                        && error.to_string().contains("no message found") =>
                {
                    Ok(false)
                }
                _ => Err(unavailable("delete dead letter", e)),
            },
        }
    }
}

/// Dead letters with their stream sequence numbers (or why one does not decode), and the
/// sequence to continue from.
pub type DeadLetterPage = (Vec<(u64, Result<DeadLetter, String>)>, Option<u64>);

impl Shared {
    async fn ensure_streams(&self) -> Result<(), BufferError> {
        let o = &self.options;
        let main = StreamConfig {
            name: o.stream.clone(),
            subjects: Signal::ALL.iter().map(|s| o.subject(*s)).collect(),
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            max_bytes: i64::try_from(o.max_bytes).unwrap_or(i64::MAX),
            discard: DiscardPolicy::New,
            num_replicas: o.replicas,
            ..Default::default()
        };
        let dead = StreamConfig {
            name: o.dead_letter_stream(),
            subjects: vec![o.dead_letter_subject()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_bytes: DEAD_LETTER_MAX_BYTES,
            discard: DiscardPolicy::Old,
            num_replicas: o.replicas,
            ..Default::default()
        };
        for config in [main, dead] {
            let mut stream = self
                .js
                .get_or_create_stream(config.clone())
                .await
                .map_err(|e| unavailable("create stream", e))?;
            let existing = stream
                .info()
                .await
                .map_err(|e| unavailable("stream info", e))?
                .config
                .clone();
            if existing.retention != config.retention {
                return Err(BufferError::Unavailable(format!(
                    "nats: stream {} exists with {:?} retention, Vigil needs {:?}",
                    config.name, existing.retention, config.retention
                )));
            }
            if existing.subjects != config.subjects
                || existing.max_bytes != config.max_bytes
                || existing.discard != config.discard
                || existing.num_replicas != config.num_replicas
            {
                self.js
                    .update_stream(config)
                    .await
                    .map_err(|e| unavailable("update stream", e))?;
            }
        }
        Ok(())
    }

    /// Creates the signal's durable consumer, or updates it to the configured `ack_wait`.
    async fn durable(&self, signal: Signal) -> Result<PullConsumer, BufferError> {
        let o = &self.options;
        let config = PullConfig {
            durable_name: Some(durable_name(signal)),
            filter_subject: o.subject(signal),
            ack_policy: AckPolicy::Explicit,
            ack_wait: o.ack_wait,
            // Enforced client-side; see the module docs.
            max_deliver: -1,
            ..Default::default()
        };
        self.js
            .get_stream_no_info(&o.stream)
            .await
            .map_err(|e| unavailable("get stream", e))?
            .create_consumer(config)
            .await
            .map_err(|e| unavailable("create consumer", e))
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == ConnectionState::Connected
    }

    async fn publish(&self, subject: String, payload: Vec<u8>) -> Result<(), BufferError> {
        if !self.connected() {
            return Err(BufferError::Unavailable("nats: not connected".into()));
        }
        let size = payload.len() as u64;
        let ack = self
            .js
            .publish(subject, Bytes::from(payload))
            .await
            .map_err(|e| self.publish_error(e, size))?;
        ack.await.map_err(|e| self.publish_error(e, size))?;
        Ok(())
    }

    fn publish_error(&self, e: PublishError, size: u64) -> BufferError {
        let server = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .map(|s| (s.error_code(), s.to_string().to_ascii_lowercase()));
        match (e.kind(), server) {
            (PublishErrorKind::MaxPayloadExceeded, _) => BufferError::TooLarge {
                size,
                limit: self.client.server_info().max_payload as u64,
            },
            (_, Some((code, _))) if code == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => {
                BufferError::TooLarge {
                    size,
                    limit: self.options.max_bytes,
                }
            }
            (_, Some((code, text)))
                if code == ErrorCode::STREAM_STORE_FAILED && text.contains("maximum") =>
            {
                BufferError::Full {
                    used: self.options.max_bytes,
                    capacity: self.options.max_bytes,
                    bound: Bound::Bytes,
                    retry_after: FULL_RETRY_AFTER,
                }
            }
            _ => unavailable("publish", e),
        }
    }
}

/// The durable consumer every collector binds for `signal`.
fn durable_name(signal: Signal) -> String {
    format!("vigil-{}", signal.as_str())
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> BufferError {
    BufferError::Unavailable(format!("nats: {what}: {e}"))
}

#[async_trait]
impl Buffer for NatsBuffer {
    async fn push(&self, record: Record) -> Result<(), BufferError> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(BufferError::Closed);
        }
        let size = record.encoded_len() as u64;
        if size > shared.options.max_bytes {
            return Err(BufferError::TooLarge {
                size,
                limit: shared.options.max_bytes,
            });
        }
        let mut payload = Vec::new();
        record.encode(&mut payload);
        shared
            .publish(shared.options.subject(record.signal), payload)
            .await
    }

    async fn consumer(&self, signal: Signal) -> Result<Box<dyn Consumer>, BufferError> {
        let consumer = self.shared.durable(signal).await?;
        Ok(Box::new(NatsConsumer {
            shared: self.shared.clone(),
            signal,
            consumer,
            messages: None,
            ready: VecDeque::new(),
            in_flight: HashMap::new(),
            next_id: 0,
        }))
    }

    async fn dead_letter(&self, mut letter: DeadLetter) -> Result<(), BufferError> {
        // A backend's error body can be long; the letter must still fit one message.
        if letter.reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !letter.reason.is_char_boundary(end) {
                end -= 1;
            }
            letter.reason.truncate(end);
            letter.reason.push_str(" [cut]");
        }
        let mut payload = Vec::new();
        letter.encode(&mut payload);
        let subject = self.shared.options.dead_letter_subject();
        self.shared.publish(subject, payload).await
    }

    fn is_ready(&self) -> bool {
        !self.shared.closed.load(Ordering::Acquire) && self.shared.connected()
    }

    fn max_record_bytes(&self) -> Option<usize> {
        Some(self.shared.max_record_bytes)
    }

    /// Unreachable parts read as zero: stats never fail.
    async fn stats(&self) -> BufferStats {
        let shared = &self.shared;
        let mut stats = BufferStats {
            capacity_bytes: shared.options.max_bytes,
            ..Default::default()
        };
        shared.deliveries.report(&mut stats);
        if let Ok(stream) = shared.js.get_stream(&shared.options.stream).await {
            stats.used_bytes = stream.cached_info().state.bytes;
        }
        if let Ok(stream) = shared
            .js
            .get_stream(shared.options.dead_letter_stream())
            .await
        {
            // Limits retention only removes letters by discard-old (or by an operator).
            stats.dead_letters_dropped =
                stream.cached_info().state.first_sequence.saturating_sub(1);
        }
        for signal in Signal::ALL {
            if let Ok(lag) = self.lag(signal).await {
                stats.signals[signal.index()] = SignalStats {
                    pending_records: lag.num_pending + lag.num_ack_pending,
                    oldest_unacked_age: self.oldest_unacked_age(signal).await,
                    undelivered_records: Some(lag.num_pending),
                    ..stats.signals[signal.index()]
                };
            }
        }
        stats
    }

    async fn close(&self) -> Result<(), BufferError> {
        self.shared.closed.store(true, Ordering::Release);
        // Every push already waited for its publish ack; the flush is for acks sent by
        // consumers, and is bounded because it waits forever while disconnected.
        match tokio::time::timeout(REQUEST_TIMEOUT, self.shared.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable("flush", e)),
            Err(_) => Err(unavailable("flush", "timed out")),
        }
    }
}

struct NatsConsumer {
    shared: Arc<Shared>,
    signal: Signal,
    consumer: PullConsumer,
    /// The pull request in progress (at most [`PULL_BATCH`] messages); a new one is made
    /// when it has ended and `ready` is empty.
    messages: Option<Batch>,
    /// Pulled, not yet handed out: a message left out of the last batch because it would
    /// not fit, and what [`Consumer::keep_alive`] took from `messages` to keep it alive.
    /// Bounded by one pull request.
    ready: VecDeque<jetstream::Message>,
    /// Handed out, not yet acked. Bounded by what the exporter holds (one batch).
    in_flight: HashMap<u64, jetstream::Message>,
    next_id: u64,
}

impl NatsConsumer {
    /// The next message, waiting for one. Cancel-safe: polling the pull request's stream
    /// loses nothing.
    /// A pull request asks for `batch` messages (at most [`PULL_BATCH`]): what a consumer
    /// holds client-side is then about one batch, and the rest stays on the server for the
    /// other collectors.
    async fn next_message(&mut self, batch: usize) -> Result<jetstream::Message, BufferError> {
        if let Some(message) = self.ready.pop_front() {
            return Ok(message);
        }
        loop {
            if self.messages.is_none() {
                let pull = self
                    .consumer
                    .batch()
                    .max_messages(batch.clamp(1, PULL_BATCH))
                    .expires(PULL_EXPIRES)
                    .messages()
                    .await
                    .map_err(|e| unavailable("pull", e))?;
                self.messages = Some(pull);
            }
            let Some(pull) = self.messages.as_mut() else {
                continue;
            };
            match pull.next().await {
                Some(Ok(message)) => return Ok(message),
                Some(Err(e)) => {
                    // Connection lost, consumer deleted, ...: start over with a fresh pull,
                    // after telling the caller (who backs off).
                    self.messages = None;
                    return Err(unavailable("pull", e));
                }
                // Expired or complete.
                None => self.messages = None,
            }
        }
    }

    /// A message already pulled, without waiting.
    fn ready_message(&mut self) -> Option<jetstream::Message> {
        self.ready.pop_front().or_else(|| self.arrived())
    }

    /// Moves what the pull request received meanwhile into `ready`, without waiting.
    fn take_arrived(&mut self) {
        while let Some(message) = self.arrived() {
            self.ready.push_back(message);
        }
    }

    /// A message the pull request received, without waiting.
    fn arrived(&mut self) -> Option<jetstream::Message> {
        match self.messages.as_mut()?.next().now_or_never()? {
            Some(Ok(message)) => Some(message),
            // Ended or failed: the next read starts a new pull (and reports a failure).
            Some(Err(_)) | None => {
                self.messages = None;
                None
            }
        }
    }

    /// Dead-letters a record delivered too often and acks it. Errors leave it unacked: it
    /// comes back after `ack_wait` and is tried again.
    async fn give_up(&self, message: &jetstream::Message, record: Record, delivered: i64) {
        let letter = DeadLetter {
            record,
            exporter: format!("nats-buffer/{}", durable_name(self.signal)),
            reason: format!(
                "delivered {delivered} times without an ack (max_deliver {})",
                self.shared.options.max_deliver
            ),
            failed_at_ms: now_ms(),
        };
        let mut payload = Vec::new();
        letter.encode(&mut payload);
        let subject = self.shared.options.dead_letter_subject();
        if let Err(e) = self.shared.publish(subject, payload).await {
            warn!(signal = %self.signal, error = %e, "dead-lettering a redelivered record failed");
            return;
        }
        if let Err(e) = message.double_ack().await {
            warn!(signal = %self.signal, error = %e, "acking a dead-lettered record failed");
        }
    }
}

#[async_trait]
impl Consumer for NatsConsumer {
    /// Cancel-safe while waiting for the first message. Dropped while dead-lettering, the
    /// messages of that call are redelivered after `ack_wait` (none is lost, none is
    /// remembered as in flight).
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Vec<Delivery>, BufferError> {
        loop {
            // Take what fits without awaiting past the first message, so a cancel between
            // here and the return drops only messages the server will redeliver.
            let mut taken = vec![self.next_message(limits.max_records).await?];
            let mut bytes = taken[0].payload.len();
            while taken.len() < limits.max_records.max(1) {
                let Some(message) = self.ready_message() else {
                    break;
                };
                if bytes + message.payload.len() > limits.max_bytes {
                    self.ready.push_front(message);
                    break;
                }
                bytes += message.payload.len();
                taken.push(message);
            }

            let max_deliver = i64::from(self.shared.options.max_deliver);
            let mut batch = Vec::with_capacity(taken.len());
            let mut keep = Vec::with_capacity(taken.len());
            for message in taken {
                let record = match Record::decode(message.payload.clone()) {
                    Ok(r) => r,
                    Err(e) => {
                        // Not ours or damaged: there is no record to dead-letter.
                        warn!(signal = %self.signal, error = %e, "undecodable record terminated");
                        let _ = message.ack_with(AckKind::Term).await;
                        continue;
                    }
                };
                let delivered = message.info().map_or(1, |i| i.delivered);
                if delivered >= max_deliver {
                    self.give_up(&message, record, delivered).await;
                    continue;
                }
                if delivered > 1 {
                    self.shared.deliveries.redelivered(self.signal, 1);
                }
                let id = self.next_id;
                self.next_id += 1;
                batch.push(Delivery {
                    id: DeliveryId(id),
                    record,
                });
                keep.push((id, message));
            }
            if !batch.is_empty() {
                self.in_flight.extend(keep);
                return Ok(batch);
            }
        }
    }

    fn keep_alive_every(&self) -> Option<Duration> {
        Some(self.shared.options.ack_wait / 3)
    }

    /// `+WPI` (progress) for each message, and for those pulled but not handed out yet:
    /// the server restarts its `ack_wait` clock.
    async fn keep_alive(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        self.take_arrived();
        let messages = ids
            .iter()
            .filter_map(|id| self.in_flight.get(&id.0))
            .chain(self.ready.iter());
        let results =
            futures_util::future::join_all(messages.map(|m| m.ack_with(AckKind::Progress))).await;
        match results.iter().filter(|r| r.is_err()).count() {
            0 => Ok(()),
            failed => Err(BufferError::Unavailable(format!(
                "nats: {failed} progress acks failed"
            ))),
        }
    }

    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        let messages: Vec<_> = ids
            .iter()
            .filter_map(|id| self.in_flight.remove(&id.0))
            .collect();
        // Double ack: wait for the server to confirm, so an acked record is gone for sure.
        let results = futures_util::future::join_all(messages.iter().map(|m| m.double_ack())).await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        if failed > 0 {
            return Err(BufferError::Unavailable(format!(
                "nats: {failed} of {} acks failed; those records will be delivered again",
                results.len()
            )));
        }
        Ok(())
    }
}
