//! `--seasonality auto`: which of a day and a week the series repeats, by periodogram.
//!
//! `augurs-seasons` computes a Welch periodogram over the whole input (resampled to the
//! interval, last value carried over gaps); a day or a week is selected when the power near
//! it stands out from the neighbouring periods. Welch segments must be longer than the
//! period, so a week is only resolved with about four weeks of input; a trend puts its
//! power in the longest periods and is not taken for a season. This runs once over a batch of
//! history, which is why it lives in the backtest and not in the O(1) streaming path.

use std::time::Duration;

use augurs_seasons::PeriodogramDetector;

use super::input::Series;
use crate::detector::SeasonPeriod;

const DAY: Duration = Duration::from_secs(86_400);
const WEEK: Duration = Duration::from_secs(7 * 86_400);
/// How far (relative) from a period a periodogram bin still counts as that period.
const BAND: f64 = 0.2;
/// How much stronger than its neighbours a period's power must be.
const PEAK_RATIO: f64 = 3.0;

/// The seasonal periods among 1d and 7d the series shows (may be empty).
pub fn detect(series: &Series, interval: Duration) -> Vec<SeasonPeriod> {
    let step = interval.as_secs_f64().max(1e-3);
    // The periodogram needs an evenly spaced series: carry the last value across gaps and
    // NaN, on the grid of `interval`.
    let (Some(first), Some(last)) = (series.points.first(), series.points.last()) else {
        return Vec::new();
    };
    let n = ((last.timestamp_ms - first.timestamp_ms) as f64 / (step * 1e3)) as usize + 1;
    if n > 2_000_000 {
        return Vec::new();
    }
    let mut grid = Vec::with_capacity(n);
    let mut it = series.points.iter().peekable();
    let mut current = f64::NAN;
    for i in 0..n {
        let t = first.timestamp_ms + (i as f64 * step * 1e3) as i64;
        while let Some(p) = it.next_if(|p| p.timestamp_ms <= t) {
            if p.value.is_finite() {
                current = p.value;
            }
        }
        grid.push(current);
    }
    let fill = grid.iter().copied().find(|v| v.is_finite()).unwrap_or(0.0);
    for v in grid.iter_mut().take_while(|v| !v.is_finite()) {
        *v = fill;
    }
    // Less than two days cannot show a daily period (and tiny inputs make the Welch
    // builder underflow).
    let day_points = DAY.as_secs_f64() / step;
    if (grid.len() as f64) < 2.0 * day_points || grid.len() < 64 {
        return Vec::new();
    }
    let periodogram = PeriodogramDetector::builder()
        .min_period(2)
        .max_period((grid.len() / 2).max(3) as u32)
        .build()
        .periodogram(&grid);
    let bins: Vec<(f64, f64)> = periodogram
        .periods
        .iter()
        .zip(&periodogram.powers)
        .map(|(&p, &power)| (f64::from(p), power))
        .collect();
    let mut found = Vec::new();
    for period in [DAY, WEEK] {
        let target = period.as_secs_f64() / step;
        if target >= 4.0 && is_peak(&bins, target) {
            found.push(SeasonPeriod(period));
        }
    }
    found
}

/// The strongest bin within ±[`BAND`] of `target` stands at least [`PEAK_RATIO`] above the
/// nearest bins outside that band on both sides. `false` when the periodogram cannot
/// resolve the period (no bin near it, or none beyond it: too little data).
fn is_peak(bins: &[(f64, f64)], target: f64) -> bool {
    let near = bins
        .iter()
        .filter(|(p, _)| (p - target).abs() <= BAND * target)
        .map(|&(_, power)| power)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let longer = bins
        .iter()
        .filter(|(p, _)| *p > (1.0 + BAND) * target)
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|&(_, power)| power);
    let shorter = bins
        .iter()
        .filter(|(p, _)| *p < (1.0 - BAND) * target)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|&(_, power)| power);
    match (near, longer, shorter) {
        (Some(near), Some(longer), Some(shorter)) => {
            near > 0.0 && near >= PEAK_RATIO * longer.max(shorter)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::input::Point;

    fn series(f: impl Fn(i64) -> f64) -> Series {
        Series {
            points: (0..14 * 288)
                .map(|i| Point {
                    timestamp_ms: 1_767_571_200_000 + i * 300_000,
                    value: f(i),
                })
                .collect(),
            seconds: false,
        }
    }

    #[test]
    fn a_daily_wave_is_found_and_a_trend_is_not() {
        let step = Duration::from_secs(300);
        let wave =
            series(|i| (i as f64 * std::f64::consts::TAU / 288.0).sin() + (i % 7) as f64 * 0.05);
        assert_eq!(detect(&wave, step), vec![SeasonPeriod(DAY)]);
        let trend = series(|i| i as f64 * 0.01 + (i % 7) as f64 * 0.05);
        assert_eq!(detect(&trend, step), vec![]);
        assert_eq!(detect(&Series::default(), step), vec![]);
        for n in [1, 3, 100, 700] {
            let mut short = series(|i| (i % 5) as f64);
            short.points.truncate(n);
            assert_eq!(detect(&short, step), vec![], "{n} points");
        }
    }
}
