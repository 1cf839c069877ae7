//! The web console end to end: the mesh in-process (the model simulator
//! plays an agent whose `human` tool needs approval), and headless
//! Chromium driven by `tests/console/e2e.mjs` (playwright-core) through
//! sign-in, applying an agent (a bad spec first: the error at the field),
//! running a task, approving its step, the final answer arriving live, the
//! trace waterfall and usage charts, cancelling a waiting task, the task
//! filters and a tool, with a screenshot of each page under
//! the target dir (`console-screenshots/`). What the browser did is then
//! checked through the API.
//!
//! Needs `node`, `tests/console/node_modules` (`npm ci`) and Chromium
//! (`/usr/bin/chromium`, or `CHROMIUM`): scripts/test installs them and
//! sets `AGENTMESH_REQUIRE_CONSOLE=1`, which turns a missing piece into a
//! failure; elsewhere the browser part is skipped with a message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::{MeshOptions, RestClient, postgres_mesh};

const BROWSER_TIMEOUT: Duration = Duration::from_secs(240);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `<target>/console-screenshots`: beside the build, never in the repo.
fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENTMESH_CONSOLE_SCREENSHOTS") {
        return dir.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // <target>/debug/deps/mesh-<hash>
            let exe = std::env::current_exe().unwrap();
            exe.ancestors().nth(3).unwrap().to_owned()
        });
    target.join("console-screenshots")
}

/// What is missing to run the browser part, if anything.
fn missing_tools(chromium: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        missing.push("node (install nodejs)".to_owned());
    }
    if !repo_root()
        .join("tests/console/node_modules/playwright-core/package.json")
        .is_file()
    {
        missing.push("playwright-core (run `npm ci` in tests/console)".to_owned());
    }
    if !chromium.is_file() {
        missing.push(format!(
            "{} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_applies_runs_approves_and_shows_the_trace_and_usage() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let base = format!("http://{}", mesh.gateway.http_addr);
    let http = reqwest::Client::new();

    // The files are public, with their type and policy; the data is not.
    let page = http.get(format!("{base}/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()["content-type"],
        "text/html; charset=utf-8",
        "{:?}",
        page.headers()
    );
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("default-src 'none'"),
        "{policy}"
    );
    assert!(page.text().await.unwrap().contains("js/main.js"));
    let module = http
        .get(format!("{base}/console/js/api.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        module.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        http.get(format!("{base}/v1/tasks"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let missing = missing_tools(&chromium);
    if !missing.is_empty() {
        assert!(
            std::env::var("AGENTMESH_REQUIRE_CONSOLE").as_deref() != Ok("1"),
            "AGENTMESH_REQUIRE_CONSOLE=1 but the browser test cannot run; missing: {missing:?}"
        );
        eprintln!("skipping the console browser test; missing: {missing:?}");
        return;
    }

    let tenant = format!(
        "console-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    // An admin: the console also reads the audit log (who applied which
    // version) and the test creates trace ingestion keys.
    let token = mesh.token(&tenant, &[Role::Admin]);
    // Ingestion keys of the tenant, for the spans the script exports (the
    // public Langfuse-compatible endpoint; the in-process services export
    // none of their own per tenant).
    let admin = RestClient::new(base.clone(), token.clone());
    let keys: serde_json::Value = admin
        .post("/v1/trace-keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let shots = screenshot_dir();
    let run = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/console/e2e.mjs"))
        .current_dir(repo_root().join("tests/console"))
        .env("CONSOLE_URL", format!("{base}/console/"))
        .env("CONSOLE_TOKEN", &token)
        .env("CONSOLE_TENANT", &tenant)
        .env(
            "CONSOLE_OTLP_URL",
            format!("http://{}/api/public/otel/v1/traces", mesh.traces.http_addr),
        )
        .env(
            "CONSOLE_OTLP_PUBLIC_KEY",
            keys["public_key"].as_str().unwrap(),
        )
        .env(
            "CONSOLE_OTLP_SECRET_KEY",
            keys["secret_key"].as_str().unwrap(),
        )
        .env("CONSOLE_SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(BROWSER_TIMEOUT, run)
        .await
        .expect("the browser test finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "e2e.mjs failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status,
        shots.display()
    );
    let printed = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("e2e.mjs printed no {key}: {stdout}"))
    };
    let (task_id, trace_id) = (printed("TASK "), printed("TRACE "));

    for name in [
        "agent-error",
        "agent",
        "agents",
        "task-approval",
        "task",
        "tasks",
        "trace",
        "traces",
        "usage",
        "tools",
    ] {
        let file = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&file).unwrap_or_default();
        assert!(
            bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG"),
            "{} is not a real screenshot",
            file.display()
        );
    }

    // What the browser did, as the API sees it.
    let client = RestClient::new(base, token);
    let agent: serde_json::Value = client
        .get("/v1/agents/gated")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["version"], 2, "the bad spec made no version: {agent}");
    assert_eq!(agent["spec"]["temperature"], 0.5);
    assert_eq!(agent["spec"]["tools"][0]["name"], "ask_human");
    let task = client.task(&task_id).await.unwrap();
    assert_eq!(task["status"], "succeeded", "{task}");
    let output = task["output"].as_str().unwrap();
    assert!(
        output.contains(r#""approved":true"#) && output.contains(r#""comment":"go ahead""#),
        "{output}"
    );
    let events = client
        .events(&task_id, None, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        events.iter().any(|e| e.event == "approval_resolved"
            && e.data["approved"] == true
            && e.data["by"] == "test"),
        "{events:?}"
    );
    // (That the `traceparent` the console sends travels with the task is
    // trace_context's test: it needs the process-wide telemetry layer,
    // which one test of this binary may install.)
    let trace: serde_json::Value = client
        .get(&format!("/v1/traces/{trace_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["agent"], "gated", "{trace}");
}
