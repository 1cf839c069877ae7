//! Worker settings: `AGENTMESH_WORKER_*` plus the shared ones.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_runtime::SharedConfig;
use mesh_runtime::env::{self, ConfigError, Env};

/// Which agents' queues a worker serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSelection {
    /// Every agent consumer on TASKS, discovered as agents are applied
    /// (the local default: one worker for all agents).
    All,
    /// These agents only (production: one Deployment per agent, scaled on
    /// that agent's consumer lag).
    Named(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
    /// `_MAX_HEADER_BYTES`, `_HEADER_TIMEOUT_MS`, `_BODY_TIMEOUT_MS` and the
    /// other limits of every listener (see [`mesh_runtime::ServerLimits`]).
    pub server: mesh_runtime::ServerLimits,
    pub admin_listen: SocketAddr,
    /// gRPC health only (workers take work from the queue, not from calls).
    pub grpc_listen: SocketAddr,
    pub agents: AgentSelection,
    /// gRPC address of the inference-router.
    pub router_url: String,
    /// gRPC address of the retrieval service (`retrieval` tools).
    pub retrieval_url: String,
    /// gRPC address of the orchestrator (`agent` tools submit sub-tasks).
    pub orchestrator_url: String,
    /// Tasks run at once per agent consumer.
    pub concurrency: usize,
    /// A model call that produces nothing for this long is abandoned and
    /// retried.
    pub inference_idle_timeout: Duration,
    /// Upper bound of one model call.
    pub inference_timeout: Duration,
    /// How often `AgentSelection::All` looks for new agents.
    pub discovery_interval: Duration,
    /// Worker identity in `started` events.
    pub worker_id: String,
    /// The tool loop: bounds and defaults for specs that set none.
    pub tools: ToolLimits,
    /// Upper bound of one delivery of a task (all its steps); past it the
    /// delivery is retried and resumes from its journal.
    pub task_timeout: Duration,
    /// Reading a task's journal back on a redelivery.
    pub journal_read_timeout: Duration,
    /// Where an agent records content (`recordContent`): each message text
    /// and tool argument or result on a span is cut to this many
    /// characters, so one huge prompt cannot make a span too large to
    /// export.
    pub recorded_content_max_chars: usize,
    /// The tool secrets `authentication.bearerToken.env: NAME` may name:
    /// the worker's `AGENTMESH_TOOL_SECRET_<NAME>` variables, keyed by
    /// `<NAME>` (see [`tool_secrets`]); a map so tests pass their own.
    pub secrets_env: std::sync::Arc<Env>,
}

/// The prefix of the worker variables that hold tool secrets.
pub const TOOL_SECRET_ENV_PREFIX: &str = "AGENTMESH_TOOL_SECRET_";

/// The tool secrets of `env`: each `AGENTMESH_TOOL_SECRET_<NAME>` under
/// `<NAME>`, and nothing else. A tool spec is written by a tenant and its
/// token is sent to an endpoint the tenant chose, so the names a spec can
/// reach must never include the worker's own settings (the service key,
/// database and Redis URLs, another service's secrets).
pub fn tool_secrets(env: &Env) -> Env {
    env.iter()
        .filter_map(|(name, value)| {
            name.strip_prefix(TOOL_SECRET_ENV_PREFIX)
                .filter(|rest| !rest.is_empty())
                .map(|rest| (rest.to_owned(), value.clone()))
        })
        .collect()
}

/// Limits of the tool loop; every one is an `AGENTMESH_WORKER_*` variable.
#[derive(Debug, Clone)]
pub struct ToolLimits {
    /// Model calls per task when the agent sets no `maxSteps`.
    pub default_max_steps: u32,
    /// Per attempt, when the tool sets no `timeout`.
    pub default_timeout: Duration,
    /// Response bodies above this are a tool error (unless the tool sets
    /// a lower `maxResponseBytes`; a higher one is capped here).
    pub max_response_bytes: u64,
    /// Tool calls of one step run at once.
    pub max_parallel_calls: usize,
    /// Output longer than this is cut before the model sees it.
    pub max_output_chars: usize,
    /// First wait between tool retries (exponential, jittered).
    pub retry_base: Duration,
    /// How long a `human` tool call waits when its spec sets no timeout.
    pub default_approval_timeout: Duration,
    /// The sandbox of `code` tools and the maxima of their limits.
    pub code: CodeLimits,
    /// Where `authentication.bearerToken.file` may point
    /// (`AGENTMESH_WORKER_TOOL_SECRETS_DIR`): a tool of tenant `t` reads
    /// files under `<dir>/t/` only (one mounted Secret per tenant), never
    /// another tenant's or the worker's own files.
    pub secrets_dir: std::path::PathBuf,
}

/// How `code` tools run (`AGENTMESH_WORKER_CODE_*`): the programs of the
/// sandbox and the worker-wide maxima that cap each tool's own limits.
#[derive(Debug, Clone)]
pub struct CodeLimits {
    /// bubblewrap (`bwrap`), looked up on `PATH` unless absolute.
    pub bwrap: String,
    /// util-linux `prlimit`, which sets the rlimits and execs bwrap.
    pub prlimit: String,
    /// The interpreter, as the sandbox sees it (it must live under one of
    /// `readonly_paths`).
    pub python: String,
    /// Host paths the sandbox sees read-only (a symlink stays a symlink);
    /// nothing else of the host is visible.
    pub readonly_paths: Vec<String>,
    /// Each run gets its own user id, `uid_base + slot`, so that the
    /// process limit counts that run's processes only.
    pub uid_base: u32,
    /// Sandboxes running at once on this worker; more calls wait.
    pub max_concurrent: u32,
    pub max_cpu_seconds: u32,
    pub max_memory_mb: u32,
    pub max_processes: u32,
    /// Wall time of one run (the tool's `timeout`, capped here).
    pub max_wall: Duration,
    /// stdout and stderr together; past it the run is stopped.
    pub max_output_bytes: usize,
    /// Size of each private tmpfs (`/work`, `/tmp`), and the largest file.
    pub work_dir_mb: u32,
}

const PREFIX: &str = "AGENTMESH_WORKER_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let agents = match env::string_or(env, &var("AGENTS"), "*").as_str() {
            "*" => AgentSelection::All,
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                for name in &names {
                    mesh_bus::names::validate("agent", name).map_err(|e| ConfigError::Invalid {
                        var: var("AGENTS"),
                        reason: e.to_string(),
                    })?;
                }
                AgentSelection::Named(names)
            }
        };
        let concurrency: usize = env::parse_or(env, &var("CONCURRENCY"), 32)?;
        let grpc_url = |name: &str, default: &str| {
            let url = env::string_or(env, &var(name), default);
            match tonic::transport::Endpoint::from_shared(url.clone()) {
                Ok(_) => Ok(url),
                Err(_) => Err(ConfigError::Invalid {
                    var: var(name),
                    reason: format!("{url:?} is not a URL"),
                }),
            }
        };
        let retrieval_url = grpc_url("RETRIEVAL_URL", "http://127.0.0.1:7004")?;
        let orchestrator_url = grpc_url("ORCHESTRATOR_URL", "http://127.0.0.1:7001")?;
        if concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: var("CONCURRENCY"),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9102).into())?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 7002).into())?,
            agents,
            router_url: env::string_or(env, &var("ROUTER_URL"), "http://127.0.0.1:7003"),
            retrieval_url,
            orchestrator_url,
            concurrency,
            inference_idle_timeout: env::millis_or(
                env,
                &var("INFERENCE_IDLE_TIMEOUT_MS"),
                Duration::from_secs(60),
            )?,
            inference_timeout: env::millis_or(
                env,
                &var("INFERENCE_TIMEOUT_MS"),
                Duration::from_secs(600),
            )?,
            discovery_interval: env::millis_or(
                env,
                &var("DISCOVERY_INTERVAL_MS"),
                Duration::from_secs(2),
            )?,
            worker_id: env::optional(env, &var("ID"))
                .or_else(|| env::optional(env, "HOSTNAME"))
                .unwrap_or_else(|| format!("worker-{}", uuid::Uuid::new_v4().simple())),
            tools: ToolLimits {
                default_max_steps: env::parse_or(env, &var("DEFAULT_MAX_STEPS"), 10)?,
                default_timeout: env::millis_or(
                    env,
                    &var("TOOL_TIMEOUT_MS"),
                    Duration::from_secs(30),
                )?,
                max_response_bytes: env::parse_or(
                    env,
                    &var("TOOL_MAX_RESPONSE_BYTES"),
                    1024 * 1024,
                )?,
                max_parallel_calls: env::parse_or(env, &var("TOOL_MAX_PARALLEL"), 8)?,
                max_output_chars: env::parse_or(env, &var("TOOL_MAX_OUTPUT_CHARS"), 64 * 1024)?,
                retry_base: env::millis_or(
                    env,
                    &var("TOOL_RETRY_BASE_MS"),
                    Duration::from_millis(200),
                )?,
                default_approval_timeout: env::millis_or(
                    env,
                    &var("APPROVAL_TIMEOUT_MS"),
                    Duration::from_secs(24 * 3600),
                )?,
                code: CodeLimits::from_env(env)?,
                secrets_dir: env::string_or(
                    env,
                    &var("TOOL_SECRETS_DIR"),
                    "/var/run/agentmesh/tool-secrets",
                )
                .into(),
            },
            task_timeout: env::millis_or(env, &var("TASK_TIMEOUT_MS"), Duration::from_secs(900))?,
            journal_read_timeout: env::millis_or(
                env,
                &var("JOURNAL_READ_TIMEOUT_MS"),
                Duration::from_secs(10),
            )?,
            recorded_content_max_chars: env::parse_or(
                env,
                &var("RECORDED_CONTENT_MAX_CHARS"),
                16 * 1024,
            )?,
            secrets_env: std::sync::Arc::new(tool_secrets(env)),
        })
    }

    pub fn ephemeral(shared: SharedConfig, router_url: String) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.router_url = router_url;
        config.admin_listen = mesh_runtime::env::EPHEMERAL;
        config.grpc_listen = mesh_runtime::env::EPHEMERAL;
        Ok(config)
    }
}

impl CodeLimits {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let at_least_one = |name: &str, value: u32| {
            if value == 0 {
                Err(ConfigError::Invalid {
                    var: var(name),
                    reason: "must be at least 1".to_owned(),
                })
            } else {
                Ok(value)
            }
        };
        Ok(Self {
            bwrap: env::string_or(env, &var("CODE_BWRAP"), "bwrap"),
            prlimit: env::string_or(env, &var("CODE_PRLIMIT"), "prlimit"),
            python: env::string_or(env, &var("CODE_PYTHON"), "/usr/bin/python3"),
            readonly_paths: env::string_or(
                env,
                &var("CODE_READONLY_PATHS"),
                "/usr,/bin,/lib,/lib64,/sbin,/etc",
            )
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
            uid_base: env::parse_or(env, &var("CODE_UID_BASE"), 200_000)?,
            max_concurrent: at_least_one(
                "CODE_MAX_CONCURRENT",
                env::parse_or(env, &var("CODE_MAX_CONCURRENT"), 4)?,
            )?,
            max_cpu_seconds: at_least_one(
                "CODE_MAX_CPU_SECONDS",
                env::parse_or(env, &var("CODE_MAX_CPU_SECONDS"), 30)?,
            )?,
            max_memory_mb: at_least_one(
                "CODE_MAX_MEMORY_MB",
                env::parse_or(env, &var("CODE_MAX_MEMORY_MB"), 1024)?,
            )?,
            max_processes: at_least_one(
                "CODE_MAX_PROCESSES",
                env::parse_or(env, &var("CODE_MAX_PROCESSES"), 64)?,
            )?,
            max_wall: env::millis_or(env, &var("CODE_MAX_WALL_MS"), Duration::from_secs(120))?,
            max_output_bytes: env::parse_or(env, &var("CODE_MAX_OUTPUT_BYTES"), 64 * 1024)?,
            work_dir_mb: at_least_one(
                "CODE_WORK_DIR_MB",
                env::parse_or(env, &var("CODE_WORK_DIR_MB"), 16)?,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_secrets_are_only_the_prefixed_variables_without_their_prefix() {
        let env = Env::from([
            ("AGENTMESH_TOOL_SECRET_WEATHER".to_owned(), "w".to_owned()),
            ("AGENTMESH_TOOL_SECRET_".to_owned(), "empty name".to_owned()),
            (
                "AGENTMESH_SERVICE_KEY".to_owned(),
                "a mesh key of at least thirty-two bytes".to_owned(),
            ),
            ("DATABASE_URL".to_owned(), "postgres://u:p@db/x".to_owned()),
            ("WEATHER".to_owned(), "not a tool secret".to_owned()),
        ]);
        let secrets = tool_secrets(&env);
        assert_eq!(secrets, Env::from([("WEATHER".to_owned(), "w".to_owned())]));
        let config = Config::from_env(&env).unwrap();
        assert_eq!(*config.secrets_env, secrets);
        assert_eq!(
            config.tools.secrets_dir,
            std::path::Path::new("/var/run/agentmesh/tool-secrets")
        );
    }

    #[test]
    fn agent_selection() {
        let c = Config::from_env(&Env::new()).unwrap();
        assert_eq!(c.agents, AgentSelection::All);
        let env: Env = [("AGENTMESH_WORKER_AGENTS".to_owned(), "a, b".to_owned())].into();
        assert_eq!(
            Config::from_env(&env).unwrap().agents,
            AgentSelection::Named(vec!["a".into(), "b".into()])
        );
        let env: Env = [("AGENTMESH_WORKER_AGENTS".to_owned(), "a.b".to_owned())].into();
        let err = Config::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("AGENTMESH_WORKER_AGENTS"), "{err}");
    }
}
