//! API keys of machine clients and the audit log, through the gateway on
//! PostgreSQL: admins create, list and revoke keys of their own tenant; a
//! key acts with its tenant and role (Bearer or x-api-key); a revoked key
//! stops working within the gateway's cache TTL (at once on the replica
//! that revoked it), an expired one at its expiry; bad keys are 401. Every
//! change to agents, tools and keys is in the tenant's audit log with its
//! actor; no secret appears in a list or the log.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use mesh_auth::Role;
use mesh_integration::{MeshOptions, TEST_JWT_SECRET, postgres_mesh};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The key cache TTL of the test's own gateway replica.
const TTL: Duration = Duration::from_millis(600);

fn token(tenant: &str, subject: &str, role: Role) -> String {
    mesh_auth::issue_hs256(TEST_JWT_SECRET.as_bytes(), tenant, subject, &[role], 3600).unwrap()
}

struct Face {
    base: String,
    http: reqwest::Client,
}

impl Face {
    fn req(&self, method: reqwest::Method, path: &str, auth: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        if auth.starts_with("x-api-key:") {
            builder.header("x-api-key", auth.trim_start_matches("x-api-key:"))
        } else {
            builder.bearer_auth(auth)
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let mut builder = self.req(method, path, auth);
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        let response = builder.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn create_key(&self, admin: &str, body: Value) -> (String, String) {
        let (status, text) = self
            .call(reqwest::Method::POST, "/v1/api-keys", admin, Some(body))
            .await;
        assert_eq!(status, 201, "{text}");
        let created: Value = serde_json::from_str(&text).unwrap();
        let key = created["key"].as_str().unwrap().to_owned();
        let id = created["id"].as_str().unwrap().to_owned();
        assert!(key.starts_with(&format!("amk_{id}_")), "{key}");
        (id, key)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_act_as_their_tenant_and_role_and_changes_are_audited() {
    let mesh = postgres_mesh(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await;
    // A second gateway replica with a short key cache, to see revocation
    // through another replica take effect within its TTL.
    let orchestrator_url = format!("http://{}", mesh.orchestrator.as_ref().unwrap().grpc_addr);
    let mut config =
        gateway::Config::ephemeral(mesh.shared.clone(), orchestrator_url, TEST_JWT_SECRET).unwrap();
    config.api_key_cache.ttl = TTL;
    config.api_key_cache.negative_ttl = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let replica = gateway::start(config, stop).await.unwrap();
    let http = reqwest::Client::new();
    let gw = Face {
        base: format!("http://{}", replica.http_addr),
        http: http.clone(),
    };
    let other_gw = Face {
        base: format!("http://{}", mesh.gateway.http_addr),
        http,
    };
    use reqwest::Method as M;

    let alice = token("acme", "alice", Role::Admin);
    let olga = token("acme", "olga", Role::Operator);
    let gus = token("globex", "gus", Role::Admin);

    // Only admins manage keys; bad input names its field.
    let (status, _) = gw
        .call(
            M::POST,
            "/v1/api-keys",
            &olga,
            Some(json!({"name": "x", "role": "user"})),
        )
        .await;
    assert_eq!(status, 403, "an operator cannot create keys");
    let (status, text) = gw
        .call(
            M::POST,
            "/v1/api-keys",
            &alice,
            Some(json!({"name": "x", "role": "root"})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("role"), "{text}");
    let (status, text) = gw
        .call(
            M::POST,
            "/v1/api-keys",
            &alice,
            Some(json!({"name": "x", "role": "user", "expiresAtMs": 1})),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("expiresAtMs"), "{text}");

    let (user_id, user_key) = gw
        .create_key(&alice, json!({"name": "ci runner", "role": "user"}))
        .await;
    let (operator_id, operator_key) = gw
        .create_key(&alice, json!({"name": "deployer", "role": "operator"}))
        .await;
    let (_, globex_key) = gw
        .create_key(&gus, json!({"name": "theirs", "role": "admin"}))
        .await;

    // The admin applies an agent; the operator key applies a tool.
    let (status, text) = gw
        .call(
            M::PUT,
            "/v1/agents/helper",
            &alice,
            Some(json!({"model": "sim"})),
        )
        .await;
    assert_eq!(status, 201, "created: {text}");
    let (status, text) = gw
        .call(
            M::PUT,
            "/v1/tools/lookup",
            &format!("x-api-key:{operator_key}"),
            Some(json!({"type": "api", "config": {"endpoint": "http://127.0.0.1:9/x"}})),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {text}");

    // The user key runs a task (Bearer) and reads it back (x-api-key).
    let (status, text) = gw
        .call(
            M::POST,
            "/v1/agents/helper/tasks",
            &user_key,
            Some(json!({"input": "hello"})),
        )
        .await;
    assert_eq!(status, 202, "accepted: {text}");
    let task: Value = serde_json::from_str(&text).unwrap();
    let task_id = task["id"].as_str().unwrap().to_owned();
    let (status, text) = gw
        .call(M::GET, "/v1/tasks", &format!("x-api-key:{user_key}"), None)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(&task_id), "{text}");
    // The public gRPC face takes the same key, in `x-api-key` metadata.
    let mut grpc = mesh_proto::task_service_client::TaskServiceClient::connect(format!(
        "http://{}",
        replica.grpc_addr
    ))
    .await
    .unwrap();
    let keyed = |key: &str| {
        let mut request = tonic::Request::new(mesh_proto::ListTasksRequest::default());
        request
            .metadata_mut()
            .insert("x-api-key", key.parse().unwrap());
        request
    };
    let listed = grpc
        .list_tasks(keyed(&user_key))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tasks.iter().any(|t| t.id == task_id));
    let refused = grpc.list_tasks(keyed("amk_nonsense")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut apply = tonic::Request::new(mesh_proto::ApplyAgentRequest {
        name: "helper3".into(),
        spec: Some(mesh_proto::AgentSpec {
            model: "sim".into(),
            ..Default::default()
        }),
    });
    apply.metadata_mut().insert(
        "authorization",
        format!("Bearer {user_key}").parse().unwrap(),
    );
    let denied = mesh_proto::agent_service_client::AgentServiceClient::connect(format!(
        "http://{}",
        replica.grpc_addr
    ))
    .await
    .unwrap()
    .apply_agent(apply)
    .await
    .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // ... nor over REST.
    let (status, _) = gw
        .call(
            M::PUT,
            "/v1/agents/helper2",
            &user_key,
            Some(json!({"model": "sim"})),
        )
        .await;
    assert_eq!(status, 403, "a user key cannot apply an agent");

    // Tenant isolation: globex's key sees none of acme's data.
    let (status, _) = gw
        .call(M::GET, &format!("/v1/tasks/{task_id}"), &globex_key, None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = gw
        .call(M::GET, "/v1/agents/helper", &globex_key, None)
        .await;
    assert_eq!(status, 404);
    let (status, text) = gw.call(M::GET, "/v1/tasks", &globex_key, None).await;
    assert_eq!(status, 200);
    assert!(!text.contains(&task_id), "{text}");
    let (_, text) = gw.call(M::GET, "/v1/api-keys", &globex_key, None).await;
    assert!(
        !text.contains(&user_id) && text.contains("theirs"),
        "{text}"
    );
    let (status, _) = gw
        .call(M::DELETE, &format!("/v1/api-keys/{user_id}"), &gus, None)
        .await;
    assert_eq!(status, 404, "another tenant's key is not found");

    // The list shows acme's keys without secrets.
    let (status, listed) = gw.call(M::GET, "/v1/api-keys", &alice, None).await;
    assert_eq!(status, 200);
    let keys: Value = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"ci runner") && names.contains(&"deployer"));
    for secret in [&user_key, &operator_key] {
        let secret_part = secret.rsplit('_').next().unwrap();
        assert!(!listed.contains(secret_part), "a secret leaked: {listed}");
    }
    assert!(listed.contains("\"createdBy\":\"alice\""), "{listed}");

    // Bad keys are 401, not 500; so is a key and a token together.
    let fake = format!("amk_{}_{}", "0".repeat(16), "1".repeat(64));
    for bad in ["amk_garbage", "amk_", fake.as_str(), "x-api-key:nonsense"] {
        let (status, text) = gw.call(M::GET, "/v1/tasks", bad, None).await;
        assert_eq!(status, 401, "{bad}: {text}");
    }
    let wrong_secret = format!("amk_{user_id}_{}", "f".repeat(64));
    assert_eq!(
        gw.call(M::GET, "/v1/tasks", &wrong_secret, None).await.0,
        401
    );
    let both = gw
        .req(M::GET, "/v1/tasks", &alice)
        .header("x-api-key", &user_key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(both, 401);

    // An expired key is refused from its expiry on, cached or not.
    let expires_at = chrono::Utc::now().timestamp_millis() + 1_500;
    let (_, short_key) = gw
        .create_key(
            &alice,
            json!({"name": "short", "role": "viewer", "expiresAtMs": expires_at}),
        )
        .await;
    assert_eq!(gw.call(M::GET, "/v1/tasks", &short_key, None).await.0, 200);
    let wait = expires_at - chrono::Utc::now().timestamp_millis() + 50;
    tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(0))).await;
    assert_eq!(gw.call(M::GET, "/v1/tasks", &short_key, None).await.0, 401);

    // Revoked through the other replica: this one, which has the key
    // cached, refuses it within its TTL.
    assert_eq!(gw.call(M::GET, "/v1/tasks", &user_key, None).await.0, 200);
    let revoker = mesh.token("acme", &[Role::Admin]);
    let (status, text) = other_gw
        .call(
            M::DELETE,
            &format!("/v1/api-keys/{user_id}"),
            &revoker,
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("revokedAt"), "{text}");
    let revoked_at = Instant::now();
    loop {
        let status = gw.call(M::GET, "/v1/tasks", &user_key, None).await.0;
        if status == 401 {
            println!(
                "revoked on another replica: refused here after {:?}",
                revoked_at.elapsed()
            );
            break;
        }
        assert_eq!(status, 200);
        assert!(
            revoked_at.elapsed() < TTL + Duration::from_millis(500),
            "a revoked key still works after the cache TTL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Revoked through this replica: refused at once.
    assert_eq!(
        gw.call(M::GET, "/v1/tasks", &operator_key, None).await.0,
        200
    );
    let (status, _) = gw
        .call(
            M::DELETE,
            &format!("/v1/api-keys/{operator_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        gw.call(M::GET, "/v1/tasks", &operator_key, None).await.0,
        401
    );
    // Revoking again changes nothing (and is not audited twice).
    let (status, text) = gw
        .call(
            M::DELETE,
            &format!("/v1/api-keys/{operator_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let (_, listed) = gw.call(M::GET, "/v1/api-keys", &alice, None).await;
    assert!(
        !listed.contains(&user_id),
        "revoked keys are not listed: {listed}"
    );
    let (_, listed) = gw
        .call(M::GET, "/v1/api-keys?includeRevoked=true", &alice, None)
        .await;
    assert!(listed.contains(&user_id), "{listed}");

    // The audit log: every change with its actor, newest first, per tenant.
    let (status, text) = gw.call(M::GET, "/v1/audit", &alice, None).await;
    assert_eq!(status, 200, "{text}");
    for secret in [&user_key, &operator_key, &short_key, &globex_key] {
        let secret_part = secret.rsplit('_').next().unwrap();
        assert!(
            !text.contains(secret_part),
            "a secret in the audit log: {text}"
        );
    }
    let log: Value = serde_json::from_str(&text).unwrap();
    let entries: Vec<(String, String, String, String)> = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                s("action"),
                s("resourceKind"),
                s("resourceName"),
                s("actor"),
            )
        })
        .collect();
    let has = |action: &str, kind: &str, name: &str, actor: &str| {
        entries
            .iter()
            .any(|e| e == &(action.into(), kind.into(), name.into(), actor.into()))
    };
    assert!(has("apply", "agent", "helper", "alice"), "{entries:?}");
    assert!(
        has("apply", "tool", "lookup", &format!("apikey:{operator_id}")),
        "{entries:?}"
    );
    assert!(has("create", "api_key", &user_id, "alice"), "{entries:?}");
    assert!(has("revoke", "api_key", &user_id, "test"), "{entries:?}");
    assert!(
        has("revoke", "api_key", &operator_id, "alice"),
        "{entries:?}"
    );
    assert!(
        entries.iter().all(|e| e.1 != "api_key" || e.2 != "theirs"),
        "another tenant's changes: {entries:?}"
    );
    // 2 applies, 3 keys created (user, operator, short), 2 revoked.
    assert_eq!(entries.len(), 7, "{entries:?}");
    let agent_entry = log["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resourceKind"] == "agent")
        .unwrap();
    assert_eq!(agent_entry["resourceVersion"], 1);
    assert_eq!(agent_entry["detail"]["created"], true);

    // Filters and pages.
    let (_, text) = gw
        .call(
            M::GET,
            "/v1/audit?resourceKind=api_key&pageSize=2",
            &alice,
            None,
        )
        .await;
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2, "{text}");
    assert!(
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["resourceKind"] == "api_key")
    );
    let token = page["nextPageToken"].as_str().unwrap();
    assert!(!token.is_empty());
    let (_, text) = gw
        .call(
            M::GET,
            &format!("/v1/audit?resourceKind=api_key&pageSize=2&pageToken={token}"),
            &alice,
            None,
        )
        .await;
    let next: Value = serde_json::from_str(&text).unwrap();
    let rest = next["entries"].as_array().unwrap();
    assert_eq!(rest.len(), 2, "{text}");
    assert!(
        rest.iter()
            .all(|e| e["id"] != page["entries"][0]["id"] && e["id"] != page["entries"][1]["id"])
    );
    let (_, text) = gw
        .call(M::GET, "/v1/audit?since=2999-01-01T00:00:00Z", &alice, None)
        .await;
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["entries"],
        json!([])
    );
    let (status, text) = gw.call(M::GET, "/v1/audit?since=soon", &alice, None).await;
    assert_eq!(status, 400, "{text}");

    // globex sees only its own key's creation.
    let (_, text) = gw.call(M::GET, "/v1/audit", &gus, None).await;
    let theirs: Value = serde_json::from_str(&text).unwrap();
    let theirs = theirs["entries"].as_array().unwrap();
    assert_eq!(theirs.len(), 1, "{text}");
    assert_eq!(theirs[0]["actor"], "gus");
    assert!(
        !text.contains("helper") && !text.contains(&user_id),
        "{text}"
    );
    // An admin key may read the log; its key is not an operator's.
    let (status, _) = gw.call(M::GET, "/v1/audit", &globex_key, None).await;
    assert_eq!(status, 200);
    let (status, _) = gw.call(M::GET, "/v1/audit", &olga, None).await;
    assert_eq!(status, 403);
}

/// The `agentmesh` binary beside this test's target dir (scripts/test
/// builds it before the integration tier), or `AGENTMESH_CLI`.
fn agentmesh_cli() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("AGENTMESH_CLI") {
        return path.into();
    }
    let exe = std::env::current_exe().unwrap();
    let cli = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("agentmesh");
    assert!(
        cli.is_file(),
        "{} missing: run `cargo build -p agentmesh` or set AGENTMESH_CLI",
        cli.display()
    );
    cli
}

async fn cli(base: &str, token: &str, args: &[&str]) -> (String, String) {
    let run = tokio::process::Command::new(agentmesh_cli())
        .args(["--url", base, "--token", token])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the CLI took over 60 s")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_creates_lists_and_revokes_keys() {
    let mesh = postgres_mesh(MeshOptions {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let base = format!("http://{}", mesh.gateway.http_addr);
    let admin = token("acme", "alice", Role::Admin);

    let (created, _) = cli(
        &base,
        &admin,
        &[
            "api-keys",
            "create",
            "nightly",
            "--role",
            "viewer",
            "--expires-in-secs",
            "3600",
            "-o",
            "json",
        ],
    )
    .await;
    let created: Value = serde_json::from_str(&created).unwrap();
    let (id, key) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    );
    assert!(created["expiresAt"].is_string(), "{created}");
    // The key works as a token for the CLI itself.
    let (tasks, _) = cli(&base, &key, &["tasks", "-o", "json"]).await;
    assert!(serde_json::from_str::<Value>(&tasks).is_ok(), "{tasks}");

    let (table, _) = cli(&base, &admin, &["api-keys", "list"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains("nightly") && row.contains("viewer") && row.contains("alice"),
        "{table}"
    );
    assert!(!table.contains(key.rsplit('_').next().unwrap()), "{table}");

    let (revoked, _) = cli(&base, &admin, &["api-keys", "revoke", &id]).await;
    assert_eq!(revoked.trim(), format!("revoked key {id}"));
    let (listed, _) = cli(&base, &admin, &["api-keys", "list", "--all", "-o", "json"]).await;
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert!(listed["keys"][0]["revokedAt"].is_string(), "{listed}");
}
