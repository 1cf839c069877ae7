//! API keys of machine clients and the audit log of changes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct ApiKeysAndAudit;

impl MigrationName for ApiKeysAndAudit {
    fn name(&self) -> &str {
        "m0003_api_keys_and_audit"
    }
}

#[derive(DeriveIden)]
enum OrchApiKeys {
    Table,
    Id,
    Tenant,
    Name,
    Role,
    SecretHash,
    CreatedBy,
    CreatedAtMs,
    ExpiresAtMs,
    RevokedAtMs,
}

#[derive(DeriveIden)]
enum OrchAuditLog {
    Table,
    Id,
    Tenant,
    AtMs,
    Actor,
    Action,
    ResourceKind,
    ResourceName,
    ResourceVersion,
    Detail,
}

#[async_trait::async_trait]
impl MigrationTrait for ApiKeysAndAudit {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrchApiKeys::Table)
                    .if_not_exists()
                    .col(string_len(OrchApiKeys::Id, 32).primary_key())
                    .col(string_len(OrchApiKeys::Tenant, 63))
                    .col(string_len(OrchApiKeys::Name, 128))
                    .col(string_len(OrchApiKeys::Role, 16))
                    .col(string_len(OrchApiKeys::SecretHash, 64))
                    .col(string_len(OrchApiKeys::CreatedBy, 255))
                    .col(big_integer(OrchApiKeys::CreatedAtMs))
                    .col(big_integer_null(OrchApiKeys::ExpiresAtMs))
                    .col(big_integer_null(OrchApiKeys::RevokedAtMs))
                    .to_owned(),
            )
            .await?;
        // Listing a tenant's keys.
        manager
            .create_index(
                Index::create()
                    .name("orch_api_keys_tenant")
                    .table(OrchApiKeys::Table)
                    .col(OrchApiKeys::Tenant)
                    .col(OrchApiKeys::CreatedAtMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrchAuditLog::Table)
                    .if_not_exists()
                    .col(big_pk_auto(OrchAuditLog::Id))
                    .col(string_len(OrchAuditLog::Tenant, 63))
                    .col(big_integer(OrchAuditLog::AtMs))
                    .col(string_len(OrchAuditLog::Actor, 255))
                    .col(string_len(OrchAuditLog::Action, 32))
                    .col(string_len(OrchAuditLog::ResourceKind, 32))
                    .col(string_len(OrchAuditLog::ResourceName, 255))
                    .col(big_integer_null(OrchAuditLog::ResourceVersion))
                    .col(json(OrchAuditLog::Detail))
                    .to_owned(),
            )
            .await?;
        // Pages of one tenant's log, newest first, optionally of one kind.
        for (name, cols) in [
            (
                "orch_audit_log_tenant_id",
                vec![OrchAuditLog::Tenant, OrchAuditLog::Id],
            ),
            (
                "orch_audit_log_tenant_kind_id",
                vec![
                    OrchAuditLog::Tenant,
                    OrchAuditLog::ResourceKind,
                    OrchAuditLog::Id,
                ],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(OrchAuditLog::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            OrchAuditLog::Table.into_iden(),
            OrchApiKeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
