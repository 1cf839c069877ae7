//! The OpenAPI 3.1 document of the REST face, generated from the handlers'
//! `#[utoipa::path]` annotations and served, unauthenticated, at
//! `GET /v1/openapi.json`.
//!
//! The handlers build their JSON with `serde_json::json!`, so the response
//! schemas below are documentation types: nothing constructs them. Two
//! tests keep them honest: one walks the axum router and fails on any route
//! and method the document lacks (or documents but the router lacks), one
//! validates the views the handlers answer with against these schemas; and
//! the integration tier runs schemathesis against the served document.
//!
//! The agent and tool resource documents are not re-described here: their
//! JSON Schemas are the ones `mesh_spec` derives from the parser (the same
//! `GET /v1/schemas/{kind}` serves), spliced into the components.
//!
//! What this module must never do: list a route by hand next to the
//! router, or describe a bound the code does not enforce.

#![allow(dead_code)] // documentation types: only their schemas are used

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Json;
use serde_json::{Value, json};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::{OpenApi, PartialSchema, ToSchema};

/// The document, built once (it depends on nothing at run time).
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "getOpenApi",
    security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)),
)]
pub async fn serve() -> Json<Value> {
    Json(DOCUMENT.clone())
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "agentmesh gateway",
        description = "The public REST API of agentmesh: agents, tools, tasks (with their \
            SSE event streams), retrieval, traces, API keys, audit log, quotas and an \
            OpenAI-compatible chat completions endpoint. Every route needs a bearer JWT \
            (HS256, or RS256/ES256 from a JWKS) or an API key, except this document and \
            the web console's static files (`/console/...`, not described here). Errors \
            answer `{\"error\": {code, message, field?}}`.",
    ),
    paths(
        serve,
        crate::rest::put_agent,
        crate::rest::get_agent,
        crate::rest::submit_task,
        crate::rest::list_tools,
        crate::rest::put_tool,
        crate::rest::get_tool,
        crate::rest::get_schema,
        crate::rest::list_tasks,
        crate::rest::get_task,
        crate::rest::cancel_task,
        crate::rest::approve_task,
        crate::rest::reject_task,
        crate::rest::task_events,
        crate::openai::chat_completions,
        crate::openai::models,
        crate::traces::list,
        crate::traces::aggregates,
        crate::traces::post_score,
        crate::traces::create_key,
        crate::traces::list_keys,
        crate::traces::revoke_key,
        crate::traces::get,
        crate::retrieval::create_collection,
        crate::retrieval::list_collections,
        crate::retrieval::get_collection,
        crate::retrieval::delete_collection,
        crate::retrieval::upsert_documents,
        crate::retrieval::get_document,
        crate::retrieval::delete_document,
        crate::retrieval::delete_documents,
        crate::retrieval::search,
        crate::retrieval::submit_ingest,
        crate::retrieval::get_ingest_job,
        crate::access::create_key,
        crate::access::list_keys,
        crate::access::revoke_key,
        crate::access::list_audit,
        crate::quotas::get_quota,
        crate::quotas::put_quota,
        crate::agents_list::list_agents,
        crate::agents_list::list_versions,
        crate::agents_list::get_version,
        crate::agents_list::list_tool_versions,
        crate::agents_list::get_tool_version,
    ),
    components(schemas(ErrorBody)),
    security(("bearer" = []), ("apiKey" = [])),
    modifiers(&SecuritySchemes),
)]
struct ApiDoc;

/// Bearer JWTs and API keys (`Authorization: Bearer amk_...` or
/// `x-api-key: amk_...`), as `auth` and `api_keys` accept them.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            utoipa::openapi::security::SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT or amk_<16 hex>_<64 hex> API key")
                    .description(Some(
                        "A JWT whose tenant and roles claims name the caller's tenant and \
                         roles, or an API key (`amk_...`) in its place",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            utoipa::openapi::security::SecurityScheme::ApiKey(ApiKey::Header(
                ApiKeyValue::with_description(
                    crate::api_keys::API_KEY_HEADER,
                    "An API key (`amk_<16 hex>_<64 hex>`); not together with a bearer JWT",
                ),
            )),
        );
    }
}

/// Error statuses every authenticated route may answer with the error
/// body, beside the ones its annotation names: a bad parameter or body,
/// a missing or bad credential, a role too low, something unknown, a body
/// over the size limit, a rate limit or quota, and an upstream outage or
/// timeout.
const COMMON_ERRORS: [(&str, &str); 8] = [
    ("400", "Invalid input: the error's `field` names it"),
    ("401", "No credential, or an invalid one"),
    ("403", "The caller's role may not do this"),
    ("404", "Not found (or another tenant's)"),
    ("413", "The body exceeds the request size limit"),
    ("429", "Over a rate limit or quota (`Retry-After`)"),
    ("503", "An upstream service is unavailable"),
    ("504", "An upstream service did not answer in time"),
];

/// The document as served: utoipa's output with the resource specs'
/// schemas spliced in and the common error responses added.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let schemas = &mut doc["components"]["schemas"];
    splice_spec(schemas, "AgentSpec", mesh_spec::schema::agent());
    splice_spec(schemas, "ToolSpec", mesh_spec::schema::tool());
    doc["components"]["responses"]["Error"] = json!({
        "description": "An error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    });
    if let Some(paths) = doc["paths"].as_object_mut() {
        for operation in paths
            .values_mut()
            .filter_map(Value::as_object_mut)
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut)
        {
            // Public routes (`security: [{}]`) answer no auth errors, and
            // relayed ones document their upstream's answers as `default`.
            let public = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|s| {
                    s.iter()
                        .all(|r| r.as_object().is_some_and(|r| r.is_empty()))
                });
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            if public || responses.contains_key("default") {
                continue;
            }
            for (status, why) in COMMON_ERRORS {
                responses.entry(status).or_insert_with(|| {
                    json!({
                        "description": why,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                    })
                });
            }
        }
    }
    doc
}

/// Puts the `spec` of a resource document's JSON Schema under `name`, and
/// its `$defs` beside it, with their references rewritten to point there.
fn splice_spec(schemas: &mut Value, name: &str, document: Value) {
    let mut defs = BTreeMap::new();
    let mut spec = document["properties"]["spec"].clone();
    hoist_defs(&mut spec, &mut defs);
    if let Some(root) = document.get("$defs").and_then(Value::as_object) {
        for (def, schema) in root {
            let mut schema = schema.clone();
            hoist_defs(&mut schema, &mut defs);
            defs.insert(def.clone(), schema);
        }
    }
    for (def, schema) in defs {
        schemas[def] = schema;
    }
    schemas[name] = spec;
}

/// Moves nested `$defs` into `defs` and rewrites `#/$defs/X` references
/// to `#/components/schemas/X`.
fn hoist_defs(value: &mut Value, defs: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(nested)) = map.remove("$defs") {
                for (def, mut schema) in nested {
                    hoist_defs(&mut schema, defs);
                    defs.insert(def, schema);
                }
            }
            if let Some(Value::String(reference)) = map.get_mut("$ref")
                && let Some(def) = reference.strip_prefix("#/$defs/")
            {
                *reference = format!("#/components/schemas/{def}");
            }
            map.remove("$schema");
            for child in map.values_mut() {
                hoist_defs(child, defs);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| hoist_defs(v, defs)),
        _ => {}
    }
}

// === schemas ===

/// A schema that [`document`] replaces with the one `mesh_spec` derives.
macro_rules! spliced {
    ($ty:ident, $doc:literal) => {
        #[doc = $doc]
        pub struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new().description(Some($doc)).into()
            }
        }

        impl ToSchema for $ty {}
    };
}

spliced!(
    AgentSpec,
    "An Agent resource's spec (see GET /v1/schemas/agent)"
);
spliced!(
    ToolSpec,
    "A Tool resource's spec (see GET /v1/schemas/tool)"
);

/// Every error: `{"error": {code, message, field?}}`.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCodeName,
    /// `field: why` for invalid input.
    pub message: String,
    /// The request field at fault, as the client spelt it.
    #[schema(nullable = false)]
    pub field: Option<String>,
}

/// `mesh_runtime::ErrorCode::as_str`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum ErrorCodeName {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    Conflict,
    FailedPrecondition,
    PayloadTooLarge,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

/// One server-sent event of a task's stream: `id` is the event's
/// sequence, `event` its type, `data` its JSON (`seq`, `taskId`, `at`,
/// `type` and the type's fields); an `error` event's data is the error.
#[derive(ToSchema)]
pub struct TaskEventFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// An RFC 3339 instant in UTC with milliseconds, or null when unset.
type Instant = Option<String>;

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Agent {
    pub name: String,
    pub version: u64,
    pub spec: AgentSpec,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
}

/// An agent as `PUT` left it; `changed` is false when the spec was the
/// same as the current version's.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AppliedAgent {
    pub name: String,
    pub version: u64,
    pub spec: AgentSpec,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
    pub changed: bool,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Tool {
    pub name: String,
    pub version: u64,
    pub spec: ToolSpec,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AppliedTool {
    pub name: String,
    pub version: u64,
    pub spec: ToolSpec,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
    pub changed: bool,
}

#[derive(ToSchema)]
pub struct ToolList {
    pub tools: Vec<Tool>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TaskStatusName {
    Unspecified,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    AwaitingApproval,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The tool call a task awaits a decision on.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Approval {
    pub call_id: String,
    pub step: u32,
    pub tool: String,
    /// The arguments the model wrote (JSON text).
    pub arguments: String,
    pub prompt: String,
    #[schema(required, format = DateTime)]
    pub expires_at: Instant,
    /// `approve` or `reject`: what happens at the deadline.
    pub on_timeout: String,
}

#[derive(ToSchema)]
pub struct TaskLinks {
    #[schema(rename = "self")]
    pub self_: String,
    pub events: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Task {
    #[schema(format = "uuid")]
    pub id: String,
    pub agent: String,
    pub agent_version: u64,
    pub input: String,
    pub status: TaskStatusName,
    pub output: String,
    #[schema(required)]
    pub error: Option<String>,
    pub usage: Usage,
    pub attempts: u32,
    #[schema(required)]
    pub session_id: Option<String>,
    #[schema(required)]
    pub approval: Option<Approval>,
    pub steps: u32,
    #[schema(required)]
    pub parent_task_id: Option<String>,
    pub cancel_requested: bool,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
    #[schema(required, format = DateTime)]
    pub started_at: Instant,
    #[schema(required, format = DateTime)]
    pub finished_at: Instant,
    pub links: TaskLinks,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AgentSummary {
    pub name: String,
    pub version: u64,
    pub model: String,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AgentPage {
    pub agents: Vec<AgentSummary>,
    #[schema(required)]
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AgentVersionSummary {
    pub version: u64,
    pub model: String,
    #[schema(required, format = DateTime)]
    pub applied_at: Instant,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AgentVersionPage {
    pub versions: Vec<AgentVersionSummary>,
    #[schema(required)]
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ToolVersionSummary {
    pub version: u64,
    #[schema(required, format = DateTime)]
    pub applied_at: Instant,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ToolVersionPage {
    pub versions: Vec<ToolVersionSummary>,
    #[schema(required)]
    pub next_cursor: Option<String>,
}

// --- relayed ---

/// A score on a trace or one of its observations (validated by the
/// trace-collector).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct NewScore {
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub trace_id: String,
    #[schema(pattern = "^[0-9A-Fa-f]{16}$")]
    pub observation_id: Option<String>,
    #[schema(min_length = 1)]
    pub name: String,
    /// A number or a string.
    pub value: serde_json::Value,
    pub comment: Option<String>,
}

#[derive(ToSchema)]
pub struct ChatMessage {
    /// system, user, assistant or tool.
    pub role: String,
    pub content: String,
}

/// The OpenAI request: `model` and `messages`, and any other parameter the
/// router and the model server understand.
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    #[schema(min_length = 1)]
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub stream: Option<bool>,
    pub max_tokens: Option<u32>,
}

// --- retrieval ---

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Chunking {
    pub chunk_tokens: u32,
    pub overlap_tokens: u32,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Collection {
    pub name: String,
    pub embedding_model: String,
    pub dimension: u32,
    pub chunking: Chunking,
    pub document_count: u64,
    pub chunk_count: u64,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
}

#[derive(ToSchema)]
pub struct CollectionList {
    pub collections: Vec<Collection>,
}

/// How many documents were deleted.
#[derive(ToSchema)]
pub struct Deleted {
    pub deleted: u64,
}

/// Whether the collection was there to delete.
#[derive(ToSchema)]
pub struct CollectionDeleted {
    pub deleted: bool,
}

#[derive(ToSchema)]
pub struct Upserted {
    pub upserted: u32,
    pub unchanged: u32,
    pub chunks: u32,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Document {
    pub id: String,
    pub text: String,
    pub metadata: BTreeMap<String, String>,
    pub chunk_count: u32,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct SearchHit {
    pub document_id: String,
    pub chunk_index: u32,
    pub text: String,
    pub score: f32,
    pub metadata: BTreeMap<String, String>,
}

#[derive(ToSchema)]
pub struct SearchHits {
    pub hits: Vec<SearchHit>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum IngestJobStateName {
    Queued,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct IngestJob {
    pub id: String,
    pub collection: String,
    pub state: IngestJobStateName,
    pub total_documents: u32,
    pub done_documents: u32,
    pub failed_documents: u32,
    #[schema(required)]
    pub error: Option<String>,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub updated_at: Instant,
}

// --- access ---

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct ApiKey {
    /// 16 hex digits.
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_by: String,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    /// Null: never expires.
    #[schema(required, format = DateTime)]
    pub expires_at: Instant,
    #[schema(required, format = DateTime)]
    pub revoked_at: Instant,
}

/// A new key: the whole key (`key`) is shown this once.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct CreatedApiKey {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_by: String,
    #[schema(required, format = DateTime)]
    pub created_at: Instant,
    #[schema(required, format = DateTime)]
    pub expires_at: Instant,
    #[schema(required, format = DateTime)]
    pub revoked_at: Instant,
    /// `amk_<16 hex>_<64 hex>`.
    pub key: String,
}

#[derive(ToSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKey>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    #[schema(required, format = DateTime)]
    pub at: Instant,
    pub actor: String,
    pub action: String,
    pub resource_kind: String,
    pub resource_name: String,
    #[schema(required)]
    pub resource_version: Option<i64>,
    /// What changed (JSON), or null.
    #[schema(required)]
    pub detail: Option<serde_json::Value>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Empty on the last page.
    pub next_page_token: String,
}

// --- quotas ---

/// Null: no limit of this kind / the default applies.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct QuotaValues {
    #[schema(required)]
    pub max_running_tasks: Option<u32>,
    #[schema(required)]
    pub tasks_per_minute: Option<u32>,
    #[schema(required)]
    pub weight: Option<u32>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct QuotaUsage {
    pub running_tasks: u64,
    pub queued_tasks: u64,
    pub submitted_last_minute: u64,
}

/// The effective values at the top level, with the tenant's overrides,
/// the defaults and the current usage beside them.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Quota {
    #[schema(required)]
    pub max_running_tasks: Option<u32>,
    #[schema(required)]
    pub tasks_per_minute: Option<u32>,
    #[schema(required)]
    pub weight: Option<u32>,
    pub tenant: String,
    pub overrides: QuotaValues,
    pub defaults: QuotaValues,
    pub usage: QuotaUsage,
    pub updated_at_ms: i64,
    pub updated_by: String,
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// Routes that are not in the document: the console's static files.
    const UNDOCUMENTED: [&str; 3] = ["/console", "/console/", "/console/{*path}"];

    /// The routes and methods of the REST router, read from axum's `Debug`
    /// output of it (axum offers no other way to list them). A change of
    /// that output fails [`router_and_document_agree`] loudly (it finds no
    /// route), never silently.
    fn router_routes() -> BTreeMap<String, BTreeSet<String>> {
        let debug = format!("{:?}", crate::rest::routes());
        // Only the path router; the fallback router has routes of its own.
        let main = debug
            .split_once("fallback_router:")
            .map(|(main, _)| main)
            .unwrap_or(&debug);
        let (endpoints, node) = main.split_once("node: Node").unwrap_or((main, ""));
        let mut paths = BTreeMap::new();
        for part in node.split("RouteId(").skip(1) {
            if let Some((id, rest)) = part.split_once("): \"")
                && let Some((path, _)) = rest.split_once('"')
            {
                paths.insert(id.to_owned(), path.to_owned());
            }
        }
        let mut routes = BTreeMap::new();
        for part in endpoints.split("RouteId(").skip(1) {
            let Some((id, endpoint)) = part.split_once("): ") else {
                continue;
            };
            let path = paths.get(id).expect("every route id has a path").clone();
            assert!(
                endpoint.starts_with("MethodRouter(MethodRouter {"),
                "{path}: not a method router: {endpoint}"
            );
            let methods = endpoint
                .split_once(", fallback:")
                .map(|(m, _)| m)
                .unwrap_or(endpoint);
            let set: BTreeSet<String> = ["get", "delete", "patch", "post", "put"]
                .into_iter()
                .filter(|m| {
                    let field = format!("{m}: ");
                    methods
                        .split_once(&field)
                        .is_some_and(|(_, v)| !v.starts_with("None"))
                })
                .map(str::to_owned)
                .collect();
            for other in ["options", "trace", "connect"] {
                assert!(
                    methods.contains(&format!("{other}: None")),
                    "{path}: {other} is routed; document it and teach this test"
                );
            }
            routes.insert(path, set);
        }
        routes
    }

    #[test]
    fn router_and_document_agree() {
        let routes = router_routes();
        assert!(
            routes.len() >= 30,
            "read too few routes from the router's Debug output ({}); has axum changed it?",
            routes.len()
        );
        let doc = document();
        let documented: BTreeMap<String, BTreeSet<String>> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .map(|(path, item)| {
                let methods = item
                    .as_object()
                    .expect("path item")
                    .keys()
                    .filter(|k| ["get", "delete", "patch", "post", "put"].contains(&k.as_str()))
                    .cloned()
                    .collect();
                (path.clone(), methods)
            })
            .collect();
        for (path, methods) in &routes {
            if UNDOCUMENTED.contains(&path.as_str()) {
                continue;
            }
            for method in methods {
                assert!(
                    documented.get(path).is_some_and(|m| m.contains(method)),
                    "{} {path} is routed but not in the OpenAPI document",
                    method.to_uppercase()
                );
            }
        }
        for (path, methods) in &documented {
            for method in methods {
                assert!(
                    routes.get(path).is_some_and(|m| m.contains(method)),
                    "{} {path} is documented but not routed",
                    method.to_uppercase()
                );
            }
        }
        for path in UNDOCUMENTED {
            assert!(routes.contains_key(path), "{path} is no longer routed");
        }
    }

    #[test]
    fn unauthenticated_routes_are_the_public_operations() {
        let doc = document();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let public = op["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .all(|r| r.as_object().is_some_and(|r| r.is_empty()))
                });
                assert_eq!(
                    public,
                    crate::auth::UNAUTHENTICATED_ROUTES.contains(&path.as_str()),
                    "{method} {path}: public in the document iff listed in UNAUTHENTICATED_ROUTES"
                );
            }
        }
    }

    /// `value` against the document's schema `name`, with formats checked.
    fn conforms(doc: &Value, name: &str, value: &Value) {
        let mut root = doc.clone();
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["$ref"] = json!(format!("#/components/schemas/{name}"));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}\n{value:#}");
    }

    /// The views the handlers answer with match the documented schemas,
    /// empty and filled in.
    #[test]
    fn views_match_their_schemas() {
        use mesh_proto as pb;
        let doc = document();
        let full_task = pb::Task {
            id: "01a21c6c-b7dc-7754-9ada-b988b57fa1bc".into(),
            tenant: "acme".into(),
            agent: "support".into(),
            agent_version: 3,
            input: "hi".into(),
            status: pb::TaskStatus::AwaitingApproval as i32,
            output: "out".into(),
            error: "boom".into(),
            usage: Some(pb::TokenUsage {
                input_tokens: 5,
                output_tokens: 7,
            }),
            attempts: 2,
            cancel_requested: true,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_001,
            started_at_ms: Some(1_700_000_000_002),
            finished_at_ms: Some(i64::MAX),
            session_id: "s-1".into(),
            steps: 4,
            approval: Some(pb::PendingApproval {
                call_id: "c1".into(),
                tool: "weather".into(),
                arguments: "{}".into(),
                prompt: "ok?".into(),
                expires_at_ms: 1_700_000_000_003,
                on_timeout: "reject".into(),
                step: 1,
            }),
            parent_task_id: "01a21c6c-b7dc-7754-9ada-b988b57fa1bd".into(),
        };
        let minimal_task = pb::Task {
            id: "01a21c6c-b7dc-7754-9ada-b988b57fa1be".into(),
            ..Default::default()
        };
        for task in [minimal_task, full_task] {
            conforms(&doc, "Task", &crate::views::task(&task));
        }
        let agent_spec = serde_json::from_value::<mesh_spec::AgentSpecDoc>(json!({"model": "sim"}))
            .expect("a minimal agent spec")
            .to_proto()
            .expect("a valid agent spec");
        for agent in [
            pb::Agent::default(),
            pb::Agent {
                name: "support".into(),
                version: 2,
                spec: Some(agent_spec),
                created_at_ms: 1,
                updated_at_ms: 2,
                ..Default::default()
            },
        ] {
            conforms(&doc, "Agent", &crate::views::agent(&agent));
            let mut applied = crate::views::agent(&agent);
            applied["changed"] = json!(true);
            conforms(&doc, "AppliedAgent", &applied);
        }
        // A tool always has a type (the spec has none by default).
        let tool = pb::Tool {
            name: "weather".into(),
            version: 1,
            spec: Some(pb::ToolSpec {
                r#type: "api".into(),
                config_json: r#"{"endpoint": "http://127.0.0.1:9/x"}"#.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        conforms(&doc, "Tool", &crate::views::tool(&tool));
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for reference in all {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{reference}: not local"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{reference} does not resolve"
            );
        }
        assert_eq!(doc["openapi"], "3.1.0");
    }
}
