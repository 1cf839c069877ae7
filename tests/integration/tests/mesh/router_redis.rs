#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The inference-router's Redis-backed features, per-tenant limits and the
//! response cache, held in the real Redis (`REDIS_URL`, else
//! redis://127.0.0.1:6379) and shared by two router instances, over real
//! HTTP to in-process simulators. Each test uses a fresh tenant name, so
//! runs never see each other's buckets or entries.

use std::time::Duration;

use model_sim::SimConfig;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn fresh_tenant() -> String {
    format!("t-{}", uuid::Uuid::new_v4().simple())
}

struct Routers {
    addrs: Vec<inference_router::Running>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Routers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts one simulator and `count` routers reading the same route table
/// (`sections` appended to its pools and routes) and the same Redis.
async fn routers(sections: &str, count: usize, redis: &str) -> Routers {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    let sim = SimConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    };
    tokio::spawn(model_sim::serve(listener, sim, stop.clone()));
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    let yaml = format!(
        "pools:\n  sim: {{backends: [{{url: \"{sim_url}\"}}]}}\nroutes:\n  \"*\": {{pool: sim}}\n{sections}\n"
    );
    std::fs::write(&routes, yaml).unwrap();
    let mut addrs = Vec::new();
    for _ in 0..count {
        let mut shared = mesh_integration::mesh::test_shared_config().unwrap();
        shared.redis_url = Some(redis.to_owned());
        let mut config = inference_router::Config::ephemeral(shared, "http://127.0.0.1:1").unwrap();
        config.routes_file = Some(routes.clone());
        addrs.push(inference_router::start(config, stop.clone()).await.unwrap());
    }
    Routers {
        addrs,
        stop,
        _dir: dir,
    }
}

fn chat(extra: Value) -> Value {
    let mut body = json!({
        "model": "sim-model",
        "messages": [{"role": "user", "content": "alpha beta"}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn post(router: &inference_router::Running, tenant: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/v1/chat/completions", router.http_addr))
        .header("agentmesh-tenant", tenant)
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn metrics(router: &inference_router::Running) -> String {
    reqwest::get(format!("http://{}/metrics", router.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Asserts the tenant limiter's 429: OpenAI's error shape with a code that
/// tells it from a backend's own 429, and a `Retry-After` in seconds.
async fn assert_tenant_limited(response: reqwest::Response, kind: &str) -> u64 {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "tenant_rate_limited", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(kind), "{message}");
    retry_after
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_per_minute_hold_across_two_routers_sharing_redis() {
    let tenant = fresh_tenant();
    let other = fresh_tenant();
    let tenants = format!(
        "tenants:\n  defaults: {{requests_per_minute: 100}}\n  overrides:\n    {tenant}: {{requests_per_minute: 3}}"
    );
    let r = routers(&tenants, 2, &redis_url()).await;
    let (a, b) = (&r.addrs[0], &r.addrs[1]);
    let body = chat(json!({"max_tokens": 2}));
    for router in [a, b, a] {
        let response = post(router, &tenant, &body).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    // The fourth request of the minute is refused by either router.
    let retry_after = assert_tenant_limited(post(b, &tenant, &body).await, "requests").await;
    // One request every 20 s refills at 3/min.
    assert!(retry_after <= 20, "retry-after {retry_after}");
    assert_tenant_limited(post(a, &tenant, &body).await, "requests").await;
    // Another tenant has its own bucket.
    assert_eq!(post(a, &other, &body).await.status(), 200);
    let text = metrics(b).await;
    assert!(
        text.contains(r#"router_ratelimited_total{kind="requests"} 1"#),
        "{text}"
    );
}

/// Reads an SSE answer to its end; returns the text.
async fn read_stream(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_budgets_reserve_an_estimate_and_refund_the_real_usage() {
    let tenant = fresh_tenant();
    // A request without max_tokens reserves 80 + about 20 prompt tokens
    // (one per four body bytes); the simulator really uses 2 prompt + 16
    // completion tokens (a stream without a usage chunk is counted as the
    // prompt estimate + 16 deltas, about 40). Without the refunds, the
    // second request would not fit in 200.
    let tenants = format!(
        "tenants:\n  default_max_tokens: 80\n  overrides:\n    {tenant}: {{tokens_per_minute: 200}}"
    );
    let r = routers(&tenants, 2, &redis_url()).await;
    let (a, b) = (&r.addrs[0], &r.addrs[1]);
    let settle = || tokio::time::sleep(Duration::from_millis(300));

    let response = post(a, &tenant, &chat(json!({}))).await;
    assert_eq!(response.status(), 200);
    settle().await;
    // Streamed with a usage chunk: settled at the end of the stream.
    let streamed = chat(json!({"stream": true, "stream_options": {"include_usage": true}}));
    read_stream(post(b, &tenant, &streamed).await).await;
    settle().await;
    // Streamed without usage: settled from the counted deltas.
    read_stream(post(a, &tenant, &chat(json!({"stream": true}))).await).await;
    settle().await;
    let response = post(b, &tenant, &chat(json!({}))).await;
    assert_eq!(response.status(), 200);
    settle().await;
    // The budget still bites: a large reservation (140 + prompt) does not
    // fit what is left (about 95 used), on either router.
    let big = chat(json!({"max_tokens": 140}));
    assert_tenant_limited(post(a, &tenant, &big).await, "tokens").await;
    assert_tenant_limited(post(b, &tenant, &big).await, "tokens").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_are_limited_with_resource_exhausted_and_retry_after() {
    use mesh_proto::inference_service_client::InferenceServiceClient;
    let tenant = fresh_tenant();
    let tenants = format!("tenants:\n  overrides:\n    {tenant}: {{requests_per_minute: 1}}");
    let r = routers(&tenants, 1, &redis_url()).await;
    let mut client = InferenceServiceClient::connect(format!("http://{}", r.addrs[0].grpc_addr))
        .await
        .unwrap();
    let request = || {
        let mut request = tonic::Request::new(mesh_proto::ChatRequest {
            model: "sim-model".into(),
            messages: vec![mesh_proto::ChatMessage {
                role: "user".into(),
                content: "alpha".into(),
                ..Default::default()
            }],
            max_tokens: Some(2),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("agentmesh-tenant", tenant.parse().unwrap());
        request.metadata_mut().insert(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token().parse().unwrap(),
        );
        request
    };
    let mut stream = client.chat_stream(request()).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let status = client.chat_stream(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    let retry_after: u64 = status
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "retry-after {retry_after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_fail_open_with_a_metric_when_redis_is_unreachable() {
    // Port 1: nothing listens, the connection is refused at once.
    let tenant = fresh_tenant();
    let r = routers(
        "tenants:\n  defaults: {requests_per_minute: 1}",
        1,
        "redis://127.0.0.1:1",
    )
    .await;
    for _ in 0..3 {
        let response = post(&r.addrs[0], &tenant, &chat(json!({"max_tokens": 1}))).await;
        assert_eq!(response.status(), 200);
    }
    let text = metrics(&r.addrs[0]).await;
    assert!(text.contains("router_ratelimit_errors_total 3"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_tenant_header_is_a_400_naming_the_header() {
    let r = routers("tenants:\n  defaults: {}", 1, &redis_url()).await;
    let response = post(&r.addrs[0], "a.b", &chat(json!({}))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("agentmesh-tenant"),
        "{body}"
    );
}

/// Waits for the response cache's background store to land.
async fn stored() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

fn cache_header(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get("x-agentmesh-cache")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deterministic_answers_are_cached_per_tenant_across_routers() {
    let tenant = fresh_tenant();
    let other = fresh_tenant();
    let r = routers("cache: {ttl_seconds: 60}", 2, &redis_url()).await;
    let (a, b) = (&r.addrs[0], &r.addrs[1]);
    let greedy = chat(json!({"temperature": 0, "max_tokens": 3}));

    let first = post(a, &tenant, &greedy).await;
    assert_eq!(cache_header(&first).as_deref(), Some("miss"));
    let first: Value = first.json().await.unwrap();
    stored().await;
    // The other router finds the same entry: the very same answer, id included.
    let second = post(b, &tenant, &greedy).await;
    assert_eq!(cache_header(&second).as_deref(), Some("hit"));
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first["usage"]["completion_tokens"], 3);
    // Keys are per tenant.
    let elsewhere = post(b, &other, &greedy).await;
    assert_eq!(cache_header(&elsewhere).as_deref(), Some("miss"));
    // A seed makes a request deterministic too, whatever its temperature.
    let seeded = chat(json!({"temperature": 0.9, "seed": 11, "max_tokens": 2}));
    assert_eq!(
        cache_header(&post(a, &tenant, &seeded).await).as_deref(),
        Some("miss")
    );
    stored().await;
    assert_eq!(
        cache_header(&post(a, &tenant, &seeded).await).as_deref(),
        Some("hit")
    );
    // Sampled requests are never cached.
    let sampled = chat(json!({"temperature": 0.7, "max_tokens": 2}));
    for _ in 0..2 {
        let response = post(a, &tenant, &sampled).await;
        assert_eq!(response.status(), 200);
        assert_eq!(cache_header(&response), None);
        stored().await;
    }
    let text = metrics(b).await;
    assert!(
        text.contains(r#"router_cache_total{result="hit"} 1"#),
        "{text}"
    );
    let text = metrics(a).await;
    assert!(
        text.contains(r#"router_cache_total{result="hit"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"router_cache_total{result="store"} 2"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_stream_is_replayed_as_the_same_stream_ending_with_done() {
    let tenant = fresh_tenant();
    let r = routers("cache: {ttl_seconds: 60}", 2, &redis_url()).await;
    let (a, b) = (&r.addrs[0], &r.addrs[1]);
    let streamed = chat(json!({
        "temperature": 0,
        "max_tokens": 4,
        "stream": true,
        "stream_options": {"include_usage": true},
    }));
    let first = post(a, &tenant, &streamed).await;
    assert_eq!(cache_header(&first).as_deref(), Some("miss"));
    let original = read_stream(first).await;
    assert!(original.contains("\"usage\""), "{original}");
    stored().await;
    let again = post(b, &tenant, &streamed).await;
    assert_eq!(cache_header(&again).as_deref(), Some("hit"));
    assert_eq!(again.headers()["content-type"], "text/event-stream");
    let replayed = read_stream(again).await;
    assert_eq!(replayed, original);
    // The non-streamed form of the same request is its own entry.
    let whole = chat(json!({"temperature": 0, "max_tokens": 4}));
    assert_eq!(
        cache_header(&post(b, &tenant, &whole).await).as_deref(),
        Some("miss")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_fails_open_when_redis_is_unreachable() {
    let tenant = fresh_tenant();
    let r = routers("cache: {ttl_seconds: 60}", 1, "redis://127.0.0.1:1").await;
    let greedy = chat(json!({"temperature": 0, "max_tokens": 1}));
    for _ in 0..2 {
        let response = post(&r.addrs[0], &tenant, &greedy).await;
        assert_eq!(response.status(), 200);
        assert_ne!(cache_header(&response).as_deref(), Some("hit"));
    }
    stored().await;
    let text = metrics(&r.addrs[0]).await;
    assert!(
        text.contains(r#"router_cache_total{result="error"} 4"#),
        "{text}"
    );
}

/// The value of the sample `name{labels}` in a Prometheus text page.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_and_cost_are_counted_per_tenant_and_model() {
    let tenant = fresh_tenant();
    // One USD per prompt token and two per completion token: easy sums.
    let prices = "prices:\n  sim-model: {input_per_1m: 1000000, output_per_1m: 2000000}";
    let r = routers(prices, 1, &redis_url()).await;
    let router = &r.addrs[0];
    // 2 prompt + 3 completion tokens.
    let response = post(router, &tenant, &chat(json!({"max_tokens": 3}))).await;
    assert_eq!(response.status(), 200);
    // Streamed, usage from its usage chunk: 2 + 4.
    let streamed = chat(json!({
        "max_tokens": 4,
        "stream": true,
        "stream_options": {"include_usage": true},
    }));
    read_stream(post(router, &tenant, &streamed).await).await;
    // Embeddings: 3 prompt tokens.
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/embeddings", router.http_addr))
        .header("agentmesh-tenant", &tenant)
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .json(&json!({"model": "sim-model", "input": "a b c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = metrics(router).await;
    let series = |kind: &str| {
        format!(r#"router_tokens_total{{tenant="{tenant}",model="sim-model",kind="{kind}"}}"#)
    };
    assert_eq!(sample(&text, &series("prompt")), 7.0);
    assert_eq!(sample(&text, &series("completion")), 7.0);
    let cost = sample(
        &text,
        &format!(r#"router_cost_usd_total{{tenant="{tenant}",model="sim-model"}}"#),
    );
    assert!((cost - 21.0).abs() < 1e-6, "cost {cost}");
}

/// Polls the router's metrics until it has stored `count` cache entries.
async fn wait_for_stores(router: &inference_router::Running, count: u64) {
    let series = r#"router_cache_total{result="store"} "#;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(router).await;
        let stores = text
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<u64>().ok());
        if stores == Some(count) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never stored {count}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deterministic_grpc_stream_is_cached_and_replayed_as_a_stream() {
    use mesh_proto::inference_service_client::InferenceServiceClient;
    let tenant = fresh_tenant();
    let r = routers("cache: {ttl_seconds: 60}", 2, &redis_url()).await;
    let (a, b) = (&r.addrs[0], &r.addrs[1]);
    let call = |router: &inference_router::Running, temperature: f32| {
        let url = format!("http://{}", router.grpc_addr);
        let tenant = tenant.clone();
        async move {
            let mut client = InferenceServiceClient::connect(url).await.unwrap();
            let mut request = tonic::Request::new(mesh_proto::ChatRequest {
                model: "sim-model".into(),
                messages: vec![mesh_proto::ChatMessage {
                    role: "user".into(),
                    content: "alpha beta".into(),
                    ..Default::default()
                }],
                temperature: Some(temperature),
                max_tokens: Some(4),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("agentmesh-tenant", tenant.parse().unwrap());
            request.metadata_mut().insert(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token().parse().unwrap(),
            );
            let response = client.chat_stream(request).await.unwrap();
            let cache = response
                .metadata()
                .get("x-agentmesh-cache")
                .map(|v| v.to_str().unwrap().to_owned());
            let mut stream = response.into_inner();
            let mut chunks = Vec::new();
            while let Some(chunk) = stream.message().await.unwrap() {
                chunks.push(chunk);
            }
            (cache, chunks)
        }
    };
    let (cache, original) = call(a, 0.0).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    let text: String = original.iter().map(|c| c.delta.as_str()).collect();
    assert!(!text.is_empty());
    assert!(original.iter().any(|c| c.usage.is_some()));
    wait_for_stores(a, 1).await;
    let (cache, replayed) = call(b, 0.0).await;
    assert_eq!(cache.as_deref(), Some("hit"), "the other router finds it");
    assert_eq!(replayed, original, "the same chunks, usage included");
    // The same request over HTTP (the same OpenAI body) shares the entry.
    let streamed = chat(json!({
        "temperature": 0.0,
        "max_tokens": 4,
        "stream": true,
        "stream_options": {"include_usage": true},
    }));
    let http = post(b, &tenant, &streamed).await;
    assert_eq!(cache_header(&http).as_deref(), Some("hit"));
    // Sampling requests are never cached.
    let (cache, _) = call(a, 0.7).await;
    assert_eq!(cache, None);
}
