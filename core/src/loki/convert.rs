//! OTLP log records → Loki streams and entries.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};
use super::{escape_into, format_labels, sanitize_label_name};
use crate::otlp::{any_value_text, base64};

/// The label every stream carries, derived from the record's severity.
pub const LEVEL_LABEL: &str = "level";
/// The OpenTelemetry semantic-conventions stand-in for a missing `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
const SERVICE_NAME: &str = "service.name";

/// Turns one attribute into one stream label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRule {
    /// The OTLP attribute key, looked up in the resource first, then in the log record.
    pub attribute: String,
    /// The Loki label name; made a valid Prometheus label name if it is not one.
    pub label: String,
}

impl LabelRule {
    pub fn new(attribute: impl Into<String>, label: impl Into<String>) -> LabelRule {
        LabelRule {
            attribute: attribute.into(),
            label: label.into(),
        }
    }
}

/// How log records become Loki streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiOptions {
    /// Attributes that become stream labels, in addition to the derived `level`. Keep this
    /// list short and low-cardinality: every distinct combination is a Loki stream. A rule
    /// whose label is `level`, or repeats an earlier rule's label, is ignored.
    pub labels: Vec<LabelRule>,
    /// Send the remaining attributes and the trace/span ids as structured metadata (needs
    /// Loki 2.9 or newer). When off, they are appended to the line as ` name=value` pairs.
    pub structured_metadata: bool,
}

impl Default for LokiOptions {
    fn default() -> LokiOptions {
        LokiOptions {
            labels: default_label_rules(),
            structured_metadata: true,
        }
    }
}

/// The resource attributes Kubernetes operators filter by: service, namespace, pod, container,
/// environment.
pub fn default_label_rules() -> Vec<LabelRule> {
    [
        ("service.name", "service_name"),
        ("service.namespace", "service_namespace"),
        ("k8s.namespace.name", "k8s_namespace_name"),
        ("k8s.pod.name", "k8s_pod_name"),
        ("k8s.container.name", "k8s_container_name"),
        ("deployment.environment", "deployment_environment"),
    ]
    .into_iter()
    .map(|(a, l)| LabelRule::new(a, l))
    .collect()
}

/// One push request and what went into it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Converted {
    pub request: PushRequest,
    /// Log records that became entries.
    pub entries: u64,
    /// Log records that did not. Always 0 today: every record becomes an entry (an absent
    /// body is an empty line, an absent timestamp the receive time). Loki itself may still
    /// refuse entries (too old, line too long); the exporter counts those from its answer.
    pub dropped: u64,
}

/// Converts OTLP log export requests into one Loki push request.
///
/// `fallback_time_ns` stamps records that carry neither `time_unix_nano` nor
/// `observed_time_unix_nano`; pass the time the collector received them.
pub fn convert(
    requests: &[ExportLogsServiceRequest],
    opts: &LokiOptions,
    fallback_time_ns: u64,
) -> Converted {
    let rules = prepare_rules(opts);
    let mut streams = Streams::default();
    let mut entries = 0u64;

    for resource_logs in requests.iter().flat_map(|r| &r.resource_logs) {
        let resource_attrs = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        let resource_values: Vec<Option<Cow<'_, str>>> = rules
            .iter()
            .map(|rule| label_value(resource_attrs, rule.attribute))
            .collect();
        let unmatched: Vec<usize> = (0..rules.len())
            .filter(|&i| resource_values[i].is_none())
            .collect();
        let mut resource_metadata = Vec::new();
        push_metadata(
            resource_attrs,
            |key| {
                rules
                    .iter()
                    .zip(&resource_values)
                    .any(|(rule, v)| v.is_some() && rule.attribute == key)
            },
            &mut resource_metadata,
        );
        // Records that take all their labels from the resource differ only by level: their
        // label strings are formatted once per resource and level, not once per record.
        let mut by_level: Vec<(String, usize)> = Vec::new();

        for scope_logs in &resource_logs.scope_logs {
            let scope_attrs = scope_logs
                .scope
                .as_ref()
                .map_or(&[][..], |s| s.attributes.as_slice());
            let mut scope_metadata = Vec::new();
            push_metadata(scope_attrs, |_| false, &mut scope_metadata);

            for record in &scope_logs.log_records {
                let record_values: Vec<(usize, Cow<'_, str>)> = unmatched
                    .iter()
                    .filter_map(|&i| {
                        Some((i, label_value(&record.attributes, rules[i].attribute)?))
                    })
                    .collect();
                let level = level_of(record);
                let stream = if record_values.is_empty() {
                    match by_level.iter().find(|(l, _)| *l == level) {
                        Some(&(_, stream)) => stream,
                        None => {
                            let labels = label_set(&rules, &resource_values, &[], &level);
                            let stream = streams.index_of(labels);
                            by_level.push((level.clone().into_owned(), stream));
                            stream
                        }
                    }
                } else {
                    let labels = label_set(&rules, &resource_values, &record_values, &level);
                    streams.index_of(labels)
                };

                let mut metadata = Vec::with_capacity(
                    resource_metadata.len() + scope_metadata.len() + record.attributes.len() + 2,
                );
                metadata.extend_from_slice(&resource_metadata);
                metadata.extend_from_slice(&scope_metadata);
                push_metadata(
                    &record.attributes,
                    |key| {
                        record_values
                            .iter()
                            .any(|(i, _)| rules[*i].attribute == key)
                    },
                    &mut metadata,
                );
                if !record.trace_id.is_empty() {
                    metadata.push(pair("trace_id", hex(&record.trace_id)));
                }
                if !record.span_id.is_empty() {
                    metadata.push(pair("span_id", hex(&record.span_id)));
                }
                keep_most_specific(&mut metadata);

                let mut line = line_text(record.body.as_ref()).into_owned();
                if !opts.structured_metadata {
                    append_pairs(&mut line, &metadata);
                    metadata.clear();
                }
                streams.entries[stream].push(EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(timestamp_of(
                        record,
                        fallback_time_ns,
                    ))),
                    line,
                    structured_metadata: metadata,
                });
                entries += 1;
            }
        }
    }

    Converted {
        request: streams.finish(),
        entries,
        dropped: 0,
    }
}

struct Rule<'o> {
    attribute: &'o str,
    label: Cow<'o, str>,
    /// Falls back to [`UNKNOWN_SERVICE`] when the attribute is absent.
    service_name: bool,
}

fn prepare_rules(opts: &LokiOptions) -> Vec<Rule<'_>> {
    let mut rules: Vec<Rule<'_>> = Vec::with_capacity(opts.labels.len());
    for rule in &opts.labels {
        let Some(label) = sanitize_label_name(&rule.label) else {
            continue;
        };
        if rule.attribute.is_empty()
            || label == LEVEL_LABEL
            || rules.iter().any(|r| r.label == label)
        {
            continue;
        }
        rules.push(Rule {
            attribute: &rule.attribute,
            label,
            service_name: rule.attribute == SERVICE_NAME,
        });
    }
    rules
}

/// The streams built so far, by label string.
#[derive(Default)]
struct Streams {
    index: HashMap<String, usize>,
    entries: Vec<Vec<EntryAdapter>>,
}

impl Streams {
    fn index_of(&mut self, labels: String) -> usize {
        let next = self.entries.len();
        let index = *self.index.entry(labels).or_insert(next);
        if index == next {
            self.entries.push(Vec::new());
        }
        index
    }

    /// Streams ordered by label string, entries by timestamp (stable, so records with equal
    /// timestamps keep their order): the same input always encodes to the same bytes.
    fn finish(mut self) -> PushRequest {
        let mut named: Vec<(String, usize)> = self.index.into_iter().collect();
        named.sort_unstable();
        let streams = named
            .into_iter()
            .map(|(labels, i)| {
                let mut entries = std::mem::take(&mut self.entries[i]);
                if !entries.is_sorted_by_key(|e| e.timestamp) {
                    entries.sort_by_key(|e| e.timestamp);
                }
                StreamAdapter {
                    labels,
                    entries,
                    hash: 0,
                }
            })
            .collect();
        PushRequest { streams }
    }
}

/// The rule labels (from the resource, else the record) plus `level`, sorted by name.
fn label_set(
    rules: &[Rule<'_>],
    resource_values: &[Option<Cow<'_, str>>],
    record_values: &[(usize, Cow<'_, str>)],
    level: &str,
) -> String {
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(rules.len() + 1);
    for (i, rule) in rules.iter().enumerate() {
        let value = resource_values[i].as_deref().or_else(|| {
            record_values
                .iter()
                .find(|(j, _)| *j == i)
                .map(|(_, v)| v.as_ref())
        });
        match value {
            Some(v) => pairs.push((&rule.label, v)),
            None if rule.service_name => pairs.push((&rule.label, UNKNOWN_SERVICE)),
            None => {}
        }
    }
    pairs.push((LEVEL_LABEL, level));
    pairs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    format_labels(pairs)
}

/// The first attribute with this key, as label text; empty values count as absent because
/// Prometheus-style label sets treat `a=""` as no label at all.
fn label_value<'a>(attrs: &'a [KeyValue], key: &str) -> Option<Cow<'a, str>> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    let text = any_value_text(kv.value.as_ref());
    (!text.is_empty()).then_some(text)
}

/// `severity_text` lowercased if set, else the `severity_number` range's name, else `unknown`.
fn level_of(record: &LogRecord) -> Cow<'_, str> {
    let text = record.severity_text.trim();
    if !text.is_empty() {
        return if text.chars().any(char::is_uppercase) {
            Cow::Owned(text.to_lowercase())
        } else {
            Cow::Borrowed(text)
        };
    }
    Cow::Borrowed(match record.severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    })
}

fn timestamp_of(record: &LogRecord, fallback_ns: u64) -> u64 {
    [record.time_unix_nano, record.observed_time_unix_nano]
        .into_iter()
        .find(|&t| t != 0)
        .unwrap_or(fallback_ns)
}

fn pair(name: &str, value: String) -> LabelPairAdapter {
    LabelPairAdapter {
        name: name.to_owned(),
        value,
    }
}

/// Appends attributes as metadata pairs, names sanitised; attributes with an empty key are
/// skipped (no label name can stand for them).
fn push_metadata(
    attrs: &[KeyValue],
    is_label: impl Fn(&str) -> bool,
    out: &mut Vec<LabelPairAdapter>,
) {
    for kv in attrs.iter().filter(|kv| !is_label(&kv.key)) {
        if let Some(name) = sanitize_label_name(&kv.key) {
            out.push(LabelPairAdapter {
                name: name.into_owned(),
                value: any_value_text(kv.value.as_ref()).into_owned(),
            });
        }
    }
}

/// One value per name: when names repeat (the same key on resource and record, or keys that
/// sanitise alike) the later, more specific one wins — record over scope over resource.
/// Leaves the pairs sorted by name.
fn keep_most_specific(pairs: &mut Vec<LabelPairAdapter>) {
    pairs.reverse();
    pairs.sort_by(|a, b| a.name.cmp(&b.name));
    pairs.dedup_by(|later, kept| later.name == kept.name);
}

/// ` name=value` per pair; values with spaces, quotes, `=` or control characters, and empty
/// values, are quoted and escaped so `| logfmt` reads them back.
fn append_pairs(line: &mut String, pairs: &[LabelPairAdapter]) {
    for p in pairs {
        line.push(' ');
        line.push_str(&p.name);
        line.push('=');
        let quote = p.value.is_empty()
            || p.value
                .chars()
                .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
        if quote {
            line.push('"');
            escape_into(&p.value, line);
            line.push('"');
        } else {
            line.push_str(&p.value);
        }
    }
}

/// A log body as the line: as [`any_value_text`] prints attribute values, except doubles
/// ([`double_text`]) and arrays and maps ([`write_json`]). Labels and metadata need one
/// canonical spelling per value; a line should read as it was logged: a map body keeps its
/// keys in the order sent (repeats included), NaN and ±Infinity are spelt as in OTLP/JSON,
/// and a double prints the same (`2.0`) whether it is the whole body or inside a map's JSON.
fn line_text(body: Option<&AnyValue>) -> Cow<'_, str> {
    match body.and_then(|v| v.value.as_ref()) {
        Some(Value::DoubleValue(d)) => Cow::Owned(double_text(*d)),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            let mut out = String::new();
            write_json(body, &mut out);
            Cow::Owned(out)
        }
        _ => any_value_text(body),
    }
}

/// Shortest text that reads back as the same double (`1.5`, `1e300`); non-finite values as
/// OTLP/JSON spells them.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".to_owned()
    } else if d.is_infinite() {
        if d > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else {
        format!("{d:?}")
    }
}

/// JSON for any value. Maps keep their key order (and duplicate keys, as sent); bytes are
/// base64 strings and non-finite doubles strings, as in OTLP/JSON.
fn write_json(value: Option<&AnyValue>, out: &mut String) {
    match value.and_then(|v| v.value.as_ref()) {
        None | Some(Value::StringValueStrindex(_)) => out.push_str("null"),
        Some(Value::StringValue(s)) => json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) if d.is_finite() => {
            let _ = write!(out, "{d:?}");
        }
        Some(Value::DoubleValue(d)) => json_string(&double_text(*d), out),
        Some(Value::BytesValue(b)) => json_string(&base64(b), out),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(Some(v), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kvs)) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_string(&kv.key, out);
                out.push(':');
                write_json(kv.value.as_ref(), out);
            }
            out.push('}');
        }
    }
}

fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x0f]), "00ab0f");
    }

    #[test]
    fn doubles() {
        assert_eq!(double_text(1.5), "1.5");
        assert_eq!(double_text(2.0), "2.0");
        assert_eq!(double_text(1e300), "1e300");
        assert_eq!(double_text(f64::NAN), "NaN");
        assert_eq!(double_text(f64::NEG_INFINITY), "-Infinity");
    }
}
