//! Router settings: `AGENTMESH_ROUTER_*` plus the shared ones.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
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
    pub max_body_bytes: usize,
    /// Requests the backend pool runs at once; more wait in the queue.
    pub max_concurrency: usize,
    /// Requests that may wait for a slot; more are refused (429).
    pub max_queue: usize,
    /// How long a request may wait for a slot (covers scale-from-zero).
    pub queue_timeout: Duration,
}

const PREFIX: &str = "AGENTMESH_ROUTER_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
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
        })
    }

    pub fn ephemeral(shared: SharedConfig, backend_url: &str) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.backend_url = backend_url.trim_end_matches('/').to_owned();
        config.http_listen = ([127, 0, 0, 1], 0).into();
        config.grpc_listen = ([127, 0, 0, 1], 0).into();
        config.admin_listen = ([127, 0, 0, 1], 0).into();
        Ok(config)
    }
}
