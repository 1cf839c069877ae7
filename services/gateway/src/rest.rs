//! The public REST face (JSON). Handlers name the operation they perform
//! (which fixes the role needed), parse and bound the input, and call the
//! shared operations in `api`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::StreamExt as _;
use mesh_proto::{ListTasksRequest, TaskStatus};
use mesh_runtime::ErrorCode;
use mesh_spec::{AgentSpecDoc, ToolSpecDoc};
use serde_json::json;
use tracing::Instrument as _;

use crate::auth::Operation;
use crate::error::ApiError;
use crate::json::ValidJson;
use crate::metrics::RouteLabels;
use crate::state::AppState;
use crate::views::{self, SubmitTaskBody};

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    routes()
        // Layers run outside-in: metrics see every request, including ones
        // the body limit refuses; the limit applies before any handler reads.
        .layer(DefaultBodyLimit::max(max_body))
        // Inside metrics, so a refused key is counted like a refused token.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::api_keys::resolve_rest,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .with_state(state)
}

/// Every route of the REST face, before its layers and state (the
/// OpenAPI document's test walks this router).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/openapi.json", get(crate::openapi::serve))
        .route("/v1/agents/{name}", put(put_agent).get(get_agent))
        .route("/v1/agents/{name}/tasks", post(submit_task))
        .route("/v1/tools", get(list_tools))
        .route("/v1/tools/{name}", put(put_tool).get(get_tool))
        .route("/v1/schemas/{kind}", get(get_schema))
        .route("/v1/tasks", get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task))
        .route("/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/v1/tasks/{id}/approve", post(approve_task))
        .route("/v1/tasks/{id}/reject", post(reject_task))
        .route("/v1/tasks/{id}/events", get(task_events))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/models", get(crate::openai::models))
        .route("/v1/traces", get(crate::traces::list))
        .route("/v1/traces/aggregates", get(crate::traces::aggregates))
        .route("/v1/traces/scores", post(crate::traces::post_score))
        .route(
            "/v1/trace-keys",
            post(crate::traces::create_key).get(crate::traces::list_keys),
        )
        .route(
            "/v1/trace-keys/{public_key}",
            axum::routing::delete(crate::traces::revoke_key),
        )
        .route("/v1/traces/{trace_id}", get(crate::traces::get))
        .merge(crate::retrieval::routes())
        .merge(crate::access::routes())
        .merge(crate::quotas::routes())
        .merge(crate::agents_list::routes())
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
}

async fn record_metrics(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // One server span per request, continuing the caller's trace when it
    // sent a `traceparent`.
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        // Set once the caller is authenticated (`AppState::authorize`).
        agentmesh.tenant = tracing::field::Empty,
    );
    mesh_telemetry::set_parent(&span, mesh_telemetry::extract_http(request.headers()));
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let labels = RouteLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Applies an agent (creates it, or a new version when the spec changed).
#[utoipa::path(
    put,
    path = "/v1/agents/{name}",
    tag = "agents",
    operation_id = "applyAgent",
    params(("name" = String, Path, description = "The agent's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    request_body(content = crate::openapi::AgentSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied: unchanged, or a new version", body = crate::openapi::AppliedAgent),
        (status = 201, description = "Created (version 1)", body = crate::openapi::AppliedAgent),
        (status = 409, description = "Conflicting change", body = crate::openapi::ErrorBody),
    ),
)]
async fn put_agent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<AgentSpecDoc>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ApplyAgent)?;
    let spec = body.to_proto().map_err(spec_error)?;
    let applied = state
        .apply_agent(&principal, name, spec)
        .await
        .map_err(rest_field_names)?;
    let agent = applied.agent.unwrap_or_default();
    let status = if applied.changed && agent.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = views::agent(&agent);
    body["changed"] = json!(applied.changed);
    Ok((status, Json(body)).into_response())
}

/// A spec error names the field under `spec`; the REST body is the spec.
fn spec_error(error: mesh_spec::FieldError) -> ApiError {
    let field = error.path.strip_prefix("spec.").unwrap_or(&error.path);
    ApiError::invalid(field, &error.message)
}

/// Applies a tool (creates it, or a new version when the spec changed).
#[utoipa::path(
    put,
    path = "/v1/tools/{name}",
    tag = "tools",
    operation_id = "applyTool",
    params(("name" = String, Path, description = "The tool's name", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    request_body(content = crate::openapi::ToolSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Applied: unchanged, or a new version", body = crate::openapi::AppliedTool),
        (status = 201, description = "Created (version 1)", body = crate::openapi::AppliedTool),
        (status = 409, description = "Conflicting change", body = crate::openapi::ErrorBody),
    ),
)]
async fn put_tool(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<ToolSpecDoc>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ApplyTool)?;
    let spec = body.to_proto().map_err(spec_error)?;
    let applied = state
        .apply_tool(&principal, name, spec)
        .await
        .map_err(rest_field_names)?;
    let tool = applied.tool.unwrap_or_default();
    let status = if applied.changed && tool.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut body = views::tool(&tool);
    body["changed"] = json!(applied.changed);
    Ok((status, Json(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tools/{name}",
    tag = "tools",
    operation_id = "getTool",
    params(("name" = String, Path, description = "The tool's name", min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9_-]+$")),
    responses((status = 200, description = "The tool's current version", body = crate::openapi::Tool)),
)]
async fn get_tool(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetTool)?;
    let tool = state.get_tool(&principal, name).await?;
    Ok(Json(views::tool(&tool)))
}

#[utoipa::path(
    get,
    path = "/v1/tools",
    tag = "tools",
    operation_id = "listTools",
    responses((status = 200, description = "The tenant's tools", body = crate::openapi::ToolList)),
)]
async fn list_tools(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListTools)?;
    let tools = state.list_tools(&principal).await?;
    Ok(Json(
        json!({"tools": tools.iter().map(views::tool).collect::<Vec<_>>()}),
    ))
}

/// `GET /v1/schemas/agent` and `/v1/schemas/tool`: the JSON Schema of the
/// resource documents `apply` accepts.
#[utoipa::path(
    get,
    path = "/v1/schemas/{kind}",
    tag = "agents",
    operation_id = "getResourceSchema",
    params(("kind" = String, Path, description = "`agent` or `tool`")),
    responses((status = 200, description = "A JSON Schema (2020-12)", body = Object)),
)]
async fn get_schema(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(kind): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    state.authorize(bearer(&headers), Operation::GetSchema)?;
    match kind.as_str() {
        "agent" => Ok(Json(mesh_spec::schema::agent())),
        "tool" => Ok(Json(mesh_spec::schema::tool())),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no schema {kind:?} (agent, tool)"),
        )),
    }
}

/// The orchestrator names proto fields (`spec.system_prompt`); REST
/// clients sent camelCase, so name the field as they wrote it.
fn rest_field_names(mut error: ApiError) -> ApiError {
    if let Some(field) = &error.field {
        let rest = match field.as_str() {
            "spec.model" => "model",
            "spec.system_prompt" => "systemPrompt",
            "spec.temperature" => "temperature",
            "spec.max_tokens" => "maxTokens",
            other => other.strip_prefix("spec.").unwrap_or(other),
        }
        .to_owned();
        error.message = error.message.replacen(field.as_str(), &rest, 1);
        error.field = Some(rest);
    }
    error
}

#[utoipa::path(
    get,
    path = "/v1/agents/{name}",
    tag = "agents",
    operation_id = "getAgent",
    params(("name" = String, Path, description = "The agent's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    responses((status = 200, description = "The agent's current version", body = crate::openapi::Agent)),
)]
async fn get_agent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetAgent)?;
    let agent = state.get_agent(&principal, name).await?;
    Ok(Json(views::agent(&agent)))
}

/// Submits a task to an agent; a repeated `Idempotency-Key` answers with
/// the task it created the first time (200 instead of 202).
#[utoipa::path(
    post,
    path = "/v1/agents/{name}/tasks",
    tag = "tasks",
    operation_id = "submitTask",
    params(
        ("name" = String, Path, description = "The agent's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7e]+$", description = "Submit at most once per key"),
    ),
    request_body(content = crate::views::SubmitTaskBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = crate::openapi::Task,
            headers(("Location" = String, description = "The task's URL"))),
        (status = 200, description = "The task this idempotency key submitted before", body = crate::openapi::Task,
            headers(("Location" = String, description = "The task's URL"))),
        (status = 409, description = "The agent's concurrency policy refused it", body = crate::openapi::ErrorBody),
    ),
)]
async fn submit_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(agent): Path<String>,
    ValidJson(body): ValidJson<SubmitTaskBody>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::SubmitTask)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => String::new(),
        Some(value) => value
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= 255)
            .ok_or_else(|| {
                ApiError::invalid("Idempotency-Key", "1 to 255 visible ASCII characters")
            })?
            .to_owned(),
    };
    let (task, created) = state
        .submit_task(
            &principal,
            mesh_proto::SubmitTaskRequest {
                agent,
                input: body.input,
                session_id: body.session_id,
                idempotency_key,
                ..Default::default()
            },
        )
        .await?;
    let location = format!("/v1/tasks/{}", task.id);
    // A repeated key answers with the task it created the first time.
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(views::task(&task)),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    tag = "tasks",
    operation_id = "getTask",
    params(("id" = String, Path, format = "uuid", description = "The task's id (a UUID)")),
    responses((status = 200, description = "The task", body = crate::openapi::Task)),
)]
async fn get_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::GetTask)?;
    let task = state.get_task(&principal, id).await?;
    Ok(Json(views::task(&task)))
}

const LIST_PARAMS: [&str; 4] = ["agent", "status", "limit", "cursor"];

/// The tenant's tasks, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    tag = "tasks",
    operation_id = "listTasks",
    params(
        ("agent" = Option<String>, Query, min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$", description = "Only this agent's tasks"),
        ("status" = Option<String>, Query, description = "queued, running, succeeded, failed, cancelled or awaiting_approval"),
        ("limit" = Option<u32>, Query, minimum = 1, description = "Page size (at most the orchestrator's page limit)"),
        ("cursor" = Option<String>, Query, format = "uuid", description = "`nextCursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of tasks", body = crate::openapi::TaskPage)),
)]
async fn list_tasks(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ListTasks)?;
    if let Some(unknown) = params.keys().find(|k| !LIST_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            unknown,
            format!(
                "unknown query parameter; expected one of {}",
                LIST_PARAMS.join(", ")
            ),
        ));
    }
    let status = match params.get("status") {
        None => TaskStatus::Unspecified,
        Some(s) => TaskStatus::from_rest_name(s).ok_or_else(|| {
            ApiError::invalid(
                "status",
                format!("{s:?} is not one of queued, running, succeeded, failed, cancelled"),
            )
        })?,
    };
    let page_size = match params.get("limit") {
        None => 0,
        Some(l) => l.parse::<u32>().ok().filter(|l| *l > 0).ok_or_else(|| {
            ApiError::invalid("limit", format!("{l:?} is not a positive integer"))
        })?,
    };
    let cursor = params.get("cursor").cloned().unwrap_or_default();
    if !cursor.is_empty() {
        crate::api::validate_task_id("cursor", &cursor)?;
    }
    let page = state
        .list_tasks(
            &principal,
            ListTasksRequest {
                agent: params.get("agent").cloned().unwrap_or_default(),
                status: status as i32,
                page_size,
                page_token: cursor,
            },
        )
        .await
        .map_err(|mut e| {
            if e.field.as_deref() == Some("page_size") {
                e.field = Some("limit".to_owned());
                e.message = e.message.replacen("page_size", "limit", 1);
            }
            e
        })?;
    Ok(Json(json!({
        "tasks": page.tasks.iter().map(views::task).collect::<Vec<_>>(),
        "nextCursor": (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })))
}

/// Asks for the task to be cancelled.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    tag = "tasks",
    operation_id = "cancelTask",
    params(("id" = String, Path, format = "uuid", description = "The task's id (a UUID)")),
    responses(
        (status = 202, description = "Cancellation requested", body = crate::openapi::Task),
        (status = 409, description = "The task has finished", body = crate::openapi::ErrorBody),
    ),
)]
async fn cancel_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::CancelTask)?;
    let task = state.cancel_task(&principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(views::task(&task))).into_response())
}

/// `POST /v1/tasks/{id}/approve` and `/reject`: the decision on the tool
/// call the task awaits. The body is optional.
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct DecisionBody {
    #[serde(default)]
    comment: String,
    /// The call being decided (default: the one pending).
    #[serde(default)]
    call_id: String,
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/approve",
    tag = "tasks",
    operation_id = "approveTask",
    params(("id" = String, Path, format = "uuid", description = "The task's id (a UUID)")),
    request_body(content = Option<DecisionBody>, content_type = "application/json", description = "Optional"),
    responses(
        (status = 202, description = "Approved; the task goes on", body = crate::openapi::Task),
        (status = 409, description = "The task awaits no such decision", body = crate::openapi::ErrorBody),
    ),
)]
async fn approve_task(
    state: State<AppState>,
    headers: HeaderMap,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide(state, headers, id, body, true).await
}

#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/reject",
    tag = "tasks",
    operation_id = "rejectTask",
    params(("id" = String, Path, format = "uuid", description = "The task's id (a UUID)")),
    request_body(content = Option<DecisionBody>, content_type = "application/json", description = "Optional"),
    responses(
        (status = 202, description = "Rejected; the task goes on", body = crate::openapi::Task),
        (status = 409, description = "The task awaits no such decision", body = crate::openapi::ErrorBody),
    ),
)]
async fn reject_task(
    state: State<AppState>,
    headers: HeaderMap,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    decide(state, headers, id, body, false).await
}

async fn decide(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
    approve: bool,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ResolveApproval)?;
    // No body, an empty one and `null` all mean "no comment, the pending
    // call" (schemathesis sent `null`, which the document allows).
    let body: DecisionBody = if body.iter().all(u8::is_ascii_whitespace) {
        DecisionBody::default()
    } else {
        crate::json::parse::<Option<DecisionBody>>(&body)?.unwrap_or_default()
    };
    let task = state
        .resolve_approval(
            &principal,
            mesh_proto::ResolveApprovalRequest {
                id,
                approve,
                comment: body.comment,
                call_id: body.call_id,
                decided_by: String::new(),
            },
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(views::task(&task))).into_response())
}

/// `GET /v1/tasks/{id}/events`: SSE; `Last-Event-ID` (or `?after=`)
/// resumes after that event.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/events",
    tag = "tasks",
    operation_id = "watchTask",
    params(
        ("id" = String, Path, format = "uuid", description = "The task's id (a UUID)"),
        ("after" = Option<u64>, Query, description = "Resume after this event sequence"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this event sequence (SSE reconnect)"),
    ),
    responses((status = 200, description = "Server-sent events: one per task event, `id` its sequence, `event` its type, `data` its JSON", content_type = "text/event-stream", body = crate::openapi::TaskEventFrame)),
)]
async fn task_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::WatchTask)?;
    if let Some(unknown) = params.keys().find(|k| k.as_str() != "after") {
        return Err(ApiError::invalid(
            unknown,
            "unknown query parameter; expected after",
        ));
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| ("Last-Event-ID", v.to_owned()))
        .or_else(|| params.get("after").map(|v| ("after", v.clone())));
    let after_seq = match resume {
        None => 0,
        Some((field, raw)) => raw
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::invalid(field, format!("{raw:?} is not an event sequence")))?,
    };
    // 404 for unknown ids and other tenants' tasks before opening anything.
    let task = state.get_task(&principal, id).await?;
    let events = crate::events::task_events(&state.bus, &task, after_seq).await?;
    let gauge = state.metrics.open_streams.clone();
    gauge.inc();
    let guard = StreamGuard(gauge);
    let sse = events.map(move |item| {
        let _keep = &guard;
        Ok::<_, Infallible>(match item {
            Ok((seq, event)) => {
                let name = event.kind.as_ref().map(|k| k.name()).unwrap_or("unknown");
                Event::default()
                    .id(seq.to_string())
                    .event(name)
                    .data(views::event(seq, &event).to_string())
            }
            Err(error) => Event::default()
                .event("error")
                .data(json!({"code": error.code.as_str(), "message": error.message}).to_string()),
        })
    });
    Ok(Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(state.config.sse_keep_alive))
        .into_response())
}

/// Decrements the open-streams gauge when a stream ends or its client leaves.
pub struct StreamGuard(pub prometheus_client::metrics::gauge::Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
