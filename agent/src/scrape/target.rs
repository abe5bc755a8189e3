//! One scrape target: its labels, its URL, and what one scrape of it produces.

use std::borrow::Cow;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use url::Url;

use super::config::StaticTarget;
use super::http::{ScrapeError, fetch};
use super::otlp::{Batch, Relabeled, SampleLabels};
use super::parse::{Family, Format, Label, MetricKind, Parsed, Sample, parse};
use super::relabel::{Labels, RelabelRule, relabel};
use super::staleness::SeriesMemory;
use super::telemetry::ScrapeTelemetry;
use crate::ship::metrics::EncodedMetrics;

/// Why a configured target cannot be scraped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("`{0}` is not a valid URL")]
    Url(String),
    #[error("target `{0}` has no `job` label after relabeling")]
    NoJob(String),
    #[error("target `{url}`: relabeling produced the invalid URL `{built}`")]
    Relabeled { url: String, built: String },
}

/// The gauges every scrape reports about itself.
const REPORTS: [&str; 4] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
];

/// What every scrape needs besides the target.
pub(crate) struct ScrapeContext {
    pub client: reqwest::Client,
    pub timeout: Duration,
    pub body_limit: u64,
    pub sample_limit: usize,
    pub honor_labels: bool,
    pub metric_relabel: Vec<RelabelRule>,
    pub telemetry: ScrapeTelemetry,
}

/// A target after relabeling.
#[derive(Debug)]
pub(crate) struct Target {
    pub url: Url,
    pub job: String,
    pub instance: String,
    /// The other target labels (none starting with `__`).
    pub labels: Labels,
    memory: SeriesMemory,
    /// Bytes of the last body scraped: the next one is read into a buffer that size.
    last_body: usize,
    /// Labels in the last body parsed: room for the next one's.
    last_labels: usize,
    /// Whether the last scrape succeeded (true before the first, so a target that is down
    /// from the start is reported once).
    was_up: bool,
}

impl Target {
    /// The target of a static entry, or `None` when relabeling dropped it.
    pub fn from_static(
        entry: &StaticTarget,
        rules: &[RelabelRule],
    ) -> Result<Option<Target>, TargetError> {
        let url = Url::parse(&entry.url).map_err(|_| TargetError::Url(entry.url.clone()))?;
        let host = url
            .host_str()
            .ok_or_else(|| TargetError::Url(entry.url.clone()))?;
        let address = match url.port_or_known_default() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let mut labels = entry.labels.clone();
        let defaults = vec![
            ("__address__".to_owned(), address),
            ("__scheme__".to_owned(), url.scheme().to_owned()),
            ("__metrics_path__".to_owned(), url.path().to_owned()),
        ];
        let params = url
            .query_pairs()
            .map(|(name, value)| (format!("__param_{name}"), value.into_owned()));
        for (name, value) in defaults.into_iter().chain(params) {
            labels.entry(name).or_insert(value);
        }
        Target::from_labels(labels, rules, &entry.url)
    }

    /// The target of labels before relabeling (`__address__`, `__scheme__`,
    /// `__metrics_path__`, `__param_<name>`, `__meta_*` and the rest), or `None` when
    /// relabeling dropped it; `what` names it in errors.
    pub fn from_labels(
        mut labels: Labels,
        rules: &[RelabelRule],
        what: &str,
    ) -> Result<Option<Target>, TargetError> {
        if !relabel(rules, &mut labels) {
            return Ok(None);
        }
        let built = format!(
            "{}://{}{}",
            labels.get("__scheme__").map_or("http", String::as_str),
            labels.get("__address__").map_or("", String::as_str),
            labels
                .get("__metrics_path__")
                .map_or("/metrics", String::as_str),
        );
        let mut scrape_url = Url::parse(&built).map_err(|_| TargetError::Relabeled {
            url: what.to_owned(),
            built: built.clone(),
        })?;
        let params: Vec<(&str, &str)> = labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("__param_")?, v.as_str())))
            .collect();
        if !params.is_empty() {
            scrape_url.query_pairs_mut().extend_pairs(params);
        }
        if !labels.contains_key("instance")
            && let Some(address) = labels.get("__address__").cloned()
        {
            labels.insert("instance".into(), address);
        }
        labels.retain(|name, value| !name.starts_with("__") && !value.is_empty());
        let job = labels
            .remove("job")
            .ok_or_else(|| TargetError::NoJob(what.to_owned()))?;
        let instance = labels.remove("instance").unwrap_or_default();
        Ok(Some(Target {
            url: scrape_url,
            job,
            instance,
            labels,
            memory: SeriesMemory::default(),
            last_body: 0,
            last_labels: 0,
            was_up: true,
        }))
    }

    /// What makes two targets the same: URL, job, instance and labels.
    pub fn fingerprint(&self) -> String {
        format!(
            "{} {} {} {:?}",
            self.url, self.job, self.instance, self.labels
        )
    }

    /// The target went away (its pod was deleted): stale markers for every series it had,
    /// and for `up` and the other scrape gauges, as Prometheus writes them.
    pub fn retire(&mut self, context: &ScrapeContext) -> Vec<EncodedMetrics> {
        let now_ns = unix_nanos(SystemTime::now());
        let vanished = self.memory.forget_all();
        let mut batch = Batch::new(now_ns, &mut self.memory);
        batch.stale(vanished);
        for name in REPORTS {
            batch.report_stale(&self.job, &self.instance, &self.labels, name);
        }
        context
            .telemetry
            .stale_markers
            .inc_by(batch.stale_markers as u64);
        batch.finish()
    }

    /// Scrapes once and returns the OTLP of it: the samples, stale markers of vanished
    /// series, and `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
    /// `scrape_samples_post_metric_relabeling`. Never fails: a failed scrape is `up` 0.
    pub async fn scrape(&mut self, context: &ScrapeContext) -> Vec<EncodedMetrics> {
        let started = Instant::now();
        let now_ns = unix_nanos(SystemTime::now());
        let fetched = match tokio::time::timeout(
            context.timeout,
            fetch(
                &context.client,
                &self.url,
                context.timeout,
                context.body_limit,
                self.last_body,
            ),
        )
        .await
        {
            Ok(fetched) => fetched,
            Err(_) => Err(ScrapeError::Timeout(context.timeout)),
        };
        self.record(fetched, now_ns, started, context)
    }

    /// The OTLP of one scrape's outcome (see [`Target::scrape`]); `now_ns` is when it
    /// started, the timestamp of samples without their own.
    pub fn record(
        &mut self,
        fetched: Result<(String, Format), ScrapeError>,
        now_ns: u64,
        started: Instant,
        context: &ScrapeContext,
    ) -> Vec<EncodedMetrics> {
        // Declared before `outcome`, which borrows from it.
        let body;
        let own = TargetLabels {
            job: &self.job,
            instance: &self.instance,
            labels: &self.labels,
        };
        let outcome = match fetched {
            Ok((text, format)) => {
                body = text;
                self.last_body = body.len();
                samples(&body, format, &own, context, &mut self.last_labels)
            }
            Err(e) => Err(e),
        };
        let telemetry = &context.telemetry;
        telemetry.scrapes.inc();
        let (up, scraped, kept) = match &outcome {
            Ok(samples) => (1.0, samples.scraped, samples.kept),
            Err(e) => {
                // Said loudly once when a target goes down, then quietly each interval.
                match self.was_up {
                    true => {
                        tracing::warn!(url = %self.url, job = %self.job, error = %e, "scrape failed")
                    }
                    false => {
                        tracing::debug!(url = %self.url, job = %self.job, error = %e, "scrape failed")
                    }
                }
                telemetry.failures.with_label_values(&[e.reason()]).inc();
                (0.0, 0, 0)
            }
        };
        if outcome.is_ok() && !self.was_up {
            tracing::info!(url = %self.url, job = %self.job, "target is up");
        }
        self.was_up = outcome.is_ok();
        let vanished = match &outcome {
            Ok(_) => Vec::new(),
            Err(_) => self.memory.forget_all(),
        };
        let mut batch = Batch::new(now_ns, &mut self.memory);
        batch.stale(vanished);
        if let Ok(samples) = outcome {
            for (family, relabeled) in &samples.families {
                let labels = &samples.labels;
                batch.family(family.name, family.kind, &family.help, relabeled, labels);
            }
            batch.end_of_scrape();
        }
        let stale = batch.stale_markers;
        telemetry.samples.inc_by(kept as u64);
        telemetry.stale_markers.inc_by(stale as u64);
        let duration = started.elapsed().as_secs_f64();
        for (name, value) in REPORTS
            .into_iter()
            .zip([up, duration, scraped as f64, kept as f64])
        {
            batch.report(&self.job, &self.instance, &self.labels, name, value);
        }
        batch.finish()
    }
}

/// What a target adds to each of its samples.
struct TargetLabels<'t> {
    job: &'t str,
    instance: &'t str,
    /// Neither `job` nor `instance` (see [`Target::from_labels`]).
    labels: &'t Labels,
}

/// Parses a body and relabels its samples, enforcing the sample limit.
fn samples<'a>(
    body: &'a str,
    format: Format,
    target: &TargetLabels<'a>,
    context: &ScrapeContext,
    last_labels: &mut usize,
) -> Result<Scraped<'a>, ScrapeError> {
    let Parsed {
        families,
        labels: mut parsed_labels,
    } = parse(body, format, *last_labels)?;
    *last_labels = parsed_labels.len();
    let scraped = families.iter().map(|f| f.samples.len()).sum();
    let mut kept = 0;
    let mut out = Vec::with_capacity(families.len());
    // Each sample's labels are relabeled in `scratch`, then appended to `labels`: the
    // labels of a whole scrape take two vectors, not one per sample.
    let mut labels = Vec::with_capacity(parsed_labels.len() + scraped * target.labels.len());
    let mut scratch = SampleLabels::new();
    for mut family in families {
        let samples = std::mem::take(&mut family.samples);
        let meta = FamilyMeta::of(family);
        let mut relabeled = Vec::with_capacity(samples.len());
        for sample in samples {
            scratch.clear();
            let taken = parsed_labels[sample.labels.clone()].iter_mut();
            scratch.extend(taken.map(std::mem::take));
            relabeled.extend(relabel_sample(
                sample,
                &mut scratch,
                &mut labels,
                target,
                context,
            ));
        }
        kept += relabeled.len();
        if context.sample_limit > 0 && kept > context.sample_limit {
            return Err(ScrapeError::SampleLimit {
                got: kept,
                limit: context.sample_limit,
            });
        }
        out.push((meta, relabeled));
    }
    Ok(Scraped {
        families: out,
        labels,
        scraped,
        kept,
    })
}

/// Where `name` is in `labels`.
fn position(labels: &[Label<'_>], name: &str) -> Option<usize> {
    labels.iter().position(|(k, _)| k == name)
}

/// The sample's labels (`labels`, which it empties) with the target's merged in
/// (Prometheus' `honor_labels` rule), then metric relabeling, appended to the scrape's
/// labels `out`; `None` when a rule dropped the sample. Without metric relabeling rules
/// (the usual case) every string stays borrowed from the body or the target.
fn relabel_sample<'a>(
    sample: Sample<'a>,
    labels: &mut SampleLabels<'a>,
    out: &mut Vec<Label<'a>>,
    target: &TargetLabels<'a>,
    context: &ScrapeContext,
) -> Option<Relabeled<'a>> {
    // Names are unique in a parsed sample; every step below keeps them so.
    // The target's job and instance are held apart rather than put among the labels and
    // taken out again; they join them only when metric relabeling needs to see them.
    let mut fixed: [Option<Cow<'a, str>>; 2] = [None, None];
    for (slot, (name, value)) in [("job", target.job), ("instance", target.instance)]
        .into_iter()
        .enumerate()
    {
        if !value.is_empty() && target_label_wins(labels, name, context.honor_labels) {
            fixed[slot] = Some(Cow::Borrowed(value));
        }
    }
    for (name, value) in target.labels {
        if !value.is_empty() && target_label_wins(labels, name, context.honor_labels) {
            labels.push((Cow::Borrowed(name), Cow::Borrowed(value)));
        }
    }
    let mut name = Cow::Borrowed(sample.name);
    if !context.metric_relabel.is_empty() {
        let mut map: Labels = labels
            .drain(..)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (slot, key) in ["job", "instance"].into_iter().enumerate() {
            if let Some(value) = fixed[slot].take() {
                map.insert(key.into(), value.into_owned());
            }
        }
        map.insert("__name__".into(), name.into_owned());
        if !relabel(&context.metric_relabel, &mut map) {
            return None;
        }
        name = Cow::Owned(map.remove("__name__").filter(|n| !n.is_empty())?);
        labels.extend(map.into_iter().map(|(k, v)| (Cow::Owned(k), Cow::Owned(v))));
    }
    labels.retain(|(k, v)| !k.starts_with("__") && !v.is_empty());
    let mut take = |key: &str| position(labels, key).map(|at| labels.swap_remove(at).1);
    let [job, instance] = fixed;
    let job = job.or_else(|| take("job")).unwrap_or_default();
    let instance = instance.or_else(|| take("instance")).unwrap_or_default();
    labels.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let start = out.len();
    out.append(labels);
    Some(Relabeled {
        name,
        job,
        instance,
        labels: start..out.len(),
        value: sample.value,
        timestamp_ms: sample.timestamp_ms,
    })
}

/// Whether a target label `name` goes into the sample: always without `honor_labels`, a
/// scraped label of that name moving aside (see [`export_clash`]); with it, only when the
/// sample has no such label.
fn target_label_wins(labels: &mut SampleLabels<'_>, name: &str, honor_labels: bool) -> bool {
    match position(labels, name) {
        Some(_) if honor_labels => false,
        Some(at) => {
            let (_, scraped) = labels.swap_remove(at);
            export_clash(labels, name, scraped);
            true
        }
        None => true,
    }
}

/// A scraped label that a target label of the same name displaces becomes
/// `exported_<name>` (`exported_exported_<name>` if that is taken, and so on), as in
/// Prometheus without `honor_labels`.
fn export_clash<'a>(labels: &mut SampleLabels<'a>, name: &str, scraped: Cow<'a, str>) {
    let mut exported = format!("exported_{name}");
    while position(labels, &exported).is_some() {
        exported.insert_str(0, "exported_");
    }
    labels.push((Cow::Owned(exported), scraped));
}

/// What a family keeps of its metadata once its samples are relabeled.
pub(crate) struct FamilyMeta<'b> {
    name: &'b str,
    kind: MetricKind,
    help: Cow<'b, str>,
}

impl<'b> FamilyMeta<'b> {
    /// The metadata of a family whose samples were taken.
    fn of(family: Family<'b>) -> Self {
        FamilyMeta {
            name: family.name,
            kind: family.kind,
            help: family.help,
        }
    }
}

/// One successful scrape before it becomes OTLP.
pub(crate) struct Scraped<'b> {
    families: Vec<(FamilyMeta<'b>, Vec<Relabeled<'b>>)>,
    /// The labels of every sample (see [`Relabeled::labels`]).
    labels: Vec<Label<'b>>,
    scraped: usize,
    kept: usize,
}

pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64)
}
