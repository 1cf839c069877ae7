//! The internal `ControlPlane` gRPC API: agents and tasks of the calling
//! tenant (from `agentmesh-tenant` metadata). Every query is filtered by
//! tenant; a row of another tenant is indistinguishable from a missing one.

use mesh_bus::{Bus, names};
use mesh_proto::control_plane_server::ControlPlane;
use mesh_proto::{
    Agent, AgentSpec, ApplyAgentRequest, ApplyAgentResponse, CancelTaskRequest, GetAgentRequest,
    GetTaskRequest, ListTasksRequest, ListTasksResponse, SubmitTaskRequest, SubmitTaskResponse,
    Task, TaskEnvelope, TaskEvent, TaskStatus, task_event,
};
use mesh_runtime::grpc::{server_span, tenant_of};
use mesh_store::orchestrator::{agent, agent_version, task};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set, TransactionTrait as _,
};
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::config::Limits;
use crate::convert::{agent_from_row, now_ms, spec_from_json, spec_to_json, task_from_row};
use crate::metrics::Metrics;
use crate::outbox::{self, RelayHandle};

pub struct ControlService {
    db: DatabaseConnection,
    bus: Bus,
    relay: RelayHandle,
    limits: Limits,
    metrics: Metrics,
}

impl ControlService {
    pub fn new(
        db: DatabaseConnection,
        bus: Bus,
        relay: RelayHandle,
        limits: Limits,
        metrics: Metrics,
    ) -> Self {
        Self {
            db,
            bus,
            relay,
            limits,
            metrics,
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

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
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
        Ok(())
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
        let req = request.into_inner();
        async {
            validate_name("name", "agent", &req.name)?;
            let spec = req.spec.ok_or_else(|| invalid("spec", "is required"))?;
            self.validate_spec(&spec)?;
            let spec_json = spec_to_json(&spec);
            let now = now_ms();
            let txn = self.db.begin().await.map_err(db_error)?;
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
            let agent_row = agent::Entity::find()
                .filter(agent::Column::Tenant.eq(&tenant))
                .filter(agent::Column::Name.eq(&req.agent))
                .one(&self.db)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Status::not_found(format!("agent {:?} not found", req.agent)))?;
            let id = Uuid::now_v7();
            let now = now_ms();
            let envelope = TaskEnvelope {
                task_id: id.to_string(),
                tenant: tenant.clone(),
                agent: req.agent.clone(),
                agent_version: u64::try_from(agent_row.version).unwrap_or_default(),
                spec: Some(spec_from_json(&agent_row.spec)),
                input: req.input.clone(),
                submitted_at_ms: now,
            };
            let subject =
                names::task_subject(&tenant, &req.agent).map_err(|e| invalid("agent", e))?;

            let txn = self.db.begin().await.map_err(db_error)?;
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
            }
            .insert(&txn)
            .await
            .map_err(db_error)?;
            let queued = outbox::enqueue(&txn, &tenant, subject, id.to_string(), &envelope)
                .await
                .map_err(db_error)?;
            txn.commit().await.map_err(db_error)?;
            self.relay.committed([queued]);
            self.metrics.tasks_submitted.inc();
            tracing::info!(task_id = %id, agent = %row.agent, "task submitted");
            Ok(Response::new(SubmitTaskResponse {
                task: Some(task_from_row(&row)),
            }))
        }
        .instrument(span)
        .await
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
            let txn = self.db.begin().await.map_err(db_error)?;
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
            let task_id = id.to_string();
            let subject = names::event_subject(&tenant, &task_id).map_err(|e| invalid("id", e))?;
            let now = now_ms();
            let mut active: task::ActiveModel = row.into();
            active.cancel_requested = Set(true);
            active.updated_at_ms = Set(now);
            // A worker that already holds the task stops on this event.
            let mut queued = vec![
                outbox::enqueue(
                    &txn,
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
            if status == TaskStatus::Queued {
                // Nobody runs it yet: it is cancelled now. A worker that picks
                // it up later sees the terminal event and drops it.
                active.status = Set(TaskStatus::Cancelled.rest_name().to_owned());
                active.finished_at_ms = Set(Some(now));
                let cancelled = outbox::enqueue(
                    &txn,
                    &tenant,
                    subject,
                    terminal_msg_id(&task_id),
                    &event(
                        &tenant,
                        &task_id,
                        task_event::Kind::Cancelled(mesh_proto::TaskCancelled {
                            reason: "cancelled while queued".to_owned(),
                        }),
                    ),
                )
                .await
                .map_err(db_error)?;
                queued.push(cancelled);
            }
            let row = active.update(&txn).await.map_err(db_error)?;
            txn.commit().await.map_err(db_error)?;
            self.relay.committed(queued);
            Ok(Response::new(task_from_row(&row)))
        }
        .instrument(span)
        .await
    }
}
