//! Where each file is delivered up to: the offset a reader resumes from after a restart.
//!
//! A file is known by its device and inode (so a rename is followed, not re-read) and a
//! fingerprint of its first bytes (so a new file that reuses a deleted file's inode is not
//! taken for it). Offsets move only when the collector acknowledged the lines before them
//! ([`Checkpoints::ack`]); a crash therefore replays, never skips. The file is written
//! atomically: temporary file, fsync, rename, fsync of the directory.
//!
//! A truncated file (copytruncate) starts a new *generation* of its entry, so a late
//! acknowledgement of lines read before the truncation cannot move the new offset.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE_NAME: &str = "checkpoints.json";

/// A file's identity on this machine while it exists: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    pub fn of(metadata: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// A hash of a file's first [`Fingerprint::BYTES`] bytes, or of all of it while it is
/// shorter: what tells a file from a later one that reuses its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many bytes were hashed.
    pub len: u32,
    pub hash: u64,
}

impl Fingerprint {
    pub const BYTES: usize = 256;

    pub fn of(prefix: &[u8]) -> Fingerprint {
        let prefix = &prefix[..prefix.len().min(Self::BYTES)];
        // FNV-1a: stable across Rust versions, which a persisted hash must be.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in prefix {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Fingerprint {
            len: prefix.len() as u32,
            hash,
        }
    }

    /// The fingerprint of an open file as it is now.
    pub fn read(file: &File) -> io::Result<Fingerprint> {
        Ok(Fingerprint::of(&read_prefix(file, Self::BYTES)?))
    }

    /// Whether the file still starts with the bytes this fingerprint was taken of.
    pub fn matches(&self, file: &File) -> io::Result<bool> {
        let prefix = read_prefix(file, self.len as usize)?;
        Ok(prefix.len() == self.len as usize && Fingerprint::of(&prefix) == *self)
    }

    /// Whether it covers fewer bytes than it could.
    pub fn is_short(&self) -> bool {
        (self.len as usize) < Self::BYTES
    }
}

fn read_prefix(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: Fingerprint,
    /// Delivered up to here.
    pub offset: u64,
    /// Where the file was last seen; for people reading the file (lossy: a path that is not
    /// UTF-8 must not make the checkpoints unwritable).
    pub path: String,
    #[serde(skip)]
    generation: u32,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: Vec<(FileKey, Checkpoint)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot use the state directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error(
        "cannot read the checkpoints {path}: {message} (move it away to start over; files are then read from `start_at`)"
    )]
    Read { path: PathBuf, message: String },
}

/// Every file's checkpoint, and the file that keeps them.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    files: BTreeMap<FileKey, Checkpoint>,
    /// Whether checkpoints were found at start: if not, this is the agent's first start.
    existed: bool,
    dirty: bool,
    /// Generations are never reused, so no acknowledgement can match a later entry.
    next_generation: u32,
}

impl Checkpoints {
    /// Opens (creating the directory if needed) the checkpoints in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Checkpoints, CheckpointError> {
        std::fs::create_dir_all(state_dir).map_err(|source| CheckpointError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let path = state_dir.join(FILE_NAME);
        let read_error = |message: String| CheckpointError::Read {
            path: path.clone(),
            message,
        };
        let (files, existed) = match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: Stored =
                    serde_json::from_slice(&bytes).map_err(|e| read_error(e.to_string()))?;
                if stored.version != 1 {
                    return Err(read_error(format!("unknown version {}", stored.version)));
                }
                (stored.files.into_iter().collect(), true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), false),
            Err(e) => return Err(read_error(e.to_string())),
        };
        Ok(Checkpoints {
            path,
            files,
            existed,
            // The first save creates the file, so the next start is not a first start.
            dirty: !existed,
            next_generation: 0,
        })
    }

    /// No checkpoints existed when the agent started.
    pub fn first_start(&self) -> bool {
        !self.existed
    }

    /// Where to resume an open file known by `key`: its checkpoint, if it has one and the
    /// file still starts as it did.
    pub fn resume_offset(&self, key: FileKey, file: &File) -> Option<u64> {
        let checkpoint = self.files.get(&key)?;
        checkpoint
            .fingerprint
            .matches(file)
            .ok()?
            .then_some(checkpoint.offset)
    }

    /// Starts (or restarts, after a truncation) tracking a file from `offset`, which counts
    /// as delivered. Returns the generation later acknowledgements must name.
    pub fn track(
        &mut self,
        key: FileKey,
        fingerprint: Fingerprint,
        offset: u64,
        path: &Path,
    ) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        self.files.insert(
            key,
            Checkpoint {
                fingerprint,
                offset,
                path: path.to_string_lossy().into_owned(),
                generation,
            },
        );
        self.dirty = true;
        generation
    }

    /// A longer fingerprint, or a new path, for a tracked file.
    pub fn update(&mut self, key: FileKey, fingerprint: Fingerprint, path: &Path) {
        if let Some(c) = self.files.get_mut(&key)
            && (c.fingerprint != fingerprint || Path::new(&c.path) != path)
        {
            c.fingerprint = fingerprint;
            c.path = path.to_string_lossy().into_owned();
            self.dirty = true;
        }
    }

    /// The collector acknowledged the lines of `key` before `offset`.
    pub fn ack(&mut self, key: FileKey, generation: u32, offset: u64) {
        if let Some(c) = self.files.get_mut(&key)
            && c.generation == generation
            && offset > c.offset
        {
            c.offset = offset;
            self.dirty = true;
        }
    }

    /// The delivered offset of a tracked file, in its current generation.
    pub fn delivered(&self, key: FileKey, generation: u32) -> Option<u64> {
        self.files
            .get(&key)
            .filter(|c| c.generation == generation)
            .map(|c| c.offset)
    }

    /// Stops tracking a file that is gone.
    pub fn forget(&mut self, key: FileKey) {
        if self.files.remove(&key).is_some() {
            self.dirty = true;
        }
    }

    /// Drops the checkpoints of files not in `live`: files that went away while the agent
    /// was stopped, whose entries nothing would remove otherwise.
    pub fn retain(&mut self, live: impl Fn(&FileKey) -> bool) {
        let before = self.files.len();
        self.files.retain(|key, _| live(key));
        self.dirty |= self.files.len() != before;
    }

    /// Writes the checkpoints if they changed: temporary file, fsync, rename, fsync of
    /// the directory, so a crash leaves the old file or the new one, never a torn one.
    pub fn save(&mut self) -> io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let stored = Stored {
            version: 1,
            files: self.files.iter().map(|(k, c)| (*k, c.clone())).collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        {
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.dirty = false;
        self.existed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: FileKey = FileKey { dev: 1, ino: 42 };

    fn file_with(dir: &Path, name: &str, content: &[u8]) -> File {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn fingerprints_tell_files_apart_and_grow_until_full() {
        let dir = tempfile::tempdir().unwrap();
        let short = file_with(dir.path(), "a", b"hello");
        let fp = Fingerprint::read(&short).unwrap();
        assert_eq!(fp.len, 5);
        assert!(fp.is_short());
        assert!(fp.matches(&short).unwrap());
        let other = file_with(dir.path(), "b", b"hellx and more");
        assert!(!fp.matches(&other).unwrap());
        let grown = file_with(dir.path(), "c", b"hello, and much more");
        assert!(fp.matches(&grown).unwrap(), "a prefix still matches");
        let shorter = file_with(dir.path(), "d", b"hel");
        assert!(!fp.matches(&shorter).unwrap());

        let long = file_with(dir.path(), "e", &[7u8; 1000]);
        let fp = Fingerprint::read(&long).unwrap();
        assert_eq!(fp.len as usize, Fingerprint::BYTES);
        assert!(!fp.is_short());
        assert_eq!(Fingerprint::of(&[7u8; 300]), fp);
    }

    #[test]
    fn checkpoints_survive_a_reopen_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = file_with(dir.path(), "log", b"0123456789");
        let fp = Fingerprint::read(&file).unwrap();

        let mut checkpoints = Checkpoints::open(&state).unwrap();
        assert!(checkpoints.first_start());
        let generation = checkpoints.track(KEY, fp, 2, Path::new("/x/log"));
        checkpoints.ack(KEY, generation, 7);
        checkpoints.ack(KEY, generation, 5);
        assert_eq!(checkpoints.delivered(KEY, generation), Some(7));
        checkpoints.save().unwrap();
        assert!(!state.join("checkpoints.json.tmp").exists());

        let reopened = Checkpoints::open(&state).unwrap();
        assert!(!reopened.first_start());
        assert_eq!(reopened.resume_offset(KEY, &file), Some(7));
        let other = file_with(dir.path(), "other", b"different");
        assert_eq!(reopened.resume_offset(KEY, &other), None, "inode reused");
    }

    #[test]
    fn a_new_generation_ignores_late_acks_of_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoints = Checkpoints::open(dir.path()).unwrap();
        let fp = Fingerprint::of(b"x");
        let old = checkpoints.track(KEY, fp, 0, Path::new("/x"));
        let new = checkpoints.track(KEY, fp, 0, Path::new("/x"));
        checkpoints.ack(KEY, old, 100);
        assert_eq!(checkpoints.delivered(KEY, new), Some(0));
        checkpoints.ack(KEY, new, 3);
        assert_eq!(checkpoints.delivered(KEY, new), Some(3));
        checkpoints.retain(|k| *k == KEY);
        assert_eq!(checkpoints.delivered(KEY, new), Some(3));
        checkpoints.retain(|_| false);
        assert_eq!(checkpoints.delivered(KEY, new), None);
        checkpoints.track(KEY, fp, 0, Path::new("/x"));
        checkpoints.forget(KEY);
        assert_eq!(checkpoints.delivered(KEY, new), None);
        checkpoints.ack(KEY, new, 9);
        assert_eq!(checkpoints.delivered(KEY, new), None, "no resurrection");
    }

    #[test]
    fn paths_that_are_not_utf8_do_not_stop_saving() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let mut checkpoints = Checkpoints::open(dir.path()).unwrap();
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"/var/log/\xff.log"));
        let generation = checkpoints.track(KEY, Fingerprint::of(b""), 0, odd);
        checkpoints.ack(KEY, generation, 9);
        checkpoints.save().unwrap();
        let saved = std::fs::read_to_string(dir.path().join("checkpoints.json")).unwrap();
        assert!(saved.contains("\"offset\":9"), "{saved}");
    }

    #[test]
    fn a_damaged_file_fails_loudly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("checkpoints.json"), b"{not json").unwrap();
        let error = Checkpoints::open(dir.path()).unwrap_err().to_string();
        assert!(error.contains("checkpoints.json"), "{error}");
    }
}
