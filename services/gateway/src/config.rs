//! Gateway settings: `AGENTMESH_GATEWAY_*` plus the shared ones.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

#[derive(Clone)]
pub struct Config {
    pub shared: SharedConfig,
    /// `_MAX_HEADER_BYTES`, `_HEADER_TIMEOUT_MS`, `_BODY_TIMEOUT_MS` and the
    /// other limits of every listener (see [`mesh_runtime::ServerLimits`]).
    pub server: mesh_runtime::ServerLimits,
    pub http_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// gRPC address of the orchestrator.
    pub orchestrator_url: String,
    /// OpenAI-compatible HTTP address of the inference-router, behind the
    /// gateway's `/v1/chat/completions` and `/v1/models`.
    pub router_url: String,
    /// Upper bound of one model call proxied to the router.
    pub model_timeout: Duration,
    /// HTTP address of the trace-collector's query API.
    pub traces_url: String,
    /// gRPC address of the trace-collector's query API (`TraceQuery`).
    pub traces_grpc_url: String,
    /// gRPC address of the retrieval service.
    pub retrieval_url: String,
    /// HS256 secret for bearer JWTs (`AGENTMESH_GATEWAY_JWT_SECRET`);
    /// optional when a JWKS is configured.
    pub jwt_secret: Option<Vec<u8>>,
    /// A secret being rotated out (`AGENTMESH_GATEWAY_JWT_SECRET_PREVIOUS`):
    /// tokens signed with it still verify; only beside `jwt_secret`.
    pub jwt_secret_previous: Option<Vec<u8>>,
    /// Accepted clock skew on `exp` and `nbf`.
    pub jwt_leeway: Duration,
    /// RS256/ES256 public keys: a JWKS file (`_JWKS_FILE`), read at start.
    pub jwks_file: Option<std::path::PathBuf>,
    /// Or a JWKS URL (`_JWKS_URL`), fetched at start and every
    /// `jwks_refresh` (a failed fetch keeps the keys it has).
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    /// Required `iss` and `aud` (`_JWT_ISSUER`, `_JWT_AUDIENCE`), when set.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Claims naming the tenant and the roles (`_JWT_TENANT_CLAIM`,
    /// `_JWT_ROLES_CLAIM`; default `tenant`, `roles`).
    pub jwt_tenant_claim: String,
    pub jwt_roles_claim: String,
    /// Largest request body; larger is 413.
    pub max_body_bytes: usize,
    /// Upper bound of one unary call to the orchestrator.
    pub upstream_timeout: Duration,
    /// SSE keep-alive comment interval.
    pub sse_keep_alive: Duration,
    /// Task submissions per tenant per minute (enforced through Redis when
    /// `REDIS_URL` is set; 0 turns the limit off).
    pub submit_rate_per_minute: u32,
    /// Timeout of one Redis call.
    pub redis_timeout: Duration,
    /// How long resolved API keys are cached (`_API_KEY_CACHE_*`).
    pub api_key_cache: crate::api_keys::KeyCacheConfig,
    /// Every request is made as this caller, unchecked: no token, no API
    /// key, no role. Never read from the environment, and `None` from
    /// [`Config::from_env`]: only the `auth` benchmark sets it, to measure
    /// what authentication costs on the same routes of the same build.
    pub unauthenticated_for_benchmarks: Option<mesh_auth::Principal>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http_listen", &self.http_listen)
            .field("grpc_listen", &self.grpc_listen)
            .field("orchestrator_url", &self.orchestrator_url)
            .field("jwt_secret", &"<redacted>")
            .field("jwt_secret_previous", &"<redacted>")
            .finish_non_exhaustive()
    }
}

const PREFIX: &str = "AGENTMESH_GATEWAY_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// HS256 secrets shorter than this are refused (RFC 7518: key >= hash size).
pub const MIN_SECRET_BYTES: usize = 32;

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let jwks_file = env::optional(env, &var("JWKS_FILE")).map(std::path::PathBuf::from);
        let jwks_url = env::optional(env, &var("JWKS_URL"));
        if jwks_file.is_some() && jwks_url.is_some() {
            return Err(ConfigError::Invalid {
                var: var("JWKS_URL"),
                reason: format!("set {} or this, not both", var("JWKS_FILE")),
            });
        }
        let secret = match env::optional(env, &var("JWT_SECRET")) {
            Some(secret) => Some(secret),
            // Public keys alone are enough.
            None if jwks_file.is_some() || jwks_url.is_some() => None,
            None => Some(env::required(env, &var("JWT_SECRET"))?),
        };
        if let Some(secret) = &secret
            && secret.len() < MIN_SECRET_BYTES
        {
            return Err(ConfigError::Invalid {
                var: var("JWT_SECRET"),
                reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
            });
        }
        let previous = env::optional(env, &var("JWT_SECRET_PREVIOUS"));
        if let Some(previous) = &previous {
            if secret.is_none() {
                return Err(ConfigError::Invalid {
                    var: var("JWT_SECRET_PREVIOUS"),
                    reason: format!("accepted only beside {}", var("JWT_SECRET")),
                });
            }
            if previous.len() < MIN_SECRET_BYTES {
                return Err(ConfigError::Invalid {
                    var: var("JWT_SECRET_PREVIOUS"),
                    reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
                });
            }
        }
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            http_listen: env::parse_or(env, &var("HTTP_LISTEN"), ([127, 0, 0, 1], 8081).into())?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 7000).into())?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9100).into())?,
            orchestrator_url: env::string_or(
                env,
                &var("ORCHESTRATOR_URL"),
                "http://127.0.0.1:7001",
            ),
            router_url: env::string_or(env, &var("ROUTER_URL"), "http://127.0.0.1:8080")
                .trim_end_matches('/')
                .to_owned(),
            traces_url: env::string_or(env, &var("TRACES_URL"), "http://127.0.0.1:4318")
                .trim_end_matches('/')
                .to_owned(),
            traces_grpc_url: env::string_or(env, &var("TRACES_GRPC_URL"), "http://127.0.0.1:4317"),
            retrieval_url: env::string_or(env, &var("RETRIEVAL_URL"), "http://127.0.0.1:7004"),
            model_timeout: env::millis_or(env, &var("MODEL_TIMEOUT_MS"), Duration::from_secs(600))?,
            jwt_secret: secret.map(String::into_bytes),
            jwt_secret_previous: previous.map(String::into_bytes),
            jwt_leeway: env::millis_or(env, &var("JWT_LEEWAY_MS"), Duration::from_secs(30))?,
            jwks_file,
            jwks_url,
            jwks_refresh: env::millis_or(env, &var("JWKS_REFRESH_MS"), Duration::from_secs(300))?,
            jwt_issuer: env::optional(env, &var("JWT_ISSUER")),
            jwt_audience: env::optional(env, &var("JWT_AUDIENCE")),
            jwt_tenant_claim: env::string_or(env, &var("JWT_TENANT_CLAIM"), "tenant"),
            jwt_roles_claim: env::string_or(env, &var("JWT_ROLES_CLAIM"), "roles"),
            max_body_bytes: env::parse_or(env, &var("MAX_BODY_BYTES"), 256 * 1024)?,
            upstream_timeout: env::millis_or(
                env,
                &var("UPSTREAM_TIMEOUT_MS"),
                Duration::from_secs(10),
            )?,
            sse_keep_alive: env::millis_or(
                env,
                &var("SSE_KEEP_ALIVE_MS"),
                Duration::from_secs(15),
            )?,
            submit_rate_per_minute: env::parse_or(env, &var("SUBMIT_RATE_PER_MINUTE"), 1200)?,
            redis_timeout: env::millis_or(
                env,
                &var("REDIS_TIMEOUT_MS"),
                Duration::from_millis(250),
            )?,
            api_key_cache: crate::api_keys::KeyCacheConfig::from_env(env)?,
            unauthenticated_for_benchmarks: None,
        })
    }

    pub fn ephemeral(
        shared: SharedConfig,
        orchestrator_url: String,
        jwt_secret: &str,
    ) -> Result<Self, ConfigError> {
        let env: Env = [(var("JWT_SECRET"), jwt_secret.to_owned())].into();
        let mut config = Self::from_env(&env)?;
        config.shared = shared;
        config.orchestrator_url = orchestrator_url;
        config.http_listen = mesh_runtime::env::EPHEMERAL;
        config.grpc_listen = mesh_runtime::env::EPHEMERAL;
        config.admin_listen = mesh_runtime::env::EPHEMERAL;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_required_and_long_enough() {
        let err = Config::from_env(&Env::new()).unwrap_err();
        assert_eq!(err.to_string(), "AGENTMESH_GATEWAY_JWT_SECRET is required");
        let env: Env = [(var("JWT_SECRET"), "short".to_owned())].into();
        assert!(
            Config::from_env(&env)
                .unwrap_err()
                .to_string()
                .contains("at least 32")
        );
        let env: Env = [(var("JWT_SECRET"), "x".repeat(32))].into();
        let config = Config::from_env(&env).unwrap();
        assert!(
            !format!("{config:?}").contains("xxxx"),
            "secret must not be printed"
        );
    }

    #[test]
    fn previous_secret_only_beside_a_secret_and_long_enough() {
        let pairs = |list: &[(&str, String)]| -> Env {
            list.iter().map(|(k, v)| (var(k), v.clone())).collect()
        };
        let config = Config::from_env(&pairs(&[
            ("JWT_SECRET", "n".repeat(32)),
            ("JWT_SECRET_PREVIOUS", "p".repeat(32)),
        ]))
        .unwrap();
        assert_eq!(config.jwt_secret_previous, Some(vec![b'p'; 32]));
        assert!(!format!("{config:?}").contains("pppp"));
        for list in [
            vec![
                ("JWT_SECRET", "n".repeat(32)),
                ("JWT_SECRET_PREVIOUS", "short".to_owned()),
            ],
            vec![
                ("JWKS_FILE", "/keys.json".to_owned()),
                ("JWT_SECRET_PREVIOUS", "p".repeat(32)),
            ],
        ] {
            let err = Config::from_env(&pairs(&list)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("AGENTMESH_GATEWAY_JWT_SECRET_PREVIOUS:"),
                "{err}"
            );
        }
    }
}
