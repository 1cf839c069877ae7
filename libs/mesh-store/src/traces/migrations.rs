//! Schema of the trace-collector's tables. Migrations are append-only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables)]
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
