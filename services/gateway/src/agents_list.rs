//! `GET /v1/agents` (the caller's tenant's agents by name, a page at a
//! time), `GET /v1/agents/{name}/versions` (its applied versions, newest
//! first) and `GET /v1/agents/{name}/versions/{version}` (that version's
//! spec as it was applied); the same two for tools under `/v1/tools/{name}`.
//! Viewer role; the orchestrator holds the data.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use mesh_proto::{ListAgentVersionsRequest, ListAgentsRequest, ListToolVersionsRequest};
use serde_json::{Value, json};

use crate::auth::Operation;
use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(list_agents))
        .route("/v1/agents/{name}/versions", get(list_versions))
        .route("/v1/agents/{name}/versions/{version}", get(get_version))
        .route("/v1/tools/{name}/versions", get(list_tool_versions))
        .route("/v1/tools/{name}/versions/{version}", get(get_tool_version))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn check_params(params: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
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

/// `limit` is the REST name of the orchestrator's `page_size` (and
/// `cursor` of `page_token`), so its errors are renamed on the way back.
fn limit(params: &HashMap<String, String>) -> Result<u32, ApiError> {
    match params.get("limit") {
        None => Ok(0),
        Some(l) => {
            l.parse::<u32>().ok().filter(|l| *l > 0).ok_or_else(|| {
                ApiError::invalid("limit", format!("{l:?} is not a positive integer"))
            })
        }
    }
}

fn rename_fields(mut e: ApiError) -> ApiError {
    for (proto, rest) in [
        ("page_size", "limit"),
        ("page_token", "cursor"),
        ("name_prefix", "prefix"),
    ] {
        if e.field.as_deref() == Some(proto) {
            e.field = Some(rest.to_owned());
            e.message = e.message.replacen(proto, rest, 1);
        }
    }
    e
}

fn next_cursor(token: String) -> Value {
    if token.is_empty() {
        Value::Null
    } else {
        json!(token)
    }
}

#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    operation_id = "listAgents",
    params(
        ("prefix" = Option<String>, Query, max_length = 63, pattern = "^[a-z0-9-]*$", description = "Only names that start with this"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (at most the orchestrator's page limit)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the tenant's agents, by name", body = crate::openapi::AgentPage),
    ),
)]
async fn list_agents(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListAgents)?;
    check_params(&params, &["prefix", "limit", "cursor"])?;
    let page = state
        .list_agents(
            &principal,
            ListAgentsRequest {
                name_prefix: params.get("prefix").cloned().unwrap_or_default(),
                page_size: limit(&params)?,
                page_token: params.get("cursor").cloned().unwrap_or_default(),
            },
        )
        .await
        .map_err(rename_fields)?;
    Ok(Json(json!({
        "agents": page
            .agents
            .iter()
            .map(|a| json!({
                "name": a.name,
                "version": a.version,
                "model": a.model,
                "updatedAt": time(a.updated_at_ms),
            }))
            .collect::<Vec<_>>(),
        "nextCursor": next_cursor(page.next_page_token),
    })))
}

#[utoipa::path(
    get,
    path = "/v1/agents/{name}/versions",
    tag = "agents",
    operation_id = "listAgentVersions",
    params(
        ("name" = String, Path, description = "The agent's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (at most the orchestrator's page limit)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the agent's versions, newest first", body = crate::openapi::AgentVersionPage),
    ),
)]
async fn list_versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListAgentVersions)?;
    check_params(&params, &["limit", "cursor"])?;
    let page = state
        .list_agent_versions(
            &principal,
            ListAgentVersionsRequest {
                name,
                page_size: limit(&params)?,
                page_token: params.get("cursor").cloned().unwrap_or_default(),
            },
        )
        .await
        .map_err(rename_fields)?;
    Ok(Json(json!({
        "versions": page
            .versions
            .iter()
            .map(|v| json!({
                "version": v.version,
                "model": v.model,
                "appliedAt": time(v.applied_at_ms),
            }))
            .collect::<Vec<_>>(),
        "nextCursor": next_cursor(page.next_page_token),
    })))
}

fn parse_version(version: &str) -> Result<u64, ApiError> {
    version
        .parse::<u64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ApiError::invalid("version", format!("{version:?} is not a positive integer"))
        })
}

#[utoipa::path(
    get,
    path = "/v1/agents/{name}/versions/{version}",
    tag = "agents",
    operation_id = "getAgentVersion",
    params(
        ("name" = String, Path, description = "The agent's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"),
        ("version" = u64, Path, minimum = 1, description = "An applied version"),
    ),
    responses(
        (status = 200, description = "That version as applied", body = crate::openapi::Agent),
    ),
)]
async fn get_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetAgentVersion)?;
    let version = parse_version(&version)?;
    let agent = state.get_agent_version(&principal, name, version).await?;
    Ok(Json(crate::views::agent(&agent)))
}

#[utoipa::path(
    get,
    path = "/v1/tools/{name}/versions",
    tag = "tools",
    operation_id = "listToolVersions",
    params(
        ("name" = String, Path, description = "The tool's name", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (at most the orchestrator's page limit)"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the tool's versions, newest first", body = crate::openapi::ToolVersionPage),
    ),
)]
async fn list_tool_versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListToolVersions)?;
    check_params(&params, &["limit", "cursor"])?;
    let page = state
        .list_tool_versions(
            &principal,
            ListToolVersionsRequest {
                name,
                page_size: limit(&params)?,
                page_token: params.get("cursor").cloned().unwrap_or_default(),
            },
        )
        .await
        .map_err(rename_fields)?;
    Ok(Json(json!({
        "versions": page
            .versions
            .iter()
            .map(|v| json!({"version": v.version, "appliedAt": time(v.applied_at_ms)}))
            .collect::<Vec<_>>(),
        "nextCursor": next_cursor(page.next_page_token),
    })))
}

#[utoipa::path(
    get,
    path = "/v1/tools/{name}/versions/{version}",
    tag = "tools",
    operation_id = "getToolVersion",
    params(
        ("name" = String, Path, description = "The tool's name", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$"),
        ("version" = u64, Path, minimum = 1, description = "An applied version"),
    ),
    responses(
        (status = 200, description = "That version as applied", body = crate::openapi::Tool),
    ),
)]
async fn get_tool_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetToolVersion)?;
    let version = parse_version(&version)?;
    let tool = state.get_tool_version(&principal, name, version).await?;
    Ok(Json(crate::views::tool(&tool)))
}
