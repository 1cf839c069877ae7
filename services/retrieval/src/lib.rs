//! The retrieval service as the backbone runs it: it declares its stream and
//! its durable consumer `retrieval-ingest` (the names KEDA scales on) and serves
//! health, readiness, gRPC health and `/metrics` with the consumer's lag.
//! Its handlers, collections, documents, chunking, embeddings and hybrid search (the retrieval issue), are not written yet, so it does not pull: see
//! [`mesh_runtime::queue_service`].

use mesh_bus::StreamKind;
use mesh_runtime::queue_service::{
    self, QueueServiceConfig, QueueServiceSpec, RunningQueueService,
};
use tokio_util::sync::CancellationToken;

/// Durable consumer name (deploy contract).
pub const CONSUMER: &str = "retrieval-ingest";

pub const SPEC: QueueServiceSpec = QueueServiceSpec {
    name: "retrieval",
    env_prefix: "RETRIEVAL",
    grpc_service: "agentmesh.v1.Retrieval",
    stream: StreamKind::Ingest,
    consumer: CONSUMER,
    default_grpc_port: 7004,
    default_admin_port: 9104,
};

/// `AGENTMESH_RETRIEVAL_GRPC_LISTEN`, `_ADMIN_LISTEN`, `_LAG_INTERVAL_MS` and the shared settings.
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
