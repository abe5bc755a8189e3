//! Each binary asks glibc for one malloc arena (`vigil_core::process::MALLOC_ARENAS`)
//! unless the operator set `MALLOC_ARENA_MAX`. Seen from outside, in `/proc/<pid>/maps`:
//! every arena but the main one is a heap glibc maps at a 64 MiB boundary and reserves 64
//! MiB for (its used part readable and writable, the rest `---p`).
//!
//! Each also runs a `malloc-trim` thread that gives free heap pages back to the kernel
//! (`vigil_core::process::trim_malloc_periodically`) unless `VIGIL_MALLOC_TRIM_SECONDS=0`.

use std::time::Duration;

use vigil_e2e::process::VigilProcess;
use vigil_e2e::{free_port, http_client};

/// glibc's `HEAP_MAX_SIZE` on 64-bit: twice the largest mmap threshold (32 MiB).
const HEAP_MAX_SIZE: u64 = 64 << 20;

/// Thread arenas of process `pid`: readable and writable anonymous mappings that start on a
/// 64 MiB boundary, with the rest of their 64 MiB reserved right after them.
fn thread_arenas(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let mappings: Vec<(u64, u64, &str, bool)> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (start, end) = fields.next()?.split_once('-')?;
            let perms = fields.next()?;
            let anonymous = fields.nth(3).is_none();
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
                perms,
                anonymous,
            ))
        })
        .collect();
    mappings
        .iter()
        .enumerate()
        .filter(|(i, (start, end, perms, anonymous))| {
            let reserved_to = mappings
                .get(i + 1)
                .filter(|(next, _, p, _)| next == end && p.starts_with("---"))
                .map_or(*end, |(_, next_end, _, _)| *next_end);
            *anonymous
                && perms.starts_with("rw")
                && start % HEAP_MAX_SIZE == 0
                && reserved_to - start == HEAP_MAX_SIZE
        })
        .count()
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read tasks");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// What a collector started with `env` shows once its threads served a few requests.
struct Seen {
    arenas: usize,
    threads: Vec<String>,
}

/// Starts the collector with `env`, has its threads serve a few requests, and counts its
/// thread arenas.
async fn a_collector(env: &[(&str, &str)]) -> Seen {
    let dir = tempfile::tempdir().unwrap();
    let (admin, http) = (free_port(), free_port());
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  otlp:\n    grpc: {{ listen: \"127.0.0.1:0\" }}\n    http: {{ listen: \"127.0.0.1:{http}\" }}\n\
             admin: {{ listen: \"127.0.0.1:{admin}\" }}\n\
             buffer: {{ kind: disk, disk: {{ path: \"{}\" }} }}\n\
             exporters:\n  tempo: {{ endpoint: \"http://127.0.0.1:1\" }}\n",
            dir.path().join("buffer").display()
        ),
    )
    .unwrap();
    let env: Vec<(&str, &str)> = [("VIGIL_LOG", "warn")]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let collector = VigilProcess::start_with(
        "vigil-collector",
        &config,
        admin,
        &env,
        std::process::Stdio::inherit(),
    )
    .await;
    let client = http_client();
    let requests = (0..32).map(|_| {
        let client = client.clone();
        async move {
            let _ = client
                .get(format!("http://127.0.0.1:{admin}/metrics"))
                .send()
                .await;
            let _ = client
                .post(format!("http://127.0.0.1:{http}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .body(Vec::new())
                .send()
                .await;
        }
    });
    futures_util::future::join_all(requests).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Seen {
        arenas: thread_arenas(collector.id()),
        threads: thread_names(collector.id()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_keeps_to_one_malloc_arena_unless_told_otherwise() {
    assert_eq!(
        a_collector(&[]).await.arenas,
        0,
        "the collector should allocate from glibc's main arena only"
    );
    // The operator's choice wins, and the count above is not zero for want of looking.
    assert!(
        a_collector(&[("MALLOC_ARENA_MAX", "8")]).await.arenas > 0,
        "with MALLOC_ARENA_MAX=8 the collector's threads should get arenas of their own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_gives_freed_memory_back_unless_told_not_to() {
    let trimmer = |seen: &Seen| seen.threads.iter().any(|t| t == "malloc-trim");
    let default = a_collector(&[]).await;
    assert!(
        trimmer(&default),
        "the collector should run a malloc-trim thread: {:?}",
        default.threads
    );
    let off = a_collector(&[("VIGIL_MALLOC_TRIM_SECONDS", "0")]).await;
    assert!(
        !trimmer(&off) && off.threads.len() > 1,
        "VIGIL_MALLOC_TRIM_SECONDS=0 should leave the trim thread out: {:?}",
        off.threads
    );
}
