//! Per-tenant quotas and the admission queue: the overrides table, and on
//! each task whether it waits for admission plus the trace context of its
//! submitter (an admitted task is published later, by whichever replica
//! admits it, and must still continue the submitter's trace).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Quotas;

impl MigrationName for Quotas {
    fn name(&self) -> &str {
        "m0004_quotas"
    }
}

#[derive(DeriveIden)]
enum OrchTenantQuotas {
    Table,
    Tenant,
    MaxRunningTasks,
    TasksPerMinute,
    Weight,
    UpdatedAtMs,
    UpdatedBy,
}

#[derive(DeriveIden)]
enum OrchTasks {
    Table,
    AdmissionPending,
    Traceparent,
    Agent,
    Status,
    Tenant,
    CreatedAtMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Quotas {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(OrchTenantQuotas::Table)
                    .if_not_exists()
                    .col(string_len(OrchTenantQuotas::Tenant, 63).primary_key())
                    .col(integer_null(OrchTenantQuotas::MaxRunningTasks))
                    .col(integer_null(OrchTenantQuotas::TasksPerMinute))
                    .col(integer_null(OrchTenantQuotas::Weight))
                    .col(big_integer(OrchTenantQuotas::UpdatedAtMs))
                    .col(string_len(OrchTenantQuotas::UpdatedBy, 255))
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for column in [
            boolean(OrchTasks::AdmissionPending)
                .default(false)
                .to_owned(),
            text_null(OrchTasks::Traceparent).to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrchTasks::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // Admission asks "how many tasks of this agent are dispatched, and
        // who waits?"; the rate quota asks "how many did this tenant submit
        // in the last minute?".
        for (name, cols) in [
            (
                "orch_tasks_admission",
                vec![
                    OrchTasks::Agent,
                    OrchTasks::Status,
                    OrchTasks::AdmissionPending,
                ],
            ),
            (
                "orch_tasks_tenant_created",
                vec![OrchTasks::Tenant, OrchTasks::CreatedAtMs],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(OrchTasks::Table).if_not_exists();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for index in ["orch_tasks_tenant_created", "orch_tasks_admission"] {
            manager
                .drop_index(Index::drop().name(index).table(OrchTasks::Table).to_owned())
                .await?;
        }
        for column in [OrchTasks::AdmissionPending, OrchTasks::Traceparent] {
            manager
                .alter_table(
                    Table::alter()
                        .table(OrchTasks::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(OrchTenantQuotas::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
