//! Tasks and their projected state. Ids are UUIDv7, so ordering by id is
//! ordering by submission time (the list cursor relies on it).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "orch_tasks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub tenant: String,
    pub agent: String,
    pub agent_version: i64,
    #[sea_orm(column_type = "Text")]
    pub input: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    #[sea_orm(column_type = "Text")]
    pub output: String,
    #[sea_orm(column_type = "Text", nullable)]
    pub error: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub attempts: i32,
    pub cancel_requested: bool,
    /// Highest EVENTS sequence projected into this row; older or repeated
    /// events are ignored, which makes the projection idempotent.
    pub last_event_seq: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// The conversation the task continues; "" when none.
    pub session_id: String,
    /// Model calls the worker journaled (the highest step seen).
    pub steps: i32,
    /// The encoded TaskEnvelope of a task held back by its session's
    /// `enqueue` policy; it goes to the outbox (and this turns NULL) when
    /// the session's running task ends.
    pub pending_envelope: Option<Vec<u8>>,
    /// The encoded TaskEnvelope as submitted: a task resumed after an
    /// approval is dispatched again from it.
    pub envelope: Option<Vec<u8>>,
    /// The pending approval (`mesh_proto::PendingApproval` as JSON) while
    /// the task is `awaiting_approval`.
    pub approval: Option<Json>,
    pub approval_expires_at_ms: Option<i64>,
    /// The submitter's idempotency key (unique per tenant).
    pub idempotency_key: Option<String>,
    /// The task whose `agent` tool started this one; "" for none.
    pub parent_task_id: String,
    /// Nesting of sub-tasks (0: submitted by a client).
    pub depth: i32,
    /// True while the task waits in the admission queue (accepted, not yet
    /// released to TASKS): over its tenant's running quota, or its agent's
    /// dispatch window is full.
    pub admission_pending: bool,
    /// The submitter's W3C trace context (`key=value` lines), so a task
    /// released later still continues the submitter's trace.
    #[sea_orm(column_type = "Text", nullable)]
    pub traceparent: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
