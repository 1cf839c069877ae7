#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The Python SDK (sdk/python) against a live mesh: this test starts the
//! mesh in-process (gateway, orchestrator on PostgreSQL, a worker, the
//! trace-collector, the model simulator) and runs the SDK's pytest suite
//! from the project venv (`.venv`, which scripts/test fills) with the
//! gateway's addresses and tokens of a tenant of its own in the
//! environment: apply, a run streamed to its answer, an approval, get and
//! list, cancel, traces, errors, and the async client; then, on a mesh
//! that limits submits, the rate-limit error.

use std::path::PathBuf;
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::infra::redis_url;
use mesh_integration::{Mesh, MeshOptions, postgres_mesh};

/// Bounds the whole pytest run; its own calls time out well before.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs pytest on `tests` (arguments as pytest takes them) from sdk/python
/// against `mesh`, with `extra` in the environment; asserts that it passed
/// with nothing skipped.
async fn pytest(mesh: &Mesh, tests: &[&str], extra: &[(&str, String)]) {
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
    let tenant = format!("sdk-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let run = tokio::process::Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(tests)
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
        // Plugins other packages of the shared venv register are not ours
        // (and may not even import).
        .env("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
        .envs(extra.iter().map(|(k, v)| (k, v)))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_suite_passes_against_a_live_mesh() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    pytest(
        &mesh,
        &["tests", "--ignore", "tests/test_rate_limit.py"],
        &[],
    )
    .await;
}

/// A mesh whose gateway limits submits per tenant (in Redis): the SDK
/// raises RateLimited with the gateway's retry-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_python_sdk_reports_rate_limits_with_retry_after() {
    let mesh = postgres_mesh(MeshOptions {
        redis_url: Some(redis_url()),
        submit_rate_per_minute: 2,
        ..Default::default()
    })
    .await;
    pytest(
        &mesh,
        &["tests/test_rate_limit.py"],
        &[("AGENTMESH_SDK_SUBMITS_PER_MINUTE", "2".to_owned())],
    )
    .await;
}
