//! `agentmesh-model-sim`: runs the model-server simulator from environment
//! variables until Ctrl-C or SIGTERM. All wiring lives in the library.

use std::collections::HashMap;

use anyhow::Context as _;
use model_sim::SimConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let env: HashMap<String, String> = std::env::vars().collect();
    let config = SimConfig::from_env(&env).context("invalid configuration")?;

    let shutdown = CancellationToken::new();
    let server = model_sim::run(config, shutdown.clone());
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        signal = shutdown_signal() => {
            signal.context("failed to listen for shutdown signals")?;
            tracing::info!("shutdown signal received, draining in-flight requests");
            shutdown.cancel();
        }
    }
    server.await
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one (container stop).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
