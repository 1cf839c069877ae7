//! API keys of machine clients. A key is `amk_<id>_<secret>`: the id names
//! the row (it is public: listed, used to revoke, and the audit actor
//! `apikey:<id>`); the secret is stored only as its SHA-256, never as is.
//! A revoked key stays as a row, so its id is never reissued and the audit
//! log can still name it.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orch_api_keys")]
pub struct Model {
    /// 16 lowercase hex digits (64 random bits).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant: String,
    /// What the tenant calls the key (a client's name); not unique.
    pub name: String,
    /// `viewer`, `user`, `operator` or `admin`.
    pub role: String,
    /// Lowercase hex SHA-256 of the secret part; never the secret.
    pub secret_hash: String,
    /// Who created it (a token's subject, or `apikey:<id>`).
    pub created_by: String,
    pub created_at_ms: i64,
    /// The key authenticates nothing from this instant on; None = never.
    pub expires_at_ms: Option<i64>,
    /// Set once the key is revoked.
    pub revoked_at_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
