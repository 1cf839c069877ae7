#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! One task is one trace: the W3C context a client sends to the gateway
//! travels through the orchestrator's outbox onto the TASKS message and
//! from the worker onto every event of the task, even with no exporter
//! configured.

use std::time::Duration;

use mesh_bus::StreamKind;
use mesh_integration::{IsolatedWorker, Mesh, MeshOptions};
use serde_json::json;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn trace_id_of(headers: &async_nats::HeaderMap) -> String {
    let traceparent = headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    traceparent.split('-').nth(1).unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_callers_trace_id_reaches_the_task_message_and_its_events() {
    let _telemetry = mesh_telemetry::init("integration-test", None, false, "warn").unwrap();
    let mesh = Mesh::start(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 3).await.unwrap();
    let response = client
        .post("/v1/agents/support/tasks")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"input": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The outbox relayed it with the request's context.
    let tasks = mesh.bus.jetstream().get_stream("TASKS").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let message = loop {
        if let Ok(message) = tasks.get_raw_message(1).await {
            break message;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(trace_id_of(&message.headers), TRACE_ID);
    assert_eq!(
        message.headers.get("agentmesh-tenant").unwrap().as_str(),
        "acme"
    );

    let _worker = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    client
        .wait_for(&id, &["succeeded"], Duration::from_secs(30))
        .await
        .unwrap();
    let completed = mesh
        .bus
        .last_message_on(StreamKind::Events, &format!("events.acme.{id}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        trace_id_of(&completed.headers),
        TRACE_ID,
        "the worker continued the trace"
    );
}
