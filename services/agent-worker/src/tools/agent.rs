//! `agent` tools: another agent of the same tenant as a tool. The call is a
//! sub-task submitted to the orchestrator (so it is queued, scaled, traced
//! and listed like any task, with `parentTaskId` set) and awaited on its
//! event subject. The call's idempotency key is the sub-task's: a parent
//! resumed after a crash finds the sub-task it started instead of starting
//! a second one.
//!
//! The parent holds its worker slot while it waits; an agent that calls
//! itself on a worker with one slot waits until the tool's timeout. Nesting
//! is bounded by the orchestrator (`AGENTMESH_ORCHESTRATOR_MAX_TASK_DEPTH`).

use std::time::Duration;

use futures::StreamExt as _;
use mesh_bus::{Bus, StreamKind, names};
use mesh_proto::control_plane_client::ControlPlaneClient;
use mesh_proto::{SubmitTaskRequest, TaskEvent, task_event::Kind};
use mesh_spec::AgentToolConfig;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{CallContext, ToolOutput};

/// What the model calls an agent tool with when its spec declares no
/// parameters.
pub const AGENT_PARAMETERS: &str = r#"{"type":"object","properties":{"input":{"type":"string","description":"The request for the agent, in words."}},"required":["input"],"additionalProperties":false}"#;

pub struct AgentTool {
    config: AgentToolConfig,
}

impl AgentTool {
    pub fn new(config: AgentToolConfig) -> Self {
        Self { config }
    }

    pub async fn call(
        &self,
        orchestrator: &ControlPlaneClient<Channel>,
        bus: &Bus,
        arguments: &Value,
        ctx: CallContext<'_>,
        timeout: Duration,
    ) -> ToolOutput {
        let Some(input) = arguments["input"].as_str().filter(|i| !i.trim().is_empty()) else {
            return ToolOutput::error("the agent needs a non-empty \"input\"");
        };
        let agent = &self.config.agent;
        let submit = SubmitTaskRequest {
            agent: agent.clone(),
            input: input.to_owned(),
            idempotency_key: ctx.idempotency_key.to_owned(),
            parent_task_id: ctx.task_id.to_owned(),
            depth: ctx.depth.saturating_add(1),
            ..Default::default()
        };
        let mut request = match mesh_runtime::grpc::outgoing(ctx.tenant, submit) {
            Ok(request) => request,
            Err(status) => return ToolOutput::error(status.message().to_owned()),
        };
        request.set_timeout(Duration::from_secs(10));
        let task = match orchestrator.clone().submit_task(request).await {
            Ok(response) => response.into_inner().task.unwrap_or_default(),
            Err(status) => {
                return ToolOutput::error(format!(
                    "agent {agent:?} could not be started: {}",
                    status.message()
                ));
            }
        };
        match tokio::time::timeout(timeout, wait_for_end(bus, ctx.tenant, &task.id)).await {
            Err(_) => ToolOutput::error(format!(
                "agent {agent:?} (task {}) did not finish within {} ms",
                task.id,
                timeout.as_millis()
            )),
            Ok(Err(why)) => ToolOutput::error(format!("waiting for agent {agent:?}: {why}")),
            Ok(Ok(Kind::Completed(done))) => ToolOutput::ok(
                json!({"taskId": task.id, "agent": agent, "output": done.output}).to_string(),
            ),
            Ok(Ok(Kind::Failed(failed))) => ToolOutput::error(format!(
                "agent {agent:?} (task {}) failed: {}",
                task.id, failed.error
            )),
            Ok(Ok(_)) => {
                ToolOutput::error(format!("agent {agent:?} (task {}) was cancelled", task.id))
            }
        }
    }
}

/// The sub-task's terminal event: subscribe first, then look at what is
/// stored, so an end published in between is not missed.
async fn wait_for_end(bus: &Bus, tenant: &str, task_id: &str) -> Result<Kind, String> {
    let subject = names::event_subject(tenant, task_id).map_err(|e| e.to_string())?;
    let mut live = bus
        .client()
        .subscribe(subject.clone())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(last) = bus
        .last_message_on(StreamKind::Events, &subject)
        .await
        .map_err(|e| e.to_string())?
        && let Some(kind) = TaskEvent::decode(last.payload).ok().and_then(|e| e.kind)
        && kind.is_terminal()
    {
        return Ok(kind);
    }
    while let Some(message) = live.next().await {
        if let Some(kind) = TaskEvent::decode(message.payload).ok().and_then(|e| e.kind)
            && kind.is_terminal()
        {
            return Ok(kind);
        }
    }
    Err("the event subscription ended".to_owned())
}
