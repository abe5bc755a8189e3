//! Points scored per second per core, and bytes of state per series, for 100K series of an
//! `ensemble` with `seasonality: [1d, 7d]` (the heaviest configuration).
//!
//! `cargo bench -p vigil-anomaly --bench score [-- --series N]` (not a timed test: it prints
//! a table). `--series` (default 100,000) is for `scripts/bench --smoke`, which only proves
//! the bench runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use vigil_anomaly::detector::{DetectorConfig, Direction, Model, SeriesState};

const SERIES: usize = 100_000;
/// Steps of 5 minutes: one day warms the series up, the rest is scored.
const INTERVAL: Duration = Duration::from_secs(300);
const WARM_STEPS: i64 = 288;
const SCORED_STEPS: i64 = 120;
const T0: i64 = 1_767_571_200_000;

fn main() {
    let mut series = SERIES;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--series" {
            series = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(series)
                .max(1);
        }
    }
    let config: DetectorConfig =
        serde_yaml::from_str("{ kind: ensemble, seasonality: [1d, 7d] }").unwrap();
    let model = Model::new(&config, Direction::Both, 0.0, INTERVAL);
    let mut states: Vec<SeriesState> = (0..series).map(|_| model.new_state()).collect();

    // A cheap, varied signal per series: a daily wave with a per-series phase and jitter.
    let noise: Vec<f64> = (0..4096u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (x as f64 / (1u64 << 24) as f64) - 0.5
        })
        .collect();
    let value = |series: usize, step: i64| {
        let phase = (series % 97) as f64 * 0.07;
        let wave = (step as f64 * std::f64::consts::TAU / 288.0 + phase).sin();
        100.0 + 30.0 * wave + 4.0 * noise[(series * 31 + step as usize) % noise.len()]
    };

    let mut run = |from: i64, steps: i64| {
        let start = Instant::now();
        let cpu_start = cpu_time();
        let mut anomalies = 0u64;
        for step in from..from + steps {
            let ts = T0 + step * INTERVAL.as_millis() as i64;
            for (i, state) in states.iter_mut().enumerate() {
                if let Some(s) = model.score(state, ts, value(i, step))
                    && s.score > 1.0
                {
                    anomalies += 1;
                }
            }
        }
        black_box(anomalies);
        let points = series as f64 * steps as f64;
        // Per core: points over the CPU time this thread got (the build machine is
        // shared); wall-clock rate alongside.
        let wall = start.elapsed().as_secs_f64();
        let cpu = match (cpu_start, cpu_time()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        (points / cpu, points / wall)
    };
    let warm_rate = run(0, WARM_STEPS);
    let scored_rate = run(WARM_STEPS, SCORED_STEPS);

    let postcard: Vec<usize> = states
        .iter()
        .take(1000)
        .map(|s| postcard::to_stdvec(s).unwrap().len())
        .collect();
    let postcard_max = postcard.iter().max().unwrap();
    let postcard_mean = postcard.iter().sum::<usize>() as f64 / postcard.len() as f64;
    let memory = states[0].memory_bytes();

    println!(
        "vigil-anomaly detector benchmark: {series} series, ensemble, seasonality [1d, 7d], one thread"
    );
    println!("| measure | value | target |");
    println!("|---|---|---|");
    println!(
        "| points/s/core while warming up (first day; wall clock {:.2} M) | {:.2} M | ≥ 1 M |",
        warm_rate.1 / 1e6,
        warm_rate.0 / 1e6
    );
    println!(
        "| points/s/core once warm (wall clock {:.2} M) | {:.2} M | ≥ 1 M |",
        scored_rate.1 / 1e6,
        scored_rate.0 / 1e6
    );
    println!(
        "| state, postcard (mean / max of 1000) | {postcard_mean:.0} / {postcard_max} B | ≤ 2048 B |"
    );
    println!("| state, in memory (size_of + heap) | {memory} B | ≤ 2048 B |");
    // For scripts/bench.
    println!(
        "bench-result series={series} warming_per_core={:.0} warm_per_core={:.0} memory_bytes={memory} postcard_mean={postcard_mean:.0} postcard_max={postcard_max}",
        warm_rate.0, scored_rate.0
    );
    println!(
        "| size_of::<SeriesState>() | {} B | |",
        std::mem::size_of::<SeriesState>()
    );
}

/// CPU time of this thread in seconds (Linux `/proc/thread-self/schedstat`), if readable.
fn cpu_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}
