//! What `buffer repair` and `dlq replay` do on an open (so exclusively locked) buffer.
//!
//! Removing dead letters uses the dead-letter store's own cursor file, in the same format
//! and with the same atomic replacement as a queue's: the cursor and its acked ranges say
//! which letters were replayed. A crash before the rename leaves the old file (and a
//! `cursor.tmp` that the next open removes), so the letters are still there; after it, the
//! new one. Either way nothing is lost, and the caller pushes the records back before it
//! removes their letters, so the worst case is a duplicate.

use std::io;

use super::cursor;
use super::segment::{FrameReader, segment_path};
use super::writer::{DEAD_LETTER_SLOT, delete_files};
use super::{DiskBuffer, blocking};
use crate::Signal;
use crate::buffer::{BufferError, DeadLetter};
use tracing::warn;

/// A dead letter with the id it is listed, shown and replayed by: its sequence number in
/// the dead-letter store, stable for as long as the letter is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeadLetter {
    pub id: u64,
    pub letter: DeadLetter,
}

/// What [`DiskBuffer::settle`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettleReport {
    /// Per signal ([`Signal::index`]): record numbers held by no segment (cut by recovery,
    /// or in a missing segment file) now recorded as lost, so they are not reported again.
    pub lost_records: [u64; 3],
    /// Cursor files written (queues and dead-letter store).
    pub cursors_written: u64,
    /// Segment files deleted because every record in them was done.
    pub segments_removed: u64,
}

impl DiskBuffer {
    /// Reads back the dead letters not yet replayed, oldest first, with their ids.
    /// Blocking file I/O: meant for the `dlq` command, not for an async hot path.
    pub fn dead_letter_entries(&self) -> Result<Vec<StoredDeadLetter>, BufferError> {
        let (dir, segments, done) = {
            let state = self.inner.shared.lock();
            let dead = &state.dead;
            let segments: Vec<_> = dead
                .log
                .segments
                .iter()
                .map(|(first, meta)| (*first, *meta))
                .collect();
            (dead.log.dir.clone(), segments, dead.cursor_snapshot())
        };
        let mut letters = Vec::new();
        for (first, meta) in segments {
            let path = segment_path(&dir, first);
            let mut reader = match FrameReader::open(&path, 0, Some(meta.bytes)) {
                Ok(reader) => reader,
                // Dropped by the ring since we looked.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let mut id = first;
            loop {
                match reader.next_frame() {
                    Ok(Some(payload)) => {
                        let replayed = id < done.next_unacked || done.acked.contains(id);
                        if !replayed {
                            match DeadLetter::decode(payload) {
                                Ok(letter) => letters.push(StoredDeadLetter { id, letter }),
                                Err(e) => {
                                    warn!(segment = %path.display(), error = %e, "skipping an undecodable dead letter");
                                }
                            }
                        }
                        id += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        warn!(segment = %path.display(), error = %e, "dead-letter segment is damaged; skipping its rest");
                        break;
                    }
                }
            }
        }
        Ok(letters)
    }

    /// Removes dead letters by id, durably: returns once the dead-letter cursor that marks
    /// them replayed is fsynced, and deletes segments left with nothing in them. Unknown or
    /// already removed ids are ignored. Returns how many letters were newly removed.
    ///
    /// Push the records back first and remove their letters after: a crash in between
    /// leaves both, a duplicate rather than a loss.
    pub async fn remove_dead_letters(&self, ids: &[u64]) -> Result<u64, BufferError> {
        let shared = self.inner.shared.clone();
        let removed = {
            let mut state = shared.lock();
            let dead = &mut state.dead;
            let mut removed = 0;
            for &id in ids {
                let held = dead.log.segment_containing(id).is_some();
                if held && id >= dead.cursor && !dead.acked.contains(id) {
                    dead.acked.insert(id);
                    removed += 1;
                }
            }
            dead.advance_cursor();
            removed
        };
        if removed == 0 {
            return Ok(0);
        }
        self.store_cursor(DEAD_LETTER_SLOT).await?;
        let reclaim = shared.lock().dead.take_sealed_done();
        if !reclaim.is_empty() {
            blocking(move || delete_files(&reclaim)).await?;
        }
        Ok(removed)
    }

    /// Brings the books on disk in line with what open recovered (for `buffer repair`):
    /// record numbers no segment holds are recorded as lost, every cursor file is rewritten
    /// (a damaged one is replaced by the safe cursor recovery chose: the oldest record),
    /// and segments whose records are all done are deleted. Meant for a buffer nobody
    /// consumes from.
    pub async fn settle(&self) -> Result<SettleReport, BufferError> {
        let mut report = SettleReport::default();
        for slot in 0..=DEAD_LETTER_SLOT {
            {
                let mut state = self.inner.shared.lock();
                let queue = match slot {
                    DEAD_LETTER_SLOT => &mut state.dead,
                    _ => &mut state.queues[slot],
                };
                // Gaps in the dead-letter store are the ring's doing, not losses.
                if slot != DEAD_LETTER_SLOT {
                    for (start, end) in queue.unexplained_gaps() {
                        report.lost_records[slot] += end - start;
                        queue.acked.insert_range(start, end);
                    }
                }
                queue.advance_cursor();
            }
            self.store_cursor(slot).await?;
            report.cursors_written += 1;
            let reclaim = {
                let mut state = self.inner.shared.lock();
                match slot {
                    DEAD_LETTER_SLOT => state.dead.take_sealed_done(),
                    _ => state.queues[slot].take_sealed_done(),
                }
            };
            report.segments_removed += reclaim.len() as u64;
            if !reclaim.is_empty() {
                blocking(move || delete_files(&reclaim)).await?;
            }
        }
        for signal in Signal::ALL {
            self.inner.shared.committed[signal.index()].notify_waiters();
        }
        Ok(report)
    }

    /// Writes the cursor file of `slot` (a signal's index or the dead-letter store) from
    /// the books, serialized with every other writer of that file.
    pub(super) async fn store_cursor(&self, slot: usize) -> Result<(), BufferError> {
        let shared = self.inner.shared.clone();
        let file_guard = shared.cursor_files[slot].clone().lock_owned().await;
        blocking(move || {
            let _file_guard = file_guard;
            let (dir, snapshot) = {
                let state = shared.lock();
                let queue = match slot {
                    DEAD_LETTER_SLOT => &state.dead,
                    _ => &state.queues[slot],
                };
                (queue.log.dir.clone(), queue.cursor_snapshot())
            };
            cursor::store(&dir, &snapshot)
        })
        .await
    }
}
