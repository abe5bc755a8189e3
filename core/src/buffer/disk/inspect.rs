//! Read-only checks of a disk buffer directory: `vigil-collector buffer verify` and
//! `dlq list|show`.
//!
//! Nothing here creates, writes, renames or deletes a file: every file is opened read-only
//! and a leftover `cursor.tmp` is reported, not removed. So it may run next to a collector
//! that has the buffer open; the collector keeps appending, acking and deleting meanwhile,
//! which [`VerifyReport::live`] says, and a segment that vanishes mid-scan is not damage.
//! Whether a collector holds the buffer is probed with a shared flock on `LOCK`, taken
//! and released at once (an open in that instant would fail, and be retried by its
//! supervisor).
//!
//! Every length is bounded by the file holding it ([`FrameReader`]), so a damaged or hostile
//! file costs at most its own size in memory.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::cursor::{self, Cursor, LoadedCursor};
use super::maintenance::StoredDeadLetter;
use super::segment::{FrameError, FrameReader, list_segments, segment_path};
use super::{DEAD_LETTER_DIR, dead_letter_dir};
use crate::Signal;
use crate::buffer::{DeadLetter, Record};

/// What `buffer verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub root: PathBuf,
    /// A process held the buffer's `LOCK` when the scan started: what was read may have
    /// changed since.
    pub live: bool,
    /// `metrics`, `logs`, `traces`, then `dead_letter`.
    pub queues: Vec<QueueReport>,
}

impl VerifyReport {
    /// True when some problem is damage (not merely a note).
    pub fn damaged(&self) -> bool {
        self.queues
            .iter()
            .flat_map(|q| &q.problems)
            .any(|p| p.kind.is_damage())
    }
}

/// One queue directory (a signal's, or the dead-letter store).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QueueReport {
    pub name: String,
    pub dir: PathBuf,
    /// Segment files.
    pub segments: u64,
    /// Readable records in them (up to the first damage in each segment).
    pub records: u64,
    /// Records past the cursor not acked: waiting for delivery (for the dead-letter store:
    /// letters not replayed).
    pub pending: u64,
    /// Bytes of the segment files.
    pub bytes: u64,
    /// The ack cursor as its file says, if the file exists and reads.
    pub cursor: Option<u64>,
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A frame whose CRC32 does not match its payload.
    Checksum,
    /// A partial frame at the end of a segment (or a length pointing past its end).
    TornTail,
    /// Record numbers past the cursor that no segment file holds.
    MissingSegment,
    /// A frame that checks out but does not decode as a record (or dead letter).
    Undecodable,
    /// A segment holding more records than its successor's name leaves room for.
    Overlap,
    /// A cursor file that does not read.
    BadCursor,
    /// Notes, not damage: an empty segment left by a crash right after creating it.
    EmptySegment,
    /// A segment every record of which is acked, not deleted yet.
    Reclaimable,
    /// A cursor replacement that was interrupted (its temporary file is left).
    LeftoverTemp,
    /// A partial frame at the end of the newest segment of a live buffer: most likely a
    /// write in progress.
    WriteInProgress,
}

impl ProblemKind {
    pub fn is_damage(self) -> bool {
        !matches!(
            self,
            ProblemKind::EmptySegment
                | ProblemKind::Reclaimable
                | ProblemKind::LeftoverTemp
                | ProblemKind::WriteInProgress
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Checksum => "checksum mismatch",
            ProblemKind::TornTail => "torn tail",
            ProblemKind::MissingSegment => "missing segment",
            ProblemKind::Undecodable => "undecodable record",
            ProblemKind::Overlap => "overlapping segment",
            ProblemKind::BadCursor => "bad cursor file",
            ProblemKind::EmptySegment => "empty segment",
            ProblemKind::Reclaimable => "reclaimable segment",
            ProblemKind::LeftoverTemp => "leftover temporary file",
            ProblemKind::WriteInProgress => "write in progress",
        }
    }
}

/// One finding, with the file (and offset) it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub path: PathBuf,
    pub offset: Option<u64>,
    pub detail: String,
    /// Bytes `buffer repair` (or the next open) cuts off the segment for this problem.
    pub cut_bytes: u64,
    /// Records lost with the cut, when the numbering tells (a later segment exists); the
    /// count in the cut tail of a queue's newest segment cannot be known.
    pub lost_records: Option<u64>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.kind.is_damage() {
            "DAMAGE"
        } else {
            "note"
        };
        write!(
            f,
            "{level}: {}: {}",
            self.kind.as_str(),
            self.path.display()
        )?;
        if let Some(offset) = self.offset {
            write!(f, " at offset {offset}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Scans the buffer under `root` without changing anything. Errors: `root` missing or not
/// a disk buffer (`InvalidInput`), and real I/O errors.
pub fn verify(root: &Path) -> io::Result<VerifyReport> {
    check_root(root)?;
    let live = lock_held(root)?;
    let mut queues = Vec::with_capacity(4);
    for signal in Signal::ALL {
        queues.push(scan_queue(
            &root.join(signal.as_str()),
            signal.as_str(),
            Kind::Queue,
            live,
        )?);
    }
    queues.push(scan_queue(
        &dead_letter_dir(root),
        DEAD_LETTER_DIR,
        Kind::DeadLetters,
        live,
    )?);
    Ok(VerifyReport {
        root: root.to_path_buf(),
        live,
        queues,
    })
}

/// Calls `visit` with every dead letter not yet replayed, oldest first, reading the store
/// read-only (so next to a running collector too). A damaged segment is read up to its
/// damage, as the collector would keep it; `buffer verify` reports the damage.
pub fn visit_dead_letters(root: &Path, mut visit: impl FnMut(StoredDeadLetter)) -> io::Result<()> {
    check_root(root)?;
    let dir = dead_letter_dir(root);
    let firsts = match list_segments(&dir) {
        Ok(firsts) => firsts,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let done = match cursor::peek(&dir)? {
        LoadedCursor::Found(cursor) => cursor,
        LoadedCursor::Missing | LoadedCursor::Garbled => Cursor::default(),
    };
    for first in firsts {
        let mut reader = match FrameReader::open(&segment_path(&dir, first), 0, None) {
            Ok(reader) => reader,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let mut id = first;
        while let Ok(Some(payload)) = reader.next_frame() {
            let Ok(letter) = DeadLetter::decode(payload) else {
                break;
            };
            if id >= done.next_unacked && !done.acked.contains(id) {
                visit(StoredDeadLetter { id, letter });
            }
            id += 1;
        }
    }
    Ok(())
}

fn check_root(root: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(root)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", root.display()),
        ));
    }
    let ours = Signal::ALL
        .iter()
        .map(|s| root.join(s.as_str()))
        .chain([dead_letter_dir(root), root.join("LOCK")])
        .any(|p| p.exists());
    if !ours {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} does not look like a disk buffer (no metrics/, logs/, traces/, dead_letter/ or LOCK)",
                root.display()
            ),
        ));
    }
    Ok(())
}

/// Whether another open file holds the buffer's `LOCK` (a collector, or a `DiskBuffer` in
/// this process).
fn lock_held(root: &Path) -> io::Result<bool> {
    let file = match File::open(root.join("LOCK")) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Released when `file` is dropped, right away.
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Queue,
    DeadLetters,
}

impl Kind {
    fn valid(self, payload: Bytes) -> bool {
        match self {
            Kind::Queue => Record::decode(payload).is_ok(),
            Kind::DeadLetters => DeadLetter::decode(payload).is_ok(),
        }
    }
}

/// One segment as the scan saw it.
struct Seen {
    first: u64,
    /// Good records, up to the first damage.
    records: u64,
    /// Damage cut it short: the numbers up to the next segment are accounted for by that
    /// problem.
    cut: bool,
}

fn scan_queue(dir: &Path, name: &str, kind: Kind, live: bool) -> io::Result<QueueReport> {
    let mut report = QueueReport {
        name: name.to_string(),
        dir: dir.to_path_buf(),
        ..QueueReport::default()
    };
    let firsts = match list_segments(dir) {
        Ok(firsts) => firsts,
        // Created at the first open.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(e),
    };
    let cursor_path = dir.join(cursor::CURSOR_FILE_NAME);
    let cursor = match cursor::peek(dir)? {
        LoadedCursor::Found(cursor) => {
            report.cursor = Some(cursor.next_unacked);
            cursor
        }
        LoadedCursor::Missing => Cursor {
            next_unacked: firsts.first().copied().unwrap_or(0),
            ..Cursor::default()
        },
        LoadedCursor::Garbled => {
            let detail = match kind {
                Kind::Queue => {
                    "does not read (bad magic, length or checksum); the next open replays this queue from its oldest record (duplicates, no loss); `buffer repair` rewrites it"
                }
                Kind::DeadLetters => {
                    "does not read; letters already replayed will be listed (and could be replayed) again; `buffer repair` rewrites it"
                }
            };
            report.problems.push(Problem {
                kind: ProblemKind::BadCursor,
                path: cursor_path.clone(),
                offset: None,
                detail: detail.into(),
                cut_bytes: 0,
                lost_records: None,
            });
            Cursor {
                next_unacked: firsts.first().copied().unwrap_or(0),
                ..Cursor::default()
            }
        }
    };
    if cursor::has_leftover(dir) {
        report.problems.push(Problem {
            kind: ProblemKind::LeftoverTemp,
            path: dir.join("cursor.tmp"),
            offset: None,
            detail: "an interrupted cursor update; the cursor file is still the truth and the next open removes it".into(),
            cut_bytes: 0,
            lost_records: None,
        });
    }

    let mut seen: Vec<Seen> = Vec::new();
    for (i, &first) in firsts.iter().enumerate() {
        let path = segment_path(dir, first);
        let next_first = firsts.get(i + 1).copied();
        let newest = next_first.is_none();
        let mut reader = match FrameReader::open(&path, 0, None) {
            Ok(reader) => reader,
            // Deleted (reclaimed) since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let file_bytes = reader.end();
        report.segments += 1;
        report.bytes += file_bytes;
        if next_first.is_some_and(|next| next <= cursor.next_unacked) {
            report.problems.push(Problem {
                kind: ProblemKind::Reclaimable,
                path,
                offset: None,
                detail: "every record in it is acked; the next open deletes it".into(),
                cut_bytes: 0,
                lost_records: None,
            });
            continue;
        }
        if file_bytes == 0 {
            report.problems.push(Problem {
                kind: ProblemKind::EmptySegment,
                path,
                offset: None,
                detail: "no records (a crash right after it was created); the next open deletes it"
                    .into(),
                cut_bytes: 0,
                lost_records: None,
            });
            continue;
        }
        let room = next_first.map(|next| next - first);
        let mut records = 0u64;
        let mut damage: Option<(ProblemKind, u64, String)> = None;
        loop {
            let offset = reader.offset();
            if room.is_some_and(|room| records >= room) {
                if offset < file_bytes {
                    damage = Some((
                        ProblemKind::Overlap,
                        offset,
                        format!(
                            "holds more than the {} records its successor's name leaves room for",
                            room.unwrap_or_default()
                        ),
                    ));
                }
                break;
            }
            match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(payload)) => {
                    if !kind.valid(payload) {
                        damage = Some((
                            ProblemKind::Undecodable,
                            offset,
                            format!("record {} checks out but does not decode", first + records),
                        ));
                        break;
                    }
                    records += 1;
                }
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::NotFound => break,
                Err(FrameError::Io(e)) => return Err(e),
                Err(FrameError::Torn) => {
                    let kind = match live && newest {
                        true => ProblemKind::WriteInProgress,
                        false => ProblemKind::TornTail,
                    };
                    damage = Some((
                        kind,
                        offset,
                        format!(
                            "record {}: the file ends inside its frame, or its length is impossible",
                            first + records
                        ),
                    ));
                    break;
                }
                Err(FrameError::Checksum) => {
                    damage = Some((
                        ProblemKind::Checksum,
                        offset,
                        format!(
                            "record {}: CRC32 does not match the payload",
                            first + records
                        ),
                    ));
                    break;
                }
            }
        }
        report.records += records;
        let cut = damage.as_ref().is_some_and(|(kind, ..)| kind.is_damage());
        if let Some((problem_kind, offset, detail)) = damage {
            let cut_bytes = file_bytes - offset;
            let lost = match problem_kind {
                ProblemKind::Overlap => None,
                _ => room.map(|room| room - records),
            };
            let lost_text = match (problem_kind.is_damage(), lost) {
                (false, _) => String::new(),
                (true, Some(n)) => format!("; repair cuts {cut_bytes} bytes ({n} records)"),
                (true, None) => format!(
                    "; repair cuts {cut_bytes} bytes (how many records they held cannot be told in a newest segment)"
                ),
            };
            report.problems.push(Problem {
                kind: problem_kind,
                path,
                offset: Some(offset),
                detail: format!("{detail}{lost_text}"),
                cut_bytes: if cut { cut_bytes } else { 0 },
                lost_records: if cut { lost } else { None },
            });
        }
        let end = first + records;
        let from = first.max(cursor.next_unacked);
        if end > from {
            report.pending += (end - from) - cursor.acked.count_in(from, end);
        }
        seen.push(Seen {
            first,
            records,
            cut,
        });
    }

    // The ring drops the oldest dead letters whole segments at a time: gaps there are
    // normal. In a queue, segments go only once every record in them is acked.
    if kind == Kind::Queue {
        find_gaps(dir, &cursor, &seen, &mut report.problems);
    }
    Ok(report)
}

/// Reports record numbers past the cursor that no segment holds, unless acked or cut by a
/// damage already reported.
fn find_gaps(dir: &Path, cursor: &Cursor, seen: &[Seen], problems: &mut Vec<Problem>) {
    let mut at = cursor.next_unacked;
    let mut explained = false;
    for segment in seen.iter().filter(|s| s.records > 0 || s.cut) {
        if segment.first > at && !explained {
            for (start, end) in cursor.acked.missing_in(at, segment.first) {
                let detail = if start == cursor.next_unacked {
                    format!(
                        "the cursor points at record {start}, which no segment holds; records {start}..{end} are missing (a deleted segment file, or an earlier cut)"
                    )
                } else {
                    format!(
                        "records {start}..{end} are in no segment file (a deleted segment, or cut by an earlier recovery)"
                    )
                };
                problems.push(Problem {
                    kind: ProblemKind::MissingSegment,
                    path: segment_path(dir, start),
                    offset: None,
                    detail: format!("{detail}; `buffer repair` records them as lost"),
                    cut_bytes: 0,
                    lost_records: Some(end - start),
                });
            }
        }
        at = at.max(segment.first + segment.records);
        explained = segment.cut;
    }
}
