use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_core::Signal;
use vigil_core::buffer::memory::MemoryBuffer;

use super::*;
use crate::config::{BatchConfig, RetryConfig};
use crate::exporter::Exported;

const NAME: &str = "fake";
const SIGNAL: Signal = Signal::Logs;
/// Tokio's timer rounds each sleep up to its next millisecond tick.
const SLACK: Duration = Duration::from_millis(5);
/// The pumps' drain at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// What the fake backend does with one request.
enum Step {
    Reply(Result<Exported, ExportError>),
    /// Never answers: the pump's timeout has to fire.
    Hang,
    /// Takes everything, after this long.
    Slow(Duration),
}

/// One request the fake backend received.
#[derive(Debug)]
struct Call {
    tenant: Option<String>,
    payloads: Vec<Bytes>,
    at: Instant,
}

impl Call {
    fn payloads(&self) -> Vec<&[u8]> {
        self.payloads.iter().map(|p| p.as_ref()).collect()
    }
}

/// A backend that follows a script, then takes everything except requests holding a
/// record whose payload starts with `bad`, which it refuses for good.
struct ScriptedExporter {
    script: Mutex<VecDeque<Step>>,
    calls: mpsc::UnboundedSender<Call>,
}

#[async_trait]
impl Exporter for ScriptedExporter {
    fn name(&self) -> &'static str {
        NAME
    }

    fn signal(&self) -> Signal {
        SIGNAL
    }

    async fn export(
        &self,
        tenant: Option<&str>,
        records: &[Record],
    ) -> Result<Exported, ExportError> {
        let _ = self.calls.send(Call {
            tenant: tenant.map(str::to_string),
            payloads: records.iter().map(|r| r.payload.clone()).collect(),
            at: Instant::now(),
        });
        let step = self.script.lock().unwrap().pop_front();
        match step {
            Some(Step::Reply(result)) => result,
            Some(Step::Hang) => std::future::pending().await,
            Some(Step::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(Exported {
                    items: records.iter().map(|r| u64::from(r.items)).sum(),
                    dropped: Vec::new(),
                })
            }
            None if records.iter().any(|r| r.payload.starts_with(b"bad")) => Err(
                ExportError::permanent("400 Bad Request: entry too far behind"),
            ),
            None => Ok(Exported {
                items: records.iter().map(|r| u64::from(r.items)).sum(),
                dropped: Vec::new(),
            }),
        }
    }
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        timeout: Duration::from_secs(5),
        batch: BatchConfig {
            max_records: 100,
            max_bytes: vigil_core::config::ByteSize::mib(1),
            linger: Duration::from_millis(200),
        },
        retry: RetryConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        },
        headers: Default::default(),
        tls: None,
    }
}

struct Harness {
    buffer: MemoryBuffer,
    telemetry: Telemetry,
    calls: mpsc::UnboundedReceiver<Call>,
    stop: watch::Sender<bool>,
    pump: JoinHandle<()>,
}

impl Harness {
    /// Starts a pump over a buffer already holding `records`.
    async fn start(records: Vec<Record>, script: Vec<Step>) -> Harness {
        Harness::start_with(records, script, config()).await
    }

    async fn start_with(
        records: Vec<Record>,
        script: Vec<Step>,
        config: DeliveryConfig,
    ) -> Harness {
        let buffer = MemoryBuffer::new(1 << 20);
        for record in records {
            buffer.push(record).await.unwrap();
        }
        let telemetry = Telemetry::new();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let exporter = Arc::new(ScriptedExporter {
            script: Mutex::new(script.into()),
            calls: calls_tx,
        });
        let (stop, stopped) = watch::channel(false);
        let pump = Pump::new(
            exporter,
            Arc::new(buffer.clone()),
            config,
            telemetry.clone(),
        )
        .unwrap()
        .with_drain(DRAIN);
        let pump = tokio::spawn(pump.run(stopped));
        Harness {
            buffer,
            telemetry,
            calls,
            stop,
            pump,
        }
    }

    async fn next_call(&mut self) -> Call {
        self.calls.recv().await.expect("the pump is running")
    }

    async fn pending(&self) -> u64 {
        self.buffer.stats().await.signals[SIGNAL.index()].pending_records
    }

    /// Waits (on the paused clock) until the pump acked all but `left` records.
    async fn wait_pending(&self, left: u64) {
        for _ in 0..1000 {
            if self.pending().await == left {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{} records pending, expected {left}", self.pending().await);
    }

    async fn shutdown(self) -> (MemoryBuffer, Telemetry) {
        // The pump may have stopped already (a drain that found nothing to do).
        let _ = self.stop.send(true);
        self.pump.await.unwrap();
        (self.buffer, self.telemetry)
    }

    fn exported(&self) -> u64 {
        self.telemetry
            .exported_items
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get()
    }

    fn retries(&self) -> u64 {
        self.telemetry
            .export_retries
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get()
    }

    fn dead_lettered(&self) -> u64 {
        self.telemetry
            .dead_lettered_items
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get()
    }
}

fn record(tenant: Option<&str>, items: u32, payload: &'static [u8]) -> Record {
    Record::new(
        SIGNAL,
        tenant.map(str::to_string),
        items,
        Bytes::from_static(payload),
    )
}

fn retryable(after: Option<Duration>) -> Step {
    Step::Reply(Err(ExportError::Retryable {
        reason: "503 Service Unavailable".into(),
        retry_after: after,
    }))
}

/// Every record a fresh consumer is handed: what the pump left unacked.
async fn redelivered(buffer: &MemoryBuffer) -> Vec<Bytes> {
    let mut consumer = buffer.consumer(SIGNAL).await.unwrap();
    let limits = BatchLimits {
        max_records: 100,
        max_bytes: 1 << 20,
    };
    let batch = tokio::time::timeout(Duration::from_secs(1), consumer.next_batch(limits))
        .await
        .unwrap_or(Ok(Vec::new()))
        .unwrap();
    batch.into_iter().map(|d| d.record.payload).collect()
}

#[tokio::test(start_paused = true)]
async fn records_are_acked_only_after_the_backend_took_them() {
    let records = vec![record(None, 2, b"one"), record(None, 3, b"two")];
    let mut h = Harness::start(records, vec![retryable(None)]).await;

    let first = h.next_call().await;
    assert_eq!(first.payloads(), [&b"one"[..], b"two"], "one batch");
    assert_eq!(h.pending().await, 2, "a failed attempt acks nothing");

    let second = h.next_call().await;
    assert_eq!(second.payloads, first.payloads);
    h.wait_pending(0).await;
    assert_eq!(h.exported(), 5);
    assert_eq!(h.retries(), 1);
    assert_eq!(h.dead_lettered(), 0);

    let (buffer, _) = h.shutdown().await;
    assert!(redelivered(&buffer).await.is_empty());
    assert!(buffer.dead_letters().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_batch_waits_for_the_linger_time_then_goes_out_not_full() {
    let mut h = Harness::start(vec![record(None, 1, b"only")], Vec::new()).await;
    let started = Instant::now();
    let call = h.next_call().await;
    assert_eq!(call.at - started, config().batch.linger);
    h.wait_pending(0).await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_jitter() {
    let script = vec![retryable(None), retryable(None), retryable(None)];
    let mut h = Harness::start(vec![record(None, 1, b"x")], script).await;

    let mut at = vec![h.next_call().await.at];
    for _ in 0..3 {
        at.push(h.next_call().await.at);
    }
    // initial 1s, doubling; each delay drawn from the upper half of its ceiling.
    for (attempt, ceiling) in [1u64, 2, 4].into_iter().enumerate() {
        let waited = at[attempt + 1] - at[attempt];
        let ceiling = Duration::from_secs(ceiling);
        assert!(
            waited >= ceiling / 2 && waited <= ceiling + SLACK,
            "attempt {attempt} waited {waited:?}, ceiling {ceiling:?}"
        );
    }
    h.wait_pending(0).await;
    assert_eq!(h.retries(), 3);
    assert_eq!(h.exported(), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_up_to_its_cap() {
    let script = vec![
        retryable(Some(Duration::from_secs(7))),
        retryable(Some(Duration::from_secs(3600))),
    ];
    let mut h = Harness::start(vec![record(None, 1, b"x")], script).await;
    let first = h.next_call().await.at;
    let second = h.next_call().await.at;
    let third = h.next_call().await.at;

    let close_to = |waited: Duration, want: Duration| {
        assert!(
            waited >= want && waited <= want + SLACK,
            "waited {waited:?}, want {want:?}"
        );
    };
    close_to(second - first, Duration::from_secs(7));
    // The backend asked for an hour; max_retry_after is a minute.
    close_to(third - second, config().retry.max_retry_after);
    h.wait_pending(0).await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_backend_that_does_not_answer_is_retried_after_the_timeout() {
    let mut h = Harness::start(vec![record(None, 1, b"x")], vec![Step::Hang]).await;
    let first = h.next_call().await.at;
    let second = h.next_call().await.at;
    // The timeout, then a backoff of at most `initial`.
    let waited = second - first;
    let timeout = config().timeout;
    assert!(
        waited >= timeout + config().retry.initial / 2
            && waited <= timeout + config().retry.initial + SLACK,
        "{waited:?}"
    );
    h.wait_pending(0).await;
    assert_eq!(h.retries(), 1);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_batch_is_resent_one_by_one_and_only_the_bad_record_is_dead_lettered() {
    let records = vec![
        record(Some("t"), 1, b"good-1"),
        record(Some("t"), 4, b"bad"),
        record(Some("t"), 2, b"good-2"),
    ];
    let mut h = Harness::start(records, Vec::new()).await;

    let whole = h.next_call().await;
    assert_eq!(whole.payloads(), [&b"good-1"[..], b"bad", b"good-2"]);
    for want in [&b"good-1"[..], b"bad", b"good-2"] {
        let call = h.next_call().await;
        assert_eq!(call.payloads(), [want]);
        assert_eq!(call.tenant.as_deref(), Some("t"));
    }
    h.wait_pending(0).await;
    assert_eq!(h.exported(), 3);
    assert_eq!(h.dead_lettered(), 4);
    assert_eq!(h.retries(), 0, "a permanent error is not retried");

    let (buffer, _) = h.shutdown().await;
    let letters = buffer.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].exporter, NAME);
    assert_eq!(letters[0].reason, "400 Bad Request: entry too far behind");
    assert_eq!(letters[0].record.payload, Bytes::from_static(b"bad"));
    assert_eq!(letters[0].record.tenant.as_deref(), Some("t"));
    assert!(redelivered(&buffer).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_single_refused_record_is_dead_lettered_without_a_resend() {
    let mut h = Harness::start(vec![record(None, 3, b"bad")], Vec::new()).await;
    h.next_call().await;
    h.wait_pending(0).await;
    assert_eq!(h.dead_lettered(), 3);
    let (buffer, _) = h.shutdown().await;
    assert_eq!(buffer.dead_letters().len(), 1);
    assert!(redelivered(&buffer).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn batches_are_split_by_tenant_keeping_order() {
    let records = vec![
        record(Some("a"), 1, b"a1"),
        record(Some("b"), 1, b"b1"),
        record(Some("a"), 1, b"a2"),
        record(None, 1, b"none"),
        record(Some("b"), 1, b"b2"),
    ];
    let mut h = Harness::start(records, Vec::new()).await;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let call = h.next_call().await;
        calls.push((call.tenant.clone(), call.payloads.clone()));
    }
    let b = |s: &'static [u8]| Bytes::from_static(s);
    assert_eq!(
        calls,
        [
            (Some("a".to_string()), vec![b(b"a1"), b(b"a2")]),
            (Some("b".to_string()), vec![b(b"b1"), b(b"b2")]),
            (None, vec![b(b"none")]),
        ]
    );
    h.wait_pending(0).await;
    assert_eq!(h.exported(), 5);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn batches_respect_max_records() {
    let mut config = config();
    config.batch.max_records = 2;
    let records = (0..5).map(|_| record(None, 1, b"r")).collect();
    let mut h = Harness::start_with(records, Vec::new(), config).await;
    let sizes = [
        h.next_call().await.payloads.len(),
        h.next_call().await.payloads.len(),
        h.next_call().await.payloads.len(),
    ];
    assert_eq!(sizes, [2, 2, 1]);
    h.wait_pending(0).await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_retry_leaves_the_records_for_the_next_consumer() {
    let records = vec![record(Some("a"), 1, b"a1"), record(Some("b"), 1, b"b1")];
    // Tenant a goes through; tenant b's backend is down for good.
    let script = std::iter::once(Step::Reply(Ok(Exported {
        items: 1,
        dropped: Vec::new(),
    })))
    .chain((0..100).map(|_| retryable(None)))
    .collect();
    let mut h = Harness::start(records, script).await;
    assert_eq!(h.next_call().await.tenant.as_deref(), Some("a"));
    assert_eq!(h.next_call().await.tenant.as_deref(), Some("b"));
    assert_eq!(h.next_call().await.tenant.as_deref(), Some("b"));

    let retries = h.retries();
    let (buffer, telemetry) = h.shutdown().await;
    assert!(retries >= 2);
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[SIGNAL.index()].pending_records, 1);
    assert_eq!(redelivered(&buffer).await, [Bytes::from_static(b"b1")]);
    assert!(buffer.dead_letters().is_empty());
    assert_eq!(
        telemetry
            .exported_items
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_idle_stops_the_pump() {
    let h = Harness::start(Vec::new(), Vec::new()).await;
    tokio::task::yield_now().await;
    let (buffer, _) = h.shutdown().await;
    assert_eq!(buffer.stats().await.used_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn items_the_backend_cannot_represent_are_counted_as_dropped() {
    let script = vec![Step::Reply(Ok(Exported {
        items: 3,
        dropped: vec![("delta_temporality", 2)],
    }))];
    let mut h = Harness::start(vec![record(None, 5, b"m")], script).await;
    h.next_call().await;
    h.wait_pending(0).await;
    assert_eq!(h.exported(), 3);
    assert_eq!(
        h.telemetry
            .dropped_items
            .with_label_values(&[SIGNAL.as_str(), "delta_temporality"])
            .get(),
        2
    );
    h.shutdown().await;
}

#[test]
fn a_zero_backoff_is_refused_at_construction() {
    let mut config = config();
    config.retry.initial = Duration::ZERO;
    let (tx, _rx) = mpsc::unbounded_channel();
    let exporter = Arc::new(ScriptedExporter {
        script: Mutex::default(),
        calls: tx,
    });
    let buffer: Arc<dyn Buffer> = Arc::new(MemoryBuffer::new(1024));
    assert!(Pump::new(exporter, buffer, config, Telemetry::new()).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_request_in_flight_at_shutdown_finishes_and_is_acked() {
    let slow = Duration::from_secs(3);
    let mut h = Harness::start(vec![record(None, 2, b"slow")], vec![Step::Slow(slow)]).await;
    let call = h.next_call().await;
    let (buffer, telemetry) = h.shutdown().await;
    assert!(
        Instant::now() - call.at >= slow,
        "shutdown waited for the answer"
    );
    assert_eq!(
        buffer.stats().await.signals[SIGNAL.index()].pending_records,
        0
    );
    assert!(
        redelivered(&buffer).await.is_empty(),
        "nothing is sent twice"
    );
    assert_eq!(
        telemetry
            .exported_items
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_still_in_flight_at_the_drain_deadline_is_abandoned_unacked() {
    let mut config = config();
    config.timeout = DRAIN * 6;
    let mut h =
        Harness::start_with(vec![record(None, 1, b"stuck")], vec![Step::Hang], config).await;
    let call = h.next_call().await;
    let (buffer, _) = h.shutdown().await;
    let waited = Instant::now() - call.at;
    assert!(waited >= DRAIN && waited <= DRAIN + SLACK, "{waited:?}");
    assert_eq!(redelivered(&buffer).await, [Bytes::from_static(b"stuck")]);
}

#[tokio::test(start_paused = true)]
async fn a_failure_while_draining_is_not_retried() {
    let slow_then_fail = vec![retryable(None)];
    let mut h = Harness::start(vec![record(None, 1, b"x")], slow_then_fail).await;
    h.stop.send(true).unwrap();
    // The first attempt fails; a draining pump leaves the record instead of retrying.
    let _ = h.next_call().await;
    let started = Instant::now();
    let retries = h.retries();
    let (buffer, _) = h.shutdown().await;
    assert!(Instant::now() - started < Duration::from_secs(1));
    assert!(retries <= 1);
    assert_eq!(redelivered(&buffer).await, [Bytes::from_static(b"x")]);
}

#[tokio::test(start_paused = true)]
async fn draining_keeps_sending_what_is_ready() {
    let records = (0..5).map(|_| record(None, 1, b"r")).collect();
    let mut config = config();
    config.batch.max_records = 1;
    let slow = Duration::from_millis(500);
    let script = (0..5).map(|_| Step::Slow(slow)).collect();
    let mut h = Harness::start_with(records, script, config).await;
    let _ = h.next_call().await;
    let (buffer, telemetry) = h.shutdown().await;
    assert_eq!(
        buffer.stats().await.signals[SIGNAL.index()].pending_records,
        0
    );
    assert_eq!(
        telemetry
            .exported_items
            .with_label_values(&[SIGNAL.as_str(), NAME])
            .get(),
        5,
        "all five went out within the drain"
    );
}
