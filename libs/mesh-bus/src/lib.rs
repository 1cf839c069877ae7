//! The mesh's JetStream bus: the streams and consumers of DESIGN.md ("The
//! bus"), typed publish with the mandatory headers (`Nats-Msg-Id`,
//! `agentmesh-tenant`, W3C trace context), typed pull deliveries with ack /
//! in-progress / nak-with-backoff / term, dead-lettering, and consumer lag.
//!
//! Every subject is built here from validated tokens, so a tenant or agent
//! name can never smuggle a wildcard or an extra token into a subject.
//! This crate never decides what a message means; services do.

mod bus;
mod delivery;
pub mod names;
mod retry;
pub mod topology;

pub use async_nats;
pub use bus::{Bus, BusConfig, ConsumerLag};
pub use delivery::{
    DecodeError, Delivery, Undecodable, dead_letter_headers, dead_letter_raw, decode_envelope,
};
pub use retry::RetryPolicy;
pub use topology::StreamKind;

/// Header carrying the tenant on every message.
pub const HEADER_TENANT: &str = "agentmesh-tenant";
/// JetStream's de-duplication header.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Why a message was dead-lettered.
pub const HEADER_DLQ_REASON: &str = "agentmesh-dlq-reason";
/// How many deliveries a dead-lettered message had.
pub const HEADER_DLQ_DELIVERIES: &str = "agentmesh-dlq-deliveries";
/// The subject a dead-lettered message was first published on.
pub const HEADER_DLQ_SUBJECT: &str = "agentmesh-dlq-subject";

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("connect to nats at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("invalid {kind} name {value:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publish to {subject}: {message}")]
    Publish { subject: String, message: String },
    #[error("ack: {0}")]
    Ack(String),
}
