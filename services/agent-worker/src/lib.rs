//! The agent-worker pulls tasks from an agent's durable consumer on TASKS
//! (`agent-<agent>`), runs the tool-calling loop ([`agent_loop`]) through
//! the inference-router's gRPC streaming API and the agent's tools, and
//! publishes the task's events (started, deltas, model steps, tool calls and
//! results, one terminal event) to EVENTS. It keeps nothing durable of its
//! own: the task's events are its journal, so a task whose worker dies is
//! redelivered by JetStream and resumes after its last journaled step.
//!
//! Shutdown phases: stop pulling, let in-flight tasks finish (their acks or
//! naks go out), then close. Tasks fetched but not started are redelivered
//! after ack-wait.

mod agent_loop;
mod config;
mod events;
mod genai;
mod journal;
mod memory;
mod metrics;
mod runner;
mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use mesh_bus::{Bus, StreamKind};
use mesh_proto::inference_service_client::InferenceServiceClient;
use mesh_runtime::{ServiceFrame, Stopped};
use tokio_util::sync::CancellationToken;

pub use config::{AgentSelection, Config};

#[derive(Debug)]
pub struct Running {
    pub admin_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub stopped: Stopped,
}

pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Ok(start(config, shutdown).await?.stopped.wait().await?)
}

pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let mut registry = mesh_telemetry::Registry::default();
    let metrics = metrics::Metrics::register(&mut registry);
    let mut frame = ServiceFrame::start(
        "agentmesh.v1.AgentWorker",
        config.admin_listen,
        config.server.clone(),
        registry,
        &shutdown,
    )
    .await?;
    frame.service_auth(&config.shared, "agent-worker")?;
    let admin_addr = frame.admin_addr;

    let bus = Bus::connect(
        &config.shared.nats_url,
        "agent-worker",
        config.shared.bus.clone(),
    )
    .await?;
    frame.require_bus(&bus);
    bus.ensure_streams(&[StreamKind::Tasks, StreamKind::Events, StreamKind::Dlq])
        .await?;
    let channel = mesh_runtime::tls::connect_lazy(
        tonic::transport::Endpoint::from_shared(config.router_url.clone())
            .with_context(|| format!("AGENTMESH_WORKER_ROUTER_URL: {:?}", config.router_url))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true),
        config.shared.tls.as_ref(),
    );
    let runner = Arc::new(runner::TaskRunner::new(
        bus.clone(),
        InferenceServiceClient::new(channel),
        config.clone(),
        metrics,
    ));

    let config_grpc_listen = config.grpc_listen;
    frame.supervisor().spawn(
        "agent consumers",
        serve_agents(bus, runner, config, frame.stop()),
    );
    let listener = mesh_runtime::frame::bind(config_grpc_listen, "grpc").await?;
    let grpc_addr = listener.local_addr()?;
    frame.spawn_grpc(listener, frame.grpc());
    tracing::info!(%admin_addr, %grpc_addr, "agent-worker ready");
    Ok(Running {
        admin_addr,
        grpc_addr,
        stopped: frame.ready().await,
    })
}

/// Keeps one pull loop per served agent; with [`AgentSelection::All`] it
/// discovers agent consumers as they are created and restarts loops that
/// ended with an error.
async fn serve_agents(
    bus: Bus,
    runner: Arc<runner::TaskRunner>,
    config: Config,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut loops: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut tick = tokio::time::interval(config.discovery_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let wanted: Vec<String> = match &config.agents {
            AgentSelection::Named(names) => names.clone(),
            AgentSelection::All => match bus.agent_consumer_names().await {
                Ok(names) => names
                    .into_iter()
                    .filter_map(|n| n.strip_prefix("agent-").map(str::to_owned))
                    .collect(),
                Err(error) => {
                    tracing::warn!(%error, "agent discovery failed");
                    continue;
                }
            },
        };
        loops.retain(|_, handle| !handle.is_finished());
        for agent in wanted {
            if loops.contains_key(&agent) {
                continue;
            }
            let (runner, stop) = (runner.clone(), stop.clone());
            let name = agent.clone();
            tracing::info!(agent = %name, "serving agent");
            loops.insert(
                agent,
                tokio::spawn(async move {
                    if let Err(error) = runner.serve_agent(&name, stop).await {
                        tracing::warn!(agent = %name, error = %error, "agent loop ended; restarting");
                    }
                }),
            );
        }
    }
    // Drain: every loop finishes its in-flight tasks.
    for (_, handle) in loops {
        let _ = handle.await;
    }
    Ok(())
}
