//! Hostile and mistaken input at the gateway: every case is a 4xx (or the
//! matching gRPC code) naming the field, the services stay up, and nothing
//! stored changes. Also: one tenant never sees another's tasks.

use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::{Mesh, MeshOptions, fresh_postgres};
use mesh_proto::agent_service_client::AgentServiceClient;
use mesh_proto::task_service_client::TaskServiceClient;
use mesh_proto::{ApplyAgentRequest, GetAgentRequest, GetTaskRequest, SubmitTaskRequest};
use serde_json::{Value, json};

async fn mesh() -> Mesh {
    let url = fresh_postgres().await.expect("fresh postgres database");
    Mesh::start(MeshOptions {
        database_url: Some(url),
        ..Default::default()
    })
    .await
    .expect("mesh starts")
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_rest_input_is_a_4xx_naming_the_field_and_changes_nothing() {
    let mesh = mesh().await;
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 4).await.unwrap();
    let id = client.submit("support", "hello").await.unwrap();
    client
        .wait_for(&id, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();
    let before = client.task(&id).await.unwrap();

    let raw = |method: reqwest::Method, path: &str, body: &'static str| {
        client
            .http
            .request(method, client.url(path))
            .bearer_auth(&client.token)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            raw(
                reqwest::Method::POST,
                "/v1/agents/support/tasks",
                r#"{"input": "x""#,
            ),
            400,
            "body",
        ),
        (
            raw(
                reqwest::Method::POST,
                "/v1/agents/support/tasks",
                r#"{"input": "x", "priority": 1}"#,
            ),
            400,
            "priority",
        ),
        (
            raw(
                reqwest::Method::POST,
                "/v1/agents/support/tasks",
                r#"{"input": 7}"#,
            ),
            400,
            "input",
        ),
        (
            raw(
                reqwest::Method::POST,
                "/v1/agents/support/tasks",
                r#"{"input": "  "}"#,
            ),
            400,
            "input",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/support",
                r#"{"model": "m", "temperature": 9}"#,
            ),
            400,
            "temperature",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/support",
                r#"{"model": "m", "maxTokens": -3}"#,
            ),
            400,
            "maxTokens",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/support",
                r#"{"model": "m", "toolz": []}"#,
            ),
            400,
            "toolz",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/support",
                r#"{"model": "m", "scaling": {"minReplicas": 5, "maxReplicas": 2}}"#,
            ),
            400,
            "scaling.minReplicas",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/support",
                r#"{"model": "m", "scaling": {"replicas": 2}}"#,
            ),
            400,
            "scaling.replicas",
        ),
        (
            raw(
                reqwest::Method::PUT,
                "/v1/agents/Bad.Name",
                r#"{"model": "m"}"#,
            ),
            400,
            "name",
        ),
        (
            client
                .post("/v1/agents/nobody/tasks")
                .json(&json!({"input": "x"})),
            404,
            "",
        ),
        (client.get("/v1/tasks/not-a-uuid"), 400, "id"),
        (
            client.get(&format!("/v1/tasks/{}", uuid::Uuid::now_v7())),
            404,
            "",
        ),
        (client.get("/v1/tasks?status=done"), 400, "status"),
        (client.get("/v1/tasks?limit=0"), 400, "limit"),
        (client.get("/v1/tasks?limit=100000"), 400, "limit"),
        (client.get("/v1/tasks?colour=red"), 400, "colour"),
        (client.get("/v1/tasks?cursor=zzz"), 400, "cursor"),
        (client.get("/v1/tasks/not-a-uuid/events"), 400, "id"),
        (client.post(&format!("/v1/tasks/{id}/cancel")), 409, ""),
        (client.http.get(client.url("/v1/tasks")), 401, ""),
        (
            client
                .http
                .get(client.url("/v1/tasks"))
                .bearer_auth("not.a.jwt"),
            401,
            "",
        ),
        (
            client.post("/v1/agents/support/tasks").body("input=x"),
            400,
            "",
        ),
    ];
    for (i, (request, status, field)) in cases.into_iter().enumerate() {
        let (got, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(got, status, "case {i}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "case {i}: {error}"
        );
        if !field.is_empty() {
            assert_eq!(error["field"], field, "case {i}: {error}");
        }
    }

    // Input over the configured limit (64 KiB by default): 400 on input,
    // or 413 when it also exceeds the body limit.
    let big = "x".repeat(70 * 1024);
    let (status, error) = error_of(
        client
            .post("/v1/agents/support/tasks")
            .json(&json!({"input": big}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (400, Some("input")),
        "{error}"
    );
    let huge = "x".repeat(300 * 1024);
    let (status, _) = error_of(
        client
            .post("/v1/agents/support/tasks")
            .json(&json!({"input": huge}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 413);

    // A viewer may read but not run.
    let viewer =
        mesh_integration::RestClient::new(client.base.clone(), mesh.token("acme", &[Role::Viewer]));
    assert_eq!(viewer.task(&id).await.unwrap()["id"], id.as_str());
    let (status, _) = error_of(
        viewer
            .post("/v1/agents/support/tasks")
            .json(&json!({"input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);

    // Nothing stored changed, and the services still answer.
    assert_eq!(client.task(&id).await.unwrap(), before);
    let agent: Value = client
        .get("/v1/agents/support")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["version"], 1);
    assert_eq!(agent["spec"]["maxTokens"], 4);
    for addr in [
        mesh.gateway.admin_addr,
        mesh.router.admin_addr,
        mesh.orchestrator.as_ref().unwrap().admin_addr,
    ] {
        let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200);
    }
    let id2 = client.submit("support", "still working?").await.unwrap();
    client
        .wait_for(&id2, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_grpc_input_gets_the_matching_codes() {
    let mesh = mesh().await;
    mesh.client("acme")
        .apply_sim_agent("support", 4)
        .await
        .unwrap();
    let mut grpc = TaskServiceClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let token = format!("Bearer {}", mesh.token("acme", &[Role::User]));
    let call = |id: &str| {
        let mut r = tonic::Request::new(GetTaskRequest { id: id.to_owned() });
        r.metadata_mut()
            .insert("authorization", token.parse().unwrap());
        r
    };
    let status = grpc.get_task(call("not-a-uuid")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().starts_with("id:"), "{}", status.message());
    let status = grpc
        .get_task(call(&uuid::Uuid::now_v7().to_string()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let mut r = tonic::Request::new(SubmitTaskRequest {
        agent: "nobody".into(),
        input: "x".into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    assert_eq!(
        grpc.submit_task(r).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    let mut r = tonic::Request::new(SubmitTaskRequest {
        agent: "support".into(),
        input: "x".repeat(70 * 1024),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", token.parse().unwrap());
    let status = grpc.submit_task(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("input:"),
        "{}",
        status.message()
    );
    let unauthenticated = grpc
        .get_task(tonic::Request::new(GetTaskRequest {
            id: uuid::Uuid::now_v7().to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);
}

/// PostgreSQL stores no NUL in text or jsonb. The REST face refuses a
/// `\u0000` in its JSON parser; a gRPC client's NUL reaches the
/// orchestrator, which must refuse it naming the field, not fail the write
/// as an outage (it was UNAVAILABLE, which clients retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nul_in_a_grpc_string_is_invalid_argument_naming_the_field() {
    fn authorized<T>(
        token: &tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        message: T,
    ) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        r.metadata_mut().insert("authorization", token.clone());
        r
    }
    let mesh = mesh().await;
    mesh.client("acme")
        .apply_sim_agent("support", 4)
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
        format!("Bearer {}", mesh.token("acme", &[Role::Operator]))
            .parse()
            .unwrap();
    let mut tasks = TaskServiceClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let status = tasks
        .submit_task(authorized(
            &token,
            SubmitTaskRequest {
                agent: "support".into(),
                input: "where is\0 my order".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("input:"),
        "{}",
        status.message()
    );

    let mut agents = AgentServiceClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let agent = agents
        .get_agent(authorized(
            &token,
            GetAgentRequest {
                name: "support".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut spec = agent.spec.unwrap();
    spec.system_prompt = "be brief\0".into();
    let status = agents
        .apply_agent(authorized(
            &token,
            ApplyAgentRequest {
                name: "support".into(),
                spec: Some(spec),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("spec.systemPrompt:"),
        "{}",
        status.message()
    );
    // Nothing changed: still version 1, and a clean submit works.
    let after = agents
        .get_agent(authorized(
            &token,
            GetAgentRequest {
                name: "support".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.version, agent.version);
    tasks
        .submit_task(authorized(
            &token,
            SubmitTaskRequest {
                agent: "support".into(),
                input: "where is my order".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_never_sees_another_tenants_agents_tasks_or_events() {
    let mesh = mesh().await;
    let acme = mesh.client("acme");
    let globex = mesh.client("globex");
    acme.apply_sim_agent("support", 4).await.unwrap();
    let id = acme.submit("support", "secret plans").await.unwrap();
    acme.wait_for(&id, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();

    for path in [
        format!("/v1/tasks/{id}"),
        format!("/v1/tasks/{id}/events"),
        "/v1/agents/support".to_owned(),
    ] {
        let (status, _) = error_of(globex.get(&path).send().await.unwrap()).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = error_of(
        globex
            .post(&format!("/v1/tasks/{id}/cancel"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = error_of(
        globex
            .post("/v1/agents/support/tasks")
            .json(&json!({"input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "globex has no agent named support");
    let list: Value = globex
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 0);
    let list: Value = acme
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn task_lists_filter_and_paginate_with_a_cursor() {
    let mesh = mesh().await;
    let client = mesh.client("acme");
    client.apply_sim_agent("a", 2).await.unwrap();
    client.apply_sim_agent("b", 2).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(client.submit("a", &format!("task {i}")).await.unwrap());
    }
    let other = client.submit("b", "other").await.unwrap();
    for id in ids.iter().chain([&other]) {
        client
            .wait_for(id, &["succeeded"], Duration::from_secs(30))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tasks?agent=a&status=succeeded&limit=2&cursor={c}"),
            None => "/v1/tasks?agent=a&status=succeeded&limit=2".to_owned(),
        };
        let page: Value = client
            .get(&path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tasks = page["tasks"].as_array().unwrap();
        assert!(tasks.len() <= 2);
        seen.extend(tasks.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.reverse(); // newest first
    assert_eq!(seen, ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_of_one_agent_never_fail_with_a_5xx() {
    let mesh = mesh().await;
    let client = mesh.client("acme");
    let applies = (0..8).map(|i| {
        let client = client.clone();
        async move {
            client
                .put("/v1/agents/racer")
                .json(&json!({"model": "sim-model", "maxTokens": 10 + i}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(applies).await;
    for status in &statuses {
        assert!(
            [200, 201, 409].contains(status),
            "every apply is applied or told to retry: {statuses:?}"
        );
    }
    let applied = statuses.iter().filter(|s| **s != 409).count() as u64;
    let agent: Value = client
        .get("/v1/agents/racer")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        agent["version"].as_u64(),
        Some(applied),
        "one version per applied change: {statuses:?}"
    );
}
