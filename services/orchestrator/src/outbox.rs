//! The transactional outbox. Handlers insert the bus message in the same
//! transaction as the state change; the [`Relay`] publishes rows in id
//! order, waits for JetStream's ack, then deletes them. A crash after the
//! commit leaves the row to be published on restart; a crash after the
//! publish but before the delete republishes with the same `Nats-Msg-Id`,
//! which JetStream drops within its duplicate window.
//!
//! Several replicas may relay at once: duplicates are dropped the same way.
//!
//! Fast path: a handler hands its committed rows to the relay through
//! [`RelayHandle::committed`], which publishes them without reading them
//! back; the polling pass is the safety net for anything the fast path
//! misses (a full channel, a crash, another replica's rows).

use std::sync::Arc;

use mesh_bus::{Bus, HEADER_MSG_ID, HEADER_TENANT};
use mesh_store::orchestrator::outbox;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::OutboxConfig;
use crate::convert::now_ms;
use crate::metrics::Metrics;

/// Adds a message to the outbox inside the caller's transaction.
pub async fn enqueue<C: ConnectionTrait, M: prost::Message>(
    conn: &C,
    tenant: &str,
    subject: String,
    msg_id: String,
    message: &M,
) -> Result<outbox::Model, DbErr> {
    enqueue_traced(conn, tenant, subject, msg_id, message, current_trace()).await
}

/// The current W3C trace context as the outbox stores it (`key=value`
/// lines).
pub fn current_trace() -> String {
    mesh_telemetry::current_context_headers()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// [`enqueue`] with a trace context captured earlier (a task admitted
/// after it waited continues its submitter's trace).
pub async fn enqueue_traced<C: ConnectionTrait, M: prost::Message>(
    conn: &C,
    tenant: &str,
    subject: String,
    msg_id: String,
    message: &M,
    traceparent: String,
) -> Result<outbox::Model, DbErr> {
    outbox::ActiveModel {
        tenant: Set(tenant.to_owned()),
        subject: Set(subject),
        msg_id: Set(msg_id),
        payload: Set(message.encode_to_vec()),
        traceparent: Set(traceparent),
        created_at_ms: Set(now_ms()),
        ..Default::default()
    }
    .insert(conn)
    .await
}

/// How handlers reach the relay after a commit.
#[derive(Clone)]
pub struct RelayHandle {
    wake: Arc<Notify>,
    fast: mpsc::Sender<outbox::Model>,
}

impl RelayHandle {
    /// Rows just committed: published at once, or by the next pass when the
    /// fast path is full or the relay is not running.
    pub fn committed(&self, rows: impl IntoIterator<Item = outbox::Model>) {
        for row in rows {
            if self.fast.try_send(row).is_err() {
                self.wake.notify_one();
                return;
            }
        }
    }
}

/// Rows the fast path may hold before handlers fall back to waking the pass.
const FAST_PATH_CAPACITY: usize = 4096;

pub struct Relay {
    db: DatabaseConnection,
    bus: Bus,
    config: OutboxConfig,
    wake: Arc<Notify>,
    fast_tx: mpsc::Sender<outbox::Model>,
    fast_rx: mpsc::Receiver<outbox::Model>,
    metrics: Metrics,
}

impl Relay {
    pub fn new(db: DatabaseConnection, bus: Bus, config: OutboxConfig, metrics: Metrics) -> Self {
        let (fast_tx, fast_rx) = mpsc::channel(FAST_PATH_CAPACITY);
        Self {
            db,
            bus,
            config,
            wake: Arc::new(Notify::new()),
            fast_tx,
            fast_rx,
            metrics,
        }
    }

    pub fn handle(&self) -> RelayHandle {
        RelayHandle {
            wake: self.wake.clone(),
            fast: self.fast_tx.clone(),
        }
    }

    /// Relays until `stop`; finishes the batch in hand first. Errors are
    /// retried (the rows stay), so this only returns at shutdown.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), DbErr> {
        loop {
            match self.relay_batch().await {
                Ok(n) if n as u64 >= self.config.batch_size => continue,
                Ok(_) => {}
                Err(error) => {
                    self.metrics.outbox_errors.inc();
                    tracing::warn!(%error, "outbox relay pass failed; retrying");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                Some(row) = self.fast_rx.recv() => {
                    let mut rows = vec![row];
                    while rows.len() < self.config.batch_size as usize {
                        match self.fast_rx.try_recv() {
                            Ok(row) => rows.push(row),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = self.publish(&rows).await {
                        // The rows are still in the table: the pass retries them.
                        self.metrics.outbox_errors.inc();
                        tracing::warn!(%error, "outbox fast path failed; the next pass retries");
                    }
                    continue;
                }
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
    }

    /// Publishes one batch; returns how many rows it relayed.
    pub async fn relay_batch(&self) -> Result<usize, RelayError> {
        let rows = outbox::Entity::find()
            .order_by_asc(outbox::Column::Id)
            .limit(self.config.batch_size)
            .all(&self.db)
            .await?;
        if rows.is_empty() {
            self.metrics.outbox_backlog.set(0);
            return Ok(0);
        }
        self.publish(&rows).await
    }

    /// Publishes `rows` (pipelined), then deletes those JetStream acked.
    async fn publish(&self, rows: &[outbox::Model]) -> Result<usize, RelayError> {
        // Pipeline the publishes, then collect the acks in order.
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_MSG_ID, row.msg_id.as_str());
            headers.insert(HEADER_TENANT, row.tenant.as_str());
            for line in row.traceparent.lines() {
                if let Some((k, v)) = line.split_once('=') {
                    headers.insert(k, v);
                }
            }
            let ack = self
                .bus
                .publish_raw(row.subject.clone(), headers, row.payload.clone().into())
                .await?;
            pending.push((row.id, ack));
        }
        let mut done = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for (id, ack) in pending {
            match ack.await {
                Ok(_) => done.push(id),
                Err(error) => {
                    first_error.get_or_insert_with(|| error.to_string());
                }
            }
        }
        if !done.is_empty() {
            outbox::Entity::delete_many()
                .filter(outbox::Column::Id.is_in(done.clone()))
                .exec(&self.db)
                .await?;
            self.metrics.outbox_published.inc_by(done.len() as u64);
        }
        if let Some(error) = first_error {
            return Err(RelayError::Ack(error));
        }
        Ok(done.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("{0}")]
    Bus(#[from] mesh_bus::BusError),
    #[error("jetstream did not ack: {0}")]
    Ack(String),
}
