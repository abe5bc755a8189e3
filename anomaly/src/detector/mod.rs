//! Detectors: what a series' normal looks like, and how far a point is from it.
//!
//! The service holds one [`Model`] per query (parameters, shared) and one [`SeriesState`]
//! per series (small, O(1), snapshotted). Points reach [`Model::score`] in strictly
//! increasing time order; a detector never looks ahead.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_core::config::{Errors, Validate};

/// What a detector says about one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Continuous, calibrated so that `> 1.0` means anomalous; never clipped to a constant.
    pub score: f64,
    /// The value the model expected.
    pub expected: f64,
    /// The band the model considers normal: a value inside it scores `<= 1.0`.
    pub lower: f64,
    pub upper: f64,
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

/// `detector:` of a query.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorConfig {
    /// Robust level and scale (EWMA), with optional seasonal profiles.
    Robust {
        #[serde(default)]
        seasonality: Vec<SeasonPeriod>,
    },
    /// The combination of the detectors.
    Ensemble {
        #[serde(default)]
        seasonality: Vec<SeasonPeriod>,
    },
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::Ensemble {
            seasonality: Vec::new(),
        }
    }
}

/// A seasonal period, written like a duration (`1d`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeasonPeriod(pub Duration);

impl<'de> Deserialize<'de> for SeasonPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        vigil_core::config::duration::deserialize(d).map(SeasonPeriod)
    }
}

impl Validate for DetectorConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        let (DetectorConfig::Robust { seasonality } | DetectorConfig::Ensemble { seasonality }) =
            self;
        for (i, p) in seasonality.iter().enumerate() {
            if p.0 < Duration::from_secs(3600) {
                errors.add(
                    vigil_core::config::join(path, &format!("seasonality.{i}")),
                    "must be at least 1h",
                );
            }
        }
    }
}

/// A query's detector: its parameters, shared by all of the query's series.
#[derive(Debug, Clone)]
pub struct Model {
    direction: Direction,
    min_deviation: f64,
}

/// One series' learned state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeriesState {
    seen: u32,
    level: f64,
    scale: f64,
}

const WARM_UP: u32 = 10;
const ALPHA: f64 = 0.1;
/// Scale multiples a point may deviate before it scores 1.0.
const BAND: f64 = 4.0;

impl Model {
    pub fn new(
        _config: &DetectorConfig,
        direction: Direction,
        min_deviation: f64,
        _interval: Duration,
    ) -> Model {
        Model {
            direction,
            min_deviation,
        }
    }

    pub fn new_state(&self) -> SeriesState {
        SeriesState::default()
    }

    /// Scores `value` at `timestamp_ms`, then learns from it. `None` while the series is
    /// warming up or for a value that is not finite.
    pub fn score(&self, state: &mut SeriesState, _timestamp_ms: i64, value: f64) -> Option<Score> {
        if !value.is_finite() {
            return None;
        }
        if state.seen == 0 {
            state.level = value;
        }
        let deviation = value - state.level;
        let scale = state.scale.max(f64::EPSILON * state.level.abs().max(1.0));
        let half_band = BAND * scale + self.min_deviation;
        let counted = match self.direction {
            Direction::Both => deviation.abs(),
            Direction::Above => deviation.max(0.0),
            Direction::Below => (-deviation).max(0.0),
        };
        let score = counted / half_band;
        let result = Score {
            score,
            expected: state.level,
            lower: state.level - half_band,
            upper: state.level + half_band,
        };
        state.level += ALPHA * deviation;
        state.scale += ALPHA * (deviation.abs() - state.scale);
        state.seen = state.seen.saturating_add(1);
        (state.seen > WARM_UP).then_some(result)
    }
}
