//! The internal `ControlPlane` gRPC API: agents and tasks of the calling
//! tenant (from `agentmesh-tenant` metadata). Every query is filtered by
//! tenant; a row of another tenant is indistinguishable from a missing one.

use mesh_bus::{Bus, names};
use mesh_proto::control_plane_server::ControlPlane;
use mesh_proto::{
    Agent, AgentSpec, ApplyAgentRequest, ApplyAgentResponse, ApplyToolRequest, ApplyToolResponse,
    CancelTaskRequest, ConcurrencyPolicy, GetAgentRequest, GetTaskRequest, GetToolRequest,
    ListTasksRequest, ListTasksResponse, ListToolsRequest, ListToolsResponse,
    ResolveApprovalRequest, ResolvedTool, SubmitTaskRequest, SubmitTaskResponse, Task,
    TaskEnvelope, TaskEvent, TaskStatus, Tool, task_event,
};
use mesh_runtime::grpc::{server_span, tenant_of};
use mesh_store::orchestrator::{agent, agent_version, task, tool, tool_version};
use prost::Message as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::Limits;
use crate::convert::{
    agent_from_row, now_ms, spec_from_json, spec_to_json, task_from_row, tool_from_row,
    tool_spec_from_json, tool_spec_to_json,
};
use crate::metrics::Metrics;
use crate::outbox::{self, RelayHandle};

pub struct ControlService {
    db: DatabaseConnection,
    bus: Bus,
    relay: RelayHandle,
    limits: Limits,
    metrics: Metrics,
    /// Fair admission and the tenant quotas at submission.
    admission: crate::admission::Admission,
    quota_defaults: crate::config::QuotaDefaults,
}

impl ControlService {
    pub fn new(
        db: DatabaseConnection,
        bus: Bus,
        relay: RelayHandle,
        limits: Limits,
        metrics: Metrics,
        admission: crate::admission::Admission,
        quota_defaults: crate::config::QuotaDefaults,
    ) -> Self {
        Self {
            db,
            bus,
            relay,
            limits,
            metrics,
            admission,
            quota_defaults,
        }
    }
}

fn db_error(error: DbErr) -> Status {
    // Two replicas applying the same new agent at once: one wins, the
    // other is told to retry rather than that the store is down.
    if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        return Status::aborted("a concurrent change to the same resource won; retry");
    }
    tracing::error!(%error, "database error");
    Status::unavailable("the task store is unavailable")
}

pub(crate) fn field_error(error: mesh_spec::FieldError) -> Status {
    invalid(&error.path, error.message)
}

pub(crate) fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

/// PostgreSQL stores no NUL (U+0000) in `text` or `jsonb`: a string that
/// holds one is refused here, naming the field, rather than failing the
/// write later as if the store were down.
pub(crate) fn no_nul(field: &str, value: &str) -> Result<(), Status> {
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL (\\u0000)"));
    }
    Ok(())
}

/// [`no_nul`] for every string (keys included) in a JSON document, naming
/// the path of the first that holds a NUL (`spec.tools[2].description`).
pub(crate) fn no_nul_in_json(path: &str, value: &serde_json::Value) -> Result<(), Status> {
    match value {
        serde_json::Value::String(text) => no_nul(path, text),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| no_nul_in_json(&format!("{path}[{i}]"), item)),
        serde_json::Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let at = format!("{path}.{key}");
            no_nul(&at, key)?;
            no_nul_in_json(&at, item)
        }),
        _ => Ok(()),
    }
}

fn validate_name(field: &str, kind: &'static str, value: &str) -> Result<(), Status> {
    names::validate(kind, value).map_err(|e| match e {
        mesh_bus::BusError::InvalidName { reason, .. } => invalid(field, reason),
        other => invalid(field, other),
    })
}

fn parse_task_id(field: &str, id: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(id).map_err(|_| invalid(field, format!("{id:?} is not a valid UUID")))
}

impl ControlService {
    fn validate_spec(&self, spec: &AgentSpec) -> Result<(), Status> {
        let model = spec.model.trim();
        if model.is_empty() {
            return Err(invalid("spec.model", "must not be empty"));
        }
        if model.len() > self.limits.max_model_name_bytes {
            return Err(invalid(
                "spec.model",
                format!("at most {} bytes", self.limits.max_model_name_bytes),
            ));
        }
        if spec.system_prompt.len() > self.limits.max_system_prompt_bytes {
            return Err(invalid(
                "spec.system_prompt",
                format!(
                    "{} bytes exceeds the limit of {}",
                    spec.system_prompt.len(),
                    self.limits.max_system_prompt_bytes
                ),
            ));
        }
        if let Some(t) = spec.temperature
            && !(t.is_finite() && (0.0..=2.0).contains(&t))
        {
            return Err(invalid("spec.temperature", "must be between 0 and 2"));
        }
        if let Some(scaling) = &spec.scaling
            && let Err((field, why)) = mesh_scaling::AgentScaling::from(scaling).validate()
        {
            return Err(invalid(&format!("spec.scaling.{field}"), why));
        }
        if let Some(m) = spec.max_tokens
            && (m == 0 || m > self.limits.max_tokens_ceiling)
        {
            return Err(invalid(
                "spec.max_tokens",
                format!("must be between 1 and {}", self.limits.max_tokens_ceiling),
            ));
        }
        mesh_spec::validate_agent_spec(spec, &self.limits.spec).map_err(field_error)?;
        Ok(())
    }

    /// The agent's tools as a task runs them: references resolved to the
    /// tool's current version (pinned in the envelope), inline ones as is.
    async fn resolve_tools<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        tenant: &str,
        spec: &AgentSpec,
    ) -> Result<Vec<ResolvedTool>, Status> {
        let mut resolved = Vec::with_capacity(spec.tools.len());
        for (i, t) in spec.tools.iter().enumerate() {
            if t.r#ref.is_empty() {
                resolved.push(ResolvedTool {
                    name: t.name.clone(),
                    spec: t.inline.clone(),
                    version: 0,
                });
                continue;
            }
            let row = tool::Entity::find()
                .filter(tool::Column::Tenant.eq(tenant))
                .filter(tool::Column::Name.eq(&t.r#ref))
                .one(db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "spec.tools[{i}].ref: tool {:?} not found; apply it first",
                        t.r#ref
                    ))
                })?;
            resolved.push(ResolvedTool {
                name: row.name.clone(),
                spec: Some(tool_spec_from_json(&row.spec)),
                version: u64::try_from(row.version).unwrap_or_default(),
            });
        }
        Ok(resolved)
    }

    /// Marks a task cancel-requested and queues the events that say so: a
    /// worker holding it stops on `cancel_requested`; a task nobody runs
    /// yet is cancelled at once (a worker that picks it up later sees the
    /// terminal event and drops it).
    async fn request_cancel<C: sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        row: task::Model,
        reason: &str,
    ) -> Result<Vec<mesh_store::orchestrator::outbox::Model>, Status> {
        let tenant = row.tenant.clone();
        let status = crate::convert::status_from_row(&row.status);
        let task_id = row.id.to_string();
        let subject = names::event_subject(&tenant, &task_id).map_err(|e| invalid("id", e))?;
        let now = now_ms();
        let mut active: task::ActiveModel = row.into();
        active.cancel_requested = Set(true);
        active.updated_at_ms = Set(now);
        let mut queued = vec![
            outbox::enqueue(
                txn,
                &tenant,
                subject.clone(),
                format!("{task_id}:cancel-requested"),
                &event(
                    &tenant,
                    &task_id,
                    task_event::Kind::CancelRequested(Default::default()),
                ),
            )
            .await
            .map_err(db_error)?,
        ];
        // Nobody runs a queued task, nor one paused for an approval.
        if matches!(status, TaskStatus::Queued | TaskStatus::AwaitingApproval) {
            active.status = Set(TaskStatus::Cancelled.rest_name().to_owned());
            active.finished_at_ms = Set(Some(now));
            active.pending_envelope = Set(None);
            active.approval = Set(None);
            active.approval_expires_at_ms = Set(None);
            queued.push(
                outbox::enqueue(
                    txn,
                    &tenant,
                    subject,
                    terminal_msg_id(&task_id),
                    &event(
                        &tenant,
                        &task_id,
                        task_event::Kind::Cancelled(mesh_proto::TaskCancelled {
                            reason: reason.to_owned(),
                        }),
                    ),
                )
                .await
                .map_err(db_error)?,
            );
        }
        active.update(txn).await.map_err(db_error)?;
        Ok(queued)
    }

    /// Decides the tool call a paused task waits on: the decision is
    /// journaled on the task's events and the task is dispatched again
    /// (from its stored envelope, carrying the decision), in one commit.
    pub async fn resolve_approval(
        &self,
        tenant: &str,
        id: Uuid,
        call_id: &str,
        decision: mesh_proto::ApprovalResolved,
    ) -> Result<task::Model, Status> {
        let txn = mesh_store::begin_write(&self.db).await.map_err(db_error)?;
        let row = task::Entity::find_by_id(id)
            .filter(task::Column::Tenant.eq(tenant))
            .one(&txn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("task {id} not found")))?;
        let status = crate::convert::status_from_row(&row.status);
        let pending = row
            .approval
            .as_ref()
            .map(crate::convert::approval_from_json)
            .filter(|_| status == TaskStatus::AwaitingApproval)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "task {id} is {} and awaits no approval",
                    status.rest_name()
                ))
            })?;
        if !call_id.is_empty() && call_id != pending.call_id {
            return Err(invalid(
                "call_id",
                format!(
                    "the task awaits call {:?}, not {call_id:?}",
                    pending.call_id
                ),
            ));
        }
        let mut envelope = row
            .envelope
            .as_deref()
            .map(TaskEnvelope::decode)
            .transpose()
            .map_err(|e| Status::internal(format!("stored envelope of {id}: {e}")))?
            .ok_or_else(|| Status::internal(format!("task {id} has no stored envelope")))?;
        let decision = mesh_proto::ApprovalResolved {
            call_id: pending.call_id.clone(),
            ..decision
        };
        envelope.attempt_offset = u32::try_from(row.attempts).unwrap_or_default();
        envelope.resolution = Some(decision.clone());
        let task_id = id.to_string();
        let events_subject =
            names::event_subject(tenant, &task_id).map_err(|e| invalid("id", e))?;
        let task_subject =
            names::task_subject(tenant, &row.agent).map_err(|e| invalid("agent", e))?;
        let key = format!("{task_id}:approval:{}", pending.call_id);
        let queued = vec![
            outbox::enqueue(
                &txn,
                tenant,
                events_subject,
                key.clone(),
                &event(
                    tenant,
                    &task_id,
                    task_event::Kind::ApprovalResolved(decision),
                ),
            )
            .await
            .map_err(db_error)?,
            outbox::enqueue(
                &txn,
                tenant,
                task_subject,
                format!("{key}:resume"),
                &envelope,
            )
            .await
            .map_err(db_error)?,
        ];
        let mut active: task::ActiveModel = row.into();
        active.status = Set(TaskStatus::Queued.rest_name().to_owned());
        active.approval = Set(None);
        active.approval_expires_at_ms = Set(None);
        active.updated_at_ms = Set(now_ms());
        let row = active.update(&txn).await.map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        self.relay.committed(queued);
        tracing::info!(task_id = %id, call_id = %pending.call_id, "approval resolved; task dispatched again");
        Ok(row)
    }

    /// Resolves every approval whose deadline has passed with its
    /// `on_timeout` outcome. Returns how many it resolved.
    pub async fn expire_approvals(&self, limit: u64) -> Result<usize, Status> {
        let expired = task::Entity::find()
            .filter(task::Column::ApprovalExpiresAtMs.lte(now_ms()))
            .filter(task::Column::Status.eq(TaskStatus::AwaitingApproval.rest_name()))
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut resolved = 0;
        for row in expired {
            let pending = row
                .approval
                .as_ref()
                .map(crate::convert::approval_from_json)
                .unwrap_or_default();
            let decision = mesh_proto::ApprovalResolved {
                approved: pending.on_timeout == "approve",
                comment: format!("no decision before the deadline; {}d", pending.on_timeout),
                by: "timeout".to_owned(),
                timed_out: true,
                ..Default::default()
            };
            match self
                .resolve_approval(&row.tenant, row.id, "", decision)
                .await
            {
                Ok(_) => resolved += 1,
                // Decided by a person meanwhile, or cancelled.
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {}
                Err(status) => return Err(status),
            }
        }
        Ok(resolved)
    }

    async fn find_by_idempotency_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<task::Model>, Status> {
        if key.is_empty() {
            return Ok(None);
        }
        task::Entity::find()
            .filter(task::Column::Tenant.eq(tenant))
            .filter(task::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    async fn find_task(&self, tenant: &str, id: Uuid) -> Result<task::Model, Status> {
        task::Entity::find_by_id(id)
            .filter(task::Column::Tenant.eq(tenant))
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("task {id} not found")))
    }
}

fn event(tenant: &str, task_id: &str, kind: task_event::Kind) -> TaskEvent {
    TaskEvent {
        task_id: task_id.to_owned(),
        tenant: tenant.to_owned(),
        at_ms: now_ms(),
        kind: Some(kind),
    }
}

/// The message id every terminal event of a task shares: JetStream keeps
/// only the first, so a task has one terminal event however the races go.
pub fn terminal_msg_id(task_id: &str) -> String {
    format!("{task_id}:terminal")
}

#[tonic::async_trait]
impl ControlPlane for ControlService {
    async fn apply_agent(
        &self,
        request: Request<ApplyAgentRequest>,
    ) -> Result<Response<ApplyAgentResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let span = server_span(&request, "ApplyAgent");
        let actor = crate::audit::actor_of(&request);
        let req = request.into_inner();
        async {
            validate_name("name", "agent", &req.name)?;
            let spec = req.spec.ok_or_else(|| invalid("spec", "is required"))?;
            self.validate_spec(&spec)?;
            // References must name tools that exist, so a typo fails the
            // apply rather than the first task.
            self.resolve_tools(&self.db, &tenant, &spec).await?;
            let spec_json = spec_to_json(&spec);
            no_nul_in_json("spec", &spec_json)?;
            let now = now_ms();
            let txn = mesh_store::begin_write(&self.db).await.map_err(db_error)?;
            let existing = agent::Entity::find()
                .filter(agent::Column::Tenant.eq(&tenant))
                .filter(agent::Column::Name.eq(&req.name))
                .one(&txn)
                .await
                .map_err(db_error)?;
            let (row, changed) = match existing {
                Some(row) if spec_from_json(&row.spec) == spec => (row, false),
                Some(row) => {
                    let version = row.version + 1;
                    let mut active: agent::ActiveModel = row.into();
                    active.version = Set(version);
                    active.spec = Set(spec_json.clone());
                    active.updated_at_ms = Set(now);
                    (active.update(&txn).await.map_err(db_error)?, true)
                }
                None => {
                    let active = agent::ActiveModel {
                        tenant: Set(tenant.clone()),
                        name: Set(req.name.clone()),
                        version: Set(1),
                        spec: Set(spec_json.clone()),
                        created_at_ms: Set(now),
                        updated_at_ms: Set(now),
                        ..Default::default()
                    };
                    (active.insert(&txn).await.map_err(db_error)?, true)
                }
            };
            if changed {
                agent_version::ActiveModel {
                    tenant: Set(tenant.clone()),
                    name: Set(req.name.clone()),
                    version: Set(row.version),
                    spec: Set(spec_json),
                    created_at_ms: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .map_err(db_error)?;
                crate::audit::record(
                    &txn,
                    crate::audit::applied(&tenant, actor, "agent", &row.name, row.version),
                )
                .await
                .map_err(db_error)?;
            }
            txn.commit().await.map_err(db_error)?;
            // The agent's work queue consumer exists from the first apply,
            // so workers (and KEDA) find it before any task arrives.
            self.bus
                .ensure_agent_consumer(&req.name)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot create agent consumer");
                    Status::unavailable("the bus is unavailable")
                })?;
            Ok(Response::new(ApplyAgentResponse {
                agent: Some(agent_from_row(&row)),
                changed,
            }))
        }
        .instrument(span)
        .await
    }

    async fn apply_tool(
        &self,
        request: Request<ApplyToolRequest>,
    ) -> Result<Response<ApplyToolResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let span = server_span(&request, "ApplyTool");
        let actor = crate::audit::actor_of(&request);
        let req = request.into_inner();
        async {
            mesh_spec::validate_tool_name("name", &req.name).map_err(field_error)?;
            let mut spec = req.spec.ok_or_else(|| invalid("spec", "is required"))?;
            let config = mesh_spec::validate_tool_spec("spec", &spec, &self.limits.spec)
                .map_err(field_error)?;
            // Stored with its defaults, so a read shows what runs.
            spec.config_json = config.to_json();
            let spec_json = tool_spec_to_json(&spec);
            no_nul_in_json("spec", &spec_json)?;
            let now = now_ms();
            let txn = mesh_store::begin_write(&self.db).await.map_err(db_error)?;
            let existing = tool::Entity::find()
                .filter(tool::Column::Tenant.eq(&tenant))
                .filter(tool::Column::Name.eq(&req.name))
                .one(&txn)
                .await
                .map_err(db_error)?;
            let (row, changed) = match existing {
                Some(row) if tool_spec_from_json(&row.spec) == spec => (row, false),
                Some(row) => {
                    let version = row.version + 1;
                    let mut active: tool::ActiveModel = row.into();
                    active.version = Set(version);
                    active.spec = Set(spec_json.clone());
                    active.updated_at_ms = Set(now);
                    (active.update(&txn).await.map_err(db_error)?, true)
                }
                None => {
                    let active = tool::ActiveModel {
                        tenant: Set(tenant.clone()),
                        name: Set(req.name.clone()),
                        version: Set(1),
                        spec: Set(spec_json.clone()),
                        created_at_ms: Set(now),
                        updated_at_ms: Set(now),
                        ..Default::default()
                    };
                    (active.insert(&txn).await.map_err(db_error)?, true)
                }
            };
            if changed {
                tool_version::ActiveModel {
                    tenant: Set(tenant.clone()),
                    name: Set(req.name.clone()),
                    version: Set(row.version),
                    spec: Set(spec_json),
                    created_at_ms: Set(now),
                    ..Default::default()
                }
                .insert(&txn)
                .await
                .map_err(db_error)?;
                crate::audit::record(
                    &txn,
                    crate::audit::applied(&tenant, actor, "tool", &row.name, row.version),
                )
                .await
                .map_err(db_error)?;
            }
            txn.commit().await.map_err(db_error)?;
            Ok(Response::new(ApplyToolResponse {
                tool: Some(tool_from_row(&row)),
                changed,
            }))
        }
        .instrument(span)
        .await
    }

    async fn get_tool(&self, request: Request<GetToolRequest>) -> Result<Response<Tool>, Status> {
        let tenant = tenant_of(&request)?;
        let name = request.into_inner().name;
        mesh_spec::validate_tool_name("name", &name).map_err(field_error)?;
        let row = tool::Entity::find()
            .filter(tool::Column::Tenant.eq(&tenant))
            .filter(tool::Column::Name.eq(&name))
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("tool {name:?} not found")))?;
        Ok(Response::new(tool_from_row(&row)))
    }

    async fn list_tools(
        &self,
        request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let rows = tool::Entity::find()
            .filter(tool::Column::Tenant.eq(&tenant))
            .order_by_asc(tool::Column::Name)
            .limit(u64::from(self.limits.max_page_size))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        Ok(Response::new(ListToolsResponse {
            tools: rows.iter().map(tool_from_row).collect(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let tenant = tenant_of(&request)?;
        let name = request.into_inner().name;
        validate_name("name", "agent", &name)?;
        let row = agent::Entity::find()
            .filter(agent::Column::Tenant.eq(&tenant))
            .filter(agent::Column::Name.eq(&name))
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Status::not_found(format!("agent {name:?} not found")))?;
        Ok(Response::new(agent_from_row(&row)))
    }

    async fn list_agents(
        &self,
        request: Request<mesh_proto::ListAgentsRequest>,
    ) -> Result<Response<mesh_proto::ListAgentsResponse>, Status> {
        let (default, max) = (self.limits.default_page_size, self.limits.max_page_size);
        crate::agents_list::list_agents(&self.db, request, default, max)
            .await
            .map(Response::new)
    }

    async fn list_agent_versions(
        &self,
        request: Request<mesh_proto::ListAgentVersionsRequest>,
    ) -> Result<Response<mesh_proto::ListAgentVersionsResponse>, Status> {
        let (default, max) = (self.limits.default_page_size, self.limits.max_page_size);
        crate::agents_list::list_versions(&self.db, request, default, max)
            .await
            .map(Response::new)
    }

    async fn get_agent_version(
        &self,
        request: Request<mesh_proto::GetAgentVersionRequest>,
    ) -> Result<Response<Agent>, Status> {
        crate::agents_list::get_version(&self.db, request)
            .await
            .map(Response::new)
    }

    async fn list_tool_versions(
        &self,
        request: Request<mesh_proto::ListToolVersionsRequest>,
    ) -> Result<Response<mesh_proto::ListToolVersionsResponse>, Status> {
        let (default, max) = (self.limits.default_page_size, self.limits.max_page_size);
        crate::agents_list::list_tool_versions(&self.db, request, default, max)
            .await
            .map(Response::new)
    }

    async fn get_tool_version(
        &self,
        request: Request<mesh_proto::GetToolVersionRequest>,
    ) -> Result<Response<Tool>, Status> {
        crate::agents_list::get_tool_version(&self.db, request)
            .await
            .map(Response::new)
    }

    async fn submit_task(
        &self,
        request: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let span = server_span(&request, "SubmitTask");
        let req = request.into_inner();
        async {
            validate_name("agent", "agent", &req.agent)?;
            if req.input.trim().is_empty() {
                return Err(invalid("input", "must not be empty"));
            }
            no_nul("input", &req.input)?;
            if req.input.len() > self.limits.max_input_bytes {
                return Err(invalid(
                    "input",
                    format!(
                        "{} bytes exceeds the limit of {}",
                        req.input.len(),
                        self.limits.max_input_bytes
                    ),
                ));
            }
            if !req.session_id.is_empty() {
                validate_name("session_id", "session", &req.session_id)?;
            }
            if req.idempotency_key.len() > 255
                || req.idempotency_key.chars().any(|c| c.is_control())
            {
                return Err(invalid(
                    "idempotency_key",
                    "at most 255 bytes, without control characters",
                ));
            }
            if !req.parent_task_id.is_empty() {
                parse_task_id("parent_task_id", &req.parent_task_id)?;
            }
            if req.depth > self.limits.max_task_depth {
                return Err(invalid(
                    "depth",
                    format!(
                        "sub-tasks nest at most {} deep (an agent calling agents in a loop?)",
                        self.limits.max_task_depth
                    ),
                ));
            }
            if let Some(existing) = self.find_by_idempotency_key(&tenant, &req.idempotency_key).await? {
                return Ok(Response::new(SubmitTaskResponse {
                    task: Some(task_from_row(&existing)),
                    created: false,
                }));
            }
            let agent_row = agent::Entity::find()
                .filter(agent::Column::Tenant.eq(&tenant))
                .filter(agent::Column::Name.eq(&req.agent))
                .one(&self.db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Status::not_found(format!("agent {:?} not found", req.agent)))?;
            let spec = spec_from_json(&agent_row.spec);
            let policy = ConcurrencyPolicy::try_from(spec.concurrency).unwrap_or_default();
            let id = Uuid::now_v7();
            let now = now_ms();
            let subject =
                names::task_subject(&tenant, &req.agent).map_err(|e| invalid("agent", e))?;

            let txn = mesh_store::begin_write(&self.db).await.map_err(db_error)?;
            if req.depth == 0 {
                crate::quotas::check_rate(&txn, &self.quota_defaults, &tenant).await?;
            }
            let tools = self.resolve_tools(&txn, &tenant, &spec).await?;
            let envelope = TaskEnvelope {
                task_id: id.to_string(),
                tenant: tenant.clone(),
                agent: req.agent.clone(),
                agent_version: u64::try_from(agent_row.version).unwrap_or_default(),
                spec: Some(spec),
                input: req.input.clone(),
                submitted_at_ms: now,
                tools,
                session_id: req.session_id.clone(),
                attempt_offset: 0,
                resolution: None,
                parent_task_id: req.parent_task_id.clone(),
                depth: req.depth,
            };
            // The session's policy decides what happens while another of
            // its tasks is queued or running.
            let mut queued = Vec::new();
            let mut hold = false;
            if !req.session_id.is_empty() {
                crate::convert::lock_session(&txn, &tenant, &req.agent, &req.session_id)
                    .await
                    .map_err(db_error)?;
                let busy = task::Entity::find()
                    .filter(task::Column::Tenant.eq(&tenant))
                    .filter(task::Column::Agent.eq(&req.agent))
                    .filter(task::Column::SessionId.eq(&req.session_id))
                    .filter(task::Column::Status.is_in(["queued", "running"]))
                    .all(&txn)
                    .await
                    .map_err(db_error)?;
                if !busy.is_empty() {
                    match policy {
                        ConcurrencyPolicy::Reject => {
                            return Err(Status::already_exists(format!(
                                "session_id: session {:?} has a task in progress ({}) and the agent's concurrency policy is reject",
                                req.session_id, busy[0].id
                            )));
                        }
                        ConcurrencyPolicy::Interrupt => {
                            for running in busy {
                                queued.extend(self.request_cancel(&txn, running, "interrupted by a newer task of its session").await?);
                            }
                        }
                        ConcurrencyPolicy::Enqueue => hold = true,
                    }
                }
            }
            // Fair admission (crate::admission): straight to TASKS only when
            // nobody waits and there is room, else the task waits here.
            // Sub-tasks skip it: their parent holds a slot and waits on them.
            let mut admission_guard = None;
            let wait = if hold || req.depth > 0 {
                false
            } else if !self
                .admission
                .queue_is_empty(&txn, &req.agent)
                .await
                .map_err(db_error)?
            {
                true
            } else {
                admission_guard = Some(self.admission.lock(&txn).await.map_err(db_error)?);
                !self
                    .admission
                    .admit_now(&txn, &tenant, &req.agent)
                    .await
                    .map_err(db_error)?
            };
            let row = task::ActiveModel {
                id: Set(id),
                tenant: Set(tenant.clone()),
                agent: Set(req.agent.clone()),
                agent_version: Set(agent_row.version),
                input: Set(req.input),
                status: Set(TaskStatus::Queued.rest_name().to_owned()),
                output: Set(String::new()),
                error: Set(None),
                input_tokens: Set(0),
                output_tokens: Set(0),
                attempts: Set(0),
                cancel_requested: Set(false),
                last_event_seq: Set(0),
                created_at_ms: Set(now),
                updated_at_ms: Set(now),
                started_at_ms: Set(None),
                finished_at_ms: Set(None),
                session_id: Set(req.session_id.clone()),
                steps: Set(0),
                envelope: Set(Some(prost::Message::encode_to_vec(&envelope))),
                approval: Set(None),
                approval_expires_at_ms: Set(None),
                idempotency_key: Set(
                    (!req.idempotency_key.is_empty()).then(|| req.idempotency_key.clone()),
                ),
                parent_task_id: Set(req.parent_task_id.clone()),
                depth: Set(i32::try_from(req.depth).unwrap_or(i32::MAX)),
                // Held back: the projection releases it when the session's
                // running task ends.
                pending_envelope: Set(hold.then(|| prost::Message::encode_to_vec(&envelope))),
                admission_pending: Set(wait),
                traceparent: Set(Some(outbox::current_trace())),
            }
            .insert(&txn)
            .await;
            let row = match row {
                Ok(row) => row,
                // The same key submitted concurrently: the other won.
                Err(error)
                    if !req.idempotency_key.is_empty()
                        && matches!(
                            error.sql_err(),
                            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                        ) =>
                {
                    drop(txn);
                    let existing = self
                        .find_by_idempotency_key(&tenant, &req.idempotency_key)
                        .await?
                        .ok_or_else(|| db_error(error))?;
                    return Ok(Response::new(SubmitTaskResponse {
                        task: Some(task_from_row(&existing)),
                        created: false,
                    }));
                }
                Err(error) => return Err(db_error(error)),
            };
            if !hold && !wait {
                queued.push(
                    outbox::enqueue(&txn, &tenant, subject, id.to_string(), &envelope)
                        .await
                        .map_err(db_error)?,
                );
            }
            txn.commit().await.map_err(db_error)?;
            drop(admission_guard);
            self.relay.committed(queued);
            if wait {
                self.admission.poke(&req.agent);
            }
            self.metrics.tasks_submitted.inc();
            tracing::info!(task_id = %id, agent = %row.agent, "task submitted");
            Ok(Response::new(SubmitTaskResponse {
                task: Some(task_from_row(&row)),
                created: true,
            }))
        }
        .instrument(span)
        .await
    }

    async fn resolve_approval(
        &self,
        request: Request<ResolveApprovalRequest>,
    ) -> Result<Response<Task>, Status> {
        let tenant = tenant_of(&request)?;
        let span = server_span(&request, "ResolveApproval");
        let req = request.into_inner();
        let id = parse_task_id("id", &req.id)?;
        if req.comment.len() > self.limits.max_input_bytes {
            return Err(invalid(
                "comment",
                format!("at most {} bytes", self.limits.max_input_bytes),
            ));
        }
        no_nul("comment", &req.comment)?;
        no_nul("decided_by", &req.decided_by)?;
        no_nul("call_id", &req.call_id)?;
        let decision = mesh_proto::ApprovalResolved {
            approved: req.approve,
            comment: req.comment,
            by: req.decided_by,
            ..Default::default()
        };
        let row = ControlService::resolve_approval(self, &tenant, id, &req.call_id, decision)
            .instrument(span)
            .await?;
        Ok(Response::new(task_from_row(&row)))
    }

    // API keys and the audit log live in their own modules.
    async fn create_api_key(
        &self,
        request: Request<mesh_proto::CreateApiKeyRequest>,
    ) -> Result<Response<mesh_proto::CreateApiKeyResponse>, Status> {
        crate::api_keys::create(&self.db, request)
            .await
            .map(Response::new)
    }

    async fn list_api_keys(
        &self,
        request: Request<mesh_proto::ListApiKeysRequest>,
    ) -> Result<Response<mesh_proto::ListApiKeysResponse>, Status> {
        crate::api_keys::list(&self.db, request, self.limits.max_page_size)
            .await
            .map(Response::new)
    }

    async fn revoke_api_key(
        &self,
        request: Request<mesh_proto::RevokeApiKeyRequest>,
    ) -> Result<Response<mesh_proto::ApiKey>, Status> {
        crate::api_keys::revoke(&self.db, request)
            .await
            .map(Response::new)
    }

    async fn verify_api_key(
        &self,
        request: Request<mesh_proto::VerifyApiKeyRequest>,
    ) -> Result<Response<mesh_proto::ApiKey>, Status> {
        crate::api_keys::verify(&self.db, request)
            .await
            .map(Response::new)
    }

    async fn list_audit_entries(
        &self,
        request: Request<mesh_proto::ListAuditEntriesRequest>,
    ) -> Result<Response<mesh_proto::ListAuditEntriesResponse>, Status> {
        let (default, max) = (self.limits.default_page_size, self.limits.max_page_size);
        crate::audit::list(&self.db, request, default, max)
            .await
            .map(Response::new)
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let tenant = tenant_of(&request)?;
        let id = parse_task_id("id", &request.get_ref().id)?;
        let row = self.find_task(&tenant, id).await?;
        Ok(Response::new(task_from_row(&row)))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let req = request.into_inner();
        let page_size = match req.page_size {
            0 => self.limits.default_page_size,
            n if n > self.limits.max_page_size => {
                return Err(invalid(
                    "page_size",
                    format!("at most {}", self.limits.max_page_size),
                ));
            }
            n => n,
        };
        let mut query = task::Entity::find().filter(task::Column::Tenant.eq(&tenant));
        if !req.agent.is_empty() {
            validate_name("agent", "agent", &req.agent)?;
            query = query.filter(task::Column::Agent.eq(&req.agent));
        }
        match TaskStatus::try_from(req.status) {
            Ok(TaskStatus::Unspecified) => {}
            Ok(status) => query = query.filter(task::Column::Status.eq(status.rest_name())),
            Err(_) => return Err(invalid("status", format!("unknown value {}", req.status))),
        }
        if !req.page_token.is_empty() {
            let after = parse_task_id("page_token", &req.page_token)?;
            query = query.filter(task::Column::Id.lt(after));
        }
        let mut rows = query
            .order_by_desc(task::Column::Id)
            .limit(u64::from(page_size) + 1)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last().map(|r| r.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListTasksResponse {
            tasks: rows.iter().map(task_from_row).collect(),
            next_page_token,
        }))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let tenant = tenant_of(&request)?;
        let span = server_span(&request, "CancelTask");
        let id = parse_task_id("id", &request.get_ref().id)?;
        async {
            let txn = mesh_store::begin_write(&self.db).await.map_err(db_error)?;
            let row = task::Entity::find_by_id(id)
                .filter(task::Column::Tenant.eq(&tenant))
                .one(&txn)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Status::not_found(format!("task {id} not found")))?;
            let status = crate::convert::status_from_row(&row.status);
            if status.is_terminal() {
                return Err(Status::failed_precondition(format!(
                    "task {id} is already {}",
                    status.rest_name()
                )));
            }
            let queued = self
                .request_cancel(&txn, row, "cancelled while queued")
                .await?;
            txn.commit().await.map_err(db_error)?;
            self.relay.committed(queued);
            let row = self.find_task(&tenant, id).await?;
            Ok(Response::new(task_from_row(&row)))
        }
        .instrument(span)
        .await
    }
}
