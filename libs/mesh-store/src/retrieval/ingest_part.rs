//! A part of an ingest job that has been applied; unique per job and part,
//! written in the same transaction as the part's documents, so a
//! redelivered part is recognised and skipped.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ret_ingest_parts")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub job_id: String,
    pub part: i32,
    pub documents: i32,
    pub failed: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
