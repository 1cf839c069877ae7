//! Per-request usage and cost: prompt and completion tokens as the backend
//! reported them, priced from the route table's `prices:` section, counted
//! in `router_tokens_total{tenant,model,kind}` and
//! `router_cost_usd_total{tenant,model}` and recorded on the request's
//! `gen_ai.usage.*` span fields. The same place settles the tenant's token
//! reservation, so both happen exactly once, when the answer ends (for a
//! stream: its end, or the client leaving). Cache hits spend no model
//! tokens and are not counted here.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::limits::{Limiter, Reservation, UsageTap, settle};
use crate::metrics::Metrics;
use crate::routes::RoutesError;

/// USD per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_1m: f64,
    pub output_per_1m: f64,
}

impl Price {
    pub fn cost(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.input_per_1m + completion as f64 * self.output_per_1m) / 1e6
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    #[serde(default)]
    input_per_1m: f64,
    #[serde(default)]
    output_per_1m: f64,
}

/// The `prices:` section: model name (or `"*"`) to its price.
pub fn validate(raw: BTreeMap<String, RawPrice>) -> Result<BTreeMap<String, Price>, RoutesError> {
    raw.into_iter()
        .map(|(model, p)| {
            for (field, value) in [
                ("input_per_1m", p.input_per_1m),
                ("output_per_1m", p.output_per_1m),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return Err(RoutesError::Invalid {
                        path: format!("prices.{model}.{field}"),
                        reason: "must be a number of USD, 0 or more".to_owned(),
                    });
                }
            }
            Ok((
                model,
                Price {
                    input_per_1m: p.input_per_1m,
                    output_per_1m: p.output_per_1m,
                },
            ))
        })
        .collect()
}

/// The price of `model`: its own, else the catch-all's.
pub fn price_of(prices: &BTreeMap<String, Price>, model: &str) -> Option<Price> {
    prices
        .get(model)
        .or_else(|| prices.get(crate::routes::CATCH_ALL))
        .copied()
}

/// Who records a call as a generation in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// The router: its span is `<operation> <model>` with the GenAI usage
    /// (callers of the OpenAI-compatible face are apps, or retrieval, that
    /// record no generation of their own).
    Router,
    /// The caller (the agent-worker over the internal gRPC face, whose
    /// `chat` span carries the usage): the router's span is a plain
    /// `route <operation> <model>` span without usage, or a trace would
    /// count every model call's tokens and cost twice (the router's span
    /// is a child of the caller's, and rollups add children).
    Caller,
}

/// Who is charged and where usage is reported.
pub struct Meter {
    pub metrics: Metrics,
    pub tenant: String,
    pub model: String,
    pub price: Option<Price>,
    /// Declares `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`
    /// and `gen_ai.usage.cost` as empty fields when the router records
    /// the generation.
    pub span: tracing::Span,
}

impl Meter {
    /// A meter for `operation` (`chat`, `embeddings`) on `model`, with its
    /// span (a child of the current one; see [`Generation`]).
    pub fn new(
        metrics: &Metrics,
        prices: &BTreeMap<String, Price>,
        tenant: &str,
        model: &str,
        operation: &'static str,
        generation: Generation,
    ) -> Self {
        let span = match generation {
            Generation::Router => tracing::info_span!(
                "gen_ai",
                otel.name = %format!("{operation} {model}"),
                gen_ai.operation.name = operation,
                gen_ai.request.model = %model,
                tenant = %tenant,
                gen_ai.usage.input_tokens = tracing::field::Empty,
                gen_ai.usage.output_tokens = tracing::field::Empty,
                gen_ai.usage.cost = tracing::field::Empty,
            ),
            Generation::Caller => tracing::info_span!(
                "route",
                otel.name = %format!("route {operation} {model}"),
                // Explicit, since a model attribute alone would make the
                // collector (like Langfuse) type it a generation.
                "langfuse.observation.type" = "span",
                agentmesh.route.model = %model,
                tenant = %tenant,
            ),
        };
        Self {
            metrics: metrics.clone(),
            tenant: tenant.to_owned(),
            model: model.to_owned(),
            price: price_of(prices, model),
            span,
        }
    }
}

/// Accounts a request's usage when dropped: settles the reservation and
/// reports tokens and cost.
pub struct Accounting {
    limiter: Limiter,
    reservation: Option<Reservation>,
    pub tap: UsageTap,
    meter: Meter,
}

impl Accounting {
    pub fn new(
        limiter: Limiter,
        reservation: Option<Reservation>,
        tap: UsageTap,
        meter: Meter,
    ) -> Self {
        Self {
            limiter,
            reservation,
            tap,
            meter,
        }
    }
}

impl Drop for Accounting {
    fn drop(&mut self) {
        settle(&self.limiter, self.reservation.take(), self.tap.used());
        let (prompt, completion) = self.tap.usage();
        let m = &self.meter;
        m.metrics
            .tokens(&m.tenant, &m.model, "prompt", prompt.unwrap_or(0));
        m.metrics
            .tokens(&m.tenant, &m.model, "completion", completion);
        // Recording an undeclared field is a no-op: a `Caller` span stays
        // without usage.
        if let Some(prompt) = prompt {
            m.span.record("gen_ai.usage.input_tokens", prompt);
        }
        m.span.record("gen_ai.usage.output_tokens", completion);
        if let Some(price) = m.price {
            let cost = price.cost(prompt.unwrap_or(0), completion);
            m.metrics.cost(&m.tenant, &m.model, cost);
            m.span.record("gen_ai.usage.cost", cost);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
    use super::*;

    #[test]
    fn prices_fall_back_to_the_catch_all_and_reject_negatives() {
        let raw: BTreeMap<String, RawPrice> = serde_yaml::from_str(
            "m: {input_per_1m: 2, output_per_1m: 4}\n\"*\": {input_per_1m: 1}",
        )
        .unwrap();
        let prices = validate(raw).unwrap();
        let m = price_of(&prices, "m").unwrap();
        assert!((m.cost(1_000_000, 500_000) - 4.0).abs() < 1e-9);
        assert_eq!(price_of(&prices, "other").unwrap().output_per_1m, 0.0);
        let bad: BTreeMap<String, RawPrice> =
            serde_yaml::from_str("m: {input_per_1m: -1}").unwrap();
        let err = validate(bad).unwrap_err().to_string();
        assert!(err.starts_with("prices.m.input_per_1m"), "{err}");
    }
}
