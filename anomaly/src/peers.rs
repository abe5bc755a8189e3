//! "This series is unlike its peers": one timestamp, all series of a query.
//!
//! [`score_group`] scores each value against the group's median and median absolute
//! deviation (MAD), with the same calibration as the detectors: `> 1.0` is anomalous,
//! continuous, never clipped. It is stateless and `O(n log n)` in the group size, so it
//! runs beside the per-series [`crate::detector::Model`], not inside its O(1) state.
//!
//! `augurs-outlier` offers MAD and DBSCAN outlier detection over groups of series, but it
//! works on windows of history and pulls `rv` and a second `rand`; the median/MAD rule
//! below is what a single timestamp needs.

/// Robust standard deviations from the group's median at which a value scores 1.0.
pub const DEFAULT_BAND: f64 = 5.0;
/// MAD × this estimates a Gaussian standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;
/// Fewer finite values than this and nobody is unlike the others.
const MIN_GROUP: usize = 3;

/// Scores every value of one timestamp against its group (band [`DEFAULT_BAND`]). A value
/// that is not finite scores `NaN`; a group of fewer than three finite values scores 0.
pub fn score_group(values: &[f64]) -> Vec<f64> {
    score_group_with_band(values, DEFAULT_BAND)
}

/// [`score_group`] with another band (robust standard deviations at score 1.0).
pub fn score_group_with_band(values: &[f64], band: f64) -> Vec<f64> {
    let mut finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() < MIN_GROUP {
        return values
            .iter()
            .map(|v| if v.is_finite() { 0.0 } else { f64::NAN })
            .collect();
    }
    let median = median_in(&mut finite);
    let mut deviations: Vec<f64> = finite.iter().map(|v| (v - median).abs()).collect();
    let mad = median_in(&mut deviations);
    // More than half the group equal: the MAD is 0, fall back to the mean deviation, and
    // for a group of identical values to a relative floor, so one differing series still
    // scores high and finitely.
    let mean_deviation = deviations.iter().sum::<f64>() / deviations.len() as f64;
    let sigma = if mad > 0.0 {
        MAD_TO_SIGMA * mad
    } else {
        (1.2533 * mean_deviation)
            .max(1e-9 * median.abs())
            .max(f64::MIN_POSITIVE)
    };
    let half = band.max(f64::MIN_POSITIVE) * sigma;
    values
        .iter()
        .map(|v| {
            if v.is_finite() {
                (v - median).abs() / half
            } else {
                f64::NAN
            }
        })
        .collect()
}

fn median_in(values: &mut [f64]) -> f64 {
    let n = values.len();
    let mid = n / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        upper
    } else {
        let lower = values[..mid]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        0.5 * (lower + upper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_odd_one_out_scores_above_one_and_the_rest_below() {
        let mut values: Vec<f64> = (0..50).map(|i| 100.0 + (i % 7) as f64).collect();
        values.push(180.0);
        let scores = score_group(&values);
        assert!(scores[50] > 1.0, "{}", scores[50]);
        assert!(scores[..50].iter().all(|&s| s < 1.0));
        // Ranking is kept: further away scores higher.
        values[50] = 300.0;
        assert!(score_group(&values)[50] > scores[50]);
    }

    #[test]
    fn identical_peers_nan_and_tiny_groups() {
        // Twenty identical peers: the MAD is 0, the mean deviation takes over.
        let mut values = vec![5.0; 20];
        values.push(6.0);
        let scores = score_group(&values);
        assert!(scores[20] > 1.0 && scores[20].is_finite(), "{}", scores[20]);
        assert_eq!(&scores[..20], &[0.0; 20]);
        let scores = score_group(&[1.0, f64::NAN, 2.0]);
        assert!(scores[1].is_nan() && scores[0] == 0.0);
        assert!(score_group(&[]).is_empty());
        let all_same = score_group(&[0.0, 0.0, 0.0]);
        assert_eq!(all_same, vec![0.0; 3]);
    }
}
