//! What the worker measures (OpenTelemetry GenAI-flavoured names).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub agent: String,
    pub outcome: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<AgentLabels, Counter>,
    pub errors: Family<OutcomeLabels, Counter>,
    pub duration: Family<AgentLabels, Histogram>,
    pub active: Family<AgentLabels, Gauge>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 16))
            }),
            active: Family::default(),
        };
        registry.register(
            "agent_request",
            "Task deliveries handled",
            m.requests.clone(),
        );
        registry.register(
            "agent_request_errors",
            "Task deliveries that did not complete, by outcome",
            m.errors.clone(),
        );
        registry.register(
            "agent_request_duration_seconds",
            "Time from delivery to the task's outcome",
            m.duration.clone(),
        );
        registry.register(
            "agent_active_sessions",
            "Tasks being run now",
            m.active.clone(),
        );
        m
    }
}
