//! Failure handling on the task path: a worker dying mid-task, the
//! orchestrator stopping between commit and publish, a failing model
//! backend, and cancellation, all against real NATS JetStream and
//! PostgreSQL.

use std::time::Duration;

use futures::StreamExt as _;
use mesh_bus::StreamKind;
use mesh_integration::{IsolatedWorker, Mesh, MeshOptions, fresh_postgres, postgres_mesh};
use model_sim::{FailureMode, SimConfig};

const WAIT: Duration = Duration::from_secs(30);

fn slow_sim(inter_token_ms: u64) -> SimConfig {
    SimConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        inter_token: Duration::from_millis(inter_token_ms),
        ..Default::default()
    }
}

fn count(events: &[mesh_integration::client::SseEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.event == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_task_is_redelivered_and_completes_once() {
    let mut options = MeshOptions {
        sim: slow_sim(100),
        start_worker: false,
        ..Default::default()
    };
    // Short ack wait, so the redelivery comes quickly after the kill.
    options.bus.task_ack_wait = Duration::from_millis(1500);
    let mesh = postgres_mesh(options).await;
    let client = mesh.client("acme");
    client.apply_sim_agent("slow", 20).await.unwrap();

    let first = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    let id = client
        .submit("slow", "one two three four five")
        .await
        .unwrap();
    // Wait until the first worker is streaming deltas, then kill it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let last = mesh
            .bus
            .last_message_on(StreamKind::Events, &format!("events.acme.{id}"))
            .await
            .unwrap();
        let is_delta = last.is_some_and(|m| {
            let e: mesh_proto::TaskEvent = prost::Message::decode(m.payload).unwrap();
            matches!(e.kind, Some(mesh_proto::task_event::Kind::Delta(ref d)) if d.index >= 2)
        });
        if is_delta {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "first worker never streamed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    let running = client.task(&id).await.unwrap();
    assert_eq!(running["status"], "running");

    let _second = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2);
    let events = client.events(&id, None, WAIT).await.unwrap();
    assert_eq!(count(&events, "completed"), 1, "exactly one final result");
    assert_eq!(count(&events, "started"), 2);
    // The output is the second attempt's full answer, not a mix.
    let output = task["output"].as_str().unwrap();
    assert_eq!(output.split_whitespace().count(), 20);
    assert_eq!(events.last().unwrap().data["output"].as_str(), Some(output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_committed_but_not_published_is_published_once_after_restart() {
    let mut mesh = postgres_mesh(MeshOptions {
        outbox_enabled: false,
        ..Default::default()
    })
    .await;
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 5).await.unwrap();
    // The "crash": the task is committed, the relay never runs.
    let id = client.submit("support", "hello there").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut tasks = mesh.bus.jetstream().get_stream("TASKS").await.unwrap();
    assert_eq!(
        tasks.info().await.unwrap().state.messages,
        0,
        "nothing published yet"
    );
    assert_eq!(client.task(&id).await.unwrap()["status"], "queued");

    mesh.stop_orchestrator().await.unwrap();
    mesh.restart_orchestrator(true).await.unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "published and delivered once");
    let info = tasks.info().await.unwrap();
    assert_eq!(
        info.state.last_sequence, 1,
        "one message ever reached TASKS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_republished_outbox_row_is_dropped_by_jetstream() {
    use sea_orm::{ActiveModelTrait as _, EntityTrait as _, Set};
    let url = fresh_postgres().await.unwrap();
    let mut mesh = Mesh::start(MeshOptions {
        database_url: Some(url.clone()),
        outbox_enabled: false,
        start_worker: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 5).await.unwrap();
    let id = client.submit("support", "hello").await.unwrap();
    // A crash after the publish but before the delete: the row is relayed
    // twice. Simulate with a copy of the row.
    let db = sea_orm::Database::connect(&url).await.unwrap();
    use mesh_store::orchestrator::outbox;
    let rows = outbox::Entity::find().all(&db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = rows[0].clone();
    outbox::ActiveModel {
        tenant: Set(row.tenant),
        subject: Set(row.subject),
        msg_id: Set(row.msg_id.clone()),
        payload: Set(row.payload),
        traceparent: Set(row.traceparent),
        created_at_ms: Set(row.created_at_ms),
        ..Default::default()
    }
    .insert(&db)
    .await
    .unwrap();
    assert_eq!(row.msg_id, id);
    mesh.stop_orchestrator().await.unwrap();
    mesh.restart_orchestrator(true).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !outbox::Entity::find().all(&db).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "outbox never drained"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tasks = mesh.bus.jetstream().get_stream("TASKS").await.unwrap();
    assert_eq!(
        tasks.info().await.unwrap().state.messages,
        1,
        "the duplicate was dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_backend_is_retried_with_backoff_then_dead_lettered() {
    let mut options = MeshOptions {
        sim: SimConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            failure: FailureMode::Always(503),
            ..Default::default()
        },
        ..Default::default()
    };
    options.bus.task_retry.max_deliver = 3;
    let mesh = postgres_mesh(options).await;
    let client = mesh.client("acme");
    client.apply_sim_agent("flaky", 5).await.unwrap();

    let dlq = mesh
        .bus
        .client()
        .subscribe("dlq.tasks.acme.flaky")
        .await
        .unwrap();
    let id = client.submit("flaky", "please answer").await.unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "failed");
    let error = task["error"].as_str().unwrap();
    assert!(error.contains("gave up after 3 deliveries"), "{error}");
    assert!(
        error.contains("503"),
        "the backend's answer is in the reason: {error}"
    );

    let events = client.events(&id, None, WAIT).await.unwrap();
    assert_eq!(count(&events, "retrying"), 2);
    assert_eq!(count(&events, "started"), 3);
    let failed = events.last().unwrap();
    assert_eq!(failed.event, "failed");
    assert_eq!(failed.data["reason"], "max_deliveries");
    // Backoff: each retry waited at least half its nominal delay.
    let backoffs: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "retrying")
        .map(|e| e.data["backoffMs"].as_u64().unwrap())
        .collect();
    assert!(backoffs[0] >= 50 && backoffs[1] >= 100, "{backoffs:?}");

    let dead = tokio::time::timeout(WAIT, dlq.take(1).collect::<Vec<_>>())
        .await
        .unwrap();
    let headers = dead[0].headers.clone().unwrap();
    assert_eq!(
        headers.get("agentmesh-dlq-reason").unwrap().as_str(),
        "max_deliveries"
    );
    assert_eq!(
        headers.get("agentmesh-dlq-deliveries").unwrap().as_str(),
        "3"
    );
    let envelope: mesh_proto::TaskEnvelope =
        prost::Message::decode(dead[0].payload.clone()).unwrap();
    assert_eq!(envelope.task_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_and_running_tasks_can_be_cancelled() {
    let mesh = postgres_mesh(MeshOptions {
        sim: slow_sim(100),
        // The worker serves "slow" only: tasks for "idle" stay queued.
        worker_agents: agent_worker::AgentSelection::Named(vec!["slow".into()]),
        ..Default::default()
    })
    .await;
    let client = mesh.client("acme");
    client.apply_sim_agent("idle", 5).await.unwrap();
    client.apply_sim_agent("slow", 200).await.unwrap();

    let queued = client.submit("idle", "never runs").await.unwrap();
    let response = client
        .post(&format!("/v1/tasks/{queued}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let task = client.task(&queued).await.unwrap();
    assert_eq!(task["status"], "cancelled");
    let events = client.events(&queued, None, WAIT).await.unwrap();
    assert_eq!(events.last().unwrap().event, "cancelled");
    // Cancelling again is a conflict, not a second cancellation.
    let again = client
        .post(&format!("/v1/tasks/{queued}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    let running = client.submit("slow", "a long answer please").await.unwrap();
    client.wait_for(&running, &["running"], WAIT).await.unwrap();
    let response = client
        .post(&format!("/v1/tasks/{running}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let task = client
        .wait_for(&running, &["cancelled", "succeeded"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "cancelled", "{task}");
    let events = client.events(&running, None, WAIT).await.unwrap();
    assert_eq!(events.last().unwrap().event, "cancelled");
    assert_eq!(count(&events, "completed"), 0);
    assert!(
        count(&events, "delta") < 200,
        "the model call was stopped early"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_dying_on_the_last_delivery_still_fails_the_task_and_dead_letters_it() {
    let mut options = MeshOptions {
        sim: slow_sim(100),
        start_worker: false,
        ..Default::default()
    };
    options.bus.task_ack_wait = Duration::from_millis(1000);
    options.bus.task_retry.max_deliver = 1;
    let mesh = postgres_mesh(options).await;
    let client = mesh.client("acme");
    client.apply_sim_agent("slow", 50).await.unwrap();
    let dlq = mesh
        .bus
        .client()
        .subscribe("dlq.tasks.acme.slow")
        .await
        .unwrap();

    let worker = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    let id = client.submit("slow", "one two three").await.unwrap();
    client.wait_for(&id, &["running"], WAIT).await.unwrap();
    worker.kill();
    // Another worker keeps pulling; the dead delivery is not handed out again.
    let _other = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();

    let task = client
        .wait_for(&id, &["failed", "succeeded"], WAIT)
        .await
        .unwrap();
    assert_eq!(task["status"], "failed", "{task}");
    assert!(
        task["error"].as_str().unwrap().contains("worker stopped"),
        "{task}"
    );
    let dead = tokio::time::timeout(WAIT, dlq.take(1).collect::<Vec<_>>())
        .await
        .unwrap();
    let headers = dead[0].headers.clone().unwrap();
    assert_eq!(
        headers.get("agentmesh-dlq-reason").unwrap().as_str(),
        "max_deliveries"
    );
    let mut tasks = mesh.bus.jetstream().get_stream("TASKS").await.unwrap();
    assert_eq!(
        tasks.info().await.unwrap().state.messages,
        0,
        "removed from the work queue"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_completed_event_projected_before_its_started_event_loses_nothing() {
    let mesh = postgres_mesh(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 5).await.unwrap();
    let id = client.submit("support", "hello").await.unwrap();
    let subject = format!("events.acme.{id}");
    let event = |kind| mesh_proto::TaskEvent {
        task_id: id.clone(),
        tenant: "acme".into(),
        at_ms: 1,
        kind: Some(kind),
    };
    use mesh_proto::task_event::Kind;
    // Out of order on purpose: the projection may apply events concurrently.
    mesh.bus
        .publish_acked(
            subject.clone(),
            "acme",
            &format!("{id}:terminal"),
            &event(Kind::Completed(mesh_proto::TaskCompleted {
                output: "done".into(),
                ..Default::default()
            })),
        )
        .await
        .unwrap();
    mesh.bus
        .publish_acked(
            subject,
            "acme",
            &format!("{id}:started:1"),
            &event(Kind::Started(mesh_proto::TaskStarted {
                attempt: 1,
                worker: "test".into(),
            })),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let task = client.task(&id).await.unwrap();
        if task["status"] == "succeeded" && task["attempts"] == 1 {
            assert!(task["startedAt"].is_string(), "{task}");
            assert_eq!(task["output"], "done");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the late started event was lost: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
