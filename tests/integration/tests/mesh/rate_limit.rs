//! Per-tenant submit limits, counted in a real Redis shared by gateway
//! replicas: over the limit is 429 with `Retry-After` (RESOURCE_EXHAUSTED
//! over gRPC), other tenants are unaffected, and nothing is enqueued.

use mesh_auth::Role;
use mesh_integration::infra::redis_url;
use mesh_integration::{Mesh, MeshOptions};
use mesh_proto::SubmitTaskRequest;
use mesh_proto::task_service_client::TaskServiceClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_over_its_submit_rate_gets_429_with_retry_after() {
    let mesh = Mesh::start(MeshOptions {
        redis_url: Some(redis_url()),
        submit_rate_per_minute: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    // Fresh tenant names: the counters live in a shared Redis.
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let noisy = mesh.client(&format!("noisy-{suffix}"));
    let quiet = mesh.client(&format!("quiet-{suffix}"));
    noisy.apply_sim_agent("support", 2).await.unwrap();
    quiet.apply_sim_agent("support", 2).await.unwrap();

    for i in 0..3 {
        noisy.submit("support", &format!("task {i}")).await.unwrap();
    }
    let response = noisy
        .post("/v1/agents/support/tasks")
        .json(&json!({"input": "one too many"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_exhausted");

    let mut grpc = TaskServiceClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let mut request = tonic::Request::new(SubmitTaskRequest {
        agent: "support".into(),
        input: "over grpc".into(),
        ..Default::default()
    });
    let token = mesh.token(&format!("noisy-{suffix}"), &[Role::User]);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let status = grpc.submit_task(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("retry-after").is_some());

    // The refused submissions left no task behind; the quiet tenant is fine.
    let list: serde_json::Value = noisy
        .get("/v1/tasks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 3);
    quiet.submit("support", "hello").await.unwrap();
}
