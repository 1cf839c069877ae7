//! Who is calling. Every route and method is authenticated except the ones
//! named in [`UNAUTHENTICATED_ROUTES`]; the roles each operation needs are
//! in [`required_role`], one table for both faces.

use mesh_auth::{Principal, Role, Verifier};
use mesh_runtime::ErrorCode;

use crate::error::ApiError;

/// The REST routes anyone may call (the admin listener's probes and
/// metrics live on another port and are not listed here). The console's
/// static files hold no data: its pages call the authenticated API; nor
/// does the OpenAPI document, which describes the API and nothing of any
/// tenant.
pub const UNAUTHENTICATED_ROUTES: &[&str] = &[
    "/console",
    "/console/",
    "/console/{*path}",
    "/v1/openapi.json",
];

/// Operations of the public API, shared by REST and gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ApplyAgent,
    GetAgent,
    /// The tenant's agents by name (`GET /v1/agents`).
    ListAgents,
    /// An agent's applied versions, and one version's spec.
    ListAgentVersions,
    GetAgentVersion,
    ApplyTool,
    GetTool,
    ListTools,
    /// A tool's applied versions, and one version's spec.
    ListToolVersions,
    GetToolVersion,
    /// The JSON Schema of the resource documents.
    GetSchema,
    SubmitTask,
    GetTask,
    ListTasks,
    CancelTask,
    /// Approve or reject the tool call a task awaits.
    ResolveApproval,
    WatchTask,
    /// OpenAI-compatible chat completions through the inference-router.
    ChatCompletion,
    ListModels,
    /// Traces through the trace-collector's query API.
    ListTraces,
    GetTrace,
    /// Counts, latency, tokens and cost of traces over time buckets.
    TraceAggregates,
    /// Score a trace or an observation (evaluations, user feedback).
    ScoreTrace,
    /// Create, list and revoke the tenant's Langfuse ingestion keys.
    ManageTraceKeys,
    /// Create, list and revoke the tenant's API keys.
    ManageApiKeys,
    /// Read the tenant's audit log.
    ReadAuditLog,
    /// Read and set the tenant's quotas (`/v1/quotas`).
    ManageQuotas,
    /// Retrieval (RAG) through the retrieval service.
    CreateCollection,
    DeleteCollection,
    /// Collections, documents and ingest jobs: read.
    ReadCollections,
    /// Upsert and delete documents, submit ingest jobs.
    WriteDocuments,
    Search,
}

/// The one table of who may do what (roles are ordered: a higher role may
/// do what a lower one may).
pub fn required_role(op: Operation) -> Role {
    match op {
        Operation::CreateCollection | Operation::DeleteCollection => Role::Operator,
        Operation::WriteDocuments => Role::User,
        Operation::ReadCollections | Operation::Search => Role::Viewer,
        Operation::ApplyAgent | Operation::ApplyTool => Role::Operator,
        // Credentials that let an application write the tenant's traces.
        Operation::ManageTraceKeys => Role::Admin,
        // Credentials of machine clients, and who changed what.
        Operation::ManageApiKeys | Operation::ReadAuditLog => Role::Admin,
        // Quotas bound what the tenant's users may run.
        Operation::ManageQuotas => Role::Admin,
        Operation::ScoreTrace => Role::User,
        Operation::SubmitTask
        | Operation::CancelTask
        | Operation::ResolveApproval
        | Operation::ChatCompletion => Role::User,
        Operation::GetAgent
        | Operation::ListAgents
        | Operation::ListAgentVersions
        | Operation::GetAgentVersion
        | Operation::GetTool
        | Operation::ListToolVersions
        | Operation::GetToolVersion
        | Operation::ListTools
        | Operation::GetSchema
        | Operation::GetTask
        | Operation::ListTasks
        | Operation::WatchTask
        | Operation::ListModels
        | Operation::ListTraces
        | Operation::GetTrace
        | Operation::TraceAggregates => Role::Viewer,
    }
}

/// Verifies the caller and checks the role for `op`: the request's API key
/// when it sent one (resolved by a layer before the handler, see
/// [`crate::api_keys`]), else the JWT in the `Authorization` value.
pub fn authorize(
    verifier: &Verifier,
    authorization: Option<&str>,
    op: Operation,
) -> Result<Principal, ApiError> {
    let principal = match crate::api_keys::resolved() {
        Some(outcome) => outcome?,
        None => verifier
            .verify_header(authorization)
            .map_err(ApiError::unauthenticated)?,
    };
    if mesh_bus::names::validate("tenant", &principal.tenant).is_err() {
        return Err(ApiError::unauthenticated(
            "token tenant claim is not a valid tenant name",
        ));
    }
    let needed = required_role(op);
    if !principal.has_role(needed) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("{op:?} needs the {needed:?} role").to_lowercase(),
        ));
    }
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn roles_gate_operations() {
        let v = Verifier::hs256(SECRET, 0);
        let viewer = mesh_auth::issue_hs256(SECRET, "acme", "v", &[Role::Viewer], 60).unwrap();
        let header = format!("Bearer {viewer}");
        assert!(authorize(&v, Some(&header), Operation::GetTask).is_ok());
        let denied = authorize(&v, Some(&header), Operation::SubmitTask).unwrap_err();
        assert_eq!(denied.code, ErrorCode::PermissionDenied);
        let op = mesh_auth::issue_hs256(SECRET, "acme", "o", &[Role::Operator], 60).unwrap();
        assert!(authorize(&v, Some(&format!("Bearer {op}")), Operation::ApplyAgent).is_ok());
        assert_eq!(
            authorize(&v, None, Operation::GetTask).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn tenant_claim_must_be_a_valid_name() {
        let v = Verifier::hs256(SECRET, 0);
        let bad = mesh_auth::issue_hs256(SECRET, "acme.*", "x", &[Role::Admin], 60).unwrap();
        assert_eq!(
            authorize(&v, Some(&format!("Bearer {bad}")), Operation::GetTask)
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );
    }
}
