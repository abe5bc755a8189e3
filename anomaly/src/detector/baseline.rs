//! `SeasonalBaseline`: the expected value of a series and its robust scale, learned online.
//!
//! The model is additive Holt–Winters in error-correction form, made robust:
//! `expected(t) = level + damped trend · Δt + Σ profile_p(t)`. Every update uses the
//! residual clipped to ±[`HUBER`] σ, so one outlier moves the level by at most
//! `alpha · HUBER · σ`. A residual that stays outside the band on one side for
//! `adapt_after` re-anchors the level on the data: a permanent shift alerts for that long,
//! then stops. Going back to the previous level within a day re-anchors back without an
//! alert, so the end of a long episode is not a second anomaly. σ is the clipped mean absolute residual × √(π/2), floored so that a flat
//! series does not divide by zero and a discrete low-volume series (integer counts) is not
//! alarmed by its own granularity.
//!
//! Seasonal profiles are coarse: at most 168 `f32` buckets per period (one hour for a day,
//! one hour of the week for seven days), read and learned by linear interpolation between
//! bucket centres and looked up by timestamp, so gaps need no special care.
//!
//! Counters are detected (never decreased, rose at least [`COUNTER_RISES`] times) and from
//! then on the baseline models their rate (increase per interval), not the ever-growing
//! total: a burst is a deviation of the rate, and a drop is a reset whose increase is, as in
//! PromQL's `increase`, the new value itself. Scores are the same; expected value and band
//! are mapped back to the counter's own values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::MAD_TO_SIGMA;
use super::config::SeasonPeriod;

/// Residuals are clipped to this many σ before they update anything.
const HUBER: f64 = 3.0;
/// The trend learns this fraction of what the level learns. A seasonal baseline has no
/// trend: learning one from within-day slopes makes it overshoot every peak.
const TREND_SHARE: f64 = 0.1;
/// Trend damping per interval: a learned slope fades over ~100 intervals of extrapolation.
const TREND_DAMPING: f64 = 0.99;
/// Relative σ floor: a flat series at 100 has σ ≥ 0.01.
const RELATIVE_FLOOR: f64 = 1e-4;
const ABSOLUTE_FLOOR: f64 = 1e-9;
/// σ ≥ this × the typical non-zero step between consecutive values (integer counts).
const QUANTUM_FLOOR: f64 = 0.7;
/// After a re-anchoring, a return to the previous level within this long re-anchors back
/// silently (an episode of several hours is alerted at its start, not at its end).
const REVERT_WITHIN: Duration = Duration::from_secs(86_400);
/// How much an out-of-band residual counts in σ's update.
const OUTLIER_WEIGHT: f64 = 0.125;
/// Points before a series is scored when it has no seasonality.
pub const MIN_WARM_UP: u32 = 30;
pub const COUNTER_RISES: u32 = 20;
/// Profile buckets per period at most; a period of up to 7d gets hourly buckets.
const MAX_BUCKETS: u64 = 168;
/// A profile bucket's gain per visit (roughly the share of its error it learns is
/// `1 − e^−gain`): [`FIRST_SEASON_GAIN`] / (cycles seen + 1), at least [`SEASON_GAIN`].
const SEASON_GAIN: f64 = 0.5;
const FIRST_SEASON_GAIN: f64 = 2.5;
/// A gap of Δt intervals widens the band by √(1 + alpha·(Δt−1)), at most this much.
const MAX_GAP_WIDENING: f64 = 3.0;

/// One seasonal period, as the model reads it.
#[derive(Debug, Clone)]
struct Season {
    period_ms: i64,
    bucket_ms: f64,
    buckets: usize,
    /// Where this season's buckets start in [`BaselineState::profiles`].
    start: usize,
    /// One point's share of a bucket visit.
    point_share: f64,
}

/// Parameters of the baseline, derived once per query.
#[derive(Debug, Clone)]
pub struct SeasonalBaseline {
    interval_ms: f64,
    /// Per-interval weight of σ and the step size (`half_life`).
    alpha: f64,
    /// Per-interval weight of the slow level the profiles learn against: the shortest
    /// season (or `half_life` if longer). Against the fast level, which chases the daily
    /// curve, a profile would see only the lag and learn for days.
    slow_alpha: f64,
    trend_share: f64,
    band: f64,
    adapt_points: i32,
    /// Points after a re-anchoring during which a return to the previous level is quiet.
    revert_points: u32,
    warm_up: u32,
    seasons: Vec<Season>,
    profile_len: usize,
}

/// One series' baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineState {
    /// Points learned.
    n: u32,
    last_ts: i64,
    last_raw: f64,
    rises: u32,
    falls: u32,
    /// The series is a counter: the model is of its rate.
    counter: bool,
    level: f64,
    trend: f64,
    /// The deseasonalised level over a whole season, what profiles are learned against.
    slow_level: f64,
    sigma: f64,
    /// Mean non-zero |step| between consecutive values.
    quantum: f64,
    /// Consecutive out-of-band residuals, signed by side.
    run: i32,
    /// The level before the last re-anchoring, and for how many more points the series
    /// may go back to it without an alert.
    previous_level: f64,
    previous_left: u32,
    profiles: Vec<f32>,
}

impl BaselineState {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.profiles.capacity() * std::mem::size_of::<f32>()
    }
}

/// What the baseline says about one point, before it learns from it.
#[derive(Debug, Clone, Copy)]
pub struct Prediction {
    /// The modelled quantity: the value, or a counter's rate per interval.
    pub x: f64,
    /// Expected `x`.
    pub expected: f64,
    /// Robust standard deviation of the residual, floored, widened after a gap.
    pub sigma: f64,
    /// The series' value for a modelled `m` is `origin + per × m`.
    pub origin: f64,
    pub per: f64,
    /// Intervals since the previous point.
    pub dt: f64,
    /// The raw value repeats the previous one exactly.
    pub repeated: bool,
    /// The baseline has seen enough points to be scored.
    pub warm: bool,
    /// This point completed `adapt_after` on one side: the level moved to the data.
    pub reanchored: bool,
}

impl SeasonalBaseline {
    pub fn new(
        seasonality: &[SeasonPeriod],
        half_life: Duration,
        band: f64,
        adapt_after: Duration,
        interval: Duration,
    ) -> SeasonalBaseline {
        let interval_ms = (interval.as_secs_f64() * 1e3).max(1.0);
        let alpha = decay_alpha(interval_ms, half_life);
        let mut seasons = Vec::new();
        let mut start = 0;
        let mut shortest = None::<i64>;
        let mut periods: Vec<SeasonPeriod> = seasonality.to_vec();
        periods.sort_by_key(|p| p.0);
        periods.dedup();
        for p in &periods {
            let period_ms = p.0.as_millis().clamp(1, i64::MAX as u128) as i64;
            let buckets = (period_ms as u64).div_ceil(3_600_000).clamp(1, MAX_BUCKETS) as usize;
            let bucket_ms = period_ms as f64 / buckets as f64;
            let point_share = interval_ms / bucket_ms;
            seasons.push(Season {
                period_ms,
                bucket_ms,
                buckets,
                start,
                point_share,
            });
            start += buckets;
            shortest = Some(shortest.map_or(period_ms, |s: i64| s.min(period_ms)));
        }
        let slow_half_life = shortest.map_or(half_life, |s| {
            half_life.max(Duration::from_millis(s as u64))
        });
        let season_points = shortest.map_or(0, |s| (s as f64 / interval_ms).ceil() as u32);
        let adapt_points = (adapt_after.as_secs_f64() * 1e3 / interval_ms).ceil() as i32;
        SeasonalBaseline {
            interval_ms,
            alpha,
            slow_alpha: decay_alpha(interval_ms, slow_half_life),
            trend_share: if seasons.is_empty() { TREND_SHARE } else { 0.0 },
            band: usable_band(band),
            adapt_points: adapt_points.max(2),
            revert_points: (REVERT_WITHIN.as_secs_f64() * 1e3 / interval_ms).ceil() as u32,
            warm_up: MIN_WARM_UP.max(season_points),
            seasons,
            profile_len: start,
        }
    }

    /// Points a series is learned before it is scored.
    pub fn warm_up(&self) -> u32 {
        self.warm_up
    }

    pub fn interval_ms(&self) -> f64 {
        self.interval_ms
    }

    pub fn band(&self) -> f64 {
        self.band
    }

    pub fn new_state(&self) -> BaselineState {
        BaselineState {
            profiles: vec![0.0; self.profile_len],
            ..BaselineState::default()
        }
    }

    /// Predicts the point, then learns from it. `None` for the first point of a series and
    /// for a timestamp not after the previous one (nothing is learned from it).
    pub fn step(&self, st: &mut BaselineState, ts: i64, value: f64) -> Option<Prediction> {
        if st.profiles.len() != self.profile_len {
            // A snapshot taken under another seasonality: its profiles mean nothing here.
            *st = self.new_state();
        }
        if st.n == 0 {
            st.n = 1;
            st.last_ts = ts;
            st.last_raw = value;
            st.level = value;
            st.slow_level = value;
            return None;
        }
        if ts <= st.last_ts {
            return None;
        }
        let dt = ((ts as f64 - st.last_ts as f64) / self.interval_ms).max(1e-3);
        let repeated = value == st.last_raw;
        let step = value - st.last_raw;
        let mut increase = step;
        if step < 0.0 {
            if st.counter {
                increase = value.max(0.0); // a reset
            } else {
                st.falls = st.falls.saturating_add(1);
            }
        } else if step > 0.0 {
            st.rises = st.rises.saturating_add(1);
        }
        if !st.counter && st.falls == 0 && st.rises >= COUNTER_RISES {
            // A counter: learning starts over on its rate.
            *st = BaselineState {
                n: 1,
                last_ts: ts,
                last_raw: value,
                rises: st.rises,
                counter: true,
                level: increase / dt,
                ..self.new_state()
            };
            return None;
        }
        let (x, origin, per) = if st.counter {
            (increase / dt, st.last_raw, dt)
        } else {
            (value, 0.0, 1.0)
        };

        let damped = if dt == 1.0 {
            TREND_DAMPING
        } else {
            TREND_DAMPING * (1.0 - TREND_DAMPING.powf(dt)) / (1.0 - TREND_DAMPING)
        };
        // Where `ts` falls in each season (at most two, validated), found once per point.
        let mut positions = [(0, 0, 0.0); 2];
        for (slot, season) in positions.iter_mut().zip(&self.seasons) {
            *slot = season.position(ts);
        }
        let positions = &positions[..self.seasons.len().min(2)];
        let seasonal = self.seasonal(st, positions);
        let widening = if dt > 1.0 {
            (1.0 + self.alpha * (dt - 1.0)).sqrt().min(MAX_GAP_WIDENING)
        } else {
            1.0
        };
        let floor_at = |expected: f64| {
            (RELATIVE_FLOOR * expected.abs())
                .max(ABSOLUTE_FLOOR)
                .max(QUANTUM_FLOOR * st.quantum)
        };
        let mut base = st.level + st.trend * damped;
        let mut reverted = false;
        if st.previous_left > 0 {
            st.previous_left -= 1;
            // Back to the level in force before the last re-anchoring: the episode that
            // moved the level is over, and its end is not news.
            let band = self.band * widening;
            let sigma = st.sigma.max(floor_at(base + seasonal));
            let off_now = (x - base - seasonal).abs() > band * sigma;
            let on_previous = (x - st.previous_level - seasonal).abs() <= band * sigma;
            if off_now && on_previous {
                st.slow_level += st.previous_level - st.level;
                st.level = st.previous_level;
                st.trend = 0.0;
                st.previous_left = 0;
                st.run = 0;
                base = st.level;
                reverted = true;
            }
        }
        let expected = base + seasonal;
        let residual = x - expected;
        let sigma = st.sigma.max(floor_at(expected));
        if !(x.is_finite() && residual.is_finite() && sigma.is_finite()) {
            // Values near f64::MAX overflowed the model: nothing learned can be trusted.
            *st = self.new_state();
            return None;
        }
        let mut prediction = Prediction {
            x,
            expected,
            sigma: sigma * widening,
            origin,
            per,
            dt,
            repeated,
            warm: st.n >= self.warm_up,
            reanchored: reverted,
        };

        // Learn.
        let over_dt = |alpha: f64| {
            if dt == 1.0 {
                alpha
            } else {
                1.0 - (1.0 - alpha).powf(dt.min(1e4))
            }
        };
        let a = over_dt(self.alpha);
        let sla = over_dt(self.slow_alpha);
        let seasonal_error = (x - st.slow_level - seasonal).clamp(-HUBER * sigma, HUBER * sigma);
        let clipped = residual.clamp(-HUBER * sigma, HUBER * sigma);
        let outside = residual.abs() > self.band * sigma * widening;
        st.run = match (outside, residual > 0.0) {
            (false, _) => 0,
            (true, true) => st.run.max(0) + 1,
            (true, false) => st.run.min(0) - 1,
        };
        if st.run.abs() >= self.adapt_points {
            // The data has been on one side for `adapt_after`: it is the new normal.
            if st.previous_left == 0 {
                st.previous_level = st.level;
            }
            st.previous_left = self.revert_points;
            st.slow_level += base + residual - st.level;
            st.level = base + residual;
            st.trend = 0.0;
            st.run = 0;
            prediction.reanchored = true;
        } else if st.n == 1 {
            // The second point gives the first slope.
            st.trend = if self.trend_share > 0.0 {
                (x - st.level) / dt
            } else {
                0.0
            };
            st.level = x;
            st.slow_level = x;
        } else {
            st.level = base + a * clipped;
            st.trend = st.trend * damped / dt.max(1.0) + a * self.trend_share * clipped;
            st.slow_level += sla * seasonal_error;
            self.learn_seasonal(st, positions, (1.0 - sla) * seasonal_error);
        }
        if step != 0.0 {
            let q = step.abs();
            let q = if st.quantum > 0.0 {
                q.min(4.0 * st.quantum)
            } else {
                q
            };
            st.quantum += a * (q - st.quantum);
        }
        let target = MAD_TO_SIGMA * residual.abs().min(HUBER * sigma);
        // The first points set σ quickly; afterwards it moves with `half_life`, and an
        // out-of-band point (an anomaly, most likely) barely moves it, so a dip does not
        // hide itself by widening the band. A real variance increase still gets in
        // through its many in-band points.
        let sa = if outside && st.n >= self.warm_up {
            a * OUTLIER_WEIGHT
        } else {
            a.max(1.0 / f64::from(st.n + 1))
        };
        st.sigma += sa * (target - st.sigma);
        st.n = st.n.saturating_add(1);
        st.last_ts = ts;
        st.last_raw = value;
        if !(st.level.is_finite() && st.slow_level.is_finite() && st.sigma.is_finite()) {
            *st = self.new_state();
        }
        Some(prediction)
    }

    fn seasonal(&self, st: &BaselineState, positions: &[(usize, usize, f64)]) -> f64 {
        let mut sum = 0.0;
        for (s, &(i0, i1, w1)) in self.seasons.iter().zip(positions) {
            let p = &st.profiles[s.start..s.start + s.buckets];
            sum += f64::from(p[i0]) * (1.0 - w1) + f64::from(p[i1]) * w1;
        }
        sum
    }

    /// Each season takes its share of what the previous ones left of `error`. During a
    /// season's first cycles its buckets learn faster, so a shape is mostly learned after
    /// one cycle.
    fn learn_seasonal(
        &self,
        st: &mut BaselineState,
        positions: &[(usize, usize, f64)],
        mut error: f64,
    ) {
        let age_ms = f64::from(st.n) * self.interval_ms;
        for (i, (s, &(i0, i1, w1))) in self.seasons.iter().zip(positions).enumerate() {
            // A longer season learns only what the shortest leaves, once that one has had a
            // cycle: before, the residual is mostly the shortest season not yet learned.
            let age_ms = match i {
                0 => age_ms,
                _ => age_ms - self.seasons[0].period_ms as f64,
            };
            if age_ms < 0.0 {
                break;
            }
            let cycles = (age_ms / s.period_ms as f64).floor();
            let visit_gain = (FIRST_SEASON_GAIN / (cycles + 1.0)).max(SEASON_GAIN);
            let gain = (s.point_share * visit_gain).min(0.5);
            let p = &mut st.profiles[s.start..s.start + s.buckets];
            p[i0] += (gain * (1.0 - w1) * error) as f32;
            p[i1] += (gain * w1 * error) as f32;
            error -= gain * error;
        }
    }
}

impl Season {
    /// The two buckets whose centres surround `ts`, and the weight of the second.
    fn position(&self, ts: i64) -> (usize, usize, f64) {
        let phase = ts.rem_euclid(self.period_ms) as f64;
        let at = phase / self.bucket_ms - 0.5;
        let at = if at < 0.0 {
            at + self.buckets as f64
        } else {
            at
        };
        let i0 = (at as usize).min(self.buckets - 1);
        let i1 = if i0 + 1 == self.buckets { 0 } else { i0 + 1 };
        (i0, i1, at - i0 as f64)
    }
}

/// `band` when it is a number > 0 (validation ensures it), else the default: a model built
/// from an unvalidated config still scores finitely.
pub fn usable_band(band: f64) -> f64 {
    if band.is_finite() && band > 0.0 {
        band
    } else {
        5.0
    }
}

/// The per-interval weight of an exponential average with this half-life.
pub fn decay_alpha(interval_ms: f64, half_life: Duration) -> f64 {
    let h = (half_life.as_secs_f64() * 1e3).max(1.0);
    (1.0 - 0.5f64.powf(interval_ms / h)).clamp(1e-9, 1.0)
}
