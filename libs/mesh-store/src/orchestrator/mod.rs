//! Tables owned by the orchestrator: the agent and tool registries (with
//! every applied version), tasks, and the transactional outbox of bus
//! messages.

pub mod agent;
pub mod agent_version;
pub mod api_key;
pub mod audit_entry;
mod m0003_api_keys_and_audit;
mod m0004_quotas;
mod migrations;
pub mod outbox;
pub mod task;
pub mod tenant_quota;
pub mod tool;
pub mod tool_version;

pub use migrations::Migrator;

use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait as _;

use crate::StoreError;

/// Applies pending migrations (idempotent; safe from several replicas as
/// each migration runs in a transaction where the database allows).
pub async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    Migrator::up(db, None)
        .await
        .map_err(|e| StoreError::Migrate(e.to_string()))
}
