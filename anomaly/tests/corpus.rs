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

/// What the default detector (`ensemble`, the seasonality and direction of `corpus.json`,
/// threshold 1.0) must keep achieving on each shape: windows detected at least, false
/// positives at most, window score at least. Measured values are in DETECTORS.md; the
/// floors leave a margin of about one false positive or ten points of window score.
const FLOORS: &[(&str, usize, usize, f64)] = &[
    ("seasonal_spikes", 4, 7, 85.0),
    ("seasonal_dips", 3, 6, 85.0),
    ("level_shift", 2, 1, 90.0),
    ("trend_change", 1, 1, 90.0),
    ("variance_change", 2, 1, 90.0),
    ("stuck", 2, 2, 85.0),
    ("constant_then_change", 3, 1, 85.0),
    ("counter_resets", 1, 1, 90.0),
    ("gaps", 1, 5, 65.0),
    ("low_volume", 2, 2, 80.0),
    ("weekly_pattern", 2, 6, 80.0),
    ("heavy_tailed_noise", 0, 12, f64::NEG_INFINITY),
];

#[test]
fn the_default_detector_keeps_its_floors_on_every_shape() {
    let shapes = support::corpus::generate();
    assert_eq!(shapes.len(), FLOORS.len());
    let mut failures = Vec::new();
    for (shape, &(name, detected, fp, window_score)) in shapes.iter().zip(FLOORS) {
        assert_eq!(shape.name, name);
        let r = run(shape, Kind::Ensemble);
        let e = r.at_one;
        if e.detected < detected
            || e.false_positives > fp
            || e.window_score().unwrap_or(f64::INFINITY) < window_score
        {
            failures.push(format!(
                "{name}: detected {}/{} (floor {detected}), false positives {} (at most {fp}), window score {:?} (floor {window_score})",
                e.detected,
                e.windows,
                e.false_positives,
                e.window_score()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn scores_are_continuous_on_every_shape() {
    for shape in support::corpus::generate() {
        let r = run(&shape, Kind::Ensemble);
        // A flat series scores (almost) 0 everywhere and integer counts take few values;
        // every other shape must rank its points.
        let floor = match shape.name {
            "constant_then_change" => 10,
            "low_volume" => r.scored / 5,
            _ => r.scored / 2,
        };
        assert!(
            r.distinct_scores >= floor,
            "{}: {} distinct scores over {} points",
            shape.name,
            r.distinct_scores,
            r.scored
        );
    }
}

#[test]
fn the_generator_reproduces_the_committed_corpus() {
    let dir = testdata();
    let shapes = support::corpus::generate();
    for shape in &shapes {
        for (file, text) in [
            (format!("{}.csv", shape.name), &shape.csv),
            (format!("{}.labels.json", shape.name), &shape.labels),
        ] {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap();
            assert!(
                committed == *text,
                "{file} differs from the generator: run `cargo run -p vigil-anomaly --example gen_corpus`"
            );
        }
    }
    let manifest = std::fs::read_to_string(dir.join("corpus.json")).unwrap();
    assert_eq!(manifest, support::corpus::manifest(&shapes));
}

#[test]
fn the_cli_rejects_bad_input_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "timestamp,value\n1767571200,1\n1767571260,oops\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-anomaly"))
        .args(["backtest", "--input"])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.csv:3: `oops` is not a number"),
        "{stderr}"
    );

    let good = testdata().join("level_shift.csv");
    let labels = dir.path().join("labels.json");
    std::fs::write(&labels, "[{\"start\": 1, \"end\": \"x\"}]").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-anomaly"))
        .args(["backtest", "--input"])
        .arg(&good)
        .arg("--labels")
        .arg(&labels)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("labels.json:1:"));
}

#[test]
fn the_cli_writes_scores_and_prints_the_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.csv");
    let data = testdata();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vigil-anomaly"))
        .args(["backtest", "--seasonality", "1d", "--input"])
        .arg(data.join("level_shift.csv"))
        .arg("--labels")
        .arg(data.join("level_shift.labels.json"))
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("window_score") && stdout.contains("best"),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&output).unwrap();
    let mut lines = written.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score"));
    assert_eq!(lines.next(), Some("1767571200,51.218,"));
    assert_eq!(written.lines().count(), 4033);
}
