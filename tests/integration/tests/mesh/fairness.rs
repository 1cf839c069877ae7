//! Per-tenant quotas and fair admission, end to end through the gateway
//! against the model simulator, real NATS JetStream and PostgreSQL: the
//! submission rate quota (429 with Retry-After, then accepted again), the
//! running-task quota (over it tasks wait queued and all of them run), and
//! the noisy neighbour (tenant A queues 1,000 tasks, then tenant B's ten
//! finish with a p95 latency within 2x of B running alone).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use futures::StreamExt as _;
use mesh_auth::Role;
use mesh_integration::{Mesh, MeshOptions, RestClient, postgres_mesh};
use serde_json::{Value, json};

fn admin(mesh: &Mesh, tenant: &str) -> RestClient {
    RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token(tenant, &[Role::Admin]),
    )
}

/// A mesh whose simulator answers every model call after `ttft`, with the
/// orchestrator restarted on `window` as its per-agent dispatch window.
async fn mesh_with(ttft: Duration, window: u32) -> Mesh {
    let mut mesh = postgres_mesh(MeshOptions {
        sim: model_sim::SimConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            ttft,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    mesh.stop_orchestrator().await.unwrap();
    mesh.orchestrator_config.admission.window_per_agent = window;
    mesh.restart_orchestrator(true).await.unwrap();
    mesh
}

async fn put_quota(client: &RestClient, body: Value) -> Value {
    let response = client.put("/v1/quotas").json(&body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn get_quota(client: &RestClient) -> Value {
    let response = client.get("/v1/quotas").send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn millis(task: &Value, field: &str) -> i64 {
    let text = task[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {task}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// Submits `n` tasks to `agent` (`parallel` at a time); returns their ids.
async fn submit_many(client: &RestClient, agent: &str, n: usize, parallel: usize) -> Vec<String> {
    futures::stream::iter(0..n)
        .map(|i| async move { client.submit(agent, &format!("task {i}")).await.unwrap() })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Waits until every task succeeded; returns the finished tasks.
async fn finish_all(client: &RestClient, ids: &[String], timeout: Duration) -> Vec<Value> {
    let mut done = Vec::with_capacity(ids.len());
    for id in ids {
        let task = client
            .wait_for(id, &["succeeded", "failed", "cancelled"], timeout)
            .await
            .unwrap();
        assert_eq!(task["status"], "succeeded", "{task}");
        done.push(task);
    }
    done
}

/// Nearest-rank p95 of submission-to-finish latencies (server clock).
fn p95_ms(tasks: &[Value]) -> i64 {
    let mut latencies: Vec<i64> = tasks
        .iter()
        .map(|t| millis(t, "finishedAt") - millis(t, "createdAt"))
        .collect();
    latencies.sort_unstable();
    let rank = (latencies.len() * 95).div_ceil(100).max(1);
    latencies[rank - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rate_quota_refuses_with_retry_after_and_then_accepts_again() {
    let mesh = mesh_with(Duration::ZERO, 32).await;
    let client = admin(&mesh, "ratey");
    client.apply_sim_agent("support", 2).await.unwrap();

    // Only the admin role reads or sets quotas; bad values name the field.
    let operator = mesh.client("ratey");
    let denied = operator.get("/v1/quotas").send().await.unwrap();
    assert_eq!(denied.status(), 403);
    let bad = client
        .put("/v1/quotas")
        .json(&json!({"tasksPerMinute": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["field"], "tasksPerMinute", "{body}");
    let too_big = client
        .put("/v1/quotas")
        .json(&json!({"weight": 1_000_000}))
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 400);
    let body: Value = too_big.json().await.unwrap();
    assert_eq!(body["error"]["field"], "weight", "{body}");

    let quota = put_quota(&client, json!({"tasksPerMinute": 3})).await;
    assert_eq!(quota["tasksPerMinute"], 3, "{quota}");
    assert_eq!(quota["overrides"]["tasksPerMinute"], 3);
    assert_eq!(quota["overrides"]["maxRunningTasks"], Value::Null);
    assert_eq!(
        quota["maxRunningTasks"],
        quota["defaults"]["maxRunningTasks"]
    );
    assert_eq!(quota["tenant"], "ratey");

    let first = client.submit("support", "one").await.unwrap();
    for input in ["two", "three"] {
        client.submit("support", input).await.unwrap();
    }
    let refused = client
        .post("/v1/agents/support/tasks")
        .json(&json!({"input": "four"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted", "{body}");

    // The gRPC face answers RESOURCE_EXHAUSTED with the same retry-after.
    let mut grpc =
        mesh_proto::task_service_client::TaskServiceClient::connect(mesh.gateway_grpc_url())
            .await
            .unwrap();
    let mut request = tonic::Request::new(mesh_proto::SubmitTaskRequest {
        agent: "support".into(),
        input: "five".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", mesh.token("ratey", &[Role::User]))
            .parse()
            .unwrap(),
    );
    let status = grpc.submit_task(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");

    // Another tenant is not limited by this one's quota.
    let other = admin(&mesh, "calm");
    other.apply_sim_agent("support", 2).await.unwrap();
    other.submit("support", "hi").await.unwrap();

    // Accepted again once the window has moved past the first submission:
    // the Retry-After it gave is when.
    let usage = get_quota(&client).await;
    assert_eq!(usage["usage"]["submittedLastMinute"], 3, "{usage}");
    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    let again = client.submit("support", "after the wait").await.unwrap();
    client
        .wait_for(&again, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();
    client
        .wait_for(&first, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_the_running_quota_tasks_wait_queued_and_all_of_them_run() {
    let mesh = mesh_with(Duration::from_millis(300), 32).await;
    let client = admin(&mesh, "capped");
    client.apply_sim_agent("support", 2).await.unwrap();
    let quota = put_quota(&client, json!({"maxRunningTasks": 2})).await;
    assert_eq!(quota["maxRunningTasks"], 2, "{quota}");

    let ids = submit_many(&client, "support", 8, 8).await;
    // Accepted, and most of them wait for a slot (status queued).
    let usage = get_quota(&client).await;
    assert!(
        usage["usage"]["runningTasks"].as_u64().unwrap() <= 2,
        "{usage}"
    );
    assert!(
        usage["usage"]["queuedTasks"].as_u64().unwrap() >= 4,
        "{usage}"
    );
    let mut queued = 0;
    for id in &ids {
        let task = client.task(id).await.unwrap();
        queued += usize::from(task["status"] == "queued");
    }
    assert!(queued >= 4, "{queued} of 8 tasks queued");

    let done = finish_all(&client, &ids, Duration::from_secs(60)).await;
    assert_eq!(done.len(), 8, "none lost");
    // Never more than two ran at once.
    let deepest = deepest_overlap(&done);
    assert!(deepest <= 2, "{deepest} tasks ran at once");
    assert_eq!(deepest, 2, "the quota's two slots were used");
    let after = get_quota(&client).await;
    assert_eq!(after["usage"]["queuedTasks"], 0, "{after}");
    assert_eq!(after["usage"]["runningTasks"], 0, "{after}");
}

/// The deepest overlap of the tasks' run intervals (projected start to
/// projected finish).
fn deepest_overlap(done: &[Value]) -> i32 {
    let mut edges: Vec<(i64, i32)> = done
        .iter()
        .flat_map(|t| [(millis(t, "startedAt"), 1), (millis(t, "finishedAt"), -1)])
        .collect();
    edges.sort_unstable(); // a finish (-1) sorts before a start at the same ms
    let (mut depth, mut deepest) = (0, 0);
    for (_, delta) in edges {
        depth += delta;
        deepest = deepest.max(depth);
    }
    deepest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_orchestrator_replicas_keep_one_dispatch_window() {
    // Window 3; a second replica on the same database shares the
    // projection's consumer, so both release tasks as tasks finish.
    let mesh = mesh_with(Duration::from_millis(200), 3).await;
    let mut config = mesh.orchestrator_config.clone();
    config.grpc_listen = mesh_runtime::env::EPHEMERAL;
    config.admin_listen = mesh_runtime::env::EPHEMERAL;
    let stop = tokio_util::sync::CancellationToken::new();
    let second = orchestrator::start(config, stop.clone()).await.unwrap();
    let client = admin(&mesh, "pair");
    client.apply_sim_agent("support", 2).await.unwrap();
    let ids = submit_many(&client, "support", 15, 15).await;
    let done = finish_all(&client, &ids, Duration::from_secs(60)).await;
    assert_eq!(done.len(), 15, "none lost");
    let deepest = deepest_overlap(&done);
    assert!(deepest <= 3, "{deepest} tasks of the agent ran at once");
    assert_eq!(deepest, 3, "the window was used");
    stop.cancel();
    second.stopped.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_noisy_tenant_does_not_starve_a_quiet_one() {
    // One worker runs 32 tasks of the agent at once (its default
    // concurrency), and the orchestrator's window matches it.
    let mesh = mesh_with(Duration::from_millis(1000), 32).await;
    let quiet = admin(&mesh, "quiet");
    let noisy = admin(&mesh, "noisy");
    quiet.apply_sim_agent("support", 2).await.unwrap();
    noisy.apply_sim_agent("support", 2).await.unwrap();
    // Warm up (the worker discovers the agent's consumer).
    let warm = quiet.submit("support", "warm up").await.unwrap();
    quiet
        .wait_for(&warm, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();

    // Baseline: B alone.
    let ids = submit_many(&quiet, "support", 10, 10).await;
    let alone = p95_ms(&finish_all(&quiet, &ids, Duration::from_secs(60)).await);

    // A queues 1,000 tasks, then B submits its ten.
    let queueing = std::time::Instant::now();
    submit_many(&noisy, "support", 1000, 16).await;
    let queueing = queueing.elapsed();
    let backlog = get_quota(&noisy).await;
    let ids = submit_many(&quiet, "support", 10, 10).await;
    let shared = p95_ms(&finish_all(&quiet, &ids, Duration::from_secs(60)).await);
    // A still had work waiting when B was done: B went past it.
    let left = get_quota(&noisy).await;
    eprintln!(
        "noisy neighbour: quiet p95 alone {alone} ms, beside 1000 noisy tasks {shared} ms; \
         1000 noisy submissions took {queueing:?}; noisy queued {} when the quiet tenant \
         submitted, {} when it was done",
        backlog["usage"]["queuedTasks"], left["usage"]["queuedTasks"]
    );
    assert!(
        left["usage"]["queuedTasks"].as_u64().unwrap() > 0,
        "the noisy tenant's older backlog was still waiting: {left}"
    );
    assert!(
        shared <= 2 * alone,
        "quiet tenant's p95 {shared} ms beside the noisy one, {alone} ms alone"
    );
}
