//! The streams of DESIGN.md and how each is configured. Services call
//! [`crate::Bus::ensure_streams`] with the streams they produce to or consume
//! from; creation is idempotent and updates limits that changed.

use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};

use crate::BusConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Tasks,
    Events,
    Ingest,
    Traces,
    Dlq,
}

impl StreamKind {
    pub const ALL: [StreamKind; 5] = [
        Self::Tasks,
        Self::Events,
        Self::Ingest,
        Self::Traces,
        Self::Dlq,
    ];

    /// The stream name (deploy contract: KEDA triggers name it).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tasks => "TASKS",
            Self::Events => "EVENTS",
            Self::Ingest => "INGEST",
            Self::Traces => "TRACES",
            Self::Dlq => "DLQ",
        }
    }

    pub fn subjects(self) -> &'static str {
        match self {
            Self::Tasks => "tasks.>",
            Self::Events => "events.>",
            Self::Ingest => "ingest.>",
            Self::Traces => "traces.>",
            Self::Dlq => "dlq.>",
        }
    }

    pub fn config(self, bus: &BusConfig) -> Config {
        let (retention, max_age) = match self {
            // Work queues: a message lives until a consumer acks it.
            Self::Tasks | Self::Ingest | Self::Traces => {
                (RetentionPolicy::WorkQueue, std::time::Duration::ZERO)
            }
            Self::Events => (RetentionPolicy::Limits, bus.events_max_age),
            Self::Dlq => (RetentionPolicy::Limits, bus.dlq_max_age),
        };
        Config {
            name: self.name().to_owned(),
            subjects: vec![self.subjects().to_owned()],
            retention,
            max_age,
            storage: StorageType::File,
            num_replicas: bus.replicas,
            // JetStream refuses a duplicate window longer than the age limit.
            duplicate_window: if max_age.is_zero() {
                bus.duplicate_window
            } else {
                bus.duplicate_window.min(max_age)
            },
            max_message_size: bus.max_message_bytes,
            // A full work queue refuses new work rather than dropping old work.
            discard: DiscardPolicy::New,
            allow_direct: true,
            ..Config::default()
        }
    }
}
