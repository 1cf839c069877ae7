//! Traces for API users: `GET /v1/traces` (filters and cursor passed
//! through) and `GET /v1/traces/{trace_id}` (one trace as a tree), served by
//! the trace-collector's query API on behalf of the caller's tenant, which
//! comes from the token and nowhere else.

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
    let response = state
        .http
        .get(format!("{}{path}", state.config.traces_url))
        .query(query)
        .header(mesh_runtime::grpc::TENANT_METADATA, tenant)
        .timeout(state.config.upstream_timeout)
        .send()
        .await
        .map_err(|error| {
            tracing::warn!(%error, "trace-collector unreachable");
            ApiError::new(ErrorCode::Unavailable, "the trace store is unavailable")
        })?;
    Ok(crate::openai::relay(response))
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListTraces)?;
    if let Some(unknown) = params.keys().find(|k| !LIST_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!(
                "unknown query parameter; expected one of {}",
                LIST_PARAMS.join(", ")
            ),
        ));
    }
    let query: Vec<(String, String)> = params.into_iter().collect();
    forward(&state, &principal.tenant, "/api/traces", &query).await
}

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
