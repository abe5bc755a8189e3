//! When a series' anomaly becomes an alert, and what Alertmanager is told.
//!
//! Each series walks a small state machine, point by point: `for_points` consecutive
//! points above the threshold open an *episode*; `for_points` consecutive points at or
//! below it close the episode (hysteresis, so a score hovering at the threshold does not
//! flap). What Alertmanager and Grafana know (`notified`, `annotation`) is reconciled with
//! the episodes once per evaluation, so a catch-up over many points sends one update, and a
//! failed request is simply retried at the next evaluation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::detector::Score;
use crate::http::{Endpoint, header_map};

/// A scored point as remembered for alert texts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub timestamp_ms: i64,
    pub value: f64,
    pub score: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Observation {
    pub fn new(timestamp_ms: i64, value: f64, score: &Score) -> Observation {
        Observation {
            timestamp_ms,
            value,
            score: score.score,
            expected: score.expected,
            lower: score.lower,
            upper: score.upper,
        }
    }
}

/// One series' alerting state; snapshotted with the detector state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Consecutive points above the threshold.
    pub above: u32,
    /// Consecutive points at or below it, while an episode is open.
    pub below: u32,
    /// Time of the first point of the open episode.
    pub since: Option<i64>,
    /// The most anomalous point of the open episode's latest evaluation, or the last point.
    pub last: Option<Observation>,
    /// Alertmanager was told this series fires (and has not been told it resolved).
    pub notified: bool,
    /// Start of the episode Alertmanager was told about.
    pub notified_since: Option<i64>,
    /// The Grafana annotation of the notified episode.
    pub annotation: Option<i64>,
}

impl AlertState {
    /// Feeds one scored point.
    pub fn observe(&mut self, observation: Observation, threshold: f64, for_points: u32) {
        self.last = Some(observation);
        if observation.score > threshold {
            self.above = self.above.saturating_add(1);
            self.below = 0;
            if self.since.is_none() && self.above >= for_points {
                self.since = Some(observation.timestamp_ms);
            }
        } else {
            self.above = 0;
            if self.since.is_some() {
                self.below = self.below.saturating_add(1);
                if self.below >= for_points {
                    self.since = None;
                    self.below = 0;
                }
            }
        }
    }

    /// Ends an open episode of a series that stopped reporting.
    pub fn end_episode(&mut self) {
        self.since = None;
        self.above = 0;
        self.below = 0;
    }

    pub fn is_anomalous(&self) -> bool {
        self.since.is_some()
    }
}

/// What a query's alerts carry besides the series' labels.
pub struct AlertTemplate<'a> {
    pub query: &'a str,
    pub expr: &'a str,
    pub severity: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub threshold: f64,
    /// Grafana base URL and datasource uid for `generatorURL`.
    pub grafana: Option<(&'a str, Option<&'a str>)>,
}

/// Alertmanager's `postableAlert`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL", skip_serializing_if = "String::is_empty")]
    pub generator_url: String,
}

impl AlertTemplate<'_> {
    /// The alert's labels: the series' labels (without `__name__`), the query's extra
    /// labels, and `alertname`, `severity`, `query`.
    pub fn labels(&self, series: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut labels: BTreeMap<String, String> = series
            .iter()
            .filter(|(k, _)| k.as_str() != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.extend(self.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert("alertname".into(), self.query.into());
        labels.insert("severity".into(), self.severity.into());
        labels.insert("query".into(), self.query.into());
        labels
    }

    /// `<query>: <series> is anomalous`.
    fn summary(&self, series: &BTreeMap<String, String>) -> String {
        format!("{}: {} is anomalous", self.query, describe_labels(series))
    }

    /// The value against the expected range, and the score against the threshold.
    fn description(&self, o: &Observation) -> String {
        format!(
            "value {} is outside the expected range [{}, {}] (expected {}); anomaly score {:.2} (threshold {})",
            number(o.value),
            number(o.lower),
            number(o.upper),
            number(o.expected),
            o.score,
            self.threshold
        )
    }

    /// The text of a series' Grafana annotation: the alert's summary and description.
    pub fn annotation_text(
        &self,
        series: &BTreeMap<String, String>,
        last: Option<&Observation>,
    ) -> String {
        match last {
            Some(o) => format!("{}: {}", self.summary(series), self.description(o)),
            None => self.summary(series),
        }
    }

    /// A series' alert: firing until `ends_at`.
    pub fn series_alert(
        &self,
        series: &BTreeMap<String, String>,
        starts_at_ms: i64,
        ends_at: SystemTime,
        last: Option<&Observation>,
    ) -> PostableAlert {
        let mut annotations = BTreeMap::from([("summary".to_string(), self.summary(series))]);
        if let Some(o) = last {
            annotations.insert("description".into(), self.description(o));
            for (key, v) in [
                ("value", o.value),
                ("expected", o.expected),
                ("lower", o.lower),
                ("upper", o.upper),
                ("score", o.score),
            ] {
                annotations.insert(key.into(), number(v));
            }
        }
        PostableAlert {
            labels: self.labels(series),
            annotations,
            starts_at: rfc3339(time_of(starts_at_ms)),
            ends_at: rfc3339(ends_at),
            generator_url: self.generator_url(starts_at_ms),
        }
    }

    /// The one alert standing for every anomalous series beyond `max_alerts`.
    pub fn overflow_alert(
        &self,
        count: usize,
        starts_at_ms: i64,
        ends_at: SystemTime,
    ) -> PostableAlert {
        let mut labels = self.labels(&BTreeMap::new());
        labels.insert("vigil_overflow".into(), "true".into());
        PostableAlert {
            labels,
            annotations: BTreeMap::from([
                (
                    "summary".to_string(),
                    format!(
                        "{}: {count} more series are anomalous than are alerted individually",
                        self.query
                    ),
                ),
                (
                    "description".to_string(),
                    format!(
                        "max_alerts was reached for {}; see the Vigil / Anomalies dashboard for every series",
                        self.query
                    ),
                ),
            ]),
            starts_at: rfc3339(time_of(starts_at_ms)),
            ends_at: rfc3339(ends_at),
            generator_url: self.generator_url(starts_at_ms),
        }
    }

    /// An explore link showing the query around the episode's start, when Grafana is
    /// configured.
    fn generator_url(&self, around_ms: i64) -> String {
        let Some((base, datasource)) = self.grafana else {
            return String::new();
        };
        let mut query = serde_json::json!({"refId": "A", "expr": self.expr});
        if let Some(uid) = datasource {
            query["datasource"] = serde_json::json!({"type": "prometheus", "uid": uid});
        }
        let mut pane = serde_json::json!({
            "queries": [query],
            "range": {"from": (around_ms - 3_600_000).to_string(), "to": (around_ms + 3_600_000).to_string()},
        });
        if let Some(uid) = datasource {
            pane["datasource"] = serde_json::json!(uid);
        }
        let panes = serde_json::json!({ "vigil": pane }).to_string();
        let mut url = match url::Url::parse(base).and_then(|u| u.join("explore")) {
            Ok(u) => u,
            Err(_) => return String::new(),
        };
        url.query_pairs_mut()
            .append_pair("schemaVersion", "1")
            .append_pair("panes", &panes);
        url.to_string()
    }
}

/// `service="api", instance="a:1"` for texts; `{}` for a series without labels.
pub fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    let shown: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "__name__")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    match (labels.get("__name__"), shown.is_empty()) {
        (Some(name), true) => name.clone(),
        (Some(name), false) => format!("{name}{{{}}}", shown.join(", ")),
        (None, _) => format!("{{{}}}", shown.join(", ")),
    }
}

/// A number for humans: up to 4 significant decimals, no trailing zeros.
fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "-0" => "0".into(),
        t => t.into(),
    }
}

pub fn time_of(ms: i64) -> SystemTime {
    match u64::try_from(ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Posts alerts to Alertmanager's `/api/v2/alerts`.
#[derive(Clone)]
pub struct AlertmanagerClient {
    endpoint: Endpoint,
}

/// Alerts per request.
const ALERTS_PER_REQUEST: usize = 500;
const ALERTS: &str = "/api/v2/alerts";

impl AlertmanagerClient {
    pub fn new(
        config: &crate::config::Alertmanager,
        timeout: Duration,
    ) -> Result<AlertmanagerClient, String> {
        let mut headers = header_map(&config.headers)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(AlertmanagerClient {
            endpoint: Endpoint::new(&config.endpoint, headers, timeout, config.tls.as_ref())?,
        })
    }

    pub async fn post(&self, alerts: &[PostableAlert]) -> Result<(), String> {
        for chunk in alerts.chunks(ALERTS_PER_REQUEST) {
            let body = serde_json::to_vec(chunk).map_err(|e| e.to_string())?;
            self.endpoint.call(Method::POST, ALERTS, body).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ts: i64, score: f64) -> Observation {
        Observation {
            timestamp_ms: ts,
            value: 10.0 * score,
            score,
            expected: 5.0,
            lower: 3.0,
            upper: 7.0,
        }
    }

    #[test]
    fn an_episode_opens_after_for_points_and_closes_after_as_many_normal_points() {
        let mut state = AlertState::default();
        state.observe(point(1, 2.0), 1.0, 2);
        assert!(!state.is_anomalous(), "one point is not enough");
        state.observe(point(2, 2.0), 1.0, 2);
        assert_eq!(state.since, Some(2));
        state.observe(point(3, 0.5), 1.0, 2);
        assert!(state.is_anomalous(), "one normal point does not resolve");
        state.observe(point(4, 3.0), 1.0, 2);
        state.observe(point(5, 0.5), 1.0, 2);
        state.observe(point(6, 0.5), 1.0, 2);
        assert!(!state.is_anomalous());
        state.observe(point(7, 1.0), 1.0, 2);
        state.observe(point(8, 1.0), 1.0, 2);
        assert!(!state.is_anomalous(), "the threshold itself is normal");
    }

    #[test]
    fn a_single_spike_does_not_fire_with_for_two() {
        let mut state = AlertState::default();
        for (ts, score) in [(1, 0.2), (2, 9.0), (3, 0.3), (4, 8.0), (5, 0.1)] {
            state.observe(point(ts, score), 1.0, 2);
            assert!(!state.is_anomalous());
        }
    }

    #[test]
    fn series_alert_has_labels_texts_and_a_grafana_link() {
        let extra = BTreeMap::from([("team".to_string(), "web".to_string())]);
        let template = AlertTemplate {
            query: "HighErrorRate",
            expr: "sum(rate(x[5m])) by (service)",
            severity: "critical",
            labels: &extra,
            threshold: 1.0,
            grafana: Some(("http://grafana:3000/", Some("vm"))),
        };
        let series = BTreeMap::from([
            ("__name__".to_string(), "x".to_string()),
            ("service".to_string(), "api".to_string()),
        ]);
        let o = point(1_700_000_000_000, 2.5);
        let alert = template.series_alert(
            &series,
            1_700_000_000_000,
            time_of(1_700_000_240_000),
            Some(&o),
        );
        assert_eq!(
            alert.labels,
            BTreeMap::from([
                ("alertname".to_string(), "HighErrorRate".to_string()),
                ("query".to_string(), "HighErrorRate".to_string()),
                ("service".to_string(), "api".to_string()),
                ("severity".to_string(), "critical".to_string()),
                ("team".to_string(), "web".to_string()),
            ])
        );
        assert_eq!(
            alert.annotations["summary"],
            "HighErrorRate: x{service=\"api\"} is anomalous"
        );
        assert_eq!(
            alert.annotations["description"],
            "value 25 is outside the expected range [3, 7] (expected 5); anomaly score 2.50 (threshold 1)"
        );
        assert_eq!(alert.starts_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(alert.ends_at, "2023-11-14T22:17:20.000Z");
        let url = url::Url::parse(&alert.generator_url).unwrap();
        assert_eq!(url.path(), "/explore");
        let panes = url
            .query_pairs()
            .find(|(k, _)| k == "panes")
            .map(|(_, v)| v.into_owned())
            .unwrap();
        let panes: serde_json::Value = serde_json::from_str(&panes).unwrap();
        assert_eq!(panes["vigil"]["queries"][0]["expr"], template.expr);
        assert_eq!(panes["vigil"]["datasource"], "vm");
        let json = serde_json::to_value(&alert).unwrap();
        assert!(json.get("generatorURL").is_some(), "{json}");
    }

    #[test]
    fn overflow_alert_is_marked_and_counts() {
        let none = BTreeMap::new();
        let template = AlertTemplate {
            query: "Q",
            expr: "up",
            severity: "warning",
            labels: &none,
            threshold: 1.0,
            grafana: None,
        };
        let alert = template.overflow_alert(980, 0, UNIX_EPOCH);
        assert_eq!(alert.labels["vigil_overflow"], "true");
        assert_eq!(alert.labels["alertname"], "Q");
        assert!(alert.annotations["summary"].contains("980 more series"));
        assert!(alert.generator_url.is_empty());
    }
}
