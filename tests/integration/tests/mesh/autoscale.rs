#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! Queue-depth scaling, proven by behaviour: the agent's ScaledObject is
//! rendered exactly as `agentmesh render` writes it for the GitOps repo,
//! read back, and KEDA's rule applied by the local scaler to real worker
//! replicas. A burst of 500 tasks scales the workers up, drains with no
//! task lost or run twice, and the workers go back to zero after the
//! cooldown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use futures::StreamExt as _;
use mesh_integration::{Mesh, MeshOptions, WorkerReplicas, fresh_postgres};
use mesh_proto::{TaskEvent, task_event::Kind};
use mesh_scaling::{AgentScaling, RenderOptions, ScalePolicy, Scaler};
use prost::Message as _;

const TASKS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_scales_workers_up_drains_once_and_scales_back_to_zero() {
    let mut options = MeshOptions {
        database_url: Some(fresh_postgres().await.unwrap()),
        start_worker: false,
        sim: model_sim::SimConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            inter_token: Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    };
    options.bus.task_ack_wait = Duration::from_secs(3);
    let mesh = Mesh::start(options).await.unwrap();
    let client = mesh.client("acme");

    // The policy, from the rendered ScaledObject.
    let scaling = AgentScaling {
        min_replicas: 0,
        max_replicas: 4,
        target_queue_lag_per_replica: 40,
        activation_queue_lag: 0,
        polling_interval_seconds: 1,
        cooldown_seconds: 3,
        scale_down_stabilization_seconds: 2,
    };
    // The agent declares the scaling it is rendered from: the orchestrator
    // sizes the agent's dispatch window from it (4 x 40), so the lag KEDA
    // reads can reach the maximum although the default window is 32.
    client
        .apply_agent(
            "burst",
            serde_json::json!({
                "model": "sim-model", "systemPrompt": "be brief", "temperature": 0, "maxTokens": 8,
                "scaling": serde_json::to_value(&scaling).unwrap(),
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        mesh.orchestrator_config.admission.window_per_agent, 32,
        "the default floor, below the 160 the burst needs to reach 4 replicas"
    );
    let files =
        mesh_scaling::agent_worker_component("burst", &scaling, &RenderOptions::default()).unwrap();
    let rendered = &files
        .iter()
        .find(|(name, _)| name == "scaledobject.yaml")
        .unwrap()
        .1;
    let policy = ScalePolicy::from_yaml(rendered, None).unwrap();
    assert_eq!(policy.consumer, "agent-burst");

    // Every event of the burst, to count starts and completions per task.
    // It reads until every task has succeeded (`drained`), then until the
    // subscription has been quiet for 2 s: no idle timeout before that, as
    // the burst's tail waits in the admission queue without events.
    let events = mesh.bus.client().subscribe("events.acme.>").await.unwrap();
    let drained = tokio_util::sync::CancellationToken::new();
    let tally = tokio::spawn({
        let drained = drained.clone();
        async move {
            let mut per_task: HashMap<String, (u32, u32)> = HashMap::new();
            let mut events = events;
            loop {
                let message = tokio::select! {
                    message = events.next() => message,
                    () = drained.cancelled() => {
                        tokio::time::timeout(Duration::from_secs(2), events.next())
                            .await
                            .ok()
                            .flatten()
                    }
                };
                let Some(message) = message else { break };
                let event = TaskEvent::decode(message.payload).unwrap();
                let entry = per_task.entry(event.task_id).or_default();
                match event.kind {
                    Some(Kind::Started(_)) => entry.0 += 1,
                    Some(Kind::Completed(_)) => entry.1 += 1,
                    _ => {}
                }
            }
            per_task
        }
    });

    // Queue the burst before any worker exists (scale from zero).
    let ids: Vec<String> = futures::stream::iter(0..TASKS)
        .map(|i| {
            let client = client.clone();
            async move { client.submit("burst", &format!("task {i}")).await.unwrap() }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    let mut worker_config = mesh.worker_config().unwrap();
    worker_config.agents = agent_worker::AgentSelection::Named(vec!["burst".into()]);
    worker_config.concurrency = 4;
    let mut replicas = WorkerReplicas::new(worker_config);
    let history = Arc::new(StdMutex::new(vec![0u32]));
    let stop = tokio_util::sync::CancellationToken::new();
    let scaler_task = {
        let (bus, history, stop) = (mesh.bus.clone(), history.clone(), stop.clone());
        tokio::spawn(async move {
            let mut scaler = Scaler::new(policy, std::time::Instant::now());
            mesh_scaling::run(&bus, &mut scaler, &mut replicas, stop, |_, to, _| {
                history.lock().unwrap().push(to);
            })
            .await;
            replicas
        })
    };

    for id in &ids {
        client
            .wait_for(id, &["succeeded"], Duration::from_secs(120))
            .await
            .unwrap();
    }
    drained.cancel();
    // Back to zero after the cooldown (3 s) and the polling interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while *history.lock().unwrap().last().unwrap() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never scaled back to zero: {:?}",
            history.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.cancel();
    drop(scaler_task.await.unwrap());

    let history = history.lock().unwrap().clone();
    let peak = *history.iter().max().unwrap();
    assert_eq!(
        peak, 4,
        "the burst needs ceil(500/40) = 13 > max 4 replicas: {history:?}"
    );
    assert_eq!(history.first(), Some(&0));
    assert_eq!(history.last(), Some(&0));

    let per_task = tally.await.unwrap();
    assert_eq!(per_task.len(), TASKS, "every task ran");
    for id in &ids {
        assert_eq!(
            per_task[id],
            (1, 1),
            "task {id} started once and completed once"
        );
    }
}
