//! Trace-collector settings: `AGENTMESH_TRACES_*` plus the shared ones.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
    /// `_MAX_HEADER_BYTES`, `_HEADER_TIMEOUT_MS`, `_BODY_TIMEOUT_MS` and the
    /// other limits of every listener (see [`mesh_runtime::ServerLimits`]).
    pub server: mesh_runtime::ServerLimits,
    /// OTLP/gRPC and gRPC health (4317).
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP `/v1/traces` and the query API (4318).
    pub http_listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// How often the consumer-lag gauge is refreshed.
    pub lag_interval: Duration,
    /// Where the SQLite file lives when `DATABASE_URL` is unset.
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    /// Largest OTLP request, compressed or not (413 / RESOURCE_EXHAUSTED past it).
    pub max_body_bytes: usize,
    /// Age after which a trace is deleted; zero keeps traces forever.
    pub retention: Duration,
    /// How often the retention sweep runs.
    pub retention_interval: Duration,
    /// TRACES messages stored at once by this replica; 0 runs no writer
    /// here (a replica that only receives, scaled on request rate while
    /// writer replicas scale on the consumer's lag).
    pub writer_concurrency: usize,
    pub default_page_size: u64,
    pub max_page_size: u64,
    /// Range of `GET /api/aggregates` when the caller names no `from_ms`.
    pub aggregate_default_range: Duration,
    /// Deepest nesting of a trace tree served by the query API; deeper
    /// observations hang under their ancestor at this level (see
    /// [`crate::store::build_tree`]). JSON readers with serde_json's default
    /// recursion limit (the CLI) parse up to about 60 levels.
    pub max_tree_depth: usize,
    /// Most buckets one aggregate query may ask for.
    pub aggregate_max_buckets: i64,
    /// The operator's model price table (YAML, see [`crate::prices`]);
    /// unset uses the built-in illustrative table.
    pub prices_file: Option<PathBuf>,
    /// How often the price file's mtime is polled.
    pub prices_reload_interval: Duration,
    /// How long a valid Langfuse key pair is trusted without reading the
    /// database again: a revocation through another replica takes effect
    /// within it (zero: read on every export). See [`crate::keys::KeyCache`].
    pub key_cache_ttl: Duration,
    /// Most key pairs held by that cache.
    pub key_cache_entries: usize,
    /// Re-export of every accepted span (`AGENTMESH_TRACES_FORWARD_*`, see
    /// [`crate::forward`]); `None` when off.
    pub forward: Option<crate::forward::ForwardConfig>,
}

const PREFIX: &str = "AGENTMESH_TRACES_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let config = Self::read(env)?;
        // A forward try and the wait before the next must fit in the
        // ack-wait the writer's in-progress acks renew, or JetStream would
        // redeliver a batch that is still being forwarded.
        if let Some(forward) = &config.forward {
            let ack_wait = config.shared.bus.task_ack_wait;
            if forward.timeout + forward.max_backoff >= ack_wait {
                return Err(ConfigError::Invalid {
                    var: "AGENTMESH_TRACES_FORWARD_TIMEOUT_MS".to_owned(),
                    reason: format!(
                        "with AGENTMESH_TRACES_FORWARD_MAX_BACKOFF_MS it must stay under the bus ack-wait ({} ms)",
                        ack_wait.as_millis()
                    ),
                });
            }
        }
        Ok(config)
    }

    fn read(env: &Env) -> Result<Self, ConfigError> {
        let hours: u64 = env::parse_or(env, &var("RETENTION_HOURS"), 720)?;
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 4317).into())?,
            http_listen: env::parse_or(env, &var("HTTP_LISTEN"), ([127, 0, 0, 1], 4318).into())?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9105).into())?,
            lag_interval: env::millis_or(env, &var("LAG_INTERVAL_MS"), Duration::from_secs(5))?,
            data_dir: env::string_or(env, "AGENTMESH_DATA_DIR", ".data").into(),
            db_max_connections: env::parse_or(env, &var("DB_MAX_CONNECTIONS"), 16)?,
            max_body_bytes: env::parse_or(env, &var("MAX_BODY_BYTES"), 4 * 1024 * 1024)?,
            retention: Duration::from_secs(hours.saturating_mul(3600)),
            retention_interval: env::millis_or(
                env,
                &var("RETENTION_INTERVAL_MS"),
                Duration::from_secs(600),
            )?,
            writer_concurrency: env::parse_or(env, &var("WRITER_CONCURRENCY"), 16)?,
            default_page_size: 50,
            max_page_size: env::parse_or(env, &var("MAX_PAGE_SIZE"), 500)?,
            aggregate_default_range: env::millis_or(
                env,
                &var("AGGREGATE_DEFAULT_RANGE_MS"),
                Duration::from_secs(24 * 3600),
            )?,
            aggregate_max_buckets: env::parse_or(env, &var("AGGREGATE_MAX_BUCKETS"), 1_000)?,
            max_tree_depth: env::parse_or(env, &var("MAX_TREE_DEPTH"), 48)?,
            prices_file: Some(env::string_or(env, &var("PRICES_FILE"), ""))
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            prices_reload_interval: env::millis_or(
                env,
                &var("PRICES_RELOAD_MS"),
                Duration::from_secs(5),
            )?,
            key_cache_ttl: env::millis_or(env, &var("KEY_CACHE_TTL_MS"), Duration::from_secs(10))?,
            key_cache_entries: env::parse_or(env, &var("KEY_CACHE_ENTRIES"), 10_000)?,
            forward: crate::forward::ForwardConfig::from_env(env)?,
        })
    }

    /// Defaults with every listener on a free port (tests, `agentmesh up`).
    pub fn ephemeral(shared: SharedConfig, data_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.data_dir = data_dir;
        config.grpc_listen = mesh_runtime::env::EPHEMERAL;
        config.http_listen = mesh_runtime::env::EPHEMERAL;
        config.admin_listen = mesh_runtime::env::EPHEMERAL;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_env(&Env::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.grpc_listen.port(), 4317);
        assert_eq!(c.http_listen.port(), 4318);
        assert_eq!(c.retention, Duration::from_secs(720 * 3600));
        assert_eq!(c.max_body_bytes, 4 * 1024 * 1024);
        let env: Env = [
            ("AGENTMESH_TRACES_RETENTION_HOURS", "2"),
            ("AGENTMESH_TRACES_HTTP_LISTEN", "0.0.0.0:14318"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = Config::from_env(&env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.retention, Duration::from_secs(7200));
        assert_eq!(c.http_listen.port(), 14318);
        let bad: Env = [("AGENTMESH_TRACES_RETENTION_HOURS", "soon")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let err = Config::from_env(&bad).unwrap_err();
        assert!(err.to_string().contains("RETENTION_HOURS"), "{err}");
        let forward = |timeout: &str| -> Env {
            [
                (
                    "AGENTMESH_TRACES_FORWARD_OTLP_URL",
                    "http://tempo:4318/v1/traces",
                ),
                ("AGENTMESH_TRACES_FORWARD_TIMEOUT_MS", timeout),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        };
        let c = Config::from_env(&forward("5000")).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.forward.is_some());
        let err = Config::from_env(&forward("60000")).unwrap_err();
        assert!(err.to_string().contains("FORWARD_TIMEOUT_MS"), "{err}");
    }
}
