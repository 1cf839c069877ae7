//! Schema of the orchestrator's tables. Migrations are append-only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTables),
            Box::new(ToolsAndSessions),
            Box::new(super::m0003_api_keys_and_audit::ApiKeysAndAudit),
            Box::new(super::m0004_quotas::Quotas),
        ]
    }

    fn migration_table_name() -> sea_orm::DynIden {
        "orch_seaql_migrations".into_iden()
    }
}

#[derive(DeriveMigrationName)]
struct CreateTables;

#[derive(DeriveIden)]
enum OrchAgents {
    Table,
    Id,
    Tenant,
    Name,
    Version,
    Spec,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum OrchAgentVersions {
    Table,
    Id,
    Tenant,
    Name,
    Version,
    Spec,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum OrchTasks {
    Table,
    Id,
    Tenant,
    Agent,
    AgentVersion,
    Input,
    Status,
    Output,
    Error,
    InputTokens,
    OutputTokens,
    Attempts,
    CancelRequested,
    LastEventSeq,
    CreatedAtMs,
    UpdatedAtMs,
    StartedAtMs,
    FinishedAtMs,
}

#[derive(DeriveIden)]
enum OrchOutbox {
    Table,
    Id,
    Tenant,
    Subject,
    MsgId,
    Payload,
    Traceparent,
    CreatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrchAgents::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchAgents::Id))
                    .col(string_len(OrchAgents::Tenant, 63))
                    .col(string_len(OrchAgents::Name, 63))
                    .col(big_integer(OrchAgents::Version))
                    .col(json(OrchAgents::Spec))
                    .col(big_integer(OrchAgents::CreatedAtMs))
                    .col(big_integer(OrchAgents::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orch_agents_tenant_name")
                    .table(OrchAgents::Table)
                    .col(OrchAgents::Tenant)
                    .col(OrchAgents::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrchAgentVersions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchAgentVersions::Id))
                    .col(string_len(OrchAgentVersions::Tenant, 63))
                    .col(string_len(OrchAgentVersions::Name, 63))
                    .col(big_integer(OrchAgentVersions::Version))
                    .col(json(OrchAgentVersions::Spec))
                    .col(big_integer(OrchAgentVersions::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orch_agent_versions_key")
                    .table(OrchAgentVersions::Table)
                    .col(OrchAgentVersions::Tenant)
                    .col(OrchAgentVersions::Name)
                    .col(OrchAgentVersions::Version)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrchTasks::Table)
                    .if_not_exists()
                    .col(uuid(OrchTasks::Id).primary_key())
                    .col(string_len(OrchTasks::Tenant, 63))
                    .col(string_len(OrchTasks::Agent, 63))
                    .col(big_integer(OrchTasks::AgentVersion))
                    .col(text(OrchTasks::Input))
                    .col(string_len(OrchTasks::Status, 16))
                    .col(text(OrchTasks::Output))
                    .col(text_null(OrchTasks::Error))
                    .col(big_integer(OrchTasks::InputTokens))
                    .col(big_integer(OrchTasks::OutputTokens))
                    .col(integer(OrchTasks::Attempts))
                    .col(boolean(OrchTasks::CancelRequested))
                    .col(big_integer(OrchTasks::LastEventSeq))
                    .col(big_integer(OrchTasks::CreatedAtMs))
                    .col(big_integer(OrchTasks::UpdatedAtMs))
                    .col(big_integer_null(OrchTasks::StartedAtMs))
                    .col(big_integer_null(OrchTasks::FinishedAtMs))
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            (
                "orch_tasks_tenant_id",
                vec![OrchTasks::Tenant, OrchTasks::Id],
            ),
            (
                "orch_tasks_tenant_agent_status",
                vec![OrchTasks::Tenant, OrchTasks::Agent, OrchTasks::Status],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(OrchTasks::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(OrchOutbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchOutbox::Id))
                    .col(string_len(OrchOutbox::Tenant, 63))
                    .col(string_len(OrchOutbox::Subject, 255))
                    .col(string_len(OrchOutbox::MsgId, 128))
                    .col(blob(OrchOutbox::Payload))
                    .col(text(OrchOutbox::Traceparent))
                    .col(big_integer(OrchOutbox::CreatedAtMs))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OrchOutbox::Table.into_iden(),
            OrchTasks::Table.into_iden(),
            OrchAgentVersions::Table.into_iden(),
            OrchAgents::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}

/// The tool registry, and the session and step count of a task.
struct ToolsAndSessions;

// Named by hand: the derive names a migration after its file, and this
// file holds more than one.
impl MigrationName for ToolsAndSessions {
    fn name(&self) -> &str {
        "m0002_tools_and_sessions"
    }
}

#[derive(DeriveIden)]
enum OrchTools {
    Table,
    Id,
    Tenant,
    Name,
    Version,
    Spec,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum OrchToolVersions {
    Table,
    Id,
    Tenant,
    Name,
    Version,
    Spec,
    CreatedAtMs,
}

#[derive(DeriveIden)]
enum OrchTaskSessions {
    #[sea_orm(iden = "orch_tasks")]
    Table,
    SessionId,
    Steps,
    PendingEnvelope,
    Envelope,
    Approval,
    ApprovalExpiresAtMs,
    IdempotencyKey,
    ParentTaskId,
    Depth,
    Tenant,
    Agent,
    Status,
}

#[async_trait::async_trait]
impl MigrationTrait for ToolsAndSessions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrchTools::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchTools::Id))
                    .col(string_len(OrchTools::Tenant, 63))
                    .col(string_len(OrchTools::Name, 64))
                    .col(big_integer(OrchTools::Version))
                    .col(json(OrchTools::Spec))
                    .col(big_integer(OrchTools::CreatedAtMs))
                    .col(big_integer(OrchTools::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orch_tools_key")
                    .table(OrchTools::Table)
                    .col(OrchTools::Tenant)
                    .col(OrchTools::Name)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrchToolVersions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchToolVersions::Id))
                    .col(string_len(OrchToolVersions::Tenant, 63))
                    .col(string_len(OrchToolVersions::Name, 64))
                    .col(big_integer(OrchToolVersions::Version))
                    .col(json(OrchToolVersions::Spec))
                    .col(big_integer(OrchToolVersions::CreatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("orch_tool_versions_key")
                    .table(OrchToolVersions::Table)
                    .col(OrchToolVersions::Tenant)
                    .col(OrchToolVersions::Name)
                    .col(OrchToolVersions::Version)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for column in [
            string_len(OrchTaskSessions::SessionId, 128)
                .default("")
                .to_owned(),
            integer(OrchTaskSessions::Steps).default(0).to_owned(),
            blob_null(OrchTaskSessions::PendingEnvelope).to_owned(),
            blob_null(OrchTaskSessions::Envelope).to_owned(),
            json_null(OrchTaskSessions::Approval).to_owned(),
            big_integer_null(OrchTaskSessions::ApprovalExpiresAtMs).to_owned(),
            string_len_null(OrchTaskSessions::IdempotencyKey, 255).to_owned(),
            string_len(OrchTaskSessions::ParentTaskId, 36)
                .default("")
                .to_owned(),
            integer(OrchTaskSessions::Depth).default(0).to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrchTaskSessions::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // `awaiting_approval` is 17 characters. SQLite does not enforce
        // VARCHAR lengths (and cannot alter a column); PostgreSQL does.
        if manager.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrchTaskSessions::Table)
                        .modify_column(string_len(OrchTaskSessions::Status, 32))
                        .to_owned(),
                )
                .await?;
        }
        // One task per (tenant, idempotency key); NULL keys do not collide.
        manager
            .create_index(
                Index::create()
                    .name("orch_tasks_idempotency")
                    .table(OrchTaskSessions::Table)
                    .col(OrchTaskSessions::Tenant)
                    .col(OrchTaskSessions::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The approval sweeper asks "which waits have expired?".
        manager
            .create_index(
                Index::create()
                    .name("orch_tasks_approval_expiry")
                    .table(OrchTaskSessions::Table)
                    .col(OrchTaskSessions::ApprovalExpiresAtMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The concurrency policy asks "is a task of this session running?".
        manager
            .create_index(
                Index::create()
                    .name("orch_tasks_session")
                    .table(OrchTaskSessions::Table)
                    .col(OrchTaskSessions::Tenant)
                    .col(OrchTaskSessions::Agent)
                    .col(OrchTaskSessions::SessionId)
                    .col(OrchTaskSessions::Status)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in [
            "orch_tasks_session",
            "orch_tasks_approval_expiry",
            "orch_tasks_idempotency",
        ] {
            manager
                .drop_index(
                    Index::drop()
                        .name(index)
                        .table(OrchTaskSessions::Table)
                        .to_owned(),
                )
                .await?;
        }
        for column in [
            OrchTaskSessions::SessionId,
            OrchTaskSessions::Steps,
            OrchTaskSessions::PendingEnvelope,
            OrchTaskSessions::Envelope,
            OrchTaskSessions::Approval,
            OrchTaskSessions::ApprovalExpiresAtMs,
            OrchTaskSessions::IdempotencyKey,
            OrchTaskSessions::ParentTaskId,
            OrchTaskSessions::Depth,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrchTaskSessions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        for table in [
            OrchToolVersions::Table.into_iden(),
            OrchTools::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
