//! The OpenAI-compatible face of the gateway: `/v1/chat/completions`
//! (streamed or not) and `/v1/models`, authenticated and rate-counted like
//! every other route, then proxied to the inference-router with the caller's
//! tenant and trace context. Bodies pass through untouched, so every OpenAI
//! parameter the router and the model server understand keeps working.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt as _;
use mesh_runtime::ErrorCode;

use crate::auth::Operation;
use crate::error::ApiError;
use crate::state::AppState;

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn unreachable_router(error: &reqwest::Error) -> ApiError {
    tracing::warn!(%error, "inference-router unreachable");
    ApiError::new(
        ErrorCode::Unavailable,
        "the inference router is unavailable",
    )
}

/// The router's response-cache header (`hit` or `miss`), relayed so a
/// client of the gateway sees what a client of the router sees.
const CACHE_HEADER: &str = "x-agentmesh-cache";

/// Copies an upstream answer (status, content type, `Retry-After`, the
/// cache header, body stream).
pub fn relay(response: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_owned();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cache = response.headers().get(CACHE_HEADER).cloned();
    let body = Body::from_stream(response.bytes_stream().map_err(std::io::Error::other));
    let mut out = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
        out.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let Some(value) = cache {
        out.headers_mut().insert(CACHE_HEADER, value);
    }
    out
}

fn upstream_headers(tenant: &str) -> reqwest::header::HeaderMap {
    let mut headers = http::HeaderMap::new();
    mesh_telemetry::inject_http(&mut headers);
    if let Ok(value) = tenant.parse() {
        headers.insert(mesh_runtime::grpc::TENANT_METADATA, value);
    }
    // The router honours the tenant header only with a service token.
    if let Some(token) = mesh_runtime::service_auth::token()
        .ok()
        .and_then(|t| t.parse().ok())
    {
        headers.insert(mesh_runtime::service_auth::TOKEN_HEADER, token);
    }
    headers
}

/// OpenAI-compatible chat completions, streamed (`stream: true`, SSE) or
/// not; the body reaches the inference-router as sent.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    operation_id = "createChatCompletion",
    request_body(content = crate::openapi::ChatCompletionRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The completion (the inference-router's answer, relayed)",
            content((Object = "application/json"), (String = "text/event-stream"))),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the inference-router's, relayed", body = Object),
    ),
)]
pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ChatCompletion)?;
    // Shape checks the router repeats, answered here without a hop.
    let parsed: serde_json::Value = crate::json::parse(&body)?;
    if parsed["model"].as_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("model", "a non-empty string is required"));
    }
    let response = state
        .http
        .post(format!("{}/v1/chat/completions", state.config.router_url))
        .headers(upstream_headers(&principal.tenant))
        .header(header::CONTENT_TYPE, "application/json")
        .timeout(state.config.model_timeout)
        .body(body)
        .send()
        .await
        .map_err(|e| unreachable_router(&e))?;
    Ok(relay(response))
}

/// The models the inference-router serves (OpenAI's list shape).
#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    operation_id = "listModels",
    responses(
        (status = 200, description = "The models (the inference-router's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the inference-router's, relayed", body = Object),
    ),
)]
pub async fn models(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListModels)?;
    let response = state
        .http
        .get(format!("{}/v1/models", state.config.router_url))
        .headers(upstream_headers(&principal.tenant))
        .timeout(state.config.upstream_timeout)
        .send()
        .await
        .map_err(|e| unreachable_router(&e))?;
    Ok(relay(response))
}
