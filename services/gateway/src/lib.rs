//! The gateway: the public face of the mesh. REST (JSON, SSE) and gRPC with
//! the same operations, roles and errors; JWT auth on every route; task
//! event streams read straight from EVENTS. It owns nothing durable: agents
//! and tasks live in the orchestrator, behind its internal gRPC API.

mod api;
pub mod auth;
mod config;
mod error;
mod events;
mod grpc;
pub mod json;
mod metrics;
mod ratelimit;
mod rest;
mod state;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mesh_bus::{Bus, StreamKind};
use mesh_proto::agent_service_server::AgentServiceServer;
use mesh_proto::control_plane_client::ControlPlaneClient;
use mesh_proto::task_service_server::TaskServiceServer;
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
    let readiness = Readiness::new(health, "agentmesh.v1.TaskService");
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

    let bus = Bus::connect(
        &config.shared.nats_url,
        "gateway",
        config.shared.bus.clone(),
    )
    .await?;
    bus.ensure_streams(&[StreamKind::Events]).await?;
    let channel = tonic::transport::Endpoint::from_shared(config.orchestrator_url.clone())
        .with_context(|| {
            format!(
                "AGENTMESH_GATEWAY_ORCHESTRATOR_URL: {:?}",
                config.orchestrator_url
            )
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy();
    let submit_limiter = match (&config.shared.redis_url, config.submit_rate_per_minute) {
        (Some(url), limit) if limit > 0 => Some(
            ratelimit::RateLimiter::connect(url, limit, config.redis_timeout)
                .await
                .context("connect to redis (REDIS_URL) for rate limits")?,
        ),
        (None, limit) if limit > 0 => {
            tracing::warn!("REDIS_URL is not set: per-tenant rate limits are off");
            None
        }
        _ => None,
    };
    let state = state::AppState {
        verifier: mesh_auth::Verifier::hs256(&config.jwt_secret, config.jwt_leeway.as_secs()),
        orchestrator: ControlPlaneClient::new(channel),
        bus,
        config: Arc::new(config.clone()),
        metrics,
        submit_limiter,
    };

    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .context("bind http listener")?;
    let http_addr = http_listener.local_addr()?;
    let app = rest::router(state.clone());
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
    let max_message = config.max_body_bytes;
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            AgentServiceServer::new(grpc::PublicGrpc {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message),
        )
        .add_service(
            TaskServiceServer::new(grpc::PublicGrpc { state })
                .max_decoding_message_size(max_message),
        )
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            stop.clone().cancelled_owned(),
        );
    supervisor.spawn("grpc", grpc);

    readiness.set(true).await;
    supervisor.unready_on_stop(readiness);
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, "gateway ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: supervisor.finish(),
    })
}
