//! A tenant's quota overrides; a NULL column (or no row) means the
//! orchestrator's default (`AGENTMESH_ORCHESTRATOR_TENANT_*`).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orch_tenant_quotas")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant: String,
    /// Tasks dispatched to workers and not finished, across agents.
    pub max_running_tasks: Option<i32>,
    /// Task submissions per sliding minute.
    pub tasks_per_minute: Option<i32>,
    /// Share of an agent's dispatch window against other tenants.
    pub weight: Option<i32>,
    pub updated_at_ms: i64,
    /// Subject of the token that last changed the row.
    pub updated_by: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
