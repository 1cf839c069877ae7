//! API keys as an alternative to a JWT, for machine clients.
//!
//! A client sends its key as `Authorization: Bearer amk_<id>_<secret>` or
//! as `x-api-key: amk_...` (not both with a token). The orchestrator owns
//! the keys; the gateway resolves a presented key to a [`Principal`]
//! (subject `apikey:<id>`, the key's tenant and role) with `VerifyApiKey`,
//! and keeps the answer in a small per-replica cache:
//!
//! - a valid key for `AGENTMESH_GATEWAY_API_KEY_CACHE_MS` (default 10 s),
//!   never past its expiry: a key revoked through another replica stops
//!   working here within that time (at once through this one);
//! - an invalid key for `AGENTMESH_GATEWAY_API_KEY_NEGATIVE_CACHE_MS`
//!   (default 2 s), so a client retrying a bad key in a loop costs one
//!   lookup per interval; a malformed key never reaches the orchestrator;
//! - at most `AGENTMESH_GATEWAY_API_KEY_CACHE_ENTRIES` keys (default
//!   10,000); a full cache drops its expired entries, then stops caching.
//!
//! The cache is keyed by the key's SHA-256, so no secret sits in memory
//! longer than its request.
//!
//! Handlers stay synchronous about auth: both faces resolve the key in a
//! layer ([`resolve_rest`], [`WithApiKeys`]) before the handler runs, and
//! hand the outcome to [`crate::auth::authorize`] through a task-local
//! scoped to that one request ([`resolved`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderMap;
use mesh_auth::{Principal, Role};
use mesh_runtime::ErrorCode;
use mesh_runtime::env::{self, ConfigError, Env};
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The key prefix (the orchestrator mints `amk_<16 hex>_<64 hex>`).
pub use mesh_auth::api_key::PREFIX as KEY_PREFIX;
/// The header a client may send its key in, instead of `Authorization`.
pub const API_KEY_HEADER: &str = "x-api-key";

#[derive(Debug, Clone)]
pub struct KeyCacheConfig {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: usize,
}

impl KeyCacheConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            ttl: env::millis_or(
                env,
                "AGENTMESH_GATEWAY_API_KEY_CACHE_MS",
                Duration::from_secs(10),
            )?,
            negative_ttl: env::millis_or(
                env,
                "AGENTMESH_GATEWAY_API_KEY_NEGATIVE_CACHE_MS",
                Duration::from_secs(2),
            )?,
            max_entries: env::parse_or(env, "AGENTMESH_GATEWAY_API_KEY_CACHE_ENTRIES", 10_000)?,
        })
    }
}

/// Whether `key` has the form of a key; anything else is refused without
/// asking the orchestrator.
fn well_formed(key: &str) -> bool {
    mesh_auth::api_key::parse(key).is_some()
}

/// The API key a request presents, if any: `Err` when it presents two
/// credentials.
fn presented(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bearer = header(http::header::AUTHORIZATION.as_str()).and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
    });
    match (bearer, header(API_KEY_HEADER)) {
        (Some(token), Some(_)) if !token.starts_with(KEY_PREFIX) => Err(ApiError::unauthenticated(
            "send a bearer token or an x-api-key, not both",
        )),
        (Some(token), _) if token.starts_with(KEY_PREFIX) => Ok(Some(token.to_owned())),
        (_, Some(key)) => Ok(Some(key.to_owned())),
        _ => Ok(None),
    }
}

struct Cached {
    outcome: Result<Principal, ApiError>,
    until: Instant,
}

/// Resolved keys of this replica (see the module docs).
#[derive(Clone)]
pub struct KeyCache {
    config: KeyCacheConfig,
    entries: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
}

impl KeyCache {
    pub fn new(config: KeyCacheConfig) -> Self {
        Self {
            config,
            entries: Arc::default(),
        }
    }

    fn get(&self, digest: &[u8; 32]) -> Option<Result<Principal, ApiError>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(digest)
            .filter(|c| c.until > Instant::now())
            .map(|c| c.outcome.clone())
    }

    fn put(&self, digest: [u8; 32], outcome: Result<Principal, ApiError>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.config.max_entries {
            entries.retain(|_, c| c.until > now);
            if entries.len() >= self.config.max_entries {
                return;
            }
        }
        entries.insert(
            digest,
            Cached {
                outcome,
                until: now + ttl,
            },
        );
    }

    /// Drops what this replica knows of key `id` (after revoking it here).
    pub fn forget(&self, id: &str) {
        let subject = format!("apikey:{id}");
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, c| !c.outcome.as_ref().is_ok_and(|p| p.subject == subject));
    }
}

fn parse_role(role: &str) -> Option<Role> {
    Some(match role {
        "viewer" => Role::Viewer,
        "user" => Role::User,
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        _ => return None,
    })
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::User => "user",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

impl AppState {
    /// The principal of API key `key`: from the cache, else from the
    /// orchestrator. Unavailable (not cached) when the orchestrator cannot
    /// answer.
    pub async fn resolve_api_key(&self, key: &str) -> Result<Principal, ApiError> {
        if !well_formed(key) {
            return Err(ApiError::unauthenticated("invalid api key"));
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(outcome) = self.api_keys.get(&digest) {
            return outcome;
        }
        // `outgoing` adds what every internal call carries (the trace
        // context, and this process's service credential); the key names
        // its own tenant, so the call carries none.
        let mut request = mesh_runtime::grpc::outgoing(
            "gateway",
            mesh_proto::VerifyApiKeyRequest {
                key: key.to_owned(),
            },
        )?;
        request
            .metadata_mut()
            .remove(mesh_runtime::grpc::TENANT_METADATA);
        request.set_timeout(self.config.upstream_timeout);
        let cache = &self.api_keys.config;
        match self.orchestrator.clone().verify_api_key(request).await {
            Ok(response) => {
                let key = response.into_inner();
                let Some(role) = parse_role(&key.role) else {
                    tracing::error!(key_id = %key.id, role = %key.role, "api key has an unknown role");
                    return Err(ApiError::unauthenticated("invalid api key"));
                };
                let principal = Principal {
                    tenant: key.tenant,
                    subject: format!("apikey:{}", key.id),
                    roles: vec![role],
                };
                // Never cached past the key's expiry.
                let mut ttl = cache.ttl;
                if key.expires_at_ms > 0 {
                    let left = key.expires_at_ms - chrono::Utc::now().timestamp_millis();
                    ttl = ttl.min(Duration::from_millis(u64::try_from(left).unwrap_or(0)));
                }
                self.api_keys.put(digest, Ok(principal.clone()), ttl);
                Ok(principal)
            }
            // The orchestrator's verdict on the key (its messages say so);
            // an UNAUTHENTICATED about the call itself (a bad service
            // credential) is an outage, not a bad key.
            Err(status)
                if status.code() == tonic::Code::Unauthenticated
                    && (status.message().starts_with("invalid api key")
                        || status.message().starts_with("api key ")) =>
            {
                let error = ApiError::unauthenticated(status.message());
                self.api_keys
                    .put(digest, Err(error.clone()), cache.negative_ttl);
                Err(error)
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = %status.message(), "api key lookup failed");
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    "api keys cannot be checked now; retry",
                ))
            }
        }
    }

    /// Resolves the request's API key, if it has one.
    async fn resolve_headers(&self, headers: &HeaderMap) -> Option<Result<Principal, ApiError>> {
        if self.config.unauthenticated_for_benchmarks.is_some() {
            return None;
        }
        match presented(headers) {
            Ok(Some(key)) => Some(self.resolve_api_key(&key).await),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

pub use mesh_runtime::grpc::ACTOR_METADATA;

/// Sets [`ACTOR_METADATA`] on an outgoing call (left out when the subject
/// is not a valid metadata value; the orchestrator then records `system`).
pub fn set_actor<T>(request: &mut tonic::Request<T>, principal: &Principal) {
    if let Ok(value) = principal.subject.parse() {
        request.metadata_mut().insert(ACTOR_METADATA, value);
    }
}

tokio::task_local! {
    static RESOLVED: Result<Principal, ApiError>;
}

/// The outcome of the current request's API key, when it presented one
/// and a resolving layer ran.
pub fn resolved() -> Option<Result<Principal, ApiError>> {
    RESOLVED.try_with(Clone::clone).ok()
}

/// REST layer: resolves an API key before the handler runs.
pub async fn resolve_rest(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.resolve_headers(request.headers()).await {
        None => next.run(request).await,
        Some(outcome) => RESOLVED.scope(outcome, next.run(request)).await,
    }
}

/// gRPC: wraps a public service so an API key in its metadata is resolved
/// before a method runs (the same as [`resolve_rest`]).
#[derive(Clone)]
pub struct WithApiKeys<S> {
    inner: S,
    state: AppState,
}

impl<S> WithApiKeys<S> {
    pub fn new(state: AppState, inner: S) -> Self {
        Self { inner, state }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WithApiKeys<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for WithApiKeys<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is fresh and not ready; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            match state.resolve_headers(request.headers()).await {
                None => inner.call(request).await,
                Some(outcome) => RESOLVED.scope(outcome, inner.call(request)).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn keys_come_from_bearer_or_x_api_key() {
        let key = format!("amk_{}_{}", "a".repeat(16), "b".repeat(64));
        assert!(well_formed(&key));
        assert!(!well_formed("amk_zz_yy"));
        let bearer = format!("Bearer {key}");
        assert_eq!(
            presented(&headers(&[("authorization", &bearer)])).unwrap(),
            Some(key.clone())
        );
        assert_eq!(
            presented(&headers(&[("x-api-key", &key)])).unwrap(),
            Some(key.clone())
        );
        // A JWT is not a key; a JWT and a key together are refused.
        assert_eq!(
            presented(&headers(&[("authorization", "Bearer eyJ.x.y")])).unwrap(),
            None
        );
        assert!(
            presented(&headers(&[
                ("authorization", "Bearer eyJ.x.y"),
                ("x-api-key", &key)
            ]))
            .is_err()
        );
    }

    #[test]
    fn cache_expires_forgets_and_is_bounded() {
        let cache = KeyCache::new(KeyCacheConfig {
            ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(1),
            max_entries: 2,
        });
        let principal = Principal {
            tenant: "acme".into(),
            subject: "apikey:0123456789abcdef".into(),
            roles: vec![Role::User],
        };
        cache.put([1; 32], Ok(principal.clone()), Duration::from_secs(60));
        cache.put(
            [2; 32],
            Err(ApiError::unauthenticated("no")),
            Duration::ZERO,
        );
        assert!(cache.get(&[2; 32]).is_none(), "a zero ttl caches nothing");
        cache.put(
            [2; 32],
            Err(ApiError::unauthenticated("no")),
            Duration::from_secs(1),
        );
        cache.put([3; 32], Ok(principal.clone()), Duration::from_secs(60));
        assert!(cache.get(&[3; 32]).is_none(), "full: not cached");
        assert_eq!(cache.get(&[1; 32]).unwrap().unwrap(), principal);
        cache.forget("0123456789abcdef");
        assert!(cache.get(&[1; 32]).is_none());
        assert!(cache.get(&[2; 32]).unwrap().is_err());
    }
}
