//! Listing agents and their versions through the gateway on PostgreSQL:
//! a tenant sees only its own agents, pages follow a cursor to the end,
//! versions come newest first and an old version's spec is returned as it
//! was applied; unknown agents and versions are 404 / NOT_FOUND, bad page
//! sizes 400 / INVALID_ARGUMENT naming the field.
#![allow(clippy::unwrap_used)]

use mesh_auth::Role;
use mesh_integration::{MeshOptions, postgres_mesh};
use serde_json::{Value, json};

struct Face {
    base: String,
    http: reqwest::Client,
}

impl Face {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut builder = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, token, None).await
    }

    async fn apply(&self, token: &str, name: &str, model: &str, prompt: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/agents/{name}"),
                token,
                Some(json!({"model": model, "systemPrompt": prompt})),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
}

fn names(page: &Value) -> Vec<String> {
    page["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
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

async fn cli(base: &str, token: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new(agentmesh_cli())
        .args(["--url", base, "--token", token])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .expect("the CLI took over 120 s")
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn with<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_and_versions_are_listed_per_tenant_a_page_at_a_time() {
    let mesh = postgres_mesh(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let face = Face {
        base: format!("http://{}", mesh.gateway.http_addr),
        http: reqwest::Client::new(),
    };
    let acme = mesh.token("acme", &[Role::Operator]);
    let acme_viewer = mesh.token("acme", &[Role::Viewer]);
    let globex = mesh.token("globex", &[Role::Operator]);

    for name in [
        "support-1",
        "support-2",
        "support-3",
        "support-4",
        "billing",
    ] {
        face.apply(&acme, name, "sim-model", "v1").await;
    }
    face.apply(&globex, "support-9", "sim-model", "globex")
        .await;
    // Two more versions of one agent: a new prompt, then a new model.
    face.apply(&acme, "support-1", "sim-model", "v2").await;
    face.apply(&acme, "support-1", "other-model", "v3").await;

    // Pages of two follow the cursor to the end: every agent of acme once,
    // by name, none of globex's.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/v1/agents?limit=2".to_owned(),
            Some(c) => format!("/v1/agents?limit=2&cursor={c}"),
        };
        let (status, page) = face.get(&path, &acme_viewer).await;
        assert_eq!(status, 200, "{page}");
        assert!(names(&page).len() <= 2, "{page}");
        seen.extend(names(&page));
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10, "the cursor never ends");
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        [
            "billing",
            "support-1",
            "support-2",
            "support-3",
            "support-4"
        ]
    );

    // Each item names its current version, model and update time.
    let (_, all) = face.get("/v1/agents?prefix=support-1", &acme_viewer).await;
    assert_eq!(names(&all), ["support-1"]);
    let item = &all["agents"][0];
    assert_eq!(item["version"], 3);
    assert_eq!(item["model"], "other-model");
    assert!(item["updatedAt"].as_str().unwrap().ends_with('Z'), "{item}");
    assert!(all["nextCursor"].is_null());

    let (status, theirs) = face.get("/v1/agents", &globex).await;
    assert_eq!(status, 200);
    assert_eq!(names(&theirs), ["support-9"]);

    // Versions: newest first, paged, and an old version as it was applied.
    let (status, first) = face
        .get("/v1/agents/support-1/versions?limit=2", &acme_viewer)
        .await;
    assert_eq!(status, 200, "{first}");
    let versions: Vec<u64> = first["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [3, 2]);
    assert_eq!(first["versions"][0]["model"], "other-model");
    let cursor = first["nextCursor"].as_str().unwrap().to_owned();
    let (_, rest) = face
        .get(
            &format!("/v1/agents/support-1/versions?limit=2&cursor={cursor}"),
            &acme_viewer,
        )
        .await;
    assert_eq!(rest["versions"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["versions"][0]["version"], 1);
    assert!(rest["nextCursor"].is_null());
    let applied_3 = first["versions"][0]["appliedAt"].as_str().unwrap();
    let applied_1 = rest["versions"][0]["appliedAt"].as_str().unwrap();
    assert!(applied_3 >= applied_1, "{applied_3} < {applied_1}");

    let (status, v1) = face
        .get("/v1/agents/support-1/versions/1", &acme_viewer)
        .await;
    assert_eq!(status, 200, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["spec"]["systemPrompt"], "v1");
    assert!(
        v1["spec"]["model"].to_string().contains("sim-model"),
        "{v1}"
    );
    let (_, v2) = face
        .get("/v1/agents/support-1/versions/2", &acme_viewer)
        .await;
    assert_eq!(v2["spec"]["systemPrompt"], "v2");

    // Unknown agents and versions, and another tenant's agent: 404.
    for (path, token) in [
        ("/v1/agents/nobody/versions", &acme_viewer),
        ("/v1/agents/nobody/versions/1", &acme_viewer),
        ("/v1/agents/support-1/versions/9", &acme_viewer),
        ("/v1/agents/support-9/versions", &acme_viewer),
        ("/v1/agents/support-1/versions/1", &globex),
    ] {
        let (status, body) = face.get(path, token).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }

    // Bad input names the field.
    for (path, field) in [
        ("/v1/agents?limit=100000", "limit"),
        ("/v1/agents?limit=0", "limit"),
        ("/v1/agents?limit=two", "limit"),
        ("/v1/agents?prefix=a%25", "prefix"),
        ("/v1/agents?prefix=support_", "prefix"),
        ("/v1/agents?cursor=..", "cursor"),
        ("/v1/agents?sort=name", "sort"),
        ("/v1/agents/support-1/versions?limit=100000", "limit"),
        ("/v1/agents/support-1/versions?cursor=x", "cursor"),
        ("/v1/agents/support-1/versions/0", "version"),
        ("/v1/agents/support-1/versions/latest", "version"),
    ] {
        let (status, body) = face.get(path, &acme_viewer).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["field"], field, "{path}: {body}");
    }

    // Tools keep their versions the same way.
    for endpoint in ["http://127.0.0.1:9/v1", "http://127.0.0.1:9/v2"] {
        let (status, body) = face
            .call(
                reqwest::Method::PUT,
                "/v1/tools/lookup",
                &acme,
                Some(json!({"type": "api", "config": {"endpoint": endpoint}})),
            )
            .await;
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    let (status, tool_versions) = face.get("/v1/tools/lookup/versions", &acme_viewer).await;
    assert_eq!(status, 200, "{tool_versions}");
    let order: Vec<u64> = tool_versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(order, [2, 1]);
    let (status, first_tool) = face.get("/v1/tools/lookup/versions/1", &acme_viewer).await;
    assert_eq!(status, 200, "{first_tool}");
    assert_eq!(first_tool["version"], 1);
    assert!(
        first_tool["spec"].to_string().contains("127.0.0.1:9/v1"),
        "{first_tool}"
    );
    let (status, _) = face.get("/v1/tools/lookup/versions/1", &globex).await;
    assert_eq!(status, 404);
    // A tool's versions take the tool-name alphabet (either case, `_`),
    // the one it was applied with, not the agent-name one.
    let (status, body) = face
        .call(
            reqwest::Method::PUT,
            "/v1/tools/Lookup_V2",
            &acme,
            Some(json!({"type": "api", "config": {"endpoint": "http://127.0.0.1:9/v3"}})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    let (status, body) = face.get("/v1/tools/Lookup_V2/versions", &acme_viewer).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["versions"][0]["version"], 1, "{body}");
    let (status, body) = face
        .get("/v1/tools/Lookup_V2/versions/1", &acme_viewer)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = face
        .get("/v1/tools/lookup/versions?limit=100000", &acme_viewer)
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "limit");

    // The public gRPC face answers the same.
    let mut agents =
        mesh_proto::agent_service_client::AgentServiceClient::connect(mesh.gateway_grpc_url())
            .await
            .unwrap();
    let page = agents
        .list_agents(with(
            &globex,
            mesh_proto::ListAgentsRequest {
                page_size: 10,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let grpc_names: Vec<&str> = page.agents.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(grpc_names, ["support-9"]);
    assert!(page.next_page_token.is_empty());
    let old = agents
        .get_agent_version(with(
            &acme_viewer,
            mesh_proto::GetAgentVersionRequest {
                name: "support-1".into(),
                version: 2,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.version, 2);
    assert_eq!(old.spec.unwrap().system_prompt, "v2");
    let listed = agents
        .list_agent_versions(with(
            &acme_viewer,
            mesh_proto::ListAgentVersionsRequest {
                name: "support-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let order: Vec<u64> = listed.versions.iter().map(|v| v.version).collect();
    assert_eq!(order, [3, 2, 1]);
    let missing = agents
        .get_agent_version(with(
            &acme_viewer,
            mesh_proto::GetAgentVersionRequest {
                name: "support-1".into(),
                version: 7,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let too_big = agents
        .list_agents(with(
            &acme_viewer,
            mesh_proto::ListAgentsRequest {
                page_size: 100_000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
    assert!(too_big.message().contains("page_size"), "{too_big:?}");

    // The CLI: `agentmesh agents -o json` prints the API's page, and the
    // table names the next page.
    let page: Value = serde_json::from_str(
        &cli(
            &face.base,
            &acme_viewer,
            &["agents", "-o", "json", "--limit", "2"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(names(&page), ["billing", "support-1"]);
    assert_eq!(page["nextCursor"], "support-1");
    let table = cli(
        &face.base,
        &acme_viewer,
        &["agents", "--prefix", "support-", "--cursor", "support-3"],
    )
    .await;
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].starts_with("support-4"), "{table}");
}
