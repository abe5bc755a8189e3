//! The `scrape:` section of the agent's config.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;
use vigil_core::config::{ByteSize, Errors, Validate, duration, join};

use super::relabel::{RelabelConfig, RelabelRule};

/// Which Prometheus endpoints to scrape, how often, and how to relabel what comes back.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeConfig {
    /// Time between two scrapes of a target.
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    /// How long one scrape may take, body included; at most `interval`. Unset: 10s, or
    /// `interval` when that is shorter.
    #[serde(default, with = "optional_duration")]
    pub timeout: Option<Duration>,
    /// Targets given by URL.
    #[serde(default, rename = "static")]
    pub static_targets: Vec<StaticTarget>,
    /// Rules run on each target's labels (`__address__`, `__scheme__`, `__metrics_path__`,
    /// `__param_<name>` and the target's `labels`) before it is scraped.
    #[serde(default)]
    pub relabel: Vec<RelabelConfig>,
    /// Rules run on each scraped sample's labels, `__name__` included, after the target's
    /// labels were added.
    #[serde(default)]
    pub metric_relabel: Vec<RelabelConfig>,
    /// Largest response body accepted, after gzip decompression; a larger one fails the
    /// scrape.
    #[serde(default = "default_body_limit")]
    pub body_limit: ByteSize,
    /// Most samples one scrape may keep after metric relabeling; more fails the scrape
    /// (`up` 0), as Prometheus' `sample_limit` does. 0 means no limit.
    #[serde(default = "default_sample_limit")]
    pub sample_limit: usize,
    /// Keep the scraped `job`/`instance`/… labels when they conflict with the target's
    /// (Prometheus' `honor_labels`); off renames the scraped ones to `exported_<name>`.
    #[serde(default)]
    pub honor_labels: bool,
    /// Discovery of pods to scrape through the Kubernetes API.
    #[serde(default)]
    pub kubernetes_pods: KubernetesPods,
}

/// One statically configured target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTarget {
    /// The full URL: scheme, `host:port`, metrics path and query parameters.
    pub url: String,
    /// Labels of every series from this target; `job` is required (unless a relabel rule
    /// sets it).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Kubernetes pod discovery (annotations `prometheus.io/scrape` and friends; see
/// [`super::discovery`]). Needs `kubernetes.enabled`: the pods come from its watch.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesPods {
    #[serde(default)]
    pub enabled: bool,
}

fn default_interval() -> Duration {
    Duration::from_secs(15)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_body_limit() -> ByteSize {
    ByteSize::mib(64)
}

fn default_sample_limit() -> usize {
    0
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        ScrapeConfig {
            interval: default_interval(),
            timeout: None,
            static_targets: Vec::new(),
            relabel: Vec::new(),
            metric_relabel: Vec::new(),
            body_limit: default_body_limit(),
            sample_limit: default_sample_limit(),
            honor_labels: false,
            kubernetes_pods: KubernetesPods::default(),
        }
    }
}

impl ScrapeConfig {
    /// The timeout in force: the configured one, else 10s capped at the interval.
    pub fn effective_timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| default_timeout().min(self.interval))
    }
}

impl Validate for ScrapeConfig {
    fn validate(&self, path: &str, errors: &mut Errors) {
        if self.interval.is_zero() {
            errors.add(join(path, "interval"), "must be greater than zero");
        }
        match self.timeout {
            Some(t) if t.is_zero() => {
                errors.add(join(path, "timeout"), "must be greater than zero")
            }
            Some(t) if t > self.interval => errors.add(
                join(path, "timeout"),
                format!(
                    "must not exceed interval ({} > {})",
                    humantime_str(t),
                    humantime_str(self.interval)
                ),
            ),
            _ => {}
        }
        if self.body_limit.0 == 0 {
            errors.add(join(path, "body_limit"), "must be greater than zero");
        }
        let rules_set_job = self.relabel.iter().any(|r| {
            r.target_label
                .as_deref()
                .is_some_and(|t| t == "job" || t.contains('$'))
        });
        let static_path = join(path, "static");
        for (i, target) in self.static_targets.iter().enumerate() {
            let at = join(&static_path, &i.to_string());
            match Url::parse(&target.url) {
                Ok(url) if !matches!(url.scheme(), "http" | "https") => errors.add(
                    join(&at, "url"),
                    format!("scheme must be http or https, not `{}`", url.scheme()),
                ),
                Ok(url) if url.host_str().is_none() => errors.add(join(&at, "url"), "has no host"),
                Ok(_) => {}
                Err(e) => errors.add(join(&at, "url"), format!("invalid URL: {e}")),
            }
            if !target.labels.contains_key("job") && !rules_set_job {
                errors.add(
                    join(&at, "labels"),
                    "a `job` label is required (it becomes the series' job)",
                );
            }
            for name in target.labels.keys() {
                if !super::parse::is_label_name(name) {
                    errors.add(
                        join(&join(&at, "labels"), name),
                        "is not a valid label name",
                    );
                }
            }
        }
        for (key, rules) in [
            ("relabel", &self.relabel),
            ("metric_relabel", &self.metric_relabel),
        ] {
            for (i, rule) in rules.iter().enumerate() {
                if let Err(e) = RelabelRule::new(rule) {
                    errors.add(join(&join(path, key), &i.to_string()), e.to_string());
                }
            }
        }
    }
}

fn humantime_str(d: Duration) -> String {
    let mut s = format!("{:?}", d);
    if s.ends_with(".0s") {
        s.truncate(s.len() - 3);
        s.push('s');
    }
    s
}

/// Serde for an optional duration (`timeout: 5s`, or absent).
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "vigil_core::config::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => vigil_core::config::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<ScrapeConfig, String> {
        vigil_core::config::load::<ScrapeConfig>(yaml, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_the_documented_example_with_defaults() {
        let config = load(
            "interval: 30s\nstatic: [ { url: \"http://127.0.0.1:9100/metrics\", labels: { job: node } } ]\n\
             relabel: [ { source_labels: [__address__], target_label: host } ]\n\
             metric_relabel: [ { source_labels: [__name__], regex: 'go_.*', action: drop } ]\n\
             kubernetes_pods: { enabled: false }\n",
        )
        .unwrap();
        assert_eq!(config.interval, Duration::from_secs(30));
        assert_eq!(config.effective_timeout(), Duration::from_secs(10));
        assert_eq!(config.body_limit, ByteSize::mib(64));
        assert_eq!(config.static_targets[0].labels["job"], "node");
        let short = load("interval: 5s\n").unwrap();
        assert_eq!(short.effective_timeout(), Duration::from_secs(5));
        assert_eq!(load("{}").unwrap(), ScrapeConfig::default());
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let err = load(
            "interval: 5s\ntimeout: 6s\nstatic:\n  - { url: 'ftp://x/metrics', labels: { job: a } }\n  - { url: 'not a url' }\n\
             relabel: [ { regex: '(' , target_label: x } ]\n\
             metric_relabel: [ { source_labels: [a] } ]\n\
             kubernetes_pods: { enabled: true }\n",
        )
        .unwrap_err();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 6, "{err}");
        assert!(
            lines.contains(&"timeout: must not exceed interval (6s > 5s)"),
            "{err}"
        );
        assert!(
            lines.contains(&"static.0.url: scheme must be http or https, not `ftp`"),
            "{err}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("static.1.url: invalid URL")),
            "{err}"
        );
        assert!(
            lines.contains(
                &"static.1.labels: a `job` label is required (it becomes the series' job)"
            ),
            "{err}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("relabel.0: invalid regex")),
            "{err}"
        );
        assert!(
            lines.contains(&"metric_relabel.0: `target_label` is required for action replace"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            load("intervall: 5s\nstatic: [ { url: 'http://a:1/', lables: {} } ]\n").unwrap_err();
        assert!(err.contains("intervall: unknown field"), "{err}");
        assert!(err.contains("static.0.lables: unknown field"), "{err}");
    }
}
