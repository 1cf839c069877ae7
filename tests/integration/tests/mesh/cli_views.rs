#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! The CLI's views against a live mesh, run as the `agentmesh` binary a
//! user runs: `agentmesh ingest` uploads a folder of documents into a
//! retrieval collection (a second run changes nothing; search finds a file
//! by its content), and `agentmesh tasks --watch` on a pipe logs each
//! change of a task as it happens.

use std::process::Stdio;
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::retrieval::minilm_available;
use mesh_integration::{Mesh, MeshOptions, RestClient, fresh_postgres, postgres_mesh};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// The `agentmesh` binary beside this test's target dir (scripts/test
/// builds it before the integration tier).
fn agentmesh_cli() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("AGENTMESH_CLI") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(std::path::Path::parent).unwrap();
    let cli = debug.join("agentmesh");
    assert!(
        cli.is_file(),
        "{} missing: run `cargo build -p agentmesh` (scripts/test does) or set AGENTMESH_CLI",
        cli.display()
    );
    cli
}

async fn cli(base: &str, token: &str, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(agentmesh_cli())
        .args(["--url", base, "--token", token])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the CLI took over 120 s")
        .unwrap()
}

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_uploads_a_folder_and_a_second_run_changes_nothing() {
    if !minilm_available("ingest_uploads_a_folder") {
        return;
    }
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await.unwrap()),
        start_worker: false,
        retrieval: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let base = format!("http://{}", mesh.gateway.http_addr);
    let token = mesh.token("acme", &[Role::Operator]);
    let docs = tempfile::tempdir().unwrap();
    let files = [
        (
            "guide/nats.md",
            "JetStream streams keep messages on disk and redeliver them until a consumer acks.",
        ),
        (
            "guide/redis.md",
            "Redis holds short-lived session memory with a time to live.",
        ),
        (
            "billing.txt",
            "Invoices are sent on the first day of each month by email.",
        ),
        (
            "pasta.md",
            "Boil the spaghetti in salted water for nine minutes.",
        ),
        (
            "notes/ideas.rst",
            "Try hybrid search with a keyword index beside the vectors.",
        ),
    ];
    for (rel, text) in files {
        let path = docs.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(docs.path().join("logo.png"), [0x89, 0x50, 0x4e, 0x47]).unwrap();
    let folder = docs.path().to_str().unwrap();

    // No collection and no --create: refused, nothing uploaded.
    let refused = cli(&base, &token, &["ingest", "kb", folder]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pass --create"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let args = [
        "-o", "json", "ingest", "kb", folder, "--create", "--batch", "2",
    ];
    let first = json_of(&cli(&base, &token, &args).await);
    assert_eq!(first["documents"], 5, "{first}");
    assert_eq!(first["upserted"], 5, "{first}");
    assert_eq!(first["unchanged"], 0, "{first}");
    assert!(first["chunks"].as_u64().unwrap() >= 5, "{first}");
    let again = json_of(&cli(&base, &token, &args).await);
    assert_eq!(
        (&again["upserted"], &again["unchanged"]),
        (&json!(0), &json!(5))
    );

    // The documents are the files, by relative path.
    let client = RestClient::new(base.clone(), token.clone());
    let hits: Value = client
        .post("/v1/collections/kb/search")
        .json(&json!({"query": "when are invoices sent", "topK": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hits["hits"][0]["documentId"], "billing.txt", "{hits}");
    let doc: Value = client
        .get("/v1/collections/kb/documents/guide%2Fnats.md")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["metadata"]["path"], "guide/nats.md", "{doc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_watch_on_a_pipe_logs_each_change_of_a_task() {
    let mesh = postgres_mesh(MeshOptions::default()).await;
    let client = mesh.client("acme");
    client.apply_sim_agent("watched", 8).await.unwrap();
    let base = format!("http://{}", mesh.gateway.http_addr);
    let mut watch = tokio::process::Command::new(agentmesh_cli())
        .args(["--url", &base, "--token", &client.token])
        .args([
            "tasks",
            "--watch",
            "--interval",
            "200ms",
            "--agent",
            "watched",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let id = client.submit("watched", "hello").await.unwrap();
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.last().is_some_and(|l| l.contains(" succeeded ")) {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no succeeded line within 30 s: {seen:?}"))
            .unwrap()
            .expect("the watch ended");
        assert!(line.contains(&id), "only the one task is watched: {line}");
        seen.push(line);
    }
    // An append-only log: each line is a new state, never a repeat.
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique, seen);
    let fields: Vec<&str> = seen.last().unwrap().split("  ").collect();
    assert_eq!(
        fields[1..4],
        [id.as_str(), "watched", "succeeded"],
        "{seen:?}"
    );
    watch.kill().await.unwrap();
}
