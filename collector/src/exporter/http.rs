//! Sending one request to an HTTP backend and classifying its answer.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use url::Url;
use vigil_core::error_chain;
use vigil_core::retry::parse_retry_after;

use super::ExportError;
use crate::config::Delivery;

/// How much of an error body is kept for logs and dead letters.
const ERROR_BODY_LIMIT: usize = 1024;

/// A configured HTTP endpoint: client, URL, fixed headers, timeout.
#[derive(Clone)]
pub struct HttpSender {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid endpoint `{0}`: {1}")]
    Endpoint(String, url::ParseError),
    #[error("invalid header `{0}`")]
    Header(String),
    #[error("cannot build HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(String),
}

impl HttpSender {
    pub fn new(
        endpoint: &str,
        delivery: &Delivery,
        user_agent: &str,
    ) -> Result<HttpSender, BuildError> {
        vigil_core::process::install_crypto_provider();
        let endpoint =
            Url::parse(endpoint).map_err(|e| BuildError::Endpoint(endpoint.to_string(), e))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &delivery.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::Header(name.clone()))?;
            let value =
                HeaderValue::from_str(value).map_err(|_| BuildError::Header(name.to_string()))?;
            headers.insert(name, value);
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(user_agent)
            .timeout(delivery.timeout)
            .connect_timeout(delivery.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60));
        builder = vigil_core::tls::reqwest_builder(builder, delivery.tls.as_ref())
            .map_err(BuildError::Tls)?;
        let client = builder.build()?;
        Ok(HttpSender {
            client,
            endpoint,
            headers,
        })
    }

    /// POSTs `body` with the exporter's fixed headers plus `extra`, and classifies the
    /// answer: 2xx is success; network errors, 408, 429 and 5xx are retryable (honouring
    /// `Retry-After`); any other status is permanent.
    pub async fn post(
        &self,
        body: Vec<u8>,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<(), ExportError> {
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone());
        for (name, value) in extra {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|e| {
            ExportError::retryable(format!("{}: {}", self.endpoint, error_chain(&e)))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let text = body_prefix(response, ERROR_BODY_LIMIT).await;
        let text = String::from_utf8_lossy(&text);
        let reason = format!("{} answered {status}: {}", self.endpoint, text.trim());
        Err(match is_retryable(status) {
            true => ExportError::Retryable {
                reason,
                retry_after,
            },
            false => ExportError::Permanent { reason },
        })
    }
}

/// The first `limit` bytes of an answer's body: the rest is never read, so a backend
/// answering an error with a huge (or endless) body costs neither memory nor the timeout.
async fn body_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let take = chunk.len().min(limit - out.len());
                out.extend_from_slice(&chunk[..take]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// 408, 429 and 5xx may succeed later; any other refusal will be repeated.
fn is_retryable(status: reqwest::StatusCode) -> bool {
    status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error()
}

/// The header naming the tenant at Loki and Tempo.
pub fn tenant_header(
    tenant: Option<&str>,
) -> Result<Option<(HeaderName, HeaderValue)>, ExportError> {
    match tenant {
        None => Ok(None),
        Some(t) => HeaderValue::from_str(t)
            .map(|v| Some((HeaderName::from_static("x-scope-orgid"), v)))
            .map_err(|_| {
                ExportError::permanent(format!("tenant `{t}` is not a valid header value"))
            }),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::{BatchConfig, RetryConfig};

    #[tokio::test]
    async fn only_the_start_of_an_error_body_is_read() {
        // A backend that answers 400 announcing a 1 GiB body, sends 4 KiB of it, and then
        // stalls. The whole body was once read into memory before being cut to 1 KiB: the
        // error then waited for the 30 s timeout and came without the backend's words.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = "HTTP/1.1 400 Bad Request\r\ncontent-length: 1073741824\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(&[b'e'; 4096]).await.unwrap();
            // Hold the connection open, sending nothing more, until the client leaves.
            let _ = socket.read(&mut request).await;
        });
        let delivery = Delivery {
            timeout: Duration::from_secs(30),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            headers: Default::default(),
            tls: None,
        };
        let sender = HttpSender::new(&format!("http://{addr}/push"), &delivery, "test").unwrap();
        let err = sender.post(b"x".to_vec(), &[]).await.unwrap_err();
        let ExportError::Permanent { reason } = err else {
            panic!("a 400 is permanent: {err:?}");
        };
        let shown = "e".repeat(ERROR_BODY_LIMIT);
        assert!(
            reason.ends_with(&format!("answered 400 Bad Request: {shown}")),
            "{reason}"
        );
        drop(sender);
        server.await.unwrap();
    }

    #[test]
    fn throttling_timeouts_and_server_errors_are_retryable() {
        for code in [408, 429, 500, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(is_retryable(status), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 415, 422] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(!is_retryable(status), "{code}");
        }
    }
}
