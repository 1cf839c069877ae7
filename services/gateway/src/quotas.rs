//! `GET /v1/quotas` and `PUT /v1/quotas`: the caller's tenant's quotas
//! (admin role), held by the orchestrator behind its internal `QuotaAdmin`
//! API. A PUT replaces the tenant's overrides: a value that is null or
//! left out returns to the orchestrator's default.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::routing::get;
use axum::{Json, Router};
use mesh_auth::Principal;
use mesh_proto::{GetQuotaRequest, PutQuotaRequest, QuotaValues, TenantQuota};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Operation;
use crate::error::ApiError;
use crate::json::ValidJson;
use crate::state::AppState;

/// The metadata entry that names who makes a change (the orchestrator's
/// audit log records it).
const ACTOR_METADATA: &str = "agentmesh-actor";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/quotas", get(get_quota).put(put_quota))
}

/// `PUT /v1/quotas` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QuotaBody {
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_running_tasks: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub tasks_per_minute: Option<u32>,
    #[serde(default)]
    #[schema(minimum = 1)]
    pub weight: Option<u32>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn request<T>(
    state: &AppState,
    principal: &Principal,
    message: T,
) -> Result<tonic::Request<T>, ApiError> {
    let mut request = mesh_runtime::grpc::outgoing(&principal.tenant, message)?;
    request.set_timeout(state.config.upstream_timeout);
    if let Ok(actor) = principal.subject.parse() {
        request.metadata_mut().insert(ACTOR_METADATA, actor);
    }
    Ok(request)
}

fn values(v: Option<&QuotaValues>) -> Value {
    let v = v.cloned().unwrap_or_default();
    json!({
        "maxRunningTasks": v.max_running_tasks,
        "tasksPerMinute": v.tasks_per_minute,
        "weight": v.weight,
    })
}

fn view(q: &TenantQuota) -> Value {
    let mut body = values(q.effective.as_ref());
    body["tenant"] = json!(q.tenant);
    body["overrides"] = values(q.overrides.as_ref());
    body["defaults"] = values(q.defaults.as_ref());
    body["usage"] = json!({
        "runningTasks": q.running_tasks,
        "queuedTasks": q.queued_tasks,
        "submittedLastMinute": q.submitted_last_minute,
    });
    body["updatedAtMs"] = json!(q.updated_at_ms);
    body["updatedBy"] = json!(q.updated_by);
    body
}

/// The orchestrator names proto fields; REST callers sent camelCase ones.
fn rest_field(mut error: ApiError) -> ApiError {
    let renamed = match error.field.as_deref() {
        Some("overrides.max_running_tasks") => "maxRunningTasks",
        Some("overrides.tasks_per_minute") => "tasksPerMinute",
        Some("overrides.weight") => "weight",
        _ => return error,
    };
    if let Some((_, why)) = error.message.split_once(": ") {
        error.message = format!("{renamed}: {why}");
    }
    error.field = Some(renamed.to_owned());
    error
}

#[utoipa::path(
    get,
    path = "/v1/quotas",
    tag = "quotas",
    operation_id = "getQuota",
    responses(
        (status = 200, description = "The tenant's quotas and usage", body = crate::openapi::Quota),
    ),
)]
async fn get_quota(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ManageQuotas)?;
    let quota = state
        .quotas
        .clone()
        .get_quota(request(&state, &principal, GetQuotaRequest {})?)
        .await?
        .into_inner();
    Ok(Json(view(&quota)))
}

/// Replaces the tenant's overrides (null or absent: the default).
#[utoipa::path(
    put,
    path = "/v1/quotas",
    tag = "quotas",
    operation_id = "putQuota",
    request_body(content = QuotaBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The tenant's quotas after the change", body = crate::openapi::Quota),
    ),
)]
async fn put_quota(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<QuotaBody>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ManageQuotas)?;
    for (field, value) in [
        ("maxRunningTasks", body.max_running_tasks),
        ("tasksPerMinute", body.tasks_per_minute),
        ("weight", body.weight),
    ] {
        if value == Some(0) {
            return Err(ApiError::invalid(
                field,
                "must be at least 1 (null returns to the default)",
            ));
        }
    }
    let overrides = QuotaValues {
        max_running_tasks: body.max_running_tasks,
        tasks_per_minute: body.tasks_per_minute,
        weight: body.weight,
    };
    let quota = state
        .quotas
        .clone()
        .put_quota(request(
            &state,
            &principal,
            PutQuotaRequest {
                overrides: Some(overrides),
            },
        )?)
        .await
        .map_err(|status| rest_field(status.into()))?
        .into_inner();
    Ok(Json(view(&quota)))
}
