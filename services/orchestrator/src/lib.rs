//! The orchestrator owns the agent registry and tasks. It answers the
//! internal `ControlPlane` gRPC API, writes every bus message it produces
//! to a transactional outbox (relayed to JetStream by [`outbox`]), and
//! projects task events from EVENTS back into task rows ([`projection`]).
//!
//! Shutdown phases: stop accepting gRPC calls, stop pulling events (in-flight
//! ones are acked or left to redeliver), let the relay finish its batch,
//! close the database.

mod admission;
mod agents_list;
mod api_keys;
pub mod audit;
mod config;
mod control;
mod convert;
mod dead_letters;
mod metrics;
pub mod outbox;
pub mod projection;
mod quotas;

use mesh_bus::{Bus, StreamKind};
use mesh_proto::control_plane_server::ControlPlaneServer;
use mesh_runtime::frame::bind;
use mesh_runtime::{ServiceFrame, Stopped};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A started orchestrator; `stopped` resolves after shutdown completes.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub stopped: Stopped,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

/// Connects to the database and NATS, migrates, binds the listeners and
/// spawns the components; returns once the service is ready.
pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let mut registry = mesh_telemetry::Registry::with_prefix("orchestrator");
    let metrics = metrics::Metrics::register(&mut registry);
    let mut frame = ServiceFrame::start(
        "agentmesh.v1.ControlPlane",
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    frame.service_auth(&config.shared, "orchestrator")?;
    let url = mesh_store::resolve_url(
        config.shared.database_url.as_deref(),
        &config.data_dir,
        "orchestrator",
    )?;
    let db = mesh_store::connect(&url, config.db_max_connections).await?;
    mesh_store::orchestrator::migrate(&db).await?;

    let bus = Bus::connect(
        &config.shared.nats_url,
        "orchestrator",
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
    bus.ensure_streams(&[StreamKind::Tasks, StreamKind::Events, StreamKind::Dlq])
        .await?;
    let (supervisor, stop) = (frame.supervisor(), frame.stop());

    let relay = outbox::Relay::new(
        db.clone(),
        bus.clone(),
        config.outbox.clone(),
        metrics.clone(),
    );
    let relay_handle = relay.handle();
    let admission = admission::Admission::new(
        db.clone(),
        config.admission.clone(),
        config.quotas,
        metrics.clone(),
        config.outbox.enabled.then(|| relay_handle.clone()),
    );
    supervisor.spawn("admission", admission.clone().run(stop.clone()));
    let service = control::ControlService::new(
        db.clone(),
        bus.clone(),
        relay_handle.clone(),
        config.limits.clone(),
        metrics.clone(),
        admission.clone(),
        config.quotas,
    );
    if config.outbox.enabled {
        supervisor.spawn("outbox relay", relay.run(stop.clone()));
    } else {
        tracing::warn!("outbox relay disabled: submitted tasks stay in the outbox");
    }
    supervisor.spawn(
        "max-deliveries watch",
        dead_letters::watch(bus.clone(), stop.clone()),
    );
    let projector = projection::Projector::new(
        db.clone(),
        bus.clone(),
        config.projection.clone(),
        metrics,
        admission.clone(),
    );
    supervisor.spawn("event projection", projector.run(stop.clone()));
    let service = std::sync::Arc::new(service);
    supervisor.spawn(
        "approval deadlines",
        expire_approvals(
            service.clone(),
            config.approval_sweep_interval,
            stop.clone(),
        ),
    );

    let listener = bind(config.grpc_listen, "grpc").await?;
    let grpc_addr = listener.local_addr()?;
    frame.spawn_grpc(
        listener,
        frame
            .grpc()
            .add_service(
                ControlPlaneServer::from_arc(service)
                    .max_decoding_message_size(config.limits.max_message_bytes)
                    .max_encoding_message_size(config.server.grpc_max_response_bytes),
            )
            .add_service(
                mesh_proto::quota_admin_server::QuotaAdminServer::new(quotas::QuotaService::new(
                    db.clone(),
                    config.quotas,
                    admission,
                ))
                .max_decoding_message_size(config.limits.max_message_bytes)
                .max_encoding_message_size(config.server.grpc_max_response_bytes),
            ),
    );
    let admin_addr = frame.admin_addr;
    tracing::info!(%grpc_addr, %admin_addr, "orchestrator ready");
    Ok(Running {
        grpc_addr,
        admin_addr,
        stopped: frame.ready().await,
    })
}

/// Resolves expired approvals with their `onTimeout` outcome, every
/// `interval`, until `stop`.
async fn expire_approvals(
    service: std::sync::Arc<control::ControlService>,
    interval: std::time::Duration,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match service.expire_approvals(100).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "approvals timed out"),
            Err(status) => {
                tracing::warn!(error = %status.message(), "approval deadline sweep failed")
            }
        }
    }
}
