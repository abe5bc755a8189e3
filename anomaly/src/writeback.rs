//! Writing scores and bands back to VictoriaMetrics through `/api/v1/import` (JSON lines:
//! one object per series with `metric`, `values`, `timestamps`).

use serde::Serialize;
use std::collections::BTreeMap;

use crate::detector::Score;

/// Bodies are cut at about this size, so one large evaluation is several requests.
const MAX_BODY_BYTES: usize = 8 << 20;

/// The four series written for every scored series.
pub const SERIES: [&str; 4] = [
    "anomaly_score",
    "anomaly_expected",
    "anomaly_lower",
    "anomaly_upper",
];

/// The scored points of one input series, ready to be written back.
pub struct Scored<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub points: &'a [(i64, Score)],
}

#[derive(Serialize)]
struct Line<'a> {
    metric: BTreeMap<&'a str, &'a str>,
    values: Vec<f64>,
    timestamps: Vec<i64>,
}

/// Encodes `scored` for `query` as JSON lines, cut into bodies of about `MAX_BODY_BYTES`.
/// The input series' labels are kept, except `__name__`, which becomes the score's name;
/// `query` names the query.
pub fn encode(query: &str, scored: &[Scored<'_>]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = Vec::new();
    for series in scored.iter().filter(|s| !s.points.is_empty()) {
        for (i, name) in SERIES.iter().enumerate() {
            let mut metric: BTreeMap<&str, &str> = series
                .labels
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__" && k.as_str() != "query")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            metric.insert("__name__", name);
            metric.insert("query", query);
            // Non-finite values have no JSON number; they are left out.
            let (timestamps, values) = series
                .points
                .iter()
                .map(|(t, s)| (*t, [s.score, s.expected, s.lower, s.upper][i]))
                .filter(|(_, v)| v.is_finite())
                .unzip();
            let line = Line {
                metric,
                values,
                timestamps,
            };
            // A map of strings and finite floats always serialises.
            if serde_json::to_writer(&mut body, &line).is_ok() {
                body.push(b'\n');
            }
        }
        if body.len() >= MAX_BODY_BYTES {
            bodies.push(std::mem::take(&mut body));
        }
    }
    if !body.is_empty() {
        bodies.push(body);
    }
    bodies
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_lines_per_series_with_the_input_labels_and_the_query() {
        let labels = BTreeMap::from([
            ("__name__".to_string(), "latency".to_string()),
            ("service".to_string(), "api".to_string()),
        ]);
        let score = |s: f64| Score {
            score: s,
            expected: 10.0,
            lower: 8.0,
            upper: 12.0,
        };
        let scored = [Scored {
            labels: &labels,
            points: &[(1000, score(0.5)), (2000, score(f64::NAN))],
        }];
        let bodies = encode("Latency", &scored);
        assert_eq!(bodies.len(), 1);
        let text = String::from_utf8(bodies[0].clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0]["metric"],
            serde_json::json!({"__name__": "anomaly_score", "query": "Latency", "service": "api"})
        );
        assert_eq!(lines[0]["values"], serde_json::json!([0.5]));
        assert_eq!(lines[0]["timestamps"], serde_json::json!([1000]));
        assert_eq!(lines[3]["metric"]["__name__"], "anomaly_upper");
        assert_eq!(lines[3]["values"], serde_json::json!([12.0, 12.0]));
        assert_eq!(lines[3]["timestamps"], serde_json::json!([1000, 2000]));
    }
}
