//! A task's event stream for SSE and gRPC watch: an ordered (ephemeral)
//! consumer on EVENTS filtered to `events.<tenant>.<task_id>`, replaying
//! from the start (or after a given sequence) and then following live,
//! ending after the terminal event.

use futures::{Stream, StreamExt as _};
use mesh_bus::{Bus, StreamKind, names};
use mesh_proto::TaskEvent;
use prost::Message as _;

use crate::error::ApiError;
use mesh_runtime::ErrorCode;

/// Yields `(stream sequence, event)` in order until the terminal event.
pub async fn task_events(
    bus: &Bus,
    task: &mesh_proto::Task,
    after_seq: u64,
) -> Result<impl Stream<Item = Result<(u64, TaskEvent), ApiError>> + use<>, ApiError> {
    let (tenant, task_id) = (task.tenant.as_str(), task.id.as_str());
    let status = mesh_proto::TaskStatus::try_from(task.status).unwrap_or_default();
    if status.is_terminal() {
        let subject =
            names::event_subject(tenant, task_id).map_err(|e| ApiError::invalid("id", e))?;
        let history = bus
            .last_message_on(StreamKind::Events, &subject)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "event stream unavailable");
                ApiError::new(ErrorCode::Unavailable, "the event stream is unavailable")
            })?;
        if history.is_none() {
            // The events aged out of EVENTS: answer with the stored outcome
            // (sequence 0) instead of waiting for events that will not come.
            let event = final_event_from(task, status);
            return Ok(futures::future::Either::Left(futures::stream::iter([Ok(
                (0, event),
            )])));
        }
    }
    live_events(bus, tenant, task_id, after_seq)
        .await
        .map(futures::future::Either::Right)
}

/// The terminal event a finished task's row implies.
fn final_event_from(task: &mesh_proto::Task, status: mesh_proto::TaskStatus) -> TaskEvent {
    use mesh_proto::task_event::Kind;
    let kind = match status {
        mesh_proto::TaskStatus::Succeeded => Kind::Completed(mesh_proto::TaskCompleted {
            output: task.output.clone(),
            usage: task.usage,
            ..Default::default()
        }),
        mesh_proto::TaskStatus::Failed => Kind::Failed(mesh_proto::TaskFailed {
            error: task.error.clone(),
            attempts: task.attempts,
            ..Default::default()
        }),
        _ => Kind::Cancelled(mesh_proto::TaskCancelled {
            reason: "cancelled".to_owned(),
        }),
    };
    TaskEvent {
        task_id: task.id.clone(),
        tenant: task.tenant.clone(),
        at_ms: task.finished_at_ms.unwrap_or(task.updated_at_ms),
        kind: Some(kind),
    }
}

async fn live_events(
    bus: &Bus,
    tenant: &str,
    task_id: &str,
    after_seq: u64,
) -> Result<impl Stream<Item = Result<(u64, TaskEvent), ApiError>> + use<>, ApiError> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
    let subject = names::event_subject(tenant, task_id).map_err(|e| ApiError::invalid("id", e))?;
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "event stream unavailable");
        ApiError::new(ErrorCode::Unavailable, "the event stream is unavailable")
    };
    let stream = bus
        .jetstream()
        .get_stream(StreamKind::Events.name())
        .await
        .map_err(|e| unavailable(&e))?;
    let deliver_policy = if after_seq == 0 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: after_seq + 1,
        }
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let decoded = messages.map(|message| {
        let message = message.map_err(|e| {
            tracing::warn!(error = %e, "event stream broke");
            ApiError::new(ErrorCode::Unavailable, "the event stream broke")
        })?;
        let seq = message
            .info()
            .map(|i| i.stream_sequence)
            .unwrap_or_default();
        let event = TaskEvent::decode(message.payload.clone()).map_err(|e| {
            ApiError::new(
                ErrorCode::Internal,
                format!("undecodable event at {seq}: {e}"),
            )
        })?;
        Ok((seq, event))
    });
    // Yield up to and including the terminal event (or an error), then end
    // without waiting for another message.
    let events = futures::stream::unfold(
        (Box::pin(decoded), false),
        |(mut inner, ended)| async move {
            if ended {
                return None;
            }
            let item = inner.next().await?;
            let ends = match &item {
                Ok((_, event)) => event.kind.as_ref().is_some_and(|k| k.is_terminal()),
                Err(_) => true,
            };
            Some((item, (inner, ends)))
        },
    );
    Ok(events)
}
