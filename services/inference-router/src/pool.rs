//! The live route table and the dispatch loop: pick a backend in the
//! request's pool, call it, and on a retryable failure before the first
//! byte try the next backend, then the route's fallback chain, with
//! jittered backoff and a bounded number of attempts.
//!
//! Health: `consecutive_failures` failures in a row eject a backend for
//! `cooldown`; after it one request (the half-open probe) is let through
//! and its outcome decides between healthy and another cooldown.
//!
//! Readiness (scale from zero) is separate from health: a backend is not
//! ready while its readiness probe fails (`watch::scrape_loop`) or after a
//! request found its connection refused, until a probe passes again. A
//! pool without a ready backend is skipped for the next pool of the
//! request's plan; on the plan's last pool the request waits in the
//! pool's queue until a backend turns ready or the queue deadline passes.
//! A refused connection sent nothing, so it does not use up an attempt.
//!
//! Never fails over after bytes reached the client: [`Router::dispatch`]
//! returns once the response head (and for a stream, its first chunk) is
//! in, and what follows is the caller's to relay.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::admission::{AdmitError, Admitted, Pool as Admission};
use crate::backend::{BackendError, Client, Target};
use crate::metrics::{BackendLabels, Metrics};
use crate::routes::{BackendSpec, PoolSpec, RetrySpec, Strategy, TableSpec};
use crate::select::{self, Candidate, Load};

/// Locks a mutex, recovering the data if a holder panicked: every value
/// behind these locks is valid after any partial update.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// === impl BackendState ===

#[derive(Debug, Clone, Copy, PartialEq)]
enum HealthState {
    Healthy,
    Ejected {
        until: Instant,
    },
    /// Half-open: the one probe request is in flight.
    Probing,
}

struct Health {
    failures: u32,
    state: HealthState,
}

pub struct BackendState {
    spec: BackendSpec,
    pool: String,
    in_flight: AtomicUsize,
    ewma_ttft: Mutex<Option<f64>>,
    load: Mutex<Option<Load>>,
    health: Mutex<Health>,
    in_flight_gauge: Gauge,
    ejected_gauge: Gauge,
    /// Readiness; `true` until a probe or a refused connection says not.
    ready: AtomicBool,
    ready_gauge: Gauge,
    /// The router's "a backend turned ready" signal.
    became_ready: Arc<Notify>,
}

impl BackendState {
    fn new(pool: &str, spec: BackendSpec, metrics: &Metrics, became_ready: Arc<Notify>) -> Self {
        let labels = BackendLabels {
            pool: pool.to_owned(),
            backend: spec.url.clone(),
        };
        let ready_gauge = metrics.backend_ready.get_or_create(&labels).clone();
        ready_gauge.set(1);
        Self {
            in_flight_gauge: metrics.backend_in_flight.get_or_create(&labels).clone(),
            ejected_gauge: metrics.backend_ejected.get_or_create(&labels).clone(),
            ready: AtomicBool::new(true),
            ready_gauge,
            became_ready,
            spec,
            pool: pool.to_owned(),
            in_flight: AtomicUsize::new(0),
            ewma_ttft: Mutex::new(None),
            load: Mutex::new(None),
            health: Mutex::new(Health {
                failures: 0,
                state: HealthState::Healthy,
            }),
        }
    }

    pub fn url(&self) -> &str {
        &self.spec.url
    }

    pub fn api_key(&self) -> Option<&str> {
        self.spec.api_key.as_deref()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Records a readiness verdict; turning ready wakes requests waiting
    /// for one.
    pub fn set_ready(&self, ready: bool) {
        let was = self.ready.swap(ready, Ordering::SeqCst);
        if was == ready {
            return;
        }
        self.ready_gauge.set(i64::from(ready));
        if ready {
            tracing::info!(pool = %self.pool, backend = %self.spec.url, "backend ready");
            self.became_ready.notify_waiters();
        } else {
            tracing::warn!(pool = %self.pool, backend = %self.spec.url, "backend not ready");
        }
    }

    /// Usable now: healthy, or ejected with the cooldown over (a probe).
    fn usable(&self, now: Instant) -> bool {
        match lock(&self.health).state {
            HealthState::Healthy => true,
            HealthState::Ejected { until } => now >= until,
            HealthState::Probing => false,
        }
    }

    /// Takes the backend for one request; an ejected backend past its
    /// cooldown turns half-open and this request is its probe.
    fn claim(self: &Arc<Self>, now: Instant) -> Option<BackendGuard> {
        let mut health = lock(&self.health);
        match health.state {
            HealthState::Healthy => {}
            HealthState::Ejected { until } if now >= until => {
                health.state = HealthState::Probing;
                tracing::info!(pool = %self.pool, backend = %self.spec.url, "sending a half-open probe");
            }
            HealthState::Ejected { .. } | HealthState::Probing => return None,
        }
        let probe = health.state == HealthState::Probing;
        drop(health);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.in_flight_gauge.inc();
        Some(BackendGuard {
            backend: self.clone(),
            probe,
        })
    }

    fn succeeded(&self, ttft: Option<Duration>, alpha: f64) {
        let mut health = lock(&self.health);
        if health.state != HealthState::Healthy {
            tracing::info!(pool = %self.pool, backend = %self.spec.url, "backend healthy again");
        }
        health.failures = 0;
        health.state = HealthState::Healthy;
        self.ejected_gauge.set(0);
        drop(health);
        if let Some(ttft) = ttft {
            let mut ewma = lock(&self.ewma_ttft);
            *ewma = Some(select::ewma(*ewma, ttft.as_secs_f64(), alpha));
        }
    }

    fn failed(&self, spec: &PoolSpec, now: Instant) {
        let mut health = lock(&self.health);
        health.failures = health.failures.saturating_add(1);
        let threshold = spec.ejection.consecutive_failures;
        let eject =
            health.state == HealthState::Probing || (threshold > 0 && health.failures >= threshold);
        if eject {
            health.state = HealthState::Ejected {
                until: now + spec.ejection.cooldown,
            };
            self.ejected_gauge.set(1);
            tracing::warn!(
                pool = %self.pool,
                backend = %self.spec.url,
                failures = health.failures,
                cooldown_ms = spec.ejection.cooldown.as_millis(),
                "backend ejected"
            );
        }
    }

    pub fn set_load(&self, load: Option<Load>) {
        *lock(&self.load) = load;
    }

    fn candidate(&self, eligible: bool) -> Candidate {
        Candidate {
            eligible,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            weight: self.spec.weight,
            ewma_ttft: *lock(&self.ewma_ttft),
            load: *lock(&self.load),
        }
    }
}

/// One request on a backend; dropping it ends the request's count there.
pub struct BackendGuard {
    backend: Arc<BackendState>,
    probe: bool,
}

impl Drop for BackendGuard {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.backend.in_flight_gauge.dec();
        if self.probe {
            // A probe abandoned before its outcome (the client left) must
            // not leave the backend half-open for ever: the next request
            // probes again.
            let mut health = lock(&self.backend.health);
            if health.state == HealthState::Probing {
                health.state = HealthState::Ejected {
                    until: Instant::now(),
                };
            }
        }
    }
}

// === impl PoolRuntime ===

pub struct PoolRuntime {
    pub name: String,
    pub spec: PoolSpec,
    pub backends: Vec<Arc<BackendState>>,
    admission: Admission,
    /// Smooth weighted round-robin state, one value per backend.
    rr: Mutex<Vec<i64>>,
}

impl PoolRuntime {
    fn any_ready(&self) -> bool {
        self.backends.iter().any(|b| b.is_ready())
    }

    /// Resolves once a backend of this pool is ready.
    async fn ready(&self) {
        let signal = self.backends.first().map(|b| b.became_ready.clone());
        let Some(signal) = signal else {
            // No backends: nothing can turn ready.
            return std::future::pending().await;
        };
        loop {
            // Registered before the check, so a backend turning ready in
            // between still wakes this wait.
            let notified = signal.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.any_ready() {
                return;
            }
            notified.await;
        }
    }

    /// A backend for this request: the session's rendezvous choice while it
    /// is below its cap, else the strategy's, never one in `tried`.
    fn pick(&self, session: Option<&str>, tried: &mut Vec<usize>) -> Option<BackendGuard> {
        let now = Instant::now();
        // A claim can lose a race with another request's probe; then look again.
        for _ in 0..=self.backends.len() {
            let usable: Vec<bool> = self
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| !tried.contains(&i) && b.is_ready() && b.usable(now))
                .collect();
            let cap = self.spec.limits.max_concurrent;
            let candidates: Vec<Candidate> = self
                .backends
                .iter()
                .zip(&usable)
                .map(|(b, u)| b.candidate(*u && b.in_flight.load(Ordering::SeqCst) < cap))
                .collect();
            let affine = session.and_then(|key| {
                let urls: Vec<&str> = self.backends.iter().map(|b| b.url()).collect();
                select::rendezvous(key, &urls, |i| usable[i]).filter(|i| candidates[*i].eligible)
            });
            let index = affine.or_else(|| match self.spec.strategy {
                Strategy::RoundRobin => select::round_robin(&mut lock(&self.rr), &candidates),
                Strategy::LeastOutstanding => select::least_outstanding(&candidates),
                Strategy::EwmaTtft => select::ewma_ttft(&candidates),
                Strategy::QueueAware => select::queue_aware(&candidates),
            })?;
            tried.push(index);
            if let Some(guard) = self.backends[index].claim(now) {
                return Some(guard);
            }
        }
        None
    }
}

// === impl Table ===

pub struct Table {
    pub spec: TableSpec,
    pub pools: HashMap<String, Arc<PoolRuntime>>,
}

impl Table {
    /// Builds the runtime for `spec`, keeping the state (in-flight counts,
    /// EWMA, health, admission queue) of pools and backends that did not
    /// change since `old`.
    pub fn build(
        spec: TableSpec,
        old: Option<&Table>,
        metrics: &Metrics,
        became_ready: &Arc<Notify>,
    ) -> Self {
        let mut pools = HashMap::new();
        for (name, pool_spec) in &spec.pools {
            let previous = old.and_then(|t| t.pools.get(name));
            let backends: Vec<Arc<BackendState>> = pool_spec
                .backends
                .iter()
                .map(|b| {
                    previous
                        .and_then(|p| p.backends.iter().find(|x| x.spec == *b))
                        .cloned()
                        .unwrap_or_else(|| {
                            Arc::new(BackendState::new(
                                name,
                                b.clone(),
                                metrics,
                                became_ready.clone(),
                            ))
                        })
                })
                .collect();
            let limits = &pool_spec.limits;
            let admission = match previous {
                Some(p) if p.spec.limits == *limits && p.backends.len() == backends.len() => {
                    p.admission.clone()
                }
                _ => metrics.pool(
                    name,
                    limits.max_concurrent.saturating_mul(backends.len()),
                    limits.queue_length,
                    limits.queue_timeout,
                ),
            };
            pools.insert(
                name.clone(),
                Arc::new(PoolRuntime {
                    name: name.clone(),
                    spec: pool_spec.clone(),
                    backends,
                    admission,
                    rr: Mutex::new(Vec::new()),
                }),
            );
        }
        Self { spec, pools }
    }
}

// === impl Router ===

/// Why a request found no backend to answer it.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("no route for model {model:?}")]
    NoRoute { model: String },
    #[error(transparent)]
    Admission(#[from] AdmitError),
    #[error("the {pool} pool has no healthy backend")]
    NoBackend { pool: String },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// One request to route.
pub struct Call<'a> {
    /// The routing key: `x-model-id` when given, else the body's `model`.
    pub model: &'a str,
    /// `x-session-id`, for affinity.
    pub session: Option<&'a str>,
    pub path: &'static str,
    pub body: Bytes,
    pub streaming: bool,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// A backend's answer; for a stream, its first chunk is already in.
pub enum Answer {
    Whole(reqwest::Response),
    Stream(ByteStream),
}

/// The slots a request holds until its answer is relayed.
pub struct Hold {
    _admitted: Admitted,
    _backend: BackendGuard,
}

pub struct Dispatched {
    pub answer: Answer,
    pub hold: Hold,
}

pub struct Router {
    table: RwLock<Arc<Table>>,
    client: Client,
    metrics: Metrics,
    /// Woken whenever any backend turns ready; waiters check their pool.
    became_ready: Arc<Notify>,
}

impl Router {
    pub fn new(spec: TableSpec, client: Client, metrics: Metrics) -> Self {
        let became_ready = Arc::new(Notify::new());
        Self {
            table: RwLock::new(Arc::new(Table::build(spec, None, &metrics, &became_ready))),
            client,
            metrics,
            became_ready,
        }
    }

    pub fn table(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Swaps in a new table; requests already routed keep the old one.
    pub fn replace(&self, spec: TableSpec) {
        let mut table = self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *table = Arc::new(Table::build(
            spec,
            Some(&table),
            &self.metrics,
            &self.became_ready,
        ));
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn dispatch(&self, call: Call<'_>) -> Result<Dispatched, DispatchError> {
        let table = self.table();
        let Some(plan) = table.spec.plan(call.model, rand::random::<u64>()) else {
            return Err(DispatchError::NoRoute {
                model: call.model.to_owned(),
            });
        };
        let retry = &table.spec.retry;
        let mut attempts = 0u32;
        let mut last: Option<DispatchError> = None;
        let steps = plan.len();
        for (step, (pool_name, rewrite)) in plan.into_iter().enumerate() {
            let Some(pool) = table.pools.get(&pool_name) else {
                continue;
            };
            let body = match &rewrite {
                Some(model) => with_model(&call.body, model),
                None => call.body.clone(),
            };
            let last_pool = step + 1 == steps;
            let deadline = pool.admission.deadline();
            let mut tried = Vec::new();
            let mut backoff_due = attempts > 0;
            while attempts < retry.max_attempts {
                if last_pool && !pool.any_ready() {
                    // Scale from zero: wait, queued, for a ready backend.
                    if let Err(error) = pool.admission.wait_ready(pool.ready(), deadline).await {
                        last = Some(error.into());
                        break;
                    }
                    tried.clear();
                }
                if tried.len() >= pool.backends.len() {
                    break;
                }
                if backoff_due {
                    // Off the pool's slots: a backoff holds no capacity.
                    tokio::time::sleep(backoff(retry, attempts.max(1))).await;
                }
                let admitted = match pool.admission.admit(deadline).await {
                    Ok(admitted) => admitted,
                    Err(error) => {
                        last = Some(error.into());
                        break;
                    }
                };
                let Some(guard) = pool.pick(call.session, &mut tried) else {
                    if last.is_none() || !pool.any_ready() {
                        last = Some(DispatchError::NoBackend {
                            pool: pool.name.clone(),
                        });
                    }
                    if last_pool && !pool.any_ready() {
                        continue; // wait for readiness at the top
                    }
                    break;
                };
                let backend = guard.backend.clone();
                match self.attempt(pool, &backend, &call, body.clone()).await {
                    Ok((answer, ttft)) => {
                        backend.succeeded(Some(ttft), pool.spec.ewma_alpha);
                        self.metrics
                            .backend_request(&pool.name, backend.url(), "ok");
                        return Ok(Dispatched {
                            answer,
                            hold: Hold {
                                _admitted: admitted,
                                _backend: guard,
                            },
                        });
                    }
                    Err(error) => {
                        self.metrics
                            .backend_request(&pool.name, backend.url(), error.outcome());
                        if !error.is_retryable() {
                            // The request's fault, not the backend's.
                            backend.succeeded(None, pool.spec.ewma_alpha);
                            return Err(error.into());
                        }
                        if matches!(error, BackendError::Connect(_)) {
                            // Nothing listens there (scaled to zero, not yet
                            // started): not ready until a probe passes, and
                            // as nothing was sent, no attempt is used up.
                            backend.set_ready(false);
                        } else {
                            attempts += 1;
                            backend.failed(&pool.spec, Instant::now());
                        }
                        backoff_due = true;
                        tracing::warn!(
                            pool = %pool.name,
                            backend = %backend.url(),
                            attempt = attempts,
                            error = %error,
                            "backend call failed, trying the next"
                        );
                        last = Some(error.into());
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| DispatchError::NoRoute {
            model: call.model.to_owned(),
        }))
    }

    /// One call; returns once the first byte is in, with the time it took.
    async fn attempt(
        &self,
        pool: &PoolRuntime,
        backend: &BackendState,
        call: &Call<'_>,
        body: Bytes,
    ) -> Result<(Answer, Duration), BackendError> {
        let started = Instant::now();
        let limits = &pool.spec.limits;
        let deadline = started + limits.ttft_deadline;
        let target = Target {
            base: backend.url(),
            api_key: backend.spec.api_key.as_deref(),
            first_byte: limits.ttft_deadline,
            total: limits.request_timeout,
        };
        let response = self.client.post_json(&target, call.path, body).await?;
        if !call.streaming {
            return Ok((Answer::Whole(response), started.elapsed()));
        }
        // A server may send the head before it has a token: the deadline
        // covers the first chunk too, which no client has seen yet.
        let mut stream = response.bytes_stream();
        match tokio::time::timeout_at(deadline.into(), stream.next()).await {
            Err(_) => Err(BackendError::Timeout(limits.ttft_deadline)),
            Ok(None) => Err(BackendError::Unreachable(
                "the stream ended before its first chunk".to_owned(),
            )),
            Ok(Some(Err(e))) => Err(BackendError::Unreachable(e.to_string())),
            Ok(Some(Ok(first))) => {
                let ttft = started.elapsed();
                let rest = futures::stream::once(async move { Ok(first) }).chain(stream);
                Ok((Answer::Stream(Box::pin(rest)), ttft))
            }
        }
    }
}

/// Jittered exponential backoff before retry `attempt` (1-based): a random
/// wait in `[d/2, d]` where `d = min(base·2^(attempt-1), max)`, so replicas
/// retrying together spread out.
fn backoff(retry: &RetrySpec, attempt: u32) -> Duration {
    let exp = retry
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let cap = exp.min(retry.backoff_max);
    let half = cap / 2;
    half + cap.saturating_sub(half).mul_f64(rand::random::<f64>())
}

/// The body with its `model` replaced (a fallback to another model).
fn with_model(body: &Bytes, model: &str) -> Bytes {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut value) if value.is_object() => {
            value["model"] = serde_json::Value::String(model.to_owned());
            serde_json::to_vec(&value).map_or_else(|_| body.clone(), Bytes::from)
        }
        _ => body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Ejection, Limits};

    fn pool_spec(failures: u32, cooldown_ms: u64) -> PoolSpec {
        PoolSpec {
            strategy: Strategy::RoundRobin,
            backends: Vec::new(),
            limits: Limits {
                max_concurrent: 2,
                queue_length: 0,
                queue_timeout: Duration::ZERO,
                request_timeout: Duration::from_secs(1),
                ttft_deadline: Duration::from_secs(1),
            },
            ejection: Ejection {
                consecutive_failures: failures,
                cooldown: Duration::from_millis(cooldown_ms),
            },
            ewma_alpha: 0.5,
            scrape_interval: Duration::from_secs(1),
            health: crate::routes::HealthSpec {
                path: "/health".to_owned(),
                interval: Duration::from_secs(1),
            },
        }
    }

    fn backend() -> Arc<BackendState> {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::register(&mut registry);
        Arc::new(BackendState::new(
            "p",
            BackendSpec {
                url: "http://a".into(),
                weight: 1,
                api_key: None,
            },
            &metrics,
            Arc::new(Notify::new()),
        ))
    }

    #[test]
    fn consecutive_failures_eject_then_one_probe_decides() {
        let spec = pool_spec(2, 100);
        let b = backend();
        let t0 = Instant::now();
        b.failed(&spec, t0);
        assert!(b.usable(t0), "one failure is not enough");
        b.failed(&spec, t0);
        assert!(!b.usable(t0), "ejected");
        assert!(b.claim(t0).is_none());
        let later = t0 + Duration::from_millis(150);
        let probe = b.claim(later).expect("the cooldown is over: a probe");
        assert!(b.claim(later).is_none(), "only one probe at a time");
        b.failed(&spec, later);
        drop(probe);
        assert!(!b.usable(later), "a failed probe ejects again");
        let abandoned = b.claim(later + Duration::from_millis(150)).unwrap();
        drop(abandoned);
        assert!(
            b.claim(later + Duration::from_millis(150)).is_some(),
            "an abandoned probe lets the next request probe"
        );
        b.failed(&spec, later);
        let again = later + Duration::from_millis(150);
        let probe = b.claim(again).unwrap();
        b.succeeded(Some(Duration::from_millis(10)), 0.5);
        drop(probe);
        assert!(b.usable(again) && b.claim(again).is_some(), "healthy again");
        assert_eq!(b.in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn success_resets_the_failure_count_and_zero_never_ejects() {
        let spec = pool_spec(2, 100);
        let b = backend();
        let now = Instant::now();
        b.failed(&spec, now);
        b.succeeded(None, 0.5);
        b.failed(&spec, now);
        assert!(b.usable(now), "not consecutive");
        let never = pool_spec(0, 100);
        for _ in 0..100 {
            b.failed(&never, now);
        }
        assert!(b.usable(now));
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let retry = RetrySpec {
            max_attempts: 5,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(50),
        };
        for _ in 0..50 {
            let first = backoff(&retry, 1);
            assert!(first >= Duration::from_millis(10) && first <= Duration::from_millis(20));
            let late = backoff(&retry, 10);
            assert!(late >= Duration::from_millis(25) && late <= Duration::from_millis(50));
        }
    }

    #[test]
    fn a_fallback_model_is_rewritten_in_the_body() {
        let body = Bytes::from_static(br#"{"model":"big","messages":[],"seed":1}"#);
        let out: serde_json::Value = serde_json::from_slice(&with_model(&body, "small")).unwrap();
        assert_eq!(out["model"], "small");
        assert_eq!(out["seed"], 1);
    }
}
