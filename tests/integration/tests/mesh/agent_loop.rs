//! The agent runtime end to end: Tool and Agent resources applied through
//! the gateway, the worker's tool-calling loop against a scripted model
//! (the simulator plays the turns written in the agent's system prompt)
//! and a real local HTTP tool service, the journal that makes a crashed
//! task resume without repeating tool calls, session memory in Redis, and
//! the per-session concurrency policies.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_integration::infra::redis_url;
use mesh_integration::tool_server::{ToolServer, ToolServerOptions};
use mesh_integration::{IsolatedWorker, Mesh, MeshOptions, RestClient, postgres_mesh};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

/// A system prompt the simulator plays as a script of turns.
fn script(turns: Value) -> String {
    format!("You are a test agent.\n[[agentmesh-sim-script]]\n{turns}")
}

async fn put_tool(client: &RestClient, name: &str, spec: Value) -> (reqwest::StatusCode, Value) {
    let response = client
        .put(&format!("/v1/tools/{name}"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn put_agent(client: &RestClient, name: &str, spec: Value) -> (reqwest::StatusCode, Value) {
    let response = client
        .put(&format!("/v1/agents/{name}"))
        .json(&spec)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

fn number_tool(url: String, description: &str) -> Value {
    json!({
        "type": "api",
        "description": description,
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
        "config": {"endpoint": url},
        "timeout": "5s",
    })
}

fn tenant(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tool_loop_runs_parallel_calls_and_journals_every_step() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");

    let (status, tool) = put_tool(
        &client,
        "add",
        number_tool(tools.url("/add"), "adds a and b"),
    )
    .await;
    assert_eq!(status, 201, "{tool}");
    assert_eq!(tool["spec"]["config"]["method"], "POST");
    let turns = json!([
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}, {"name": "mul", "arguments": {"a": 4, "b": 5}}]},
        {"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]},
        {"content": "results: {{tool_results}}"}
    ]);
    let (status, agent) = put_agent(
        &client,
        "calc",
        json!({
            "model": "sim-model",
            "systemPrompt": script(turns),
            "tools": [{"ref": "add"}, {"name": "mul", "spec": number_tool(tools.url("/mul"), "multiplies")}],
            "maxSteps": 5,
        }),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["spec"]["tools"][0]["ref"], "add");

    let id = client.submit("calc", "compute things").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(task["output"], r#"results: {"result":2.0}"#, "{task}");
    assert_eq!(task["steps"], 3);
    assert!(task["usage"]["inputTokens"].as_u64().unwrap() > 0);

    // Two calls in step 1 (in parallel), one in step 2; each carries its
    // (task, step, call id) idempotency key.
    let calls = tools.calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    let mut steps: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            let mut parts = c.idempotency_key.splitn(3, ':');
            assert_eq!(parts.next(), Some(id.as_str()), "{c:?}");
            (parts.next().unwrap().to_owned(), c.path.clone())
        })
        .collect();
    steps.sort();
    assert_eq!(
        steps,
        vec![
            ("1".into(), "/add".into()),
            ("1".into(), "/mul".into()),
            ("2".into(), "/add".into())
        ]
    );
    assert_eq!(tools.calls_to("/mul")[0].body, json!({"a": 4, "b": 5}));

    // The journal: three model steps, three calls and three results.
    let events = client.events(&id, None, WAIT).await.unwrap();
    let count = |kind: &str| events.iter().filter(|e| e.event == kind).count();
    assert_eq!(
        (
            count("model_step"),
            count("tool_call"),
            count("tool_result")
        ),
        (3, 3, 3)
    );
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "tool_result")
        .map(|e| &e.data)
        .collect();
    assert!(results.iter().all(|r| r["isError"] == false), "{results:?}");
    let first = events.iter().find(|e| e.event == "model_step").unwrap();
    assert_eq!(first.data["toolCalls"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tool_failures_are_told_to_the_model_and_limits_hold() {
    let options = MeshOptions {
        worker_config: Some(|config| {
            let mut env = (*config.secrets_env).clone();
            env.insert("WHOAMI_TOKEN".to_owned(), "planted-secret-7f3a".to_owned());
            config.secrets_env = std::sync::Arc::new(env);
            config.tools.retry_base = Duration::from_millis(20);
        }),
        ..Default::default()
    };
    let mesh = Mesh::start(options).await.unwrap();
    let tools = ToolServer::start(ToolServerOptions {
        slow: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    let api = |path: &str, extra: Value| {
        let mut spec = json!({"type": "api", "config": {"endpoint": tools.url(path)}});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                if k == "config" {
                    for (ck, cv) in v.as_object().unwrap() {
                        spec["config"][ck] = cv.clone();
                    }
                } else {
                    spec.insert(k.clone(), v.clone());
                }
            }
        }
        spec
    };
    for (name, spec) in [
        ("flaky", api("/flaky", json!({"retries": 2}))),
        ("flaky_no_retry", api("/flaky", json!({}))),
        (
            "big",
            api("/big", json!({"config": {"maxResponseBytes": 1000}})),
        ),
        ("slow", api("/slow", json!({"timeout": "300ms"}))),
        (
            "whoami",
            api(
                "/whoami",
                json!({"authentication": {"bearerToken": {"env": "WHOAMI_TOKEN"}}}),
            ),
        ),
        ("missing", api("/not-found", json!({}))),
        ("add", number_tool(tools.url("/add"), "adds")),
    ] {
        let (status, body) = put_tool(&client, name, spec).await;
        assert_eq!(status, 201, "{name}: {body}");
    }
    let turns = json!([
        {"tool_calls": [
            {"name": "flaky", "arguments": {}},
            {"name": "flaky_no_retry", "arguments": {}},
            {"name": "big", "arguments": {}},
            {"name": "slow", "arguments": {}},
            {"name": "whoami", "arguments": {}},
            {"name": "missing", "arguments": {}},
            {"name": "add", "arguments": {"a": "two"}},
            {"name": "nonexistent", "arguments": {}}
        ]},
        {"content": "{{tool_results}}"}
    ]);
    let refs: Vec<Value> = [
        "flaky",
        "flaky_no_retry",
        "big",
        "slow",
        "whoami",
        "missing",
        "add",
    ]
    .iter()
    .map(|n| json!({"ref": n}))
    .collect();
    let (status, body) = put_agent(
        &client,
        "robust",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": refs}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("robust", "try everything").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let output = task["output"].as_str().unwrap();
    let parts: Vec<&str> = output.split(" | ").collect();
    assert_eq!(parts.len(), 8, "{output}");
    assert!(
        parts[0].contains(r#""attempt":3"#),
        "retried twice, then ok: {}",
        parts[0]
    );
    assert!(
        parts[1].contains("HTTP 503") && parts[1].contains("after 1 attempt"),
        "{}",
        parts[1]
    );
    assert!(
        parts[2].contains("exceeds the limit of 1000 bytes"),
        "{}",
        parts[2]
    );
    assert!(
        parts[3].contains("did not answer within 300 ms"),
        "{}",
        parts[3]
    );
    assert_eq!(parts[4], r#"{"authenticated":true}"#);
    assert!(
        parts[5].contains("HTTP 404") && !parts[5].contains("attempts"),
        "not retried: {}",
        parts[5]
    );
    assert!(
        parts[6].contains("do not match the tool's parameters"),
        "{}",
        parts[6]
    );
    assert!(
        parts[7].contains("no tool named \"nonexistent\""),
        "{}",
        parts[7]
    );

    // Retries of one call share its idempotency key; invalid arguments
    // never reach the tool; the token reached the tool but nothing else.
    let flaky = tools.calls_to("/flaky");
    let mut keys: Vec<&str> = flaky.iter().map(|c| c.idempotency_key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(
        (flaky.len(), keys.len()),
        (4, 2),
        "3 attempts of one call, 1 of the other"
    );
    assert!(tools.calls_to("/add").is_empty());
    assert_eq!(
        tools.calls_to("/whoami")[0].authorization.as_deref(),
        Some("Bearer planted-secret-7f3a")
    );
    let events = client.events(&id, None, WAIT).await.unwrap();
    let everything = format!(
        "{events:?} {} {}",
        client
            .get("/v1/tools/whoami")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        client
            .get("/v1/agents/robust")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    );
    assert!(
        !everything.contains("planted-secret-7f3a"),
        "the secret leaked"
    );
    assert!(
        everything.contains("WHOAMI_TOKEN"),
        "the reference is shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_that_never_answers_stops_at_max_steps() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");
    let turns = json!([{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 1}}]}]);
    let (status, body) = put_agent(
        &client,
        "loops",
        json!({"model": "sim-model", "systemPrompt": script(turns), "maxSteps": 3,
               "tools": [{"name": "add", "spec": number_tool(tools.url("/add"), "adds")}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("loops", "go on forever").await.unwrap();
    let task = client.wait_for(&id, &["failed"], WAIT).await.unwrap();
    assert!(
        task["error"].as_str().unwrap().contains("maxSteps"),
        "{task}"
    );
    assert_eq!(tools.calls_to("/add").len(), 3);
    let events = client.events(&id, None, WAIT).await.unwrap();
    assert_eq!(events.last().unwrap().data["reason"], "max_steps");
}

/// A worker dies while a step's tool call is in flight, after an earlier
/// step's tool call was journaled. The redelivery replays the journal: the
/// finished call is not made again; the interrupted one is made again with
/// the same idempotency key, so the tool can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_task_resumes_from_its_journal() {
    let mut options = MeshOptions {
        start_worker: false,
        ..Default::default()
    };
    options.bus.task_ack_wait = Duration::from_secs(2);
    let mesh = postgres_mesh(options).await;
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");
    let turns = json!([
        {"tool_calls": [{"name": "add", "arguments": {"a": 20, "b": 22}}]},
        {"tool_calls": [{"name": "block", "arguments": {}}]},
        {"content": "done: {{tool_results}}"}
    ]);
    let (status, body) = put_agent(
        &client,
        "fragile",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [
            {"name": "add", "spec": number_tool(tools.url("/add"), "adds")},
            {"name": "block", "spec": {"type": "api", "config": {"endpoint": tools.url("/block")}}}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let first = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    let id = client.submit("fragile", "resume me").await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tools.calls_to("/block").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the blocking call never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill();
    tools.release();
    let _second = IsolatedWorker::spawn(mesh.worker_config().unwrap()).unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(task["output"], r#"done: {"unblocked":true}"#);
    assert_eq!(task["attempts"], 2, "{task}");
    assert_eq!(
        tools.calls_to("/add").len(),
        1,
        "the journaled call is not repeated"
    );
    let blocks = tools.calls_to("/block");
    assert_eq!(blocks.len(), 2, "the interrupted call is made again");
    assert_eq!(blocks[0].idempotency_key, blocks[1].idempotency_key);
    assert!(blocks[0].idempotency_key.starts_with(&format!("{id}:2:")));
    let events = client.events(&id, None, WAIT).await.unwrap();
    let model_steps: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "model_step")
        .map(|e| e.data["step"].as_u64().unwrap())
        .collect();
    assert_eq!(model_steps, vec![1, 2, 3], "each step journaled once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_memory_carries_turns_across_tasks_until_its_ttl() {
    let mesh = Mesh::start(MeshOptions {
        redis_url: Some(redis_url()),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client(&tenant("memory"));
    let turns = json!([{"content": "previous=[{{previous_user}}] turns={{user_turns}}"}]);
    let (status, body) = put_agent(
        &client,
        "rememberer",
        json!({"model": "sim-model", "systemPrompt": script(turns),
               "memory": {"type": "redis", "ttl": "2s", "maxHistory": 4}}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let run = |input: &'static str, session: &'static str| {
        let client = client.clone();
        async move {
            let id = client
                .submit_in_session("rememberer", input, session)
                .await
                .unwrap();
            let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
            assert_eq!(task["sessionId"], session);
            task["output"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(run("my name is Ada", "s1").await, "previous=[] turns=1");
    assert_eq!(
        run("who am I", "s1").await,
        "previous=[my name is Ada] turns=2"
    );
    assert_eq!(run("and now", "s1").await, "previous=[who am I] turns=3");
    // maxHistory 4 keeps the last two turns.
    assert_eq!(run("and again", "s1").await, "previous=[and now] turns=3");
    assert_eq!(
        run("elsewhere", "s2").await,
        "previous=[] turns=1",
        "sessions are apart"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        run("still there?", "s1").await,
        "previous=[] turns=1",
        "forgotten after the TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrency_policies_per_session() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");
    let turns =
        json!([{"tool_calls": [{"name": "block", "arguments": {}}]}, {"content": "finished"}]);
    for policy in ["enqueue", "reject", "interrupt"] {
        let (status, body) = put_agent(
            &client,
            policy,
            json!({"model": "sim-model", "systemPrompt": script(turns.clone()), "concurrency": policy,
                   "tools": [{"name": "block", "spec": {"type": "api", "config": {"endpoint": tools.url("/block")}}}]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let running = |agent: &'static str| {
        let client = client.clone();
        async move {
            let id = client
                .submit_in_session(agent, "first", "chat-1")
                .await
                .unwrap();
            client.wait_for(&id, &["running"], WAIT).await.unwrap();
            id
        }
    };

    // reject: a second task of the session is refused while one runs.
    let first_reject = running("reject").await;
    let response = client
        .post("/v1/agents/reject/tasks")
        .json(&json!({"input": "second", "sessionId": "chat-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reject"),
        "{body}"
    );
    // Another session is not affected.
    client
        .submit_in_session("reject", "other", "chat-2")
        .await
        .unwrap();

    // interrupt: the running task is cancelled, the new one runs.
    let first_interrupt = running("interrupt").await;
    let second_interrupt = client
        .submit_in_session("interrupt", "second", "chat-1")
        .await
        .unwrap();
    let cancelled = client
        .wait_for(&first_interrupt, &["cancelled"], WAIT)
        .await
        .unwrap();
    assert_eq!(cancelled["cancelRequested"], true);

    // enqueue: the second waits, unpublished, until the first ends.
    let first_enqueue = running("enqueue").await;
    let second_enqueue = client
        .submit_in_session("enqueue", "second", "chat-1")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = client.task(&second_enqueue).await.unwrap();
    assert_eq!(waiting["status"], "queued", "{waiting}");
    assert_eq!(waiting["attempts"], 0);

    tools.release();
    let first = client
        .wait_for(&first_enqueue, &["succeeded"], WAIT)
        .await
        .unwrap();
    client
        .wait_for(&second_enqueue, &["succeeded"], WAIT)
        .await
        .unwrap();
    // Events of one task are projected concurrently: the start time may
    // land just after the terminal status.
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        let task = client.task(&second_enqueue).await.unwrap();
        if task["startedAt"].is_string() {
            break task;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no start time: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        second["startedAt"].as_str().unwrap() >= first["finishedAt"].as_str().unwrap(),
        "the session's tasks ran one after the other: {first} {second}"
    );
    client
        .wait_for(&first_reject, &["succeeded"], WAIT)
        .await
        .unwrap();
    client
        .wait_for(&second_interrupt, &["succeeded"], WAIT)
        .await
        .unwrap();

    // Submits racing on an idle session: still one task at a time.
    let ids: Vec<String> = futures::future::join_all((0..6).map(|i| {
        let client = client.clone();
        async move {
            client
                .submit_in_session("enqueue", &format!("racer {i}"), "race")
                .await
                .unwrap()
        }
    }))
    .await;
    let mut spans = Vec::new();
    for id in &ids {
        client.wait_for(id, &["succeeded"], WAIT).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        let task = loop {
            let task = client.task(id).await.unwrap();
            if task["startedAt"].is_string() {
                break task;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no start time: {task}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        spans.push((
            task["startedAt"].as_str().unwrap().to_owned(),
            task["finishedAt"].as_str().unwrap().to_owned(),
        ));
    }
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two tasks of one session overlapped: {spans:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_specs_are_refused_with_the_field_path() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let client = mesh.client("acme");
    let cases = [
        (
            "/v1/tools/t1",
            json!({"type": "api", "config": {"endpoint": "ftp://x/y"}}),
            "config.endpoint",
        ),
        (
            "/v1/tools/t2",
            json!({"type": "api", "config": {"endpoint": "http://x", "headers": {"Authorization": "Bearer x"}}}),
            "config.headers.Authorization",
        ),
        (
            "/v1/tools/t3",
            json!({"type": "api", "config": {"endpoint": "http://x"}, "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}),
            "parameters",
        ),
        (
            "/v1/tools/t4",
            json!({"type": "api", "config": {"endpoint": "http://x"}, "timeout": "soon"}),
            "timeout",
        ),
        ("/v1/tools/t5", json!({"type": "teleport"}), "type"),
        (
            "/v1/tools/has%20space",
            json!({"type": "api", "config": {"endpoint": "http://x"}}),
            "name",
        ),
        (
            "/v1/agents/a1",
            json!({"model": "m", "tools": [{"ref": "x"}, {"name": "y", "spec": {"type": "api", "config": {"endpoint": "nope"}}}]}),
            "tools[1].spec.config.endpoint",
        ),
        (
            "/v1/agents/a2",
            json!({"model": "m", "memory": {"type": "redis", "ttl": "1h", "maxHistory": 0}}),
            "memory.maxHistory",
        ),
        (
            "/v1/agents/a3",
            json!({"model": "m", "concurrency": "sometimes"}),
            "concurrency",
        ),
        (
            "/v1/agents/a4",
            json!({"model": {"name": "m", "fallbacks": [""]}}),
            "model.fallbacks[0]",
        ),
    ];
    for (path, body, field) in cases {
        let response = client.put(path).json(&body).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        let got = body["error"]["field"].as_str().unwrap_or_default();
        assert!(
            got.starts_with(field),
            "{path}: expected field {field}, got {body}"
        );
    }
    // A reference to a tool that does not exist is refused at apply.
    let (status, body) = put_agent(
        &client,
        "dangling",
        json!({"model": "m", "tools": [{"ref": "ghost"}]}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tools[0].ref"),
        "{body}"
    );

    // The JSON Schemas are served, and they are what the repo keeps.
    for kind in ["agent", "tool"] {
        let served: Value = client
            .get(&format!("/v1/schemas/{kind}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kept: Value = serde_json::from_str(
            &std::fs::read_to_string(format!(
                "{}/../../libs/mesh-spec/schemas/{kind}.v1alpha1.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(served, kept);
    }

    // Tools are versioned per tenant, and another tenant sees none of them.
    let spec = json!({"type": "api", "config": {"endpoint": "http://127.0.0.1:9/x"}});
    assert_eq!(put_tool(&client, "v", spec.clone()).await.1["version"], 1);
    assert_eq!(
        put_tool(&client, "v", spec.clone()).await.1["changed"],
        false
    );
    let mut changed = spec.clone();
    changed["description"] = json!("now documented");
    assert_eq!(put_tool(&client, "v", changed).await.1["version"], 2);
    let other = mesh.client("other-tenant");
    assert_eq!(other.get("/v1/tools/v").send().await.unwrap().status(), 404);
    let listed: Value = other
        .get("/v1/tools")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["tools"], json!([]));
}

/// A `human` tool pauses the task without holding a worker: the delivery is
/// acked, another task runs on the only slot, and the decision (approve,
/// reject, or the deadline's `onTimeout`) dispatches the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_pause_tasks_without_holding_a_worker() {
    let options = MeshOptions {
        worker_config: Some(|config| config.concurrency = 1),
        ..Default::default()
    };
    let mesh = postgres_mesh(options).await;
    let client = mesh.client("acme");
    let user = RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token("acme", &[mesh_auth::Role::User]),
    );
    let turns = json!([
        {"tool_calls": [{"name": "ask_human", "arguments": {"action": "drop the table"}}]},
        {"content": "decision: {{tool_results}}"}
    ]);
    let human = |config: Value| {
        json!({"name": "ask_human", "spec": {"type": "human", "description": "may I run this action?",
            "parameters": {"type": "object", "properties": {"action": {"type": "string"}}, "required": ["action"]},
            "config": config}})
    };
    for (agent, config) in [
        ("gated", json!({"timeout": "1h"})),
        ("hasty", json!({"timeout": "1s", "onTimeout": "approve"})),
    ] {
        let (status, body) = put_agent(
            &client,
            agent,
            json!({"model": "sim-model", "systemPrompt": script(turns.clone()), "tools": [human(config)]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    client.apply_sim_agent("plain", 4).await.unwrap();

    // Approved.
    let approved = user.submit("gated", "clean up").await.unwrap();
    let paused = user
        .wait_for(&approved, &["awaiting_approval"], WAIT)
        .await
        .unwrap();
    assert_eq!(paused["approval"]["tool"], "ask_human");
    assert_eq!(
        paused["approval"]["arguments"],
        r#"{"action":"drop the table"}"#
    );
    assert_eq!(paused["approval"]["prompt"], "may I run this action?");
    // The only worker slot is free: another task completes meanwhile.
    let other = user.submit("plain", "hello").await.unwrap();
    user.wait_for(&other, &["succeeded"], WAIT).await.unwrap();
    assert_eq!(
        user.task(&approved).await.unwrap()["status"],
        "awaiting_approval"
    );
    let response = user
        .post(&format!("/v1/tasks/{approved}/approve"))
        .json(&json!({"comment": "go ahead"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let done = user
        .wait_for(&approved, &["succeeded"], WAIT)
        .await
        .unwrap();
    let output = done["output"].as_str().unwrap();
    assert!(
        output.contains(r#""approved":true"#) && output.contains(r#""comment":"go ahead""#),
        "{output}"
    );
    assert!(output.contains(r#""decidedBy":"test""#), "{output}");
    let events = user.events(&approved, None, WAIT).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert!(
        kinds.contains(&"approval_requested") && kinds.contains(&"approval_resolved"),
        "{kinds:?}"
    );
    let attempts: Vec<u64> = events
        .iter()
        .filter(|e| e.event == "started")
        .map(|e| e.data["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2], "the resumed dispatch is attempt 2");
    // Deciding again is a conflict, not a second resumption.
    let again = user
        .post(&format!("/v1/tasks/{approved}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // Rejected, with the wrong call id first.
    let rejected = user.submit("gated", "clean up again").await.unwrap();
    user.wait_for(&rejected, &["awaiting_approval"], WAIT)
        .await
        .unwrap();
    let wrong = user
        .post(&format!("/v1/tasks/{rejected}/reject"))
        .json(&json!({"callId": "call_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400);
    let response = user
        .post(&format!("/v1/tasks/{rejected}/reject"))
        .json(&json!({"comment": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let done = user
        .wait_for(&rejected, &["succeeded"], WAIT)
        .await
        .unwrap();
    assert!(
        done["output"]
            .as_str()
            .unwrap()
            .contains(r#""approved":false"#),
        "{done}"
    );

    // Timed out to the configured outcome.
    let timed = user.submit("hasty", "quick").await.unwrap();
    let done = user.wait_for(&timed, &["succeeded"], WAIT).await.unwrap();
    let output = done["output"].as_str().unwrap();
    assert!(
        output.contains(r#""approved":true"#) && output.contains(r#""timedOut":true"#),
        "{output}"
    );

    // Cancelled while it waits.
    let cancelled = user.submit("gated", "never mind").await.unwrap();
    user.wait_for(&cancelled, &["awaiting_approval"], WAIT)
        .await
        .unwrap();
    let response = user
        .post(&format!("/v1/tasks/{cancelled}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    user.wait_for(&cancelled, &["cancelled"], WAIT)
        .await
        .unwrap();

    // A viewer may not decide.
    let viewer = RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token("acme", &[mesh_auth::Role::Viewer]),
    );
    let forbidden = viewer
        .post(&format!("/v1/tasks/{approved}/approve"))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
}

/// A `retrieval` tool searches the collection of the task's own tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retrieval_tool_searches_the_tenants_collection() {
    let mesh = Mesh::start(MeshOptions {
        retrieval: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let turns = json!([
        {"tool_calls": [{"name": "search", "arguments": {"query": "spaghetti garlic"}}]},
        {"content": "{{tool_results}}"}
    ]);
    for (tenant, text) in [
        (
            "acme",
            "Boil the spaghetti, then toss it with garlic and olive oil.",
        ),
        ("globex", "Globex keeps its spaghetti garlic recipe secret."),
    ] {
        let client = mesh.client(tenant);
        let response = client
            .post("/v1/collections")
            .json(&json!({"name": "kb", "embeddingModel": "none", "dimension": 4}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
        let docs = json!({"documents": [
            {"id": format!("{tenant}-recipe"), "text": text, "vector": [1, 0, 0, 0]},
            {"id": format!("{tenant}-billing"), "text": "Invoices are sent monthly.", "vector": [0, 1, 0, 0]}
        ]});
        let response = client
            .post("/v1/collections/kb/documents")
            .json(&docs)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
        let (status, body) = put_agent(
            &client,
            "librarian",
            json!({"model": "sim-model", "systemPrompt": script(turns.clone()), "tools": [
                {"name": "search", "spec": {"type": "retrieval", "description": "search the knowledge base",
                    "config": {"collection": "kb", "mode": "keyword", "topK": 1}}}
            ]}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    for tenant in ["acme", "globex"] {
        let client = mesh.client(tenant);
        let id = client
            .submit("librarian", "how do I cook pasta?")
            .await
            .unwrap();
        let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
        let hits: Value = serde_json::from_str(task["output"].as_str().unwrap()).unwrap();
        let hits = hits["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "topK from the config: {hits:?}");
        assert_eq!(
            hits[0]["documentId"],
            format!("{tenant}-recipe"),
            "{tenant} sees its own: {hits:?}"
        );
    }
}

/// An `agent` tool runs another agent as a sub-task (queued, listed, with
/// its parent); the call's idempotency key is the sub-task's, so a repeated
/// submit with one key is one task. Nesting is bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_tool_runs_a_sub_task() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let client = mesh.client("acme");
    let (status, body) = put_agent(
        &client,
        "helper",
        json!({"model": "sim-model", "systemPrompt": script(json!([{"content": "helped with: {{input}}"}]))}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let turns = json!([
        {"tool_calls": [{"name": "ask_helper", "arguments": {"input": "summarize the report"}}]},
        {"content": "{{tool_results}}"}
    ]);
    let (status, body) = put_agent(
        &client,
        "boss",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [
            {"name": "ask_helper", "spec": {"type": "agent", "description": "delegate to the helper", "config": {"agent": "helper"}, "timeout": "20s"}}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("boss", "do the work").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let result: Value = serde_json::from_str(task["output"].as_str().unwrap()).unwrap();
    assert_eq!(result["output"], "helped with: summarize the report");
    let sub = client
        .task(result["taskId"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sub["parentTaskId"], id.as_str());
    assert_eq!(sub["agent"], "helper");
    assert_eq!(sub["status"], "succeeded");

    // Idempotency keys on the public API: the same key is the same task.
    let submit = |key: &'static str| {
        client
            .post("/v1/agents/helper/tasks")
            .header("Idempotency-Key", key)
            .json(&json!({"input": "once"}))
            .send()
    };
    let first = submit("order-42").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = submit("order-42").await.unwrap();
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let other: Value = submit("order-43").await.unwrap().json().await.unwrap();
    assert_ne!(first["id"], other["id"]);
    // Another tenant's key space is its own.
    let globex: Value = mesh
        .client("globex")
        .post("/v1/agents/helper/tasks")
        .header("Idempotency-Key", "order-42")
        .json(&json!({"input": "once"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(globex["error"]["code"], "not_found", "{globex}");

    // An agent that delegates to itself stops at the depth limit.
    let turns = json!([
        {"tool_calls": [{"name": "again", "arguments": {"input": "deeper"}}]},
        {"content": "{{tool_results}}"}
    ]);
    let (status, body) = put_agent(
        &client,
        "recursive",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [
            {"name": "again", "spec": {"type": "agent", "config": {"agent": "recursive"}, "timeout": "25s"}}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("recursive", "go").await.unwrap();
    let task = client
        .wait_for(&id, &["succeeded"], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        task["output"].as_str().unwrap().contains("nest at most"),
        "{task}"
    );
}
