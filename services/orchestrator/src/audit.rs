//! The audit log of changes to a tenant's agents, tools, API keys and
//! quotas: who (the caller's actor, from `agentmesh-actor` metadata), when,
//! what (action, resource, version, a short detail).
//!
//! [`record`] takes the connection or transaction of the change itself, so
//! the entry commits with the change or not at all. A detail must never
//! hold a secret: callers pass names and counts, not values.

use mesh_proto::{ListAuditEntriesRequest, ListAuditEntriesResponse};
use mesh_runtime::grpc::tenant_of;
use mesh_store::orchestrator::audit_entry;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, DatabaseConnection, DbErr,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Set,
};
use tonic::{Request, Status};

use crate::convert::now_ms;

pub use mesh_runtime::grpc::ACTOR_METADATA;

/// The actor of a call made without `agentmesh-actor` (an internal client).
pub const SYSTEM_ACTOR: &str = "system";

/// At most this many bytes of an actor are stored (the column's size).
const MAX_ACTOR_BYTES: usize = 255;

/// One change, as [`record`] writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub tenant: String,
    pub actor: String,
    /// `apply`, `create`, `revoke`, `delete`, `set`, ...
    pub action: String,
    /// `agent`, `tool`, `api_key`, `quota`, ...
    pub resource_kind: String,
    pub resource_name: String,
    /// The resource's version after the change, where it has versions.
    pub resource_version: Option<i64>,
    /// A short JSON object (what changed); never a secret.
    pub detail_json: serde_json::Value,
}

/// Writes `entry` on `db`: pass the transaction of the change, so both
/// commit together.
pub async fn record<C: ConnectionTrait>(db: &C, entry: AuditEntry) -> Result<(), DbErr> {
    audit_entry::ActiveModel {
        tenant: Set(entry.tenant),
        at_ms: Set(now_ms()),
        actor: Set(entry.actor),
        action: Set(entry.action),
        resource_kind: Set(entry.resource_kind),
        resource_name: Set(entry.resource_name),
        resource_version: Set(entry.resource_version),
        detail: Set(entry.detail_json),
        ..Default::default()
    }
    .insert(db)
    .await?;
    Ok(())
}

/// The entry of an apply that made `version` of a versioned resource
/// (`agent`, `tool`): the detail says whether it created the resource.
pub fn applied(tenant: &str, actor: String, kind: &str, name: &str, version: i64) -> AuditEntry {
    AuditEntry {
        tenant: tenant.to_owned(),
        actor,
        action: "apply".to_owned(),
        resource_kind: kind.to_owned(),
        resource_name: name.to_owned(),
        resource_version: Some(version),
        detail_json: serde_json::json!({ "created": version == 1 }),
    }
}

/// The actor of an incoming call: `agentmesh-actor` when present and
/// printable, else [`SYSTEM_ACTOR`]. Cut to the column's size.
pub fn actor_of<T>(request: &Request<T>) -> String {
    let actor = request
        .metadata()
        .get(ACTOR_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or(SYSTEM_ACTOR);
    let mut end = actor.len().min(MAX_ACTOR_BYTES);
    while !actor.is_char_boundary(end) {
        end -= 1;
    }
    actor[..end].to_owned()
}

/// A page of the caller's tenant's log, newest first: of one resource
/// kind when asked, from `since_ms` on; the page token is the id of the
/// last entry of the page before.
pub async fn list(
    db: &DatabaseConnection,
    request: Request<ListAuditEntriesRequest>,
    default_page: u32,
    max_page: u32,
) -> Result<ListAuditEntriesResponse, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    let invalid = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    let page_size = match req.page_size {
        0 => default_page,
        n if n > max_page => return Err(invalid("page_size", format!("at most {max_page}"))),
        n => n,
    };
    let mut query = audit_entry::Entity::find().filter(audit_entry::Column::Tenant.eq(&tenant));
    if !req.resource_kind.is_empty() {
        if req.resource_kind.len() > 32
            || !req
                .resource_kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(invalid(
                "resource_kind",
                "at most 32 lowercase letters or underscores".to_owned(),
            ));
        }
        query = query.filter(audit_entry::Column::ResourceKind.eq(&req.resource_kind));
    }
    if req.since_ms < 0 {
        return Err(invalid("since_ms", "must not be negative".to_owned()));
    }
    if req.since_ms > 0 {
        query = query.filter(audit_entry::Column::AtMs.gte(req.since_ms));
    }
    if !req.page_token.is_empty() {
        let after: i64 = req
            .page_token
            .parse()
            .map_err(|_| invalid("page_token", "not a page token of this list".to_owned()))?;
        query = query.filter(audit_entry::Column::Id.lt(after));
    }
    let mut rows = query
        .order_by_desc(audit_entry::Column::Id)
        .limit(u64::from(page_size) + 1)
        .all(db)
        .await
        .map_err(|error| {
            tracing::error!(%error, "database error");
            Status::unavailable("the audit log is unavailable")
        })?;
    let next_page_token = if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        rows.last().map(|r| r.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(ListAuditEntriesResponse {
        entries: rows
            .into_iter()
            .map(|r| mesh_proto::AuditEntry {
                id: r.id,
                tenant: r.tenant,
                at_ms: r.at_ms,
                actor: r.actor,
                action: r.action,
                resource_kind: r.resource_kind,
                resource_name: r.resource_name,
                resource_version: r.resource_version.unwrap_or(0),
                detail_json: r.detail.to_string(),
            })
            .collect(),
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_comes_from_metadata_or_is_system() {
        let mut request = Request::new(());
        assert_eq!(actor_of(&request), SYSTEM_ACTOR);
        request
            .metadata_mut()
            .insert(ACTOR_METADATA, "apikey:0123456789abcdef".parse().unwrap());
        assert_eq!(actor_of(&request), "apikey:0123456789abcdef");
        let long = "a".repeat(400);
        request
            .metadata_mut()
            .insert(ACTOR_METADATA, long.parse().unwrap());
        assert_eq!(actor_of(&request).len(), MAX_ACTOR_BYTES);
    }
}
