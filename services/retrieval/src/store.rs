//! Reads and writes on the retrieval tables. Every write that changes a
//! collection's documents bumps its `generation` in the same transaction
//! and returns what changed, so the caller can apply the same change to
//! its in-memory index (or notice that another writer got there first).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_store::retrieval::{chunk, collection, document, ingest_job, ingest_part};
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
    TransactionTrait as _,
};
use sha2::Digest as _;

use crate::index::{ChunkEntry, CollectionIndex, Filter, HnswParams, NewChunk};
use crate::keyword::KeywordIndex;

/// Ids per `IN (...)` list: far under every backend's parameter limit.
const IN_BATCH: usize = 500;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A document ready to store: validated, chunked and embedded.
#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub doc_id: String,
    pub text: String,
    pub metadata: BTreeMap<String, String>,
    pub hash: String,
    pub chunks: Vec<(String, Vec<f32>)>,
}

/// The content hash of a document as sent (text, metadata, vector).
pub fn content_hash(text: &str, metadata: &BTreeMap<String, String>, vector: &[f32]) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(text.as_bytes());
    hasher.update([0u8]);
    for (k, v) in metadata {
        hasher.update(k.as_bytes());
        hasher.update([1u8]);
        hasher.update(v.as_bytes());
        hasher.update([2u8]);
    }
    for x in vector {
        hasher.update(x.to_le_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// What one write changed.
#[derive(Default)]
pub struct Applied {
    /// The collection's generation after the write (0: nothing changed).
    pub generation: i64,
    pub removed: Vec<u64>,
    pub added: Vec<NewChunk>,
    pub upserted: u32,
    /// Of `upserted`, documents that were not stored before.
    pub inserted: u32,
    pub unchanged: u32,
    pub deleted: u32,
}

pub async fn find_collection(
    db: &impl ConnectionTrait,
    tenant: &str,
    name: &str,
) -> Result<Option<collection::Model>, DbErr> {
    collection::Entity::find()
        .filter(collection::Column::Tenant.eq(tenant))
        .filter(collection::Column::Name.eq(name))
        .one(db)
        .await
}

/// Inserts a collection; `Ok(None)` when the tenant already has one by
/// that name.
pub async fn create_collection(
    db: &DatabaseConnection,
    model: collection::ActiveModel,
) -> Result<Option<collection::Model>, DbErr> {
    match collection::Entity::insert(model).exec(db).await {
        Ok(done) => {
            collection::Entity::find_by_id(done.last_insert_id)
                .one(db)
                .await
        }
        Err(error) => match error.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Ok(None),
            _ => Err(error),
        },
    }
}

pub async fn list_collections(
    db: &DatabaseConnection,
    tenant: &str,
) -> Result<Vec<collection::Model>, DbErr> {
    collection::Entity::find()
        .filter(collection::Column::Tenant.eq(tenant))
        .order_by_asc(collection::Column::Name)
        .all(db)
        .await
}

/// (documents, chunks) of a collection.
pub async fn counts(db: &DatabaseConnection, collection_id: i64) -> Result<(u64, u64), DbErr> {
    let documents = document::Entity::find()
        .filter(document::Column::CollectionId.eq(collection_id))
        .count(db)
        .await?;
    let chunks = chunk::Entity::find()
        .filter(chunk::Column::CollectionId.eq(collection_id))
        .count(db)
        .await?;
    Ok((documents, chunks))
}

/// Deletes a collection with its documents and chunks; false when the
/// tenant has no such collection.
pub async fn delete_collection(
    db: &DatabaseConnection,
    tenant: &str,
    name: &str,
) -> Result<Option<i64>, DbErr> {
    let txn = db.begin().await?;
    let Some(found) = find_collection(&txn, tenant, name).await? else {
        return Ok(None);
    };
    chunk::Entity::delete_many()
        .filter(chunk::Column::CollectionId.eq(found.id))
        .exec(&txn)
        .await?;
    document::Entity::delete_many()
        .filter(document::Column::CollectionId.eq(found.id))
        .exec(&txn)
        .await?;
    collection::Entity::delete_by_id(found.id)
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Some(found.id))
}

async fn bump_generation(db: &impl ConnectionTrait, collection_id: i64) -> Result<i64, DbErr> {
    collection::Entity::update_many()
        .col_expr(
            collection::Column::Generation,
            Expr::col(collection::Column::Generation).add(1),
        )
        .filter(collection::Column::Id.eq(collection_id))
        .exec(db)
        .await?;
    let generation: Option<i64> = collection::Entity::find_by_id(collection_id)
        .select_only()
        .column(collection::Column::Generation)
        .into_tuple()
        .one(db)
        .await?;
    generation.ok_or_else(|| DbErr::RecordNotFound("collection deleted concurrently".to_owned()))
}

/// Content hashes of the stored documents among `ids`.
pub async fn stored_hashes(
    db: &impl ConnectionTrait,
    collection_id: i64,
    ids: &[String],
) -> Result<HashMap<String, String>, DbErr> {
    let mut out = HashMap::new();
    for batch in ids.chunks(IN_BATCH) {
        let rows: Vec<(String, String)> = document::Entity::find()
            .select_only()
            .column(document::Column::DocId)
            .column(document::Column::ContentHash)
            .filter(document::Column::CollectionId.eq(collection_id))
            .filter(document::Column::DocId.is_in(batch.iter().cloned()))
            .into_tuple()
            .all(db)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

fn parse_metadata(json: &str) -> BTreeMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Removes the chunks of the given document rows; returns their keys.
async fn remove_chunks_of(
    db: &impl ConnectionTrait,
    document_ids: &[i64],
) -> Result<Vec<u64>, DbErr> {
    let mut removed = Vec::new();
    for batch in document_ids.chunks(IN_BATCH) {
        let ids: Vec<i64> = chunk::Entity::find()
            .select_only()
            .column(chunk::Column::Id)
            .filter(chunk::Column::DocumentId.is_in(batch.iter().copied()))
            .into_tuple()
            .all(db)
            .await?;
        chunk::Entity::delete_many()
            .filter(chunk::Column::DocumentId.is_in(batch.iter().copied()))
            .exec(db)
            .await?;
        removed.extend(ids.into_iter().map(|id| id as u64));
    }
    Ok(removed)
}

/// Stores documents (replacing the chunks of changed ones) inside `txn`;
/// a document whose hash is already stored is left alone.
pub async fn upsert_documents(
    txn: &impl ConnectionTrait,
    collection_id: i64,
    documents: Vec<PreparedDocument>,
) -> Result<Applied, DbErr> {
    let ids: Vec<String> = documents.iter().map(|d| d.doc_id.clone()).collect();
    let stored = stored_hashes(txn, collection_id, &ids).await?;
    let mut applied = Applied::default();
    let now = now_ms();
    for doc in documents {
        if stored.get(&doc.doc_id) == Some(&doc.hash) {
            applied.unchanged += 1;
            continue;
        }
        let existing = document::Entity::find()
            .filter(document::Column::CollectionId.eq(collection_id))
            .filter(document::Column::DocId.eq(doc.doc_id.as_str()))
            .one(txn)
            .await?;
        let metadata_json = serde_json::to_string(&doc.metadata).unwrap_or_else(|_| "{}".into());
        let chunk_count = i32::try_from(doc.chunks.len()).unwrap_or(i32::MAX);
        let document_row = match existing {
            Some(row) => {
                applied
                    .removed
                    .extend(remove_chunks_of(txn, &[row.id]).await?);
                document::Entity::update_many()
                    .col_expr(document::Column::Text, Expr::value(doc.text.clone()))
                    .col_expr(document::Column::Metadata, Expr::value(metadata_json))
                    .col_expr(document::Column::ContentHash, Expr::value(doc.hash.clone()))
                    .col_expr(document::Column::ChunkCount, Expr::value(chunk_count))
                    .col_expr(document::Column::UpdatedAtMs, Expr::value(now))
                    .filter(document::Column::Id.eq(row.id))
                    .exec(txn)
                    .await?;
                row.id
            }
            None => {
                applied.inserted += 1;
                document::Entity::insert(document::ActiveModel {
                    id: NotSet,
                    collection_id: Set(collection_id),
                    doc_id: Set(doc.doc_id.clone()),
                    text: Set(doc.text.clone()),
                    metadata: Set(metadata_json),
                    content_hash: Set(doc.hash.clone()),
                    chunk_count: Set(chunk_count),
                    updated_at_ms: Set(now),
                })
                .exec(txn)
                .await?
                .last_insert_id
            }
        };
        let document_id: Arc<str> = doc.doc_id.as_str().into();
        let metadata = Arc::new(doc.metadata);
        for (index, (text, vector)) in doc.chunks.into_iter().enumerate() {
            let chunk_index = i32::try_from(index).unwrap_or(i32::MAX);
            let key = chunk::Entity::insert(chunk::ActiveModel {
                id: NotSet,
                collection_id: Set(collection_id),
                document_id: Set(document_row),
                chunk_index: Set(chunk_index),
                text: Set(text.clone()),
                embedding: Set(encode_vector(&vector)),
            })
            .exec(txn)
            .await?
            .last_insert_id;
            applied.added.push(NewChunk {
                key: key as u64,
                entry: ChunkEntry {
                    document_id: document_id.clone(),
                    chunk_index: index as u32,
                    text: text.into(),
                    metadata: metadata.clone(),
                },
                vector,
            });
        }
        applied.upserted += 1;
    }
    if applied.upserted > 0 {
        applied.generation = bump_generation(txn, collection_id).await?;
    }
    Ok(applied)
}

/// Documents stored by a tenant across its collections.
pub async fn tenant_documents(db: &impl ConnectionTrait, tenant: &str) -> Result<u64, DbErr> {
    let collections: Vec<i64> = collection::Entity::find()
        .select_only()
        .column(collection::Column::Id)
        .filter(collection::Column::Tenant.eq(tenant))
        .into_tuple()
        .all(db)
        .await?;
    let mut total = 0;
    for batch in collections.chunks(IN_BATCH) {
        total += document::Entity::find()
            .filter(document::Column::CollectionId.is_in(batch.iter().copied()))
            .count(db)
            .await?;
    }
    Ok(total)
}

pub async fn get_document(
    db: &DatabaseConnection,
    collection_id: i64,
    doc_id: &str,
) -> Result<Option<(document::Model, BTreeMap<String, String>)>, DbErr> {
    Ok(document::Entity::find()
        .filter(document::Column::CollectionId.eq(collection_id))
        .filter(document::Column::DocId.eq(doc_id))
        .one(db)
        .await?
        .map(|row| {
            let metadata = parse_metadata(&row.metadata);
            (row, metadata)
        }))
}

/// Deletes documents by id, or those whose metadata match `filter`.
pub async fn delete_documents(
    db: &DatabaseConnection,
    collection_id: i64,
    ids: &[String],
    filter: &Filter,
) -> Result<Applied, DbErr> {
    let txn = db.begin().await?;
    let mut rows: Vec<i64> = Vec::new();
    if ids.is_empty() {
        let all: Vec<(i64, String)> = document::Entity::find()
            .select_only()
            .column(document::Column::Id)
            .column(document::Column::Metadata)
            .filter(document::Column::CollectionId.eq(collection_id))
            .into_tuple()
            .all(&txn)
            .await?;
        rows.extend(
            all.into_iter()
                .filter(|(_, metadata)| filter.matches(&parse_metadata(metadata)))
                .map(|(id, _)| id),
        );
    } else {
        for batch in ids.chunks(IN_BATCH) {
            let found: Vec<i64> = document::Entity::find()
                .select_only()
                .column(document::Column::Id)
                .filter(document::Column::CollectionId.eq(collection_id))
                .filter(document::Column::DocId.is_in(batch.iter().cloned()))
                .into_tuple()
                .all(&txn)
                .await?;
            rows.extend(found);
        }
    }
    let mut applied = Applied::default();
    if rows.is_empty() {
        return Ok(applied);
    }
    applied.removed = remove_chunks_of(&txn, &rows).await?;
    for batch in rows.chunks(IN_BATCH) {
        document::Entity::delete_many()
            .filter(document::Column::Id.is_in(batch.iter().copied()))
            .exec(&txn)
            .await?;
    }
    applied.deleted = u32::try_from(rows.len()).unwrap_or(u32::MAX);
    applied.generation = bump_generation(&txn, collection_id).await?;
    txn.commit().await?;
    Ok(applied)
}

/// A document's id and metadata, shared by its chunks in the index.
type DocInfo = (Arc<str>, Arc<BTreeMap<String, String>>);

/// Builds a collection's index from its rows, around its keyword index
/// (which the caller then syncs). Without `with_vectors` the embeddings
/// are not read (a saved graph will be mapped; the chunks get no vector).
pub async fn load_index(
    db: &DatabaseConnection,
    collection: &collection::Model,
    params: HnswParams,
    keyword: KeywordIndex,
    with_vectors: bool,
) -> Result<CollectionIndex, DbErr> {
    let docs: Vec<(i64, String, String)> = document::Entity::find()
        .select_only()
        .column(document::Column::Id)
        .column(document::Column::DocId)
        .column(document::Column::Metadata)
        .filter(document::Column::CollectionId.eq(collection.id))
        .into_tuple()
        .all(db)
        .await?;
    let docs: HashMap<i64, DocInfo> = docs
        .into_iter()
        .map(|(id, doc_id, metadata)| (id, (doc_id.into(), Arc::new(parse_metadata(&metadata)))))
        .collect();
    let dimension = usize::try_from(collection.dimension).unwrap_or(0);
    let mut index = CollectionIndex::new(dimension, params, collection.generation, keyword);
    let mut after = 0i64;
    let mut pending = Vec::new();
    loop {
        let query = chunk::Entity::find()
            .select_only()
            .column(chunk::Column::Id)
            .column(chunk::Column::DocumentId)
            .column(chunk::Column::ChunkIndex)
            .column(chunk::Column::Text)
            .filter(chunk::Column::CollectionId.eq(collection.id))
            .filter(chunk::Column::Id.gt(after))
            .order_by_asc(chunk::Column::Id)
            .limit(5000);
        let rows: Vec<(i64, i64, i32, String, Vec<u8>)> = if with_vectors {
            query
                .column(chunk::Column::Embedding)
                .into_tuple()
                .all(db)
                .await?
        } else {
            let rows: Vec<(i64, i64, i32, String)> = query.into_tuple().all(db).await?;
            rows.into_iter()
                .map(|(id, doc, index, text)| (id, doc, index, text, Vec::new()))
                .collect()
        };
        let Some(last) = rows.last() else { break };
        after = last.0;
        for (id, document_id, chunk_index, text, embedding) in rows {
            let Some((doc_id, metadata)) = docs.get(&document_id) else {
                continue;
            };
            pending.push(NewChunk {
                key: id as u64,
                entry: ChunkEntry {
                    document_id: doc_id.clone(),
                    chunk_index: u32::try_from(chunk_index).unwrap_or(0),
                    text: text.into(),
                    metadata: metadata.clone(),
                },
                vector: decode_vector(&embedding),
            });
        }
    }
    // The graph is built (or loaded from disk) by the caller, once.
    index.add_without_graph(pending);
    Ok(index)
}

// === ingest jobs ===

pub async fn create_job(
    db: &DatabaseConnection,
    job: ingest_job::ActiveModel,
) -> Result<(), DbErr> {
    ingest_job::Entity::insert(job).exec(db).await?;
    Ok(())
}

pub async fn get_job(
    db: &DatabaseConnection,
    tenant: &str,
    id: &str,
) -> Result<Option<ingest_job::Model>, DbErr> {
    ingest_job::Entity::find_by_id(id.to_owned())
        .filter(ingest_job::Column::Tenant.eq(tenant))
        .one(db)
        .await
}

pub async fn part_done(db: &impl ConnectionTrait, job_id: &str, part: i32) -> Result<bool, DbErr> {
    Ok(ingest_part::Entity::find()
        .filter(ingest_part::Column::JobId.eq(job_id))
        .filter(ingest_part::Column::Part.eq(part))
        .count(db)
        .await?
        > 0)
}

/// Records an applied part and advances its job (inside the caller's
/// transaction, with the part's documents). False when the part was
/// already recorded: the caller rolls back and acks.
pub async fn record_part(
    txn: &impl ConnectionTrait,
    job_id: &str,
    part: i32,
    documents: i32,
    failed: i32,
    error: Option<String>,
) -> Result<bool, DbErr> {
    let inserted = ingest_part::Entity::insert(ingest_part::ActiveModel {
        id: NotSet,
        job_id: Set(job_id.to_owned()),
        part: Set(part),
        documents: Set(documents),
        failed: Set(failed),
    })
    .exec(txn)
    .await;
    if let Err(error) = inserted {
        return match error.sql_err() {
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => Ok(false),
            _ => Err(error),
        };
    }
    let mut update = ingest_job::Entity::update_many()
        .col_expr(
            ingest_job::Column::DoneDocuments,
            Expr::col(ingest_job::Column::DoneDocuments).add(documents),
        )
        .col_expr(
            ingest_job::Column::FailedDocuments,
            Expr::col(ingest_job::Column::FailedDocuments).add(failed),
        )
        .col_expr(
            ingest_job::Column::DoneParts,
            Expr::col(ingest_job::Column::DoneParts).add(1),
        )
        .col_expr(ingest_job::Column::UpdatedAtMs, Expr::value(now_ms()));
    if let Some(error) = error {
        update = update.col_expr(ingest_job::Column::Error, Expr::value(Some(error)));
    }
    update
        .filter(ingest_job::Column::Id.eq(job_id))
        .exec(txn)
        .await?;
    // The state follows the counts: running until every part is in.
    let job = ingest_job::Entity::find_by_id(job_id.to_owned())
        .one(txn)
        .await?;
    if let Some(job) = job {
        let state = if job.done_parts < job.total_parts {
            "running"
        } else if job.failed_documents > 0 {
            "failed"
        } else {
            "succeeded"
        };
        ingest_job::Entity::update_many()
            .col_expr(ingest_job::Column::State, Expr::value(state))
            .filter(ingest_job::Column::Id.eq(job_id))
            .exec(txn)
            .await?;
    }
    Ok(true)
}
