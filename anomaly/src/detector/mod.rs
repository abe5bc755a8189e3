//! Detectors: what a series' normal looks like, and how far a point is from it.
//!
//! The service holds one [`Model`] per query (parameters, shared) and one [`SeriesState`]
//! per series (small, O(1), snapshotted with postcard). Points reach [`Model::score`] in
//! strictly increasing time order; a detector never looks ahead.
//!
//! - [`baseline`]: the robust seasonal baseline every detector stands on (level, damped
//!   trend, σ, hourly profiles, counter resets, gaps).
//! - [`robust`], [`extreme`], [`likelihood`]: the three signals, each a [`Detector`].
//! - [`ensemble`]: their combination, the default.
//! - [`config`]: `detector:` in a query.
//!
//! Every score is continuous and calibrated so that `> 1.0` means anomalous; `direction`
//! and `min_deviation` are applied inside each detector (see DETECTORS.md).

pub mod baseline;
pub mod config;
pub mod ensemble;
pub mod extreme;
pub mod likelihood;
pub mod robust;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use config::{
    DetectorConfig, EnsembleConfig, ExtremeConfig, LikelihoodConfig, RobustConfig, SeasonPeriod,
};
use ensemble::{Ensemble, EnsembleState};
use extreme::{Extreme, ExtremeState};
use likelihood::{Likelihood, LikelihoodState};
use robust::{Robust, RobustState};

/// √(π/2): turns a mean absolute deviation into a Gaussian standard deviation.
pub(crate) const MAD_TO_SIGMA: f64 = 1.253_314;

/// What a detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Continuous, calibrated so that `> 1.0` means anomalous; never clipped to a constant.
    pub score: f64,
    /// The value the model expected.
    pub expected: f64,
    /// The band the model considers normal for this point on its own: a value outside it
    /// scores `> 1.0`. (Window signals of `likelihood` and `ensemble` can also score above
    /// 1.0 inside it.)
    pub lower: f64,
    pub upper: f64,
}

impl Score {
    /// Maps a score computed on the modelled quantity (a counter's rate) back to the
    /// series' own values.
    fn mapped(self, p: &baseline::Prediction) -> Score {
        Score {
            expected: p.origin + p.per * self.expected,
            lower: p.origin + p.per * self.lower,
            upper: p.origin + p.per * self.upper,
            ..self
        }
    }
}

/// Which deviations count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Both,
    Above,
    Below,
}

/// The seam between the service and a way of scoring: parameters in `self`, everything a
/// series has learned in `State`.
pub trait Detector: Send + Sync {
    type State: Clone + Serialize + DeserializeOwned;

    fn new_state(&self) -> Self::State;

    /// Scores `value` at `timestamp_ms`, then learns from it. `None` while warming up, for
    /// a timestamp not after the previous one, and for the very first point.
    fn score(&self, state: &mut Self::State, timestamp_ms: i64, value: f64) -> Option<Score>;
}

/// `|x − expected|` over the half band on the counted side.
fn banded(x: f64, expected: f64, below: f64, above: f64, direction: Direction) -> Score {
    let d = x - expected;
    let score = match direction {
        Direction::Both if d >= 0.0 => d / above,
        Direction::Both => -d / below,
        Direction::Above => d.max(0.0) / above,
        Direction::Below => (-d).max(0.0) / below,
    };
    Score {
        score,
        expected,
        lower: expected - below,
        upper: expected + above,
    }
}

/// A query's detector: its parameters, shared by all of the query's series.
#[derive(Debug, Clone)]
pub struct Model {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Robust(Robust),
    Extreme(Extreme),
    Likelihood(Likelihood),
    Ensemble(Box<Ensemble>),
}

/// One series' learned state. `SeriesState::default()` is an empty state that any
/// [`Model`] replaces with its own on the first point (prefer [`Model::new_state`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesState(StateKind);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
enum StateKind {
    #[default]
    Empty,
    Robust(RobustState),
    Extreme(ExtremeState),
    Likelihood(LikelihoodState),
    Ensemble(EnsembleState),
}

impl SeriesState {
    /// Bytes this state occupies in memory: the struct and its heap buffers (profiles and
    /// the residual window).
    pub fn memory_bytes(&self) -> usize {
        let heap = match &self.0 {
            StateKind::Robust(s) => s.baseline.heap_bytes(),
            StateKind::Extreme(s) => s.baseline.heap_bytes(),
            StateKind::Likelihood(s) => s.baseline.heap_bytes() + s.window.heap_bytes(),
            StateKind::Ensemble(s) => s.heap_bytes(),
            StateKind::Empty => 0,
        };
        std::mem::size_of::<SeriesState>() + heap
    }
}

impl Model {
    pub fn new(
        config: &DetectorConfig,
        direction: Direction,
        min_deviation: f64,
        interval: Duration,
    ) -> Model {
        let min_deviation = if min_deviation.is_finite() {
            min_deviation.max(0.0)
        } else {
            0.0
        };
        let kind = match config {
            DetectorConfig::Robust(c) => {
                Kind::Robust(Robust::new(c, direction, min_deviation, interval))
            }
            DetectorConfig::Extreme(c) => {
                Kind::Extreme(Extreme::new(c, direction, min_deviation, interval))
            }
            DetectorConfig::Likelihood(c) => {
                Kind::Likelihood(Likelihood::new(c, direction, min_deviation, interval))
            }
            DetectorConfig::Ensemble(c) => Kind::Ensemble(Box::new(Ensemble::new(
                c,
                direction,
                min_deviation,
                interval,
            ))),
        };
        Model { kind }
    }

    pub fn new_state(&self) -> SeriesState {
        SeriesState(match &self.kind {
            Kind::Robust(d) => StateKind::Robust(d.new_state()),
            Kind::Extreme(d) => StateKind::Extreme(d.new_state()),
            Kind::Likelihood(d) => StateKind::Likelihood(d.new_state()),
            Kind::Ensemble(d) => StateKind::Ensemble(d.new_state()),
        })
    }

    /// Points a new series learns before its first score: `max(30, points in the shortest
    /// seasonal period, window)` (`window` for `likelihood` and `ensemble` only). A counter
    /// starts over once it is recognised (after 20 rises).
    pub fn warm_up_points(&self) -> u32 {
        match &self.kind {
            Kind::Robust(d) => d.warm_up(),
            Kind::Extreme(d) => d.baseline.warm_up(),
            Kind::Likelihood(d) => d.warm_up(),
            Kind::Ensemble(d) => d.warm_up(),
        }
    }

    /// Scores `value` at `timestamp_ms`, then learns from it. `None` while the series is
    /// warming up, or for a value that is not finite, or for a timestamp not after the
    /// previous one. A state made by another kind of detector (the query's config changed
    /// since the snapshot) starts over.
    pub fn score(&self, state: &mut SeriesState, timestamp_ms: i64, value: f64) -> Option<Score> {
        if !value.is_finite() {
            return None;
        }
        let score = loop {
            break match (&self.kind, &mut state.0) {
                (Kind::Robust(d), StateKind::Robust(s)) => d.score(s, timestamp_ms, value),
                (Kind::Extreme(d), StateKind::Extreme(s)) => d.score(s, timestamp_ms, value),
                (Kind::Likelihood(d), StateKind::Likelihood(s)) => d.score(s, timestamp_ms, value),
                (Kind::Ensemble(d), StateKind::Ensemble(s)) => d.score(s, timestamp_ms, value),
                _ => {
                    *state = self.new_state();
                    continue;
                }
            };
        };
        // Arithmetic near f64::MAX: no score rather than NaN, the largest number rather
        // than infinity (which JSON and the Prometheus format handle poorly).
        score.filter(|s| !s.score.is_nan()).map(|s| Score {
            score: s.score.min(f64::MAX),
            ..s
        })
    }
}

#[cfg(test)]
mod tests;
