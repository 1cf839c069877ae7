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
        let (payload, tenant, parent) =
            match decode_envelope::<T>(message.headers.as_ref(), message.payload.clone()) {
                Ok(parts) => parts,
                Err(reason) => return fail(message, reason),
            };
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

/// What a message carries besides its JetStream metadata: the payload as a
/// `T`, the tenant of its `agentmesh-tenant` header (a valid tenant name)
/// and the producer's trace context. Pure, so it is tested (and fuzzed)
/// without a server; the error says why the message is undecodable.
pub fn decode_envelope<T: prost::Message + Default>(
    headers: Option<&async_nats::HeaderMap>,
    payload: bytes::Bytes,
) -> Result<(T, String, TraceContext), String> {
    let tenant = headers
        .and_then(|h| h.get(HEADER_TENANT))
        .map(|v| v.as_str().to_owned());
    let Some(tenant) = tenant.filter(|t| names::validate("tenant", t).is_ok()) else {
        return Err("missing or invalid agentmesh-tenant header".to_owned());
    };
    let payload = T::decode(payload).map_err(|e| e.to_string())?;
    let parent = headers
        .map(mesh_telemetry::extract_nats)
        .unwrap_or_default();
    Ok((payload, tenant, parent))
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

/// The headers of a dead-lettered copy: the original ones, a `Nats-Msg-Id`
/// that makes one DLQ entry per original message however often this runs,
/// and why, after how many deliveries and from which subject. `reason` is
/// often an error text: line breaks in it are escaped
/// ([`names::header_value`]).
pub fn dead_letter_headers(
    original: Option<&async_nats::HeaderMap>,
    stream: &str,
    sequence: u64,
    delivered: u32,
    reason: &str,
    subject: &str,
) -> async_nats::HeaderMap {
    let mut headers = original.cloned().unwrap_or_default();
    let msg_id = format!("dlq:{stream}:{sequence}");
    headers.insert(HEADER_MSG_ID, names::header_value(&msg_id).as_ref());
    headers.insert(HEADER_DLQ_REASON, names::header_value(reason).as_ref());
    headers.insert(HEADER_DLQ_DELIVERIES, delivered.to_string().as_str());
    headers.insert(HEADER_DLQ_SUBJECT, names::header_value(subject).as_ref());
    headers
}

async fn dead_letter(
    bus: &Bus,
    message: &jetstream::Message,
    delivered: u32,
    reason: &str,
) -> Result<(), BusError> {
    let info = message.info().ok();
    let headers = dead_letter_headers(
        message.headers.as_ref(),
        info.as_ref().map_or("", |i| i.stream),
        info.as_ref().map_or(0, |i| i.stream_sequence),
        delivered,
        reason,
        message.subject.as_str(),
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn headers(pairs: &[(&str, &str)]) -> async_nats::HeaderMap {
        let mut h = async_nats::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn an_envelope_needs_a_valid_tenant_and_a_payload_of_its_type() {
        let event = mesh_proto::TaskEvent {
            task_id: "t1".to_owned(),
            tenant: "acme".to_owned(),
            ..Default::default()
        };
        let payload = bytes::Bytes::from(event.encode_to_vec());
        let (decoded, tenant, _) = decode_envelope::<mesh_proto::TaskEvent>(
            Some(&headers(&[(HEADER_TENANT, "acme")])),
            payload.clone(),
        )
        .unwrap();
        assert_eq!((decoded, tenant.as_str()), (event, "acme"));
        for h in [None, Some(headers(&[(HEADER_TENANT, "acme.*")]))] {
            let err = decode_envelope::<mesh_proto::TaskEvent>(h.as_ref(), payload.clone());
            assert!(err.unwrap_err().contains("agentmesh-tenant"));
        }
        let garbage = bytes::Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(
            decode_envelope::<mesh_proto::TaskEvent>(
                Some(&headers(&[(HEADER_TENANT, "acme")])),
                garbage
            )
            .is_err()
        );
    }

    /// An error text with line breaks is a valid dead-letter reason; the
    /// original headers are kept and the id is one per original message.
    #[test]
    fn dead_letter_headers_escape_the_reason() {
        let original = headers(&[(HEADER_TENANT, "acme"), (HEADER_MSG_ID, "m1")]);
        let h = dead_letter_headers(
            Some(&original),
            "TASKS",
            42,
            5,
            "tool failed:\nTraceback\r\n  line 1",
            "tasks.acme.support",
        );
        assert_eq!(h.get(HEADER_TENANT).unwrap().as_str(), "acme");
        assert_eq!(h.get(HEADER_MSG_ID).unwrap().as_str(), "dlq:TASKS:42");
        assert_eq!(
            h.get(HEADER_DLQ_REASON).unwrap().as_str(),
            "tool failed:\\nTraceback\\r\\n  line 1"
        );
        assert_eq!(h.get(HEADER_DLQ_DELIVERIES).unwrap().as_str(), "5");
        assert_eq!(
            h.get(HEADER_DLQ_SUBJECT).unwrap().as_str(),
            "tasks.acme.support"
        );
    }
}
