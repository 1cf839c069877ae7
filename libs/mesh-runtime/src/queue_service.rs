//! A service that owns a work-queue stream and its durable consumer but
//! whose handlers are not written yet (retrieval's ingest, the trace
//! writers): it declares the stream and the consumer under the contract
//! names KEDA scales on, serves health and metrics (with the consumer's lag
//! as `queue_lag`), and does NOT pull, because pulling without handling
//! would acknowledge and lose the messages; they wait for the handler.

use std::net::SocketAddr;
use std::time::Duration;

use mesh_bus::{Bus, StreamKind};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use crate::env::{self, ConfigError, Env};
use crate::frame::{ServiceFrame, bind};
use crate::{SharedConfig, Stopped};

/// What distinguishes one queue service from another.
#[derive(Debug, Clone, Copy)]
pub struct QueueServiceSpec {
    /// Service name (NATS client name, logs).
    pub name: &'static str,
    /// `AGENTMESH_<PREFIX>_...` variables.
    pub env_prefix: &'static str,
    /// Fully qualified gRPC name reported by gRPC health.
    pub grpc_service: &'static str,
    pub stream: StreamKind,
    /// Durable consumer name (deploy contract).
    pub consumer: &'static str,
    pub default_grpc_port: u16,
    pub default_admin_port: u16,
}

#[derive(Debug, Clone)]
pub struct QueueServiceConfig {
    pub shared: SharedConfig,
    pub grpc_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// How often the lag gauge is refreshed.
    pub lag_interval: Duration,
    /// `AGENTMESH_<PREFIX>_MAX_HEADER_BYTES` and the other listener limits.
    pub server: crate::ServerLimits,
}

impl QueueServiceConfig {
    pub fn from_env(spec: &QueueServiceSpec, env: &Env) -> Result<Self, ConfigError> {
        let var = |name: &str| format!("AGENTMESH_{}_{name}", spec.env_prefix);
        Ok(Self {
            shared: SharedConfig::from_env(env)?,
            grpc_listen: env::parse_or(
                env,
                &var("GRPC_LISTEN"),
                ([127, 0, 0, 1], spec.default_grpc_port).into(),
            )?,
            admin_listen: env::parse_or(
                env,
                &var("ADMIN_LISTEN"),
                ([127, 0, 0, 1], spec.default_admin_port).into(),
            )?,
            lag_interval: env::millis_or(env, &var("LAG_INTERVAL_MS"), Duration::from_secs(5))?,
            server: crate::ServerLimits::from_env(env, &var(""))?,
        })
    }

    pub fn ephemeral(spec: &QueueServiceSpec, shared: SharedConfig) -> Result<Self, ConfigError> {
        let mut config = Self::from_env(spec, &Env::new())?;
        config.shared = shared;
        config.grpc_listen = crate::env::EPHEMERAL;
        config.admin_listen = crate::env::EPHEMERAL;
        Ok(config)
    }
}

#[derive(Debug)]
pub struct RunningQueueService {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueServiceError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Bus(#[from] mesh_bus::BusError),
}

pub async fn start(
    spec: &QueueServiceSpec,
    config: QueueServiceConfig,
    shutdown: CancellationToken,
) -> Result<RunningQueueService, QueueServiceError> {
    let mut registry = mesh_telemetry::Registry::default();
    let lag = Gauge::<i64>::default();
    registry.register(
        "queue_lag",
        "num_pending + num_ack_pending of the service's consumer",
        lag.clone(),
    );
    let mut frame = ServiceFrame::start(
        spec.grpc_service,
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;

    let bus = Bus::connect(
        &config.shared.nats_url,
        spec.name,
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
    bus.ensure_streams(&[spec.stream, StreamKind::Dlq]).await?;
    bus.ensure_durable(
        spec.stream,
        spec.consumer,
        async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(spec.consumer.to_owned()),
            filter_subject: spec.stream.subjects().to_owned(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_deliver: i64::from(config.shared.bus.task_retry.max_deliver),
            ..Default::default()
        },
    )
    .await?;

    let (stop, interval) = (frame.stop(), config.lag_interval);
    let (stream, consumer) = (spec.stream, spec.consumer);
    frame.supervisor().spawn("lag gauge", async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok::<(), std::convert::Infallible>(()),
                _ = tick.tick() => {}
            }
            match bus.consumer_lag(stream, consumer).await {
                Ok(l) => {
                    lag.set(i64::try_from(l.total()).unwrap_or(i64::MAX));
                }
                Err(error) => tracing::warn!(%error, "cannot read consumer lag"),
            }
        }
    });

    let listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = listener.local_addr()?;
    frame.spawn_grpc(listener, frame.grpc());
    let admin_addr = frame.admin_addr;
    tracing::info!(service = spec.name, %grpc_addr, %admin_addr, "ready");
    Ok(RunningQueueService {
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}
