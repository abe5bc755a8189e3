//! `buffer verify` (read-only; may run next to a collector) and `buffer repair` (takes
//! the buffer's lock, so the collector must be stopped).

use std::process::ExitCode;

use vigil_core::Signal;
use vigil_core::buffer::Buffer;
use vigil_core::buffer::disk::{self, DiskBuffer, FsyncPolicy, VerifyReport};

use super::{BufferLocation, DAMAGED, USAGE};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BufferCommand {
    /// Check the disk buffer without changing anything: segments, records pending, bytes,
    /// and every damaged place. Exit 0 clean, 1 damaged, 2 usage.
    Verify(BufferLocation),
    /// Cut damaged frames and torn tails, record lost records, rewrite unreadable cursors
    /// (re-deliver rather than skip), remove finished segments. The collector must be
    /// stopped.
    Repair(BufferLocation),
}

pub fn main(command: BufferCommand) -> ExitCode {
    vigil_core::process::init_logging(vigil_core::process::LogFormat::Text);
    match command {
        BufferCommand::Verify(at) => verify(&at),
        BufferCommand::Repair(at) => repair(&at),
    }
}

fn verify(at: &BufferLocation) -> ExitCode {
    let located = match at.locate("buffer verify") {
        Ok(located) => located,
        Err(code) => return code,
    };
    let report = match disk::verify(&located.options.path) {
        Ok(report) => report,
        Err(e) => return io_failure(&e),
    };
    print_report(&report);
    if report.damaged() {
        println!(
            "result: DAMAGED; stop the collector and run `vigil-collector buffer repair` (the collector also repairs at start)"
        );
        ExitCode::from(DAMAGED)
    } else {
        println!("result: clean");
        ExitCode::SUCCESS
    }
}

fn io_failure(e: &std::io::Error) -> ExitCode {
    eprintln!("{e}");
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput => ExitCode::from(USAGE),
        _ => ExitCode::from(DAMAGED),
    }
}

pub(crate) fn print_report(report: &VerifyReport) {
    println!("disk buffer {}", report.root.display());
    if report.live {
        println!(
            "note: a collector has this buffer open (its LOCK is held): it may change while being read; what follows is a moment's view"
        );
    }
    for queue in &report.queues {
        let cursor = queue
            .cursor
            .map_or_else(|| "-".to_string(), |c| c.to_string());
        println!(
            "{:<12} segments {:>4}  records {:>8}  pending {:>8}  bytes {:>12}  cursor {cursor}",
            queue.name, queue.segments, queue.records, queue.pending, queue.bytes
        );
        for problem in &queue.problems {
            println!("  {problem}");
        }
    }
}

fn repair(at: &BufferLocation) -> ExitCode {
    let located = match at.locate("buffer repair") {
        Ok(located) => located,
        Err(code) => return code,
    };
    let mut options = located.options;
    let root = options.path.clone();
    let before = match disk::verify(&root) {
        Ok(report) => report,
        Err(e) => return io_failure(&e),
    };
    if before.live {
        return refuse_live(&root);
    }
    println!("before:");
    print_report(&before);
    options.fsync = FsyncPolicy::Always;
    let runtime = match super::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let done = runtime.block_on(async {
        let buffer = DiskBuffer::open(options).await?;
        let recovered = buffer.recovery();
        let settled = buffer.settle().await;
        buffer.close().await?;
        Ok::<_, vigil_core::buffer::BufferError>((recovered, settled?))
    });
    let (recovered, settled) = match done {
        Ok(done) => done,
        Err(e) if super::is_locked(&e) => return refuse_live(&root),
        Err(e) => {
            eprintln!("repair failed: {e}");
            return ExitCode::from(DAMAGED);
        }
    };

    println!("repair:");
    println!(
        "  cut {} damaged place(s), {} byte(s)",
        recovered.corrupt_records, recovered.truncated_bytes
    );
    let tails: Vec<_> = before
        .queues
        .iter()
        .flat_map(|q| &q.problems)
        .filter(|p| p.kind.is_damage() && p.cut_bytes > 0 && p.lost_records.is_none())
        .collect();
    for signal in Signal::ALL {
        let lost = settled.lost_records[signal.index()];
        if lost > 0 {
            println!(
                "  {}: {lost} record(s) lost to damage (cut, or in a missing segment), recorded as such",
                signal.as_str()
            );
        }
    }
    if !tails.is_empty() {
        println!(
            "  {} cut tail(s) of a newest segment: the records from the damage on are gone and their number cannot be told (a torn tail is a write that never completed, never acknowledged to a client; damage below the cursor was acked already)",
            tails.len()
        );
    }
    if recovered.cursors_reset > 0 {
        println!(
            "  {} unreadable cursor file(s) rewritten at the oldest record: records already delivered may be delivered again (at-least-once: re-deliver rather than skip)",
            recovered.cursors_reset
        );
    }
    println!(
        "  removed {} segment file(s) (empty, fully acked, or emptied by a cut); wrote {} cursor file(s)",
        recovered.segments_removed + settled.segments_removed,
        settled.cursors_written
    );
    println!(
        "  pending: metrics {}, logs {}, traces {}; dead letters kept: {}",
        recovered.pending[0], recovered.pending[1], recovered.pending[2], recovered.dead_letters
    );

    let after = match disk::verify(&root) {
        Ok(report) => report,
        Err(e) => return io_failure(&e),
    };
    println!("after:");
    print_report(&after);
    if after.damaged() {
        println!("result: still DAMAGED (see above)");
        ExitCode::from(DAMAGED)
    } else {
        println!("result: clean");
        ExitCode::SUCCESS
    }
}

pub(crate) fn refuse_live(root: &std::path::Path) -> ExitCode {
    eprintln!(
        "{}: a collector has this disk buffer open (its LOCK is held); stop it first: this command writes to the buffer",
        root.display()
    );
    ExitCode::from(DAMAGED)
}
