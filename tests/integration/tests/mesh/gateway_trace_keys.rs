//! Trace scores and the tenant's Langfuse ingestion keys through the
//! gateway: admins manage keys, keys are per tenant, secrets are shown once,
//! scores are validated with the field named.
#![allow(clippy::unwrap_used)]

use mesh_auth::Role;
use mesh_integration::{Mesh, MeshOptions, RestClient};
use serde_json::{Value, json};

fn client(mesh: &Mesh, tenant: &str, role: Role) -> RestClient {
    RestClient::new(
        format!("http://{}", mesh.gateway.http_addr),
        mesh.token(tenant, &[role]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trace_keys_are_managed_per_tenant_and_scores_are_validated() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let admin = client(&mesh, "acme", Role::Admin);
    let operator = client(&mesh, "acme", Role::Operator);
    let other = client(&mesh, "globex", Role::Admin);

    assert_eq!(
        operator
            .post("/v1/trace-keys")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let created = admin.post("/v1/trace-keys").send().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let public_key = created["public_key"].as_str().unwrap().to_owned();
    let secret = created["secret_key"].as_str().unwrap().to_owned();
    assert!(!secret.is_empty());

    let listed = admin
        .get("/v1/trace-keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&public_key), "{listed}");
    assert!(
        !listed.contains(&secret),
        "the secret is shown once: {listed}"
    );
    let theirs = other
        .get("/v1/trace-keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !theirs.contains(&public_key),
        "another tenant sees none of ours: {theirs}"
    );
    let path = format!("/v1/trace-keys/{public_key}");
    assert_eq!(other.delete(&path).send().await.unwrap().status(), 404);
    assert_eq!(
        admin
            .delete("/v1/trace-keys/bad%20key")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(admin.delete(&path).send().await.unwrap().status(), 204);
    let listed: Value = admin
        .get("/v1/trace-keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["public_key"] == public_key.as_str())
        .unwrap();
    assert!(key["revoked_at_ms"].is_i64(), "{key}");

    // Scores: a user may score; bad input names the field.
    let user = client(&mesh, "acme", Role::User);
    let viewer = client(&mesh, "acme", Role::Viewer);
    let score = json!({"traceId": "not-hex", "name": "accuracy", "value": 0.9});
    assert_eq!(
        viewer
            .post("/v1/traces/scores")
            .json(&score)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    let response = user
        .post("/v1/traces/scores")
        .json(&score)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(body.contains("trace_id"), "{body}");
}
