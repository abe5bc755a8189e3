//! Lines per second and MiB per second from files, through the `vigil-agent` binary, to an
//! OTLP/gRPC logs receiver; and the agent's CPU and peak RSS while it works.
//!
//! `cargo bench -p vigil-agent --bench tail [-- --mib N] [--files N] [--rate-mib-s R]
//! [--seconds S] [--compression zstd|gzip|none]` (zstd, the default, as shipped)
//!
//! Not a test: it asserts nothing about speed. Two runs:
//! - **max rate**: `--mib` MiB (default 256) of 256-byte lines already on disk in
//!   `--files` files (default 1) are read from the beginning as fast as the agent can;
//!   reports MiB/s and lines/s per agent CPU-second. Target ≥ 100 MiB/s on one core.
//! - **steady**: 100 files appended at `--rate-mib-s` in total (default 10) for
//!   `--seconds` (default 10); reports the agent's peak RSS (VmHWM). Target ≤ 20 MiB.
//!
//! The receiver runs in this process and only decodes and counts; the agent is the real
//! release binary (cargo builds it for the bench), measured from /proc. Each run ends with
//! one `bench-result key=value ...` line for `scripts/bench`.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};

const LINE: usize = 256;

/// Counts the log records it receives.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let records: usize = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.fetch_add(records as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// `(cpu seconds, peak RSS bytes, current RSS bytes)` of a process, from /proc.
fn usage(pid: u32) -> (f64, u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        (ticks(11) + ticks(12)) / 100.0,
        kib("VmHWM:") * 1024,
        kib("VmRSS:") * 1024,
    )
}

/// One 256-byte line (newline included) numbered `n`.
fn line(n: u64) -> Vec<u8> {
    let mut l = format!("2024-05-01T10:00:00Z level=info n={n:012} msg=\"").into_bytes();
    l.resize(LINE - 2, b'x');
    l.extend_from_slice(b"\"\n");
    l
}

fn start_agent(
    dir: &Path,
    grpc: std::net::SocketAddr,
    files_glob: &str,
    compression: &str,
) -> Child {
    let config = dir.join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "collector:\n  endpoint: \"http://{grpc}\"\n  compression: {compression}\n  batch: {{ max_lines: 2000, max_bytes: 1MiB, max_wait: 200ms }}\n\
             state_dir: \"{}\"\nadmin: {{ listen: \"127.0.0.1:0\" }}\nhost_metrics: {{ enabled: false }}\n\
             logs:\n  - include: [\"{files_glob}\"]\n    format: raw\n    start_at: beginning\n    scan_interval: 200ms\n",
            dir.join("state").display()
        ),
    )
    .expect("write config");
    Command::new(env!("CARGO_BIN_EXE_vigil-agent"))
        .arg("--config")
        .arg(&config)
        .env("VIGIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vigil-agent")
}

fn main() {
    let mut mib = 256u64;
    let mut files = 1u64;
    let mut rate_mib_s = 10.0f64;
    let mut seconds = 10u64;
    let mut compression = "zstd".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().and_then(|v| v.parse::<f64>().ok());
        match a.as_str() {
            "--mib" => mib = value().map_or(mib, |v| v as u64),
            "--files" => files = value().map_or(files, |v| v.max(1.0) as u64),
            "--rate-mib-s" => rate_mib_s = value().unwrap_or(rate_mib_s),
            "--seconds" => seconds = value().map_or(seconds, |v| v as u64),
            "--no-compression" => compression = "none".into(),
            "--compression" => compression = args.next().unwrap_or(compression),
            _ => {}
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let sink = Sink::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let grpc = listener.local_addr().expect("addr");
        let service = LogsServiceServer::new(sink.clone())
            .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        tokio::spawn(
            // As the collector's receiver does.
            tonic::transport::Server::builder()
                .http2_adaptive_window(Some(true))
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))),
        );

        // Max rate: everything on disk first, then one agent reads it all.
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let lines = mib * (1 << 20) / LINE as u64;
        let per_file = lines / files;
        let mut n = 0;
        for f in 0..files {
            let mut out = std::io::BufWriter::new(
                std::fs::File::create(logs.join(format!("app-{f}.log"))).expect("create"),
            );
            for _ in 0..per_file {
                out.write_all(&line(n)).expect("write");
                n += 1;
            }
        }
        let total = n;
        let bytes = total * LINE as u64;
        let mut agent = start_agent(dir.path(), grpc, &format!("{}/*.log", logs.display()), &compression);
        let started = Instant::now();
        while sink.0.load(Ordering::Relaxed) < total {
            assert!(started.elapsed() < Duration::from_secs(600), "the agent stalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let wall = started.elapsed().as_secs_f64();
        let (cpu, hwm, rss) = usage(agent.id());
        let _ = agent.kill();
        let _ = agent.wait();
        let mibs = bytes as f64 / 1048576.0;
        println!("agent tail benchmark, max rate: {total} lines of {LINE} bytes ({mibs:.0} MiB) in {files} file(s), compression {compression}");
        println!("  wall {wall:.2} s: {:.1} MiB/s, {:.0} lines/s", mibs / wall, total as f64 / wall);
        println!("  agent cpu {cpu:.2} s: {:.1} MiB/s per core, {:.0} lines/s per core (target ≥ 100 MiB/s)", mibs / cpu.max(1e-9), total as f64 / cpu.max(1e-9));
        println!("  agent peak RSS {:.1} MiB", hwm as f64 / 1048576.0);
        println!("bench-result run=max lines={total} bytes={bytes} wall={wall:.4} cpu={cpu:.4} hwm={hwm} rss={rss} compression={compression}");

        // Steady: 100 files appended at a fixed total rate.
        sink.0.store(0, Ordering::Relaxed);
        let dir = tempfile::tempdir().expect("temp dir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("logs dir");
        let mut outs: Vec<std::fs::File> = (0..100)
            .map(|f| std::fs::File::create(logs.join(format!("svc-{f}.log"))).expect("create"))
            .collect();
        let mut agent = start_agent(dir.path(), grpc, &format!("{}/*.log", logs.display()), &compression);
        let tick = Duration::from_millis(100);
        let lines_per_tick = (rate_mib_s * 1048576.0 / LINE as f64 * tick.as_secs_f64()) as u64;
        let mut written = 0u64;
        let mut next = tokio::time::Instant::now();
        let end = Instant::now() + Duration::from_secs(seconds);
        while Instant::now() < end {
            for i in 0..lines_per_tick {
                let f = (written + i) as usize % outs.len();
                outs[f].write_all(&line(written + i)).expect("append");
            }
            written += lines_per_tick;
            next += tick;
            tokio::time::sleep_until(next).await;
        }
        let drained = Instant::now();
        while sink.0.load(Ordering::Relaxed) < written && drained.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (cpu, hwm, rss) = usage(agent.id());
        let _ = agent.kill();
        let _ = agent.wait();
        let delivered = sink.0.load(Ordering::Relaxed);
        println!("bench-result run=steady lines={written} delivered={delivered} bytes={} seconds={seconds} cpu={cpu:.4} hwm={hwm} rss={rss} compression={compression}", written * LINE as u64);
        println!("agent tail benchmark, steady: 100 files at {rate_mib_s} MiB/s for {seconds} s ({written} lines, {} delivered)", sink.0.load(Ordering::Relaxed));
        println!("  agent cpu {cpu:.2} s ({:.0}% of a core); peak RSS {:.1} MiB (target ≤ 20 MiB)", cpu / seconds as f64 * 100.0, hwm as f64 / 1048576.0);
    });
}
