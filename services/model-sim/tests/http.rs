//! The simulator over a real socket, driven by a real HTTP client, the way
//! the inference router and benchmarks will use it.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use model_sim::{FailureMode, SimConfig};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Sim {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Sim {
    async fn start(config: SimConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(model_sim::serve(listener, config, shutdown.clone()));
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn chat(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/chat/completions"))
            .json(body)
            .send()
            .await
            .expect("send chat request")
    }

    async fn metrics(&self) -> String {
        let response = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("get metrics");
        assert_eq!(response.status(), 200);
        response.text().await.expect("metrics body")
    }

    /// Polls `/metrics` until `line` appears; gives up after five seconds.
    async fn wait_for_metric(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            if text.lines().any(|l| l == line) {
                return text;
            }
            assert!(Instant::now() < deadline, "never saw {line:?} in\n{text}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Cancels the token and checks that the server shut down cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops after cancellation")
            .expect("server task did not panic");
        assert!(result.is_ok(), "serve failed: {result:?}");
    }
}

fn config() -> SimConfig {
    SimConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        ..SimConfig::default()
    }
}

fn chat_body(text: &str, max_tokens: u32) -> Value {
    json!({
        "model": "sim-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": text},
        ],
        "max_tokens": max_tokens,
    })
}

fn stream_body(text: &str, max_tokens: u32, include_usage: bool) -> Value {
    let mut body = chat_body(text, max_tokens);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The `data:` payloads of a complete server-sent-event body.
fn sse_payloads(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data prefix: {event:?}"))
                .to_owned()
        })
        .collect()
}

fn assert_openai_error(body: &Value, kind: &str) {
    let error = &body["error"];
    assert!(error.is_object(), "no error object in {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["type"], kind, "{body}");
    assert!(error.get("param").is_some(), "{body}");
    assert!(error.get("code").is_some(), "{body}");
}

#[tokio::test]
async fn non_streaming_completion_has_openai_shape_and_usage() {
    let sim = Sim::start(config()).await;
    let body = chat_body("hello simulated world", 5);

    let response = sim.chat(&body).await;
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.expect("json body");

    assert!(
        json["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{json}"
    );
    assert_eq!(json["object"], "chat.completion");
    assert!(json["created"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(json["model"], "sim-model");
    let choices = json["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(
        choices[0]["message"]["content"],
        "hello simulated world hello simulated "
    );
    assert_eq!(choices[0]["finish_reason"], "length");
    // "be brief" + "hello simulated world": five words.
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
    );

    let again: Value = sim.chat(&body).await.json().await.expect("json body");
    assert_eq!(
        again["choices"], json["choices"],
        "same request, same output"
    );
    assert_ne!(again["id"], json["id"], "every completion gets its own id");
    sim.stop().await;
}

#[tokio::test]
async fn default_max_tokens_applies_when_request_has_none() {
    let sim = Sim::start(SimConfig {
        default_max_tokens: 3,
        ..config()
    })
    .await;
    let json: Value = sim
        .chat(&json!({"messages": [{"role": "user", "content": "a b"}]}))
        .await
        .json()
        .await
        .expect("json body");
    assert_eq!(json["choices"][0]["message"]["content"], "a b a ");
    assert_eq!(json["usage"]["completion_tokens"], 3);
    sim.stop().await;
}

#[tokio::test]
async fn stop_sequence_ends_completion_with_stop() {
    let sim = Sim::start(config()).await;
    let mut body = chat_body("one two three", 10);
    body["stop"] = json!(["three"]);
    let json: Value = sim.chat(&body).await.json().await.expect("json body");
    assert_eq!(json["choices"][0]["message"]["content"], "one two ");
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    sim.stop().await;
}

#[tokio::test]
async fn streaming_sends_role_tokens_finish_usage_and_done() {
    let sim = Sim::start(config()).await;
    let response = sim.chat(&stream_body("alpha beta", 4, true)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = response.text().await.expect("stream body");
    let payloads = sse_payloads(&text);

    assert_eq!(
        payloads.last().map(String::as_str),
        Some("[DONE]"),
        "{text}"
    );
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).expect("chunk is json"))
        .collect();
    let id = &chunks[0]["id"];
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "sim-model");
        assert_eq!(&chunk["id"], id, "one id per stream");
    }

    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let tokens: Vec<&str> = chunks[1..]
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(tokens, ["alpha ", "beta ", "alpha ", "beta "]);

    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert!(
        finish["usage"].is_null(),
        "usage is null before the last chunk"
    );

    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8})
    );
    sim.stop().await;
}

#[tokio::test]
async fn streaming_without_usage_option_sends_no_usage() {
    let sim = Sim::start(config()).await;
    let text = sim
        .chat(&stream_body("x", 3, false))
        .await
        .text()
        .await
        .expect("stream body");
    let payloads = sse_payloads(&text);
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    // role chunk, three tokens, finish chunk
    assert_eq!(payloads.len(), 1 + 3 + 1 + 1, "{text}");
    for payload in &payloads[..payloads.len() - 1] {
        let chunk: Value = serde_json::from_str(payload).expect("chunk is json");
        assert!(chunk.get("usage").is_none(), "{payload}");
        assert_eq!(chunk["choices"].as_array().map(Vec::len), Some(1));
    }
    sim.stop().await;
}

#[tokio::test]
async fn time_to_first_token_is_respected() {
    let ttft = Duration::from_millis(200);
    let inter_token = Duration::from_millis(20);
    let sim = Sim::start(SimConfig {
        ttft,
        inter_token,
        ..config()
    })
    .await;

    let started = Instant::now();
    let response = sim.chat(&chat_body("slow", 3)).await;
    assert_eq!(response.status(), 200);
    response.bytes().await.expect("body");
    assert!(
        started.elapsed() >= ttft + inter_token * 2,
        "non-streaming answered after {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let response = sim.chat(&stream_body("slow", 3, false)).await;
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let mut first_token_after = None;
    while let Some(bytes) = body.next().await {
        seen.push_str(std::str::from_utf8(&bytes.expect("stream bytes")).expect("utf-8"));
        if first_token_after.is_none() && seen.contains("\"content\":\"slow \"") {
            first_token_after = Some(started.elapsed());
        }
    }
    let first_token_after = first_token_after.expect("a token arrived");
    assert!(
        first_token_after >= ttft,
        "first token after {first_token_after:?}"
    );
    assert!(started.elapsed() >= ttft + inter_token * 2);
    assert!(seen.ends_with("data: [DONE]\n\n"));
    sim.stop().await;
}

#[tokio::test]
async fn full_waiting_queue_answers_429_while_a_stream_holds_the_slot() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        max_waiting: 0,
        inter_token: Duration::from_millis(300),
        ..config()
    })
    .await;

    // The handler has returned once headers arrive; the slot must stay
    // taken until the body is done.
    let slow = sim.chat(&stream_body("slow", 4, false)).await;
    assert_eq!(slow.status(), 200);
    let metrics = sim
        .wait_for_metric(r#"vllm:num_requests_running{model_name="sim-model"} 1"#)
        .await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"vllm:kv_cache_usage_perc{model_name="sim-model"} 1.0"#),
        "{metrics}"
    );

    let rejected = sim.chat(&chat_body("second", 1)).await;
    assert_eq!(rejected.status(), 429);
    let body: Value = rejected.json().await.expect("json error");
    assert_openai_error(&body, "rate_limit_error");

    let text = slow.text().await.expect("slow stream completes");
    assert!(text.ends_with("data: [DONE]\n\n"));
    sim.wait_for_metric(r#"vllm:num_requests_running{model_name="sim-model"} 0"#)
        .await;
    assert_eq!(sim.chat(&chat_body("third", 1)).await.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn client_hanging_up_frees_its_slot() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        max_waiting: 0,
        inter_token: Duration::from_secs(60),
        ..config()
    })
    .await;
    let abandoned = sim.chat(&stream_body("forever", 10, false)).await;
    assert_eq!(abandoned.status(), 200);
    sim.wait_for_metric(r#"vllm:num_requests_running{model_name="sim-model"} 1"#)
        .await;
    drop(abandoned);
    sim.wait_for_metric(r#"vllm:num_requests_running{model_name="sim-model"} 0"#)
        .await;
    let mut body = chat_body("next", 1);
    body["stream"] = json!(false);
    assert_eq!(sim.chat(&body).await.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn queued_request_waits_for_a_slot_and_counts_as_waiting() {
    let sim = Sim::start(SimConfig {
        max_concurrency: 1,
        max_waiting: 1,
        ttft: Duration::from_millis(500),
        ..config()
    })
    .await;

    let first = tokio::spawn({
        let (client, url) = (sim.client.clone(), sim.url("/v1/chat/completions"));
        async move { client.post(url).json(&chat_body("one", 1)).send().await }
    });
    sim.wait_for_metric(r#"vllm:num_requests_running{model_name="sim-model"} 1"#)
        .await;
    let second = tokio::spawn({
        let (client, url) = (sim.client.clone(), sim.url("/v1/chat/completions"));
        async move { client.post(url).json(&chat_body("two", 1)).send().await }
    });
    sim.wait_for_metric(r#"vllm:num_requests_waiting{model_name="sim-model"} 1"#)
        .await;

    let third = sim.chat(&chat_body("three", 1)).await;
    assert_eq!(third.status(), 429, "queue of one is full");

    let first = first.await.expect("join").expect("first request");
    let second = second.await.expect("join").expect("second request");
    assert_eq!(first.status(), 200);
    assert_eq!(
        second.status(),
        200,
        "queued request is served once the slot frees"
    );
    let metrics = sim.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"vllm:num_requests_waiting{model_name="sim-model"} 0"#),
        "{metrics}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn metrics_use_vllm_names_and_count_tokens() {
    let sim = Sim::start(config()).await;
    assert_eq!(
        sim.chat(&chat_body("count these words", 6)).await.status(),
        200
    );

    let response = sim
        .client
        .get(sim.url("/metrics"))
        .send()
        .await
        .expect("get metrics");
    let content_type = response.headers()["content-type"].to_str().expect("ascii");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("metrics body");

    for line in [
        r#"vllm:num_requests_running{model_name="sim-model"} 0"#,
        r#"vllm:num_requests_waiting{model_name="sim-model"} 0"#,
        r#"vllm:kv_cache_usage_perc{model_name="sim-model"} 0.0"#,
        r#"vllm:gpu_cache_usage_perc{model_name="sim-model"} 0.0"#,
        r#"vllm:prompt_tokens_total{model_name="sim-model"} 5"#,
        r#"vllm:generation_tokens_total{model_name="sim-model"} 6"#,
        r#"vllm:time_to_first_token_seconds_count{model_name="sim-model"} 1"#,
        r#"vllm:e2e_request_latency_seconds_count{model_name="sim-model"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("vllm:request_success_total{")
                && l.contains(r#"finished_reason="length""#)
                && l.ends_with(" 1")),
        "{text}"
    );
    for kind in [
        "# TYPE vllm:num_requests_running gauge",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        "# TYPE vllm:e2e_request_latency_seconds histogram",
    ] {
        assert!(text.contains(kind), "missing {kind:?}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn bad_requests_get_openai_errors_not_500() {
    let sim = Sim::start(config()).await;
    let url = sim.url("/v1/chat/completions");

    let response = sim
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("json error");
    assert_openai_error(&body, "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    assert_eq!(body["error"]["code"], Value::Null);

    let cases = [
        (json!({"model": "sim-model"}), 400, "messages"),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
            400,
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
            400,
            "max_tokens",
        ),
        (
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
            404,
            "model",
        ),
    ];
    for (request, status, param) in cases {
        let response = sim.chat(&request).await;
        assert_eq!(response.status(), status, "{request}");
        let body: Value = response.json().await.expect("json error");
        assert_openai_error(&body, "invalid_request_error");
        assert_eq!(body["error"]["param"], param, "{request}");
    }
    let body: Value = sim
        .chat(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .await
        .json()
        .await
        .expect("json error");
    assert_eq!(body["error"]["code"], "model_not_found");
    sim.stop().await;
}

#[tokio::test]
async fn first_n_failures_then_success() {
    let sim = Sim::start(SimConfig {
        failure: FailureMode::FirstN(2, 503),
        ..config()
    })
    .await;
    for _ in 0..2 {
        let response = sim.chat(&chat_body("x", 1)).await;
        assert_eq!(response.status(), 503);
        let body: Value = response.json().await.expect("json error");
        assert_openai_error(&body, "server_error");
    }
    let response = sim.chat(&chat_body("x", 1)).await;
    assert_eq!(response.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn always_failure_fails_every_request() {
    let sim = Sim::start(SimConfig {
        failure: FailureMode::Always(429),
        ..config()
    })
    .await;
    for _ in 0..3 {
        let response = sim.chat(&chat_body("x", 1)).await;
        assert_eq!(response.status(), 429);
        let body: Value = response.json().await.expect("json error");
        assert_openai_error(&body, "rate_limit_error");
    }
    sim.stop().await;
}

#[tokio::test]
async fn break_stream_after_cuts_the_connection_without_done() {
    let sim = Sim::start(SimConfig {
        failure: FailureMode::BreakStreamAfter(3),
        ..config()
    })
    .await;
    let response = sim.chat(&stream_body("a b c d e", 10, false)).await;
    assert_eq!(response.status(), 200);
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    let mut broke = false;
    while let Some(bytes) = body.next().await {
        match bytes {
            Ok(bytes) => seen.push_str(std::str::from_utf8(&bytes).expect("utf-8")),
            Err(_) => {
                broke = true;
                break;
            }
        }
    }
    assert!(broke, "the body must end in an error, got\n{seen}");
    assert!(!seen.contains("[DONE]"), "{seen}");
    assert!(!seen.contains("finish_reason\":\"length"), "{seen}");
    let tokens = sse_payloads(&seen)
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert_eq!(tokens, 3, "{seen}");

    // A non-streaming response is cut too: the client never gets a
    // complete document.
    let cut = match sim
        .client
        .post(sim.url("/v1/chat/completions"))
        .json(&chat_body("a b c", 10))
        .send()
        .await
    {
        Ok(response) => response.bytes().await.is_err(),
        Err(_) => true,
    };
    assert!(cut, "non-streaming response must be cut");

    // The simulator itself survives the broken responses.
    let health = sim
        .client
        .get(sim.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn models_and_health_endpoints() {
    let sim = Sim::start(SimConfig {
        model: "tiny-sim".to_owned(),
        ..config()
    })
    .await;
    let models: Value = sim
        .client
        .get(sim.url("/v1/models"))
        .send()
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny-sim");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(1));

    for path in ["/health", "/healthz"] {
        let response = sim.client.get(sim.url(path)).send().await.expect("health");
        assert_eq!(response.status(), 200, "{path}");
    }
    sim.stop().await;
}

#[tokio::test]
async fn run_binds_the_configured_address() {
    // Reserve a free port, release it, and let `run` bind it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = SimConfig {
        listen: ([127, 0, 0, 1], port).into(),
        ..config()
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(model_sim::run(config, shutdown.clone()));
    let url = format!("http://127.0.0.1:{port}/healthz");
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(&url).send().await {
            assert_eq!(response.status(), 200);
            break;
        }
        assert!(Instant::now() < deadline, "run never listened on {url}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let result = task.await.expect("run task did not panic");
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_tool_choice_naming_a_function_gets_a_scripted_call() {
    let sim = Sim::start(config()).await;
    let tools = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let mut body = chat_body("find this", 5);
    body["tools"] = tools.clone();
    body["tool_choice"] = json!({"type": "function", "function": {"name": "lookup"}});
    let json: Value = sim.chat(&body).await.json().await.expect("json body");
    let choice = &json["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{json}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "lookup");
    assert_eq!(call["function"]["arguments"], r#"{"input":"find this"}"#);

    body["stream"] = json!(true);
    let text = sim.chat(&body).await.text().await.expect("body");
    assert!(text.contains(r#""tool_calls":[{"#), "{text}");
    assert!(text.contains(r#""finish_reason":"tool_calls""#), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    body["tool_choice"] = json!({"type": "function", "function": {"name": "other"}});
    let response = sim.chat(&body).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json body");
    assert_eq!(error["error"]["param"], "tool_choice");
    sim.stop().await;
}

#[tokio::test]
async fn embeddings_are_deterministic_with_usage() {
    let sim = Sim::start(config()).await;
    let client = reqwest::Client::new();
    let embed = |input: Value| {
        client
            .post(sim.url("/v1/embeddings"))
            .json(&json!({"model": "sim-model", "input": input}))
            .send()
    };
    let first: Value = embed(json!("a b c"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let again: Value = embed(json!("a b c"))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(first["data"], again["data"]);
    assert_eq!(
        first["data"][0]["embedding"]
            .as_array()
            .expect("vector")
            .len(),
        64
    );
    assert_eq!(first["usage"]["prompt_tokens"], 3);
    let response = embed(json!(42)).await.expect("send");
    assert_eq!(response.status(), 400);
    sim.stop().await;
}

/// Polls `/health` until it answers 200; gives up after ten seconds.
async fn wait_until_ready(sim: &Sim) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = sim.client.get(sim.url("/health")).send().await;
        if response.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_loading_model_answers_503_until_its_startup_delay_passes() {
    // Long enough that every request below arrives while it loads.
    let loading = Sim::start(SimConfig {
        startup_delay: Duration::from_secs(600),
        ..config()
    })
    .await;
    let health = loading
        .client
        .get(loading.url("/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 503);
    let chat = loading.chat(&chat_body("a b", 2)).await;
    assert_eq!(chat.status(), 503);
    let error: Value = chat.json().await.expect("json");
    assert_eq!(error["error"]["type"], "server_error");
    let models = loading
        .client
        .get(loading.url("/v1/models"))
        .send()
        .await
        .expect("models");
    assert_eq!(models.status(), 503);
    let embed = loading
        .client
        .post(loading.url("/v1/embeddings"))
        .json(&json!({"model": "sim-model", "input": "x"}))
        .send()
        .await
        .expect("embeddings");
    assert_eq!(embed.status(), 503);
    // Metrics stay readable: an idle server with nothing running.
    let metrics = loading.metrics().await;
    assert!(metrics.contains("vllm:num_requests_running"), "{metrics}");
    loading.stop().await;

    let sim = Sim::start(SimConfig {
        startup_delay: Duration::from_millis(200),
        ..config()
    })
    .await;
    wait_until_ready(&sim).await;
    assert_eq!(sim.chat(&chat_body("a b", 2)).await.status(), 200);
    sim.stop().await;
}

#[tokio::test]
async fn an_injected_timeout_sends_nothing_until_the_client_gives_up() {
    let sim = Sim::start(SimConfig {
        failure: FailureMode::TimeoutFirstN(1),
        ..config()
    })
    .await;
    let hung = sim
        .client
        .post(sim.url("/v1/chat/completions"))
        .json(&stream_body("a b", 2, false))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("no head ever comes");
    assert!(hung.is_timeout(), "{hung}");
    // The next request is served; the hung one never counted as served.
    let response = sim.chat(&chat_body("a b", 2)).await;
    assert_eq!(response.status(), 200);
    let metrics = sim.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vllm:request_success_total{") && l.ends_with(" 1")),
        "{metrics}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn a_request_held_by_an_injected_timeout_is_released_at_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let sim = Sim::start(SimConfig {
        failure: FailureMode::Timeout,
        ..config()
    })
    .await;
    let body = chat_body("a b", 2).to_string();
    let mut socket = tokio::net::TcpStream::connect(sim.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    socket
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let silent = tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await;
    assert!(silent.is_err(), "a hung request sends nothing");
    // `stop` insists the server ends: the hang must not hold it open, and
    // the held request gets an answer rather than a silent close.
    sim.stop().await;
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[tokio::test]
async fn a_failure_rate_fails_every_nth_request() {
    let sim = Sim::start(SimConfig {
        failure: FailureMode::Every(3, 500),
        ..config()
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(sim.chat(&chat_body("a b", 1)).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500]);
    sim.stop().await;
}
