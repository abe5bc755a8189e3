//! The Prometheus text exposition format 0.0.4 and OpenMetrics 1.0, parsed into families.
//!
//! Specs: <https://prometheus.io/docs/instrumenting/exposition_formats/> and
//! <https://github.com/OpenObservability/OpenMetrics/blob/main/specification/OpenMetrics.md>.
//!
//! The parser borrows from the body: names and label values without escapes are slices of
//! it; only an escaped label value or HELP text is copied. The labels of all samples go
//! into one vector ([`Parsed::labels`]) rather than one vector per sample: an allocation
//! and a free per sample were a quarter of the agent's time. It never panics on bad input: a
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
use std::ops::Range;

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

/// A label: its name and value. Names are borrowed from the body; both are `Cow` so that
/// relabeling can take them as they are.
pub type Label<'a> = (Cow<'a, str>, Cow<'a, str>);

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// Where its labels are in [`Parsed::labels`], in the order written; names are unique
    /// (a repeated name is a parse error).
    pub labels: Range<usize>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line carries a timestamp.
    pub timestamp_ms: Option<i64>,
}

/// A parsed body: its families, and the labels of all their samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<'a> {
    pub families: Vec<Family<'a>>,
    /// Every sample's labels, one sample's after another's (see [`Sample::labels`]).
    pub labels: Vec<Label<'a>>,
}

impl<'a> Parsed<'a> {
    /// The labels of one of the samples.
    pub fn labels(&self, sample: &Sample<'a>) -> &[Label<'a>] {
        &self.labels[sample.labels.clone()]
    }

    /// The value of a sample's label.
    pub fn label(&self, sample: &Sample<'a>, name: &str) -> Option<&str> {
        self.labels(sample)
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

/// Parses a whole body into its families, with room made up front for `labels` labels: a
/// target's last body tells how many its next one has (growing the one label vector of a
/// scrape from empty copied it a dozen times); 0 when unknown.
pub fn parse(body: &str, format: Format, labels: usize) -> Result<Parsed<'_>, ParseError> {
    let mut parser = Parser {
        families: Vec::new(),
        labels: Vec::with_capacity(labels),
        by_name: HashMap::new(),
        format,
    };
    let mut eof_at = None;
    let (mut start, mut number) = (0, 0);
    // As `body.split('\n')`, with a vectorized search: the last line may lack its newline,
    // and a body that ends with one ends with an empty line.
    while start <= body.len() {
        let end =
            memchr::memchr(b'\n', &body.as_bytes()[start..]).map_or(body.len(), |i| start + i);
        let raw = &body[start..end];
        start = end + 1;
        number += 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if eof_at.is_some() {
            if is_blank_line(line) {
                continue;
            }
            return error(number, "content after `# EOF`");
        }
        if is_blank_line(line) {
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
    Ok(Parsed {
        families: parser.families,
        labels: parser.labels,
    })
}

struct Parser<'a> {
    families: Vec<Family<'a>>,
    labels: Vec<Label<'a>>,
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
        let sample =
            parse_sample(line, self.format, &mut self.labels).map_err(|message| ParseError {
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

/// Whether a line is empty or only whitespace (Unicode's, as `str::trim` has it); decided
/// by its first byte for every line that starts a sample or a comment.
fn is_blank_line(line: &str) -> bool {
    match line.as_bytes().first() {
        None => true,
        Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'#' | b'_' | b':') => false,
        Some(_) => line.trim().is_empty(),
    }
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

/// A byte that may be in a metric name: `[a-zA-Z0-9_:]`.
const METRIC: u8 = 1;
/// A byte that may be in a label name: `[a-zA-Z0-9_]`.
const LABEL: u8 = 2;
/// A byte that may start either name: not a digit.
const FIRST: u8 = 4;

/// The classes of every byte: one lookup per byte instead of a chain of comparisons (name
/// checks were a tenth of the parser).
static CLASSES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let word = c.is_ascii_alphanumeric() || c == b'_';
        let mut class = 0;
        if word || c == b':' {
            class |= METRIC;
        }
        if word {
            class |= LABEL;
        }
        if !c.is_ascii_digit() {
            class |= FIRST;
        }
        table[b] = class;
        b += 1;
    }
    table
};

fn class(b: u8) -> u8 {
    CLASSES[usize::from(b)]
}

/// Whether `name` is non-empty and does not start with a digit.
fn starts_name(name: &str) -> bool {
    matches!(name.as_bytes().first(), Some(&b) if class(b) & FIRST != 0)
}

/// Whether `name` is non-empty, of bytes of class `kind`, and does not start with a digit.
fn is_name(name: &str, kind: u8) -> bool {
    starts_name(name) && name.bytes().all(|b| class(b) & kind != 0)
}

fn is_metric_name(name: &str) -> bool {
    is_name(name, METRIC)
}

pub(crate) fn is_label_name(name: &str) -> bool {
    is_name(name, LABEL)
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

/// Parses a sample line, its labels appended to `labels`.
fn parse_sample<'a>(
    line: &'a str,
    format: Format,
    labels: &mut Vec<Label<'a>>,
) -> Result<Sample<'a>, String> {
    // The name ends at `{`, a blank or the end of the line. One pass over its bytes finds
    // the end and checks them; whatever else stops it makes the name invalid.
    let bytes = line.as_bytes();
    let valid_end = bytes
        .iter()
        .position(|&b| class(b) & METRIC == 0)
        .unwrap_or(bytes.len());
    let name_end = match bytes.get(valid_end) {
        None | Some(b'{' | b' ' | b'\t') => valid_end,
        Some(_) => bytes[valid_end..]
            .iter()
            .position(|&b| b == b'{' || is_blank(b))
            .map_or(bytes.len(), |i| valid_end + i),
    };
    let name = &line[..name_end];
    if name_end != valid_end || !starts_name(name) {
        return Err(format!("invalid metric name `{name}`"));
    }
    let mut rest = skip_blanks(&line[name_end..]);
    let first_label = labels.len();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, labels)?;
    }
    let labels = first_label..labels.len();
    let rest = skip_blanks(rest);
    // An OpenMetrics exemplar follows ` # `; nothing we keep.
    let rest = match format {
        Format::OpenMetrics => rest.find(" #").map_or(rest, |i| &rest[..i]),
        Format::Text => rest,
    };
    // Words are separated by any run of spaces and tabs.
    let (value, rest) = split_word(rest);
    if value.is_empty() {
        return Err("sample without a value".into());
    }
    let value = parse_value(value).ok_or_else(|| format!("invalid value `{value}`"))?;
    let (ts, rest) = split_word(skip_blanks(rest));
    let timestamp_ms = match ts {
        "" => None,
        ts => Some(parse_timestamp(ts, format).ok_or_else(|| format!("invalid timestamp `{ts}`"))?),
    };
    let (extra, _) = split_word(skip_blanks(rest));
    if !extra.is_empty() {
        return Err(format!("unexpected `{extra}` after the timestamp"));
    }
    Ok(Sample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `name="value", …}` into `labels` and returns what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<Label<'a>>) -> Result<&'a str, String> {
    let first = labels.len();
    loop {
        s = skip_blanks(s);
        if let Some(after) = s.strip_prefix('}') {
            return Ok(after);
        }
        // A byte loop: label names are a few bytes, too short for a vectorized search.
        let eq = s
            .bytes()
            .position(|b| b == b'=')
            .ok_or("label without `=`")?;
        let name = trim_end_blanks(&s[..eq]);
        if !is_label_name(name) {
            return Err(format!("invalid label name `{name}`"));
        }
        let after_eq = skip_blanks(&s[eq + 1..]);
        let body = after_eq
            .strip_prefix('"')
            .ok_or_else(|| format!("value of label `{name}` is not quoted"))?;
        let (end, escaped) =
            closing_quote(body).ok_or_else(|| format!("unterminated value of label `{name}`"))?;
        if labels[first..].iter().any(|(n, _)| n == name) {
            return Err(format!("label `{name}` repeated"));
        }
        let value = match escaped {
            true => unescape(&body[..end], true),
            false => Cow::Borrowed(&body[..end]),
        };
        labels.push((Cow::Borrowed(name), value));
        s = skip_blanks(&body[end + 1..]);
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Byte index of the first unescaped `"`, and whether a `\` came before it.
fn closing_quote(s: &str) -> Option<(usize, bool)> {
    let bytes = s.as_bytes();
    let (mut i, mut escaped) = (0, false);
    loop {
        i += memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        match bytes[i] {
            b'"' => return Some((i, escaped)),
            _ => (i, escaped) = (i + 2, true),
        }
        if i >= bytes.len() {
            return None;
        }
    }
}

/// A sample value: a float in Go's syntax as far as exposition uses it, including `NaN`,
/// `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    // Most values are counts written as integers: up to 15 digits are exact in an f64, and
    // reading them directly skips the float parser's general case.
    let digits = s.as_bytes();
    if !digits.is_empty() && digits.len() <= 15 && digits.iter().all(u8::is_ascii_digit) {
        let n = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Some(n as f64);
    }
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
