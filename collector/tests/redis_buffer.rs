//! The Redis Streams buffer against a real `redis-server`, which each test starts on a free
//! loopback port and kills when done.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{LIMITS, free_port, read, record};
use tempfile::TempDir;
use vigil_collector::buffer::redis::{RedisBuffer, RedisOptions};
use vigil_core::Signal;
use vigil_core::buffer::{BatchLimits, Buffer, BufferError, Consumer, Delivery};

const REDIS_SERVER: &str = "/usr/bin/redis-server";

/// A `redis-server` child process, killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
    _dir: Option<TempDir>,
}

impl RedisServer {
    fn start() -> RedisServer {
        let dir = TempDir::new().expect("temp dir");
        let port = free_port();
        let child = spawn(port, dir.path());
        RedisServer {
            child,
            port,
            _dir: Some(dir),
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn options(&self, consumer: &str) -> RedisOptions {
        RedisOptions {
            consumer: consumer.into(),
            ..RedisOptions::new(self.url())
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, dir: &Path) -> Child {
    assert!(
        Path::new(REDIS_SERVER).exists(),
        "{REDIS_SERVER} is missing: `apt-get install redis-server`, or run `scripts/test`, \
         which installs what the tests need"
    );
    let mut child = Command::new(REDIS_SERVER)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not listen on port {port} within 5s");
}

/// Asserts nothing is delivered within `wait`.
async fn nothing(consumer: &mut dyn Consumer, wait: Duration) {
    if let Ok(batch) = tokio::time::timeout(wait, consumer.next_batch(LIMITS)).await {
        panic!("expected nothing, got {:?}", batch.map(|b| b.len()));
    }
}

fn first_bytes(deliveries: &[Delivery]) -> Vec<u8> {
    let mut bytes: Vec<u8> = deliveries.iter().map(|d| d.record.payload[0]).collect();
    bytes.sort();
    bytes
}

#[tokio::test]
async fn push_read_ack_round_trip() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c1")).await.unwrap();
    assert!(buffer.is_ready());
    for n in 0..3 {
        buffer.push(record(Signal::Logs, n)).await.unwrap();
    }
    buffer.push(record(Signal::Metrics, 9)).await.unwrap();
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 3);
    assert!(
        stats.signals[Signal::Logs.index()]
            .oldest_unacked_age
            .is_some()
    );
    assert!(stats.used_bytes > 0);

    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let got = read(consumer.as_mut(), 3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].record.tenant.as_deref(), Some("team-a"));
    assert_eq!(first_bytes(&got), vec![0, 1, 2]);
    let lag = buffer.group_lag().await.unwrap();
    assert_eq!(lag[Signal::Logs.index()].pending, 3);
    assert_eq!(lag[Signal::Logs.index()].lag, Some(0));
    assert_eq!(lag[Signal::Metrics.index()].lag, Some(1));
    let stats = buffer.stats().await;
    assert_eq!(
        stats.signals[Signal::Logs.index()].undelivered_records,
        Some(0)
    );
    assert_eq!(
        stats.signals[Signal::Metrics.index()].undelivered_records,
        Some(1)
    );

    let ids: Vec<_> = got.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 0);
    assert_eq!(stats.signals[Signal::Logs.index()].oldest_unacked_age, None);
    assert_eq!(stats.signals[Signal::Metrics.index()].pending_records, 1);
    assert_eq!(
        buffer.group_lag().await.unwrap()[Signal::Logs.index()].pending,
        0
    );
    nothing(consumer.as_mut(), Duration::from_millis(300)).await;

    buffer.close().await.unwrap();
    assert!(matches!(
        buffer.push(record(Signal::Logs, 1)).await,
        Err(BufferError::Closed)
    ));
}

#[tokio::test]
async fn push_is_refused_as_full_at_max_len_until_acked() {
    let server = RedisServer::start();
    let options = RedisOptions {
        max_len: 2,
        ..server.options("c1")
    };
    let buffer = RedisBuffer::connect(options).await.unwrap();
    buffer.push(record(Signal::Traces, 0)).await.unwrap();
    buffer.push(record(Signal::Traces, 1)).await.unwrap();
    match buffer.push(record(Signal::Traces, 2)).await {
        Err(e @ BufferError::Full { .. }) => assert!(e.retry_after().is_some()),
        other => panic!("expected Full, got {other:?}"),
    }
    // Other signals have their own streams.
    buffer.push(record(Signal::Logs, 0)).await.unwrap();

    let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
    let got = read(consumer.as_mut(), 2).await;
    // Delivered but unacked still counts.
    assert!(buffer.push(record(Signal::Traces, 2)).await.is_err());
    consumer.ack(&[got[0].id]).await.unwrap();
    buffer.push(record(Signal::Traces, 2)).await.unwrap();
}

#[tokio::test]
async fn two_consumers_share_the_records() {
    let server = RedisServer::start();
    let a = RedisBuffer::connect(server.options("a")).await.unwrap();
    let b = RedisBuffer::connect(server.options("b")).await.unwrap();
    let ca = a.consumer(Signal::Metrics).await.unwrap();
    let cb = b.consumer(Signal::Metrics).await.unwrap();
    let small = BatchLimits {
        max_records: 5,
        max_bytes: 1 << 20,
    };
    for n in 0..20 {
        a.push(record(Signal::Metrics, n)).await.unwrap();
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let take_turns = |mut consumer: Box<dyn Consumer>| {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut mine = 0;
            while seen.lock().unwrap().len() < 20 {
                let Ok(batch) =
                    tokio::time::timeout(Duration::from_millis(200), consumer.next_batch(small))
                        .await
                else {
                    continue;
                };
                let batch = batch.unwrap();
                consumer
                    .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
                    .await
                    .unwrap();
                mine += batch.len();
                seen.lock()
                    .unwrap()
                    .extend(batch.iter().map(|d| d.record.payload[0]));
                // Let the other consumer take its turn.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (mine, consumer)
        })
    };
    let (a_task, b_task) = (take_turns(ca), take_turns(cb));
    let ((from_a, mut ca), (from_b, mut cb)) =
        tokio::time::timeout(Duration::from_secs(5), async {
            (a_task.await.unwrap(), b_task.await.unwrap())
        })
        .await
        .expect("all records within 5s");
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<u8>>(),
        "each record exactly once"
    );
    assert!(from_a > 0 && from_b > 0, "a got {from_a}, b got {from_b}");
    nothing(ca.as_mut(), Duration::from_millis(200)).await;
    nothing(cb.as_mut(), Duration::from_millis(200)).await;
}

#[tokio::test]
async fn a_dead_consumers_entries_are_reclaimed_after_claim_idle() {
    let server = RedisServer::start();
    let short = |name: &str| RedisOptions {
        claim_idle: Duration::from_millis(200),
        ..server.options(name)
    };
    let a = RedisBuffer::connect(short("dies")).await.unwrap();
    let b = RedisBuffer::connect(short("lives")).await.unwrap();
    for n in 0..3 {
        a.push(record(Signal::Logs, n)).await.unwrap();
    }
    let mut dying = a.consumer(Signal::Logs).await.unwrap();
    assert_eq!(read(dying.as_mut(), 3).await.len(), 3);
    drop(dying);
    a.close().await.unwrap();

    let mut living = b.consumer(Signal::Logs).await.unwrap();
    let started = std::time::Instant::now();
    let got = read(living.as_mut(), 3).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(first_bytes(&got), vec![0, 1, 2]);
    living
        .ack(&got.iter().map(|d| d.id).collect::<Vec<_>>())
        .await
        .unwrap();
    let stats = b.stats().await.signals[Signal::Logs.index()];
    assert_eq!(stats.pending_records, 0);
    assert_eq!((stats.reclaimed_records, stats.redelivered_records), (3, 3));
}

#[tokio::test]
async fn entries_delivered_too_often_are_dead_lettered() {
    let server = RedisServer::start();
    let options = |name: &str| RedisOptions {
        claim_idle: Duration::from_millis(100),
        max_deliveries: 2,
        ..server.options(name)
    };
    let buffer = RedisBuffer::connect(options("first")).await.unwrap();
    buffer.push(record(Signal::Traces, 7)).await.unwrap();
    // Two deliveries, never acked, each by a consumer that then goes away.
    for name in ["first", "second"] {
        let other = RedisBuffer::connect(options(name)).await.unwrap();
        let mut consumer = other.consumer(Signal::Traces).await.unwrap();
        assert_eq!(read(consumer.as_mut(), 1).await.len(), 1);
    }
    // The third would exceed max_deliveries: it goes to the dead-letter stream instead.
    let third = RedisBuffer::connect(options("third")).await.unwrap();
    let mut consumer = third.consumer(Signal::Traces).await.unwrap();
    nothing(consumer.as_mut(), Duration::from_millis(600)).await;
    let letters = third.dead_letters(10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].record.payload[0], 7);
    assert_eq!(letters[0].exporter, "redis-buffer");
    assert!(
        letters[0].reason.contains("delivered 3 times"),
        "{}",
        letters[0].reason
    );
    let stats = third.stats().await;
    assert_eq!(stats.signals[Signal::Traces.index()].pending_records, 0);
    assert_eq!(
        third.group_lag().await.unwrap()[Signal::Traces.index()].pending,
        0
    );
}

#[tokio::test]
async fn exporter_dead_letters_are_kept_with_their_reason() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    let letter = vigil_core::buffer::DeadLetter {
        record: record(Signal::Logs, 3),
        exporter: "loki".into(),
        reason: "400 entry out of order".into(),
        failed_at_ms: 1_700_000_000_000,
    };
    buffer.dead_letter(letter.clone()).await.unwrap();
    assert_eq!(buffer.dead_letters(10).await.unwrap(), vec![letter]);
}

#[tokio::test]
async fn a_restarted_consumer_with_the_same_name_resumes_its_pending_entries() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("pod-0")).await.unwrap();
    for n in 0..4 {
        buffer.push(record(Signal::Metrics, n)).await.unwrap();
    }
    let mut before = buffer.consumer(Signal::Metrics).await.unwrap();
    let got = read(before.as_mut(), 4).await;
    before.ack(&[got[0].id]).await.unwrap();
    drop(before);
    drop(buffer);

    // Default claim_idle (30s): only its own PEL can give these back this fast.
    let restarted = RedisBuffer::connect(server.options("pod-0")).await.unwrap();
    let mut after = restarted.consumer(Signal::Metrics).await.unwrap();
    let again = read(after.as_mut(), 3).await;
    let mut expected = first_bytes(&got);
    expected.retain(|b| *b != got[0].record.payload[0]);
    assert_eq!(first_bytes(&again), expected);

    // Another name gets nothing of it.
    let other = RedisBuffer::connect(server.options("pod-1")).await.unwrap();
    let mut other = other.consumer(Signal::Metrics).await.unwrap();
    nothing(other.as_mut(), Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_dropped_next_batch_loses_nothing() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    // Drop reads mid-flight, over and over, while records arrive.
    for n in 0..10u8 {
        let push = buffer.push(record(Signal::Logs, n));
        let read = tokio::time::timeout(Duration::from_millis(3), consumer.next_batch(LIMITS));
        let (pushed, read) = tokio::join!(push, read);
        pushed.unwrap();
        if let Ok(batch) = read {
            let batch = batch.unwrap();
            consumer
                .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
                .await
                .unwrap();
            seen.extend(batch.iter().map(|d| d.record.payload[0]));
        }
    }
    while buffer.stats().await.signals[Signal::Logs.index()].pending_records > 0 {
        let batch = read(consumer.as_mut(), 1).await;
        consumer
            .ack(&batch.iter().map(|d| d.id).collect::<Vec<_>>())
            .await
            .unwrap();
        seen.extend(batch.iter().map(|d| d.record.payload[0]));
    }
    assert_eq!(seen, (0..10).collect());
}

#[tokio::test]
async fn redis_down_is_unavailable_and_not_ready_until_it_is_back() {
    let mut server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    buffer.push(record(Signal::Logs, 0)).await.unwrap();
    server.stop();

    match buffer.push(record(Signal::Logs, 1)).await {
        Err(BufferError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(!buffer.is_ready());

    let dir = TempDir::new().unwrap();
    let _restarted = RestartedServer(spawn(server.port, dir.path()));
    let back = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if buffer.push(record(Signal::Logs, 2)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(back.is_ok(), "pushes did not recover within 10s");
    assert!(buffer.is_ready());
    // The new server lost the group with the data; the consumer recreates it.
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let got = read(consumer.as_mut(), 1).await;
    assert_eq!(got[0].record.payload[0], 2);
}

/// A `redis-server` started by the test itself, killed on drop.
struct RestartedServer(Child);

impl Drop for RestartedServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn entries_read_by_a_dropped_next_batch_come_back_without_waiting_for_claim_idle() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
    // One full round first, so the next call goes straight to XREADGROUP `>`.
    buffer.push(record(Signal::Traces, 9)).await.unwrap();
    let first = read(consumer.as_mut(), 1).await;
    consumer.ack(&[first[0].id]).await.unwrap();
    // The next read blocks in Redis (BLOCK 1s) and is dropped meanwhile; records pushed
    // then are handed to that read, and its answer goes nowhere.
    nothing(consumer.as_mut(), Duration::from_millis(100)).await;
    for n in 0..5 {
        buffer.push(record(Signal::Traces, n)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The blocked read returns as soon as the first record arrives: that one is now in
    // this consumer's PEL, unseen.
    let lag = buffer.group_lag().await.unwrap()[Signal::Traces.index()];
    assert_eq!((lag.pending, lag.lag), (1, Some(4)), "{lag:?}");
    // claim_idle is 30s: only the consumer's own PEL can give them back this fast.
    let got = read(consumer.as_mut(), 5).await;
    assert_eq!(first_bytes(&got), vec![0, 1, 2, 3, 4], "each exactly once");
    nothing(consumer.as_mut(), Duration::from_millis(300)).await;
}

#[tokio::test]
async fn rediss_urls_speak_tls() {
    let dir = TempDir::new().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is missing: `apt-get install openssl`, or run `scripts/test`");
    assert!(made.success(), "openssl could not make a certificate");
    let port = free_port();
    let child = Command::new(REDIS_SERVER)
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let _server = RestartedServer(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let options = RedisOptions {
        consumer: "tls".into(),
        ..RedisOptions::new(format!("rediss://127.0.0.1:{port}/#insecure"))
    };
    let buffer = RedisBuffer::connect(options).await.unwrap();
    buffer.push(record(Signal::Logs, 4)).await.unwrap();
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    assert_eq!(read(consumer.as_mut(), 1).await[0].record.payload[0], 4);
}

#[tokio::test]
async fn redis_out_of_memory_is_full() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .exec_async(&mut admin)
        .await
        .unwrap();
    match buffer.push(record(Signal::Logs, 0)).await {
        Err(BufferError::Full { retry_after, .. }) => assert!(!retry_after.is_zero()),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(
        buffer.is_ready(),
        "an answer from Redis means it is reachable"
    );
}

#[tokio::test]
async fn records_kept_alive_are_not_reclaimed_by_another_consumer() {
    let server = RedisServer::start();
    let short = |name: &str| RedisOptions {
        claim_idle: Duration::from_millis(300),
        ..server.options(name)
    };
    let slow = RedisBuffer::connect(short("slow")).await.unwrap();
    let other = RedisBuffer::connect(short("other")).await.unwrap();
    slow.push(record(Signal::Logs, 7)).await.unwrap();
    let mut exporting = slow.consumer(Signal::Logs).await.unwrap();
    let held = read(exporting.as_mut(), 1).await;
    assert_eq!(
        exporting.keep_alive_every(),
        Some(Duration::from_millis(100))
    );
    let ids: Vec<_> = held.iter().map(|d| d.id).collect();

    // An export that takes four times claim_idle, declared alive as the pump does.
    let mut waiting = other.consumer(Signal::Logs).await.unwrap();
    let keep = async {
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            exporting.keep_alive(&ids).await.unwrap();
        }
    };
    let (_, ()) = tokio::join!(keep, nothing(waiting.as_mut(), Duration::from_millis(1200)));
    exporting.ack(&ids).await.unwrap();
    assert_eq!(
        other.stats().await.signals[Signal::Logs.index()].reclaimed_records,
        0
    );
    // Without keep-alive the same wait does hand the record over.
    slow.push(record(Signal::Logs, 8)).await.unwrap();
    let _abandoned = read(exporting.as_mut(), 1).await;
    assert_eq!(first_bytes(&read(waiting.as_mut(), 1).await), vec![8]);
}

#[tokio::test]
async fn dead_letters_page_by_entry_id_and_are_removed_one_by_one() {
    let server = RedisServer::start();
    let buffer = RedisBuffer::connect(server.options("c")).await.unwrap();
    for n in 0..5 {
        let letter = vigil_core::buffer::DeadLetter {
            record: record(Signal::Logs, n),
            exporter: "loki".into(),
            reason: format!("400 number {n}"),
            failed_at_ms: 1_700_000_000_000,
        };
        buffer.dead_letter(letter).await.unwrap();
    }
    let first = buffer.dead_letter_page(None, 2).await.unwrap();
    let payloads = |page: &[(String, Result<vigil_core::buffer::DeadLetter, String>)]| {
        page.iter()
            .map(|(_, l)| l.as_ref().unwrap().record.payload[0])
            .collect::<Vec<_>>()
    };
    assert_eq!(payloads(&first), [0, 1]);
    let rest = buffer
        .dead_letter_page(Some(&first[1].0), 10)
        .await
        .unwrap();
    assert_eq!(
        payloads(&rest),
        [2, 3, 4],
        "the page starts after the id given"
    );

    assert!(buffer.remove_dead_letter(&first[0].0).await.unwrap());
    assert!(
        !buffer.remove_dead_letter(&first[0].0).await.unwrap(),
        "already gone"
    );
    let all = buffer.dead_letter_page(None, 10).await.unwrap();
    assert_eq!(payloads(&all), [1, 2, 3, 4]);
}
