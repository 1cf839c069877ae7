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
mod openai;
mod ratelimit;
mod rest;
mod retrieval;
mod state;
mod traces;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mesh_bus::{Bus, StreamKind};
use mesh_proto::agent_service_server::AgentServiceServer;
use mesh_proto::control_plane_client::ControlPlaneClient;
use mesh_proto::task_service_server::TaskServiceServer;
use mesh_proto::tool_service_server::ToolServiceServer;
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
    let mut frame = ServiceFrame::start(
        "agentmesh.v1.TaskService",
        config.admin_listen,
        registry,
        &shutdown,
    )
    .await?;
    let admin_addr = frame.admin_addr;

    let bus = Bus::connect(
        &config.shared.nats_url,
        "gateway",
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
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
        retrieval: retrieval::client(&config.retrieval_url).with_context(|| {
            format!(
                "AGENTMESH_GATEWAY_RETRIEVAL_URL: {:?}",
                config.retrieval_url
            )
        })?,
        bus,
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("build the router HTTP client")?,
        config: Arc::new(config.clone()),
        metrics,
        submit_limiter,
    };

    let http_listener = bind(config.http_listen, "http").await?;
    let http_addr = http_listener.local_addr()?;
    frame.spawn_http(http_listener, rest::router(state.clone()));

    let grpc_listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let max_message = config.max_body_bytes;
    let grpc = frame
        .grpc()
        .add_service(
            AgentServiceServer::new(grpc::PublicGrpc {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message),
        )
        .add_service(
            ToolServiceServer::new(grpc::PublicGrpc {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message),
        )
        .add_service(
            mesh_proto::retrieval_server::RetrievalServer::new(retrieval::PublicRetrieval {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message),
        )
        .add_service(
            TaskServiceServer::new(grpc::PublicGrpc { state })
                .max_decoding_message_size(max_message),
        );
    frame.spawn_grpc(grpc_listener, grpc);
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, "gateway ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}
