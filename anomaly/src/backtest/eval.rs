//! Window-based evaluation of a scored series, NAB-style.
//!
//! For a threshold:
//! - each labelled window whose span holds a point above the threshold is *detected*, worth
//!   `1 − 0.5 × (how far into the window the first such point is)`: 1.0 at its start,
//!   0.5 at its end, so earlier is better;
//! - each missed window costs 1.0;
//! - each run of consecutive flagged points outside every window is a false positive and
//!   costs [`FP_COST`] per started [`FP_RUN_POINTS`] points (one alert, renewed hourly at
//!   a 5-minute step).
//!
//! The window score normalises the sum so that detecting nothing is 0 and detecting every
//! window at its start with no false positive is 100 (false positives can push it below 0).
//! Precision is `detected / (detected + false positives)`, recall `detected / windows`.

use super::input::Window;

/// A false alarm costs this fraction of a missed anomaly (NAB's standard profile).
pub const FP_COST: f64 = 0.11;
/// A false alarm costs [`FP_COST`] again for every further this many flagged points, so
/// flagging everything does not pay.
pub const FP_RUN_POINTS: usize = 12;

/// One scored point; `None` while the detector warmed up or skipped the value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub timestamp_ms: i64,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub threshold: f64,
    pub windows: usize,
    pub detected: usize,
    pub false_positives: usize,
    /// Sum of rewards and costs (see the module doc).
    pub raw: f64,
}

impl Evaluation {
    /// `None` when nothing was flagged.
    pub fn precision(&self) -> Option<f64> {
        let flagged = self.detected + self.false_positives;
        (flagged > 0).then(|| self.detected as f64 / flagged as f64)
    }

    /// `None` without labelled windows.
    pub fn recall(&self) -> Option<f64> {
        (self.windows > 0).then(|| self.detected as f64 / self.windows as f64)
    }

    /// 0 = flags nothing, 100 = every window at its start and no false positive; `None`
    /// without labelled windows.
    pub fn window_score(&self) -> Option<f64> {
        let n = self.windows as f64;
        (self.windows > 0).then(|| 100.0 * (self.raw + n) / (2.0 * n))
    }
}

/// Evaluates one threshold.
pub fn evaluate(points: &[Scored], windows: &[Window], threshold: f64) -> Evaluation {
    let mut first_hit: Vec<Option<i64>> = vec![None; windows.len()];
    let mut false_positives = 0;
    let mut fp_cost = 0.0;
    // Flagged points in the current run outside every window.
    let mut outside_run = 0usize;
    let mut end_run = |run: &mut usize| {
        if *run > 0 {
            false_positives += 1;
            fp_cost += FP_COST * run.div_ceil(FP_RUN_POINTS) as f64;
            *run = 0;
        }
    };
    let mut w = 0;
    for p in points {
        while w < windows.len() && windows[w].end_ms < p.timestamp_ms {
            w += 1;
        }
        let inside = windows[w..]
            .iter()
            .take_while(|win| win.start_ms <= p.timestamp_ms)
            .position(|win| win.end_ms >= p.timestamp_ms)
            .map(|i| w + i);
        let Some(score) = p.score else {
            continue;
        };
        match (score > threshold, inside) {
            (true, Some(i)) => {
                end_run(&mut outside_run);
                first_hit[i].get_or_insert(p.timestamp_ms);
            }
            (true, None) => outside_run += 1,
            (false, _) => end_run(&mut outside_run),
        }
    }
    end_run(&mut outside_run);
    let mut raw = -fp_cost;
    let mut detected = 0;
    for (win, hit) in windows.iter().zip(&first_hit) {
        match hit {
            Some(t) => {
                detected += 1;
                let span = (win.end_ms - win.start_ms).max(1) as f64;
                raw += 1.0 - 0.5 * (t - win.start_ms) as f64 / span;
            }
            None => raw -= 1.0,
        }
    }
    Evaluation {
        threshold,
        windows: windows.len(),
        detected,
        false_positives,
        raw,
    }
}

/// The threshold (among up to 200 quantiles of the scores, and 1.0) with the best raw
/// score; ties go to the threshold nearest 1.0.
pub fn sweep(points: &[Scored], windows: &[Window]) -> Evaluation {
    let mut scores: Vec<f64> = points.iter().filter_map(|p| p.score).collect();
    scores.sort_by(f64::total_cmp);
    scores.dedup();
    let mut candidates = vec![1.0];
    let steps = scores.len().min(200);
    for i in 0..steps {
        candidates.push(scores[i * scores.len() / steps]);
    }
    if let Some(&max) = scores.last() {
        candidates.push(max);
    }
    let mut best = evaluate(points, windows, 1.0);
    for t in candidates {
        let e = evaluate(points, windows, t);
        let nearer = (t.ln().abs()) < best.threshold.ln().abs();
        if e.raw > best.raw + 1e-12 || ((e.raw - best.raw).abs() <= 1e-12 && nearer) {
            best = e;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(scores: &[f64]) -> Vec<Scored> {
        scores
            .iter()
            .enumerate()
            .map(|(i, &s)| Scored {
                timestamp_ms: i as i64 * 1000,
                score: Some(s),
            })
            .collect()
    }

    fn window(a: i64, b: i64) -> Window {
        Window {
            start_ms: a * 1000,
            end_ms: b * 1000,
        }
    }

    #[test]
    fn earlier_detection_scores_higher_and_false_positives_cost() {
        let windows = [window(4, 8)];
        let early = evaluate(
            &series(&[0., 0., 0., 0., 2., 0., 0., 0., 0., 0.]),
            &windows,
            1.0,
        );
        let late = evaluate(
            &series(&[0., 0., 0., 0., 0., 0., 0., 2., 0., 0.]),
            &windows,
            1.0,
        );
        assert_eq!((early.detected, early.false_positives), (1, 0));
        assert!(early.window_score().unwrap() > late.window_score().unwrap());
        assert_eq!(early.window_score(), Some(100.0));
        let noisy = evaluate(
            &series(&[2., 0., 2., 2., 2., 0., 0., 0., 0., 2.]),
            &windows,
            1.0,
        );
        // Runs outside the window (0, 2..=3, 9) are false positives; 4 is the detection.
        assert_eq!((noisy.detected, noisy.false_positives), (1, 3));
        assert_eq!(noisy.precision(), Some(0.25));
        let missed = evaluate(&series(&[0.; 10]), &windows, 1.0);
        assert_eq!(
            (missed.recall(), missed.window_score()),
            (Some(0.0), Some(0.0))
        );
    }

    #[test]
    fn sweep_finds_the_separating_threshold() {
        let windows = [window(4, 5)];
        let best = sweep(&series(&[1.5, 1.2, 1.4, 0.3, 3.0, 2.0, 0.1]), &windows);
        assert!(best.threshold >= 1.5 && best.threshold < 3.0, "{best:?}");
        assert_eq!((best.detected, best.false_positives), (1, 0));
    }
}
