//! A document as the caller sent it. `content_hash` covers text and
//! metadata, so an upsert of the same content changes nothing.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ret_documents")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collection_id: i64,
    /// The caller's id; unique per collection.
    pub doc_id: String,
    #[sea_orm(column_type = "Text")]
    pub text: String,
    /// JSON object of string values.
    #[sea_orm(column_type = "Text")]
    pub metadata: String,
    pub content_hash: String,
    pub chunk_count: i32,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
