//! The roles table walked route by route: for every REST route and public
//! gRPC method, a token of each role gets 403 / PERMISSION_DENIED exactly
//! when its role is below what `gateway::auth::required_role` says for the
//! route's operation, and is let through (whatever the answer) otherwise.
#![allow(clippy::unwrap_used)]

use gateway::auth::{Operation, required_role};
use mesh_auth::Role;
use mesh_integration::{Mesh, MeshOptions};
use serde_json::json;

const ROLES: [Role; 4] = [Role::Viewer, Role::User, Role::Operator, Role::Admin];
const TASK: &str = "01a21c6c-b7dc-7754-9ada-b988b57fa1bc";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rest_route_and_grpc_method_enforces_its_role() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let base = format!("http://{}", mesh.gateway.http_addr);
    let http = reqwest::Client::new();
    let routes: Vec<(
        reqwest::Method,
        String,
        Option<serde_json::Value>,
        Operation,
    )> = vec![
        (
            reqwest::Method::PUT,
            "/v1/agents/a".into(),
            Some(json!({"model": "m"})),
            Operation::ApplyAgent,
        ),
        (
            reqwest::Method::GET,
            "/v1/agents/a".into(),
            None,
            Operation::GetAgent,
        ),
        (
            reqwest::Method::GET,
            "/v1/agents".into(),
            None,
            Operation::ListAgents,
        ),
        (
            reqwest::Method::GET,
            "/v1/agents/a/versions".into(),
            None,
            Operation::ListAgentVersions,
        ),
        (
            reqwest::Method::GET,
            "/v1/agents/a/versions/1".into(),
            None,
            Operation::GetAgentVersion,
        ),
        (
            reqwest::Method::POST,
            "/v1/agents/a/tasks".into(),
            Some(json!({"input": "x"})),
            Operation::SubmitTask,
        ),
        (
            reqwest::Method::GET,
            "/v1/tools".into(),
            None,
            Operation::ListTools,
        ),
        (
            reqwest::Method::PUT,
            "/v1/tools/t".into(),
            Some(json!({"type": "api", "config": {"endpoint": "http://127.0.0.1:9/x"}})),
            Operation::ApplyTool,
        ),
        (
            reqwest::Method::GET,
            "/v1/tools/t".into(),
            None,
            Operation::GetTool,
        ),
        (
            reqwest::Method::GET,
            "/v1/tools/t/versions".into(),
            None,
            Operation::ListToolVersions,
        ),
        (
            reqwest::Method::GET,
            "/v1/tools/t/versions/1".into(),
            None,
            Operation::GetToolVersion,
        ),
        (
            reqwest::Method::GET,
            "/v1/schemas/agent".into(),
            None,
            Operation::GetSchema,
        ),
        (
            reqwest::Method::GET,
            "/v1/tasks".into(),
            None,
            Operation::ListTasks,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/tasks/{TASK}"),
            None,
            Operation::GetTask,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/tasks/{TASK}/cancel"),
            None,
            Operation::CancelTask,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/tasks/{TASK}/approve"),
            None,
            Operation::ResolveApproval,
        ),
        (
            reqwest::Method::POST,
            format!("/v1/tasks/{TASK}/reject"),
            None,
            Operation::ResolveApproval,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/tasks/{TASK}/events"),
            None,
            Operation::WatchTask,
        ),
        (
            reqwest::Method::POST,
            "/v1/chat/completions".into(),
            Some(
                json!({"model": "sim-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
            ),
            Operation::ChatCompletion,
        ),
        (
            reqwest::Method::GET,
            "/v1/models".into(),
            None,
            Operation::ListModels,
        ),
        (
            reqwest::Method::GET,
            "/v1/traces".into(),
            None,
            Operation::ListTraces,
        ),
        (
            reqwest::Method::GET,
            "/v1/traces/aggregates".into(),
            None,
            Operation::TraceAggregates,
        ),
        (
            reqwest::Method::GET,
            "/v1/traces/0af7651916cd43dd8448eb211c80319c".into(),
            None,
            Operation::GetTrace,
        ),
        (
            reqwest::Method::POST,
            "/v1/collections".into(),
            Some(json!({"name": "c", "embeddingModel": "none", "dimension": 4})),
            Operation::CreateCollection,
        ),
        (
            reqwest::Method::GET,
            "/v1/collections".into(),
            None,
            Operation::ReadCollections,
        ),
        (
            reqwest::Method::GET,
            "/v1/collections/c".into(),
            None,
            Operation::ReadCollections,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/collections/c".into(),
            None,
            Operation::DeleteCollection,
        ),
        (
            reqwest::Method::POST,
            "/v1/collections/c/documents".into(),
            Some(json!({"documents": []})),
            Operation::WriteDocuments,
        ),
        (
            reqwest::Method::GET,
            "/v1/collections/c/documents/d".into(),
            None,
            Operation::ReadCollections,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/collections/c/documents/d".into(),
            None,
            Operation::WriteDocuments,
        ),
        (
            reqwest::Method::POST,
            "/v1/collections/c/documents/delete".into(),
            Some(json!({"ids": ["d"]})),
            Operation::WriteDocuments,
        ),
        (
            reqwest::Method::POST,
            "/v1/collections/c/search".into(),
            Some(json!({"query": "x"})),
            Operation::Search,
        ),
        (
            reqwest::Method::POST,
            "/v1/collections/c/ingest".into(),
            Some(json!({"documents": []})),
            Operation::WriteDocuments,
        ),
        (
            reqwest::Method::GET,
            format!("/v1/ingest-jobs/{TASK}"),
            None,
            Operation::ReadCollections,
        ),
        (
            reqwest::Method::GET,
            "/v1/quotas".into(),
            None,
            Operation::ManageQuotas,
        ),
        (
            reqwest::Method::PUT,
            "/v1/quotas".into(),
            Some(json!({"weight": 1})),
            Operation::ManageQuotas,
        ),
        (
            reqwest::Method::POST,
            "/v1/api-keys".into(),
            Some(json!({"name": "ci", "role": "viewer"})),
            Operation::ManageApiKeys,
        ),
        (
            reqwest::Method::GET,
            "/v1/api-keys".into(),
            None,
            Operation::ManageApiKeys,
        ),
        (
            reqwest::Method::DELETE,
            "/v1/api-keys/0123456789abcdef".into(),
            None,
            Operation::ManageApiKeys,
        ),
        (
            reqwest::Method::GET,
            "/v1/audit".into(),
            None,
            Operation::ReadAuditLog,
        ),
    ];
    for (method, path, body, op) in &routes {
        for role in ROLES {
            let mut request = http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(mesh.token("acme", &[role]));
            if let Some(body) = body {
                request = request.json(body);
            }
            let status = request.send().await.unwrap().status();
            let allowed = role >= required_role(*op);
            if allowed {
                assert!(
                    status != 401 && status != 403,
                    "{method} {path} as {role:?}: {status}"
                );
            } else {
                assert_eq!(
                    status,
                    403,
                    "{method} {path} as {role:?} ({op:?} needs {:?})",
                    required_role(*op)
                );
            }
        }
    }

    // The public gRPC faces: the same operations, the same table.
    let url = mesh.gateway_grpc_url();
    for role in ROLES {
        let token = mesh.token("acme", &[role]);
        let mut agents = mesh_proto::agent_service_client::AgentServiceClient::connect(url.clone())
            .await
            .unwrap();
        let mut tools = mesh_proto::tool_service_client::ToolServiceClient::connect(url.clone())
            .await
            .unwrap();
        let mut tasks = mesh_proto::task_service_client::TaskServiceClient::connect(url.clone())
            .await
            .unwrap();
        let mut traces = mesh_proto::trace_query_client::TraceQueryClient::connect(url.clone())
            .await
            .unwrap();
        let mut retrieval = mesh_proto::retrieval_client::RetrievalClient::connect(url.clone())
            .await
            .unwrap();
        let calls: Vec<(&str, Operation, Result<(), tonic::Status>)> = vec![
            (
                "AgentService/ApplyAgent",
                Operation::ApplyAgent,
                agents
                    .apply_agent(with(
                        &token,
                        mesh_proto::ApplyAgentRequest {
                            name: "a".into(),
                            spec: Some(mesh_proto::AgentSpec {
                                model: "m".into(),
                                ..Default::default()
                            }),
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "AgentService/GetAgent",
                Operation::GetAgent,
                agents
                    .get_agent(with(
                        &token,
                        mesh_proto::GetAgentRequest { name: "a".into() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "AgentService/ListAgents",
                Operation::ListAgents,
                agents
                    .list_agents(with(&token, mesh_proto::ListAgentsRequest::default()))
                    .await
                    .map(drop),
            ),
            (
                "AgentService/ListAgentVersions",
                Operation::ListAgentVersions,
                agents
                    .list_agent_versions(with(
                        &token,
                        mesh_proto::ListAgentVersionsRequest {
                            name: "a".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "AgentService/GetAgentVersion",
                Operation::GetAgentVersion,
                agents
                    .get_agent_version(with(
                        &token,
                        mesh_proto::GetAgentVersionRequest {
                            name: "a".into(),
                            version: 1,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ToolService/ApplyTool",
                Operation::ApplyTool,
                tools
                    .apply_tool(with(
                        &token,
                        mesh_proto::ApplyToolRequest {
                            name: "t".into(),
                            spec: None,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ToolService/GetTool",
                Operation::GetTool,
                tools
                    .get_tool(with(
                        &token,
                        mesh_proto::GetToolRequest { name: "t".into() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ToolService/ListTools",
                Operation::ListTools,
                tools
                    .list_tools(with(&token, mesh_proto::ListToolsRequest {}))
                    .await
                    .map(drop),
            ),
            (
                "ToolService/ListToolVersions",
                Operation::ListToolVersions,
                tools
                    .list_tool_versions(with(
                        &token,
                        mesh_proto::ListToolVersionsRequest {
                            name: "t".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "ToolService/GetToolVersion",
                Operation::GetToolVersion,
                tools
                    .get_tool_version(with(
                        &token,
                        mesh_proto::GetToolVersionRequest {
                            name: "t".into(),
                            version: 1,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/SubmitTask",
                Operation::SubmitTask,
                tasks
                    .submit_task(with(
                        &token,
                        mesh_proto::SubmitTaskRequest {
                            agent: "a".into(),
                            input: "x".into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/GetTask",
                Operation::GetTask,
                tasks
                    .get_task(with(&token, mesh_proto::GetTaskRequest { id: TASK.into() }))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/ListTasks",
                Operation::ListTasks,
                tasks
                    .list_tasks(with(&token, mesh_proto::ListTasksRequest::default()))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/CancelTask",
                Operation::CancelTask,
                tasks
                    .cancel_task(with(
                        &token,
                        mesh_proto::CancelTaskRequest { id: TASK.into() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/ResolveApproval",
                Operation::ResolveApproval,
                tasks
                    .resolve_approval(with(
                        &token,
                        mesh_proto::ResolveApprovalRequest {
                            id: TASK.into(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TaskService/WatchTask",
                Operation::WatchTask,
                tasks
                    .watch_task(with(
                        &token,
                        mesh_proto::WatchTaskRequest {
                            id: TASK.into(),
                            after_seq: 0,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TraceQuery/ListTraces",
                Operation::ListTraces,
                traces
                    .list_traces(with(&token, mesh_proto::ListTracesRequest::default()))
                    .await
                    .map(drop),
            ),
            (
                "TraceQuery/GetTrace",
                Operation::GetTrace,
                traces
                    .get_trace(with(
                        &token,
                        mesh_proto::GetTraceRequest {
                            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "TraceQuery/Aggregates",
                Operation::TraceAggregates,
                traces
                    .aggregates(with(&token, mesh_proto::TraceAggregatesRequest::default()))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/CreateCollection",
                Operation::CreateCollection,
                retrieval
                    .create_collection(with(
                        &token,
                        mesh_proto::CreateCollectionRequest {
                            name: "c".into(),
                            embedding_model: "none".into(),
                            dimension: 4,
                            chunking: None,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/GetCollection",
                Operation::ReadCollections,
                retrieval
                    .get_collection(with(
                        &token,
                        mesh_proto::GetCollectionRequest { name: "c".into() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/ListCollections",
                Operation::ReadCollections,
                retrieval
                    .list_collections(with(&token, mesh_proto::ListCollectionsRequest::default()))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/DeleteCollection",
                Operation::DeleteCollection,
                retrieval
                    .delete_collection(with(
                        &token,
                        mesh_proto::DeleteCollectionRequest { name: "c".into() },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/UpsertDocuments",
                Operation::WriteDocuments,
                retrieval
                    .upsert_documents(with(
                        &token,
                        mesh_proto::UpsertDocumentsRequest {
                            collection: "c".into(),
                            documents: vec![],
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/GetDocument",
                Operation::ReadCollections,
                retrieval
                    .get_document(with(
                        &token,
                        mesh_proto::GetDocumentRequest {
                            collection: "c".into(),
                            id: "d".into(),
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/DeleteDocuments",
                Operation::WriteDocuments,
                retrieval
                    .delete_documents(with(
                        &token,
                        mesh_proto::DeleteDocumentsRequest {
                            collection: "c".into(),
                            ids: vec!["d".into()],
                            filter: None,
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/Search",
                Operation::Search,
                retrieval
                    .search(with(
                        &token,
                        mesh_proto::SearchRequest {
                            collection: "c".into(),
                            query: "q".into(),
                            top_k: 1,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/SubmitIngest",
                Operation::WriteDocuments,
                retrieval
                    .submit_ingest(with(
                        &token,
                        mesh_proto::SubmitIngestRequest {
                            collection: "c".into(),
                            documents: vec![],
                        },
                    ))
                    .await
                    .map(drop),
            ),
            (
                "Retrieval/GetIngestJob",
                Operation::ReadCollections,
                retrieval
                    .get_ingest_job(with(
                        &token,
                        mesh_proto::GetIngestJobRequest { id: "j".into() },
                    ))
                    .await
                    .map(drop),
            ),
        ];
        // Every method of every public service is walked: a method added
        // to the protos without a row here fails the test.
        let walked: std::collections::BTreeSet<&str> = calls.iter().map(|(m, _, _)| *m).collect();
        let missing: Vec<String> = public_grpc_methods()
            .into_iter()
            .filter(|m| !walked.contains(m.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "public gRPC methods not walked: {missing:?}"
        );
        for (method, op, result) in calls {
            let denied = matches!(&result, Err(s) if s.code() == tonic::Code::PermissionDenied);
            let unauthenticated =
                matches!(&result, Err(s) if s.code() == tonic::Code::Unauthenticated);
            assert!(!unauthenticated, "{method} as {role:?}: {result:?}");
            assert_eq!(
                denied,
                role < required_role(op),
                "{method} ({op:?}) as {role:?}: {result:?}"
            );
        }
    }
}

/// The services the gateway serves on its public gRPC port.
const PUBLIC_GRPC_SERVICES: [&str; 5] = [
    "AgentService",
    "ToolService",
    "TaskService",
    "Retrieval",
    "TraceQuery",
];

/// `Service/Method` of every rpc of the public services, read from the
/// protos themselves (the source of the generated stubs).
fn public_grpc_methods() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto/agentmesh/v1");
    let mut methods = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut service = None;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("service ") {
                service = rest
                    .split_whitespace()
                    .next()
                    .filter(|name| PUBLIC_GRPC_SERVICES.contains(name))
                    .map(str::to_owned);
            } else if line.starts_with('}') && !line.contains('{') {
                service = None;
            } else if let (Some(service), Some(rest)) = (&service, line.strip_prefix("rpc ")) {
                let name = rest.split('(').next().unwrap().trim();
                methods.push(format!("{service}/{name}"));
            }
        }
    }
    assert!(
        methods.len() > 20,
        "protos not found or not parsed: {methods:?}"
    );
    methods
}

fn with<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}
