//! Reading Vigil's Grafana dashboards and provisioning files the way Grafana would, for the
//! test that runs every dashboard query against the real pipeline: which datasources are
//! provisioned, every query of a dashboard with the datasource it goes to, template
//! variable substitution, and the metric names a PromQL expression reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository's `dashboards/` folder.
pub fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .join("dashboards")
}

/// Every dashboard JSON file, parsed, by file name.
pub fn dashboards() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dashboards_dir()).expect("read dashboards/") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, json);
        }
    }
    out
}

/// The provisioned datasources: uid → type.
pub fn provisioned_datasources() -> BTreeMap<String, String> {
    let path = dashboards_dir().join("provisioning/datasources/vigil.yaml");
    let text = std::fs::read_to_string(&path).expect("read datasource provisioning");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("provisioning is YAML");
    let mut out = BTreeMap::new();
    for ds in yaml["datasources"]
        .as_sequence()
        .expect("datasources: a list")
    {
        let uid = ds["uid"]
            .as_str()
            .expect("every datasource has a fixed uid");
        let kind = ds["type"].as_str().expect("every datasource has a type");
        assert!(
            out.insert(uid.to_string(), kind.to_string()).is_none(),
            "uid {uid} provisioned twice"
        );
    }
    out
}

/// Grafana's built-in datasource (annotations, dashboard queries).
pub const GRAFANA_BUILTIN: (&str, &str) = ("grafana", "-- Grafana --");

/// One query of a dashboard: a panel target, an annotation or a variable query.
#[derive(Debug, Clone)]
pub struct Query {
    /// Where it is, for messages: `panel "Buffer bytes" target B`.
    pub at: String,
    /// The datasource object it names (its own, else its panel's).
    pub datasource: Value,
    /// PromQL / LogQL / TraceQL text.
    pub expr: String,
    /// The variable the panel (or its row) repeats over, if any.
    pub repeat: Option<String>,
    /// An annotation query: it marks events, so it may rightly return nothing.
    pub annotation: bool,
}

/// Every panel, rows' nested panels included, with the variable its row repeats over.
pub fn panels(dashboard: &Value) -> Vec<(Value, Option<String>)> {
    let mut out = Vec::new();
    let mut row_repeat: Option<String> = None;
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] == "row" {
            row_repeat = panel["repeat"].as_str().map(str::to_string);
            for nested in panel["panels"].as_array().into_iter().flatten() {
                out.push((nested.clone(), row_repeat.clone()));
            }
            continue;
        }
        let repeat = panel["repeat"]
            .as_str()
            .map(str::to_string)
            .or_else(|| row_repeat.clone());
        out.push((panel.clone(), repeat));
    }
    out
}

/// Every query of a dashboard.
pub fn queries(dashboard: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for (panel, repeat) in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().or_else(|| target["query"].as_str());
            let Some(expr) = expr else { continue };
            let datasource = if target["datasource"].is_object() {
                target["datasource"].clone()
            } else {
                panel["datasource"].clone()
            };
            out.push(Query {
                at: format!(
                    "panel \"{title}\" target {}",
                    target["refId"].as_str().unwrap_or("?")
                ),
                datasource,
                expr: expr.to_string(),
                repeat: repeat.clone(),
                annotation: false,
            });
        }
    }
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            out.push(Query {
                at: format!(
                    "annotation \"{}\"",
                    annotation["name"].as_str().unwrap_or("?")
                ),
                datasource: annotation["datasource"].clone(),
                expr: expr.to_string(),
                repeat: None,
                annotation: true,
            });
        }
    }
    out
}

/// Every `"datasource": {...}` object anywhere in `value`, with a JSON-pointer-ish path.
pub fn datasource_refs(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let here = format!("{path}/{key}");
                if key == "datasource" {
                    out.push((here.clone(), v.clone()));
                }
                datasource_refs(v, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The template variables of a dashboard, by name.
pub fn variables(dashboard: &Value) -> BTreeMap<String, Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or("").to_string(), v.clone()))
        .collect()
}

/// Values for Grafana's built-in variables, as a dashboard over the last hour with a 15 s
/// scrape interval would get them.
const BUILTINS: [(&str, &str); 4] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "10m"),
    ("__auto", "1m"),
];

/// `text` with `$name`, `${name}` and `[[name]]` replaced from `values` and the built-ins;
/// an unknown variable is an error.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let pattern = regex::Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]").unwrap();
    let mut unknown = Vec::new();
    let out = pattern.replace_all(text, |caps: &regex::Captures| {
        let name = caps
            .get(1)
            .or_else(|| caps.get(2))
            .or_else(|| caps.get(3))
            .unwrap()
            .as_str();
        if let Some((_, v)) = BUILTINS.iter().find(|(n, _)| *n == name) {
            return v.to_string();
        }
        match values.get(name) {
            Some(v) => v.clone(),
            None => {
                unknown.push(name.to_string());
                String::new()
            }
        }
    });
    if unknown.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(format!("undefined variables {unknown:?} in {text}"))
    }
}

/// A value as Grafana writes a single-value variable into a regex matcher of a Prometheus
/// query: regex-escaped, with the backslashes doubled for the PromQL string.
pub fn regex_value(value: &str) -> String {
    regex::escape(value).replace('\\', "\\\\")
}

/// `label_values(metric{...}, label)` → (`metric{...}`, `label`); `label_values(label)` →
/// (None, label).
pub fn parse_label_values(query: &str) -> Option<(Option<String>, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    match inner.rsplit_once(',') {
        Some((selector, label)) => {
            Some((Some(selector.trim().to_string()), label.trim().to_string()))
        }
        None => Some((None, inner.trim().to_string())),
    }
}

const KEYWORDS: [&str; 16] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "atan2",
];

/// The metric names a PromQL expression reads: identifiers that are neither functions,
/// keywords, label names (in `{...}` or in the `by (...)`-like lists) nor inside strings
/// or range brackets.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let strings = regex::Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap();
    let matchers = regex::Regex::new(r"\{[^}]*\}").unwrap();
    let ranges = regex::Regex::new(r"\[[^\]]*\]").unwrap();
    let label_lists =
        regex::Regex::new(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
            .unwrap();
    let name_in = regex::Regex::new(r"__name__\s*=\s*\\?([a-zA-Z_:][a-zA-Z0-9_:]*)").unwrap();
    let mut names = BTreeSet::new();
    // `{__name__="x"}` names a metric inside a matcher.
    for caps in name_in.captures_iter(&expr.replace('"', "")) {
        names.insert(caps[1].to_string());
    }
    let text = strings.replace_all(expr, "\"\"");
    let text = matchers.replace_all(&text, " ");
    let text = ranges.replace_all(&text, " ");
    let text = label_lists.replace_all(&text, "$1 ");
    let ident = regex::Regex::new(r"[a-zA-Z_:][a-zA-Z0-9_:]*").unwrap();
    for m in ident.find_iter(&text) {
        let before = text[..m.start()].chars().last();
        if before.is_some_and(|c| c.is_ascii_digit() || c == '.') {
            continue; // 1e3, 0.5 and the like
        }
        let after = text[m.end()..].trim_start();
        // `sum(`, and `sum by (..) (` whose label list was cut out above.
        let aggregation = ["by ", "by(", "without ", "without("]
            .iter()
            .any(|k| after.starts_with(k));
        if after.starts_with('(') || aggregation || KEYWORDS.contains(&m.as_str()) {
            continue;
        }
        names.insert(m.as_str().to_string());
    }
    names
}

/// An annotation's expression without its trailing event filter (`x > 0` → `x`), so a
/// test can check the series it filters exist when no event happened.
pub fn without_event_filter(expr: &str) -> Option<&str> {
    let filter = regex::Regex::new(r"\s*(>|<|>=|<=|==|!=)\s*-?[0-9.]+\s*$").unwrap();
    filter.find(expr).map(|m| &expr[..m.start()])
}

/// The label names of the stream selector(s) of a LogQL expression.
pub fn logql_stream_labels(expr: &str) -> BTreeSet<String> {
    let selector = regex::Regex::new(r"\{([^}]*)\}").unwrap();
    let matcher = regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*""#).unwrap();
    let mut out = BTreeSet::new();
    for caps in selector.captures_iter(expr) {
        for m in matcher.captures_iter(&caps[1]) {
            out.insert(m[1].to_string());
        }
    }
    out
}

/// The checks that need no backend: the four dashboard uids and the four provisioned
/// datasources; a unit on every timeseries and stat panel; panels on the grid; every
/// datasource reference resolving to a provisioned uid of its type (directly, through a
/// datasource variable, or Grafana's built-in); variables only in regex matchers, and
/// `All` as a regex. Panics with the place of the first problem.
pub fn check_structure(boards: &BTreeMap<String, Value>, provisioned: &BTreeMap<String, String>) {
    let uids: BTreeSet<&str> = boards.values().filter_map(|b| b["uid"].as_str()).collect();
    assert_eq!(
        uids,
        BTreeSet::from([
            "vigil-pipeline",
            "vigil-nodes",
            "vigil-anomalies",
            "vigil-logs-traces"
        ]),
        "dashboard uids"
    );
    for uid in [
        "vigil-victoriametrics",
        "vigil-loki",
        "vigil-tempo",
        "vigil-alertmanager",
    ] {
        assert!(
            provisioned.contains_key(uid),
            "datasource {uid} is provisioned"
        );
    }
    assert_eq!(provisioned["vigil-victoriametrics"], "prometheus");
    assert_eq!(provisioned["vigil-alertmanager"], "alertmanager");
    for (file, board) in boards {
        assert!(
            board["schemaVersion"].as_u64().unwrap_or(0) >= 36,
            "{file}: schemaVersion"
        );
        let variables = variables(board);
        let mut ids = BTreeSet::new();
        for (panel, _) in panels(board) {
            let title = panel["title"].as_str().unwrap_or("?");
            assert!(
                ids.insert(panel["id"].as_u64()),
                "{file}: panel id of \"{title}\" repeats"
            );
            let grid = &panel["gridPos"];
            let (x, w) = (
                grid["x"].as_u64().unwrap_or(99),
                grid["w"].as_u64().unwrap_or(99),
            );
            assert!(x + w <= 24, "{file}: \"{title}\" is off the grid");
            if ["timeseries", "stat", "gauge", "bargauge"]
                .contains(&panel["type"].as_str().unwrap_or(""))
            {
                let unit = panel["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or("");
                assert!(!unit.is_empty(), "{file}: \"{title}\" has no unit");
            }
            if panel["type"] != "row" {
                assert!(
                    panel["datasource"].is_object(),
                    "{file}: \"{title}\" names no datasource"
                );
            }
        }
        let mut refs = Vec::new();
        datasource_refs(board, "", &mut refs);
        for (at, ds) in refs {
            let kind = ds["type"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}{at}: datasource {ds} has no type"));
            let uid = ds["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}{at}: datasource {ds} has no uid"));
            if (kind, uid) == GRAFANA_BUILTIN {
                continue;
            }
            let resolved = match uid.strip_prefix("${").and_then(|u| u.strip_suffix('}')) {
                Some(name) => {
                    let var = &variables[name];
                    assert_eq!(
                        var["type"], "datasource",
                        "{file}{at}: ${{{name}}} is not a datasource variable"
                    );
                    assert_eq!(
                        var["query"], kind,
                        "{file}{at}: ${{{name}}} lists other datasources"
                    );
                    var["current"]["value"].as_str().unwrap_or("").to_string()
                }
                None => uid.to_string(),
            };
            assert_eq!(
                provisioned.get(&resolved).map(String::as_str),
                Some(kind),
                "{file}{at}: {ds} does not resolve to a provisioned {kind} datasource"
            );
        }
        for q in queries(board) {
            // A multi-value variable becomes `a|b`: only a regex matcher is right.
            for (i, _) in q.expr.match_indices("=\"$") {
                assert!(
                    q.expr[..i].ends_with('~'),
                    "{file} {}: a variable in an `=` or `!=` matcher is not regex-safe: {}",
                    q.at,
                    q.expr
                );
            }
        }
        for (name, var) in &variables {
            if var["includeAll"] == true {
                let all = var["allValue"].as_str().unwrap_or("");
                assert!(
                    all == ".*" || all == ".+",
                    "{file}: ${name}'s All is {all:?}, not a regex"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_skip_functions_labels_and_keywords() {
        let expr = r#"histogram_quantile(0.99, sum by (le, signal) (rate(vigil_collector_buffer_write_duration_seconds_bucket{signal=~"a|b", x="y(z)"}[1m]))) or vector(0)"#;
        assert_eq!(
            metric_names(expr),
            BTreeSet::from(["vigil_collector_buffer_write_duration_seconds_bucket".to_string()])
        );
        let expr = r#"max(node_load1{job="node"} / on (instance) count by (instance) (node_cpu_seconds_total{mode="idle"})) > 1e3"#;
        assert_eq!(
            metric_names(expr),
            BTreeSet::from(["node_cpu_seconds_total".into(), "node_load1".into()])
        );
        assert_eq!(
            without_event_filter("vigil_anomaly_alerts_firing{query=~\".*\"} > 0"),
            Some("vigil_anomaly_alerts_firing{query=~\".*\"}")
        );
        assert_eq!(
            metric_names(r#"{__name__="up", job="x"}"#),
            BTreeSet::from(["up".to_string()])
        );
    }

    #[test]
    fn substitution_knows_builtins_and_refuses_unknown_variables() {
        let values = BTreeMap::from([("cluster".to_string(), ".*".to_string())]);
        assert_eq!(
            substitute(
                r#"rate(x{c=~"$cluster"}[$__rate_interval]) [[cluster]] ${cluster}"#,
                &values
            )
            .unwrap(),
            r#"rate(x{c=~".*"}[1m]) .* .*"#
        );
        assert!(substitute("x{c=~\"$nope\"}", &values).is_err());
        assert_eq!(regex_value("127.0.0.1:80"), r"127\\.0\\.0\\.1:80");
    }

    #[test]
    fn label_values_and_logql_labels_parse() {
        assert_eq!(
            parse_label_values(r#"label_values(up{job="a,b"}, instance)"#),
            Some((Some(r#"up{job="a,b"}"#.to_string()), "instance".to_string()))
        );
        assert_eq!(
            parse_label_values("label_values(service_name)"),
            Some((None, "service_name".to_string()))
        );
        assert_eq!(
            logql_stream_labels(r#"sum by (a) (rate({service_name=~".+", ns="x"} |~ "y" [1m]))"#),
            BTreeSet::from(["ns".to_string(), "service_name".to_string()])
        );
    }
}
