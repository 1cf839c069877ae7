//! Prometheus metrics under vLLM's names, so autoscalers and routers that
//! read a real vLLM `/metrics` can be tested against the simulator.
//!
//! prometheus-client 0.26 accepts the `vllm:` colon in metric names and
//! appends `_total` to counters itself, so the registered names below are
//! vLLM's names without that suffix. Every series carries `model_name`.
//! Gauges are computed at scrape time from the admission state rather than
//! tracked incrementally, so they cannot drift.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the Prometheus text format the endpoint serves.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// vLLM's buckets for time to first token, in seconds.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
];

/// vLLM's buckets for end-to-end request latency, in seconds.
const E2E_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0,
];

type FinishedReason = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    running: Gauge,
    waiting: Gauge,
    kv_cache_usage: Gauge<f64, AtomicU64>,
    gpu_cache_usage: Gauge<f64, AtomicU64>,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    request_success: Family<FinishedReason, Counter>,
    time_to_first_token: Histogram,
    e2e_latency: Histogram,
}

impl Metrics {
    pub fn new(model: &str) -> Self {
        let labels = [(Cow::Borrowed("model_name"), Cow::Owned(model.to_owned()))];
        let mut registry = Registry::with_labels(labels.into_iter());
        let metrics = Self {
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_cache_usage: Gauge::default(),
            gpu_cache_usage: Gauge::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            request_success: Family::default(),
            time_to_first_token: Histogram::new(TTFT_BUCKETS.iter().copied()),
            e2e_latency: Histogram::new(E2E_BUCKETS.iter().copied()),
            registry: Registry::default(),
        };
        registry.register(
            "vllm:num_requests_running",
            "Number of requests currently being generated",
            metrics.running.clone(),
        );
        registry.register(
            "vllm:num_requests_waiting",
            "Number of requests waiting for a generation slot",
            metrics.waiting.clone(),
        );
        registry.register(
            "vllm:kv_cache_usage_perc",
            "Simulated KV-cache usage, running requests over max concurrency, 1 means 100 percent",
            metrics.kv_cache_usage.clone(),
        );
        registry.register(
            "vllm:gpu_cache_usage_perc",
            "Same as vllm:kv_cache_usage_perc, under vLLM's older name",
            metrics.gpu_cache_usage.clone(),
        );
        registry.register(
            "vllm:prompt_tokens",
            "Number of prefill tokens processed",
            metrics.prompt_tokens.clone(),
        );
        registry.register(
            "vllm:generation_tokens",
            "Number of generation tokens processed",
            metrics.generation_tokens.clone(),
        );
        registry.register(
            "vllm:request_success",
            "Count of successfully processed requests",
            metrics.request_success.clone(),
        );
        registry.register(
            "vllm:time_to_first_token_seconds",
            "Histogram of time to first token in seconds",
            metrics.time_to_first_token.clone(),
        );
        registry.register(
            "vllm:e2e_request_latency_seconds",
            "Histogram of end to end request latency in seconds",
            metrics.e2e_latency.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn add_prompt_tokens(&self, tokens: u32) {
        self.prompt_tokens.inc_by(u64::from(tokens));
    }

    pub fn add_generation_tokens(&self, tokens: u32) {
        self.generation_tokens.inc_by(u64::from(tokens));
    }

    pub fn observe_time_to_first_token(&self, seconds: f64) {
        self.time_to_first_token.observe(seconds);
    }

    pub fn finish_request(&self, finished_reason: &'static str, e2e_seconds: f64) {
        self.request_success
            .get_or_create(&[("finished_reason", finished_reason)])
            .inc();
        self.e2e_latency.observe(e2e_seconds);
    }

    /// Renders the exposition text, with the gauges set from the admission
    /// state at this instant.
    pub fn render(&self, running: usize, waiting: usize, max_concurrency: usize) -> String {
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        self.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        let usage = if max_concurrency == 0 {
            0.0
        } else {
            (running as f64 / max_concurrency as f64).clamp(0.0, 1.0)
        };
        self.kv_cache_usage.set(usage);
        self.gpu_cache_usage.set(usage);
        let mut text = String::new();
        // Writing into a String only fails if an encoder reports an error,
        // which none of these metric types do.
        if let Err(err) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(error = %err, "failed to encode metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_vllm_names_and_model_label() {
        let metrics = Metrics::new("sim-model");
        metrics.add_prompt_tokens(4);
        metrics.add_generation_tokens(1);
        metrics.observe_time_to_first_token(0.01);
        metrics.finish_request("length", 0.5);
        let text = metrics.render(1, 2, 4);

        for line in [
            r#"vllm:num_requests_running{model_name="sim-model"} 1"#,
            r#"vllm:num_requests_waiting{model_name="sim-model"} 2"#,
            r#"vllm:kv_cache_usage_perc{model_name="sim-model"} 0.25"#,
            r#"vllm:gpu_cache_usage_perc{model_name="sim-model"} 0.25"#,
            r#"vllm:prompt_tokens_total{model_name="sim-model"} 4"#,
            r#"vllm:generation_tokens_total{model_name="sim-model"} 1"#,
            r#"vllm:time_to_first_token_seconds_count{model_name="sim-model"} 1"#,
            r#"vllm:e2e_request_latency_seconds_count{model_name="sim-model"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("vllm:request_success_total{")
                    && l.contains(r#"finished_reason="length""#)
                    && l.contains(r#"model_name="sim-model""#)
                    && l.ends_with(" 1")),
            "{text}"
        );
    }
}
