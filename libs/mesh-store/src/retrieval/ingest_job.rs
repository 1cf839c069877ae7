//! An ingest job: a batch accepted by `SubmitIngest` and indexed by the
//! `retrieval-ingest` consumer, part by part.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ret_ingest_jobs")]
pub struct Model {
    /// UUID v7.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant: String,
    pub collection: String,
    /// `queued`, `running`, `succeeded`, `failed`.
    pub state: String,
    pub total_documents: i32,
    pub done_documents: i32,
    pub failed_documents: i32,
    pub total_parts: i32,
    pub done_parts: i32,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
