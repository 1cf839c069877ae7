//! The HTTP client to the model server, and how its answers and failures
//! are classified. Knows the OpenAI wire format; knows nothing of tenants.

use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("model backend unreachable: {0}")]
    Unreachable(String),
    /// No connection at all (refused, no route, DNS): nothing was sent, so
    /// the backend is not there; a pool scaled to zero looks like this.
    #[error("model backend refused the connection: {0}")]
    Connect(String),
    #[error("model backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend answered with an error status; body kept for the caller.
    #[error("model backend answered {status}")]
    Status { status: u16, body: Bytes },
}

/// The one HTTP client every backend call shares (its connection pool is
/// per host, so backends do not starve each other).
#[derive(Clone)]
pub struct Client {
    client: reqwest::Client,
}

/// Where one call goes and how long it may take.
pub struct Target<'a> {
    pub base: &'a str,
    pub api_key: Option<&'a str>,
    /// Deadline for the response head.
    pub first_byte: Duration,
    /// Upper bound of the whole call, streaming included.
    pub total: Duration,
}

impl Client {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(mesh_runtime::server::CLIENT_POOL_IDLE_TIMEOUT)
            .build()?;
        Ok(Self { client })
    }

    /// POSTs a JSON body to `path`; returns once the response headers are
    /// in (within the first-byte deadline) and the status is a success.
    pub async fn post_json(
        &self,
        target: &Target<'_>,
        path: &str,
        body: Bytes,
    ) -> Result<reqwest::Response, BackendError> {
        let mut headers = http::HeaderMap::new();
        mesh_telemetry::inject_http(&mut headers);
        let request = self
            .client
            .post(format!("{}{path}", target.base))
            .headers(headers)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(target, request).await
    }

    pub async fn get(
        &self,
        target: &Target<'_>,
        path: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let request = self.client.get(format!("{}{path}", target.base));
        self.send(target, request).await
    }

    async fn send(
        &self,
        target: &Target<'_>,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, BackendError> {
        if let Some(key) = target.api_key {
            request = request.bearer_auth(key);
        }
        let request = request.timeout(target.total);
        let response = tokio::time::timeout(target.first_byte, request.send())
            .await
            .map_err(|_| BackendError::Timeout(target.first_byte))?
            .map_err(|e| {
                if e.is_timeout() {
                    BackendError::Timeout(target.first_byte)
                } else if e.is_connect() {
                    BackendError::Connect(e.to_string())
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

impl BackendError {
    /// Worth trying another backend: it was not the request's fault.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Connect(_) | Self::Timeout(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }

    /// The outcome label of `router_backend_requests`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Unreachable(_) | Self::Connect(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Status { status: 429, .. } => "overloaded",
            Self::Status { status, .. } if *status >= 500 => "server_error",
            Self::Status { .. } => "client_error",
        }
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
