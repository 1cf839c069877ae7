//! Runs a service's long-lived components (servers, consumers, relays) and
//! ties their fates together: shutdown stops them all, and a component
//! that fails stops the rest, so no failure goes unseen.

use std::error::Error as StdError;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

type BoxError = Box<dyn StdError + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("a component failed; see the log for which and why")]
pub struct ComponentFailed;

#[derive(Debug)]
pub struct Supervisor {
    tracker: TaskTracker,
    failed: CancellationToken,
    stop: CancellationToken,
}

impl Supervisor {
    /// `shutdown` is the caller's token; components watch [`Self::stop`],
    /// which is cancelled by `shutdown` or by a component failure.
    pub fn new(shutdown: &CancellationToken) -> Self {
        let supervisor = Self {
            tracker: TaskTracker::new(),
            failed: CancellationToken::new(),
            stop: shutdown.child_token(),
        };
        let (failed, stop) = (supervisor.failed.clone(), supervisor.stop.clone());
        supervisor.tracker.spawn(async move {
            tokio::select! {
                _ = failed.cancelled() => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
        supervisor
    }

    /// The token components stop on.
    pub fn stop(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The tracker components run on, for short tasks spawned while the
    /// service runs (a cache store, a usage reconciliation) that must
    /// finish before it reports stopped. Such a task is not supervised:
    /// it handles its own errors, as a component's would stop the service.
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }

    /// Spawns a component. An `Err` is logged with the component's name
    /// and stops the service.
    pub fn spawn<F, E>(&self, name: &'static str, component: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let failed = self.failed.clone();
        self.tracker.spawn(async move {
            if let Err(error) = component.await {
                let error: BoxError = error.into();
                tracing::error!(component = name, error = %error, "component failed");
                failed.cancel();
            }
        });
    }

    /// Flips readiness off when the service starts to stop.
    pub fn unready_on_stop(&self, readiness: crate::Readiness) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.cancelled().await;
            readiness.set(false).await;
        });
    }

    /// No more components; returns the handle to wait on.
    pub fn finish(self) -> Stopped {
        self.tracker.close();
        Stopped {
            tracker: self.tracker,
            failed: self.failed,
        }
    }
}

/// Waits for every component of a service to stop.
#[derive(Debug)]
pub struct Stopped {
    tracker: TaskTracker,
    failed: CancellationToken,
}

impl Stopped {
    pub async fn wait(self) -> Result<(), ComponentFailed> {
        self.tracker.wait().await;
        if self.failed.is_cancelled() {
            return Err(ComponentFailed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_component_stops_the_others() {
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(&shutdown);
        let stop = supervisor.stop();
        supervisor.spawn("waits", async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        supervisor.spawn("fails", async {
            Err::<(), _>(std::io::Error::other("boom"))
        });
        let result = supervisor.finish().wait().await;
        assert!(result.is_err());
        assert!(
            !shutdown.is_cancelled(),
            "the caller's token is not touched"
        );
    }

    #[tokio::test]
    async fn shutdown_stops_cleanly() {
        let shutdown = CancellationToken::new();
        let supervisor = Supervisor::new(&shutdown);
        let stop = supervisor.stop();
        supervisor.spawn("waits", async move {
            stop.cancelled().await;
            Ok::<(), std::io::Error>(())
        });
        let stopped = supervisor.finish();
        shutdown.cancel();
        assert!(stopped.wait().await.is_ok());
    }
}
