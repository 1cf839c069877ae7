//! `code` tools end to end: a scripted model has the worker run Python in
//! its sandbox (bubblewrap plus rlimits). A plain computation returns what
//! it printed; each escape attempt (a socket to a live host service, a
//! write outside the work directory, a fork bomb, 10 GB of memory, a busy
//! loop, a sleep past the wall time, an output flood) ends as a tool error
//! that names the limit, nothing of the run survives it, and the worker
//! goes on to complete the next task.
//!
//! The worker must run as root (it drops each run to a user id of its
//! own), with `bwrap` and `prlimit` installed: `scripts/test` sees to both.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use mesh_integration::tool_server::{ToolServer, ToolServerOptions};
use mesh_integration::{Mesh, MeshOptions, RestClient};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn script(turns: Value) -> String {
    format!("You are a test agent.\n[[agentmesh-sim-script]]\n{turns}")
}

async fn put(client: &RestClient, path: &str, spec: Value) -> (reqwest::StatusCode, Value) {
    let response = client.put(path).json(&spec).send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Runs `code` as the only call of a one-step agent and returns the task.
async fn run_once(client: &RestClient, agent: &str, code: &str) -> Value {
    let turns = json!([
        {"tool_calls": [{"name": "python", "arguments": {"code": code}}]},
        {"content": "{{tool_results}}"}
    ]);
    let (status, body) = put(
        client,
        &format!("/v1/agents/{agent}"),
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [{"ref": "python"}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit(agent, "compute").await.unwrap();
    client.wait_for(&id, &["succeeded"], WAIT).await.unwrap()
}

/// Processes of the sandbox's user ids still alive on this machine.
fn sandbox_processes(uid_base: u32, slots: u32) -> Vec<String> {
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|u| u.parse::<u32>().ok());
        if uid.is_some_and(|u| (uid_base..uid_base + slots).contains(&u)) {
            left.push(status.lines().take(3).collect::<Vec<_>>().join(" "));
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_runs_sandboxed_and_every_escape_is_stopped() {
    let mesh = Mesh::start(MeshOptions {
        worker_config: Some(|config| {
            config.tools.code.max_output_bytes = 16 * 1024;
            config.tools.max_output_chars = 64 * 1024;
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let code_limits = mesh.worker_config().unwrap().tools.code;
    // A live service on the host's loopback, for the socket attempt.
    let host_service = ToolServer::start(ToolServerOptions::default())
        .await
        .unwrap();
    let client = mesh.client("acme");
    let (status, body) = put(
        &client,
        "/v1/tools/python",
        json!({"type": "code", "description": "runs Python 3",
               "config": {"cpuSeconds": 1, "memoryMb": 128, "maxProcesses": 8},
               "timeout": "30s"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["config"]["language"], "python", "{body}");
    // The same with a short wall time, for the sleeper.
    let (status, body) = put(
        &client,
        "/v1/tools/python_short",
        json!({"type": "code", "timeout": "2s"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    let escape_file = format!("/etc/agentmesh-escape-{}", uuid::Uuid::new_v4().simple());
    let port = host_service.addr.port();
    let attempts = [
        // 0: a plain computation, using the private work directory.
        "open('n.txt', 'w').write('7')\nprint(sum(i * i for i in range(10)), open('/work/n.txt').read())"
            .to_owned(),
        // 1: a socket to a service that is listening on the host.
        format!(
            "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=3)\ns.sendall(b'POST /add HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(100))"
        ),
        // 2: a write outside the work directory.
        format!("open('{escape_file}', 'w').write('escaped')"),
        // 3: a fork bomb.
        "import os\nwhile True:\n    os.fork()".to_owned(),
        // 4: 10 GB of memory.
        "x = bytearray(10 * 1024 ** 3)\nprint(len(x))".to_owned(),
        // 5: a busy loop.
        "while True:\n    pass".to_owned(),
        // 6: a sleep past the wall time.
        "print('waiting')\nimport time\ntime.sleep(600)".to_owned(),
        // 7: an output flood.
        "while True:\n    print('x' * 1000)".to_owned(),
        // 8: an ordinary bug.
        "print('before')\n1 / 0".to_owned(),
    ];
    let calls: Vec<Value> = attempts
        .iter()
        .enumerate()
        .map(|(i, code)| {
            let tool = if i == 6 { "python_short" } else { "python" };
            json!({"name": tool, "arguments": {"code": code}})
        })
        .collect();
    let turns = json!([{"tool_calls": calls}, {"content": "{{tool_results}}"}]);
    let (status, body) = put(
        &client,
        "/v1/agents/escaper",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [{"ref": "python"}, {"ref": "python_short"}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("escaper", "try to get out").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let output = task["output"].as_str().unwrap();
    let parts: Vec<&str> = output.split(" | ").collect();
    assert_eq!(parts.len(), attempts.len(), "{output}");

    assert_eq!(parts[0].trim(), "285 7");
    let expectations: [(usize, &[&str]); 8] = [
        (1, &["the sandbox has no network", "Connection refused"]),
        (
            2,
            &["only /work and /tmp are writable", "Read-only file system"],
        ),
        (3, &["reached its limit of 8 processes"]),
        (4, &["ran out of memory (limit 128 MiB", "MemoryError"]),
        (5, &["used up its CPU time limit of 1 s"]),
        (
            6,
            &["ran longer than its wall time limit of 2000 ms", "waiting"],
        ),
        (7, &["printed more than 16384 bytes and was stopped"]),
        (8, &["exited with status 1", "ZeroDivisionError", "before"]),
    ];
    for (index, needles) in expectations {
        for needle in needles {
            assert!(
                parts[index].contains(needle),
                "attempt {index}: expected {needle:?} in {}",
                parts[index]
            );
        }
    }
    let events = client.events(&id, None, WAIT).await.unwrap();
    let errors: Vec<bool> = events
        .iter()
        .filter(|e| e.event == "tool_result")
        .map(|e| e.data["isError"].as_bool().unwrap())
        .collect();
    assert_eq!(errors.len(), attempts.len());
    assert_eq!(
        errors.iter().filter(|e| !**e).count(),
        1,
        "only the plain computation succeeds: {errors:?}"
    );

    // Nothing got out: the host service was never reached, the file was
    // never written, and no process of any run is left.
    assert!(
        host_service.calls().is_empty(),
        "the socket reached the host"
    );
    assert!(!std::path::Path::new(&escape_file).exists());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = sandbox_processes(code_limits.uid_base, code_limits.max_concurrent);
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes of the sandbox outlived their calls: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The worker is unharmed: it is healthy and the next task completes.
    let health = reqwest::get(format!(
        "http://{}/healthz",
        mesh.worker.as_ref().unwrap().admin_addr
    ))
    .await
    .unwrap();
    assert!(health.status().is_success());
    let next = run_once(&client, "after", "import math\nprint(math.factorial(10))").await;
    assert_eq!(next["output"].as_str().unwrap().trim(), "3628800", "{next}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_tool_specs_are_checked() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let client = mesh.client("acme");
    for (spec, field) in [
        (
            json!({"type": "code", "config": {"language": "ruby"}}),
            "config.language",
        ),
        (
            json!({"type": "code", "config": {"memoryMb": 8}}),
            "config.memoryMb",
        ),
        (
            json!({"type": "code", "parameters": {"type": "object", "properties": {"source": {"type": "string"}}}}),
            "parameters.properties.code",
        ),
    ] {
        let (status, body) = put(&client, "/v1/tools/bad", spec).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    // The model is offered `code`; arguments without it are refused
    // before anything runs.
    let (status, body) = put(&client, "/v1/tools/python", json!({"type": "code"})).await;
    assert_eq!(status, 201, "{body}");
    let turns = json!([
        {"tool_calls": [{"name": "python", "arguments": {"source": "print(1)"}}]},
        {"content": "{{tool_results}}"}
    ]);
    let (status, body) = put(
        &client,
        "/v1/agents/sloppy",
        json!({"model": "sim-model", "systemPrompt": script(turns), "tools": [{"ref": "python"}]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = client.submit("sloppy", "go").await.unwrap();
    let task = client.wait_for(&id, &["succeeded"], WAIT).await.unwrap();
    let output = task["output"].as_str().unwrap();
    assert!(
        output.contains("do not match the tool's parameters") && output.contains("code"),
        "{output}"
    );
}
