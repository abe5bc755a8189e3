//! One HTTP endpoint of the service's source or sinks: a client with the service's timeouts,
//! a base URL and the fixed headers every request to it carries.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, RequestBuilder, Response};
use vigil_core::tls::ClientTls;

use crate::error_chain;

/// The most of a sink's answer that is read.
const ANSWER_LIMIT: usize = 64 << 10;

#[derive(Clone)]
pub struct Endpoint {
    client: reqwest::Client,
    /// Without a trailing `/`; requests append their path.
    url: String,
    headers: HeaderMap,
}

impl Endpoint {
    pub fn new(
        url: &str,
        headers: HeaderMap,
        timeout: Duration,
        tls: Option<&ClientTls>,
    ) -> Result<Endpoint, String> {
        vigil_core::process::install_crypto_provider();
        let builder = reqwest::Client::builder()
            .user_agent(concat!("vigil-anomaly/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60));
        let client = vigil_core::tls::reqwest_builder(builder, tls)
            .map_err(|e| format!("{url}: TLS: {e}"))?
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", error_chain(&e)))?;
        Ok(Endpoint {
            client,
            url: url.trim_end_matches('/').to_string(),
            headers,
        })
    }

    /// A request to the URL followed by `path`, with the fixed headers.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .headers(self.headers.clone())
    }

    /// Sends `request` (made by [`Endpoint::request`] for `path`); a transport error names
    /// the URL and every cause.
    pub async fn send(&self, path: &str, request: RequestBuilder) -> Result<Response, String> {
        request
            .send()
            .await
            .map_err(|e| format!("{}{path}: {}", self.url, error_chain(&e)))
    }

    /// Sends `body` and returns the answer of a 2xx (up to 64 KiB); anything else is an
    /// error with the status and the start of the answer.
    pub async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
        let response = self
            .send(path, self.request(method, path).body(body))
            .await?;
        let status = response.status();
        let answer = crate::reader::read_limited(response, ANSWER_LIMIT)
            .await
            .map_err(|e| format!("{}{path}: {e}", self.url));
        if status.is_success() {
            return answer;
        }
        let answer = answer.unwrap_or_default();
        let text = String::from_utf8_lossy(&answer[..answer.len().min(1024)]);
        Err(format!(
            "{}{path} answered {status}: {}",
            self.url,
            text.trim()
        ))
    }
}

/// Configured headers (`headers:` of a section) as a header map.
pub fn header_map(headers: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name `{name}`"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("invalid value for header `{name}`"))?;
        map.insert(name, value);
    }
    Ok(map)
}
