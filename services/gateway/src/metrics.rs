//! What the gateway measures.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RouteLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub open_streams: Gauge,
    pub ratelimit_rejections: Counter,
    pub ratelimit_errors: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 16))
            }),
            open_streams: Gauge::default(),
            ratelimit_rejections: Counter::default(),
            ratelimit_errors: Counter::default(),
        };
        registry.register(
            "gateway_ratelimit_rejections",
            "Requests refused by a per-tenant rate limit",
            m.ratelimit_rejections.clone(),
        );
        registry.register(
            "gateway_ratelimit_errors",
            "Rate-limit checks that failed open because Redis did not answer",
            m.ratelimit_errors.clone(),
        );
        registry.register("gateway_http_requests", "REST requests", m.requests.clone());
        registry.register(
            "gateway_http_request_duration_seconds",
            "REST request latency (to the response head)",
            m.duration.clone(),
        );
        registry.register(
            "gateway_open_event_streams",
            "SSE and gRPC watch streams open now",
            m.open_streams.clone(),
        );
        m
    }
}
