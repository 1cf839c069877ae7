//! Orchestrator settings: `AGENTMESH_ORCHESTRATOR_*` plus the shared ones.

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
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Where the SQLite file lives when `DATABASE_URL` is unset.
    pub data_dir: PathBuf,
    pub db_max_connections: u32,
    pub limits: Limits,
    pub outbox: OutboxConfig,
    pub projection: ProjectionConfig,
    /// How often expired approvals are resolved with their `onTimeout`.
    pub approval_sweep_interval: Duration,
    pub quotas: QuotaDefaults,
    pub admission: AdmissionConfig,
}

/// Per-tenant quotas where the tenant has no override (`PUT /v1/quotas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaDefaults {
    /// `AGENTMESH_ORCHESTRATOR_TENANT_MAX_RUNNING_TASKS`: tasks dispatched
    /// and unfinished at once, across the tenant's agents; more wait
    /// (queued) in the admission queue.
    pub max_running_tasks: u32,
    /// `AGENTMESH_ORCHESTRATOR_TENANT_TASKS_PER_MINUTE`: submissions per
    /// sliding minute; more get RESOURCE_EXHAUSTED (429) with Retry-After.
    pub tasks_per_minute: u32,
    /// `AGENTMESH_ORCHESTRATOR_TENANT_WEIGHT`: share of an agent's dispatch
    /// window against other tenants.
    pub weight: u32,
}

/// Upper bounds of a quota value (an override or a default).
pub const MAX_QUOTA_RUNNING_TASKS: u32 = 1_000_000;
pub const MAX_QUOTA_TASKS_PER_MINUTE: u32 = 10_000_000;
pub const MAX_QUOTA_WEIGHT: u32 = 1_000;

/// The admission queue between submission and TASKS.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// `AGENTMESH_ORCHESTRATOR_DISPATCH_WINDOW_PER_AGENT` (default 32): the
    /// floor of the tasks of one agent (all tenants) dispatched to TASKS and
    /// not finished. Within the window tasks queue FIFO in JetStream; above
    /// it they wait here and are released fairly across tenants, so a
    /// smaller window means tighter fairness. KEDA scales an agent's
    /// workers on the lag of its consumer, and that lag can never exceed
    /// the window, so each agent's window is raised to its scaling spec's
    /// `maxReplicas x targetQueueLagPerReplica` (the lag at which KEDA asks
    /// for the maximum): the window never caps scaling, and beyond that
    /// lag more dispatched work would add no replica.
    pub window_per_agent: u32,
    /// `AGENTMESH_ORCHESTRATOR_ADMISSION_SWEEP_MS`: safety-net pass over
    /// every agent with waiting tasks (releases missed after a crash, quota
    /// raises, another replica's finished tasks); also refreshes the
    /// queue-depth gauge.
    pub sweep_interval: Duration,
}

/// Input limits; each violation is INVALID_ARGUMENT naming the field.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_input_bytes: usize,
    pub max_system_prompt_bytes: usize,
    pub max_model_name_bytes: usize,
    pub max_tokens_ceiling: u32,
    pub max_page_size: u32,
    pub default_page_size: u32,
    pub max_message_bytes: usize,
    /// How deep sub-tasks (agents run as tools) may nest.
    pub max_task_depth: u32,
    /// Bounds on agent and tool specs (tools, steps, memory, timeouts).
    pub spec: mesh_spec::SpecLimits,
}

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Off only to simulate a crash between commit and publish (tests) or
    /// to run a replica that serves reads only.
    pub enabled: bool,
    /// Safety-net poll; new rows wake the relay at once.
    pub poll_interval: Duration,
    pub batch_size: u64,
}

#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    /// Events handled at once (lanes: one task's events share a lane).
    pub concurrency: usize,
    /// Deliveries of an event that cannot be applied before it goes to the
    /// DLQ (at 500 ms apart, the default is about a minute).
    pub max_attempts: u32,
}

const PREFIX: &str = "AGENTMESH_ORCHESTRATOR_";

fn var(name: &str) -> String {
    format!("{PREFIX}{name}")
}

fn spec_limits(env: &Env) -> Result<mesh_spec::SpecLimits, ConfigError> {
    let d = mesh_spec::SpecLimits::default();
    Ok(mesh_spec::SpecLimits {
        max_tools: env::parse_or(env, &var("MAX_AGENT_TOOLS"), d.max_tools)?,
        max_steps: env::parse_or(env, &var("MAX_AGENT_STEPS"), d.max_steps)?,
        max_tool_description_bytes: env::parse_or(
            env,
            &var("MAX_TOOL_DESCRIPTION_BYTES"),
            d.max_tool_description_bytes,
        )?,
        max_tool_document_bytes: env::parse_or(
            env,
            &var("MAX_TOOL_DOCUMENT_BYTES"),
            d.max_tool_document_bytes,
        )?,
        max_tool_timeout_ms: env::parse_or(
            env,
            &var("MAX_TOOL_TIMEOUT_MS"),
            d.max_tool_timeout_ms,
        )?,
        max_tool_retries: env::parse_or(env, &var("MAX_TOOL_RETRIES"), d.max_tool_retries)?,
        max_memory_history: env::parse_or(env, &var("MAX_MEMORY_HISTORY"), d.max_memory_history)?,
        max_memory_ttl_seconds: env::parse_or(
            env,
            &var("MAX_MEMORY_TTL_SECONDS"),
            d.max_memory_ttl_seconds,
        )?,
        max_fallback_models: env::parse_or(
            env,
            &var("MAX_FALLBACK_MODELS"),
            d.max_fallback_models,
        )?,
    })
}

fn at_least_one(name: &str, value: u32, max: u32) -> Result<u32, ConfigError> {
    if value == 0 || value > max {
        return Err(ConfigError::Invalid {
            var: name.to_owned(),
            reason: format!("must be between 1 and {max}"),
        });
    }
    Ok(value)
}

fn quota_defaults(env: &Env) -> Result<QuotaDefaults, ConfigError> {
    let max_running = var("TENANT_MAX_RUNNING_TASKS");
    let per_minute = var("TENANT_TASKS_PER_MINUTE");
    let weight = var("TENANT_WEIGHT");
    Ok(QuotaDefaults {
        max_running_tasks: at_least_one(
            &max_running,
            env::parse_or(env, &max_running, 256)?,
            MAX_QUOTA_RUNNING_TASKS,
        )?,
        tasks_per_minute: at_least_one(
            &per_minute,
            env::parse_or(env, &per_minute, 3000)?,
            MAX_QUOTA_TASKS_PER_MINUTE,
        )?,
        weight: at_least_one(&weight, env::parse_or(env, &weight, 1)?, MAX_QUOTA_WEIGHT)?,
    })
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            server: mesh_runtime::ServerLimits::from_env(env, PREFIX)?,
            grpc_listen: env::parse_or(env, &var("GRPC_LISTEN"), ([127, 0, 0, 1], 7001).into())?,
            admin_listen: env::parse_or(env, &var("ADMIN_LISTEN"), ([127, 0, 0, 1], 9101).into())?,
            data_dir: env::string_or(env, "AGENTMESH_DATA_DIR", ".data").into(),
            db_max_connections: env::parse_or(env, &var("DB_MAX_CONNECTIONS"), 16)?,
            limits: Limits {
                max_input_bytes: env::parse_or(env, &var("MAX_INPUT_BYTES"), 64 * 1024)?,
                max_system_prompt_bytes: env::parse_or(
                    env,
                    &var("MAX_SYSTEM_PROMPT_BYTES"),
                    32 * 1024,
                )?,
                max_model_name_bytes: 128,
                max_tokens_ceiling: env::parse_or(env, &var("MAX_TOKENS_CEILING"), 131_072)?,
                max_page_size: env::parse_or(env, &var("MAX_PAGE_SIZE"), 500)?,
                default_page_size: env::parse_or(env, &var("DEFAULT_PAGE_SIZE"), 50)?,
                max_message_bytes: env::parse_or(env, &var("MAX_MESSAGE_BYTES"), 4 * 1024 * 1024)?,
                spec: spec_limits(env)?,
                max_task_depth: env::parse_or(env, &var("MAX_TASK_DEPTH"), 5)?,
            },
            outbox: OutboxConfig {
                enabled: env::parse_or(env, &var("OUTBOX_RELAY"), true)?,
                poll_interval: env::millis_or(
                    env,
                    &var("OUTBOX_POLL_MS"),
                    Duration::from_millis(500),
                )?,
                batch_size: env::parse_or(env, &var("OUTBOX_BATCH"), 256)?,
            },
            approval_sweep_interval: env::millis_or(
                env,
                &var("APPROVAL_SWEEP_MS"),
                Duration::from_secs(1),
            )?,
            quotas: quota_defaults(env)?,
            admission: AdmissionConfig {
                window_per_agent: at_least_one(
                    &var("DISPATCH_WINDOW_PER_AGENT"),
                    env::parse_or(env, &var("DISPATCH_WINDOW_PER_AGENT"), 32)?,
                    MAX_QUOTA_RUNNING_TASKS,
                )?,
                sweep_interval: env::millis_or(
                    env,
                    &var("ADMISSION_SWEEP_MS"),
                    Duration::from_secs(1),
                )?,
            },
            projection: ProjectionConfig {
                concurrency: env::parse_or(env, &var("PROJECTION_CONCURRENCY"), 64)?,
                max_attempts: env::parse_or(env, &var("PROJECTION_MAX_ATTEMPTS"), 120)?,
            },
        })
    }

    /// Defaults with every listener on a free port (tests, `agentmesh up`).
    pub fn ephemeral(shared: SharedConfig, data_dir: PathBuf) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.data_dir = data_dir;
        config.grpc_listen = mesh_runtime::env::EPHEMERAL;
        config.admin_listen = mesh_runtime::env::EPHEMERAL;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn quotas_and_the_dispatch_window_come_from_their_variables() {
        let config = Config::from_env(&env(&[
            ("AGENTMESH_ORCHESTRATOR_TENANT_MAX_RUNNING_TASKS", "7"),
            ("AGENTMESH_ORCHESTRATOR_TENANT_TASKS_PER_MINUTE", "90"),
            ("AGENTMESH_ORCHESTRATOR_TENANT_WEIGHT", "2"),
            ("AGENTMESH_ORCHESTRATOR_DISPATCH_WINDOW_PER_AGENT", "12"),
            ("AGENTMESH_ORCHESTRATOR_ADMISSION_SWEEP_MS", "250"),
        ]))
        .unwrap();
        assert_eq!(
            config.quotas,
            QuotaDefaults {
                max_running_tasks: 7,
                tasks_per_minute: 90,
                weight: 2
            }
        );
        assert_eq!(config.admission.window_per_agent, 12);
        assert_eq!(config.admission.sweep_interval, Duration::from_millis(250));
    }

    #[test]
    fn a_zero_quota_or_window_is_refused_naming_the_variable() {
        for var in [
            "AGENTMESH_ORCHESTRATOR_TENANT_MAX_RUNNING_TASKS",
            "AGENTMESH_ORCHESTRATOR_TENANT_TASKS_PER_MINUTE",
            "AGENTMESH_ORCHESTRATOR_TENANT_WEIGHT",
            "AGENTMESH_ORCHESTRATOR_DISPATCH_WINDOW_PER_AGENT",
        ] {
            let error = Config::from_env(&env(&[(var, "0")])).unwrap_err();
            assert!(error.to_string().starts_with(var), "{error}");
        }
    }
}
