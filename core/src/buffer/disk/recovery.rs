//! What `DiskBuffer::open` does before it serves: read the cursors, check every frame past
//! them, cut damaged tails, delete what is done.
//!
//! Damage never stops the open: a torn or corrupt frame ends its segment there (the file is
//! truncated to the last good frame, counted, logged) and the next segment is read as
//! usual, because segments are independent files and a bad tail in one says nothing about
//! the others. Only real I/O errors (permission denied, a failing disk) fail the open.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;

use super::RecoveryReport;
use super::cursor::{self, Cursor, LoadedCursor};
use super::queue::{Log, Queue, ReadPos, SegmentMeta};
use super::segment::{FrameError, FrameReader, list_segments, segment_path};
use super::writer::delete_files;
use crate::buffer::{DeadLetter, Record};

/// What scanning one segment found.
struct Scan {
    records: u64,
    good_bytes: u64,
    file_bytes: u64,
    damage: Option<&'static str>,
    /// Offset of the frame holding sequence number `wanted`, if the segment has it.
    wanted_offset: Option<u64>,
}

fn scan_segment(
    path: &Path,
    first: u64,
    wanted: u64,
    max_records: Option<u64>,
    valid: fn(Bytes) -> bool,
) -> io::Result<Scan> {
    let mut reader = FrameReader::open(path, 0, None)?;
    let file_bytes = std::fs::metadata(path)?.len();
    let mut records = 0u64;
    let mut wanted_offset = None;
    let mut damage = None;
    loop {
        if max_records.is_some_and(|max| records >= max) {
            if reader.offset() < file_bytes {
                damage = Some("holds more records than its name leaves room for");
            }
            break;
        }
        let offset = reader.offset();
        match reader.next_frame() {
            Ok(None) => break,
            Ok(Some(payload)) => {
                if !valid(payload) {
                    damage = Some("record does not decode");
                    break;
                }
                if first + records == wanted {
                    wanted_offset = Some(offset);
                }
                records += 1;
            }
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Torn) => {
                damage = Some("torn frame (incomplete write or impossible length)");
                break;
            }
            Err(FrameError::Checksum) => {
                damage = Some("checksum mismatch");
                break;
            }
        }
    }
    Ok(Scan {
        records,
        good_bytes: reader.offset(),
        file_bytes,
        damage,
        wanted_offset,
    })
}

/// Scans the segments of `dir`, cutting damage, and returns the segments that hold
/// records, in order. Segments entirely below `cursor` are deleted unread.
fn recover_log(
    dir: &Path,
    cursor: u64,
    valid: fn(Bytes) -> bool,
    report: &mut RecoveryReport,
) -> io::Result<(Log, Option<ReadPos>)> {
    std::fs::create_dir_all(dir)?;
    let firsts = list_segments(dir)?;
    let mut log = Log::new(dir.to_path_buf());
    let mut delete: Vec<PathBuf> = Vec::new();
    let mut read = None;
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        let next_first = firsts.get(i + 1).copied();
        if next_first.is_some_and(|next| next <= cursor) {
            // Every number it can hold is below the cursor: acked, space not yet reclaimed.
            delete.push(path);
            continue;
        }
        let scan = scan_segment(&path, first, cursor, next_first.map(|n| n - first), valid)?;
        if let Some(damage) = scan.damage {
            let cut = scan.file_bytes - scan.good_bytes;
            warn!(
                segment = %path.display(),
                damage,
                good_records = scan.records,
                cut_bytes = cut,
                "disk buffer segment is damaged; cutting it at the last good record"
            );
            let file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.set_len(scan.good_bytes)?;
            file.sync_data()?;
            report.corrupt_records += 1;
            report.truncated_bytes += cut;
        }
        if scan.records == 0 || first + scan.records <= cursor {
            delete.push(path);
            continue;
        }
        log.segments.insert(
            first,
            SegmentMeta {
                bytes: scan.good_bytes,
                records: scan.records,
            },
        );
        log.used += scan.good_bytes;
        if read.is_none() {
            read = Some(match scan.wanted_offset {
                Some(offset) => ReadPos {
                    segment: first,
                    offset,
                    seq: cursor,
                    from: cursor,
                },
                None => ReadPos {
                    segment: first,
                    offset: 0,
                    seq: first,
                    from: cursor.max(first),
                },
            });
        }
    }
    report.segments_removed += delete.len() as u64;
    delete_files(&delete)?;
    let end = log
        .segments
        .iter()
        .next_back()
        .map_or(0, |(first, meta)| first + meta.records);
    log.next_seq = end.max(cursor);
    log.durable = log.next_seq;
    Ok((log, read))
}

pub(super) fn recover_queue(dir: &Path, report: &mut RecoveryReport) -> io::Result<Queue> {
    recover_cursored_log(dir, valid_record, report)
}

/// A log with an ack cursor: a signal queue, or the dead-letter store, whose cursor says
/// which letters were replayed (removed). A store without a cursor file (written before
/// replay existed) has nothing removed.
fn recover_cursored_log(
    dir: &Path,
    valid: fn(Bytes) -> bool,
    report: &mut RecoveryReport,
) -> io::Result<Queue> {
    std::fs::create_dir_all(dir)?;
    let loaded = match cursor::load(dir)? {
        LoadedCursor::Found(cursor) => Some(cursor),
        // No ack has happened yet in this directory.
        LoadedCursor::Missing => None,
        LoadedCursor::Garbled => {
            warn!(
                dir = %dir.display(),
                "disk buffer cursor file is damaged; replaying from the oldest segment"
            );
            report.cursors_reset += 1;
            None
        }
    };
    let cursor = match loaded {
        Some(cursor) => cursor,
        None => Cursor {
            next_unacked: list_segments(dir)?.first().copied().unwrap_or(0),
            ..Cursor::default()
        },
    };
    let (log, read) = recover_log(dir, cursor.next_unacked, valid, report)?;
    let read = read.unwrap_or(ReadPos {
        segment: log.next_seq,
        offset: 0,
        seq: log.next_seq,
        from: log.next_seq,
    });
    let mut queue = Queue::new(log, cursor, read);
    queue.advance_cursor();
    Ok(queue)
}

/// The dead-letter store is a log like a queue's; its cursor marks letters replayed.
pub(super) fn recover_dead_letters(dir: &Path, report: &mut RecoveryReport) -> io::Result<Queue> {
    let dead = recover_cursored_log(dir, valid_dead_letter, report)?;
    report.dead_letters = dead.pending();
    Ok(dead)
}

fn valid_record(payload: Bytes) -> bool {
    Record::decode(payload).is_ok()
}

fn valid_dead_letter(payload: Bytes) -> bool {
    DeadLetter::decode(payload).is_ok()
}
