//! Samples per CPU second through the agent's scrape path without HTTP: parse a
//! node_exporter-sized body, relabel, track staleness and encode OTLP, as one target's
//! scrape does.
//!
//! `cargo bench -p vigil-agent --bench scrape [-- --scrapes N]` (default 2,000)
//!
//! Not a test: it asserts nothing about speed. The body is the one `scripts/bench` serves
//! in its scrape scenario (~1,000 series in node_exporter's families, integer values that
//! change every scrape), so callgrind over this bench shows where the agent's share of
//! that scenario goes:
//! `valgrind --tool=callgrind target/release/deps/scrape-* --scrapes 200`.
//! Ends with one `bench-result key=value ...` line.

use std::fmt::Write;
use std::time::Instant;

use vigil_agent::scrape::{ScrapeConfig, Scraper, StaticTarget};

/// Appends the line prefixes (all but the value) of one family's samples; its HELP/TYPE
/// header rides on the first.
fn family(prefixes: &mut Vec<String>, name: &str, kind: &str, label_sets: Vec<String>) {
    let header = format!(
        "# HELP {name} {}.\n# TYPE {name} {kind}\n",
        name.replace('_', " ")
    );
    for (j, ls) in label_sets.iter().enumerate() {
        let header = if j == 0 { header.as_str() } else { "" };
        prefixes.push(match ls.is_empty() {
            true => format!("{header}{name} "),
            false => format!("{header}{name}{{{ls}}} "),
        });
    }
}

/// The sample line prefixes of `scripts/bench`'s targets, in its order.
fn prefixes() -> Vec<String> {
    let mut prefixes = Vec::new();
    let modes = [
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user",
    ];
    let cpus = || (0..32).map(|c| format!("cpu=\"{c}\""));
    family(
        &mut prefixes,
        "node_cpu_seconds_total",
        "counter",
        cpus()
            .flat_map(|c| modes.iter().map(move |m| format!("{c},mode=\"{m}\"")))
            .collect(),
    );
    let devices: Vec<String> = (0..8)
        .map(|i| format!("eth{i}"))
        .chain((0..24).map(|i| format!("veth{i:04x}")))
        .collect();
    for n in [
        "receive_bytes",
        "transmit_bytes",
        "receive_packets",
        "transmit_packets",
        "receive_errs",
        "transmit_errs",
        "receive_drop",
        "transmit_drop",
    ] {
        let sets = devices.iter().map(|d| format!("device=\"{d}\"")).collect();
        family(
            &mut prefixes,
            &format!("node_network_{n}_total"),
            "counter",
            sets,
        );
    }
    let disks: Vec<String> = (0..4)
        .map(|i| format!("nvme{i}n1"))
        .chain((0..12).map(|i| format!("dm-{i}")))
        .collect();
    for n in [
        "reads_completed",
        "writes_completed",
        "read_bytes",
        "written_bytes",
        "io_time_seconds",
        "read_time_seconds",
        "write_time_seconds",
    ] {
        let sets = disks.iter().map(|d| format!("device=\"{d}\"")).collect();
        family(
            &mut prefixes,
            &format!("node_disk_{n}_total"),
            "counter",
            sets,
        );
    }
    for n in [
        "size_bytes",
        "free_bytes",
        "avail_bytes",
        "files",
        "files_free",
    ] {
        let sets = (0..20)
            .map(|i| {
                let disk = char::from(b'a' + (i % 4) as u8);
                format!(
                    "device=\"/dev/sd{disk}\",fstype=\"ext4\",mountpoint=\"/var/lib/kubelet/pods/{i:03}/volume\""
                )
            })
            .collect();
        family(
            &mut prefixes,
            &format!("node_filesystem_{n}"),
            "gauge",
            sets,
        );
    }
    for m in [
        "MemTotal",
        "MemFree",
        "MemAvailable",
        "Buffers",
        "Cached",
        "SwapTotal",
        "SwapFree",
        "Active",
        "Inactive",
        "Dirty",
        "Writeback",
        "Slab",
        "Mapped",
        "Shmem",
        "PageTables",
        "Committed_AS",
        "HugePages_Total",
        "HugePages_Free",
        "KernelStack",
        "Percpu",
    ] {
        family(
            &mut prefixes,
            &format!("node_memory_{m}_bytes"),
            "gauge",
            vec![String::new()],
        );
    }
    family(&mut prefixes, "node_load1", "gauge", vec![String::new()]);
    family(
        &mut prefixes,
        "node_schedstat_running_seconds_total",
        "counter",
        cpus().collect(),
    );
    // Pad to 1,000 with per-CPU interrupt counters.
    let remaining = 1000 - prefixes.len();
    family(
        &mut prefixes,
        "node_interrupts_total",
        "counter",
        (0..remaining)
            .map(|i| {
                format!(
                    "cpu=\"{}\",devices=\"\",info=\"irq{}\",type=\"{}\"",
                    i % 32,
                    i / 32,
                    i / 32
                )
            })
            .collect(),
    );
    prefixes
}

/// The body of scrape `k`: every value changes from one scrape to the next.
fn body(prefixes: &[String], k: usize) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for (i, p) in prefixes.iter().enumerate() {
        let _ = writeln!(out, "{p}{}", k * (i % 13 + 1) + i);
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scrapes = args
        .iter()
        .position(|a| a == "--scrapes")
        .and_then(|i| args.get(i + 1)?.parse::<usize>().ok())
        .unwrap_or(2_000);
    let prefixes = prefixes();
    let series = prefixes.len();
    let config = ScrapeConfig {
        static_targets: vec![StaticTarget {
            url: "http://127.0.0.1:9100/metrics".into(),
            labels: [("job".to_owned(), "node".to_owned())].into(),
        }],
        ..ScrapeConfig::default()
    };
    let mut scraper = Scraper::new(&config).expect("the bench's scrape config is valid");
    // Bodies are made ahead of time: only the scrape path is measured.
    let bodies: Vec<String> = (0..8).map(|k| body(&prefixes, k + 1)).collect();
    let body_bytes = bodies[0].len();
    // One scrape first, so that every series is known, as in a steady state.
    let _ = scraper.record_body(bodies[0].clone());
    let (mut otlp_bytes, mut cpu) = (0usize, 0.0);
    let wall = Instant::now();
    for k in 0..scrapes {
        let body = bodies[k % bodies.len()].clone();
        let started = vigil_core::testing::cpu_seconds();
        let encoded = scraper
            .record_body(body)
            .expect("the bench's config has one target");
        cpu += vigil_core::testing::cpu_seconds() - started;
        otlp_bytes += encoded.iter().map(Vec::len).sum::<usize>();
    }
    let wall = wall.elapsed().as_secs_f64();
    let samples = scrapes * series;
    let per_core = samples as f64 / cpu;
    println!(
        "{scrapes} scrapes of {series} series ({body_bytes} bytes of text each): \
         {:.2} M samples/s per core, {:.0} ns per sample, {:.0} OTLP bytes per sample",
        per_core / 1e6,
        cpu * 1e9 / samples as f64,
        otlp_bytes as f64 / samples as f64
    );
    println!(
        "bench-result scrapes={scrapes} series={series} body_bytes={body_bytes} \
         cpu_s={cpu:.4} wall_s={wall:.4} samples_per_core={per_core:.0} otlp_bytes={otlp_bytes}"
    );
}
