//! A stand-in for a GPU model server (vLLM) in tests and benchmarks.
//!
//! It speaks the real wire protocol: OpenAI chat completions (plain and
//! streamed as server-sent events), `/v1/models`, vLLM's `/health` and its
//! Prometheus metric names. Output is deterministic and latency is
//! simulated from [`SimConfig`] (a startup delay, load-dependent TTFT and
//! inter-token delay); failures can be injected with [`FailureMode`]
//! (error statuses, hangs, broken streams). It must never ship as a default model: it generates no
//! meaningful text.
//!
//! Modules:
//! - `config`: [`SimConfig`] and reading it from the environment.
//! - `openai`: the request and response wire types and OpenAI-shaped errors.
//! - `generate`: the deterministic text and token counting.
//! - `embed`: deterministic `/v1/embeddings` vectors derived from a hash of the input.
//! - `metrics`: the vLLM-named Prometheus metrics.
//! - `server`: routes, admission control, simulated timing and streaming.

mod config;
mod embed;
mod generate;
mod metrics;
mod openai;
mod script;
mod server;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{
    ConfigError, ENV_DEFAULT_MAX_TOKENS, ENV_EMBEDDING_DIM, ENV_FAILURE, ENV_INTER_TOKEN_MS,
    ENV_LISTEN, ENV_LOAD_LATENCY_PCT, ENV_MAX_CONCURRENCY, ENV_MAX_WAITING, ENV_MODEL,
    ENV_STARTUP_DELAY_MS, ENV_TTFT_MS, FailureMode, MAX_CONCURRENCY_LIMIT, MAX_LOAD_LATENCY_PCT,
    SimConfig,
};
pub use openai::MAX_TOKENS_LIMIT;

/// Serves the simulator on `listener` until `shutdown` is cancelled, then
/// stops accepting connections and waits for in-flight responses (streams
/// included) to finish.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_CONCURRENCY_LIMIT).contains(&config.max_concurrency),
        "max_concurrency must be between 1 and {MAX_CONCURRENCY_LIMIT}, got {}",
        config.max_concurrency
    );
    let addr = listener
        .local_addr()
        .context("listener has no local address")?;
    tracing::info!(%addr, model = %config.model, failure = ?config.failure, "model simulator listening");
    // TCP_NODELAY: tokens stream as many small writes, which Nagle and
    // delayed ACKs would otherwise hold for ~40 ms each.
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, server::router(config, shutdown.clone()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("model simulator server failed")?;
    tracing::info!(%addr, "model simulator stopped");
    Ok(())
}

/// Binds `config.listen` and [`serve`]s on it.
pub async fn run(config: SimConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("failed to bind {}", config.listen))?;
    serve(listener, config, shutdown).await
}
