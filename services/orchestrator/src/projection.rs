//! Projects EVENTS into task rows through the durable consumer
//! `orchestrator-projection`. Transitions are monotonic (queued -> running
//! -> one terminal status) and applied with conditional updates, so
//! redelivered, duplicated or reordered events cannot move a task back.
//! Deltas are not stored per token: the final output arrives with the
//! completed event.

use futures::StreamExt as _;
use mesh_bus::{Bus, Delivery, StreamKind};
use mesh_proto::{TaskEvent, TaskStatus, task_event::Kind};
use mesh_store::orchestrator::task;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ProjectionConfig;
use crate::convert::now_ms;
use crate::metrics::Metrics;

/// Durable consumer name (deploy contract: KEDA scales the orchestrator on
/// its lag).
pub const CONSUMER: &str = "orchestrator-projection";

pub struct Projector {
    db: DatabaseConnection,
    bus: Bus,
    config: ProjectionConfig,
    metrics: Metrics,
    /// Told when a task ends (its slot is free) or a held session task
    /// joins the admission queue.
    admission: crate::admission::Admission,
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("{0}")]
    Bus(#[from] mesh_bus::BusError),
    #[error("pull from EVENTS: {0}")]
    Pull(String),
}

const ACTIVE: [&str; 3] = ["queued", "running", "awaiting_approval"];

impl Projector {
    pub fn new(
        db: DatabaseConnection,
        bus: Bus,
        config: ProjectionConfig,
        metrics: Metrics,
        admission: crate::admission::Admission,
    ) -> Self {
        Self {
            db,
            bus,
            config,
            metrics,
            admission,
        }
    }

    pub async fn run(self, stop: CancellationToken) -> Result<(), ProjectionError> {
        let consumer = self
            .bus
            .ensure_durable(
                StreamKind::Events,
                CONSUMER,
                async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(CONSUMER.to_owned()),
                    filter_subject: "events.>".to_owned(),
                    ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: std::time::Duration::from_secs(30),
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(self.config.concurrency.max(1))
            .messages()
            .await
            .map_err(|e| ProjectionError::Pull(e.to_string()))?;
        // Lanes: events of one task go to one lane (by subject) and are
        // applied in stream order; tasks in different lanes apply at once.
        // So a reader that sees a task finished also sees its start.
        let lanes = self.config.concurrency.max(1);
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..lanes)
            .map(|_| tokio::sync::mpsc::channel::<async_nats::jetstream::Message>(64))
            .unzip();
        let this = &self;
        let workers = futures::future::join_all(receivers.into_iter().map(|mut lane| async move {
            while let Some(message) = lane.recv().await {
                this.handle(message).await;
            }
        }));
        let dispatch = async move {
            let mut messages = std::pin::pin!(messages.take_until(stop.cancelled()));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(message) => {
                        let lane = lane_of(&message.subject, lanes);
                        if senders[lane].send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(error) => tracing::warn!(%error, "events pull error"),
                }
            }
            // Dropping the senders lets every lane drain and end.
        };
        futures::future::join(dispatch, workers).await;
        Ok(())
    }

    async fn handle(&self, message: async_nats::jetstream::Message) {
        let delivery = match Delivery::<TaskEvent>::decode(message) {
            Ok(d) => d,
            Err(undecodable) => {
                let (message, error) = *undecodable;
                tracing::error!(%error, "dead-lettering undecodable event");
                if let Err(e) =
                    mesh_bus::dead_letter_raw(&self.bus, &message, &error.to_string()).await
                {
                    tracing::warn!(error = %e, "dead-letter failed; event will be redelivered");
                }
                return;
            }
        };
        match self.apply(&delivery).await {
            Ok(()) => {
                self.metrics.events_projected.inc();
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "ack failed; event will be redelivered");
                }
            }
            // A lane applies its events in order, so an event that keeps
            // failing (not a store outage: that ends) would hold its lane;
            // after `max_attempts` it goes to the DLQ with the error.
            Err(error) if delivery.delivered >= self.config.max_attempts => {
                tracing::error!(%error, attempts = delivery.delivered, "event cannot be projected; dead-lettering it");
                if let Err(e) = delivery.dead_letter(&self.bus, &error.to_string()).await {
                    tracing::warn!(error = %e, "dead-letter failed; event will be redelivered");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "projecting event failed; retrying");
                let _ = delivery
                    .nak_after(std::time::Duration::from_millis(500))
                    .await;
            }
        }
    }

    async fn apply(&self, delivery: &Delivery<TaskEvent>) -> Result<(), DbErr> {
        let event = &delivery.payload;
        // The header is authoritative: a payload naming another tenant is
        // ignored rather than allowed to touch that tenant's rows.
        if event.tenant != delivery.tenant {
            tracing::warn!(header = %delivery.tenant, payload = %event.tenant, "tenant mismatch; event ignored");
            return Ok(());
        }
        let Ok(id) = Uuid::parse_str(&event.task_id) else {
            tracing::warn!(task_id = %event.task_id, "event for a malformed task id ignored");
            return Ok(());
        };
        let Some(kind) = &event.kind else {
            return Ok(());
        };
        let now = now_ms();
        let seq = i64::try_from(delivery.stream_sequence).unwrap_or(i64::MAX);
        let update = task::Entity::update_many()
            .filter(task::Column::Id.eq(id))
            .filter(task::Column::Tenant.eq(&delivery.tenant))
            .col_expr(task::Column::UpdatedAtMs, Expr::value(now));
        let (update, finished) = match kind {
            Kind::Delta(_)
            | Kind::Retrying(_)
            | Kind::ToolCall(_)
            | Kind::ToolResult(_)
            | Kind::ApprovalResolved(_) => {
                return Ok(());
            }
            Kind::ApprovalRequested(requested) => {
                let approval = requested.approval.clone().unwrap_or_default();
                // From queued too: this task's `started` may be projected
                // after this event (events of a task apply concurrently).
                (
                    update
                        .filter(task::Column::Status.is_in(["queued", "running"]))
                        .col_expr(
                            task::Column::Status,
                            Expr::value(TaskStatus::AwaitingApproval.rest_name()),
                        )
                        .col_expr(
                            task::Column::Approval,
                            Expr::value(Some(crate::convert::approval_to_json(&approval))),
                        )
                        .col_expr(
                            task::Column::ApprovalExpiresAtMs,
                            Expr::value(Some(approval.expires_at_ms)),
                        ),
                    None,
                )
            }
            Kind::ModelStep(step) => {
                let step = i32::try_from(step.step).unwrap_or(i32::MAX);
                (
                    update
                        .filter(task::Column::Steps.lt(step))
                        .col_expr(task::Column::Steps, Expr::value(step)),
                    None,
                )
            }
            Kind::Started(started) => {
                // Events of one task may be applied concurrently, so a
                // `completed` can land before its `started`. The attempt
                // count and start time are recorded whatever the status
                // (monotonically); only the status change needs it active.
                let attempt = i32::try_from(started.attempt).unwrap_or(i32::MAX);
                task::Entity::update_many()
                    .filter(task::Column::Id.eq(id))
                    .filter(task::Column::Tenant.eq(&delivery.tenant))
                    .filter(task::Column::Attempts.lt(attempt))
                    .col_expr(task::Column::Attempts, Expr::value(attempt))
                    .col_expr(
                        task::Column::StartedAtMs,
                        Expr::col(task::Column::StartedAtMs).if_null(now),
                    )
                    .exec(&self.db)
                    .await?;
                (
                    update
                        .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
                        .col_expr(
                            task::Column::Status,
                            Expr::value(TaskStatus::Running.rest_name()),
                        ),
                    None,
                )
            }
            Kind::CancelRequested(_) => (
                update
                    .filter(task::Column::Status.is_in(ACTIVE))
                    .col_expr(task::Column::CancelRequested, Expr::value(true)),
                None,
            ),
            Kind::Completed(done) => {
                let usage = done.usage.unwrap_or_default();
                (
                    update
                        .col_expr(task::Column::Output, Expr::value(done.output.clone()))
                        .col_expr(
                            task::Column::InputTokens,
                            Expr::value(i64::try_from(usage.input_tokens).unwrap_or(i64::MAX)),
                        )
                        .col_expr(
                            task::Column::OutputTokens,
                            Expr::value(i64::try_from(usage.output_tokens).unwrap_or(i64::MAX)),
                        ),
                    Some(TaskStatus::Succeeded),
                )
            }
            Kind::Failed(failed) => (
                update.col_expr(task::Column::Error, Expr::value(Some(failed.error.clone()))),
                Some(TaskStatus::Failed),
            ),
            Kind::Cancelled(_) => (update, Some(TaskStatus::Cancelled)),
        };
        let update = match finished {
            Some(status) => update
                .filter(task::Column::Status.is_in(ACTIVE))
                .col_expr(task::Column::Status, Expr::value(status.rest_name()))
                .col_expr(task::Column::FinishedAtMs, Expr::value(Some(now)))
                .col_expr(
                    task::Column::Approval,
                    Expr::value(Option::<serde_json::Value>::None),
                )
                .col_expr(
                    task::Column::ApprovalExpiresAtMs,
                    Expr::value(Option::<i64>::None),
                )
                .col_expr(task::Column::LastEventSeq, Expr::value(seq)),
            None => update,
        };
        let result = update.exec(&self.db).await?;
        if let Some(status) = finished
            && result.rows_affected > 0
        {
            self.metrics
                .tasks_finished
                .get_or_create(&vec![("status".to_owned(), status.rest_name().to_owned())])
                .inc();
        }
        if finished.is_some() {
            // Also on a redelivered terminal event (rows_affected 0): the
            // release is idempotent and must not be lost to a crash between
            // the update above and this one.
            self.release_session_successor(&delivery.tenant, id).await?;
        }
        Ok(())
    }

    /// A task ended: its agent's dispatch window has a free slot (the
    /// admission pass is idempotent, so a redelivered event is harmless).
    /// And the `enqueue` concurrency policy: the oldest task of the session
    /// held back at submission joins the admission queue, unless another
    /// task of the session is still in progress.
    async fn release_session_successor(&self, tenant: &str, finished: Uuid) -> Result<(), DbErr> {
        let Some(done) = task::Entity::find_by_id(finished)
            .filter(task::Column::Tenant.eq(tenant))
            .one(&self.db)
            .await?
        else {
            return Ok(());
        };
        self.admission.poke(&done.agent);
        if done.session_id.is_empty() {
            return Ok(());
        }
        let txn = mesh_store::begin_write(&self.db).await?;
        crate::convert::lock_session(&txn, tenant, &done.agent, &done.session_id).await?;
        let session = task::Entity::find()
            .filter(task::Column::Tenant.eq(tenant))
            .filter(task::Column::Agent.eq(&done.agent))
            .filter(task::Column::SessionId.eq(&done.session_id))
            .filter(task::Column::Status.is_in(ACTIVE))
            .order_by_asc(task::Column::Id)
            .all(&txn)
            .await?;
        if session.iter().any(|t| t.pending_envelope.is_none()) {
            return Ok(()); // one is dispatched or running: it releases the next
        }
        let Some(next) = session.into_iter().next() else {
            return Ok(());
        };
        if next.pending_envelope.is_none() {
            return Ok(());
        }
        // Conditional: of two projectors releasing at once, one wins. The
        // admission pass dispatches it from its stored envelope.
        let claimed = task::Entity::update_many()
            .filter(task::Column::Id.eq(next.id))
            .filter(task::Column::PendingEnvelope.is_not_null())
            .col_expr(
                task::Column::PendingEnvelope,
                Expr::value(Option::<Vec<u8>>::None),
            )
            .col_expr(task::Column::AdmissionPending, Expr::value(true))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Ok(());
        }
        txn.commit().await?;
        self.admission.poke(&next.agent);
        tracing::info!(task_id = %next.id, session_id = %done.session_id, "released the next task of the session");
        Ok(())
    }
}

/// The lane of a subject: a stable hash, so a task's events share one.
fn lane_of(subject: &str, lanes: usize) -> usize {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    subject.hash(&mut hasher);
    (hasher.finish() % lanes as u64) as usize
}
