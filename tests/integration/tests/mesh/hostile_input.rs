//! Hostile clients at the mesh's listeners: a slow or silent client is
//! disconnected within the configured header deadline, a slow body is 408,
//! oversized heads are 431, an oversized gRPC message is refused rather
//! than hanging, and string and list bounds of the REST and gRPC APIs are a
//! 400 / INVALID_ARGUMENT naming the field. Legitimately long responses
//! (Server-Sent Events) outlive every one of those deadlines.
//!
//! `bad_input` covers malformed JSON, the input and body size limits and
//! page sizes; nothing here repeats it. Deadlines are set short (2 s) and
//! the assertions wait generously (15 s), so a slow machine does not fail
//! them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_auth::Role;
use mesh_integration::mesh::{MeshOptions, postgres_mesh, service_token};
use mesh_runtime::ServerLimits;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The deadlines the services run with here.
const DEADLINE: Duration = Duration::from_secs(2);
/// How long a test waits for a deadline to act: generous, so a loaded
/// two-core machine does not flake, and still far below "forever".
const PATIENCE: Duration = Duration::from_secs(15);
/// The head size limit the services run with here.
const MAX_HEADER_BYTES: usize = 16 * 1024;

fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: DEADLINE,
        body_timeout: DEADLINE,
        max_header_bytes: MAX_HEADER_BYTES,
        ..ServerLimits::default()
    }
}

async fn mesh(retrieval: bool) -> mesh_integration::Mesh {
    postgres_mesh(MeshOptions {
        server_limits: Some(limits()),
        start_worker: false,
        retrieval,
        ..Default::default()
    })
    .await
}

/// Writes `trickle` one byte a second until the server closes the
/// connection; what the server sent, or `None` when it was still open after
/// [`PATIENCE`].
async fn closed_by_server(addr: SocketAddr, trickle: &[u8]) -> Option<Vec<u8>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let read = async move {
        let mut received = Vec::new();
        let mut buf = [0_u8; 4096];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return received,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    let trickle = trickle.to_vec();
    let write = async move {
        for byte in trickle {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if writer.write_all(&[byte]).await.is_err() {
                break;
            }
        }
        // Keep the write half open: closing it would end the request.
        std::future::pending::<()>().await;
        writer
    };
    tokio::time::timeout(PATIENCE, async {
        tokio::select! {
            received = read => received,
            _ = write => unreachable!("the writer never finishes"),
        }
    })
    .await
    .ok()
}

/// Sends `request` whole and reads the answer until the server closes the
/// connection; panics when it is still open after [`PATIENCE`].
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may refuse the head before it has read all of it, and a
    // reset then cuts the write short; what it answered is still read.
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0_u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{addr}: still open after {PATIENCE:?}");
    received
}

fn status_line(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A GET with `headers` and `Connection: close`.
fn get_with(path: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: mesh\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_silent_and_oversized_clients_are_cut_off() {
    let mesh = mesh(false).await;
    let orchestrator = mesh.orchestrator.as_ref().expect("orchestrator").grpc_addr;
    let http_faces = [
        ("gateway http", mesh.gateway.http_addr),
        ("gateway admin", mesh.gateway.admin_addr),
        ("router http", mesh.router.http_addr),
        ("trace-collector otlp/http", mesh.traces.http_addr),
    ];

    // Slowloris: a head trickling in at a byte a second never completes;
    // the connection is closed once the header deadline passes.
    let slow_head = b"GET /v1/tasks HTTP/1.1\r\nHost: mesh\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut slow = Vec::new();
    for (face, addr) in [
        ("gateway http", mesh.gateway.http_addr),
        ("trace-collector otlp/http", mesh.traces.http_addr),
    ] {
        slow.push((face, tokio::spawn(closed_by_server(addr, slow_head))));
    }
    // Silent clients connect and send nothing, on every kind of listener.
    let mut silent = Vec::new();
    for (face, addr) in http_faces.iter().copied().chain([
        ("gateway grpc", mesh.gateway.grpc_addr),
        ("router grpc", mesh.router.grpc_addr),
        ("trace-collector otlp/grpc", mesh.traces.grpc_addr),
        ("orchestrator grpc", orchestrator),
    ]) {
        silent.push((face, tokio::spawn(closed_by_server(addr, b""))));
    }
    let started = Instant::now();
    for (face, closed) in slow.into_iter().chain(silent) {
        let answer = closed.await.expect("join");
        let answer = answer.unwrap_or_else(|| panic!("{face}: still open after {PATIENCE:?}"));
        // hyper answers a late head with 408 before it closes; a silent
        // connection is closed without a word.
        assert!(
            answer.is_empty() || status_line(&answer).starts_with("HTTP/1.1 408"),
            "{face}: {}",
            status_line(&answer)
        );
    }
    assert!(started.elapsed() < PATIENCE + Duration::from_secs(5));

    // A head over the size limit is 431 (or a connection reset, when the
    // server closed with the rest of the head unread), and so are too many
    // headers; the same request with a small header is served normally.
    let big = vec![("X-Big".to_owned(), "b".repeat(2 * MAX_HEADER_BYTES))];
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("X-Many-{i}"), "m".to_owned()))
        .collect();
    for (face, addr) in http_faces {
        let normal = status_line(&exchange(addr, &get_with("/healthz", &[])).await);
        assert!(
            normal.starts_with("HTTP/1.1 ") && !normal.contains(" 431 "),
            "{face}: {normal}"
        );
        let answer = exchange(addr, &get_with("/healthz", &big)).await;
        assert!(
            answer.is_empty() || status_line(&answer).starts_with("HTTP/1.1 431"),
            "{face}, header size: {}",
            status_line(&answer)
        );
        // Many small headers fit the buffer: the answer always arrives.
        let answer = exchange(addr, &get_with("/healthz", &many)).await;
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 431"),
            "{face}, header count: {}",
            status_line(&answer)
        );
    }

    // A body that stops arriving is 408 once the body deadline passes.
    let token = mesh.token("acme", &[Role::Operator]);
    for (face, addr, path, auth) in [
        (
            "gateway",
            mesh.gateway.http_addr,
            "/v1/agents/support/tasks",
            Some(token.as_str()),
        ),
        (
            "router",
            mesh.router.http_addr,
            "/v1/chat/completions",
            None,
        ),
    ] {
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: mesh\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
        );
        if let Some(token) = auth {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n{\"input\": \"");
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(PATIENCE, async {
            let mut buf = [0_u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{face}: no answer to a stalled body");
        assert!(
            status_line(&answer).starts_with("HTTP/1.1 408"),
            "{face}: {}",
            String::from_utf8_lossy(&answer)
        );
        // Not before the deadline: the client had its full time.
        assert!(started.elapsed() >= DEADLINE - Duration::from_millis(100));
    }

    // Every service is still up.
    for (face, addr) in [
        ("gateway", mesh.gateway.admin_addr),
        ("router", mesh.router.admin_addr),
        ("trace-collector", mesh.traces.admin_addr),
    ] {
        let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200, "{face}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_outlives_the_request_deadlines() {
    let mesh = mesh(false).await;
    let client = mesh.client("acme");
    client.apply_sim_agent("support", 4).await.unwrap();
    // No worker runs: the task stays queued and its event stream open.
    let id = client.submit("support", "wait").await.unwrap();
    let mut events = client
        .get(&format!("/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let open_for = DEADLINE * 3;
    let started = Instant::now();
    while started.elapsed() < open_for {
        let left = open_for.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, events.chunk()).await {
            // Time is up with the stream still open.
            Err(_) => break,
            Ok(Ok(Some(_))) => {}
            Ok(other) => panic!(
                "the event stream ended after {:?}: {other:?}",
                started.elapsed()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_grpc_messages_are_refused_not_hung() {
    let mesh = mesh(false).await;
    mesh.client("acme")
        .apply_sim_agent("support", 4)
        .await
        .unwrap();
    let refused = [
        tonic::Code::OutOfRange,
        tonic::Code::ResourceExhausted,
        tonic::Code::InvalidArgument,
    ];

    // The gateway's public face: a message over its body limit (256 KiB).
    let mut tasks =
        mesh_proto::task_service_client::TaskServiceClient::connect(mesh.gateway_grpc_url())
            .await
            .unwrap();
    let mut request = tonic::Request::new(mesh_proto::SubmitTaskRequest {
        agent: "support".into(),
        input: "x".repeat(300 * 1024),
        ..Default::default()
    });
    let token = format!("Bearer {}", mesh.token("acme", &[Role::User]));
    request
        .metadata_mut()
        .insert("authorization", token.parse().unwrap());
    let status = tokio::time::timeout(PATIENCE, tasks.submit_task(request))
        .await
        .expect("answered")
        .unwrap_err();
    assert!(refused.contains(&status.code()), "{status:?}");

    // An internal face (the collector's query API, 4 MiB messages).
    let mut query = mesh_proto::trace_query_client::TraceQueryClient::connect(format!(
        "http://{}",
        mesh.traces.grpc_addr
    ))
    .await
    .unwrap();
    let internal = |message: mesh_proto::ListTracesRequest| {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            mesh_runtime::service_auth::TOKEN_HEADER,
            service_token().parse().unwrap(),
        );
        request
            .metadata_mut()
            .insert(mesh_runtime::grpc::TENANT_METADATA, "acme".parse().unwrap());
        request
    };
    let status = tokio::time::timeout(
        PATIENCE,
        query.list_traces(internal(mesh_proto::ListTracesRequest {
            agent: "a".repeat(5 * 1024 * 1024),
            ..Default::default()
        })),
    )
    .await
    .expect("answered")
    .unwrap_err();
    assert!(refused.contains(&status.code()), "{status:?}");

    // Under the message limit but over the filter's bound: the field.
    let status = query
        .list_traces(internal(mesh_proto::ListTracesRequest {
            user_id: "u".repeat(600),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("user_id:"),
        "{}",
        status.message()
    );
    // The server still serves the same connection.
    query
        .list_traces(internal(mesh_proto::ListTracesRequest::default()))
        .await
        .unwrap();
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn string_and_list_bounds_name_the_field() {
    let mesh = mesh(true).await;
    let client = mesh.client("acme");
    let created = client
        .post("/v1/collections")
        .json(&json!({"name": "docs", "embeddingModel": "none", "dimension": 3}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    let upserted = client
        .post("/v1/collections/docs/documents")
        .json(&json!({"documents": [
            {"id": "d1", "text": "one", "metadata": {"lang": "en"}, "vector": [1.0, 0.0, 0.0]}
        ]}))
        .send()
        .await
        .unwrap();
    assert!(upserted.status().is_success(), "{}", upserted.status());

    let many_values: Vec<String> = (0..300).map(|i| format!("v{i}")).collect();
    let many_conditions: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many_ids: Vec<String> = (0..1001).map(|i| format!("d{i}")).collect();
    let cases = [
        (
            client.post("/v1/collections/docs/search").json(&json!({
                "vector": [1.0, 0.0, 0.0], "topK": 3,
                "filter": {"lang": {"$in": many_values}}
            })),
            "filter.all[0].anyOf",
        ),
        (
            client.post("/v1/collections/docs/search").json(&json!({
                "vector": [1.0, 0.0, 0.0], "topK": 3,
                "filter": {"lang": {"$in": ["en", "x".repeat(2000)]}}
            })),
            "filter.all[0].anyOf[1]",
        ),
        (
            client.post("/v1/collections/docs/search").json(&json!({
                "vector": [1.0, 0.0, 0.0], "topK": 3, "filter": many_conditions
            })),
            "filter.all",
        ),
        (
            client
                .post("/v1/collections/docs/documents/delete")
                .json(&json!({"ids": many_ids})),
            "ids",
        ),
        (
            client
                .post("/v1/collections/docs/documents/delete")
                .json(&json!({"ids": ["d1", "i".repeat(300)]})),
            "ids[1]",
        ),
        (
            client.get(&format!(
                "/v1/collections/docs/documents/{}",
                "i".repeat(300)
            )),
            "id",
        ),
    ];
    for (i, (request, field)) in cases.into_iter().enumerate() {
        let (status, error) = error_of(request.send().await.unwrap()).await;
        assert_eq!(status, 400, "case {i}: {error}");
        assert_eq!(error["field"], field, "case {i}: {error}");
    }

    // Trace list filters (relayed to the collector): the message names
    // the filter.
    for name in ["agent", "session_id", "user_id"] {
        let (status, error) = error_of(
            client
                .get("/v1/traces")
                .query(&[(name, "t".repeat(600))])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "{name}: {error}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{name}:"))),
            "{name}: {error}"
        );
    }

    // Within the bounds, the same requests are served.
    let found = client
        .post("/v1/collections/docs/search")
        .json(&json!({"vector": [1.0, 0.0, 0.0], "topK": 3, "filter": {"lang": {"$in": ["en", "de"]}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(found.status(), 200);
    let found: Value = found.json().await.unwrap();
    assert_eq!(found["hits"][0]["documentId"], "d1", "{found}");
    let listed = client
        .get("/v1/traces")
        .query(&[("agent", "support")])
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
}
