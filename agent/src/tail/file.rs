//! One open log file: where it is read up to, and what is being decoded from it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::resource::v1::Resource;
use regex::bytes::Regex;
use tracing::{info, warn};

use super::format::{Decoder, Entry};
use super::line::{LineSplitter, RawLine};
use super::multiline::Multiline;
use super::{Ack, ShipperGone, TailedRecord, lock, string_attribute};
use crate::checkpoint::{Checkpoints, FileKey, Fingerprint};
use crate::config::LogSource;
use crate::telemetry::Telemetry;

/// The attribute that flags a piece of a cut line.
pub const SPLIT_ATTRIBUTE: &str = "vigil.line.split";
/// The OTel semantic-conventions attribute for stdout / stderr.
pub const STREAM_ATTRIBUTE: &str = "log.iostream";

/// One read; also the most a tailer holds back when the channel is full.
const READ_CHUNK: usize = 32 << 10;
/// How long part of a CRI or Docker message waits for the line that ends it. Runtimes
/// write the parts at once: a longer wait means the writer died in between.
pub const PARTIAL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TrackedFile {
    pub key: FileKey,
    pub path: PathBuf,
    file: File,
    generation: u32,
    fingerprint: Fingerprint,
    /// Read (and handed to the splitter) up to here.
    offset: u64,
    /// The size at the last poll.
    size: u64,
    max_line_bytes: usize,
    splitter: LineSplitter,
    decoder: Decoder,
    multiline: Option<Multiline>,
    resource: Arc<Resource>,
    /// The resume offset of the last record handed on: once delivered, all of it is.
    last_sent: u64,
    /// Since when no glob finds this file (renamed away or deleted).
    missing_since: Option<Instant>,
    /// When the file last grew.
    grew_at: Instant,
    /// When the last line was read.
    line_at: Instant,
    /// What is held for an unterminated line was flushed: the file is not expected to grow.
    finished: bool,
}

impl TrackedFile {
    /// The resource of the records read from now on.
    pub fn set_resource(&mut self, resource: Arc<Resource>) {
        self.resource = resource;
    }

    /// Opens a file and decides where to read from: its checkpoint if it has one, else its
    /// end (`from_end`) or its beginning.
    pub fn open(
        path: &Path,
        source: &LogSource,
        multiline: Option<(Regex, Duration)>,
        resource: Arc<Resource>,
        from_end: bool,
        checkpoints: &Mutex<Checkpoints>,
    ) -> io::Result<TrackedFile> {
        let file = File::open(path)?;
        let metadata = file.metadata()?;
        let key = FileKey::of(&metadata);
        let size = metadata.len();
        let fingerprint = Fingerprint::read(&file)?;
        let mut checkpoints = lock(checkpoints);
        let offset = match checkpoints.resume_offset(key, &file) {
            Some(offset) if offset <= size => offset,
            Some(_) => 0, // truncated while the agent was away
            None if from_end => size,
            None => 0,
        };
        let generation = checkpoints.track(key, fingerprint, offset, path);
        drop(checkpoints);
        let max_line_bytes = source.max_line_bytes.0 as usize;
        Ok(TrackedFile {
            key,
            path: path.to_path_buf(),
            file,
            generation,
            fingerprint,
            offset,
            size,
            max_line_bytes,
            splitter: LineSplitter::new(max_line_bytes, offset),
            decoder: Decoder::new(source.format, max_line_bytes),
            multiline: multiline
                .map(|(regex, timeout)| Multiline::new(regex, timeout, max_line_bytes)),
            resource,
            last_sent: offset,
            missing_since: None,
            grew_at: Instant::now(),
            line_at: Instant::now(),
            finished: false,
        })
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes written and not read yet (one `fstat`).
    pub fn lag(&self) -> u64 {
        let size = self.file.metadata().map_or(self.size, |m| m.len());
        size.saturating_sub(self.offset)
    }

    /// A scan found the file, at `path`.
    pub fn found_at(&mut self, path: &Path, checkpoints: &Mutex<Checkpoints>) {
        self.missing_since = None;
        if self.path != path {
            info!(from = %self.path.display(), to = %path.display(), "file moved; following it");
            self.path = path.to_path_buf();
            lock(checkpoints).update(self.key, self.fingerprint, path);
        }
    }

    /// A scan did not find the file.
    pub fn missing_since(&mut self, now: Instant) {
        self.missing_since.get_or_insert(now);
    }

    /// Whether the file can be closed: no glob finds it, it did not grow for a scan
    /// interval (writers of a renamed file have moved on), it is read to its end, and all
    /// of that is delivered.
    pub fn is_done(&self, now: Instant, grace: Duration, checkpoints: &Mutex<Checkpoints>) -> bool {
        self.is_abandoned(now, grace)
            && self.finished
            && self.offset >= self.size
            && lock(checkpoints)
                .delivered(self.key, self.generation)
                .is_none_or(|delivered| delivered >= self.last_sent)
    }

    /// No glob finds the file and it did not grow for `grace`: its writers moved on.
    fn is_abandoned(&self, now: Instant, grace: Duration) -> bool {
        self.missing_since.is_some_and(|missing_since| {
            now.saturating_duration_since(missing_since.max(self.grew_at)) >= grace
        })
    }

    /// Reads what is new (up to `budget` bytes) and sends the records it completes. True if
    /// the budget ran out with more to read.
    pub fn poll(
        &mut self,
        now: Instant,
        budget: usize,
        grace: Duration,
        checkpoints: &Mutex<Checkpoints>,
        telemetry: &Telemetry,
        send: &mut impl FnMut(TailedRecord) -> Result<bool, ShipperGone>,
    ) -> Result<bool, ShipperGone> {
        let size = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot stat an open file");
                return Ok(false);
            }
        };
        if size != self.size {
            self.grew_at = now;
            if size < self.offset || !self.still_the_same_content() {
                self.restart_after_truncation(checkpoints);
            } else if self.fingerprint.is_short()
                && let Ok(fingerprint) = Fingerprint::read(&self.file)
            {
                self.fingerprint = fingerprint;
                lock(checkpoints).update(self.key, fingerprint, &self.path);
            }
            self.size = size;
        }

        let mut entries = Vec::new();
        let mut read = 0;
        let mut buf = vec![0; READ_CHUNK.min(budget.max(1))];
        let mut lines: Vec<RawLine> = Vec::new();
        while read < budget {
            let n = match self.file.read_at(&mut buf, self.offset) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(path = %self.path.display(), error = %e, "cannot read");
                    break;
                }
            };
            self.finished = false;
            self.offset += n as u64;
            read += n;
            self.splitter.feed(&buf[..n], &mut lines);
            self.decode(std::mem::take(&mut lines), now, telemetry, &mut entries);
            if !self.send(entries.drain(..), telemetry, send)? {
                break; // the shipper is behind: the rest of the file waits
            }
        }
        telemetry.bytes_read.inc_by(read as u64);
        self.size = self.size.max(self.offset);

        if read == 0
            && self.decoder.has_partial()
            && now.saturating_duration_since(self.line_at) >= PARTIAL_TIMEOUT
        {
            let mut partial = Vec::new();
            self.decoder.flush_partial(&mut partial);
            self.merge_multiline(partial, now, &mut entries);
        }
        if let Some(multiline) = &mut self.multiline {
            multiline.flush_expired(now, &mut entries);
        }
        // A file nobody writes to any more: what is held for its last line is complete.
        if read == 0 && !self.finished && self.is_abandoned(now, grace) {
            self.splitter.finish(&mut lines);
            self.decode(std::mem::take(&mut lines), now, telemetry, &mut entries);
            self.decoder.finish(self.offset, &mut entries);
            if let Some(multiline) = &mut self.multiline {
                multiline.finish(&mut entries);
            }
            if let Some(last) = entries.last_mut() {
                last.resume_offset = self.offset;
            }
            self.finished = true;
        }
        self.send(entries.drain(..), telemetry, send)?;
        Ok(read >= budget)
    }

    /// Whether the file still starts with what it started with (a copytruncate followed by
    /// enough new writes to pass the old offset shows only here).
    fn still_the_same_content(&self) -> bool {
        self.fingerprint.len == 0 || self.fingerprint.matches(&self.file).unwrap_or(true)
    }

    fn restart_after_truncation(&mut self, checkpoints: &Mutex<Checkpoints>) {
        info!(path = %self.path.display(), offset = self.offset, "file truncated; reading it again from the start");
        self.offset = 0;
        self.size = 0;
        self.last_sent = 0;
        self.splitter = LineSplitter::new(self.max_line_bytes, 0);
        self.decoder = Decoder::new(self.decoder.format(), self.max_line_bytes);
        if let Some(multiline) = &mut self.multiline {
            // What was pending belongs to the old content; it is not delivered either way.
            let mut dropped = Vec::new();
            multiline.finish(&mut dropped);
        }
        self.fingerprint = Fingerprint::read(&self.file).unwrap_or(Fingerprint::of(b""));
        self.generation = lock(checkpoints).track(self.key, self.fingerprint, 0, &self.path);
    }

    fn decode(
        &mut self,
        lines: Vec<RawLine>,
        now: Instant,
        telemetry: &Telemetry,
        entries: &mut Vec<Entry>,
    ) {
        if lines.is_empty() {
            return;
        }
        self.line_at = now;
        telemetry.lines_read.inc_by(lines.len() as u64);
        let malformed_before = self.decoder.malformed;
        let mut decoded = Vec::new();
        for line in lines {
            self.decoder.push(line, &mut decoded);
        }
        telemetry
            .lines_malformed
            .inc_by(self.decoder.malformed - malformed_before);
        self.merge_multiline(decoded, now, entries);
    }

    fn merge_multiline(&mut self, decoded: Vec<Entry>, now: Instant, entries: &mut Vec<Entry>) {
        match &mut self.multiline {
            Some(multiline) => {
                for entry in decoded {
                    multiline.push(entry, now, entries);
                }
            }
            None => entries.extend(decoded),
        }
    }

    fn send(
        &mut self,
        entries: impl Iterator<Item = Entry>,
        telemetry: &Telemetry,
        send: &mut impl FnMut(TailedRecord) -> Result<bool, ShipperGone>,
    ) -> Result<bool, ShipperGone> {
        let mut flowing = true;
        let observed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for entry in entries {
            if entry.split {
                telemetry.lines_split.inc();
            }
            let size = entry.body.len() + 64;
            self.last_sent = entry.resume_offset;
            flowing &= send(TailedRecord {
                resource: self.resource.clone(),
                record: to_log_record(entry, observed),
                ack: Ack {
                    key: self.key,
                    generation: self.generation,
                    offset: self.last_sent,
                },
                size,
            })?;
        }
        Ok(flowing)
    }
}

/// An entry as an OTLP log record; invalid UTF-8 is replaced, never refused.
pub fn to_log_record(entry: Entry, observed_time_unix_nano: u64) -> LogRecord {
    let mut attributes = Vec::new();
    if let Some(stream) = entry.stream {
        attributes.push(string_attribute(STREAM_ATTRIBUTE, stream.as_str()));
    }
    if entry.split {
        attributes.push(KeyValue {
            key: SPLIT_ATTRIBUTE.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::BoolValue(true)),
            }),
            ..Default::default()
        });
    }
    let body = match String::from_utf8(entry.body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    LogRecord {
        time_unix_nano: entry.time_unix_nano,
        observed_time_unix_nano,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes,
        ..Default::default()
    }
}
