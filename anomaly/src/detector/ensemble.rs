//! `kind: ensemble` (the default): the three detectors on one shared baseline.
//!
//! `score = max(robust, likelihood, √(robust × extreme))`. Robust and likelihood speak for
//! themselves; a new extreme only counts when the point is also off the baseline, so a
//! trending series (which makes new extremes all the time) does not alert, while a value
//! near the band's edge that is also beyond everything seen recently does. The band
//! reported is the robust one.

use serde::{Deserialize, Serialize};

use super::baseline::{BaselineState, SeasonalBaseline};
use super::config::EnsembleConfig;
use super::extreme::{Extreme, RangeState};
use super::likelihood::{Likelihood, WindowState};
use super::robust::Robust;
use super::{Detector, Direction, Score};

#[derive(Debug, Clone)]
pub struct Ensemble {
    robust: Robust,
    extreme: Extreme,
    likelihood: Likelihood,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleState {
    baseline: BaselineState,
    range: RangeState,
    window: WindowState,
}

impl EnsembleState {
    pub(crate) fn heap_bytes(&self) -> usize {
        self.baseline.heap_bytes() + self.window.heap_bytes()
    }
}

impl Ensemble {
    pub fn new(
        c: &EnsembleConfig,
        direction: Direction,
        min_deviation: f64,
        interval: std::time::Duration,
    ) -> Ensemble {
        let robust = Robust::new(&c.robust(), direction, min_deviation, interval);
        let baseline: SeasonalBaseline = robust.baseline.clone();
        Ensemble {
            extreme: Extreme::with_baseline(
                &c.extreme(),
                baseline.clone(),
                direction,
                min_deviation,
            ),
            likelihood: Likelihood::with_baseline(
                &c.likelihood(),
                baseline,
                direction,
                min_deviation,
            ),
            robust,
        }
    }

    /// Points learned before the first score.
    pub fn warm_up(&self) -> u32 {
        self.likelihood.warm_up()
    }
}

impl Detector for Ensemble {
    type State = EnsembleState;

    fn new_state(&self) -> EnsembleState {
        EnsembleState {
            baseline: self.robust.baseline.new_state(),
            range: RangeState::default(),
            window: self.likelihood.new_window(),
        }
    }

    fn score(&self, state: &mut EnsembleState, timestamp_ms: i64, value: f64) -> Option<Score> {
        let p = self
            .robust
            .baseline
            .step(&mut state.baseline, timestamp_ms, value)?;
        let robust = self.robust.judge(&p);
        let extreme = self.extreme.judge(&mut state.range, &p);
        let likelihood = self.likelihood.judge(&mut state.window, &p);
        if !p.warm {
            return None;
        }
        let combined = robust
            .score
            .max(likelihood.score)
            .max((robust.score * extreme.score).sqrt());
        Some(Score {
            score: combined,
            ..robust
        })
    }
}
