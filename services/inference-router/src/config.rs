//! Router settings: `AGENTMESH_ROUTER_*` plus the shared ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
    /// `_MAX_HEADER_BYTES`, `_HEADER_TIMEOUT_MS`, `_BODY_TIMEOUT_MS` and the
    /// other limits of every listener (see [`mesh_runtime::ServerLimits`]).
    pub server: mesh_runtime::ServerLimits,
    /// OpenAI-compatible HTTP face.
    pub http_listen: SocketAddr,
    /// Internal gRPC streaming face (agent workers).
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Base URL of the one backend (routing tables are a later issue):
    /// any OpenAI-compatible server, e.g. vLLM, TGI, llama.cpp.
    pub backend_url: String,
    /// Bearer token for the backend, if it wants one.
    pub backend_api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Deadline for the backend's response headers (time to first byte).
    pub first_byte_timeout: Duration,
    /// Upper bound of a whole backend call, streaming included.
    pub request_timeout: Duration,
    /// Largest request: an HTTP body (413 beyond) or a gRPC message.
    pub max_body_bytes: usize,
    /// Requests the backend pool runs at once; more wait in the queue.
    pub max_concurrency: usize,
    /// Requests that may wait for a slot; more are refused (429).
    pub max_queue: usize,
    /// How long a request may wait for a slot, or for a ready backend
    /// while the pool has none (scale from zero).
    pub queue_timeout: Duration,
    /// The backend's readiness probe path (vLLM's `/health`).
    pub health_path: String,
    /// How often every backend's readiness is probed.
    pub health_interval: Duration,
    /// The YAML route table (`routes.example.yaml`); when unset, the one
    /// `backend_url` forms pool `default` serving every model.
    pub routes_file: Option<PathBuf>,
    /// How often the routes file's mtime is checked for a reload.
    pub reload_interval: Duration,
    /// Deadline of one Redis call (tenant limits); past it the request is
    /// let through.
    pub redis_timeout: Duration,
    /// The environment the routes file's `api_key_env` names resolve in.
    pub env: EnvSnapshot,
}

/// The environment, kept for resolving API-key variables on every reload;
/// never printed, as it holds secrets.
#[derive(Clone, Default)]
pub struct EnvSnapshot(pub Arc<Env>);

impl std::fmt::Debug for EnvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvSnapshot({} variables)", self.0.len())
    }
}

const PREFIX: &str = "AGENTMESH_ROUTER_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn health_path(env: &Env) -> Result<String, ConfigError> {
    let path = env::string_or(env, &var("HEALTH_PATH"), "/health");
    if !path.starts_with('/') {
        return Err(ConfigError::Invalid {
            var: var("HEALTH_PATH"),
            reason: format!("{path:?} must start with /"),
        });
    }
    Ok(path)
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let backend_url = env::string_or(env, &var("BACKEND_URL"), "http://127.0.0.1:8000");
        if !(backend_url.starts_with("http://") || backend_url.starts_with("https://")) {
            return Err(ConfigError::Invalid {
                var: var("BACKEND_URL"),
                reason: format!("{backend_url:?} is not an http(s) URL"),
            });
        }
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            http_listen: env::parse_or(env, &var("HTTP_LISTEN"), ([127, 0, 0, 1], 8080).into())?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 7003).into())?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9103).into())?,
            backend_url: backend_url.trim_end_matches('/').to_owned(),
            backend_api_key: env::optional(env, &var("BACKEND_API_KEY")),
            connect_timeout: env::millis_or(
                env,
                &var("CONNECT_TIMEOUT_MS"),
                Duration::from_secs(5),
            )?,
            first_byte_timeout: env::millis_or(
                env,
                &var("FIRST_BYTE_TIMEOUT_MS"),
                Duration::from_secs(60),
            )?,
            request_timeout: env::millis_or(
                env,
                &var("REQUEST_TIMEOUT_MS"),
                Duration::from_secs(600),
            )?,
            max_body_bytes: env::parse_or(env, &var("MAX_BODY_BYTES"), 4 * 1024 * 1024)?,
            max_concurrency: env::parse_or(env, &var("MAX_CONCURRENCY"), 256)?,
            max_queue: env::parse_or(env, &var("MAX_QUEUE"), 4096)?,
            queue_timeout: env::millis_or(env, &var("QUEUE_TIMEOUT_MS"), Duration::from_secs(120))?,
            health_path: health_path(env)?,
            health_interval: env::millis_or(
                env,
                &var("HEALTH_INTERVAL_MS"),
                Duration::from_secs(1),
            )?,
            routes_file: env::optional(env, &var("ROUTES_FILE")).map(PathBuf::from),
            reload_interval: env::millis_or(
                env,
                &var("RELOAD_INTERVAL_MS"),
                Duration::from_secs(2),
            )?,
            redis_timeout: env::millis_or(
                env,
                &var("REDIS_TIMEOUT_MS"),
                Duration::from_millis(250),
            )?,
            env: EnvSnapshot(Arc::new(env.clone())),
        })
    }

    pub fn ephemeral(shared: SharedConfig, backend_url: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.backend_url = backend_url.trim_end_matches('/').to_owned();
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
    fn routes_file_and_reload_interval_are_read() {
        let env = Env::from([
            (var("ROUTES_FILE"), "/etc/router/routes.yaml".to_owned()),
            (var("RELOAD_INTERVAL_MS"), "500".to_owned()),
        ]);
        let config = Config::from_env(&env).unwrap();
        assert_eq!(
            config.routes_file.as_deref(),
            Some(std::path::Path::new("/etc/router/routes.yaml"))
        );
        assert_eq!(config.reload_interval, Duration::from_millis(500));
        let plain = Config::from_env(&Env::new()).unwrap();
        assert_eq!(plain.routes_file, None);
        assert_eq!(plain.reload_interval, Duration::from_secs(2));
        let bad = Env::from([(var("RELOAD_INTERVAL_MS"), "soon".to_owned())]);
        assert!(Config::from_env(&bad).is_err());
    }
}
