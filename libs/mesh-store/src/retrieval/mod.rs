//! Tables owned by the retrieval service: collections (per tenant), their
//! documents (text and metadata as sent), the chunks each document was split
//! into with their embeddings, and ingest jobs with the parts already
//! applied (so a redelivered part is never indexed twice).
//!
//! These rows are the source of truth: the vector and keyword indexes are
//! derived from the chunks and may be rebuilt from them at any time.

pub mod chunk;
pub mod collection;
pub mod document;
pub mod ingest_job;
pub mod ingest_part;
mod migrations;

pub use migrations::Migrator;

use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;

use crate::StoreError;

/// Applies pending migrations (idempotent).
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    Migrator::up(db, None)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))
}
