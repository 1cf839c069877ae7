//! JSON views of the resources for REST and SSE (camelCase, RFC 3339
//! times), and the request bodies REST accepts.

use mesh_proto::{Agent, Task, TaskEvent, TaskStatus, TokenUsage, Tool, task_event::Kind};
use serde::Deserialize;
use serde_json::{Value, json};

fn time(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// `POST /v1/agents/{name}/tasks` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubmitTaskBody {
    /// The task's input: not blank, at most the orchestrator's input limit
    /// (`AGENTMESH_ORCHESTRATOR_MAX_INPUT_BYTES`, 64 KiB by default).
    #[schema(min_length = 1)]
    pub input: String,
    /// Continue this conversation (memory and the agent's concurrency
    /// policy apply per session).
    #[serde(default)]
    #[schema(max_length = 63, pattern = "^([a-z0-9]([a-z0-9-]*[a-z0-9])?)?$")]
    pub session_id: String,
}

pub fn agent(agent: &Agent) -> Value {
    let spec = agent.spec.clone().unwrap_or_default();
    json!({
        "name": agent.name,
        "version": agent.version,
        "spec": mesh_spec::AgentSpecDoc::from_proto(&spec),
        "createdAt": time(agent.created_at_ms),
        "updatedAt": time(agent.updated_at_ms),
    })
}

pub fn tool(tool: &Tool) -> Value {
    let spec = tool.spec.clone().unwrap_or_default();
    json!({
        "name": tool.name,
        "version": tool.version,
        "spec": mesh_spec::ToolSpecDoc::from_proto(&spec),
        "createdAt": time(tool.created_at_ms),
        "updatedAt": time(tool.updated_at_ms),
    })
}

pub fn task(task: &Task) -> Value {
    let usage = task.usage.unwrap_or_default();
    let status = TaskStatus::try_from(task.status).unwrap_or(TaskStatus::Unspecified);
    json!({
        "id": task.id,
        "agent": task.agent,
        "agentVersion": task.agent_version,
        "input": task.input,
        "status": status.rest_name(),
        "output": task.output,
        "error": (!task.error.is_empty()).then_some(&task.error),
        "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens},
        "attempts": task.attempts,
        "sessionId": (!task.session_id.is_empty()).then_some(&task.session_id),
        "approval": task.approval.as_ref().map(approval),
        "steps": task.steps,
        "parentTaskId": (!task.parent_task_id.is_empty()).then_some(&task.parent_task_id),
        "cancelRequested": task.cancel_requested,
        "createdAt": time(task.created_at_ms),
        "updatedAt": time(task.updated_at_ms),
        "startedAt": task.started_at_ms.map(time),
        "finishedAt": task.finished_at_ms.map(time),
        "links": {
            "self": format!("/v1/tasks/{}", task.id),
            "events": format!("/v1/tasks/{}/events", task.id),
        },
    })
}

/// One task event, as the data of an SSE event.
pub fn event(seq: u64, event: &TaskEvent) -> Value {
    let mut body = json!({
        "seq": seq,
        "taskId": event.task_id,
        "at": time(event.at_ms),
    });
    let Some(kind) = &event.kind else {
        return body;
    };
    body["type"] = json!(kind.name());
    let details = match kind {
        Kind::Started(s) => json!({"attempt": s.attempt, "worker": s.worker}),
        Kind::Delta(d) => json!({"attempt": d.attempt, "index": d.index, "content": d.content}),
        Kind::Completed(c) => {
            let usage = c.usage.unwrap_or_default();
            json!({
                "output": c.output,
                "finishReason": c.finish_reason,
                "model": c.model,
                "usage": {"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens},
            })
        }
        Kind::Failed(f) => json!({"error": f.error, "reason": f.reason, "attempts": f.attempts}),
        Kind::CancelRequested(_) => json!({}),
        Kind::Cancelled(c) => json!({"reason": c.reason}),
        Kind::Retrying(r) => {
            json!({"attempt": r.attempt, "error": r.error, "backoffMs": r.backoff_ms})
        }
        Kind::ModelStep(m) => json!({
            "attempt": m.attempt,
            "step": m.step,
            "content": m.content,
            "toolCalls": m.tool_calls.iter().map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments})).collect::<Vec<_>>(),
            "model": m.model,
            "finishReason": m.finish_reason,
            "usage": usage(m.usage.unwrap_or_default()),
        }),
        Kind::ToolCall(t) => {
            let call = t.call.clone().unwrap_or_default();
            json!({
                "attempt": t.attempt,
                "step": t.step,
                "callId": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "idempotencyKey": t.idempotency_key,
            })
        }
        Kind::ApprovalRequested(r) => {
            let mut details = r.approval.as_ref().map(approval).unwrap_or_default();
            details["attempt"] = json!(r.attempt);
            details
        }
        Kind::ApprovalResolved(r) => json!({
            "callId": r.call_id,
            "approved": r.approved,
            "comment": r.comment,
            "by": r.by,
            "timedOut": r.timed_out,
        }),
        Kind::ToolResult(r) => json!({
            "attempt": r.attempt,
            "step": r.step,
            "callId": r.call_id,
            "name": r.name,
            "output": r.output,
            "isError": r.is_error,
            "durationMs": r.duration_ms,
        }),
    };
    if let (Some(body), Some(details)) = (body.as_object_mut(), details.as_object()) {
        body.extend(details.clone());
    }
    body
}

fn usage(usage: TokenUsage) -> Value {
    json!({"inputTokens": usage.input_tokens, "outputTokens": usage.output_tokens})
}

fn approval(approval: &mesh_proto::PendingApproval) -> Value {
    json!({
        "callId": approval.call_id,
        "step": approval.step,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "prompt": approval.prompt,
        "expiresAt": time(approval.expires_at_ms),
        "onTimeout": approval.on_timeout,
    })
}
