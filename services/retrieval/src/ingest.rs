//! The ingest consumer: pulls INGEST through the durable consumer
//! `retrieval-ingest` and applies each part of a job (chunk, embed, store,
//! index). Acks only after the part's rows and its job progress are
//! committed together; a redelivered part finds its record and is acked
//! without indexing again. Retryable failures (store or embedding endpoint
//! down) nak with backoff; on the last delivery the part is recorded as
//! failed on its job and dead-lettered.

use std::sync::Arc;

use futures::StreamExt as _;
use mesh_bus::{Bus, Delivery, RetryPolicy, StreamKind};
use mesh_proto::IngestBatch;
use tokio_util::sync::CancellationToken;

use crate::service::Service;

pub struct IngestWorker {
    pub service: Arc<Service>,
    pub bus: Bus,
    pub consumer: async_nats::jetstream::consumer::PullConsumer,
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

#[derive(Debug, thiserror::Error)]
#[error("pull from {stream}: {message}")]
pub struct PullError {
    stream: &'static str,
    message: String,
}

impl IngestWorker {
    pub async fn run(self, stop: CancellationToken) -> Result<(), PullError> {
        let concurrency = self.concurrency.max(1);
        let messages = self
            .consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .messages()
            .await
            .map_err(|e| PullError {
                stream: StreamKind::Ingest.name(),
                message: e.to_string(),
            })?;
        let this = &self;
        // take_until: stop taking messages at shutdown; in-flight parts
        // finish (ack) or are redelivered after ack-wait.
        messages
            .take_until(stop.cancelled())
            .for_each_concurrent(concurrency, |message| async move {
                match message {
                    Ok(message) => this.handle(message).await,
                    Err(error) => tracing::warn!(%error, "ingest pull error"),
                }
            })
            .await;
        Ok(())
    }

    async fn handle(&self, message: async_nats::jetstream::Message) {
        let delivery = match Delivery::<IngestBatch>::decode(message) {
            Ok(d) => d,
            Err(undecodable) => {
                let (message, error) = *undecodable;
                tracing::error!(%error, "dead-lettering undecodable ingest message");
                if let Err(e) =
                    mesh_bus::dead_letter_raw(&self.bus, &message, &error.to_string()).await
                {
                    tracing::warn!(error = %e, "dead-letter failed; message will be redelivered");
                }
                return;
            }
        };
        // Embedding a part can take a while on CPU: tell the server we are on it.
        if let Err(error) = delivery.in_progress().await {
            tracing::debug!(%error, "in-progress ack failed");
        }
        let job = delivery.payload.job_id.clone();
        let part = delivery.payload.part;
        let count = i32::try_from(delivery.payload.documents.len()).unwrap_or(i32::MAX);
        let result = self
            .service
            .apply_part(&delivery.tenant, delivery.payload.clone())
            .await;
        match result {
            Ok(()) => {
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "ack failed; the part will be redelivered (applied once)");
                }
            }
            Err(error) if self.retry.is_last(delivery.delivered) => {
                tracing::error!(%error, %job, part, "ingest part failed on its last delivery");
                let part = i32::try_from(part).unwrap_or(i32::MAX);
                if let Err(e) = self
                    .service
                    .record_failed(&job, part, count, error.to_string())
                    .await
                {
                    tracing::warn!(error = %e, "cannot record the failed part");
                }
                if let Err(e) = delivery.dead_letter(&self.bus, &error.to_string()).await {
                    tracing::warn!(error = %e, "dead-letter failed");
                }
            }
            Err(error) => {
                let delay = self.retry.backoff(delivery.delivered);
                tracing::warn!(%error, %job, part, delivered = delivery.delivered, ?delay, "ingest part failed; retrying");
                if let Err(e) = delivery.nak_after(delay).await {
                    tracing::warn!(error = %e, "nak failed; the part will be redelivered after ack-wait");
                }
            }
        }
    }
}
