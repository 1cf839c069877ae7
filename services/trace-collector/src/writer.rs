//! The trace writer: pulls TRACES through the durable consumer
//! `trace-writer`, maps each span to an observation row and stores it.
//! Acks only after the database write; a database error naks with backoff
//! (and dead-letters on the last delivery); an undecodable message is
//! dead-lettered at once since no redelivery can fix it. With forwarding on,
//! each batch is also re-exported, concurrently with storing it, before the
//! ack (see [`crate::forward`] for why here and not in the receiver).

use futures::StreamExt as _;
use mesh_bus::{Bus, Delivery, RetryPolicy, StreamKind};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus_client::metrics::counter::Counter;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

use crate::forward::Forwarder;
use crate::ingest::check_span;
use crate::mapping::{ObservationRow, map_span};
use crate::prices::{PriceTable, Prices};
use crate::store;

#[derive(Debug, Clone, Default)]
pub struct WriterMetrics {
    pub stored: Counter,
    pub failed: Counter,
}

pub struct Writer {
    pub db: DatabaseConnection,
    pub bus: Bus,
    pub consumer: async_nats::jetstream::consumer::PullConsumer,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub metrics: WriterMetrics,
    pub prices: Prices,
    pub forwarder: Option<Forwarder>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("pull from {stream}: {message}")]
    Pull {
        stream: &'static str,
        message: String,
    },
}

/// The rows of one message; spans that fail validation (a producer other
/// than our receiver) are skipped.
pub fn rows_of(request: &ExportTraceServiceRequest) -> Vec<ObservationRow> {
    let mut rows = Vec::new();
    for resource in &request.resource_spans {
        let resource_attrs = resource
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        for scope in &resource.scope_spans {
            let scope_name = scope.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
            for span in &scope.spans {
                if check_span(span).is_ok() {
                    rows.push(map_span(span, resource_attrs, scope_name));
                }
            }
        }
    }
    rows
}

/// Prices the generations among `rows` (at write time: a later price
/// change never rewrites stored costs).
pub fn price(rows: &mut [ObservationRow], table: &PriceTable) {
    for row in rows.iter_mut().filter(|r| r.kind == "generation") {
        if let Some(model) = &row.model {
            row.cost = table.cost(model, row.input_tokens, row.output_tokens);
        }
    }
}

impl Writer {
    pub async fn run(self, stop: CancellationToken) -> Result<(), WriterError> {
        let concurrency = self.concurrency.max(1);
        let messages = self
            .consumer
            .stream()
            .max_messages_per_batch(concurrency)
            .messages()
            .await
            .map_err(|e| WriterError::Pull {
                stream: StreamKind::Traces.name(),
                message: e.to_string(),
            })?;
        let this = &self;
        // take_until: stop taking messages at shutdown; in-flight ones
        // finish (ack) or are left to redeliver after ack-wait.
        messages
            .take_until(stop.cancelled())
            .for_each_concurrent(concurrency, |message| async move {
                match message {
                    Ok(message) => this.handle(message).await,
                    Err(error) => tracing::warn!(%error, "traces pull error"),
                }
            })
            .await;
        Ok(())
    }

    async fn handle(&self, message: async_nats::jetstream::Message) {
        let delivery = match Delivery::<ExportTraceServiceRequest>::decode(message) {
            Ok(d) => d,
            Err(undecodable) => {
                let (message, error) = *undecodable;
                tracing::error!(%error, "dead-lettering undecodable traces message");
                if let Err(e) =
                    mesh_bus::dead_letter_raw(&self.bus, &message, &error.to_string()).await
                {
                    tracing::warn!(error = %e, "dead-letter failed; message will be redelivered");
                }
                return;
            }
        };
        let mut rows = rows_of(&delivery.payload);
        price(&mut rows, &self.prices.current());
        let spans = rows.len() as u64;
        let forward = async {
            let Some(forwarder) = &self.forwarder else {
                return;
            };
            let still_working = || async {
                if let Err(error) = delivery.in_progress().await {
                    tracing::warn!(%error, "in-progress ack failed");
                }
            };
            if let Err(error) = forwarder
                .forward(&delivery.tenant, &delivery.payload, still_working)
                .await
            {
                tracing::warn!(%error, tenant = %delivery.tenant, spans, "forwarding spans given up; they are stored");
            }
        };
        let (stored, ()) = tokio::join!(store::store(&self.db, &delivery.tenant, rows), forward);
        match stored {
            Ok(()) => {
                self.metrics.stored.inc_by(spans);
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "ack failed; spans will be redelivered (stored once)");
                }
            }
            Err(error) if self.retry.is_last(delivery.delivered) => {
                self.metrics.failed.inc();
                tracing::error!(%error, delivered = delivery.delivered, "storing spans failed on the last delivery; dead-lettering");
                if let Err(e) = delivery.dead_letter(&self.bus, &error.to_string()).await {
                    tracing::warn!(error = %e, "dead-letter failed");
                }
            }
            Err(error) => {
                self.metrics.failed.inc();
                let delay = self.retry.backoff(delivery.delivered);
                tracing::warn!(%error, delivered = delivery.delivered, ?delay, "storing spans failed; retrying");
                if let Err(e) = delivery.nak_after(delay).await {
                    tracing::warn!(error = %e, "nak failed; spans will be redelivered after ack-wait");
                }
            }
        }
    }
}
