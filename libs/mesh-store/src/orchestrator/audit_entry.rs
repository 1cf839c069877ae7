//! The audit log: one row per change to a tenant's agents, tools, API keys
//! and quotas, written in the same transaction as the change. Rows are
//! only ever inserted; the id orders them (and is the page cursor).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orch_audit_log")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    pub at_ms: i64,
    /// A token's subject, `apikey:<id>`, or `system`.
    pub actor: String,
    /// `apply`, `create`, `revoke`, `delete`, `set`, ...
    pub action: String,
    /// `agent`, `tool`, `api_key`, `quota`, ...
    pub resource_kind: String,
    pub resource_name: String,
    /// The resource's version after the change, where it has versions.
    pub resource_version: Option<i64>,
    /// A short JSON detail; never a secret.
    pub detail: Json,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
