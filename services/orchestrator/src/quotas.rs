//! Per-tenant quotas: tasks dispatched and unfinished at once (enforced by
//! [`crate::admission`]: over it a task waits, queued), task submissions
//! per sliding minute (enforced here at submission: over it the submit is
//! RESOURCE_EXHAUSTED with `retry-after` metadata in seconds, which the
//! gateway answers as 429 with `Retry-After`), and the tenant's weight in
//! fair admission. Defaults come from `AGENTMESH_ORCHESTRATOR_TENANT_*`;
//! per-tenant overrides live in `orch_tenant_quotas` and are set through
//! the internal `QuotaAdmin` API (the gateway's admin-only `/v1/quotas`).
//! Tokens per minute are the inference-router's business, not this one's.

use std::collections::HashMap;

use mesh_proto::quota_admin_server::QuotaAdmin;
use mesh_proto::{GetQuotaRequest, PutQuotaRequest, QuotaValues, TaskStatus, TenantQuota};
use mesh_runtime::grpc::tenant_of;
use mesh_store::orchestrator::{task, tenant_quota};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use tonic::{Request, Response, Status};

use crate::admission::{Admission, inflight_by_tenant};
use crate::config::{
    MAX_QUOTA_RUNNING_TASKS, MAX_QUOTA_TASKS_PER_MINUTE, MAX_QUOTA_WEIGHT, QuotaDefaults,
};
use crate::convert::now_ms;

/// The window of the submission rate.
const RATE_WINDOW_MS: i64 = 60_000;

/// The quota that applies to a tenant now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    pub max_running_tasks: u32,
    pub tasks_per_minute: u32,
    pub weight: u32,
}

impl From<QuotaDefaults> for Effective {
    fn from(d: QuotaDefaults) -> Self {
        Self {
            max_running_tasks: d.max_running_tasks,
            tasks_per_minute: d.tasks_per_minute,
            weight: d.weight,
        }
    }
}

fn value(stored: Option<i32>) -> Option<u32> {
    stored
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
}

fn apply(defaults: QuotaDefaults, row: Option<&tenant_quota::Model>) -> Effective {
    let d = Effective::from(defaults);
    let Some(row) = row else { return d };
    Effective {
        max_running_tasks: value(row.max_running_tasks).unwrap_or(d.max_running_tasks),
        tasks_per_minute: value(row.tasks_per_minute).unwrap_or(d.tasks_per_minute),
        weight: value(row.weight).unwrap_or(d.weight),
    }
}

/// The effective quota of each of `tenants`.
pub async fn effective<C: ConnectionTrait>(
    conn: &C,
    defaults: &QuotaDefaults,
    tenants: &[String],
) -> Result<HashMap<String, Effective>, DbErr> {
    let rows = tenant_quota::Entity::find()
        .filter(tenant_quota::Column::Tenant.is_in(tenants.iter().cloned()))
        .all(conn)
        .await?;
    Ok(tenants
        .iter()
        .map(|t| {
            let row = rows.iter().find(|r| &r.tenant == t);
            (t.clone(), apply(*defaults, row))
        })
        .collect())
}

fn store_error(error: DbErr) -> Status {
    tracing::error!(%error, "database error");
    Status::unavailable("the task store is unavailable")
}

/// Concurrent uncommitted submissions of one tenant that the unlocked
/// first look at the rate may miss (more than the orchestrator's database
/// pools hold at once across a few replicas).
const RATE_LOCK_SLACK: u32 = 64;

/// At submission, inside the submit's transaction: refuses the task when
/// the tenant already submitted its `tasks_per_minute` in the last minute
/// (sub-tasks of a running task are neither refused nor counted: failing
/// them would fail a task already admitted). Well under the limit this is
/// one unlocked read; within `RATE_LOCK_SLACK` of it, on PostgreSQL, a
/// per-tenant advisory lock makes concurrent submits count one by one.
pub async fn check_rate<C: ConnectionTrait>(
    txn: &C,
    defaults: &QuotaDefaults,
    tenant: &str,
) -> Result<(), Status> {
    let tenants = [tenant.to_owned()];
    let limit = effective(txn, defaults, &tenants)
        .await
        .map_err(store_error)?
        .get(tenant)
        .map_or(defaults.tasks_per_minute, |q| q.tasks_per_minute);
    if limit > RATE_LOCK_SLACK
        && nth_newest(txn, tenant, limit - RATE_LOCK_SLACK, now_ms())
            .await?
            .is_none()
    {
        return Ok(());
    }
    if txn.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        txn.query_one_raw(sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [rate_lock_key(tenant).into()],
        ))
        .await
        .map_err(store_error)?;
    }
    let now = now_ms();
    // The limit-th newest submission of the window: while it exists, the
    // window is full, and it leaves the window at its time plus a minute.
    let Some(nth) = nth_newest(txn, tenant, limit, now).await? else {
        return Ok(());
    };
    let wait_ms = (nth + RATE_WINDOW_MS - now).max(1);
    let retry_after = u64::try_from((wait_ms + 999) / 1000).unwrap_or(1).max(1);
    let mut status = Status::resource_exhausted(format!(
        "tenant {tenant} is over its quota of {limit} task submissions per minute; retry in {retry_after}s"
    ));
    if let Ok(value) = retry_after.to_string().parse() {
        status.metadata_mut().insert("retry-after", value);
    }
    tracing::info!(%tenant, limit, retry_after, "submission over the tenant's rate quota");
    Err(status)
}

/// The submission time of the tenant's `n`-th newest task (1-based) of the
/// rate window, if it has that many.
async fn nth_newest<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    n: u32,
    now: i64,
) -> Result<Option<i64>, Status> {
    task::Entity::find()
        .select_only()
        .column(task::Column::CreatedAtMs)
        .filter(task::Column::Tenant.eq(tenant))
        .filter(task::Column::Depth.eq(0))
        .filter(task::Column::CreatedAtMs.gt(now - RATE_WINDOW_MS))
        .order_by_desc(task::Column::CreatedAtMs)
        .offset(u64::from(n.saturating_sub(1)))
        .limit(1)
        .into_tuple()
        .one(conn)
        .await
        .map_err(store_error)
}

/// A stable key (FNV-1a; replicas must agree) for the tenant's rate lock.
fn rate_lock_key(tenant: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"rate\0".iter().copied().chain(tenant.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The internal `QuotaAdmin` API: the caller's tenant only.
pub struct QuotaService {
    db: DatabaseConnection,
    defaults: QuotaDefaults,
    admission: Admission,
}

impl QuotaService {
    pub fn new(db: DatabaseConnection, defaults: QuotaDefaults, admission: Admission) -> Self {
        Self {
            db,
            defaults,
            admission,
        }
    }

    async fn view(&self, tenant: &str) -> Result<TenantQuota, DbErr> {
        let row = tenant_quota::Entity::find_by_id(tenant.to_owned())
            .one(&self.db)
            .await?;
        let effective = apply(self.defaults, row.as_ref());
        let tenants = [tenant.to_owned()];
        let running = inflight_by_tenant(&self.db, None, Some(&tenants))
            .await?
            .get(tenant)
            .copied()
            .unwrap_or(0);
        let queued = task::Entity::find()
            .filter(task::Column::Tenant.eq(tenant))
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .count(&self.db)
            .await?;
        let submitted = task::Entity::find()
            .filter(task::Column::Tenant.eq(tenant))
            .filter(task::Column::Depth.eq(0))
            .filter(task::Column::CreatedAtMs.gt(now_ms() - RATE_WINDOW_MS))
            .count(&self.db)
            .await?;
        Ok(TenantQuota {
            tenant: tenant.to_owned(),
            effective: Some(QuotaValues {
                max_running_tasks: Some(effective.max_running_tasks),
                tasks_per_minute: Some(effective.tasks_per_minute),
                weight: Some(effective.weight),
            }),
            overrides: Some(QuotaValues {
                max_running_tasks: row.as_ref().and_then(|r| value(r.max_running_tasks)),
                tasks_per_minute: row.as_ref().and_then(|r| value(r.tasks_per_minute)),
                weight: row.as_ref().and_then(|r| value(r.weight)),
            }),
            defaults: Some(QuotaValues {
                max_running_tasks: Some(self.defaults.max_running_tasks),
                tasks_per_minute: Some(self.defaults.tasks_per_minute),
                weight: Some(self.defaults.weight),
            }),
            running_tasks: running,
            queued_tasks: queued,
            submitted_last_minute: submitted,
            updated_at_ms: row.as_ref().map_or(0, |r| r.updated_at_ms),
            updated_by: row.map(|r| r.updated_by).unwrap_or_default(),
        })
    }
}

/// `field`: between 1 and `max` when set.
fn bounded(field: &str, value: Option<u32>, max: u32) -> Result<Option<i32>, Status> {
    match value {
        None => Ok(None),
        Some(v) if (1..=max).contains(&v) => Ok(i32::try_from(v).ok()),
        Some(_) => Err(Status::invalid_argument(format!(
            "{field}: must be between 1 and {max} (or unset for the default)"
        ))),
    }
}

#[tonic::async_trait]
impl QuotaAdmin for QuotaService {
    async fn get_quota(
        &self,
        request: Request<GetQuotaRequest>,
    ) -> Result<Response<TenantQuota>, Status> {
        let tenant = tenant_of(&request)?;
        Ok(Response::new(
            self.view(&tenant).await.map_err(store_error)?,
        ))
    }

    async fn put_quota(
        &self,
        request: Request<PutQuotaRequest>,
    ) -> Result<Response<TenantQuota>, Status> {
        let tenant = tenant_of(&request)?;
        let actor = crate::audit::actor_of(&request);
        let overrides = request.into_inner().overrides.unwrap_or_default();
        let max_running = bounded(
            "overrides.max_running_tasks",
            overrides.max_running_tasks,
            MAX_QUOTA_RUNNING_TASKS,
        )?;
        let per_minute = bounded(
            "overrides.tasks_per_minute",
            overrides.tasks_per_minute,
            MAX_QUOTA_TASKS_PER_MINUTE,
        )?;
        let weight = bounded("overrides.weight", overrides.weight, MAX_QUOTA_WEIGHT)?;
        let txn = mesh_store::begin_write(&self.db)
            .await
            .map_err(store_error)?;
        tenant_quota::Entity::insert(tenant_quota::ActiveModel {
            tenant: Set(tenant.clone()),
            max_running_tasks: Set(max_running),
            tasks_per_minute: Set(per_minute),
            weight: Set(weight),
            updated_at_ms: Set(now_ms()),
            updated_by: Set(actor.clone()),
        })
        .on_conflict(
            OnConflict::column(tenant_quota::Column::Tenant)
                .update_columns([
                    tenant_quota::Column::MaxRunningTasks,
                    tenant_quota::Column::TasksPerMinute,
                    tenant_quota::Column::Weight,
                    tenant_quota::Column::UpdatedAtMs,
                    tenant_quota::Column::UpdatedBy,
                ])
                .to_owned(),
        )
        .exec(&txn)
        .await
        .map_err(store_error)?;
        crate::audit::record(
            &txn,
            crate::audit::AuditEntry {
                tenant: tenant.clone(),
                actor,
                action: "set".to_owned(),
                resource_kind: "quota".to_owned(),
                resource_name: tenant.clone(),
                resource_version: None,
                detail_json: serde_json::json!({
                    "maxRunningTasks": max_running,
                    "tasksPerMinute": per_minute,
                    "weight": weight,
                }),
            },
        )
        .await
        .map_err(store_error)?;
        txn.commit().await.map_err(store_error)?;
        tracing::info!(%tenant, ?max_running, ?per_minute, ?weight, "tenant quota set");
        // A raised quota may admit waiting tasks now rather than at the
        // next sweep.
        let agents: Vec<String> = task::Entity::find()
            .select_only()
            .column(task::Column::Agent)
            .distinct()
            .filter(task::Column::Tenant.eq(&tenant))
            .filter(task::Column::Status.eq(TaskStatus::Queued.rest_name()))
            .filter(task::Column::AdmissionPending.eq(true))
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(store_error)?;
        for agent in agents {
            self.admission.poke(&agent);
        }
        Ok(Response::new(
            self.view(&tenant).await.map_err(store_error)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: QuotaDefaults = QuotaDefaults {
        max_running_tasks: 256,
        tasks_per_minute: 3000,
        weight: 1,
    };

    #[test]
    fn overrides_replace_defaults_field_by_field() {
        assert_eq!(apply(DEFAULTS, None), Effective::from(DEFAULTS));
        let row = tenant_quota::Model {
            tenant: "acme".to_owned(),
            max_running_tasks: Some(5),
            tasks_per_minute: None,
            weight: Some(3),
            updated_at_ms: 0,
            updated_by: "x".to_owned(),
        };
        assert_eq!(
            apply(DEFAULTS, Some(&row)),
            Effective {
                max_running_tasks: 5,
                tasks_per_minute: 3000,
                weight: 3
            }
        );
    }

    #[test]
    fn quota_values_are_bounded_and_name_the_field() {
        assert_eq!(bounded("overrides.weight", None, 10).unwrap(), None);
        assert_eq!(bounded("overrides.weight", Some(10), 10).unwrap(), Some(10));
        let e = bounded("overrides.weight", Some(0), 10).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("overrides.weight: "), "{e:?}");
        assert!(bounded("overrides.weight", Some(11), 10).is_err());
    }

    #[test]
    fn rate_lock_keys_differ_per_tenant() {
        assert_ne!(rate_lock_key("a"), rate_lock_key("b"));
        assert_eq!(rate_lock_key("a"), rate_lock_key("a"));
    }
}
