//! Names and label values as Prometheus wants them, from OTLP names, units and attributes.
//!
//! Rules from the OpenTelemetry specification "Prometheus and OpenMetrics Compatibility":
//! invalid characters become `_` and runs of `_` collapse to one, in metric names and label
//! names alike. The spec says no more than that, so two things are our choice, both taken
//! from the OpenTelemetry Collector's and Prometheus' own translators so that a metric gets
//! the same name whichever of them converted it: a metric name starting with a digit gets a
//! `_` prefix, a label name starting with a digit gets `key_`. Because runs of `_` collapse,
//! no attribute can become a label starting with `__`, the prefix Prometheus reserves for
//! itself (`__name__`); that is the whole of the reserved-prefix handling.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A Prometheus unit, split the way the OTLP unit was: `m/s` → `meters` and `per_second`.
/// Either part may be empty. The parts are checked separately against the metric name so
/// that `speed_meters` with unit `m/s` becomes `speed_meters_per_second`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromUnit {
    pub main: Cow<'static, str>,
    pub per: Cow<'static, str>,
}

impl PromUnit {
    /// Converts an OTLP (UCUM) unit. `{...}` annotations are dropped ("a count of packets"
    /// is unitless in Prometheus); `1` becomes `ratio` only for gauges, since a sum with
    /// unit `1` is a count, not a ratio (the Collector and Prometheus decide the same way).
    pub fn from_otlp(unit: &str, is_gauge: bool) -> Self {
        if unit == "1" {
            let main = if is_gauge { "ratio" } else { "" };
            return PromUnit {
                main: Cow::Borrowed(main),
                per: Cow::Borrowed(""),
            };
        }
        let stripped = strip_annotations(unit);
        let (main, per) = match stripped.split_once('/') {
            Some((main, per)) => (main.trim(), per.trim()),
            None => (stripped.trim(), ""),
        };
        let main = match main {
            "" | "1" => Cow::Borrowed(""),
            m => main_unit_word(m).map_or_else(|| sanitize_unit(m), Cow::Borrowed),
        };
        let per = match per_unit_word(per) {
            _ if per.is_empty() => Cow::Borrowed(""),
            Some(word) => Cow::Owned(format!("per_{word}")),
            None => match sanitize_unit(per) {
                s if s.is_empty() => Cow::Borrowed(""),
                s => Cow::Owned(format!("per_{s}")),
            },
        };
        PromUnit { main, per }
    }

    /// The unit as one word, for the UNIT metadata: `meters_per_second`.
    pub fn word(&self) -> String {
        match (self.main.is_empty(), self.per.is_empty()) {
            (_, true) => self.main.to_string(),
            (true, false) => self.per.to_string(),
            (false, false) => format!("{}_{}", self.main, self.per),
        }
    }
}

fn strip_annotations(unit: &str) -> Cow<'_, str> {
    if !unit.contains('{') {
        return Cow::Borrowed(unit);
    }
    let mut out = String::with_capacity(unit.len());
    let mut depth = 0u32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    Cow::Owned(out)
}

/// Units the Collector's and Prometheus' translators spell out; anything else is kept,
/// sanitised, as the spec asks ("when possible").
fn main_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "kBy" | "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "bit" => "bits",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(unit: &str) -> Option<&'static str> {
    Some(match unit {
        "s" => "second",
        "m" | "min" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

fn sanitize_unit(unit: &str) -> Cow<'static, str> {
    let mut out = String::with_capacity(unit.len());
    push_replaced(&mut out, unit, |c| c.is_ascii_alphanumeric() || c == '_');
    Cow::Owned(out.trim_matches('_').to_owned())
}

/// Appends `s` with every character outside `valid` replaced by `_`, collapsing runs of `_`
/// (including a run that starts at the end of what `out` already holds).
fn push_replaced(out: &mut String, s: &str, valid: impl Fn(char) -> bool) {
    for c in s.chars() {
        let c = if valid(c) { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
}

fn is_metric_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether a non-empty key is a label name as it stands: label characters only, not
/// starting with a digit, no `__` anywhere (which [`push_replaced`] would squeeze). One pass
/// over the bytes: this runs for every attribute of every data point.
fn is_clean_label(key: &[u8]) -> bool {
    if key.first().is_some_and(u8::is_ascii_digit) {
        return false;
    }
    let mut after_underscore = false;
    for &b in key {
        match b {
            b'_' if after_underscore => return false,
            b'_' => after_underscore = true,
            _ if b.is_ascii_alphanumeric() => after_underscore = false,
            _ => return false,
        }
    }
    true
}

/// The Prometheus name of an OTLP metric, without the `_bucket`/`_sum`/`_count` series
/// suffixes. With `add_suffixes`, the unit comes first (unless a `_`-separated part of the
/// name already is that unit), then `_total` for counters; a counter already ending in
/// `_total` keeps one `_total`, after the unit. Returns `None` when nothing valid is left.
pub fn metric_name(
    name: &str,
    unit: &PromUnit,
    counter: bool,
    add_suffixes: bool,
) -> Option<String> {
    let mut out = String::with_capacity(name.len() + 24);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    push_replaced(&mut out, name, is_metric_char);
    if out.is_empty() {
        return None;
    }
    if add_suffixes {
        if counter && out.len() > "_total".len() && out.ends_with("_total") {
            out.truncate(out.len() - "_total".len());
        }
        for part in [&unit.main, &unit.per] {
            if !part.is_empty() && !has_part(&out, part) {
                push_suffix(&mut out, part);
            }
        }
        if counter {
            push_suffix(&mut out, "total");
        }
    }
    Some(out)
}

fn push_suffix(out: &mut String, suffix: &str) {
    if !out.ends_with('_') {
        out.push('_');
    }
    out.push_str(suffix);
}

/// Whether `part` occurs in `name` bounded by `_` or the ends: `foo_seconds_max` has
/// `seconds`, `foo_microseconds` does not.
fn has_part(name: &str, part: &str) -> bool {
    name.match_indices(part).any(|(at, _)| {
        let before = at == 0 || name.as_bytes()[at - 1] == b'_';
        let end = at + part.len();
        let after = end == name.len() || name.as_bytes()[end] == b'_';
        before && after
    })
}

/// The Prometheus label name of an attribute key; `None` for an empty key, which no label
/// can carry. Valid keys (the common case) are borrowed.
pub fn label_name(key: &str) -> Option<Cow<'_, str>> {
    let first = key.chars().next()?;
    if is_clean_label(key.as_bytes()) {
        return Some(Cow::Borrowed(key));
    }
    let mut out = String::with_capacity(key.len() + 4);
    if first.is_ascii_digit() {
        out.push_str("key_");
    }
    push_replaced(&mut out, key, is_label_char);
    Some(Cow::Owned(out))
}

/// Appends a float the way Prometheus prints one (Go's `strconv.FormatFloat(v, 'g', -1,
/// 64)` with `+Inf`, `-Inf`, `NaN`): `le` and `quantile` values must be spelt exactly so,
/// or the same bucket from two senders becomes two series.
pub fn push_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == 0.0 {
        out.push('0');
    } else if v.fract() == 0.0 && v.abs() < 1e6 {
        // Exact integers below 1e6 read the same in every notation; skip the digit work.
        let _ = write!(out, "{}", v as i64);
    } else {
        push_float_g(out, v);
    }
}

/// The float as a new string; see [`push_float`].
pub fn format_float(v: f64) -> String {
    let mut out = String::with_capacity(24);
    push_float(&mut out, v);
    out
}

fn push_float_g(out: &mut String, v: f64) {
    // Rust's `{:e}` gives the shortest round-trip digits, like Go's; only the layout differs.
    let mut sci = StackStr::default();
    if write!(sci, "{:e}", v.abs()).is_err() {
        let _ = write!(out, "{v}");
        return;
    }
    let sci = sci.as_str();
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (lead, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if v < 0.0 {
        out.push('-');
    }
    // Go switches to exponent form below 1e-4 and from 1e6 up when printing shortest.
    if !(-4..6).contains(&exp) {
        out.push_str(lead);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        let digits = lead.len() + rest.len();
        out.push_str(lead);
        if digits <= int_len {
            out.push_str(rest);
            out.extend(std::iter::repeat_n('0', int_len - digits));
        } else {
            let split = int_len - lead.len();
            out.push_str(&rest[..split]);
            out.push('.');
            out.push_str(&rest[split..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(lead);
        out.push_str(rest);
    }
}

/// A tiny fixed buffer so float formatting does not allocate; `{:e}` of an `f64` is at most
/// 24 bytes.
#[derive(Default)]
struct StackStr {
    buf: [u8; 32],
    len: usize,
}

impl StackStr {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str, unit: &str, kind: &str) -> String {
        let unit = PromUnit::from_otlp(unit, kind == "gauge");
        metric_name(name, &unit, kind == "counter", true).unwrap_or_default()
    }

    #[test]
    fn metric_names_follow_the_spec_examples() {
        assert_eq!(
            name("system.filesystem.usage", "By", "gauge"),
            "system_filesystem_usage_bytes"
        );
        assert_eq!(
            name("system.network.dropped", "{packets}", "gauge"),
            "system_network_dropped"
        );
        assert_eq!(
            name("system.network.dropped", "{packets}", "counter"),
            "system_network_dropped_total"
        );
        assert_eq!(
            name("system.memory.utilization", "1", "gauge"),
            "system_memory_utilization_ratio"
        );
        assert_eq!(
            name("system.processes.count", "1", "counter"),
            "system_processes_count_total"
        );
        assert_eq!(
            name("http.server.duration", "ms", "histogram"),
            "http_server_duration_milliseconds"
        );
        assert_eq!(
            name("process.cpu.time", "s", "counter"),
            "process_cpu_time_seconds_total"
        );
        assert_eq!(name("requests_total", "", "counter"), "requests_total");
        assert_eq!(
            name("requests.total", "s", "counter"),
            "requests_seconds_total"
        );
        assert_eq!(name("latency_seconds", "s", "gauge"), "latency_seconds");
        assert_eq!(
            name("latency_seconds_max", "s", "gauge"),
            "latency_seconds_max"
        );
        assert_eq!(name("heap", "KiBy", "gauge"), "heap_kibibytes");
        assert_eq!(name("speed", "m/s", "gauge"), "speed_meters_per_second");
        assert_eq!(
            name("speed_meters", "m/s", "gauge"),
            "speed_meters_per_second"
        );
        assert_eq!(
            name("queue.rate", "{request}/s", "gauge"),
            "queue_rate_per_second"
        );
        assert_eq!(
            name("packets", "packets/min", "gauge"),
            "packets_per_minute"
        );
        assert_eq!(name("2xx.count", "", "gauge"), "_2xx_count");
        assert_eq!(name("a..b--c", "", "gauge"), "a_b_c");
        assert_eq!(name("ns:sub.metric", "", "gauge"), "ns:sub_metric");
        assert_eq!(name("température", "Cel", "gauge"), "temp_rature_celsius");
        assert_eq!(metric_name("", &PromUnit::default(), false, true), None);
    }

    #[test]
    fn suffixes_can_be_turned_off() {
        let unit = PromUnit::from_otlp("s", false);
        assert_eq!(
            metric_name("rpc.duration", &unit, true, false).as_deref(),
            Some("rpc_duration")
        );
        assert_eq!(unit.word(), "seconds");
        assert_eq!(PromUnit::from_otlp("By/s", true).word(), "bytes_per_second");
        assert_eq!(PromUnit::from_otlp("{x}", true).word(), "");
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::cases(1024))]

        /// The one-pass check says what the rule says: label characters only, no digit
        /// first, no `__`.
        #[test]
        fn a_clean_label_is_exactly_one_the_rule_allows(key in "[a-z0-9_.é]{1,8}") {
            let rule = !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(is_label_char)
                && !key.contains("__");
            proptest::prop_assert_eq!(is_clean_label(key.as_bytes()), rule);
        }
    }

    #[test]
    fn label_names_are_sanitised() {
        assert_eq!(label_name("http.method").as_deref(), Some("http_method"));
        assert_eq!(label_name("valid_name").as_deref(), Some("valid_name"));
        assert!(matches!(label_name("valid_name"), Some(Cow::Borrowed(_))));
        assert_eq!(label_name("2xx").as_deref(), Some("key_2xx"));
        assert_eq!(label_name("__name__").as_deref(), Some("_name_"));
        assert_eq!(label_name("a..b").as_deref(), Some("a_b"));
        assert_eq!(label_name("_private").as_deref(), Some("_private"));
        assert_eq!(label_name("ключ").as_deref(), Some("_"));
        assert_eq!(label_name(""), None);
    }

    #[test]
    fn floats_print_like_prometheus() {
        let cases = [
            (0.5, "0.5"),
            (1.0, "1"),
            (0.0, "0"),
            (-0.0, "0"),
            (-1.0, "-1"),
            (2.5, "2.5"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.7, "123456.7"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (-0.25, "-0.25"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (v, want) in cases {
            assert_eq!(format_float(v), want, "{v}");
        }
    }
}
