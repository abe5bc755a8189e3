//! `kind: extreme`: the value leaves the range seen so far by a margin.
//!
//! The range `[low, high]` widens at once to every value and shrinks towards its middle
//! with `range_half_life`, so a level left behind days ago is forgotten. A value scores
//! `|x − middle| / (half width + margin)`: inside the range below 1, at the margin's edge
//! exactly 1. The margin is `margin × width`, at least one baseline σ and `min_deviation`,
//! so a range that collapsed on a flat series still has a (tiny) margin.

use serde::{Deserialize, Serialize};

use super::baseline::{BaselineState, Prediction, SeasonalBaseline, decay_alpha};
use super::config::ExtremeConfig;
use super::{Detector, Direction, Score, banded};

#[derive(Debug, Clone)]
pub struct Extreme {
    pub(super) baseline: SeasonalBaseline,
    shrink: f64,
    margin: f64,
    direction: Direction,
    min_deviation: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RangeState {
    low: f64,
    high: f64,
    started: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtremeState {
    pub(super) baseline: BaselineState,
    pub(super) range: RangeState,
}

impl Extreme {
    pub fn new(
        c: &ExtremeConfig,
        direction: Direction,
        min_deviation: f64,
        interval: std::time::Duration,
    ) -> Extreme {
        let baseline = SeasonalBaseline::new(
            &[],
            super::config::RobustConfig::default().half_life,
            super::config::RobustConfig::default().band,
            super::config::RobustConfig::default().adapt_after,
            interval,
        );
        Extreme::with_baseline(c, baseline, direction, min_deviation)
    }

    pub(super) fn with_baseline(
        c: &ExtremeConfig,
        baseline: SeasonalBaseline,
        direction: Direction,
        min_deviation: f64,
    ) -> Extreme {
        Extreme {
            shrink: decay_alpha(baseline.interval_ms(), c.range_half_life),
            baseline,
            margin: if c.margin.is_finite() {
                c.margin.max(0.0)
            } else {
                0.0
            },
            direction,
            min_deviation,
        }
    }

    /// Scores the prediction's value against the range, then widens the range to it.
    pub(super) fn judge(&self, range: &mut RangeState, p: &Prediction) -> Score {
        if !range.started {
            *range = RangeState {
                low: p.x,
                high: p.x,
                started: true,
            };
        }
        let k = if p.dt == 1.0 {
            self.shrink
        } else {
            1.0 - (1.0 - self.shrink).powf(p.dt.min(1e6))
        };
        let middle = 0.5 * (range.low + range.high);
        range.high -= k * (range.high - middle);
        range.low += k * (middle - range.low);
        let width = range.high - range.low;
        let margin = (self.margin * width)
            .max(p.sigma)
            .max(self.min_deviation / p.per);
        let half = 0.5 * width + margin;
        let score = banded(p.x, middle, half, half, self.direction).mapped(p);
        range.high = range.high.max(p.x);
        range.low = range.low.min(p.x);
        score
    }
}

impl Detector for Extreme {
    type State = ExtremeState;

    fn new_state(&self) -> ExtremeState {
        ExtremeState {
            baseline: self.baseline.new_state(),
            range: RangeState::default(),
        }
    }

    fn score(&self, state: &mut ExtremeState, timestamp_ms: i64, value: f64) -> Option<Score> {
        let p = self
            .baseline
            .step(&mut state.baseline, timestamp_ms, value)?;
        let score = self.judge(&mut state.range, &p);
        p.warm.then_some(score)
    }
}
