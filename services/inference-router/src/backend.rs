//! The HTTP client to the model server, and how its answers and failures
//! are classified. Knows the OpenAI wire format; knows nothing of tenants.

use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model backend unreachable: {0}")]
    Unreachable(String),
    #[error("model backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend answered with an error status; body kept for the caller.
    #[error("model backend answered {status}")]
    Status { status: u16, body: Bytes },
}

#[derive(Clone)]
pub struct Backend {
    client: reqwest::Client,
    base: String,
    api_key: Option<String>,
    first_byte_timeout: Duration,
}

impl Backend {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            client,
            base: config.backend_url.clone(),
            api_key: config.backend_api_key.clone(),
            first_byte_timeout: config.first_byte_timeout,
        })
    }

    /// POSTs a JSON body to `path`; returns once the response headers are
    /// in (within the first-byte deadline) and the status is a success.
    pub async fn post_json(
        &self,
        path: &str,
        body: Bytes,
    ) -> Result<reqwest::Response, BackendError> {
        let mut headers = http::HeaderMap::new();
        mesh_telemetry::inject_http(&mut headers);
        let mut request = self
            .client
            .post(format!("{}{path}", self.base))
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        self.send(request).await
    }

    pub async fn get(&self, path: &str) -> Result<reqwest::Response, BackendError> {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        self.send(request).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BackendError> {
        let response = tokio::time::timeout(self.first_byte_timeout, request.send())
            .await
            .map_err(|_| BackendError::Timeout(self.first_byte_timeout))?
            .map_err(|e| {
                if e.is_timeout() {
                    BackendError::Timeout(self.first_byte_timeout)
                } else {
                    BackendError::Unreachable(e.to_string())
                }
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Err(BackendError::Status { status, body })
    }
}

/// The `error.message` of an OpenAI error body, if it has one.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value["error"]["message"]
        .as_str()
        .or_else(|| value["message"].as_str())
        .map(str::to_owned)
}
