//! `kind: likelihood`: the recent window of residuals against the residuals' own history.
//!
//! Each residual from the seasonal baseline is standardised (`z = r / σ`, clipped to ±6 so
//! one spike cannot own the window) and kept in a ring of `window` points. Two window
//! statistics are compared with their own long-run mean and spread (exponential, clipped
//! updates, `history_half_life`), which absorbs autocorrelation the baseline leaves:
//! - bias, the mean of `z`: a sustained small shift or a slope change the baseline lags;
//! - dispersion, the mean of `|z|`: the variance rose.
//!
//! Each scores `(statistic − mean) / (band × spread)`, weighted by how much the current
//! point carries it (its `z` on the bias side up to 1; `|z| / 2` up to 1) so an alert ends
//! with the anomaly rather than a window later. A third signal catches a stuck
//! value: a run of exactly repeated values longer than three times the longest run the
//! series has shown (at least 4 points), once the series has changed at least once.

use serde::{Deserialize, Serialize};

use super::baseline::{BaselineState, Prediction, SeasonalBaseline, decay_alpha};
use super::config::LikelihoodConfig;
use super::{Detector, Direction, Score};

const Z_CLIP: f64 = 6.0;
/// Mean |z| of a standard normal.
const NORMAL_ABS_MEAN: f64 = 0.797_885;
/// Standard deviation of |z| of a standard normal.
const NORMAL_ABS_SD: f64 = 0.602_810;
const STUCK_FACTOR: f64 = 3.0;
const STUCK_MIN_RUN: f64 = 4.0;

#[derive(Debug, Clone)]
pub struct Likelihood {
    pub(super) baseline: SeasonalBaseline,
    window: usize,
    history: f64,
    band: f64,
    direction: Direction,
    min_deviation: f64,
}

/// The residual window and its statistics' history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    z: Vec<f32>,
    next: u8,
    filled: u8,
    bias_mean: f32,
    bias_spread: f32,
    spread_mean: f32,
    spread_spread: f32,
    repeats: u32,
    longest_repeats: f32,
    changed: bool,
}

impl WindowState {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.z.capacity() * std::mem::size_of::<f32>()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodState {
    pub(super) baseline: BaselineState,
    pub(super) window: WindowState,
}

impl Likelihood {
    pub fn new(
        c: &LikelihoodConfig,
        direction: Direction,
        min_deviation: f64,
        interval: std::time::Duration,
    ) -> Likelihood {
        let baseline = SeasonalBaseline::new(
            &c.seasonality,
            c.half_life,
            super::config::RobustConfig::default().band,
            c.adapt_after,
            interval,
        );
        Likelihood::with_baseline(c, baseline, direction, min_deviation)
    }

    pub(super) fn with_baseline(
        c: &LikelihoodConfig,
        baseline: SeasonalBaseline,
        direction: Direction,
        min_deviation: f64,
    ) -> Likelihood {
        Likelihood {
            history: decay_alpha(baseline.interval_ms(), c.history_half_life),
            baseline,
            window: c.window.clamp(2, 64),
            band: super::baseline::usable_band(c.band),
            direction,
            min_deviation,
        }
    }

    /// Points learned before the first score: the baseline's, and a full window.
    pub fn warm_up(&self) -> u32 {
        self.baseline.warm_up().max(self.window as u32)
    }

    pub(super) fn new_window(&self) -> WindowState {
        let k = self.window as f32;
        WindowState {
            z: vec![0.0; self.window],
            bias_spread: 1.0 / k.sqrt(),
            spread_mean: NORMAL_ABS_MEAN as f32,
            spread_spread: NORMAL_ABS_SD as f32 / k.sqrt(),
            ..WindowState::default()
        }
    }

    /// Scores the window ending with this prediction, then learns from it. The band is
    /// where this point's value would put the bias exactly at the edge.
    pub(super) fn judge(&self, w: &mut WindowState, p: &Prediction) -> Score {
        if w.z.len() != self.window {
            *w = self.new_window();
        }
        let k = self.window as f64;
        let residual = p.x - p.expected;
        let deviation = (residual * p.per).abs();
        let z = (residual / p.sigma).clamp(-Z_CLIP, Z_CLIP);
        w.z[w.next as usize] = z as f32;
        w.next = ((w.next as usize + 1) % self.window) as u8;
        w.filled = w.filled.saturating_add(1).min(self.window as u8);
        let (mut sum, mut sum_abs) = (0.0f64, 0.0f64);
        for &v in &w.z {
            sum += f64::from(v);
            sum_abs += f64::from(v).abs();
        }
        let bias = sum / k;
        let spread = sum_abs / k;

        let bias_mean = f64::from(w.bias_mean);
        let bias_spread = f64::from(w.bias_spread).max(0.5 / k.sqrt());
        let spread_mean = f64::from(w.spread_mean);
        let spread_spread = f64::from(w.spread_spread).max(0.3 / k.sqrt());
        let full = usize::from(w.filled) == self.window;

        // A window signal counts while the current point carries it, so the alert ends with
        // the anomaly instead of a window later.
        let carries_bias = (z * (bias - bias_mean).signum()).clamp(0.0, 1.0);
        let carries_spread = (z.abs() / 2.0).clamp(0.0, 1.0);
        let mut bias_score = carries_bias * (bias - bias_mean) / (self.band * bias_spread);
        bias_score = match self.direction {
            Direction::Both => bias_score.abs(),
            Direction::Above => bias_score.max(0.0),
            Direction::Below => (-bias_score).max(0.0),
        };
        bias_score = cap_small(bias_score, deviation, self.min_deviation);
        let counts_side = match self.direction {
            Direction::Both => true,
            Direction::Above => residual > 0.0,
            Direction::Below => residual < 0.0,
        };
        let mut spread_score = if counts_side {
            carries_spread * ((spread - spread_mean) / (self.band * spread_spread)).max(0.0)
        } else {
            0.0
        };
        spread_score = cap_small(spread_score, deviation, self.min_deviation);

        // Stuck: judged before this run is learned as normal.
        let ended_run = (!p.repeated).then_some(w.repeats);
        w.repeats = if p.repeated { w.repeats + 1 } else { 0 };
        let stuck_score = if self.direction == Direction::Both && w.changed {
            f64::from(w.repeats) / (STUCK_FACTOR * f64::from(w.longest_repeats).max(STUCK_MIN_RUN))
        } else {
            0.0
        };

        let score = if full {
            bias_score.max(spread_score).max(stuck_score)
        } else {
            stuck_score
        };

        // Band for this point: the value at which the bias reaches the edge.
        let others = sum - z;
        let at = |edge: f64| p.expected + p.sigma * (k * edge - others);
        let min_deviation = self.min_deviation / p.per;
        let lower = at(bias_mean - self.band * bias_spread).min(p.expected - min_deviation);
        let upper = at(bias_mean + self.band * bias_spread).max(p.expected + min_deviation);

        // Learn the statistics' history (clipped: an anomaly does not become normal fast).
        if full {
            let a = self.history;
            let d = (bias - bias_mean).clamp(-3.0 * bias_spread, 3.0 * bias_spread);
            w.bias_mean += (a * d) as f32;
            w.bias_spread += (a * (super::MAD_TO_SIGMA * d.abs() - bias_spread)) as f32;
            let d = (spread - spread_mean).clamp(-3.0 * spread_spread, 3.0 * spread_spread);
            w.spread_mean += (a * d) as f32;
            w.spread_spread += (a * (super::MAD_TO_SIGMA * d.abs() - spread_spread)) as f32;
        }
        if p.reanchored {
            // The residuals so far were against a level the data has left.
            w.z.iter_mut().for_each(|z| *z = 0.0);
        }
        if let Some(run) = ended_run {
            w.changed = true;
            w.longest_repeats = w.longest_repeats.max(run as f32);
        }
        w.longest_repeats *= (1.0 - self.history) as f32;
        Score {
            score,
            expected: p.expected,
            lower,
            upper,
        }
        .mapped(p)
    }
}

/// While the current point deviates less than `min_deviation` (in the series' unit) a window
/// signal scores at most `deviation / min_deviation`.
fn cap_small(score: f64, deviation: f64, min_deviation: f64) -> f64 {
    if deviation < min_deviation {
        score.min(deviation / min_deviation)
    } else {
        score
    }
}

impl Detector for Likelihood {
    type State = LikelihoodState;

    fn new_state(&self) -> LikelihoodState {
        LikelihoodState {
            baseline: self.baseline.new_state(),
            window: self.new_window(),
        }
    }

    fn score(&self, state: &mut LikelihoodState, timestamp_ms: i64, value: f64) -> Option<Score> {
        let p = self
            .baseline
            .step(&mut state.baseline, timestamp_ms, value)?;
        let score = self.judge(&mut state.window, &p);
        (p.warm && usize::from(state.window.filled) == self.window).then_some(score)
    }
}
