//! Forwarding: every span the collector accepted, re-exported to another
//! OTLP endpoint (`AGENTMESH_TRACES_FORWARD_OTLP_URL`, OTLP/HTTP protobuf),
//! for a platform that keeps its own Tempo, Jaeger, Langfuse or vendor
//! backend beside agentmesh's store.
//!
//! It runs in the **writer**, not the receiver: the writer holds each batch
//! as a durable TRACES message until it acks, so a forward that has not
//! finished when the process dies is redone on redelivery (at least once),
//! while the receiver answers its client as soon as the batch is enqueued
//! and never waits on the forward target (a slow or dead target can never
//! block or fail ingest). The writer forwards a batch concurrently with
//! storing it and acks when both are done; storing decides the ack, the
//! forward is retried a bounded number of times (OTLP's retryable answers
//! 429, 502, 503, 504 and transport errors, with doubling backoff; the
//! message is marked in progress between tries so JetStream does not
//! redeliver it meanwhile), then given up and counted. A stored batch is
//! never held back, re-stored or dead-lettered because the forward failed.
//!
//! Each request carries the batch's tenant in `agentmesh-tenant` (what
//! another agentmesh collector reads) and the operator's extra headers
//! (`AGENTMESH_TRACES_FORWARD_HEADERS`, `key=value,...` as
//! `OTEL_EXPORTER_OTLP_HEADERS` spells them, e.g. a vendor's API key).
//! Another agentmesh collector honours that tenant only with a service
//! token: `AGENTMESH_TRACES_FORWARD_SERVICE_TOKEN=true` sends this
//! collector's (off by default: the mesh's token never goes to a vendor).
//! Plain `http://` only: the workspace's HTTP client has no TLS yet.

use std::future::Future;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use mesh_runtime::env::{self, ConfigError, Env};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prometheus_client::metrics::counter::Counter;
use prost::Message as _;

/// Where and how to forward; `None` from [`ForwardConfig::from_env`] when
/// forwarding is off.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// The endpoint's full URL (`http://tempo:4318/v1/traces`).
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Tries per batch, the first included (>= 1).
    pub attempts: u32,
    /// Limit of one try.
    pub timeout: Duration,
    /// Wait before the second try; doubles per try up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Send this process's service token (the target is another agentmesh
    /// collector on the same mesh key).
    pub service_token: bool,
}

const PREFIX: &str = "AGENTMESH_TRACES_FORWARD_";

fn invalid(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var: format!("{PREFIX}{name}"),
        reason: reason.into(),
    }
}

/// `key=value,key2=value2`, values may contain `=`; spaces around are trimmed.
pub fn parse_headers(raw: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut out = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let name = HeaderName::try_from(name.trim())
            .map_err(|_| format!("{:?} is not a header name", name.trim()))?;
        let value = HeaderValue::try_from(value.trim())
            .map_err(|_| format!("the value of {name} is not a header value"))?;
        out.push((name, value));
    }
    Ok(out)
}

impl ForwardConfig {
    pub fn from_env(environment: &Env) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| format!("{PREFIX}{name}");
        let Some(url) = env::optional(environment, &var("OTLP_URL")) else {
            return Ok(None);
        };
        let parsed = reqwest::Url::parse(&url).map_err(|e| invalid("OTLP_URL", e.to_string()))?;
        if parsed.scheme() != "http" || parsed.host_str().is_none() {
            return Err(invalid(
                "OTLP_URL",
                "must be an http:// URL with a host (no TLS client yet)",
            ));
        }
        let headers = parse_headers(&env::string_or(environment, &var("HEADERS"), ""))
            .map_err(|e| invalid("HEADERS", e))?;
        let attempts: u32 = env::parse_or(environment, &var("ATTEMPTS"), 5)?;
        if attempts == 0 {
            return Err(invalid("ATTEMPTS", "must be at least 1"));
        }
        let config = Self {
            url,
            headers,
            attempts,
            timeout: env::millis_or(environment, &var("TIMEOUT_MS"), Duration::from_secs(5))?,
            backoff: env::millis_or(environment, &var("BACKOFF_MS"), Duration::from_millis(200))?,
            max_backoff: env::millis_or(
                environment,
                &var("MAX_BACKOFF_MS"),
                Duration::from_secs(5),
            )?,
            service_token: env::parse_or(environment, &var("SERVICE_TOKEN"), false)?,
        };
        if config.timeout.is_zero() {
            return Err(invalid("TIMEOUT_MS", "must be positive"));
        }
        Ok(Some(config))
    }

    /// The wait before try `n + 1` (n >= 1).
    pub fn backoff_after(&self, n: u32) -> Duration {
        let factor = 2_u32.saturating_pow(n.saturating_sub(1));
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ForwardMetrics {
    /// Spans the target accepted.
    pub forwarded: Counter,
    /// Tries answered with a retryable failure and tried again.
    pub retries: Counter,
    /// Batches given up (non-retryable answer, or out of tries).
    pub failures: Counter,
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward target answered {status}")]
    Refused { status: StatusCode },
    #[error("forward failed after {attempts} tries: {last}")]
    Exhausted { attempts: u32, last: String },
}

#[derive(Debug, Clone)]
pub struct Forwarder {
    http: reqwest::Client,
    config: ForwardConfig,
    pub metrics: ForwardMetrics,
}

/// OTLP/HTTP's retryable answers.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

impl Forwarder {
    pub fn new(config: ForwardConfig, metrics: ForwardMetrics) -> Self {
        Self {
            http: reqwest::Client::new(),
            config,
            metrics,
        }
    }

    /// Sends one batch of `tenant`, retrying as configured; `still_working`
    /// runs before each retry (the writer extends its ack deadline there).
    pub async fn forward<F, Fut>(
        &self,
        tenant: &str,
        request: &ExportTraceServiceRequest,
        still_working: F,
    ) -> Result<(), ForwardError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let spans: usize = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let body = bytes::Bytes::from(request.encode_to_vec());
        let mut last = String::new();
        for attempt in 1..=self.config.attempts {
            if attempt > 1 {
                self.metrics.retries.inc();
                still_working().await;
                tokio::time::sleep(self.config.backoff_after(attempt - 1)).await;
            }
            let mut call = self
                .http
                .post(&self.config.url)
                .timeout(self.config.timeout)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .header(mesh_runtime::grpc::TENANT_METADATA, tenant)
                .body(body.clone());
            for (name, value) in &self.config.headers {
                call = call.header(name, value);
            }
            // Without a credential the target refuses (401), which counts
            // as a failed forward like any refusal.
            if self.config.service_token
                && let Ok(token) = mesh_runtime::service_auth::token()
            {
                call = call.header(mesh_runtime::service_auth::TOKEN_HEADER, token);
            }
            match call.send().await {
                Ok(response) if response.status().is_success() => {
                    self.metrics.forwarded.inc_by(spans as u64);
                    return Ok(());
                }
                Ok(response) if !retryable(response.status()) => {
                    self.metrics.failures.inc();
                    return Err(ForwardError::Refused {
                        status: response.status(),
                    });
                }
                Ok(response) => last = format!("answered {}", response.status()),
                Err(error) => last = error.to_string(),
            }
        }
        self.metrics.failures.inc();
        Err(ForwardError::Exhausted {
            attempts: self.config.attempts,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn off_unless_a_url_is_set_and_every_setting_is_checked() {
        assert!(ForwardConfig::from_env(&Env::new()).unwrap().is_none());
        let on = ForwardConfig::from_env(&env(&[
            (
                "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                "http://tempo:4318/v1/traces",
            ),
            (
                "AGENTMESH_TRACES_FORWARD_HEADERS",
                "authorization=Basic a2V5=, x-scope-orgid = acme",
            ),
            ("AGENTMESH_TRACES_FORWARD_ATTEMPTS", "3"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(on.attempts, 3);
        assert_eq!(on.headers.len(), 2);
        assert_eq!(on.headers[0].1, "Basic a2V5=");
        assert_eq!(on.headers[1].0, "x-scope-orgid");
        for (pairs, var) in [
            (
                vec![("AGENTMESH_TRACES_FORWARD_OTLP_URL", "tempo:4318")],
                "OTLP_URL",
            ),
            (
                vec![(
                    "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                    "https://tempo/v1/traces",
                )],
                "OTLP_URL",
            ),
            (
                vec![
                    (
                        "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                        "http://tempo/v1/traces",
                    ),
                    ("AGENTMESH_TRACES_FORWARD_HEADERS", "novalue"),
                ],
                "HEADERS",
            ),
            (
                vec![
                    (
                        "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                        "http://tempo/v1/traces",
                    ),
                    ("AGENTMESH_TRACES_FORWARD_ATTEMPTS", "0"),
                ],
                "ATTEMPTS",
            ),
            (
                vec![
                    (
                        "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                        "http://tempo/v1/traces",
                    ),
                    ("AGENTMESH_TRACES_FORWARD_TIMEOUT_MS", "0"),
                ],
                "TIMEOUT_MS",
            ),
        ] {
            let err = ForwardConfig::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(var), "{pairs:?}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ForwardConfig {
            url: String::new(),
            headers: Vec::new(),
            attempts: 10,
            timeout: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            service_token: false,
        };
        let waits: Vec<u128> = (1..=4)
            .map(|n| config.backoff_after(n).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        assert_eq!(config.backoff_after(200), Duration::from_millis(350));
    }

    #[test]
    fn only_otlp_retryable_answers_are_retried() {
        for code in [429, 502, 503, 504] {
            assert!(retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 404, 413, 415, 500] {
            assert!(!retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
