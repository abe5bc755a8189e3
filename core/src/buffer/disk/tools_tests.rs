//! Tests of the operator tools' side of the disk buffer: `verify` finds each kind of
//! damage and never writes, `settle` (repair) leaves a clean buffer, and removing dead
//! letters is durable and crash-safe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use bytes::Bytes;

use super::segment::encode_frame;
use super::*;

fn options(root: &Path) -> DiskOptions {
    let mut options = DiskOptions::new(root, 64 << 20);
    // A few records per segment, so damage in one leaves others.
    options.segment_bytes = 200;
    options
}

async fn open(root: &Path) -> DiskBuffer {
    DiskBuffer::open(options(root)).await.unwrap()
}

fn record(text: &str) -> Record {
    Record::new(
        Signal::Logs,
        Some("tenant-a".into()),
        1,
        Bytes::from(format!("{text:-<60}")),
    )
}

fn letter(text: &str) -> DeadLetter {
    DeadLetter {
        record: record(text),
        exporter: "loki".into(),
        reason: format!("400 Bad Request: {text}"),
        failed_at_ms: 1_700_000_000_000,
    }
}

/// A closed buffer with 12 log records in 4 segments of 3, the first 2 acked.
async fn buffer_with_segments(root: &Path) -> Vec<PathBuf> {
    let buffer = open(root).await;
    for i in 0..12 {
        buffer.push(record(&format!("r{i}"))).await.unwrap();
    }
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let batch = consumer
        .next_batch(BatchLimits {
            max_records: 2,
            max_bytes: 1 << 20,
        })
        .await
        .unwrap();
    let ids: Vec<_> = batch.iter().map(|d| d.id).collect();
    consumer.ack(&ids).await.unwrap();
    drop(consumer);
    buffer.close().await.unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    files
}

/// Every file under `root` with its length, modification time and content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (u64, SystemTime, Vec<u8>)> {
    let mut all = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                all.insert(path.clone(), (0, meta.modified().unwrap(), Vec::new()));
                dirs.push(path);
            } else {
                let content = std::fs::read(&path).unwrap();
                all.insert(path, (meta.len(), meta.modified().unwrap(), content));
            }
        }
    }
    all
}

/// Verifies read-only (asserting so) and returns the report.
fn verify_unchanged(root: &Path) -> VerifyReport {
    let before = snapshot(root);
    let report = verify(root).unwrap();
    assert_eq!(snapshot(root), before, "verify must not change anything");
    report
}

fn logs(report: &VerifyReport) -> &QueueReport {
    &report.queues[Signal::Logs.index()]
}

fn damage(report: &VerifyReport) -> Vec<&Problem> {
    report
        .queues
        .iter()
        .flat_map(|q| &q.problems)
        .filter(|p| p.kind.is_damage())
        .collect()
}

#[tokio::test]
async fn a_clean_buffer_verifies_clean_with_its_counts() {
    let dir = tempfile::tempdir().unwrap();
    buffer_with_segments(dir.path()).await;
    let report = verify_unchanged(dir.path());
    assert!(!report.damaged(), "{:?}", damage(&report));
    assert!(!report.live);
    let logs = logs(&report);
    assert_eq!(
        (logs.segments, logs.records, logs.pending, logs.cursor),
        (4, 12, 10, Some(2))
    );
    assert!(logs.bytes > 0);
    assert_eq!(report.queues[3].name, "dead_letter");
}

#[tokio::test]
async fn a_flipped_byte_is_a_checksum_mismatch_in_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&files[1], &bytes).unwrap();

    let report = verify_unchanged(dir.path());
    let found = damage(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ProblemKind::Checksum);
    assert_eq!(found[0].path, files[1]);
    // The third frame of the segment; one record is lost with it.
    assert_eq!(found[0].lost_records, Some(1));
    assert!(found[0].offset.unwrap() > 0);
    assert!(
        found[0]
            .to_string()
            .contains(&files[1].display().to_string())
    );
}

#[tokio::test]
async fn a_cut_mid_frame_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    let last = files.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();

    let report = verify_unchanged(dir.path());
    let found = damage(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ProblemKind::TornTail);
    assert_eq!(&found[0].path, last);
    assert_eq!(
        found[0].lost_records, None,
        "the newest segment's count is unknown"
    );
    assert_eq!(logs(&report).records, 11);
}

#[tokio::test]
async fn a_deleted_middle_segment_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    std::fs::remove_file(&files[2]).unwrap();

    let report = verify_unchanged(dir.path());
    let found = damage(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ProblemKind::MissingSegment);
    assert_eq!(found[0].path, files[2], "names where the segment should be");
    assert_eq!(found[0].lost_records, Some(3));
}

#[tokio::test]
async fn a_cursor_into_a_missing_segment_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    // The cursor is at record 2, in the first segment.
    std::fs::remove_file(&files[0]).unwrap();

    let report = verify_unchanged(dir.path());
    let found = damage(&report);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, ProblemKind::MissingSegment);
    assert!(
        found[0].detail.contains("cursor points at record 2"),
        "{}",
        found[0].detail
    );
}

#[tokio::test]
async fn a_garbage_cursor_and_an_undecodable_record_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    let cursor = dir.path().join("logs").join("cursor");
    std::fs::write(&cursor, b"not a cursor at all").unwrap();
    // A frame whose checksum is right around a payload that is no record.
    let mut bytes = std::fs::read(files.last().unwrap()).unwrap();
    let frame = encode_frame(|out| out.extend_from_slice(b"\x07garbage, not a record"));
    bytes.extend_from_slice(&frame);
    std::fs::write(files.last().unwrap(), &bytes).unwrap();

    let report = verify_unchanged(dir.path());
    let mut kinds: Vec<_> = damage(&report).iter().map(|p| p.kind).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(
        kinds,
        vec![ProblemKind::BadCursor, ProblemKind::Undecodable]
    );
    // Without a cursor the whole queue is pending again: at-least-once.
    assert_eq!(logs(&report).pending, 12);
    assert_eq!(logs(&report).cursor, None);
}

#[tokio::test]
async fn verify_runs_next_to_an_open_buffer_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    buffer_with_segments(dir.path()).await;
    let buffer = open(dir.path()).await;
    let report = verify(dir.path()).unwrap();
    assert!(report.live);
    assert!(!report.damaged());
    buffer.close().await.unwrap();
    assert!(!verify(dir.path()).unwrap().live);
}

#[tokio::test]
async fn verify_refuses_what_is_not_a_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(&dir.path().join("nope")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let err = verify(dir.path()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn open_and_settle_repair_every_kind_of_damage() {
    let dir = tempfile::tempdir().unwrap();
    let files = buffer_with_segments(dir.path()).await;
    let mut bytes = std::fs::read(&files[1]).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    std::fs::write(&files[1], &bytes).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    std::fs::write(dir.path().join("logs").join("cursor"), b"garbage").unwrap();
    assert!(verify(dir.path()).unwrap().damaged());

    let buffer = open(dir.path()).await;
    let recovered = buffer.recovery();
    assert_eq!(recovered.corrupt_records, 1);
    assert_eq!(recovered.cursors_reset, 1);
    let settled = buffer.settle().await.unwrap();
    // Records 5 (cut with its frame) and 6..9 (the deleted segment).
    assert_eq!(settled.lost_records[Signal::Logs.index()], 4);
    buffer.close().await.unwrap();

    let report = verify_unchanged(dir.path());
    assert!(!report.damaged(), "{:?}", damage(&report));
    // The unreadable cursor was reset to the oldest record: 0..5 and 9..12 again.
    assert_eq!(logs(&report).pending, 8);

    // And the records left are delivered.
    let buffer = open(dir.path()).await;
    let mut consumer = buffer.consumer(Signal::Logs).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 8 {
        got.extend(
            consumer
                .next_batch(BatchLimits {
                    max_records: 100,
                    max_bytes: 1 << 20,
                })
                .await
                .unwrap(),
        );
    }
    assert_eq!(got.len(), 8);
    buffer.close().await.unwrap();
}

#[tokio::test]
async fn removed_dead_letters_stay_removed_and_ids_stay_stable() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    for text in ["a", "b", "c", "d"] {
        buffer.dead_letter(letter(text)).await.unwrap();
    }
    let ids =
        |entries: Vec<StoredDeadLetter>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(buffer.dead_letter_entries().unwrap()), vec![0, 1, 2, 3]);
    assert_eq!(buffer.remove_dead_letters(&[1, 99]).await.unwrap(), 1);
    assert_eq!(
        buffer.remove_dead_letters(&[1]).await.unwrap(),
        0,
        "already gone"
    );
    assert_eq!(ids(buffer.dead_letter_entries().unwrap()), vec![0, 2, 3]);
    buffer.close().await.unwrap();

    let mut seen = Vec::new();
    visit_dead_letters(dir.path(), |e| seen.push((e.id, e.letter.reason))).unwrap();
    assert_eq!(
        seen,
        vec![
            (0, "400 Bad Request: a".to_string()),
            (2, "400 Bad Request: c".to_string()),
            (3, "400 Bad Request: d".to_string())
        ]
    );
    let report = verify_unchanged(dir.path());
    assert_eq!(report.queues[3].pending, 3);

    let buffer = open(dir.path()).await;
    assert_eq!(buffer.recovery().dead_letters, 3);
    assert_eq!(buffer.remove_dead_letters(&[0, 2, 3]).await.unwrap(), 3);
    assert!(buffer.dead_letter_entries().unwrap().is_empty());
    // New letters get new ids, never a removed one's.
    buffer.dead_letter(letter("e")).await.unwrap();
    assert_eq!(ids(buffer.dead_letter_entries().unwrap()), vec![4]);
    buffer.close().await.unwrap();
    let buffer = open(dir.path()).await;
    assert_eq!(ids(buffer.dead_letter_entries().unwrap()), vec![4]);
    buffer.close().await.unwrap();
}

#[tokio::test]
async fn a_crash_while_removing_dead_letters_leaves_the_old_or_the_new_state() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    for text in ["a", "b", "c"] {
        buffer.dead_letter(letter(text)).await.unwrap();
    }
    buffer.close().await.unwrap();
    let dead = dir.path().join("dead_letter");
    let before = snapshot(&dead);

    // The new cursor, as removing letter 1 writes it.
    let buffer = open(dir.path()).await;
    buffer.remove_dead_letters(&[1]).await.unwrap();
    buffer.close().await.unwrap();
    let new_cursor = std::fs::read(dead.join("cursor")).unwrap();

    // Crash before the rename: the old state plus a temporary file, complete or torn.
    for tmp in [&new_cursor[..], &new_cursor[..new_cursor.len() / 2]] {
        for (path, (_, _, content)) in &before {
            std::fs::write(path, content).unwrap();
        }
        // Absent before the first removal ever (and after the previous round's open).
        let _ = std::fs::remove_file(dead.join("cursor"));
        std::fs::write(dead.join("cursor.tmp"), tmp).unwrap();
        let report = verify_unchanged(dir.path());
        assert!(!report.damaged(), "a leftover temporary file is no damage");
        assert_eq!(report.queues[3].pending, 3);
        let buffer = open(dir.path()).await;
        let ids: Vec<_> = buffer
            .dead_letter_entries()
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, vec![0, 1, 2], "the old state: nothing lost");
        buffer.close().await.unwrap();
        assert!(
            !dead.join("cursor.tmp").exists(),
            "open removes the leftover"
        );
    }

    // Crash after the rename, before segments were reclaimed: the new state.
    std::fs::write(dead.join("cursor"), &new_cursor).unwrap();
    let buffer = open(dir.path()).await;
    let ids: Vec<_> = buffer
        .dead_letter_entries()
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, vec![0, 2]);
    buffer.close().await.unwrap();
}

#[tokio::test]
async fn a_buffer_without_a_dead_letter_cursor_keeps_all_its_letters() {
    // Buffers written before replay existed have no dead_letter/cursor.
    let dir = tempfile::tempdir().unwrap();
    let buffer = open(dir.path()).await;
    let old = letter("old");
    buffer.dead_letter(old.clone()).await.unwrap();
    buffer.close().await.unwrap();
    assert!(!dir.path().join("dead_letter").join("cursor").exists());
    let buffer = open(dir.path()).await;
    assert_eq!(buffer.dead_letters().unwrap(), vec![old]);
    buffer.close().await.unwrap();
}
