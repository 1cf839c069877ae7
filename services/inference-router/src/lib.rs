//! The inference-router: an OpenAI-compatible HTTP proxy and an internal
//! gRPC streaming API in front of the model backend. This backbone version
//! serves one configured backend; route tables, pools, admission queues and
//! fallback are the router issue's.

mod admission;
mod backend;
mod config;
mod grpc;
mod metrics;
mod openai;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mesh_proto::inference_service_server::InferenceServiceServer;
use mesh_runtime::{Readiness, Stopped, Supervisor};
use tokio_util::sync::CancellationToken;

pub use config::Config;

#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health, "agentmesh.v1.InferenceService");
    let mut registry = mesh_telemetry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let supervisor = Supervisor::new(&shutdown);
    let stop = supervisor.stop();

    let (admin_addr, admin) = mesh_runtime::serve_admin(
        config.admin_listen,
        readiness.clone(),
        Arc::new(registry),
        stop.clone(),
    )
    .await
    .context("bind admin listener")?;
    supervisor.spawn("admin", admin);

    let backend = backend::Backend::new(&config).context("build backend client")?;
    let pool = metrics.pool("default", &config);

    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .context("bind http listener")?;
    let http_addr = http_listener.local_addr()?;
    let app = openai::router(
        openai::HttpState {
            backend: backend.clone(),
            pool: pool.clone(),
            metrics: metrics.clone(),
        },
        config.max_body_bytes,
    );
    let http_stop = stop.clone();
    supervisor.spawn("http", async move {
        axum::serve(http_listener, app)
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await
    });

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .context("bind grpc listener")?;
    let grpc_addr = grpc_listener.local_addr()?;
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(InferenceServiceServer::new(grpc::InferenceGrpc {
            backend,
            pool,
            metrics,
        }))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.clone().cancelled_owned(),
        );
    supervisor.spawn("grpc", grpc);

    // Ready once listening: a backend that is down is a per-request
    // failure (retried by workers), not a reason to leave the pool.
    readiness.set(true).await;
    supervisor.unready_on_stop(readiness);
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, backend = %config.backend_url, "inference-router ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: supervisor.finish(),
    })
}
