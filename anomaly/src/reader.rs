//! Reading series from VictoriaMetrics' Prometheus-compatible `/api/v1/query_range`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;

use crate::http::{Endpoint, header_map};

/// The largest query answer read; beyond it the evaluation fails rather than exhausting
/// memory (the service then reads shorter windows).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// One series of a range query: its labels and its points in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    /// `(timestamp in ms, value)`; values may be NaN or infinite.
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Http(String),
    #[error("VictoriaMetrics answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the answer is over {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("cannot decode the answer: {0}")]
    Decode(String),
}

/// A client of one VictoriaMetrics (or any Prometheus-compatible query API).
#[derive(Clone)]
pub struct Reader {
    endpoint: Endpoint,
}

const QUERY_RANGE: &str = "/api/v1/query_range";

impl Reader {
    pub fn new(source: &crate::config::Source, timeout: Duration) -> Result<Reader, String> {
        Ok(Reader {
            endpoint: Endpoint::new(
                &source.victoriametrics,
                header_map(&source.headers)?,
                timeout,
                source.tls.as_ref(),
            )?,
        })
    }

    /// Evaluates `expr` at every `step` from `start` to `end` (ms, inclusive).
    pub async fn query_range(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step: Duration,
    ) -> Result<Vec<Series>, ReadError> {
        let seconds = |ms: i64| format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000));
        let request = self.endpoint.request(Method::POST, QUERY_RANGE).form(&[
            ("query", expr.to_string()),
            ("start", seconds(start_ms)),
            ("end", seconds(end_ms)),
            ("step", format!("{}ms", step.as_millis())),
            // Score every point from VictoriaMetrics' data, not from its cache of
            // answers computed before late samples arrived.
            ("nocache", "1".to_string()),
        ]);
        let response = self
            .endpoint
            .send(QUERY_RANGE, request)
            .await
            .map_err(ReadError::Http)?;
        let status = response.status();
        let body = read_limited(response, MAX_RESPONSE_BYTES).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(1024)]);
            return Err(ReadError::Status {
                status: status.as_u16(),
                body: text.trim().to_string(),
            });
        }
        parse_matrix(&body)
    }
}

/// Reads a response body, refusing more than `limit` bytes.
pub async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ReadError::Http(crate::error_chain(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<RawSeries>,
}

#[derive(Deserialize)]
struct RawSeries {
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
}

/// Decodes a Prometheus `matrix` answer. Sample values are strings (`"1.5"`, `"NaN"`,
/// `"+Inf"`); timestamps are seconds with a fraction.
pub fn parse_matrix(body: &[u8]) -> Result<Vec<Series>, ReadError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| ReadError::Decode(e.to_string()))?;
    if answer.status != "success" {
        return Err(ReadError::Decode(format!(
            "status {}: {}",
            answer.status,
            answer.error.unwrap_or_default()
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| ReadError::Decode("no data".into()))?;
    if data.result_type != "matrix" {
        return Err(ReadError::Decode(format!(
            "expected a matrix, got a {}",
            data.result_type
        )));
    }
    data.result
        .into_iter()
        .map(|raw| {
            let points = raw
                .values
                .into_iter()
                .map(|(t, v)| {
                    let value = parse_value(&v)
                        .ok_or_else(|| ReadError::Decode(format!("bad sample value `{v}`")))?;
                    Ok(((t * 1000.0).round() as i64, value))
                })
                .collect::<Result<Vec<_>, ReadError>>()?;
            Ok(Series {
                labels: raw.metric,
                points,
            })
        })
        .collect()
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_matrix_with_special_values() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"service":"api"},"values":[[1700000000,"1.5"],[1700000060.5,"NaN"],[1700000120,"+Inf"]]},
            {"metric":{},"values":[]}]}}"#;
        let series = parse_matrix(body).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].labels["service"], "api");
        assert_eq!(series[0].points[0], (1_700_000_000_000, 1.5));
        assert_eq!(series[0].points[1].0, 1_700_000_060_500);
        assert!(series[0].points[1].1.is_nan());
        assert_eq!(series[0].points[2].1, f64::INFINITY);
        assert!(series[1].points.is_empty());
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        for body in [
            &br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#[..],
            br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"x"]]}]}}"#,
            b"not json",
        ] {
            assert!(parse_matrix(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
