//! Runs one agent's tasks: the pull loop and what happens to each delivery.
//!
//! Per delivery: watch the task's event subject for a cancel; skip the task
//! if its event history already ends (a redelivery after the terminal event
//! was stored); publish `started`; stream the model's answer as deltas
//! while sending in-progress acks; then exactly one terminal event and the
//! ack. Retryable failures nak with a jittered backoff until MaxDeliver,
//! after which the task fails with the reason and the message goes to DLQ.

use std::time::Instant;

use std::sync::Arc;

use futures::{FutureExt as _, StreamExt as _};
use mesh_bus::{Bus, BusError, Delivery, StreamKind};
use mesh_proto::inference_service_client::InferenceServiceClient;
use mesh_proto::{
    TaskCancelled, TaskCompleted, TaskEnvelope, TaskEvent, TaskFailed, TaskRetrying, TaskStarted,
    task_event::Kind,
};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracing::Instrument as _;

use crate::config::Config;
use crate::events::{TaskEvents, Terminal};
use crate::journal::Journal;
use crate::memory::Memory;
use crate::metrics::{AgentLabels, Metrics, OutcomeLabels};

pub struct TaskRunner {
    pub(crate) bus: Bus,
    pub(crate) router: InferenceServiceClient<Channel>,
    pub(crate) config: Config,
    pub(crate) metrics: Metrics,
    /// What tools call through (one pool for every task).
    pub(crate) tool_clients: crate::tools::ToolClients,
    pub(crate) memory: Memory,
}

/// Why a model call did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// Worth another delivery: the backend was down, slow or overloaded.
    #[error("{0}")]
    Retryable(String),
    /// No delivery will fix it: the request itself is wrong.
    #[error("{0}")]
    Fatal(String),
    /// The tool loop used up the agent's `maxSteps`.
    #[error("{0}")]
    StepLimit(String),
    /// Not a failure: the task paused on a `human` tool call (its request
    /// is journaled); the delivery is acked and the task ends for now.
    #[error("awaiting approval")]
    AwaitingApproval,
    /// The bus failed us; the task goes back to the queue untouched.
    #[error("bus: {0}")]
    Bus(#[from] BusError),
}

enum Outcome {
    Completed(TaskCompleted),
    Cancelled,
    /// A redelivery of a task whose terminal event is already stored.
    AlreadyFinished,
}

/// A channel connected on first use (over mesh TLS when `tls` is set).
/// `Config::from_env` refuses malformed URLs; a hand-built config with a
/// bad one falls back to the default.
fn lazy_channel(
    url: &str,
    default: &'static str,
    tls: Option<&mesh_runtime::tls::MeshTls>,
) -> Channel {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap_or_else(|_| tonic::transport::Endpoint::from_static(default))
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    mesh_runtime::tls::connect_lazy(endpoint, tls)
}

/// The attempt number of a delivery across the task's dispatches (a task
/// resumed after an approval is a new message whose deliveries restart).
pub(crate) fn attempt_of(delivery: &Delivery<TaskEnvelope>) -> u32 {
    delivery
        .payload
        .attempt_offset
        .saturating_add(delivery.delivered)
}

pub(crate) fn classify(status: &tonic::Status) -> RunError {
    use tonic::Code;
    let message = format!("inference-router: {}", status.message());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::OutOfRange
        | Code::Unimplemented => RunError::Fatal(message),
        _ => RunError::Retryable(message),
    }
}

impl TaskRunner {
    pub fn new(
        bus: Bus,
        router: InferenceServiceClient<Channel>,
        config: Config,
        metrics: Metrics,
    ) -> Self {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(mesh_runtime::server::CLIENT_POOL_IDLE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        let memory = Memory::new(
            config.shared.redis_url.clone(),
            std::time::Duration::from_secs(5),
        );
        let tool_clients = crate::tools::ToolClients {
            http,
            retrieval: mesh_proto::retrieval_client::RetrievalClient::new(lazy_channel(
                &config.retrieval_url,
                "http://127.0.0.1:7004",
                config.shared.tls.as_ref(),
            )),
            orchestrator: mesh_proto::control_plane_client::ControlPlaneClient::new(lazy_channel(
                &config.orchestrator_url,
                "http://127.0.0.1:7001",
                config.shared.tls.as_ref(),
            )),
            bus: bus.clone(),
        };
        Self {
            bus,
            router,
            config,
            metrics,
            tool_clients,
            memory,
        }
    }

    /// Pulls the agent's consumer until `stop`, running up to
    /// `concurrency` tasks at once. On stop: no more pulls, deliveries
    /// fetched but not started are nak'ed for immediate redelivery to
    /// another worker, and in-flight tasks finish (ack or nak) before this
    /// returns.
    pub async fn serve_agent(
        self: Arc<Self>,
        agent: &str,
        stop: CancellationToken,
    ) -> Result<(), BusError> {
        let consumer = self.bus.ensure_agent_consumer(agent).await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.concurrency)
            .messages()
            .await
            .map_err(|e| BusError::Consumer {
                consumer: format!("agent-{agent}"),
                message: e.to_string(),
            })?;
        let slots = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency));
        let mut running = tokio::task::JoinSet::new();
        loop {
            // A free slot first, so nothing is taken that cannot start.
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break,
                },
            };
            let message = tokio::select! {
                _ = stop.cancelled() => break,
                message = messages.next() => message,
            };
            match message {
                Some(Ok(message)) => {
                    let (runner, agent) = (self.clone(), agent.to_owned());
                    running.spawn(async move {
                        runner.handle(&agent, message).await;
                        drop(slot);
                    });
                }
                Some(Err(error)) => tracing::warn!(%agent, %error, "tasks pull error"),
                None => break,
            }
            // Reap finished tasks so the set stays small.
            while running.try_join_next().is_some() {}
        }
        // Hand back what was fetched but not started.
        let mut handed_back = 0;
        while let Some(Some(Ok(message))) = messages.next().now_or_never() {
            let _ = message
                .ack_with(async_nats::jetstream::AckKind::Nak(None))
                .await;
            handed_back += 1;
        }
        if handed_back > 0 {
            tracing::info!(%agent, handed_back, "returned unstarted deliveries to the queue");
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    async fn handle(&self, agent: &str, message: async_nats::jetstream::Message) {
        let delivery = match Delivery::<TaskEnvelope>::decode(message) {
            Ok(delivery) => delivery,
            Err(undecodable) => {
                let (message, error) = *undecodable;
                tracing::error!(%error, "dead-lettering undecodable task");
                if let Err(e) =
                    mesh_bus::dead_letter_raw(&self.bus, &message, &error.to_string()).await
                {
                    tracing::warn!(error = %e, "dead-letter failed; task will be redelivered");
                }
                return;
            }
        };
        let task = &delivery.payload;
        let span = tracing::info_span!(
            "invoke_agent",
            otel.name = format!("invoke_agent {agent}"),
            otel.kind = "consumer",
            gen_ai.operation.name = "invoke_agent",
            gen_ai.agent.name = %agent,
            task.id = %task.task_id,
            tenant = %delivery.tenant,
            // What the trace-collector files this service's spans under.
            agentmesh.tenant = %delivery.tenant,
            attempt = attempt_of(&delivery),
            otel.status_code = tracing::field::Empty,
            error.r#type = tracing::field::Empty,
        );
        mesh_telemetry::set_parent(&span, delivery.parent.clone());
        let labels = AgentLabels {
            agent: agent.to_owned(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        let active = self.metrics.active.get_or_create(&labels).clone();
        active.inc();
        let started = Instant::now();
        let outcome = self.run(&delivery).instrument(span.clone()).await;
        // A delivery that failed (for good, or to be retried) is an error
        // span; a cancelled or paused task is not.
        if let Some(outcome) = outcome
            && !matches!(outcome, "cancelled" | "awaiting_approval")
        {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", outcome);
        }
        active.dec();
        self.metrics
            .duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Some(outcome) = outcome {
            self.metrics
                .errors
                .get_or_create(&OutcomeLabels {
                    agent: agent.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc();
        }
    }

    /// Runs one delivery to its ack or nak; returns the error outcome name,
    /// if any, for metrics.
    async fn run(&self, delivery: &Delivery<TaskEnvelope>) -> Option<&'static str> {
        let task = &delivery.payload;
        if task.tenant != delivery.tenant {
            let reason = "task tenant differs from its agentmesh-tenant header";
            tracing::error!(header = %delivery.tenant, payload = %task.tenant, "{reason}");
            let _ = delivery.dead_letter(&self.bus, reason).await;
            return Some("rejected");
        }
        let events = match TaskEvents::new(self.bus.clone(), &delivery.tenant, &task.task_id) {
            Ok(events) => events,
            Err(error) => {
                let _ = delivery.dead_letter(&self.bus, &error.to_string()).await;
                return Some("rejected");
            }
        };
        match self.execute(delivery, &events).await {
            Ok(Outcome::Completed(completed)) => {
                match events.finish(Kind::Completed(completed)).await {
                    Ok(Terminal::Recorded) => {
                        tracing::info!("task completed");
                        self.ack(delivery).await;
                        None
                    }
                    Ok(Terminal::AlreadyFinished) => {
                        tracing::info!("task had already finished (cancelled meanwhile)");
                        self.ack(delivery).await;
                        None
                    }
                    Err(error) => {
                        self.retry_later(delivery, &events, &error.to_string())
                            .await
                    }
                }
            }
            Ok(Outcome::AlreadyFinished) => {
                self.ack(delivery).await;
                None
            }
            Ok(Outcome::Cancelled) => {
                let cancelled = Kind::Cancelled(TaskCancelled {
                    reason: "cancelled by request".to_owned(),
                });
                match events.finish(cancelled).await {
                    Ok(_) => {
                        tracing::info!("task cancelled");
                        self.ack(delivery).await;
                        Some("cancelled")
                    }
                    Err(error) => {
                        self.retry_later(delivery, &events, &error.to_string())
                            .await
                    }
                }
            }
            Err(RunError::Fatal(error)) => {
                self.fail(delivery, &events, &error, "invalid_request")
                    .await;
                Some("invalid_request")
            }
            // Paused on a `human` tool call until the orchestrator
            // dispatches the task again with the decision.
            Err(RunError::AwaitingApproval) => {
                tracing::info!("task paused for an approval");
                self.ack(delivery).await;
                Some("awaiting_approval")
            }
            Err(RunError::StepLimit(error)) => {
                self.fail(delivery, &events, &error, "max_steps").await;
                Some("max_steps")
            }
            Err(RunError::Retryable(error)) => self.retry_later(delivery, &events, &error).await,
            Err(RunError::Bus(error)) => {
                tracing::warn!(%error, "bus error while running task; it will be redelivered");
                let backoff = self
                    .config
                    .shared
                    .bus
                    .task_retry
                    .backoff(delivery.delivered);
                let _ = delivery.nak_after(backoff).await;
                Some("bus")
            }
        }
    }

    async fn ack(&self, delivery: &Delivery<TaskEnvelope>) {
        if let Err(error) = delivery.ack().await {
            // The terminal event is stored; a redelivery will see it and skip.
            tracing::warn!(%error, "ack failed");
        }
    }

    /// A retryable failure: nak with backoff, or fail and dead-letter when
    /// this was the last delivery allowed.
    async fn retry_later(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        error: &str,
    ) -> Option<&'static str> {
        let policy = self.config.shared.bus.task_retry;
        if policy.is_last(delivery.delivered) {
            let error = format!("gave up after {} deliveries: {error}", delivery.delivered);
            self.fail(delivery, events, &error, "max_deliveries").await;
            return Some("max_deliveries");
        }
        let backoff = policy.backoff(delivery.delivered);
        tracing::warn!(%error, backoff_ms = backoff.as_millis() as u64, "retryable failure; nak with backoff");
        let retrying = Kind::Retrying(TaskRetrying {
            attempt: attempt_of(delivery),
            error: error.to_owned(),
            backoff_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
        });
        let key = format!("retrying:{}", attempt_of(delivery));
        if let Err(e) = events.publish(&key, retrying).await {
            tracing::warn!(error = %e, "could not publish retrying event");
        }
        let _ = events.flush().await;
        if let Err(e) = delivery.nak_after(backoff).await {
            tracing::warn!(error = %e, "nak failed; redelivery after ack-wait");
        }
        Some("retrying")
    }

    /// Terminal failure: the failed event first (so the task never stays
    /// `running`), then the message to DLQ.
    async fn fail(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
        error: &str,
        reason: &str,
    ) {
        tracing::error!(%error, %reason, "task failed");
        let failed = Kind::Failed(TaskFailed {
            error: error.to_owned(),
            reason: reason.to_owned(),
            attempts: attempt_of(delivery),
        });
        if let Err(e) = events.finish(failed).await {
            tracing::warn!(error = %e, "could not publish failed event; task will be redelivered");
            let _ = delivery
                .nak_after(self.config.shared.bus.task_retry.base)
                .await;
            return;
        }
        if let Err(e) = delivery.dead_letter(&self.bus, reason).await {
            tracing::warn!(error = %e, "dead-letter failed");
        }
    }

    async fn execute(
        &self,
        delivery: &Delivery<TaskEnvelope>,
        events: &TaskEvents,
    ) -> Result<Outcome, RunError> {
        // Subscribe before looking at the history, so a cancel published in
        // between is not missed.
        let mut watch = self
            .bus
            .client()
            .subscribe(events.subject().to_owned())
            .await
            .map_err(|e| {
                RunError::Bus(BusError::Consumer {
                    consumer: "cancel watch".to_owned(),
                    message: e.to_string(),
                })
            })?;
        let last = self
            .bus
            .last_message_on(StreamKind::Events, events.subject())
            .await?;
        if let Some(last) = &last {
            match TaskEvent::decode(last.payload.clone())
                .ok()
                .and_then(|e| e.kind)
            {
                Some(kind) if kind.is_terminal() => {
                    tracing::info!(
                        last = kind.name(),
                        "task already finished; dropping redelivery"
                    );
                    return Ok(Outcome::AlreadyFinished);
                }
                Some(Kind::CancelRequested(_)) => return Ok(Outcome::Cancelled),
                _ => {}
            }
        }
        events
            .publish(
                &format!("started:{}", attempt_of(delivery)),
                Kind::Started(TaskStarted {
                    attempt: attempt_of(delivery),
                    worker: self.config.worker_id.clone(),
                }),
            )
            .await?;

        // A redelivery resumes from the task's journal (its own events).
        let resumed = delivery.delivered > 1 || delivery.payload.attempt_offset > 0;
        let journal = match (&last, resumed) {
            (Some(last), true) => {
                let history = self
                    .bus
                    .history(
                        StreamKind::Events,
                        events.subject(),
                        last.sequence,
                        self.config.journal_read_timeout,
                    )
                    .await?;
                let journal = Journal::from_events(history.into_iter().map(|(_, payload)| payload));
                if !journal.is_empty() {
                    tracing::info!(
                        steps = journal.model_steps.len(),
                        tool_results = journal.results.len(),
                        "resuming from the journal"
                    );
                }
                journal
            }
            _ => Journal::default(),
        };
        let inference = self.agent_loop(delivery, events, journal);
        tokio::pin!(inference);
        // In-progress acks keep the delivery ours during long model calls.
        let mut progress = tokio::time::interval(self.config.shared.bus.task_ack_wait / 3);
        progress.tick().await;
        let deadline = tokio::time::sleep(self.config.task_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                result = &mut inference => return result.map(Outcome::Completed),
                _ = progress.tick() => {
                    if let Err(error) = delivery.in_progress().await {
                        tracing::warn!(%error, "in-progress ack failed");
                    }
                }
                Some(message) = watch.next() => {
                    let kind = TaskEvent::decode(message.payload).ok().and_then(|e| e.kind);
                    if matches!(kind, Some(Kind::CancelRequested(_) | Kind::Cancelled(_))) {
                        tracing::info!("cancel requested while running");
                        return Ok(Outcome::Cancelled);
                    }
                }
                _ = &mut deadline => {
                    return Err(RunError::Retryable(format!(
                        "the task's delivery exceeded {} ms", self.config.task_timeout.as_millis()
                    )));
                }
            }
        }
    }
}
