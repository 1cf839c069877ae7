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

#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    in_flight: Gauge,
    pub time_to_first_token: Histogram,
}

pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            in_flight: Gauge::default(),
            time_to_first_token: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
        };
        registry.register(
            "router_requests",
            "Model requests by API and outcome",
            m.requests.clone(),
        );
        registry.register(
            "router_in_flight",
            "Model requests in flight",
            m.in_flight.clone(),
        );
        registry.register(
            "router_time_to_first_token_seconds",
            "Time to the first streamed token (gRPC face)",
            m.time_to_first_token.clone(),
        );
        m
    }

    pub fn request(&self, api: &str, outcome: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                api: api.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn in_flight_guard(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }
}
