#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The official `langfuse` Python SDK (v3, installed into .venv by
//! scripts/test) pointed at the trace-collector's Langfuse-compatible
//! endpoint with a tenant's key pair, configured only through the
//! environment a Langfuse user sets (LANGFUSE_HOST, LANGFUSE_PUBLIC_KEY,
//! LANGFUSE_SECRET_KEY): its trace lands under that tenant as a tree with
//! Langfuse's types, the model and the usage (scripts/langfuse-client-check.py).

use std::path::PathBuf;
use std::time::Duration;

use mesh_integration::{Nats, fresh_postgres};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The project venv's Python, checked to have the Langfuse SDK.
fn langfuse_python() -> PathBuf {
    let python = repo_root().join(".venv/bin/python");
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import langfuse"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        has_sdk,
        "{} cannot import langfuse: run scripts/test, which installs it",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_langfuse_python_sdk_lands_a_queryable_trace_for_its_keys_tenant() {
    let python = langfuse_python();
    let nats = Nats::start().unwrap();
    let mut shared = mesh_integration::mesh::test_shared_config().unwrap();
    shared.nats_url = nats.url.clone();
    shared.database_url = Some(fresh_postgres().await.unwrap());
    let data = tempfile::tempdir().unwrap();
    let config = trace_collector::Config::ephemeral(shared, data.path().to_owned()).unwrap();
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let running = trace_collector::start(config, stop).await.unwrap();
    let base = format!("http://{}", running.http_addr);
    let http = reqwest::Client::new();

    let key: Value = http
        .post(format!("{base}/api/keys"))
        .header("agentmesh-tenant", "acme")
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = tokio::process::Command::new(&python)
        .arg(repo_root().join("scripts/langfuse-client-check.py"))
        .env_remove("LANGFUSE_BASE_URL")
        .env("LANGFUSE_HOST", &base)
        .env("LANGFUSE_PUBLIC_KEY", key["public_key"].as_str().unwrap())
        .env("LANGFUSE_SECRET_KEY", key["secret_key"].as_str().unwrap())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK took over 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let ids: Value = serde_json::from_str(stdout.trim()).unwrap();
    let trace_id = ids["trace_id"].as_str().unwrap();

    let get = |tenant: &'static str| {
        http.get(format!("{base}/api/traces/{trace_id}"))
            .header("agentmesh-tenant", tenant)
            .header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            )
            .send()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let trace: Value = loop {
        let response = get("acme").await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == 200 && body["observation_count"] == 3 {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the SDK's trace never arrived whole (stderr:\n{stderr}): {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(trace["name"], "support-request", "{trace}");
    assert_eq!(trace["user_id"], "user-7");
    assert_eq!(trace["session_id"], "langfuse-session");
    assert_eq!(
        (
            trace["input_tokens"].clone(),
            trace["output_tokens"].clone()
        ),
        (json!(21), json!(8))
    );
    let roots = trace["observations"].as_array().unwrap();
    assert_eq!(roots.len(), 1, "{trace}");
    let root = &roots[0];
    assert_eq!(root["span_id"], ids["root_id"]);
    assert_eq!(root["type"], "span");
    assert_eq!(root["total_input_tokens"], 21);
    let children = root["children"].as_array().unwrap();
    let shape: Vec<(&str, &str, &str)> = children
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["type"].as_str().unwrap(),
                c["span_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (
                "llm-call",
                "generation",
                ids["generation_id"].as_str().unwrap()
            ),
            ("lookup-order", "span", ids["span_id"].as_str().unwrap()),
        ],
        "{trace}"
    );
    let generation = &children[0];
    assert_eq!(generation["model"], "gpt-4o");
    assert_eq!(
        (
            generation["input_tokens"].clone(),
            generation["output_tokens"].clone()
        ),
        (json!(21), json!(8))
    );
    // gpt-4o is in the built-in price table: the generation is priced.
    assert!(
        generation["cost_usd"].as_f64().is_some_and(|c| c > 0.0),
        "{generation}"
    );
    assert_eq!(
        generation["attributes"]["attributes"]["langfuse.observation.model.parameters"],
        r#"{"temperature": 0.2}"#
    );
    // The key pair decided the tenant: nobody else sees the trace.
    assert_eq!(get("globex").await.unwrap().status(), 404);
}
