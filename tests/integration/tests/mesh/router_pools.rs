#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The inference-router's route table over real HTTP to several in-process
//! model simulators: strategies, fallback, ejection, the TTFT deadline,
//! session affinity, weighted splits and reloading the routes file. Which
//! backend served a request is read from each simulator's own
//! `vllm:request_success_total`, as every simulator serves the same model.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use model_sim::{FailureMode, SimConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Harness {
    router: inference_router::Running,
    routes: PathBuf,
    stop: CancellationToken,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn sim_config(ttft_ms: u64, failure: FailureMode) -> SimConfig {
    SimConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ttft: Duration::from_millis(ttft_ms),
        failure,
        ..Default::default()
    }
}

/// Starts a simulator; returns its base URL.
async fn sim(config: SimConfig, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(model_sim::serve(listener, config, stop.clone()));
    url
}

fn router_config(routes: &std::path::Path) -> inference_router::Config {
    let shared = mesh_integration::mesh::test_shared_config().unwrap();
    let mut config = inference_router::Config::ephemeral(shared, "http://127.0.0.1:1").unwrap();
    config.routes_file = Some(routes.to_owned());
    config.reload_interval = Duration::from_millis(100);
    config
}

async fn start(yaml: &str, stop: CancellationToken) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, yaml).unwrap();
    let router = inference_router::start(router_config(&routes), stop.clone())
        .await
        .unwrap();
    Harness {
        router,
        routes,
        stop,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

fn chat(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "alpha beta"}],
        "max_tokens": 2,
    })
}

impl Harness {
    async fn post(&self, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!(
                "http://{}/v1/chat/completions",
                self.router.http_addr
            ))
            .json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Sends a chat request and insists on a 200.
    async fn ok(&self, body: &Value, headers: &[(&str, &str)]) -> Value {
        let response = self.post(body, headers).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn metrics(&self) -> String {
        get_text(&format!("http://{}/metrics", self.router.admin_addr)).await
    }
}

async fn get_text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// Requests the simulator at `url` completed.
async fn successes(url: &str) -> u64 {
    let text = get_text(&format!("{url}/metrics")).await;
    text.lines()
        .filter(|l| l.starts_with("vllm:request_success_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

async fn all_successes(urls: &[String]) -> Vec<u64> {
    let mut out = Vec::new();
    for url in urls {
        out.push(successes(url).await);
    }
    out
}

/// The value of the series `name` whose labels include every `labels` pair.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn backends_yaml(urls: &[String]) -> String {
    urls.iter()
        .map(|u| format!("{{url: \"{u}\"}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_spreads_requests_evenly_over_three_backends() {
    let stop = CancellationToken::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(sim(sim_config(0, FailureMode::None), &stop).await);
    }
    let yaml = format!(
        "pools:\n  rr:\n    strategy: round_robin\n    backends: [{}]\nroutes:\n  \"*\": {{pool: rr}}\n",
        backends_yaml(&urls)
    );
    let h = start(&yaml, stop).await;
    for _ in 0..30 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert_eq!(all_successes(&urls).await, vec![10, 10, 10]);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "router_pool_in_flight", &[("pool", "rr")]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "router_pool_queue_depth", &[("pool", "rr")]),
        Some(0.0)
    );
    for url in &urls {
        assert_eq!(
            metric(
                &metrics,
                "router_backend_requests_total",
                &[("backend", url), ("outcome", "ok")]
            ),
            Some(10.0),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn least_outstanding_avoids_a_busy_slow_backend() {
    let stop = CancellationToken::new();
    let slow = sim(sim_config(1_500, FailureMode::None), &stop).await;
    let fast = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        "pools:\n  p:\n    strategy: least_outstanding\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(&[slow.clone(), fast.clone()])
    );
    let h = std::sync::Arc::new(start(&yaml, stop).await);
    // The first request ties and takes the slow backend for 1.5 s.
    let first = tokio::spawn({
        let h = h.clone();
        async move { h.ok(&chat("sim-model"), &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for _ in 0..10 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "none waited on the slow backend"
    );
    first.await.unwrap();
    assert_eq!(successes(&slow).await, 1);
    assert_eq!(successes(&fast).await, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ewma_ttft_learns_which_backend_is_fast() {
    let stop = CancellationToken::new();
    let slow = sim(sim_config(200, FailureMode::None), &stop).await;
    let fast = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        "pools:\n  p:\n    strategy: ewma_ttft\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(&[slow.clone(), fast.clone()])
    );
    let h = start(&yaml, stop).await;
    // Each unmeasured backend is tried once; then the fast one wins.
    for _ in 0..10 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert_eq!(successes(&slow).await, 1);
    assert_eq!(successes(&fast).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_aware_reads_the_backends_queues_from_their_metrics() {
    let stop = CancellationToken::new();
    let busy = sim(
        SimConfig {
            max_concurrency: 1,
            ..sim_config(3_000, FailureMode::None)
        },
        &stop,
    )
    .await;
    let idle = sim(sim_config(0, FailureMode::None), &stop).await;
    // Load the busy one behind the router's back: 1 running, 2 waiting.
    let direct = reqwest::Client::new();
    let mut loaders = Vec::new();
    for _ in 0..3 {
        let request = direct
            .post(format!("{busy}/v1/chat/completions"))
            .json(&chat("sim-model"))
            .send();
        loaders.push(tokio::spawn(request));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !get_text(&format!("{busy}/metrics"))
        .await
        .contains("vllm:num_requests_waiting{model_name=\"sim-model\"} 2")
    {
        assert!(Instant::now() < deadline, "the busy simulator never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let yaml = format!(
        "pools:\n  p:\n    strategy: queue_aware\n    scrape_interval_ms: 50\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(&[busy.clone(), idle.clone()])
    );
    let h = start(&yaml, stop).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a few scrapes
    let started = Instant::now();
    for _ in 0..5 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert!(started.elapsed() < Duration::from_secs(2), "none queued");
    assert_eq!(successes(&idle).await, 5);
    for loader in loaders {
        loader.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_pool_falls_back_to_the_next_pool_and_to_another_model() {
    let stop = CancellationToken::new();
    let broken = sim(sim_config(0, FailureMode::Always(503)), &stop).await;
    let good = sim(sim_config(0, FailureMode::None), &stop).await;
    let small = sim(
        SimConfig {
            model: "small".to_owned(),
            ..sim_config(0, FailureMode::None)
        },
        &stop,
    )
    .await;
    let yaml = format!(
        r#"
retry: {{max_attempts: 3, backoff_base_ms: 5, backoff_max_ms: 20}}
pools:
  primary: {{backends: [{{url: "{broken}"}}], ejection: {{consecutive_failures: 0}}}}
  secondary: {{backends: [{{url: "{good}"}}]}}
  small: {{backends: [{{url: "{small}"}}]}}
routes:
  sim-model: {{pool: primary, fallback: [{{pool: secondary}}]}}
  big: {{pool: primary, fallback: [{{model: small}}]}}
  small: {{pool: small}}
"#
    );
    let h = start(&yaml, stop).await;
    let body = h.ok(&chat("sim-model"), &[]).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(successes(&good).await, 1);

    let body = h.ok(&chat("big"), &[]).await;
    assert_eq!(body["model"], "small", "the fallback model answered");
    assert_eq!(successes(&small).await, 1);

    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &broken), ("outcome", "server_error")]
        ),
        Some(2.0),
        "{metrics}"
    );

    // With no fallback left, the backend's own error reaches the client.
    let yaml = format!(
        "pools:\n  primary: {{backends: [{{url: \"{broken}\"}}]}}\nroutes:\n  \"*\": {{pool: primary}}\n"
    );
    std::fs::write(&h.routes, yaml).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let response = h.post(&chat("sim-model"), &[]).await;
        if response.status() == 503 {
            let error: Value = response.json().await.unwrap();
            assert!(error["error"]["message"].is_string(), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_backend_is_ejected_then_probed_after_its_cooldown() {
    let stop = CancellationToken::new();
    let bad = sim(sim_config(0, FailureMode::Always(500)), &stop).await;
    let good = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        r#"
retry: {{max_attempts: 3, backoff_base_ms: 1, backoff_max_ms: 5}}
pools:
  p:
    strategy: round_robin
    backends: [{{url: "{bad}"}}, {{url: "{good}"}}]
    ejection: {{consecutive_failures: 2, cooldown_ms: 700}}
routes:
  "*": {{pool: p}}
"#
    );
    let h = start(&yaml, stop).await;
    let failures = |metrics: &str| {
        metric(
            metrics,
            "router_backend_requests_total",
            &[("backend", &bad), ("outcome", "server_error")],
        )
    };
    for _ in 0..20 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    let metrics = h.metrics().await;
    assert_eq!(
        failures(&metrics),
        Some(2.0),
        "ejected after two: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "router_backend_ejected", &[("backend", &bad)]),
        Some(1.0)
    );
    assert_eq!(successes(&good).await, 20);

    tokio::time::sleep(Duration::from_millis(900)).await;
    for _ in 0..10 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    let metrics = h.metrics().await;
    assert_eq!(
        failures(&metrics),
        Some(3.0),
        "one half-open probe after the cooldown, then ejected again: {metrics}"
    );
    assert_eq!(
        metric(&metrics, "router_backend_ejected", &[("backend", &bad)]),
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "router_backend_ejected", &[("backend", &good)]),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missed_ttft_deadline_fails_over_to_a_fast_backend() {
    let stop = CancellationToken::new();
    let slow = sim(sim_config(3_000, FailureMode::None), &stop).await;
    let fast = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        r#"
retry: {{max_attempts: 2, backoff_base_ms: 1, backoff_max_ms: 5}}
pools:
  p:
    strategy: round_robin
    backends: [{{url: "{slow}"}}, {{url: "{fast}"}}]
    limits: {{ttft_deadline_ms: 300}}
    ejection: {{consecutive_failures: 0}}
routes:
  "*": {{pool: p}}
"#
    );
    let h = start(&yaml, stop).await;
    for _ in 0..4 {
        let started = Instant::now();
        h.ok(&chat("sim-model"), &[]).await;
        assert!(started.elapsed() < Duration::from_millis(1_500));
    }
    assert_eq!(successes(&fast).await, 4);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &slow), ("outcome", "timeout")]
        ),
        Some(2.0),
        "round robin sent every other request to the slow one: {metrics}"
    );

    // A stream whose head came but whose first chunk did not is still
    // before the first byte to the client: it fails over too.
    let mut body = chat("sim-model");
    body["stream"] = json!(true);
    for _ in 0..2 {
        let started = Instant::now();
        let response = h.post(&body, &[]).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(!text.contains("event: error"), "{text}");
        assert!(started.elapsed() < Duration::from_millis(1_500));
    }
    assert_eq!(successes(&fast).await, 6);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &slow), ("outcome", "timeout")]
        ),
        Some(3.0),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_stays_on_one_backend() {
    let stop = CancellationToken::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(sim(sim_config(0, FailureMode::None), &stop).await);
    }
    let yaml = format!(
        "pools:\n  p:\n    strategy: round_robin\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(&urls)
    );
    let h = start(&yaml, stop).await;
    let mut used = std::collections::HashSet::new();
    for session in 0..12 {
        let session = format!("session-{session}");
        let before = all_successes(&urls).await;
        for _ in 0..4 {
            h.ok(&chat("sim-model"), &[("x-session-id", &session)])
                .await;
        }
        let after = all_successes(&urls).await;
        let grew: Vec<usize> = (0..3).filter(|i| after[*i] != before[*i]).collect();
        assert_eq!(grew.len(), 1, "{session} moved: {before:?} -> {after:?}");
        assert_eq!(after[grew[0]] - before[grew[0]], 4);
        used.insert(grew[0]);
    }
    assert!(used.len() > 1, "sessions spread over the backends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_spills_over_while_its_backend_is_at_its_cap() {
    let stop = CancellationToken::new();
    let urls = vec![
        sim(sim_config(600, FailureMode::None), &stop).await,
        sim(sim_config(600, FailureMode::None), &stop).await,
    ];
    let yaml = format!(
        "pools:\n  p:\n    backends: [{}]\n    limits: {{max_concurrent: 1}}\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(&urls)
    );
    let h = std::sync::Arc::new(start(&yaml, stop).await);
    let session = [("x-session-id", "sticky")];
    h.ok(&chat("sim-model"), &session).await;
    let preferred = all_successes(&urls).await;
    let first = tokio::spawn({
        let h = h.clone();
        async move {
            h.ok(&chat("sim-model"), &[("x-session-id", "sticky")])
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    h.ok(&chat("sim-model"), &session).await;
    first.await.unwrap();
    let after = all_successes(&urls).await;
    let home = usize::from(preferred[1] == 1);
    assert_eq!(after[home], 2, "the session's backend: {after:?}");
    assert_eq!(after[1 - home], 1, "the spill-over: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_weighted_split_sends_about_80_percent_to_the_main_pool() {
    let stop = CancellationToken::new();
    let main = sim(sim_config(0, FailureMode::None), &stop).await;
    let canary = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        r#"
pools:
  main: {{backends: [{{url: "{main}"}}]}}
  canary: {{backends: [{{url: "{canary}"}}]}}
routes:
  sim-model:
    split: [{{pool: main, weight: 80}}, {{pool: canary, weight: 20}}]
"#
    );
    let h = start(&yaml, stop).await;
    let body = chat("sim-model");
    let requests = (0..200).map(|_| h.ok(&body, &[]));
    futures::future::join_all(requests).await;
    let (m, c) = (successes(&main).await, successes(&canary).await);
    assert_eq!(m + c, 200);
    // 160 expected; the standard deviation is about 5.7.
    assert!((140..=180).contains(&m), "main {m}, canary {c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_moves_traffic_and_a_broken_file_keeps_the_old_table() {
    let stop = CancellationToken::new();
    let a = sim(sim_config(0, FailureMode::None), &stop).await;
    let b = sim(sim_config(0, FailureMode::None), &stop).await;
    let table = |target: &str| {
        format!(
            "pools:\n  a: {{backends: [{{url: \"{a}\"}}]}}\n  b: {{backends: [{{url: \"{b}\"}}]}}\nroutes:\n  sim-model: {{pool: {target}}}\n  alias: {{pool: b}}\n"
        )
    };
    let h = start(&table("a"), stop).await;
    for _ in 0..3 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert_eq!((successes(&a).await, successes(&b).await), (3, 0));

    // `x-model-id` routes over the body's model; `/v1/models` lists routes.
    h.ok(&chat("sim-model"), &[("x-model-id", "alias")]).await;
    assert_eq!(successes(&b).await, 1);
    let models: Value =
        serde_json::from_str(&get_text(&format!("http://{}/v1/models", h.router.http_addr)).await)
            .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["alias", "sim-model"]);
    let unknown = h.post(&chat("nope"), &[]).await;
    assert_eq!(unknown.status(), 404);

    std::fs::write(&h.routes, table("b")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = successes(&b).await;
        h.ok(&chat("sim-model"), &[]).await;
        if successes(&b).await > before {
            break;
        }
        assert!(Instant::now() < deadline, "traffic never moved to b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    std::fs::write(
        &h.routes,
        format!(
            "pools:\n  b: {{backends: [{{url: \"ftp://{b}\"}}]}}\nroutes:\n  \"*\": {{pool: b}}\n"
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = h.metrics().await;
        if metric(
            &metrics,
            "router_route_reloads_total",
            &[("result", "error")],
        ) == Some(1.0)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the broken file was never reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = (successes(&a).await, successes(&b).await);
    for _ in 0..3 {
        h.ok(&chat("sim-model"), &[]).await;
    }
    assert_eq!(
        (successes(&a).await, successes(&b).await),
        (before.0, before.1 + 3),
        "the previous table keeps serving"
    );
    assert_eq!(
        h.post(&chat("nope"), &[]).await.status(),
        404,
        "the broken file's catch-all never took effect"
    );
}

#[tokio::test]
async fn a_broken_routes_file_at_startup_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "pools:\n  gpu:\n    backends: [{url: \"http://a\"}, {url: \"grpc://b\"}]\nroutes:\n  \"*\": {pool: gpu}\n",
    )
    .unwrap();
    let stop = CancellationToken::new();
    let error = inference_router::start(router_config(&routes), stop.clone())
        .await
        .unwrap_err();
    stop.cancel();
    let message = format!("{error:#}");
    assert!(message.contains("pools.gpu.backends[1].url"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_calls_route_by_the_model_metadata_and_fall_back() {
    use mesh_proto::inference_service_client::InferenceServiceClient;
    let stop = CancellationToken::new();
    let broken = sim(sim_config(0, FailureMode::Always(503)), &stop).await;
    let good = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        r#"
pools:
  broken: {{backends: [{{url: "{broken}"}}], ejection: {{consecutive_failures: 0}}}}
  good: {{backends: [{{url: "{good}"}}]}}
routes:
  alias: {{pool: broken, fallback: [{{pool: good}}]}}
  "*": {{pool: broken}}
"#
    );
    let h = start(&yaml, stop).await;
    let mut client = InferenceServiceClient::connect(format!("http://{}", h.router.grpc_addr))
        .await
        .unwrap();
    let request = |model_header: Option<&str>| {
        let mut request = tonic::Request::new(mesh_proto::ChatRequest {
            model: "sim-model".into(),
            messages: vec![mesh_proto::ChatMessage {
                role: "user".into(),
                content: "alpha".into(),
                ..Default::default()
            }],
            max_tokens: Some(3),
            ..Default::default()
        });
        let metadata = request.metadata_mut();
        metadata.insert("agentmesh-tenant", "acme".parse().unwrap());
        metadata.insert(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token().parse().unwrap(),
        );
        metadata.insert("x-session-id", "s-1".parse().unwrap());
        if let Some(model) = model_header {
            metadata.insert("x-model-id", model.parse().unwrap());
        }
        request
    };
    let mut stream = client
        .chat_stream(request(Some("alias")))
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.message().await.unwrap() {
        text.push_str(&chunk.delta);
        usage = chunk.usage.or(usage);
    }
    assert!(!text.is_empty());
    assert_eq!(usage.unwrap().completion_tokens, 3);
    assert_eq!(successes(&good).await, 1);

    let status = client.chat_stream(request(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
}

/// A gRPC chat request for `model` with one user turn.
fn grpc_chat(model: &str, text: &str) -> mesh_proto::ChatRequest {
    mesh_proto::ChatRequest {
        model: model.into(),
        messages: vec![mesh_proto::ChatMessage {
            role: "user".into(),
            content: text.into(),
            ..Default::default()
        }],
        max_tokens: Some(2),
        ..Default::default()
    }
}

async fn grpc_client(
    h: &Harness,
) -> mesh_proto::inference_service_client::InferenceServiceClient<tonic::transport::Channel> {
    mesh_proto::inference_service_client::InferenceServiceClient::connect(format!(
        "http://{}",
        h.router.grpc_addr
    ))
    .await
    .unwrap()
}

/// Every chunk of a gRPC chat stream, insisting that it ends cleanly.
async fn grpc_chunks(
    client: &mut mesh_proto::inference_service_client::InferenceServiceClient<
        tonic::transport::Channel,
    >,
    request: mesh_proto::ChatRequest,
) -> Vec<mesh_proto::ChatChunk> {
    let mut request = tonic::Request::new(request);
    request
        .metadata_mut()
        .insert("agentmesh-tenant", "acme".parse().unwrap());
    request.metadata_mut().insert(
        "agentmesh-service-token",
        mesh_integration::mesh::service_token().parse().unwrap(),
    );
    let mut stream = client.chat_stream(request).await.unwrap().into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        chunks.push(chunk);
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_tool_calls_round_trip_through_the_router() {
    let stop = CancellationToken::new();
    let url = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        "pools:\n  p:\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(std::slice::from_ref(&url))
    );
    let h = start(&yaml, stop).await;
    let mut client = grpc_client(&h).await;
    let weather = mesh_proto::ToolDefinition {
        name: "weather".into(),
        description: "current weather in a city".into(),
        parameters_json: r#"{"type":"object","properties":{"input":{"type":"string"}}}"#.into(),
    };
    // The simulator answers a forced tool_choice with a call whose
    // arguments are the last user message.
    let forced = mesh_proto::ChatRequest {
        tools: vec![weather.clone()],
        tool_choice_json: r#"{"type":"function","function":{"name":"weather"}}"#.into(),
        ..grpc_chat("sim-model", "rain in Paris")
    };
    let chunks = grpc_chunks(&mut client, forced.clone()).await;
    let calls: Vec<&mesh_proto::ToolCallDelta> =
        chunks.iter().flat_map(|c| c.tool_calls.iter()).collect();
    assert!(!calls.is_empty(), "{chunks:?}");
    assert!(calls.iter().all(|c| c.index == 0));
    let id = calls.iter().find(|c| !c.id.is_empty()).unwrap().id.clone();
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(
        calls.iter().map(|c| c.name.as_str()).collect::<String>(),
        "weather"
    );
    let arguments: String = calls.iter().map(|c| c.arguments.as_str()).collect();
    let arguments: Value = serde_json::from_str(&arguments).unwrap();
    assert_eq!(arguments, json!({"input": "rain in Paris"}));
    assert!(chunks.iter().any(|c| c.finish_reason == "tool_calls"));
    assert!(
        chunks.iter().all(|c| c.delta.is_empty()),
        "no text beside the call"
    );
    assert!(chunks.iter().any(|c| c.usage.is_some()));

    // The next turn carries the call and its result back; the model answers
    // in text (no forced choice now).
    let mut next = grpc_chat("sim-model", "rain in Paris");
    next.tools = vec![weather];
    next.tool_choice_json = "\"auto\"".into();
    next.messages.push(mesh_proto::ChatMessage {
        role: "assistant".into(),
        tool_calls: vec![mesh_proto::ToolCall {
            id: id.clone(),
            name: "weather".into(),
            arguments: r#"{"input":"rain in Paris"}"#.into(),
        }],
        ..Default::default()
    });
    next.messages.push(mesh_proto::ChatMessage {
        role: "tool".into(),
        content: "light rain".into(),
        tool_call_id: id,
        ..Default::default()
    });
    let chunks = grpc_chunks(&mut client, next).await;
    let text: String = chunks.iter().map(|c| c.delta.as_str()).collect();
    assert!(!text.is_empty(), "{chunks:?}");
    assert!(chunks.iter().all(|c| c.tool_calls.is_empty()));

    // Bad JSON in a tool's schema is the caller's error, naming the field,
    // and never reaches a backend.
    let before = successes(&url).await;
    let mut bad = forced;
    bad.tools.push(mesh_proto::ToolDefinition {
        name: "broken".into(),
        parameters_json: "{not json".into(),
        ..Default::default()
    });
    let mut request = tonic::Request::new(bad);
    request
        .metadata_mut()
        .insert("agentmesh-tenant", "acme".parse().unwrap());
    request.metadata_mut().insert(
        "agentmesh-service-token",
        mesh_integration::mesh::service_token().parse().unwrap(),
    );
    let status = client.chat_stream(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("tools[1].parameters_json"),
        "{status}"
    );
    assert_eq!(successes(&url).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_session_id_pins_a_session_to_one_backend() {
    let stop = CancellationToken::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        urls.push(sim(sim_config(0, FailureMode::None), &stop).await);
    }
    let yaml = format!(
        "pools:\n  rr:\n    strategy: round_robin\n    backends: [{}]\nroutes:\n  \"*\": {{pool: rr}}\n",
        backends_yaml(&urls)
    );
    let h = start(&yaml, stop).await;
    let mut client = grpc_client(&h).await;
    for _ in 0..6 {
        let request = mesh_proto::ChatRequest {
            session_id: "session-42".into(),
            user: "end-user-1".into(),
            ..grpc_chat("sim-model", "alpha beta")
        };
        grpc_chunks(&mut client, request).await;
    }
    let mut counts = all_successes(&urls).await;
    counts.sort_unstable();
    assert_eq!(counts, vec![0, 0, 6], "round robin would spread them");
    // Without a session the pool's strategy spreads them again.
    for _ in 0..3 {
        grpc_chunks(&mut client, grpc_chat("sim-model", "alpha beta")).await;
    }
    let counts = all_successes(&urls).await;
    assert_eq!(counts.iter().sum::<u64>(), 9);
    assert!(counts.iter().filter(|n| **n > 0).count() >= 2, "{counts:?}");
}

/// Polls the router's metrics until `name{labels}` has `value`; gives up
/// after twenty seconds.
async fn wait_for_metric(h: &Harness, name: &str, labels: &[(&str, &str)], value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = h.metrics().await;
        if metric(&text, name, labels) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} never reached {value}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_scaled_to_zero_queues_requests_until_a_backend_comes_up() {
    let stop = CancellationToken::new();
    // A port where nothing listens yet: the pool's only backend is scaled
    // to zero (a Service without endpoints refuses connections).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let yaml = format!(
        r#"
pools:
  gpu:
    backends: [{{url: "{url}"}}]
    health: {{interval_ms: 50}}
    limits: {{queue_timeout_ms: 60000}}
routes:
  "*": {{pool: gpu}}
"#
    );
    let h = std::sync::Arc::new(start(&yaml, stop.clone()).await);
    let waiting = tokio::spawn({
        let h = h.clone();
        async move { h.ok(&chat("sim-model"), &[]).await }
    });
    // The request waits in the pool's queue, where the autoscaler sees it,
    // rather than failing with a 503.
    wait_for_metric(&h, "router_pool_queue_depth", &[("pool", "gpu")], 1.0).await;
    wait_for_metric(&h, "router_backend_ready", &[("backend", &url)], 0.0).await;
    assert!(!waiting.is_finished());
    // The backend comes up on that port; the probe sees it ready and the
    // queued request is served.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(model_sim::serve(
        listener,
        sim_config(0, FailureMode::None),
        stop.clone(),
    ));
    let body = waiting.await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(successes(&url).await, 1);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "router_pool_queue_depth", &[("pool", "gpu")]),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "router_backend_ready", &[("backend", &url)]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_loading_backend_holds_requests_until_its_health_passes() {
    let stop = CancellationToken::new();
    let url = sim(
        SimConfig {
            startup_delay: Duration::from_millis(2_500),
            ..sim_config(0, FailureMode::None)
        },
        &stop,
    )
    .await;
    let yaml = format!(
        "pools:\n  gpu:\n    backends: [{}]\n    health: {{interval_ms: 50}}\nroutes:\n  \"*\": {{pool: gpu}}\n",
        backends_yaml(std::slice::from_ref(&url))
    );
    let h = std::sync::Arc::new(start(&yaml, stop).await);
    // The simulator answers /health with 503 while it loads.
    wait_for_metric(&h, "router_backend_ready", &[("backend", &url)], 0.0).await;
    let mut client = grpc_client(&h).await;
    let http = tokio::spawn({
        let h = h.clone();
        async move { h.ok(&chat("sim-model"), &[]).await }
    });
    let grpc = tokio::spawn(async move {
        grpc_chunks(&mut client, grpc_chat("sim-model", "alpha beta")).await
    });
    let body = http.await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    let chunks = grpc.await.unwrap();
    assert!(chunks.iter().any(|c| !c.delta.is_empty()), "{chunks:?}");
    assert_eq!(successes(&url).await, 2, "neither saw the loading 503");
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &url), ("outcome", "server_error")]
        ),
        None,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_no_ready_backend_by_the_queue_deadline_the_answer_is_503() {
    let stop = CancellationToken::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        r#"
pools:
  gpu:
    backends: [{{url: "http://127.0.0.1:{port}"}}]
    health: {{interval_ms: 50}}
    limits: {{queue_timeout_ms: 300}}
routes:
  "*": {{pool: gpu}}
"#
    );
    let h = start(&yaml, stop).await;
    let response = h.post(&chat("sim-model"), &[]).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no backend became ready"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_backend_fails_over_at_the_ttft_deadline_before_the_first_byte() {
    let stop = CancellationToken::new();
    let hung = sim(sim_config(0, FailureMode::Timeout), &stop).await;
    let good = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        r#"
retry: {{max_attempts: 2, backoff_base_ms: 1, backoff_max_ms: 5}}
pools:
  p:
    strategy: round_robin
    backends: [{{url: "{hung}"}}, {{url: "{good}"}}]
    limits: {{ttft_deadline_ms: 300}}
    ejection: {{consecutive_failures: 0}}
routes:
  "*": {{pool: p}}
"#
    );
    let h = start(&yaml, stop).await;
    for stream in [false, true, false, true] {
        let mut body = chat("sim-model");
        body["stream"] = json!(stream);
        let response = h.post(&body, &[]).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            assert!(!text.contains("event: error"), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["object"], "chat.completion");
        }
    }
    let mut client = grpc_client(&h).await;
    for _ in 0..2 {
        let chunks = grpc_chunks(&mut client, grpc_chat("sim-model", "alpha beta")).await;
        assert!(chunks.iter().any(|c| !c.delta.is_empty()));
    }
    assert_eq!(successes(&good).await, 6);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &hung), ("outcome", "timeout")]
        ),
        Some(3.0),
        "round robin sent every other request to the hung one: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_embeddings_match_the_http_face() {
    let stop = CancellationToken::new();
    let url = sim(sim_config(0, FailureMode::None), &stop).await;
    let yaml = format!(
        "pools:\n  p:\n    backends: [{}]\nroutes:\n  \"*\": {{pool: p}}\n",
        backends_yaml(std::slice::from_ref(&url))
    );
    let h = start(&yaml, stop).await;
    let mut client = grpc_client(&h).await;
    let embed = |input: Vec<String>| {
        let mut request = tonic::Request::new(mesh_proto::EmbedRequest {
            model: "sim-model".into(),
            input,
            dimensions: Some(8),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("agentmesh-tenant", "acme".parse().unwrap());
        request.metadata_mut().insert(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token().parse().unwrap(),
        );
        request
    };
    let answer = client
        .embed(embed(vec!["alpha beta".into(), "gamma".into()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.model, "sim-model");
    assert_eq!(answer.data.len(), 2);
    assert_eq!(
        answer.data.iter().map(|e| e.index).collect::<Vec<_>>(),
        [0, 1]
    );
    assert!(answer.data.iter().all(|e| e.values.len() == 8));
    assert_eq!(answer.usage.unwrap().prompt_tokens, 3);
    let http: Value = h
        .http
        .post(format!("http://{}/v1/embeddings", h.router.http_addr))
        .json(&json!({"model": "sim-model", "input": ["alpha beta", "gamma"], "dimensions": 8}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first: Vec<f32> = http["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        answer.data[0].values, first,
        "the same vector on both faces"
    );

    let status = client
        .embed(embed(vec!["a".into(), String::new()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().starts_with("input[1]"), "{status}");
    let mut unknown = embed(vec!["a".into()]);
    unknown.get_mut().model = "no-such-model".into();
    let status = client.embed(unknown).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_are_probed_before_the_router_serves() {
    let stop = CancellationToken::new();
    // Loading for longer than the test runs.
    let url = sim(
        SimConfig {
            startup_delay: Duration::from_secs(600),
            ..sim_config(0, FailureMode::None)
        },
        &stop,
    )
    .await;
    let yaml = format!(
        "pools:\n  gpu:\n    backends: [{}]\n    limits: {{queue_timeout_ms: 300}}\nroutes:\n  \"*\": {{pool: gpu}}\n",
        backends_yaml(std::slice::from_ref(&url))
    );
    let h = start(&yaml, stop).await;
    // The very first request already knows the backend is loading: it
    // waits in the queue instead of reaching it and getting its 503.
    let response = h.post(&chat("sim-model"), &[]).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("no backend became ready"), "{message}");
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "router_backend_requests_total",
            &[("backend", &url), ("outcome", "server_error")]
        ),
        None,
        "{metrics}"
    );
}
