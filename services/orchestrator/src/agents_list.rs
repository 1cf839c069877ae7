//! Reading the agent registry as lists: the caller's tenant's agents by
//! name, an agent's applied versions newest first, and one version's spec
//! as it was applied; the same for tools' versions. Every query is filtered by tenant; an agent of
//! another tenant reads as missing. This module never writes.

use mesh_bus::names;
use mesh_proto::{
    Agent, AgentSummary, AgentVersionSummary, GetAgentVersionRequest, GetToolVersionRequest,
    ListAgentVersionsRequest, ListAgentVersionsResponse, ListAgentsRequest, ListAgentsResponse,
    ListToolVersionsRequest, ListToolVersionsResponse, Tool, ToolVersionSummary,
};
use mesh_runtime::grpc::tenant_of;
use mesh_store::orchestrator::{agent, agent_version, tool, tool_version};
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use tonic::{Request, Status};

use crate::control::{field_error, invalid};
use crate::convert::{spec_from_json, tool_spec_from_json};

fn db_error(error: DbErr) -> Status {
    tracing::error!(%error, "database error");
    Status::unavailable("the agent registry is unavailable")
}

fn page_size(requested: u32, default: u32, max: u32) -> Result<u32, Status> {
    match requested {
        0 => Ok(default),
        n if n > max => Err(invalid("page_size", format!("at most {max}"))),
        n => Ok(n),
    }
}

fn validate_name(value: &str) -> Result<(), Status> {
    names::validate("name", value).map_err(|e| match e {
        mesh_bus::BusError::InvalidName { reason, .. } => invalid("name", reason),
        other => invalid("name", other),
    })
}

fn model_of(spec: &serde_json::Value) -> String {
    spec.get("model")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// Cuts a page fetched with one row more than `page_size`: the extra row
/// only says there is a next page, whose token is the last kept row's.
fn cut_page<T>(rows: &mut Vec<T>, page_size: u32, token: impl Fn(&T) -> String) -> String {
    if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        rows.last().map(token).unwrap_or_default()
    } else {
        String::new()
    }
}

/// The version a page of versions (newest first) continues below.
fn version_before(page_token: &str) -> Result<i64, Status> {
    page_token
        .parse()
        .ok()
        .filter(|v: &i64| *v > 0)
        .ok_or_else(|| invalid("page_token", "not a page token of this list"))
}

/// The page token of an agent list is the last name of the page before;
/// names are validated bus tokens, so they need no further encoding.
pub async fn list_agents(
    db: &DatabaseConnection,
    request: Request<ListAgentsRequest>,
    default_page: u32,
    max_page: u32,
) -> Result<ListAgentsResponse, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    let page_size = page_size(req.page_size, default_page, max_page)?;
    let mut query = agent::Entity::find().filter(agent::Column::Tenant.eq(&tenant));
    if !req.name_prefix.is_empty() {
        // A prefix is a part of a name: the same alphabet (no `_` or `%`,
        // which LIKE would read as wildcards).
        if req.name_prefix.len() > names::MAX_NAME_LEN
            || !req
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid(
                "name_prefix",
                format!(
                    "at most {} lowercase letters, digits or '-' (a name's start)",
                    names::MAX_NAME_LEN
                ),
            ));
        }
        query = query.filter(agent::Column::Name.starts_with(&req.name_prefix));
    }
    if !req.page_token.is_empty() {
        validate_name(&req.page_token)
            .map_err(|_| invalid("page_token", "not a page token of this list"))?;
        query = query.filter(agent::Column::Name.gt(&req.page_token));
    }
    let mut rows = query
        .order_by_asc(agent::Column::Name)
        .limit(u64::from(page_size) + 1)
        .all(db)
        .await
        .map_err(db_error)?;
    let next_page_token = cut_page(&mut rows, page_size, |r| r.name.clone());
    Ok(ListAgentsResponse {
        agents: rows
            .into_iter()
            .map(|r| AgentSummary {
                model: model_of(&r.spec),
                version: u64::try_from(r.version).unwrap_or_default(),
                updated_at_ms: r.updated_at_ms,
                name: r.name,
            })
            .collect(),
        next_page_token,
    })
}

async fn current(
    db: &DatabaseConnection,
    tenant: &str,
    name: &str,
) -> Result<agent::Model, Status> {
    agent::Entity::find()
        .filter(agent::Column::Tenant.eq(tenant))
        .filter(agent::Column::Name.eq(name))
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Status::not_found(format!("agent {name:?} not found")))
}

/// Newest first; the page token is the last version of the page before.
pub async fn list_versions(
    db: &DatabaseConnection,
    request: Request<ListAgentVersionsRequest>,
    default_page: u32,
    max_page: u32,
) -> Result<ListAgentVersionsResponse, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    validate_name(&req.name)?;
    let page_size = page_size(req.page_size, default_page, max_page)?;
    // An agent with no versions left is still an agent; one that was never
    // applied is NOT_FOUND, not an empty list.
    current(db, &tenant, &req.name).await?;
    let mut query = agent_version::Entity::find()
        .filter(agent_version::Column::Tenant.eq(&tenant))
        .filter(agent_version::Column::Name.eq(&req.name));
    if !req.page_token.is_empty() {
        query = query.filter(agent_version::Column::Version.lt(version_before(&req.page_token)?));
    }
    let mut rows = query
        .order_by_desc(agent_version::Column::Version)
        .limit(u64::from(page_size) + 1)
        .all(db)
        .await
        .map_err(db_error)?;
    let next_page_token = cut_page(&mut rows, page_size, |r| r.version.to_string());
    Ok(ListAgentVersionsResponse {
        versions: rows
            .iter()
            .map(|r| AgentVersionSummary {
                version: u64::try_from(r.version).unwrap_or_default(),
                applied_at_ms: r.created_at_ms,
                model: model_of(&r.spec),
            })
            .collect(),
        next_page_token,
    })
}

pub async fn get_version(
    db: &DatabaseConnection,
    request: Request<GetAgentVersionRequest>,
) -> Result<Agent, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    validate_name(&req.name)?;
    let version = i64::try_from(req.version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid("version", "must be a positive version number"))?;
    let head = current(db, &tenant, &req.name).await?;
    let row = agent_version::Entity::find()
        .filter(agent_version::Column::Tenant.eq(&tenant))
        .filter(agent_version::Column::Name.eq(&req.name))
        .filter(agent_version::Column::Version.eq(version))
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            Status::not_found(format!("agent {:?} has no version {version}", req.name))
        })?;
    Ok(Agent {
        tenant: row.tenant,
        name: row.name,
        spec: Some(spec_from_json(&row.spec)),
        version: u64::try_from(row.version).unwrap_or_default(),
        created_at_ms: head.created_at_ms,
        updated_at_ms: row.created_at_ms,
    })
}

/// A tool's versions, newest first, as [`list_versions`] for agents.
pub async fn list_tool_versions(
    db: &DatabaseConnection,
    request: Request<ListToolVersionsRequest>,
    default_page: u32,
    max_page: u32,
) -> Result<ListToolVersionsResponse, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    // Tools have their own alphabet, the one they are applied with.
    mesh_spec::validate_tool_name("name", &req.name).map_err(field_error)?;
    let page_size = page_size(req.page_size, default_page, max_page)?;
    current_tool(db, &tenant, &req.name).await?;
    let mut query = tool_version::Entity::find()
        .filter(tool_version::Column::Tenant.eq(&tenant))
        .filter(tool_version::Column::Name.eq(&req.name));
    if !req.page_token.is_empty() {
        query = query.filter(tool_version::Column::Version.lt(version_before(&req.page_token)?));
    }
    let mut rows = query
        .order_by_desc(tool_version::Column::Version)
        .limit(u64::from(page_size) + 1)
        .all(db)
        .await
        .map_err(db_error)?;
    let next_page_token = cut_page(&mut rows, page_size, |r| r.version.to_string());
    Ok(ListToolVersionsResponse {
        versions: rows
            .iter()
            .map(|r| ToolVersionSummary {
                version: u64::try_from(r.version).unwrap_or_default(),
                applied_at_ms: r.created_at_ms,
            })
            .collect(),
        next_page_token,
    })
}

async fn current_tool(
    db: &DatabaseConnection,
    tenant: &str,
    name: &str,
) -> Result<tool::Model, Status> {
    tool::Entity::find()
        .filter(tool::Column::Tenant.eq(tenant))
        .filter(tool::Column::Name.eq(name))
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Status::not_found(format!("tool {name:?} not found")))
}

pub async fn get_tool_version(
    db: &DatabaseConnection,
    request: Request<GetToolVersionRequest>,
) -> Result<Tool, Status> {
    let tenant = tenant_of(&request)?;
    let req = request.into_inner();
    // Tools have their own alphabet, the one they are applied with.
    mesh_spec::validate_tool_name("name", &req.name).map_err(field_error)?;
    let version = i64::try_from(req.version)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid("version", "must be a positive version number"))?;
    let head = current_tool(db, &tenant, &req.name).await?;
    let row = tool_version::Entity::find()
        .filter(tool_version::Column::Tenant.eq(&tenant))
        .filter(tool_version::Column::Name.eq(&req.name))
        .filter(tool_version::Column::Version.eq(version))
        .one(db)
        .await
        .map_err(db_error)?
        .ok_or_else(|| {
            Status::not_found(format!("tool {:?} has no version {version}", req.name))
        })?;
    Ok(Tool {
        tenant: row.tenant,
        name: row.name,
        spec: Some(tool_spec_from_json(&row.spec)),
        version: u64::try_from(row.version).unwrap_or_default(),
        created_at_ms: head.created_at_ms,
        updated_at_ms: row.created_at_ms,
    })
}
