//! What the router measures. Pool gauges (queue depth per pool) arrive
//! with routing pools in the router issue.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// Requests waiting for a backend slot, per pool (scales the GPU pool).
    pub pool_queue_depth: Family<PoolLabels, Gauge>,
    /// Requests running on the pool's backends.
    pub pool_in_flight: Family<PoolLabels, Gauge>,
    requests: Family<RequestLabels, Counter>,
    pub time_to_first_token: Histogram,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            pool_queue_depth: Family::default(),
            pool_in_flight: Family::default(),
            requests: Family::default(),
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        registry.register(
            "router_pool_queue_depth",
            "Requests waiting for a backend slot, per pool",
            m.pool_queue_depth.clone(),
        );
        registry.register(
            "router_pool_in_flight",
            "Requests running on the pool's backends",
            m.pool_in_flight.clone(),
        );
        registry.register(
            "router_requests",
            "Model requests by API and outcome",
            m.requests.clone(),
        );
        registry.register(
            "router_time_to_first_token_seconds",
            "Time to the first streamed token (gRPC face)",
            m.time_to_first_token.clone(),
        );
        m
    }

    /// The admission pool `name`, reporting into the pool gauges.
    pub fn pool(&self, name: &str, config: &crate::Config) -> crate::admission::Pool {
        let labels = PoolLabels {
            pool: name.to_owned(),
        };
        crate::admission::Pool::new(
            name,
            config.max_concurrency,
            config.max_queue,
            config.queue_timeout,
            self.pool_queue_depth.get_or_create(&labels).clone(),
            self.pool_in_flight.get_or_create(&labels).clone(),
        )
    }

    pub fn request(&self, api: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                api: api.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}
