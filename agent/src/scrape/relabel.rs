//! Prometheus relabeling, the subset that covers nearly every real configuration: `replace`,
//! `keep`, `drop`, `labelmap`, `labeldrop`, `labelkeep`.
//!
//! Semantics as in <https://prometheus.io/docs/prometheus/latest/configuration/configuration/#relabel_config>:
//! regexes are anchored at both ends, `source_labels` values are joined with `separator`
//! (`;`), and `replacement` may refer to groups as `$1` or `${1}`. A label set to the empty
//! string is removed.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::parse::is_label_name;

/// A label set being relabeled: sorted by name, like Prometheus' `labels.Labels`.
pub type Labels = BTreeMap<String, String>;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sets `target_label` to `replacement` (with groups expanded) when `regex` matches.
    #[default]
    Replace,
    /// Drops the target or sample when `regex` does not match.
    Keep,
    /// Drops the target or sample when `regex` matches.
    Drop,
    /// Copies every label whose name matches `regex` to the name `replacement` gives.
    LabelMap,
    /// Removes every label whose name matches `regex`.
    LabelDrop,
    /// Removes every label whose name does not match `regex`.
    LabelKeep,
}

/// One `relabel_configs` entry as written in YAML.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values, joined with `separator`, are matched against `regex`.
    #[serde(default)]
    pub source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// A regular expression (Rust `regex` syntax, which matches RE2's for what relabeling
    /// uses); anchored at both ends.
    #[serde(default = "default_regex")]
    pub regex: String,
    /// The label `replace` writes; required for `replace`.
    #[serde(default)]
    pub target_label: Option<String>,
    /// What `replace` writes (and `labelmap` names labels), with regex groups as `$1` or
    /// `${1}`. In the agent's YAML `${…}` is environment substitution, so write `$1` or
    /// `$${1}` there.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    #[serde(default)]
    pub action: Action,
}

fn default_separator() -> String {
    ";".into()
}

fn default_regex() -> String {
    "(.*)".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelabelError {
    #[error("invalid regex: {0}")]
    Regex(String),
    #[error("`target_label` is required for action replace")]
    MissingTarget,
    #[error("`{0}` is not a valid label name")]
    TargetLabel(String),
}

/// A rule ready to run: its regex compiled, anchored.
#[derive(Debug, Clone)]
pub struct RelabelRule {
    source_labels: Vec<String>,
    separator: String,
    regex: Regex,
    target_label: String,
    replacement: String,
    action: Action,
}

impl RelabelRule {
    pub fn new(config: &RelabelConfig) -> Result<RelabelRule, RelabelError> {
        let regex = Regex::new(&format!("^(?:{})$", config.regex)).map_err(|e| {
            // The regex crate draws the pattern with a caret over several lines; a config
            // error is one line, so keep its last line ("unclosed group").
            let text = e.to_string();
            let reason = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let reason = reason.trim().trim_start_matches("error: ");
            RelabelError::Regex(format!("`{}`: {reason}", config.regex))
        })?;
        let target_label = config.target_label.clone().unwrap_or_default();
        if config.action == Action::Replace {
            if target_label.is_empty() {
                return Err(RelabelError::MissingTarget);
            }
            // A target with `$` references is checked after expansion, at run time.
            if !target_label.contains('$') && !is_label_name(&target_label) {
                return Err(RelabelError::TargetLabel(target_label));
            }
        }
        Ok(RelabelRule {
            source_labels: config.source_labels.clone(),
            separator: config.separator.clone(),
            regex,
            target_label,
            replacement: config.replacement.clone(),
            action: config.action,
        })
    }

    /// Applies the rule; `false` means the target or sample is dropped.
    fn apply(&self, labels: &mut Labels) -> bool {
        match self.action {
            Action::Replace => {
                let value = self.source_value(labels);
                let Some(captures) = self.regex.captures(&value) else {
                    return true;
                };
                let mut target = String::new();
                captures.expand(&self.target_label, &mut target);
                if !is_label_name(&target) {
                    return true;
                }
                let mut replaced = String::new();
                captures.expand(&self.replacement, &mut replaced);
                if replaced.is_empty() {
                    labels.remove(&target);
                } else {
                    labels.insert(target, replaced);
                }
                true
            }
            Action::Keep => self.regex.is_match(&self.source_value(labels)),
            Action::Drop => !self.regex.is_match(&self.source_value(labels)),
            Action::LabelMap => {
                let mapped: Vec<(String, String)> = labels
                    .iter()
                    .filter(|(name, _)| self.regex.is_match(name))
                    .map(|(name, value)| {
                        let new_name = self.regex.replace(name, self.replacement.as_str());
                        (new_name.into_owned(), value.clone())
                    })
                    .filter(|(name, _)| is_label_name(name))
                    .collect();
                labels.extend(mapped);
                true
            }
            Action::LabelDrop => {
                labels.retain(|name, _| !self.regex.is_match(name));
                true
            }
            Action::LabelKeep => {
                labels.retain(|name, _| self.regex.is_match(name));
                true
            }
        }
    }

    fn source_value(&self, labels: &Labels) -> String {
        let mut value = String::new();
        for (i, name) in self.source_labels.iter().enumerate() {
            if i > 0 {
                value.push_str(&self.separator);
            }
            if let Some(v) = labels.get(name) {
                value.push_str(v);
            }
        }
        value
    }
}

/// Runs `rules` in order; `false` when one of them dropped the label set.
pub fn relabel(rules: &[RelabelRule], labels: &mut Labels) -> bool {
    rules.iter().all(|rule| rule.apply(labels))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn rule(yaml: &str) -> RelabelRule {
        let config: RelabelConfig = serde_yaml_from(yaml);
        RelabelRule::new(&config).unwrap()
    }

    fn serde_yaml_from(yaml: &str) -> RelabelConfig {
        vigil_core::config::parse(yaml).unwrap()
    }

    pub(crate) fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replace_joins_sources_and_expands_groups() {
        let r = rule(
            "source_labels: [__address__, port]\nregex: '([^:]+):\\d+;(.*)'\ntarget_label: host\nreplacement: '${1}-$2'",
        );
        let mut l = labels(&[("__address__", "10.0.0.1:9100"), ("port", "80")]);
        assert!(relabel(std::slice::from_ref(&r), &mut l));
        assert_eq!(l["host"], "10.0.0.1-80");
        // Anchored: a partial match does not count.
        let mut l = labels(&[("__address__", "x10.0.0.1"), ("port", "80")]);
        relabel(&[r], &mut l);
        assert!(!l.contains_key("host"));
    }

    #[test]
    fn replace_with_empty_value_removes_the_label() {
        let r = rule("source_labels: [nope]\ntarget_label: env\n");
        let mut l = labels(&[("env", "prod")]);
        assert!(relabel(&[r], &mut l));
        assert!(!l.contains_key("env"));
    }

    #[test]
    fn keep_and_drop() {
        let keep = rule("source_labels: [__name__]\nregex: 'go_.*'\naction: keep\n");
        let drop = rule("source_labels: [__name__]\nregex: 'go_gc_.*'\naction: drop\n");
        let rules = [keep, drop];
        assert!(relabel(&rules, &mut labels(&[("__name__", "go_threads")])));
        assert!(!relabel(
            &rules,
            &mut labels(&[("__name__", "go_gc_duration")])
        ));
        assert!(!relabel(
            &rules,
            &mut labels(&[("__name__", "process_open_fds")])
        ));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let map = rule("regex: '__meta_pod_label_(.+)'\naction: labelmap\n");
        let mut l = labels(&[("__meta_pod_label_app", "web"), ("x", "1")]);
        relabel(&[map], &mut l);
        assert_eq!(l["app"], "web");
        assert_eq!(l["__meta_pod_label_app"], "web");
        let drop = rule("regex: '__meta_.*'\naction: labeldrop\n");
        relabel(&[drop], &mut l);
        assert_eq!(l, labels(&[("app", "web"), ("x", "1")]));
        let keep = rule("regex: 'app'\naction: labelkeep\n");
        relabel(&[keep], &mut l);
        assert_eq!(l, labels(&[("app", "web")]));
    }

    #[test]
    fn invalid_rules_are_refused() {
        let bad = |yaml: &str| RelabelRule::new(&serde_yaml_from(yaml)).unwrap_err();
        assert!(matches!(
            bad("regex: '('\ntarget_label: a\n"),
            RelabelError::Regex(_)
        ));
        assert_eq!(bad("source_labels: [a]\n"), RelabelError::MissingTarget);
        assert_eq!(
            bad("target_label: 'a-b'\n"),
            RelabelError::TargetLabel("a-b".into())
        );
    }
}
