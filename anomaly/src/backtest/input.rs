//! Reading a backtest's files: `timestamp,value` CSV and labelled windows JSON.
//!
//! Every problem is an [`InputError`] naming the file and, for the CSV, the line.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A timestamp below this is in seconds (it is before 1973 in milliseconds).
const SECONDS_BELOW: f64 = 1e11;

/// A series read from CSV, timestamps in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    pub points: Vec<Point>,
    /// The file's timestamps were in seconds.
    pub seconds: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub timestamp_ms: i64,
    pub value: f64,
}

/// An anomaly window, inclusive, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Reads a series from a CSV file.
pub fn read_series(path: &Path) -> Result<Series, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_series(&text, path)
}

/// Parses `timestamp,value` lines; a first line that is not numeric is a header. Values
/// may be `NaN` (the detector skips them); timestamps must strictly increase.
pub fn parse_series(text: &str, path: &Path) -> Result<Series, InputError> {
    let line_error = |line: usize, message: String| InputError::Line {
        path: path.to_owned(),
        line,
        message,
    };
    let mut raw = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let (Some(ts), Some(value)) = (fields.next(), fields.next()) else {
            if raw.is_empty() && i == 0 {
                continue;
            }
            return Err(line_error(
                number,
                format!("expected `timestamp,value`, got `{line}`"),
            ));
        };
        let ts_parsed = ts.parse::<f64>();
        if ts_parsed.is_err() && raw.is_empty() && i == 0 {
            continue; // header
        }
        let ts = ts_parsed
            .ok()
            .filter(|t| t.is_finite() && t.abs() < 1e16)
            .ok_or_else(|| line_error(number, format!("`{ts}` is not a timestamp")))?;
        let value = value
            .parse::<f64>()
            .map_err(|_| line_error(number, format!("`{value}` is not a number")))?;
        raw.push((number, ts, value));
    }
    let seconds = raw
        .first()
        .is_some_and(|&(_, t, _)| t.abs() < SECONDS_BELOW);
    let mut points = Vec::with_capacity(raw.len());
    let mut last = None;
    for (number, ts, value) in raw {
        let ms = to_ms(ts, seconds);
        if let Some((last_ms, last_line)) = last
            && ms <= last_ms
        {
            return Err(line_error(
                number,
                format!("timestamp does not increase (line {last_line} has the same or later)"),
            ));
        }
        last = Some((ms, number));
        points.push(Point {
            timestamp_ms: ms,
            value,
        });
    }
    if points.is_empty() {
        return Err(InputError::File {
            path: path.to_owned(),
            message: "no data lines".into(),
        });
    }
    Ok(Series { points, seconds })
}

fn to_ms(t: f64, seconds: bool) -> i64 {
    (if seconds { t * 1e3 } else { t }).round() as i64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: f64,
    end: f64,
}

/// Reads labelled windows, `[{"start": .., "end": ..}]`, in the CSV's time unit.
pub fn read_windows(path: &Path, seconds: bool) -> Result<Vec<Window>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_windows(&text, path, seconds)
}

pub fn parse_windows(text: &str, path: &Path, seconds: bool) -> Result<Vec<Window>, InputError> {
    let file_error = |message: String| InputError::File {
        path: path.to_owned(),
        message,
    };
    let raw: Vec<RawWindow> = serde_json::from_str(text).map_err(|e| InputError::Line {
        path: path.to_owned(),
        line: e.line(),
        message: e.to_string(),
    })?;
    let mut windows = Vec::with_capacity(raw.len());
    for (i, w) in raw.iter().enumerate() {
        if !(w.start.is_finite() && w.end.is_finite() && w.start.abs() < 1e16 && w.end.abs() < 1e16)
        {
            return Err(file_error(format!(
                "window {i}: start and end must be numbers"
            )));
        }
        if w.end < w.start {
            return Err(file_error(format!("window {i}: end is before start")));
        }
        windows.push(Window {
            start_ms: to_ms(w.start, seconds),
            end_ms: to_ms(w.end, seconds),
        });
    }
    windows.sort_by_key(|w| w.start_ms);
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Series, InputError> {
        parse_series(text, Path::new("s.csv"))
    }

    #[test]
    fn header_is_optional_and_seconds_become_milliseconds() {
        let a = parse("timestamp,value\n1767571200,1\n1767571260,2.5\n").unwrap();
        let b = parse("1767571200000,1\n1767571260000,2.5\n").unwrap();
        assert!(a.seconds && !b.seconds);
        assert_eq!(a.points[1].timestamp_ms, 1_767_571_260_000);
        assert_eq!(a.points, b.points);
        assert!(parse("100,NaN\n").unwrap().points[0].value.is_nan());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e = parse("ts,value\n100,1\n160,x\n").unwrap_err().to_string();
        assert_eq!(e, "s.csv:3: `x` is not a number");
        let e = parse("100,1\n100,2\n").unwrap_err().to_string();
        assert!(e.starts_with("s.csv:2: timestamp does not increase"), "{e}");
        let e = parse("100,1\n7\n").unwrap_err().to_string();
        assert!(e.starts_with("s.csv:2: expected"), "{e}");
        assert!(parse("ts,value\n").is_err());
        let e = parse_windows("[{\"start\": 1}]", Path::new("w.json"), true)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("w.json:1:"), "{e}");
    }
}
