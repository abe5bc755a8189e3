//! Property tests of the agent's parsers of untrusted text: the Prometheus exposition parser
//! and the CRI / Docker json-file log line decoders never panic, and read back what is
//! written in their format. Case counts are low for debug builds; `PROPTEST_CASES` raises
//! them.

use proptest::prelude::*;
use vigil_core::testing::{cases, env, mutated_example};

use crate::config::LogFormat;
use crate::scrape::parse::{Format, MetricKind, parse};
use crate::tail::format::{Decoder, Entry, Stream};
use crate::tail::line::LineSplitter;

/// Any characters, weighted toward the ones the formats escape or split on.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!(
        "([a-z0-9 \"\\\\{{}}=,#\t\r]|\\PC|\u{0}){{0,{max}}}"
    ))
    .unwrap()
}

// Prometheus text format -------------------------------------------------------------

#[derive(Debug, Clone)]
struct GenSample {
    labels: Vec<(String, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn gen_sample() -> impl Strategy<Value = GenSample> {
    let label = (
        prop::string::string_regex("[a-zA-Z_][a-zA-Z0-9_]{0,6}").unwrap(),
        text(10).prop_map(|v| v.replace('\r', "")),
    );
    (
        prop::collection::btree_map(label.0, label.1, 0..4),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY)
        ],
        prop::option::of(any::<i64>()),
    )
        .prop_map(|(labels, value, timestamp_ms)| GenSample {
            labels: labels.into_iter().collect(),
            value,
            timestamp_ms,
        })
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v:?}")
    }
}

fn render(families: &[(String, String, Vec<GenSample>)]) -> String {
    let mut out = String::new();
    for (name, help, samples) in families {
        out.push_str(&format!(
            "# HELP {name} {}\n",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        ));
        out.push_str(&format!("# TYPE {name} gauge\n"));
        for s in samples {
            out.push_str(name);
            if !s.labels.is_empty() {
                let labels: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(n, v)| format!("{n}=\"{}\"", escape_label_value(v)))
                    .collect();
                out.push_str(&format!("{{{}}}", labels.join(",")));
            }
            out.push(' ');
            out.push_str(&render_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                out.push_str(&format!(" {ts}"));
            }
            out.push('\n');
        }
    }
    out
}

// CRI and Docker json-file lines -----------------------------------------------------

/// Nanoseconds since the epoch as RFC 3339 with nine fraction digits.
fn rfc3339(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        nanos % 1_000_000_000
    )
}

/// One container message, cut by the runtime into one or more chunks.
#[derive(Debug, Clone)]
struct Message {
    time: u64,
    stream: Stream,
    chunks: Vec<String>,
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)],
        // No `\n` inside (it ends a line) and no `\r` (a CRI line's last `\r` is dropped).
        prop::collection::vec(text(12).prop_map(|t| t.replace('\r', "")), 1..4),
    )
        .prop_map(|(time, stream, chunks)| Message {
            time,
            stream,
            chunks,
        })
}

fn decode(format: LogFormat, file: &[u8], max: usize) -> (Vec<Entry>, u64) {
    let mut lines = Vec::new();
    let mut splitter = LineSplitter::new(max, 0);
    splitter.feed(file, &mut lines);
    splitter.finish(&mut lines);
    let mut decoder = Decoder::new(format, max);
    let mut entries = Vec::new();
    for line in lines {
        decoder.push(line, &mut entries);
    }
    decoder.finish(file.len() as u64, &mut entries);
    (entries, decoder.malformed)
}

fn expected(messages: &[Message]) -> Vec<(u64, Option<Stream>, Vec<u8>)> {
    messages
        .iter()
        .map(|m| (m.time, Some(m.stream), m.chunks.concat().into_bytes()))
        .collect()
}

fn got(entries: &[Entry]) -> Vec<(u64, Option<Stream>, Vec<u8>)> {
    entries
        .iter()
        .map(|e| (e.time_unix_nano, e.stream, e.body.clone()))
        .collect()
}

// Config loading -----------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn prom_parser_never_panics(body in text(200)) {
        for format in [Format::Text, Format::OpenMetrics] {
            let _ = parse(&body, format, 0);
        }
    }

    #[test]
    fn prom_parser_never_panics_on_sample_like_lines(
        lines in prop::collection::vec(
            prop::string::string_regex(
                r#"(# (TYPE|HELP|UNIT|EOF) )?[a-z_]{1,6}(\{([a-z]{1,3}="[^"\n]{0,4}"?,?){0,3}\}?)? ?[-+0-9.eInfNa]{0,8}( [-0-9.]{0,6})?( # \{\} 1)?"#
            ).unwrap(),
            0..8,
        ),
    ) {
        let body = lines.join("\n");
        for format in [Format::Text, Format::OpenMetrics] {
            let _ = parse(&body, format, 0);
        }
    }

    #[test]
    fn prom_text_renders_and_parses_back(
        families in prop::collection::btree_map(
            prop::string::string_regex("[a-zA-Z_:][a-zA-Z0-9_:]{0,10}").unwrap(),
            (text(12).prop_map(|h| h.replace('\r', "")), prop::collection::vec(gen_sample(), 0..4)),
            0..4,
        ),
    ) {
        let families: Vec<(String, String, Vec<GenSample>)> =
            families.into_iter().map(|(n, (h, s))| (n, h, s)).collect();
        let body = render(&families);
        let parsed = parse(&body, Format::Text, 0).map_err(|e| {
            TestCaseError::fail(format!("{e} in {body:?}"))
        })?;
        prop_assert_eq!(parsed.families.len(), families.len());
        for (family, (name, help, samples)) in parsed.families.iter().zip(&families) {
            prop_assert_eq!(family.name, name.as_str());
            prop_assert_eq!(family.kind, MetricKind::Gauge);
            // HELP text is trimmed of nothing but the separator after the name.
            prop_assert_eq!(family.help.as_ref(), help.as_str());
            prop_assert_eq!(family.samples.len(), samples.len());
            for (sample, want) in family.samples.iter().zip(samples) {
                let labels: Vec<(String, String)> = parsed
                    .labels(sample)
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                prop_assert_eq!(&labels, &want.labels);
                prop_assert!(
                    sample.value.to_bits() == want.value.to_bits()
                        || (sample.value.is_nan() && want.value.is_nan()),
                    "{} != {}", sample.value, want.value
                );
                prop_assert_eq!(sample.timestamp_ms, want.timestamp_ms);
            }
        }
    }

    #[test]
    fn cri_lines_format_and_parse_back(messages in prop::collection::vec(message(), 0..5)) {
        let mut file = String::new();
        for m in &messages {
            let last = m.chunks.len() - 1;
            for (i, chunk) in m.chunks.iter().enumerate() {
                let tag = if i == last { "F" } else { "P" };
                file.push_str(&format!(
                    "{} {} {tag} {chunk}\n",
                    rfc3339(m.time),
                    m.stream.as_str()
                ));
            }
        }
        let (entries, malformed) = decode(LogFormat::Cri, file.as_bytes(), 1 << 16);
        prop_assert_eq!(malformed, 0);
        prop_assert_eq!(got(&entries), expected(&messages));
        prop_assert!(entries.iter().all(|e| !e.split));
    }

    #[test]
    fn docker_lines_format_and_parse_back(messages in prop::collection::vec(message(), 0..5)) {
        let mut file = String::new();
        for m in &messages {
            let last = m.chunks.len() - 1;
            for (i, chunk) in m.chunks.iter().enumerate() {
                let log = if i == last { format!("{chunk}\n") } else { chunk.clone() };
                let line = serde_json::json!({
                    "log": log,
                    "stream": m.stream.as_str(),
                    "time": rfc3339(m.time),
                });
                file.push_str(&format!("{line}\n"));
            }
        }
        let (entries, malformed) = decode(LogFormat::Docker, file.as_bytes(), 1 << 16);
        prop_assert_eq!(malformed, 0);
        prop_assert_eq!(got(&entries), expected(&messages));
    }

    #[test]
    fn any_bytes_decode_to_bounded_entries(
        file in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b' '), Just(b'P'), Just(b'F')],
            0..300,
        ),
        max in 1usize..64,
    ) {
        for format in [LogFormat::Cri, LogFormat::Docker, LogFormat::Raw] {
            let (entries, _) = decode(format, &file, max);
            let out: usize = entries.iter().map(|e| e.body.len()).sum();
            prop_assert!(out <= file.len());
            // Lines are cut at the limit, and merging stops before crossing it.
            prop_assert!(entries.iter().all(|e| e.body.len() <= max));
        }
    }

    #[test]
    fn rfc3339_formats_and_parses_back(nanos in any::<u64>()) {
        prop_assert_eq!(crate::tail::format::parse_rfc3339_nanos(&rfc3339(nanos)), Some(nanos));
    }

    #[test]
    fn config_loading_of_any_text_is_ok_or_an_error(text in "\\PC{0,200}") {
        let _ = crate::config::Config::from_yaml(&text, env);
    }

    #[test]
    fn config_loading_of_a_mutated_example_is_ok_or_an_error(
        text in mutated_example(include_str!("../../config/agent.yaml")),
    ) {
        let _ = crate::config::Config::from_yaml(&text, env);
    }
}
