#![no_main]
//! Bearer JWTs as the gateway verifies them (HS256 with the configured
//! secret), and the gateway's role check on top. Input: claims as JSON,
//! `0xff`, a raw token (or `Authorization` value).
//!
//! Properties: whatever verifies says so itself (the principal's tenant,
//! subject and roles are the token's claims, and the token is not expired
//! beyond the leeway); claims signed with the secret verify exactly when
//! they should, and yield exactly their tenant, subject and roles; the
//! gateway never lets a tenant through that is not a valid tenant name.

use std::sync::LazyLock;

use gateway::auth::{Operation, authorize};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use mesh_auth::{Principal, Role, Verifier};
use serde_json::{Map, Value, json};

const SECRET: &[u8] = b"fuzz-target-secret-fuzz-target-secret";
const LEEWAY: i64 = 30;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| Verifier::hs256(SECRET, LEEWAY as u64));

fn role_names(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("roles") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::User => "user",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

/// The principal matches the claims it came from.
fn check(principal: &Principal, claims: &Map<String, Value>, token: &str) {
    assert_eq!(
        Some(principal.tenant.as_str()),
        claims.get("tenant").and_then(Value::as_str),
        "tenant of {token}"
    );
    assert!(!principal.tenant.is_empty());
    assert_eq!(
        principal.subject,
        claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        "subject of {token}"
    );
    let named = role_names(claims);
    let known: Vec<&str> = named
        .iter()
        .map(String::as_str)
        .filter(|r| matches!(*r, "viewer" | "user" | "operator" | "admin"))
        .collect();
    let got: Vec<&str> = principal.roles.iter().map(|r| role_name(*r)).collect();
    if known.is_empty() {
        assert_eq!(got, ["user"], "default role of {token}");
    } else {
        assert_eq!(got, known, "roles of {token}");
    }
    let exp = claims.get("exp").and_then(Value::as_f64);
    assert!(
        exp.is_some_and(|exp| exp >= (mesh_fuzz::now() - LEEWAY - 2) as f64),
        "an expired or exp-less token verified: {token}"
    );
}

fuzz_target!(|data: &[u8]| {
    let (claims, raw) = mesh_fuzz::split2(data);
    if let Ok(raw) = std::str::from_utf8(raw) {
        if let Ok(principal) = VERIFIER.verify_header(Some(raw)) {
            let token = raw
                .trim_start_matches("Bearer ")
                .trim_start_matches("bearer ");
            let claims = mesh_fuzz::jwt_claims(token).expect("a verified token has claims");
            check(&principal, &claims, token);
        }
        if let Ok(principal) = authorize(&VERIFIER, Some(raw), Operation::GetTask) {
            assert!(
                mesh_bus::names::validate("tenant", &principal.tenant).is_ok(),
                "gateway let tenant {:?} through",
                principal.tenant
            );
        }
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(claims) else {
        return;
    };
    let key = EncodingKey::from_secret(SECRET);
    let header = Header::new(Algorithm::HS256);
    if let Ok(token) = jsonwebtoken::encode(&header, &claims, &key) {
        if let Ok(principal) = VERIFIER.verify(&token) {
            check(&principal, &claims, &token);
        }
    }
    // The same identity in well-formed claims must verify, as itself.
    let tenant = claims
        .get("tenant")
        .and_then(Value::as_str)
        .unwrap_or("acme");
    if tenant.is_empty() {
        return;
    }
    let mut clean = Map::new();
    clean.insert("tenant".into(), json!(tenant));
    if let Some(sub) = claims.get("sub").filter(|s| s.is_string()) {
        clean.insert("sub".into(), sub.clone());
    }
    if let Some(roles) = claims
        .get("roles")
        .filter(|r| r.is_string() || r.is_array())
    {
        clean.insert("roles".into(), roles.clone());
    }
    clean.insert("exp".into(), json!(mesh_fuzz::now() + 600));
    let token = jsonwebtoken::encode(&header, &clean, &key).expect("clean claims sign");
    match VERIFIER.verify(&token) {
        Ok(principal) => check(&principal, &clean, &token),
        Err(e) => panic!("well-formed claims {clean:?} refused: {e}"),
    }
});
