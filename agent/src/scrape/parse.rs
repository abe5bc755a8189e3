//! The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0, parsed into families.
//!
//! Specs: <https://prometheus.io/docs/instrumenting/exposition_formats/> and
//! <https://github.com/OpenObservability/OpenMetrics/blob/main/specification/OpenMetrics.md>.
//!
//! The parser borrows from the body: names and label values without escapes are slices of
//! it; only an escaped label value or HELP text is copied. It never panics on bad input: a
//! line it cannot read fails the whole body with its line number, as Prometheus fails the
//! scrape, because a half-read exposition would silently lose series.
//!
//! Choices:
//! - Samples are grouped into the family of the last `# TYPE`/`# HELP`/`# UNIT` whose name
//!   they extend with a suffix valid for its type (`_bucket`, `_sum`, `_count`, `_total`,
//!   `_created`, …); any other sample starts an untyped family of its own name.
//! - OpenMetrics exemplars (`# {…} 1.0`) are skipped; the body must end with `# EOF`.
//! - Timestamps become milliseconds: integers in 0.0.4, float seconds in OpenMetrics.

use std::borrow::Cow;
use std::collections::HashMap;

/// Which exposition format a body is in, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, and anything that does not say otherwise.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header announces; Prometheus' text format when it is
    /// missing or unknown, as Prometheus falls back too.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// The type a family declares with `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Untyped,
}

impl MetricKind {
    fn parse(word: &str) -> Option<MetricKind> {
        Some(match word {
            "counter" => MetricKind::Counter,
            "gauge" => MetricKind::Gauge,
            "histogram" => MetricKind::Histogram,
            "gaugehistogram" => MetricKind::GaugeHistogram,
            "summary" => MetricKind::Summary,
            "info" => MetricKind::Info,
            "stateset" => MetricKind::StateSet,
            "untyped" | "unknown" => MetricKind::Untyped,
            _ => return None,
        })
    }

    /// Sample name suffixes that belong to a family of this kind (besides the bare name).
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            MetricKind::Counter => &["_total", "_created"],
            MetricKind::Histogram => &["_bucket", "_sum", "_count", "_created"],
            MetricKind::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            MetricKind::Summary => &["_sum", "_count", "_created"],
            MetricKind::Info => &["_info"],
            MetricKind::Gauge | MetricKind::StateSet | MetricKind::Untyped => &[],
        }
    }
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// In the order written; names are unique (a repeated name is a parse error).
    /// Names are borrowed from the body; both are `Cow` so that relabeling can take the
    /// vector as it is.
    pub labels: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// A metric family: its metadata and its samples in the order they came.
#[derive(Debug, Clone, PartialEq)]
pub struct Family<'a> {
    pub name: &'a str,
    pub kind: MetricKind,
    pub help: Cow<'a, str>,
    pub unit: &'a str,
    pub samples: Vec<Sample<'a>>,
}

/// Why a body could not be read; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn error<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        message: message.into(),
    })
}

/// Parses a whole body into its families.
pub fn parse(body: &str, format: Format) -> Result<Vec<Family<'_>>, ParseError> {
    let mut parser = Parser {
        families: Vec::new(),
        by_name: HashMap::new(),
        format,
    };
    let mut eof_at = None;
    for (index, raw) in body.split('\n').enumerate() {
        let number = index + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if eof_at.is_some() {
            if line.trim().is_empty() {
                continue;
            }
            return error(number, "content after `# EOF`");
        }
        if line.trim().is_empty() {
            // OpenMetrics forbids blank lines, but the only harm they do is none; only
            // the trailing newline's empty "line" is the common case.
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if parser.comment(comment, number)? {
                eof_at = Some(number);
            }
            continue;
        }
        parser.sample(line, number)?;
    }
    if format == Format::OpenMetrics && eof_at.is_none() {
        return error(
            body.lines().count(),
            "OpenMetrics body does not end with `# EOF`",
        );
    }
    Ok(parser.families)
}

struct Parser<'a> {
    families: Vec<Family<'a>>,
    /// Family name → index, for samples and metadata that come back to a family.
    by_name: HashMap<&'a str, usize>,
    format: Format,
}

impl<'a> Parser<'a> {
    /// Handles a comment line (without its `#`); returns whether it was `# EOF`.
    fn comment(&mut self, rest: &'a str, line: usize) -> Result<bool, ParseError> {
        let rest = skip_blanks(rest);
        let (keyword, rest) = split_word(rest);
        match keyword {
            "EOF" if self.format == Format::OpenMetrics => return Ok(true),
            "HELP" | "TYPE" | "UNIT" => {}
            // Any other comment is free text in 0.0.4 (and tolerated in OpenMetrics).
            _ => return Ok(false),
        }
        let (name, text) = split_word(skip_blanks(rest));
        if !is_metric_name(name) {
            return error(line, format!("invalid metric name `{name}` in # {keyword}"));
        }
        let openmetrics = self.format == Format::OpenMetrics;
        let family = self.family(name);
        match keyword {
            "HELP" => family.help = unescape(text, openmetrics),
            "UNIT" => family.unit = text.trim(),
            _ => {
                let word = text.trim();
                let Some(kind) = MetricKind::parse(word) else {
                    return error(line, format!("unknown metric type `{word}`"));
                };
                if !family.samples.is_empty() && family.kind != kind {
                    return error(line, format!("# TYPE for `{name}` after its samples"));
                }
                family.kind = kind;
            }
        }
        Ok(false)
    }

    fn family(&mut self, name: &'a str) -> &mut Family<'a> {
        let index = *self.by_name.entry(name).or_insert_with(|| {
            self.families.push(Family {
                name,
                kind: MetricKind::Untyped,
                help: Cow::Borrowed(""),
                unit: "",
                samples: Vec::new(),
            });
            self.families.len() - 1
        });
        &mut self.families[index]
    }

    fn sample(&mut self, line: &'a str, number: usize) -> Result<(), ParseError> {
        let sample = parse_sample(line, self.format).map_err(|message| ParseError {
            line: number,
            message,
        })?;
        let index = self.family_of(sample.name);
        self.families[index].samples.push(sample);
        Ok(())
    }

    /// The family a sample name belongs to: the last family it extends, else its own.
    fn family_of(&mut self, name: &'a str) -> usize {
        if self.families.last().is_some_and(|f| belongs(f, name)) {
            return self.families.len() - 1;
        }
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        // A family declared earlier whose samples come later (not allowed by the specs,
        // but seen in the wild): find it by stripping the suffixes its kind allows.
        for suffix in [
            "_bucket", "_sum", "_count", "_total", "_created", "_gsum", "_gcount",
        ] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(&i) = self.by_name.get(base)
                && belongs(&self.families[i], name)
            {
                return i;
            }
        }
        self.family(name);
        self.by_name[name]
    }
}

fn belongs(family: &Family<'_>, name: &str) -> bool {
    match name.strip_prefix(family.name) {
        Some("") => true,
        Some(suffix) => family.kind.suffixes().contains(&suffix),
        None => false,
    }
}

// The helpers below work on bytes: every character they look for is ASCII, and a
// multi-byte UTF-8 character never contains an ASCII byte, so each index they return is a
// character boundary. Iterating `char`s (decoding UTF-8) was a fifth of the agent's time.

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without its leading spaces and tabs.
fn skip_blanks(s: &str) -> &str {
    let n = s.bytes().take_while(|&b| is_blank(b)).count();
    &s[n..]
}

/// `s` without its trailing spaces and tabs.
fn trim_end_blanks(s: &str) -> &str {
    let n = s.bytes().rev().take_while(|&b| is_blank(b)).count();
    &s[..s.len() - n]
}

/// Splits off the first space- or tab-separated word.
fn split_word(s: &str) -> (&str, &str) {
    match s.bytes().position(is_blank) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

fn is_metric_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_' || *b == b':')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b':')
}

pub(crate) fn is_label_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b) if b.is_ascii_alphabetic() || *b == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

/// Undoes `\\`, `\n` and (in label values and OpenMetrics HELP) `\"`; an unknown escape
/// is kept as written, as Prometheus does.
fn unescape(s: &str, quotes: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quotes => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

fn parse_sample(line: &str, format: Format) -> Result<Sample<'_>, String> {
    let name_end = line
        .bytes()
        .position(|b| b == b'{' || is_blank(b))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name `{name}`"));
    }
    let mut rest = skip_blanks(&line[name_end..]);
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let rest = skip_blanks(rest);
    // An OpenMetrics exemplar follows ` # `; nothing we keep.
    let rest = match format {
        Format::OpenMetrics => rest.find(" #").map_or(rest, |i| &rest[..i]),
        Format::Text => rest,
    };
    let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
    let value = words.next().ok_or("sample without a value")?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value `{value}`"))?;
    let timestamp_ms = match words.next() {
        None => None,
        Some(ts) => {
            Some(parse_timestamp(ts, format).ok_or_else(|| format!("invalid timestamp `{ts}`"))?)
        }
    };
    if let Some(extra) = words.next() {
        return Err(format!("unexpected `{extra}` after the timestamp"));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `name="value", …}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut Vec<(Cow<'a, str>, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        s = skip_blanks(s);
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let name = trim_end_blanks(&s[..eq]);
        if !is_label_name(name) {
            return Err(format!("invalid label name `{name}`"));
        }
        let after_eq = skip_blanks(&s[eq + 1..]);
        let body = after_eq
            .strip_prefix('"')
            .ok_or_else(|| format!("value of label `{name}` is not quoted"))?;
        let end =
            closing_quote(body).ok_or_else(|| format!("unterminated value of label `{name}`"))?;
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label `{name}` repeated"));
        }
        labels.push((Cow::Borrowed(name), unescape(&body[..end], true)));
        s = skip_blanks(&body[end + 1..]);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Byte index of the first unescaped `"`.
fn closing_quote(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// A sample value: a float in Go's syntax as far as exposition uses it, including `NaN`,
/// `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

fn parse_timestamp(s: &str, format: Format) -> Option<i64> {
    match format {
        Format::Text => s.parse::<i64>().ok(),
        Format::OpenMetrics => {
            let seconds = s.parse::<f64>().ok().filter(|v| v.is_finite())?;
            let ms = (seconds * 1000.0).round();
            (ms.abs() < i64::MAX as f64).then_some(ms as i64)
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
