#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

//! Traces through the gateway: the caller's token decides the tenant, the
//! trace-collector answers; another tenant's trace is not found.

use std::time::Duration;

use mesh_auth::Role;
use mesh_integration::{Mesh, MeshOptions, RestClient};
use serde_json::{Value, json};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn one_span_trace() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent-worker"}}]},
        "scopeSpans": [{"scope": {"name": "agentmesh"}, "spans": [{
            "traceId": TRACE_ID,
            "spanId": "b7ad6b7169203331",
            "parentSpanId": "",
            "name": "invoke_agent support",
            "kind": 1,
            "startTimeUnixNano": (now - 5_000_000).to_string(),
            "endTimeUnixNano": now.to_string(),
            "attributes": [{"key": "gen_ai.operation.name", "value": {"stringValue": "invoke_agent"}}],
            "status": {}
        }]}]
    }]})
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traces_are_served_through_the_gateway_for_the_tokens_tenant_only() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let exported = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", mesh.traces.http_addr))
        .header("agentmesh-tenant", "acme")
        .header(
            "agentmesh-service-token",
            mesh_integration::mesh::service_token(),
        )
        .json(&one_span_trace())
        .send()
        .await
        .unwrap();
    assert_eq!(exported.status(), 200);

    let acme = RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token("acme", &[Role::Viewer]),
    );
    let path = format!("/v1/traces/{TRACE_ID}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let trace: Value = loop {
        let response = acme.get(&path).send().await.unwrap();
        if response.status() == 200 {
            break response.json().await.unwrap();
        }
        assert_eq!(response.status(), 404, "stored asynchronously, then found");
        assert!(tokio::time::Instant::now() < deadline, "trace never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(trace["observations"][0]["type"], "agent", "{trace}");
    let list: Value = acme
        .get("/v1/traces?limit=5")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");

    let globex = RestClient::new(acme.base.clone(), mesh.token("globex", &[Role::Viewer]));
    assert_eq!(globex.get(&path).send().await.unwrap().status(), 404);
    let list: Value = globex
        .get("/v1/traces")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // Aggregates: the token's tenant only, parameters checked by name.
    let totals: Value = acme
        .get("/v1/traces/aggregates?by=agent&interval=1h")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(totals["unit"], "trace", "{totals}");
    let counted: i64 = totals["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 1, "{totals}");
    let none: Value = globex
        .get("/v1/traces/aggregates")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"], json!([]), "{none}");
    for (query, field) in [("tenant=acme", "tenant"), ("by=user", "by")] {
        let response = acme
            .get(&format!("/v1/traces/aggregates?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body.to_string().contains(field),
            "{query}: the error names {field}: {body}"
        );
    }

    assert_eq!(
        acme.http
            .get(acme.url(&path))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // The CLI's waterfall of the same trace, through the same gateway.
    let cli = agentmesh_cli();
    let run = |token: String, args: &[&str]| {
        std::process::Command::new(&cli)
            .args([
                "--url",
                &acme.base,
                "--token",
                &token,
                "--data-dir",
                "/nonexistent",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(
        mesh.token("acme", &[Role::Viewer]),
        &["trace", TRACE_ID, "--color", "always"],
    );
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{view}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        view.starts_with("\x1b[1mtrace\x1b[0m 0af7651916cd43dd8448eb211c80319c\n"),
        "{view}"
    );
    let line = view
        .lines()
        .find(|l| l.starts_with("invoke_agent support"))
        .unwrap_or_else(|| panic!("no root line in\n{view}"));
    assert!(
        line.contains(" agent ") && line.contains("5 ms") && line.contains('█'),
        "{line}"
    );
    let out = run(
        mesh.token("acme", &[Role::Viewer]),
        &["-o", "json", "trace", TRACE_ID],
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["trace_id"], TRACE_ID);
    let out = run(
        mesh.token("acme", &[Role::Viewer]),
        &["traces", "--status", "ok"],
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && listed
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with(TRACE_ID)),
        "{listed}"
    );
    let out = run(mesh.token("globex", &[Role::Viewer]), &["traces"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "only the header"
    );
    let out = run(mesh.token("globex", &[Role::Viewer]), &["trace", TRACE_ID]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );

    let bad = acme.get("/v1/traces/not-hex").send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let unknown = acme.get("/v1/traces?tenant=globex").send().await.unwrap();
    assert_eq!(
        unknown.status(),
        400,
        "the tenant comes from the token, never a parameter"
    );

    // The public gRPC face: agentmesh.v1.TraceQuery, tenant from the token.
    let mut traces =
        mesh_proto::trace_query_client::TraceQueryClient::connect(mesh.gateway_grpc_url())
            .await
            .unwrap();
    let get = |token: String| {
        bearer(
            token,
            mesh_proto::GetTraceRequest {
                trace_id: TRACE_ID.into(),
            },
        )
    };
    let tree = traces
        .get_trace(get(mesh.token("acme", &[Role::Viewer])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tree.trace.as_ref().unwrap().trace_id, TRACE_ID);
    assert_eq!(tree.observations[0].r#type, "agent", "{tree:?}");
    assert_eq!(tree.observations[0].name, "invoke_agent support");
    let other = traces
        .get_trace(get(mesh.token("globex", &[Role::Viewer])))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);
    let anonymous = traces
        .get_trace(tonic::Request::new(mesh_proto::GetTraceRequest {
            trace_id: TRACE_ID.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    // A tenant header from the caller is ignored: the token decides.
    let mut smuggled = bearer(
        mesh.token("globex", &[Role::Viewer]),
        mesh_proto::ListTracesRequest::default(),
    );
    smuggled
        .metadata_mut()
        .insert("agentmesh-tenant", "acme".parse().unwrap());
    let listed = traces.list_traces(smuggled).await.unwrap().into_inner();
    assert!(listed.traces.is_empty(), "{listed:?}");
    let listed = traces
        .list_traces(bearer(
            mesh.token("acme", &[Role::Viewer]),
            mesh_proto::ListTracesRequest {
                status: "ok".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.traces.len(), 1);
    assert_eq!(listed.traces[0].trace_id, TRACE_ID);
    let bad = traces
        .list_traces(bearer(
            mesh.token("acme", &[Role::Viewer]),
            mesh_proto::ListTracesRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("page_token:"), "{bad:?}");
    let totals = traces
        .aggregates(bearer(
            mesh.token("acme", &[Role::Viewer]),
            mesh_proto::TraceAggregatesRequest {
                by: "agent".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(totals.buckets.iter().map(|b| b.count).sum::<i64>(), 1);
}

fn bearer<T>(token: String, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}
