#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

//! Service-to-service authentication: every internal gRPC server refuses a
//! call without a valid service token (missing, signed with another key,
//! expired, for another audience, a user's JWT), while gRPC health stays
//! open; the router's HTTP face and the collector's OTLP/HTTP face refuse
//! a tenant header without one; and the services' own OTLP export, which
//! carries the token and names tenants per span, lands a task's trace under
//! the task's tenant.

use std::future::Future;
use std::time::Duration;

use mesh_auth::service::{SERVICE_AUDIENCE, ServiceKey, issue_service_token};
use mesh_integration::mesh::{TEST_SERVICE_KEY, service_token};
use mesh_integration::{Mesh, MeshOptions};
use mesh_runtime::service_auth::TOKEN_HEADER;
use serde_json::{Value, json};
use tonic::{Code, Request, Status};
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

/// Every token a server must refuse, with why.
fn refused_tokens() -> Vec<(&'static str, Option<String>)> {
    let key = ServiceKey::new(TEST_SERVICE_KEY).unwrap();
    let other = ServiceKey::new("another-mesh-key-of-another-cluster-0123").unwrap();
    vec![
        ("no token", None),
        (
            "bad signature",
            Some(issue_service_token(&other, "gateway", SERVICE_AUDIENCE, 60).unwrap()),
        ),
        (
            "expired",
            Some(issue_service_token(&key, "gateway", SERVICE_AUDIENCE, -600).unwrap()),
        ),
        (
            "wrong audience",
            Some(issue_service_token(&key, "gateway", "agentmesh", 60).unwrap()),
        ),
        (
            "user token signed with the same key",
            Some(
                mesh_auth::issue_hs256(
                    TEST_SERVICE_KEY.as_bytes(),
                    "acme",
                    "alice",
                    &[mesh_auth::Role::Admin],
                    60,
                )
                .unwrap(),
            ),
        ),
        ("garbage", Some("not-a-jwt".to_owned())),
    ]
}

/// `message` for tenant acme, with `token` in the service-token header.
fn request<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("agentmesh-tenant", "acme".parse().unwrap());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert(TOKEN_HEADER, token.parse().unwrap());
    }
    request
}

/// Calls a server once per refused token (each must be UNAUTHENTICATED,
/// naming the header) and once with a valid token (which must pass the
/// check: any answer but UNAUTHENTICATED).
async fn check_server<F, Fut, T>(server: &str, call: F)
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    for (why, token) in refused_tokens() {
        let status = match call(token).await {
            Ok(_) => panic!("{server}: a call with {why} was served"),
            Err(status) => status,
        };
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{server}, {why}: {status:?}"
        );
        assert!(
            status.message().contains(TOKEN_HEADER),
            "{server}, {why}: the message names the header: {status:?}"
        );
    }
    if let Err(status) = call(Some(service_token())).await {
        assert_ne!(
            status.code(),
            Code::Unauthenticated,
            "{server}: a valid token was refused: {status:?}"
        );
    }
}

/// gRPC health answers without a token.
async fn health_is_open(server: &str, url: String) {
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap_or_else(|s| panic!("{server}: health needs no token: {s:?}"));
    assert_eq!(
        answer.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
        "{server}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_internal_grpc_server_needs_a_valid_service_token() {
    let mesh = Mesh::start(MeshOptions {
        retrieval: true,
        start_worker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let orchestrator_url = format!("http://{}", mesh.orchestrator.as_ref().unwrap().grpc_addr);
    let retrieval_url = format!("http://{}", mesh.retrieval.as_ref().unwrap().grpc_addr);
    let router_url = mesh.router_grpc_url();
    let traces_url = format!("http://{}", mesh.traces.grpc_addr);

    let orchestrator =
        mesh_proto::control_plane_client::ControlPlaneClient::connect(orchestrator_url.clone())
            .await
            .unwrap();
    check_server("orchestrator", |token| {
        let mut client = orchestrator.clone();
        async move {
            client
                .list_tools(request(
                    mesh_proto::ListToolsRequest::default(),
                    token.as_deref(),
                ))
                .await
        }
    })
    .await;

    let retrieval = mesh_proto::retrieval_client::RetrievalClient::connect(retrieval_url.clone())
        .await
        .unwrap();
    check_server("retrieval", |token| {
        let mut client = retrieval.clone();
        async move {
            client
                .list_collections(request(
                    mesh_proto::ListCollectionsRequest::default(),
                    token.as_deref(),
                ))
                .await
        }
    })
    .await;

    let router =
        mesh_proto::inference_service_client::InferenceServiceClient::connect(router_url.clone())
            .await
            .unwrap();
    check_server("inference-router", |token| {
        let mut client = router.clone();
        async move {
            client
                .embed(request(
                    mesh_proto::EmbedRequest {
                        model: "sim-model".into(),
                        input: vec!["alpha".into()],
                        ..Default::default()
                    },
                    token.as_deref(),
                ))
                .await
        }
    })
    .await;

    let collector = TraceServiceClient::connect(traces_url.clone())
        .await
        .unwrap();
    check_server("trace-collector OTLP/gRPC", |token| {
        let mut client = collector.clone();
        async move {
            client
                .export(request(
                    ExportTraceServiceRequest::default(),
                    token.as_deref(),
                ))
                .await
        }
    })
    .await;

    // Without a tenant header as well: a bare OTLP export is refused too
    // (per-span tenants are for authenticated services only).
    let status = collector
        .clone()
        .export(ExportTraceServiceRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // The collector's internal query API shares the server and its layer.
    let query = mesh_proto::trace_query_client::TraceQueryClient::connect(traces_url.clone())
        .await
        .unwrap();
    check_server("trace-collector TraceQuery", |token| {
        let mut client = query.clone();
        async move {
            client
                .list_traces(request(
                    mesh_proto::ListTracesRequest::default(),
                    token.as_deref(),
                ))
                .await
        }
    })
    .await;

    for (server, url) in [
        ("orchestrator", orchestrator_url),
        ("retrieval", retrieval_url),
        ("inference-router", router_url),
        ("trace-collector", traces_url),
    ] {
        health_is_open(server, url).await;
    }
    // The admin ports stay open too.
    for addr in [
        mesh.orchestrator.as_ref().unwrap().admin_addr,
        mesh.router.admin_addr,
        mesh.traces.admin_addr,
    ] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let status = reqwest::get(format!("http://{addr}{path}"))
                .await
                .unwrap()
                .status();
            assert_eq!(status, 200, "{addr}{path}");
        }
    }
}

/// `POST url` with `body`, the tenant header when given, and the token.
async fn post(url: &str, tenant: Option<&str>, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(tenant) = tenant {
        request = request.header("agentmesh-tenant", tenant);
    }
    if let Some(token) = token {
        request = request.header(TOKEN_HEADER, token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_faces_honour_a_tenant_header_only_with_a_service_token() {
    let mesh = Mesh::start(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let chat_url = format!("http://{}/v1/chat/completions", mesh.router.http_addr);
    let chat = json!({"model": "sim-model", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hello"}]});
    let otlp_url = format!("http://{}/v1/traces", mesh.traces.http_addr);
    let spans = json!({"resourceSpans": []});

    for (why, token) in refused_tokens() {
        let (status, body) = post(&chat_url, Some("acme"), token.as_deref(), &chat).await;
        assert_eq!(status, 401, "router, {why}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(TOKEN_HEADER),
            "router, {why}: {body}"
        );
        let (status, body) = post(&otlp_url, Some("acme"), token.as_deref(), &spans).await;
        assert_eq!(status, 401, "collector, {why}: {body}");
    }
    // The collector's query API trusts the same header, under the same rule.
    let query = reqwest::Client::new()
        .get(format!("http://{}/api/traces", mesh.traces.http_addr))
        .header("agentmesh-tenant", "acme")
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 401);

    let token = service_token();
    let (status, body) = post(&chat_url, Some("acme"), Some(&token), &chat).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(&otlp_url, Some("acme"), Some(&token), &spans).await;
    assert_eq!(status, 200, "{body}");
    // An OpenAI client with neither header is served as the default tenant.
    let (status, body) = post(&chat_url, None, None, &chat).await;
    assert_eq!(status, 200, "{body}");
    // The Langfuse route keeps its own Basic auth: a tenant header does not
    // get past it, with or without a service token.
    let langfuse = format!("http://{}/api/public/otel/v1/traces", mesh.traces.http_addr);
    let (status, _) = post(&langfuse, Some("acme"), None, &spans).await;
    assert_eq!(status, 401);
}

const CHILD_ENV: &str = "AGENTMESH_TEST_OTLP_CHILD";

/// The tracing subscriber is global to a process and the other tests of
/// this binary install theirs, so the export test runs in a child process
/// of its own: this binary again, running only [`otlp_export_child`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_own_otlp_export_lands_a_task_under_its_tenant() {
    let run = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "service_auth::otlp_export_child",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the child test took over 180 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const TRACE_ID: &str = "5cf92f3577b34da6a3ce929d0e0e4737";

fn observation_names(nodes: &Value, out: &mut Vec<String>) {
    for node in nodes.as_array().into_iter().flatten() {
        out.push(node["name"].as_str().unwrap_or_default().to_owned());
        observation_names(&node["children"], out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run by the_services_own_otlp_export_lands_a_task_under_its_tenant, in a process of its own"]
async fn otlp_export_child() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "runs in a process of its own: see the_services_own_otlp_export_lands_a_task_under_its_tenant"
    );
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    // Every service of the mesh exports here, as a deployed one would to
    // OTEL_EXPORTER_OTLP_ENDPOINT: one exporter per process, with the
    // process's service token.
    let _telemetry = mesh_telemetry::init(
        "agentmesh-test",
        Some(&format!("http://{}", mesh.traces.grpc_addr)),
        false,
        "warn",
    )
    .unwrap();
    let tenant = format!("otlp{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let client = mesh.client(&tenant);
    client.apply_sim_agent("support", 3).await.unwrap();
    let response = client
        .post("/v1/agents/support/tasks")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    client
        .wait_for(&id, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();

    // The batch exporter sends every few seconds; the spans of one task
    // arrive in several exports.
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/traces/{TRACE_ID}", mesh.traces.http_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let names = loop {
        let response = http
            .get(&url)
            .header("agentmesh-tenant", &tenant)
            .header(TOKEN_HEADER, service_token())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let mut names = Vec::new();
        observation_names(&body["observations"], &mut names);
        let has = |prefix: &str| names.iter().any(|n| n.starts_with(prefix));
        if status == 200 && has("POST ") && has("invoke_agent") && has("chat") {
            break names;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task's trace never reached the collector under {tenant}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        names.iter().any(|n| n == "grpc"),
        "orchestrator span: {names:?}"
    );

    // Filed under the task's tenant only.
    let other = http
        .get(&url)
        .header("agentmesh-tenant", "someone-else")
        .header(TOKEN_HEADER, service_token())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}
