//! The writer: the one task that appends to segment files.
//!
//! Pushes arrive on a bounded channel as ready-made frames with a reply. The writer takes
//! everything queued (group commit), decides under the lock which frames fit and which
//! sequence numbers they get, writes them all and fdatasyncs each touched file once on a
//! blocking thread, then publishes the new committed sizes and answers every push. Under
//! `FsyncPolicy::Interval` it answers after write(2) and fsyncs on a timer.
//!
//! Only the writer creates segments and appends to them; sealed segments are deleted by
//! whoever takes them off the books first (the writer or an ack).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, warn};

use super::queue::{Log, SegmentMeta};
use super::segment::{segment_path, sync_dir};
use super::{FsyncPolicy, Shared, State};
use crate::Signal;
use crate::buffer::BufferError;

/// Most commands one group commit takes.
const MAX_BATCH_COMMANDS: usize = 1024;
/// Most frame bytes one group commit takes; the rest waits for the next round.
const MAX_BATCH_BYTES: usize = 32 << 20;
/// Slot of the dead-letter log in per-log arrays; signals use their index.
pub(super) const DEAD_LETTER_SLOT: usize = 3;
/// How long a client is told to wait when the buffer is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

pub(super) type Reply = oneshot::Sender<Result<(), BufferError>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Queue(Signal),
    DeadLetter,
}

impl Target {
    fn slot(self) -> usize {
        match self {
            Target::Queue(signal) => signal.index(),
            Target::DeadLetter => DEAD_LETTER_SLOT,
        }
    }
}

pub(super) enum Command {
    Append {
        target: Target,
        frame: Vec<u8>,
        reply: Reply,
    },
    /// Finish what came before, fsync, stop.
    Close { reply: Reply },
}

/// The segment a log appends to, with the writer's own view of its size.
struct OpenSegment {
    first: u64,
    file: File,
    bytes: u64,
    records: u64,
}

/// The writer's side of the files.
pub(super) struct SegmentWriter {
    fsync: FsyncPolicy,
    roll_at: [u64; 4],
    dirs: [PathBuf; 4],
    open: [Option<OpenSegment>; 4],
    /// Written since the last fsync (only under `FsyncPolicy::Interval`).
    unsynced: bool,
}

/// Frames for one log, numbered from `first_seq`.
struct LogBatch {
    slot: usize,
    first_seq: u64,
    frames: Vec<Vec<u8>>,
    replies: Vec<Reply>,
}

/// One round of I/O, planned under the lock.
#[derive(Default)]
struct Job {
    /// Logs whose open segment was reclaimed: forget the handle before writing.
    close_open: [bool; 4],
    delete: Vec<PathBuf>,
    batches: Vec<LogBatch>,
}

/// Final committed sizes of the segments a batch touched.
type Written = Vec<(u64, SegmentMeta)>;

impl SegmentWriter {
    pub(super) fn new(fsync: FsyncPolicy, roll_at: [u64; 4], dirs: [PathBuf; 4]) -> SegmentWriter {
        SegmentWriter {
            fsync,
            roll_at,
            dirs,
            open: Default::default(),
            unsynced: false,
        }
    }

    fn run(&mut self, job: &Job) -> Vec<io::Result<Written>> {
        for (slot, close) in job.close_open.iter().enumerate() {
            if *close {
                self.open[slot] = None;
            }
        }
        if let Err(e) = delete_files(&job.delete) {
            warn!(error = %e, "could not delete reclaimed buffer segments");
        }
        job.batches
            .iter()
            .map(|batch| {
                let before = self.open[batch.slot].as_ref().map(|s| (s.first, s.bytes));
                let mut created = Vec::new();
                let result = self.append(batch, &mut created);
                if result.is_err() {
                    self.undo(batch.slot, before, &created);
                }
                result
            })
            .collect()
    }

    fn append(&mut self, batch: &LogBatch, created: &mut Vec<u64>) -> io::Result<Written> {
        let slot = batch.slot;
        let mut written: Written = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_records = 0u64;
        for (i, frame) in batch.frames.iter().enumerate() {
            let seq = batch.first_seq + i as u64;
            let roll = match &self.open[slot] {
                None => true,
                Some(s) => {
                    s.records + pending_records > 0
                        && s.bytes + pending.len() as u64 >= self.roll_at[slot]
                }
            };
            if roll {
                self.flush(slot, &mut pending, &mut pending_records, &mut written)?;
                if let Some(sealed) = self.open[slot].take() {
                    // Its handle goes away now, so its data must be on disk now.
                    sealed.file.sync_data()?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .open(segment_path(&self.dirs[slot], seq))?;
                created.push(seq);
                self.open[slot] = Some(OpenSegment {
                    first: seq,
                    file,
                    bytes: 0,
                    records: 0,
                });
            }
            pending.extend_from_slice(frame);
            pending_records += 1;
        }
        self.flush(slot, &mut pending, &mut pending_records, &mut written)?;
        match self.fsync {
            FsyncPolicy::Always => {
                if let Some(open) = &self.open[slot] {
                    open.file.sync_data()?;
                }
            }
            FsyncPolicy::Interval(_) => self.unsynced = true,
        }
        if !created.is_empty() {
            sync_dir(&self.dirs[slot])?;
        }
        Ok(written)
    }

    fn flush(
        &mut self,
        slot: usize,
        pending: &mut Vec<u8>,
        pending_records: &mut u64,
        written: &mut Written,
    ) -> io::Result<()> {
        let Some(open) = self.open[slot].as_mut() else {
            return Ok(());
        };
        if *pending_records == 0 {
            return Ok(());
        }
        open.file.write_all(pending)?;
        open.bytes += pending.len() as u64;
        open.records += *pending_records;
        pending.clear();
        *pending_records = 0;
        let meta = SegmentMeta {
            bytes: open.bytes,
            records: open.records,
        };
        match written.iter_mut().find(|(first, _)| *first == open.first) {
            Some(entry) => entry.1 = meta,
            None => written.push((open.first, meta)),
        }
        Ok(())
    }

    /// After a failed batch: cut the segment that was open back to what was committed,
    /// remove segments the batch created, and start a fresh segment next time. Best
    /// effort: whatever is left behind is past the committed size, which readers never
    /// look at and recovery cuts off.
    fn undo(&mut self, slot: usize, before: Option<(u64, u64)>, created: &[u64]) {
        self.open[slot] = None;
        if let Some((first, bytes)) = before {
            let path = segment_path(&self.dirs[slot], first);
            if let Err(e) = OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(bytes))
            {
                warn!(path = %path.display(), error = %e, "could not cut a failed write off a buffer segment");
            }
        }
        let paths: Vec<PathBuf> = created
            .iter()
            .map(|first| segment_path(&self.dirs[slot], *first))
            .collect();
        if let Err(e) = delete_files(&paths) {
            warn!(error = %e, "could not remove buffer segments of a failed write");
        }
    }

    fn sync_all(&mut self) -> io::Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        for open in self.open.iter().flatten() {
            open.file.sync_data()?;
        }
        self.unsynced = false;
        Ok(())
    }
}

/// Deletes files (already gone is fine) and fsyncs their directories.
pub(super) fn delete_files(paths: &[PathBuf]) -> io::Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent()
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs.iter().try_for_each(|dir| sync_dir(dir))
}

/// The writer task. Runs until `close` or until every sender is gone.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Command>,
    mut files: SegmentWriter,
) {
    let mut ticker = match files.fsync {
        FsyncPolicy::Interval(every) => {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(ticker)
        }
        FsyncPolicy::Always => None,
    };
    loop {
        let command = tokio::select! {
            command = rx.recv() => command,
            _ = tick(&mut ticker) => {
                match sync_files(files).await {
                    (Some(back), _) => files = back,
                    (None, _) => break,
                }
                continue;
            }
        };
        let Some(command) = command else {
            // Every handle to the buffer is gone.
            let _ = sync_files(files).await; // a failure is logged inside
            return;
        };
        let mut appends = Vec::new();
        let mut bytes = 0;
        let mut close = None;
        let mut next = Some(command);
        while let Some(command) = next.take() {
            match command {
                Command::Append {
                    target,
                    frame,
                    reply,
                } => {
                    bytes += frame.len();
                    appends.push((target, frame, reply));
                }
                Command::Close { reply } => {
                    close = Some(reply);
                    break;
                }
            }
            if appends.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        files = match commit_round(&shared, files, appends).await {
            Some(files) => files,
            None => break,
        };
        if let Some(reply) = close {
            let (_, result) = sync_files(files).await;
            shared.lock().closed = true;
            reject_rest(&mut rx).await;
            let _ = reply.send(result.map_err(BufferError::Io));
            return;
        }
    }
    // The files are lost to a failed blocking task: nothing more can be written.
    shared.lock().closed = true;
    reject_rest(&mut rx).await;
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn reject_rest(rx: &mut mpsc::Receiver<Command>) {
    rx.close();
    while let Some(command) = rx.recv().await {
        let reply = match command {
            Command::Append { reply, .. } | Command::Close { reply } => reply,
        };
        let _ = reply.send(Err(BufferError::Closed));
    }
}

/// fsyncs what `FsyncPolicy::Interval` left unsynced. `None` if the blocking task died.
async fn sync_files(mut files: SegmentWriter) -> (Option<SegmentWriter>, io::Result<()>) {
    let joined = tokio::task::spawn_blocking(move || {
        let result = files.sync_all();
        (files, result)
    })
    .await;
    match joined {
        Ok((files, result)) => {
            if let Err(e) = &result {
                error!(error = %e, "fsync of the disk buffer failed; recent records may not survive a crash");
            }
            (Some(files), result)
        }
        Err(e) => {
            error!(error = %e, "disk buffer fsync task failed");
            (None, Err(io::Error::other("disk buffer fsync task failed")))
        }
    }
}

/// One group commit: admit, write, publish, answer. `None` if the files are lost (the
/// blocking task died), after which the buffer is closed; the pushes of that round see
/// their reply dropped, which they report as `Closed`.
async fn commit_round(
    shared: &Arc<Shared>,
    mut files: SegmentWriter,
    appends: Vec<(Target, Vec<u8>, Reply)>,
) -> Option<SegmentWriter> {
    let job = admit(shared, appends);
    if job.batches.is_empty() && job.delete.is_empty() && !job.close_open.contains(&true) {
        return Some(files);
    }
    let joined = tokio::task::spawn_blocking(move || {
        let results = files.run(&job);
        (files, job, results)
    })
    .await;
    match joined {
        Ok((files, job, results)) => {
            shared
                .commit_rounds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            publish(shared, job.batches, results).await;
            Some(files)
        }
        Err(e) => {
            error!(error = %e, "disk buffer writer failed; closing the buffer");
            None
        }
    }
}

/// Decides, under the lock, which frames fit and which numbers they get.
fn admit(shared: &Shared, appends: Vec<(Target, Vec<u8>, Reply)>) -> Job {
    let mut job = Job::default();
    let mut state = shared.lock();
    for (target, frame, reply) in appends {
        let len = frame.len() as u64;
        let slot = target.slot();
        let admitted = match target {
            Target::Queue(_) => admit_queue_frame(shared, &mut state, &mut job, len),
            Target::DeadLetter => {
                make_dead_letter_room(shared, &mut state, &mut job, len);
                Ok(())
            }
        };
        if let Err(e) = admitted {
            let _ = reply.send(Err(e));
            continue;
        }
        let log = state.log_mut(slot);
        let seq = log.next_seq;
        log.next_seq += 1;
        log.used += len;
        let batch = match job.batches.iter_mut().position(|b| b.slot == slot) {
            Some(i) => &mut job.batches[i],
            None => {
                job.batches.push(LogBatch {
                    slot,
                    first_seq: seq,
                    frames: Vec::new(),
                    replies: Vec::new(),
                });
                let last = job.batches.len() - 1;
                &mut job.batches[last]
            }
        };
        batch.frames.push(frame);
        batch.replies.push(reply);
    }
    job
}

fn admit_queue_frame(
    shared: &Shared,
    state: &mut State,
    job: &mut Job,
    len: u64,
) -> Result<(), BufferError> {
    let capacity = shared.queue_capacity;
    if state.queue_used() + len <= capacity {
        return Ok(());
    }
    // Space may be held by segments that are done but not yet deleted: an open segment
    // whose records are all acked, or a sealed one an ack has not got round to.
    for (slot, queue) in state.queues.iter_mut().enumerate() {
        let log = &mut queue.log;
        if let Some(active) = log.active {
            let meta = log.segments.get(&active).copied().unwrap_or_default();
            let nothing_pending = log.next_seq == log.durable;
            if nothing_pending && active + meta.records <= queue.cursor {
                log.active = None;
                job.close_open[slot] = true;
            }
        }
        job.delete.extend(log.take_sealed_below(queue.cursor));
    }
    let used = state.queue_used();
    if used + len <= capacity {
        return Ok(());
    }
    Err(BufferError::Full {
        used,
        capacity,
        bound: super::super::Bound::Bytes,
        retry_after: FULL_RETRY_AFTER,
    })
}

/// Dead letters are a ring within their share of the bound: the oldest segments go to
/// make room, counted and logged, so a storm of rejects never blocks the data path.
fn make_dead_letter_room(shared: &Shared, state: &mut State, job: &mut Job, len: u64) {
    while state.dead.log.used + len > shared.dead_capacity {
        let dead = &mut state.dead;
        let Some((&first, &meta)) = dead.log.segments.iter().next() else {
            break;
        };
        if dead.log.active == Some(first) {
            dead.log.active = None;
            job.close_open[DEAD_LETTER_SLOT] = true;
        }
        dead.log.segments.remove(&first);
        dead.log.used = dead.log.used.saturating_sub(meta.bytes);
        // Letters already replayed are not lost with it.
        let end = first + meta.records;
        let replayed = dead.records_done(first, end);
        state.dead_dropped += meta.records - replayed;
        job.delete.push(segment_path(&state.dead.log.dir, first));
        warn!(
            dropped = meta.records,
            "dead-letter store is full; dropping its oldest records"
        );
    }
}

/// Publishes what was written and answers the pushes.
async fn publish(shared: &Arc<Shared>, batches: Vec<LogBatch>, results: Vec<io::Result<Written>>) {
    let mut reclaim = Vec::new();
    let mut answers = Vec::new();
    {
        let mut state = shared.lock();
        for (batch, result) in batches.into_iter().zip(results) {
            let reserved: u64 = batch.frames.iter().map(|f| f.len() as u64).sum();
            let count = batch.frames.len() as u64;
            match result {
                Ok(written) => {
                    let log = state.log_mut(batch.slot);
                    commit_written(log, &written, batch.first_seq + count);
                    if batch.slot != DEAD_LETTER_SLOT {
                        let queue = &mut state.queues[batch.slot];
                        queue.advance_cursor();
                        reclaim.extend(queue.log.take_sealed_below(queue.cursor));
                    }
                    answers.push((batch.replies, None));
                }
                Err(e) => {
                    error!(error = %e, "disk buffer write failed");
                    let log = state.log_mut(batch.slot);
                    log.next_seq = batch.first_seq;
                    log.used = log.used.saturating_sub(reserved);
                    log.active = None;
                    answers.push((batch.replies, Some(e)));
                }
            }
            if batch.slot != DEAD_LETTER_SLOT {
                shared.committed[batch.slot].notify_waiters();
            }
        }
    }
    for (replies, error) in answers {
        for reply in replies {
            let result = match &error {
                None => Ok(()),
                Some(e) => Err(BufferError::Io(io::Error::new(e.kind(), e.to_string()))),
            };
            let _ = reply.send(result);
        }
    }
    if !reclaim.is_empty() {
        let deleted = tokio::task::spawn_blocking(move || delete_files(&reclaim)).await;
        if let Ok(Err(e)) = deleted {
            warn!(error = %e, "could not delete reclaimed buffer segments");
        }
    }
}

fn commit_written(log: &mut Log, written: &Written, durable: u64) {
    for (first, meta) in written {
        log.segments.insert(*first, *meta);
        log.active = Some(*first);
    }
    log.durable = durable;
}
