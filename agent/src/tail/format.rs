//! Lines → log entries, by file format: CRI (Kubernetes), Docker json-file, raw.
//!
//! Both container formats cut long messages into partial lines (CRI: tag `P` until `F`;
//! Docker: a `log` without its trailing `\n`); they are merged back into one entry, up to
//! `max_bytes`, beyond which the merged part leaves flagged as split. A line that does not
//! parse in its format is kept whole as a raw entry and counted, never dropped.

use crate::config::LogFormat;
use crate::tail::line::RawLine;

/// Which output stream of a container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One log entry, ready to become a `LogRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// From the line's own timestamp; 0 when it has none.
    pub time_unix_nano: u64,
    pub stream: Option<Stream>,
    pub body: Vec<u8>,
    /// Part of a longer line or message that was cut.
    pub split: bool,
    /// The file offset a reader may resume from once this entry is delivered.
    pub resume_offset: u64,
}

/// The header a line carried, kept for the pieces of a cut line that follow it.
#[derive(Debug, Clone, Copy)]
struct Header {
    time_unix_nano: u64,
    stream: Option<Stream>,
    /// The message continues on the next line (CRI `P`, Docker log without `\n`).
    partial: bool,
}

/// Decodes one file's lines in order.
#[derive(Debug)]
pub struct Decoder {
    format: LogFormat,
    max_bytes: usize,
    /// The header of the line whose pieces are arriving.
    current: Option<Header>,
    /// A message being merged from partial lines.
    merging: Option<Entry>,
    /// Where a reader may resume once the merged part so far is delivered.
    merged_resume: u64,
    /// Lines that did not parse in the format (kept as raw entries).
    pub malformed: u64,
}

impl Decoder {
    pub fn new(format: LogFormat, max_bytes: usize) -> Decoder {
        Decoder {
            format,
            max_bytes: max_bytes.max(1),
            current: None,
            merging: None,
            merged_resume: 0,
            malformed: 0,
        }
    }

    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// Decodes one line (or piece), pushing the entries it completes.
    pub fn push(&mut self, mut line: RawLine, out: &mut Vec<Entry>) {
        let bytes = std::mem::take(&mut line.bytes);
        let (header, body) = match (line.first, self.current) {
            (false, Some(header)) => (header, bytes),
            _ => self.parse(bytes),
        };
        self.current = (!line.last).then_some(header);
        let ends_message = line.last && !header.partial;
        let mut entry = match self.merging.take() {
            Some(mut merged) if merged.body.len() + body.len() <= self.max_bytes => {
                merged.body.extend_from_slice(&body);
                merged.split |= line.is_piece();
                merged
            }
            merging => {
                // Over the limit with this line: what was merged leaves first, cut.
                if let Some(merged) = merging {
                    out.push(Entry {
                        split: true,
                        ..merged
                    });
                }
                Entry {
                    time_unix_nano: header.time_unix_nano,
                    stream: header.stream,
                    body,
                    split: line.is_piece(),
                    // Until the message is complete, resuming means re-reading all of it.
                    resume_offset: line.line_start,
                }
            }
        };
        if ends_message {
            entry.resume_offset = line.end;
            out.push(entry);
        } else if entry.body.len() >= self.max_bytes {
            entry.split = true;
            out.push(entry);
        } else {
            self.merging = Some(entry);
            self.merged_resume = line.resume_offset();
        }
    }

    /// Whether part of a message is waiting for the line that ends it.
    pub fn has_partial(&self) -> bool {
        self.merging.is_some()
    }

    /// Leaves a partial message whose end never came (its writer died between a CRI `P`
    /// and `F`), flagged as split.
    pub fn flush_partial(&mut self, out: &mut Vec<Entry>) {
        if let Some(mut entry) = self.merging.take() {
            entry.resume_offset = self.merged_resume;
            entry.split = true;
            out.push(entry);
        }
    }

    /// Leaves a message still being merged: for a file that will not grow any more and
    /// has been read up to `end`.
    pub fn finish(&mut self, end: u64, out: &mut Vec<Entry>) {
        if let Some(mut entry) = self.merging.take() {
            entry.resume_offset = end;
            out.push(entry);
        }
        self.current = None;
    }

    fn parse(&mut self, bytes: Vec<u8>) -> (Header, Vec<u8>) {
        let parsed = match self.format {
            LogFormat::Raw => None,
            LogFormat::Cri => parse_cri(&bytes),
            LogFormat::Docker => parse_docker(&bytes),
        };
        match parsed {
            Some(parsed) => parsed,
            None => {
                if self.format != LogFormat::Raw {
                    self.malformed += 1;
                }
                let raw = Header {
                    time_unix_nano: 0,
                    stream: None,
                    partial: false,
                };
                (raw, bytes)
            }
        }
    }
}

/// `<RFC3339Nano time> <stdout|stderr> <P|F>[:tags] <log>`.
fn parse_cri(bytes: &[u8]) -> Option<(Header, Vec<u8>)> {
    let mut fields = bytes.splitn(4, |b| *b == b' ');
    let time = parse_rfc3339_nanos(std::str::from_utf8(fields.next()?).ok()?)?;
    let stream = Stream::parse(std::str::from_utf8(fields.next()?).ok()?)?;
    let tags = fields.next()?;
    let partial = match tags.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let body = fields.next().unwrap_or_default().to_vec();
    let header = Header {
        time_unix_nano: time,
        stream: Some(stream),
        partial,
    };
    Some((header, body))
}

/// `{"log":"...\n","stream":"stdout","time":"2019-01-01T00:00:00.000000001Z"}`.
fn parse_docker(bytes: &[u8]) -> Option<(Header, Vec<u8>)> {
    #[derive(serde::Deserialize)]
    struct Line {
        log: String,
        #[serde(default)]
        stream: Option<String>,
        #[serde(default)]
        time: Option<String>,
    }
    let line: Line = serde_json::from_slice(bytes).ok()?;
    let mut log = line.log.into_bytes();
    let partial = log.last() != Some(&b'\n');
    if !partial {
        log.pop();
    }
    let header = Header {
        time_unix_nano: line
            .time
            .as_deref()
            .and_then(parse_rfc3339_nanos)
            .unwrap_or(0),
        stream: line.stream.as_deref().and_then(Stream::parse),
        partial,
    };
    Some((header, log))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into nanoseconds since the Unix
/// epoch; `None` for anything else, or before 1970.
pub fn parse_rfc3339_nanos(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(range)?;
        part.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let count = i - start;
        if count == 0 {
            return None;
        }
        for _ in count..9 {
            nanos *= 10;
        }
    }
    let offset_seconds = match b.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(i + 1..i + 3)?;
            let minutes = digits(i + 4..i + 6)?;
            let _ = (h1, h2, m1, m2);
            let total = hours * 3600 + minutes * 60;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    let total = i128::from(seconds) * 1_000_000_000 + i128::from(nanos);
    u64::try_from(total).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::line::LineSplitter;

    fn decode(format: LogFormat, max: usize, text: &[u8]) -> (Vec<Entry>, Decoder) {
        let mut splitter = LineSplitter::new(max, 0);
        let mut lines = Vec::new();
        splitter.feed(text, &mut lines);
        let mut decoder = Decoder::new(format, max);
        let mut out = Vec::new();
        for line in lines {
            decoder.push(line, &mut out);
        }
        (out, decoder)
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect()
    }

    #[test]
    fn rfc3339_timestamps() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos("2016-10-06T00:17:09.669794202Z"),
            Some(1_475_713_029_669_794_202)
        );
        assert_eq!(
            parse_rfc3339_nanos("2016-10-06T02:17:09.5+02:00"),
            Some(1_475_713_029_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("2024-02-29T23:59:59.123456789123Z"),
            Some(1_709_251_199_123_456_789)
        );
        for bad in [
            "",
            "2016-10-06",
            "2016-13-06T00:17:09Z",
            "2016-10-06T00:17:09",
            "2016-10-06T00:17:09.Z",
            "1969-12-31T23:59:59Z",
            "2016-10-06T00:17:09+0200",
            "２０１６-10-06T00:17:09Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad}");
        }
    }

    #[test]
    fn cri_lines_with_partials_merged() {
        let text = b"2016-10-06T00:17:09.669794202Z stdout F hello world\n\
            2016-10-06T00:17:10Z stderr P part one, \n\
            2016-10-06T00:17:10Z stderr P part two, \n\
            2016-10-06T00:17:11Z stderr F end\n\
            2016-10-06T00:17:12Z stdout F \n";
        let (entries, decoder) = decode(LogFormat::Cri, 1024, text);
        assert_eq!(
            bodies(&entries),
            vec!["hello world", "part one, part two, end", ""]
        );
        assert_eq!(entries[0].stream, Some(Stream::Stdout));
        assert_eq!(entries[0].time_unix_nano, 1_475_713_029_669_794_202);
        assert_eq!(entries[1].stream, Some(Stream::Stderr));
        assert_eq!(
            entries[1].time_unix_nano, 1_475_713_030_000_000_000,
            "a merged message has its first part's time"
        );
        assert!(entries.iter().all(|e| !e.split));
        assert_eq!(entries[2].resume_offset, text.len() as u64);
        assert_eq!(decoder.malformed, 0);
    }

    #[test]
    fn cri_resume_offset_covers_a_whole_merged_message() {
        let text = b"2016-10-06T00:17:10Z stdout P a\n2016-10-06T00:17:10Z stdout F b\n";
        let mut splitter = LineSplitter::new(1024, 0);
        let mut lines = Vec::new();
        splitter.feed(text, &mut lines);
        let mut decoder = Decoder::new(LogFormat::Cri, 1024);
        let mut out = Vec::new();
        decoder.push(lines[0].clone(), &mut out);
        assert!(out.is_empty(), "a partial line alone is not an entry");
        decoder.push(lines[1].clone(), &mut out);
        assert_eq!(bodies(&out), vec!["ab"]);
        assert_eq!(out[0].resume_offset, text.len() as u64);
    }

    #[test]
    fn bad_cri_lines_are_kept_raw_and_counted() {
        let text =
            b"garbage\n2016-10-06T00:17:10Z stdin F x\n2016-10-06T00:17:10Z stdout X y\n\xff\xfe\n";
        let (entries, decoder) = decode(LogFormat::Cri, 1024, text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].body, b"garbage");
        assert_eq!(entries[3].body, b"\xff\xfe");
        assert!(entries.iter().all(|e| e.stream.is_none()));
        assert_eq!(decoder.malformed, 4);
    }

    #[test]
    fn long_cri_messages_are_cut_at_the_limit_never_dropped() {
        let body = "x".repeat(150);
        let text = format!("2016-10-06T00:17:10Z stdout F {body}\n");
        let (entries, _) = decode(LogFormat::Cri, 64, text.as_bytes());
        assert!(entries.iter().all(|e| e.split));
        assert!(entries.iter().all(|e| e.stream == Some(Stream::Stdout)));
        let joined: String = bodies(&entries).concat();
        assert_eq!(joined, body);
        // Pieces before the last resume at the line's start: a crash replays the line.
        assert!(
            entries[..entries.len() - 1]
                .iter()
                .all(|e| e.resume_offset == 0)
        );
        assert_eq!(entries.last().unwrap().resume_offset, text.len() as u64);

        let part = format!("2016-10-06T00:17:10Z stdout P {}\n", "y".repeat(40));
        let text = part.repeat(4) + "2016-10-06T00:17:10Z stdout F z\n";
        let (entries, _) = decode(LogFormat::Cri, 64, text.as_bytes());
        let joined: String = bodies(&entries).concat();
        assert_eq!(joined, "y".repeat(160) + "z");
        assert!(
            entries.iter().all(|e| e.body.len() <= 64),
            "never over the limit"
        );
        assert!(entries[0].split);
    }

    #[test]
    fn docker_lines_with_partials_merged() {
        let text = br#"{"log":"one\n","stream":"stdout","time":"2019-01-01T00:00:00.000000001Z"}
{"log":"two a ","stream":"stderr","time":"2019-01-01T00:00:01Z"}
{"log":"b\u00e9\n","stream":"stderr","time":"2019-01-01T00:00:02Z"}
{"log": 5}
"#;
        let (entries, decoder) = decode(LogFormat::Docker, 1024, text);
        assert_eq!(bodies(&entries), vec!["one", "two a bé", r#"{"log": 5}"#]);
        assert_eq!(entries[0].time_unix_nano, 1_546_300_800_000_000_001);
        assert_eq!(entries[1].stream, Some(Stream::Stderr));
        assert_eq!(decoder.malformed, 1);
    }

    #[test]
    fn a_partial_message_whose_end_never_comes_can_be_flushed() {
        let text = b"2016-10-06T00:17:10Z stdout P half a mess\n";
        let (mut entries, mut decoder) = decode(LogFormat::Cri, 1024, text);
        assert!(entries.is_empty());
        assert!(decoder.has_partial());
        decoder.flush_partial(&mut entries);
        assert_eq!(bodies(&entries), vec!["half a mess"]);
        assert!(entries[0].split);
        assert_eq!(entries[0].resume_offset, text.len() as u64);
        assert!(!decoder.has_partial());
    }

    #[test]
    fn raw_lines_and_finish() {
        let (mut entries, mut decoder) = decode(LogFormat::Raw, 1024, b"a\nb\n");
        decoder.finish(4, &mut entries);
        assert_eq!(bodies(&entries), vec!["a", "b"]);
        assert_eq!(decoder.malformed, 0);

        let (mut entries, mut decoder) = decode(
            LogFormat::Cri,
            1024,
            b"2016-10-06T00:17:10Z stdout P dangling\n",
        );
        assert!(entries.is_empty());
        decoder.finish(39, &mut entries);
        assert_eq!(bodies(&entries), vec!["dangling"]);
        assert_eq!(entries[0].resume_offset, 39);
    }
}
