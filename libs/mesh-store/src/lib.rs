//! Durable state of the services that own tables, with sea-orm: one module
//! per owning service (entities + migrations), and the connection helper
//! that gives SQLite under a data directory by default and PostgreSQL when
//! `DATABASE_URL` says so.
//!
//! A service uses only its own module: tables are never shared across
//! services (DESIGN.md, "Storage").

pub mod orchestrator;
pub mod retrieval;
pub mod traces;

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connect to database: {0}")]
    Connect(String),
    #[error("migrate: {0}")]
    Migrate(String),
    #[error("create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
}

/// The URL a service uses: `DATABASE_URL` when set, else a SQLite file
/// `<data_dir>/<service>.db` (created on first use).
pub fn resolve_url(
    database_url: Option<&str>,
    data_dir: &Path,
    service: &str,
) -> Result<String, StoreError> {
    if let Some(url) = database_url {
        return Ok(url.to_owned());
    }
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    Ok(format!(
        "sqlite://{}?mode=rwc",
        data_dir.join(format!("{service}.db")).display()
    ))
}

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`:
/// the write lock is taken up front, waiting out other writers under the
/// busy timeout. A deferred transaction that reads first and writes later
/// fails at once with "database is locked" (`SQLITE_BUSY_SNAPSHOT`) when
/// another connection committed in between, and no timeout helps it. On
/// PostgreSQL this is a plain `BEGIN`.
pub async fn begin_write<C: sea_orm::TransactionTrait>(
    db: &C,
) -> Result<C::Transaction, sea_orm::DbErr> {
    db.begin_with_options(sea_orm::TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Opens a pool. SQLite gets WAL mode and a busy timeout so the outbox
/// relay and request handlers can write concurrently.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, StoreError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .map_err(|e| StoreError::Connect(e.to_string()))?;
    if url.starts_with("sqlite:") {
        use sea_orm::ConnectionTrait as _;
        for pragma in [
            "PRAGMA journal_mode=WAL",
            "PRAGMA synchronous=NORMAL",
            "PRAGMA busy_timeout=5000",
        ] {
            db.execute_unprepared(pragma)
                .await
                .map_err(|e| StoreError::Connect(e.to_string()))?;
        }
    }
    Ok(db)
}
