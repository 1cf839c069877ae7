//! Publishes one task's events. Deltas are pipelined (their acks are
//! collected, not awaited one by one). The terminal event follows them on
//! the same connection, so the stream stores it after them; its outcome is
//! reported only once every earlier ack is in, so a failed delta is never
//! silently behind a successful finish.

use async_nats::jetstream::context::PublishAckFuture;
use mesh_bus::{Bus, BusError, names};
use mesh_proto::{TaskEvent, task_event::Kind};

pub struct TaskEvents {
    bus: Bus,
    tenant: String,
    task_id: String,
    subject: String,
    pending: tokio::sync::Mutex<Vec<PublishAckFuture>>,
}

/// Whether a terminal publish was the first for its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    Recorded,
    /// Another terminal event was there first (e.g. a cancel while queued).
    AlreadyFinished,
}

impl TaskEvents {
    pub fn new(bus: Bus, tenant: &str, task_id: &str) -> Result<Self, BusError> {
        Ok(Self {
            subject: names::event_subject(tenant, task_id)?,
            bus,
            tenant: tenant.to_owned(),
            task_id: task_id.to_owned(),
            pending: Default::default(),
        })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn event(&self, kind: Kind) -> TaskEvent {
        TaskEvent {
            task_id: self.task_id.clone(),
            tenant: self.tenant.clone(),
            at_ms: now_ms(),
            kind: Some(kind),
        }
    }

    /// A non-terminal event; `key` makes its `Nats-Msg-Id` unique per task.
    pub async fn publish(&self, key: &str, kind: Kind) -> Result<(), BusError> {
        let msg_id = format!("{}:{key}", self.task_id);
        let ack = self
            .bus
            .publish(
                self.subject.clone(),
                &self.tenant,
                &msg_id,
                &self.event(kind),
            )
            .await?;
        self.pending.lock().await.push(ack);
        Ok(())
    }

    /// Waits for the acks of everything published so far.
    pub async fn flush(&self) -> Result<(), BusError> {
        let pending = std::mem::take(&mut *self.pending.lock().await);
        for ack in pending {
            ack.await.map_err(|e| BusError::Publish {
                subject: self.subject.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The task's one terminal event (completed, failed or cancelled).
    pub async fn finish(&self, kind: Kind) -> Result<Terminal, BusError> {
        self.flush().await?;
        let msg_id = format!("{}:terminal", self.task_id);
        let ack = self
            .bus
            .publish_acked(
                self.subject.clone(),
                &self.tenant,
                &msg_id,
                &self.event(kind),
            )
            .await?;
        Ok(if ack.duplicate {
            Terminal::AlreadyFinished
        } else {
            Terminal::Recorded
        })
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
