//! One chunk of a document with its embedding (little-endian f32s). The
//! row id is the key of the chunk in the vector and keyword indexes.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "ret_chunks")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub collection_id: i64,
    /// `ret_documents.id` of the document the chunk belongs to.
    pub document_id: i64,
    pub chunk_index: i32,
    #[sea_orm(column_type = "Text")]
    pub text: String,
    #[sea_orm(column_type = "VarBinary(StringLen::None)")]
    pub embedding: Vec<u8>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
