//! `kind: robust`: how far a point is from the seasonal baseline, in robust σ.

use serde::{Deserialize, Serialize};

use super::baseline::{BaselineState, Prediction, SeasonalBaseline};
use super::config::RobustConfig;
use super::{Detector, Direction, Score, banded};

#[derive(Debug, Clone)]
pub struct Robust {
    pub(super) baseline: SeasonalBaseline,
    direction: Direction,
    min_deviation: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustState {
    pub(super) baseline: BaselineState,
}

impl Robust {
    pub fn new(
        c: &RobustConfig,
        direction: Direction,
        min_deviation: f64,
        interval: std::time::Duration,
    ) -> Robust {
        Robust {
            baseline: SeasonalBaseline::new(
                &c.seasonality,
                c.half_life,
                c.band,
                c.adapt_after,
                interval,
            ),
            direction,
            min_deviation,
        }
    }

    /// Points learned before the first score.
    pub fn warm_up(&self) -> u32 {
        self.baseline.warm_up()
    }

    /// The score of a prediction the baseline made.
    pub(super) fn judge(&self, p: &Prediction) -> Score {
        let half = (self.baseline.band() * p.sigma).max(self.min_deviation / p.per);
        banded(p.x, p.expected, half, half, self.direction).mapped(p)
    }
}

impl Detector for Robust {
    type State = RobustState;

    fn new_state(&self) -> RobustState {
        RobustState {
            baseline: self.baseline.new_state(),
        }
    }

    fn score(&self, state: &mut RobustState, timestamp_ms: i64, value: f64) -> Option<Score> {
        let p = self
            .baseline
            .step(&mut state.baseline, timestamp_ms, value)?;
        p.warm.then(|| self.judge(&p))
    }
}
