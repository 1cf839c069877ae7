//! One observation per span (unique on tenant, trace id, span id), typed
//! the way Langfuse types them (`span`, `generation`, `event`, `agent`,
//! `tool`, `retriever`, `embedding`, ...).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "trc_observations")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub tenant: String,
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    #[sea_orm(column_type = "Text")]
    pub name: String,
    /// Langfuse observation type.
    pub kind: String,
    pub start_ms: i64,
    /// The start in nanoseconds since the epoch, which orders siblings that
    /// start in the same millisecond; null on rows stored before m0006.
    pub start_ns: Option<i64>,
    pub end_ms: i64,
    /// OTLP status code: `unset`, `ok`, `error`.
    pub status_code: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub status_message: Option<String>,
    /// `DEFAULT` or `ERROR`.
    pub level: String,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// `gen_ai.agent.name`.
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// Span attributes (resource attributes under `resource`), as JSON.
    pub attributes: Json,
    /// USD, from the price table at write time; null when unpriced.
    pub input_cost_usd: Option<f64>,
    pub output_cost_usd: Option<f64>,
    pub total_cost_usd: Option<f64>,
    /// When the first token arrived (Langfuse `completionStartTime`), ms
    /// since the epoch; null when not recorded.
    pub completion_start_ms: Option<i64>,
    /// Prompt / tool arguments and completion / tool result, as JSON; null
    /// unless the sender recorded content.
    pub input: Option<Json>,
    pub output: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
