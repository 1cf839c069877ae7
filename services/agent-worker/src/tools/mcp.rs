//! `mcp` tools: one tool of an MCP server, over Streamable HTTP, through
//! the official Rust SDK (`rmcp`, client side only, on the worker's own
//! reqwest client).
//!
//! The task's first call of the tool opens an MCP session (`initialize`,
//! then `tools/list` to find the tool by name); the task's later calls of
//! the tool reuse it, and it closes when the task's toolbox is dropped.
//! Sessions are per tool, not per server: two tools of one server may
//! carry different tokens. A session
//! whose transport broke is opened again at the next attempt. Each call
//! carries its idempotency key in `_meta` (`agentmesh.dev/idempotencyKey`)
//! and the task and tenant as headers, like `api` tools.
//!
//! Failures are told to the model, never raised: an unreachable server, a
//! server without the tool, a JSON-RPC error and a result flagged
//! `isError` are all tool errors. Only transport failures are retried (the
//! tool's `retries`); a tool's own failure is not.

use std::collections::HashMap;
use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock, Meta};
use rmcp::service::RunningService;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceError, ServiceExt as _};
use serde_json::Value;

use super::ToolOutput;
use super::api::CallOptions;

/// The `_meta` key of a call's idempotency key.
const IDEMPOTENCY_META: &str = "agentmesh.dev/idempotencyKey";

type Session = Arc<RunningService<RoleClient, ()>>;

pub struct McpTool {
    url: String,
    /// The tool's name on the server.
    remote: String,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// One attempt's outcome.
enum Attempt {
    Done(ToolOutput),
    /// The transport failed: worth another attempt on a new session.
    Retry(String),
}

impl McpTool {
    pub fn new(config: mesh_spec::McpConfig, name: &str) -> Self {
        Self {
            remote: config.tool.unwrap_or_else(|| name.to_owned()),
            url: config.url,
            session: tokio::sync::Mutex::new(None),
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
            let outcome =
                tokio::time::timeout(options.timeout, self.attempt(http, arguments, &options))
                    .await
                    .unwrap_or_else(|_| {
                        Attempt::Retry(format!(
                            "the MCP server did not answer within {} ms",
                            options.timeout.as_millis()
                        ))
                    });
            match outcome {
                Attempt::Done(output) => return output,
                Attempt::Retry(why) => {
                    // Whatever broke, the next attempt starts a new session.
                    self.session.lock().await.take();
                    if policy.is_last(attempt) {
                        let tries = if attempt == 1 {
                            "1 attempt".to_owned()
                        } else {
                            format!("{attempt} attempts")
                        };
                        return ToolOutput::error(format!("{why} (after {tries})"));
                    }
                    tracing::info!(%why, attempt, "mcp tool call failed; retrying");
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
        let session = {
            let mut slot = self.session.lock().await;
            match slot.as_ref() {
                Some(session) => session.clone(),
                None => match self.connect(http, options).await {
                    Ok(session) => slot.insert(session).clone(),
                    Err(outcome) => return outcome,
                },
            }
        };
        let mut meta = Meta::new();
        meta.0.insert(
            IDEMPOTENCY_META.to_owned(),
            Value::String(options.ctx.idempotency_key.to_owned()),
        );
        let mut params = CallToolRequestParams::new(self.remote.clone())
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        params.meta = Some(meta);
        match session.peer().call_tool(params).await {
            Ok(result) => Attempt::Done(render(result)),
            Err(ServiceError::McpError(error)) => Attempt::Done(ToolOutput::error(format!(
                "the MCP server refused the call of {:?}: {}",
                self.remote, error.message
            ))),
            Err(e) => Attempt::Retry(format!("the MCP server at {} failed: {e}", self.url)),
        }
    }

    /// Opens a session and checks that the server has the tool.
    async fn connect(
        &self,
        http: &reqwest::Client,
        options: &CallOptions<'_>,
    ) -> Result<Session, Attempt> {
        let mut headers = HashMap::new();
        for (name, value) in [
            ("x-agentmesh-task", options.ctx.task_id),
            ("x-agentmesh-tenant", options.ctx.tenant),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        let mut config =
            StreamableHttpClientTransportConfig::with_uri(self.url.clone()).custom_headers(headers);
        if let Some(token) = options.bearer {
            config = config.auth_header(token);
        }
        let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
        let session = ().serve(transport).await.map_err(|e| {
            Attempt::Retry(format!(
                "the MCP server at {} could not be reached: {e}",
                self.url
            ))
        })?;
        let tools = session.peer().list_all_tools().await.map_err(|e| {
            Attempt::Retry(format!(
                "the MCP server at {} did not list its tools: {e}",
                self.url
            ))
        })?;
        if !tools.iter().any(|t| t.name == self.remote) {
            let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
            names.sort_unstable();
            return Err(Attempt::Done(ToolOutput::error(format!(
                "the MCP server at {} has no tool named {:?} (it has: {})",
                self.url,
                self.remote,
                names.join(", ")
            ))));
        }
        Ok(Arc::new(session))
    }
}

/// The result as the model reads it: the text blocks, else the
/// structured content; other kinds of content are named, not inlined.
fn render(result: CallToolResult) -> ToolOutput {
    let mut parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block {
            ContentBlock::Text(text) => text.text.clone(),
            ContentBlock::Image(_) => "[image omitted]".to_owned(),
            ContentBlock::Audio(_) => "[audio omitted]".to_owned(),
            ContentBlock::Resource(_) => "[embedded resource omitted]".to_owned(),
            ContentBlock::ResourceLink(link) => format!("[resource {}]", link.uri),
            _ => "[content omitted]".to_owned(),
        })
        .collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    let text = parts.join("\n");
    if result.is_error == Some(true) {
        ToolOutput::error(if text.is_empty() {
            "the MCP tool failed without a message".to_owned()
        } else {
            text
        })
    } else {
        ToolOutput::ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_rendered_for_the_model() {
        let ok: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        assert_eq!(render(ok), ToolOutput::ok("a\nb"));
        let structured: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [], "structuredContent": {"n": 1}
        }))
        .unwrap();
        assert_eq!(render(structured), ToolOutput::ok(r#"{"n":1}"#));
        let failed: CallToolResult = serde_json::from_value(serde_json::json!({
            "content": [{"type": "text", "text": "boom"}], "isError": true
        }))
        .unwrap();
        assert_eq!(render(failed), ToolOutput::error("boom"));
    }
}
