//! Tasks whose last delivery died with its worker. A worker dead-letters a
//! task itself when a delivery it runs fails for the last time; but when
//! the worker process dies during the last allowed delivery, nobody is
//! left to do it. JetStream then announces the message on the
//! MAX_DELIVERIES advisory and keeps it in the work queue. This watcher
//! (one per replica, in a queue group so one handles each advisory) marks
//! the task failed with the reason, copies the message to DLQ and removes
//! it from TASKS. Every step is idempotent, so a repeated advisory or a
//! worker that did finish first changes nothing.

use futures::StreamExt as _;
use mesh_bus::{
    Bus, HEADER_DLQ_DELIVERIES, HEADER_DLQ_REASON, HEADER_DLQ_SUBJECT, HEADER_MSG_ID,
    HEADER_TENANT, StreamKind, names,
};
use mesh_proto::{TaskEnvelope, TaskEvent, TaskFailed, task_event::Kind};
use prost::Message as _;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::control::terminal_msg_id;
use crate::convert::now_ms;

const ADVISORY: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.TASKS.*";
const QUEUE_GROUP: &str = "orchestrator-max-deliveries";
pub const REASON: &str = "max_deliveries";

#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("subscribe to max-deliveries advisories: {0}")]
    Subscribe(String),
}

pub async fn watch(bus: Bus, stop: CancellationToken) -> Result<(), WatchError> {
    let mut advisories = bus
        .client()
        .queue_subscribe(ADVISORY, QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| WatchError::Subscribe(e.to_string()))?;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            message = advisories.next() => match message {
                Some(message) => message,
                None => return Ok(()),
            },
        };
        let advisory: MaxDeliveries = match serde_json::from_slice(&message.payload) {
            Ok(advisory) => advisory,
            Err(error) => {
                tracing::warn!(%error, "unreadable max-deliveries advisory");
                continue;
            }
        };
        if let Err(error) = handle(&bus, &advisory).await {
            // The message stays in TASKS; the next advisory or an operator
            // looking at the consumer finds it.
            tracing::error!(error = %error, consumer = %advisory.consumer, seq = advisory.stream_seq, "cannot dead-letter task");
        }
    }
}

async fn handle(bus: &Bus, advisory: &MaxDeliveries) -> Result<(), mesh_bus::BusError> {
    if advisory.stream != StreamKind::Tasks.name() {
        return Ok(());
    }
    let stream_err = |e: &dyn std::fmt::Display| mesh_bus::BusError::Stream {
        stream: "TASKS".to_owned(),
        message: e.to_string(),
    };
    let stream = bus
        .jetstream()
        .get_stream(StreamKind::Tasks.name())
        .await
        .map_err(|e| stream_err(&e))?;
    let Ok(message) = stream.get_raw_message(advisory.stream_seq).await else {
        // Already acked or removed: nothing left to do.
        return Ok(());
    };
    let tenant = message
        .headers
        .get(HEADER_TENANT)
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let reason = format!(
        "gave up after {} deliveries: the worker stopped during the last one",
        advisory.deliveries
    );
    if let Ok(envelope) = TaskEnvelope::decode(message.payload.clone())
        && envelope.tenant == tenant
        && let Ok(subject) = names::event_subject(&tenant, &envelope.task_id)
    {
        let event = TaskEvent {
            task_id: envelope.task_id.clone(),
            tenant: tenant.clone(),
            at_ms: now_ms(),
            kind: Some(Kind::Failed(TaskFailed {
                error: reason.clone(),
                reason: REASON.to_owned(),
                attempts: u32::try_from(advisory.deliveries).unwrap_or(u32::MAX),
            })),
        };
        bus.publish_acked(
            subject,
            &tenant,
            &terminal_msg_id(&envelope.task_id),
            &event,
        )
        .await?;
    }
    let mut headers = message.headers.clone();
    headers.insert(
        HEADER_MSG_ID,
        format!("dlq:TASKS:{}", advisory.stream_seq).as_str(),
    );
    headers.insert(HEADER_DLQ_REASON, REASON);
    headers.insert(
        HEADER_DLQ_DELIVERIES,
        advisory.deliveries.to_string().as_str(),
    );
    headers.insert(HEADER_DLQ_SUBJECT, message.subject.as_str());
    bus.publish_raw(
        names::dlq_subject(message.subject.as_str()),
        headers,
        message.payload.clone(),
    )
    .await?
    .await
    .map_err(|e| stream_err(&e))?;
    stream
        .delete_message(advisory.stream_seq)
        .await
        .map_err(|e| stream_err(&e))?;
    tracing::warn!(consumer = %advisory.consumer, seq = advisory.stream_seq, "dead-lettered a task whose worker died on its last delivery");
    Ok(())
}
