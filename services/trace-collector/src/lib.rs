//! The trace-collector: receives OTLP traces over gRPC (4317) and HTTP
//! (4318, `/v1/traces`, protobuf or JSON, gzip), validates them and puts
//! them on TRACES ([`ingest`]); the writers behind the durable consumer
//! `trace-writer` (the name KEDA scales on) store them as traces and
//! observations ([`writer`], [`store`]); the query API on the HTTP port
//! serves them back as trees; a sweep deletes traces past the retention.
//!
//! Shutdown phases: readiness off, stop accepting requests (gRPC and HTTP
//! listeners drain), stop pulling (in-flight messages are stored and acked
//! or left to redeliver), stop the retention sweep, close the database.
//! The collector never reads another service's tables.

pub mod aggregates;
mod config;
pub mod forward;
mod grpc;
mod http;
pub mod ingest;
pub mod keys;
pub mod mapping;
pub mod prices;
pub mod query;
pub mod scores;
pub mod span_tenant;
pub mod store;
pub mod writer;

use std::net::SocketAddr;
use std::time::Duration;

use mesh_bus::{Bus, StreamKind};
use mesh_runtime::frame::bind;
use mesh_runtime::queue_service::QueueServiceSpec;
use mesh_runtime::{ServiceFrame, Stopped};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
use prometheus_client::metrics::gauge::Gauge;
use sea_orm::DatabaseConnection;
use tokio_util::sync::CancellationToken;

pub use config::Config;
/// The OTLP messages and clients this service speaks, for its callers and tests.
pub use opentelemetry_proto;

/// Durable consumer name (deploy contract).
pub const CONSUMER: &str = "trace-writer";

/// The names this service is known by (deploy contract and health checks).
pub const SPEC: QueueServiceSpec = QueueServiceSpec {
    name: "trace-collector",
    env_prefix: "TRACES",
    grpc_service: "agentmesh.v1.TraceCollector",
    stream: StreamKind::Traces,
    consumer: CONSUMER,
    default_grpc_port: 4317,
    default_admin_port: 9105,
};

/// A started trace-collector; `stopped` resolves after shutdown completes.
#[derive(Debug)]
pub struct Running {
    /// OTLP/gRPC and gRPC health.
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP and the query API.
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

/// `AGENTMESH_TRACES_*` and the shared settings (see [`Config`]).
pub fn config_from_env(env: &mesh_runtime::Env) -> Result<Config, mesh_runtime::ConfigError> {
    Config::from_env(env)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

/// Connects to the database and NATS, migrates, binds the listeners and
/// spawns the components; returns once the service is ready.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let mut registry = mesh_telemetry::Registry::default();
    let lag = Gauge::<i64>::default();
    registry.register(
        "queue_lag",
        "num_pending + num_ack_pending of the service's consumer",
        lag.clone(),
    );
    let ingest_metrics = ingest::IngestMetrics::default();
    registry.register(
        "traces_spans_accepted",
        "spans accepted by the receivers and enqueued",
        ingest_metrics.accepted.clone(),
    );
    registry.register(
        "traces_spans_rejected",
        "spans refused by the receivers (partial success)",
        ingest_metrics.rejected.clone(),
    );
    let writer_metrics = writer::WriterMetrics::default();
    registry.register(
        "traces_spans_stored",
        "spans stored by this writer",
        writer_metrics.stored.clone(),
    );
    registry.register(
        "traces_store_failures",
        "TRACES messages whose write failed (retried or dead-lettered)",
        writer_metrics.failed.clone(),
    );
    let forward_metrics = forward::ForwardMetrics::default();
    registry.register(
        "traces_spans_forwarded",
        "spans the forward target accepted",
        forward_metrics.forwarded.clone(),
    );
    registry.register(
        "traces_forward_retries",
        "forward tries answered with a retryable failure and tried again",
        forward_metrics.retries.clone(),
    );
    registry.register(
        "traces_forward_failures",
        "batches whose forward was given up (stored all the same)",
        forward_metrics.failures.clone(),
    );
    let mut frame = ServiceFrame::start(
        SPEC.grpc_service,
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    let service_verifier = frame.service_auth(&config.shared, "trace-collector")?;

    let url = mesh_store::resolve_url(
        config.shared.database_url.as_deref(),
        &config.data_dir,
        SPEC.name,
    )?;
    let db = mesh_store::connect(&url, config.db_max_connections).await?;
    mesh_store::traces::migrate(&db).await?;

    let bus = Bus::connect(
        &config.shared.nats_url,
        SPEC.name,
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
    bus.ensure_streams(&[SPEC.stream, StreamKind::Dlq]).await?;
    let consumer = bus
        .ensure_durable(
            SPEC.stream,
            SPEC.consumer,
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(SPEC.consumer.to_owned()),
                filter_subject: SPEC.stream.subjects().to_owned(),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.shared.bus.task_ack_wait,
                max_deliver: i64::from(config.shared.bus.task_retry.max_deliver),
                max_ack_pending: config.shared.bus.task_max_ack_pending,
                ..Default::default()
            },
        )
        .await?;
    let (supervisor, stop) = (frame.supervisor(), frame.stop());
    let prices = prices::Prices::load(config.prices_file.as_ref())?;
    if let Some(path) = &config.prices_file {
        supervisor.spawn(
            "price table",
            prices::watch(
                prices.clone(),
                path.clone(),
                config.prices_reload_interval,
                stop.clone(),
            ),
        );
    }

    supervisor.spawn(
        "lag gauge",
        lag_gauge(bus.clone(), lag, config.lag_interval, stop.clone()),
    );
    let writer = writer::Writer {
        db: db.clone(),
        bus: bus.clone(),
        consumer,
        concurrency: config.writer_concurrency,
        retry: config.shared.bus.task_retry,
        metrics: writer_metrics,
        prices,
        forwarder: config.forward.clone().map(|forward| {
            tracing::info!(url = %forward.url, "forwarding accepted spans");
            forward::Forwarder::new(forward, forward_metrics)
        }),
    };
    if config.writer_concurrency == 0 {
        tracing::info!("no trace writer on this replica (writer concurrency 0)");
    } else {
        supervisor.spawn("trace writer", writer.run(stop.clone()));
    }
    if config.retention.is_zero() {
        tracing::info!("trace retention disabled");
    } else {
        supervisor.spawn(
            "retention",
            retention(
                db.clone(),
                config.retention,
                config.retention_interval,
                stop.clone(),
            ),
        );
    }

    let receiver = ingest::Receiver::new(bus.clone(), ingest_metrics);
    let listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = listener.local_addr()?;
    frame.spawn_grpc(
        listener,
        frame
            .grpc()
            .add_service(
                TraceServiceServer::new(grpc::GrpcReceiver {
                    receiver: receiver.clone(),
                })
                .max_decoding_message_size(config.max_body_bytes)
                .max_encoding_message_size(config.server.grpc_max_response_bytes),
            )
            .add_service(
                mesh_proto::trace_query_server::TraceQueryServer::new(query::TraceQueryGrpc {
                    db: db.clone(),
                    limits: query_limits(&config),
                })
                .max_decoding_message_size(config.max_body_bytes)
                .max_encoding_message_size(config.server.grpc_max_response_bytes),
            ),
    );
    let listener = bind(config.http_listen, "http").await?;
    let http_addr = listener.local_addr()?;
    // Every route but the Langfuse one (Basic auth of its own) trusts the
    // tenant header, so each needs a service token.
    frame.spawn_http(
        listener,
        mesh_runtime::service_auth::guard_tenant_header(
            http::router(http::HttpState {
                receiver,
                db,
                max_body_bytes: config.max_body_bytes,
                default_page_size: config.default_page_size.min(config.max_page_size).max(1),
                max_page_size: config.max_page_size.max(1),
                aggregate_default_range_ms: i64::try_from(
                    config.aggregate_default_range.as_millis(),
                )
                .unwrap_or(i64::MAX),
                aggregate_max_buckets: config.aggregate_max_buckets.max(1),
                max_tree_depth: config.max_tree_depth,
                keys: keys::KeyCache::new(config.key_cache_ttl, config.key_cache_entries),
            }),
            service_verifier,
            &[http::LANGFUSE_OTLP_PATH],
        ),
    );
    let admin_addr = frame.admin_addr;
    tracing::info!(%grpc_addr, %http_addr, %admin_addr, "trace-collector ready");
    Ok(Running {
        grpc_addr,
        http_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}

/// The page, tree and aggregate limits both query faces apply.
fn query_limits(config: &Config) -> query::QueryLimits {
    query::QueryLimits {
        default_page_size: config.default_page_size.min(config.max_page_size).max(1),
        max_page_size: config.max_page_size.max(1),
        aggregate_default_range_ms: i64::try_from(config.aggregate_default_range.as_millis())
            .unwrap_or(i64::MAX),
        aggregate_max_buckets: config.aggregate_max_buckets.max(1),
        max_tree_depth: config.max_tree_depth,
    }
}

async fn lag_gauge(
    bus: Bus,
    lag: Gauge<i64>,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match bus.consumer_lag(SPEC.stream, SPEC.consumer).await {
            Ok(l) => {
                lag.set(i64::try_from(l.total()).unwrap_or(i64::MAX));
            }
            Err(error) => tracing::warn!(%error, "cannot read consumer lag"),
        }
    }
}

/// Deletes traces older than `retention` every `interval`. A failed sweep
/// is logged and retried at the next tick, never fatal.
async fn retention(
    db: DatabaseConnection,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(interval);
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let cutoff = store::now_ms().saturating_sub(retention_ms);
        match store::delete_older_than(&db, cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, cutoff_ms = cutoff, "retention deleted traces"),
            Err(error) => tracing::warn!(%error, "retention sweep failed; retrying next tick"),
        }
    }
}
