//! The HTTP face (4318): OTLP/HTTP `POST /v1/traces` (protobuf or JSON,
//! optionally gzip), the query API `GET /api/traces[/{trace_id}]` and
//! `GET /api/aggregates` (see [`crate::aggregates`]), scores
//! `POST /api/scores`, and the API keys `POST|GET /api/keys`,
//! `DELETE /api/keys/{public_key}`. Those routes need the
//! `agentmesh-tenant` header: this port is internal (the gateway
//! authenticates users and forwards their tenant).
//!
//! The one route that does not trust the header is the Langfuse-compatible
//! `POST /api/public/otel/v1/traces`: the same OTLP/HTTP formats, with the
//! tenant named by HTTP Basic auth `public_key:secret_key` (see
//! [`crate::keys`]). It is the one path an ingress may route to this port
//! from outside; every other path trusts its tenant header and must stay
//! internal. There is no unauthenticated route besides the admin port's
//! health and metrics.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use mesh_runtime::ErrorCode;
use mesh_runtime::grpc::TENANT_METADATA;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use sea_orm::DatabaseConnection;
use serde::Deserialize;

use crate::ingest::{IngestError, Receiver};
use crate::{aggregates, keys, scores, store};

/// The Langfuse SDK's OTLP path (its exporter appends `/v1/traces` to
/// `<host>/api/public/otel`).
pub const LANGFUSE_OTLP_PATH: &str = "/api/public/otel/v1/traces";

/// Largest score body.
const MAX_SCORE_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct HttpState {
    pub receiver: Receiver,
    pub db: DatabaseConnection,
    pub max_body_bytes: usize,
    pub default_page_size: u64,
    pub max_page_size: u64,
    pub aggregate_default_range_ms: i64,
    pub aggregate_max_buckets: i64,
    pub max_tree_depth: usize,
    pub keys: keys::KeyCache,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        .route(LANGFUSE_OTLP_PATH, post(langfuse_export))
        .route("/api/keys", post(create_key).get(list_keys))
        .route("/api/keys/{public_key}", delete(revoke_key))
        .route("/api/scores", post(post_score))
        .route("/api/traces", get(list))
        .route("/api/traces/{trace_id}", get(get_trace))
        .route("/api/aggregates", get(get_aggregates))
        // The export handler enforces its own limit, on the compressed
        // and on the decompressed body, and answers it the OTLP way.
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(state))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

impl Format {
    fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// An OTLP/HTTP error: the status code, and a `Status` body in the
/// request's format (JSON when the format itself was refused).
fn otlp_error(format: Format, code: ErrorCode, status: StatusCode, message: String) -> Response {
    let body = RpcStatus {
        code: code.grpc() as i32,
        message,
    };
    let bytes = match format {
        Format::Protobuf => body.encode_to_vec(),
        Format::Json => serde_json::to_vec(&body).unwrap_or_default(),
    };
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        bytes,
    )
        .into_response()
}

/// The tenant header, checked: missing is 401, malformed is 400.
fn tenant(headers: &HeaderMap) -> Result<String, (ErrorCode, String)> {
    let tenant = headers
        .get(TENANT_METADATA)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            (
                ErrorCode::Unauthenticated,
                "missing agentmesh-tenant header".to_owned(),
            )
        })?;
    mesh_bus::names::validate("tenant", tenant)
        .map_err(|e| (ErrorCode::InvalidArgument, e.to_string()))?;
    Ok(tenant.to_owned())
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("gzip body: {e}"))?;
    if out.len() > limit {
        return Err(format!("decompressed body exceeds {limit} bytes"));
    }
    Ok(out)
}

async fn export(
    State(state): State<Arc<HttpState>>,
    caller: Option<axum::Extension<mesh_runtime::service_auth::ServiceCaller>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // An authenticated service that names no tenant for the call (its own
    // OTLP exporter) names one per span: see `crate::span_tenant`.
    let tenant = match (caller, headers.contains_key(TENANT_METADATA)) {
        (Some(_), false) => Ok(None),
        _ => tenant(&headers).map(Some),
    };
    export_as(&state, &headers, body, tenant).await
}

/// The tenant of the Basic-auth key pair. Failures say nothing about
/// which half was wrong, and only the public key is ever logged.
async fn basic_tenant(
    cache: &keys::KeyCache,
    db: &DatabaseConnection,
    headers: &HeaderMap,
) -> Result<String, (ErrorCode, String)> {
    let unauthenticated = |m: &str| (ErrorCode::Unauthenticated, m.to_owned());
    let (public_key, secret_key) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(keys::parse_basic)
        .ok_or_else(|| {
            unauthenticated("authorization: basic auth with public_key:secret_key required")
        })?;
    match cache.authenticate(db, &public_key, &secret_key).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => {
            tracing::info!(%public_key, "langfuse ingest refused: unknown, wrong or revoked key");
            Err(unauthenticated("authorization: invalid or revoked api key"))
        }
        Err(error) => {
            tracing::error!(%error, "api key lookup failed");
            Err((ErrorCode::Unavailable, "database unavailable".to_owned()))
        }
    }
}

async fn langfuse_export(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = basic_tenant(&state.keys, &state.db, &headers)
        .await
        .map(Some);
    let mut response = export_as(&state, &headers, body, tenant).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"agentmesh\""),
        );
    }
    response
}

/// The OTLP/HTTP export, once the caller's tenant is resolved (or not);
/// `Ok(None)`: an authenticated service naming tenants per span.
async fn export_as(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
    tenant: Result<Option<String>, (ErrorCode, String)>,
) -> Response {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let format = match media.as_deref() {
        Some("application/x-protobuf") => Format::Protobuf,
        Some("application/json") => Format::Json,
        other => {
            return otlp_error(
                Format::Json,
                ErrorCode::InvalidArgument,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "content-type {:?} not supported: use application/x-protobuf or application/json",
                    other.unwrap_or("")
                ),
            );
        }
    };
    let fail = |code: ErrorCode, message: String| otlp_error(format, code, code.http(), message);
    let tenant = match tenant {
        Ok(t) => t,
        Err((code, message)) => return fail(code, message),
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return otlp_error(
                format,
                ErrorCode::InvalidArgument,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-encoding {other:?} not supported: use gzip or none"),
            );
        }
    };
    let limit = state.max_body_bytes;
    let too_large = || {
        fail(
            ErrorCode::PayloadTooLarge,
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return too_large();
    }
    let Ok(raw) = axum::body::to_bytes(body, limit).await else {
        return too_large();
    };
    let bytes = if gzip {
        match gunzip(&raw, limit) {
            Ok(b) => bytes::Bytes::from(b),
            Err(message) if message.contains("exceeds") => {
                return fail(ErrorCode::PayloadTooLarge, message);
            }
            Err(message) => return fail(ErrorCode::InvalidArgument, message),
        }
    } else {
        raw
    };
    // A protobuf body that decodes is a valid encoding of the request; the
    // receiver may put it on the bus as it came (see `export_encoded`).
    let (request, encoded) = match format {
        Format::Protobuf => (
            ExportTraceServiceRequest::decode(bytes.clone())
                .map_err(|e| format!("body is not an ExportTraceServiceRequest: {e}")),
            Some(bytes),
        ),
        Format::Json => (
            serde_json::from_slice::<ExportTraceServiceRequest>(&bytes)
                .map_err(|e| format!("body is not OTLP JSON: {e}")),
            None,
        ),
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => return fail(ErrorCode::InvalidArgument, message),
    };
    let exported = match &tenant {
        Some(tenant) => {
            state
                .receiver
                .export_encoded(tenant, request, encoded)
                .await
        }
        None => state.receiver.export_by_span_tenant(request).await,
    };
    match exported {
        Ok(partial_success) => {
            let response = ExportTraceServiceResponse { partial_success };
            let bytes = match format {
                Format::Protobuf => response.encode_to_vec(),
                Format::Json => serde_json::to_vec(&response).unwrap_or_default(),
            };
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                )],
                bytes,
            )
                .into_response()
        }
        Err(error @ IngestError::InvalidTenant(_)) => {
            fail(ErrorCode::InvalidArgument, error.to_string())
        }
        Err(IngestError::Unavailable(error)) => {
            tracing::warn!(%error, "cannot enqueue spans");
            fail(ErrorCode::Unavailable, error.to_string())
        }
    }
}

/// A JSON error of the query API: `{"error": {"code", "message"}}`.
fn api_error(code: ErrorCode, message: String) -> Response {
    (
        code.http(),
        axum::Json(serde_json::json!({
            "error": { "code": code.as_str(), "message": message }
        })),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<u64>,
    cursor: Option<String>,
    // Spelled out rather than `#[serde(flatten)]`: flattened fields reach
    // serde_urlencoded as strings and numbers then fail to parse.
    agent: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    status: Option<String>,
    min_latency_ms: Option<i64>,
    min_cost: Option<f64>,
}

async fn list(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    // The rejection's text names the parameter (`min_cost: invalid float
    // literal`); answer it in the API's JSON error shape.
    let Query(params) = match params {
        Ok(p) => p,
        Err(rejection) => return api_error(ErrorCode::InvalidArgument, rejection.body_text()),
    };
    let limit = params.limit.unwrap_or(state.default_page_size);
    if limit == 0 || limit > state.max_page_size {
        return api_error(
            ErrorCode::InvalidArgument,
            format!("limit: must be between 1 and {}", state.max_page_size),
        );
    }
    match store::list(
        &state.db,
        &tenant,
        &store::TraceFilter {
            agent: params.agent,
            session_id: params.session_id,
            user_id: params.user_id,
            from_ms: params.from_ms,
            to_ms: params.to_ms,
            status: params.status,
            min_latency_ms: params.min_latency_ms,
            min_cost: params.min_cost,
        },
        limit,
        params.cursor.as_deref(),
    )
    .await
    {
        Ok(page) => axum::Json(page).into_response(),
        Err(
            error @ (store::QueryError::BadCursor
            | store::QueryError::BadStatus
            | store::QueryError::FilterTooLong(_)),
        ) => api_error(ErrorCode::InvalidArgument, error.to_string()),
        Err(store::QueryError::Db(error)) => {
            tracing::error!(%error, "list traces failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

async fn get_trace(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(trace_id): Path<String>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    let trace_id = trace_id.to_ascii_lowercase();
    if trace_id.len() != 32 || !trace_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return api_error(
            ErrorCode::InvalidArgument,
            "trace_id: must be 32 hex digits".to_owned(),
        );
    }
    match store::get(&state.db, &tenant, &trace_id, state.max_tree_depth).await {
        Ok(Some(tree)) => axum::Json(tree).into_response(),
        // Another tenant's trace is indistinguishable from a missing one.
        Ok(None) => api_error(ErrorCode::NotFound, format!("trace {trace_id} not found")),
        Err(error) => {
            tracing::error!(%error, "get trace failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

/// `GET /api/aggregates?by=&interval=&from_ms=&to_ms=&agent=&model=`.
async fn get_aggregates(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    params: Result<Query<aggregates::AggregateParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    let Query(params) = match params {
        Ok(p) => p,
        Err(rejection) => return api_error(ErrorCode::InvalidArgument, rejection.body_text()),
    };
    let query = match params.validate(
        store::now_ms(),
        state.aggregate_default_range_ms,
        state.aggregate_max_buckets,
    ) {
        Ok(q) => q,
        Err(error) => return api_error(ErrorCode::InvalidArgument, error.to_string()),
    };
    match aggregates::aggregate(&state.db, &tenant, &query).await {
        Ok(result) => axum::Json(result).into_response(),
        Err(error) => {
            tracing::error!(%error, "aggregate traces failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

/// `POST /api/keys`: a new key pair for the caller's tenant; the secret
/// is in this response and nowhere else, ever.
async fn create_key(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    match keys::create(&state.db, &tenant).await {
        Ok(key) => {
            tracing::info!(%tenant, public_key = %key.public_key, "api key created");
            (StatusCode::CREATED, axum::Json(key)).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "create api key failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

/// `GET /api/keys`: the tenant's keys, without secrets.
async fn list_keys(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    match keys::list(&state.db, &tenant).await {
        Ok(list) => axum::Json(serde_json::json!({ "data": list })).into_response(),
        Err(error) => {
            tracing::error!(%error, "list api keys failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

/// `DELETE /api/keys/{public_key}`: revokes one of the tenant's keys.
async fn revoke_key(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    Path(public_key): Path<String>,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    match keys::revoke(&state.db, &tenant, &public_key).await {
        Ok(true) => {
            state.keys.forget(&public_key);
            tracing::info!(%tenant, %public_key, "api key revoked");
            StatusCode::NO_CONTENT.into_response()
        }
        // Another tenant's key is indistinguishable from a missing one.
        Ok(false) => api_error(
            ErrorCode::NotFound,
            format!("api key {public_key} not found"),
        ),
        Err(error) => {
            tracing::error!(%error, "revoke api key failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

/// `POST /api/scores`: a score on one of the tenant's traces or
/// observations (see [`crate::scores`] for the body).
async fn post_score(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let tenant = match tenant(&headers) {
        Ok(t) => t,
        Err((code, message)) => return api_error(code, message),
    };
    let Ok(bytes) = axum::body::to_bytes(body, MAX_SCORE_BYTES).await else {
        return api_error(
            ErrorCode::PayloadTooLarge,
            format!("body: exceeds {MAX_SCORE_BYTES} bytes"),
        );
    };
    let new = match serde_json::from_slice::<serde_json::Value>(&bytes)
        .map_err(|e| format!("body: not JSON: {e}"))
        .and_then(|v| scores::parse(&v))
    {
        Ok(new) => new,
        Err(message) => return api_error(ErrorCode::InvalidArgument, message),
    };
    match scores::insert(&state.db, &tenant, new).await {
        Ok(score) => (StatusCode::CREATED, axum::Json(score)).into_response(),
        Err(error) => {
            tracing::error!(%error, "store score failed");
            api_error(ErrorCode::Unavailable, "database unavailable".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn gunzip_enforces_the_decompressed_limit() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&[0_u8; 10_000]).unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(gunzip(&gz, 10_000).unwrap().len(), 10_000);
        assert!(gunzip(&gz, 9_999).unwrap_err().contains("exceeds"));
        assert!(gunzip(b"not gzip", 100).is_err());
    }
}
