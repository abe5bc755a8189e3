//! Segment files and the frames inside them.
//!
//! A queue is a directory of append-only segment files, each named by the sequence number
//! of its first record, zero-padded so that names sort like numbers. A segment is a run of
//! frames: payload length (u32 LE), CRC32 of the payload (u32 LE), payload. Sequence numbers
//! are not stored: the n-th frame of segment `first` is record `first + n`. Recovery may cut
//! a damaged segment short, which leaves a gap in the numbering; the queue treats missing
//! numbers as if they had been acked.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Bytes of a frame before its payload.
pub(super) const FRAME_HEADER: u64 = 8;

const SEGMENT_SUFFIX: &str = ".seg";

pub(super) fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

fn parse_segment_name(name: &OsStr) -> Option<u64> {
    let digits = name.to_str()?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The first sequence numbers of the segments in `dir`, ascending. Other files are not ours
/// to judge and are left alone.
pub(super) fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(first) = parse_segment_name(&entry.file_name()) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Builds one frame around what `encode` appends. The caller has checked that the payload
/// fits a u32 length.
pub(super) fn encode_frame(encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut frame = vec![0u8; FRAME_HEADER as usize];
    encode(&mut frame);
    let len = (frame.len() - FRAME_HEADER as usize) as u32;
    let crc = crc32fast::hash(&frame[FRAME_HEADER as usize..]);
    frame[0..4].copy_from_slice(&len.to_le_bytes());
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error(transparent)]
    Io(io::Error),
    /// The file ends inside the frame, or its length points past the end: a write that
    /// never finished, or a garbled length.
    #[error("frame is torn (file ends inside it or its length is impossible)")]
    Torn,
    #[error("frame checksum does not match its payload")]
    Checksum,
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> FrameError {
        match e.kind() {
            // The file is shorter than we were told: someone cut it, or a write was lost.
            io::ErrorKind::UnexpectedEof => FrameError::Torn,
            _ => FrameError::Io(e),
        }
    }
}

/// Reads frames one after another from `offset` up to `end`.
pub(super) struct FrameReader {
    reader: BufReader<File>,
    offset: u64,
    end: u64,
}

impl FrameReader {
    /// `end` is how far frames are trusted to exist: the committed size for live segments,
    /// the file's length during recovery.
    pub(super) fn open(path: &Path, offset: u64, end: Option<u64>) -> io::Result<FrameReader> {
        let mut file = File::open(path)?;
        let end = match end {
            Some(end) => end,
            None => file.metadata()?.len(),
        };
        file.seek(SeekFrom::Start(offset))?;
        Ok(FrameReader {
            reader: BufReader::with_capacity(64 * 1024, file),
            offset,
            end,
        })
    }

    /// How far frames are read: the file's length when opened without an `end`.
    pub(super) fn end(&self) -> u64 {
        self.end
    }

    /// Where the next frame starts.
    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// The next frame's payload, or `None` at `end`. After an error the reader is not
    /// advanced; the caller decides what to cut.
    pub(super) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.offset >= self.end {
            return Ok(None);
        }
        let remaining = self.end - self.offset;
        if remaining < FRAME_HEADER {
            return Err(FrameError::Torn);
        }
        let mut header = [0u8; FRAME_HEADER as usize];
        self.reader.read_exact(&mut header)?;
        let len = u64::from(u32::from_le_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        // Bounded by what is left of the file, so a garbled length never makes us allocate
        // gigabytes.
        if len > remaining - FRAME_HEADER {
            return Err(FrameError::Torn);
        }
        let mut payload = vec![0u8; len as usize];
        self.reader.read_exact(&mut payload)?;
        if crc32fast::hash(&payload) != crc {
            return Err(FrameError::Checksum);
        }
        self.offset += FRAME_HEADER + len;
        Ok(Some(Bytes::from(payload)))
    }
}

/// fsyncs a directory, so that files created, renamed or deleted in it stay so after a
/// crash.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_sort_like_numbers_and_strangers_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for first in [100u64, 9, 0] {
            File::create(segment_path(dir.path(), first)).unwrap();
        }
        File::create(dir.path().join("notes.txt")).unwrap();
        File::create(dir.path().join("12.seg")).unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![0, 9, 100]);
    }

    #[test]
    fn frames_round_trip_and_damage_is_classified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut file = File::create(&path).unwrap();
        for payload in [&b"one"[..], b"two", b""] {
            file.write_all(&encode_frame(|out| out.extend_from_slice(payload)))
                .unwrap();
        }
        let mut reader = FrameReader::open(&path, 0, None).unwrap();
        assert_eq!(reader.next_frame().unwrap().unwrap(), &b"one"[..]);
        assert_eq!(reader.next_frame().unwrap().unwrap(), &b"two"[..]);
        assert_eq!(reader.next_frame().unwrap().unwrap(), &b""[..]);
        assert!(reader.next_frame().unwrap().is_none());

        // A committed size larger than the file: the tail was lost.
        let mut reader = FrameReader::open(&path, 0, Some(100)).unwrap();
        for _ in 0..3 {
            reader.next_frame().unwrap();
        }
        assert!(matches!(reader.next_frame(), Err(FrameError::Torn)));

        let mut bytes = std::fs::read(&path).unwrap();
        bytes[FRAME_HEADER as usize] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = FrameReader::open(&path, 0, None).unwrap();
        assert!(matches!(reader.next_frame(), Err(FrameError::Checksum)));
        assert_eq!(reader.offset(), 0);

        bytes[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = FrameReader::open(&path, 0, None).unwrap();
        assert!(matches!(reader.next_frame(), Err(FrameError::Torn)));
    }
}
