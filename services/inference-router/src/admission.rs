//! Admission control in front of the backend pool: at most
//! `max_concurrency` requests run at once; the rest wait in a bounded
//! queue (FIFO, as tokio's semaphore is fair) up to a deadline instead of
//! failing. The queue depth and in-flight count are exported per pool:
//! they are the signal that scales the GPU pool (KEDA prometheus trigger
//! on `router_pool_queue_depth`). One `Pool` per route-table pool, sized
//! to the sum of its backends' `max_concurrent`.
//!
//! Scale from zero: a request that finds its pool without a ready backend
//! waits in the same queue (same bound, same gauge, same deadline) until
//! one turns ready, so the queue depth the GPU pool scales on counts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("the {pool} pool's queue is full ({max_queue} waiting)")]
    QueueFull { pool: String, max_queue: usize },
    #[error("waited {waited:?} in the {pool} pool's queue without a free backend slot")]
    Timeout { pool: String, waited: Duration },
    #[error("waited {waited:?} in the {pool} pool's queue and no backend became ready")]
    NotReady { pool: String, waited: Duration },
}

#[derive(Clone)]
pub struct Pool {
    name: String,
    slots: Arc<Semaphore>,
    max_queue: usize,
    queue_timeout: Duration,
    queued: Gauge,
    in_flight: Gauge,
}

/// Holds a backend slot; dropping it frees the slot.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    in_flight: Gauge,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

struct Waiting(Gauge);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Pool {
    pub fn new(
        name: &str,
        max_concurrency: usize,
        max_queue: usize,
        queue_timeout: Duration,
        queued: Gauge,
        in_flight: Gauge,
    ) -> Self {
        Self {
            name: name.to_owned(),
            slots: Arc::new(Semaphore::new(max_concurrency.max(1))),
            max_queue,
            queue_timeout,
            queued,
            in_flight,
        }
    }

    /// When a request arriving now must be admitted by.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.queue_timeout
    }

    /// A backend slot, waiting for one until `deadline`.
    pub async fn admit(&self, deadline: Instant) -> Result<Admitted, AdmitError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(self.admitted(permit));
        }
        let waiting = self.enqueue()?;
        let permit =
            tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned()).await;
        drop(waiting);
        match permit {
            Ok(Ok(permit)) => Ok(self.admitted(permit)),
            // The semaphore is never closed; treat it like a timeout.
            Ok(Err(_)) | Err(_) => Err(AdmitError::Timeout {
                pool: self.name.clone(),
                waited: self.queue_timeout,
            }),
        }
    }

    /// Waits in the queue until `ready` resolves (a backend of the pool
    /// turned ready) or `deadline` passes.
    pub async fn wait_ready(
        &self,
        ready: impl Future<Output = ()>,
        deadline: Instant,
    ) -> Result<(), AdmitError> {
        let waiting = self.enqueue()?;
        let outcome = tokio::time::timeout_at(deadline.into(), ready).await;
        drop(waiting);
        outcome.map_err(|_| AdmitError::NotReady {
            pool: self.name.clone(),
            waited: self.queue_timeout,
        })
    }

    /// A place in the queue, or `QueueFull`.
    fn enqueue(&self) -> Result<Waiting, AdmitError> {
        if usize::try_from(self.queued.get()).unwrap_or(usize::MAX) >= self.max_queue {
            return Err(AdmitError::QueueFull {
                pool: self.name.clone(),
                max_queue: self.max_queue,
            });
        }
        self.queued.inc();
        Ok(Waiting(self.queued.clone()))
    }

    fn admitted(&self, permit: OwnedSemaphorePermit) -> Admitted {
        self.in_flight.inc();
        Admitted {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_concurrency: usize, max_queue: usize, timeout_ms: u64) -> (Pool, Gauge, Gauge) {
        let (queued, in_flight) = (Gauge::default(), Gauge::default());
        let pool = Pool::new(
            "default",
            max_concurrency,
            max_queue,
            Duration::from_millis(timeout_ms),
            queued.clone(),
            in_flight.clone(),
        );
        (pool, queued, in_flight)
    }

    #[tokio::test]
    async fn waits_for_a_slot_then_runs() {
        let (pool, queued, in_flight) = pool(1, 4, 5_000);
        let first = pool.admit(pool.deadline()).await.unwrap();
        assert_eq!(in_flight.get(), 1);
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.admit(pool.deadline()).await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(queued.get(), 1, "the second request waits");
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!((queued.get(), in_flight.get()), (0, 0));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_long_wait_times_out() {
        let (pool, queued, _) = pool(1, 0, 50);
        let _busy = pool.admit(pool.deadline()).await.unwrap();
        assert!(matches!(
            pool.admit(pool.deadline()).await,
            Err(AdmitError::QueueFull { .. })
        ));
        let (pool, queued2, _) = self::pool(1, 8, 50);
        let _busy = pool.admit(pool.deadline()).await.unwrap();
        assert!(matches!(
            pool.admit(pool.deadline()).await,
            Err(AdmitError::Timeout { .. })
        ));
        assert_eq!(
            (queued.get(), queued2.get()),
            (0, 0),
            "gauges return to zero"
        );
    }

    #[tokio::test]
    async fn waiting_for_a_ready_backend_is_queued_and_bounded() {
        let (pool, queued, _) = pool(1, 1, 5_000);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move {
                let ready = async {
                    let _ = rx.await;
                };
                pool.wait_ready(ready, pool.deadline()).await
            }
        });
        while queued.get() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(
            matches!(
                pool.wait_ready(std::future::pending(), pool.deadline())
                    .await,
                Err(AdmitError::QueueFull { .. })
            ),
            "the wait takes a place in the bounded queue"
        );
        tx.send(()).unwrap();
        waiter.await.unwrap().unwrap();
        assert_eq!(queued.get(), 0);
        let (pool, queued, _) = self::pool(1, 4, 20);
        assert!(matches!(
            pool.wait_ready(std::future::pending(), pool.deadline())
                .await,
            Err(AdmitError::NotReady { .. })
        ));
        assert_eq!(queued.get(), 0);
    }
}
