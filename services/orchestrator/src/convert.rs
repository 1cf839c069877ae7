//! Rows to protobuf resources and back.

use mesh_proto::{Agent, AgentSpec, PendingApproval, Task, TaskStatus, TokenUsage, Tool, ToolSpec};
use mesh_store::orchestrator::{agent, task, tool};

/// Stored as the Agent document's JSON (`mesh_spec::AgentSpecDoc`).
pub fn spec_to_json(spec: &AgentSpec) -> serde_json::Value {
    serde_json::to_value(mesh_spec::AgentSpecDoc::from_proto(spec)).unwrap_or_default()
}

/// Reads a stored spec: the document form, or the backbone's first form
/// (snake_case keys) for rows written before tools existed.
pub fn spec_from_json(value: &serde_json::Value) -> AgentSpec {
    serde_json::from_value::<mesh_spec::AgentSpecDoc>(value.clone())
        .ok()
        .and_then(|doc| doc.to_proto().ok())
        .unwrap_or_else(|| legacy_spec_from_json(value))
}

pub fn tool_spec_to_json(spec: &ToolSpec) -> serde_json::Value {
    serde_json::to_value(mesh_spec::ToolSpecDoc::from_proto(spec)).unwrap_or_default()
}

pub fn tool_spec_from_json(value: &serde_json::Value) -> ToolSpec {
    serde_json::from_value::<mesh_spec::ToolSpecDoc>(value.clone())
        .ok()
        .and_then(|doc| doc.to_proto().ok())
        .unwrap_or_default()
}

pub fn tool_from_row(row: &tool::Model) -> Tool {
    Tool {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
        spec: Some(tool_spec_from_json(&row.spec)),
        version: u64::try_from(row.version).unwrap_or_default(),
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    }
}

#[cfg(test)]
fn legacy_spec_to_json(spec: &AgentSpec) -> serde_json::Value {
    serde_json::json!({
        "model": spec.model,
        "system_prompt": spec.system_prompt,
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        "scaling": spec.scaling.as_ref().map(|s| serde_json::to_value(mesh_scaling::AgentScaling::from(s)).unwrap_or_default()),
    })
}

fn legacy_spec_from_json(value: &serde_json::Value) -> AgentSpec {
    AgentSpec {
        model: value["model"].as_str().unwrap_or_default().to_owned(),
        system_prompt: value["system_prompt"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        temperature: value["temperature"].as_f64().map(|t| t as f32),
        max_tokens: value["max_tokens"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok()),
        scaling: serde_json::from_value::<mesh_scaling::AgentScaling>(value["scaling"].clone())
            .ok()
            .map(|s| (&s).into()),
        ..Default::default()
    }
}

pub fn agent_from_row(row: &agent::Model) -> Agent {
    Agent {
        tenant: row.tenant.clone(),
        name: row.name.clone(),
        spec: Some(spec_from_json(&row.spec)),
        version: u64::try_from(row.version).unwrap_or_default(),
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    }
}

pub fn status_from_row(status: &str) -> TaskStatus {
    TaskStatus::from_rest_name(status).unwrap_or(TaskStatus::Unspecified)
}

pub fn task_from_row(row: &task::Model) -> Task {
    Task {
        id: row.id.to_string(),
        tenant: row.tenant.clone(),
        agent: row.agent.clone(),
        agent_version: u64::try_from(row.agent_version).unwrap_or_default(),
        input: row.input.clone(),
        status: status_from_row(&row.status) as i32,
        output: row.output.clone(),
        error: row.error.clone().unwrap_or_default(),
        usage: Some(TokenUsage {
            input_tokens: u64::try_from(row.input_tokens).unwrap_or_default(),
            output_tokens: u64::try_from(row.output_tokens).unwrap_or_default(),
        }),
        attempts: u32::try_from(row.attempts).unwrap_or_default(),
        cancel_requested: row.cancel_requested,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
        started_at_ms: row.started_at_ms,
        finished_at_ms: row.finished_at_ms,
        session_id: row.session_id.clone(),
        steps: u32::try_from(row.steps).unwrap_or_default(),
        approval: row.approval.as_ref().map(approval_from_json),
        parent_task_id: row.parent_task_id.clone(),
    }
}

pub fn approval_to_json(approval: &PendingApproval) -> serde_json::Value {
    serde_json::json!({
        "callId": approval.call_id,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "prompt": approval.prompt,
        "expiresAtMs": approval.expires_at_ms,
        "onTimeout": approval.on_timeout,
        "step": approval.step,
    })
}

pub fn approval_from_json(value: &serde_json::Value) -> PendingApproval {
    let text = |k: &str| value[k].as_str().unwrap_or_default().to_owned();
    PendingApproval {
        call_id: text("callId"),
        tool: text("tool"),
        arguments: text("arguments"),
        prompt: text("prompt"),
        expires_at_ms: value["expiresAtMs"].as_i64().unwrap_or_default(),
        on_timeout: text("onTimeout"),
        step: value["step"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or_default(),
    }
}

/// Serializes the decisions about one session (submit under the `enqueue`
/// and `reject` policies, release of the next held task) until the
/// transaction ends: on PostgreSQL with a transaction-scoped advisory lock
/// on the session; SQLite serializes writing transactions already.
pub async fn lock_session<C: sea_orm::ConnectionTrait>(
    txn: &C,
    tenant: &str,
    agent: &str,
    session: &str,
) -> Result<(), sea_orm::DbErr> {
    if txn.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
        return Ok(());
    }
    // A stable key: FNV-1a over the three names (DefaultHasher's output
    // may change between Rust releases, and replicas must agree).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in tenant
        .bytes()
        .chain([0])
        .chain(agent.bytes())
        .chain([0])
        .chain(session.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let key = i64::from_ne_bytes(hash.to_ne_bytes());
    txn.query_one_raw(sea_orm::Statement::from_sql_and_values(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [key.into()],
    ))
    .await
    .map(|_| ())
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_and_old_rows_still_read() {
        let spec = AgentSpec {
            model: "m".into(),
            system_prompt: "p".into(),
            temperature: Some(0.5),
            max_steps: 4,
            ..Default::default()
        };
        assert_eq!(spec_from_json(&spec_to_json(&spec)), spec);
        let old = AgentSpec {
            max_steps: 0,
            ..spec.clone()
        };
        assert_eq!(spec_from_json(&legacy_spec_to_json(&old)), old);
    }
}
