//! The public gRPC face: `AgentService` and `TaskService`, with the same
//! operations, roles and errors as REST; `WatchTask` streams the task's
//! events like the SSE endpoint.

use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use mesh_proto::agent_service_server::AgentService;
use mesh_proto::task_service_server::TaskService;
use mesh_proto::tool_service_server::ToolService;
use mesh_proto::{
    Agent, ApplyAgentRequest, ApplyAgentResponse, ApplyToolRequest, ApplyToolResponse,
    CancelTaskRequest, GetAgentRequest, GetTaskRequest, GetToolRequest, ListTasksRequest,
    ListTasksResponse, ListToolsRequest, ListToolsResponse, ResolveApprovalRequest,
    SubmitTaskRequest, SubmitTaskResponse, Task, TaskEventEnvelope, Tool, WatchTaskRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::Operation;
use crate::error::ApiError;
use crate::state::AppState;

pub struct PublicGrpc {
    pub state: AppState,
}

fn authorize<T>(
    state: &AppState,
    request: &Request<T>,
    op: Operation,
) -> Result<mesh_auth::Principal, Status> {
    let header = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    state.authorize(header, op).map_err(|e| e.to_status())
}

fn status(error: ApiError) -> Status {
    error.to_status()
}

#[tonic::async_trait]
impl AgentService for PublicGrpc {
    async fn apply_agent(
        &self,
        request: Request<ApplyAgentRequest>,
    ) -> Result<Response<ApplyAgentResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ApplyAgent)?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let applied = self
            .state
            .apply_agent(&principal, req.name, spec)
            .await
            .map_err(status)?;
        Ok(Response::new(applied))
    }

    async fn get_agent(
        &self,
        request: Request<GetAgentRequest>,
    ) -> Result<Response<Agent>, Status> {
        let principal = authorize(&self.state, &request, Operation::GetAgent)?;
        let agent = self
            .state
            .get_agent(&principal, request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(agent))
    }

    async fn list_agents(
        &self,
        request: Request<mesh_proto::ListAgentsRequest>,
    ) -> Result<Response<mesh_proto::ListAgentsResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ListAgents)?;
        let page = self
            .state
            .list_agents(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn list_agent_versions(
        &self,
        request: Request<mesh_proto::ListAgentVersionsRequest>,
    ) -> Result<Response<mesh_proto::ListAgentVersionsResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ListAgentVersions)?;
        let page = self
            .state
            .list_agent_versions(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn get_agent_version(
        &self,
        request: Request<mesh_proto::GetAgentVersionRequest>,
    ) -> Result<Response<Agent>, Status> {
        let principal = authorize(&self.state, &request, Operation::GetAgentVersion)?;
        let req = request.into_inner();
        let agent = self
            .state
            .get_agent_version(&principal, req.name, req.version)
            .await
            .map_err(status)?;
        Ok(Response::new(agent))
    }
}

/// Tools have the same operations as REST: a gRPC caller sends the proto
/// spec, which the orchestrator validates with the same field paths.
#[tonic::async_trait]
impl ToolService for PublicGrpc {
    async fn apply_tool(
        &self,
        request: Request<ApplyToolRequest>,
    ) -> Result<Response<ApplyToolResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ApplyTool)?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: is required"))?;
        let applied = self
            .state
            .apply_tool(&principal, req.name, spec)
            .await
            .map_err(status)?;
        Ok(Response::new(applied))
    }

    async fn get_tool(&self, request: Request<GetToolRequest>) -> Result<Response<Tool>, Status> {
        let principal = authorize(&self.state, &request, Operation::GetTool)?;
        let tool = self
            .state
            .get_tool(&principal, request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(tool))
    }

    async fn list_tools(
        &self,
        request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ListTools)?;
        let tools = self.state.list_tools(&principal).await.map_err(status)?;
        Ok(Response::new(ListToolsResponse { tools }))
    }

    async fn list_tool_versions(
        &self,
        request: Request<mesh_proto::ListToolVersionsRequest>,
    ) -> Result<Response<mesh_proto::ListToolVersionsResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ListToolVersions)?;
        let page = self
            .state
            .list_tool_versions(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn get_tool_version(
        &self,
        request: Request<mesh_proto::GetToolVersionRequest>,
    ) -> Result<Response<Tool>, Status> {
        let principal = authorize(&self.state, &request, Operation::GetToolVersion)?;
        let req = request.into_inner();
        let tool = self
            .state
            .get_tool_version(&principal, req.name, req.version)
            .await
            .map_err(status)?;
        Ok(Response::new(tool))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<TaskEventEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl TaskService for PublicGrpc {
    type WatchTaskStream = EventStream;

    async fn submit_task(
        &self,
        request: Request<SubmitTaskRequest>,
    ) -> Result<Response<SubmitTaskResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::SubmitTask)?;
        let (task, created) = self
            .state
            .submit_task(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(SubmitTaskResponse {
            task: Some(task),
            created,
        }))
    }

    async fn get_task(&self, request: Request<GetTaskRequest>) -> Result<Response<Task>, Status> {
        let principal = authorize(&self.state, &request, Operation::GetTask)?;
        let task = self
            .state
            .get_task(&principal, request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(task))
    }

    async fn list_tasks(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let principal = authorize(&self.state, &request, Operation::ListTasks)?;
        let page = self
            .state
            .list_tasks(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(page))
    }

    async fn cancel_task(
        &self,
        request: Request<CancelTaskRequest>,
    ) -> Result<Response<Task>, Status> {
        let principal = authorize(&self.state, &request, Operation::CancelTask)?;
        let task = self
            .state
            .cancel_task(&principal, request.into_inner().id)
            .await
            .map_err(status)?;
        Ok(Response::new(task))
    }

    async fn resolve_approval(
        &self,
        request: Request<ResolveApprovalRequest>,
    ) -> Result<Response<Task>, Status> {
        let principal = authorize(&self.state, &request, Operation::ResolveApproval)?;
        let task = self
            .state
            .resolve_approval(&principal, request.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(task))
    }

    async fn watch_task(
        &self,
        request: Request<WatchTaskRequest>,
    ) -> Result<Response<Self::WatchTaskStream>, Status> {
        let principal = authorize(&self.state, &request, Operation::WatchTask)?;
        let req = request.into_inner();
        let task = self
            .state
            .get_task(&principal, req.id)
            .await
            .map_err(status)?;
        let events = crate::events::task_events(&self.state.bus, &task, req.after_seq)
            .await
            .map_err(status)?;
        let gauge = self.state.metrics.open_streams.clone();
        gauge.inc();
        let guard = crate::rest::StreamGuard(gauge);
        let stream = events.map(move |item| {
            let _keep = &guard;
            item.map(|(seq, event)| TaskEventEnvelope {
                seq,
                event: Some(event),
            })
            .map_err(status)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
