//! The task path end to end: gateway -> orchestrator -> JetStream ->
//! worker -> router -> model simulator -> events -> projection, against a
//! real NATS JetStream and PostgreSQL (SQLite where a test says so).

use std::time::Duration;

use mesh_integration::client::SseEvent;
use mesh_integration::{Mesh, MeshOptions, postgres_mesh};
use mesh_proto::task_service_client::TaskServiceClient;
use mesh_proto::{SubmitTaskRequest, TaskStatus, WatchTaskRequest, task_event::Kind};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Checks the shape every complete event history must have: strictly
/// increasing sequences, `started` first, exactly one terminal event and
/// it is last; returns the concatenated deltas of the last attempt.
#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
fn check_history(events: &[SseEvent]) -> String {
    assert!(!events.is_empty(), "no events");
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.id.parse().expect("numeric id"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequences not increasing: {seqs:?}"
    );
    assert_eq!(events[0].event, "started", "{events:?}");
    let terminal: Vec<&SseEvent> = events
        .iter()
        .filter(|e| matches!(e.event.as_str(), "completed" | "failed" | "cancelled"))
        .collect();
    assert_eq!(terminal.len(), 1, "one terminal event: {events:?}");
    assert!(
        std::ptr::eq(terminal[0], events.last().unwrap()),
        "terminal event is last"
    );
    let last_attempt = events
        .iter()
        .filter(|e| e.event == "started")
        .map(|e| e.data["attempt"].as_u64().unwrap())
        .max()
        .unwrap();
    let deltas: Vec<&SseEvent> = events
        .iter()
        .filter(|e| e.event == "delta" && e.data["attempt"].as_u64() == Some(last_attempt))
        .collect();
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d.data["index"].as_u64(), Some(i as u64), "delta order");
    }
    deltas
        .iter()
        .map(|d| d.data["content"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_and_grpc_tasks_complete_and_streams_replay_in_order() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let client = mesh.client("acme");
    let agent = client.apply_sim_agent("support", 12).await.unwrap();
    assert_eq!(agent["version"], 1);
    // Applying a changed spec is a new version; the same spec is not.
    let scaled = serde_json::json!({"model": "sim-model", "systemPrompt": "be brief", "temperature": 0,
        "maxTokens": 12, "scaling": {"maxReplicas": 3, "targetQueueLagPerReplica": 7}});
    let v2 = client.apply_agent("support", scaled.clone()).await.unwrap();
    assert_eq!(
        (v2["version"].as_u64(), v2["changed"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(v2["spec"]["scaling"]["targetQueueLagPerReplica"], 7);
    assert_eq!(
        v2["spec"]["scaling"]["cooldownSeconds"], 300,
        "defaults filled in"
    );
    let same = client.apply_agent("support", scaled).await.unwrap();
    assert_eq!(
        (same["version"].as_u64(), same["changed"].as_bool()),
        (Some(2), Some(false))
    );

    // A live SSE client, connected before the task runs.
    let id = client
        .submit("support", "tell me about the weather today")
        .await
        .unwrap();
    let live = {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move { client.events(&id, None, WAIT).await })
    };
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(task["usage"]["outputTokens"], 12);
    assert!(task["usage"]["inputTokens"].as_u64().unwrap() > 0);
    assert_eq!(task["attempts"], 1);
    let output = task["output"].as_str().unwrap().to_owned();
    assert!(!output.is_empty());

    let live = live.await.unwrap().unwrap();
    assert_eq!(check_history(&live), output);
    // A late client gets every event too, the same ones.
    let late = client.events(&id, None, WAIT).await.unwrap();
    assert_eq!(
        late.iter().map(|e| &e.id).collect::<Vec<_>>(),
        live.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    assert_eq!(
        late.last().unwrap().data["output"],
        Value::String(output.clone())
    );
    // Resuming after an event replays only what follows it.
    let second: u64 = late[1].id.parse().unwrap();
    let resumed = client.events(&id, Some(second), WAIT).await.unwrap();
    assert_eq!(resumed.len(), late.len() - 2);

    // The same over public gRPC: submit, then a late watch.
    let mut grpc = TaskServiceClient::connect(mesh.gateway_grpc_url())
        .await
        .unwrap();
    let token = mesh.token("acme", &[mesh_auth::Role::User]);
    let mut request = tonic::Request::new(SubmitTaskRequest {
        agent: "support".into(),
        input: "and tomorrow".into(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let task = grpc
        .submit_task(request)
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(task.status, TaskStatus::Queued as i32);
    let done = client
        .wait_for(&task.id, &["succeeded"], WAIT)
        .await
        .unwrap();
    let mut watch = tonic::Request::new(WatchTaskRequest {
        id: task.id.clone(),
        after_seq: 0,
    });
    watch
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = grpc.watch_task(watch).await.unwrap().into_inner();
    let mut kinds = Vec::new();
    let mut text = String::new();
    let mut last_seq = 0;
    while let Some(envelope) = stream.message().await.unwrap() {
        assert!(envelope.seq > last_seq);
        last_seq = envelope.seq;
        let kind = envelope.event.unwrap().kind.unwrap();
        if let Kind::Delta(d) = &kind {
            text.push_str(&d.content);
        }
        kinds.push(kind.name());
    }
    assert_eq!(kinds.first(), Some(&"started"));
    assert_eq!(kinds.last(), Some(&"completed"));
    assert_eq!(text, done["output"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_embedded_default_runs_on_sqlite() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let client = mesh.client("local");
    client.apply_sim_agent("helper", 4).await.unwrap();
    let id = client.submit("helper", "hello").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(task["usage"]["outputTokens"], 4);
    assert!(mesh.data_dir.path().join("orchestrator.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_task_whose_events_aged_out_still_streams_its_outcome() {
    let mut options = MeshOptions::default();
    options.bus.events_max_age = Duration::from_secs(1);
    let mesh = Mesh::start(options).await.unwrap();
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 3).await.unwrap();
    let id = client.submit("support", "hello").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let subject = format!("events.acme.{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while mesh
        .bus
        .last_message_on(mesh_bus::StreamKind::Events, &subject)
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events never aged out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = client.events(&id, None, WAIT).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "completed");
    assert_eq!(events[0].id, "0");
    assert_eq!(events[0].data["output"], task["output"]);
}
