//! What the router measures. `router_pool_queue_depth{pool}` and
//! `router_pool_in_flight{pool}` are part of the deploy contract: the GPU
//! pool's KEDA trigger reads them, so their names must not change.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub api: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub pool: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendOutcomeLabels {
    pub pool: String,
    pub backend: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub tenant: String,
    pub model: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantModelLabels {
    pub tenant: String,
    pub model: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// Model tokens used, by tenant, model and kind (prompt, completion).
    tokens: Family<TokenLabels, Counter>,
    /// What those tokens cost, from the route table's price table.
    cost: Family<TenantModelLabels, Counter<f64, AtomicU64>>,
    /// Requests refused by a tenant limit, by the budget that refused
    /// (requests, tokens).
    ratelimited: Family<KindLabels, Counter>,
    /// Redis failures of the tenant limiter (each one let a request through).
    ratelimit_errors: Counter,
    /// Response cache lookups and stores by result (hit, miss, store,
    /// error).
    cache: Family<ResultLabels, Counter>,
    /// Requests running on one backend.
    pub backend_in_flight: Family<BackendLabels, Gauge>,
    /// 1 while a backend is ejected (outlier detection), else 0.
    pub backend_ejected: Family<BackendLabels, Gauge>,
    /// 1 while a backend's readiness probe passes (or before its first
    /// probe), 0 while it fails or its connections are refused.
    pub backend_ready: Family<BackendLabels, Gauge>,
    /// Calls to one backend by outcome (ok, server_error, overloaded,
    /// timeout, unreachable, client_error).
    pub backend_requests: Family<BackendOutcomeLabels, Counter>,
    /// Route-table reloads by result (ok, error).
    pub route_reloads: Family<ResultLabels, Counter>,
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
            tokens: Family::default(),
            cost: Family::default(),
            ratelimited: Family::default(),
            ratelimit_errors: Counter::default(),
            cache: Family::default(),
            backend_in_flight: Family::default(),
            backend_ejected: Family::default(),
            backend_ready: Family::default(),
            backend_requests: Family::default(),
            route_reloads: Family::default(),
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
        registry.register(
            "router_backend_in_flight",
            "Requests running on one backend",
            m.backend_in_flight.clone(),
        );
        registry.register(
            "router_backend_ejected",
            "1 while the backend is ejected after consecutive failures",
            m.backend_ejected.clone(),
        );
        registry.register(
            "router_backend_ready",
            "1 while the backend's readiness probe passes, 0 while it is not ready",
            m.backend_ready.clone(),
        );
        registry.register(
            "router_backend_requests",
            "Calls to one backend by outcome",
            m.backend_requests.clone(),
        );
        registry.register(
            "router_route_reloads",
            "Route-table reloads by result",
            m.route_reloads.clone(),
        );
        registry.register(
            "router_ratelimited",
            "Requests refused by a tenant limit, by budget",
            m.ratelimited.clone(),
        );
        registry.register(
            "router_tokens",
            "Model tokens used, by tenant, model and kind",
            m.tokens.clone(),
        );
        registry.register(
            "router_cost_usd",
            "Cost of the model tokens used, in USD, by tenant and model",
            m.cost.clone(),
        );
        registry.register(
            "router_cache",
            "Response cache lookups and stores by result",
            m.cache.clone(),
        );
        registry.register(
            "router_ratelimit_errors",
            "Tenant limiter Redis failures (the request was let through)",
            m.ratelimit_errors.clone(),
        );
        m
    }

    pub fn ratelimited(&self, kind: &str) {
        self.ratelimited
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn tokens(&self, tenant: &str, model: &str, kind: &str, n: u64) {
        self.tokens
            .get_or_create(&TokenLabels {
                tenant: tenant.to_owned(),
                model: model.to_owned(),
                kind: kind.to_owned(),
            })
            .inc_by(n);
    }

    pub fn cost(&self, tenant: &str, model: &str, usd: f64) {
        self.cost
            .get_or_create(&TenantModelLabels {
                tenant: tenant.to_owned(),
                model: model.to_owned(),
            })
            .inc_by(usd);
    }

    pub fn cache(&self, result: &str) {
        self.cache
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn ratelimit_error(&self) {
        self.ratelimit_errors.inc();
    }

    /// The admission pool `name`, reporting into the pool gauges.
    pub fn pool(
        &self,
        name: &str,
        max_concurrency: usize,
        max_queue: usize,
        queue_timeout: std::time::Duration,
    ) -> crate::admission::Pool {
        let labels = PoolLabels {
            pool: name.to_owned(),
        };
        crate::admission::Pool::new(
            name,
            max_concurrency,
            max_queue,
            queue_timeout,
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

impl Metrics {
    pub fn backend_request(&self, pool: &str, backend: &str, outcome: &str) {
        self.backend_requests
            .get_or_create(&BackendOutcomeLabels {
                pool: pool.to_owned(),
                backend: backend.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn reload(&self, result: &str) {
        self.route_reloads
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}
