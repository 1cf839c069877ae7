//! `api` tools: one HTTP request per call, built from the validated
//! arguments (JSON body, or the query string for GET and DELETE), with the
//! call's idempotency key, a per-attempt timeout, retries with jittered
//! backoff on 5xx, 429 and transport errors, and a bound on the response
//! size that is enforced while reading, not after.

use std::time::Duration;

use futures::StreamExt as _;
use mesh_spec::ApiConfig;
use serde_json::Value;

use super::{CallContext, ToolOutput};
use crate::config::ToolLimits;

pub struct ApiTool {
    config: ApiConfig,
    max_response_bytes: u64,
}

pub struct CallOptions<'a> {
    pub ctx: CallContext<'a>,
    pub bearer: Option<&'a str>,
    pub timeout: Duration,
    pub retries: u32,
    pub retry_base: Duration,
}

/// One attempt's outcome.
enum Attempt {
    Done(ToolOutput),
    /// Worth another attempt (the error text, if none is left).
    Retry(String),
}

impl ApiTool {
    pub fn new(config: ApiConfig, limits: &ToolLimits) -> Self {
        let max_response_bytes = config
            .max_response_bytes
            .unwrap_or(limits.max_response_bytes)
            .min(limits.max_response_bytes);
        Self {
            config,
            max_response_bytes,
        }
    }

    pub async fn call(
        &self,
        http: &reqwest::Client,
        arguments: &Value,
        options: CallOptions<'_>,
    ) -> ToolOutput {
        let policy = mesh_bus::RetryPolicy {
            max_deliver: options.retries + 1,
            base: options.retry_base,
            max: options.retry_base.saturating_mul(32),
        };
        let mut attempt = 1;
        loop {
            match self.attempt(http, arguments, &options).await {
                Attempt::Done(output) => return output,
                Attempt::Retry(why) if policy.is_last(attempt) => {
                    let tries = if attempt == 1 {
                        "1 attempt".to_owned()
                    } else {
                        format!("{attempt} attempts")
                    };
                    return ToolOutput::error(format!("{why} (after {tries})"));
                }
                Attempt::Retry(why) => {
                    tracing::info!(%why, attempt, "tool call failed; retrying");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        arguments: &Value,
        options: &CallOptions<'_>,
    ) -> Attempt {
        let method = reqwest::Method::from_bytes(self.config.method.as_bytes())
            .unwrap_or(reqwest::Method::POST);
        let mut request = http
            .request(method.clone(), &self.config.endpoint)
            .timeout(options.timeout)
            .header("Idempotency-Key", options.ctx.idempotency_key)
            .header("X-Agentmesh-Task", options.ctx.task_id)
            .header("X-Agentmesh-Tenant", options.ctx.tenant);
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = options.bearer {
            request = request.bearer_auth(token);
        }
        request = if matches!(method, reqwest::Method::GET | reqwest::Method::DELETE) {
            request.query(&query_pairs(arguments))
        } else {
            request.json(arguments)
        };
        let mut headers = reqwest::header::HeaderMap::new();
        mesh_telemetry::inject_http(&mut headers);
        request = request.headers(headers);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Attempt::Retry(format!(
                    "the tool did not answer within {} ms",
                    options.timeout.as_millis()
                ));
            }
            Err(e) => {
                return Attempt::Retry(format!(
                    "the tool could not be reached: {}",
                    transport_error(&e)
                ));
            }
        };
        let status = response.status();
        let body = match self.read_body(response).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Attempt::Done(ToolOutput::error(format!(
                    "the tool's response exceeds the limit of {} bytes",
                    self.max_response_bytes
                )));
            }
            Err(BodyError::Broken(why)) => {
                return Attempt::Retry(format!("the tool's response broke off: {why}"));
            }
        };
        if status.is_success() {
            return Attempt::Done(ToolOutput::ok(body));
        }
        let why = format!(
            "the tool answered HTTP {}: {}",
            status.as_u16(),
            snippet(&body)
        );
        if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Attempt::Retry(why)
        } else {
            Attempt::Done(ToolOutput::error(why))
        }
    }

    async fn read_body(&self, response: reqwest::Response) -> Result<String, BodyError> {
        if response
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes)
        {
            return Err(BodyError::TooLarge);
        }
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| BodyError::Broken(transport_error(&e)))?;
            if body.len() as u64 + chunk.len() as u64 > self.max_response_bytes {
                return Err(BodyError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

enum BodyError {
    TooLarge,
    Broken(String),
}

/// The root cause, without the URL (it may carry a query string).
fn transport_error(e: &reqwest::Error) -> String {
    let mut source: &dyn std::error::Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

fn snippet(body: &str) -> String {
    const MAX: usize = 512;
    if body.chars().count() <= MAX {
        body.to_owned()
    } else {
        format!("{}...", body.chars().take(MAX).collect::<String>())
    }
}

/// Top-level arguments as query pairs: scalars as text, anything else as
/// its JSON.
fn query_pairs(arguments: &Value) -> Vec<(String, String)> {
    arguments
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_flatten_scalars() {
        let pairs =
            query_pairs(&serde_json::json!({"city": "Oslo", "days": 3, "tags": ["a"], "x": null}));
        assert_eq!(
            pairs,
            vec![
                ("city".into(), "Oslo".into()),
                ("days".into(), "3".into()),
                ("tags".into(), r#"["a"]"#.into())
            ]
        );
    }
}
