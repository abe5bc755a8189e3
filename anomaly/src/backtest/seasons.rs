//! `--seasonality auto`: which of a day and a week the series repeats, by periodogram.
//!
//! `augurs-seasons` finds candidate periods (in points) over the whole input; a candidate
//! within 10% of a day or a week selects that period. This runs once over a batch of
//! history, which is why it lives in the backtest and not in the O(1) streaming path.

use std::time::Duration;

use augurs_seasons::{Detector, PeriodogramDetector};

use super::input::Series;
use crate::detector::SeasonPeriod;

const DAY: Duration = Duration::from_secs(86_400);
const WEEK: Duration = Duration::from_secs(7 * 86_400);

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
    let day = DAY.as_secs_f64() / step;
    let week = WEEK.as_secs_f64() / step;
    let mut found = Vec::new();
    for (period, points) in [(DAY, day), (WEEK, week)] {
        // A period shows only with at least two full cycles.
        if points < 4.0 || (grid.len() as f64) < 2.0 * points {
            continue;
        }
        let detector = PeriodogramDetector::builder()
            .min_period(((points * 0.9) as u32).max(2))
            .max_period((points * 1.1) as u32)
            .build();
        if !detector.detect(&grid).is_empty() {
            found.push(SeasonPeriod(period));
        }
    }
    found
}
