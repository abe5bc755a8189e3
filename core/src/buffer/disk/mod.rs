//! The disk buffer: Vigil's default, embedded, durable buffer. It survives kill -9 and
//! never crash-loops on a damaged file.
//!
//! Layout under [`DiskOptions::path`]:
//!
//! ```text
//! metrics/ logs/ traces/      one queue per signal, so one stuck backend holds up no other
//!     00000000000000000000.seg   segments, named by the sequence number of their first record
//!     cursor                     the ack cursor (see `cursor`)
//! dead_letter/                segments of dead letters, never acked
//!     cursor                     which dead letters were replayed (absent: none)
//! LOCK                        flock'ed by the process that has the buffer open
//! ```
//!
//! - `segment`: frame format (length, CRC32, payload) and file naming.
//! - `writer`: the single writer task; group commit (one fdatasync per round for all
//!   pushes queued meanwhile), segment rolling, space accounting.
//! - `queue`: per-queue bookkeeping (committed sizes, deliveries, acks) and reading.
//! - `cursor`: the persisted ack cursor, with the records acked out of order above it.
//! - `recovery`: what `open` checks and repairs.
//! - `inspect`: read-only checks of a buffer directory (`buffer verify`, `dlq list`), safe
//!   next to a running collector.
//! - `maintenance`: what `buffer repair` and `dlq replay` do on an open buffer.
//!
//! Space: [`DiskOptions::max_bytes`] bounds everything the buffer writes. Dead letters get
//! one eighth of it as a ring (the oldest are dropped, counted and logged, when it is full)
//! so that a storm of rejected records can never stop ingestion; the signal queues share
//! the other seven eighths, which is what [`BufferStats::capacity_bytes`] reports and what
//! [`BufferError::Full`] refers to. Space comes back when every record of a segment is acked
//! and the segment is deleted; a record delivered and never acked holds back the reclaiming
//! of its segment and every later one of its signal. Acked records that share the open
//! segment with newer ones wait for them, so up to one segment per signal may be acked yet
//! still counted; a fully acked open segment is dropped as soon as a push needs its room.
//!
//! One process at a time: a second `open` of the same directory in this process waits for
//! the first buffer to be closed or dropped; another process fails to open it while the
//! `LOCK` file is flock'ed.

mod cursor;
mod inspect;
mod maintenance;
mod queue;
mod recovery;
mod segment;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tools_tests;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedMutexGuard, mpsc, oneshot};
use tracing::warn;

use super::{
    BatchLimits, Buffer, BufferError, BufferStats, Consumer, DeadLetter, Delivery, DeliveryId,
    Record, SignalStats, now_ms,
};
use crate::Signal;
pub use inspect::{Problem, ProblemKind, QueueReport, VerifyReport, verify, visit_dead_letters};
pub use maintenance::{SettleReport, StoredDeadLetter};
use queue::{Log, Queue};
use segment::{FRAME_HEADER, encode_frame};
use writer::{Command, DEAD_LETTER_SLOT, SegmentWriter, Target};

const MIB: u64 = 1 << 20;
/// Smallest `max_bytes` accepted: below this the dead-letter share and the segments get
/// too small to be useful.
pub const MIN_MAX_BYTES: u64 = 64 * 1024;
/// Pushes waiting for the writer; beyond this `push` waits (backpressure, not memory).
const WRITER_QUEUE: usize = 1024;
/// How long `open` waits for an earlier buffer on the same directory to go away.
const OPEN_WAIT: Duration = Duration::from_secs(5);
const DEAD_LETTER_DIR: &str = "dead_letter";

/// When pushed records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// `push` returns only after an fdatasync that covers the record. Concurrent pushes
    /// share one fdatasync.
    #[default]
    Always,
    /// `push` returns after write(2); the writer fsyncs on this interval. A power loss (not
    /// a process crash) can lose what was written since the last fsync.
    Interval(Duration),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// The buffer's directory; created if missing.
    pub path: PathBuf,
    /// Bound on the bytes the buffer keeps on disk, dead letters included (see the module
    /// docs for the split).
    pub max_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Size at which a queue starts a new segment file. Space is reclaimed a whole
    /// segment at a time.
    pub segment_bytes: u64,
}

impl DiskOptions {
    /// Defaults: fsync on every push, segments of a sixteenth of `max_bytes` within 1 MiB
    /// to 128 MiB, and never more than a quarter of `max_bytes`, so that reclaiming space
    /// never waits for one segment holding most of the buffer.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> DiskOptions {
        let segment_bytes = (max_bytes / 16)
            .clamp(MIB, 128 * MIB)
            .min((max_bytes / 4).max(1));
        DiskOptions {
            path: path.into(),
            max_bytes,
            fsync: FsyncPolicy::Always,
            segment_bytes,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path must not be empty".into());
        }
        if self.max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "max_bytes must be at least {MIN_MAX_BYTES}, got {}",
                self.max_bytes
            ));
        }
        if self.segment_bytes == 0 {
            return Err("segment_bytes must be greater than 0".into());
        }
        if self.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err("fsync interval must be greater than 0".into());
        }
        Ok(())
    }

    fn dead_letter_capacity(&self) -> u64 {
        self.max_bytes / 8
    }
}

/// What [`DiskBuffer::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Bytes cut off damaged segments (torn writes, corrupt frames and what followed them
    /// in the same segment).
    pub truncated_bytes: u64,
    /// Damaged places found: each is one bad frame at which a segment was cut.
    pub corrupt_records: u64,
    /// Records waiting for delivery per signal, indexed by [`Signal::index`].
    pub pending: [u64; 3],
    /// Segment files deleted: fully acked, or left empty by a cut or a crash.
    pub segments_removed: u64,
    /// Dead letters kept (not yet replayed).
    pub dead_letters: u64,
    /// Cursor files that were unreadable: their queue replays from its oldest record
    /// (duplicates rather than losses).
    pub cursors_reset: u64,
}

/// The disk buffer. Cheap to clone; all clones are the same buffer.
#[derive(Clone)]
pub struct DiskBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    report: RecoveryReport,
}

/// What the buffer's handles, its consumers and the writer share.
pub(super) struct Shared {
    queue_capacity: u64,
    dead_capacity: u64,
    state: Mutex<State>,
    /// One per signal: woken when the writer committed records.
    committed: [Notify; 3],
    /// One per signal, then the dead-letter store's: held while its cursor file is
    /// replaced.
    cursor_files: [Arc<tokio::sync::Mutex<()>>; 4],
    next_consumer: AtomicU64,
    /// Group commits done (one write and fdatasync per touched file each), for tests.
    commit_rounds: AtomicU64,
    /// Keeps a second `open` of this directory waiting (in this process) or failing (in
    /// another process, through an advisory lock on the `LOCK` file). The file comes first
    /// so that it is closed (releasing the flock) before the in-process guard lets the next
    /// `open` in: the other way round, that `open` could find the flock still held.
    open_guard: Mutex<Option<(std::fs::File, OwnedMutexGuard<()>)>>,
}

pub(super) struct State {
    queues: [Queue; 3],
    /// The dead-letter store. Its cursor (and acked ranges) mark letters replayed.
    dead: Queue,
    /// Dead letters dropped because their share was full, since open.
    dead_dropped: u64,
    closed: bool,
}

impl State {
    fn queue_used(&self) -> u64 {
        self.queues.iter().map(|q| q.log.used).sum()
    }

    fn log_mut(&mut self, slot: usize) -> &mut Log {
        match slot {
            DEAD_LETTER_SLOT => &mut self.dead.log,
            _ => &mut self.queues[slot].log,
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation under this lock leaves the books consistent before it can fail,
        // so a lock poisoned by a panic elsewhere is still safe to use.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Directories open in this process, for [`OPEN_WAIT`].
static OPEN_DIRS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn invalid(message: String) -> BufferError {
    BufferError::Io(io::Error::new(io::ErrorKind::InvalidInput, message))
}

fn dead_letter_dir(root: &std::path::Path) -> PathBuf {
    root.join(DEAD_LETTER_DIR)
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, BufferError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BufferError::Unavailable(format!("disk buffer task failed: {e}")))?
        .map_err(BufferError::Io)
}

impl DiskBuffer {
    /// Validates the options, creates the directories, recovers what is on disk and starts
    /// the writer. Damaged data is cut and reported in [`DiskBuffer::recovery`], never an
    /// error; only I/O errors (permissions, a failing disk) and invalid options are.
    pub async fn open(opts: DiskOptions) -> Result<DiskBuffer, BufferError> {
        opts.validate()
            .map_err(|e| invalid(format!("disk buffer: {e}")))?;
        let root = opts.path.clone();
        let root = blocking(move || {
            std::fs::create_dir_all(&root)?;
            root.canonicalize()
        })
        .await?;
        let dir_lock = {
            let mut dirs = OPEN_DIRS.lock().unwrap_or_else(|e| e.into_inner());
            dirs.entry(root.clone()).or_default().clone()
        };
        let open_guard = tokio::time::timeout(OPEN_WAIT, dir_lock.lock_owned())
            .await
            .map_err(|_| {
                BufferError::Unavailable(format!(
                    "disk buffer {} is already open in this process",
                    root.display()
                ))
            })?;

        // Two processes appending to one buffer would corrupt it: the second one fails to
        // start with a clear message instead. The lock goes with the process, so a kill -9
        // never leaves a stale lock behind.
        let lock_path = root.join("LOCK");
        let lock_file = blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            match file.try_lock() {
                Ok(()) => Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{} is locked: another process has this disk buffer open",
                        lock_path.display()
                    ),
                )),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            }
        })
        .await?;

        let dirs: [PathBuf; 4] = [
            root.join(Signal::Metrics.as_str()),
            root.join(Signal::Logs.as_str()),
            root.join(Signal::Traces.as_str()),
            dead_letter_dir(&root),
        ];
        let scan_dirs = dirs.clone();
        let (queues, dead, report) = blocking(move || {
            let mut report = RecoveryReport::default();
            let [m, l, t, d] = &scan_dirs;
            let queues = [
                recovery::recover_queue(m, &mut report)?,
                recovery::recover_queue(l, &mut report)?,
                recovery::recover_queue(t, &mut report)?,
            ];
            let dead = recovery::recover_dead_letters(d, &mut report)?;
            for signal in Signal::ALL {
                report.pending[signal.index()] = queues[signal.index()].pending();
            }
            Ok((queues, dead, report))
        })
        .await?;
        if report.corrupt_records > 0 || report.segments_removed > 0 {
            warn!(
                path = %opts.path.display(),
                corrupt = report.corrupt_records,
                truncated_bytes = report.truncated_bytes,
                segments_removed = report.segments_removed,
                "disk buffer recovered"
            );
        }

        let dead_capacity = opts.dead_letter_capacity();
        let shared = Arc::new(Shared {
            queue_capacity: opts.max_bytes - dead_capacity,
            dead_capacity,
            state: Mutex::new(State {
                queues,
                dead,
                dead_dropped: 0,
                closed: false,
            }),
            committed: Default::default(),
            cursor_files: Default::default(),
            next_consumer: AtomicU64::new(0),
            commit_rounds: AtomicU64::new(0),
            open_guard: Mutex::new(Some((lock_file, open_guard))),
        });
        let dead_segment_bytes = (dead_capacity / 4).clamp(1, opts.segment_bytes);
        let files = SegmentWriter::new(
            opts.fsync,
            [
                opts.segment_bytes,
                opts.segment_bytes,
                opts.segment_bytes,
                dead_segment_bytes,
            ],
            dirs,
        );
        let (commands, rx) = mpsc::channel(WRITER_QUEUE);
        tokio::spawn(writer::run(shared.clone(), rx, files));
        Ok(DiskBuffer {
            inner: Arc::new(Inner {
                shared,
                commands,
                report,
            }),
        })
    }

    /// What `open` found: records pending per signal, damage cut, segments removed.
    pub fn recovery(&self) -> RecoveryReport {
        self.inner.report.clone()
    }

    /// Reads back the dead-letter store, oldest first. Blocking file I/O: meant for the
    /// `dlq` command, not for an async hot path.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, BufferError> {
        Ok(self
            .dead_letter_entries()?
            .into_iter()
            .map(|entry| entry.letter)
            .collect())
    }

    /// Dead letters dropped since open because their share of the bound was full.
    pub fn dead_letters_dropped(&self) -> u64 {
        self.inner.shared.lock().dead_dropped
    }

    async fn append(&self, target: Target, frame: Vec<u8>) -> Result<(), BufferError> {
        if self.inner.shared.lock().closed {
            return Err(BufferError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        self.inner
            .commands
            .send(Command::Append {
                target,
                frame,
                reply,
            })
            .await
            .map_err(|_| BufferError::Closed)?;
        answer.await.map_err(|_| BufferError::Closed)?
    }
}

/// The frame length field is a u32.
const MAX_FRAME_PAYLOAD: u64 = u32::MAX as u64;

#[async_trait]
impl Buffer for DiskBuffer {
    async fn push(&self, record: Record) -> Result<(), BufferError> {
        let size = FRAME_HEADER + record.encoded_len() as u64;
        let limit = self.inner.shared.queue_capacity.min(MAX_FRAME_PAYLOAD);
        if size > limit {
            return Err(BufferError::TooLarge { size, limit });
        }
        let frame = encode_frame(|out| record.encode(out));
        self.append(Target::Queue(record.signal), frame).await
    }

    async fn consumer(&self, signal: Signal) -> Result<Box<dyn Consumer>, BufferError> {
        let shared = self.inner.shared.clone();
        let id = shared.next_consumer.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(DiskConsumer { shared, signal, id }))
    }

    /// Dead letters larger than their share of the bound are refused with `TooLarge`; the
    /// caller logs the record and acks it.
    async fn dead_letter(&self, letter: DeadLetter) -> Result<(), BufferError> {
        let frame = encode_frame(|out| letter.encode(out));
        let size = frame.len() as u64;
        let limit = self.inner.shared.dead_capacity.min(MAX_FRAME_PAYLOAD);
        if size > limit {
            return Err(BufferError::TooLarge { size, limit });
        }
        self.append(Target::DeadLetter, frame).await
    }

    fn is_ready(&self) -> bool {
        !self.inner.shared.lock().closed
    }

    async fn stats(&self) -> BufferStats {
        let shared = &self.inner.shared;
        let now = now_ms();
        let mut stats = BufferStats {
            capacity_bytes: shared.queue_capacity,
            dead_letters_dropped: shared.lock().dead_dropped,
            ..Default::default()
        };
        for signal in Signal::ALL {
            let (pending, known, peek) = {
                let mut state = shared.lock();
                stats.used_bytes = state.queue_used();
                let queue = &mut state.queues[signal.index()];
                let pending = queue.pending();
                let known = queue.oldest_known();
                let peek = match (pending, known) {
                    (0, _) | (_, Some(_)) => None,
                    _ => queue
                        .plan_sequential()
                        .map(|plan| (queue.log.dir.clone(), queue.cursor, plan)),
                };
                (pending, known, peek)
            };
            let oldest_ms = match (known, peek) {
                (Some(ms), _) => Some(ms),
                (None, Some((dir, cursor, plan))) => {
                    let one = BatchLimits {
                        max_records: 1,
                        max_bytes: usize::MAX,
                    };
                    let read = blocking(move || queue::read(&dir, &plan, one)).await;
                    let found = read.ok().and_then(|outcome| {
                        outcome
                            .records
                            .first()
                            .filter(|(seq, _, _)| *seq == cursor)
                            .map(|(_, _, r)| r.received_at_ms)
                    });
                    if let Some(ms) = found {
                        shared.lock().queues[signal.index()].oldest = Some((cursor, ms));
                    }
                    found
                }
                (None, None) => None,
            };
            stats.signals[signal.index()] = SignalStats {
                pending_records: pending,
                oldest_unacked_age: oldest_ms
                    .map(|ms| Duration::from_millis(now.saturating_sub(ms))),
                undelivered_records: None,
                ..Default::default()
            };
        }
        stats
    }

    async fn close(&self) -> Result<(), BufferError> {
        self.inner.shared.lock().closed = true;
        let (reply, answer) = oneshot::channel();
        let result = match self.inner.commands.send(Command::Close { reply }).await {
            Ok(()) => answer.await.unwrap_or(Ok(())),
            // The writer is gone already: closed before.
            Err(_) => Ok(()),
        };
        let guard = self
            .inner
            .shared
            .open_guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(guard);
        result
    }
}

struct DiskConsumer {
    shared: Arc<Shared>,
    signal: Signal,
    id: u64,
}

#[async_trait]
impl Consumer for DiskConsumer {
    async fn next_batch(&mut self, limits: BatchLimits) -> Result<Vec<Delivery>, BufferError> {
        let slot = self.signal.index();
        loop {
            // Interest first, then look: a commit between the look and the wait still
            // wakes us.
            let committed = self.shared.committed[slot].notified();
            let planned = {
                let mut state = self.shared.lock();
                let queue = &mut state.queues[slot];
                queue
                    .plan_read(limits.max_records)
                    .map(|plan| (queue.log.dir.clone(), plan))
            };
            let Some((dir, plan)) = planned else {
                committed.await;
                continue;
            };
            // Nothing changes until the commit below, which runs without an await: dropping
            // this future at the await loses nothing.
            let to_read = plan.clone();
            let outcome = blocking(move || queue::read(&dir, &to_read, limits)).await?;
            let stalled = {
                let mut state = self.shared.lock();
                let queue = &mut state.queues[slot];
                let before = queue.read;
                match queue.commit_read(&plan, outcome, self.id) {
                    Some(batch) if !batch.is_empty() => return Ok(batch),
                    // Nothing new was readable although the books said so; wait for the
                    // writer rather than spin.
                    Some(_) => {
                        queue.read == before && matches!(plan, queue::ReadPlan::Sequential { .. })
                    }
                    // Another consumer got there first: plan again.
                    None => false,
                }
            };
            if stalled {
                committed.await;
            }
        }
    }

    async fn ack(&mut self, ids: &[DeliveryId]) -> Result<(), BufferError> {
        let slot = self.signal.index();
        let dir = {
            let mut state = self.shared.lock();
            let queue = &mut state.queues[slot];
            if !queue.ack(ids) {
                return Ok(());
            }
            queue.log.dir.clone()
        };
        // Serialized per queue, and the snapshot is taken inside, so the file always ends
        // up with the newest cursor whatever order concurrent acks finish in.
        let file_guard = self.shared.cursor_files[slot].clone().lock_owned().await;
        let shared = self.shared.clone();
        let persist_dir = dir.clone();
        blocking(move || {
            let _file_guard = file_guard;
            let snapshot = shared.lock().queues[slot].cursor_snapshot();
            cursor::store(&persist_dir, &snapshot)
        })
        .await?;
        let reclaim = {
            let mut state = self.shared.lock();
            let queue = &mut state.queues[slot];
            let cursor = queue.cursor;
            queue.log.take_sealed_below(cursor)
        };
        if !reclaim.is_empty() {
            blocking(move || writer::delete_files(&reclaim)).await?;
        }
        Ok(())
    }
}

impl Drop for DiskConsumer {
    /// Records handed out but never acked go to the next consumer of this signal, as a
    /// broker would redeliver them.
    fn drop(&mut self) {
        self.shared.lock().queues[self.signal.index()].release(self.id);
        self.shared.committed[self.signal.index()].notify_waiters();
    }
}
