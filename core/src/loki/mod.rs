//! OTLP logs → Grafana Loki push.
//!
//! Loki's push API: <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>
//! (`POST /loki/api/v1/push`, `Content-Type: application/x-protobuf`, the body a
//! `logproto.PushRequest` compressed as one snappy *block*, not the framed format).
//!
//! - [`proto`]: the push messages as hand-written `prost` structs.
//! - [`convert()`]: OTLP export requests → one [`PushRequest`], with [`LokiOptions`].
//! - [`encode`] / [`decode`]: the wire body both ways ([`crate::snappy`]); `decode` serves
//!   test receivers and refuses a body whose declared size exceeds a limit before allocating
//!   it.
//! - [`parse_labels`] / [`format_labels`]: the `{a="b", c="d"}` label-set string.
//!
//! Choices made (the details are on the items):
//! - Streams are the label rules' attributes that are present plus a derived `level`; a stream
//!   without `service.name` gets `service_name="unknown_service"`, so no label set is empty.
//! - Every other attribute (resource, scope, record) and the trace/span ids travel as
//!   structured metadata (Loki ≥ 2.9); with it switched off they are appended to the line as
//!   ` name=value` pairs instead, so nothing is lost on older Lokis.
//! - Entries are sorted by timestamp within a stream (stable) and streams by their label
//!   string, so the same input always encodes to the same bytes.
//! - Label and metadata names are made valid Prometheus label names (`[a-zA-Z_][a-zA-Z0-9_]*`).
//!   When two metadata pairs end up with one name, the more specific wins: record over scope
//!   over resource.
//! - Label and metadata values are attribute values as [`crate::otlp::any_value_text`] prints
//!   them, the same text remote write gives a Prometheus label (doubles as `2`, not `2.0`).
//! - The line is the body: strings as they are, numbers and booleans as text, bytes as base64,
//!   arrays and maps as JSON (keys in the order sent). Timestamps: event time, else observed time, else receive time.
//! - Not enforced here: Loki's per-entry limits (`max_line_size`, by default 256 KB, and
//!   `max_structured_metadata_entries_count` / `_size`, 128 pairs / 64 KB). Loki refuses
//!   entries over them with a 400, which the exporter treats as permanent.

mod convert;
#[cfg(test)]
mod convert_tests;
pub mod proto;

pub use convert::{
    Converted, LEVEL_LABEL, LabelRule, LokiOptions, UNKNOWN_SERVICE, convert, default_label_rules,
};
pub use proto::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

use crate::snappy::{self, SnappyError};

/// Why a push body or a label set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The body: snappy, its size limit, or protobuf.
    #[error(transparent)]
    Body(#[from] SnappyError),
    #[error("label set {input:?}: {reason} at byte {at}")]
    Labels {
        input: String,
        at: usize,
        reason: &'static str,
    },
}

/// Why a push request could not be encoded: only a request too large for snappy's block
/// format (about 4 GiB), which batches never get near.
pub type EncodeError = SnappyError;

/// The wire body for `POST /loki/api/v1/push`: protobuf, then one snappy block.
pub fn encode(req: &PushRequest) -> Result<Vec<u8>, EncodeError> {
    snappy::encode_message(req)
}

/// Reads a push body. The snappy header declares the decompressed size; a body declaring
/// more than `max_decompressed` bytes is refused before anything is allocated for it.
pub fn decode(body: &[u8], max_decompressed: usize) -> Result<PushRequest, DecodeError> {
    Ok(snappy::decode_message(body, max_decompressed)?)
}

/// Formats a label set as Loki expects it: `{a="b", c="d"}`, in the order given. Values are
/// escaped as in a Go string literal (`\\`, `\"`, `\n`, `\r`, `\t`, other control characters as
/// `\u00XX`), which Loki's parser reads back.
pub fn format_labels<'a, I>(labels: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut out = String::with_capacity(64);
    out.push('{');
    for (i, (name, value)) in labels.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_into(value, &mut out);
        out.push('"');
    }
    out.push('}');
    out
}

pub(crate) fn escape_into(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Parses a label-set string such as `{a="b", c="d"}` into its pairs, in order. Accepts what
/// [`format_labels`] writes and the same with other spacing; `{}` is the empty set.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, DecodeError> {
    LabelParser { s, pos: 0 }.parse()
}

struct LabelParser<'a> {
    s: &'a str,
    pos: usize,
}

impl LabelParser<'_> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, DecodeError> {
        Err(DecodeError::Labels {
            input: self.s.to_owned(),
            at: self.pos,
            reason,
        })
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: char, reason: &'static str) -> Result<(), DecodeError> {
        self.skip_spaces();
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            self.fail(reason)
        }
    }

    fn parse(mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let mut pairs = Vec::new();
        self.expect('{', "expected '{'")?;
        self.skip_spaces();
        if self.peek() == Some('}') {
            self.pos += 1;
        } else {
            loop {
                let name = self.name()?;
                self.expect('=', "expected '='")?;
                self.expect('"', "expected '\"'")?;
                let value = self.value()?;
                pairs.push((name, value));
                self.skip_spaces();
                match self.bump() {
                    Some(',') => continue,
                    Some('}') => break,
                    _ => return self.fail("expected ',' or '}'"),
                }
            }
        }
        self.skip_spaces();
        if self.pos != self.s.len() {
            return self.fail("trailing characters");
        }
        Ok(pairs)
    }

    fn name(&mut self) -> Result<String, DecodeError> {
        self.skip_spaces();
        let start = self.pos;
        while let Some(c) = self.peek() {
            let ok =
                c == '_' || c.is_ascii_alphabetic() || (self.pos > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            self.pos += 1;
        }
        if self.pos == start {
            return self.fail("expected a label name");
        }
        Ok(self.s[start..self.pos].to_owned())
    }

    /// Reads up to and including the closing quote; the opening one is already consumed.
    fn value(&mut self) -> Result<String, DecodeError> {
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return self.fail("unterminated value"),
                Some('"') => return Ok(out),
                Some('\n') => return self.fail("raw newline in value"),
                Some('\\') => match self.bump() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('\'') => out.push('\''),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => {
                        let hex = self.s.get(self.pos..self.pos + 4);
                        let c = hex
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                            .and_then(char::from_u32);
                        match c {
                            Some(c) => {
                                out.push(c);
                                self.pos += 4;
                            }
                            None => return self.fail("bad \\u escape"),
                        }
                    }
                    _ => return self.fail("unknown escape"),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

/// True if `name` is a valid Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b == b'_' || b.is_ascii_alphabetic() => {}
        _ => return false,
    }
    bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
}

/// Makes an attribute key a valid label name: every character outside `[a-zA-Z0-9_]` becomes
/// `_`, and a leading digit gets a `key_` prefix (as the OpenTelemetry → Prometheus
/// translation does). `None` for an empty key, which no name can stand for.
pub fn sanitize_label_name(key: &str) -> Option<std::borrow::Cow<'_, str>> {
    if key.is_empty() {
        return None;
    }
    if is_valid_label_name(key) {
        return Some(std::borrow::Cow::Borrowed(key));
    }
    let mut out = String::with_capacity(key.len() + 4);
    if key.as_bytes()[0].is_ascii_digit() {
        out.push_str("key_");
    }
    out.extend(key.chars().map(|c| {
        if c == '_' || c.is_ascii_alphanumeric() {
            c
        } else {
            '_'
        }
    }));
    Some(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn formats_and_parses_plain_labels() {
        let s = format_labels([("level", "info"), ("service_name", "api")]);
        assert_eq!(s, r#"{level="info", service_name="api"}"#);
        assert_eq!(
            parse_labels(&s).unwrap(),
            owned(&[("level", "info"), ("service_name", "api")])
        );
        assert_eq!(parse_labels("{}").unwrap(), vec![]);
        assert_eq!(
            parse_labels(r#" { a = "1" ,b="2" } "#).unwrap(),
            owned(&[("a", "1"), ("b", "2")])
        );
    }

    #[test]
    fn label_escaping_round_trips() {
        let nasty = "say \"hi\"\\ then\nnew\tline\r\u{1}é";
        let s = format_labels([("a", nasty)]);
        assert_eq!(s, r#"{a="say \"hi\"\\ then\nnew\tline\r\u0001é"}"#);
        assert_eq!(parse_labels(&s).unwrap(), owned(&[("a", nasty)]));
    }

    #[test]
    fn parse_labels_rejects_malformed_input() {
        for bad in [
            "",
            "a=\"b\"",
            "{a=\"b\"",
            "{a=\"b}",
            "{a=b}",
            "{1a=\"b\"}",
            "{a=\"b\",}",
            "{a=\"\\q\"}",
            "{a=\"\\u12\"}",
            "{a=\"b\"} x",
            "{a=\"é\\u",
        ] {
            let err = parse_labels(bad).unwrap_err();
            assert!(matches!(err, DecodeError::Labels { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sanitizes_label_names() {
        let s = |k| sanitize_label_name(k).map(|c| c.into_owned());
        assert_eq!(s("service.name").as_deref(), Some("service_name"));
        assert_eq!(s("ok_Name9").as_deref(), Some("ok_Name9"));
        assert_eq!(s("9lives").as_deref(), Some("key_9lives"));
        assert_eq!(s("http.status-code").as_deref(), Some("http_status_code"));
        assert_eq!(s("café").as_deref(), Some("caf_"));
        assert_eq!(s(""), None);
        assert!(is_valid_label_name("_x1"));
        assert!(!is_valid_label_name("1x"));
        assert!(!is_valid_label_name(""));
    }

    fn sample() -> PushRequest {
        PushRequest {
            streams: vec![StreamAdapter {
                labels: r#"{service_name="api"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp::from_unix_nanos(1_700_000_000_123_456_789)),
                    line: "hello".into(),
                    structured_metadata: vec![LabelPairAdapter {
                        name: "trace_id".into(),
                        value: "0102".into(),
                    }],
                }],
                hash: 0,
            }],
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let req = sample();
        let body = encode(&req).unwrap();
        // A snappy block, not the framed stream format (which starts with 0xff "sNaPpY").
        assert_ne!(body.first(), Some(&0xff));
        let back = decode(&body, 1 << 20).unwrap();
        assert_eq!(back, req);
        let ts = back.streams[0].entries[0].timestamp.unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_789));
        // The size limit and garbage bodies are tested once, in `crate::snappy`; here only
        // that their errors come through as `Body` and still say what went wrong.
        let err = decode(&body, 4).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Body(SnappyError::TooLarge { limit: 4, .. })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("over the limit of 4"), "{err}");
    }
}
