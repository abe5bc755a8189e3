//! Fetching one exposition: content negotiation, gzip, and a bound on the body.

use std::time::Duration;

use reqwest::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE};
use url::Url;
use vigil_core::gzip::GzipError;

use super::parse::{Format, ParseError};

/// What Prometheus asks for: OpenMetrics first, then the text format, then anything.
pub const ACCEPT_HEADER: &str =
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1";

/// Why one scrape failed. Every failure makes the target's `up` 0 and its series stale.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("scrape took longer than its timeout ({0:?})")]
    Timeout(Duration),
    #[error("body larger than the limit of {0} bytes")]
    BodyTooLarge(u64),
    #[error("invalid gzip body: {0}")]
    Gzip(std::io::Error),
    #[error("body is not UTF-8")]
    NotUtf8,
    #[error("cannot parse the exposition: {0}")]
    Parse(#[from] ParseError),
    #[error("{got} samples exceed the sample limit of {limit}")]
    SampleLimit { got: usize, limit: usize },
}

impl ScrapeError {
    /// Every value [`ScrapeError::reason`] returns.
    pub const REASONS: [&'static str; 6] = [
        "http",
        "status",
        "timeout",
        "body_limit",
        "parse",
        "sample_limit",
    ];

    /// The failure as a metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Http(_) => "http",
            ScrapeError::Status(_) => "status",
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::BodyTooLarge(_) => "body_limit",
            ScrapeError::Gzip(_) | ScrapeError::NotUtf8 | ScrapeError::Parse(_) => "parse",
            ScrapeError::SampleLimit { .. } => "sample_limit",
        }
    }
}

/// GETs `url` and returns its body and format. The caller bounds the time. `size_hint`
/// is the size the body is expected to have (the last one's), so that reading it does not
/// grow and copy the buffer over and over when the server sends no `Content-Length`.
pub(crate) async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    timeout: Duration,
    limit: u64,
    size_hint: usize,
) -> Result<(String, Format), ScrapeError> {
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, ACCEPT_HEADER)
        .header(ACCEPT_ENCODING, "gzip")
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            format!("{}", timeout.as_secs_f64()),
        )
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status().as_u16()));
    }
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ScrapeError::BodyTooLarge(limit));
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let format = Format::from_content_type(header(CONTENT_TYPE).as_deref());
    let gzip = header(CONTENT_ENCODING).is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
    let expected = match response.content_length() {
        // The bytes on the wire, compressed or not; never more than the limit (checked).
        Some(n) => n as usize,
        // The last body was inflated; text rarely packs better than 4:1.
        None if gzip => size_hint / 4,
        None => size_hint,
    };
    let mut raw = Vec::with_capacity(expected.min(usize::try_from(limit).unwrap_or(usize::MAX)));
    while let Some(chunk) = response.chunk().await? {
        if raw.len() as u64 + chunk.len() as u64 > limit {
            return Err(ScrapeError::BodyTooLarge(limit));
        }
        raw.extend_from_slice(&chunk);
    }
    let body = if gzip { gunzip(&raw, limit)? } else { raw };
    let body = String::from_utf8(body).map_err(|_| ScrapeError::NotUtf8)?;
    Ok((body, format))
}

/// Inflates a gzip body, refusing to grow past `limit` (a small body can inflate a lot).
fn gunzip(raw: &[u8], limit: u64) -> Result<Vec<u8>, ScrapeError> {
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    vigil_core::gzip::decompress(raw, max).map_err(|e| match e {
        GzipError::TooLarge { .. } => ScrapeError::BodyTooLarge(limit),
        GzipError::Invalid(e) => ScrapeError::Gzip(e),
    })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzip_is_bounded() {
        let body = vec![b'a'; 10_000];
        let packed = gzip(&body);
        assert_eq!(gunzip(&packed, 10_000).unwrap(), body);
        assert!(matches!(
            gunzip(&packed, 9_999),
            Err(ScrapeError::BodyTooLarge(9_999))
        ));
        assert!(matches!(
            gunzip(b"not gzip", 100),
            Err(ScrapeError::Gzip(_))
        ));
    }
}
