//! API keys of machine clients: created, listed and revoked per tenant,
//! verified for the gateway.
//!
//! A key is `amk_<id>_<secret>`: 64 random bits of id (hex) and 256 random
//! bits of secret (hex). Only the SHA-256 of the secret is stored. A fast,
//! unsalted digest is enough here, unlike for passwords: the secret is
//! uniformly random with 256 bits of entropy, so there is no dictionary to
//! try and a brute-force search of 2^256 is out of reach whatever the hash
//! costs, while a slow KDF (argon2, bcrypt) would cost milliseconds of CPU
//! on every uncached request. Digests are compared in constant time.
//!
//! This module must never log, return or audit a secret: the whole key is
//! returned exactly once, by [`create`].

use mesh_proto::{
    ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, ListApiKeysRequest, ListApiKeysResponse,
    RevokeApiKeyRequest, VerifyApiKeyRequest,
};
use mesh_runtime::grpc::tenant_of;
use mesh_store::orchestrator::api_key;
use rand::RngCore as _;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tonic::{Request, Status};

use crate::audit::{self, AuditEntry};
use crate::convert::now_ms;

use mesh_auth::api_key::{ID_HEX_LEN, SECRET_HEX_LEN, is_hex};
pub use mesh_auth::api_key::{PREFIX as KEY_PREFIX, parse};

const ID_BYTES: usize = ID_HEX_LEN / 2;
const SECRET_BYTES: usize = SECRET_HEX_LEN / 2;
/// The longest key name (the column's size).
pub const MAX_NAME_BYTES: usize = 128;
pub const ROLES: [&str; 4] = ["viewer", "user", "operator", "admin"];

fn store_error(error: DbErr) -> Status {
    tracing::error!(%error, "database error");
    Status::unavailable("the key store is unavailable")
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// A fresh id and secret from the thread's CSPRNG (ChaCha, seeded by the OS).
fn generate() -> (String, String) {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    let mut rng = rand::rng();
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    (hex(&id), hex(&secret))
}

pub fn key_from_row(row: &api_key::Model) -> ApiKey {
    ApiKey {
        id: row.id.clone(),
        tenant: row.tenant.clone(),
        name: row.name.clone(),
        role: row.role.clone(),
        created_by: row.created_by.clone(),
        created_at_ms: row.created_at_ms,
        expires_at_ms: row.expires_at_ms.unwrap_or(0),
        revoked_at_ms: row.revoked_at_ms.unwrap_or(0),
    }
}

/// Creates a key of the caller's tenant; its creation is audited in the
/// same transaction. The response holds the whole key, once.
pub async fn create(
    db: &DatabaseConnection,
    request: Request<CreateApiKeyRequest>,
) -> Result<CreateApiKeyResponse, Status> {
    let tenant = tenant_of(&request)?;
    let actor = audit::actor_of(&request);
    let req = request.into_inner();
    let name = req.name.trim();
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    if name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format!("at most {MAX_NAME_BYTES} bytes, without control characters"),
        ));
    }
    if !ROLES.contains(&req.role.as_str()) {
        return Err(invalid("role", "must be viewer, user, operator or admin"));
    }
    let now = now_ms();
    if req.expires_at_ms < 0 || (req.expires_at_ms != 0 && req.expires_at_ms <= now) {
        return Err(invalid(
            "expires_at_ms",
            "must be in the future (or 0 for never)",
        ));
    }
    let (id, secret) = generate();
    let txn = mesh_store::begin_write(db).await.map_err(store_error)?;
    let row = api_key::ActiveModel {
        id: Set(id.clone()),
        tenant: Set(tenant.clone()),
        name: Set(name.to_owned()),
        role: Set(req.role.clone()),
        secret_hash: Set(digest(&secret)),
        created_by: Set(actor.clone()),
        created_at_ms: Set(now),
        expires_at_ms: Set((req.expires_at_ms != 0).then_some(req.expires_at_ms)),
        revoked_at_ms: Set(None),
    }
    .insert(&txn)
    .await
    .map_err(store_error)?;
    audit::record(
        &txn,
        AuditEntry {
            tenant,
            actor,
            action: "create".to_owned(),
            resource_kind: "api_key".to_owned(),
            resource_name: id.clone(),
            resource_version: None,
            detail_json: serde_json::json!({
                "name": row.name,
                "role": row.role,
                "expires_at_ms": row.expires_at_ms,
            }),
        },
    )
    .await
    .map_err(store_error)?;
    txn.commit().await.map_err(store_error)?;
    tracing::info!(key_id = %id, role = %row.role, "api key created");
    Ok(CreateApiKeyResponse {
        key: Some(key_from_row(&row)),
        secret: format!("{KEY_PREFIX}{id}_{secret}"),
    })
}

/// The tenant's keys, newest first, at most `max` of them; never secrets
/// nor their digests.
pub async fn list(
    db: &DatabaseConnection,
    request: Request<ListApiKeysRequest>,
    max: u32,
) -> Result<ListApiKeysResponse, Status> {
    let tenant = tenant_of(&request)?;
    let mut query = api_key::Entity::find().filter(api_key::Column::Tenant.eq(&tenant));
    if !request.get_ref().include_revoked {
        query = query.filter(api_key::Column::RevokedAtMs.is_null());
    }
    let rows = query
        .order_by_desc(api_key::Column::CreatedAtMs)
        .order_by_desc(api_key::Column::Id)
        .limit(u64::from(max))
        .all(db)
        .await
        .map_err(store_error)?;
    Ok(ListApiKeysResponse {
        keys: rows.iter().map(key_from_row).collect(),
    })
}

/// Revokes a key of the caller's tenant (audited); revoking a revoked key
/// changes nothing. A key of another tenant is not found.
pub async fn revoke(
    db: &DatabaseConnection,
    request: Request<RevokeApiKeyRequest>,
) -> Result<ApiKey, Status> {
    let tenant = tenant_of(&request)?;
    let actor = audit::actor_of(&request);
    let id = request.into_inner().id;
    if !is_hex(&id, ID_HEX_LEN) {
        return Err(invalid("id", "not an api key id (16 hex digits)"));
    }
    let txn = mesh_store::begin_write(db).await.map_err(store_error)?;
    let row = api_key::Entity::find_by_id(id.clone())
        .filter(api_key::Column::Tenant.eq(&tenant))
        .one(&txn)
        .await
        .map_err(store_error)?
        .ok_or_else(|| Status::not_found(format!("api key {id} not found")))?;
    if row.revoked_at_ms.is_some() {
        return Ok(key_from_row(&row));
    }
    let mut active: api_key::ActiveModel = row.into();
    active.revoked_at_ms = Set(Some(now_ms()));
    let row = active.update(&txn).await.map_err(store_error)?;
    audit::record(
        &txn,
        AuditEntry {
            tenant,
            actor,
            action: "revoke".to_owned(),
            resource_kind: "api_key".to_owned(),
            resource_name: id.clone(),
            resource_version: None,
            detail_json: serde_json::json!({ "name": row.name, "role": row.role }),
        },
    )
    .await
    .map_err(store_error)?;
    txn.commit().await.map_err(store_error)?;
    tracing::info!(key_id = %id, "api key revoked");
    Ok(key_from_row(&row))
}

/// The record of a valid key; UNAUTHENTICATED for a malformed, unknown,
/// wrong, revoked or expired one. Needs no tenant: the key names it.
pub async fn verify(
    db: &DatabaseConnection,
    request: Request<VerifyApiKeyRequest>,
) -> Result<ApiKey, Status> {
    let key = request.into_inner().key;
    let invalid_key = || Status::unauthenticated("invalid api key");
    let (id, secret) = parse(&key).ok_or_else(invalid_key)?;
    let presented = digest(secret);
    let row = api_key::Entity::find_by_id(id.to_owned())
        .one(db)
        .await
        .map_err(store_error)?
        .ok_or_else(invalid_key)?;
    if !bool::from(presented.as_bytes().ct_eq(row.secret_hash.as_bytes())) {
        return Err(invalid_key());
    }
    if row.revoked_at_ms.is_some() {
        return Err(Status::unauthenticated("api key revoked"));
    }
    if row.expires_at_ms.is_some_and(|at| at <= now_ms()) {
        return Err(Status::unauthenticated("api key expired"));
    }
    Ok(key_from_row(&row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_digest_is_of_the_secret() {
        let (id, secret) = generate();
        let key = format!("{KEY_PREFIX}{id}_{secret}");
        assert_eq!(parse(&key), Some((id.as_str(), secret.as_str())));
        let stored = digest(&secret);
        assert_eq!(stored.len(), 64);
        assert!(!stored.contains(&secret));
        assert_ne!(generate(), (id, secret));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let id = "0123456789abcdef";
        let secret = "ab".repeat(32);
        for key in [
            String::new(),
            "amk_".to_owned(),
            format!("amk_{id}"),
            format!("amk_{id}_{}", &secret[1..]),
            format!("amk_{}_{secret}", id.to_uppercase()),
            format!("xyz_{id}_{secret}"),
            format!("amk_{id}_{secret}_"),
            "eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned(),
        ] {
            assert_eq!(parse(&key), None, "{key:?}");
        }
    }
}
