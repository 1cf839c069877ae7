//! Traces for API users: `GET /v1/traces` (filters and cursor passed
//! through), `GET /v1/traces/{trace_id}` (one trace as a tree) and
//! `GET /v1/traces/aggregates` (counts, latency, tokens and cost per agent
//! or model over time buckets), `POST /v1/traces/scores` (a score on a trace
//! or an observation) and the tenant's Langfuse-compatible ingestion keys
//! (`/v1/trace-keys`: create, list, revoke), served by the trace-collector
//! on behalf of the caller's tenant, which comes from the token and nowhere
//! else.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use mesh_runtime::ErrorCode;

use crate::auth::Operation;
use crate::error::ApiError;
use crate::state::AppState;

/// Query parameters the collector understands; anything else is a 400.
const LIST_PARAMS: [&str; 10] = [
    "min_cost",
    "limit",
    "cursor",
    "agent",
    "session_id",
    "user_id",
    "from_ms",
    "to_ms",
    "status",
    "min_latency_ms",
];

/// Query parameters of the collector's aggregates; anything else is a 400.
const AGGREGATE_PARAMS: [&str; 6] = ["by", "interval", "from_ms", "to_ms", "agent", "model"];

/// Refuses a parameter the collector does not take, naming it.
fn only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            unknown,
            format!(
                "unknown query parameter; expected one of {}",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

async fn forward(
    state: &AppState,
    tenant: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<Response, ApiError> {
    send(state, tenant, reqwest::Method::GET, path, query, None).await
}

/// One call to the collector's API as `tenant`; its answer (status and
/// body, errors included) is relayed as is.
async fn send(
    state: &AppState,
    tenant: &str,
    method: reqwest::Method,
    path: &str,
    query: &[(String, String)],
    body: Option<axum::body::Bytes>,
) -> Result<Response, ApiError> {
    let mut request = state
        .http
        .request(method, format!("{}{path}", state.config.traces_url))
        .query(query)
        .header(mesh_runtime::grpc::TENANT_METADATA, tenant);
    // The collector honours the tenant header only with a service token.
    if let Ok(token) = mesh_runtime::service_auth::token() {
        request = request.header(mesh_runtime::service_auth::TOKEN_HEADER, token);
    }
    if let Some(body) = body {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = request
        .timeout(state.config.upstream_timeout)
        .send()
        .await
        .map_err(|error| {
            tracing::warn!(%error, "trace-collector unreachable");
            ApiError::new(ErrorCode::Unavailable, "the trace store is unavailable")
        })?;
    Ok(crate::openai::relay(response))
}

/// The tenant's traces, newest first, filtered, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/traces",
    tag = "traces",
    operation_id = "listTraces",
    params(
        ("min_cost" = Option<f64>, Query, minimum = 0, description = "Only traces that cost at least this (USD)"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size"),
        ("cursor" = Option<String>, Query, description = "The previous page's cursor"),
        ("agent" = Option<String>, Query),
        ("session_id" = Option<String>, Query),
        ("user_id" = Option<String>, Query),
        ("from_ms" = Option<i64>, Query, description = "Start, epoch milliseconds"),
        ("to_ms" = Option<i64>, Query, description = "End, epoch milliseconds"),
        ("status" = Option<String>, Query, description = "ok or error"),
        ("min_latency_ms" = Option<u64>, Query),
    ),
    responses(
        (status = 200, description = "A page of traces (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListTraces)?;
    only(&params, &LIST_PARAMS)?;
    let query: Vec<(String, String)> = params.into_iter().collect();
    forward(&state, &principal.tenant, "/api/traces", &query).await
}

/// One trace as a tree of observations.
#[utoipa::path(
    get,
    path = "/v1/traces/{trace_id}",
    tag = "traces",
    operation_id = "getTrace",
    params(("trace_id" = String, Path, min_length = 32, max_length = 32, pattern = "^[0-9A-Fa-f]{32}$", description = "The W3C trace id")),
    responses(
        (status = 200, description = "The trace (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetTrace)?;
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("trace_id", "must be 32 hex digits"));
    }
    forward(
        &state,
        &principal.tenant,
        &format!("/api/traces/{trace_id}"),
        &[],
    )
    .await
}

/// Counts, latency, tokens and cost per agent or model over time buckets.
#[utoipa::path(
    get,
    path = "/v1/traces/aggregates",
    tag = "traces",
    operation_id = "traceAggregates",
    params(
        ("by" = Option<String>, Query, description = "agent or model"),
        ("interval" = Option<String>, Query, description = "Bucket width"),
        ("from_ms" = Option<i64>, Query),
        ("to_ms" = Option<i64>, Query),
        ("agent" = Option<String>, Query),
        ("model" = Option<String>, Query),
    ),
    responses(
        (status = 200, description = "The buckets (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn aggregates(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::TraceAggregates)?;
    only(&params, &AGGREGATE_PARAMS)?;
    let query: Vec<(String, String)> = params.into_iter().collect();
    forward(&state, &principal.tenant, "/api/aggregates", &query).await
}

/// `POST /v1/traces/scores`: `{traceId, observationId?, name, value,
/// comment?}`, validated by the collector (its errors name the field).
#[utoipa::path(
    post,
    path = "/v1/traces/scores",
    tag = "traces",
    operation_id = "scoreTrace",
    request_body(content = crate::openapi::NewScore, content_type = "application/json"),
    responses(
        (status = 201, description = "The score (the trace-collector's answer, relayed)", body = Object),
        (status = 200, description = "The score (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn post_score(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ScoreTrace)?;
    send(
        &state,
        &principal.tenant,
        reqwest::Method::POST,
        "/api/scores",
        &[],
        Some(body),
    )
    .await
}

/// `POST /v1/trace-keys`: a new public/secret key pair for the Langfuse
/// ingestion endpoint; the secret is shown once.
#[utoipa::path(
    post,
    path = "/v1/trace-keys",
    tag = "traces",
    operation_id = "createTraceKey",
    responses(
        (status = 201, description = "The key pair (the trace-collector's answer, relayed)", body = Object),
        (status = 200, description = "The key pair (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ManageTraceKeys)?;
    send(
        &state,
        &principal.tenant,
        reqwest::Method::POST,
        "/api/keys",
        &[],
        None,
    )
    .await
}

/// `GET /v1/trace-keys`: the tenant's key pairs (public halves only).
#[utoipa::path(
    get,
    path = "/v1/trace-keys",
    tag = "traces",
    operation_id = "listTraceKeys",
    responses(
        (status = 200, description = "The key pairs (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ManageTraceKeys)?;
    forward(&state, &principal.tenant, "/api/keys", &[]).await
}

/// `DELETE /v1/trace-keys/{public_key}`: revokes a key pair.
#[utoipa::path(
    delete,
    path = "/v1/trace-keys/{public_key}",
    tag = "traces",
    operation_id = "revokeTraceKey",
    params(("public_key" = String, Path, min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_-]+$")),
    responses(
        (status = 200, description = "Revoked (the trace-collector's answer, relayed)", body = Object),
        (status = "default", description = "An error: the gateway's (`{error: ...}`) or the trace-collector's, relayed", body = Object),
    ),
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(public_key): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ManageTraceKeys)?;
    if public_key.is_empty()
        || public_key.len() > 128
        || !public_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::invalid("public_key", "not a key id"));
    }
    send(
        &state,
        &principal.tenant,
        reqwest::Method::DELETE,
        &format!("/api/keys/{public_key}"),
        &[],
        None,
    )
    .await
}
