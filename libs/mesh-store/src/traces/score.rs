//! Scores (evaluations, user feedback) attached to a trace or to one of
//! its observations. A score may arrive before its trace: it is keyed by
//! tenant and trace id, never by a foreign key.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "trc_scores")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The observation scored (16 lowercase hex digits); null for the trace.
    pub span_id: Option<String>,
    pub name: String,
    /// Exactly one of the two values is set.
    pub numeric_value: Option<f64>,
    #[sea_orm(column_type = "Text", nullable)]
    pub string_value: Option<String>,
    #[sea_orm(column_type = "Text", nullable)]
    pub comment: Option<String>,
    pub created_at_ms: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
