#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The Python SDK (sdk/python) against a live mesh: this test starts the
//! mesh in-process (gateway, orchestrator on PostgreSQL, a worker, the
//! trace-collector, the model simulator) and runs the SDK's pytest suite
//! from the project venv (`.venv`, which scripts/test fills) with the
//! gateway's addresses and tokens of a tenant of its own in the
//! environment: apply, a run streamed to its answer, an approval, get and
//! list, cancel, traces, errors, and the async client.

use std::path::PathBuf;
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::{MeshOptions, postgres_mesh};

/// Bounds the whole pytest run; its own calls time out well before.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_suite_passes_against_a_live_mesh() {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import grpc, google.protobuf, yaml, pytest"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        ready,
        "{} cannot import grpc, protobuf, yaml and pytest: run scripts/test, which installs them",
        python.display()
    );

    let mesh = postgres_mesh(MeshOptions::default()).await;
    let tenant = format!("sdk-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let run = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .current_dir(root.join("sdk/python"))
        .env("AGENTMESH_SDK_GRPC_URL", mesh.gateway_grpc_url())
        .env(
            "AGENTMESH_SDK_TOKEN",
            mesh.token(&tenant, &[Role::Operator]),
        )
        .env(
            "AGENTMESH_SDK_VIEWER_TOKEN",
            mesh.token(&tenant, &[Role::Viewer]),
        )
        .env(
            "AGENTMESH_SDK_OTHER_TOKEN",
            mesh.token(&format!("{tenant}-other"), &[Role::Viewer]),
        )
        .env(
            "AGENTMESH_SDK_OTLP_URL",
            format!("http://{}", mesh.traces.http_addr),
        )
        .env(
            "AGENTMESH_SDK_SERVICE_TOKEN",
            mesh_integration::mesh::service_token(),
        )
        .env("AGENTMESH_SDK_TENANT", &tenant)
        .env("AGENTMESH_SDK_MODEL", "sim-model")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("the SDK suite took over 300 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // Every test ran: none skipped or deselected.
    assert!(
        !stdout.contains("skipped") && stdout.contains(" passed"),
        "{stdout}"
    );
}
