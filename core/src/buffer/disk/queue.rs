//! In-memory bookkeeping of one queue: which segments exist, what is committed, what is
//! delivered, what is acked. Everything here runs under the buffer's lock and does no I/O;
//! reads from disk happen in [`read`], outside the lock, on a blocking thread.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::cursor::{Cursor, RangeSet};
use super::segment::{FrameError, FrameReader, segment_path};
use crate::buffer::{BatchLimits, Delivery, DeliveryId, Record};

/// How many segments one read may walk through; the next read carries on.
const MAX_SEGMENTS_PER_READ: usize = 64;

/// Committed size of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SegmentMeta {
    pub(super) bytes: u64,
    pub(super) records: u64,
}

/// An append-only run of segments. The writer appends to the `active` one (always the
/// last); the others are sealed and only ever deleted whole.
#[derive(Debug)]
pub(super) struct Log {
    pub(super) dir: PathBuf,
    /// First sequence number → committed size. A segment appears here only once it holds
    /// committed records, so a reader that sees a later segment knows earlier ones are
    /// complete.
    pub(super) segments: BTreeMap<u64, SegmentMeta>,
    pub(super) active: Option<u64>,
    /// The next number the writer hands out.
    pub(super) next_seq: u64,
    /// Records below this are committed: written, and fsynced under `FsyncPolicy::Always`.
    pub(super) durable: u64,
    /// Bytes of all segments, plus what the writer reserved for the batch it is writing.
    pub(super) used: u64,
}

impl Log {
    pub(super) fn new(dir: PathBuf) -> Log {
        Log {
            dir,
            segments: BTreeMap::new(),
            active: None,
            next_seq: 0,
            durable: 0,
            used: 0,
        }
    }

    pub(super) fn segment_containing(&self, seq: u64) -> Option<u64> {
        self.segments
            .range(..=seq)
            .next_back()
            .filter(|(first, meta)| seq < *first + meta.records)
            .map(|(first, _)| *first)
    }

    pub(super) fn records_in(&self, start: u64, end: u64) -> u64 {
        self.segments
            .iter()
            .map(|(first, meta)| {
                (first + meta.records)
                    .min(end)
                    .saturating_sub((*first).max(start))
            })
            .sum()
    }

    /// Removes the sealed segments whose every record is below `bound` from the books and
    /// returns their paths for the caller to delete.
    pub(super) fn take_sealed_below(&mut self, bound: u64) -> Vec<PathBuf> {
        let done: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, meta)| Some(**first) != self.active && *first + meta.records <= bound)
            .map(|(first, _)| *first)
            .collect();
        done.into_iter()
            .filter_map(|first| {
                let meta = self.segments.remove(&first)?;
                self.used = self.used.saturating_sub(meta.bytes);
                Some(segment_path(&self.dir, first))
            })
            .collect()
    }
}

/// Where a record's frame starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) segment: u64,
    pub(super) offset: u64,
}

/// A record handed to a consumer and not acked yet.
#[derive(Debug, Clone, Copy)]
pub(super) struct Unacked {
    pub(super) location: Location,
    pub(super) received_at_ms: u64,
    pub(super) consumer: u64,
}

/// The next frame the sequential reader looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadPos {
    pub(super) segment: u64,
    pub(super) offset: u64,
    /// Sequence number of the frame at `offset`.
    pub(super) seq: u64,
    /// First sequence number never handed out; frames below it are skipped (after a
    /// restart the reader starts at a segment's beginning and skips to the cursor).
    pub(super) from: u64,
}

/// One signal's queue.
#[derive(Debug)]
pub(super) struct Queue {
    pub(super) log: Log,
    /// Every record below this is acked.
    pub(super) cursor: u64,
    /// Records at or above `cursor` acked out of order (and records lost to damage).
    pub(super) acked: RangeSet,
    pub(super) read: ReadPos,
    pub(super) in_flight: BTreeMap<u64, Unacked>,
    /// Handed to a consumer that was dropped without acking them; served before new ones.
    pub(super) redeliver: BTreeMap<u64, Unacked>,
    /// Received time of the record at the cursor, once looked up.
    pub(super) oldest: Option<(u64, u64)>,
}

/// What one read will fetch, decided under the lock.
#[derive(Debug, Clone)]
pub(super) enum ReadPlan {
    Redeliver(Vec<(u64, Location)>),
    Sequential {
        start: ReadPos,
        segments: Vec<(u64, SegmentMeta)>,
        durable: u64,
    },
}

/// What a read fetched, to be committed under the lock.
#[derive(Debug, Default)]
pub(super) struct ReadOutcome {
    pub(super) records: Vec<(u64, Location, Record)>,
    /// Where the sequential reader stopped.
    pub(super) end: Option<ReadPos>,
    /// Ranges of committed records that could not be read back (damaged after recovery).
    pub(super) lost: Vec<(u64, u64)>,
}

impl Queue {
    pub(super) fn new(log: Log, cursor: Cursor, read: ReadPos) -> Queue {
        Queue {
            log,
            cursor: cursor.next_unacked,
            acked: cursor.acked,
            read,
            in_flight: BTreeMap::new(),
            redeliver: BTreeMap::new(),
            oldest: None,
        }
    }

    pub(super) fn cursor_snapshot(&self) -> Cursor {
        Cursor {
            next_unacked: self.cursor,
            acked: self.acked.clone(),
        }
    }

    /// Moves the cursor over acked records and over numbers no segment holds (gaps left by
    /// recovery). Returns whether it moved.
    pub(super) fn advance_cursor(&mut self) -> bool {
        let before = self.cursor;
        while self.cursor < self.log.durable {
            if let Some(end) = self.acked.take_range_at(self.cursor) {
                self.cursor = end;
                continue;
            }
            if self.log.segment_containing(self.cursor).is_some() {
                break;
            }
            let next = self
                .log
                .segments
                .range(self.cursor..)
                .next()
                .map_or(self.log.durable, |(first, _)| *first);
            self.cursor = next.min(self.log.durable);
            if next >= self.log.durable {
                break;
            }
        }
        self.acked.remove_below(self.cursor);
        self.cursor != before
    }

    /// How many numbers in `[start, end)` are done: below the cursor or acked above it.
    pub(super) fn records_done(&self, start: u64, end: u64) -> u64 {
        let below = self.cursor.min(end).saturating_sub(start);
        below + self.acked.count_in(start.max(self.cursor), end)
    }

    /// Numbers in `[cursor, durable)` that no segment holds and nothing acked: records
    /// lost to a cut (recovery) or with a segment file that went missing.
    pub(super) fn unexplained_gaps(&self) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let mut at = self.cursor;
        let mut push_gap = |start: u64, end: u64| gaps.extend(self.acked.missing_in(start, end));
        for (first, meta) in self.log.segments.range(..self.log.durable) {
            if *first > at {
                push_gap(at, (*first).min(self.log.durable));
            }
            at = at.max(first + meta.records);
        }
        if at < self.log.durable {
            push_gap(at, self.log.durable);
        }
        gaps
    }

    /// Takes off the books the sealed segments whose every record is done (below the
    /// cursor or acked above it) and returns their paths for the caller to delete.
    pub(super) fn take_sealed_done(&mut self) -> Vec<PathBuf> {
        let done: Vec<u64> = self
            .log
            .segments
            .iter()
            .filter(|(first, meta)| {
                Some(**first) != self.log.active
                    && self.records_done(**first, **first + meta.records) == meta.records
            })
            .map(|(first, _)| *first)
            .collect();
        done.into_iter()
            .filter_map(|first| {
                let meta = self.log.segments.remove(&first)?;
                self.log.used = self.log.used.saturating_sub(meta.bytes);
                Some(segment_path(&self.log.dir, first))
            })
            .collect()
    }

    /// Marks delivered records acked; unknown ids (already acked, or never delivered) are
    /// ignored. Returns whether anything was newly acked (and so must be persisted).
    pub(super) fn ack(&mut self, ids: &[DeliveryId]) -> bool {
        let mut any = false;
        for id in ids {
            if self.in_flight.remove(&id.0).is_some() {
                self.acked.insert(id.0);
                any = true;
            }
        }
        self.advance_cursor();
        any
    }

    /// Gives a dropped consumer's unacked records back, for the next consumer.
    pub(super) fn release(&mut self, consumer: u64) {
        let mine: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, u)| u.consumer == consumer)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in mine {
            if let Some(unacked) = self.in_flight.remove(&seq) {
                self.redeliver.insert(seq, unacked);
            }
        }
    }

    /// Records stored and not acked.
    pub(super) fn pending(&self) -> u64 {
        let end = self.log.durable;
        self.log
            .records_in(self.cursor, end)
            .saturating_sub(self.acked.count_in(self.cursor, end))
    }

    /// Received time of the oldest unacked record if known without reading the disk.
    pub(super) fn oldest_known(&self) -> Option<u64> {
        let seq = self.cursor;
        self.in_flight
            .get(&seq)
            .or_else(|| self.redeliver.get(&seq))
            .map(|u| u.received_at_ms)
            .or_else(|| self.oldest.filter(|(s, _)| *s == seq).map(|(_, ms)| ms))
    }

    /// Plans the next read: records given back by a dropped consumer first, then new ones.
    pub(super) fn plan_read(&mut self, max_records: usize) -> Option<ReadPlan> {
        if !self.redeliver.is_empty() {
            let take = self
                .redeliver
                .iter()
                .take(max_records.max(1))
                .map(|(seq, u)| (*seq, u.location))
                .collect();
            return Some(ReadPlan::Redeliver(take));
        }
        self.plan_sequential()
    }

    /// Plans reading on from the sequential position, if anything committed lies past it.
    pub(super) fn plan_sequential(&mut self) -> Option<ReadPlan> {
        if self.read.from >= self.log.durable {
            return None;
        }
        if !self.log.segments.contains_key(&self.read.segment) {
            // The segment under the reader was reclaimed (all of it acked), or the reader
            // waits where the next segment will start: go on with the one holding the next
            // record.
            let from = self.read.from;
            let first = self.log.segment_containing(from).or_else(|| {
                self.log
                    .segments
                    .range(from..)
                    .next()
                    .map(|(first, _)| *first)
            })?;
            self.read = ReadPos {
                segment: first,
                offset: 0,
                seq: first,
                from: from.max(first),
            };
        }
        Some(ReadPlan::Sequential {
            start: self.read,
            segments: self
                .log
                .segments
                .range(self.read.segment..)
                .take(MAX_SEGMENTS_PER_READ)
                .map(|(first, meta)| (*first, *meta))
                .collect(),
            durable: self.log.durable,
        })
    }

    /// Applies a read's outcome. `None` if the queue moved on meanwhile (another consumer
    /// read first): the caller plans again.
    pub(super) fn commit_read(
        &mut self,
        plan: &ReadPlan,
        outcome: ReadOutcome,
        consumer: u64,
    ) -> Option<Vec<Delivery>> {
        match plan {
            ReadPlan::Sequential { start, .. } => {
                if self.read != *start {
                    return None;
                }
                if let Some(end) = outcome.end {
                    self.read = end;
                }
            }
            ReadPlan::Redeliver(planned) => {
                if planned
                    .iter()
                    .any(|(seq, _)| !self.redeliver.contains_key(seq))
                {
                    return None;
                }
                for (seq, _, _) in &outcome.records {
                    self.redeliver.remove(seq);
                }
                for (start, end) in &outcome.lost {
                    for seq in *start..*end {
                        self.redeliver.remove(&seq);
                    }
                }
            }
        }
        for (start, end) in &outcome.lost {
            warn!(
                dir = %self.log.dir.display(),
                first = start,
                end = end,
                "records could not be read back from the disk buffer; skipping them"
            );
            self.acked.insert_range((*start).max(self.cursor), *end);
        }
        if !outcome.lost.is_empty() {
            self.advance_cursor();
        }
        let mut batch = Vec::with_capacity(outcome.records.len());
        for (seq, location, record) in outcome.records {
            if seq < self.cursor || self.acked.contains(seq) {
                continue;
            }
            self.in_flight.insert(
                seq,
                Unacked {
                    location,
                    received_at_ms: record.received_at_ms,
                    consumer,
                },
            );
            batch.push(Delivery {
                id: DeliveryId(seq),
                record,
            });
        }
        Some(batch)
    }
}

/// Fetches what `plan` says from the segment files in `dir`. Blocking.
pub(super) fn read(dir: &Path, plan: &ReadPlan, limits: BatchLimits) -> io::Result<ReadOutcome> {
    match plan {
        ReadPlan::Redeliver(planned) => read_located(dir, planned, limits),
        ReadPlan::Sequential {
            start,
            segments,
            durable,
        } => read_sequential(dir, *start, segments, *durable, limits),
    }
}

fn read_located(
    dir: &Path,
    planned: &[(u64, Location)],
    limits: BatchLimits,
) -> io::Result<ReadOutcome> {
    let mut outcome = ReadOutcome::default();
    let mut bytes = 0usize;
    for (seq, location) in planned {
        let path = segment_path(dir, location.segment);
        let frame = FrameReader::open(&path, location.offset, None)
            .map_err(FrameError::from)
            .and_then(|mut reader| reader.next_frame());
        let record = match frame {
            Ok(Some(payload)) => Record::decode(payload).ok(),
            Ok(None) => None,
            Err(FrameError::Io(e)) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            Err(_) => None,
        };
        let Some(record) = record else {
            outcome.lost.push((*seq, seq + 1));
            continue;
        };
        let size = record.payload.len();
        if !outcome.records.is_empty() && bytes + size > limits.max_bytes {
            break;
        }
        bytes += size;
        outcome.records.push((*seq, *location, record));
    }
    Ok(outcome)
}

fn read_sequential(
    dir: &Path,
    start: ReadPos,
    segments: &[(u64, SegmentMeta)],
    durable: u64,
    limits: BatchLimits,
) -> io::Result<ReadOutcome> {
    let mut outcome = ReadOutcome::default();
    let mut pos = start;
    let mut bytes = 0usize;
    let max_records = limits.max_records.max(1);
    'segments: for (index, &(first, meta)) in segments.iter().enumerate() {
        if index > 0 {
            // A later segment exists, so the one before is complete.
            pos = ReadPos {
                segment: first,
                offset: 0,
                seq: first,
                from: pos.from.max(first),
            };
        }
        let mut reader =
            match FrameReader::open(&segment_path(dir, first), pos.offset, Some(meta.bytes)) {
                Ok(reader) => reader,
                // Reclaimed under us: every record in it was acked.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
        loop {
            if pos.seq >= durable || outcome.records.len() >= max_records {
                break 'segments;
            }
            let offset = reader.offset();
            let record = match reader.next_frame() {
                Ok(None) => continue 'segments,
                Ok(Some(payload)) => Record::decode(payload).ok(),
                Err(FrameError::Io(e)) => return Err(e),
                Err(_) => None,
            };
            let Some(record) = record else {
                // Damaged since it was written (recovery checked it at open, or we wrote
                // it): the rest of this segment cannot be trusted.
                let end = first + meta.records;
                outcome.lost.push((pos.seq.max(pos.from), end));
                pos = ReadPos {
                    segment: first,
                    offset: meta.bytes,
                    seq: end,
                    from: pos.from.max(end),
                };
                continue 'segments;
            };
            if pos.seq >= pos.from {
                let size = record.payload.len();
                if !outcome.records.is_empty() && bytes + size > limits.max_bytes {
                    break 'segments;
                }
                bytes += size;
                let location = Location {
                    segment: first,
                    offset,
                };
                outcome.records.push((pos.seq, location, record));
            }
            pos.seq += 1;
            pos.offset = reader.offset();
            pos.from = pos.from.max(pos.seq);
        }
    }
    outcome.end = Some(pos);
    Ok(outcome)
}
