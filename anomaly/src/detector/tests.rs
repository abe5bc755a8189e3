//! Key behaviours of every detector, on synthetic series.

use super::*;

const MIN: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;
/// Monday 2026-01-05 00:00 UTC.
const T0: i64 = 1_767_571_200_000;

/// splitmix64 + Box–Muller: deterministic noise without a dependency.
struct Noise(u64);

impl Noise {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (((z ^ (z >> 31)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn yaml(text: &str) -> DetectorConfig {
    serde_yaml::from_str(text).unwrap()
}

fn model(config: &str, direction: Direction, min_deviation: f64) -> Model {
    Model::new(
        &yaml(config),
        direction,
        min_deviation,
        Duration::from_secs(300),
    )
}

fn kinds() -> [&'static str; 4] {
    [
        "kind: robust",
        "kind: extreme",
        "kind: likelihood",
        "kind: ensemble",
    ]
}

/// Feeds `n` points of `f(i)` at 5-minute steps; returns the scores.
fn feed(
    m: &Model,
    s: &mut SeriesState,
    from: i64,
    n: i64,
    f: impl Fn(i64) -> f64,
) -> Vec<Option<Score>> {
    (from..from + n)
        .map(|i| m.score(s, T0 + i * 5 * MIN, f(i)))
        .collect()
}

/// The highest score of `value` held for three points after `state`: a window detector
/// needs a deviation to last.
fn held(m: &Model, state: &SeriesState, ts: i64, value: f64) -> f64 {
    let mut s = state.clone();
    (0..3)
        .map(|i| m.score(&mut s, ts + i * 5 * MIN, value).unwrap().score)
        .fold(0.0, f64::max)
}

fn noisy(seed: u64, n: usize, sd: f64) -> Vec<f64> {
    let mut r = Noise(seed);
    (0..n).map(|_| 100.0 + sd * r.normal()).collect()
}

#[test]
fn warm_up_returns_none_then_scores() {
    for kind in kinds() {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        let values = noisy(1, 200, 1.0);
        let scores = feed(&m, &mut s, 0, 200, |i| values[i as usize]);
        let first = scores.iter().position(Option::is_some).unwrap();
        assert_eq!(first as u32, m.warm_up_points(), "{kind}");
        assert!(scores[first..].iter().all(Option::is_some), "{kind}");
    }
}

#[test]
fn normal_noise_scores_below_one_and_a_spike_above() {
    for kind in ["kind: robust", "kind: ensemble", "kind: extreme"] {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        let values = noisy(2, 3000, 2.0);
        let scores: Vec<f64> = feed(&m, &mut s, 0, 3000, |i| values[i as usize])
            .into_iter()
            .flatten()
            .map(|s| s.score)
            .collect();
        let above = scores.iter().filter(|&&x| x > 1.0).count();
        assert!(
            above * 200 < scores.len(),
            "{kind}: {above} of {} above 1",
            scores.len()
        );
        let spike = m.score(&mut s, T0 + 3000 * 5 * MIN, 100.0 + 40.0).unwrap();
        assert!(spike.score > 1.5, "{kind}: spike scored {}", spike.score);
        assert!(
            spike.upper < 140.0 && spike.lower < spike.expected,
            "{kind}: {spike:?}"
        );
    }
}

#[test]
fn scores_are_continuous_not_clipped() {
    let m = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = m.new_state();
    let values = noisy(3, 1000, 1.0);
    let mut scores: Vec<f64> = feed(&m, &mut s, 0, 1000, |i| values[i as usize])
        .into_iter()
        .flatten()
        .map(|s| s.score)
        .collect();
    // Bigger spikes score higher: ranking is kept above 1.0 too.
    let small = m.score(&mut s, T0 + 1000 * 5 * MIN, 110.0).unwrap().score;
    let big = m.score(&mut s, T0 + 1001 * 5 * MIN, 130.0).unwrap().score;
    assert!(big > small && small > 1.0, "{small} {big}");
    scores.sort_by(f64::total_cmp);
    scores.dedup();
    assert!(scores.len() > 900, "{} distinct", scores.len());
}

#[test]
fn direction_counts_one_side_only() {
    for kind in kinds() {
        let above = model(kind, Direction::Above, 0.0);
        let below = model(kind, Direction::Below, 0.0);
        let (mut sa, mut sb) = (above.new_state(), below.new_state());
        let values = noisy(4, 400, 1.0);
        feed(&above, &mut sa, 0, 400, |i| values[i as usize]);
        feed(&below, &mut sb, 0, 400, |i| values[i as usize]);
        let ts = T0 + 400 * 5 * MIN;
        let dip_above = held(&above, &sa, ts, 50.0);
        let dip_below = held(&below, &sb, ts, 50.0);
        let spike_above = held(&above, &sa, ts, 150.0);
        let spike_below = held(&below, &sb, ts, 150.0);
        assert!(
            dip_above < 1.0 && spike_below < 1.0,
            "{kind}: {dip_above} {spike_below}"
        );
        assert!(
            spike_above > 1.0 && dip_below > 1.0,
            "{kind}: {spike_above} {dip_below}"
        );
    }
}

#[test]
fn min_deviation_ignores_small_deviations() {
    for kind in kinds() {
        // A flat series: without min_deviation any change is enormous.
        let strict = model(kind, Direction::Both, 0.0);
        let lenient = model(kind, Direction::Both, 5.0);
        let (mut a, mut b) = (strict.new_state(), lenient.new_state());
        feed(&strict, &mut a, 0, 300, |_| 10.0);
        feed(&lenient, &mut b, 0, 300, |_| 10.0);
        let ts = T0 + 300 * 5 * MIN;
        assert!(held(&strict, &a, ts, 13.0) > 1.0, "{kind}");
        let small = held(&lenient, &b, ts, 13.0);
        let large = held(&lenient, &b, ts, 40.0);
        assert!(small <= 1.0, "{kind}: {small}");
        assert!(large > 1.0, "{kind}: {large}");
    }
}

#[test]
fn constant_series_has_no_zero_division_and_a_change_scores_high() {
    for kind in kinds() {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        for score in feed(&m, &mut s, 0, 300, |_| 0.0).into_iter().flatten() {
            assert!(
                score.score.is_finite() && score.score <= 1.0,
                "{kind}: {score:?}"
            );
        }
        // The window detector clips each residual, so its score is > 1, not huge.
        let floor = if kind == "kind: likelihood" { 1.0 } else { 1e3 };
        let change = held(&m, &s, T0 + 300 * 5 * MIN, 1.0);
        assert!(change > floor, "{kind}: {change}");
    }
}

#[test]
fn seasonal_profile_learns_the_daily_shape() {
    let shape = |i: i64| {
        let t = (i * 5 * MIN) % DAY_MS;
        100.0 + 80.0 * (2.0 * std::f64::consts::PI * t as f64 / DAY_MS as f64).sin()
    };
    let mut noise = Noise(5);
    let values: Vec<f64> = (0..288 * 6)
        .map(|i| shape(i) + 2.0 * noise.normal())
        .collect();
    let m = model(
        "{ kind: ensemble, seasonality: [1d] }",
        Direction::Both,
        0.0,
    );
    let mut s = m.new_state();
    let scores = feed(&m, &mut s, 0, values.len() as i64, |i| values[i as usize]);
    // Days 5 and 6, peaks and troughs included: no alert, and the expectation follows
    // the shape closely (the peak is at point 72 of each day).
    let late = &scores[288 * 4..];
    let alerts = late.iter().flatten().filter(|s| s.score > 1.0).count();
    assert_eq!(alerts, 0, "the learned daily shape alerted");
    let peak = scores[288 * 5 + 72].unwrap();
    assert!((peak.expected - 180.0).abs() < 8.0, "{peak:?}");
    assert!(peak.upper - peak.lower < 40.0, "{peak:?}");
}

#[test]
fn weekly_profile_and_gaps_are_looked_up_by_timestamp() {
    // Busy weekdays, quiet weekends, meeting at midnight.
    let shape = |t: i64| {
        let weekend = ((t - T0) / DAY_MS) % 7 >= 5;
        let day = (std::f64::consts::PI * ((t - T0) % DAY_MS) as f64 / DAY_MS as f64).sin();
        40.0 + if weekend { 10.0 } else { 60.0 } * day * day
    };
    let m = model(
        "{ kind: robust, seasonality: [1d, 7d] }",
        Direction::Both,
        0.0,
    );
    let mut s = m.new_state();
    let mut noise = Noise(6);
    let mut alerts_week3 = 0;
    for i in 0..288 * 21 {
        let t = T0 + i * 5 * MIN;
        // A day without data on the Wednesday of week three.
        if (288 * 16..288 * 17).contains(&i) {
            continue;
        }
        let score = m.score(&mut s, t, shape(t) + noise.normal());
        if i >= 288 * 14 && score.is_some_and(|s| s.score > 1.0) {
            alerts_week3 += 1;
        }
    }
    assert!(alerts_week3 <= 2, "{alerts_week3} alerts in week three");
}

#[test]
fn a_level_shift_alerts_then_becomes_normal() {
    for kind in ["kind: robust", "kind: ensemble", "kind: likelihood"] {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        let values = noisy(7, 600, 1.0);
        let scores = feed(&m, &mut s, 0, 600, |i| {
            values[i as usize] + if i >= 300 { 20.0 } else { 0.0 }
        });
        let score = |i: usize| scores[i].unwrap().score;
        assert!(
            score(300) > 1.0 || score(305) > 1.0,
            "{kind}: shift not seen"
        );
        // adapt_after is 1h = 12 points; allow the window to clear.
        let late = (340..600).filter(|&i| score(i) > 1.0).count();
        assert!(late <= 2, "{kind}: {late} alerts long after the shift");
    }
}

#[test]
fn the_end_of_a_long_episode_is_not_a_second_anomaly() {
    let m = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = m.new_state();
    let values = noisy(14, 900, 1.0);
    // Three hours at a lower level (longer than adapt_after), then back.
    let scores = feed(&m, &mut s, 0, 900, |i| {
        values[i as usize] - if (400..436).contains(&i) { 30.0 } else { 0.0 }
    });
    let alerts = |range: std::ops::Range<usize>| {
        scores[range]
            .iter()
            .flatten()
            .filter(|s| s.score > 1.0)
            .count()
    };
    assert!(alerts(400..412) >= 10, "the start alerts");
    assert!(alerts(420..436) == 0, "adapted within the episode");
    assert!(
        alerts(436..900) <= 1,
        "the return to normal alerted {}",
        alerts(436..900)
    );
}

#[test]
fn a_variance_increase_alerts() {
    let m = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = m.new_state();
    let values = noisy(8, 600, 1.0);
    let scores = feed(&m, &mut s, 0, 600, |i| {
        let v = values[i as usize];
        if i >= 400 {
            100.0 + (v - 100.0) * 6.0
        } else {
            v
        }
    });
    let alerts = scores[400..430]
        .iter()
        .flatten()
        .filter(|s| s.score > 1.0)
        .count();
    assert!(alerts >= 5, "{alerts}");
}

#[test]
fn counter_resets_do_not_alert_but_a_burst_does() {
    let m = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = m.new_state();
    let mut noise = Noise(9);
    let mut total = 0.0;
    let mut resets = Vec::new();
    for i in 0..2000i64 {
        let mut rate = 100.0 + 10.0 * noise.normal();
        if i % 500 == 499 {
            total = 0.0;
        }
        if i == 1800 {
            rate *= 8.0;
        }
        total += rate.max(0.0);
        let score = m.score(&mut s, T0 + i * 5 * MIN, total);
        if i % 500 == 499 {
            resets.push(score.unwrap());
        }
        if i == 1800 {
            assert!(score.unwrap().score > 1.0, "{score:?}");
        }
    }
    for r in resets {
        assert!(r.score < 1.0, "{r:?}");
    }
}

#[test]
fn a_stuck_value_alerts() {
    let m = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = m.new_state();
    let values = noisy(10, 800, 3.0);
    let scores = feed(&m, &mut s, 0, 800, |i| {
        values[if (500..560).contains(&i) {
            499
        } else {
            i as usize
        }]
    });
    assert!(scores[500..560].iter().flatten().any(|s| s.score > 1.0));
}

#[test]
fn non_finite_values_are_skipped_without_learning() {
    let m = model(
        "{ kind: ensemble, seasonality: [1d] }",
        Direction::Both,
        0.0,
    );
    let mut s = m.new_state();
    let values = noisy(11, 400, 1.0);
    feed(&m, &mut s, 0, 400, |i| values[i as usize]);
    let before = s.clone();
    for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert_eq!(m.score(&mut s, T0 + 400 * 5 * MIN, v), None);
    }
    assert_eq!(s, before);
    // Out-of-order timestamps are ignored too.
    assert_eq!(m.score(&mut s, T0, 100.0), None);
    assert_eq!(s, before);
}

#[test]
fn state_round_trips_through_postcard_and_scoring_continues_identically() {
    for kind in [
        "{ kind: ensemble, seasonality: [1d, 7d] }",
        "kind: robust",
        "kind: extreme",
        "kind: likelihood",
    ] {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        let values = noisy(12, 1000, 1.0);
        feed(&m, &mut s, 0, 500, |i| values[i as usize]);
        let bytes = postcard::to_stdvec(&s).unwrap();
        let mut restored: SeriesState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(restored, s);
        let a = feed(&m, &mut s, 500, 500, |i| values[i as usize]);
        let b = feed(&m, &mut restored, 500, 500, |i| values[i as usize]);
        assert_eq!(a, b, "{kind}");
    }
}

#[test]
fn the_state_of_a_seasonal_ensemble_fits_in_two_kib() {
    let m = model(
        "{ kind: ensemble, seasonality: [1d, 7d] }",
        Direction::Both,
        0.0,
    );
    let mut s = m.new_state();
    let values = noisy(13, 3000, 1.0);
    feed(&m, &mut s, 0, 3000, |i| values[i as usize]);
    let bytes = postcard::to_stdvec(&s).unwrap().len();
    assert!(bytes <= 2048, "{bytes} bytes");
}

#[test]
fn a_state_of_another_kind_starts_over() {
    let robust = model("kind: robust", Direction::Both, 0.0);
    let ensemble = model("kind: ensemble", Direction::Both, 0.0);
    let mut s = robust.new_state();
    feed(&robust, &mut s, 0, 100, |_| 1.0);
    assert_eq!(ensemble.score(&mut s, T0 + 100 * 5 * MIN, 1.0), None);
    assert_eq!(s, {
        let mut fresh = ensemble.new_state();
        ensemble.score(&mut fresh, T0 + 100 * 5 * MIN, 1.0);
        fresh
    });
}

#[test]
fn a_default_state_is_taken_over_by_any_model() {
    for kind in kinds() {
        let m = model(kind, Direction::Both, 0.0);
        let (mut fresh, mut default) = (m.new_state(), SeriesState::default());
        let values = noisy(15, 300, 1.0);
        let a = feed(&m, &mut fresh, 0, 300, |i| values[i as usize]);
        let b = feed(&m, &mut default, 0, 300, |i| values[i as usize]);
        assert_eq!(a, b, "{kind}");
    }
}

#[test]
fn wild_values_and_timestamps_never_panic_or_score_nan() {
    let wild = [
        0.0,
        1e300,
        -1e300,
        5e-324,
        -0.0,
        1e-300,
        7.0,
        f64::MAX,
        f64::MIN,
        3.0,
    ];
    for kind in kinds()
        .into_iter()
        .chain(["{ kind: ensemble, seasonality: [1d, 7d] }"])
    {
        let m = model(kind, Direction::Both, 0.0);
        let mut s = m.new_state();
        let mut noise = Noise(16);
        let mut ts = i64::MIN / 2;
        for i in 0..3000 {
            // Jumps from a millisecond to years, and a few repeats (ignored).
            let jump = (noise.uniform() * 1e6) as i64 * if i % 97 == 0 { 1_000_000 } else { 1 };
            ts += jump;
            let v = wild[(noise.uniform() * wild.len() as f64) as usize % wild.len()];
            if let Some(score) = m.score(&mut s, ts, v) {
                assert!(!score.score.is_nan(), "{kind}: NaN score for {v} at {ts}");
            }
        }
    }
}

#[test]
fn model_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Model>();
    shared::<SeriesState>();
}

#[test]
fn config_kinds_parse_with_defaults_and_reject_unknown_fields() {
    assert_eq!(DetectorConfig::default(), yaml("kind: ensemble"));
    let DetectorConfig::Robust(r) =
        yaml("{ kind: robust, seasonality: [1d, 7d], band: 3, half_life: 2h }")
    else {
        panic!("not robust");
    };
    assert_eq!(r.seasonality.len(), 2);
    assert_eq!(r.half_life, Duration::from_secs(7200));
    assert!(serde_yaml::from_str::<DetectorConfig>("{ kind: robust, bnad: 3 }").is_err());
    assert!(
        serde_yaml::from_str::<DetectorConfig>("{ kind: extreme, seasonality: [1d] }").is_err()
    );
    assert!(serde_yaml::from_str::<DetectorConfig>("{ kind: nope }").is_err());
}

#[test]
fn validation_reports_every_bad_parameter() {
    use vigil_core::config::{Errors, Validate};
    let config = yaml(
        "{ kind: ensemble, seasonality: [30m, 1d, 1d], band: 0, window: 1, half_life: 1s, margin: -1 }",
    );
    let mut errors = Errors::default();
    config.validate("queries.0.detector", &mut errors);
    let text = errors.into_result().unwrap_err().to_string();
    for expected in [
        "queries.0.detector.seasonality: at most two periods",
        "queries.0.detector.seasonality.0: must be at least 1h",
        "queries.0.detector.seasonality.2: is listed twice",
        "queries.0.detector.band:",
        "queries.0.detector.window:",
        "queries.0.detector.half_life:",
        "queries.0.detector.margin:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
