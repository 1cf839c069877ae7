#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! A real client against the inference-router: the official `openai` Python
//! package (in the project venv `.venv`, installed by `scripts/test`) runs
//! `scripts/router-client-check.py` against an in-process router in front of
//! the model simulator: chat, streaming, tool calls and embeddings.

use std::path::PathBuf;
use std::time::Duration;

use model_sim::SimConfig;
use tokio_util::sync::CancellationToken;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_openai_python_client_drives_the_router() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let has_openai = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        has_openai,
        "{} cannot import the openai package: run scripts/test, which installs it \
         (.venv/bin/python -m pip install openai==3.51.0)",
        python.display()
    );

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    let sim = SimConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        ..Default::default()
    };
    tokio::spawn(model_sim::serve(listener, sim, stop.clone()));
    let shared = mesh_integration::mesh::test_shared_config().unwrap();
    let config = inference_router::Config::ephemeral(shared, &sim_url).unwrap();
    let router = inference_router::start(config, stop.clone()).await.unwrap();

    let run = tokio::process::Command::new(&python)
        .arg(root.join("scripts/router-client-check.py"))
        .args(["--base-url", &format!("http://{}/v1", router.http_addr)])
        .args(["--model", "sim-model", "--tenant", "acme"])
        .args(["--service-token", &mesh_integration::mesh::service_token()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the client check took over 120 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for check in [
        "ok chat",
        "ok stream",
        "ok tool call",
        "ok streamed tool call",
        "ok embeddings",
        "ok errors",
    ] {
        assert!(stdout.contains(check), "{check} missing from\n{stdout}");
    }
}
