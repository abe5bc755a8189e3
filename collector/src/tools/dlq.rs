//! `dlq list|show|replay`: the dead letters of the disk buffer, or of a shared buffer
//! (the Redis `<prefix>:dead_letter` stream, the JetStream `<STREAM>_DLQ` stream).
//!
//! `list` and `show` only read, so they may run next to collectors. `replay` pushes each
//! selected letter's record back into its signal's queue and only then removes the letter:
//! a crash in between leaves the record both queued and dead-lettered, a duplicate, never a
//! loss. On the disk buffer it needs the collector stopped (it writes to the buffer; the
//! removal is the dead-letter cursor, replaced atomically); on a shared buffer it may run
//! while collectors run, which deliver the records like any others.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use vigil_core::Signal;
use vigil_core::buffer::disk::{self, DiskBuffer, FsyncPolicy};
use vigil_core::buffer::{Buffer, BufferError, DeadLetter};
use vigil_core::otlp::{Encoding, Request};

use super::{BufferLocation, DAMAGED, Located, USAGE, parse_signal};
use crate::buffer::nats::NatsBuffer;
use crate::buffer::redis::RedisBuffer;
use crate::config::{BufferKind, Config};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: id, signal, when, exporter, items, tenant, size, reason.
    List {
        #[command(flatten)]
        at: BufferLocation,
        /// Only this signal's letters (metrics, logs, traces).
        #[arg(long, value_parser = parse_signal)]
        signal: Option<Signal>,
        /// At most this many lines (the oldest first).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One dead letter in full: its metadata and its record as OTLP JSON.
    Show {
        #[command(flatten)]
        at: BufferLocation,
        /// The id `dlq list` shows.
        id: String,
    },
    /// Push dead letters back into their signal's queue, for the collector to deliver
    /// again, and remove them from the dead-letter store. On the disk buffer the collector
    /// must be stopped; on Redis and NATS collectors may keep running.
    Replay {
        #[command(flatten)]
        at: BufferLocation,
        /// Only this signal's letters.
        #[arg(long, value_parser = parse_signal)]
        signal: Option<Signal>,
        /// These letters (repeatable).
        #[arg(long = "id", value_name = "ID", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every letter (of `--signal`, if given).
        #[arg(long)]
        all: bool,
    },
}

pub fn main(command: DlqCommand) -> ExitCode {
    vigil_core::process::init_logging(vigil_core::process::LogFormat::Text);
    match command {
        DlqCommand::List { at, signal, limit } => list(&at, signal, limit),
        DlqCommand::Show { at, id } => show(&at, &id),
        DlqCommand::Replay {
            at,
            signal,
            ids,
            all,
        } => replay(&at, signal, &ids, all),
    }
}

/// Letters read per round trip from a shared buffer.
const PAGE: usize = 100;

/// One dead letter as the commands see it: its id in its store (disk: sequence number;
/// Redis: stream entry id; NATS: stream sequence) and the letter, or why it does not decode.
struct Listed {
    id: String,
    letter: Result<DeadLetter, String>,
}

/// Where the dead letters are, opened for one command.
enum Store {
    Disk(Located),
    Shared(Shared),
}

/// A shared buffer's dead letters, with a runtime to talk to its broker.
struct Shared {
    buffer: SharedBuffer,
    config: Config,
    runtime: tokio::runtime::Runtime,
}

enum SharedBuffer {
    Redis(RedisBuffer),
    Nats(NatsBuffer),
}

/// A shared buffer's dead letters, a page at a time.
struct Pages<'a> {
    shared: &'a Shared,
    cursor: Option<String>,
    done: bool,
}

impl Pages<'_> {
    async fn next(&mut self) -> Result<Option<Vec<Listed>>, BufferError> {
        if self.done {
            return Ok(None);
        }
        let (page, next) = self.shared.page(self.cursor.as_deref()).await?;
        match next {
            Some(next) => self.cursor = Some(next),
            None => self.done = true,
        }
        Ok(Some(page))
    }
}

impl Store {
    /// Resolves `at` and, for a shared buffer, connects to its broker. On failure prints
    /// why and returns the exit code.
    fn open(at: &BufferLocation, command: &str) -> Result<Store, ExitCode> {
        let config = match at.load_config()? {
            Some(c) if matches!(c.buffer.kind, BufferKind::Redis | BufferKind::Nats) => c,
            other => return at.locate_in(other, command).map(Store::Disk),
        };
        let runtime = super::runtime()?;
        let buffer = runtime.block_on(async {
            match (
                &config.buffer.kind,
                &config.buffer.redis,
                &config.buffer.nats,
            ) {
                (BufferKind::Redis, Some(redis), _) => RedisBuffer::connect(redis.options())
                    .await
                    .map(SharedBuffer::Redis),
                (BufferKind::Nats, _, Some(nats)) => NatsBuffer::open(nats.options())
                    .await
                    .map(SharedBuffer::Nats),
                _ => Err(BufferError::Unavailable(
                    "the buffer section of the chosen kind is missing".into(),
                )),
            }
        });
        match buffer {
            Ok(buffer) => Ok(Store::Shared(Shared {
                buffer,
                config,
                runtime,
            })),
            Err(e) => {
                eprintln!("cannot open the buffer: {e}");
                Err(ExitCode::from(DAMAGED))
            }
        }
    }

    /// Calls `visit` with every dead letter, oldest first, until it returns false.
    fn visit(&self, mut visit: impl FnMut(Listed) -> bool) -> Result<(), ExitCode> {
        match self {
            Store::Disk(located) => {
                let mut going = true;
                disk::visit_dead_letters(&located.options.path, |entry| {
                    if going {
                        going = visit(Listed {
                            id: entry.id.to_string(),
                            letter: Ok(entry.letter),
                        });
                    }
                })
                .map_err(|e| io_failure(&e))
            }
            Store::Shared(shared) => shared.runtime.block_on(shared.visit(visit)).map_err(|e| {
                eprintln!("cannot read the dead letters: {e}");
                ExitCode::from(DAMAGED)
            }),
        }
    }
}

impl Shared {
    fn pages(&self) -> Pages<'_> {
        Pages {
            shared: self,
            cursor: None,
            done: false,
        }
    }

    /// Calls `visit` with every dead letter, oldest first, until it returns false.
    async fn visit(&self, mut visit: impl FnMut(Listed) -> bool) -> Result<(), BufferError> {
        let mut pages = self.pages();
        while let Some(page) = pages.next().await? {
            for entry in page {
                if !visit(entry) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// One page of letters from `cursor` on, and where the next page starts.
    async fn page(
        &self,
        cursor: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>), BufferError> {
        match &self.buffer {
            SharedBuffer::Redis(redis) => {
                let page = redis.dead_letter_page(cursor, PAGE).await?;
                let next = (page.len() == PAGE).then(|| page[PAGE - 1].0.clone());
                let page = page
                    .into_iter()
                    .map(|(id, letter)| Listed { id, letter })
                    .collect();
                Ok((page, next))
            }
            SharedBuffer::Nats(nats) => {
                let from = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
                let (page, next) = nats.dead_letter_page(from, PAGE).await?;
                let page = page
                    .into_iter()
                    .map(|(seq, letter)| Listed {
                        id: seq.to_string(),
                        letter,
                    })
                    .collect();
                Ok((page, next.map(|n| n.to_string())))
            }
        }
    }

    fn buffer(&self) -> &dyn Buffer {
        match &self.buffer {
            SharedBuffer::Redis(redis) => redis,
            SharedBuffer::Nats(nats) => nats,
        }
    }

    async fn remove(&self, id: &str) -> Result<bool, BufferError> {
        match &self.buffer {
            SharedBuffer::Redis(redis) => redis.remove_dead_letter(id).await,
            SharedBuffer::Nats(nats) => match id.parse() {
                Ok(seq) => nats.remove_dead_letter(seq).await,
                Err(_) => Ok(false),
            },
        }
    }
}

fn list(at: &BufferLocation, signal: Option<Signal>, limit: Option<usize>) -> ExitCode {
    let store = match Store::open(at, "dlq list") {
        Ok(store) => store,
        Err(code) => return code,
    };
    let limit = limit.unwrap_or(usize::MAX);
    let mut total = 0usize;
    let mut shown = 0usize;
    let visited = store.visit(|entry| {
        if let (Some(s), Ok(letter)) = (signal, &entry.letter)
            && s != letter.record.signal
        {
            return true;
        }
        total += 1;
        if shown >= limit {
            return true;
        }
        if shown == 0 {
            println!(
                "{:<20} {:<8} {:<20} {:<16} {:>7} {:<16} {:>10}  REASON",
                "ID", "SIGNAL", "DEAD-LETTERED", "EXPORTER", "ITEMS", "TENANT", "SIZE"
            );
        }
        shown += 1;
        match &entry.letter {
            Ok(letter) => println!(
                "{:<20} {:<8} {:<20} {:<16} {:>7} {:<16} {:>10}  {}",
                entry.id,
                letter.record.signal.as_str(),
                time(letter.failed_at_ms),
                letter.exporter,
                letter.record.items,
                letter.record.tenant.as_deref().unwrap_or("-"),
                letter.record.payload.len(),
                one_line(&letter.reason, 100)
            ),
            Err(why) => println!("{:<20} (undecodable: {})", entry.id, one_line(why, 100)),
        }
        true
    });
    if let Err(code) = visited {
        return code;
    }
    match (total, shown < total) {
        (0, _) => println!("no dead letters"),
        (_, true) => println!("{shown} of {total} dead letters shown"),
        (_, false) => println!("{total} dead letter(s)"),
    }
    ExitCode::SUCCESS
}

fn show(at: &BufferLocation, id: &str) -> ExitCode {
    let store = match Store::open(at, "dlq show") {
        Ok(store) => store,
        Err(code) => return code,
    };
    let mut found: Option<Listed> = None;
    let visited = store.visit(|entry| {
        if entry.id == id {
            found = Some(entry);
            return false;
        }
        true
    });
    if let Err(code) = visited {
        return code;
    }
    let Some(entry) = found else {
        eprintln!("no dead letter with id {id} (see `dlq list`)");
        return ExitCode::from(DAMAGED);
    };
    let DeadLetter {
        record,
        exporter,
        reason,
        failed_at_ms,
    } = match &entry.letter {
        Ok(letter) => letter,
        Err(why) => {
            println!("id:            {}", entry.id);
            println!("undecodable:   {why}");
            return ExitCode::from(DAMAGED);
        }
    };
    println!("id:            {}", entry.id);
    println!("signal:        {}", record.signal.as_str());
    println!("dead-lettered: {} ({failed_at_ms} ms)", time(*failed_at_ms));
    println!(
        "received:      {} ({} ms)",
        time(record.received_at_ms),
        record.received_at_ms
    );
    println!("exporter:      {exporter}");
    println!("tenant:        {}", record.tenant.as_deref().unwrap_or("-"));
    println!("items:         {}", record.items);
    println!("size:          {} bytes (protobuf)", record.payload.len());
    println!("reason:        {reason}");
    println!("record (OTLP JSON):");
    match otlp_json(record.signal, &record.payload) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("(does not decode: {e})");
            ExitCode::from(DAMAGED)
        }
    }
}

/// The record as OTLP/JSON (opentelemetry-proto's serde mapping).
fn otlp_json(signal: Signal, payload: &[u8]) -> Result<String, String> {
    let request =
        Request::decode(signal, Encoding::Protobuf, payload).map_err(|e| e.to_string())?;
    let json = match &request {
        Request::Metrics(r) => serde_json::to_string_pretty(r),
        Request::Logs(r) => serde_json::to_string_pretty(r),
        Request::Traces(r) => serde_json::to_string_pretty(r),
    };
    json.map_err(|e| e.to_string())
}

fn replay(at: &BufferLocation, signal: Option<Signal>, ids: &[String], all: bool) -> ExitCode {
    if !all && ids.is_empty() && signal.is_none() {
        eprintln!("say which dead letters to replay: --all, --signal SIGNAL, or --id ID...");
        return ExitCode::from(USAGE);
    }
    let store = match Store::open(at, "dlq replay") {
        Ok(store) => store,
        Err(code) => return code,
    };
    let wanted: BTreeSet<String> = ids.iter().cloned().collect();
    let (outcome, config, live) = match store {
        Store::Disk(located) => match replay_disk(located.options, signal, &wanted) {
            Ok(outcome) => (outcome, located.config, false),
            Err(code) => return code,
        },
        Store::Shared(shared) => {
            let outcome = shared
                .runtime
                .block_on(replay_shared(&shared, signal, &wanted));
            (outcome, Some(shared.config), true)
        }
    };
    report_replay(&outcome, &wanted, config.as_ref(), live)
}

fn report_replay(
    outcome: &ReplayOutcome,
    wanted: &BTreeSet<String>,
    config: Option<&Config>,
    live: bool,
) -> ExitCode {
    let missing: Vec<_> = wanted
        .iter()
        .filter(|id| !outcome.matched.contains(*id))
        .collect();
    if !missing.is_empty() {
        eprintln!("no dead letter with id(s) {missing:?} (of --signal, if given)");
    }
    for (id, why) in &outcome.undecodable {
        eprintln!("dead letter {id} does not decode ({why}): left in place");
    }
    let per_signal: Vec<String> = Signal::ALL
        .iter()
        .filter(|s| outcome.pushed[s.index()] > 0)
        .map(|s| format!("{} {}", s.as_str(), outcome.pushed[s.index()]))
        .collect();
    let pushed: u64 = outcome.pushed.iter().sum();
    println!(
        "replayed {pushed} dead letter(s){}: pushed back into their queue and removed from the dead-letter store ({} removed)",
        match per_signal.is_empty() {
            true => String::new(),
            false => format!(" ({})", per_signal.join(", ")),
        },
        outcome.removed
    );
    if let Some(config) = config {
        for signal in Signal::ALL {
            if outcome.pushed[signal.index()] > 0 && !config.exports(signal) {
                println!(
                    "warning: this configuration has no exporter for {}: the replayed records wait until one is configured",
                    signal.as_str()
                );
            }
        }
    }
    if let Some(e) = &outcome.error {
        eprintln!(
            "replay stopped early: {e}; the letters not pushed stay in the dead-letter store"
        );
        return ExitCode::from(DAMAGED);
    }
    if pushed > 0 {
        match live {
            true => println!("the collectors deliver them like any other records"),
            false => println!("start the collector to deliver them"),
        }
    }
    if missing.is_empty() && outcome.undecodable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DAMAGED)
    }
}

#[derive(Default)]
struct ReplayOutcome {
    matched: BTreeSet<String>,
    pushed: [u64; 3],
    removed: u64,
    undecodable: Vec<(String, String)>,
    error: Option<BufferError>,
}

impl ReplayOutcome {
    /// Whether `entry` is one of the letters asked for; notes it as matched if so.
    fn select(
        &mut self,
        id: &str,
        record_signal: Signal,
        signal: Option<Signal>,
        wanted: &BTreeSet<String>,
    ) -> bool {
        if signal.is_some_and(|s| s != record_signal)
            || (!wanted.is_empty() && !wanted.contains(id))
        {
            return false;
        }
        self.matched.insert(id.to_string());
        true
    }
}

/// Replays from the disk buffer, which it opens (so the collector must be stopped).
fn replay_disk(
    mut options: disk::DiskOptions,
    signal: Option<Signal>,
    wanted: &BTreeSet<String>,
) -> Result<ReplayOutcome, ExitCode> {
    let root = options.path.clone();
    // Open would create a missing directory; there is nothing to replay there.
    if !root.is_dir() {
        eprintln!("{}: no disk buffer here", root.display());
        return Err(ExitCode::from(USAGE));
    }
    if let Some(bad) = wanted.iter().find(|id| id.parse::<u64>().is_err()) {
        eprintln!("`{bad}` is not a disk buffer dead letter id (a number, see `dlq list`)");
        return Err(ExitCode::from(USAGE));
    }
    options.fsync = FsyncPolicy::Always;
    let runtime = super::runtime()?;
    let outcome = runtime.block_on(async {
        let buffer = DiskBuffer::open(options).await?;
        let result = replay_open(&buffer, signal, wanted).await;
        buffer.close().await?;
        Ok::<_, BufferError>(result)
    });
    match outcome {
        Ok(outcome) => Ok(outcome),
        Err(e) if super::is_locked(&e) => Err(super::buffer::refuse_live(&root)),
        Err(e) => {
            eprintln!("replay failed: {e}");
            Err(ExitCode::from(DAMAGED))
        }
    }
}

async fn replay_open(
    buffer: &DiskBuffer,
    signal: Option<Signal>,
    wanted: &BTreeSet<String>,
) -> ReplayOutcome {
    let mut outcome = ReplayOutcome::default();
    let entries = match buffer.dead_letter_entries() {
        Ok(entries) => entries,
        Err(e) => {
            outcome.error = Some(e);
            return outcome;
        }
    };
    let mut done = Vec::new();
    for entry in entries {
        let record_signal = entry.letter.record.signal;
        if !outcome.select(&entry.id.to_string(), record_signal, signal, wanted) {
            continue;
        }
        // Durable (fsynced) when it returns: only then may the letter go.
        if let Err(e) = buffer.push(entry.letter.record).await {
            outcome.error = Some(e);
            break;
        }
        outcome.pushed[record_signal.index()] += 1;
        done.push(entry.id);
    }
    match buffer.remove_dead_letters(&done).await {
        Ok(removed) => outcome.removed = removed,
        Err(e) => outcome.error = Some(e),
    }
    outcome
}

/// Replays from a shared buffer, letter by letter: pushed (the broker confirmed it), then
/// removed. Page by page, so memory stays bounded whatever the store holds.
async fn replay_shared(
    shared: &Shared,
    signal: Option<Signal>,
    wanted: &BTreeSet<String>,
) -> ReplayOutcome {
    let mut outcome = ReplayOutcome::default();
    let mut pages = shared.pages();
    loop {
        let page = match pages.next().await {
            Ok(Some(page)) => page,
            Ok(None) => return outcome,
            Err(e) => {
                outcome.error = Some(e);
                return outcome;
            }
        };
        for Listed { id, letter } in page {
            let letter = match letter {
                Ok(letter) => letter,
                Err(why) => {
                    if wanted.contains(&id) {
                        outcome.matched.insert(id.clone());
                        outcome.undecodable.push((id, why));
                    }
                    continue;
                }
            };
            let record_signal = letter.record.signal;
            if !outcome.select(&id, record_signal, signal, wanted) {
                continue;
            }
            if let Err(e) = shared.buffer().push(letter.record).await {
                outcome.error = Some(e);
                return outcome;
            }
            outcome.pushed[record_signal.index()] += 1;
            match shared.remove(&id).await {
                Ok(removed) => outcome.removed += u64::from(removed),
                Err(e) => {
                    outcome.error = Some(e);
                    return outcome;
                }
            }
        }
    }
}

fn io_failure(e: &std::io::Error) -> ExitCode {
    eprintln!("{e}");
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => ExitCode::from(USAGE),
        _ => ExitCode::from(DAMAGED),
    }
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `text` on one line, cut to `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_to_one_line() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("ünïcödé", 3), "ünï…");
    }

    #[test]
    fn records_print_as_otlp_json() {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        use prost::Message;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(Value::StringValue("hello".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let json = otlp_json(Signal::Logs, &request.encode_to_vec()).unwrap();
        assert!(json.contains("\"resourceLogs\""), "{json}");
        assert!(json.contains("hello"), "{json}");
        assert!(otlp_json(Signal::Logs, b"\xff\xff\xff").is_err());
    }
}
