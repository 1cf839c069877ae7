//! Secrets stay secret through a whole run. The mesh runs as a deployment
//! runs it: `agentmesh up` in its own process, configured by environment
//! variables, logging at TRACE on stderr and exporting its spans over OTLP
//! to its trace-collector. The test plants distinctive values for every
//! kind of secret: the JWT signing key, the mesh's service key, a tool's
//! bearer token, an API key and a Langfuse trace key pair (the last two
//! minted by the mesh); proves each one was USED (a token it signed was
//! accepted and one signed otherwise refused, the tool server saw the
//! token, the key and the key pair were accepted); then looks for each
//! secret in the captured logs, every stored span and observation of the
//! tenant, the task's event stream, every API answer of the run (body and
//! headers, REST and gRPC) and every file the run left in its data
//! directory (the NATS store included). A secret's only allowed appearance
//! is the one answer that mints it.
#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::infra::{free_port, redis_url};
use mesh_integration::tool_server::{ToolServer, ToolServerOptions};
use mesh_integration::{RestClient, fresh_postgres};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const WAIT: Duration = Duration::from_secs(60);
const TENANT: &str = "vault";

/// The `agentmesh` binary beside this test's target dir (scripts/test
/// builds it before the integration tier), or `AGENTMESH_CLI`.
fn agentmesh_cli() -> PathBuf {
    if let Some(path) = std::env::var_os("AGENTMESH_CLI") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let cli = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("agentmesh");
    assert!(
        cli.is_file(),
        "{} missing: run `cargo build -p agentmesh` (scripts/test does) or set AGENTMESH_CLI",
        cli.display()
    );
    cli
}

fn nats_server() -> String {
    std::env::var("AGENTMESH_NATS_SERVER")
        .unwrap_or_else(|_| format!("{}/../../.venv/bin/nats-server", env!("CARGO_MANIFEST_DIR")))
}

/// Every answer the run got, as text, under a label saying where it came
/// from.
#[derive(Default)]
struct Seen {
    places: Vec<(String, String)>,
}

impl Seen {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.places.push((place.into(), text.into()));
    }

    /// Sends `request`, keeps its status, headers and body; returns
    /// (status, body as JSON or Null).
    async fn call(&mut self, place: &str, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        let text = response.text().await.unwrap();
        self.add(place, format!("{status} {headers}\n{text}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&mut self, place: &str, request: reqwest::RequestBuilder) -> Value {
        let (status, body) = self.call(place, request).await;
        assert!((200..300).contains(&status), "{place}: {status} {body}");
        body
    }
}

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// Where `secret` appears in `text`, with some context, if it does.
fn find(text: &str, secret: &str) -> Option<String> {
    let at = text.find(secret)?;
    let start = text.floor_char_boundary(at.saturating_sub(160));
    let end = text.ceil_char_boundary((at + secret.len() + 160).min(text.len()));
    Some(text[start..end].replace('\n', "⏎"))
}

/// Every file under `dir`, read as (lossy) text.
fn files_under(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((
                format!("file {}", path.display()),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
}

/// A one-span OTLP/JSON export (the Langfuse endpoint's input).
fn one_span(trace_id: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "evaluator"}}]},
        "scopeSpans": [{"scope": {"name": "langfuse-sdk"}, "spans": [{
            "traceId": trace_id, "spanId": "00f067aa0ba902b7", "parentSpanId": "",
            "name": "evaluate", "kind": 1,
            "startTimeUnixNano": (now - 1_000_000).to_string(), "endTimeUnixNano": now.to_string(),
            "attributes": [], "status": {}
        }]}]
    }]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_planted_secret_reaches_logs_spans_events_or_answers() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let jwt_key = format!("planted-jwt-signing-key-{run}");
    let service_key = format!("planted-mesh-service-key-{run}");
    let tool_token = format!("planted-tool-token-{run}");
    let file_token = format!("planted-tool-file-token-{run}");
    let other_tenants_token = format!("planted-other-tenant-token-{run}");
    let tools = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let stderr_path = dir.path().join("stderr.log");
    let traces_grpc = free_port().unwrap();
    // Tool secrets in files: one folder per tenant (as mounted Secrets),
    // and a file of the operator's outside them.
    let secrets_dir = dir.path().join("tool-secrets");
    for (tenant, token) in [(TENANT, &file_token), ("acme", &other_tenants_token)] {
        std::fs::create_dir_all(secrets_dir.join(tenant)).unwrap();
        std::fs::write(secrets_dir.join(tenant).join("token"), token).unwrap();
    }
    let outside = dir.path().join("jwt.key");
    std::fs::write(&outside, &jwt_key).unwrap();

    // The whole mesh in one child process, as an operator starts it.
    let mut command = tokio::process::Command::new(agentmesh_cli());
    command
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["-o", "json", "up", "--simulator", "--no-demo"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "trace")
        .env("AGENTMESH_NATS_SERVER", nats_server())
        .env("DATABASE_URL", fresh_postgres().await.unwrap())
        .env("REDIS_URL", redis_url())
        .env("AGENTMESH_GATEWAY_JWT_SECRET", &jwt_key)
        .env(mesh_auth::service::KEY_VAR, &service_key)
        .env("AGENTMESH_TOOL_SECRET_LOOKUP_TOKEN", &tool_token)
        .env("AGENTMESH_WORKER_TOOL_SECRETS_DIR", &secrets_dir)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{traces_grpc}"),
        )
        .env(
            "AGENTMESH_TRACES_GRPC_LISTEN",
            format!("127.0.0.1:{traces_grpc}"),
        );
    // Every other listener on a free port, so runs never collide.
    for var in [
        "GATEWAY_HTTP",
        "GATEWAY_GRPC",
        "GATEWAY_ADMIN",
        "ORCHESTRATOR_GRPC",
        "ORCHESTRATOR_ADMIN",
        "WORKER_GRPC",
        "WORKER_ADMIN",
        "ROUTER_HTTP",
        "ROUTER_GRPC",
        "ROUTER_ADMIN",
        "RETRIEVAL_GRPC",
        "RETRIEVAL_ADMIN",
        "TRACES_HTTP",
        "TRACES_ADMIN",
    ] {
        command.env(format!("AGENTMESH_{var}_LISTEN"), "127.0.0.1:0");
    }
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let endpoints: Value = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if let Ok(value) = serde_json::from_str::<Value>(&line)
                && value["rest"].is_string()
            {
                return value;
            }
        }
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let tail = &log[log.floor_char_boundary(log.len().saturating_sub(4000))..];
        panic!("agentmesh up ended before it was ready:\n{tail}");
    })
    .await
    .expect("agentmesh up ready within 180s");
    let base = endpoints["rest"].as_str().unwrap().to_owned();
    // The collector's OTLP/HTTP URL, less its path: its HTTP API.
    let collector = endpoints["otlp"]["http"]
        .as_str()
        .unwrap()
        .trim_end_matches("/v1/traces")
        .to_owned();
    let grpc_url = format!("http://{}", endpoints["grpc"].as_str().unwrap());
    let mut seen = Seen::default();
    let http = reqwest::Client::new();

    // The JWT signing key is the one in use: a token it signed is let in,
    // one signed with another key is not.
    let admin = RestClient::new(
        base.clone(),
        mesh_auth::issue_hs256(
            jwt_key.as_bytes(),
            TENANT,
            "secrets-test",
            &[Role::Admin],
            3600,
        )
        .unwrap(),
    );
    let forged = mesh_auth::issue_hs256(
        format!("another-signing-key-{run}").as_bytes(),
        TENANT,
        "secrets-test",
        &[Role::Admin],
        3600,
    )
    .unwrap();
    assert_eq!(
        seen.call(
            "GET /v1/agents (foreign key)",
            http.get(format!("{base}/v1/agents")).bearer_auth(&forged)
        )
        .await
        .0,
        401
    );

    // An API key and a trace key pair, minted by the mesh.
    let created = seen
        .ok(
            "POST /v1/api-keys",
            admin
                .post("/v1/api-keys")
                .json(&json!({"name": "secrets test", "role": "operator"})),
        )
        .await;
    let api_key = created["key"].as_str().unwrap().to_owned();
    let (_, api_secret) = mesh_auth::api_key::parse(&api_key).unwrap();
    let api_secret = api_secret.to_owned();
    let pair = seen
        .ok("POST /v1/trace-keys", admin.post("/v1/trace-keys"))
        .await;
    let public_key = pair["public_key"].as_str().unwrap().to_owned();
    let trace_secret = pair["secret_key"].as_str().unwrap().to_owned();

    // Tools that authenticate with a bearer token: from the worker's tool
    // secrets (a variable, a file of the tenant's), and three that try to
    // make the worker send what is not a tool secret of this tenant: the
    // mesh's service key, a file of the operator's, another tenant's file.
    let sources = [
        ("lookup", "env", json!({"env": "LOOKUP_TOKEN"})),
        (
            "lookup_file",
            "file",
            json!({"file": secrets_dir.join(TENANT).join("token")}),
        ),
        (
            "steal_mesh_key",
            "mesh-env",
            json!({"env": mesh_auth::service::KEY_VAR}),
        ),
        ("steal_file", "outside-file", json!({"file": outside})),
        (
            "steal_tenant",
            "other-tenant",
            json!({"file": secrets_dir.join("acme").join("token")}),
        ),
    ];
    let mut calls = Vec::new();
    let mut refs = Vec::new();
    for (name, via, token) in &sources {
        let tool = json!({"type": "api", "description": "who am I to the tool server",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            "config": {"endpoint": tools.url(&format!("/whoami?via={via}"))},
            "authentication": {"bearerToken": token}});
        seen.ok(
            &format!("PUT /v1/tools/{name}"),
            admin.put(&format!("/v1/tools/{name}")).json(&tool),
        )
        .await;
        calls.push(json!({"name": name, "arguments": {"q": "me"}}));
        refs.push(json!({"ref": name}));
    }
    let turns = json!([{"tool_calls": calls}, {"content": "the tools said {{tool_results}}"}]);
    let agent = json!({"model": "smollm2",
        "systemPrompt": format!("You are a test agent.\n[[agentmesh-sim-script]]\n{turns}"),
        "tools": refs, "recordContent": true});
    seen.ok(
        "PUT /v1/agents/keeper",
        admin.put("/v1/agents/keeper").json(&agent),
    )
    .await;

    // The task runs on the API key: it is accepted, a made-up one is not.
    let by_key = RestClient::new(base.clone(), api_key.clone());
    let task = seen
        .ok(
            "POST /v1/agents/keeper/tasks (API key)",
            by_key
                .post("/v1/agents/keeper/tasks")
                .json(&json!({"input": "who am I?", "sessionId": "s1"})),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let unknown = format!("amk_{}_{}", &run[..16], "0".repeat(64));
    assert_eq!(
        seen.call(
            "GET /v1/tasks (unknown key)",
            http.get(format!("{base}/v1/tasks")).bearer_auth(&unknown)
        )
        .await
        .0,
        401
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    let finished = loop {
        let (_, task) = seen
            .call(
                &format!("GET /v1/tasks/{id}"),
                by_key.get(&format!("/v1/tasks/{id}")),
            )
            .await;
        if task["status"] == "succeeded" {
            break task;
        }
        assert!(
            !matches!(task["status"].as_str(), Some("failed" | "cancelled")),
            "{task}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "task never finished: {task}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The tool secrets reached the tool server, each on its own call; the
    // rest never left the worker.
    let received: Vec<(String, Option<String>)> = tools
        .calls_to("/whoami")
        .into_iter()
        .map(|c| (c.query, c.authorization))
        .collect();
    let mut expected = vec![
        ("via=env".to_owned(), Some(format!("Bearer {tool_token}"))),
        ("via=file".to_owned(), Some(format!("Bearer {file_token}"))),
    ];
    let mut got = received.clone();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "only the tenant's tool secrets were sent: {finished}"
    );

    // The task's events, as SSE and over gRPC.
    let (_, _) = seen
        .call(
            &format!("GET /v1/tasks/{id}/events"),
            by_key.get(&format!("/v1/tasks/{id}/events")),
        )
        .await;
    let mut tasks = mesh_proto::task_service_client::TaskServiceClient::connect(grpc_url.clone())
        .await
        .unwrap();
    let got = tasks
        .get_task(bearer(
            &api_key,
            mesh_proto::GetTaskRequest { id: id.clone() },
        ))
        .await
        .unwrap();
    seen.add(
        "gRPC GetTask",
        format!("{:?} {:?}", got.metadata(), got.get_ref()),
    );
    let mut stream = tasks
        .watch_task(bearer(
            &api_key,
            mesh_proto::WatchTaskRequest {
                id: id.clone(),
                after_seq: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(format!("{event:?}"));
    }
    assert!(events.len() > 2, "{events:?}");
    seen.add("gRPC WatchTask", events.join("\n"));

    // A model call through the OpenAI face.
    seen.ok(
        "POST /v1/chat/completions",
        admin
            .post("/v1/chat/completions")
            .json(&json!({"model": "smollm2",
            "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4})),
    )
    .await;

    // The trace key pair is accepted by the Langfuse endpoint, a wrong
    // secret is not.
    let langfuse = format!("{collector}/api/public/otel/v1/traces");
    let (status, body) = seen
        .call(
            "POST langfuse ingest",
            http.post(&langfuse)
                .basic_auth(&public_key, Some(&trace_secret))
                .json(&one_span(&run)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = seen
        .call(
            "POST langfuse ingest (wrong secret)",
            http.post(&langfuse)
                .basic_auth(&public_key, Some("not-the-secret"))
                .json(&one_span(&run)),
        )
        .await;
    assert_eq!(status, 401);

    // The service key is the one in use: the collector takes a service
    // token it signed and refuses one signed with another key.
    let signed_with = |key: &str| {
        mesh_auth::service::ServiceAuthConfig::new(
            mesh_auth::service::ServiceKey::new(key).unwrap(),
        )
        .credential("secrets-test")
        .token()
        .unwrap()
    };
    for (key, expected) in [
        (service_key.clone(), 200),
        (format!("another-mesh-key-{run}"), 401),
    ] {
        let (status, _) = seen
            .call(
                "GET collector /api/traces (service token)",
                http.get(format!("{collector}/api/traces"))
                    .header("agentmesh-tenant", TENANT)
                    .header(mesh_auth::service::SERVICE_TOKEN_HEADER, signed_with(&key)),
            )
            .await;
        assert_eq!(status, expected);
    }

    // Every stored span of the tenant: the task's trace (its tool call
    // included, exported by the services with their service tokens) and
    // the Langfuse one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let traces = loop {
        let (_, list) = seen
            .call("GET /v1/traces", admin.get("/v1/traces?limit=100"))
            .await;
        let ids: Vec<String> = list["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                t["trace_id"]
                    .as_str()
                    .or(t["id"].as_str())
                    .map(str::to_owned)
            })
            .collect();
        let mut trees = Vec::new();
        for trace in &ids {
            let (_, tree) = seen
                .call(
                    &format!("GET /v1/traces/{trace}"),
                    admin.get(&format!("/v1/traces/{trace}")),
                )
                .await;
            trees.push(tree);
        }
        let text = Value::Array(trees.clone()).to_string();
        if text.contains("execute_tool lookup") && ids.iter().any(|t| t == &run) {
            break trees;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the task's tool span and the Langfuse span never both arrived: {text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let observations: usize = traces
        .iter()
        .map(|t| t["observations"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(observations > 3, "{traces:?}");

    // What else a user reads back.
    for path in [
        "/v1/tools/lookup",
        "/v1/agents/keeper",
        "/v1/api-keys",
        "/v1/trace-keys",
        "/v1/audit",
        "/v1/tasks",
        "/v1/quotas",
    ] {
        seen.ok(&format!("GET {path}"), admin.get(path)).await;
    }

    // Stop the mesh the way an operator does (SIGTERM), so shutdown logs
    // are in too.
    let pid = child.id().unwrap().to_string();
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", pid.as_str()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .is_err()
    {
        child.kill().await.unwrap();
    }
    let mut rest_of_stdout = String::new();
    while let Ok(Some(line)) = stdout.next_line().await {
        rest_of_stdout.push_str(&line);
        rest_of_stdout.push('\n');
    }

    let logs = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(
        logs.contains("TRACE") && logs.contains("DEBUG"),
        "the logs were captured at TRACE"
    );
    let mut places = vec![
        ("logs (stderr, TRACE)".to_owned(), logs.clone()),
        (
            "stdout".to_owned(),
            format!("{endpoints}\n{rest_of_stdout}"),
        ),
    ];
    places.extend(seen.places);
    files_under(&data_dir, &mut places);
    for call in tools.calls() {
        places.push((
            format!("tool server call {}?{}", call.path, call.query),
            format!("{call:?}"),
        ));
    }
    // Each secret and the one place it belongs (its minting answer, or the
    // tool call it authenticates), where it must be.
    let secrets = [
        ("the JWT signing key", jwt_key.as_str(), None),
        ("the service key", service_key.as_str(), None),
        (
            "the tool token",
            tool_token.as_str(),
            Some("tool server call /whoami?via=env"),
        ),
        (
            "the tool file token",
            file_token.as_str(),
            Some("tool server call /whoami?via=file"),
        ),
        (
            "another tenant's tool token",
            other_tenants_token.as_str(),
            None,
        ),
        (
            "the API key's secret",
            api_secret.as_str(),
            Some("POST /v1/api-keys"),
        ),
        (
            "the trace secret key",
            trace_secret.as_str(),
            Some("POST /v1/trace-keys"),
        ),
    ];
    let mut leaks = Vec::new();
    for (place, text) in &places {
        for (what, secret, home) in &secrets {
            if *home == Some(place.as_str()) {
                assert!(text.contains(secret), "{place} holds {what}");
                continue;
            }
            if let Some(context) = find(text, secret) {
                leaks.push(format!("{what} in {place}: …{context}…"));
            }
        }
    }
    println!(
        "secrets: {} places searched ({} bytes of TRACE logs, {} traces with {observations} observations, {} tool calls) for {} planted secrets",
        places.len(),
        logs.len(),
        traces.len(),
        tools.calls().len(),
        secrets.len()
    );
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
