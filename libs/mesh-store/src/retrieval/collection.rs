//! A collection of one tenant: its embedding model, dimension and chunking.
//! `generation` grows on every change to its documents, so a replica can
//! tell that its in-memory index is stale.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ret_collections")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    /// Unique per tenant.
    pub name: String,
    pub embedding_model: String,
    pub dimension: i32,
    pub chunk_tokens: i32,
    pub overlap_tokens: i32,
    pub generation: i64,
    pub created_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
