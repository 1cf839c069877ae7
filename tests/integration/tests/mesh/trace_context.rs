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

/// An agent-worker on its own runtime whose threads record into `dispatch`
/// (an OTLP exporter to this mesh's trace-collector): the process-wide
/// subscriber belongs to whichever test of this binary installed it first.
struct TracedWorker {
    stop: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TracedWorker {
    fn spawn(config: agent_worker::Config, dispatch: tracing::Dispatch) -> Self {
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::spawn(move || {
            let _default = tracing::dispatcher::set_default(&dispatch);
            let on_start = dispatch.clone();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                // The default for the thread's whole life: its guard is
                // never dropped.
                .on_thread_start(move || {
                    std::mem::forget(tracing::dispatcher::set_default(&on_start));
                })
                .build()
                .unwrap();
            runtime.block_on(async move {
                match agent_worker::start(config, token.clone()).await {
                    Ok(running) => {
                        let _ = ready_tx.send(Ok(()));
                        token.cancelled().await;
                        let _ = running.stopped.wait().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        ready_rx.recv().unwrap().unwrap();
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for TracedWorker {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A system prompt the simulator plays as a script of turns.
fn script(turns: &serde_json::Value) -> String {
    format!("You are a test agent.\n[[agentmesh-sim-script]]\n{turns}")
}

/// All observations of a trace tree, depth first.
fn flatten(nodes: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = nodes.as_array().unwrap().iter().rev().collect();
    while let Some(node) = stack.pop() {
        out.push(node.clone());
        stack.extend(node["children"].as_array().unwrap().iter().rev());
    }
    out
}

/// Submits `input` to `agent` under a trace id of its own and returns
/// (trace id, task id).
async fn submit_traced(
    client: &mesh_integration::RestClient,
    agent: &str,
    input: &str,
) -> (String, String) {
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let response = client
        .post(&format!("/v1/agents/{agent}/tasks"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({ "input": input }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    (trace_id, id)
}

/// Polls the gateway (flushing the worker's exporter each round) until the
/// trace holds its agent span and `observations` observations.
async fn stored_trace(
    viewer: &mesh_integration::RestClient,
    telemetry: &std::sync::Arc<mesh_telemetry::TelemetryGuard>,
    trace_id: &str,
    observations: usize,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let flush = telemetry.clone();
        tokio::task::spawn_blocking(move || flush.flush())
            .await
            .unwrap();
        let response = viewer
            .get(&format!("/v1/traces/{trace_id}"))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        // The agent span is the tree's root (its parent, the gateway's
        // span, is not exported here).
        if status == 200
            && body["observations"][0]["type"] == "agent"
            && flatten(&body["observations"]).len() >= observations
        {
            return body;
        }
        if tokio::time::Instant::now() >= deadline {
            let stored: serde_json::Value = viewer
                .get("/v1/traces")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            panic!("trace {trace_id} never complete: {status} {body}; stored: {stored}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The GenAI view of a task, end to end: the worker's spans, exported over
/// OTLP/gRPC to the mesh's trace-collector (PostgreSQL), come back through
/// the gateway as generations with the provider, response model, finish
/// reasons, token usage and a time to first token inside the call; a
/// failing tool call and a failing model call are errors with an
/// `error.type`. Prompts, completions and tool arguments and results are
/// stored only for the agent whose spec sets `recordContent`: for the
/// other, none of the task's text appears anywhere in its trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn genai_spans_carry_provider_ttft_and_content_only_when_recorded() {
    use mesh_auth::Role;
    use mesh_integration::tool_server::{ToolServer, ToolServerOptions};

    // The services on this runtime propagate the caller's context only
    // with an OTel layer installed (nothing exported).
    let _telemetry = mesh_telemetry::init("integration-test", None, false, "warn").unwrap();
    let ttft = Duration::from_millis(60);
    let mesh = mesh_integration::mesh::postgres_mesh(MeshOptions {
        start_worker: false,
        sim: model_sim::SimConfig {
            ttft,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let endpoint = format!("http://{}", mesh.traces.grpc_addr);
    let (dispatch, telemetry) =
        mesh_telemetry::exporting_dispatch("agent-worker", &endpoint).unwrap();
    let telemetry = std::sync::Arc::new(telemetry);
    let _worker = TracedWorker::spawn(mesh.worker_config().unwrap(), dispatch);
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();

    let tenant = format!("genai-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let client = mesh.client(&tenant);
    let viewer = mesh_integration::RestClient::new(
        client.base.clone(),
        mesh.token(&tenant, &[Role::Viewer]),
    );
    let add = json!({
        "type": "api",
        "description": "adds a and b",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
        "config": {"endpoint": tools.url("/add")},
        "timeout": "5s",
    });
    // Step 1: a good call and one whose arguments the schema refuses (a
    // tool error); step 2: the answer, echoing the input.
    let turns = json!([
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "add", "arguments": {"a": "two"}}]},
        {"content": "sum {{tool_results}} for {{input}}"}
    ]);
    for (name, provider, record) in [("quiet", "OpenAI", false), ("open", "vllm", true)] {
        let mut spec = json!({
            "model": {"name": "sim-model", "provider": provider},
            "systemPrompt": script(&turns),
            "tools": [{"name": "add", "spec": add}],
            "maxSteps": 4,
        });
        if record {
            spec["recordContent"] = json!(true);
        }
        let response = client
            .put(&format!("/v1/agents/{name}"))
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, 201, "{body}");
    }
    client
        .apply_agent("broken", json!({"model": "no-such-model"}))
        .await
        .unwrap();

    let secret = format!("pelican-{}", uuid::Uuid::new_v4().simple());
    let (quiet_trace, quiet_task) = submit_traced(&client, "quiet", &secret).await;
    let (open_trace, open_task) = submit_traced(&client, "open", &secret).await;
    let (broken_trace, broken_task) = submit_traced(&client, "broken", &secret).await;
    for id in [&quiet_task, &open_task] {
        let task = client
            .wait_for(id, &["succeeded"], Duration::from_secs(30))
            .await
            .unwrap();
        assert!(
            task["output"].as_str().unwrap().ends_with(&secret),
            "{task}"
        );
    }
    client
        .wait_for(&broken_task, &["failed"], Duration::from_secs(30))
        .await
        .unwrap();

    for (trace_id, agent, provider) in [
        (&quiet_trace, "quiet", "openai"),
        (&open_trace, "open", "vllm"),
    ] {
        // invoke_agent, chat, two execute_tool, chat.
        let trace = stored_trace(&viewer, &telemetry, trace_id, 5).await;
        let all = flatten(&trace["observations"]);
        let root = &trace["observations"][0];
        assert_eq!(root["name"], format!("invoke_agent {agent}"), "{trace}");
        assert_eq!(root["status_code"], "unset", "{root}");
        let chats: Vec<&serde_json::Value> =
            all.iter().filter(|o| o["type"] == "generation").collect();
        assert_eq!(chats.len(), 2, "{trace}");
        for (chat, finish) in chats.iter().zip(["tool_calls", "stop"]) {
            let attributes = &chat["attributes"]["attributes"];
            assert_eq!(chat["name"], "chat sim-model");
            assert_eq!(chat["parent_span_id"], root["span_id"]);
            assert_eq!(attributes["gen_ai.provider.name"], provider, "{chat}");
            assert_eq!(attributes["gen_ai.response.model"], "sim-model");
            assert_eq!(chat["model"], "sim-model");
            assert_eq!(
                attributes["gen_ai.response.finish_reasons"],
                json!([finish])
            );
            assert!(chat["input_tokens"].as_i64().unwrap() > 0, "{chat}");
            assert!(chat["output_tokens"].as_i64().unwrap() > 0, "{chat}");
            let first = chat["time_to_first_token_ms"].as_i64().unwrap();
            assert!(
                first > 0 && first <= chat["latency_ms"].as_i64().unwrap(),
                "{chat}"
            );
            // The simulator waits `ttft` before its first token.
            assert!(first >= 50, "{chat}");
            assert_eq!(
                chat["completion_start_ms"].as_i64().unwrap(),
                chat["start_ms"].as_i64().unwrap() + first
            );
            assert!(attributes["langfuse.observation.completion_start_time"].is_string());
        }
        let calls: Vec<&serde_json::Value> = all.iter().filter(|o| o["type"] == "tool").collect();
        assert_eq!(calls.len(), 2, "{trace}");
        let failed: Vec<&&serde_json::Value> = calls
            .iter()
            .filter(|t| t["status_code"] == "error")
            .collect();
        assert_eq!(failed.len(), 1, "one call had bad arguments: {trace}");
        assert_eq!(failed[0]["level"], "ERROR");
        assert_eq!(
            failed[0]["attributes"]["attributes"]["error.type"],
            "tool_error"
        );

        let text = trace.to_string();
        if agent == "quiet" {
            for needle in [
                secret.as_str(),
                "agentmesh-sim-script",
                "You are a test agent",
            ] {
                assert!(!text.contains(needle), "{needle} recorded: {text}");
            }
            for o in &all {
                assert!(o.get("input").is_none() && o.get("output").is_none(), "{o}");
            }
        } else {
            let input = &chats[0]["input"];
            assert_eq!(input[0]["role"], "system", "{input}");
            assert!(input.to_string().contains("agentmesh-sim-script"));
            assert_eq!(input[1]["role"], "user");
            assert_eq!(input[1]["parts"][0]["content"], secret.as_str());
            assert_eq!(chats[0]["output"][0]["parts"][0]["type"], "tool_call");
            assert_eq!(chats[0]["output"][0]["finish_reason"], "tool_call");
            let last = &chats[1];
            assert_eq!(last["input"][3]["parts"][0]["type"], "tool_call_response");
            let answer = last["output"][0]["parts"][0]["content"].as_str().unwrap();
            assert!(answer.ends_with(&secret), "{answer}");
            let good = calls.iter().find(|t| t["status_code"] != "error").unwrap();
            assert_eq!(good["input"], json!({"a": 2, "b": 3}), "{good}");
            assert_eq!(good["output"]["result"], 5.0, "{good}");
        }
    }

    // The same over the gateway's gRPC face.
    let mut query =
        mesh_proto::trace_query_client::TraceQueryClient::connect(mesh.gateway_grpc_url())
            .await
            .unwrap();
    let get = |trace_id: &str| {
        let mut request = tonic::Request::new(mesh_proto::GetTraceRequest {
            trace_id: trace_id.to_owned(),
        });
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", mesh.token(&tenant, &[Role::Viewer]))
                .parse()
                .unwrap(),
        );
        request
    };
    for (trace_id, recorded) in [(&quiet_trace, false), (&open_trace, true)] {
        let tree = query
            .get_trace(get(trace_id.as_str()))
            .await
            .unwrap()
            .into_inner();
        let chat = &tree.observations[0].children[0];
        assert_eq!(chat.r#type, "generation", "{tree:?}");
        assert!(chat.time_to_first_token_ms.unwrap() > 0, "{chat:?}");
        assert_eq!(
            chat.completion_start_ms.unwrap(),
            chat.start_ms + chat.time_to_first_token_ms.unwrap()
        );
        assert_eq!(chat.input_json.contains(&secret), recorded, "{chat:?}");
        assert_eq!(!chat.output_json.is_empty(), recorded, "{chat:?}");
    }

    // A model call that fails is an error generation with its error.type.
    let trace = stored_trace(&viewer, &telemetry, &broken_trace, 2).await;
    let chat = flatten(&trace["observations"])
        .into_iter()
        .find(|o| o["type"] == "generation")
        .unwrap_or_else(|| panic!("no generation in {trace}"));
    assert_eq!(chat["status_code"], "error", "{chat}");
    assert_eq!(chat["level"], "ERROR");
    assert_eq!(
        chat["attributes"]["attributes"]["gen_ai.provider.name"],
        "agentmesh"
    );
    let error_type = chat["attributes"]["attributes"]["error.type"]
        .as_str()
        .unwrap_or_default();
    assert!(!error_type.is_empty(), "{chat}");
    assert!(chat.get("time_to_first_token_ms").is_none(), "{chat}");
    // The failed task's agent span too (the worker's outcome as error.type).
    let root = &trace["observations"][0];
    assert_eq!(root["status_code"], "error", "{root}");
    assert_eq!(
        root["attributes"]["attributes"]["error.type"],
        "invalid_request"
    );
    assert!(!trace.to_string().contains(&secret), "{trace}");
}
