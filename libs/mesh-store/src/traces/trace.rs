//! One trace per tenant and trace id. Every column but the id is a
//! roll-up of the trace's observations, recomputed by the writer with
//! monotone merges (min start, max end, max totals), so concurrent or
//! repeated recomputations converge on the same row.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "trc_traces")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// The root span's name, once the root has arrived.
    #[sea_orm(column_type = "Text", nullable)]
    pub name: Option<String>,
    /// `gen_ai.agent.name` of the root (or of any observation).
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub observation_count: i64,
    pub error_count: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub updated_at_ms: i64,
    /// Sum of the observations' costs, USD.
    pub total_cost_usd: f64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
