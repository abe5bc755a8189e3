//! Grafana annotations (`POST /api/annotations`, `PATCH /api/annotations/:id`): one region
//! per anomaly episode, opened when it starts and closed (`timeEnd`) when it ends.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::Grafana;
use crate::http::Endpoint;

const ANNOTATIONS: &str = "/api/annotations";

#[derive(Clone)]
pub struct GrafanaClient {
    endpoint: Endpoint,
    dashboard_uid: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewAnnotation<'a> {
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    dashboard_uid: Option<&'a str>,
    time: i64,
    tags: Vec<String>,
    text: String,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

impl GrafanaClient {
    pub fn new(config: &Grafana, timeout: Duration) -> Result<GrafanaClient, String> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = config.token.as_deref().filter(|t| !t.is_empty()) {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "grafana.token: not a valid header value".to_string())?;
            headers.insert(AUTHORIZATION, value);
        }
        Ok(GrafanaClient {
            endpoint: Endpoint::new(&config.endpoint, headers, timeout, config.tls.as_ref())?,
            dashboard_uid: config.dashboard_uid.clone(),
        })
    }

    /// Opens the annotation of an episode; returns its id.
    pub async fn open(
        &self,
        query: &str,
        series: &BTreeMap<String, String>,
        time_ms: i64,
        text: String,
    ) -> Result<i64, String> {
        let mut tags = vec!["vigil".to_string(), query.to_string()];
        tags.extend(
            series
                .iter()
                .filter(|(k, _)| k.as_str() != "__name__")
                .map(|(k, v)| format!("{k}={v}")),
        );
        let body = NewAnnotation {
            dashboard_uid: self.dashboard_uid.as_deref(),
            time: time_ms,
            tags,
            text,
        };
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let answer = self.endpoint.call(Method::POST, ANNOTATIONS, body).await?;
        serde_json::from_slice::<Created>(&answer)
            .map(|c| c.id)
            .map_err(|e| format!("{ANNOTATIONS}: unexpected answer: {e}"))
    }

    /// Closes an episode's annotation at `end_ms`.
    pub async fn close(&self, id: i64, end_ms: i64) -> Result<(), String> {
        let body = serde_json::json!({ "timeEnd": end_ms }).to_string();
        let path = format!("{ANNOTATIONS}/{id}");
        self.endpoint
            .call(Method::PATCH, &path, body.into_bytes())
            .await
            .map(drop)
    }
}
