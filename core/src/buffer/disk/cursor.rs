//! The ack cursor of a queue and its file.
//!
//! The cursor is the sequence number of the oldest record not yet acked: everything below
//! it is done. Exporters may ack out of order, so the records acked above the cursor are
//! kept as a set of ranges and persisted with it; after a crash none of them is delivered
//! again. The set stays small in practice because acks come in runs.
//!
//! The file is replaced atomically (write a temporary file, fsync, rename, fsync the
//! directory), so a crash leaves either the old or the new cursor, never a mix. A file that
//! is missing or does not check out means "start from the oldest segment": replaying
//! acked records is a duplicate, skipping unacked ones would be a loss.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use bytes::{Buf, BufMut};

use super::segment::sync_dir;

const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";
const MAGIC: &[u8; 8] = b"VGLCUR01";
/// Bound on what `peek` reads: 64 MiB holds four million acked ranges, far beyond what
/// out-of-order acks leave in practice.
const MAX_CURSOR_BYTES: u64 = 64 << 20;
pub(super) const CURSOR_FILE_NAME: &str = CURSOR_FILE;

/// A set of sequence numbers stored as disjoint, non-adjacent half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct RangeSet {
    /// start → end (exclusive).
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.ranges
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &end)| seq < end)
    }

    pub(super) fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq + 1);
    }

    pub(super) fn insert_range(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Swallow every range that overlaps or touches [start, end).
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// If `seq` is the start of a range, removes that range and returns its end.
    pub(super) fn take_range_at(&mut self, seq: u64) -> Option<u64> {
        self.ranges.remove(&seq)
    }

    /// Forgets everything below `seq`.
    pub(super) fn remove_below(&mut self, seq: u64) {
        let below: Vec<(u64, u64)> = self.ranges.range(..seq).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in below {
            self.ranges.remove(&s);
            if e > seq {
                self.ranges.insert(seq, e);
            }
        }
    }

    /// How many numbers in `[start, end)` the set holds.
    pub(super) fn count_in(&self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        self.ranges
            .range(first..end)
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(start)))
            .sum()
    }

    /// The sub-ranges of `[start, end)` the set does not hold, in order.
    pub(super) fn missing_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut missing = Vec::new();
        let mut at = start;
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&s, _)| s);
        for (&s, &e) in self.ranges.range(first..end) {
            if s > at {
                missing.push((at, s));
            }
            at = at.max(e);
            if at >= end {
                break;
            }
        }
        if at < end {
            missing.push((at, end));
        }
        missing
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

/// What a cursor file says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    /// Every record below this is acked.
    pub(super) next_unacked: u64,
    /// Records at or above `next_unacked` acked out of order.
    pub(super) acked: RangeSet,
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + self.acked.ranges.len() * 16);
        out.put_slice(MAGIC);
        out.put_u64_le(self.next_unacked);
        out.put_u32_le(self.acked.ranges.len() as u32);
        for (start, end) in self.acked.iter() {
            out.put_u64_le(start);
            out.put_u64_le(end);
        }
        let crc = crc32fast::hash(&out);
        out.put_u32_le(crc);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Cursor> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return None;
        }
        let mut body = body.strip_prefix(MAGIC.as_slice())?;
        if body.len() < 12 {
            return None;
        }
        let next_unacked = body.get_u64_le();
        let count = body.get_u32_le() as usize;
        if body.len() != count.checked_mul(16)? {
            return None;
        }
        let mut acked = RangeSet::default();
        for _ in 0..count {
            let (start, end) = (body.get_u64_le(), body.get_u64_le());
            acked.insert_range(start.max(next_unacked), end);
        }
        Some(Cursor {
            next_unacked,
            acked,
        })
    }
}

/// What reading a queue's cursor file found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LoadedCursor {
    Found(Cursor),
    Missing,
    /// The file exists but is not a cursor we wrote (torn by a crash mid-rename on a
    /// filesystem that does not keep renames atomic, or damaged).
    Garbled,
}

pub(super) fn load(dir: &Path) -> io::Result<LoadedCursor> {
    // A leftover temporary file is a replacement that never happened; the real file is
    // still the truth.
    match std::fs::remove_file(dir.join(CURSOR_TMP)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    match std::fs::read(dir.join(CURSOR_FILE)) {
        Ok(bytes) => Ok(Cursor::decode(&bytes).map_or(LoadedCursor::Garbled, LoadedCursor::Found)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LoadedCursor::Missing),
        Err(e) => Err(e),
    }
}

/// Reads a cursor file without touching anything (for `buffer verify` and `dlq list`,
/// which may run next to a collector): a leftover temporary file is left where it is.
pub(super) fn peek(dir: &Path) -> io::Result<LoadedCursor> {
    match std::fs::metadata(dir.join(CURSOR_FILE)) {
        // A cursor file is a few hundred bytes; anything huge is not ours, and reading it
        // whole would be an allocation an attacker chooses.
        Ok(meta) if meta.len() > MAX_CURSOR_BYTES => return Ok(LoadedCursor::Garbled),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadedCursor::Missing),
        Err(e) => return Err(e),
    }
    match std::fs::read(dir.join(CURSOR_FILE)) {
        Ok(bytes) => Ok(Cursor::decode(&bytes).map_or(LoadedCursor::Garbled, LoadedCursor::Found)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LoadedCursor::Missing),
        Err(e) => Err(e),
    }
}

/// Whether a replacement of the cursor file was interrupted (its temporary file is left).
pub(super) fn has_leftover(dir: &Path) -> bool {
    dir.join(CURSOR_TMP).exists()
}

/// Replaces the cursor file atomically. Blocking; callers serialize per queue.
pub(super) fn store(dir: &Path, cursor: &Cursor) -> io::Result<()> {
    let tmp = dir.join(CURSOR_TMP);
    let mut file = File::create(&tmp)?;
    file.write_all(&cursor.encode())?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(CURSOR_FILE))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet {
        let mut s = RangeSet::default();
        for &(a, b) in ranges {
            s.insert_range(a, b);
        }
        s
    }

    #[test]
    fn ranges_merge_and_count() {
        let mut s = RangeSet::default();
        for seq in [5, 7, 6, 1, 10, 11] {
            s.insert(seq);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 2), (5, 8), (10, 12)]);
        assert!(s.contains(6) && !s.contains(8) && !s.contains(0));
        assert_eq!(s.count_in(0, 100), 6);
        assert_eq!(s.count_in(6, 11), 3);
        assert_eq!(s.missing_in(0, 13), vec![(0, 1), (2, 5), (8, 10), (12, 13)]);
        assert_eq!(s.missing_in(6, 7), vec![]);
        assert_eq!(s.missing_in(6, 9), vec![(8, 9)]);
        s.insert_range(2, 10);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 12)]);
        s.remove_below(4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(4, 12)]);
        assert_eq!(s.take_range_at(4), Some(12));
        assert_eq!(s, RangeSet::default());
    }

    #[test]
    fn cursor_file_round_trips_and_garbage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), LoadedCursor::Missing);
        let cursor = Cursor {
            next_unacked: 42,
            acked: set(&[(44, 46), (50, 51)]),
        };
        store(dir.path(), &cursor).unwrap();
        assert_eq!(load(dir.path()).unwrap(), LoadedCursor::Found(cursor));

        let path = dir.path().join(CURSOR_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(dir.path()).unwrap(), LoadedCursor::Garbled);
        std::fs::write(&path, b"xy").unwrap();
        assert_eq!(load(dir.path()).unwrap(), LoadedCursor::Garbled);
    }
}
