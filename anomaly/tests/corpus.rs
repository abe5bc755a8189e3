//! The backtest over the labelled corpus in `testdata/`: per-shape floors on what the
//! default detector achieves, continuity of scores, and that the generator reproduces the
//! committed files.

mod support;

use std::path::{Path, PathBuf};

use vigil_anomaly::backtest::eval::{self, Evaluation};
use vigil_anomaly::backtest::{self, Kind, input};
use vigil_anomaly::detector::{Direction, Model, SeasonPeriod};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

struct Run {
    at_one: Evaluation,
    best: Evaluation,
    distinct_scores: usize,
    scored: usize,
}

fn run(shape: &support::corpus::Shape, kind: Kind) -> Run {
    let dir = testdata();
    let series = input::read_series(&dir.join(format!("{}.csv", shape.name))).unwrap();
    let windows = input::read_windows(
        &dir.join(format!("{}.labels.json", shape.name)),
        series.seconds,
    )
    .unwrap();
    let seasonality: Vec<SeasonPeriod> = match shape.seasonality {
        "none" => Vec::new(),
        list => list
            .split(',')
            .map(|p| SeasonPeriod(humantime::parse_duration(p).unwrap()))
            .collect(),
    };
    let direction = match shape.direction {
        "above" => Direction::Above,
        "below" => Direction::Below,
        _ => Direction::Both,
    };
    let config = backtest::detector_config(kind, &seasonality, None);
    let model = Model::new(&config, direction, 0.0, backtest::median_step(&series));
    let scored = backtest::score_series(&model, &series);
    let mut scores: Vec<f64> = scored.iter().filter_map(|s| s.score).collect();
    let count = scores.len();
    scores.sort_by(f64::total_cmp);
    scores.dedup();
    Run {
        at_one: eval::evaluate(&scored, &windows, 1.0),
        best: eval::sweep(&scored, &windows),
        distinct_scores: scores.len(),
        scored: count,
    }
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// Prints the table DETECTORS.md carries (`cargo test -p vigil-anomaly --test corpus --
/// --nocapture table`).
#[test]
fn table() {
    for kind in [
        Kind::Ensemble,
        Kind::Robust,
        Kind::Likelihood,
        Kind::Extreme,
    ] {
        println!("\n{kind:?}");
        println!(
            "| shape | windows | at 1.0: detected / FP | precision | recall | window score | best threshold | best: detected / FP | best window score |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for shape in support::corpus::generate() {
            let r = run(&shape, kind);
            println!(
                "| {} | {} | {} / {} | {} | {} | {} | {:.2} | {} / {} | {} |",
                shape.name,
                r.at_one.windows,
                r.at_one.detected,
                r.at_one.false_positives,
                cell(r.at_one.precision()),
                cell(r.at_one.recall()),
                r.at_one
                    .window_score()
                    .map_or("-".into(), |s| format!("{s:.1}")),
                r.best.threshold,
                r.best.detected,
                r.best.false_positives,
                r.best
                    .window_score()
                    .map_or("-".into(), |s| format!("{s:.1}")),
            );
        }
    }
}
