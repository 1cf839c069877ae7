//! API key pairs for the Langfuse-compatible ingest endpoint: HTTP Basic
//! auth `public_key:secret_key` names the tenant. The secret is shown once,
//! at creation, and stored only as its SHA-256; it is never logged. A
//! wrong, unknown or revoked key is indistinguishable to the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mesh_store::traces::api_key;
use rand::RngCore as _;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::mapping::hex;
use crate::store::now_ms;

const PUBLIC_PREFIX: &str = "pk-am-";
const SECRET_PREFIX: &str = "sk-am-";

/// A newly created pair; the only time the secret leaves the collector.
#[derive(Serialize)]
pub struct NewKey {
    pub public_key: String,
    pub secret_key: String,
    pub created_at_ms: i64,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("public_key", &self.public_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// A key as listed: never the secret nor its hash.
#[derive(Debug, Serialize)]
pub struct KeyInfo {
    pub public_key: String,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex(&buf)
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Equal-length comparison whose time does not depend on where the
/// inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn create(db: &DatabaseConnection, tenant: &str) -> Result<NewKey, DbErr> {
    let key = NewKey {
        public_key: format!("{PUBLIC_PREFIX}{}", random_hex(16)),
        secret_key: format!("{SECRET_PREFIX}{}", random_hex(32)),
        created_at_ms: now_ms(),
    };
    api_key::Entity::insert(api_key::ActiveModel {
        id: NotSet,
        tenant: Set(tenant.to_owned()),
        public_key: Set(key.public_key.clone()),
        secret_hash: Set(hash_secret(&key.secret_key)),
        created_at_ms: Set(key.created_at_ms),
        revoked_at_ms: Set(None),
    })
    .exec_without_returning(db)
    .await?;
    Ok(key)
}

/// Revokes one of `tenant`'s keys; false when the tenant has no such key
/// (another tenant's key included). Revoking twice keeps the first time.
pub async fn revoke(
    db: &DatabaseConnection,
    tenant: &str,
    public_key: &str,
) -> Result<bool, DbErr> {
    let Some(row) = api_key::Entity::find()
        .filter(api_key::Column::Tenant.eq(tenant))
        .filter(api_key::Column::PublicKey.eq(public_key))
        .one(db)
        .await?
    else {
        return Ok(false);
    };
    if row.revoked_at_ms.is_none() {
        api_key::Entity::update_many()
            .col_expr(
                api_key::Column::RevokedAtMs,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(api_key::Column::Id.eq(row.id))
            .exec(db)
            .await?;
    }
    Ok(true)
}

pub async fn list(db: &DatabaseConnection, tenant: &str) -> Result<Vec<KeyInfo>, DbErr> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::Tenant.eq(tenant))
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|k| KeyInfo {
            public_key: k.public_key,
            created_at_ms: k.created_at_ms,
            revoked_at_ms: k.revoked_at_ms,
        })
        .collect())
}

/// `Basic base64(public:secret)` -> (public, secret).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (public, secret) = decoded.split_once(':')?;
    Some((public.to_owned(), secret.to_owned()))
}

/// The tenant and secret hash of an unrevoked key.
async fn lookup(db: &DatabaseConnection, public_key: &str) -> Result<Option<Valid>, DbErr> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::PublicKey.eq(public_key))
        .one(db)
        .await?
        .filter(|k| k.revoked_at_ms.is_none())
        .map(|k| Valid {
            tenant: k.tenant,
            secret_hash: k.secret_hash,
            fetched: Instant::now(),
        }))
}

/// The tenant of a valid, unrevoked key pair; `None` for anything else.
pub async fn authenticate(
    db: &DatabaseConnection,
    public_key: &str,
    secret_key: &str,
) -> Result<Option<String>, DbErr> {
    Ok(lookup(db, public_key)
        .await?
        .and_then(|k| k.check(secret_key)))
}

#[derive(Clone)]
struct Valid {
    tenant: String,
    secret_hash: String,
    fetched: Instant,
}

impl Valid {
    fn check(self, secret_key: &str) -> Option<String> {
        let presented = hash_secret(secret_key);
        constant_time_eq(self.secret_hash.as_bytes(), presented.as_bytes()).then_some(self.tenant)
    }
}

/// [`authenticate`] with the valid keys it found kept for `ttl`, so an
/// exporter that sends every few seconds costs one database read per key
/// and `ttl`, not one per export. The secret is still checked on every
/// call (against the cached hash). A revocation through this replica
/// ([`KeyCache::forget`]) applies at once; one through another replica (or
/// straight in the database) applies within `ttl`. Unknown and revoked
/// keys are never cached, so a key created elsewhere works at once. At
/// most `max_entries` keys are held; a full cache drops its expired
/// entries, then everything. A zero `ttl` turns caching off.
#[derive(Clone)]
pub struct KeyCache {
    entries: Arc<Mutex<HashMap<String, Valid>>>,
    ttl: Duration,
    max_entries: usize,
}

impl KeyCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        Self {
            entries: Arc::default(),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Valid>> {
        // A poisoned map still holds whole entries (each insert is one).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub async fn authenticate(
        &self,
        db: &DatabaseConnection,
        public_key: &str,
        secret_key: &str,
    ) -> Result<Option<String>, DbErr> {
        if self.ttl.is_zero() {
            return authenticate(db, public_key, secret_key).await;
        }
        let cached = self
            .entries()
            .get(public_key)
            .filter(|k| k.fetched.elapsed() < self.ttl)
            .cloned();
        if let Some(valid) = cached {
            return Ok(valid.check(secret_key));
        }
        let Some(valid) = lookup(db, public_key).await? else {
            self.forget(public_key);
            return Ok(None);
        };
        {
            let mut entries = self.entries();
            if entries.len() >= self.max_entries {
                let ttl = self.ttl;
                entries.retain(|_, k| k.fetched.elapsed() < ttl);
                if entries.len() >= self.max_entries {
                    entries.clear();
                }
            }
            entries.insert(public_key.to_owned(), valid.clone());
        }
        Ok(valid.check(secret_key))
    }

    /// Drops a key (revoked through this replica).
    pub fn forget(&self, public_key: &str) {
        self.entries().remove(public_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers_parse_and_secrets_hash() {
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("pk-am-1:sk-am-2:x")
        );
        assert_eq!(
            parse_basic(&header),
            Some(("pk-am-1".to_owned(), "sk-am-2:x".to_owned()))
        );
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(hash_secret("a").len(), 64);
        assert_ne!(hash_secret("a"), hash_secret("b"));
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"ac") && !constant_time_eq(b"ab", b"a"));
    }

    #[tokio::test]
    async fn create_authenticate_revoke() {
        let db = mesh_store::connect("sqlite::memory:", 1).await.unwrap();
        mesh_store::traces::migrate(&db).await.unwrap();
        let key = create(&db, "acme").await.unwrap();
        assert!(!format!("{key:?}").contains(&key.secret_key));
        let stored = api_key::Entity::find().all(&db).await.unwrap();
        assert!(!stored[0].secret_hash.contains(&key.secret_key[6..]));
        assert_eq!(
            authenticate(&db, &key.public_key, &key.secret_key)
                .await
                .unwrap()
                .as_deref(),
            Some("acme")
        );
        assert_eq!(
            authenticate(&db, &key.public_key, "sk-am-0").await.unwrap(),
            None
        );
        assert!(!revoke(&db, "globex", &key.public_key).await.unwrap());
        assert!(revoke(&db, "acme", &key.public_key).await.unwrap());
        assert_eq!(
            authenticate(&db, &key.public_key, &key.secret_key)
                .await
                .unwrap(),
            None
        );
        assert!(list(&db, "acme").await.unwrap()[0].revoked_at_ms.is_some());
    }

    /// A cached key is checked against its secret on every call, outlives
    /// a revocation made elsewhere by at most the TTL, and is gone at once
    /// when forgotten.
    #[tokio::test]
    async fn the_cache_keeps_valid_keys_for_its_ttl_only() {
        let db = mesh_store::connect("sqlite::memory:", 1).await.unwrap();
        mesh_store::traces::migrate(&db).await.unwrap();
        let cache = KeyCache::new(Duration::from_millis(300), 4);
        let key = create(&db, "acme").await.unwrap();
        let auth = |secret: String| {
            let (cache, db, public) = (cache.clone(), db.clone(), key.public_key.clone());
            async move { cache.authenticate(&db, &public, &secret).await.unwrap() }
        };
        assert_eq!(auth(key.secret_key.clone()).await.as_deref(), Some("acme"));
        assert_eq!(auth("sk-am-0".to_owned()).await, None);
        // Revoked in the database (another replica): cached until the TTL.
        assert!(revoke(&db, "acme", &key.public_key).await.unwrap());
        assert_eq!(auth(key.secret_key.clone()).await.as_deref(), Some("acme"));
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(auth(key.secret_key.clone()).await, None);
        // Forgotten (revoked through this replica): at once.
        let other = create(&db, "acme").await.unwrap();
        let check = || cache.authenticate(&db, &other.public_key, &other.secret_key);
        assert_eq!(check().await.unwrap().as_deref(), Some("acme"));
        assert!(revoke(&db, "acme", &other.public_key).await.unwrap());
        cache.forget(&other.public_key);
        assert_eq!(check().await.unwrap(), None);
        // Bounded: more keys than entries never grows it past the bound.
        for _ in 0..10 {
            let k = create(&db, "acme").await.unwrap();
            cache
                .authenticate(&db, &k.public_key, &k.secret_key)
                .await
                .unwrap();
        }
        assert!(cache.entries().len() <= 4);
    }
}
