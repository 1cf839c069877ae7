//! API key pairs of the Langfuse-compatible ingest endpoint: a public key
//! names the pair, the secret is stored only as its SHA-256 (secrets are
//! 256 random bits, so an unsalted digest cannot be brute-forced). A
//! revoked key stays as a row so its public key is never reissued.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "trc_api_keys")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    /// `pk-am-` and 32 hex digits; unique.
    pub public_key: String,
    /// Lowercase hex SHA-256 of the secret key; never the secret.
    pub secret_hash: String,
    pub created_at_ms: i64,
    /// Set once the key is revoked; it then authenticates nothing.
    pub revoked_at_ms: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
