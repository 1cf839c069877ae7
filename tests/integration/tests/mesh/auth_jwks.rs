//! Tokens from an identity provider: RS256/ES256 keys from a JWKS URL that
//! the gateway refreshes (rotation without a restart), `iss` and `aud`
//! enforced, the tenant and roles read from configured claims.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mesh_integration::{Mesh, MeshOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// A fixed ES256 test key (not a secret) and its public JWK with `kid`.
fn es256(seed: u8, kid: &str) -> (EncodingKey, serde_json::Value) {
    use p256::pkcs8::EncodePrivateKey as _;
    let signing = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
    let key = EncodingKey::from_ec_der(signing.to_pkcs8_der().unwrap().as_bytes());
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    (key, serde_json::to_value(jwk).unwrap())
}

fn token(key: &EncodingKey, kid: &str, audience: &str) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": "https://idp.test", "aud": audience, "sub": "carol",
        "org_id": "acme", "permissions": ["viewer"], "exp": now + 300, "nbf": now - 5});
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_tokens_are_verified_and_keys_rotate_without_a_restart() {
    let mesh = Mesh::start(MeshOptions::default()).await.unwrap();
    let (old_key, old_jwk) = es256(3, "2026-11");
    let (new_key, new_jwk) = es256(5, "2026-12");

    // The identity provider's JWKS endpoint.
    let served = Arc::new(Mutex::new(json!({"keys": [old_jwk]}).to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let app = {
        let served = served.clone();
        axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let served = served.clone();
                async move { served.lock().unwrap().clone() }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env: mesh_runtime::Env = [
        ("AGENTMESH_GATEWAY_JWKS_URL".to_owned(), jwks_url),
        (
            "AGENTMESH_GATEWAY_JWKS_REFRESH_MS".to_owned(),
            "200".to_owned(),
        ),
        (
            "AGENTMESH_GATEWAY_JWT_ISSUER".to_owned(),
            "https://idp.test".to_owned(),
        ),
        (
            "AGENTMESH_GATEWAY_JWT_AUDIENCE".to_owned(),
            "agentmesh".to_owned(),
        ),
        (
            "AGENTMESH_GATEWAY_JWT_TENANT_CLAIM".to_owned(),
            "org_id".to_owned(),
        ),
        (
            "AGENTMESH_GATEWAY_JWT_ROLES_CLAIM".to_owned(),
            "permissions".to_owned(),
        ),
    ]
    .into();
    let mut config = gateway::Config::from_env(&env).unwrap();
    assert!(config.jwt_secret.is_none(), "a JWKS needs no shared secret");
    config.shared = mesh.shared.clone();
    config.orchestrator_url = format!("http://{}", mesh.orchestrator_config.grpc_listen);
    config.http_listen = mesh_runtime::env::EPHEMERAL;
    config.grpc_listen = mesh_runtime::env::EPHEMERAL;
    config.admin_listen = mesh_runtime::env::EPHEMERAL;
    let stop = CancellationToken::new();
    let gateway = gateway::start(config, stop.clone()).await.unwrap();
    let base = format!("http://{}", gateway.http_addr);
    let http = reqwest::Client::new();
    let list = |token: String| {
        http.get(format!("{base}/v1/tasks"))
            .bearer_auth(token)
            .send()
    };

    assert_eq!(
        list(token(&old_key, "2026-11", "agentmesh"))
            .await
            .unwrap()
            .status(),
        200
    );
    // The viewer role from the configured claim: reading yes, submitting no.
    let submit = http
        .post(format!("{base}/v1/agents/a/tasks"))
        .bearer_auth(token(&old_key, "2026-11", "agentmesh"))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submit.status(), 403);
    assert_eq!(
        list(token(&old_key, "2026-11", "someone-else"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        list(token(&new_key, "2026-12", "agentmesh"))
            .await
            .unwrap()
            .status(),
        401
    );
    let hs256 = mesh.token("acme", &[mesh_auth::Role::Admin]);
    assert_eq!(
        list(hs256).await.unwrap().status(),
        401,
        "no shared secret configured"
    );

    // The provider rotates: the new key works after a refresh, the old one stops.
    *served.lock().unwrap() = json!({"keys": [new_jwk]}).to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while list(token(&new_key, "2026-12", "agentmesh"))
        .await
        .unwrap()
        .status()
        != 200
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        list(token(&old_key, "2026-11", "agentmesh"))
            .await
            .unwrap()
            .status(),
        401
    );
    // A broken document keeps the keys it had.
    *served.lock().unwrap() = "{not json".to_owned();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        list(token(&new_key, "2026-12", "agentmesh"))
            .await
            .unwrap()
            .status(),
        200
    );
    stop.cancel();
}
