//! Service-to-service credentials: short-lived HS256 tokens signed with one
//! mesh-wide key that every service holds.
//!
//! A token names the calling service (`sub`), is issued by
//! [`SERVICE_ISSUER`] for the internal audience [`SERVICE_AUDIENCE`] only,
//! and lives [`ServiceAuthConfig::ttl`] (default 300 s). A
//! [`ServiceCredential`] caches its token and signs a fresh one once half of
//! the lifetime is gone, so a caller never sends one close to expiry. The
//! token travels in the [`SERVICE_TOKEN_HEADER`] header (gRPC metadata or
//! HTTP), never in `authorization`: that header belongs to the caller's own
//! credential (an OpenAI key on the router, Langfuse Basic auth on the
//! collector, a user's JWT at the gateway).
//!
//! Why one shared HS256 key rather than per-service key pairs: every
//! internal service already acts for every tenant (the tenant travels beside
//! the token), so per-service keys would only narrow anything together with
//! a per-method table of which service may call what, which the mesh does
//! not have; one key is one Kubernetes Secret and one file for
//! `agentmesh up`; and verifying HS256 costs about a microsecond on the
//! router's streaming path, where EdDSA costs tens. The price: whoever holds
//! the key can mint a token naming any service, so `sub` is for logs and
//! metrics, not for authorization, and the key must be as guarded as a
//! database password. Tokens signed with this key are never user tokens:
//! the audience and issuer differ from anything the gateway accepts.
//!
//! Configuration (every service, the same names):
//! - `AGENTMESH_SERVICE_KEY`: the key itself, at least [`MIN_KEY_BYTES`]
//!   bytes; or
//! - `AGENTMESH_SERVICE_KEY_FILE`: a file holding it (trailing whitespace
//!   trimmed; a mounted Kubernetes Secret). Setting both is an error.
//! - `AGENTMESH_SERVICE_KEY_PREVIOUS` or `AGENTMESH_SERVICE_KEY_PREVIOUS_FILE`
//!   (optional, same rules): a key still *accepted*, never used to sign.
//!   Rotation without downtime: (1) give every service the new key as
//!   previous and roll out; (2) swap, new key current and the old one
//!   previous, and roll out (replicas that sign with either are both
//!   accepted everywhere); (3) once every replica runs step 2 and the
//!   longest token lifetime has passed, drop the previous key.
//! - `AGENTMESH_SERVICE_TOKEN_TTL_SECS` (default 300, 30..=3600) and
//!   `AGENTMESH_SERVICE_TOKEN_LEEWAY_SECS` (clock skew accepted, default 30,
//!   at most 300).
//!
//! There is no switch that turns the check off. This module never logs a
//! key or a token; `Debug` of every type here leaves them out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The only audience a service token is good for.
pub const SERVICE_AUDIENCE: &str = "agentmesh-internal";
/// The issuer of every service token.
pub const SERVICE_ISSUER: &str = "agentmesh-service";
/// The header (HTTP) or metadata entry (gRPC) that carries the token.
pub const SERVICE_TOKEN_HEADER: &str = "agentmesh-service-token";
/// HS256 keys shorter than the hash are refused (RFC 7518, 3.2).
pub const MIN_KEY_BYTES: usize = 32;

pub const KEY_VAR: &str = "AGENTMESH_SERVICE_KEY";
pub const KEY_FILE_VAR: &str = "AGENTMESH_SERVICE_KEY_FILE";
pub const PREVIOUS_KEY_VAR: &str = "AGENTMESH_SERVICE_KEY_PREVIOUS";
pub const PREVIOUS_KEY_FILE_VAR: &str = "AGENTMESH_SERVICE_KEY_PREVIOUS_FILE";
pub const TTL_VAR: &str = "AGENTMESH_SERVICE_TOKEN_TTL_SECS";
pub const LEEWAY_VAR: &str = "AGENTMESH_SERVICE_TOKEN_LEEWAY_SECS";

const DEFAULT_TTL: Duration = Duration::from_secs(300);
const TTL_RANGE: std::ops::RangeInclusive<u64> = 30..=3600;
const DEFAULT_LEEWAY_SECS: u64 = 30;
const MAX_LEEWAY_SECS: u64 = 300;

/// A configuration variable that is present but unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}: {reason}")]
pub struct ServiceKeyError {
    pub var: &'static str,
    pub reason: String,
}

/// The mesh-wide signing key.
#[derive(Clone)]
pub struct ServiceKey(Arc<[u8]>);

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey(..)")
    }
}

impl ServiceKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, String> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes, at least {MIN_KEY_BYTES} are required",
                bytes.len()
            ));
        }
        Ok(Self(bytes.into()))
    }
}

/// The key and token lifetimes every service reads from its environment.
#[derive(Debug, Clone)]
pub struct ServiceAuthConfig {
    /// Signs every token and verifies.
    pub key: ServiceKey,
    /// Verifies only: the key being rotated out (see the module docs).
    pub previous: Option<ServiceKey>,
    /// How long a token lives; callers refresh it at half-life.
    pub ttl: Duration,
    /// Clock skew accepted on `exp`.
    pub leeway_secs: u64,
}

impl ServiceAuthConfig {
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            previous: None,
            ttl: DEFAULT_TTL,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Reads the variables of the module docs; `Ok(None)` when no key is
    /// configured (a service that serves or calls internal gRPC refuses to
    /// start then: see `mesh_runtime::service_auth`).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, ServiceKeyError> {
        let get = |var: &str| {
            env.get(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let invalid = |var: &'static str, reason: String| ServiceKeyError { var, reason };
        let Some(key) = read_key(&get, KEY_VAR, KEY_FILE_VAR)? else {
            if get(PREVIOUS_KEY_VAR).is_some() || get(PREVIOUS_KEY_FILE_VAR).is_some() {
                return Err(invalid(
                    PREVIOUS_KEY_VAR,
                    format!("a previous key is accepted only beside a current one ({KEY_VAR})"),
                ));
            }
            return Ok(None);
        };
        let previous = read_key(&get, PREVIOUS_KEY_VAR, PREVIOUS_KEY_FILE_VAR)?;
        let number = |var: &'static str, default: u64| -> Result<u64, ServiceKeyError> {
            match get(var) {
                None => Ok(default),
                Some(raw) => raw
                    .parse()
                    .map_err(|e| invalid(var, format!("{raw:?}: {e}"))),
            }
        };
        let ttl = number(TTL_VAR, DEFAULT_TTL.as_secs())?;
        if !TTL_RANGE.contains(&ttl) {
            return Err(invalid(
                TTL_VAR,
                format!(
                    "{ttl}: must be between {} and {} seconds",
                    TTL_RANGE.start(),
                    TTL_RANGE.end()
                ),
            ));
        }
        let leeway_secs = number(LEEWAY_VAR, DEFAULT_LEEWAY_SECS)?;
        if leeway_secs > MAX_LEEWAY_SECS {
            return Err(invalid(
                LEEWAY_VAR,
                format!("{leeway_secs}: must be at most {MAX_LEEWAY_SECS} seconds"),
            ));
        }
        Ok(Some(Self {
            key,
            previous,
            ttl: Duration::from_secs(ttl),
            leeway_secs,
        }))
    }

    /// The credential `service` calls others with.
    pub fn credential(&self, service: &str) -> ServiceCredential {
        ServiceCredential(Arc::new(CredentialInner {
            key: EncodingKey::from_secret(&self.key.0),
            service: service.to_owned(),
            ttl_secs: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            cached: Mutex::new(None),
        }))
    }

    pub fn verifier(&self) -> ServiceVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = self.leeway_secs;
        validation.set_audience(&[SERVICE_AUDIENCE]);
        validation.set_issuer(&[SERVICE_ISSUER]);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        ServiceVerifier(Arc::new(VerifierInner {
            keys: std::iter::once(&self.key)
                .chain(self.previous.as_ref())
                .map(|key| DecodingKey::from_secret(&key.0))
                .collect(),
            validation,
        }))
    }
}

/// A key from `var` or from the file `file_var` names; `Ok(None)` when
/// neither is set.
fn read_key(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    file_var: &'static str,
) -> Result<Option<ServiceKey>, ServiceKeyError> {
    let invalid = |var: &'static str, reason: String| ServiceKeyError { var, reason };
    let (bytes, from) = match (get(var), get(file_var)) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                var,
                format!("set either {var} or {file_var}, not both"),
            ));
        }
        (Some(key), None) => (key.into_bytes(), var),
        (None, Some(path)) => {
            let raw = std::fs::read(&path)
                .map_err(|e| invalid(file_var, format!("read {path:?}: {e}")))?;
            let end = raw
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            (raw[..end].to_vec(), file_var)
        }
        (None, None) => return Ok(None),
    };
    ServiceKey::new(bytes)
        .map(Some)
        .map_err(|reason| invalid(from, reason))
}

#[derive(Debug, Serialize, Deserialize)]
struct ServiceClaims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    exp: i64,
}

/// Signs a token for `service` with `audience`, living `ttl_secs` (may be
/// negative: tests build expired tokens with it). Services use
/// [`ServiceCredential::token`] instead.
pub fn issue_service_token(
    key: &ServiceKey,
    service: &str,
    audience: &str,
    ttl_secs: i64,
) -> Result<String, AuthError> {
    sign(
        &EncodingKey::from_secret(&key.0),
        service,
        audience,
        ttl_secs,
    )
    .map(|(t, _)| t)
}

fn sign(
    key: &EncodingKey,
    service: &str,
    audience: &str,
    ttl_secs: i64,
) -> Result<(String, i64), AuthError> {
    let now = chrono::Utc::now().timestamp();
    let claims = ServiceClaims {
        iss: SERVICE_ISSUER.to_owned(),
        sub: service.to_owned(),
        aud: audience.to_owned(),
        iat: now,
        exp: now.saturating_add(ttl_secs),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
        .map(|token| (token, claims.exp))
        .map_err(|e| AuthError::Signing(e.to_string()))
}

struct CredentialInner {
    key: EncodingKey,
    service: String,
    ttl_secs: i64,
    /// The current token and its `exp`.
    cached: Mutex<Option<(String, i64)>>,
}

/// What a service calls others with: its name and the mesh key. Cheap to
/// clone (shared cache).
#[derive(Clone)]
pub struct ServiceCredential(Arc<CredentialInner>);

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCredential")
            .field("service", &self.0.service)
            .finish_non_exhaustive()
    }
}

impl ServiceCredential {
    pub fn service(&self) -> &str {
        &self.0.service
    }

    /// A token with at least half of its lifetime left: the cached one, or
    /// a freshly signed one.
    pub fn token(&self) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let mut cached = match self.0.cached.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((token, exp)) = cached.as_ref()
            && exp - now > self.0.ttl_secs / 2
        {
            return Ok(token.clone());
        }
        let (token, exp) = sign(
            &self.0.key,
            &self.0.service,
            SERVICE_AUDIENCE,
            self.0.ttl_secs,
        )?;
        *cached = Some((token.clone(), exp));
        Ok(token)
    }
}

struct VerifierInner {
    /// The current key first, then the previous one.
    keys: Vec<DecodingKey>,
    validation: Validation,
}

/// Checks service tokens: signature, audience, issuer, expiry.
#[derive(Clone)]
pub struct ServiceVerifier(Arc<VerifierInner>);

impl std::fmt::Debug for ServiceVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceVerifier(..)")
    }
}

impl ServiceVerifier {
    /// The calling service's name, when `token` is valid.
    pub fn verify(&self, token: &str) -> Result<String, AuthError> {
        // Never empty: the current key is always there.
        let mut result: Result<jsonwebtoken::TokenData<ServiceClaims>, (bool, AuthError)> =
            Err((false, AuthError::InvalidToken("no key".to_owned())));
        for key in &self.0.keys {
            result = jsonwebtoken::decode::<ServiceClaims>(token.trim(), key, &self.0.validation)
                .map_err(|e| {
                    let wrong_key =
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    (wrong_key, AuthError::InvalidToken(e.to_string()))
                });
            // The signature is checked before the claims: only a token
            // that no key signed is worth trying with the next one.
            match &result {
                Err((true, _)) => continue,
                _ => break,
            }
        }
        let data = result.map_err(|(_, e)| e)?;
        if data.claims.sub.is_empty() {
            return Err(AuthError::MissingClaim { claim: "sub" });
        }
        Ok(data.claims.sub)
    }

    /// Verifies the value of a [`SERVICE_TOKEN_HEADER`] header.
    pub fn verify_header(&self, value: Option<&str>) -> Result<String, AuthError> {
        let token = value
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        self.verify(token)
    }
}

/// The credential of this process: a process is one service, and code
/// deep in a service (a tool call, the OTLP exporter) reaches it here the
/// way it reaches the global tracer provider. Tests that start several
/// services in one process give them one key, so any of them signs
/// correctly (the `sub` is then whichever installed last).
static PROCESS_CREDENTIAL: RwLock<Option<ServiceCredential>> = RwLock::new(None);

/// Makes `credential` the one [`installed`] returns.
pub fn install(credential: ServiceCredential) {
    match PROCESS_CREDENTIAL.write() {
        Ok(mut slot) => *slot = Some(credential),
        Err(poisoned) => *poisoned.into_inner() = Some(credential),
    }
}

/// The credential installed by the service running in this process.
pub fn installed() -> Option<ServiceCredential> {
    match PROCESS_CREDENTIAL.read() {
        Ok(slot) => slot.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "unit-test-service-key-0123456789abcdef";

    fn config() -> ServiceAuthConfig {
        ServiceAuthConfig::new(ServiceKey::new(KEY).unwrap())
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_credential_token_verifies_and_names_the_service() {
        let config = config();
        let credential = config.credential("orchestrator");
        let token = credential.token().unwrap();
        assert_eq!(config.verifier().verify(&token).unwrap(), "orchestrator");
        // Cached while fresh.
        assert_eq!(credential.token().unwrap(), token);
        assert_eq!(
            config.verifier().verify_header(Some(&token)).unwrap(),
            "orchestrator"
        );
        assert_eq!(
            config.verifier().verify_header(Some("  ")),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn wrong_key_audience_and_expired_tokens_are_refused() {
        let config = config();
        let verifier = config.verifier();
        let other = ServiceKey::new("another-service-key-0123456789abcdef").unwrap();
        let cases = [
            (
                "signature",
                issue_service_token(&other, "gateway", SERVICE_AUDIENCE, 60).unwrap(),
            ),
            (
                "audience",
                issue_service_token(&config.key, "gateway", "agentmesh", 60).unwrap(),
            ),
            (
                "expired",
                issue_service_token(&config.key, "gateway", SERVICE_AUDIENCE, -120).unwrap(),
            ),
            (
                "user token",
                crate::issue_hs256(KEY.as_bytes(), "acme", "gateway", &[], 60).unwrap(),
            ),
            ("garbage", "not.a.jwt".to_owned()),
        ];
        for (why, token) in cases {
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::InvalidToken(_))),
                "{why} must be refused"
            );
        }
    }

    #[test]
    fn a_token_near_expiry_is_replaced() {
        let mut config = config();
        config.ttl = Duration::from_secs(30);
        let credential = config.credential("worker");
        credential.token().unwrap();
        let exp_of = |c: &ServiceCredential| c.0.cached.lock().unwrap().as_ref().unwrap().1;
        let fresh = exp_of(&credential);
        // Age the cached token past half-life: the next call signs anew.
        if let Some((token, exp)) = credential.0.cached.lock().unwrap().as_mut() {
            *token = "stale".to_owned();
            *exp -= 20;
        }
        let second = credential.token().unwrap();
        assert_ne!(second, "stale");
        assert!(exp_of(&credential) >= fresh);
        assert_eq!(config.verifier().verify(&second).unwrap(), "worker");
        // Still fresh (over half-life left): the cached one is reused.
        if let Some((token, _)) = credential.0.cached.lock().unwrap().as_mut() {
            *token = "cached".to_owned();
        }
        assert_eq!(credential.token().unwrap(), "cached");
    }

    #[test]
    fn configuration_from_the_environment() {
        assert!(ServiceAuthConfig::from_env(&env(&[])).unwrap().is_none());
        let c = ServiceAuthConfig::from_env(&env(&[(KEY_VAR, KEY), (TTL_VAR, "120")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.ttl, Duration::from_secs(120));
        assert_eq!(c.leeway_secs, DEFAULT_LEEWAY_SECS);

        let dir = std::env::temp_dir().join(format!("mesh-auth-key-{}", std::process::id()));
        std::fs::write(&dir, format!("{KEY}\n")).unwrap();
        let from_file = ServiceAuthConfig::from_env(&env(&[(KEY_FILE_VAR, dir.to_str().unwrap())]))
            .unwrap()
            .unwrap();
        // The same key, whichever way it came.
        let token = from_file.credential("a").token().unwrap();
        assert!(c.verifier().verify(&token).is_ok());
        std::fs::remove_file(&dir).unwrap();

        for (pairs, var) in [
            (vec![(KEY_VAR, "short")], KEY_VAR),
            (vec![(KEY_VAR, KEY), (KEY_FILE_VAR, "/x")], KEY_VAR),
            (
                vec![(KEY_FILE_VAR, "/nonexistent/agentmesh-key")],
                KEY_FILE_VAR,
            ),
            (vec![(KEY_VAR, KEY), (TTL_VAR, "5")], TTL_VAR),
            (vec![(KEY_VAR, KEY), (TTL_VAR, "soon")], TTL_VAR),
            (vec![(KEY_VAR, KEY), (LEEWAY_VAR, "9999")], LEEWAY_VAR),
        ] {
            assert_eq!(
                ServiceAuthConfig::from_env(&env(&pairs)).unwrap_err().var,
                var
            );
        }
    }

    #[test]
    fn rotation_accepts_the_previous_key_and_signs_with_the_current_one() {
        const NEW: &str = "the-next-service-key-0123456789abcdef";
        let old = config();
        let old_token = old.credential("gateway").token().unwrap();
        let mut rotated = ServiceAuthConfig::new(ServiceKey::new(NEW).unwrap());
        rotated.previous = Some(old.key.clone());
        let new_token = rotated.credential("orchestrator").token().unwrap();

        // Replicas still on the old key and replicas on the new one are
        // both accepted by a rotated verifier.
        let verifier = rotated.verifier();
        assert_eq!(verifier.verify(&old_token).unwrap(), "gateway");
        assert_eq!(verifier.verify(&new_token).unwrap(), "orchestrator");
        // Signing uses the current key only: a verifier that knows only the
        // new key accepts it, one that knows only the old key does not.
        let only_new = ServiceAuthConfig::new(ServiceKey::new(NEW).unwrap()).verifier();
        assert!(only_new.verify(&new_token).is_ok());
        assert!(matches!(
            old.verifier().verify(&new_token),
            Err(AuthError::InvalidToken(_))
        ));
        // Once the previous key is dropped, its tokens are refused.
        assert!(matches!(
            only_new.verify(&old_token),
            Err(AuthError::InvalidToken(_))
        ));
        // A key neither current nor previous, and an expired token signed
        // with the previous key, are refused.
        let stranger = ServiceKey::new("a-stranger-service-key-0123456789abcdef").unwrap();
        for token in [
            issue_service_token(&stranger, "gateway", SERVICE_AUDIENCE, 60).unwrap(),
            issue_service_token(&old.key, "gateway", SERVICE_AUDIENCE, -120).unwrap(),
            issue_service_token(&old.key, "gateway", "agentmesh", 60).unwrap(),
        ] {
            assert!(matches!(
                verifier.verify(&token),
                Err(AuthError::InvalidToken(_))
            ));
        }
    }

    #[test]
    fn the_previous_key_from_the_environment() {
        const NEW: &str = "the-next-service-key-0123456789abcdef";
        let c = ServiceAuthConfig::from_env(&env(&[(KEY_VAR, NEW), (PREVIOUS_KEY_VAR, KEY)]))
            .unwrap()
            .unwrap();
        let old_token = config().credential("a").token().unwrap();
        assert_eq!(c.verifier().verify(&old_token).unwrap(), "a");
        // The credential signs with the current key.
        let token = c.credential("b").token().unwrap();
        assert!(config().verifier().verify(&token).is_err());

        let path = std::env::temp_dir().join(format!("mesh-auth-prev-{}", std::process::id()));
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        let from_file = ServiceAuthConfig::from_env(&env(&[
            (KEY_VAR, NEW),
            (PREVIOUS_KEY_FILE_VAR, path.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(from_file.verifier().verify(&old_token).unwrap(), "a");
        std::fs::remove_file(&path).unwrap();

        for (pairs, var) in [
            // A previous key alone would accept tokens nobody may sign.
            (vec![(PREVIOUS_KEY_VAR, KEY)], PREVIOUS_KEY_VAR),
            (
                vec![(KEY_VAR, NEW), (PREVIOUS_KEY_VAR, "short")],
                PREVIOUS_KEY_VAR,
            ),
            (
                vec![
                    (KEY_VAR, NEW),
                    (PREVIOUS_KEY_VAR, KEY),
                    (PREVIOUS_KEY_FILE_VAR, "/x"),
                ],
                PREVIOUS_KEY_VAR,
            ),
            (
                vec![
                    (KEY_VAR, NEW),
                    (PREVIOUS_KEY_FILE_VAR, "/nonexistent/agentmesh-key"),
                ],
                PREVIOUS_KEY_FILE_VAR,
            ),
        ] {
            assert_eq!(
                ServiceAuthConfig::from_env(&env(&pairs)).unwrap_err().var,
                var
            );
        }
    }

    #[test]
    fn debug_never_shows_the_key_or_a_token() {
        let config = config();
        let credential = config.credential("gateway");
        let token = credential.token().unwrap();
        for text in [
            format!("{config:?}"),
            format!("{credential:?}"),
            format!("{:?}", config.verifier()),
        ] {
            assert!(!text.contains(KEY) && !text.contains(&token), "{text}");
        }
    }
}
