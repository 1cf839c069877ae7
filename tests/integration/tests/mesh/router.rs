#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The inference-router in front of the model simulator (which speaks the
//! OpenAI wire protocol): parameters pass through, streams that break end
//! with an explicit error, and the admission queue waits instead of failing
//! while exporting the pool gauges that scale the GPU pool.

use std::time::Duration;

use futures::StreamExt as _;
use model_sim::{FailureMode, SimConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Setup {
    router: inference_router::Running,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup(sim: SimConfig, tweak: impl FnOnce(&mut inference_router::Config)) -> Setup {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(model_sim::serve(listener, sim, stop.clone()));
    let shared = mesh_integration::mesh::test_shared_config().unwrap();
    let mut config = inference_router::Config::ephemeral(shared, &sim_url).unwrap();
    tweak(&mut config);
    let router = inference_router::start(config, stop.clone()).await.unwrap();
    Setup { router, stop }
}

fn sim(failure: FailureMode, inter_token_ms: u64) -> SimConfig {
    SimConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        inter_token: Duration::from_millis(inter_token_ms),
        failure,
        ..Default::default()
    }
}

fn chat(stream: bool, max_tokens: u32) -> Value {
    json!({
        "model": "sim-model",
        "messages": [{"role": "user", "content": "alpha beta gamma"}],
        "stream": stream,
        "max_tokens": max_tokens,
        "seed": 7,
        "stop": ["never-produced"],
        "user": "someone",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_completions_pass_through_streaming_and_not() {
    let s = setup(sim(FailureMode::None, 0), |_| {}).await;
    let url = format!("http://{}/v1/chat/completions", s.router.http_addr);
    let http = reqwest::Client::new();
    let body: Value = http
        .post(&url)
        .json(&chat(false, 5))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let response = http.post(&url).json(&chat(true, 5)).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(!text.contains("event: error"));

    let models: Value = http
        .get(format!("http://{}/v1/models", s.router.http_addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "sim-model");

    let bad = http
        .post(&url)
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["param"], "model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_breaks_ends_with_an_error_event_not_done() {
    let s = setup(sim(FailureMode::BreakStreamAfter(3), 5), |_| {}).await;
    let url = format!("http://{}/v1/chat/completions", s.router.http_addr);
    let response = reqwest::Client::new()
        .post(&url)
        .json(&chat(true, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the failure comes after the first byte"
    );
    let mut body = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(!text.contains("[DONE]"), "{text}");
    assert!(text.contains("event: error"), "{text}");
    assert!(text.contains("stream_interrupted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_admission_queue_waits_for_a_slot_and_exports_its_depth() {
    let s = setup(sim(FailureMode::None, 50), |c| {
        c.max_concurrency = 1;
        c.max_queue = 4;
    })
    .await;
    let url = format!("http://{}/v1/chat/completions", s.router.http_addr);
    let http = reqwest::Client::new();
    let slow = |n| http.post(&url).json(&chat(false, n)).send();
    let first = tokio::spawn(slow(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(slow(2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = reqwest::get(format!("http://{}/metrics", s.router.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("router_pool_queue_depth{pool=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("router_pool_in_flight{pool=\"default\"} 1"),
        "{metrics}"
    );
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        second.await.unwrap().unwrap().status(),
        200,
        "waited, not failed"
    );

    let s = setup(sim(FailureMode::None, 50), |c| {
        c.max_concurrency = 1;
        c.max_queue = 0;
    })
    .await;
    let url = format!("http://{}/v1/chat/completions", s.router.http_addr);
    let busy = tokio::spawn(http.post(&url).json(&chat(false, 20)).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = http.post(&url).json(&chat(false, 2)).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error");
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gateway_serves_openai_chat_with_auth_in_front_of_the_router() {
    let mesh = mesh_integration::Mesh::start(mesh_integration::MeshOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");
    let body: Value = client
        .post("/v1/chat/completions")
        .json(&chat(false, 3))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");

    let response = client
        .post("/v1/chat/completions")
        .json(&chat(true, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    let models: Value = client
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "sim-model");

    let anonymous = client
        .http
        .post(client.url("/v1/chat/completions"))
        .json(&chat(false, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let viewer = mesh_integration::RestClient::new(
        client.base.clone(),
        mesh.token("acme", &[mesh_auth::Role::Viewer]),
    );
    let denied = viewer
        .post("/v1/chat/completions")
        .json(&chat(false, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let bad = client
        .post("/v1/chat/completions")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.unwrap();
    assert_eq!(error["error"]["field"], "model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_pass_through_with_usage_and_deterministic_vectors() {
    let setup = setup(sim(FailureMode::None, 0), |_| {}).await;
    let url = format!("http://{}/v1/embeddings", setup.router.http_addr);
    let http = reqwest::Client::new();
    let embed = |input: Value| {
        http.post(&url)
            .json(&json!({"model": "sim-model", "input": input, "dimensions": 16}))
            .send()
    };
    let body: Value = embed(json!(["alpha beta", "gamma"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list", "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 3, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let first = data[0]["embedding"].as_array().unwrap();
    assert_eq!(first.len(), 16);
    // The same input gives the same vector; another input another one.
    let again: Value = embed(json!("alpha beta"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"][0]["embedding"].as_array().unwrap(), first);
    assert_ne!(data[1]["embedding"].as_array().unwrap(), first);

    let response = embed(json!([])).await.unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["param"], "input", "{error}");
}
