//! Caller identity for the mesh: verifies bearer JWTs and yields the
//! [`Principal`] (tenant, subject, roles) every request is scoped by.
//!
//! Tokens are HS256 (a shared secret, for local runs) or RS256/ES256 with
//! public keys from a JWKS document (a file, or a URL the gateway polls:
//! [`Verifier::set_jwks`] swaps the key set in place, so rotation needs no
//! restart). `iss`, `aud`, `exp` and `nbf` are checked with a bounded clock
//! skew; the tenant and roles come from configurable claims. An HS256
//! secret rotates through [`Verifier::with_previous_secret`]: tokens signed
//! with either secret verify until the previous one is dropped. This crate
//! never logs tokens or secrets.

pub mod api_key;
pub mod service;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
    #[error("token has no usable `{claim}` claim")]
    MissingClaim { claim: &'static str },
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("key set: {0}")]
    InvalidKeys(String),
}

/// Roles of DESIGN.md, "Tenancy and auth".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    User,
    Operator,
    Admin,
}

impl Role {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "viewer" => Self::Viewer,
            "user" => Self::User,
            "operator" => Self::Operator,
            "admin" => Self::Admin,
            _ => return None,
        })
    }
}

/// What a request may act as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub subject: String,
    pub roles: Vec<Role>,
}

impl Principal {
    /// Roles are ordered: `admin` may do what `operator` may, and so on.
    pub fn has_role(&self, needed: Role) -> bool {
        self.roles.iter().any(|r| *r >= needed)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
}

/// What a token must satisfy, beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set.
    pub audience: Option<String>,
    /// Clock skew accepted on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The claim that names the tenant.
    pub tenant_claim: String,
    /// The claim that lists the roles (an array, or a space-separated string).
    pub roles_claim: String,
}

impl Default for TokenRules {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: None,
            leeway_secs: 30,
            tenant_claim: "tenant".to_owned(),
            roles_claim: "roles".to_owned(),
        }
    }
}

/// A public key of the JWKS, with the algorithm it verifies.
#[derive(Clone)]
struct PublicKey {
    key: DecodingKey,
    algorithm: Algorithm,
}

/// Verifies bearer tokens: HS256 with a secret, RS256/ES256 with the keys
/// of a JWKS.
#[derive(Clone)]
pub struct Verifier {
    secret: Option<DecodingKey>,
    /// An HS256 secret being rotated out: still accepted, tried only when
    /// `secret` does not match the signature.
    previous_secret: Option<DecodingKey>,
    /// By `kid`; swapped whole on rotation.
    public: std::sync::Arc<std::sync::RwLock<std::collections::HashMap<String, PublicKey>>>,
    rules: TokenRules,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        f.debug_struct("Verifier")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// HS256 only; `leeway_secs` bounds the clock skew accepted on `exp`.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        Self::new(
            Some(secret),
            TokenRules {
                leeway_secs,
                ..Default::default()
            },
        )
    }

    /// A verifier with an optional HS256 secret and no public keys yet
    /// (add them with [`Verifier::set_jwks`]).
    pub fn new(secret: Option<&[u8]>, rules: TokenRules) -> Self {
        Self {
            secret: secret.map(DecodingKey::from_secret),
            previous_secret: None,
            public: Default::default(),
            rules,
        }
    }

    /// Also accepts HS256 tokens signed with `previous` (a secret being
    /// rotated out), so issuers can switch to the new secret while tokens
    /// signed with the old one are still alive. Only with a current secret:
    /// without one, HS256 tokens stay refused.
    pub fn with_previous_secret(mut self, previous: &[u8]) -> Self {
        if self.secret.is_some() {
            self.previous_secret = Some(DecodingKey::from_secret(previous));
        }
        self
    }

    /// Replaces the public keys with those of a JWKS document; returns how
    /// many it took. Keys need a `kid` and an RS256 or ES256 algorithm (from
    /// `alg`, or implied by an RSA or P-256 key); others are refused, so a
    /// document that yields no key is an error and the old set stays.
    pub fn set_jwks(&self, jwks_json: &str) -> Result<usize, AuthError> {
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(jwks_json)
            .map_err(|e| AuthError::InvalidKeys(format!("not a JWKS document: {e}")))?;
        let mut keys = std::collections::HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(jsonwebtoken::jwk::KeyAlgorithm::RS256), _) => Algorithm::RS256,
                (Some(jsonwebtoken::jwk::KeyAlgorithm::ES256), _) => Algorithm::ES256,
                (Some(_), _) => continue,
                (None, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec))
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            keys.insert(kid, PublicKey { key, algorithm });
        }
        if keys.is_empty() {
            return Err(AuthError::InvalidKeys(
                "no usable key (RS256 or ES256 with a kid)".to_owned(),
            ));
        }
        let count = keys.len();
        match self.public.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        Ok(count)
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.rules.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.rules.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.rules.issuer {
            validation.set_issuer(&[iss]);
        }
        validation
    }

    /// The key and rules for a token, from its header.
    fn key_for(&self, token: &str) -> Result<(DecodingKey, Validation), AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.clone().ok_or_else(|| {
                    AuthError::InvalidToken("HS256 tokens are not accepted here".to_owned())
                })?;
                Ok((key, self.validation(Algorithm::HS256)))
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let keys = self
                    .public
                    .read()
                    .map_err(|_| AuthError::InvalidToken("key set unavailable".to_owned()))?;
                let key = match &header.kid {
                    Some(kid) => keys.get(kid),
                    // Without a kid, only an unambiguous key will do.
                    None => {
                        let mut of_alg = keys.values().filter(|k| k.algorithm == alg);
                        match (of_alg.next(), of_alg.next()) {
                            (Some(key), None) => Some(key),
                            _ => None,
                        }
                    }
                }
                .filter(|k| k.algorithm == alg)
                .ok_or_else(|| {
                    AuthError::InvalidToken(format!(
                        "no {alg:?} key {} in the key set",
                        header.kid.as_deref().unwrap_or("(no kid)")
                    ))
                })?;
                Ok((key.key.clone(), self.validation(alg)))
            }
            other => Err(AuthError::InvalidToken(format!(
                "algorithm {other:?} is not accepted"
            ))),
        }
    }

    /// Verifies an `Authorization` header value (`Bearer <jwt>`).
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingToken)?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        type AnyClaims = serde_json::Map<String, serde_json::Value>;
        let (key, validation) = self.key_for(token)?;
        let mut decoded = jsonwebtoken::decode::<AnyClaims>(token, &key, &validation);
        // The signature is checked before the claims, so only a token the
        // current secret did not sign is tried with the previous one.
        if let (Err(error), Some(previous)) = (&decoded, &self.previous_secret)
            && matches!(
                error.kind(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature
            )
            && validation.algorithms == [Algorithm::HS256]
        {
            decoded = jsonwebtoken::decode::<AnyClaims>(token, previous, &validation);
        }
        let data = decoded.map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let tenant = claims
            .get(&self.rules.tenant_claim)
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingClaim { claim: "tenant" })?
            .to_owned();
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_owned();
        let named: Vec<String> = match claims.get(&self.rules.roles_claim) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            Some(serde_json::Value::String(text)) => {
                text.split_whitespace().map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        let mut roles: Vec<Role> = named.iter().filter_map(|r| Role::parse(r)).collect();
        if roles.is_empty() {
            // A token without roles may run and read its tenant's tasks.
            roles.push(Role::User);
        }
        Ok(Principal {
            tenant,
            subject,
            roles,
        })
    }
}

/// Issues an HS256 token; used by `agentmesh up` to print a dev token and by
/// tests. Not an identity provider.
pub fn issue_hs256(
    secret: &[u8],
    tenant: &str,
    subject: &str,
    roles: &[Role],
    ttl_secs: i64,
) -> Result<String, AuthError> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: subject.to_owned(),
        tenant: Some(tenant.to_owned()),
        roles: roles
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect(),
        exp: now + ttl_secs,
        iat: Some(now),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-test-secret-test-secret";

    #[test]
    fn round_trip_yields_tenant_and_roles() {
        let token = issue_hs256(SECRET, "acme", "alice", &[Role::Operator], 60).unwrap();
        let p = Verifier::hs256(SECRET, 5)
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(p.tenant, "acme");
        assert_eq!(p.subject, "alice");
        assert!(p.has_role(Role::User));
        assert!(p.has_role(Role::Operator));
        assert!(!p.has_role(Role::Admin));
    }

    #[test]
    fn wrong_secret_expired_and_missing_are_rejected() {
        let token = issue_hs256(SECRET, "acme", "alice", &[], 60).unwrap();
        let other = Verifier::hs256(b"another-secret-another-secret-xx", 0);
        assert!(matches!(
            other.verify(&token),
            Err(AuthError::InvalidToken(_))
        ));

        let expired = issue_hs256(SECRET, "acme", "alice", &[], -120).unwrap();
        assert!(matches!(
            Verifier::hs256(SECRET, 5).verify(&expired),
            Err(AuthError::InvalidToken(_))
        ));
        assert_eq!(
            Verifier::hs256(SECRET, 5).verify_header(None),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            Verifier::hs256(SECRET, 5).verify_header(Some("Basic abc")),
            Err(AuthError::MissingToken)
        );
    }

    #[test]
    fn a_previous_secret_verifies_until_it_is_dropped() {
        const NEXT: &[u8] = b"the-next-secret-the-next-secret-xx";
        let old = issue_hs256(SECRET, "acme", "alice", &[], 60).unwrap();
        let new = issue_hs256(NEXT, "acme", "bob", &[], 60).unwrap();
        let rotating = Verifier::hs256(NEXT, 5).with_previous_secret(SECRET);
        assert_eq!(rotating.verify(&old).unwrap().subject, "alice");
        assert_eq!(rotating.verify(&new).unwrap().subject, "bob");
        // Dropped: the old secret's tokens are refused.
        assert!(matches!(
            Verifier::hs256(NEXT, 5).verify(&old),
            Err(AuthError::InvalidToken(_))
        ));
        // Still checked under the previous secret: expiry, and a third
        // secret is neither.
        let expired = issue_hs256(SECRET, "acme", "alice", &[], -120).unwrap();
        let stranger =
            issue_hs256(b"a-stranger-secret-a-stranger-xxxx", "acme", "x", &[], 60).unwrap();
        for token in [expired, stranger] {
            assert!(matches!(
                rotating.verify(&token),
                Err(AuthError::InvalidToken(_))
            ));
        }
        // A previous secret alone does not turn HS256 on.
        let jwks_only = Verifier::new(None, TokenRules::default()).with_previous_secret(SECRET);
        assert!(matches!(
            jwks_only.verify(&old),
            Err(AuthError::InvalidToken(_))
        ));
    }

    #[test]
    fn token_without_tenant_is_rejected() {
        let claims = serde_json::json!({"sub": "x", "exp": chrono::Utc::now().timestamp() + 60});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            Verifier::hs256(SECRET, 5).verify(&token),
            Err(AuthError::MissingClaim { claim: "tenant" })
        );
    }

    /// An ES256 key pair for tests: a fixed scalar (a test key, not a secret).
    fn es256_pair(kid: &str, seed: u8) -> (EncodingKey, String) {
        use p256::pkcs8::EncodePrivateKey as _;
        let signing = p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).unwrap();
        let der = signing.to_pkcs8_der().unwrap();
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        (key, serde_json::json!({"keys": [jwk]}).to_string())
    }

    fn sign(key: &EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }

    #[test]
    fn es256_tokens_from_a_jwks_with_issuer_audience_and_claims() {
        let (key, jwks) = es256_pair("k1", 7);
        let verifier = Verifier::new(
            None,
            TokenRules {
                issuer: Some("https://idp.example".into()),
                audience: Some("agentmesh".into()),
                leeway_secs: 5,
                tenant_claim: "org".into(),
                roles_claim: "scope".into(),
            },
        );
        assert_eq!(verifier.set_jwks(&jwks).unwrap(), 1);
        let now = chrono::Utc::now().timestamp();
        let good = serde_json::json!({"iss": "https://idp.example", "aud": "agentmesh", "sub": "bob",
            "org": "acme", "scope": "operator viewer", "exp": now + 60, "nbf": now - 1});
        let p = verifier
            .verify(&sign(&key, Some("k1"), good.clone()))
            .unwrap();
        assert_eq!((p.tenant.as_str(), p.subject.as_str()), ("acme", "bob"));
        assert!(p.has_role(Role::Operator) && !p.has_role(Role::Admin));
        // Without a kid, the only ES256 key is used.
        assert!(verifier.verify(&sign(&key, None, good.clone())).is_ok());

        let mut cases = Vec::new();
        for (field, value) in [
            ("iss", serde_json::json!("https://evil.example")),
            ("aud", serde_json::json!("someone-else")),
            ("exp", serde_json::json!(now - 60)),
            ("nbf", serde_json::json!(now + 60)),
        ] {
            let mut claims = good.clone();
            claims[field] = value;
            cases.push((field, sign(&key, Some("k1"), claims)));
        }
        let (other, _) = es256_pair("k1", 9);
        cases.push(("signature", sign(&other, Some("k1"), good.clone())));
        cases.push(("kid", sign(&key, Some("k2"), good.clone())));
        cases.push((
            "hs256",
            issue_hs256(SECRET, "acme", "bob", &[], 60).unwrap(),
        ));
        for (why, token) in cases {
            assert!(
                matches!(verifier.verify(&token), Err(AuthError::InvalidToken(_))),
                "{why} must be refused"
            );
        }
        let mut no_tenant = good;
        no_tenant.as_object_mut().unwrap().remove("org");
        assert_eq!(
            verifier.verify(&sign(&key, Some("k1"), no_tenant)),
            Err(AuthError::MissingClaim { claim: "tenant" })
        );
    }

    #[test]
    fn rotation_swaps_the_key_set_and_a_bad_document_keeps_the_old_one() {
        let (old, old_jwks) = es256_pair("2026-01", 7);
        let (new, new_jwks) = es256_pair("2026-02", 11);
        let verifier = Verifier::new(Some(SECRET), TokenRules::default());
        verifier.set_jwks(&old_jwks).unwrap();
        let claims =
            serde_json::json!({"tenant": "acme", "exp": chrono::Utc::now().timestamp() + 60});
        assert!(
            verifier
                .verify(&sign(&old, Some("2026-01"), claims.clone()))
                .is_ok()
        );
        assert!(
            verifier
                .verify(&sign(&new, Some("2026-02"), claims.clone()))
                .is_err()
        );
        assert!(verifier.set_jwks(r#"{"keys": []}"#).is_err());
        assert!(verifier.set_jwks("not json").is_err());
        assert!(
            verifier
                .verify(&sign(&old, Some("2026-01"), claims.clone()))
                .is_ok()
        );
        verifier.set_jwks(&new_jwks).unwrap();
        assert!(
            verifier
                .verify(&sign(&new, Some("2026-02"), claims.clone()))
                .is_ok()
        );
        assert!(
            verifier
                .verify(&sign(&old, Some("2026-01"), claims))
                .is_err()
        );
        // HS256 still works beside the JWKS when a secret is configured.
        assert!(
            verifier
                .verify(&issue_hs256(SECRET, "acme", "a", &[], 60).unwrap())
                .is_ok()
        );
    }
}
