//! `detector:` of a query: which detector, and its parameters.
//!
//! Every kind is `#[serde(deny_unknown_fields)]` and every parameter has a named default, so
//! `detector: { kind: ensemble }` is a complete configuration.

use std::time::Duration;

use serde::Deserialize;
use vigil_core::config::{Errors, Validate, duration, join};

/// `detector:` of a query. The default is [`DetectorConfig::Ensemble`] without seasonality.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectorConfig {
    /// Robust level, trend and scale with optional seasonal profiles; scores how far a
    /// point is from the expected value, in robust standard deviations.
    Robust(RobustConfig),
    /// A new extreme: the value leaves the (slowly shrinking) range seen so far.
    Extreme(ExtremeConfig),
    /// The recent window of residuals against the residuals' own history: sustained bias,
    /// raised dispersion, a stuck value.
    Likelihood(LikelihoodConfig),
    /// The combination of the three (the default).
    Ensemble(EnsembleConfig),
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig::Ensemble(EnsembleConfig::default())
    }
}

/// A seasonal period, written like a duration (`1d`, `7d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeasonPeriod(pub Duration);

impl<'de> Deserialize<'de> for SeasonPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        duration::deserialize(d).map(SeasonPeriod)
    }
}

/// `kind: robust`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RobustConfig {
    /// Seasonal profiles learned online (at most two, each 1h..=28d), e.g. `[1d, 7d]`.
    #[serde(default)]
    pub seasonality: Vec<SeasonPeriod>,
    /// Half-life of the level and scale: how fast the baseline follows the data.
    #[serde(default = "default_half_life", with = "duration")]
    pub half_life: Duration,
    /// Robust standard deviations a point may deviate before it scores 1.0.
    #[serde(default = "default_band")]
    pub band: f64,
    /// A deviation that stays on one side of the band this long becomes the new level
    /// (a permanent level shift stops alerting).
    #[serde(default = "default_adapt_after", with = "duration")]
    pub adapt_after: Duration,
}

impl Default for RobustConfig {
    fn default() -> Self {
        RobustConfig {
            seasonality: Vec::new(),
            half_life: default_half_life(),
            band: default_band(),
            adapt_after: default_adapt_after(),
        }
    }
}

/// `kind: extreme`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtremeConfig {
    /// Half-life of the range's shrinking towards its middle.
    #[serde(default = "default_range_half_life", with = "duration")]
    pub range_half_life: Duration,
    /// How far past the range (as a fraction of its width) a value scores 1.0.
    #[serde(default = "default_margin")]
    pub margin: f64,
}

impl Default for ExtremeConfig {
    fn default() -> Self {
        ExtremeConfig {
            range_half_life: default_range_half_life(),
            margin: default_margin(),
        }
    }
}

/// `kind: likelihood`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LikelihoodConfig {
    #[serde(default)]
    pub seasonality: Vec<SeasonPeriod>,
    #[serde(default = "default_half_life", with = "duration")]
    pub half_life: Duration,
    #[serde(default = "default_adapt_after", with = "duration")]
    pub adapt_after: Duration,
    /// Points in the recent window (2..=64).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Half-life of the window statistics' long-run distribution.
    #[serde(default = "default_history_half_life", with = "duration")]
    pub history_half_life: Duration,
    /// Long-run standard deviations the window statistic may move before it scores 1.0.
    #[serde(default = "default_band")]
    pub band: f64,
}

impl Default for LikelihoodConfig {
    fn default() -> Self {
        LikelihoodConfig {
            seasonality: Vec::new(),
            half_life: default_half_life(),
            adapt_after: default_adapt_after(),
            window: default_window(),
            history_half_life: default_history_half_life(),
            band: default_band(),
        }
    }
}

/// `kind: ensemble`: every parameter of the three detectors it combines.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleConfig {
    #[serde(default)]
    pub seasonality: Vec<SeasonPeriod>,
    #[serde(default = "default_half_life", with = "duration")]
    pub half_life: Duration,
    #[serde(default = "default_band")]
    pub band: f64,
    #[serde(default = "default_adapt_after", with = "duration")]
    pub adapt_after: Duration,
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(default = "default_history_half_life", with = "duration")]
    pub history_half_life: Duration,
    #[serde(default = "default_range_half_life", with = "duration")]
    pub range_half_life: Duration,
    #[serde(default = "default_margin")]
    pub margin: f64,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            seasonality: Vec::new(),
            half_life: default_half_life(),
            band: default_band(),
            adapt_after: default_adapt_after(),
            window: default_window(),
            history_half_life: default_history_half_life(),
            range_half_life: default_range_half_life(),
            margin: default_margin(),
        }
    }
}

impl EnsembleConfig {
    pub(crate) fn robust(&self) -> RobustConfig {
        RobustConfig {
            seasonality: self.seasonality.clone(),
            half_life: self.half_life,
            band: self.band,
            adapt_after: self.adapt_after,
        }
    }

    pub(crate) fn likelihood(&self) -> LikelihoodConfig {
        LikelihoodConfig {
            seasonality: self.seasonality.clone(),
            half_life: self.half_life,
            adapt_after: self.adapt_after,
            window: self.window,
            history_half_life: self.history_half_life,
            band: self.band,
        }
    }

    pub(crate) fn extreme(&self) -> ExtremeConfig {
        ExtremeConfig {
            range_half_life: self.range_half_life,
            margin: self.margin,
        }
    }
}

fn default_half_life() -> Duration {
    Duration::from_secs(3600)
}

fn default_band() -> f64 {
    5.0
}

fn default_adapt_after() -> Duration {
    Duration::from_secs(3600)
}

fn default_window() -> usize {
    12
}

fn default_history_half_life() -> Duration {
    Duration::from_secs(2 * 86_400)
}

fn default_range_half_life() -> Duration {
    Duration::from_secs(3 * 86_400)
}

fn default_margin() -> f64 {
    0.1
}

/// The longest seasonal period: its profile still fits the per-series state budget.
pub const MAX_SEASON: Duration = Duration::from_secs(28 * 86_400);

impl Validate for DetectorConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        match self {
            DetectorConfig::Robust(c) => {
                validate_seasonality(&c.seasonality, path, errors);
                validate_at_least(c.half_life, "half_life", path, errors);
                validate_at_least(c.adapt_after, "adapt_after", path, errors);
                validate_positive(c.band, "band", path, errors);
            }
            DetectorConfig::Extreme(c) => {
                validate_at_least(c.range_half_life, "range_half_life", path, errors);
                validate_margin(c.margin, path, errors);
            }
            DetectorConfig::Likelihood(c) => {
                validate_seasonality(&c.seasonality, path, errors);
                validate_at_least(c.half_life, "half_life", path, errors);
                validate_at_least(c.adapt_after, "adapt_after", path, errors);
                validate_at_least(c.history_half_life, "history_half_life", path, errors);
                validate_positive(c.band, "band", path, errors);
                validate_window(c.window, path, errors);
            }
            DetectorConfig::Ensemble(c) => {
                validate_seasonality(&c.seasonality, path, errors);
                validate_at_least(c.half_life, "half_life", path, errors);
                validate_at_least(c.adapt_after, "adapt_after", path, errors);
                validate_at_least(c.history_half_life, "history_half_life", path, errors);
                validate_at_least(c.range_half_life, "range_half_life", path, errors);
                validate_positive(c.band, "band", path, errors);
                validate_window(c.window, path, errors);
                validate_margin(c.margin, path, errors);
            }
        }
    }
}

fn validate_seasonality(seasonality: &[SeasonPeriod], path: &str, errors: &mut Errors) {
    if seasonality.len() > 2 {
        errors.add(join(path, "seasonality"), "at most two periods");
    }
    for (i, p) in seasonality.iter().enumerate() {
        let at = join(path, &format!("seasonality.{i}"));
        if p.0 < Duration::from_secs(3600) {
            errors.add(at, "must be at least 1h");
        } else if p.0 > MAX_SEASON {
            errors.add(at, "must be at most 28d");
        } else if seasonality[..i].contains(p) {
            errors.add(at, "is listed twice");
        }
    }
}

fn validate_at_least(d: Duration, key: &str, path: &str, errors: &mut Errors) {
    if d < Duration::from_secs(60) {
        errors.add(join(path, key), "must be at least 1m");
    }
}

fn validate_positive(x: f64, key: &str, path: &str, errors: &mut Errors) {
    if !(x.is_finite() && x > 0.0) {
        errors.add(join(path, key), "must be a number > 0");
    }
}

fn validate_margin(x: f64, path: &str, errors: &mut Errors) {
    if !(x.is_finite() && x >= 0.0) {
        errors.add(join(path, "margin"), "must be a number >= 0");
    }
}

fn validate_window(w: usize, path: &str, errors: &mut Errors) {
    if !(2..=64).contains(&w) {
        errors.add(join(path, "window"), "must be between 2 and 64 points");
    }
}
