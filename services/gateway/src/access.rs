//! The tenant's API keys and audit log (admin routes), forwarded to the
//! orchestrator that owns both:
//!
//! - `POST /v1/api-keys` `{name, role, expiresAtMs?}` creates a key of the
//!   caller's tenant, with a role no higher than the caller's; the answer
//!   holds the whole key once (`key`), never again;
//! - `GET /v1/api-keys[?includeRevoked=true]` lists keys (never secrets);
//! - `DELETE /v1/api-keys/{id}` revokes one (at once on this replica,
//!   within the key cache's TTL on others);
//! - `GET /v1/audit[?resourceKind=&since=&pageSize=&pageToken=]` pages the
//!   tenant's audit log, newest first (`since`: epoch ms or RFC 3339).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use mesh_auth::Principal;
use mesh_proto::ApiKey;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_keys::role_name;
use crate::auth::Operation;
use crate::error::ApiError;
use crate::json::ValidJson;
use crate::state::AppState;

/// Longest key name (the orchestrator's column).
const MAX_NAME_BYTES: usize = 128;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/api-keys", post(create_key).get(list_keys))
        .route("/v1/api-keys/{id}", delete(revoke_key))
        .route("/v1/audit", get(list_audit))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn key_view(key: &ApiKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "createdBy": key.created_by,
        "createdAt": time(key.created_at_ms),
        "expiresAt": time(key.expires_at_ms),
        "revokedAt": time(key.revoked_at_ms),
    })
}

impl AppState {
    fn access_request<T>(
        &self,
        principal: &Principal,
        message: T,
    ) -> Result<tonic::Request<T>, ApiError> {
        let mut request = mesh_runtime::grpc::outgoing(&principal.tenant, message)?;
        request.set_timeout(self.config.upstream_timeout);
        crate::api_keys::set_actor(&mut request, principal);
        Ok(request)
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateKeyBody {
    /// Trimmed; no control characters.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
    /// viewer, user, operator or admin; no higher than the caller's.
    #[schema(pattern = "^(viewer|user|operator|admin)$")]
    role: String,
    /// Epoch milliseconds; absent = never expires.
    #[serde(default)]
    expires_at_ms: Option<i64>,
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "access",
    operation_id = "createApiKey",
    request_body(content = CreateKeyBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The key; `key` is shown this once", body = crate::openapi::CreatedApiKey),
    ),
)]
async fn create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(authorization(&headers), Operation::ManageApiKeys)?;
    let name = body.name.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            format!("1 to {MAX_NAME_BYTES} bytes, without control characters"),
        ));
    }
    let role = match body.role.as_str() {
        "viewer" => mesh_auth::Role::Viewer,
        "user" => mesh_auth::Role::User,
        "operator" => mesh_auth::Role::Operator,
        "admin" => mesh_auth::Role::Admin,
        _ => {
            return Err(ApiError::invalid(
                "role",
                "must be viewer, user, operator or admin",
            ));
        }
    };
    if !principal.has_role(role) {
        return Err(ApiError::new(
            mesh_runtime::ErrorCode::PermissionDenied,
            format!(
                "role: a key cannot have a role above its creator's ({})",
                principal
                    .roles
                    .iter()
                    .max()
                    .map(|r| role_name(*r))
                    .unwrap_or("none")
            ),
        ));
    }
    let expires_at_ms = body.expires_at_ms.unwrap_or(0);
    if body.expires_at_ms.is_some() && expires_at_ms <= chrono::Utc::now().timestamp_millis() {
        return Err(ApiError::invalid("expiresAtMs", "must be in the future"));
    }
    let request = state.access_request(
        &principal,
        mesh_proto::CreateApiKeyRequest {
            name: name.to_owned(),
            role: role_name(role).to_owned(),
            expires_at_ms,
        },
    )?;
    let created = state
        .orchestrator
        .clone()
        .create_api_key(request)
        .await?
        .into_inner();
    let mut view = created.key.as_ref().map(key_view).unwrap_or_default();
    view["key"] = json!(created.secret);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ListKeysQuery {
    #[serde(default)]
    include_revoked: bool,
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "access",
    operation_id = "listApiKeys",
    params(
        ("includeRevoked" = Option<bool>, Query, description = "List revoked keys too"),
    ),
    responses(
        (status = 200, description = "The tenant's keys (never their secrets)", body = crate::openapi::ApiKeyList),
    ),
)]
async fn list_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListKeysQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(authorization(&headers), Operation::ManageApiKeys)?;
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let request = state.access_request(
        &principal,
        mesh_proto::ListApiKeysRequest {
            include_revoked: query.include_revoked,
        },
    )?;
    let keys = state
        .orchestrator
        .clone()
        .list_api_keys(request)
        .await?
        .into_inner()
        .keys;
    Ok(Json(
        json!({ "keys": keys.iter().map(key_view).collect::<Vec<_>>() }),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "access",
    operation_id = "revokeApiKey",
    params(
        ("id" = String, Path, min_length = 16, max_length = 16, pattern = "^[0-9a-f]{16}$", description = "The key's id"),
    ),
    responses(
        (status = 200, description = "Revoked (or already revoked)", body = crate::openapi::ApiKey),
    ),
)]
async fn revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(authorization(&headers), Operation::ManageApiKeys)?;
    if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(ApiError::invalid("id", "not an api key id (16 hex digits)"));
    }
    let request = state.access_request(
        &principal,
        mesh_proto::RevokeApiKeyRequest { id: id.clone() },
    )?;
    let key = state
        .orchestrator
        .clone()
        .revoke_api_key(request)
        .await?
        .into_inner();
    state.api_keys.forget(&id);
    Ok(Json(key_view(&key)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AuditQuery {
    #[serde(default)]
    resource_kind: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// `since` as epoch milliseconds or an RFC 3339 instant.
fn parse_since(since: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = since.parse::<i64>() {
        return if ms >= 0 {
            Ok(ms)
        } else {
            Err(ApiError::invalid("since", "must not be negative"))
        };
    }
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.timestamp_millis().max(0))
        .map_err(|_| ApiError::invalid("since", "epoch milliseconds or an RFC 3339 instant"))
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "access",
    operation_id = "listAuditEntries",
    params(
        ("resourceKind" = Option<String>, Query, description = "agent, tool, api_key or quota"),
        ("since" = Option<String>, Query, description = "Epoch milliseconds or an RFC 3339 instant"),
        ("pageSize" = Option<u32>, Query, description = "At most the orchestrator's page limit (0: its default)"),
        ("pageToken" = Option<String>, Query, max_length = 32, description = "`nextPageToken` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the audit log, newest first", body = crate::openapi::AuditPage),
    ),
)]
async fn list_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(authorization(&headers), Operation::ReadAuditLog)?;
    let Query(query) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let since_ms = query
        .since
        .as_deref()
        .map(parse_since)
        .transpose()?
        .unwrap_or(0);
    if query.page_token.len() > 32 {
        return Err(ApiError::invalid(
            "pageToken",
            "not a page token of this list",
        ));
    }
    let request = state.access_request(
        &principal,
        mesh_proto::ListAuditEntriesRequest {
            resource_kind: query.resource_kind,
            since_ms,
            page_size: query.page_size,
            page_token: query.page_token,
        },
    )?;
    let page = state
        .orchestrator
        .clone()
        .list_audit_entries(request)
        .await?
        .into_inner();
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id.to_string(),
                "at": time(e.at_ms),
                "actor": e.actor,
                "action": e.action,
                "resourceKind": e.resource_kind,
                "resourceName": e.resource_name,
                "resourceVersion": (e.resource_version > 0).then_some(e.resource_version),
                "detail": serde_json::from_str::<Value>(&e.detail_json).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({
        "entries": entries,
        "nextPageToken": page.next_page_token,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_millis_or_rfc3339() {
        assert_eq!(parse_since("1700000000000").unwrap(), 1_700_000_000_000);
        assert_eq!(
            parse_since("2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_since("-1").unwrap_err().field.as_deref(),
            Some("since")
        );
        assert_eq!(
            parse_since("yesterday").unwrap_err().field.as_deref(),
            Some("since")
        );
    }
}
