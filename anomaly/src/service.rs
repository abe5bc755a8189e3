//! The evaluation loop: every `interval`, each query reads its new points, scores them in
//! time order, writes the scores back, and reconciles its alerts and annotations.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;

use crate::alerts::{AlertState, AlertTemplate, AlertmanagerClient, Observation, PostableAlert};
use crate::config::{Config, Query};
use crate::detector::Model;
use crate::grafana::GrafanaClient;
use crate::http::{Endpoint, header_map};
use crate::reader::{Reader, Series};
use crate::state::{QueryMeta, QuerySnapshot, QueryState, SeriesEntry};
use crate::telemetry::Telemetry;
use crate::writeback::Scored;

/// Points per series in one range query: under VictoriaMetrics' default
/// `-search.maxPointsPerTimeseries` (30,000).
const MAX_STEPS_PER_READ: i64 = 10_000;
/// Samples (series × points) in one range query, bounding the answer's size.
const MAX_SAMPLES_PER_READ: i64 = 2_000_000;
/// A series absent this many intervals ends its open anomaly episode.
const ABSENT_ENDS_EPISODE: i64 = 5;
/// Write-back attempts per evaluation before its scores are given up (counted).
const WRITE_ATTEMPTS: u32 = 3;

/// The sinks an evaluation reports to.
pub struct Sinks {
    /// The write-back import endpoint.
    pub writer: Option<Endpoint>,
    pub alertmanager: Option<AlertmanagerClient>,
    pub grafana: Option<GrafanaClient>,
}

/// One query's model, series and progress.
pub struct QueryRuntime {
    pub query: Query,
    model: Model,
    step: Duration,
    backfill: Duration,
    delay: Duration,
    ends_after: Duration,
    grafana: Option<(String, Option<String>)>,
    pub meta: QueryMeta,
    pub series: HashMap<String, SeriesEntry>,
}

/// The fingerprint of what a query's state depends on.
fn fingerprint(query: &Query, interval: Duration) -> String {
    format!(
        "{}\u{1f}{:?}\u{1f}{:?}\u{1f}{}\u{1f}{}",
        query.expr,
        query.detector,
        query.direction,
        query.min_deviation,
        interval.as_millis()
    )
}

/// A stable key for a label set.
fn series_key(labels: &BTreeMap<String, String>) -> String {
    let mut key = String::new();
    for (k, v) in labels {
        key.push_str(k);
        key.push('\u{1f}');
        key.push_str(v);
        key.push('\u{1e}');
    }
    key
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Steps per range query for `series` series, within both read bounds.
fn read_steps(series: usize) -> i64 {
    MAX_STEPS_PER_READ.min((MAX_SAMPLES_PER_READ / (series as i64).max(1)).max(1))
}

fn align_down(ms: i64, step_ms: i64) -> i64 {
    ms.div_euclid(step_ms) * step_ms
}

impl QueryRuntime {
    /// A query's runtime, restored from `saved` when it was learned with the same settings.
    pub fn new(config: &Config, query: &Query, saved: Option<QuerySnapshot>) -> QueryRuntime {
        let fingerprint = fingerprint(query, config.interval);
        let model = Model::new(
            &query.detector,
            query.direction,
            query.min_deviation,
            config.interval,
        );
        let (meta, series) = match saved {
            Some(saved) if saved.meta.fingerprint == fingerprint => {
                let series = saved
                    .series
                    .into_iter()
                    .map(|entry| (series_key(&entry.labels), entry))
                    .collect();
                (saved.meta, series)
            }
            Some(_) => {
                tracing::warn!(
                    query = %query.name,
                    "the saved state was learned with other settings; warming up again"
                );
                (QueryMeta::default(), HashMap::new())
            }
            None => (QueryMeta::default(), HashMap::new()),
        };
        QueryRuntime {
            query: query.clone(),
            model,
            step: config.interval,
            backfill: config.backfill,
            delay: config.delay,
            ends_after: config.interval
                * config
                    .alertmanager
                    .as_ref()
                    .map_or(4, |a| a.ends_after_intervals),
            grafana: config
                .grafana
                .as_ref()
                .map(|g| (g.endpoint.clone(), g.datasource_uid.clone())),
            meta: QueryMeta {
                fingerprint,
                ..meta
            },
            series,
        }
    }

    /// The query's state, to be saved.
    pub fn state(&self) -> QueryState<'_> {
        QueryState {
            meta: &self.meta,
            series: self.series.values().collect(),
        }
    }

    /// Reads and scores every step not scored yet, up to `now_ms - delay`.
    pub async fn evaluate(
        &mut self,
        now_ms: i64,
        reader: &Reader,
        sinks: &Sinks,
        telemetry: &Telemetry,
    ) {
        let name = self.query.name.clone();
        let started = Instant::now();
        let step_ms = self.step.as_millis() as i64;
        let end = align_down(now_ms - self.delay.as_millis() as i64, step_ms);
        let oldest = align_down(end - self.backfill.as_millis() as i64, step_ms);
        let mut start = match self.meta.scored_until {
            Some(t) => (t + step_ms).max(oldest),
            None => {
                telemetry.warmups.with_label_values(&[&name]).inc();
                tracing::info!(query = %name, from_ms = oldest, "no saved state: warming up from history");
                oldest
            }
        };
        let mut steps_per_read = read_steps(self.series.len());
        while start <= end {
            let chunk_end = end.min(start + (steps_per_read - 1) * step_ms);
            let series = match reader
                .query_range(&self.query.expr, start, chunk_end, self.step)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    telemetry.query_errors.with_label_values(&[&name]).inc();
                    tracing::warn!(query = %name, error = %e, "evaluation failed; retried at the next interval");
                    break;
                }
            };
            let scored = tokio::task::block_in_place(|| self.score(&series, chunk_end, telemetry));
            self.write_back(&scored, sinks, telemetry).await;
            self.meta.scored_until = Some(chunk_end);
            start = chunk_end + step_ms;
            steps_per_read = read_steps(series.len());
        }
        self.forget_absent(end, telemetry);
        telemetry
            .series
            .with_label_values(&[&name])
            .set(self.series.len() as i64);
        telemetry
            .evaluation_duration
            .with_label_values(&[&name])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Scores the points newer than each series' last, in time order. Returns the scored
    /// points per series key.
    fn score(
        &mut self,
        series: &[Series],
        read_until: i64,
        telemetry: &Telemetry,
    ) -> Vec<(String, Vec<(i64, crate::detector::Score)>)> {
        let name = &self.query.name;
        let for_points = self.query.for_points(self.step);
        let mut over_limit = 0i64;
        let mut scored_points = 0u64;
        let mut anomalous_points = 0u64;
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let key = series_key(&s.labels);
            if !self.series.contains_key(&key) {
                if self.series.len() >= self.query.max_series {
                    over_limit += 1;
                    continue;
                }
                self.series.insert(
                    key.clone(),
                    SeriesEntry {
                        labels: s.labels.clone(),
                        detector: self.model.new_state(),
                        alert: AlertState::default(),
                        last_ts: i64::MIN,
                    },
                );
            }
            let Some(entry) = self.series.get_mut(&key) else {
                continue;
            };
            let mut points = Vec::new();
            for &(ts, value) in s.points.iter().filter(|(ts, _)| *ts <= read_until) {
                if ts <= entry.last_ts {
                    continue;
                }
                entry.last_ts = ts;
                if let Some(score) = self.model.score(&mut entry.detector, ts, value) {
                    scored_points += 1;
                    if score.score > self.query.threshold {
                        anomalous_points += 1;
                    }
                    entry.alert.observe(
                        Observation::new(ts, value, &score),
                        self.query.threshold,
                        for_points,
                    );
                    points.push((ts, score));
                }
            }
            if !points.is_empty() {
                out.push((key, points));
            }
        }
        telemetry
            .points_scored
            .with_label_values(&[name])
            .inc_by(scored_points);
        telemetry
            .points_anomalous
            .with_label_values(&[name])
            .inc_by(anomalous_points);
        telemetry
            .series_over_limit
            .with_label_values(&[name])
            .set(over_limit);
        out
    }

    async fn write_back(
        &self,
        scored: &[(String, Vec<(i64, crate::detector::Score)>)],
        sinks: &Sinks,
        telemetry: &Telemetry,
    ) {
        let Some(writer) = &sinks.writer else {
            return;
        };
        let scored: Vec<Scored<'_>> = scored
            .iter()
            .filter_map(|(key, points)| {
                self.series.get(key).map(|entry| Scored {
                    labels: &entry.labels,
                    points,
                })
            })
            .collect();
        let samples: usize = scored.iter().map(|s| s.points.len() * 4).sum();
        for body in crate::writeback::encode(&self.query.name, &scored) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match writer.call(Method::POST, "", body.clone()).await {
                    Ok(_) => break,
                    Err(e) if attempt < WRITE_ATTEMPTS => {
                        tracing::debug!(error = %e, attempt, "write-back failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    }
                    Err(e) => {
                        telemetry
                            .sink_failures
                            .with_label_values(&["writeback"])
                            .inc();
                        tracing::warn!(query = %self.query.name, error = %e, "write-back failed; these scores are not written");
                        break;
                    }
                }
            }
        }
        telemetry.samples_written.inc_by(samples as u64);
    }

    /// Ends the episodes of series that stopped reporting, and forgets series absent for
    /// longer than the backfill window (unless an alert or annotation still needs closing).
    fn forget_absent(&mut self, end: i64, telemetry: &Telemetry) {
        let step_ms = self.step.as_millis() as i64;
        let forget_before = end - (self.backfill.as_millis() as i64).max(3_600_000);
        let mut evicted = 0u64;
        self.series.retain(|_, entry| {
            if entry.alert.is_anomalous() && entry.last_ts < end - ABSENT_ENDS_EPISODE * step_ms {
                entry.alert.end_episode();
            }
            let keep = entry.last_ts >= forget_before
                || entry.alert.notified
                || entry.alert.annotation.is_some();
            if !keep {
                evicted += 1;
            }
            keep
        });
        telemetry
            .series_evicted
            .with_label_values(&[&self.query.name])
            .inc_by(evicted);
    }

    /// Tells Alertmanager and Grafana what changed: new episodes (up to `max_alerts` at a
    /// time, the rest summed up in one overflow alert), renewals, and ends.
    pub async fn reconcile(&mut self, now_ms: i64, sinks: &Sinks, telemetry: &Telemetry) {
        let name = self.query.name.clone();
        let now = crate::alerts::time_of(now_ms);
        let ends_at = now + self.ends_after;
        let template = AlertTemplate {
            query: &self.query.name,
            expr: &self.query.expr,
            severity: &self.query.severity,
            labels: &self.query.labels,
            threshold: self.query.threshold,
            grafana: self
                .grafana
                .as_ref()
                .map(|(url, uid)| (url.as_str(), uid.as_deref())),
        };

        // Which anomalous series are alerted individually: those already notified, then
        // the highest scores while there is room.
        let notified_anomalous = self
            .series
            .values()
            .filter(|e| e.alert.notified && e.alert.is_anomalous())
            .count();
        let mut candidates: Vec<(&String, f64)> = self
            .series
            .iter()
            .filter(|(_, e)| !e.alert.notified && e.alert.is_anomalous())
            .map(|(k, e)| (k, e.alert.last.map_or(0.0, |o| o.score)))
            .collect();
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let room = self.query.max_alerts.saturating_sub(notified_anomalous);
        let overflow = candidates.len().saturating_sub(room);
        let admitted: Vec<String> = candidates
            .into_iter()
            .take(room)
            .map(|(k, _)| k.clone())
            .collect();

        let mut alerts: Vec<PostableAlert> = Vec::new();
        let mut resolved: Vec<String> = Vec::new();
        for (key, entry) in &self.series {
            let a = &entry.alert;
            match (a.notified, a.since) {
                (true, Some(_)) => alerts.push(template.series_alert(
                    &entry.labels,
                    a.notified_since.or(a.since).unwrap_or(now_ms),
                    ends_at,
                    a.last.as_ref(),
                )),
                (true, None) => {
                    alerts.push(template.series_alert(
                        &entry.labels,
                        a.notified_since.unwrap_or(now_ms),
                        now,
                        a.last.as_ref(),
                    ));
                    resolved.push(key.clone());
                }
                _ => {}
            }
        }
        for key in &admitted {
            let entry = &self.series[key];
            alerts.push(template.series_alert(
                &entry.labels,
                entry.alert.since.unwrap_or(now_ms),
                ends_at,
                entry.alert.last.as_ref(),
            ));
        }
        if overflow > 0 {
            let since = *self.meta.overflow_since.get_or_insert(now_ms);
            alerts.push(template.overflow_alert(overflow, since, ends_at));
        } else if self.meta.overflow_notified {
            let since = self.meta.overflow_since.unwrap_or(now_ms);
            alerts.push(template.overflow_alert(0, since, now));
        }

        let delivered = match (&sinks.alertmanager, alerts.is_empty()) {
            (Some(am), false) => match am.post(&alerts).await {
                Ok(()) => true,
                Err(e) => {
                    telemetry
                        .sink_failures
                        .with_label_values(&["alertmanager"])
                        .inc();
                    tracing::warn!(query = %name, error = %e, "alerts not delivered; retried at the next interval");
                    false
                }
            },
            _ => true,
        };
        if delivered {
            for key in &admitted {
                if let Some(entry) = self.series.get_mut(key) {
                    entry.alert.notified = true;
                    entry.alert.notified_since = entry.alert.since;
                }
            }
            for key in &resolved {
                if let Some(entry) = self.series.get_mut(key) {
                    entry.alert.notified = false;
                    entry.alert.notified_since = None;
                }
            }
            self.meta.overflow_notified = overflow > 0;
            if overflow == 0 {
                self.meta.overflow_since = None;
            }
        }
        let firing = self.series.values().filter(|e| e.alert.notified).count()
            + usize::from(self.meta.overflow_notified);
        telemetry
            .alerts_firing
            .with_label_values(&[&name])
            .set(firing as i64);
        telemetry
            .alerts_suppressed
            .with_label_values(&[&name])
            .set(overflow as i64);

        if let Some(grafana) = &sinks.grafana {
            annotate(&mut self.series, grafana, &template, now_ms, telemetry).await;
        }
    }
}

/// Opens a Grafana annotation for every notified episode without one, and closes the
/// annotation of every episode that ended.
async fn annotate(
    series: &mut HashMap<String, SeriesEntry>,
    grafana: &GrafanaClient,
    template: &AlertTemplate<'_>,
    now_ms: i64,
    telemetry: &Telemetry,
) {
    for entry in series.values_mut() {
        let a = &mut entry.alert;
        let result = match (a.notified && a.is_anomalous(), a.annotation) {
            (true, None) => {
                let since = a.notified_since.or(a.since).unwrap_or(now_ms);
                let text = template.annotation_text(&entry.labels, a.last.as_ref());
                grafana
                    .open(template.query, &entry.labels, since, text)
                    .await
                    .map(|id| a.annotation = Some(id))
            }
            (false, Some(id)) => {
                let end = a.last.map_or(now_ms, |o| o.timestamp_ms);
                grafana.close(id, end).await.map(|()| a.annotation = None)
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            telemetry
                .sink_failures
                .with_label_values(&["grafana"])
                .inc();
            tracing::warn!(query = %template.query, error = %e, "annotation not written; retried at the next interval");
            // One failure usually means Grafana is down: try again next time rather than
            // once per series now.
            return;
        }
    }
}

/// Everything the loop owns.
pub struct Service {
    pub queries: Vec<QueryRuntime>,
    pub reader: Reader,
    pub sinks: Sinks,
    pub telemetry: Telemetry,
}

impl Service {
    pub fn new(
        config: &Config,
        saved: &mut BTreeMap<String, QuerySnapshot>,
        telemetry: Telemetry,
    ) -> Result<Service, String> {
        let timeout = config.source.timeout;
        let reader = Reader::new(&config.source, timeout)?;
        let sinks = Sinks {
            writer: config
                .writeback
                .as_ref()
                .map(|w| {
                    Endpoint::new(
                        &w.endpoint,
                        header_map(&w.headers)?,
                        timeout,
                        w.tls.as_ref(),
                    )
                })
                .transpose()?,
            alertmanager: config
                .alertmanager
                .as_ref()
                .map(|a| AlertmanagerClient::new(a, timeout))
                .transpose()?,
            grafana: config
                .grafana
                .as_ref()
                .map(|g| GrafanaClient::new(g, timeout))
                .transpose()?,
        };
        let queries = config
            .queries
            .iter()
            .map(|q| {
                let runtime = QueryRuntime::new(config, q, saved.remove(&q.name));
                telemetry
                    .series_restored
                    .with_label_values(&[&q.name])
                    .set(runtime.series.len() as i64);
                runtime
            })
            .collect();
        Ok(Service {
            queries,
            reader,
            sinks,
            telemetry,
        })
    }

    /// One round: every query evaluated, then its alerts reconciled.
    pub async fn tick(&mut self) {
        let now = now_ms();
        for query in &mut self.queries {
            query
                .evaluate(now, &self.reader, &self.sinks, &self.telemetry)
                .await;
            query.reconcile(now, &self.sinks, &self.telemetry).await;
        }
    }

    pub fn state(&self) -> BTreeMap<&str, QueryState<'_>> {
        self.queries
            .iter()
            .map(|q| (q.query.name.as_str(), q.state()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::Score;

    fn config(max_alerts: usize) -> Config {
        let text = format!(
            "source: {{ victoriametrics: \"http://127.0.0.1:1\" }}\ninterval: 10s\nqueries:\n  - {{ name: Q, expr: up, max_alerts: {max_alerts} }}\n"
        );
        Config::from_yaml(&text, |_| None).unwrap()
    }

    fn sinks() -> Sinks {
        Sinks {
            writer: None,
            alertmanager: None,
            grafana: None,
        }
    }

    /// A runtime with `n` series, each fed `scores` in order.
    fn runtime(config: &Config, n: usize, scores: &[f64]) -> QueryRuntime {
        let mut runtime = QueryRuntime::new(config, &config.queries[0], None);
        for i in 0..n {
            let labels = BTreeMap::from([("instance".to_string(), format!("host-{i}"))]);
            let mut alert = AlertState::default();
            for (t, s) in scores.iter().enumerate() {
                let score = Score {
                    score: *s + i as f64 * 0.01,
                    expected: 1.0,
                    lower: 0.0,
                    upper: 2.0,
                };
                alert.observe(Observation::new(t as i64 * 10_000, 5.0, &score), 1.0, 2);
            }
            runtime.series.insert(
                series_key(&labels),
                SeriesEntry {
                    labels,
                    detector: runtime.model.new_state(),
                    alert,
                    last_ts: scores.len() as i64 * 10_000,
                },
            );
        }
        runtime
    }

    #[tokio::test]
    async fn beyond_max_alerts_the_highest_scores_alert_and_the_rest_are_one_overflow() {
        let config = config(20);
        let telemetry = Telemetry::new(["Q"]);
        let mut runtime = runtime(&config, 1000, &[3.0, 3.0]);
        runtime.reconcile(100_000, &sinks(), &telemetry).await;
        let notified: Vec<&SeriesEntry> = runtime
            .series
            .values()
            .filter(|e| e.alert.notified)
            .collect();
        assert_eq!(notified.len(), 20);
        // The highest scores are alerted: host-980 .. host-999.
        let number = |e: &&SeriesEntry| e.labels["instance"][5..].parse::<usize>().unwrap();
        assert!(notified.iter().all(|e| number(e) >= 980));
        assert!(runtime.meta.overflow_notified);
        assert_eq!(
            telemetry.alerts_suppressed.with_label_values(&["Q"]).get(),
            980
        );
        assert_eq!(telemetry.alerts_firing.with_label_values(&["Q"]).get(), 21);

        // Every episode ends: all resolved, the overflow too.
        for entry in runtime.series.values_mut() {
            for t in 3..5 {
                let normal = Score {
                    score: 0.1,
                    expected: 1.0,
                    lower: 0.0,
                    upper: 2.0,
                };
                entry
                    .alert
                    .observe(Observation::new(t * 10_000, 1.0, &normal), 1.0, 2);
            }
        }
        runtime.reconcile(110_000, &sinks(), &telemetry).await;
        assert!(runtime.series.values().all(|e| !e.alert.notified));
        assert!(!runtime.meta.overflow_notified);
        assert_eq!(telemetry.alerts_firing.with_label_values(&["Q"]).get(), 0);
    }

    #[tokio::test]
    async fn a_series_that_stops_reporting_ends_its_episode_and_is_forgotten_later() {
        let config = config(20);
        let telemetry = Telemetry::new(["Q"]);
        let mut runtime = runtime(&config, 1, &[3.0, 3.0]);
        runtime.reconcile(20_000, &sinks(), &telemetry).await;
        assert!(runtime.series.values().all(|e| e.alert.notified));
        // Five intervals without points end the episode; the resolve keeps it until sent.
        runtime.forget_absent(20_000 + 6 * 10_000, &telemetry);
        assert!(runtime.series.values().all(|e| !e.alert.is_anomalous()));
        runtime.forget_absent(3 * 86_400_000, &telemetry);
        assert_eq!(
            runtime.series.len(),
            1,
            "kept until the resolve is delivered"
        );
        runtime
            .reconcile(3 * 86_400_000, &sinks(), &telemetry)
            .await;
        runtime.forget_absent(3 * 86_400_000, &telemetry);
        assert!(runtime.series.is_empty());
        assert_eq!(telemetry.series_evicted.with_label_values(&["Q"]).get(), 1);
    }

    #[test]
    fn state_learned_under_other_settings_is_discarded() {
        let config = config(20);
        let mut runtime = runtime(&config, 3, &[0.1]);
        runtime.meta.scored_until = Some(5);
        let saved = QuerySnapshot {
            meta: runtime.meta.clone(),
            series: runtime.series.values().cloned().collect(),
        };
        let restored = QueryRuntime::new(&config, &config.queries[0], Some(saved.clone()));
        assert_eq!(restored.series.len(), 3);
        assert_eq!(restored.meta.scored_until, Some(5));
        let mut changed = config.clone();
        changed.queries[0].expr = "up == 1".into();
        let fresh = QueryRuntime::new(&changed, &changed.queries[0], Some(saved));
        assert!(fresh.series.is_empty());
        assert_eq!(fresh.meta.scored_until, None);
    }
}
