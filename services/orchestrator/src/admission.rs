//! Weighted fair admission. A submitted task is ACCEPTED at once (a row,
//! status `queued`) but goes to TASKS only while its agent has fewer than
//! `window_per_agent` tasks dispatched and unfinished, and its tenant fewer
//! than its `max_running_tasks`; otherwise it waits here, in the database
//! (`admission_pending`), and is never lost. JetStream's FIFO per agent
//! thus stays about one window long, and who gets the next free slot is
//! decided here, across tenants: the tenant with the smallest share of the
//! window (dispatched tasks of the agent / weight), ties to the tenant
//! served least recently in this pass, then to the oldest waiting task. So
//! tenant A's thousand queued tasks do not stand in front of tenant B's
//! ten: B's next task takes the next slot that frees.
//!
//! Releases run when a task is submitted (when nobody waits, it goes
//! straight through, see [`Admission::admit_now`]), when a task finishes
//! (the projection calls [`Admission::poke`]) and on a periodic sweep (the
//! safety net: missed pokes, quota raises, another replica's events).
//!
//! Several replicas: every admission decision runs under one lock, an
//! in-process mutex plus, on PostgreSQL, a transaction-scoped advisory lock,
//! so two replicas never both fill the same free slot; the release itself is
//! a conditional update (`admission_pending` true -> false) and the outbox
//! row keeps the task id as `Nats-Msg-Id`, so a repeated release is a no-op.
//! SQLite is single-writer and single-replica.
//!
//! What this must never do: drop a waiting task, or hold the lock across
//! anything but its own short transaction.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;

use mesh_proto::{TaskEnvelope, TaskStatus};
use mesh_store::orchestrator::{agent, outbox, task};
use prost::Message as _;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use tokio::sync::{Mutex, MutexGuard, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{AdmissionConfig, QuotaDefaults};
use crate::metrics::Metrics;
use crate::outbox::RelayHandle;
use crate::quotas::{self, Effective};

/// Statuses of a task that holds (or is about to hold) a worker slot.
const DISPATCHED: [&str; 2] = ["queued", "running"];

/// The advisory lock every admission decision takes on PostgreSQL (one
/// key: the tenant running quota spans agents, so decisions for different
/// agents must not interleave either).
const ADMISSION_LOCK_KEY: i64 = 0x6167_6d65_7368_0a01;

#[derive(Clone)]
pub struct Admission {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    config: AdmissionConfig,
    defaults: QuotaDefaults,
    metrics: Metrics,
    /// Absent when the outbox relay is off (the rows wait in the outbox).
    relay: Option<RelayHandle>,
    lock: Mutex<()>,
    /// Agents to pump at the next wake-up (pokes coalesce).
    dirty: std::sync::Mutex<HashSet<String>>,
    wake: Notify,
}

/// A tenant's standing in one admission pass over one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    waiting: u64,
    oldest_ms: i64,
    /// Dispatched and unfinished tasks of this agent.
    inflight: u64,
    /// Dispatched and unfinished tasks of all the tenant's agents.
    running: u64,
    max_running: u64,
    weight: u64,
    /// The pick (1-based) that last served the tenant in this pass; 0: none.
    last_pick: u64,
}

impl Admission {
    pub fn new(
        db: DatabaseConnection,
        config: AdmissionConfig,
        defaults: QuotaDefaults,
        metrics: Metrics,
        relay: Option<RelayHandle>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                config,
                defaults,
                metrics,
                relay,
                lock: Mutex::new(()),
                dirty: Default::default(),
                wake: Notify::new(),
            }),
        }
    }

    /// Asks for an admission pass over `agent` soon (after a task of it
    /// finished, or one was put in the queue). Cheap; never blocks.
    pub fn poke(&self, agent: &str) {
        self.inner
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(agent.to_owned());
        self.inner.wake.notify_one();
    }

    /// Takes the admission lock for the caller's transaction; hold the
    /// guard until the transaction commits or rolls back.
    pub async fn lock<C: ConnectionTrait>(&self, txn: &C) -> Result<MutexGuard<'_, ()>, DbErr> {
        let guard = self.inner.lock.lock().await;
        if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
            txn.query_one_raw(sea_orm::Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [ADMISSION_LOCK_KEY.into()],
            ))
            .await?;
        }
        Ok(guard)
    }

    /// Whether no task of `agent` waits for admission. Read without the
    /// lock: a submission that sees others waiting joins the queue behind
    /// them (and pokes a pass) without serializing on the lock; if the
    /// queue drained meanwhile, that pass admits it.
    pub async fn queue_is_empty<C: ConnectionTrait>(
        &self,
        conn: &C,
        agent: &str,
    ) -> Result<bool, DbErr> {
        let waiting = task::Entity::find()
            .filter(task::Column::Agent.eq(agent))
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .limit(1)
            .count(conn)
            .await?;
        Ok(waiting == 0)
    }

    /// At submission, with [`Admission::lock`] held: may the new task of
    /// `tenant` go straight to TASKS? Only when no task of the agent waits
    /// (so it jumps no queue), the agent's window has room and the tenant
    /// is under its running quota.
    pub async fn admit_now<C: ConnectionTrait>(
        &self,
        txn: &C,
        tenant: &str,
        agent: &str,
    ) -> Result<bool, DbErr> {
        let waiting = task::Entity::find()
            .filter(task::Column::Agent.eq(agent))
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .count(txn)
            .await?;
        if waiting > 0 {
            return Ok(false);
        }
        let inflight: u64 = inflight_by_tenant(txn, Some(agent), None)
            .await?
            .values()
            .sum();
        // The window is never below the floor: below it, no need to read
        // the agent's scaling specs on the submission path.
        if inflight >= u64::from(self.inner.config.window_per_agent)
            && inflight >= self.window(txn, agent).await?
        {
            return Ok(false);
        }
        let tenants = [tenant.to_owned()];
        let running = inflight_by_tenant(txn, None, Some(&tenants))
            .await?
            .get(tenant)
            .copied()
            .unwrap_or(0);
        let quota = quotas::effective(txn, &self.inner.defaults, &tenants).await?;
        let max = quota
            .get(tenant)
            .map_or(self.inner.defaults.max_running_tasks, |q| {
                q.max_running_tasks
            });
        Ok(running < u64::from(max))
    }

    /// Admits until `stop`: pumps poked agents at once, sweeps every agent
    /// with waiting tasks every `sweep_interval`.
    pub async fn run(self, stop: CancellationToken) -> Result<(), Infallible> {
        let mut known = HashSet::new();
        let mut tick = tokio::time::interval(self.inner.config.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if let Err(error) = self.sweep(&mut known).await {
                        tracing::warn!(%error, "admission sweep failed; retrying next tick");
                    }
                }
                _ = self.inner.wake.notified() => {
                    let agents: Vec<String> = std::mem::take(
                        &mut *self
                            .inner
                            .dirty
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    )
                    .into_iter()
                    .collect();
                    for agent in agents {
                        if let Err(error) = self.pump(&agent).await {
                            // The sweep retries it.
                            tracing::warn!(%error, %agent, "admission pass failed");
                        }
                    }
                }
            }
        }
    }

    /// Refreshes the queue-depth gauge of every agent and pumps those with
    /// waiting tasks.
    async fn sweep(&self, known: &mut HashSet<String>) -> Result<(), DbErr> {
        let depths: Vec<(String, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::Agent)
            .column_as(task::Column::Id.count(), "n")
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .group_by(task::Column::Agent)
            .into_tuple()
            .all(&self.inner.db)
            .await?;
        let seen: HashSet<String> = depths.iter().map(|(a, _)| a.clone()).collect();
        for agent in known.difference(&seen) {
            self.set_depth(agent, 0);
        }
        *known = seen;
        for (agent, depth) in depths {
            self.set_depth(&agent, depth);
            self.pump(&agent).await?;
        }
        Ok(())
    }

    /// The dispatch window of `agent`: the configured floor, raised to the
    /// lag at which KEDA brings the agent's workers to their maximum
    /// (`maxReplicas x targetQueueLagPerReplica` of its scaling spec; the
    /// largest over the tenants that declare the agent, since they share
    /// its consumer). The lag KEDA reads can never exceed the window, so a
    /// smaller one would cap the workers below their maximum.
    async fn window<C: ConnectionTrait>(&self, conn: &C, agent: &str) -> Result<u64, DbErr> {
        let specs: Vec<serde_json::Value> = agent::Entity::find()
            .select_only()
            .column(agent::Column::Spec)
            .filter(agent::Column::Name.eq(agent))
            .into_tuple()
            .all(conn)
            .await?;
        Ok(window_for(
            self.inner.config.window_per_agent,
            specs.iter().map(|spec| &spec["scaling"]),
        ))
    }

    fn set_depth(&self, agent: &str, depth: i64) {
        self.inner
            .metrics
            .admission_queue_depth
            .get_or_create(&vec![("agent".to_owned(), agent.to_owned())])
            .set(depth);
    }

    /// One admission pass over `agent`: fills its free window slots from
    /// the waiting tasks, fairly across tenants. Returns how many it
    /// released.
    pub async fn pump(&self, agent: &str) -> Result<usize, DbErr> {
        let txn = mesh_store::begin_write(&self.inner.db).await?;
        let guard = self.lock(&txn).await?;
        let inflight = inflight_by_tenant(&txn, Some(agent), None).await?;
        let window = self.window(&txn, agent).await?;
        let free = window.saturating_sub(inflight.values().sum());
        let waiting: Vec<(String, i64, i64)> = task::Entity::find()
            .select_only()
            .column(task::Column::Tenant)
            .column_as(task::Column::Id.count(), "n")
            .column_as(task::Column::CreatedAtMs.min(), "oldest")
            .filter(task::Column::Agent.eq(agent))
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .group_by(task::Column::Tenant)
            .into_tuple()
            .all(&txn)
            .await?;
        let depth: i64 = waiting.iter().map(|(_, n, _)| n).sum();
        if free == 0 || waiting.is_empty() {
            self.set_depth(agent, depth);
            return Ok(0);
        }
        let tenants: Vec<String> = waiting.iter().map(|(t, _, _)| t.clone()).collect();
        let running = inflight_by_tenant(&txn, None, Some(&tenants)).await?;
        let quotas = quotas::effective(&txn, &self.inner.defaults, &tenants).await?;
        let mut shares: BTreeMap<String, Share> = waiting
            .into_iter()
            .map(|(tenant, n, oldest_ms)| {
                let q = quotas
                    .get(&tenant)
                    .copied()
                    .unwrap_or_else(|| Effective::from(self.inner.defaults));
                let share = Share {
                    waiting: u64::try_from(n).unwrap_or(0),
                    oldest_ms,
                    inflight: inflight.get(&tenant).copied().unwrap_or(0),
                    running: running.get(&tenant).copied().unwrap_or(0),
                    max_running: u64::from(q.max_running_tasks),
                    weight: u64::from(q.weight.max(1)),
                    last_pick: 0,
                };
                (tenant, share)
            })
            .collect();
        let mut rows = Vec::new();
        for (tenant, n) in plan(free, &mut shares) {
            let tasks = task::Entity::find()
                .filter(task::Column::Agent.eq(agent))
                .filter(task::Column::Tenant.eq(&tenant))
                .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
                .filter(task::Column::AdmissionPending.eq(true))
                .order_by_asc(task::Column::Id)
                .limit(n)
                .all(&txn)
                .await?;
            for row in tasks {
                if let Some(queued) = release(&txn, row).await? {
                    rows.push(queued);
                }
            }
        }
        txn.commit().await?;
        drop(guard);
        let released = rows.len();
        self.set_depth(agent, depth - i64::try_from(released).unwrap_or(0));
        if released > 0 {
            self.inner.metrics.tasks_admitted.inc_by(released as u64);
            tracing::debug!(%agent, released, "tasks admitted");
            if let Some(relay) = &self.inner.relay {
                relay.committed(rows);
            }
        }
        Ok(released)
    }
}

/// Moves one waiting task to the outbox (conditionally: of two releases of
/// the same task, one wins). `None` when it was not waiting any more.
async fn release<C: ConnectionTrait>(
    txn: &C,
    row: task::Model,
) -> Result<Option<outbox::Model>, DbErr> {
    let claimed = task::Entity::update_many()
        .filter(task::Column::Id.eq(row.id))
        .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
        .filter(task::Column::AdmissionPending.eq(true))
        .col_expr(task::Column::AdmissionPending, Expr::value(false))
        .exec(txn)
        .await?;
    if claimed.rows_affected == 0 {
        return Ok(None);
    }
    let envelope = row
        .envelope
        .as_deref()
        .map(TaskEnvelope::decode)
        .transpose();
    let subject = mesh_bus::names::task_subject(&row.tenant, &row.agent);
    let (Ok(Some(envelope)), Ok(subject)) = (envelope, subject) else {
        // Cannot happen for a row submit wrote; fail it rather than hold a
        // window slot forever.
        tracing::error!(task_id = %row.id, "waiting task has no usable envelope; failing it");
        task::Entity::update_many()
            .filter(task::Column::Id.eq(row.id))
            .col_expr(
                task::Column::Status,
                Expr::value(TaskStatus::Failed.rest_name()),
            )
            .col_expr(
                task::Column::Error,
                Expr::value(Some("stored envelope unusable".to_owned())),
            )
            .col_expr(
                task::Column::FinishedAtMs,
                Expr::value(Some(crate::convert::now_ms())),
            )
            .exec(txn)
            .await?;
        return Ok(None);
    };
    let queued = crate::outbox::enqueue_traced(
        txn,
        &row.tenant,
        subject,
        row.id.to_string(),
        &envelope,
        row.traceparent.unwrap_or_default(),
    )
    .await?;
    Ok(Some(queued))
}

/// Dispatched and unfinished tasks per tenant, of one agent or of all,
/// for all tenants or the given ones.
pub async fn inflight_by_tenant<C: ConnectionTrait>(
    conn: &C,
    agent: Option<&str>,
    tenants: Option<&[String]>,
) -> Result<std::collections::HashMap<String, u64>, DbErr> {
    let mut query = task::Entity::find()
        .select_only()
        .column(task::Column::Tenant)
        .column_as(task::Column::Id.count(), "n")
        .filter(task::Column::Status.is_in(DISPATCHED))
        .filter(task::Column::AdmissionPending.eq(false))
        // Held back by its session's `enqueue` policy: not dispatched.
        .filter(task::Column::PendingEnvelope.is_null());
    if let Some(agent) = agent {
        query = query.filter(task::Column::Agent.eq(agent));
    }
    if let Some(tenants) = tenants {
        query = query.filter(task::Column::Tenant.is_in(tenants.iter().cloned()));
    }
    let rows: Vec<(String, i64)> = query
        .group_by(task::Column::Tenant)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(t, n)| (t, u64::try_from(n).unwrap_or(0)))
        .collect())
}

/// Hands out `free` slots one at a time: to the eligible tenant (waiting,
/// under its running quota) with the smallest weighted share of the
/// agent's window, ties to the one served least recently, then to the
/// oldest waiting task. Returns (tenant, slots) for tenants that got any.
/// `floor`, raised to the largest `maxReplicas x targetQueueLagPerReplica`
/// of the given `spec.scaling` values (JSON as the registry stores them;
/// absent or malformed ones count as nothing).
fn window_for<'a>(floor: u32, scalings: impl Iterator<Item = &'a serde_json::Value>) -> u64 {
    scalings
        .filter_map(|scaling| {
            let replicas = scaling["maxReplicas"].as_u64()?;
            let lag = scaling["targetQueueLagPerReplica"].as_u64()?;
            Some(replicas.saturating_mul(lag))
        })
        .fold(u64::from(floor), u64::max)
}

fn plan(free: u64, shares: &mut BTreeMap<String, Share>) -> Vec<(String, u64)> {
    let mut granted: BTreeMap<String, u64> = BTreeMap::new();
    for pick in 1..=free {
        let next = shares
            .iter()
            .filter(|(_, s)| s.waiting > 0 && s.running < s.max_running)
            .min_by(|(an, a), (bn, b)| {
                // a.inflight / a.weight against b.inflight / b.weight.
                (u128::from(a.inflight) * u128::from(b.weight))
                    .cmp(&(u128::from(b.inflight) * u128::from(a.weight)))
                    .then(a.last_pick.cmp(&b.last_pick))
                    .then(a.oldest_ms.cmp(&b.oldest_ms))
                    .then(an.cmp(bn))
            })
            .map(|(name, _)| name.clone());
        let Some(name) = next else { break };
        if let Some(share) = shares.get_mut(&name) {
            share.waiting -= 1;
            share.inflight += 1;
            share.running += 1;
            share.last_pick = pick;
        }
        *granted.entry(name).or_default() += 1;
    }
    granted.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(waiting: u64, inflight: u64, weight: u64) -> Share {
        Share {
            waiting,
            oldest_ms: 0,
            inflight,
            running: inflight,
            max_running: 1_000,
            weight,
            last_pick: 0,
        }
    }

    fn shares(list: &[(&str, Share)]) -> BTreeMap<String, Share> {
        list.iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect()
    }

    #[test]
    fn a_quiet_tenant_takes_the_next_slots_from_a_noisy_one() {
        // A fills the window (32 in flight, 968 waiting); B arrives with 10.
        let mut s = shares(&[("a", share(968, 32, 1)), ("b", share(10, 0, 1))]);
        assert_eq!(plan(4, &mut s), vec![("b".to_owned(), 4)]);
        // Once B holds as many as A, they alternate.
        let mut s = shares(&[("a", share(968, 3, 1)), ("b", share(10, 3, 1))]);
        assert_eq!(
            plan(6, &mut s),
            vec![("a".to_owned(), 3), ("b".to_owned(), 3)]
        );
    }

    #[test]
    fn weights_split_the_window() {
        let mut s = shares(&[("a", share(100, 0, 3)), ("b", share(100, 0, 1))]);
        assert_eq!(
            plan(8, &mut s),
            vec![("a".to_owned(), 6), ("b".to_owned(), 2)]
        );
    }

    #[test]
    fn the_running_quota_and_the_waiting_tasks_bound_the_grant() {
        let mut limited = share(100, 0, 1);
        limited.running = 4;
        limited.max_running = 5;
        let mut s = shares(&[("a", limited), ("b", share(2, 0, 1))]);
        // a: one slot left under its quota; b: two tasks; 5 free slots.
        assert_eq!(
            plan(5, &mut s),
            vec![("a".to_owned(), 1), ("b".to_owned(), 2)]
        );
    }

    #[test]
    fn the_window_reaches_the_lag_of_the_agents_maximum_scale() {
        let scalings = [
            serde_json::json!({"maxReplicas": 4, "targetQueueLagPerReplica": 40}),
            serde_json::json!({"maxReplicas": 2, "targetQueueLagPerReplica": 10}),
            serde_json::Value::Null,
            serde_json::json!({"maxReplicas": "many"}),
        ];
        assert_eq!(
            window_for(32, scalings.iter()),
            160,
            "the largest spec wins"
        );
        assert_eq!(
            window_for(32, scalings[1..].iter()),
            32,
            "never below the floor"
        );
        assert_eq!(window_for(32, std::iter::empty()), 32);
    }

    #[test]
    fn ties_go_to_the_oldest_waiting_task() {
        let mut old = share(1, 0, 1);
        old.oldest_ms = 5;
        let mut young = share(1, 0, 1);
        young.oldest_ms = 9;
        let mut s = shares(&[("a", young), ("z", old)]);
        assert_eq!(plan(1, &mut s), vec![("z".to_owned(), 1)]);
    }
}
