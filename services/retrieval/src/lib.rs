//! The retrieval service: per-tenant collections of documents, chunked by
//! tokens with overlap, embedded (all-MiniLM-L6-v2 in-process with candle,
//! or an OpenAI-compatible `/v1/embeddings` endpoint), stored in its own
//! tables (the source of truth) and searched by vector (exact, or HNSW with
//! usearch for large collections, memory-mapped after a restart), keyword
//! (BM25 with tantivy, on disk per collection) or both fused by
//! reciprocal rank. Search is synchronous over internal gRPC; bulk ingest
//! goes through INGEST (`ingest.<tenant>.<collection>`) and the durable
//! consumer `retrieval-ingest`, the name KEDA scales on.
//!
//! Shutdown phases: readiness off, the gRPC listener drains, the ingest
//! consumer stops pulling (in-flight parts commit and ack, or redeliver),
//! the HNSW graphs are saved for a fast restart, the database closes.
//! The service never reads another service's tables.

pub mod chunk;
mod config;
pub mod embed;
pub mod error;
mod grpc;
pub mod index;
mod ingest;
pub mod keyword;
pub mod milvus;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mesh_bus::{Bus, StreamKind};
use mesh_proto::retrieval_server::RetrievalServer;
use mesh_runtime::frame::bind;
use mesh_runtime::queue_service::QueueServiceSpec;
use mesh_runtime::{ServiceFrame, Stopped};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Durable consumer name (deploy contract).
pub const CONSUMER: &str = "retrieval-ingest";

/// The names this service is known by (deploy contract and health checks).
pub const SPEC: QueueServiceSpec = QueueServiceSpec {
    name: "retrieval",
    env_prefix: "RETRIEVAL",
    grpc_service: "agentmesh.v1.Retrieval",
    stream: StreamKind::Ingest,
    consumer: CONSUMER,
    default_grpc_port: 7004,
    default_admin_port: 9104,
};

#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

/// `AGENTMESH_RETRIEVAL_*` and the shared settings (see [`Config`]).
pub fn config_from_env(env: &mesh_runtime::Env) -> Result<Config, mesh_runtime::ConfigError> {
    Config::from_env(env)
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

/// The local model and a tokenizer for chunking, when the model folder is
/// configured (its files must then be there).
type LocalModel = (
    Option<Arc<embed::MiniLm>>,
    Option<Arc<tokenizers::Tokenizer>>,
);

async fn load_local_model(config: &Config) -> anyhow::Result<LocalModel> {
    let Some(dir) = config.minilm_dir.clone() else {
        tracing::warn!(
            "AGENTMESH_RETRIEVAL_MINILM_DIR is not set: the local embedding model is off and chunks are counted in words"
        );
        return Ok((None, None));
    };
    let batch = config.embed_batch;
    let (model, tokenizer) = tokio::task::spawn_blocking(move || {
        let model = embed::MiniLm::load(&dir, batch)?;
        let mut tokenizer = embed::load_tokenizer(&dir)?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| embed::LoadError::Invalid {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        Ok::<_, embed::LoadError>((model, tokenizer))
    })
    .await?
    .context("load all-MiniLM-L6-v2 (AGENTMESH_RETRIEVAL_MINILM_DIR)")?;
    Ok((Some(Arc::new(model)), Some(Arc::new(tokenizer))))
}

/// Connects to the database and NATS, migrates, loads the local model,
/// binds the listeners and starts the ingest consumer; returns once ready.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let mut registry = mesh_telemetry::Registry::default();
    let lag = Gauge::<i64>::default();
    registry.register(
        "queue_lag",
        "num_pending + num_ack_pending of the service's consumer",
        lag.clone(),
    );
    let metrics = service::Metrics::default();
    registry.register(
        "retrieval_documents_indexed",
        "documents written (new or changed)",
        metrics.documents_indexed.clone(),
    );
    registry.register(
        "retrieval_chunks_indexed",
        "chunks embedded and indexed",
        metrics.chunks_indexed.clone(),
    );
    registry.register(
        "retrieval_searches",
        "searches served",
        metrics.searches.clone(),
    );
    registry.register(
        "retrieval_ingest_parts",
        "ingest parts applied",
        metrics.ingest_parts.clone(),
    );
    registry.register(
        "retrieval_ingest_failures",
        "ingest parts recorded as failed",
        metrics.ingest_failures.clone(),
    );
    let mut frame = ServiceFrame::start(
        SPEC.grpc_service,
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    frame.service_auth(&config.shared, "retrieval")?;

    let url = mesh_store::resolve_url(
        config.shared.database_url.as_deref(),
        &config.data_dir,
        SPEC.name,
    )?;
    let db = mesh_store::connect(&url, config.db_max_connections).await?;
    mesh_store::retrieval::migrate(&db).await?;
    let (local, chunk_tokenizer) = load_local_model(&config).await?;

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

    let service = Arc::new(service::Service::new(
        db.clone(),
        Arc::new(config.clone()),
        bus.clone(),
        local,
        chunk_tokenizer,
        metrics,
    )?);
    let (supervisor, stop) = (frame.supervisor(), frame.stop());
    supervisor.spawn(
        "lag gauge",
        lag_gauge(bus.clone(), lag, config.lag_interval, stop.clone()),
    );
    supervisor.spawn(
        "ingest",
        ingest::IngestWorker {
            service: service.clone(),
            bus: bus.clone(),
            consumer,
            concurrency: config.ingest_concurrency,
            retry: config.shared.bus.task_retry,
        }
        .run(stop.clone()),
    );
    {
        let (service, stop) = (service.clone(), stop.clone());
        supervisor.spawn("index persistence", async move {
            stop.cancelled().await;
            service.persist().await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    let listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = listener.local_addr()?;
    frame.spawn_grpc(
        listener,
        frame.grpc().add_service(
            RetrievalServer::new(grpc::RetrievalGrpc { service })
                .max_decoding_message_size(config.max_message_bytes)
                .max_encoding_message_size(config.max_message_bytes),
        ),
    );
    let admin_addr = frame.admin_addr;
    tracing::info!(%grpc_addr, %admin_addr, "retrieval ready");
    Ok(Running {
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
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
