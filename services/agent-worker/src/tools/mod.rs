//! The tools of one task: each resolved tool's spec compiled once (typed
//! config, arguments validator) and called by name with the arguments the
//! model wrote. A tool failure is not a task failure: the model is told
//! what went wrong (as the tool message) and decides what to do next.

mod agent;
mod api;
mod code;
mod mcp;
mod retrieval;

use std::collections::HashMap;
use std::time::Duration;

use mesh_proto::{ResolvedTool, ToolDefinition};
use mesh_spec::{ArgumentsValidator, CODE_PARAMETERS, ToolConfig, is_default_parameters};

use crate::config::ToolLimits;

/// What a tool call produced, as the model will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    pub output: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            is_error: false,
        }
    }

    pub fn error(output: impl Into<String>) -> Self {
        Self {
            output: output.into(),
            is_error: true,
        }
    }
}

/// Identifies one call to the tool; sent as `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    pub idempotency_key: &'a str,
    pub tenant: &'a str,
    pub task_id: &'a str,
    /// Nesting of the calling task (sub-tasks it starts are one deeper).
    pub depth: u32,
}

struct Tool {
    definition: ToolDefinition,
    kind: ToolKind,
    validator: ArgumentsValidator,
    timeout: Duration,
    retries: u32,
    bearer: Option<Secret>,
}

enum ToolKind {
    Api(api::ApiTool),
    Code(code::CodeTool),
    Mcp(mcp::McpTool),
    Retrieval(retrieval::RetrievalTool),
    Agent(agent::AgentTool),
    /// Decided by a person through the API; the loop pauses the task.
    Human(mesh_spec::HumanConfig),
}

/// What a `human` tool call waits for.
#[derive(Debug, Clone)]
pub struct HumanGate {
    pub prompt: String,
    pub timeout: Duration,
    pub on_timeout: String,
}

/// Where the bearer token is read from at call time (never stored).
#[derive(Debug, Clone)]
enum Secret {
    Env(String),
    File(String),
}

/// The connections tools call through, shared by every task of a worker.
#[derive(Clone)]
pub struct ToolClients {
    pub http: reqwest::Client,
    pub retrieval: mesh_proto::retrieval_client::RetrievalClient<tonic::transport::Channel>,
    /// Where `agent` tools submit their sub-tasks.
    pub orchestrator:
        mesh_proto::control_plane_client::ControlPlaneClient<tonic::transport::Channel>,
    /// Where `agent` tools wait for their sub-tasks' ends.
    pub bus: mesh_bus::Bus,
}

pub struct Toolbox {
    tools: HashMap<String, Tool>,
    http: reqwest::Client,
    retrieval: mesh_proto::retrieval_client::RetrievalClient<tonic::transport::Channel>,
    orchestrator: mesh_proto::control_plane_client::ControlPlaneClient<tonic::transport::Channel>,
    bus: mesh_bus::Bus,
    limits: ToolLimits,
    secrets_env: std::sync::Arc<mesh_runtime::Env>,
}

/// The spec of a pinned tool no longer parses (a worker older than the
/// orchestrator, or a type this worker cannot run): no delivery fixes it.
#[derive(Debug, thiserror::Error)]
#[error("tool {name:?}: {reason}")]
pub struct ToolboxError {
    pub name: String,
    pub reason: String,
}

impl Toolbox {
    pub fn new(
        resolved: &[ResolvedTool],
        clients: ToolClients,
        limits: ToolLimits,
        secrets_env: std::sync::Arc<mesh_runtime::Env>,
    ) -> Result<Self, ToolboxError> {
        let mut tools = HashMap::with_capacity(resolved.len());
        for tool in resolved {
            let spec = tool.spec.clone().unwrap_or_default();
            let failed = |reason: String| ToolboxError {
                name: tool.name.clone(),
                reason,
            };
            // A code tool left without parameters takes `{"code": ...}`.
            let parameters_json = match spec.r#type.as_str() {
                "code" if is_default_parameters(&spec.parameters_json) => {
                    CODE_PARAMETERS.to_owned()
                }
                // A retrieval tool left without parameters takes a query.
                "retrieval" if is_default_parameters(&spec.parameters_json) => {
                    retrieval::RETRIEVAL_PARAMETERS.to_owned()
                }
                "agent" if is_default_parameters(&spec.parameters_json) => {
                    agent::AGENT_PARAMETERS.to_owned()
                }
                _ => spec.parameters_json.clone(),
            };
            let validator =
                ArgumentsValidator::new(&parameters_json).map_err(|e| failed(e.to_string()))?;
            let kind = match ToolConfig::parse(&spec.r#type, &spec.config_json)
                .map_err(|e| failed(e.to_string()))?
            {
                ToolConfig::Api(config) => ToolKind::Api(api::ApiTool::new(config, &limits)),
                ToolConfig::Code(config) => {
                    ToolKind::Code(code::CodeTool::new(config, &limits.code))
                }
                ToolConfig::Mcp(config) => ToolKind::Mcp(mcp::McpTool::new(config, &tool.name)),
                ToolConfig::Human(config) => ToolKind::Human(config),
                ToolConfig::Retrieval(config) => {
                    ToolKind::Retrieval(retrieval::RetrievalTool::new(config))
                }
                ToolConfig::Agent(config) => ToolKind::Agent(agent::AgentTool::new(config)),
            };
            let bearer = spec.authentication.as_ref().and_then(|a| {
                if !a.bearer_env.is_empty() {
                    Some(Secret::Env(a.bearer_env.clone()))
                } else if !a.bearer_file.is_empty() {
                    Some(Secret::File(a.bearer_file.clone()))
                } else {
                    None
                }
            });
            let parameters_json = if parameters_json.trim().is_empty() {
                r#"{"type":"object","properties":{}}"#.to_owned()
            } else {
                parameters_json
            };
            tools.insert(
                tool.name.clone(),
                Tool {
                    definition: ToolDefinition {
                        name: tool.name.clone(),
                        description: spec.description.clone(),
                        parameters_json,
                    },
                    kind,
                    validator,
                    timeout: if spec.timeout_ms > 0 {
                        Duration::from_millis(spec.timeout_ms)
                    } else {
                        limits.default_timeout
                    },
                    retries: spec.retries,
                    bearer,
                },
            );
        }
        Ok(Self {
            tools,
            http: clients.http,
            retrieval: clients.retrieval,
            orchestrator: clients.orchestrator,
            bus: clients.bus,
            limits,
            secrets_env,
        })
    }

    /// What the model is offered, in a stable order.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        let mut defs: Vec<ToolDefinition> =
            self.tools.values().map(|t| t.definition.clone()).collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// The approval a `human` tool waits for; `None` for other tools.
    pub fn human_gate(&self, name: &str) -> Option<HumanGate> {
        let tool = self.tools.get(name)?;
        let ToolKind::Human(config) = &tool.kind else {
            return None;
        };
        Some(HumanGate {
            prompt: tool.definition.description.clone(),
            timeout: config
                .timeout
                .as_deref()
                .and_then(mesh_spec::parse_duration_ms)
                .map(Duration::from_millis)
                .unwrap_or(self.limits.default_approval_timeout),
            on_timeout: config
                .on_timeout
                .clone()
                .unwrap_or_else(|| "reject".to_owned()),
        })
    }

    /// Validates the arguments of a call before it is put to a person.
    pub fn check_arguments(&self, name: &str, arguments: &str) -> Result<(), String> {
        match self.tools.get(name) {
            Some(tool) => tool.validator.check(arguments).map(|_| ()),
            None => Err(format!("there is no tool named {name:?}")),
        }
    }

    /// Validates the arguments and calls the tool (with its retries).
    pub async fn call(&self, name: &str, arguments: &str, ctx: CallContext<'_>) -> ToolOutput {
        let Some(tool) = self.tools.get(name) else {
            let mut known: Vec<&str> = self.tools.keys().map(String::as_str).collect();
            known.sort_unstable();
            return ToolOutput::error(format!(
                "there is no tool named {name:?}; the tools are: {}",
                known.join(", ")
            ));
        };
        let arguments = match tool.validator.check(arguments) {
            Ok(arguments) => arguments,
            Err(why) => return ToolOutput::error(why),
        };
        let bearer = match &tool.bearer {
            None => None,
            Some(secret) => match self.read_secret(secret, ctx.tenant).await {
                Ok(token) => Some(token),
                Err(why) => return ToolOutput::error(why),
            },
        };
        let mut output = match &tool.kind {
            ToolKind::Api(api) => {
                api.call(
                    &self.http,
                    &arguments,
                    api::CallOptions {
                        ctx,
                        bearer: bearer.as_deref(),
                        timeout: tool.timeout,
                        retries: tool.retries,
                        retry_base: self.limits.retry_base,
                    },
                )
                .await
            }
            // The loop decides human calls; reaching here is a bug, told
            // to the model rather than a panic.
            ToolKind::Human(_) => ToolOutput::error("a human tool cannot be called directly"),
            ToolKind::Retrieval(search) => {
                search
                    .call(&self.retrieval, ctx.tenant, &arguments, tool.timeout)
                    .await
            }
            ToolKind::Agent(agent) => {
                agent
                    .call(&self.orchestrator, &self.bus, &arguments, ctx, tool.timeout)
                    .await
            }
            ToolKind::Code(code) => code.call(&arguments, tool.timeout).await,
            ToolKind::Mcp(mcp) => {
                mcp.call(
                    &self.http,
                    &arguments,
                    api::CallOptions {
                        ctx,
                        bearer: bearer.as_deref(),
                        timeout: tool.timeout,
                        retries: tool.retries,
                        retry_base: self.limits.retry_base,
                    },
                )
                .await
            }
        };
        if output.output.chars().count() > self.limits.max_output_chars {
            let cut: String = output
                .output
                .chars()
                .take(self.limits.max_output_chars)
                .collect();
            output.output = format!(
                "{cut}\n[output cut at {} characters]",
                self.limits.max_output_chars
            );
        }
        output
    }

    /// The error names the reference, never a value. Only the worker's
    /// tool secrets are reachable: `env` names an
    /// `AGENTMESH_TOOL_SECRET_<NAME>` variable, `file` a file under the
    /// calling tenant's own secrets folder (symlinks and `..` resolved
    /// first), so a tenant's spec can send out neither the mesh's
    /// credentials nor another tenant's.
    async fn read_secret(&self, secret: &Secret, tenant: &str) -> Result<String, String> {
        let token = match secret {
            Secret::Env(var) => self.secrets_env.get(var).cloned().ok_or_else(|| {
                format!(
                    "the tool's token ({}{var}) is not set on this worker",
                    crate::config::TOOL_SECRET_ENV_PREFIX
                )
            })?,
            Secret::File(path) => {
                let folder = self.limits.secrets_dir.join(tenant);
                let unreadable = |e: std::io::Error| {
                    format!("the tool's token file {path} cannot be read: {}", e.kind())
                };
                let real = tokio::fs::canonicalize(path).await.map_err(unreadable)?;
                // The folder itself may be a link (Kubernetes mounts are).
                let folder = tokio::fs::canonicalize(&folder).await.unwrap_or(folder);
                if !real.starts_with(&folder) {
                    return Err(format!(
                        "the tool's token file {path} is not under this tenant's secrets folder {}",
                        self.limits.secrets_dir.join(tenant).display()
                    ));
                }
                tokio::fs::read_to_string(&real).await.map_err(unreadable)?
            }
        };
        let token = token.trim().to_owned();
        if token.is_empty() {
            return Err("the tool's token is empty".to_owned());
        }
        Ok(token)
    }
}
