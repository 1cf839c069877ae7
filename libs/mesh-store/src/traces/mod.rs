//! Tables owned by the trace-collector: traces (one row per tenant and
//! trace id, with totals rolled up from its observations) and observations
//! (one row per span). The tree is never stored: it is built at query time
//! from parent span ids, so spans may arrive in any order. Also: scores
//! on traces and observations, and the API keys of the Langfuse-compatible
//! ingest endpoint.

pub mod api_key;
mod migrations;
pub mod observation;
pub mod score;
pub mod trace;

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
