//! Tests of the disk buffer as a whole: what survives a restart, what damage does, how
//! space and concurrency behave.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use super::*;

const LIMITS: BatchLimits = BatchLimits {
    max_records: 1000,
    max_bytes: 1 << 30,
};

fn record(signal: Signal, text: &str) -> Record {
    Record::new(
        signal,
        Some("tenant-a".into()),
        1,
        Bytes::from(text.to_owned()),
    )
}

fn texts(batch: &[Delivery]) -> Vec<String> {
    batch
        .iter()
        .map(|d| String::from_utf8_lossy(&d.record.payload).into_owned())
        .collect()
}

fn segment_files(root: &Path, signal: Signal) -> Vec<PathBuf> {
    let dir = root.join(signal.as_str());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

async fn open(root: &Path) -> DiskBuffer {
    DiskBuffer::open(DiskOptions::new(root, 64 << 20))
        .await
        .unwrap()
}

async fn push_all(buffer: &DiskBuffer, signal: Signal, texts: &[&str]) {
    for text in texts {
        buffer.push(record(signal, text)).await.unwrap();
    }
}

/// Reads until `count` records came (or fails after a while).
async fn read_n(consumer: &mut Box<dyn Consumer>, count: usize) -> Vec<Delivery> {
    let mut all = Vec::new();
    while all.len() < count {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(LIMITS))
            .await
            .expect("records should arrive")
            .unwrap();
        all.extend(batch);
    }
    all
}

/// Asserts nothing is delivered right now.
async fn assert_nothing(consumer: &mut Box<dyn Consumer>) {
    let got = tokio::time::timeout(Duration::from_millis(200), consumer.next_batch(LIMITS)).await;
    if let Ok(batch) = got {
        panic!("expected nothing, got {:?}", texts(&batch.unwrap()));
    }
}

#[tokio::test]
async fn records_round_trip_per_signal_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(&buffer, Signal::Logs, &["a", "b", "c"]).await;
    push_all(&buffer, Signal::Metrics, &["m"]).await;
    let mut logs = buffer.consumer(Signal::Logs).await.unwrap();
    let batch = read_n(&mut logs, 3).await;
    assert_eq!(texts(&batch), ["a", "b", "c"]);
    assert_eq!(batch[0].record.tenant.as_deref(), Some("tenant-a"));
    assert_eq!(batch[0].record.signal, Signal::Logs);
    let mut metrics = buffer.consumer(Signal::Metrics).await.unwrap();
    assert_eq!(texts(&read_n(&mut metrics, 1).await), ["m"]);
    assert_nothing(&mut buffer.consumer(Signal::Traces).await.unwrap()).await;

    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 3);
    assert!(
        stats.signals[Signal::Logs.index()]
            .oldest_unacked_age
            .is_some()
    );
    assert!(stats.used_bytes > 0);
    assert_eq!(stats.capacity_bytes, (64 << 20) - (64 << 20) / 8);
    let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
    logs.ack(&ids).await.unwrap();
    let stats = buffer.stats().await;
    assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 0);
    assert_eq!(stats.signals[Signal::Logs.index()].oldest_unacked_age, None);
}

#[tokio::test]
async fn batches_respect_limits_and_always_hold_one() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(
        &buffer,
        Signal::Traces,
        &["1111", "2222", "3333", "4444", "5555"],
    )
    .await;
    let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
    let two = BatchLimits {
        max_records: 2,
        max_bytes: 1 << 20,
    };
    assert_eq!(
        texts(&consumer.next_batch(two).await.unwrap()),
        ["1111", "2222"]
    );
    let tiny = BatchLimits {
        max_records: 100,
        max_bytes: 1,
    };
    assert_eq!(texts(&consumer.next_batch(tiny).await.unwrap()), ["3333"]);
    let zero = BatchLimits {
        max_records: 0,
        max_bytes: 0,
    };
    assert_eq!(texts(&consumer.next_batch(zero).await.unwrap()), ["4444"]);
}

#[tokio::test]
async fn next_batch_waits_and_is_cancel_safe() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    // Cancelled while waiting: nothing lost.
    assert_nothing(&mut consumer).await;
    let pusher = buffer.clone();
    let push = tokio::spawn(async move { pusher.push(record(Signal::Logs, "late")).await });
    assert_eq!(texts(&read_n(&mut consumer, 1).await), ["late"]);
    push.await.unwrap().unwrap();
}

#[tokio::test]
async fn restart_resumes_exactly_after_acks_including_out_of_order_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let buffer = open(dir.path()).await;
        let all: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        push_all(&buffer, Signal::Logs, &all).await;
        let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
        let batch = read_n(&mut consumer, 10).await;
        // In order 0..=3, and 6 and 8 out of order.
        let acked: Vec<_> = [3, 1, 0, 2, 8, 6].iter().map(|&i| batch[i].id).collect();
        consumer.ack(&acked).await.unwrap();
        let stats = buffer.stats().await;
        assert_eq!(stats.signals[Signal::Logs.index()].pending_records, 4);
        // No close: dropping is as close to a crash as a test in one process gets.
    }
    let buffer = open(dir.path()).await;
    assert_eq!(buffer.recovery().pending, [0, 4, 0]);
    assert_eq!(buffer.recovery().corrupt_records, 0);
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let again = read_n(&mut consumer, 4).await;
    assert_eq!(texts(&again), ["r4", "r5", "r7", "r9"]);
    assert_nothing(&mut consumer).await;

    // New records continue the numbering after the old ones.
    push_all(&buffer, Signal::Logs, &["new"]).await;
    let new = read_n(&mut consumer, 1).await;
    assert_eq!(texts(&new), ["new"]);
    assert!(new[0].id > again[3].id);
}

#[tokio::test]
async fn a_dropped_consumer_hands_its_unacked_records_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(&buffer, Signal::Metrics, &["a", "b", "c"]).await;
    let mut first = buffer.consumer(Signal::Metrics).await.unwrap();
    let batch = read_n(&mut first, 3).await;
    first.ack(&[batch[1].id]).await.unwrap();
    drop(first);
    let mut second = buffer.consumer(Signal::Metrics).await.unwrap();
    let again = read_n(&mut second, 2).await;
    assert_eq!(texts(&again), ["a", "c"]);
    assert_eq!(again[0].id, batch[0].id);
    second.ack(&[again[0].id, again[1].id]).await.unwrap();
    assert_eq!(
        buffer.stats().await.signals[Signal::Metrics.index()].pending_records,
        0
    );
}

#[tokio::test]
async fn full_and_too_large_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DiskOptions::new(dir.path(), MIN_MAX_BYTES);
    opts.segment_bytes = 4096;
    let buffer = DiskBuffer::open(opts).await.unwrap();
    let capacity = buffer.stats().await.capacity_bytes;
    let big = "x".repeat(capacity as usize);
    assert!(matches!(
        buffer.push(record(Signal::Logs, &big)).await,
        Err(BufferError::TooLarge { .. })
    ));
    let chunk = "y".repeat(2000);
    let mut pushed = 0;
    let full = loop {
        match buffer.push(record(Signal::Logs, &chunk)).await {
            Ok(()) => pushed += 1,
            Err(e) => break e,
        }
        assert!(pushed < 1000, "never got Full");
    };
    let BufferError::Full {
        used,
        capacity: reported,
        bound: crate::buffer::Bound::Bytes,
        retry_after,
    } = full
    else {
        panic!("expected Full, got {full:?}");
    };
    assert_eq!(reported, capacity);
    assert!(used <= capacity && used + 2000 > capacity);
    assert!(retry_after > Duration::ZERO);
    assert!(buffer.is_ready());
}

#[tokio::test]
async fn acked_segments_are_deleted_and_their_space_reused() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DiskOptions::new(dir.path(), MIN_MAX_BYTES);
    opts.segment_bytes = 4096;
    let buffer = DiskBuffer::open(opts).await.unwrap();
    let chunk = "z".repeat(1000);
    let mut pushed = 0;
    while buffer.push(record(Signal::Traces, &chunk)).await.is_ok() {
        pushed += 1;
    }
    let files_when_full = segment_files(dir.path(), Signal::Traces).len();
    assert!(files_when_full > 3, "{files_when_full} segments");
    let used_when_full = buffer.stats().await.used_bytes;

    let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
    let batch = read_n(&mut consumer, pushed).await;
    let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    // The open segment stays until the writer needs its room; sealed ones go at once.
    assert!(segment_files(dir.path(), Signal::Traces).len() <= 1);
    assert!(buffer.stats().await.used_bytes < used_when_full / 4);

    // The capacity is usable again, but for acked records sharing the open segment with
    // new ones: space comes back a whole segment (here four records) at a time.
    let mut refilled = 0;
    while buffer.push(record(Signal::Traces, &chunk)).await.is_ok() {
        refilled += 1;
    }
    assert!(refilled >= pushed - 4, "{refilled} of {pushed}");
    let batch = read_n(&mut consumer, refilled).await;
    assert_eq!(batch.len(), refilled);
}

#[tokio::test]
async fn torn_tail_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(&buffer, Signal::Logs, &["one", "two", "three"]).await;
    buffer.close().await.unwrap();
    drop(buffer);
    // Garbage after a crash on another queue.
    push_garbage(dir.path(), Signal::Traces).await;
    let files = segment_files(dir.path(), Signal::Logs);
    let segment = files.last().unwrap();
    let len = std::fs::metadata(segment).unwrap().len();
    // And a crash in the middle of writing "three".
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.set_len(len - 3).unwrap();
    drop(file);

    let buffer = open(dir.path()).await;
    let report = buffer.recovery();
    assert_eq!(report.corrupt_records, 2);
    assert_eq!(report.pending, [0, 2, 1]);
    assert!(report.truncated_bytes > 5);
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    assert_eq!(texts(&read_n(&mut consumer, 2).await), ["one", "two"]);
    assert_nothing(&mut consumer).await;
    // The cut file takes appends again.
    push_all(&buffer, Signal::Logs, &["four"]).await;
    assert_eq!(texts(&read_n(&mut consumer, 1).await), ["four"]);
    let mut traces = buffer.consumer(Signal::Traces).await.unwrap();
    assert_eq!(texts(&read_n(&mut traces, 1).await), ["t"]);
    drop((consumer, traces));
    buffer.close().await.unwrap();
    drop(buffer);
    assert_eq!(open(dir.path()).await.recovery().corrupt_records, 0);
}

/// Writes one good trace record, then garbage after it.
async fn push_garbage(root: &Path, signal: Signal) {
    let buffer = open(root).await;
    push_all(&buffer, signal, &["t"]).await;
    buffer.close().await.unwrap();
    drop(buffer);
    let files = segment_files(root, signal);
    let mut bytes = std::fs::read(files.last().unwrap()).unwrap();
    bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(files.last().unwrap(), bytes).unwrap();
}

#[tokio::test]
async fn a_flipped_byte_cuts_its_segment_and_later_segments_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DiskOptions::new(dir.path(), 1 << 20);
    // Three records a segment.
    opts.segment_bytes = 3 * (FRAME_HEADER + record(Signal::Logs, "r0").encoded_len() as u64);
    let buffer = DiskBuffer::open(opts.clone()).await.unwrap();
    push_all(&buffer, Signal::Logs, &["r0", "r1", "r2", "r3", "r4", "r5"]).await;
    buffer.close().await.unwrap();
    drop(buffer);
    let files = segment_files(dir.path(), Signal::Logs);
    assert_eq!(files.len(), 2);
    // Flip the last payload byte of the middle record of the first segment.
    let frame = FRAME_HEADER as usize + record(Signal::Logs, "r0").encoded_len();
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[2 * frame - 1] ^= 0x20;
    std::fs::write(&files[0], bytes).unwrap();

    let buffer = DiskBuffer::open(opts).await.unwrap();
    let report = buffer.recovery();
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(report.truncated_bytes, 2 * frame as u64);
    assert_eq!(report.pending[Signal::Logs.index()], 4);
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let batch = read_n(&mut consumer, 4).await;
    assert_eq!(texts(&batch), ["r0", "r3", "r4", "r5"]);
    // The gap left by the cut does not hold the cursor back.
    let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    assert_eq!(
        buffer.stats().await.signals[Signal::Logs.index()].pending_records,
        0
    );
    // Both segments were sealed by the reopen, so both are gone.
    assert!(segment_files(dir.path(), Signal::Logs).is_empty());
}

#[tokio::test]
async fn a_garbled_cursor_replays_from_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(&buffer, Signal::Metrics, &["a", "b", "c"]).await;
    let mut consumer = buffer.consumer(Signal::Metrics).await.unwrap();
    let batch = read_n(&mut consumer, 3).await;
    consumer.ack(&[batch[0].id, batch[1].id]).await.unwrap();
    drop(consumer);
    buffer.close().await.unwrap();
    drop(buffer);
    let cursor = dir.path().join("metrics").join("cursor");
    std::fs::write(&cursor, b"not a cursor at all").unwrap();

    let buffer = open(dir.path()).await;
    assert_eq!(buffer.recovery().pending, [3, 0, 0]);
    let mut consumer = buffer.consumer(Signal::Metrics).await.unwrap();
    assert_eq!(texts(&read_n(&mut consumer, 3).await), ["a", "b", "c"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_are_all_durable_and_ordered_per_pusher() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let buffer = buffer.clone();
            tokio::spawn(async move {
                let signal = Signal::ALL[task % 3];
                for n in 0..40 {
                    buffer
                        .push(record(signal, &format!("{task}:{n}")))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // Everything pushed is on disk: a reopen (without close) sees it all.
    drop(buffer);
    let buffer = open(dir.path()).await;
    let mut total = 0;
    for signal in Signal::ALL {
        let expected_tasks = (0..16).filter(|t| t % 3 == signal.index()).count();
        assert_eq!(
            buffer.recovery().pending[signal.index()],
            expected_tasks as u64 * 40
        );
        let mut consumer = buffer.consumer(signal).await.unwrap();
        let batch = read_n(&mut consumer, expected_tasks * 40).await;
        let mut next = [0; 16];
        for text in texts(&batch) {
            let (task, n) = text.split_once(':').unwrap();
            let (task, n): (usize, usize) = (task.parse().unwrap(), n.parse().unwrap());
            assert_eq!(n, next[task], "task {task} out of order");
            next[task] += 1;
        }
        total += batch.len();
    }
    assert_eq!(total, 16 * 40);
}

#[tokio::test]
async fn concurrent_pushes_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    let pushes: Vec<_> = (0..64)
        .map(|n| {
            let buffer = buffer.clone();
            tokio::spawn(async move { buffer.push(record(Signal::Logs, &format!("{n}"))).await })
        })
        .collect();
    for push in pushes {
        push.await.unwrap().unwrap();
    }
    let rounds = buffer.inner.shared.commit_rounds.load(Ordering::Relaxed);
    assert!(rounds < 16, "64 pushes took {rounds} group commits");
}

#[tokio::test]
async fn dead_letters_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let letter = DeadLetter {
        record: record(Signal::Logs, "bad"),
        exporter: "loki".into(),
        reason: "400: entry too far behind".into(),
        failed_at_ms: 1_700_000_000_000,
    };
    {
        let buffer = open(dir.path()).await;
        buffer.dead_letter(letter.clone()).await.unwrap();
        assert_eq!(buffer.dead_letters().unwrap(), vec![letter.clone()]);
    }
    let buffer = open(dir.path()).await;
    assert_eq!(buffer.recovery().dead_letters, 1);
    assert_eq!(buffer.dead_letters().unwrap(), vec![letter]);
    // Dead letters are not pending records of any signal.
    assert_eq!(buffer.recovery().pending, [0, 0, 0]);
}

#[tokio::test]
async fn dead_letters_are_a_ring_within_their_share() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = DiskBuffer::open(DiskOptions::new(dir.path(), MIN_MAX_BYTES))
        .await
        .unwrap();
    let reason = "r".repeat(500);
    for n in 0..100 {
        let letter = DeadLetter {
            record: record(Signal::Traces, &format!("{n}")),
            exporter: "tempo".into(),
            reason: reason.clone(),
            failed_at_ms: n,
        };
        buffer.dead_letter(letter).await.unwrap();
    }
    let kept = buffer.dead_letters().unwrap();
    assert!(!kept.is_empty() && kept.len() < 100);
    assert_eq!(kept.last().unwrap().failed_at_ms, 99);
    assert_eq!(buffer.dead_letters_dropped() as usize + kept.len(), 100);
    // The data queues keep their whole share.
    assert_eq!(buffer.stats().await.used_bytes, 0);
}

#[tokio::test]
async fn close_finishes_and_refuses_later_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    push_all(&buffer, Signal::Logs, &["kept"]).await;
    buffer.close().await.unwrap();
    assert!(!buffer.is_ready());
    assert!(matches!(
        buffer.push(record(Signal::Logs, "late")).await,
        Err(BufferError::Closed)
    ));
    buffer.close().await.unwrap();
    // Closing released the directory: it opens again while the old handle lives.
    let again = open(dir.path()).await;
    assert_eq!(again.recovery().pending, [0, 1, 0]);
}

#[tokio::test]
async fn interval_fsync_delivers_and_survives_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DiskOptions::new(dir.path(), 1 << 20);
    opts.fsync = FsyncPolicy::Interval(Duration::from_millis(10));
    let buffer = DiskBuffer::open(opts.clone()).await.unwrap();
    push_all(&buffer, Signal::Traces, &["a", "b"]).await;
    let mut consumer = buffer.consumer(Signal::Traces).await.unwrap();
    assert_eq!(texts(&read_n(&mut consumer, 2).await), ["a", "b"]);
    drop(consumer);
    buffer.close().await.unwrap();
    drop(buffer);
    let buffer = DiskBuffer::open(opts).await.unwrap();
    assert_eq!(buffer.recovery().pending, [0, 0, 2]);
}

#[tokio::test]
async fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for opts in [
        DiskOptions::new(dir.path(), 0),
        DiskOptions::new("", 1 << 20),
        DiskOptions {
            segment_bytes: 0,
            ..DiskOptions::new(dir.path(), 1 << 20)
        },
        DiskOptions {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            ..DiskOptions::new(dir.path(), 1 << 20)
        },
    ] {
        assert!(DiskBuffer::open(opts).await.is_err());
    }
    let defaults = DiskOptions::new(dir.path(), 1 << 30);
    assert_eq!(defaults.segment_bytes, 64 << 20);
    assert_eq!(defaults.fsync, FsyncPolicy::Always);
    assert_eq!(DiskOptions::new(dir.path(), 4 << 20).segment_bytes, 1 << 20);
}

/// Set in the child process of the kill -9 test: the buffer directory to push into.
const CHILD_DIR_ENV: &str = "VIGIL_DISK_BUFFER_KILL_TEST_DIR";

/// The child side of `kill_9_mid_write_loses_no_acknowledged_push`; does nothing when run
/// as an ordinary test.
#[tokio::test]
async fn kill_9_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let mut opts = DiskOptions::new(PathBuf::from(dir), 1 << 20);
    opts.segment_bytes = 4096;
    let buffer = DiskBuffer::open(opts).await.unwrap();
    for n in 0u64.. {
        buffer
            .push(record(Signal::Logs, &format!("{n:08}")))
            .await
            .unwrap();
        println!("acknowledged {n}");
    }
}

#[tokio::test]
async fn kill_9_mid_write_loses_no_acknowledged_push() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "buffer::disk::tests::kill_9_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut last = None;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while last.is_none_or(|n| n < 300) {
        let line = lines.next().expect("child ended early").unwrap();
        if let Some(n) = line.strip_prefix("acknowledged ") {
            last = Some(n.parse::<u64>().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let last = last.unwrap();

    let mut opts = DiskOptions::new(dir.path(), 1 << 20);
    opts.segment_bytes = 4096;
    let buffer = DiskBuffer::open(opts).await.unwrap();
    let pending = buffer.recovery().pending[Signal::Logs.index()];
    assert!(
        pending > last,
        "{pending} records kept, {last} acknowledged"
    );
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let batch = read_n(&mut consumer, pending as usize).await;
    let expected: Vec<String> = (0..pending).map(|n| format!("{n:08}")).collect();
    assert_eq!(texts(&batch), expected);
}

#[tokio::test]
async fn another_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = DiskBuffer::open(DiskOptions::new(dir.path(), 1 << 20))
        .await
        .unwrap();
    // flock locks belong to an open file description, so a second open of the LOCK file
    // stands for another process.
    let other = std::fs::File::open(dir.path().join("LOCK")).unwrap();
    assert!(matches!(
        other.try_lock(),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    buffer.close().await.unwrap();
    other.try_lock().expect("the lock is released on close");
}
