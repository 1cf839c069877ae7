//! The polling loop: read the consumer's lag, ask the rule, resize.

use std::time::Instant;

use mesh_bus::Bus;
use tokio_util::sync::CancellationToken;

use crate::Scaler;

/// A set of identical replicas the runner resizes (processes, runtimes).
pub trait Replicas: Send {
    fn current(&self) -> u32;
    /// Starts or stops replicas until `n` run; stopping drains gracefully.
    fn scale_to(&mut self, n: u32) -> impl Future<Output = Result<(), String>> + Send;
}

/// Polls every `pollingInterval` until `stop`; `on_change(from, to, lag)`
/// is called after each resize.
pub async fn run<R: Replicas>(
    bus: &Bus,
    scaler: &mut Scaler,
    replicas: &mut R,
    stop: CancellationToken,
    mut on_change: impl FnMut(u32, u32, u64) + Send,
) {
    let (stream, consumer) = (
        scaler.policy().stream.clone(),
        scaler.policy().consumer.clone(),
    );
    let interval = scaler.policy().polling_interval;
    loop {
        match bus.consumer_lag_of(&stream, &consumer).await {
            Ok(lag) => {
                let current = replicas.current();
                let desired = scaler.step(current, lag.total(), Instant::now());
                if desired != current {
                    tracing::info!(%consumer, from = current, to = desired, lag = lag.total(), "scaling");
                    match replicas.scale_to(desired).await {
                        Ok(()) => on_change(current, desired, lag.total()),
                        Err(error) => tracing::warn!(%consumer, %error, "resize failed"),
                    }
                }
            }
            // Like KEDA: a failed poll changes nothing.
            Err(error) => tracing::warn!(%consumer, %error, "cannot read consumer lag"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
