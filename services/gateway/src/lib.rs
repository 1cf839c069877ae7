//! The gateway: the public face of the mesh. REST (JSON, SSE) and gRPC with
//! the same operations, roles and errors; JWT auth on every route; task
//! event streams read straight from EVENTS. It owns nothing durable: agents
//! and tasks live in the orchestrator, behind its internal gRPC API.

mod access;
mod agents_list;
mod api;
mod api_keys;
pub mod auth;
mod config;
mod console;
mod error;
mod events;
mod grpc;
pub mod json;
mod metrics;
mod openai;
mod openapi;
mod quotas;
mod ratelimit;
mod rest;
mod retrieval;
mod state;
mod trace_grpc;
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
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    // Its own gRPC face is public (user JWTs); this is the credential of
    // its calls to the internal services.
    frame.service_auth(&config.shared, "gateway")?;
    let admin_addr = frame.admin_addr;

    let bus = Bus::connect(
        &config.shared.nats_url,
        "gateway",
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
    bus.ensure_streams(&[StreamKind::Events]).await?;
    let tls = config.shared.tls.as_ref();
    let channel = mesh_runtime::tls::connect_lazy(
        tonic::transport::Endpoint::from_shared(config.orchestrator_url.clone())
            .with_context(|| {
                format!(
                    "AGENTMESH_GATEWAY_ORCHESTRATOR_URL: {:?}",
                    config.orchestrator_url
                )
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true),
        tls,
    );
    if let Some(caller) = &config.unauthenticated_for_benchmarks {
        tracing::warn!(
            tenant = %caller.tenant,
            "authentication is OFF: every request runs as this caller (benchmark configuration)"
        );
    }
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
        verifier: verifier(&config).await?,
        quotas: mesh_proto::quota_admin_client::QuotaAdminClient::new(channel.clone()),
        orchestrator: ControlPlaneClient::new(channel),
        retrieval: retrieval::client(&config.retrieval_url, tls).with_context(|| {
            format!(
                "AGENTMESH_GATEWAY_RETRIEVAL_URL: {:?}",
                config.retrieval_url
            )
        })?,
        bus,
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_idle_timeout(mesh_runtime::server::CLIENT_POOL_IDLE_TIMEOUT)
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .context("build the router HTTP client")?,
        config: Arc::new(config.clone()),
        metrics,
        submit_limiter,
        api_keys: api_keys::KeyCache::new(config.api_key_cache.clone()),
    };

    if let Some(url) = &config.jwks_url {
        frame.supervisor().spawn(
            "jwks refresh",
            refresh_jwks(
                state.verifier.clone(),
                url.clone(),
                config.jwks_refresh,
                frame.stop(),
            ),
        );
    }

    let http_listener = bind(config.http_listen, "http").await?;
    let http_addr = http_listener.local_addr()?;
    frame.spawn_http(http_listener, rest::router(state.clone()));

    let grpc_listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let max_message = config.max_body_bytes;
    let max_response = config.server.grpc_max_response_bytes;
    let grpc = frame
        .public_grpc()
        .add_service(api_keys::WithApiKeys::new(
            state.clone(),
            AgentServiceServer::new(grpc::PublicGrpc {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_response),
        ))
        .add_service(api_keys::WithApiKeys::new(
            state.clone(),
            ToolServiceServer::new(grpc::PublicGrpc {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_response),
        ))
        .add_service(api_keys::WithApiKeys::new(
            state.clone(),
            mesh_proto::retrieval_server::RetrievalServer::new(retrieval::PublicRetrieval {
                state: state.clone(),
            })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_response),
        ))
        .add_service(api_keys::WithApiKeys::new(
            state.clone(),
            mesh_proto::trace_query_server::TraceQueryServer::new(trace_grpc::PublicTraces {
                state: state.clone(),
                collector: trace_grpc::client(&config.traces_grpc_url, config.shared.tls.as_ref())
                    .with_context(|| {
                        format!(
                            "AGENTMESH_GATEWAY_TRACES_GRPC_URL: {:?}",
                            config.traces_grpc_url
                        )
                    })?,
            })
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_response),
        ))
        .add_service(api_keys::WithApiKeys::new(
            state.clone(),
            TaskServiceServer::new(grpc::PublicGrpc { state })
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_response),
        ));
    frame.spawn_public_grpc(grpc_listener, grpc);
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, "gateway ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}

/// The token verifier: the HS256 secret and/or the JWKS keys, with the
/// configured issuer, audience and claims. A JWKS URL is fetched now (the
/// gateway does not start without keys) and then refreshed by
/// [`refresh_jwks`].
async fn verifier(config: &Config) -> anyhow::Result<mesh_auth::Verifier> {
    let mut verifier = mesh_auth::Verifier::new(
        config.jwt_secret.as_deref(),
        mesh_auth::TokenRules {
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway_secs: config.jwt_leeway.as_secs(),
            tenant_claim: config.jwt_tenant_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
        },
    );
    if let Some(previous) = &config.jwt_secret_previous {
        verifier = verifier.with_previous_secret(previous);
    }
    if let Some(path) = &config.jwks_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("AGENTMESH_GATEWAY_JWKS_FILE: read {}", path.display()))?;
        let n = verifier
            .set_jwks(&text)
            .with_context(|| format!("AGENTMESH_GATEWAY_JWKS_FILE: {}", path.display()))?;
        tracing::info!(keys = n, "JWKS loaded from file");
    }
    if let Some(url) = &config.jwks_url {
        let text = fetch_jwks(url)
            .await
            .with_context(|| format!("AGENTMESH_GATEWAY_JWKS_URL: {url}"))?;
        let n = verifier
            .set_jwks(&text)
            .with_context(|| format!("AGENTMESH_GATEWAY_JWKS_URL: {url}"))?;
        tracing::info!(keys = n, "JWKS loaded");
    }
    Ok(verifier)
}

async fn fetch_jwks(url: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await?
        .error_for_status()?;
    Ok(response.text().await?)
}

/// Re-fetches the JWKS every `interval` so key rotation needs no restart;
/// a failed fetch or a document without usable keys keeps the current set.
async fn refresh_jwks(
    verifier: mesh_auth::Verifier,
    url: String,
    interval: std::time::Duration,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match fetch_jwks(&url).await.map(|text| verifier.set_jwks(&text)) {
            Ok(Ok(n)) => tracing::debug!(keys = n, "JWKS refreshed"),
            Ok(Err(error)) => tracing::warn!(%error, "JWKS refresh kept the current keys"),
            Err(error) => tracing::warn!(%error, "JWKS fetch failed; keeping the current keys"),
        }
    }
}
