//! Loading YAML configuration the same way in every binary.
//!
//! - `${VAR}` and `${VAR:-default}` are replaced from the environment before parsing, so
//!   secrets stay out of files; `$$` is a literal `$`.
//! - Unknown keys are rejected (the config structs use `deny_unknown_fields`).
//! - Every problem is reported at once, each with its path (`exporters.loki.endpoint:
//!   invalid URL`): structural errors are collected by removing the offending key and
//!   parsing again, then [`Validate`] walks the typed tree for semantic errors.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml::Value;

/// One problem in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path to the offending value (`buffer.disk.max_bytes`); empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.path.is_empty() {
            true => f.write_str(&self.message),
            false => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects semantic errors while walking a typed config.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn into_result(self) -> Result<(), ConfigErrors> {
        match self.0.is_empty() {
            true => Ok(()),
            false => Err(ConfigErrors(self.0)),
        }
    }
}

/// Semantic checks a typed config section runs on itself, reporting under `path`.
pub trait Validate {
    fn validate(&self, path: &str, errors: &mut Errors);
}

/// Joins a parent path and a key.
pub fn join(path: &str, key: &str) -> String {
    match path.is_empty() {
        true => key.to_string(),
        false => format!("{path}.{key}"),
    }
}

/// Substitutes the environment, parses, and validates: the whole loading pipeline.
pub fn load<T: DeserializeOwned + Validate>(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<T, ConfigErrors> {
    let text = substitute_env(text, env)?;
    let (config, structural) = parse_collecting::<T>(&text);
    let mut errors = Errors(structural);
    // Validate what parsed once the offending keys were removed, so one typo does not
    // hide every other problem.
    if let Some(config) = &config {
        config.validate("", &mut errors);
    }
    match (config, errors.into_result()) {
        (Some(config), Ok(())) => Ok(config),
        (_, Err(errors)) => Err(errors),
        (None, Ok(())) => Err(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: "configuration could not be parsed".into(),
        }])),
    }
}

/// Replaces `${VAR}` / `${VAR:-default}` with values from `env`; `$$` becomes `$`.
/// Every unset variable without a default is an error naming its line.
pub fn substitute_env(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigErrors> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    for (line_no, full_line) in text.split_inclusive('\n').enumerate() {
        // Comments are left alone: documentation may show `${VAR}` without setting it.
        let (line, comment) = full_line.split_at(comment_start(full_line));
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    errors.push(ConfigError {
                        path: format!("line {}", line_no + 1),
                        message: "unterminated `${` (write `$$` for a literal `$`)".into(),
                    });
                    out.push_str(&rest[pos..]);
                    rest = "";
                    continue;
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (expr, None),
                };
                let valid_name =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                match (valid_name, env(name), default) {
                    (false, _, _) => errors.push(ConfigError {
                        path: format!("line {}", line_no + 1),
                        message: format!("`${{{expr}}}` is not a valid variable name"),
                    }),
                    (true, Some(value), _) => out.push_str(&value),
                    (true, None, Some(default)) => out.push_str(default),
                    (true, None, None) => errors.push(ConfigError {
                        path: format!("line {}", line_no + 1),
                        message: format!("environment variable {name} is not set"),
                    }),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    match errors.is_empty() {
        true => Ok(out),
        false => Err(ConfigErrors(errors)),
    }
}

/// Where a YAML comment starts in `line` (its length if none): a `#` at the start or after
/// white space, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return i,
            None => {}
        }
        previous = c;
    }
    line.len()
}

/// Parses YAML into `T`, reporting every structural error (unknown key, wrong type, missing
/// field) rather than only the first: after each error the offending key is removed and the
/// document parsed again.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    match parse_collecting(text) {
        (Some(config), errors) if errors.is_empty() => Ok(config),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// The structural errors, and the config that parsed once their keys were removed (if
/// one did: a missing required key leaves none).
fn parse_collecting<T: DeserializeOwned>(text: &str) -> (Option<T>, Vec<ConfigError>) {
    let mut value: Value = match serde_yaml::from_str(text) {
        Ok(Value::Null) => Value::Mapping(Default::default()),
        Ok(v) => v,
        Err(e) => {
            let error = ConfigError {
                path: String::new(),
                message: format!("invalid YAML: {e}"),
            };
            return (None, vec![error]);
        }
    };
    let mut errors: Vec<ConfigError> = Vec::new();
    // Bounded: each round removes one key, and a document has finitely many.
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(config) => return (Some(config), errors),
            Err(e) => {
                let mut path: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|seg| match seg {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                        serde_path_to_error::Segment::Unknown => None,
                    })
                    .collect();
                let message = e.inner().to_string();
                if let Some(field) = unknown_field(&message)
                    && path.last().map(String::as_str) != Some(field)
                {
                    path.push(field.to_string());
                }
                let missing = message.starts_with("missing field");
                let shown_path = path.join(".");
                // A required key we removed ourselves comes back as "missing": already said.
                if !(missing && errors.iter().any(|e| e.path == shown_path)) {
                    errors.push(ConfigError {
                        path: shown_path,
                        message: strip_location(&message),
                    });
                }
                if missing || !remove_path(&mut value, &path) {
                    break;
                }
            }
        }
    }
    (None, errors)
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde_yaml appends " at line N column M" positions of the re-serialised value, which
/// mean nothing to the user once the path is shown.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn remove_path(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut current = value;
    for key in parents {
        current = match current {
            Value::Mapping(m) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            Value::Sequence(s) => match key.parse::<usize>().ok().and_then(|i| s.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            Value::Tagged(t) => &mut t.value,
            _ => return false,
        };
    }
    match current {
        Value::Mapping(m) => m.remove(last.as_str()).is_some(),
        Value::Sequence(s) => match last.parse::<usize>() {
            Ok(i) if i < s.len() => {
                s.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// A size in bytes, written in config as a number or with a unit: `512KiB`, `64MiB`,
/// `1GiB`, `1GB` (decimal units are 1000-based, binary ones 1024-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }

    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }

    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("`{s}` is not a size (examples: 1048576, 512KiB, 64MiB, 1GiB)"))?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "GiB" | "Gi" => 1 << 30,
            "TiB" | "Ti" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
                ));
            }
        };
        let bytes = number * factor as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            return Err(format!("`{s}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        for (factor, unit) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{unit}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a size such as 64MiB or 1GiB"))?
        {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Serde for durations written as `30s`, `500ms`, `2m`, `1h 30m` (humantime syntax).
pub mod duration {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(deserializer)
            .map_err(|_| serde::de::Error::custom("expected a duration such as 30s or 500ms"))?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration: {e}")))
    }

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_variables_defaults_and_escapes() {
        let out =
            substitute_env("a: ${TOKEN}\nb: ${NOPE:-x}\nc: $$HOME $x ${EMPTY}\n", env).unwrap();
        assert_eq!(out, "a: s3cret\nb: x\nc: $HOME $x \n");
    }

    #[test]
    fn comments_are_not_substituted() {
        let text = "# set ${UNSET_ONE}\na: ${TOKEN} # or ${UNSET_TWO}\nb: \"x # ${TOKEN}\"\n";
        let out = substitute_env(text, env).unwrap();
        assert_eq!(
            out,
            "# set ${UNSET_ONE}\na: s3cret # or ${UNSET_TWO}\nb: \"x # s3cret\"\n"
        );
    }

    #[test]
    fn reports_every_unset_variable_with_its_line() {
        let err = substitute_env("a: ${ONE}\nb: ok\nc: ${TWO} ${bad-name}\nd: ${open", env)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "line 1: environment variable ONE is not set\n\
             line 3: environment variable TWO is not set\n\
             line 3: `${bad-name}` is not a valid variable name\n\
             line 4: unterminated `${` (write `$$` for a literal `$`)"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Top {
        name: String,
        #[serde(default)]
        size: Option<ByteSize>,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default, with = "duration")]
        wait: Duration,
        #[serde(default)]
        port: u16,
    }

    #[test]
    fn parse_reports_all_structural_errors_with_paths() {
        let text =
            "name: x\nsize: 12 parsecs\nbogus: 1\ninner: { wait: soon, port: 99999, extra: 2 }\n";
        let err = parse::<Top>(text).unwrap_err();
        let shown: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("size: unknown size unit `parsecs`")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("bogus: unknown field `bogus`")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("inner.wait: `soon` is not a duration")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("inner.port: invalid value")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with("inner.extra: unknown field `extra`")),
            "{shown:?}"
        );
        assert_eq!(shown.len(), 5, "{shown:?}");
    }

    #[test]
    fn parse_reports_missing_fields_and_bad_yaml() {
        let err = parse::<Top>("inner: {}\n").unwrap_err().to_string();
        assert_eq!(err, "missing field `name`");
        let err = parse::<Top>("name: [unclosed\n").unwrap_err().to_string();
        assert!(err.starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn parses_valid_config() {
        let top: Top = parse("name: n\nsize: 1GiB\ninner: { wait: 1m 30s, port: 80 }\n").unwrap();
        assert_eq!(top.size, Some(ByteSize::gib(1)));
        assert_eq!(top.inner.wait, Duration::from_secs(90));
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("64MiB"), Ok(ByteSize::mib(64)));
        assert_eq!(ByteSize::parse("1GB"), Ok(ByteSize(1_000_000_000)));
        assert_eq!(ByteSize::parse("1.5KiB"), Ok(ByteSize(1536)));
        assert_eq!(ByteSize::parse("100"), Ok(ByteSize(100)));
        assert!(ByteSize::parse("lots").is_err());
        assert!(ByteSize::parse("1ZiB").is_err());
        assert_eq!(ByteSize::gib(1).to_string(), "1GiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }
}
