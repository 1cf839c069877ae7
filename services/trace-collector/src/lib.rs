//! The trace-collector service as the backbone runs it: it declares its stream and
//! its durable consumer `trace-writer` (the names KEDA scales on), serves health,
//! readiness, gRPC health and `/metrics` (including its consumer's lag).
//!
//! It does not pull from its consumer yet: the OTLP receivers, the trace store and the query API are the traces issue's. Pulling without
//! handling would acknowledge and lose the messages, so they wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_bus::{Bus, StreamKind};
use mesh_runtime::env::{self, ConfigError, Env};
use mesh_runtime::{Readiness, SharedConfig, Stopped, Supervisor};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// Durable consumer name (deploy contract).
pub const CONSUMER: &str = "trace-writer";

#[derive(Debug, Clone)]
pub struct Config {
    pub shared: SharedConfig,
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// How often the consumer lag gauge is refreshed.
    pub lag_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            grpc_listen: env::parse_or(
                env,
                "AGENTMESH_TRACES_GRPC_LISTEN",
                ([127, 0, 0, 1], 4317).into(),
            )?,
            admin_listen: env::parse_or(
                env,
                "AGENTMESH_TRACES_ADMIN_LISTEN",
                ([127, 0, 0, 1], 9105).into(),
            )?,
            lag_interval: env::millis_or(
                env,
                "AGENTMESH_TRACES_LAG_INTERVAL_MS",
                Duration::from_secs(5),
            )?,
        })
    }

    pub fn ephemeral(shared: SharedConfig) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(&Env::new())?;
        config.shared = shared;
        config.grpc_listen = ([127, 0, 0, 1], 0).into();
        config.admin_listen = ([127, 0, 0, 1], 0).into();
        Ok(config)
    }
}

#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let (health, health_service) = tonic_health::server::health_reporter();
    let readiness = Readiness::new(health, "agentmesh.v1.TraceCollector");
    let mut registry = mesh_telemetry::Registry::default();
    let lag = Gauge::<i64>::default();
    registry.register(
        "queue_lag",
        "num_pending + num_ack_pending of the service's consumer",
        lag.clone(),
    );
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
        "trace-collector",
        config.shared.bus.clone(),
    )
    .await?;
    bus.ensure_streams(&[StreamKind::Traces, StreamKind::Dlq])
        .await?;
    bus.ensure_durable(
        StreamKind::Traces,
        CONSUMER,
        async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(CONSUMER.to_owned()),
            filter_subject: "traces.>".to_owned(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_deliver: i64::from(config.shared.bus.task_retry.max_deliver),
            ..Default::default()
        },
    )
    .await?;

    let lag_stop = stop.clone();
    let interval = config.lag_interval;
    supervisor.spawn("lag gauge", async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = lag_stop.cancelled() => return Ok::<(), std::convert::Infallible>(()),
                _ = tick.tick() => {}
            }
            match bus.consumer_lag(StreamKind::Traces, CONSUMER).await {
                Ok(l) => {
                    lag.set(i64::try_from(l.total()).unwrap_or(i64::MAX));
                }
                Err(error) => tracing::warn!(%error, "cannot read consumer lag"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .context("bind grpc listener")?;
    let grpc_addr = listener.local_addr()?;
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    supervisor.spawn("grpc", grpc);

    readiness.set(true).await;
    supervisor.unready_on_stop(readiness);
    tracing::info!(%grpc_addr, %admin_addr, "trace-collector ready");
    Ok(Running {
        grpc_addr,
        admin_addr,
        stopped: supervisor.finish(),
    })
}
