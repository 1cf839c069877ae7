//! The trace-collector's reads and writes on `trc_traces` and
//! `trc_observations`. Writes are idempotent: an observation is inserted
//! once (a duplicate is ignored by the unique key), and only the
//! observations an insert actually added are added to their trace's row,
//! in the same transaction, so the totals count every observation exactly
//! once however batches repeat, reorder or race. Storing a batch costs the
//! same whether its trace holds ten observations or ten thousand: the row
//! is never recomputed from all of them.

use std::collections::{BTreeMap, HashMap, HashSet};

use mesh_store::traces::{observation, score, trace};
use sea_orm::sea_query::{Expr, ExprTrait as _, Func, OnConflict, Query};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait as _, Condition, ConnectionTrait as _, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _, QueryTrait as _, TransactionTrait as _,
};
use serde::Serialize;

use crate::mapping::ObservationRow;
use crate::scores::{self, ScoreView};

/// Rows per INSERT: 25 columns stays far under every backend's
/// bind-parameter limit.
const INSERT_CHUNK: usize = 500;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What one new observation adds to its trace's row.
struct Added {
    trace_id: String,
    span_id: String,
    /// The root's name (`None` for any other observation).
    root_name: Option<String>,
    agent: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
    start_ms: i64,
    end_ms: i64,
    error: bool,
    input_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

/// Stores the observations of one TRACES message and adds the new ones to
/// the traces they belong to, in one transaction: the observations that
/// the insert actually added (RETURNING skips duplicates) are summed per
/// trace and added to the trace rows by one upsert. The work per message is
/// proportional to the message, never to what its traces already hold.
pub async fn store(
    db: &DatabaseConnection,
    tenant: &str,
    mut rows: Vec<ObservationRow>,
) -> Result<(), DbErr> {
    // One order for every writer: concurrent transactions take the unique
    // index entries and then the trace rows in the same order, so they wait
    // for each other rather than deadlock.
    rows.sort_unstable_by(|a, b| (&a.trace_id, &a.span_id).cmp(&(&b.trace_id, &b.span_id)));
    rows.dedup_by(|a, b| a.trace_id == b.trace_id && a.span_id == b.span_id);
    let (models, added): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .map(|r| {
            let added = Added {
                trace_id: r.trace_id.clone(),
                span_id: r.span_id.clone(),
                root_name: r.parent_span_id.is_empty().then(|| r.name.clone()),
                agent: r.agent.clone(),
                session_id: r.session_id.clone(),
                user_id: r.user_id.clone(),
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                error: r.level == "ERROR",
                input_tokens: r.input_tokens,
                output_tokens: r.output_tokens,
                cost_usd: r.cost.map_or(0.0, |c| c.total),
            };
            let model = observation::ActiveModel {
                id: NotSet,
                tenant: Set(tenant.to_owned()),
                trace_id: Set(r.trace_id),
                span_id: Set(r.span_id),
                parent_span_id: Set(r.parent_span_id),
                name: Set(r.name),
                kind: Set(r.kind.to_owned()),
                start_ms: Set(r.start_ms),
                start_ns: Set(Some(r.start_ns)),
                end_ms: Set(r.end_ms),
                status_code: Set(r.status_code.to_owned()),
                status_message: Set(r.status_message),
                level: Set(r.level.to_owned()),
                model: Set(r.model),
                input_tokens: Set(r.input_tokens),
                output_tokens: Set(r.output_tokens),
                agent: Set(r.agent),
                session_id: Set(r.session_id),
                user_id: Set(r.user_id),
                attributes: Set(r.attributes),
                input_cost_usd: Set(r.cost.map(|c| c.input)),
                output_cost_usd: Set(r.cost.map(|c| c.output)),
                total_cost_usd: Set(r.cost.map(|c| c.total)),
                completion_start_ms: Set(r.completion_start_ms),
                input: Set(r.input),
                output: Set(r.output),
            };
            (model, added)
        })
        .unzip();
    if models.is_empty() {
        return Ok(());
    }
    let txn = db.begin().await?;
    let backend = txn.get_database_backend();
    let mut inserted: HashSet<(String, String)> = HashSet::new();
    let mut models = models.into_iter().peekable();
    while models.peek().is_some() {
        let chunk: Vec<_> = models.by_ref().take(INSERT_CHUNK).collect();
        let mut insert = observation::Entity::insert_many(chunk).on_conflict(
            OnConflict::columns([
                observation::Column::Tenant,
                observation::Column::TraceId,
                observation::Column::SpanId,
            ])
            .do_nothing()
            .to_owned(),
        );
        insert.query().returning(
            Query::returning().columns([observation::Column::TraceId, observation::Column::SpanId]),
        );
        for row in txn.query_all_raw(insert.build(backend)).await? {
            inserted.insert((row.try_get("", "trace_id")?, row.try_get("", "span_id")?));
        }
    }
    let new: Vec<Added> = added
        .into_iter()
        .filter(|a| inserted.contains(&(a.trace_id.clone(), a.span_id.clone())))
        .collect();
    let traces: Vec<trace::ActiveModel> = new
        .chunk_by(|a, b| a.trace_id == b.trace_id)
        .map(|group| totals(tenant, group))
        .collect();
    let mut traces = traces.into_iter().peekable();
    while traces.peek().is_some() {
        let chunk: Vec<_> = traces.by_ref().take(INSERT_CHUNK).collect();
        trace::Entity::insert_many(chunk)
            .on_conflict(add_on_conflict())
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await
}

/// The row that the new observations `group` (of one trace) add.
fn totals(tenant: &str, group: &[Added]) -> trace::ActiveModel {
    let root = group.iter().find(|a| a.root_name.is_some());
    let pick = |f: fn(&Added) -> &Option<String>| {
        root.and_then(|r| f(r).clone())
            .or_else(|| group.iter().find_map(|a| f(a).clone()))
    };
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    trace::ActiveModel {
        id: NotSet,
        tenant: Set(tenant.to_owned()),
        trace_id: Set(group[0].trace_id.clone()),
        name: Set(root.and_then(|r| r.root_name.clone())),
        agent: Set(pick(|a| &a.agent)),
        session_id: Set(pick(|a| &a.session_id)),
        user_id: Set(pick(|a| &a.user_id)),
        start_ms: Set(group.iter().map(|a| a.start_ms).min().unwrap_or(0)),
        end_ms: Set(group.iter().map(|a| a.end_ms).max().unwrap_or(0)),
        observation_count: Set(count(group.len())),
        error_count: Set(count(group.iter().filter(|a| a.error).count())),
        input_tokens: Set(group.iter().map(|a| a.input_tokens).sum()),
        output_tokens: Set(group.iter().map(|a| a.output_tokens).sum()),
        updated_at_ms: Set(now_ms()),
        total_cost_usd: Set(group.iter().map(|a| a.cost_usd).sum()),
    }
}

/// Adds an incoming trace row to the stored one: counts and sums add up
/// (each observation is added once: only its first insert returns it), the
/// time range widens, and the root's name, agent, session and user win
/// over values taken from other observations (the incoming row has a name
/// only when it carries the root), which only fill what is still empty.
fn add_on_conflict() -> OnConflict {
    let table = "trc_traces";
    let merge = |column: &str, greatest: bool| {
        let current = Expr::cust(format!("{table}.{column}"));
        let incoming = Expr::cust(format!("excluded.{column}"));
        if greatest {
            Func::greatest([current, incoming])
        } else {
            Func::least([current, incoming])
        }
    };
    let add = |column: &str| Expr::cust(format!("{table}.{column} + excluded.{column}"));
    let root_first = |column: &str| {
        Expr::cust(format!(
            "CASE WHEN excluded.name IS NOT NULL \
             THEN COALESCE(excluded.{column}, {table}.{column}) \
             ELSE COALESCE({table}.{column}, excluded.{column}) END"
        ))
    };
    let mut on_conflict = OnConflict::columns([trace::Column::Tenant, trace::Column::TraceId]);
    on_conflict
        .value(trace::Column::StartMs, merge("start_ms", false))
        .value(trace::Column::EndMs, merge("end_ms", true))
        .value(trace::Column::ObservationCount, add("observation_count"))
        .value(trace::Column::ErrorCount, add("error_count"))
        .value(trace::Column::InputTokens, add("input_tokens"))
        .value(trace::Column::OutputTokens, add("output_tokens"))
        .value(trace::Column::TotalCostUsd, add("total_cost_usd"))
        .value(trace::Column::Name, root_first("name"))
        .value(trace::Column::Agent, root_first("agent"))
        .value(trace::Column::SessionId, root_first("session_id"))
        .value(trace::Column::UserId, root_first("user_id"))
        .update_column(trace::Column::UpdatedAtMs);
    on_conflict
}

/// Deletes traces (and their observations and scores) that started
/// before `cutoff_ms`, and scores posted before it whose trace never came;
/// returns how many traces went.
pub async fn delete_older_than(db: &DatabaseConnection, cutoff_ms: i64) -> Result<u64, DbErr> {
    score::Entity::delete_many()
        .filter(score::Column::CreatedAtMs.lt(cutoff_ms))
        .exec(db)
        .await?;
    let mut deleted = 0;
    loop {
        let old: Vec<(String, String)> = trace::Entity::find()
            .select_only()
            .column(trace::Column::Tenant)
            .column(trace::Column::TraceId)
            .filter(trace::Column::StartMs.lt(cutoff_ms))
            .limit(500)
            .into_tuple()
            .all(db)
            .await?;
        if old.is_empty() {
            return Ok(deleted);
        }
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (tenant, trace_id) in old {
            by_tenant.entry(tenant).or_default().push(trace_id);
        }
        for (tenant, ids) in by_tenant {
            // Scores and observations first: a crash in between leaves a
            // trace row that the next sweep deletes, never orphans.
            score::Entity::delete_many()
                .filter(score::Column::Tenant.eq(&tenant))
                .filter(score::Column::TraceId.is_in(ids.clone()))
                .exec(db)
                .await?;
            observation::Entity::delete_many()
                .filter(observation::Column::Tenant.eq(&tenant))
                .filter(observation::Column::TraceId.is_in(ids.clone()))
                .exec(db)
                .await?;
            deleted += trace::Entity::delete_many()
                .filter(trace::Column::Tenant.eq(&tenant))
                .filter(trace::Column::TraceId.is_in(ids))
                .exec(db)
                .await?
                .rows_affected;
        }
    }
}

/// One trace in a list.
#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    pub name: Option<String>,
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub latency_ms: i64,
    pub observation_count: i64,
    pub error_count: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    /// USD, summed over the trace's priced generations.
    pub total_cost_usd: f64,
}

impl From<trace::Model> for TraceSummary {
    fn from(t: trace::Model) -> Self {
        Self {
            latency_ms: t.end_ms - t.start_ms,
            total_tokens: t.input_tokens + t.output_tokens,
            trace_id: t.trace_id,
            name: t.name,
            agent: t.agent,
            session_id: t.session_id,
            user_id: t.user_id,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            observation_count: t.observation_count,
            error_count: t.error_count,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            total_cost_usd: t.total_cost_usd,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TracePage {
    pub data: Vec<TraceSummary>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

/// `<start_ms>.<id>` of the last row of a page.
fn parse_cursor(cursor: &str) -> Option<(i64, i64)> {
    let (start, id) = cursor.split_once('.')?;
    Some((start.parse().ok()?, id.parse().ok()?))
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("cursor: malformed")]
    BadCursor,
    #[error("status: must be error or ok")]
    BadStatus,
    /// A text filter longer than [`MAX_FILTER_BYTES`] (names the filter).
    #[error("{0}: at most {MAX_FILTER_BYTES} bytes")]
    FilterTooLong(&'static str),
    #[error("database: {0}")]
    Db(#[from] DbErr),
}

/// The longest text filter of the trace list (agent, session, user): the
/// names and ids it matches are far shorter, so a longer one is a mistake,
/// and it would otherwise be compared against every row.
pub const MAX_FILTER_BYTES: usize = 512;

/// Optional filters of the trace list; every one set must match.
#[derive(Debug, Default, Clone)]
pub struct TraceFilter {
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// Traces that started at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Traces that started before this time.
    pub to_ms: Option<i64>,
    /// `error` (at least one observation failed) or `ok` (none did).
    pub status: Option<String>,
    pub min_latency_ms: Option<i64>,
    /// Traces that cost at least this much, USD.
    pub min_cost: Option<f64>,
}

/// A tenant's traces, newest first.
pub async fn list(
    db: &DatabaseConnection,
    tenant: &str,
    filter: &TraceFilter,
    limit: u64,
    cursor: Option<&str>,
) -> Result<TracePage, QueryError> {
    for (name, value) in [
        ("agent", &filter.agent),
        ("session_id", &filter.session_id),
        ("user_id", &filter.user_id),
    ] {
        if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_BYTES) {
            return Err(QueryError::FilterTooLong(name));
        }
    }
    let mut query = trace::Entity::find().filter(trace::Column::Tenant.eq(tenant));
    if let Some(agent) = &filter.agent {
        query = query.filter(trace::Column::Agent.eq(agent));
    }
    if let Some(session) = &filter.session_id {
        query = query.filter(trace::Column::SessionId.eq(session));
    }
    if let Some(user) = &filter.user_id {
        query = query.filter(trace::Column::UserId.eq(user));
    }
    if let Some(from) = filter.from_ms {
        query = query.filter(trace::Column::StartMs.gte(from));
    }
    if let Some(to) = filter.to_ms {
        query = query.filter(trace::Column::StartMs.lt(to));
    }
    match filter.status.as_deref() {
        None => {}
        Some("error") => query = query.filter(trace::Column::ErrorCount.gt(0)),
        Some("ok") => query = query.filter(trace::Column::ErrorCount.eq(0)),
        Some(_) => return Err(QueryError::BadStatus),
    }
    if let Some(min) = filter.min_latency_ms {
        query = query.filter(
            Expr::col(trace::Column::EndMs)
                .sub(Expr::col(trace::Column::StartMs))
                .gte(min),
        );
    }
    if let Some(min) = filter.min_cost {
        query = query.filter(trace::Column::TotalCostUsd.gte(min));
    }
    if let Some(cursor) = cursor {
        let (start, id) = parse_cursor(cursor).ok_or(QueryError::BadCursor)?;
        query = query.filter(
            Condition::any().add(trace::Column::StartMs.lt(start)).add(
                Condition::all()
                    .add(trace::Column::StartMs.eq(start))
                    .add(trace::Column::Id.lt(id)),
            ),
        );
    }
    let mut rows = query
        .order_by_desc(trace::Column::StartMs)
        .order_by_desc(trace::Column::Id)
        .limit(limit + 1)
        .all(db)
        .await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more {
        rows.last().map(|t| format!("{}.{}", t.start_ms, t.id))
    } else {
        None
    };
    Ok(TracePage {
        data: rows.into_iter().map(TraceSummary::from).collect(),
        next_cursor,
    })
}

/// One observation in a trace tree, with its children nested.
#[derive(Debug, Serialize)]
pub struct ObservationNode {
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub latency_ms: i64,
    pub status_code: String,
    pub status_message: Option<String>,
    pub level: String,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// This observation's tokens plus its descendants'.
    pub total_input_tokens: i64,
    pub total_output_tokens: i64,
    /// USD of this generation (absent when unpriced or not a generation).
    pub input_cost_usd: Option<f64>,
    pub output_cost_usd: Option<f64>,
    pub cost_usd: Option<f64>,
    /// This observation's cost plus its descendants', USD.
    pub total_cost_usd: f64,
    pub attributes: serde_json::Value,
    /// When the first token arrived (ms since the epoch), and that less
    /// the start: a generation's time to first token. Absent when the
    /// sender did not record it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_start_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<i64>,
    /// Prompt (or tool arguments) and completion (or tool result), where
    /// the sender recorded content; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// True when this observation sits deeper than the tree's depth limit
    /// and is shown under its ancestor at the limit instead of under its
    /// parent (`parent_span_id` still names the real parent).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depth_capped: bool,
    pub children: Vec<ObservationNode>,
}

#[derive(Debug, Serialize)]
pub struct TraceTree {
    #[serde(flatten)]
    pub trace: TraceSummary,
    /// Root observations (and those whose parent has not arrived).
    pub observations: Vec<ObservationNode>,
    /// Scores on the trace and on its observations, oldest first.
    pub scores: Vec<ScoreView>,
}

/// One trace of `tenant` as a tree, nested at most `max_depth` levels (see
/// [`build_tree`]); `None` when the tenant has no such trace.
pub async fn get(
    db: &DatabaseConnection,
    tenant: &str,
    trace_id: &str,
    max_depth: usize,
) -> Result<Option<TraceTree>, DbErr> {
    let Some(row) = trace::Entity::find()
        .filter(trace::Column::Tenant.eq(tenant))
        .filter(trace::Column::TraceId.eq(trace_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let observations = observation::Entity::find()
        .filter(observation::Column::Tenant.eq(tenant))
        .filter(observation::Column::TraceId.eq(trace_id))
        .order_by_asc(observation::Column::StartMs)
        .order_by_asc(observation::Column::StartNs)
        .order_by_asc(observation::Column::Id)
        .all(db)
        .await?;
    Ok(Some(TraceTree {
        trace: row.into(),
        observations: build_tree(observations, max_depth),
        scores: scores::of_trace(db, tenant, trace_id).await?,
    }))
}

/// Nests observations under their parents; one whose parent is missing
/// (not arrived yet, or never sent) is shown as a root. Iterative, so a
/// deep trace cannot overflow the stack while it is built; a parent cycle
/// (malformed input) is broken by treating its members as roots.
///
/// The result is nested at most `max_depth` levels (at least 2): an
/// observation deeper than that is hung under its ancestor at the last
/// level, marked `depth_capped`. Serializing, parsing (serde_json stops at
/// 128 levels by default) and dropping a tree are recursive, so without the
/// cap one sender's chain of spans, each the parent of the next, could
/// overflow the stack of whoever reads the trace, this service included.
pub fn build_tree(observations: Vec<observation::Model>, max_depth: usize) -> Vec<ObservationNode> {
    let max_depth = max_depth.max(2);
    let index: HashMap<String, usize> = observations
        .iter()
        .enumerate()
        .map(|(i, o)| (o.span_id.clone(), i))
        .collect();
    let parent_of = |i: usize| -> Option<usize> {
        let p = &observations[i].parent_span_id;
        if p.is_empty() {
            None
        } else {
            index.get(p).copied().filter(|&j| j != i)
        }
    };
    // Break parent cycles (their members become roots) in one pass: each
    // node is walked once, so a long chain costs O(n), not O(n^2).
    let n = observations.len();
    let mut parent: Vec<Option<usize>> = (0..n).map(parent_of).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Seen {
        New,
        OnPath,
        Done,
    }
    let mut seen = vec![Seen::New; n];
    let mut path = Vec::new();
    for start in 0..n {
        path.clear();
        let mut at = start;
        loop {
            match seen[at] {
                Seen::New => {
                    seen[at] = Seen::OnPath;
                    path.push(at);
                    match parent[at] {
                        Some(p) => at = p,
                        None => break,
                    }
                }
                Seen::OnPath => {
                    let from = path.iter().position(|&m| m == at).unwrap_or(0);
                    for &member in &path[from..] {
                        parent[member] = None;
                    }
                    break;
                }
                Seen::Done => break,
            }
        }
        for &m in &path {
            seen[m] = Seen::Done;
        }
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut roots = Vec::new();
    for (i, p) in parent.iter().enumerate() {
        match p {
            Some(p) => children[*p].push(i),
            None => roots.push(i),
        }
    }
    // Depth from the roots (a root is level 1); a node past `max_depth`
    // moves under `anchor`, its ancestor at level `max_depth - 1`.
    let mut capped = vec![false; n];
    let mut level = vec![1_usize; n];
    let mut anchor: Vec<Option<usize>> = vec![None; n];
    let mut stack: Vec<usize> = roots.clone();
    while let Some(i) = stack.pop() {
        if level[i] + 1 == max_depth {
            anchor[i] = Some(i);
        }
        for &c in &children[i] {
            level[c] = level[i] + 1;
            anchor[c] = anchor[i];
            if level[c] > max_depth
                && let Some(a) = anchor[i]
            {
                parent[c] = Some(a);
                level[c] = max_depth;
                capped[c] = true;
            }
            stack.push(c);
        }
    }
    if capped.iter().any(|c| *c) {
        // Rebuild in index order, so siblings keep their start-time order.
        children = vec![Vec::new(); n];
        for (i, p) in parent.iter().enumerate() {
            if let Some(p) = p {
                children[*p].push(i);
            }
        }
    }
    // Post-order: build each node after its children.
    let mut order = Vec::with_capacity(n);
    let mut stack: Vec<usize> = roots.iter().rev().copied().collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(children[i].iter().copied());
    }
    let mut slots: Vec<Option<observation::Model>> = observations.into_iter().map(Some).collect();
    let mut built: Vec<Option<ObservationNode>> = (0..n).map(|_| None).collect();
    for &i in order.iter().rev() {
        let Some(o) = slots[i].take() else { continue };
        let kids: Vec<ObservationNode> = children[i]
            .iter()
            .filter_map(|&c| built[c].take())
            .collect();
        let total_input_tokens =
            o.input_tokens + kids.iter().map(|k| k.total_input_tokens).sum::<i64>();
        let total_output_tokens =
            o.output_tokens + kids.iter().map(|k| k.total_output_tokens).sum::<i64>();
        let total_cost_usd =
            o.total_cost_usd.unwrap_or(0.0) + kids.iter().map(|k| k.total_cost_usd).sum::<f64>();
        built[i] = Some(ObservationNode {
            latency_ms: o.end_ms - o.start_ms,
            time_to_first_token_ms: o
                .completion_start_ms
                .map(|first| first - o.start_ms)
                .filter(|ttft| *ttft >= 0),
            completion_start_ms: o.completion_start_ms,
            input: o.input,
            output: o.output,
            parent_span_id: Some(o.parent_span_id).filter(|p| !p.is_empty()),
            span_id: o.span_id,
            name: o.name,
            kind: o.kind,
            start_ms: o.start_ms,
            end_ms: o.end_ms,
            status_code: o.status_code,
            status_message: o.status_message,
            level: o.level,
            model: o.model,
            input_tokens: o.input_tokens,
            output_tokens: o.output_tokens,
            total_input_tokens,
            total_output_tokens,
            input_cost_usd: o.input_cost_usd,
            output_cost_usd: o.output_cost_usd,
            cost_usd: o.total_cost_usd,
            total_cost_usd,
            attributes: o.attributes,
            depth_capped: capped[i],
            children: kids,
        });
    }
    roots.iter().filter_map(|&r| built[r].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(span: &str, parent: &str, start: i64, tokens: i64) -> observation::Model {
        observation::Model {
            id: start,
            tenant: "t".to_owned(),
            trace_id: "x".to_owned(),
            span_id: span.to_owned(),
            parent_span_id: parent.to_owned(),
            name: span.to_owned(),
            kind: "span".to_owned(),
            start_ms: start,
            start_ns: Some(start * 1_000_000),
            end_ms: start + 10,
            status_code: "unset".to_owned(),
            status_message: None,
            level: "DEFAULT".to_owned(),
            model: None,
            input_tokens: tokens,
            output_tokens: 0,
            agent: None,
            session_id: None,
            user_id: None,
            attributes: serde_json::json!({}),
            input_cost_usd: None,
            output_cost_usd: None,
            total_cost_usd: Some(0.5),
            completion_start_ms: None,
            input: None,
            output: None,
        }
    }

    #[test]
    fn nests_children_rolls_up_tokens_and_keeps_orphans() {
        let tree = build_tree(
            vec![
                obs("root", "", 1, 0),
                obs("a", "root", 2, 5),
                obs("b", "a", 3, 7),
                obs("orphan", "missing", 4, 1),
            ],
            64,
        );
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[0].span_id, "root");
        assert_eq!(tree[0].total_input_tokens, 12);
        assert!((tree[0].total_cost_usd - 1.5).abs() < 1e-9);
        assert_eq!(tree[0].children[0].children[0].span_id, "b");
        assert_eq!(tree[0].latency_ms, 10);
        assert_eq!(tree[1].span_id, "orphan");
        assert_eq!(tree[1].parent_span_id.as_deref(), Some("missing"));
    }

    /// A chain of 20k spans, each the parent of the next: nested 8 deep,
    /// the rest under the 7th, in order; serializing and dropping it stays
    /// shallow (without the cap both overflow the test thread's stack).
    #[test]
    fn a_deep_chain_is_capped_at_the_depth_limit() {
        let n = 20_000_i64;
        let chain: Vec<observation::Model> = (0..n)
            .map(|i| {
                let parent = if i == 0 {
                    String::new()
                } else {
                    format!("s{}", i - 1)
                };
                obs(&format!("s{i}"), &parent, i, 1)
            })
            .collect();
        let tree = build_tree(chain, 8);
        assert_eq!(tree.len(), 1);
        let mut at = &tree[0];
        for _ in 0..6 {
            assert_eq!(at.children.len(), 1);
            assert!(!at.depth_capped);
            at = &at.children[0];
        }
        assert_eq!(at.span_id, "s6");
        // s7 is at level 8 under s6 itself; s8.. are capped under s6.
        assert_eq!(at.children.len(), usize::try_from(n - 7).unwrap());
        assert_eq!(at.children[0].span_id, "s7");
        assert!(!at.children[0].depth_capped);
        assert!(at.children[1].depth_capped);
        assert_eq!(at.children[1].parent_span_id.as_deref(), Some("s7"));
        assert!(at.children.iter().all(|c| c.children.is_empty()));
        assert_eq!(tree[0].total_input_tokens, n);
        let json = serde_json::to_string(&tree).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back[0]["span_id"], "s0");
    }

    #[test]
    fn a_parent_cycle_does_not_hang_or_lose_nodes() {
        let tree = build_tree(vec![obs("a", "b", 1, 1), obs("b", "a", 2, 1)], 64);
        let count = |nodes: &[ObservationNode]| -> usize {
            let mut stack: Vec<&ObservationNode> = nodes.iter().collect();
            let mut n = 0;
            while let Some(node) = stack.pop() {
                n += 1;
                stack.extend(node.children.iter());
            }
            n
        };
        assert_eq!(count(&tree), 2);
    }

    fn row(span: &str, parent: &str, start: i64, tokens: i64) -> ObservationRow {
        ObservationRow {
            trace_id: "0a".repeat(16),
            span_id: span.repeat(8),
            parent_span_id: parent.repeat(8),
            name: format!("span {span}"),
            kind: "span",
            start_ms: start,
            start_ns: start * 1_000_000,
            end_ms: start + 10,
            status_code: "unset",
            status_message: None,
            level: "DEFAULT",
            model: None,
            input_tokens: tokens,
            output_tokens: 1,
            agent: Some("support".to_owned()),
            session_id: None,
            user_id: None,
            attributes: serde_json::json!({}),
            completion_start_ms: None,
            input: None,
            output: None,
            cost: None,
        }
    }

    /// The embedded default (SQLite): idempotent, order-independent writes,
    /// queries and retention with the same SQL the PostgreSQL tests run.
    #[tokio::test]
    async fn sqlite_store_is_idempotent_and_order_independent() {
        let db = mesh_store::connect("sqlite::memory:", 1).await.unwrap();
        mesh_store::traces::migrate(&db).await.unwrap();
        // Child first, then root with the child again, then everything again.
        store(&db, "acme", vec![row("02", "01", 20, 5)])
            .await
            .unwrap();
        let early = get(&db, "acme", &"0a".repeat(16), 64)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(early.trace.name, None);
        store(
            &db,
            "acme",
            vec![row("01", "", 10, 0), row("02", "01", 20, 5)],
        )
        .await
        .unwrap();
        store(
            &db,
            "acme",
            vec![row("02", "01", 20, 5), row("01", "", 10, 0)],
        )
        .await
        .unwrap();
        let tree = get(&db, "acme", &"0a".repeat(16), 64)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(tree.trace.name.as_deref(), Some("span 01"));
        assert_eq!(tree.trace.agent.as_deref(), Some("support"));
        assert_eq!(tree.trace.observation_count, 2);
        assert_eq!((tree.trace.input_tokens, tree.trace.output_tokens), (5, 2));
        assert_eq!((tree.trace.start_ms, tree.trace.end_ms), (10, 30));
        assert_eq!(tree.observations.len(), 1);
        assert_eq!(tree.observations[0].children.len(), 1);
        assert!(
            get(&db, "globex", &"0a".repeat(16), 64)
                .await
                .unwrap()
                .is_none()
        );

        let page = list(&db, "acme", &TraceFilter::default(), 10, None)
            .await
            .unwrap();
        assert_eq!(page.data.len(), 1);
        let filter = TraceFilter {
            min_latency_ms: Some(21),
            ..TraceFilter::default()
        };
        assert!(
            list(&db, "acme", &filter, 10, None)
                .await
                .unwrap()
                .data
                .is_empty()
        );

        assert_eq!(delete_older_than(&db, 11).await.unwrap(), 1);
        assert!(
            get(&db, "acme", &"0a".repeat(16), 64)
                .await
                .unwrap()
                .is_none()
        );
        let left = observation::Entity::find().all(&db).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn cursors_round_trip() {
        assert_eq!(parse_cursor("1700.42"), Some((1700, 42)));
        assert_eq!(parse_cursor("x"), None);
        assert_eq!(parse_cursor("1.y"), None);
    }
}
