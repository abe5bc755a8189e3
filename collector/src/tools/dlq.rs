//! `dlq list|show` (read-only; may run next to a collector) and `dlq replay` (writes to
//! the buffer, so the collector must be stopped).
//!
//! Replay is at-least-once: every selected record is pushed back into its signal's queue
//! (fsynced) before its letter is removed, and the removal is itself durable (the
//! dead-letter cursor, replaced atomically). A crash in between leaves the record both
//! queued and dead-lettered: a duplicate, never a loss.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use vigil_core::Signal;
use vigil_core::buffer::disk::{self, DiskBuffer, FsyncPolicy, StoredDeadLetter};
use vigil_core::buffer::{Buffer, DeadLetter};
use vigil_core::otlp::{Encoding, Request};

use super::{BufferLocation, DAMAGED, USAGE, parse_signal};

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
        id: u64,
    },
    /// Push dead letters back into their signal's queue, for the collector to deliver
    /// again, and remove them from the dead-letter store. The collector must be stopped.
    Replay {
        #[command(flatten)]
        at: BufferLocation,
        /// Only this signal's letters.
        #[arg(long, value_parser = parse_signal)]
        signal: Option<Signal>,
        /// These letters (repeatable).
        #[arg(long = "id", value_name = "ID", conflicts_with = "all")]
        ids: Vec<u64>,
        /// Every letter (of `--signal`, if given).
        #[arg(long)]
        all: bool,
    },
}

pub fn main(command: DlqCommand) -> ExitCode {
    vigil_core::process::init_logging(vigil_core::process::LogFormat::Text);
    match command {
        DlqCommand::List { at, signal, limit } => list(&at, signal, limit),
        DlqCommand::Show { at, id } => show(&at, id),
        DlqCommand::Replay {
            at,
            signal,
            ids,
            all,
        } => replay(&at, signal, &ids, all),
    }
}

fn list(at: &BufferLocation, signal: Option<Signal>, limit: Option<usize>) -> ExitCode {
    let located = match at.locate("dlq list") {
        Ok(located) => located,
        Err(code) => return code,
    };
    let limit = limit.unwrap_or(usize::MAX);
    let mut total = 0usize;
    let mut shown = 0usize;
    let visited = disk::visit_dead_letters(&located.options.path, |entry| {
        if signal.is_some_and(|s| s != entry.letter.record.signal) {
            return;
        }
        total += 1;
        if shown >= limit {
            return;
        }
        if shown == 0 {
            println!(
                "{:<8} {:<8} {:<20} {:<16} {:>7} {:<16} {:>10}  REASON",
                "ID", "SIGNAL", "DEAD-LETTERED", "EXPORTER", "ITEMS", "TENANT", "SIZE"
            );
        }
        shown += 1;
        let letter = &entry.letter;
        println!(
            "{:<8} {:<8} {:<20} {:<16} {:>7} {:<16} {:>10}  {}",
            entry.id,
            letter.record.signal.as_str(),
            time(letter.failed_at_ms),
            letter.exporter,
            letter.record.items,
            letter.record.tenant.as_deref().unwrap_or("-"),
            letter.record.payload.len(),
            one_line(&letter.reason, 100)
        );
    });
    if let Err(e) = visited {
        return io_failure(&e);
    }
    match (total, shown < total) {
        (0, _) => println!("no dead letters"),
        (_, true) => println!("{shown} of {total} dead letters shown"),
        (_, false) => println!("{total} dead letter(s)"),
    }
    ExitCode::SUCCESS
}

fn show(at: &BufferLocation, id: u64) -> ExitCode {
    let located = match at.locate("dlq show") {
        Ok(located) => located,
        Err(code) => return code,
    };
    let mut found: Option<StoredDeadLetter> = None;
    let visited = disk::visit_dead_letters(&located.options.path, |entry| {
        if entry.id == id {
            found = Some(entry);
        }
    });
    if let Err(e) = visited {
        return io_failure(&e);
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
    } = &entry.letter;
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

fn replay(at: &BufferLocation, signal: Option<Signal>, ids: &[u64], all: bool) -> ExitCode {
    if !all && ids.is_empty() && signal.is_none() {
        eprintln!("say which dead letters to replay: --all, --signal SIGNAL, or --id ID...");
        return ExitCode::from(USAGE);
    }
    let located = match at.locate("dlq replay") {
        Ok(located) => located,
        Err(code) => return code,
    };
    let mut options = located.options;
    let root = options.path.clone();
    // Open would create a missing directory; there is nothing to replay there.
    if !root.is_dir() {
        eprintln!("{}: no disk buffer here", root.display());
        return ExitCode::from(USAGE);
    }
    options.fsync = FsyncPolicy::Always;
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let wanted: BTreeSet<u64> = ids.iter().copied().collect();
    let outcome = runtime.block_on(async {
        let buffer = DiskBuffer::open(options).await?;
        let result = replay_open(&buffer, signal, &wanted).await;
        buffer.close().await?;
        Ok::<_, vigil_core::buffer::BufferError>(result)
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) if super::is_locked(&e) => return super::buffer::refuse_live(&root),
        Err(e) => {
            eprintln!("replay failed: {e}");
            return ExitCode::from(DAMAGED);
        }
    };
    let missing: Vec<_> = wanted
        .iter()
        .filter(|id| !outcome.matched.contains(id))
        .collect();
    if !missing.is_empty() {
        eprintln!("no dead letter with id(s) {missing:?} (of --signal, if given)");
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
    if let Some(config) = &located.config {
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
        println!("start the collector to deliver them");
    }
    if missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(DAMAGED)
    }
}

#[derive(Default)]
struct ReplayOutcome {
    matched: BTreeSet<u64>,
    pushed: [u64; 3],
    removed: u64,
    error: Option<vigil_core::buffer::BufferError>,
}

async fn replay_open(
    buffer: &DiskBuffer,
    signal: Option<Signal>,
    wanted: &BTreeSet<u64>,
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
        if signal.is_some_and(|s| s != record_signal)
            || (!wanted.is_empty() && !wanted.contains(&entry.id))
        {
            continue;
        }
        outcome.matched.insert(entry.id);
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
