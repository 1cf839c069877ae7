//! The inference-router: an OpenAI-compatible HTTP proxy and an internal
//! gRPC streaming API in front of pools of model servers. A route table
//! (`routes`) maps models to pools; each pool picks a backend by its
//! strategy (`select`), and a request that fails before its first byte
//! fails over to the next backend or the route's fallback chain (`pool`).
//! The table reloads from its file without a restart (`watch`).
//! Per-tenant limits (`limits`), the response cache (`cache`) and usage
//! and cost accounting (`usage`) sit around dispatch in the HTTP and gRPC
//! faces; limits and cache live in Redis (`redis_link`) and fail open.

mod admission;
mod backend;
mod cache;
mod config;
#[doc(hidden)]
pub mod fuzzing;
mod grpc;
mod limits;
mod metrics;
mod openai;
mod pool;
mod redis_link;
mod routes;
mod select;
mod usage;
mod watch;

use std::sync::Arc;

use std::net::SocketAddr;

use anyhow::Context as _;
use mesh_proto::inference_service_server::InferenceServiceServer;
use mesh_runtime::frame::bind;
use mesh_runtime::{ServiceFrame, Stopped};
use tokio_util::sync::CancellationToken;

pub use config::{Config, EnvSnapshot};
pub use routes::RoutesError;

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
    // Before anything listens: a bad table stops the start cleanly. The
    // file's stamp is taken first so a write during the load is reloaded.
    let stamp = config.routes_file.as_deref().and_then(watch::stamp);
    let spec = match &config.routes_file {
        Some(path) => routes::load_file(path, &config, &config.env.0)
            .with_context(|| format!("route table {}", path.display()))?,
        None => routes::single_backend(&config),
    };
    let mut registry = mesh_telemetry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let mut frame = ServiceFrame::start(
        "agentmesh.v1.InferenceService",
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    let service_verifier = frame.service_auth(&config.shared, "inference-router")?;
    let admin_addr = frame.admin_addr;

    let client = backend::Client::new(&config).context("build backend client")?;
    let router = Arc::new(pool::Router::new(spec, client, metrics.clone()));
    if let Some(path) = &config.routes_file {
        frame.supervisor().spawn(
            "route-reload",
            watch::reload_loop(
                router.clone(),
                config.clone(),
                path.clone(),
                stamp,
                metrics.clone(),
                frame.stop(),
            ),
        );
    }
    // One round of readiness probes before serving, so a backend that is
    // still loading (or scaled to zero) is known as such from the first
    // request; bounded by the probe interval.
    watch::probe_round(&router).await;
    frame.supervisor().spawn(
        "backend-scrape",
        watch::scrape_loop(router.clone(), frame.stop()),
    );

    let http_listener = bind(config.http_listen, "http").await?;
    let http_addr = http_listener.local_addr()?;
    let redis =
        redis_link::RedisLink::open(config.shared.redis_url.as_deref(), config.redis_timeout);
    // Reconciliations, cache stores and gRPC stream producers run on the
    // supervisor's tracker: the servers drain their requests first (each
    // one's answer spawns its reconciliation as it ends), then the service
    // reports stopped only once those tasks are done too.
    let tasks = frame.supervisor().tracker();
    let limiter = limits::Limiter::new(redis.clone(), metrics.clone(), tasks.clone());
    let cache = cache::Cache::new(redis, metrics.clone(), tasks.clone());
    let app = openai::router(
        openai::HttpState {
            router: router.clone(),
            metrics: metrics.clone(),
            limiter: limiter.clone(),
            cache: cache.clone(),
        },
        config.max_body_bytes,
    );
    // The tenant header is honoured only with a service token; OpenAI
    // clients without either are served as the default tenant.
    let app = mesh_runtime::service_auth::guard_tenant_header(app, service_verifier, &[]);
    frame.spawn_http(http_listener, app);

    let grpc_listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = grpc_listener.local_addr()?;
    frame.spawn_grpc(
        grpc_listener,
        frame.grpc().add_service(
            // One chat request over gRPC carries what one HTTP body does.
            InferenceServiceServer::new(grpc::InferenceGrpc {
                router,
                metrics,
                limiter,
                cache,
                tasks,
            })
            .max_decoding_message_size(config.max_body_bytes)
            .max_encoding_message_size(config.server.grpc_max_response_bytes),
        ),
    );

    // Ready once listening: a backend that is down is a per-request
    // failure (retried by workers), not a reason to leave the pool.
    tracing::info!(%http_addr, %grpc_addr, %admin_addr, routes = ?config.routes_file, "inference-router ready");
    Ok(Running {
        http_addr,
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}
