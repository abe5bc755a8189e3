//! The labelled corpus under `anomaly/testdata/`: one series per shape observability data
//! has, with its anomaly windows. Deterministic (a fixed seed per shape, our own PRNG), so
//! `cargo run --example gen_corpus` regenerates the committed files byte for byte.
//!
//! Every series: 5-minute steps over 14 days from Monday 2026-01-05 00:00 UTC, timestamps in
//! seconds. A window runs from an anomaly's onset to its end plus 30 minutes (2 hours for a
//! permanent change, 12 hours for a slope change).

use std::f64::consts::PI;
use std::fmt::Write;

pub const START: i64 = 1_767_571_200;
pub const STEP: i64 = 300;
pub const DAYS: i64 = 14;
const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// One generated shape: how to run the detector on it, and its two files' contents.
pub struct Shape {
    pub name: &'static str,
    pub what: &'static str,
    /// `--seasonality` an operator would configure for it.
    pub seasonality: &'static str,
    /// `--direction`.
    pub direction: &'static str,
    pub csv: String,
    pub labels: String,
}

/// splitmix64: small, fast, good enough for test data, identical everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }

    /// Poisson by multiplication (fine for small means).
    fn poisson(&mut self, mean: f64) -> f64 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0.0, self.uniform());
        while p > limit {
            k += 1.0;
            p *= self.uniform();
        }
        k
    }
}

/// Seconds since the start of the series.
fn times() -> impl Iterator<Item = i64> {
    (0..DAYS * DAY / STEP).map(|i| i * STEP)
}

/// 0 at 04:00, 1 at 16:00, smooth.
fn daily(t: i64) -> f64 {
    let h = (t % DAY) as f64 / HOUR as f64;
    0.5 - 0.5 * (2.0 * PI * (h - 4.0) / 24.0).cos()
}

fn weekend(t: i64) -> bool {
    (t / DAY) % 7 >= 5
}

fn at(days: f64) -> i64 {
    ((days * DAY as f64) as i64 / STEP) * STEP
}

fn within(t: i64, start: i64, len: i64) -> bool {
    t >= start && t < start + len
}

struct Builder {
    csv: String,
    windows: Vec<(i64, i64)>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            csv: String::from("timestamp,value\n"),
            windows: Vec::new(),
        }
    }

    fn point(&mut self, t: i64, value: f64, decimals: usize) {
        let _ = writeln!(self.csv, "{},{value:.decimals$}", START + t);
    }

    /// An anomaly from `start` lasting `len`, labelled with `slack` after it.
    fn window(&mut self, start: i64, len: i64, slack: i64) {
        self.windows
            .push((START + start, START + start + len + slack));
    }

    fn finish(
        mut self,
        name: &'static str,
        what: &'static str,
        seasonality: &'static str,
        direction: &'static str,
    ) -> Shape {
        self.windows.sort();
        let mut labels = String::from("[");
        for (i, (s, e)) in self.windows.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(labels, "{sep}\n  {{\"start\": {s}, \"end\": {e}}}");
        }
        labels.push_str(if self.windows.is_empty() {
            "]\n"
        } else {
            "\n]\n"
        });
        Shape {
            name,
            what,
            seasonality,
            direction,
            csv: self.csv,
            labels,
        }
    }
}

/// Web traffic: daily curve, quieter weekends.
fn traffic(t: i64) -> f64 {
    let week = if weekend(t) { 0.6 } else { 1.0 };
    200.0 * (0.3 + 0.7 * daily(t)) * week
}

fn seasonal_spikes() -> Shape {
    let mut rng = Rng(1);
    let mut b = Builder::new();
    let spikes = [
        (4.3, 1, 90.0),
        (6.6, 2, 70.0),
        (9.45, 3, 120.0),
        (12.2, 1, 60.0),
    ];
    for (d, n, _) in spikes {
        b.window(at(d), n * STEP, 30 * MINUTE);
    }
    for t in times() {
        let mut v = traffic(t) + 6.0 * rng.normal();
        for (d, n, size) in spikes {
            if within(t, at(d), n * STEP) {
                v += size;
            }
        }
        b.point(t, v, 3);
    }
    b.finish(
        "seasonal_spikes",
        "daily + weekly traffic, short spikes",
        "1d,7d",
        "both",
    )
}

fn seasonal_dips() -> Shape {
    let mut rng = Rng(2);
    let mut b = Builder::new();
    let dips = [(5.6, 40 * MINUTE), (8.45, 30 * MINUTE), (11.7, 60 * MINUTE)];
    for (d, len) in dips {
        b.window(at(d), len, 30 * MINUTE);
    }
    for t in times() {
        let mut v = traffic(t);
        if dips.iter().any(|&(d, len)| within(t, at(d), len)) {
            v *= 0.45;
        }
        b.point(t, v + 6.0 * rng.normal(), 3);
    }
    b.finish(
        "seasonal_dips",
        "daily + weekly traffic, drops to 45% for 30-60 min",
        "1d,7d",
        "both",
    )
}

fn level_shift() -> Shape {
    let mut rng = Rng(3);
    let mut b = Builder::new();
    b.window(at(6.5), 0, 2 * HOUR);
    b.window(at(10.2), 0, 2 * HOUR);
    for t in times() {
        let mut v = 50.0 + 10.0 * daily(t) + 2.0 * rng.normal();
        if t >= at(6.5) {
            v += 15.0;
        }
        if t >= at(10.2) {
            v -= 25.0;
        }
        b.point(t, v, 3);
    }
    b.finish(
        "level_shift",
        "daily curve, permanent shifts up then down",
        "1d",
        "both",
    )
}

fn trend_change() -> Shape {
    let mut rng = Rng(4);
    let mut b = Builder::new();
    b.window(at(8.0), 0, 12 * HOUR);
    let mut v = 40.0;
    for t in times() {
        let slope_per_day = if within(t, at(8.0), DAY) { 8.0 } else { 0.5 };
        v += slope_per_day * STEP as f64 / DAY as f64;
        b.point(t, v + 0.05 * rng.normal(), 3);
    }
    b.finish(
        "trend_change",
        "disk usage growing; the slope jumps 16x for a day",
        "none",
        "both",
    )
}

fn variance_change() -> Shape {
    let mut rng = Rng(5);
    let mut b = Builder::new();
    let noisy = [(7.3, 6 * HOUR), (11.0, 3 * HOUR)];
    for (d, len) in noisy {
        b.window(at(d), len, 30 * MINUTE);
    }
    for t in times() {
        let sigma = if noisy.iter().any(|&(d, len)| within(t, at(d), len)) {
            10.0
        } else {
            2.0
        };
        b.point(t, 100.0 + 20.0 * daily(t) + sigma * rng.normal(), 3);
    }
    b.finish(
        "variance_change",
        "daily curve, noise 5x for 6h and 3h",
        "1d",
        "both",
    )
}

fn stuck() -> Shape {
    let mut rng = Rng(6);
    let mut b = Builder::new();
    b.window(at(6.2), 3 * HOUR, 30 * MINUTE);
    b.window(at(10.4), HOUR, 30 * MINUTE);
    let mut last = 0.0;
    for t in times() {
        let mut v = 40.0 + 15.0 * daily(t) + 3.0 * rng.normal();
        if within(t, at(6.2), 3 * HOUR) {
            v = last; // the exporter hangs: the last value repeats
        }
        if within(t, at(10.4), HOUR) {
            v = 0.0;
        }
        last = v;
        b.point(t, v, 3);
    }
    b.finish(
        "stuck",
        "noisy gauge stuck at its last value for 3h, at zero for 1h",
        "1d",
        "both",
    )
}

fn constant_then_change() -> Shape {
    let mut b = Builder::new();
    b.window(at(7.5), 0, HOUR);
    b.window(at(7.5) + 4 * HOUR, 0, HOUR);
    b.window(at(11.0), 0, 2 * HOUR);
    for t in times() {
        let v = if within(t, at(7.5), 4 * HOUR) {
            2.0
        } else if t >= at(11.0) {
            4.0
        } else {
            3.0
        };
        b.point(t, v, 0);
    }
    b.finish(
        "constant_then_change",
        "replicas: flat 3, 2 for 4h, then 4 for good",
        "none",
        "both",
    )
}

fn counter_resets() -> Shape {
    let mut rng = Rng(8);
    let mut b = Builder::new();
    b.window(at(8.4), 30 * MINUTE, 30 * MINUTE);
    let resets = [at(3.3), at(7.1), at(9.9)];
    let mut total = 1_000.0;
    for t in times() {
        let mut rate = 300.0 * (0.5 + daily(t));
        if within(t, at(8.4), 30 * MINUTE) {
            rate *= 5.0;
        }
        if resets.contains(&t) {
            total = 0.0;
        }
        total += rate + rate.sqrt() * rng.normal();
        b.point(t, total.round(), 0);
    }
    b.finish(
        "counter_resets",
        "request counter with three resets and one 5x burst",
        "none",
        "both",
    )
}

fn gaps() -> Shape {
    let mut rng = Rng(9);
    let mut b = Builder::new();
    let missing = [(3.5, 2 * HOUR), (6.0, 12 * HOUR), (9.2, DAY)];
    b.window(at(12.3), STEP, 30 * MINUTE);
    for t in times() {
        let v = traffic(t) + 6.0 * rng.normal();
        if missing.iter().any(|&(d, len)| within(t, at(d), len)) {
            continue;
        }
        let v = if within(t, at(12.3), STEP) {
            v + 80.0
        } else {
            v
        };
        b.point(t, v, 3);
    }
    b.finish(
        "gaps",
        "traffic with 2h, 12h and 1d without data; one spike",
        "1d,7d",
        "both",
    )
}

fn low_volume() -> Shape {
    let mut rng = Rng(10);
    let mut b = Builder::new();
    let bursts = [(7.7, 20 * MINUTE, 6.0), (11.2, 30 * MINUTE, 4.0)];
    for (d, len, _) in bursts {
        b.window(at(d), len, 30 * MINUTE);
    }
    for t in times() {
        let mean = bursts
            .iter()
            .find(|&&(d, len, _)| within(t, at(d), len))
            .map_or(0.3, |&(_, _, m)| m);
        b.point(t, rng.poisson(mean), 0);
    }
    b.finish(
        "low_volume",
        "error counts, Poisson(0.3) per step, two bursts",
        "none",
        "above",
    )
}

fn weekly_pattern() -> Shape {
    let mut rng = Rng(11);
    let mut b = Builder::new();
    // Saturday of week two busy like a weekday; Wednesday of week two as quiet as Sunday.
    let busy_saturday = (at(12.0) + 10 * HOUR, 4 * HOUR);
    let quiet_wednesday = (at(9.0) + 13 * HOUR, HOUR);
    b.window(busy_saturday.0, busy_saturday.1, 30 * MINUTE);
    b.window(quiet_wednesday.0, quiet_wednesday.1, 30 * MINUTE);
    for t in times() {
        let office = 20.0 + 180.0 * daily(t);
        let mut v = if weekend(t) {
            20.0 + 25.0 * daily(t)
        } else {
            office
        };
        if within(t, busy_saturday.0, busy_saturday.1) {
            v = office;
        }
        if within(t, quiet_wednesday.0, quiet_wednesday.1) {
            v = 20.0 + 25.0 * daily(t);
        }
        b.point(t, v + 4.0 * rng.normal(), 3);
    }
    b.finish(
        "weekly_pattern",
        "office-hours traffic, a busy Saturday and a quiet Wednesday",
        "1d,7d",
        "both",
    )
}

fn heavy_tailed_noise() -> Shape {
    let mut rng = Rng(12);
    let mut b = Builder::new();
    for t in times() {
        // Student-t with 5 degrees of freedom: normal over sqrt(chi²₅ / 5).
        let chi2: f64 = (0..5).map(|_| rng.normal().powi(2)).sum();
        let noise = rng.normal() / (chi2 / 5.0).sqrt();
        b.point(t, traffic(t) + 6.0 * noise, 3);
    }
    b.finish(
        "heavy_tailed_noise",
        "traffic with Student-t noise, no anomaly",
        "1d,7d",
        "both",
    )
}

/// Every shape of the corpus.
pub fn generate() -> Vec<Shape> {
    vec![
        seasonal_spikes(),
        seasonal_dips(),
        level_shift(),
        trend_change(),
        variance_change(),
        stuck(),
        constant_then_change(),
        counter_resets(),
        gaps(),
        low_volume(),
        weekly_pattern(),
        heavy_tailed_noise(),
    ]
}

/// `corpus.json`: each shape's name, description and the detector settings to run it with.
pub fn manifest(shapes: &[Shape]) -> String {
    let mut out = String::from("[");
    for (i, s) in shapes.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            "{sep}\n  {{\"name\": \"{}\", \"what\": \"{}\", \"seasonality\": \"{}\", \"direction\": \"{}\"}}",
            s.name, s.what, s.seasonality, s.direction
        );
    }
    out.push_str("\n]\n");
    out
}
