//! The retrieval operations behind the gRPC face and the ingest consumer:
//! validation (every error names its field), chunking, embedding, storage
//! and search. The tenant is an argument of every operation and every
//! lookup starts from (tenant, collection name), so no call can reach
//! another tenant's rows.
//!
//! Indexes are keyed by collection row id and tagged with the collection's
//! generation; a search that finds its index older than the database
//! reloads it from the rows first (mapping the saved graph and keeping the
//! keyword index when they are of that generation). Writes of one
//! collection hold its index's write lock from their database transaction
//! until the index has applied (and the keyword index committed) the
//! change, so they are acknowledged only once searchable and, within a
//! replica, in generation order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use mesh_bus::Bus;
use mesh_proto as pb;
use mesh_store::retrieval::{collection, ingest_job};
use prometheus_client::metrics::counter::Counter;
use sea_orm::{ActiveValue::Set, DatabaseConnection, TransactionTrait as _};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, RwLock};

use crate::chunk::{self, ChunkSpec, Tokens};
use crate::config::Config;
use crate::embed::{self, Embedder, LocalEmbedder, MiniLm, RemoteEmbedder};
use crate::error::RetrievalError;
use crate::index::{self as vector_index, CollectionIndex, Filter, HnswParams, Mode};
use crate::keyword::KeywordIndex;
use crate::milvus::Milvus;
use crate::store::{self, Applied, PreparedDocument};

/// Marks `span` (with empty `otel.status_code`, `otel.status_message` and
/// `error.type` fields) failed: `error.type` is the error's code, a short
/// fixed set (the conventions want low cardinality).
fn record_error(span: &tracing::Span, error: &RetrievalError) {
    let error_type = match error {
        RetrievalError::Invalid { .. } => "invalid_argument",
        RetrievalError::NotFound(_) => "not_found",
        RetrievalError::Conflict(_) => "conflict",
        RetrievalError::Unavailable(_) => "unavailable",
        RetrievalError::QuotaExceeded(_) => "quota_exceeded",
        RetrievalError::Internal(_) => "internal",
    };
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", error.to_string().as_str());
    span.record("error.type", error_type);
}

/// The `embedding_model` of collections whose callers send vectors.
pub const NO_MODEL: &str = "none";
/// Prefix of models served by the OpenAI-compatible endpoint.
pub const REMOTE_PREFIX: &str = "openai:";
const DEFAULT_TOP_K: u32 = 10;
const MAX_ID_BYTES: usize = 256;
const MAX_METADATA_KEY_BYTES: usize = 128;
const MAX_METADATA_VALUE_BYTES: usize = 1024;

#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub documents_indexed: Counter,
    pub chunks_indexed: Counter,
    pub searches: Counter,
    pub ingest_parts: Counter,
    pub ingest_failures: Counter,
}

type Slot = Arc<RwLock<Option<CollectionIndex>>>;

/// A write's turn on one collection, held from before its transaction
/// until the index has the change: writes to a collection take turns, and
/// searches take no turn (they read the index's last applied state).
struct WriteGuard {
    _turn: OwnedMutexGuard<()>,
    slot: Slot,
}

pub struct Service {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub bus: Bus,
    pub metrics: Metrics,
    local: Option<Arc<MiniLm>>,
    tokens: Tokens,
    http: reqwest::Client,
    indexes: std::sync::Mutex<HashMap<i64, Slot>>,
    /// The write turn of each collection (see [`WriteGuard`]).
    turns: std::sync::Mutex<HashMap<i64, Arc<AsyncMutex<()>>>>,
    /// Vector search backend when `AGENTMESH_RETRIEVAL_MILVUS_URL` is set.
    milvus: Option<Milvus>,
    /// Collection rows recently read by searches, by (tenant, name).
    rows: std::sync::Mutex<HashMap<(String, String), (collection::Model, std::time::Instant)>>,
}

fn invalid(field: impl Into<String>, why: impl std::fmt::Display) -> RetrievalError {
    RetrievalError::invalid(field, why)
}

fn validate_name(field: &str, name: &str) -> Result<(), RetrievalError> {
    mesh_bus::names::validate("collection", name).map_err(|e| match e {
        mesh_bus::BusError::InvalidName { reason, .. } => invalid(field, reason),
        other => invalid(field, other),
    })
}

fn params_of(config: &Config) -> HnswParams {
    HnswParams {
        connectivity: config.hnsw_connectivity,
        ef_construction: config.hnsw_ef_construction,
        ef_search: config.hnsw_ef_search,
        exact_max_chunks: config.exact_max_chunks,
        quantization: config.hnsw_quantization,
    }
}

fn not_found(name: &str) -> RetrievalError {
    RetrievalError::NotFound(format!("collection {name:?} not found"))
}

/// A filter from its proto form; errors name `filter.all[i]...`.
pub fn filter_of(
    filter: Option<&pb::MetadataFilter>,
    config: &Config,
) -> Result<Filter, RetrievalError> {
    let mut out = Filter::default();
    let conditions = filter.map(|f| f.all.as_slice()).unwrap_or_default();
    // Each value becomes a bound parameter of the query: an unbounded list
    // would run into the database's parameter limit (a 500, not a 400).
    if conditions.len() > config.max_metadata_entries {
        return Err(invalid(
            "filter.all",
            format!("at most {} conditions", config.max_metadata_entries),
        ));
    }
    for (i, condition) in conditions.iter().enumerate() {
        if condition.key.is_empty() || condition.key.len() > MAX_METADATA_KEY_BYTES {
            return Err(invalid(
                format!("filter.all[{i}].key"),
                format!("must be 1 to {MAX_METADATA_KEY_BYTES} bytes"),
            ));
        }
        if condition.any_of.is_empty() {
            return Err(invalid(
                format!("filter.all[{i}].any_of"),
                "must list at least one value",
            ));
        }
        if condition.any_of.len() > config.max_filter_values {
            return Err(invalid(
                format!("filter.all[{i}].any_of"),
                format!("at most {} values", config.max_filter_values),
            ));
        }
        // No stored value is longer, so a longer one can never match.
        if let Some(j) = condition
            .any_of
            .iter()
            .position(|v| v.len() > MAX_METADATA_VALUE_BYTES)
        {
            return Err(invalid(
                format!("filter.all[{i}].any_of[{j}]"),
                format!("at most {MAX_METADATA_VALUE_BYTES} bytes"),
            ));
        }
        out.all
            .push((condition.key.clone(), condition.any_of.clone()));
    }
    Ok(out)
}

fn collection_view(row: &collection::Model, counts: (u64, u64)) -> pb::Collection {
    pb::Collection {
        name: row.name.clone(),
        embedding_model: row.embedding_model.clone(),
        dimension: u32::try_from(row.dimension).unwrap_or(0),
        chunking: Some(pb::ChunkingConfig {
            chunk_tokens: u32::try_from(row.chunk_tokens).unwrap_or(0),
            overlap_tokens: u32::try_from(row.overlap_tokens).unwrap_or(0),
        }),
        document_count: counts.0,
        chunk_count: counts.1,
        created_at_ms: row.created_at_ms,
    }
}

pub fn job_view(job: &ingest_job::Model) -> pb::IngestJob {
    let state = match job.state.as_str() {
        "queued" => pb::IngestJobState::Queued,
        "running" => pb::IngestJobState::Running,
        "succeeded" => pb::IngestJobState::Succeeded,
        "failed" => pb::IngestJobState::Failed,
        _ => pb::IngestJobState::Unspecified,
    };
    pb::IngestJob {
        id: job.id.clone(),
        collection: job.collection.clone(),
        state: state.into(),
        total_documents: u32::try_from(job.total_documents).unwrap_or(0),
        done_documents: u32::try_from(job.done_documents).unwrap_or(0),
        failed_documents: u32::try_from(job.failed_documents).unwrap_or(0),
        error: job.error.clone().unwrap_or_default(),
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
    }
}

impl Service {
    pub fn new(
        db: DatabaseConnection,
        config: Arc<Config>,
        bus: Bus,
        local: Option<Arc<MiniLm>>,
        chunk_tokenizer: Option<Arc<tokenizers::Tokenizer>>,
        metrics: Metrics,
    ) -> Result<Self, RetrievalError> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(mesh_runtime::server::CLIENT_POOL_IDLE_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| RetrievalError::Internal(format!("http client: {e}")))?;
        let milvus = match &config.milvus_url {
            Some(url) => Some(Milvus::new(url, params_of(&config))?),
            None => None,
        };
        Ok(Self {
            milvus,
            rows: std::sync::Mutex::new(HashMap::new()),
            db,
            config,
            bus,
            metrics,
            local,
            tokens: chunk_tokenizer.map_or(Tokens::Words, Tokens::Model),
            http,
            indexes: std::sync::Mutex::new(HashMap::new()),
            turns: std::sync::Mutex::new(HashMap::new()),
        })
    }

    fn params(&self) -> HnswParams {
        let mut params = params_of(&self.config);
        if self.milvus.is_some() {
            // Milvus holds the graph; the process keeps only the vectors.
            params.exact_max_chunks = usize::MAX;
        }
        params
    }

    fn slot(&self, collection_id: i64) -> Slot {
        let mut indexes = self
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        indexes.entry(collection_id).or_default().clone()
    }

    fn turn(&self, collection_id: i64) -> Arc<AsyncMutex<()>> {
        let mut turns = self
            .turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        turns.entry(collection_id).or_default().clone()
    }

    /// Whether a write to the collection is under way in this replica.
    fn writing(&self, collection_id: i64) -> bool {
        self.turn(collection_id).try_lock().is_err()
    }

    fn forget(&self, collection_id: i64) {
        self.indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&collection_id);
        self.turns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&collection_id);
        self.remove_graph_files(collection_id, None);
        let keyword = self.keyword_dir(collection_id);
        if keyword.exists()
            && let Err(error) = std::fs::remove_dir_all(&keyword)
        {
            tracing::warn!(%error, path = %keyword.display(), "cannot remove a deleted collection's keyword index");
        }
    }

    /// The tantivy index of a collection (one folder per collection row,
    /// that is per tenant and collection name).
    fn keyword_dir(&self, collection_id: i64) -> PathBuf {
        self.graph_dir().join(format!("{collection_id}.keyword"))
    }

    /// Refuses a write that would take the tenant over its document quota:
    /// `stored` documents now, `adding` new ones.
    fn check_quota(&self, stored: u64, adding: u64) -> Result<(), RetrievalError> {
        let limit = self.config.max_documents_per_tenant;
        if adding > 0 && stored.saturating_add(adding) > limit {
            return Err(RetrievalError::QuotaExceeded(format!(
                "documents: quota of stored documents per tenant exceeded: {stored} stored, {adding} new would pass the limit of {limit} (AGENTMESH_RETRIEVAL_MAX_DOCUMENTS_PER_TENANT)"
            )));
        }
        Ok(())
    }

    /// The quota check before any embedding work: documents of the request
    /// that are not stored yet against the tenant's total.
    async fn precheck_quota(
        &self,
        tenant: &str,
        collection: &collection::Model,
        documents: &[pb::Document],
    ) -> Result<(), RetrievalError> {
        let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
        let stored = store::stored_hashes(&self.db, collection.id, &ids).await?;
        let adding = ids.iter().filter(|id| !stored.contains_key(*id)).count() as u64;
        if adding == 0 {
            return Ok(());
        }
        let total = store::tenant_documents(&self.db, tenant).await?;
        self.check_quota(total, adding)
    }

    /// Stores prepared documents in `txn` and checks the quota again with
    /// the rows in place (concurrent writers each see their own); over it,
    /// the transaction is rolled back. The caller commits.
    async fn store_within_quota(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        tenant: &str,
        collection_id: i64,
        prepared: Vec<PreparedDocument>,
    ) -> Result<Applied, RetrievalError> {
        let applied = store::upsert_documents(txn, collection_id, prepared).await?;
        if applied.inserted > 0 {
            let total = store::tenant_documents(txn, tenant).await?;
            let inserted = u64::from(applied.inserted);
            self.check_quota(total.saturating_sub(inserted), inserted)?;
        }
        Ok(applied)
    }

    /// The collection's write turn, with its index loaded: writes take it
    /// before their transaction and release it once applied.
    async fn lock_for_write(
        &self,
        collection: &collection::Model,
    ) -> Result<WriteGuard, RetrievalError> {
        let turn = self.turn(collection.id).lock_owned().await;
        let slot = self.loaded(collection, false).await?;
        Ok(WriteGuard { _turn: turn, slot })
    }

    fn graph_dir(&self) -> PathBuf {
        self.config.data_dir.join("retrieval-index")
    }

    fn graph_path(&self, collection_id: i64, generation: i64) -> PathBuf {
        self.graph_dir()
            .join(format!("{collection_id}-{generation}.usearch"))
    }

    /// Removes the saved graphs of a collection except `keep`'s.
    fn remove_graph_files(&self, collection_id: i64, keep: Option<i64>) {
        let Ok(entries) = std::fs::read_dir(self.graph_dir()) else {
            return;
        };
        let prefix = format!("{collection_id}-");
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let generation = rest
                .strip_suffix(".usearch")
                .and_then(|g| g.parse::<i64>().ok());
            if generation.is_some() && generation != keep {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The embedder of a collection's model; `None` for `none`.
    fn embedder(
        &self,
        tenant: &str,
        model: &str,
    ) -> Result<Option<Box<dyn Embedder>>, RetrievalError> {
        if model == NO_MODEL {
            return Ok(None);
        }
        if model == embed::MINILM {
            return match &self.local {
                Some(local) => Ok(Some(Box::new(LocalEmbedder(local.clone())))),
                None => Err(invalid(
                    "embedding_model",
                    "the local all-minilm-l6-v2 model is not loaded on this service (AGENTMESH_RETRIEVAL_MINILM_DIR)",
                )),
            };
        }
        if let Some(name) = model.strip_prefix(REMOTE_PREFIX) {
            let Some(base_url) = &self.config.embeddings_url else {
                return Err(invalid(
                    "embedding_model",
                    "no embeddings endpoint is configured (AGENTMESH_RETRIEVAL_EMBEDDINGS_URL)",
                ));
            };
            return Ok(Some(Box::new(RemoteEmbedder {
                http: self.http.clone(),
                base_url: base_url.clone(),
                api_key: self.config.embeddings_api_key.clone(),
                model: name.to_owned(),
                batch: self.config.embed_batch,
                timeout: self.config.embeddings_timeout,
                tenant: tenant.to_owned(),
            })));
        }
        Err(invalid(
            "embedding_model",
            format!(
                "unknown model {model:?}; use {}, {REMOTE_PREFIX}<model> or {NO_MODEL}",
                embed::MINILM
            ),
        ))
    }

    async fn collection(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<collection::Model, RetrievalError> {
        validate_name("collection", name)?;
        store::find_collection(&self.db, tenant, name)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// The collection row for a search: reused for up to
    /// `collection_cache` (searches only; writes always read the row).
    async fn collection_for_search(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<collection::Model, RetrievalError> {
        let ttl = self.config.collection_cache;
        let key = (tenant.to_owned(), name.to_owned());
        if !ttl.is_zero() {
            let rows = self
                .rows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((row, at)) = rows.get(&key)
                && at.elapsed() < ttl
            {
                return Ok(row.clone());
            }
        }
        let row = self.collection(tenant, name).await?;
        if !ttl.is_zero() {
            let mut rows = self
                .rows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if rows.len() > 10_000 {
                rows.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            rows.insert(key, (row.clone(), std::time::Instant::now()));
        }
        Ok(row)
    }

    fn forget_row(&self, tenant: &str, name: &str) {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&(tenant.to_owned(), name.to_owned()));
    }

    // === collections ===

    pub async fn create_collection(
        &self,
        tenant: &str,
        request: pb::CreateCollectionRequest,
    ) -> Result<pb::Collection, RetrievalError> {
        validate_name("name", &request.name)?;
        let model = if request.embedding_model.is_empty() {
            embed::MINILM.to_owned()
        } else {
            request.embedding_model.clone()
        };
        self.embedder(tenant, &model)?;
        let dimension = match (model.as_str(), request.dimension) {
            (embed::MINILM, 0) => embed::MINILM_DIMENSION,
            (embed::MINILM, d) if d != embed::MINILM_DIMENSION => {
                return Err(invalid(
                    "dimension",
                    format!(
                        "{} produces {} values",
                        embed::MINILM,
                        embed::MINILM_DIMENSION
                    ),
                ));
            }
            (_, d) if d == 0 || d > self.config.max_dimension => {
                return Err(invalid(
                    "dimension",
                    format!("must be between 1 and {}", self.config.max_dimension),
                ));
            }
            (_, d) => d,
        };
        let chunking = request.chunking.unwrap_or_default();
        let chunk_tokens = match chunking.chunk_tokens {
            0 => self.config.default_chunk_tokens,
            n if n > self.config.max_chunk_tokens => {
                return Err(invalid(
                    "chunking.chunk_tokens",
                    format!("must be at most {}", self.config.max_chunk_tokens),
                ));
            }
            n => n,
        };
        let overlap_tokens = if chunking.chunk_tokens == 0 && chunking.overlap_tokens == 0 {
            self.config
                .default_overlap_tokens
                .min(chunk_tokens.saturating_sub(1))
        } else {
            chunking.overlap_tokens
        };
        if overlap_tokens >= chunk_tokens {
            return Err(invalid(
                "chunking.overlap_tokens",
                "must be smaller than chunk_tokens",
            ));
        }
        let row = collection::ActiveModel {
            id: sea_orm::ActiveValue::NotSet,
            tenant: Set(tenant.to_owned()),
            name: Set(request.name.clone()),
            embedding_model: Set(model),
            dimension: Set(i32::try_from(dimension).unwrap_or(i32::MAX)),
            chunk_tokens: Set(i32::try_from(chunk_tokens).unwrap_or(i32::MAX)),
            overlap_tokens: Set(i32::try_from(overlap_tokens).unwrap_or(i32::MAX)),
            generation: Set(0),
            created_at_ms: Set(store::now_ms()),
        };
        let created = store::create_collection(&self.db, row)
            .await?
            .ok_or_else(|| {
                RetrievalError::Conflict(format!("collection {:?} already exists", request.name))
            })?;
        Ok(collection_view(&created, (0, 0)))
    }

    pub async fn get_collection(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<pb::Collection, RetrievalError> {
        let row = self.collection(tenant, name).await?;
        let counts = store::counts(&self.db, row.id).await?;
        Ok(collection_view(&row, counts))
    }

    pub async fn list_collections(
        &self,
        tenant: &str,
    ) -> Result<pb::ListCollectionsResponse, RetrievalError> {
        let mut collections = Vec::new();
        for row in store::list_collections(&self.db, tenant).await? {
            let counts = store::counts(&self.db, row.id).await?;
            collections.push(collection_view(&row, counts));
        }
        Ok(pb::ListCollectionsResponse { collections })
    }

    pub async fn delete_collection(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<bool, RetrievalError> {
        validate_name("name", name)?;
        match store::delete_collection(&self.db, tenant, name).await? {
            Some(id) => {
                self.forget(id);
                self.forget_row(tenant, name);
                if let Some(milvus) = &self.milvus
                    && let Err(error) = milvus.drop(id).await
                {
                    tracing::warn!(%error, "cannot drop the collection's milvus copy");
                }
                Ok(true)
            }
            None => Err(not_found(name)),
        }
    }

    // === documents ===

    /// Checks documents against the collection and the limits; `prefix`
    /// names the list in errors (`documents`).
    fn validate_documents(
        &self,
        collection: &collection::Model,
        documents: &[pb::Document],
    ) -> Result<(), RetrievalError> {
        let config = &self.config;
        if documents.is_empty() {
            return Err(invalid("documents", "must contain at least one document"));
        }
        if documents.len() > config.max_documents_per_request {
            return Err(invalid(
                "documents",
                format!(
                    "{} documents; at most {} per request",
                    documents.len(),
                    config.max_documents_per_request
                ),
            ));
        }
        let mut seen = HashSet::new();
        for (i, doc) in documents.iter().enumerate() {
            let field = |name: &str| format!("documents[{i}].{name}");
            if doc.id.is_empty() || doc.id.len() > MAX_ID_BYTES {
                return Err(invalid(
                    field("id"),
                    format!("must be 1 to {MAX_ID_BYTES} bytes"),
                ));
            }
            if !seen.insert(doc.id.as_str()) {
                return Err(invalid(
                    field("id"),
                    format!("{:?} appears twice in the request", doc.id),
                ));
            }
            if doc.text.trim().is_empty() && collection.embedding_model != NO_MODEL {
                return Err(invalid(field("text"), "must not be empty"));
            }
            if doc.text.len() > config.max_document_bytes {
                return Err(invalid(
                    field("text"),
                    format!(
                        "{} bytes exceeds the limit of {} bytes",
                        doc.text.len(),
                        config.max_document_bytes
                    ),
                ));
            }
            if doc.metadata.len() > config.max_metadata_entries {
                return Err(invalid(
                    field("metadata"),
                    format!("at most {} entries", config.max_metadata_entries),
                ));
            }
            for (key, value) in &doc.metadata {
                if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES {
                    return Err(invalid(
                        field("metadata"),
                        format!("keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes"),
                    ));
                }
                if value.len() > MAX_METADATA_VALUE_BYTES {
                    return Err(invalid(
                        format!("documents[{i}].metadata.{key}"),
                        format!("at most {MAX_METADATA_VALUE_BYTES} bytes"),
                    ));
                }
            }
            let dimension = usize::try_from(collection.dimension).unwrap_or(0);
            match (collection.embedding_model == NO_MODEL, doc.vector.len()) {
                (true, n) if n != dimension => {
                    return Err(invalid(
                        field("vector"),
                        format!("expected {dimension} values, got {n}"),
                    ));
                }
                (true, _) if doc.vector.iter().any(|x| !x.is_finite()) => {
                    return Err(invalid(field("vector"), "values must be finite"));
                }
                (false, n) if n > 0 => {
                    return Err(invalid(
                        field("vector"),
                        format!(
                            "collection {:?} embeds text with {}; send text only",
                            collection.name, collection.embedding_model
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Chunks and embeds the documents whose content is not stored yet.
    async fn prepare(
        &self,
        tenant: &str,
        collection: &collection::Model,
        documents: Vec<pb::Document>,
    ) -> Result<(Vec<PreparedDocument>, u32), RetrievalError> {
        let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
        let stored = store::stored_hashes(&self.db, collection.id, &ids).await?;
        let spec = ChunkSpec {
            tokens: usize::try_from(collection.chunk_tokens).unwrap_or(1),
            overlap: usize::try_from(collection.overlap_tokens).unwrap_or(0),
        };
        let embedder = self.embedder(tenant, &collection.embedding_model)?;
        let mut prepared = Vec::new();
        let mut unchanged = 0;
        let mut texts: Vec<String> = Vec::new();
        for doc in documents {
            let metadata: BTreeMap<String, String> = doc.metadata.into_iter().collect();
            let hash = store::content_hash(&doc.text, &metadata, &doc.vector);
            if stored.get(&doc.id) == Some(&hash) {
                unchanged += 1;
                continue;
            }
            let chunks = match &embedder {
                None => vec![(doc.text.clone(), embed::normalize(doc.vector))],
                Some(_) => {
                    let pieces = chunk::chunk(&doc.text, spec, &self.tokens);
                    texts.extend(pieces.iter().cloned());
                    pieces.into_iter().map(|p| (p, Vec::new())).collect()
                }
            };
            prepared.push(PreparedDocument {
                doc_id: doc.id,
                text: doc.text,
                metadata,
                hash,
                chunks,
            });
        }
        if let Some(embedder) = embedder
            && !texts.is_empty()
        {
            let vectors = self
                .embed_traced(
                    embedder.as_ref(),
                    tenant,
                    &collection.embedding_model,
                    &texts,
                )
                .await?;
            let dimension = usize::try_from(collection.dimension).unwrap_or(0);
            if let Some(bad) = vectors.iter().find(|v| v.len() != dimension) {
                return Err(invalid(
                    "embedding_model",
                    format!(
                        "{} returned {} values but the collection's dimension is {dimension}",
                        collection.embedding_model,
                        bad.len()
                    ),
                ));
            }
            let mut vectors = vectors.into_iter();
            for doc in &mut prepared {
                for (_, vector) in &mut doc.chunks {
                    *vector = vectors.next().unwrap_or_default();
                }
            }
        }
        Ok((prepared, unchanged))
    }

    /// Applies a committed change to the collection's index (the keyword
    /// index commits it), or drops the index when another write came in
    /// between or applying failed: the next use reloads it from the rows.
    async fn apply(&self, collection: &collection::Model, turn: WriteGuard, applied: Applied) {
        if applied.generation == 0 {
            return;
        }
        let slot = turn.slot.clone();
        let read = slot.clone().read_owned().await;
        let in_order = read
            .as_ref()
            .is_some_and(|index| index.generation + 1 == applied.generation);
        if !in_order {
            drop(read);
            slot.write().await.take();
            return;
        }
        if let Some(milvus) = &self.milvus {
            let dimension = usize::try_from(collection.dimension).unwrap_or(0);
            if let Err(error) = milvus
                .apply(collection.id, dimension, &applied.removed, &applied.added)
                .await
            {
                // The next search reloads the rows and rebuilds the copy.
                tracing::warn!(%error, "milvus write failed; the collection will be rebuilt");
                drop(read);
                slot.write().await.take();
                return;
            }
        }
        // The slow part (the keyword commit and its sync to disk, reading a
        // mapped graph into memory) runs under the read lock, beside the
        // searches; then the write lock, for the in-memory change only.
        let name = collection.name.clone();
        let staged = tokio::task::spawn_blocking(move || {
            let staged = read
                .as_ref()
                .map(|index| index.stage(&applied.removed, &applied.added, applied.generation));
            drop(read);
            (staged, applied)
        })
        .await;
        let (staged, applied) = match staged {
            Ok((Some(Ok(staged)), applied)) => (staged, applied),
            Ok((Some(Err(error)), _)) => {
                tracing::warn!(%error, collection = %name, "cannot apply a write to the index; it will be reloaded");
                slot.write().await.take();
                return;
            }
            Ok((None, _)) => return,
            Err(error) => {
                tracing::error!(%error, "index write task failed");
                slot.write().await.take();
                return;
            }
        };
        let mut guard = slot.clone().write_owned().await;
        let done = tokio::task::spawn_blocking(move || {
            if let Some(index) = guard.as_mut()
                && let Err(error) =
                    index.publish(&applied.removed, applied.added, applied.generation, staged)
            {
                tracing::warn!(%error, collection = %name, "cannot apply a write to the index; it will be reloaded");
                *guard = None;
            }
        })
        .await;
        if let Err(error) = done {
            // The guard was dropped with the task: the index stays as it
            // was, behind the database; drop it so the next use reloads.
            tracing::error!(%error, "index write task failed");
            slot.write().await.take();
        }
        drop(turn);
    }

    pub async fn upsert(
        &self,
        tenant: &str,
        request: pb::UpsertDocumentsRequest,
    ) -> Result<pb::UpsertDocumentsResponse, RetrievalError> {
        let collection = self.collection(tenant, &request.collection).await?;
        self.validate_documents(&collection, &request.documents)?;
        self.precheck_quota(tenant, &collection, &request.documents)
            .await?;
        let (prepared, unchanged) = self.prepare(tenant, &collection, request.documents).await?;
        let chunks: usize = prepared.iter().map(|d| d.chunks.len()).sum();
        let guard = self.lock_for_write(&collection).await?;
        let txn = self.db.begin().await?;
        let applied = self
            .store_within_quota(&txn, tenant, collection.id, prepared)
            .await?;
        txn.commit().await?;
        let response = pb::UpsertDocumentsResponse {
            upserted: applied.upserted,
            unchanged: unchanged + applied.unchanged,
            chunks: u32::try_from(chunks).unwrap_or(u32::MAX),
        };
        self.metrics
            .documents_indexed
            .inc_by(u64::from(applied.upserted));
        self.metrics
            .chunks_indexed
            .inc_by(applied.added.len() as u64);
        self.apply(&collection, guard, applied).await;
        Ok(response)
    }

    pub async fn get_document(
        &self,
        tenant: &str,
        request: pb::GetDocumentRequest,
    ) -> Result<pb::Document, RetrievalError> {
        let collection = self.collection(tenant, &request.collection).await?;
        if request.id.is_empty() || request.id.len() > MAX_ID_BYTES {
            return Err(invalid("id", format!("must be 1 to {MAX_ID_BYTES} bytes")));
        }
        let (row, metadata) = store::get_document(&self.db, collection.id, &request.id)
            .await?
            .ok_or_else(|| {
                RetrievalError::NotFound(format!("document {:?} not found", request.id))
            })?;
        Ok(pb::Document {
            id: row.doc_id,
            text: row.text,
            metadata: metadata.into_iter().collect(),
            vector: Vec::new(),
            chunk_count: u32::try_from(row.chunk_count).unwrap_or(0),
            updated_at_ms: row.updated_at_ms,
        })
    }

    pub async fn delete_documents(
        &self,
        tenant: &str,
        request: pb::DeleteDocumentsRequest,
    ) -> Result<u32, RetrievalError> {
        let collection = self.collection(tenant, &request.collection).await?;
        let filter = filter_of(request.filter.as_ref(), &self.config)?;
        if request.ids.is_empty() && filter.is_empty() {
            return Err(invalid(
                "filter",
                "send ids or a filter with at least one condition",
            ));
        }
        if !request.ids.is_empty() && !filter.is_empty() {
            return Err(invalid("filter", "send either ids or a filter, not both"));
        }
        if request.ids.len() > self.config.max_documents_per_request {
            return Err(invalid(
                "ids",
                format!(
                    "{} ids; at most {} per request",
                    request.ids.len(),
                    self.config.max_documents_per_request
                ),
            ));
        }
        if let Some(i) = request
            .ids
            .iter()
            .position(|id| id.is_empty() || id.len() > MAX_ID_BYTES)
        {
            return Err(invalid(
                format!("ids[{i}]"),
                format!("must be 1 to {MAX_ID_BYTES} bytes"),
            ));
        }
        let guard = self.lock_for_write(&collection).await?;
        let applied =
            store::delete_documents(&self.db, collection.id, &request.ids, &filter).await?;
        let deleted = applied.deleted;
        self.apply(&collection, guard, applied).await;
        Ok(deleted)
    }

    /// Embeds `texts` with the collection's `model` inside an `embeddings
    /// <model>` span (GenAI conventions). The texts are content and never
    /// go on the span: this service cannot know whether the agent behind a
    /// call allows recording it.
    async fn embed_traced(
        &self,
        embedder: &dyn Embedder,
        tenant: &str,
        model: &str,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, RetrievalError> {
        use tracing::Instrument as _;
        let (provider, kind, request_model) = match model.strip_prefix(REMOTE_PREFIX) {
            // Without a key of its own the endpoint is the mesh's router.
            Some(name) if self.config.embeddings_api_key.is_none() => ("agentmesh", "client", name),
            Some(name) => ("openai", "client", name),
            // In process, on candle: the conventions' kind for a local model.
            None => ("candle", "internal", model),
        };
        let span = tracing::info_span!(
            "embeddings",
            otel.name = format!("embeddings {request_model}"),
            otel.kind = kind,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
            gen_ai.operation.name = "embeddings",
            gen_ai.provider.name = provider,
            gen_ai.request.model = %request_model,
            gen_ai.embeddings.dimension.count = tracing::field::Empty,
            agentmesh.embeddings.inputs = texts.len() as u64,
            error.r#type = tracing::field::Empty,
            agentmesh.tenant = %tenant,
        );
        let result = embedder.embed(texts).instrument(span.clone()).await;
        match &result {
            Ok(vectors) => {
                if let Some(first) = vectors.first() {
                    span.record("gen_ai.embeddings.dimension.count", first.len() as u64);
                }
            }
            Err(error) => record_error(&span, error),
        }
        result
    }

    // === search ===

    /// A search inside a `retrieval <collection>` span (GenAI conventions:
    /// the collection is the data source). The query text is content and
    /// stays off the span, as in [`Self::embed_traced`].
    pub async fn search(
        &self,
        tenant: &str,
        request: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, RetrievalError> {
        use tracing::Instrument as _;
        // The name as sent (validated inside); bounded, since it names the span.
        let collection: String = request.collection.chars().take(64).collect();
        let span = tracing::info_span!(
            "retrieval",
            otel.name = format!("retrieval {collection}"),
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
            gen_ai.operation.name = "retrieval",
            gen_ai.data_source.id = %collection,
            gen_ai.request.top_k = f64::from(request.top_k),
            agentmesh.retrieval.hits = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
            agentmesh.tenant = %tenant,
        );
        let result = self
            .search_untraced(tenant, request)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(response) => {
                span.record("agentmesh.retrieval.hits", response.hits.len() as u64);
            }
            Err(error) => record_error(&span, error),
        }
        result
    }

    async fn search_untraced(
        &self,
        tenant: &str,
        request: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, RetrievalError> {
        let collection = self
            .collection_for_search(tenant, &request.collection)
            .await?;
        let filter = filter_of(request.filter.as_ref(), &self.config)?;
        let top_k = match request.top_k {
            0 => DEFAULT_TOP_K,
            k if k > self.config.max_top_k => {
                return Err(invalid(
                    "top_k",
                    format!("must be at most {}", self.config.max_top_k),
                ));
            }
            k => k,
        } as usize;
        if request.query.len() > self.config.max_query_bytes {
            return Err(invalid(
                "query",
                format!("longer than {} bytes", self.config.max_query_bytes),
            ));
        }
        let text = request.query.trim();
        let has_text = !text.is_empty();
        let has_vector = !request.vector.is_empty();
        let no_model = collection.embedding_model == NO_MODEL;
        let mode = match pb::SearchMode::try_from(request.mode) {
            Ok(pb::SearchMode::Vector) => Mode::Vector,
            Ok(pb::SearchMode::Keyword) => Mode::Keyword,
            Ok(pb::SearchMode::Hybrid) => Mode::Hybrid,
            Ok(pb::SearchMode::Unspecified) if has_text && !no_model => Mode::Hybrid,
            Ok(pb::SearchMode::Unspecified) if has_text => Mode::Keyword,
            Ok(pb::SearchMode::Unspecified) => Mode::Vector,
            Err(_) => return Err(invalid("mode", "unknown search mode")),
        };
        if !has_text && !has_vector {
            return Err(invalid("query", "empty; send query text or a vector"));
        }
        if has_text && has_vector {
            return Err(invalid(
                "vector",
                "send either query text or a vector, not both",
            ));
        }
        if mode != Mode::Vector && !has_text {
            return Err(invalid(
                "query",
                "keyword and hybrid search need query text",
            ));
        }
        let dimension = usize::try_from(collection.dimension).unwrap_or(0);
        let vector = if has_vector {
            if request.vector.len() != dimension {
                return Err(invalid(
                    "vector",
                    format!("expected {dimension} values, got {}", request.vector.len()),
                ));
            }
            if request.vector.iter().any(|x| !x.is_finite()) {
                return Err(invalid("vector", "values must be finite"));
            }
            Some(embed::normalize(request.vector))
        } else if mode == Mode::Keyword {
            None
        } else {
            match self.embedder(tenant, &collection.embedding_model)? {
                Some(embedder) => self
                    .embed_traced(
                        embedder.as_ref(),
                        tenant,
                        &collection.embedding_model,
                        &[text.to_owned()],
                    )
                    .await?
                    .pop(),
                None => {
                    return Err(invalid(
                        "query",
                        format!(
                            "collection {:?} has no embedding model; send a vector or use keyword mode",
                            collection.name
                        ),
                    ));
                }
            }
        };
        self.metrics.searches.inc();
        let slot = self.loaded(&collection, true).await?;
        let guard = slot.read().await;
        let Some(index) = guard.as_ref() else {
            return Err(RetrievalError::Unavailable(
                "index reloading; retry".to_owned(),
            ));
        };
        let ef = usize::try_from(request.ef).unwrap_or(0);
        let hits = match (&self.milvus, mode, vector.as_deref()) {
            (Some(milvus), Mode::Vector | Mode::Hybrid, Some(v)) => {
                let candidates = if mode == Mode::Hybrid {
                    (top_k * 4).max(50)
                } else {
                    top_k
                };
                let by_vector = milvus
                    .search(collection.id, v, candidates, &filter, ef)
                    .await?;
                if mode == Mode::Vector {
                    by_vector
                } else {
                    let by_keyword = index
                        .keyword_search(text, candidates, &filter)
                        .map_err(|e| RetrievalError::Internal(e.to_string()))?;
                    vector_index::rrf(&[by_vector, by_keyword], self.config.rrf_k, top_k)
                }
            }
            _ => index
                .search(
                    mode,
                    text,
                    vector.as_deref(),
                    top_k,
                    &filter,
                    ef,
                    self.config.rrf_k,
                )
                .map_err(|e| RetrievalError::Internal(e.to_string()))?,
        };
        Ok(pb::SearchResponse {
            hits: hits
                .into_iter()
                .filter_map(|(key, score)| {
                    index.entry(key).map(|entry| pb::SearchHit {
                        document_id: entry.document_id.to_string(),
                        chunk_index: entry.chunk_index,
                        text: entry.text.to_string(),
                        score,
                        metadata: entry
                            .metadata
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    })
                })
                .collect(),
        })
    }

    /// The collection's slot, (re)loaded from the rows when missing or
    /// older than the collection's generation. For a `search`, an older
    /// index is current enough while a write of this replica is under way:
    /// that write committed the newer generation and is bringing the index
    /// to it, and the search reads the state before it instead of waiting
    /// or reloading everything.
    async fn loaded(
        &self,
        collection: &collection::Model,
        search: bool,
    ) -> Result<Slot, RetrievalError> {
        let slot = self.slot(collection.id);
        let current = |index: &Option<CollectionIndex>| {
            index.as_ref().is_some_and(|index| {
                index.generation >= collection.generation || (search && self.writing(collection.id))
            })
        };
        if current(&*slot.read().await) {
            return Ok(slot);
        }
        let mut guard = slot.write().await;
        if current(&guard) {
            drop(guard);
            return Ok(slot);
        }
        // The old index goes first: its keyword writer holds the folder's
        // lock, which the reload may need.
        guard.take();
        let started = std::time::Instant::now();
        let path = self.graph_path(collection.id, collection.generation);
        // A graph saved for this generation is mapped, so the vectors need
        // not be read; if it turns out unusable, a second pass reads them.
        let try_map = self.milvus.is_none() && path.exists();
        let mut loaded = None;
        for with_vectors in [!try_map, true] {
            let dir = self.keyword_dir(collection.id);
            let budget = self.config.keyword_writer_memory_bytes;
            let (keyword, committed) =
                tokio::task::spawn_blocking(move || KeywordIndex::open(&dir, budget))
                    .await
                    .map_err(|e| RetrievalError::Internal(format!("index load task failed: {e}")))?
                    .map_err(|e| RetrievalError::Internal(e.to_string()))?;
            let index =
                store::load_index(&self.db, collection, self.params(), keyword, with_vectors)
                    .await?;
            let graph = path.clone();
            let done = tokio::task::spawn_blocking(move || {
                let (mut index, path) = (index, graph);
                let mapped = index.view_hnsw(&path);
                if !mapped && !with_vectors {
                    return Ok::<_, crate::index::IndexError>(None);
                }
                if !mapped {
                    index.ensure_hnsw()?;
                    if index.has_hnsw() {
                        if let Some(dir) = path.parent() {
                            let _ = std::fs::create_dir_all(dir);
                        }
                        if let Err(error) = index.save_hnsw(&path) {
                            tracing::warn!(%error, "cannot save the vector index; it will be rebuilt on the next load");
                        }
                    }
                }
                let rebuilt = index.sync_keyword(committed)?;
                Ok(Some((index, mapped, rebuilt)))
            })
            .await
            .map_err(|e| RetrievalError::Internal(format!("index load task failed: {e}")))?
            .map_err(|e| RetrievalError::Internal(e.to_string()))?;
            if done.is_some() {
                loaded = done;
                break;
            }
            tracing::warn!(path = %path.display(), "the saved vector index is unusable; reading the vectors to rebuild it");
        }
        let Some((index, from_disk, keyword_rebuilt)) = loaded else {
            return Err(RetrievalError::Internal(
                "collection index did not load".to_owned(),
            ));
        };
        if index.has_hnsw() {
            self.remove_graph_files(collection.id, Some(collection.generation));
        }
        if let Some(milvus) = &self.milvus {
            let dimension = usize::try_from(collection.dimension).unwrap_or(0);
            milvus
                .rebuild(collection.id, dimension, &index.rows())
                .await?;
        }
        tracing::info!(
            collection = %collection.name,
            chunks = index.len(),
            hnsw = index.has_hnsw(),
            mapped = from_disk,
            keyword_rebuilt,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded collection index"
        );
        *guard = Some(index);
        drop(guard);
        Ok(slot)
    }

    /// Saves every cached HNSW graph under its generation (shutdown), so the
    /// next start maps it instead of rebuilding.
    pub async fn persist(&self) {
        let slots: Vec<(i64, Slot)> = self
            .indexes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(id, slot)| (*id, slot.clone()))
            .collect();
        for (id, slot) in slots {
            let guard = slot.read().await;
            if let Some(index) = guard.as_ref().filter(|i| i.has_hnsw()) {
                let path = self.graph_path(id, index.generation);
                if path.exists() {
                    continue;
                }
                let _ = std::fs::create_dir_all(self.graph_dir());
                match index.save_hnsw(&path) {
                    Ok(_) => self.remove_graph_files(id, Some(index.generation)),
                    Err(error) => tracing::warn!(%error, "cannot save the vector index"),
                }
            }
        }
    }

    // === ingest ===

    pub async fn submit_ingest(
        &self,
        tenant: &str,
        request: pb::SubmitIngestRequest,
    ) -> Result<pb::IngestJob, RetrievalError> {
        let collection = self.collection(tenant, &request.collection).await?;
        self.validate_documents(&collection, &request.documents)?;
        // Parts: at most `ingest_part_documents` documents and well under
        // the stream's message size limit each.
        let max_bytes = usize::try_from(self.bus.config().max_message_bytes)
            .unwrap_or(1 << 20)
            .saturating_sub(64 * 1024)
            .max(1024);
        let mut parts: Vec<Vec<pb::Document>> = Vec::new();
        let mut current: Vec<pb::Document> = Vec::new();
        let mut current_bytes = 0;
        for doc in request.documents {
            let size = prost::Message::encoded_len(&doc) + 16;
            if !current.is_empty()
                && (current.len() >= self.config.ingest_part_documents.max(1)
                    || current_bytes + size > max_bytes)
            {
                parts.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            if size > max_bytes {
                return Err(invalid(
                    format!(
                        "documents[{}]",
                        parts.iter().map(Vec::len).sum::<usize>() + current.len()
                    ),
                    format!("{size} bytes does not fit one bus message ({max_bytes} bytes)"),
                ));
            }
            current_bytes += size;
            current.push(doc);
        }
        if !current.is_empty() {
            parts.push(current);
        }
        let total: usize = parts.iter().map(Vec::len).sum();
        let id = uuid::Uuid::now_v7().to_string();
        let now = store::now_ms();
        let job = ingest_job::Model {
            id: id.clone(),
            tenant: tenant.to_owned(),
            collection: collection.name.clone(),
            state: "queued".to_owned(),
            total_documents: i32::try_from(total).unwrap_or(i32::MAX),
            done_documents: 0,
            failed_documents: 0,
            total_parts: i32::try_from(parts.len()).unwrap_or(i32::MAX),
            done_parts: 0,
            error: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        store::create_job(&self.db, ingest_job::ActiveModel::from(job.clone())).await?;
        let subject = format!("ingest.{tenant}.{}", collection.name);
        let mut pending = Vec::new();
        for (part, documents) in parts.into_iter().enumerate() {
            let batch = pb::IngestBatch {
                job_id: id.clone(),
                collection: collection.name.clone(),
                part: u32::try_from(part).unwrap_or(u32::MAX),
                documents,
            };
            let published = self
                .bus
                .publish(subject.clone(), tenant, &format!("{id}:{part}"), &batch)
                .await;
            match published {
                Ok(ack) => pending.push(ack),
                Err(error) => return Err(self.fail_job(&id, error.to_string()).await),
            }
        }
        for ack in pending {
            if let Err(error) = ack.await {
                return Err(self.fail_job(&id, error.to_string()).await);
            }
        }
        Ok(job_view(&job))
    }

    async fn fail_job(&self, id: &str, error: String) -> RetrievalError {
        use sea_orm::EntityTrait as _;
        tracing::warn!(job = id, %error, "cannot enqueue ingest job");
        let update = ingest_job::ActiveModel {
            id: Set(id.to_owned()),
            state: Set("failed".to_owned()),
            error: Set(Some(format!("enqueue failed: {error}"))),
            updated_at_ms: Set(store::now_ms()),
            ..Default::default()
        };
        if let Err(e) = ingest_job::Entity::update(update).exec(&self.db).await {
            tracing::warn!(error = %e, "cannot mark ingest job failed");
        }
        RetrievalError::Unavailable(format!("ingest queue unavailable: {error}"))
    }

    pub async fn get_ingest_job(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<pb::IngestJob, RetrievalError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(invalid("id", "must be a job id (UUID)"));
        }
        store::get_job(&self.db, tenant, id)
            .await?
            .map(|job| job_view(&job))
            .ok_or_else(|| RetrievalError::NotFound(format!("ingest job {id} not found")))
    }

    /// Applies one part of an ingest job; idempotent (a part already
    /// recorded is skipped). `Err` only for failures worth a retry.
    pub async fn apply_part(
        &self,
        tenant: &str,
        batch: pb::IngestBatch,
    ) -> Result<(), RetrievalError> {
        let part = i32::try_from(batch.part).unwrap_or(i32::MAX);
        if store::part_done(&self.db, &batch.job_id, part).await? {
            return Ok(());
        }
        let count = i32::try_from(batch.documents.len()).unwrap_or(i32::MAX);
        let collection = match self.collection(tenant, &batch.collection).await {
            Ok(c) => c,
            Err(error @ (RetrievalError::NotFound(_) | RetrievalError::Invalid { .. })) => {
                return self
                    .record_failed(&batch.job_id, part, count, error.to_string())
                    .await;
            }
            Err(error) => return Err(error),
        };
        let validated = self.validate_documents(&collection, &batch.documents);
        let prepared = match validated {
            Ok(()) => match self
                .precheck_quota(tenant, &collection, &batch.documents)
                .await
            {
                Ok(()) => self.prepare(tenant, &collection, batch.documents).await,
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let prepared = match prepared {
            Ok((prepared, _)) => prepared,
            Err(error @ (RetrievalError::Invalid { .. } | RetrievalError::QuotaExceeded(_))) => {
                return self
                    .record_failed(&batch.job_id, part, count, error.to_string())
                    .await;
            }
            Err(error) => return Err(error),
        };
        let guard = self.lock_for_write(&collection).await?;
        let txn = self.db.begin().await?;
        let applied = match self
            .store_within_quota(&txn, tenant, collection.id, prepared)
            .await
        {
            Ok(applied) => applied,
            Err(error @ RetrievalError::QuotaExceeded(_)) => {
                txn.rollback().await?;
                drop(guard);
                return self
                    .record_failed(&batch.job_id, part, count, error.to_string())
                    .await;
            }
            Err(error) => return Err(error),
        };
        if !store::record_part(&txn, &batch.job_id, part, count, 0, None).await? {
            txn.rollback().await?;
            return Ok(());
        }
        txn.commit().await?;
        self.metrics.ingest_parts.inc();
        self.metrics
            .documents_indexed
            .inc_by(u64::from(applied.upserted));
        self.metrics
            .chunks_indexed
            .inc_by(applied.added.len() as u64);
        self.apply(&collection, guard, applied).await;
        Ok(())
    }

    pub async fn record_failed(
        &self,
        job_id: &str,
        part: i32,
        count: i32,
        error: String,
    ) -> Result<(), RetrievalError> {
        self.metrics.ingest_failures.inc();
        let txn = self.db.begin().await?;
        store::record_part(&txn, job_id, part, count, count, Some(error)).await?;
        txn.commit().await?;
        Ok(())
    }
}
