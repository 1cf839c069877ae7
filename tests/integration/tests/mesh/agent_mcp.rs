//! `mcp` tools end to end: a real MCP server (the official `mcp` Python
//! SDK serving `tests/integration/mcp/server.py` over Streamable HTTP, from
//! the project venv that `scripts/test` fills) and a scripted model whose
//! calls the worker makes through rmcp: by the tool's own name and by a
//! configured remote name, with the bearer token and the idempotency key;
//! a failing tool, a tool the server lacks, an unreachable server and
//! arguments the server refuses each come back as a tool error.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use mesh_integration::{Mesh, MeshOptions, RestClient};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "mcp-secret-5be1";

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn script(turns: Value) -> String {
    format!("You are a test agent.\n[[agentmesh-sim-script]]\n{turns}")
}

async fn put(client: &RestClient, path: &str, spec: Value) -> (reqwest::StatusCode, Value) {
    let response = client.put(path).json(&spec).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// The MCP server, killed when dropped.
struct McpServer {
    url: String,
    calls_file: PathBuf,
    _dir: tempfile::TempDir,
    _child: tokio::process::Child,
}

impl McpServer {
    async fn start() -> Self {
        let root = repo_root();
        let python = root.join(".venv/bin/python");
        let has_mcp = std::process::Command::new(&python)
            .args(["-c", "import mcp.server.mcpserver"])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(
            has_mcp,
            "{} cannot import the mcp package: run scripts/test, which installs it \
             (.venv/bin/python -m pip install mcp==2.3.0)",
            python.display()
        );
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let calls_file = dir.path().join("calls.jsonl");
        let child = tokio::process::Command::new(&python)
            .arg(root.join("tests/integration/mcp/server.py"))
            .arg(port.to_string())
            .arg(&calls_file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the MCP server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            url: format!("http://127.0.0.1:{port}/mcp"),
            calls_file,
            _dir: dir,
            _child: child,
        }
    }

    /// The tool calls that reached the server, in order.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.calls_file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_tools_are_listed_and_called_by_name_on_a_real_server() {
    let server = McpServer::start().await;
    let mesh = Mesh::start(MeshOptions {
        worker_config: Some(|config| {
            let mut env = (*config.secrets_env).clone();
            env.insert("MCP_TOKEN".to_owned(), TOKEN.to_owned());
            config.secrets_env = std::sync::Arc::new(env);
            config.tools.retry_base = Duration::from_millis(20);
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = mesh.client("acme");
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = server.url.clone();
    for (name, spec) in [
        (
            "add",
            json!({"type": "mcp", "description": "adds a and b",
                   "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]},
                   "config": {"url": url},
                   "authentication": {"bearerToken": {"env": "MCP_TOKEN"}}}),
        ),
        (
            "hello",
            json!({"type": "mcp", "config": {"url": url, "tool": "greet"}}),
        ),
        ("explode", json!({"type": "mcp", "config": {"url": url}})),
        (
            "missing",
            json!({"type": "mcp", "config": {"url": url, "tool": "nope"}}),
        ),
        (
            "offline",
            json!({"type": "mcp", "config": {"url": format!("http://127.0.0.1:{closed_port}/mcp")},
                   "retries": 1, "timeout": "5s"}),
        ),
    ] {
        let (status, body) = put(&client, &format!("/v1/tools/{name}"), spec).await;
        assert_eq!(status, 201, "{name}: {body}");
    }
    let turns = json!([
        {"tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
        {"tool_calls": [
            {"name": "add", "arguments": {"a": 40, "b": 2}},
            {"name": "hello", "arguments": {"name": "Ada"}},
            {"name": "explode", "arguments": {}},
            {"name": "missing", "arguments": {}},
            {"name": "offline", "arguments": {}},
            {"name": "hello", "arguments": {"nom": "Ada"}}
        ]},
        {"content": "{{tool_results}}"}
    ]);
    let refs: Vec<Value> = ["add", "hello", "explode", "missing", "offline"]
        .iter()
        .map(|n| json!({"ref": n}))
        .collect();
    let (status, body) = put(
        &client,
        "/v1/agents/mcp-user",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": refs}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("mcp-user", "use the server").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let output = task["output"].as_str().unwrap();
    let parts: Vec<&str> = output.split(" | ").collect();
    assert_eq!(parts.len(), 6, "{output}");
    assert_eq!(parts[0], "sum=42");
    assert_eq!(parts[1], "hello, Ada");
    assert!(parts[2].contains("the reactor is offline"), "{}", parts[2]);
    assert!(
        parts[3].contains(r#"has no tool named "nope" (it has: add, explode, greet)"#),
        "{}",
        parts[3]
    );
    assert!(
        parts[4].contains("could not be reached") && parts[4].contains("after 2 attempts"),
        "{}",
        parts[4]
    );
    assert!(parts[5].contains("name"), "{}", parts[5]);

    // Each call reached the server once, by its remote name, with the
    // token and its (task, step, call) idempotency key.
    let calls = server.calls();
    let named =
        |name: &str| -> Vec<&Value> { calls.iter().filter(|c| c["name"] == name).collect() };
    let adds = named("add");
    assert_eq!(adds.len(), 2, "{calls:?}");
    let mut steps = Vec::new();
    for call in &adds {
        assert_eq!(call["authorization"], format!("Bearer {TOKEN}"), "{call}");
        let key = call["meta"]["agentmesh.dev/idempotencyKey"]
            .as_str()
            .unwrap();
        let mut parts = key.splitn(3, ':');
        assert_eq!(parts.next(), Some(id.as_str()), "{key}");
        steps.push((
            parts.next().unwrap().to_owned(),
            call["arguments"]["a"].as_f64().unwrap(),
        ));
    }
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(steps, vec![("1".to_owned(), 2.0), ("2".to_owned(), 40.0)]);
    assert_eq!(
        named("greet").len(),
        1,
        "the refused call never ran: {calls:?}"
    );
    assert_eq!(named("greet")[0]["arguments"]["name"], "Ada");
    assert_eq!(named("explode").len(), 1, "a tool's failure is not retried");
    // The session of a tool is opened once per task: both steps' adds
    // went over the same one.
    assert_eq!(adds[0]["session"], adds[1]["session"], "{calls:?}");
    assert!(adds[0]["session"].is_string(), "{calls:?}");

    let events = client.events(&id, None, WAIT).await.unwrap();
    let flags: Vec<bool> = events
        .iter()
        .filter(|e| e.event == "tool_result")
        .map(|e| e.data["isError"].as_bool().unwrap())
        .collect();
    assert_eq!(
        (
            flags.iter().filter(|e| !**e).count(),
            flags.iter().filter(|e| **e).count()
        ),
        (3, 4),
        "three results and four errors: {events:?}"
    );
    assert!(!format!("{events:?}").contains(TOKEN), "the token leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mcp_tool_specs_are_checked() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let client = mesh.client("acme");
    for (spec, field) in [
        (
            json!({"type": "mcp", "config": {"url": "ftp://x/mcp"}}),
            "config.url",
        ),
        (
            json!({"type": "mcp", "config": {"url": "http://x/mcp", "tool": ""}}),
            "config.tool",
        ),
        (json!({"type": "mcp", "config": {}}), "config"),
    ] {
        let (status, body) = put(&client, "/v1/tools/bad", spec).await;
        assert_eq!(status, 400, "{body}");
        let got = body["error"]["field"].as_str().unwrap_or_default();
        assert!(got.starts_with(field), "expected {field}: {body}");
    }
}
