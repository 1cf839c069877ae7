//! What the orchestrator measures.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Default)]
pub struct Metrics {
    pub tasks_submitted: Counter,
    /// Terminal task transitions by status.
    pub tasks_finished: Family<Vec<(String, String)>, Counter>,
    pub outbox_published: Counter,
    pub outbox_errors: Counter,
    /// Rows waiting in the outbox after the last relay pass.
    pub outbox_backlog: Gauge,
    pub events_projected: Counter,
    /// Tasks accepted and waiting for admission, per agent (label `agent`):
    /// pending work that is not yet in the agent's TASKS consumer.
    pub admission_queue_depth: Family<Vec<(String, String)>, Gauge>,
    /// Tasks released from the admission queue to TASKS.
    pub tasks_admitted: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "tasks_submitted",
            "Tasks accepted",
            m.tasks_submitted.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that reached a terminal status",
            m.tasks_finished.clone(),
        );
        registry.register(
            "outbox_published",
            "Outbox messages published to JetStream",
            m.outbox_published.clone(),
        );
        registry.register(
            "outbox_errors",
            "Failed relay passes",
            m.outbox_errors.clone(),
        );
        registry.register(
            "outbox_backlog",
            "Outbox rows not yet published",
            m.outbox_backlog.clone(),
        );
        registry.register(
            "events_projected",
            "Task events applied to task rows",
            m.events_projected.clone(),
        );
        registry.register(
            "admission_queue_depth",
            "Tasks accepted and waiting for admission to TASKS, per agent",
            m.admission_queue_depth.clone(),
        );
        registry.register(
            "tasks_admitted",
            "Tasks released from the admission queue to TASKS",
            m.tasks_admitted.clone(),
        );
        m
    }
}
