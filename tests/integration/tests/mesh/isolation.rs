//! Tenant isolation, resource kind by resource kind. Tenant A creates one
//! of everything through the public gateway (agents, tools, tasks and their
//! event streams, collections, documents and an ingest job, a trace with
//! its observations, a session's memory, a cached chat answer, API keys,
//! trace keys, a quota); tenant B, an admin (the strongest role), then tries
//! every read, list, update, delete and action of the REST and gRPC faces
//! on A's names and ids. Each answer must be 404 / NOT_FOUND, an empty list
//! or B's own resource, and must carry nothing of A's; A's resources must
//! read the same afterwards.
//!
//! The walk is a table of (resource, operation, call, expectation): a new
//! resource kind is a few more rows. The table walked is printed.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::infra::redis_url;
use mesh_integration::{Mesh, MeshOptions, RestClient, fresh_postgres};
use mesh_proto::agent_service_client::AgentServiceClient;
use mesh_proto::retrieval_client::RetrievalClient;
use mesh_proto::task_service_client::TaskServiceClient;
use mesh_proto::tool_service_client::ToolServiceClient;
use mesh_proto::trace_query_client::TraceQueryClient;
use reqwest::Method;
use serde_json::{Value, json};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);
/// How long an answer may take; a stream B should never have opened shows
/// up as a 200 that is still open after it.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// One gRPC answer: the response as text, and its number of items when the
/// call is a list.
struct Reply {
    text: String,
    items: Option<usize>,
}

type GrpcCall = Pin<Box<dyn Future<Output = Result<Reply, tonic::Status>> + Send>>;

enum Call {
    Rest(Method, String, Option<Value>),
    /// The method's name and the call, built and not yet sent.
    Grpc(&'static str, GrpcCall),
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    /// 404 / NOT_FOUND.
    NotFound,
    /// A success listing nothing (REST: the array at this JSON pointer).
    Empty(&'static str),
    /// 404, or a success listing nothing at this pointer: a list under a
    /// name B does not have.
    Absent(&'static str),
    /// B's own resource of the same name (an upsert lands in B's tenant),
    /// or B's own view (its quota): any success.
    Own,
}

struct Case {
    resource: &'static str,
    op: &'static str,
    call: Call,
    expect: Expect,
}

fn case(resource: &'static str, op: &'static str, call: Call, expect: Expect) -> Case {
    Case {
        resource,
        op,
        call,
        expect,
    }
}

fn rest(method: Method, path: impl Into<String>, body: Option<Value>) -> Call {
    Call::Rest(method, path.into(), body)
}

/// A unary call of one public gRPC client as `$token`; with `$items`, the
/// response field whose length is the list's size.
macro_rules! grpc {
    ($clients:expr, $token:expr, $client:ident . $method:ident ($req:expr)) => {{
        let mut client = $clients.$client.clone();
        let request = bearer(&$token, $req);
        Call::Grpc(
            concat!(stringify!($client), ".", stringify!($method)),
            Box::pin(async move {
                client.$method(request).await.map(|r| Reply {
                    text: format!("{:?}", r.into_inner()),
                    items: None,
                })
            }),
        )
    }};
    ($clients:expr, $token:expr, $client:ident . $method:ident ($req:expr), $items:ident) => {{
        let mut client = $clients.$client.clone();
        let request = bearer(&$token, $req);
        Call::Grpc(
            concat!(stringify!($client), ".", stringify!($method)),
            Box::pin(async move {
                client.$method(request).await.map(|r| {
                    let r = r.into_inner();
                    Reply {
                        items: Some(r.$items.len()),
                        text: format!("{r:?}"),
                    }
                })
            }),
        )
    }};
}

/// `WatchTask` as `token`: the call's error, or the stream's first item.
fn watch(clients: &Clients, token: &str, id: &str) -> Call {
    let mut client = clients.tasks.clone();
    let request = bearer(
        token,
        mesh_proto::WatchTaskRequest {
            id: id.to_owned(),
            after_seq: 0,
        },
    );
    Call::Grpc(
        "tasks.watch_task",
        Box::pin(async move {
            let mut stream = client.watch_task(request).await?.into_inner();
            match tokio::time::timeout(ANSWER_WAIT, stream.message()).await {
                Ok(Ok(first)) => Ok(Reply {
                    text: format!("{first:?}"),
                    items: None,
                }),
                Ok(Err(status)) => Err(status),
                Err(_) => Ok(Reply {
                    text: "<stream open, nothing yet>".into(),
                    items: None,
                }),
            }
        }),
    )
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[derive(Clone)]
struct Clients {
    agents: AgentServiceClient<Channel>,
    tools: ToolServiceClient<Channel>,
    tasks: TaskServiceClient<Channel>,
    retrieval: RetrievalClient<Channel>,
    traces: TraceQueryClient<Channel>,
}

impl Clients {
    async fn connect(url: String) -> Self {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        Self {
            agents: AgentServiceClient::new(channel.clone()),
            tools: ToolServiceClient::new(channel.clone()),
            tasks: TaskServiceClient::new(channel.clone()),
            retrieval: RetrievalClient::new(channel.clone()),
            traces: TraceQueryClient::new(channel),
        }
    }
}

/// (status, headers and body as one text) of a REST call; a body still
/// streaming after [`ANSWER_WAIT`] is cut there.
async fn rest_answer(
    client: &RestClient,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut request = client
        .http
        .request(method, client.url(path))
        .bearer_auth(&client.token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let text = match tokio::time::timeout(ANSWER_WAIT, response.text()).await {
        Ok(text) => text.unwrap_or_default(),
        Err(_) => "<stream still open>".to_owned(),
    };
    (status, format!("{headers}\n{text}"))
}

/// The body part of [`rest_answer`]'s text.
fn body_of(answer: &str) -> Value {
    answer
        .split_once('\n')
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null)
}

fn is_empty_at(body: &Value, pointer: &str) -> bool {
    body.pointer(pointer)
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
}

/// Walks the cases as B; returns the printed table and the failures.
async fn walk(b: &RestClient, cases: Vec<Case>, markers: &[String]) -> (Vec<String>, Vec<String>) {
    let mut table = Vec::new();
    let mut failures = Vec::new();
    for case in cases {
        let (face, request, outcome, answer, passed) = match case.call {
            Call::Rest(method, path, body) => {
                let request = format!("{method} {path}");
                let (status, answer) = rest_answer(b, method, &path, body.as_ref()).await;
                let parsed = body_of(&answer);
                let passed = match case.expect {
                    Expect::NotFound => status == 404,
                    Expect::Empty(pointer) => status == 200 && is_empty_at(&parsed, pointer),
                    Expect::Absent(pointer) => {
                        status == 404 || (status == 200 && is_empty_at(&parsed, pointer))
                    }
                    Expect::Own => (200..300).contains(&status),
                };
                ("REST", request, status.to_string(), answer, passed)
            }
            Call::Grpc(method, call) => {
                let result = call.await;
                let (outcome, answer) = match &result {
                    Ok(reply) => (
                        match reply.items {
                            Some(n) => format!("OK, {n} items"),
                            None => "OK".to_owned(),
                        },
                        reply.text.clone(),
                    ),
                    Err(status) => (format!("{:?}", status.code()), status.message().to_owned()),
                };
                let passed = match (case.expect, &result) {
                    (Expect::NotFound, Err(s)) => s.code() == tonic::Code::NotFound,
                    (Expect::Empty(_), Ok(reply)) => reply.items == Some(0),
                    (Expect::Absent(_), Err(s)) => s.code() == tonic::Code::NotFound,
                    (Expect::Absent(_), Ok(reply)) => reply.items == Some(0),
                    (Expect::Own, Ok(_)) => true,
                    _ => false,
                };
                ("gRPC", method.to_owned(), outcome, answer, passed)
            }
        };
        let leaked: Vec<&String> = markers
            .iter()
            .filter(|m| answer.contains(m.as_str()))
            .collect();
        let line = format!(
            "{:<14} {:<22} {:<4} {:<58} {:<16} {:?}",
            case.resource, case.op, face, request, outcome, case.expect
        );
        if !passed {
            failures.push(format!("{line}: unexpected answer: {answer}"));
        }
        if !leaked.is_empty() {
            failures.push(format!(
                "{line}: A's data {leaked:?} in the answer: {answer}"
            ));
        }
        table.push(line);
    }
    (table, failures)
}

/// What A reads of its own resources; compared before and after B's walk.
async fn snapshot(a: &RestClient, paths: &[String]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for path in paths {
        let response = a.get(path).send().await.unwrap();
        assert_eq!(response.status(), 200, "A reads {path}");
        let mut body: Value = response.json().await.unwrap();
        // A quota's usage moves with the tenant's running work, not with B.
        if let Some(object) = body.as_object_mut() {
            object.remove("usage");
        }
        out.push((path.clone(), body));
    }
    out
}

async fn ok(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status} {body}");
    body
}

fn script(preamble: &str, turns: &Value) -> String {
    format!("{preamble}\n[[agentmesh-sim-script]]\n{turns}")
}

fn vector_docs(prefix: &str, text: &str, n: usize) -> Value {
    let docs: Vec<Value> = (0..n)
        .map(|i| {
            let mut v = vec![0.0f32; 4];
            v[i % 4] = 1.0;
            json!({"id": format!("{prefix}{i}"), "text": format!("{text} {i}"), "metadata": {"team": "red"}, "vector": v})
        })
        .collect();
    json!({ "documents": docs })
}

fn one_span_trace(trace_id: &str, name: &str, tenant: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent-worker"}}]},
        "scopeSpans": [{"scope": {"name": "agentmesh"}, "spans": [{
            "traceId": trace_id,
            "spanId": "b7ad6b7169203331",
            "parentSpanId": "",
            "name": name,
            "kind": 1,
            "startTimeUnixNano": (now - 5_000_000).to_string(),
            "endTimeUnixNano": now.to_string(),
            "attributes": [
                {"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}},
                {"key": "gen_ai.prompt", "value": {"stringValue": name}},
                {"key": "agentmesh.tenant", "value": {"stringValue": tenant}}
            ],
            "status": {}
        }]}]
    }]})
}

/// A chat completion through the gateway: (cache header, body).
async fn chat(client: &RestClient, prompt: &str) -> (Option<String>, Value) {
    let response = client
        .post("/v1/chat/completions")
        .json(
            &json!({"model": "sim-model", "temperature": 0, "max_tokens": 4,
            "messages": [{"role": "user", "content": prompt}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache = response
        .headers()
        .get("x-agentmesh-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    (cache, response.json().await.unwrap())
}

async fn router_cache_hits(mesh: &Mesh) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", mesh.router.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"router_cache_total{result="hit"} "#))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// A's names and ids that B tries.
struct Targets {
    done: String,
    over_grpc: String,
    paused: String,
    job: String,
    trace_id: String,
    key_id: String,
    trace_key: String,
    mark: String,
    turns: Value,
}

/// Everything B tries on A's resources, in order: reads, lists, changes
/// and deletes first, then B's own resources under A's names.
#[rustfmt::skip]
fn cases(g: &Clients, t: &str, x: &Targets) -> Vec<Case> {
    use Expect::{Absent, Empty, NotFound, Own};
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let mut cases = vec![
        // Agents.
        case("agent", "get", rest(get.clone(), "/v1/agents/iso-agent", None), NotFound),
        case("agent", "list", rest(get.clone(), "/v1/agents", None), Empty("/agents")),
        case("agent", "list versions", rest(get.clone(), "/v1/agents/iso-agent/versions", None), Absent("/versions")),
        case("agent", "get version", rest(get.clone(), "/v1/agents/iso-agent/versions/1", None), NotFound),
        case("agent", "run", rest(post.clone(), "/v1/agents/iso-agent/tasks", Some(json!({"input": "x"}))), NotFound),
        case("agent", "run in A's session", rest(post.clone(), "/v1/agents/iso-agent/tasks", Some(json!({"input": "x", "sessionId": "iso-session"}))), NotFound),
        case("agent", "get", grpc!(g, t, agents.get_agent(mesh_proto::GetAgentRequest { name: "iso-agent".into() })), NotFound),
        case("agent", "get (grpc-made)", grpc!(g, t, agents.get_agent(mesh_proto::GetAgentRequest { name: "iso-grpc".into() })), NotFound),
        case("agent", "list", grpc!(g, t, agents.list_agents(mesh_proto::ListAgentsRequest::default()), agents), Empty("")),
        case("agent", "list versions", grpc!(g, t, agents.list_agent_versions(mesh_proto::ListAgentVersionsRequest { name: "iso-agent".into(), ..Default::default() }), versions), Absent("")),
        case("agent", "get version", grpc!(g, t, agents.get_agent_version(mesh_proto::GetAgentVersionRequest { name: "iso-agent".into(), version: 1 })), NotFound),
        case("agent", "run", grpc!(g, t, tasks.submit_task(mesh_proto::SubmitTaskRequest { agent: "iso-agent".into(), input: "x".into(), ..Default::default() })), NotFound),
        // Tools.
        case("tool", "get", rest(get.clone(), "/v1/tools/iso-tool", None), NotFound),
        case("tool", "list", rest(get.clone(), "/v1/tools", None), Empty("/tools")),
        case("tool", "list versions", rest(get.clone(), "/v1/tools/iso-tool/versions", None), Absent("/versions")),
        case("tool", "get version", rest(get.clone(), "/v1/tools/iso-tool/versions/1", None), NotFound),
        case("tool", "get", grpc!(g, t, tools.get_tool(mesh_proto::GetToolRequest { name: "iso-tool".into() })), NotFound),
        case("tool", "list", grpc!(g, t, tools.list_tools(mesh_proto::ListToolsRequest {}), tools), Empty("")),
        case("tool", "list versions", grpc!(g, t, tools.list_tool_versions(mesh_proto::ListToolVersionsRequest { name: "iso-tool".into(), ..Default::default() }), versions), Absent("")),
        case("tool", "get version", grpc!(g, t, tools.get_tool_version(mesh_proto::GetToolVersionRequest { name: "iso-tool".into(), version: 1 })), NotFound),
        // Tasks: listed, read, cancelled, approved, rejected.
        case("task", "list", rest(get.clone(), "/v1/tasks", None), Empty("/tasks")),
        case("task", "list by agent", rest(get.clone(), "/v1/tasks?agent=iso-agent", None), Empty("/tasks")),
        case("task", "list", grpc!(g, t, tasks.list_tasks(mesh_proto::ListTasksRequest::default()), tasks), Empty("")),
    ];
    for id in [&x.done, &x.over_grpc, &x.paused] {
        cases.extend([
            case("task", "get", rest(get.clone(), format!("/v1/tasks/{id}"), None), NotFound),
            case("task", "cancel", rest(post.clone(), format!("/v1/tasks/{id}/cancel"), None), NotFound),
            case("task", "get", grpc!(g, t, tasks.get_task(mesh_proto::GetTaskRequest { id: id.clone() })), NotFound),
            case("task", "cancel", grpc!(g, t, tasks.cancel_task(mesh_proto::CancelTaskRequest { id: id.clone() })), NotFound),
            case("task events", "subscribe (SSE)", rest(get.clone(), format!("/v1/tasks/{id}/events"), None), NotFound),
            case("task events", "watch", watch(g, t, id), NotFound),
        ]);
    }
    cases.extend([
        case("task", "approve", rest(post.clone(), format!("/v1/tasks/{}/approve", x.paused), Some(json!({"comment": "b says yes"}))), NotFound),
        case("task", "reject", rest(post.clone(), format!("/v1/tasks/{}/reject", x.paused), Some(json!({"comment": "b says no"}))), NotFound),
        case("task", "approve", grpc!(g, t, tasks.resolve_approval(mesh_proto::ResolveApprovalRequest { id: x.paused.clone(), approve: true, ..Default::default() })), NotFound),
        case("task", "reject", grpc!(g, t, tasks.resolve_approval(mesh_proto::ResolveApprovalRequest { id: x.paused.clone(), approve: false, ..Default::default() })), NotFound),
        // Collections, documents, search, ingest.
        case("collection", "list", rest(get.clone(), "/v1/collections", None), Empty("/collections")),
        case("collection", "get", rest(get.clone(), "/v1/collections/iso-notes", None), NotFound),
        case("collection", "delete", rest(delete.clone(), "/v1/collections/iso-notes", None), NotFound),
        case("collection", "list", grpc!(g, t, retrieval.list_collections(mesh_proto::ListCollectionsRequest {}), collections), Empty("")),
        case("collection", "get", grpc!(g, t, retrieval.get_collection(mesh_proto::GetCollectionRequest { name: "iso-notes".into() })), NotFound),
        case("collection", "delete", grpc!(g, t, retrieval.delete_collection(mesh_proto::DeleteCollectionRequest { name: "iso-notes".into() })), NotFound),
        case("document", "get", rest(get.clone(), "/v1/collections/iso-notes/documents/doc0", None), NotFound),
        case("document", "upsert", rest(post.clone(), "/v1/collections/iso-notes/documents", Some(vector_docs("doc", "b overwrites", 1))), NotFound),
        case("document", "delete", rest(delete.clone(), "/v1/collections/iso-notes/documents/doc0", None), NotFound),
        case("document", "delete by ids", rest(post.clone(), "/v1/collections/iso-notes/documents/delete", Some(json!({"ids": ["doc1"]}))), NotFound),
        case("document", "delete by filter", rest(post.clone(), "/v1/collections/iso-notes/documents/delete", Some(json!({"filter": {"team": "red"}}))), NotFound),
        case("document", "search vector", rest(post.clone(), "/v1/collections/iso-notes/search", Some(json!({"vector": [1, 0, 0, 0], "topK": 50}))), NotFound),
        case("document", "search keyword", rest(post.clone(), "/v1/collections/iso-notes/search", Some(json!({"query": x.mark, "mode": "keyword"}))), NotFound),
        case("document", "get", grpc!(g, t, retrieval.get_document(mesh_proto::GetDocumentRequest { collection: "iso-notes".into(), id: "doc0".into() })), NotFound),
        case("document", "upsert", grpc!(g, t, retrieval.upsert_documents(mesh_proto::UpsertDocumentsRequest { collection: "iso-notes".into(), documents: vec![mesh_proto::Document { id: "doc0".into(), text: "b".into(), vector: vec![1.0, 0.0, 0.0, 0.0], ..Default::default() }] })), NotFound),
        case("document", "delete", grpc!(g, t, retrieval.delete_documents(mesh_proto::DeleteDocumentsRequest { collection: "iso-notes".into(), ids: vec!["doc0".into()], ..Default::default() })), NotFound),
        case("document", "search", grpc!(g, t, retrieval.search(mesh_proto::SearchRequest { collection: "iso-notes".into(), vector: vec![1.0, 0.0, 0.0, 0.0], top_k: 50, ..Default::default() })), NotFound),
        case("ingest job", "submit", rest(post.clone(), "/v1/collections/iso-notes/ingest", Some(vector_docs("evil", "b", 1))), NotFound),
        case("ingest job", "status", rest(get.clone(), format!("/v1/ingest-jobs/{}", x.job), None), NotFound),
        case("ingest job", "submit", grpc!(g, t, retrieval.submit_ingest(mesh_proto::SubmitIngestRequest { collection: "iso-notes".into(), documents: vec![mesh_proto::Document { id: "evil".into(), text: "b".into(), vector: vec![1.0, 0.0, 0.0, 0.0], ..Default::default() }] })), NotFound),
        case("ingest job", "status", grpc!(g, t, retrieval.get_ingest_job(mesh_proto::GetIngestJobRequest { id: x.job.clone() })), NotFound),
        // Traces and observations.
        case("trace", "list", rest(get.clone(), "/v1/traces", None), Empty("/data")),
        case("trace", "list by session", rest(get.clone(), "/v1/traces?session_id=iso-session", None), Empty("/data")),
        case("trace", "get", rest(get.clone(), format!("/v1/traces/{}", x.trace_id), None), NotFound),
        case("trace", "aggregate", rest(get.clone(), "/v1/traces/aggregates?by=agent", None), Empty("/data")),
        case("trace", "aggregate by model", rest(get.clone(), "/v1/traces/aggregates?by=model", None), Empty("/data")),
        case("trace", "list", grpc!(g, t, traces.list_traces(mesh_proto::ListTracesRequest::default()), traces), Empty("")),
        case("trace", "get", grpc!(g, t, traces.get_trace(mesh_proto::GetTraceRequest { trace_id: x.trace_id.to_owned() })), NotFound),
        case("trace", "aggregate", grpc!(g, t, traces.aggregates(mesh_proto::TraceAggregatesRequest::default()), buckets), Empty("")),
        // Keys, the audit log, the quota.
        case("api key", "list", rest(get.clone(), "/v1/api-keys", None), Empty("/keys")),
        case("api key", "revoke", rest(delete.clone(), format!("/v1/api-keys/{}", x.key_id), None), NotFound),
        case("trace key", "list", rest(get.clone(), "/v1/trace-keys", None), Empty("/data")),
        case("trace key", "revoke", rest(delete.clone(), format!("/v1/trace-keys/{}", x.trace_key), None), NotFound),
        case("audit log", "list", rest(get.clone(), "/v1/audit", None), Empty("/entries")),
        case("audit log", "list agents'", rest(get.clone(), "/v1/audit?resourceKind=agent", None), Empty("/entries")),
        case("quota", "get", rest(get.clone(), "/v1/quotas", None), Own),
        // B's own resources under A's names: created in B's tenant, A's untouched.
        case("trace", "score", rest(post.clone(), "/v1/traces/scores", Some(json!({"traceId": x.trace_id, "name": "b-score", "value": 0.0}))), Own),
        case("quota", "put", rest(put.clone(), "/v1/quotas", Some(json!({"weight": 2}))), Own),
        case("tool", "apply same name", rest(put.clone(), "/v1/tools/iso-tool", Some(json!({"type": "api", "config": {"endpoint": "http://127.0.0.1:9/b"}}))), Own),
        case("agent", "apply same name", rest(put.clone(), "/v1/agents/iso-agent", Some(json!({"model": "sim-model",
            "systemPrompt": script("b's own", &x.turns), "memory": {"type": "redis", "ttl": "1h", "maxHistory": 10}}))), Own),
        case("agent", "apply same name", grpc!(g, t, agents.apply_agent(mesh_proto::ApplyAgentRequest { name: "iso-grpc".into(), spec: Some(mesh_proto::AgentSpec { model: "sim-model".into(), ..Default::default() }) })), Own),
        case("agent", "get own", rest(get.clone(), "/v1/agents/iso-agent", None), Own),
        case("agent", "list own versions", rest(get.clone(), "/v1/agents/iso-agent/versions", None), Own),
        case("collection", "create same name", rest(post.clone(), "/v1/collections", Some(json!({"name": "iso-notes", "embeddingModel": "none", "dimension": 4}))), Own),
        case("document", "search own", rest(post.clone(), "/v1/collections/iso-notes/search", Some(json!({"vector": [1, 0, 0, 0], "topK": 50}))), Own),
        case("document", "search own keyword", rest(post.clone(), "/v1/collections/iso-notes/search", Some(json!({"query": x.mark, "mode": "keyword"}))), Own),
        case("document", "get in own", rest(get.clone(), "/v1/collections/iso-notes/documents/doc0", None), NotFound),
        case("collection", "delete own", rest(delete.clone(), "/v1/collections/iso-notes", None), Own),
    ]);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenant_reads_lists_changes_and_deletes_nothing_of_a_tenants() {
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await.unwrap()),
        redis_url: Some(redis_url()),
        retrieval: true,
        router_table: Some("cache: {ttl_seconds: 300}"),
        ..Default::default()
    })
    .await
    .unwrap();
    // Fresh names: Redis (memory, cache) outlives the run.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (tenant_a, tenant_b) = (
        format!("iso-a-{}", &run[..8]),
        format!("iso-b-{}", &run[..8]),
    );
    // Planted in everything A writes: any answer to B that holds it leaks.
    let mark = format!("amber-owl-{run}");
    let markers = vec![mark.clone(), tenant_a.clone()];
    let base = format!("http://{}", mesh.gateway.http_addr);
    let token_a = mesh.token(&tenant_a, &[Role::Admin]);
    let token_b = mesh.token(&tenant_b, &[Role::Admin]);
    let a = RestClient::new(base.clone(), token_a.clone());
    let b = RestClient::new(base.clone(), token_b.clone());
    let clients = Clients::connect(mesh.gateway_grpc_url()).await;

    // === A creates one of everything ===
    let tool = json!({"type": "api", "description": format!("looks things up for {mark}"),
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        "config": {"endpoint": "http://127.0.0.1:9/lookup"}});
    ok(a.put("/v1/tools/iso-tool").json(&tool)).await;
    let turns =
        json!([{"content": "previous=[{{previous_user}}] turns={{user_turns}} said {{input}}"}]);
    let agent = json!({"model": "sim-model", "systemPrompt": script(&format!("private to {mark}"), &turns),
        "tools": [{"ref": "iso-tool"}], "memory": {"type": "redis", "ttl": "1h", "maxHistory": 10}});
    ok(a.put("/v1/agents/iso-agent").json(&agent)).await;
    let human = json!([{"tool_calls": [{"name": "ask_human", "arguments": {"action": mark}}]},
        {"content": "decision: {{tool_results}}"}]);
    ok(a.put("/v1/agents/iso-gated").json(&json!({"model": "sim-model",
        "systemPrompt": script(&mark, &human),
        "tools": [{"name": "ask_human", "spec": {"type": "human", "description": format!("may {mark} run this?"),
            "parameters": {"type": "object", "properties": {"action": {"type": "string"}}},
            "config": {"timeout": "1h"}}}]})))
    .await;
    // Through the public gRPC face too.
    let mut agents = clients.agents.clone();
    agents
        .apply_agent(bearer(
            &token_a,
            mesh_proto::ApplyAgentRequest {
                name: "iso-grpc".into(),
                spec: Some(mesh_proto::AgentSpec {
                    model: "sim-model".into(),
                    system_prompt: format!("applied over grpc by {mark}"),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();

    let done = a
        .submit_in_session("iso-agent", &format!("hello from {mark}"), "iso-session")
        .await
        .unwrap();
    let finished = a.wait_for(&done, &["succeeded"], WAIT).await.unwrap();
    assert!(
        finished["output"].as_str().unwrap().contains(&mark),
        "{finished}"
    );
    let mut tasks = clients.tasks.clone();
    let over_grpc = tasks
        .submit_task(bearer(
            &token_a,
            mesh_proto::SubmitTaskRequest {
                agent: "iso-grpc".into(),
                input: format!("grpc input of {mark}"),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap()
        .id;
    a.wait_for(&over_grpc, &["succeeded"], WAIT).await.unwrap();
    let paused = a
        .submit("iso-gated", &format!("gate {mark}"))
        .await
        .unwrap();
    a.wait_for(&paused, &["awaiting_approval"], WAIT)
        .await
        .unwrap();

    let mut retrieval = clients.retrieval.clone();
    retrieval
        .create_collection(bearer(
            &token_a,
            mesh_proto::CreateCollectionRequest {
                name: "iso-notes".into(),
                embedding_model: "none".into(),
                dimension: 4,
                chunking: None,
            },
        ))
        .await
        .unwrap();
    ok(a.post("/v1/collections/iso-notes/documents")
        .json(&vector_docs("doc", &format!("note of {mark}"), 4)))
    .await;
    let job = ok(a
        .post("/v1/collections/iso-notes/ingest")
        .json(&vector_docs("queued", &format!("queued note of {mark}"), 2)))
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ok(a.get(&format!("/v1/ingest-jobs/{job}"))).await["state"] != "succeeded" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ingest job {job} never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let trace_id = &run[..32];
    let exported = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", mesh.traces.http_addr))
        .header("agentmesh-tenant", tenant_a.as_str())
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .json(&one_span_trace(
            trace_id,
            &format!("invoke_agent {mark}"),
            &tenant_a,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    while a
        .get(&format!("/v1/traces/{trace_id}"))
        .send()
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(tokio::time::Instant::now() < deadline, "trace never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trace_key = ok(a.post("/v1/trace-keys")).await["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_key = ok(a
        .post("/v1/api-keys")
        .json(&json!({"name": format!("ci key of {mark}"), "role": "viewer"})))
    .await;
    let (key_id, key) = (
        api_key["id"].as_str().unwrap().to_owned(),
        api_key["key"].as_str().unwrap().to_owned(),
    );
    ok(a.put("/v1/quotas")
        .json(&json!({"weight": 7, "maxRunningTasks": 13})))
    .await;

    let a_views: Vec<String> = [
        "/v1/agents".to_owned(),
        "/v1/agents/iso-agent".to_owned(),
        "/v1/agents/iso-agent/versions".to_owned(),
        "/v1/agents/iso-agent/versions/1".to_owned(),
        "/v1/agents/iso-grpc".to_owned(),
        "/v1/tools".to_owned(),
        "/v1/tools/iso-tool".to_owned(),
        "/v1/tools/iso-tool/versions".to_owned(),
        "/v1/tasks".to_owned(),
        format!("/v1/tasks/{done}"),
        format!("/v1/tasks/{over_grpc}"),
        format!("/v1/tasks/{paused}"),
        "/v1/collections".to_owned(),
        "/v1/collections/iso-notes".to_owned(),
        "/v1/collections/iso-notes/documents/doc0".to_owned(),
        format!("/v1/ingest-jobs/{job}"),
        "/v1/traces".to_owned(),
        format!("/v1/traces/{trace_id}"),
        "/v1/api-keys".to_owned(),
        "/v1/trace-keys".to_owned(),
        "/v1/quotas".to_owned(),
        "/v1/audit".to_owned(),
    ]
    .into();
    let before = snapshot(&a, &a_views).await;
    let a_events = a.events(&done, None, WAIT).await.unwrap();

    // === B walks everything of A's ===
    let targets = Targets {
        done: done.clone(),
        over_grpc: over_grpc.clone(),
        paused: paused.clone(),
        job: job.clone(),
        trace_id: trace_id.to_owned(),
        key_id,
        trace_key,
        mark: mark.clone(),
        turns: turns.clone(),
    };
    let (mut table, mut failures) = walk(&b, cases(&clients, &token_b, &targets), &markers).await;

    // A's resources read as they did before B's walk.
    let after = snapshot(&a, &a_views).await;
    for ((path, was), (_, is)) in before.iter().zip(&after) {
        if was != is {
            failures.push(format!(
                "A's {path} changed while B walked it: {was} -> {is}"
            ));
        }
    }
    let events = a.events(&done, None, WAIT).await.unwrap();
    if events.len() != a_events.len() {
        failures.push(format!(
            "A's task events changed: {a_events:?} -> {events:?}"
        ));
    }
    // A's key still acts for A.
    let listed = ok(RestClient::new(base, key).get("/v1/agents")).await;
    assert!(listed.to_string().contains("iso-agent"), "{listed}");

    // Session memory: B's task in a session of A's id starts a fresh history.
    let theirs = b
        .submit_in_session("iso-agent", "who was here?", "iso-session")
        .await
        .unwrap();
    let theirs = b.wait_for(&theirs, &["succeeded"], WAIT).await.unwrap();
    let output = theirs["output"].as_str().unwrap();
    let line = format!(
        "{:<14} {:<22} REST run in session iso-session: {output}",
        "session memory", "read A's history"
    );
    if output != "previous=[] turns=1 said who was here?" {
        failures.push(format!("{line}: B's task saw history"));
    }
    table.push(line);
    // A's history is still there (the check above could not pass vacuously).
    let mine = a
        .submit_in_session("iso-agent", "and again", "iso-session")
        .await
        .unwrap();
    let mine = a.wait_for(&mine, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(
        mine["output"],
        format!("previous=[hello from {mark}] turns=2 said and again"),
        "A's session memory"
    );

    // The response cache: A's cached answer is a hit for A, a miss for B.
    let prompt = format!("isolation cache probe {run}");
    let (first, answer_a) = chat(&a, &prompt).await;
    assert_eq!(first.as_deref(), Some("miss"));
    let deadline = tokio::time::Instant::now() + WAIT;
    let (hit, again) = loop {
        let (cache, body) = chat(&a, &prompt).await;
        if cache.as_deref() == Some("hit") {
            break (cache, body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's answer never cached"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (hit.as_deref(), &again["id"]),
        (Some("hit"), &answer_a["id"])
    );
    let hits = router_cache_hits(&mesh).await;
    let (cache_b, answer_b) = chat(&b, &prompt).await;
    let line = format!(
        "{:<14} {:<22} REST same prompt as A: cache {cache_b:?}, id {} (A's {}), {} completion tokens",
        "chat cache",
        "read A's answer",
        answer_b["id"],
        answer_a["id"],
        answer_b["usage"]["completion_tokens"]
    );
    if cache_b.as_deref() != Some("miss")
        || answer_b["id"] == answer_a["id"]
        || router_cache_hits(&mesh).await != hits
    {
        failures.push(format!("{line}: B was served A's cached answer"));
    }
    table.push(line);

    println!(
        "tenant isolation: {} cases walked as {tenant_b} (admin) against {tenant_a}",
        table.len()
    );
    for line in &table {
        println!("  {line}");
    }
    assert!(
        failures.is_empty(),
        "{} isolation failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
