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

use anyhow::Context as _;
use mesh_proto::inference_service_server::InferenceServiceServer;
use mesh_runtime::frame::bind;
use mesh_runtime::{ServiceFrame, Stopped};
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
    let mut registry = mesh_telemetry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let frame = ServiceFrame::start(
        "agentmesh.v1.InferenceService",
        config.admin_listen,
        registry,
        &shutdown,
    )
    .await?;
    let admin_addr = frame.admin_addr;

    let backend = backend::Backend::new(&config).context("build backend client")?;
    let pool = metrics.pool("default", &config);

    let http_listener = bind(config.http_listen, "http").await?;
    let http_addr = http_listener.local_addr()?;
    let app = openai::router(
        openai::HttpState {
            backend: backend.clone(),
            pool: pool.clone(),
            metrics: metrics.clone(),
        },
        config.max_body_bytes,
    );
    frame.spawn_http(http_listener, app);

    let grpc_listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    frame.spawn_grpc(
        grpc_listener,
        frame
            .grpc()
            .add_service(InferenceServiceServer::new(grpc::InferenceGrpc {
                backend,
                pool,
                metrics,
            })),
    );

    // Ready once listening: a backend that is down is a per-request
    // failure (retried by workers), not a reason to leave the pool.
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, backend = %config.backend_url, "inference-router ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}
