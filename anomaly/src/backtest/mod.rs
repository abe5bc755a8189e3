//! `vigil-anomaly backtest`: runs the streaming detector over a CSV exactly as in
//! production and evaluates it against labelled windows.
//!
//! - [`input`]: the CSV and the windows JSON, with errors naming file and line.
//! - [`eval`]: the window score, precision, recall and the threshold sweep.
//! - [`seasons`]: `--seasonality auto`, periodogram detection on the series itself.

pub mod eval;
pub mod input;
pub mod seasons;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::detector::{
    DetectorConfig, Direction, EnsembleConfig, ExtremeConfig, LikelihoodConfig, Model,
    RobustConfig, SeasonPeriod,
};
use eval::{Evaluation, Scored};
use input::{Series, Window};

/// Arguments of `vigil-anomaly backtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `timestamp,value` CSV (timestamp in seconds or milliseconds since the epoch).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// JSON list of labelled anomaly windows (`[{"start":..,"end":..}]`, the CSV's time
    /// unit), for the evaluation.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Where `timestamp,value,anomaly_score` CSV goes (stdout when absent; the evaluation
    /// then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The detector kind, with its default parameters.
    #[arg(long, value_enum, default_value_t = Kind::Ensemble)]
    pub detector: Kind,
    /// Seasonal periods (`1d,7d`), `none`, or `auto` (periodogram over the input).
    #[arg(long, default_value = "none")]
    pub seasonality: String,
    #[arg(long, value_enum, default_value_t = DirectionArg::Both)]
    pub direction: DirectionArg,
    /// Deviations smaller than this (in the series' unit) never count.
    #[arg(long, default_value_t = 0.0)]
    pub min_deviation: f64,
    /// The series' step (`60s`, `5m`); the median step of the input when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Band multiplier (robust σ) for kinds that have one.
    #[arg(long)]
    pub band: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Robust,
    Extreme,
    Likelihood,
    Ensemble,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectionArg {
    Both,
    Above,
    Below,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Direction {
        match d {
            DirectionArg::Both => Direction::Both,
            DirectionArg::Above => Direction::Above,
            DirectionArg::Below => Direction::Below,
        }
    }
}

/// The detector config for a kind, seasonality and band, other parameters at defaults.
pub fn detector_config(
    kind: Kind,
    seasonality: &[SeasonPeriod],
    band: Option<f64>,
) -> DetectorConfig {
    let seasonality = seasonality.to_vec();
    match kind {
        Kind::Robust => {
            let d = RobustConfig::default();
            DetectorConfig::Robust(RobustConfig {
                seasonality,
                band: band.unwrap_or(d.band),
                ..d
            })
        }
        Kind::Extreme => DetectorConfig::Extreme(ExtremeConfig::default()),
        Kind::Likelihood => {
            let d = LikelihoodConfig::default();
            DetectorConfig::Likelihood(LikelihoodConfig {
                seasonality,
                band: band.unwrap_or(d.band),
                ..d
            })
        }
        Kind::Ensemble => {
            let d = EnsembleConfig::default();
            DetectorConfig::Ensemble(EnsembleConfig {
                seasonality,
                band: band.unwrap_or(d.band),
                ..d
            })
        }
    }
}

/// The median step between timestamps (60s for a single point).
pub fn median_step(series: &Series) -> Duration {
    let mut steps: Vec<i64> = series
        .points
        .windows(2)
        .map(|w| w[1].timestamp_ms - w[0].timestamp_ms)
        .collect();
    if steps.is_empty() {
        return Duration::from_secs(60);
    }
    let mid = steps.len() / 2;
    let (_, m, _) = steps.select_nth_unstable(mid);
    Duration::from_millis((*m).max(1) as u64)
}

/// Scores every point with one fresh series state, exactly as the service does.
pub fn score_series(model: &Model, series: &Series) -> Vec<Scored> {
    let mut state = model.new_state();
    series
        .points
        .iter()
        .map(|p| Scored {
            timestamp_ms: p.timestamp_ms,
            score: model
                .score(&mut state, p.timestamp_ms, p.value)
                .map(|s| s.score),
        })
        .collect()
}

/// Parses `--seasonality`: `none`, `auto` or a comma list of durations.
fn parse_seasonality(
    text: &str,
    series: &Series,
    interval: Duration,
) -> Result<Vec<SeasonPeriod>, String> {
    match text.trim() {
        "none" | "" => Ok(Vec::new()),
        "auto" => Ok(seasons::detect(series, interval)),
        list => list
            .split(',')
            .map(|p| {
                let d = humantime::parse_duration(p.trim())
                    .map_err(|e| format!("--seasonality: `{p}` is not a duration: {e}"))?;
                if d < Duration::from_secs(3600) || d > crate::detector::config::MAX_SEASON {
                    return Err(format!("--seasonality: `{p}` must be between 1h and 28d"));
                }
                Ok(SeasonPeriod(d))
            })
            .collect(),
    }
}

fn format_option(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.digits$}"))
}

/// Prints an evaluation at the calibrated threshold and at the best one.
pub fn report(out: &mut impl Write, at_one: &Evaluation, best: &Evaluation) -> std::io::Result<()> {
    writeln!(
        out,
        "threshold  windows  detected  false_pos  precision  recall  window_score"
    )?;
    for (label, e) in [("1.0 (calibrated)", at_one), ("best", best)] {
        writeln!(
            out,
            "{:<10.3} {:>7}  {:>8}  {:>9}  {:>9}  {:>6}  {:>12}   {label}",
            e.threshold,
            e.windows,
            e.detected,
            e.false_positives,
            format_option(e.precision(), 3),
            format_option(e.recall(), 3),
            format_option(e.window_score(), 1),
        )?;
    }
    Ok(())
}

pub fn main(args: Args) -> ExitCode {
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-anomaly backtest: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if !(args.min_deviation.is_finite() && args.min_deviation >= 0.0) {
        return Err("--min-deviation must be a number >= 0".into());
    }
    if let Some(b) = args.band
        && !(b.is_finite() && b > 0.0)
    {
        return Err("--band must be a number > 0".into());
    }
    let series = input::read_series(&args.input).map_err(|e| e.to_string())?;
    let windows: Option<Vec<Window>> = args
        .labels
        .as_ref()
        .map(|p| input::read_windows(p, series.seconds))
        .transpose()
        .map_err(|e| e.to_string())?;
    let interval = args.interval.unwrap_or_else(|| median_step(&series));
    if interval.is_zero() {
        return Err("--interval must be more than 0".into());
    }
    let seasonality = parse_seasonality(&args.seasonality, &series, interval)?;
    let config = detector_config(args.detector, &seasonality, args.band);
    let model = Model::new(&config, args.direction.into(), args.min_deviation, interval);
    let scored = score_series(&model, &series);

    let write_csv = |out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out, "timestamp,value,anomaly_score")?;
        for (p, s) in series.points.iter().zip(&scored) {
            let ts = if series.seconds {
                format_seconds(p.timestamp_ms)
            } else {
                p.timestamp_ms.to_string()
            };
            match s.score {
                Some(score) => writeln!(out, "{ts},{},{score:.6}", p.value)?,
                None => writeln!(out, "{ts},{},", p.value)?,
            }
        }
        out.flush()
    };
    match &args.output {
        Some(path) => {
            let file =
                std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            write_csv(&mut std::io::BufWriter::new(file))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        None => write_csv(&mut std::io::BufWriter::new(std::io::stdout().lock()))
            .map_err(|e| format!("stdout: {e}"))?,
    }

    let mut summary = Vec::new();
    let seasons: Vec<String> = seasonality
        .iter()
        .map(|p| humantime::format_duration(p.0).to_string())
        .collect();
    let _ = writeln!(
        summary,
        "{}: {} points, interval {}, detector {:?}, seasonality [{}], warm-up {} points",
        args.input.display(),
        series.points.len(),
        humantime::format_duration(interval),
        args.detector,
        seasons.join(", "),
        model.warm_up_points(),
    );
    if let Some(windows) = &windows {
        let at_one = eval::evaluate(&scored, windows, 1.0);
        let best = eval::sweep(&scored, windows);
        let _ = report(&mut summary, &at_one, &best);
    }
    let text = String::from_utf8_lossy(&summary);
    if args.output.is_some() {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
    Ok(())
}

fn format_seconds(ms: i64) -> String {
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{:.3}", ms as f64 / 1e3)
    }
}
