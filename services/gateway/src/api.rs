//! The operations of the public API, shared by the REST and gRPC faces:
//! authorize, validate what the gateway can, forward to the orchestrator
//! on behalf of the caller's tenant.

use mesh_auth::Principal;
use mesh_proto::control_plane_client::ControlPlaneClient;
use mesh_proto::{
    Agent, AgentSpec, ApplyAgentRequest, ApplyAgentResponse, ApplyToolRequest, ApplyToolResponse,
    CancelTaskRequest, GetAgentRequest, GetTaskRequest, GetToolRequest, ListTasksRequest,
    ListTasksResponse, ListToolsRequest, ResolveApprovalRequest, SubmitTaskRequest, Task, Tool,
    ToolSpec,
};
use tonic::transport::Channel;

use crate::auth::{Operation, authorize};
use crate::error::ApiError;
use crate::ratelimit::Decision;
use crate::state::AppState;

impl AppState {
    pub fn authorize(
        &self,
        authorization: Option<&str>,
        op: Operation,
    ) -> Result<Principal, ApiError> {
        let principal = match &self.config.unauthenticated_for_benchmarks {
            Some(fixed) => fixed.clone(),
            None => authorize(&self.verifier, authorization, op)?,
        };
        // The request's span (see `rest::record_metrics`) is filed under
        // the caller's tenant by the trace-collector.
        tracing::Span::current()
            .record(mesh_telemetry::TENANT_ATTRIBUTE, principal.tenant.as_str());
        Ok(principal)
    }

    fn client(&self) -> ControlPlaneClient<Channel> {
        self.orchestrator.clone()
    }

    fn request<T>(&self, principal: &Principal, message: T) -> Result<tonic::Request<T>, ApiError> {
        let mut request = mesh_runtime::grpc::outgoing(&principal.tenant, message)?;
        request.set_timeout(self.config.upstream_timeout);
        crate::api_keys::set_actor(&mut request, principal);
        Ok(request)
    }

    pub async fn apply_agent(
        &self,
        principal: &Principal,
        name: String,
        spec: AgentSpec,
    ) -> Result<ApplyAgentResponse, ApiError> {
        validate_name("name", &name)?;
        let request = self.request(
            principal,
            ApplyAgentRequest {
                name,
                spec: Some(spec),
            },
        )?;
        Ok(self.client().apply_agent(request).await?.into_inner())
    }

    pub async fn apply_tool(
        &self,
        principal: &Principal,
        name: String,
        spec: ToolSpec,
    ) -> Result<ApplyToolResponse, ApiError> {
        mesh_spec::validate_tool_name("name", &name)?;
        let request = self.request(
            principal,
            ApplyToolRequest {
                name,
                spec: Some(spec),
            },
        )?;
        Ok(self.client().apply_tool(request).await?.into_inner())
    }

    pub async fn get_tool(&self, principal: &Principal, name: String) -> Result<Tool, ApiError> {
        mesh_spec::validate_tool_name("name", &name)?;
        let request = self.request(principal, GetToolRequest { name })?;
        Ok(self.client().get_tool(request).await?.into_inner())
    }

    pub async fn list_tools(&self, principal: &Principal) -> Result<Vec<Tool>, ApiError> {
        let request = self.request(principal, ListToolsRequest {})?;
        Ok(self.client().list_tools(request).await?.into_inner().tools)
    }

    pub async fn get_agent(&self, principal: &Principal, name: String) -> Result<Agent, ApiError> {
        validate_name("name", &name)?;
        let request = self.request(principal, GetAgentRequest { name })?;
        Ok(self.client().get_agent(request).await?.into_inner())
    }

    pub async fn list_agents(
        &self,
        principal: &Principal,
        query: mesh_proto::ListAgentsRequest,
    ) -> Result<mesh_proto::ListAgentsResponse, ApiError> {
        let request = self.request(principal, query)?;
        Ok(self.client().list_agents(request).await?.into_inner())
    }

    pub async fn list_agent_versions(
        &self,
        principal: &Principal,
        query: mesh_proto::ListAgentVersionsRequest,
    ) -> Result<mesh_proto::ListAgentVersionsResponse, ApiError> {
        validate_name("name", &query.name)?;
        let request = self.request(principal, query)?;
        Ok(self
            .client()
            .list_agent_versions(request)
            .await?
            .into_inner())
    }

    pub async fn get_agent_version(
        &self,
        principal: &Principal,
        name: String,
        version: u64,
    ) -> Result<Agent, ApiError> {
        validate_name("name", &name)?;
        let request = self.request(
            principal,
            mesh_proto::GetAgentVersionRequest { name, version },
        )?;
        Ok(self.client().get_agent_version(request).await?.into_inner())
    }

    pub async fn list_tool_versions(
        &self,
        principal: &Principal,
        query: mesh_proto::ListToolVersionsRequest,
    ) -> Result<mesh_proto::ListToolVersionsResponse, ApiError> {
        mesh_spec::validate_tool_name("name", &query.name)?;
        let request = self.request(principal, query)?;
        Ok(self
            .client()
            .list_tool_versions(request)
            .await?
            .into_inner())
    }

    pub async fn get_tool_version(
        &self,
        principal: &Principal,
        name: String,
        version: u64,
    ) -> Result<Tool, ApiError> {
        mesh_spec::validate_tool_name("name", &name)?;
        let request = self.request(
            principal,
            mesh_proto::GetToolVersionRequest { name, version },
        )?;
        Ok(self.client().get_tool_version(request).await?.into_inner())
    }

    /// Submits a task; `created` is false when the idempotency key named
    /// a task submitted before. Sub-task fields are the worker's, not a
    /// public client's, and are cleared.
    pub async fn submit_task(
        &self,
        principal: &Principal,
        mut submit: SubmitTaskRequest,
    ) -> Result<(Task, bool), ApiError> {
        validate_name("agent", &submit.agent)?;
        if !submit.session_id.is_empty() {
            validate_name("sessionId", &submit.session_id)?;
        }
        submit.parent_task_id.clear();
        submit.depth = 0;
        self.check_submit_rate(&principal.tenant).await?;
        let request = self.request(principal, submit)?;
        let response = self.client().submit_task(request).await?.into_inner();
        let task = response.task.ok_or_else(|| {
            ApiError::new(
                mesh_runtime::ErrorCode::Internal,
                "orchestrator returned no task",
            )
        })?;
        Ok((task, response.created))
    }

    async fn check_submit_rate(&self, tenant: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.submit_limiter else {
            return Ok(());
        };
        match limiter.check(tenant, "submit").await {
            Ok(Decision::Allowed) => Ok(()),
            Ok(Decision::Limited { retry_after }) => {
                self.metrics.ratelimit_rejections.inc();
                let mut error = ApiError::new(
                    mesh_runtime::ErrorCode::ResourceExhausted,
                    format!(
                        "tenant {tenant} is over its limit of {} task submissions per minute",
                        self.config.submit_rate_per_minute
                    ),
                );
                error.retry_after = Some(retry_after);
                Err(error)
            }
            Err(error) => {
                self.metrics.ratelimit_errors.inc();
                tracing::warn!(%error, "rate limit check failed; letting the request through");
                Ok(())
            }
        }
    }

    pub async fn get_task(&self, principal: &Principal, id: String) -> Result<Task, ApiError> {
        validate_task_id("id", &id)?;
        let request = self.request(principal, GetTaskRequest { id })?;
        Ok(self.client().get_task(request).await?.into_inner())
    }

    pub async fn list_tasks(
        &self,
        principal: &Principal,
        query: ListTasksRequest,
    ) -> Result<ListTasksResponse, ApiError> {
        if !query.agent.is_empty() {
            validate_name("agent", &query.agent)?;
        }
        let request = self.request(principal, query)?;
        Ok(self.client().list_tasks(request).await?.into_inner())
    }

    pub async fn cancel_task(&self, principal: &Principal, id: String) -> Result<Task, ApiError> {
        validate_task_id("id", &id)?;
        let request = self.request(principal, CancelTaskRequest { id })?;
        Ok(self.client().cancel_task(request).await?.into_inner())
    }

    /// Approves or rejects the tool call a task awaits; the decision is
    /// recorded with the caller's subject.
    pub async fn resolve_approval(
        &self,
        principal: &Principal,
        mut request: ResolveApprovalRequest,
    ) -> Result<Task, ApiError> {
        validate_task_id("id", &request.id)?;
        request.decided_by = principal.subject.clone();
        let request = self.request(principal, request)?;
        Ok(self.client().resolve_approval(request).await?.into_inner())
    }
}

pub fn validate_name(field: &str, name: &str) -> Result<(), ApiError> {
    mesh_bus::names::validate("agent", name).map_err(|e| match e {
        mesh_bus::BusError::InvalidName { reason, .. } => ApiError::invalid(field, reason),
        other => ApiError::invalid(field, other),
    })
}

pub fn validate_task_id(field: &str, id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::invalid(field, format!("{id:?} is not a valid UUID")))
}
