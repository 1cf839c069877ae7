//! Traces for API users: `GET /v1/traces` (filters and cursor passed
//! through), `GET /v1/traces/{trace_id}` (one trace as a tree) and
//! `GET /v1/traces/aggregates` (counts, latency, tokens and cost per agent
//! or model over time buckets), served by
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
    only(&params, &LIST_PARAMS)?;
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
