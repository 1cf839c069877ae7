//! Schema of the trace-collector's tables. Migrations are append-only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTables),
            Box::new(AddCost),
            Box::new(AddApiKeys),
            Box::new(AddScores),
            Box::new(AddContent),
            Box::new(AddStartNanos),
        ]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        "trc_seaql_migrations".into_iden()
    }
}

#[derive(DeriveMigrationName)]
struct CreateTables;

#[derive(DeriveIden)]
enum TrcTraces {
    Table,
    Id,
    Tenant,
    TraceId,
    Name,
    Agent,
    SessionId,
    UserId,
    StartMs,
    EndMs,
    ObservationCount,
    ErrorCount,
    InputTokens,
    OutputTokens,
    UpdatedAtMs,
    TotalCostUsd,
}

#[derive(DeriveIden)]
enum TrcObservations {
    Table,
    Id,
    Tenant,
    TraceId,
    SpanId,
    ParentSpanId,
    Name,
    Kind,
    StartMs,
    EndMs,
    StatusCode,
    StatusMessage,
    Level,
    Model,
    InputTokens,
    OutputTokens,
    Agent,
    SessionId,
    UserId,
    Attributes,
    InputCostUsd,
    OutputCostUsd,
    TotalCostUsd,
    CompletionStartMs,
    Input,
    Output,
    StartNs,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrcTraces::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TrcTraces::Id))
                    .col(string_len(TrcTraces::Tenant, 63))
                    .col(string_len(TrcTraces::TraceId, 32))
                    .col(text_null(TrcTraces::Name))
                    .col(string_null(TrcTraces::Agent))
                    .col(string_null(TrcTraces::SessionId))
                    .col(string_null(TrcTraces::UserId))
                    .col(big_integer(TrcTraces::StartMs))
                    .col(big_integer(TrcTraces::EndMs))
                    .col(big_integer(TrcTraces::ObservationCount))
                    .col(big_integer(TrcTraces::ErrorCount))
                    .col(big_integer(TrcTraces::InputTokens))
                    .col(big_integer(TrcTraces::OutputTokens))
                    .col(big_integer(TrcTraces::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("trc_traces_key")
                    .table(TrcTraces::Table)
                    .col(TrcTraces::Tenant)
                    .col(TrcTraces::TraceId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The list query: one tenant, newest first.
        manager
            .create_index(
                Index::create()
                    .name("trc_traces_tenant_start")
                    .table(TrcTraces::Table)
                    .col(TrcTraces::Tenant)
                    .col(TrcTraces::StartMs)
                    .col(TrcTraces::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(TrcObservations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TrcObservations::Id))
                    .col(string_len(TrcObservations::Tenant, 63))
                    .col(string_len(TrcObservations::TraceId, 32))
                    .col(string_len(TrcObservations::SpanId, 16))
                    .col(string_len(TrcObservations::ParentSpanId, 16))
                    .col(text(TrcObservations::Name))
                    .col(string_len(TrcObservations::Kind, 32))
                    .col(big_integer(TrcObservations::StartMs))
                    .col(big_integer(TrcObservations::EndMs))
                    .col(string_len(TrcObservations::StatusCode, 16))
                    .col(text_null(TrcObservations::StatusMessage))
                    .col(string_len(TrcObservations::Level, 16))
                    .col(string_null(TrcObservations::Model))
                    .col(big_integer(TrcObservations::InputTokens))
                    .col(big_integer(TrcObservations::OutputTokens))
                    .col(string_null(TrcObservations::Agent))
                    .col(string_null(TrcObservations::SessionId))
                    .col(string_null(TrcObservations::UserId))
                    .col(json(TrcObservations::Attributes))
                    .to_owned(),
            )
            .await?;
        // Idempotency: a span delivered twice is one row.
        manager
            .create_index(
                Index::create()
                    .name("trc_observations_key")
                    .table(TrcObservations::Table)
                    .col(TrcObservations::Tenant)
                    .col(TrcObservations::TraceId)
                    .col(TrcObservations::SpanId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TrcObservations::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(TrcTraces::Table).to_owned())
            .await
    }
}

/// Cost in USD, computed by the writer from the model price table: per
/// generation (null when the model has no price) and rolled up per trace.
struct AddCost;

// Named by hand: `DeriveMigrationName` names a migration after its file,
// and this file holds more than one.
impl MigrationName for AddCost {
    fn name(&self) -> &str {
        "m0002_add_cost"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCost {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds a single column per statement.
        for column in [
            TrcObservations::InputCostUsd,
            TrcObservations::OutputCostUsd,
            TrcObservations::TotalCostUsd,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TrcObservations::Table)
                        .add_column(double_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(TrcTraces::Table)
                    .add_column(double(TrcTraces::TotalCostUsd).default(0.0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TrcTraces::Table)
                    .drop_column(TrcTraces::TotalCostUsd)
                    .to_owned(),
            )
            .await?;
        for column in [
            TrcObservations::InputCostUsd,
            TrcObservations::OutputCostUsd,
            TrcObservations::TotalCostUsd,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TrcObservations::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum TrcApiKeys {
    Table,
    Id,
    Tenant,
    PublicKey,
    SecretHash,
    CreatedAtMs,
    RevokedAtMs,
}

/// Key pairs of the Langfuse-compatible endpoint (secrets hashed).
struct AddApiKeys;

impl MigrationName for AddApiKeys {
    fn name(&self) -> &str {
        "m0003_add_api_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddApiKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrcApiKeys::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TrcApiKeys::Id))
                    .col(string_len(TrcApiKeys::Tenant, 63))
                    .col(string_len(TrcApiKeys::PublicKey, 64))
                    .col(string_len(TrcApiKeys::SecretHash, 64))
                    .col(big_integer(TrcApiKeys::CreatedAtMs))
                    .col(big_integer_null(TrcApiKeys::RevokedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("trc_api_keys_public_key")
                    .table(TrcApiKeys::Table)
                    .col(TrcApiKeys::PublicKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TrcApiKeys::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum TrcScores {
    Table,
    Id,
    Tenant,
    TraceId,
    SpanId,
    Name,
    NumericValue,
    StringValue,
    Comment,
    CreatedAtMs,
}

/// Scores on traces and observations.
struct AddScores;

impl MigrationName for AddScores {
    fn name(&self) -> &str {
        "m0004_add_scores"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddScores {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TrcScores::Table)
                    .if_not_exists()
                    .col(big_pk_auto(TrcScores::Id))
                    .col(string_len(TrcScores::Tenant, 63))
                    .col(string_len(TrcScores::TraceId, 32))
                    .col(string_len_null(TrcScores::SpanId, 16))
                    .col(text(TrcScores::Name))
                    .col(double_null(TrcScores::NumericValue))
                    .col(text_null(TrcScores::StringValue))
                    .col(text_null(TrcScores::Comment))
                    .col(big_integer(TrcScores::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        // Read with their trace; deleted with it by retention.
        manager
            .create_index(
                Index::create()
                    .name("trc_scores_trace")
                    .table(TrcScores::Table)
                    .col(TrcScores::Tenant)
                    .col(TrcScores::TraceId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TrcScores::Table).to_owned())
            .await
    }
}

/// Time of the first token and the recorded content (prompt, completion,
/// tool arguments and result) of an observation.
struct AddContent;

impl MigrationName for AddContent {
    fn name(&self) -> &str {
        "m0005_add_content"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddContent {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per ALTER: SQLite adds a single column per statement.
        for column in [
            big_integer_null(TrcObservations::CompletionStartMs),
            json_null(TrcObservations::Input),
            json_null(TrcObservations::Output),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TrcObservations::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            TrcObservations::CompletionStartMs,
            TrcObservations::Input,
            TrcObservations::Output,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(TrcObservations::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// The start of an observation in nanoseconds since the epoch, as OTLP sent
/// it: siblings that start within the same millisecond (a generation and the
/// tool call right after it) keep their order in the trace tree.
struct AddStartNanos;

impl MigrationName for AddStartNanos {
    fn name(&self) -> &str {
        "m0006_add_start_nanos"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddStartNanos {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TrcObservations::Table)
                    .add_column(big_integer_null(TrcObservations::StartNs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(TrcObservations::Table)
                    .drop_column(TrcObservations::StartNs)
                    .to_owned(),
            )
            .await
    }
}
