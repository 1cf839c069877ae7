//! The connection to NATS and the operations every service shares.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer::PullConsumer, context::PublishAckFuture};
use bytes::Bytes;

use crate::{BusError, HEADER_MSG_ID, HEADER_TENANT, RetryPolicy, StreamKind, names};

/// Limits and policies of the bus, from the environment of each service
/// (see `mesh-runtime`'s shared settings).
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// How long task events stay replayable.
    pub events_max_age: Duration,
    pub dlq_max_age: Duration,
    /// `Nats-Msg-Id` de-duplication window.
    pub duplicate_window: Duration,
    /// Largest message a stream accepts.
    pub max_message_bytes: i32,
    pub replicas: usize,
    /// Redelivery policy of task consumers.
    pub task_retry: RetryPolicy,
    /// A delivery not acked (or marked in progress) within this time is
    /// redelivered.
    pub task_ack_wait: Duration,
    /// Deliveries a task consumer hands out before acks come back.
    pub task_max_ack_pending: i64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            dlq_max_age: Duration::from_secs(30 * 24 * 3600),
            duplicate_window: Duration::from_secs(120),
            max_message_bytes: 1024 * 1024,
            replicas: 1,
            task_retry: RetryPolicy::default(),
            task_ack_wait: Duration::from_secs(30),
            task_max_ack_pending: 1000,
        }
    }
}

/// The lag KEDA scales on: `num_pending + num_ack_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerLag {
    pub pending: u64,
    pub ack_pending: u64,
}

impl ConsumerLag {
    pub fn total(&self) -> u64 {
        self.pending + self.ack_pending
    }
}

#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: BusConfig,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("config", &self.config).finish()
    }
}

impl Bus {
    pub async fn connect(url: &str, name: &str, config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connect(url)
            .await
            .map_err(|source| BusError::Connect {
                url: url.to_owned(),
                source,
            })?;
        Ok(Self::from_client(client, config))
    }

    pub fn from_client(client: async_nats::Client, config: BusConfig) -> Self {
        let js = jetstream::new(client.clone());
        Self { client, js, config }
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// Whether the connection is up (readiness).
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Creates the streams, or updates their limits when they exist.
    pub async fn ensure_streams(&self, kinds: &[StreamKind]) -> Result<(), BusError> {
        for kind in kinds {
            let config = kind.config(&self.config);
            let stream_err = |e: &dyn std::fmt::Display| BusError::Stream {
                stream: kind.name().to_owned(),
                message: e.to_string(),
            };
            match self.js.get_stream(kind.name()).await {
                Ok(_) => {
                    self.js
                        .update_stream(&config)
                        .await
                        .map_err(|e| stream_err(&e))?;
                }
                Err(_) => {
                    if let Err(e) = self.js.create_stream(config).await {
                        // Another replica may have created it meanwhile.
                        if self.js.get_stream(kind.name()).await.is_err() {
                            return Err(stream_err(&e));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates (or updates) the durable consumer `agent-<agent>` on TASKS.
    pub async fn ensure_agent_consumer(&self, agent: &str) -> Result<PullConsumer, BusError> {
        let name = names::agent_consumer(agent)?;
        let config = jetstream::consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: names::agent_filter(agent)?,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.config.task_ack_wait,
            max_deliver: i64::from(self.config.task_retry.max_deliver),
            max_ack_pending: self.config.task_max_ack_pending,
            ..Default::default()
        };
        self.ensure_durable(StreamKind::Tasks, &name, config).await
    }

    /// Creates or updates a durable pull consumer on `stream`.
    pub async fn ensure_durable(
        &self,
        stream: StreamKind,
        name: &str,
        config: jetstream::consumer::pull::Config,
    ) -> Result<PullConsumer, BusError> {
        let consumer_err = |e: &dyn std::fmt::Display| BusError::Consumer {
            consumer: name.to_owned(),
            message: e.to_string(),
        };
        let stream = self
            .js
            .get_stream(stream.name())
            .await
            .map_err(|e| BusError::Stream {
                stream: stream.name().to_owned(),
                message: e.to_string(),
            })?;
        // create_consumer updates a durable whose config changed.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| consumer_err(&e))
    }

    /// Names of the durable consumers on TASKS that serve agents.
    pub async fn agent_consumer_names(&self) -> Result<Vec<String>, BusError> {
        use futures::TryStreamExt as _;
        let stream = self
            .js
            .get_stream(StreamKind::Tasks.name())
            .await
            .map_err(|e| BusError::Stream {
                stream: "TASKS".to_owned(),
                message: e.to_string(),
            })?;
        let names: Vec<String> =
            stream
                .consumer_names()
                .try_collect()
                .await
                .map_err(|e| BusError::Stream {
                    stream: "TASKS".to_owned(),
                    message: e.to_string(),
                })?;
        Ok(names
            .into_iter()
            .filter(|n| n.starts_with("agent-"))
            .collect())
    }

    /// The lag of a consumer, as KEDA's nats-jetstream scaler reads it.
    pub async fn consumer_lag(
        &self,
        stream: StreamKind,
        consumer: &str,
    ) -> Result<ConsumerLag, BusError> {
        self.consumer_lag_of(stream.name(), consumer).await
    }

    /// [`Bus::consumer_lag`] by stream name (as a ScaledObject names it).
    pub async fn consumer_lag_of(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerLag, BusError> {
        let stream_handle = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| BusError::Stream {
                stream: stream.to_owned(),
                message: e.to_string(),
            })?;
        let info = stream_handle
            .consumer_info(consumer)
            .await
            .map_err(|e| BusError::Consumer {
                consumer: consumer.to_owned(),
                message: e.to_string(),
            })?;
        Ok(ConsumerLag {
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
        })
    }

    /// Publishes a protobuf message with the mesh headers and returns the
    /// pending ack, so callers can pipeline many publishes.
    pub async fn publish<M: prost::Message>(
        &self,
        subject: String,
        tenant: &str,
        msg_id: &str,
        message: &M,
    ) -> Result<PublishAckFuture, BusError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_MSG_ID, names::header_value(msg_id).as_ref());
        headers.insert(HEADER_TENANT, names::header_value(tenant).as_ref());
        mesh_telemetry::inject_nats(&mut headers);
        self.publish_raw(subject, headers, Bytes::from(message.encode_to_vec()))
            .await
    }

    /// Publishes prepared headers and payload (the outbox stores both).
    pub async fn publish_raw(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAckFuture, BusError> {
        self.js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| BusError::Publish {
                subject,
                message: e.to_string(),
            })
    }

    /// Publishes and waits for the stream's acknowledgement.
    pub async fn publish_acked<M: prost::Message>(
        &self,
        subject: String,
        tenant: &str,
        msg_id: &str,
        message: &M,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let pending = self
            .publish(subject.clone(), tenant, msg_id, message)
            .await?;
        pending.await.map_err(|e| BusError::Publish {
            subject,
            message: e.to_string(),
        })
    }

    /// The last message on a subject of `stream`, if any (direct get).
    pub async fn last_message_on(
        &self,
        stream: StreamKind,
        subject: &str,
    ) -> Result<Option<async_nats::jetstream::message::StreamMessage>, BusError> {
        let handle = self
            .js
            .get_stream_no_info(stream.name())
            .await
            .map_err(|e| BusError::Stream {
                stream: stream.name().to_owned(),
                message: e.to_string(),
            })?;
        match handle.direct_get_last_for_subject(subject).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(BusError::Stream {
                stream: stream.name().to_owned(),
                message: e.to_string(),
            }),
        }
    }

    /// Every message stored on `subject` of `stream` up to and including
    /// stream sequence `until` (what [`Bus::last_message_on`] returned), as
    /// `(sequence, payload)` in order. Reads through an ordered consumer, so
    /// nothing is left behind on the server.
    pub async fn history(
        &self,
        stream: StreamKind,
        subject: &str,
        until: u64,
        timeout: std::time::Duration,
    ) -> Result<Vec<(u64, bytes::Bytes)>, BusError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
        use futures::StreamExt as _;
        let failed = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: stream.name().to_owned(),
            message: e.to_string(),
        };
        let handle = self
            .js
            .get_stream_no_info(stream.name())
            .await
            .map_err(|e| failed(&e))?;
        let consumer = handle
            .create_consumer(OrderedConfig {
                filter_subject: subject.to_owned(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&e))?;
        let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
        let mut out = Vec::new();
        let read = async {
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| failed(&e))?;
                let seq = message
                    .info()
                    .map(|i| i.stream_sequence)
                    .unwrap_or(u64::MAX);
                let done = seq >= until;
                if seq <= until {
                    out.push((seq, message.payload.clone()));
                }
                if done {
                    break;
                }
            }
            Ok::<_, BusError>(())
        };
        tokio::time::timeout(timeout, read).await.map_err(|_| {
            failed(&format!(
                "reading {subject} took over {} ms",
                timeout.as_millis()
            ))
        })??;
        Ok(out)
    }
}
