//! A decoded delivery from a pull consumer and what a handler can answer:
//! ack, in progress, nak with a delay, term, or dead-letter.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use mesh_telemetry::TraceContext;

use crate::{
    Bus, BusError, HEADER_DLQ_DELIVERIES, HEADER_DLQ_REASON, HEADER_DLQ_SUBJECT, HEADER_MSG_ID,
    HEADER_TENANT, names,
};

#[derive(Debug, thiserror::Error)]
#[error("undecodable message on {subject}: {reason}")]
pub struct DecodeError {
    pub subject: String,
    pub reason: String,
}

/// A message that is not a valid delivery, with why; boxed because a
/// JetStream message is large and this is the cold path.
pub type Undecodable = Box<(jetstream::Message, DecodeError)>;

/// One delivery of a `T` from JetStream.
pub struct Delivery<T> {
    pub payload: T,
    /// From the `agentmesh-tenant` header.
    pub tenant: String,
    /// 1 on the first delivery.
    pub delivered: u32,
    pub stream_sequence: u64,
    /// The producer's trace context, to parent the handler's span.
    pub parent: TraceContext,
    message: jetstream::Message,
}

impl<T> std::fmt::Debug for Delivery<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.message.subject.as_str())
            .field("tenant", &self.tenant)
            .field("delivered", &self.delivered)
            .field("stream_sequence", &self.stream_sequence)
            .finish()
    }
}

impl<T: prost::Message + Default> Delivery<T> {
    /// Decodes a delivery. A message without a tenant header or with a
    /// payload that is not a `T` is an error: the caller dead-letters it
    /// (see [`dead_letter_raw`]) since no redelivery can fix it.
    pub fn decode(message: jetstream::Message) -> Result<Self, Undecodable> {
        let subject = message.subject.to_string();
        let fail = |message, reason: String| {
            Err(Box::new((
                message,
                DecodeError {
                    subject: subject.clone(),
                    reason,
                },
            )))
        };
        let info = match message.info() {
            Ok(info) => (info.delivered, info.stream_sequence),
            Err(e) => return fail(message, format!("no jetstream metadata: {e}")),
        };
        let tenant = message
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_TENANT))
            .map(|v| v.as_str().to_owned());
        let Some(tenant) = tenant.filter(|t| names::validate("tenant", t).is_ok()) else {
            return fail(
                message,
                "missing or invalid agentmesh-tenant header".to_owned(),
            );
        };
        let payload = match T::decode(message.payload.clone()) {
            Ok(payload) => payload,
            Err(e) => return fail(message, e.to_string()),
        };
        let parent = message
            .headers
            .as_ref()
            .map(mesh_telemetry::extract_nats)
            .unwrap_or_default();
        Ok(Self {
            payload,
            tenant,
            delivered: u32::try_from(info.0).unwrap_or(u32::MAX),
            stream_sequence: info.1,
            parent,
            message,
        })
    }
}

impl<T> Delivery<T> {
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// Done: the message leaves the work queue.
    pub async fn ack(&self) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Ack)
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Still working: resets the ack-wait timer. Send more often than
    /// ack-wait during long steps.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Retryable failure: redeliver after `delay`.
    pub async fn nak_after(&self, delay: Duration) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Never redeliver.
    pub async fn term(&self) -> Result<(), BusError> {
        self.message
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Copies the message to `dlq.<subject>` with the reason, then acks it.
    pub async fn dead_letter(&self, bus: &Bus, reason: &str) -> Result<(), BusError> {
        dead_letter(bus, &self.message, self.delivered, reason).await
    }
}

/// Dead-letters a message that could not even be decoded.
pub async fn dead_letter_raw(
    bus: &Bus,
    message: &jetstream::Message,
    reason: &str,
) -> Result<(), BusError> {
    let delivered = message
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(0);
    dead_letter(bus, message, delivered, reason).await
}

async fn dead_letter(
    bus: &Bus,
    message: &jetstream::Message,
    delivered: u32,
    reason: &str,
) -> Result<(), BusError> {
    let mut headers = message.headers.clone().unwrap_or_default();
    let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    let stream = message
        .info()
        .map(|i| i.stream.to_owned())
        .unwrap_or_default();
    // One DLQ entry per original message, however often this runs.
    headers.insert(HEADER_MSG_ID, format!("dlq:{stream}:{seq}").as_str());
    headers.insert(HEADER_DLQ_REASON, reason);
    headers.insert(HEADER_DLQ_DELIVERIES, delivered.to_string().as_str());
    headers.insert(HEADER_DLQ_SUBJECT, message.subject.as_str());
    let subject = names::dlq_subject(message.subject.as_str());
    let ack = bus
        .publish_raw(subject.clone(), headers, message.payload.clone())
        .await?;
    ack.await.map_err(|e| BusError::Publish {
        subject,
        message: e.to_string(),
    })?;
    message
        .ack_with(AckKind::Ack)
        .await
        .map_err(|e| BusError::Ack(e.to_string()))
}
