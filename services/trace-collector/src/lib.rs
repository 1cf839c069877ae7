//! The trace-collector service as the backbone runs it: it declares its stream and
//! its durable consumer `trace-writer` (the names KEDA scales on) and serves
//! health, readiness, gRPC health and `/metrics` with the consumer's lag.
//! Its handlers, the OTLP receivers, the trace store and the query API (the traces issue), are not written yet, so it does not pull: see
//! [`mesh_runtime::queue_service`].

use mesh_bus::StreamKind;
use mesh_runtime::queue_service::{
    self, QueueServiceConfig, QueueServiceSpec, RunningQueueService,
};
use tokio_util::sync::CancellationToken;

/// Durable consumer name (deploy contract).
pub const CONSUMER: &str = "trace-writer";

pub const SPEC: QueueServiceSpec = QueueServiceSpec {
    name: "trace-collector",
    env_prefix: "TRACES",
    grpc_service: "agentmesh.v1.TraceCollector",
    stream: StreamKind::Traces,
    consumer: CONSUMER,
    default_grpc_port: 4317,
    default_admin_port: 9105,
};

/// `AGENTMESH_TRACES_GRPC_LISTEN`, `_ADMIN_LISTEN`, `_LAG_INTERVAL_MS` and the shared settings.
pub type Config = QueueServiceConfig;
pub type Running = RunningQueueService;

pub fn config_from_env(env: &mesh_runtime::Env) -> Result<Config, mesh_runtime::ConfigError> {
    Config::from_env(&SPEC, env)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    Ok(queue_service::start(&SPEC, config, shutdown).await?)
}
