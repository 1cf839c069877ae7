//! Retrieval (RAG) for API users: collections, documents, search and bulk
//! ingest over REST and public gRPC (`agentmesh.v1.Retrieval`, the same
//! messages as the internal API), proxied to the retrieval service on behalf
//! of the caller's tenant, which comes from the token and nowhere else. REST
//! bodies are camelCase JSON; REST errors name the field as the client wrote
//! it (`topK`, `documents[2].text`, `filter.lang`), gRPC errors as the proto
//! does.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mesh_proto as pb;
use mesh_proto::retrieval_client::RetrievalClient;
use mesh_runtime::ErrorCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::auth::Operation;
use crate::error::ApiError;
use crate::json::ValidJson;
use crate::state::AppState;

/// The retrieval routes, merged into the REST router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/collections",
            post(create_collection).get(list_collections),
        )
        .route(
            "/v1/collections/{name}",
            get(get_collection).delete(delete_collection),
        )
        .route("/v1/collections/{name}/documents", post(upsert_documents))
        .route(
            "/v1/collections/{name}/documents/{id}",
            get(get_document).delete(delete_document),
        )
        .route(
            "/v1/collections/{name}/documents/delete",
            post(delete_documents),
        )
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/collections/{name}/ingest", post(submit_ingest))
        .route("/v1/ingest-jobs/{id}", get(get_ingest_job))
}

/// A lazy channel to the retrieval service (`AGENTMESH_GATEWAY_RETRIEVAL_URL`),
/// over mesh TLS when `tls` is set.
pub fn client(
    url: &str,
    tls: Option<&mesh_runtime::tls::MeshTls>,
) -> Result<RetrievalClient<Channel>, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = mesh_runtime::tls::connect_lazy(endpoint, tls);
    Ok(RetrievalClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// `chunk_tokens` -> `chunkTokens`, segment by segment.
fn camel(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The service's error with its field renamed as REST clients spell it.
fn upstream(status: tonic::Status) -> ApiError {
    let mut error = ApiError::from(status);
    if let Some(field) = error.field.take() {
        let rest = camel(&field);
        error.message = error.message.replacen(&field, &rest, 1);
        error.field = Some(rest);
    }
    error
}

/// Calls the service for `tenant` within the upstream timeout.
async fn call<T, R, F>(
    state: &AppState,
    tenant: &str,
    message: T,
    timeout: std::time::Duration,
    op: impl FnOnce(RetrievalClient<Channel>, tonic::Request<T>) -> F,
) -> Result<R, ApiError>
where
    F: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
{
    let request = mesh_runtime::grpc::outgoing(tenant, message).map_err(upstream)?;
    match tokio::time::timeout(timeout, op(state.retrieval.clone(), request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
            tracing::warn!(message = status.message(), "retrieval unavailable");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the retrieval service is unavailable",
            ))
        }
        Ok(Err(status)) => Err(upstream(status)),
        Err(_) => Err(ApiError::new(
            ErrorCode::DeadlineExceeded,
            "the retrieval service did not answer in time",
        )),
    }
}

fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn collection_view(c: &pb::Collection) -> Value {
    let chunking = c.chunking.unwrap_or_default();
    json!({
        "name": c.name,
        "embeddingModel": c.embedding_model,
        "dimension": c.dimension,
        "chunking": {"chunkTokens": chunking.chunk_tokens, "overlapTokens": chunking.overlap_tokens},
        "documentCount": c.document_count,
        "chunkCount": c.chunk_count,
        "createdAt": time(c.created_at_ms),
    })
}

fn job_view(job: &pb::IngestJob) -> Value {
    let state = match pb::IngestJobState::try_from(job.state) {
        Ok(pb::IngestJobState::Queued) => "queued",
        Ok(pb::IngestJobState::Running) => "running",
        Ok(pb::IngestJobState::Succeeded) => "succeeded",
        Ok(pb::IngestJobState::Failed) => "failed",
        _ => "unknown",
    };
    json!({
        "id": job.id,
        "collection": job.collection,
        "state": state,
        "totalDocuments": job.total_documents,
        "doneDocuments": job.done_documents,
        "failedDocuments": job.failed_documents,
        "error": (!job.error.is_empty()).then_some(&job.error),
        "createdAt": time(job.created_at_ms),
        "updatedAt": time(job.updated_at_ms),
    })
}

// === bodies ===

#[derive(Debug, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChunkingBody {
    #[serde(default)]
    chunk_tokens: u32,
    #[serde(default)]
    overlap_tokens: u32,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateCollectionBody {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
    )]
    name: String,
    #[serde(default)]
    embedding_model: String,
    #[serde(default)]
    dimension: u32,
    chunking: Option<ChunkingBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DocumentBody {
    #[schema(min_length = 1, max_length = 256)]
    id: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    metadata: HashMap<String, String>,
    #[serde(default)]
    vector: Vec<f32>,
}

impl From<DocumentBody> for pb::Document {
    fn from(d: DocumentBody) -> Self {
        pb::Document {
            id: d.id,
            text: d.text,
            metadata: d.metadata,
            vector: d.vector,
            chunk_count: 0,
            updated_at_ms: 0,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DocumentsBody {
    documents: Vec<DocumentBody>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DeleteDocumentsBody {
    #[serde(default)]
    ids: Vec<String>,
    #[schema(value_type = Option<Filter>)]
    filter: Option<serde_json::Map<String, Value>>,
}

/// Metadata conditions, all of which must hold: each key maps to a string,
/// `{"$eq": string}` or `{"$in": [strings]}` (the OpenAPI document's
/// description of what [`filter_of`] accepts; never deserialized).
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documentation type
struct Filter(HashMap<String, FilterCondition>);

#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documentation type
#[serde(untagged)]
enum FilterCondition {
    Equals(String),
    Eq(FilterEq),
    In(FilterIn),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documentation type
#[serde(deny_unknown_fields)]
struct FilterEq {
    #[serde(rename = "$eq")]
    eq: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code)] // documentation type
#[serde(deny_unknown_fields)]
struct FilterIn {
    #[serde(rename = "$in")]
    #[schema(min_items = 1)]
    any_of: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SearchBody {
    #[serde(default)]
    query: String,
    #[serde(default)]
    vector: Vec<f32>,
    #[schema(minimum = 1)]
    top_k: Option<u32>,
    #[schema(value_type = Option<Filter>)]
    filter: Option<serde_json::Map<String, Value>>,
    /// vector, keyword or hybrid (default: the collection's).
    #[schema(pattern = "^(vector|keyword|hybrid)$")]
    mode: Option<String>,
    #[serde(default)]
    ef: u32,
}

/// A REST filter: `{"lang": "en"}`, `{"lang": {"$eq": "en"}}` or
/// `{"lang": {"$in": ["en", "de"]}}`; all conditions must hold.
fn filter_of(
    filter: Option<serde_json::Map<String, Value>>,
) -> Result<Option<pb::MetadataFilter>, ApiError> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let mut all = Vec::new();
    for (key, value) in filter {
        let field = format!("filter.{key}");
        if key.is_empty() {
            return Err(ApiError::invalid("filter", "keys must not be empty"));
        }
        let any_of = match value {
            Value::String(s) => vec![s],
            Value::Object(op) if op.len() == 1 => match op.into_iter().next() {
                Some((name, Value::String(s))) if name == "$eq" => vec![s],
                Some((name, Value::Array(values))) if name == "$in" => {
                    let strings: Option<Vec<String>> = values
                        .into_iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    match strings {
                        Some(s) if !s.is_empty() => s,
                        _ => {
                            return Err(ApiError::invalid(
                                &field,
                                "$in takes a non-empty list of strings",
                            ));
                        }
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        &field,
                        "use a string, {\"$eq\": string} or {\"$in\": [strings]}",
                    ));
                }
            },
            _ => {
                return Err(ApiError::invalid(
                    &field,
                    "use a string, {\"$eq\": string} or {\"$in\": [strings]}",
                ));
            }
        };
        all.push(pb::MetadataCondition { key, any_of });
    }
    Ok(Some(pb::MetadataFilter { all }))
}

// === handlers ===

#[utoipa::path(
    post,
    path = "/v1/collections",
    tag = "retrieval",
    operation_id = "createCollection",
    request_body(content = CreateCollectionBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = crate::openapi::Collection),
        (status = 409, description = "It exists", body = crate::openapi::ErrorBody),
    ),
)]
async fn create_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateCollectionBody>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::CreateCollection)?;
    let chunking = body.chunking.unwrap_or_default();
    let message = pb::CreateCollectionRequest {
        name: body.name,
        embedding_model: body.embedding_model,
        dimension: body.dimension,
        chunking: Some(pb::ChunkingConfig {
            chunk_tokens: chunking.chunk_tokens,
            overlap_tokens: chunking.overlap_tokens,
        }),
    };
    let timeout = state.config.upstream_timeout;
    let created = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.create_collection(r).await },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(collection_view(&created))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/collections",
    tag = "retrieval",
    operation_id = "listCollections",
    responses(
        (status = 200, description = "The tenant's collections", body = crate::openapi::CollectionList),
    ),
)]
async fn list_collections(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ReadCollections)?;
    let timeout = state.config.upstream_timeout;
    let listed = call(
        &state,
        &principal.tenant,
        pb::ListCollectionsRequest {},
        timeout,
        |mut c, r| async move { c.list_collections(r).await },
    )
    .await?;
    let collections: Vec<Value> = listed.collections.iter().map(collection_view).collect();
    Ok(Json(json!({ "collections": collections })))
}

#[utoipa::path(
    get,
    path = "/v1/collections/{name}",
    tag = "retrieval",
    operation_id = "getCollection",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    responses(
        (status = 200, description = "The collection", body = crate::openapi::Collection),
    ),
)]
async fn get_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ReadCollections)?;
    let timeout = state.config.upstream_timeout;
    let found = call(
        &state,
        &principal.tenant,
        pb::GetCollectionRequest { name },
        timeout,
        |mut c, r| async move { c.get_collection(r).await },
    )
    .await?;
    Ok(Json(collection_view(&found)))
}

#[utoipa::path(
    delete,
    path = "/v1/collections/{name}",
    tag = "retrieval",
    operation_id = "deleteCollection",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::CollectionDeleted),
    ),
)]
async fn delete_collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::DeleteCollection)?;
    let timeout = state.config.upstream_timeout;
    let deleted = call(
        &state,
        &principal.tenant,
        pb::DeleteCollectionRequest { name },
        timeout,
        |mut c, r| async move { c.delete_collection(r).await },
    )
    .await?;
    Ok(Json(json!({ "deleted": deleted.deleted })))
}

/// Upserts documents now (embedding on the caller's time).
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/documents",
    tag = "retrieval",
    operation_id = "upsertDocuments",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    request_body(content = DocumentsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Embedded and indexed", body = crate::openapi::Upserted),
    ),
)]
async fn upsert_documents(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    ValidJson(body): ValidJson<DocumentsBody>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::WriteDocuments)?;
    let message = pb::UpsertDocumentsRequest {
        collection,
        documents: body.documents.into_iter().map(Into::into).collect(),
    };
    // Embedding on the caller's time can take long for many documents:
    // the model timeout, not the short upstream one.
    let timeout = state.config.model_timeout;
    let done = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.upsert_documents(r).await },
    )
    .await?;
    Ok(Json(json!({
        "upserted": done.upserted,
        "unchanged": done.unchanged,
        "chunks": done.chunks,
    })))
}

#[utoipa::path(
    get,
    path = "/v1/collections/{name}/documents/{id}",
    tag = "retrieval",
    operation_id = "getDocument",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"), ("id" = String, Path, description = "The document's id", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "The document", body = crate::openapi::Document),
    ),
)]
async fn get_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ReadCollections)?;
    let timeout = state.config.upstream_timeout;
    let doc = call(
        &state,
        &principal.tenant,
        pb::GetDocumentRequest { collection, id },
        timeout,
        |mut c, r| async move { c.get_document(r).await },
    )
    .await?;
    Ok(Json(json!({
        "id": doc.id,
        "text": doc.text,
        "metadata": doc.metadata,
        "chunkCount": doc.chunk_count,
        "updatedAt": time(doc.updated_at_ms),
    })))
}

#[utoipa::path(
    delete,
    path = "/v1/collections/{name}/documents/{id}",
    tag = "retrieval",
    operation_id = "deleteDocument",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"), ("id" = String, Path, description = "The document's id", min_length = 1, max_length = 256)),
    responses(
        (status = 200, description = "Deleted", body = crate::openapi::Deleted),
    ),
)]
async fn delete_document(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((collection, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::WriteDocuments)?;
    let timeout = state.config.upstream_timeout;
    let message = pb::DeleteDocumentsRequest {
        collection,
        ids: vec![id.clone()],
        filter: None,
    };
    let done = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.delete_documents(r).await },
    )
    .await?;
    if done.deleted == 0 {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("document {id:?} not found"),
        ));
    }
    Ok(Json(json!({ "deleted": done.deleted })))
}

#[utoipa::path(
    post,
    path = "/v1/collections/{name}/documents/delete",
    tag = "retrieval",
    operation_id = "deleteDocuments",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    request_body(content = DeleteDocumentsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Deleted (by ids and/or metadata filter)", body = crate::openapi::Deleted),
    ),
)]
async fn delete_documents(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    ValidJson(body): ValidJson<DeleteDocumentsBody>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::WriteDocuments)?;
    let message = pb::DeleteDocumentsRequest {
        collection,
        ids: body.ids,
        filter: filter_of(body.filter)?,
    };
    let timeout = state.config.upstream_timeout;
    let done = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.delete_documents(r).await },
    )
    .await?;
    Ok(Json(json!({ "deleted": done.deleted })))
}

#[utoipa::path(
    post,
    path = "/v1/collections/{name}/search",
    tag = "retrieval",
    operation_id = "search",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    request_body(content = SearchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The best chunks", body = crate::openapi::SearchHits),
    ),
)]
async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    ValidJson(body): ValidJson<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::Search)?;
    let mode = match body.mode.as_deref() {
        None => pb::SearchMode::Unspecified,
        Some("vector") => pb::SearchMode::Vector,
        Some("keyword") => pb::SearchMode::Keyword,
        Some("hybrid") => pb::SearchMode::Hybrid,
        Some(_) => {
            return Err(ApiError::invalid(
                "mode",
                "must be one of vector, keyword, hybrid",
            ));
        }
    };
    let message = pb::SearchRequest {
        collection,
        query: body.query,
        vector: body.vector,
        top_k: body.top_k.unwrap_or(0),
        filter: filter_of(body.filter)?,
        mode: mode.into(),
        ef: body.ef,
    };
    if body.top_k == Some(0) {
        return Err(ApiError::invalid("topK", "must be at least 1"));
    }
    let timeout = state.config.upstream_timeout;
    let found = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.search(r).await },
    )
    .await?;
    let hits: Vec<Value> = found
        .hits
        .iter()
        .map(|h| {
            json!({
                "documentId": h.document_id,
                "chunkIndex": h.chunk_index,
                "text": h.text,
                "score": h.score,
                "metadata": h.metadata,
            })
        })
        .collect();
    Ok(Json(json!({ "hits": hits })))
}

/// Queues documents for ingest (answers at once with the job).
#[utoipa::path(
    post,
    path = "/v1/collections/{name}/ingest",
    tag = "retrieval",
    operation_id = "submitIngest",
    params(("name" = String, Path, description = "The collection's name", min_length = 1, max_length = 63, pattern = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")),
    request_body(content = DocumentsBody, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued", body = crate::openapi::IngestJob),
    ),
)]
async fn submit_ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(collection): Path<String>,
    ValidJson(body): ValidJson<DocumentsBody>,
) -> Result<Response, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::WriteDocuments)?;
    let message = pb::SubmitIngestRequest {
        collection,
        documents: body.documents.into_iter().map(Into::into).collect(),
    };
    let timeout = state.config.upstream_timeout;
    let job = call(
        &state,
        &principal.tenant,
        message,
        timeout,
        |mut c, r| async move { c.submit_ingest(r).await },
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job_view(&job))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/ingest-jobs/{id}",
    tag = "retrieval",
    operation_id = "getIngestJob",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job", body = crate::openapi::IngestJob),
    ),
)]
async fn get_ingest_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let principal = state.authorize(bearer(&headers), Operation::ReadCollections)?;
    let timeout = state.config.upstream_timeout;
    let job = call(
        &state,
        &principal.tenant,
        pb::GetIngestJobRequest { id },
        timeout,
        |mut c, r| async move { c.get_ingest_job(r).await },
    )
    .await?;
    Ok(Json(job_view(&job)))
}

// === public gRPC ===

/// The public gRPC face: each method checks the token and role, then calls
/// the retrieval service with the token's tenant.
pub struct PublicRetrieval {
    pub state: AppState,
}

impl PublicRetrieval {
    async fn forward<T, R, F>(
        &self,
        request: tonic::Request<T>,
        op: Operation,
        call: impl FnOnce(RetrievalClient<Channel>, tonic::Request<T>) -> F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let principal = self
            .state
            .authorize(header, op)
            .map_err(|e| e.to_status())?;
        let outgoing = mesh_runtime::grpc::outgoing(&principal.tenant, request.into_inner())?;
        // Writes embed on the caller's time: the model timeout for them.
        let timeout = if op == Operation::WriteDocuments {
            self.state.config.model_timeout
        } else {
            self.state.config.upstream_timeout
        };
        match tokio::time::timeout(timeout, call(self.state.retrieval.clone(), outgoing)).await {
            Ok(result) => result,
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "the retrieval service did not answer in time",
            )),
        }
    }
}

#[tonic::async_trait]
impl pb::retrieval_server::Retrieval for PublicRetrieval {
    async fn create_collection(
        &self,
        request: tonic::Request<pb::CreateCollectionRequest>,
    ) -> Result<tonic::Response<pb::Collection>, tonic::Status> {
        self.forward(
            request,
            Operation::CreateCollection,
            |mut c, r| async move { c.create_collection(r).await },
        )
        .await
    }

    async fn get_collection(
        &self,
        request: tonic::Request<pb::GetCollectionRequest>,
    ) -> Result<tonic::Response<pb::Collection>, tonic::Status> {
        self.forward(request, Operation::ReadCollections, |mut c, r| async move {
            c.get_collection(r).await
        })
        .await
    }

    async fn list_collections(
        &self,
        request: tonic::Request<pb::ListCollectionsRequest>,
    ) -> Result<tonic::Response<pb::ListCollectionsResponse>, tonic::Status> {
        self.forward(request, Operation::ReadCollections, |mut c, r| async move {
            c.list_collections(r).await
        })
        .await
    }

    async fn delete_collection(
        &self,
        request: tonic::Request<pb::DeleteCollectionRequest>,
    ) -> Result<tonic::Response<pb::DeleteCollectionResponse>, tonic::Status> {
        self.forward(
            request,
            Operation::DeleteCollection,
            |mut c, r| async move { c.delete_collection(r).await },
        )
        .await
    }

    async fn upsert_documents(
        &self,
        request: tonic::Request<pb::UpsertDocumentsRequest>,
    ) -> Result<tonic::Response<pb::UpsertDocumentsResponse>, tonic::Status> {
        self.forward(request, Operation::WriteDocuments, |mut c, r| async move {
            c.upsert_documents(r).await
        })
        .await
    }

    async fn get_document(
        &self,
        request: tonic::Request<pb::GetDocumentRequest>,
    ) -> Result<tonic::Response<pb::Document>, tonic::Status> {
        self.forward(request, Operation::ReadCollections, |mut c, r| async move {
            c.get_document(r).await
        })
        .await
    }

    async fn delete_documents(
        &self,
        request: tonic::Request<pb::DeleteDocumentsRequest>,
    ) -> Result<tonic::Response<pb::DeleteDocumentsResponse>, tonic::Status> {
        self.forward(request, Operation::WriteDocuments, |mut c, r| async move {
            c.delete_documents(r).await
        })
        .await
    }

    async fn search(
        &self,
        request: tonic::Request<pb::SearchRequest>,
    ) -> Result<tonic::Response<pb::SearchResponse>, tonic::Status> {
        self.forward(request, Operation::Search, |mut c, r| async move {
            c.search(r).await
        })
        .await
    }

    async fn submit_ingest(
        &self,
        request: tonic::Request<pb::SubmitIngestRequest>,
    ) -> Result<tonic::Response<pb::IngestJob>, tonic::Status> {
        self.forward(request, Operation::WriteDocuments, |mut c, r| async move {
            c.submit_ingest(r).await
        })
        .await
    }

    async fn get_ingest_job(
        &self,
        request: tonic::Request<pb::GetIngestJobRequest>,
    ) -> Result<tonic::Response<pb::IngestJob>, tonic::Status> {
        self.forward(request, Operation::ReadCollections, |mut c, r| async move {
            c.get_ingest_job(r).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_renamed_for_rest() {
        assert_eq!(camel("chunking.chunk_tokens"), "chunking.chunkTokens");
        assert_eq!(camel("documents[2].text"), "documents[2].text");
        let e = upstream(tonic::Status::invalid_argument("top_k: must be at most 5"));
        assert_eq!(e.field.as_deref(), Some("topK"));
        assert_eq!(e.message, "topK: must be at most 5");
    }

    #[test]
    fn filters_parse_or_name_the_key() {
        let parse = |v: Value| filter_of(v.as_object().cloned());
        let ok = parse(json!({"lang": "en", "tier": {"$in": ["a", "b"]}})).unwrap();
        assert_eq!(ok.map(|f| f.all.len()), Some(2));
        let bad = parse(json!({"lang": 3})).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("filter.lang"));
        let bad = parse(json!({"lang": {"$gt": "a"}})).unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("filter.lang"));
        let bad = parse(json!({"lang": {"$in": []}})).unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidArgument);
    }
}
