//! Scenario `agent-loop`: tasks of three tool steps each (four model calls,
//! three `api` tool calls) against the zero-latency simulator through the
//! router and a local HTTP tool, end to end from REST submit to the
//! completed event.
//!
//! Baselines in the same run, on the same processes: the bare HTTP call to
//! the same tool endpoint, and the bare streamed model call through the
//! router's gRPC API, and a task of the same agent shape with no tool step
//! (one model call). A step's cost inside a task is the difference between
//! the three-step and the no-step task over three; its overhead is that
//! minus the bare tool and model calls (the journal events and their acks,
//! the tool-call event, the argument validation, the loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt as _;
use mesh_integration::tool_server::{ToolServer, ToolServerOptions};
use mesh_integration::{Mesh, MeshOptions, fresh_postgres};
use mesh_proto::TaskEvent;
use mesh_proto::task_event::Kind;
use prost::Message as _;
use serde_json::json;

use super::{Arrivals, Row, Stats, fmt_duration, print_table, ratio};

const TENANT: &str = "bench-agents";
const STEPS: u32 = 3;

pub async fn run(n: usize, concurrency: usize) -> anyhow::Result<()> {
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await?),
        sim: model_sim::SimConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            max_concurrency: 4096,
            max_waiting: 4096,
            ..Default::default()
        },
        worker_config: Some(|config| config.concurrency = 256),
        ..Default::default()
    })
    .await?;
    let tools = ToolServer::start(ToolServerOptions::default()).await?;
    let client = mesh.client(TENANT);
    let call = json!({"name": "add", "arguments": {"a": 1, "b": 2}});
    let turns = json!([
        {"tool_calls": [call]}, {"tool_calls": [call]}, {"tool_calls": [call]},
        {"content": "done"}
    ]);
    client
        .apply_agent(
            "looper",
            json!({
                "model": "sim-model",
                "systemPrompt": format!("bench agent\n[[agentmesh-sim-script]]\n{turns}"),
                "maxSteps": STEPS + 1,
                "tools": [{"name": "add", "spec": {"type": "api", "config": {"endpoint": tools.url("/add")},
                    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}],
            }),
        )
        .await?;
    client
        .apply_agent(
            "answerer",
            json!({
                "model": "sim-model",
                "systemPrompt": format!("bench agent\n[[agentmesh-sim-script]]\n{}", json!([{"content": "done"}])),
                "tools": [{"name": "add", "spec": {"type": "api", "config": {"endpoint": tools.url("/add")}}}],
            }),
        )
        .await?;

    // Baseline 1: the bare tool call.
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let url = tools.url("/add");
    let mut bare_tool = Vec::with_capacity(n);
    for _ in 0..n.max(200) {
        let started = Instant::now();
        let response = http
            .post(&url)
            .json(&json!({"a": 1, "b": 2}))
            .send()
            .await?;
        response.error_for_status()?.bytes().await?;
        bare_tool.push(started.elapsed());
    }
    // Baseline 2: the bare streamed model call through the router.
    let mut router = mesh_proto::inference_service_client::InferenceServiceClient::connect(
        mesh.router_grpc_url(),
    )
    .await?;
    let mut bare_model = Vec::with_capacity(n);
    for _ in 0..n.max(200) {
        let request = mesh_proto::ChatRequest {
            model: "sim-model".to_owned(),
            messages: vec![mesh_proto::ChatMessage {
                role: "user".to_owned(),
                content: "compute".to_owned(),
                ..Default::default()
            }],
            max_tokens: Some(1),
            ..Default::default()
        };
        let request = mesh_runtime::grpc::outgoing(TENANT, request)?;
        let started = Instant::now();
        let mut stream = router.chat_stream(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        bare_model.push(started.elapsed());
    }

    // The mesh: completed events as they arrive.
    let arrivals = Arc::new(Arrivals::default());
    let mut subscription = mesh
        .bus
        .client()
        .subscribe(format!("events.{TENANT}.>"))
        .await?;
    mesh.bus.client().flush().await?;
    let collector = {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let at = Instant::now();
                let Ok(event) = TaskEvent::decode(message.payload) else {
                    continue;
                };
                match event.kind {
                    Some(Kind::Completed(done)) if done.output == "done" => {
                        arrivals.arrive(event.task_id, Ok(at))
                    }
                    Some(Kind::Completed(done)) => arrivals.arrive(
                        event.task_id,
                        Err(format!("unexpected output {:?}", done.output)),
                    ),
                    Some(Kind::Failed(failed)) => arrivals.arrive(event.task_id, Err(failed.error)),
                    _ => {}
                }
            }
        })
    };
    let run_tasks = |agent: &'static str, count: usize, parallel: usize| {
        let client = client.clone();
        let arrivals = arrivals.clone();
        async move {
            let started = Instant::now();
            let samples: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..count)
                .map(|i| {
                    let client = client.clone();
                    let arrivals = arrivals.clone();
                    async move {
                        let submitted = Instant::now();
                        let id = client.submit(agent, &format!("task {i}")).await?;
                        let done = arrivals.wait(&id, Duration::from_secs(120)).await?;
                        Ok(done - submitted)
                    }
                })
                .buffer_unordered(parallel)
                .collect()
                .await;
            let elapsed = started.elapsed();
            let samples: Vec<Duration> = samples.into_iter().collect::<anyhow::Result<_>>()?;
            anyhow::Ok((samples, elapsed))
        }
    };
    // Warm-up (connections, consumers, prepared statements).
    run_tasks("looper", 20, 4).await?;
    let sequential_n = (n / 4).max(50);
    let (no_steps, _) = run_tasks("answerer", sequential_n, 1).await?;
    let (sequential, _) = run_tasks("looper", sequential_n, 1).await?;
    let (loaded, elapsed) = run_tasks("looper", n, concurrency).await?;
    collector.abort();
    let calls = tools.calls_to("/add").len();
    let expected = (20 + sequential_n + n) * STEPS as usize + bare_tool.len();
    if calls != expected {
        bail!("the tool saw {calls} calls, expected {expected}: a step was repeated or lost");
    }

    let tool = Stats::of(bare_tool);
    let model = Stats::of(bare_model);
    let task_none = Stats::of(no_steps);
    let task_seq = Stats::of(sequential);
    let task_loaded = Stats::of(loaded);
    let steps_per_s = (n as f64 * f64::from(STEPS)) / elapsed.as_secs_f64();
    println!(
        "baseline: bare HTTP POST to the same tool, bare streamed model call through the router (gRPC, sim at zero latency); sequential"
    );
    print_table(&[
        Row {
            label: "bare tool call".into(),
            stats: tool,
            rate: None,
        },
        Row {
            label: "bare model call (router)".into(),
            stats: model,
            rate: None,
        },
        Row {
            label: "task, no tool step, sequential".into(),
            stats: task_none,
            rate: None,
        },
        Row {
            label: format!("task, {STEPS} tool steps, sequential"),
            stats: task_seq,
            rate: None,
        },
        Row {
            label: format!("task, {STEPS} tool steps, {concurrency} at once"),
            stats: task_loaded,
            rate: Some((n as f64 / elapsed.as_secs_f64(), "tasks/s")),
        },
    ]);
    // A task is STEPS tool steps plus the final model call.
    let bare_task = tool.p50 * STEPS + model.p50 * (STEPS + 1);
    let per_step = task_seq.p50.saturating_sub(task_none.p50) / STEPS;
    let bare_step = tool.p50 + model.p50;
    println!(
        "  bare calls of one task (p50): {} ; the task end to end (p50, sequential): {} ({:.1}x)",
        fmt_duration(bare_task),
        fmt_duration(task_seq.p50),
        ratio(task_seq.p50, bare_task)
    );
    println!(
        "  per step (p50, sequential; 3-step task minus no-step task, over 3): {} vs the bare tool + model calls {} -> worker overhead {} per step ({:.1}x the bare tool call)",
        fmt_duration(per_step),
        fmt_duration(bare_step),
        fmt_duration(per_step.saturating_sub(bare_step)),
        ratio(per_step.saturating_sub(bare_step), tool.p50)
    );
    println!(
        "  throughput at {concurrency} tasks at once: {steps_per_s:.0} tool steps/s ({:.0} model calls/s), {} tool calls checked, none repeated",
        steps_per_s * f64::from(STEPS + 1) / f64::from(STEPS),
        calls
    );
    Ok(())
}
