//! `NatsBuffer` against a real `nats-server -js` that each test starts on its own port.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, sleep, timeout};
use vigil_collector::buffer::nats::{NatsBuffer, NatsOptions};
use vigil_core::Signal;
use vigil_core::buffer::{BatchLimits, Buffer, BufferError, Consumer, Delivery, Record};

/// A `nats-server` with JetStream, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

fn server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return path.into();
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    let fallback = PathBuf::from("/usr/sbin/nats-server");
    match in_path {
        Some(p) => p,
        None if fallback.is_file() => fallback,
        None => panic!(
            "nats-server not found (PATH, /usr/sbin, $NATS_SERVER): install it with \
             `apt-get install nats-server`, or run the tests through `scripts/test`"
        ),
    }
}

impl NatsServer {
    fn start(store: &Path) -> NatsServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        NatsServer::start_on(store, port)
    }

    fn start_on(store: &Path, port: u16) -> NatsServer {
        let child = Command::new(server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer {
            child: Some(child),
            port,
            store: store.to_path_buf(),
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        *self = NatsServer::start_on(&self.store.clone(), self.port);
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn options(server: &NatsServer) -> NatsOptions {
    let mut o = NatsOptions::new(server.url());
    o.ack_wait = Duration::from_secs(1);
    o
}

/// Opens the buffer, retrying while JetStream is still starting.
async fn open(options: NatsOptions) -> NatsBuffer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match NatsBuffer::open(options.clone()).await {
            Ok(b) => return b,
            Err(e) if Instant::now() < deadline => {
                eprintln!("open: {e}; retrying");
                sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot open the NATS buffer: {e}"),
        }
    }
}

fn record(n: u32, size: usize) -> Record {
    let mut payload = n.to_le_bytes().to_vec();
    payload.resize(size.max(4), b'x');
    Record::new(Signal::Logs, Some("team-a".into()), n, Bytes::from(payload))
}

const LIMITS: BatchLimits = BatchLimits {
    max_records: 100,
    max_bytes: 1 << 20,
};

async fn next(consumer: &mut dyn Consumer, limits: BatchLimits) -> Vec<Delivery> {
    timeout(Duration::from_secs(10), consumer.next_batch(limits))
        .await
        .expect("a batch within 10 s")
        .expect("next_batch")
}

/// Reads until `n` records came, acking them; returns their `items` numbers.
async fn drain(consumer: &mut dyn Consumer, n: usize) -> Vec<u32> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let batch = next(consumer, LIMITS).await;
        seen.extend(batch.iter().map(|d| d.record.items));
        let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
        consumer.ack(&ids).await.expect("ack");
    }
    seen
}

#[tokio::test]
async fn push_read_ack_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    assert!(buffer.is_ready());
    let sent = record(7, 100);
    buffer.push(sent.clone()).await.unwrap();
    for n in 0..4 {
        buffer.push(record(n, 10)).await.unwrap();
    }
    let logs = buffer.stats().await.signals[Signal::Logs.index()];
    assert_eq!(logs.pending_records, 5);
    assert_eq!(logs.undelivered_records, Some(5));
    assert!(
        logs.oldest_unacked_age
            .is_some_and(|a| a < Duration::from_secs(60)),
        "{logs:?}"
    );

    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let first = next(consumer.as_mut(), LIMITS).await;
    assert_eq!(
        first[0].record, sent,
        "records come back as pushed, in order"
    );
    consumer.ack(&[first[0].id]).await.unwrap();
    let mut rest: Vec<u32> = first[1..].iter().map(|d| d.record.items).collect();
    consumer
        .ack(&first[1..].iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    rest.extend(drain(consumer.as_mut(), 4 - rest.len()).await);
    assert_eq!(rest, vec![0, 1, 2, 3]);

    let lag = buffer.lag(Signal::Logs).await.unwrap();
    assert_eq!((lag.num_pending, lag.num_ack_pending), (0, 0));
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 0);
    assert_eq!(stats.signals[Signal::Logs.index()].oldest_unacked_age, None);
    assert_eq!(stats.used_bytes, 0, "acked records leave the work queue");
    assert_eq!(stats.capacity_bytes, 1 << 30);
}

#[tokio::test]
async fn batch_limits_hold_back_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    for n in 0..6 {
        buffer.push(record(n, 1000)).await.unwrap();
    }
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let limits = BatchLimits {
        max_records: 2,
        max_bytes: 1 << 20,
    };
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let batch = next(consumer.as_mut(), limits).await;
        assert!(batch.len() <= 2);
        seen.extend(batch.iter().map(|d| d.record.items));
        consumer
            .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
    }
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    let by_bytes = BatchLimits {
        max_records: 100,
        max_bytes: 1500,
    };
    for n in 0..3 {
        buffer.push(record(n, 1000)).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let batch = next(consumer.as_mut(), by_bytes).await;
        assert_eq!(
            batch.len(),
            1,
            "a second 1000-byte record exceeds 1500 bytes"
        );
        seen.push(batch[0].record.items);
        consumer.ack(&[batch[0].id]).await.unwrap();
    }
    assert_eq!(
        seen,
        vec![0, 1, 2],
        "the held-back record comes next, in order"
    );
}

#[tokio::test]
async fn a_full_stream_answers_full() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let mut o = options(&server);
    o.max_bytes = 64 * 1024;
    let buffer = open(o).await;
    let mut accepted = 0;
    let error = loop {
        match buffer.push(record(accepted, 8 * 1024)).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 20, "64 KiB cannot hold 20 records of 8 KiB");
    };
    assert!(
        matches!(error, BufferError::Full { .. }),
        "expected Full, got {error:?}"
    );
    assert!(error.retry_after().is_some());
    assert!(accepted >= 6, "only {accepted} records fit");
    assert!(matches!(
        buffer.push(record(0, 128 * 1024)).await,
        Err(BufferError::TooLarge { .. })
    ));

    // Acking frees the space.
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    drain(consumer.as_mut(), accepted as usize).await;
    buffer.push(record(99, 8 * 1024)).await.unwrap();
}

#[tokio::test]
async fn two_collectors_share_the_records_each_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let mut o = options(&server);
    o.ack_wait = Duration::from_secs(30);
    let a = open(o.clone()).await;
    let b = open(o).await;
    for n in 0..40 {
        a.push(record(n, 10)).await.unwrap();
    }
    let limits = BatchLimits {
        max_records: 5,
        max_bytes: 1 << 20,
    };
    let mut ca = a.consumer(Signal::Logs).await.unwrap();
    let mut cb = b.consumer(Signal::Logs).await.unwrap();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() + from_b.len() < 40 {
        for (consumer, seen) in [(&mut ca, &mut from_a), (&mut cb, &mut from_b)] {
            if let Ok(Ok(batch)) =
                timeout(Duration::from_secs(2), consumer.next_batch(limits)).await
            {
                seen.extend(batch.iter().map(|d| d.record.items));
                consumer
                    .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
                    .await
                    .unwrap();
            }
        }
    }
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "a: {from_a:?}, b: {from_b:?}"
    );
    let all: HashSet<u32> = from_a.iter().chain(&from_b).copied().collect();
    assert_eq!(all.len(), 40, "no record twice: a {from_a:?}, b {from_b:?}");
    assert_eq!(from_a.len() + from_b.len(), 40);
}

#[tokio::test]
async fn a_record_of_a_dead_consumer_goes_to_another_after_ack_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let mut slow = options(&server);
    slow.ack_wait = Duration::from_secs(60);
    let a = open(slow).await;
    // Opening updates the durable consumer: the 1 s ack_wait of `b` now applies to all.
    let b = open(options(&server)).await;
    a.push(record(1, 10)).await.unwrap();
    let mut dying = a.consumer(Signal::Logs).await.unwrap();
    let taken = next(dying.as_mut(), LIMITS).await;
    assert_eq!(taken[0].record.items, 1);
    drop(dying);
    drop(a);

    let mut survivor = b.consumer(Signal::Logs).await.unwrap();
    let started = Instant::now();
    let again = next(survivor.as_mut(), LIMITS).await;
    assert_eq!(again[0].record, taken[0].record);
    assert!(started.elapsed() < Duration::from_secs(5));
    survivor.ack(&[again[0].id]).await.unwrap();
    let stats = b.stats().await.signals[Signal::Logs.index()];
    assert_eq!(stats.redelivered_records, 1);
    let lag = b.lag(Signal::Logs).await.unwrap();
    assert_eq!((lag.num_pending, lag.num_ack_pending), (0, 0));
}

#[tokio::test]
async fn a_record_delivered_max_deliver_times_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let mut o = options(&server);
    o.max_deliver = 3;
    let buffer = open(o).await;
    let poison = record(13, 10);
    buffer.push(poison.clone()).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    for _ in 0..2 {
        // Delivered, never acked (the exporter keeps failing): back after ack_wait.
        let batch = next(consumer.as_mut(), LIMITS).await;
        assert_eq!(batch[0].record, poison);
    }
    // The third delivery is dead-lettered inside next_batch and never handed out.
    let third = timeout(Duration::from_secs(4), consumer.next_batch(LIMITS)).await;
    assert!(third.is_err(), "nothing left to deliver, got {third:?}");

    let letters = buffer.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].record, poison);
    assert!(
        letters[0].reason.contains("delivered 3 times"),
        "{}",
        letters[0].reason
    );
    let lag = buffer.lag(Signal::Logs).await.unwrap();
    assert_eq!((lag.num_pending, lag.num_ack_pending), (0, 0));
    assert_eq!(buffer.stats().await.used_bytes, 0);
}

#[tokio::test]
async fn unacked_records_survive_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    for n in 0..3 {
        buffer.push(record(n, 10)).await.unwrap();
    }
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let taken = next(consumer.as_mut(), LIMITS).await;
    assert!(!taken.is_empty());
    drop(consumer);

    server.restart();
    // The same client reconnects by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !buffer.is_ready() {
        assert!(Instant::now() < deadline, "no reconnect after the restart");
        sleep(Duration::from_millis(50)).await;
    }
    // As the pump does: retry opening the consumer while JetStream recovers.
    let mut consumer = loop {
        match buffer.consumer(Signal::Logs).await {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no consumer after the restart: {e}"
                );
                sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut seen = drain(consumer.as_mut(), 3).await;
    seen.sort();
    assert_eq!(seen, vec![0, 1, 2]);
}

#[tokio::test]
async fn a_down_server_makes_the_buffer_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    server.stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    while buffer.is_ready() {
        assert!(
            Instant::now() < deadline,
            "still ready with the server down"
        );
        sleep(Duration::from_millis(20)).await;
    }
    let error = buffer.push(record(1, 10)).await.unwrap_err();
    assert!(
        matches!(error, BufferError::Unavailable(_)),
        "expected Unavailable, got {error:?}"
    );
    assert!(
        NatsBuffer::open(options(&server)).await.is_err(),
        "open fails fast without a server"
    );
    buffer.close().await.ok();
    assert!(!buffer.is_ready());
}

#[tokio::test]
async fn a_cancelled_next_batch_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let mut o = options(&server);
    // Long enough that a lost message would not come back within this test.
    o.ack_wait = Duration::from_secs(60);
    let buffer = open(o).await;
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    for n in 0..3 {
        // The pump cancels next_batch whenever its linger runs out.
        let cancelled = timeout(Duration::from_millis(100), consumer.next_batch(LIMITS)).await;
        assert!(cancelled.is_err());
        buffer.push(record(n, 10)).await.unwrap();
        let cancelled = timeout(Duration::from_millis(1), consumer.next_batch(LIMITS)).await;
        if let Ok(batch) = cancelled {
            // Finished before the timeout: the record was delivered; hand it back.
            let batch = batch.unwrap();
            assert_eq!(batch[0].record.items, n);
            consumer.ack(&[batch[0].id]).await.unwrap();
            continue;
        }
        let batch = next(consumer.as_mut(), LIMITS).await;
        assert_eq!(batch[0].record.items, n);
        consumer.ack(&[batch[0].id]).await.unwrap();
    }
    buffer.close().await.unwrap();
    assert!(matches!(
        buffer.push(record(9, 10)).await,
        Err(BufferError::Closed)
    ));
    assert!(!buffer.is_ready());
}

#[tokio::test]
async fn a_stream_with_another_retention_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = js
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "LIMITS".into(),
            subjects: vec!["other.>".into()],
            ..Default::default()
        })
        .await
    {
        assert!(Instant::now() < deadline, "cannot create the stream: {e}");
        sleep(Duration::from_millis(100)).await;
    }
    let mut o = options(&server);
    o.stream = "LIMITS".into();
    o.subject_prefix = "other".into();
    let error = NatsBuffer::open(o).await.err().expect("open refuses");
    assert!(error.to_string().contains("retention"), "{error}");
}

#[tokio::test]
async fn records_kept_alive_are_not_redelivered_after_ack_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let slow = open(options(&server)).await;
    let other = open(options(&server)).await;
    slow.push(record(1, 10)).await.unwrap();
    let mut exporting = slow.consumer(Signal::Logs).await.unwrap();
    let held = next(exporting.as_mut(), LIMITS).await;
    let every = exporting
        .keep_alive_every()
        .expect("nats asks for keep-alive");
    assert!(every < Duration::from_secs(1));
    let ids: Vec<_> = held.iter().map(|d| d.id).collect();

    // An export three times ack_wait long, declared in progress as the pump does.
    let mut waiting = other.consumer(Signal::Logs).await.unwrap();
    let keep = async {
        for _ in 0..10 {
            sleep(Duration::from_millis(300)).await;
            exporting.keep_alive(&ids).await.unwrap();
        }
    };
    let watch = timeout(Duration::from_secs(3), waiting.next_batch(LIMITS));
    let (_, redelivered) = tokio::join!(keep, watch);
    assert!(redelivered.is_err(), "redelivered while kept alive");
    exporting.ack(&ids).await.unwrap();
    let lag = slow.lag(Signal::Logs).await.unwrap();
    assert_eq!((lag.num_pending, lag.num_ack_pending), (0, 0));
}

#[tokio::test]
async fn dead_letters_page_by_sequence_and_are_removed_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    for n in 0..5 {
        let letter = vigil_core::buffer::DeadLetter {
            record: record(n, 8),
            exporter: "loki".into(),
            reason: format!("400 number {n}"),
            failed_at_ms: 1_700_000_000_000,
        };
        buffer.dead_letter(letter).await.unwrap();
    }
    let payloads = |page: &[(u64, Result<vigil_core::buffer::DeadLetter, String>)]| {
        page.iter()
            .map(|(_, l)| l.as_ref().unwrap().record.items)
            .collect::<Vec<_>>()
    };
    let (first, next) = buffer.dead_letter_page(0, 2).await.unwrap();
    assert_eq!(payloads(&first), [0, 1]);
    let next = next.expect("more letters after the first page");
    let (rest, end) = buffer.dead_letter_page(next, 10).await.unwrap();
    assert_eq!(payloads(&rest), [2, 3, 4]);
    assert_eq!(end, None, "the last page says so");

    assert!(buffer.remove_dead_letter(first[0].0).await.unwrap());
    assert!(
        !buffer.remove_dead_letter(first[0].0).await.unwrap(),
        "already gone"
    );
    let (all, _) = buffer.dead_letter_page(0, 10).await.unwrap();
    assert_eq!(payloads(&all), [1, 2, 3, 4]);
}

/// While the exporter holds one batch for a long time (a backend down for longer than
/// `ack_wait`), the records the consumer pulled but has not handed out yet (a pull left
/// waiting by a batch that lingered for more) are kept alive too: they are neither delivered
/// to it a second time (a duplicate) nor counted as redeliveries towards `max_deliver`.
#[tokio::test]
async fn records_pulled_ahead_are_kept_alive_while_a_batch_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(dir.path());
    let buffer = open(options(&server)).await;
    for n in 0..3 {
        buffer.push(record(n, 10)).await.unwrap();
    }
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    // A pull may answer with what JetStream had at hand before all three: read on, unacked,
    // until the batch holds them all.
    let mut held = next(consumer.as_mut(), LIMITS).await;
    while !held.is_empty() && held.len() < 3 {
        held.extend(next(consumer.as_mut(), LIMITS).await);
    }
    assert_eq!(held.len(), 3);
    let ids: Vec<_> = held.iter().map(|d| d.id).collect();
    // The pump tops a batch up until its linger ends: that read is cancelled with its
    // pull still open, and records pushed afterwards land in it.
    assert!(
        timeout(Duration::from_millis(100), consumer.next_batch(LIMITS))
            .await
            .is_err()
    );
    for n in 3..20 {
        buffer.push(record(n, 10)).await.unwrap();
    }
    // An export four times ack_wait long, declared in progress as the pump does.
    for _ in 0..13 {
        sleep(Duration::from_millis(300)).await;
        consumer.keep_alive(&ids).await.unwrap();
    }
    consumer.ack(&ids).await.unwrap();

    let mut seen: Vec<u32> = held.iter().map(|d| d.record.items).collect();
    // Everything once, then nothing more for longer than ack_wait.
    while let Ok(batch) = timeout(Duration::from_millis(1500), consumer.next_batch(LIMITS)).await {
        let batch = batch.expect("next_batch");
        seen.extend(batch.iter().map(|d| d.record.items));
        let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
        consumer.ack(&ids).await.expect("ack");
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<_>>(),
        "each record exactly once"
    );
    let redelivered: u64 = buffer
        .stats()
        .await
        .signals
        .iter()
        .map(|s| s.redelivered_records)
        .sum();
    assert_eq!(redelivered, 0, "records pulled ahead were redelivered");
}
