//! Caller identity for the mesh: verifies bearer JWTs and yields the
//! [`Principal`] (tenant, subject, roles) every request is scoped by.
//!
//! The backbone accepts HS256 tokens signed with a configured secret; the
//! security issue adds RS256/ES256 with JWKS and API keys behind the same
//! [`Verifier`]. This crate never logs tokens or secrets.

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

/// Verifies HS256 bearer tokens.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}

impl Verifier {
    /// `leeway_secs` bounds the clock skew accepted on `exp`.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            key: DecodingKey::from_secret(secret),
            validation,
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
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let tenant = claims
            .tenant
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingClaim { claim: "tenant" })?;
        let mut roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        if roles.is_empty() {
            // A token without roles may run and read its tenant's tasks.
            roles.push(Role::User);
        }
        Ok(Principal {
            tenant,
            subject: claims.sub,
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
}
