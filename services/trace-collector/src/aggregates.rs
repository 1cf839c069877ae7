//! Aggregates of one tenant's traces over time buckets, for dashboards and
//! cost reports: `GET /api/aggregates`.
//!
//! Two units, chosen by what is grouped:
//! - `by=tenant` (the default) and `by=agent` count **traces**, bucketed by
//!   their start: count, traces with an error, latency of the whole trace,
//!   tokens and cost rolled up over the trace;
//! - `by=model` counts **generations** (observations of type generation),
//!   bucketed by their start: count, failed calls, latency of the call,
//!   tokens and cost of the call.
//!
//! Counts and sums are computed by the database (GROUP BY), so a long range
//! costs one scan, not rows shipped to the service. Latency p50 and p95 need
//! an ordered-set aggregate: PostgreSQL's `percentile_cont`; on SQLite (the
//! embedded default) they are absent (`null`) and avg and max remain.
//! Every query is scoped to the caller's tenant and never reads another's
//! rows; the bucket count is bounded by configuration.

use sea_orm::{ConnectionTrait as _, DatabaseBackend, DatabaseConnection, DbErr, Statement, Value};
use serde::Serialize;

/// What the rows are grouped by (besides the bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Tenant,
    Agent,
    Model,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tenant" => Some(Self::Tenant),
            "agent" => Some(Self::Agent),
            "model" => Some(Self::Model),
            _ => None,
        }
    }

    /// The name the APIs use (`by=`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Agent => "agent",
            Self::Model => "model",
        }
    }

    /// What one counted row is.
    pub fn unit(self) -> &'static str {
        match self {
            Self::Tenant | Self::Agent => "trace",
            Self::Model => "generation",
        }
    }
}

/// A validated aggregate query.
#[derive(Debug, Clone)]
pub struct AggregateQuery {
    pub by: GroupBy,
    /// Bucket width, ms (> 0).
    pub interval_ms: i64,
    /// Rows that started in `[from_ms, to_ms)`.
    pub from_ms: i64,
    pub to_ms: i64,
    /// Only this agent's rows.
    pub agent: Option<String>,
    /// Only this model's generations (`by=model` only).
    pub model: Option<String>,
}

/// A query parameter that is wrong, and why (the message names it).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {why}")]
pub struct BadParam {
    pub field: &'static str,
    pub why: String,
}

fn bad(field: &'static str, why: impl Into<String>) -> BadParam {
    BadParam {
        field,
        why: why.into(),
    }
}

/// `30s`, `5m`, `1h`, `1d` (or a bare number of ms) as milliseconds.
pub fn parse_interval(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(scale).filter(|&ms| ms > 0)
}

/// The raw parameters of `GET /api/aggregates`.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AggregateParams {
    pub by: Option<String>,
    pub interval: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub agent: Option<String>,
    pub model: Option<String>,
}

impl AggregateParams {
    /// Validates against the limits: at most `max_buckets` buckets; the
    /// range defaults to the last `default_range_ms` before `now_ms`, the
    /// interval to one hour.
    pub fn validate(
        self,
        now_ms: i64,
        default_range_ms: i64,
        max_buckets: i64,
    ) -> Result<AggregateQuery, BadParam> {
        let by = match self.by.as_deref() {
            None => GroupBy::Tenant,
            Some(s) => {
                GroupBy::parse(s).ok_or_else(|| bad("by", "must be tenant, agent or model"))?
            }
        };
        let interval_ms = match self.interval.as_deref() {
            None => 3_600_000,
            Some(s) => parse_interval(s).ok_or_else(|| {
                bad(
                    "interval",
                    "must be a positive duration: <n>ms, <n>s, <n>m, <n>h or <n>d",
                )
            })?,
        };
        let to_ms = self.to_ms.unwrap_or(now_ms);
        let from_ms = self
            .from_ms
            .unwrap_or_else(|| to_ms.saturating_sub(default_range_ms));
        if from_ms >= to_ms {
            return Err(bad("from_ms", "must be before to_ms"));
        }
        let span = to_ms.saturating_sub(from_ms);
        let buckets = span / interval_ms + i64::from(span % interval_ms != 0);
        if buckets > max_buckets {
            return Err(bad(
                "interval",
                format!(
                    "{buckets} buckets in the range; at most {max_buckets}: widen interval or narrow from_ms/to_ms"
                ),
            ));
        }
        if self.model.is_some() && by != GroupBy::Model {
            return Err(bad("model", "filters generations: use it with by=model"));
        }
        Ok(AggregateQuery {
            by,
            interval_ms,
            from_ms,
            to_ms,
            agent: self.agent.filter(|a| !a.is_empty()),
            model: self.model.filter(|m| !m.is_empty()),
        })
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Absent where the store has no percentile aggregate (SQLite).
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub avg: f64,
    pub max: i64,
}

/// One bucket of one group.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub bucket_start_ms: i64,
    /// The group's key: the agent or the model (absent when the rows carry
    /// none, and for `by=tenant`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub count: i64,
    pub errors: i64,
    pub latency_ms: Latency,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub cost_usd: f64,
}

#[derive(Debug, Serialize)]
pub struct Aggregates {
    pub by: GroupBy,
    /// What `count` counts: `trace` or `generation`.
    pub unit: &'static str,
    pub interval_ms: i64,
    pub from_ms: i64,
    pub to_ms: i64,
    /// Buckets with at least one row, oldest first, then by key.
    pub data: Vec<Bucket>,
}

/// Runs the query for `tenant`.
pub async fn aggregate(
    db: &DatabaseConnection,
    tenant: &str,
    q: &AggregateQuery,
) -> Result<Aggregates, DbErr> {
    let backend = db.get_database_backend();
    let (table, key, errors, cost) = match q.by {
        GroupBy::Tenant => ("trc_traces", None, "error_count > 0", "total_cost_usd"),
        GroupBy::Agent => (
            "trc_traces",
            Some("agent"),
            "error_count > 0",
            "total_cost_usd",
        ),
        GroupBy::Model => (
            "trc_observations",
            Some("model"),
            "level = 'ERROR'",
            "total_cost_usd",
        ),
    };
    let mut values: Vec<Value> = Vec::new();
    let mut bind = |v: Value| {
        values.push(v);
        match backend {
            DatabaseBackend::Postgres => format!("${}", values.len()),
            _ => "?".to_owned(),
        }
    };
    let mut filters = vec![
        format!("tenant = {}", bind(tenant.into())),
        format!("start_ms >= {}", bind(q.from_ms.into())),
        format!("start_ms < {}", bind(q.to_ms.into())),
    ];
    if q.by == GroupBy::Model {
        filters.push("kind = 'generation'".to_owned());
    }
    if let Some(agent) = &q.agent {
        filters.push(format!("agent = {}", bind(agent.clone().into())));
    }
    if let Some(model) = &q.model {
        filters.push(format!("model = {}", bind(model.clone().into())));
    }
    // Buckets are aligned to the epoch (not to from_ms), so the same bucket
    // has the same bounds in every query; `from` is bound, the interval is
    // a validated integer.
    let interval = q.interval_ms;
    let bucket = format!("(start_ms - (start_ms % {interval}))");
    let percentiles = if backend == DatabaseBackend::Postgres {
        "percentile_cont(0.5) WITHIN GROUP (ORDER BY end_ms - start_ms) AS p50, \
         percentile_cont(0.95) WITHIN GROUP (ORDER BY end_ms - start_ms) AS p95"
    } else {
        "CAST(NULL AS DOUBLE PRECISION) AS p50, CAST(NULL AS DOUBLE PRECISION) AS p95"
    };
    let key_select = key.map_or_else(|| "CAST(NULL AS TEXT)".to_owned(), str::to_owned);
    let group = key.map_or_else(|| "bucket".to_owned(), |k| format!("bucket, {k}"));
    let sql = format!(
        "SELECT {bucket} AS bucket, {key_select} AS key, \
         COUNT(*) AS n, \
         CAST(SUM(CASE WHEN {errors} THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
         CAST(AVG(end_ms - start_ms) AS DOUBLE PRECISION) AS avg_ms, \
         CAST(MAX(end_ms - start_ms) AS BIGINT) AS max_ms, \
         {percentiles}, \
         CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
         CAST(COALESCE(SUM({cost}), 0) AS DOUBLE PRECISION) AS cost \
         FROM {table} WHERE {} GROUP BY {group} ORDER BY {group}",
        filters.join(" AND "),
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    let mut data = Vec::with_capacity(rows.len());
    for row in rows {
        let key: Option<String> = row.try_get("", "key")?;
        let input_tokens: i64 = row.try_get("", "input_tokens")?;
        let output_tokens: i64 = row.try_get("", "output_tokens")?;
        data.push(Bucket {
            bucket_start_ms: row.try_get("", "bucket")?,
            agent: if q.by == GroupBy::Agent {
                key.clone()
            } else {
                None
            },
            model: if q.by == GroupBy::Model { key } else { None },
            count: row.try_get("", "n")?,
            errors: row.try_get("", "errors")?,
            latency_ms: Latency {
                p50: row.try_get("", "p50")?,
                p95: row.try_get("", "p95")?,
                avg: row.try_get("", "avg_ms")?,
                max: row.try_get("", "max_ms")?,
            },
            input_tokens,
            output_tokens,
            total_tokens: input_tokens + output_tokens,
            cost_usd: row.try_get("", "cost")?,
        });
    }
    Ok(Aggregates {
        by: q.by,
        unit: q.by.unit(),
        interval_ms: q.interval_ms,
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::ObservationRow;
    use crate::prices::Cost;

    fn params(pairs: &[(&str, &str)]) -> AggregateParams {
        let mut p = AggregateParams::default();
        for (k, v) in pairs {
            let v = (*v).to_owned();
            match *k {
                "by" => p.by = Some(v),
                "interval" => p.interval = Some(v),
                "from_ms" => p.from_ms = Some(v.parse().unwrap()),
                "to_ms" => p.to_ms = Some(v.parse().unwrap()),
                "agent" => p.agent = Some(v),
                "model" => p.model = Some(v),
                other => panic!("unknown parameter {other}"),
            }
        }
        p
    }

    #[test]
    fn parameters_are_validated_naming_the_field() {
        let ok = params(&[
            ("by", "model"),
            ("interval", "5m"),
            ("from_ms", "0"),
            ("to_ms", "600000"),
        ])
        .validate(0, 1, 10)
        .unwrap();
        assert_eq!((ok.by, ok.interval_ms), (GroupBy::Model, 300_000));
        let defaults = AggregateParams::default()
            .validate(86_400_000, 86_400_000, 24)
            .unwrap();
        assert_eq!(
            (defaults.by, defaults.interval_ms, defaults.from_ms),
            (GroupBy::Tenant, 3_600_000, 0)
        );
        for (pairs, field) in [
            (vec![("by", "user")], "by"),
            (vec![("interval", "0s")], "interval"),
            (vec![("interval", "5 minutes")], "interval"),
            (vec![("interval", "1m")], "interval"), // 1440 buckets > 24
            (vec![("from_ms", "5"), ("to_ms", "5")], "from_ms"),
            (vec![("model", "gpt")], "model"),
        ] {
            let err = params(&pairs)
                .validate(86_400_000, 86_400_000, 24)
                .unwrap_err();
            assert_eq!(err.field, field, "{pairs:?}: {err}");
        }
        assert_eq!(parse_interval("90s"), Some(90_000));
        assert_eq!(parse_interval("1d"), Some(86_400_000));
        assert_eq!(parse_interval("h"), None);
        assert_eq!(parse_interval("99999999999999999d"), None);
    }

    fn row(trace: &str, span: &str, parent: &str, start: i64, dur: i64) -> ObservationRow {
        ObservationRow {
            trace_id: trace.repeat(16),
            span_id: span.repeat(8),
            parent_span_id: parent.repeat(8),
            name: "s".to_owned(),
            kind: "span",
            start_ms: start,
            start_ns: start * 1_000_000,
            end_ms: start + dur,
            status_code: "unset",
            status_message: None,
            level: "DEFAULT",
            model: None,
            input_tokens: 0,
            output_tokens: 0,
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

    fn generation(
        mut r: ObservationRow,
        model: &str,
        tokens: (i64, i64),
        cost: f64,
    ) -> ObservationRow {
        r.kind = "generation";
        r.model = Some(model.to_owned());
        r.input_tokens = tokens.0;
        r.output_tokens = tokens.1;
        r.cost = Some(Cost {
            input: cost / 2.0,
            output: cost / 2.0,
            total: cost,
        });
        r
    }

    /// SQLite (the embedded default): exact counts and sums per bucket and
    /// key, tenants never mixed; PostgreSQL runs the same SQL in the
    /// integration tests, with percentiles.
    #[tokio::test]
    async fn buckets_count_and_sum_per_tenant_agent_and_model() {
        let db = mesh_store::connect("sqlite::memory:", 1).await.unwrap();
        mesh_store::traces::migrate(&db).await.unwrap();
        let hour = 3_600_000;
        // acme: two traces in hour 0 (one failing), one in hour 1.
        let mut failing = row("0b", "02", "01", 100, 50);
        failing.level = "ERROR";
        crate::store::store(
            &db,
            "acme",
            vec![
                row("0a", "01", "", 0, 1_000),
                generation(row("0a", "02", "01", 10, 500), "gpt-4o", (100, 20), 0.25),
                row("0b", "01", "", 100, 3_000),
                failing,
                generation(row("0b", "03", "01", 200, 300), "smollm2", (7, 3), 0.0),
            ],
        )
        .await
        .unwrap();
        let mut other_agent = row("0c", "01", "", hour + 5, 200);
        other_agent.agent = Some("billing".to_owned());
        crate::store::store(
            &db,
            "acme",
            vec![
                other_agent.clone(),
                generation(
                    ObservationRow {
                        agent: Some("billing".to_owned()),
                        ..row("0c", "02", "01", hour + 6, 100)
                    },
                    "gpt-4o",
                    (1, 1),
                    0.5,
                ),
            ],
        )
        .await
        .unwrap();
        // globex: a trace in the same hour, never in acme's numbers.
        crate::store::store(
            &db,
            "globex",
            vec![generation(
                row("0d", "01", "", 50, 9_000),
                "gpt-4o",
                (1_000, 1_000),
                9.0,
            )],
        )
        .await
        .unwrap();

        let query = |by, agent: Option<&str>| AggregateQuery {
            by,
            interval_ms: hour,
            from_ms: 0,
            to_ms: 2 * hour,
            agent: agent.map(str::to_owned),
            model: None,
        };
        let totals = aggregate(&db, "acme", &query(GroupBy::Tenant, None))
            .await
            .unwrap();
        assert_eq!(totals.unit, "trace");
        let first = &totals.data[0];
        assert_eq!(
            (first.bucket_start_ms, first.count, first.errors),
            (0, 2, 1)
        );
        assert_eq!((first.input_tokens, first.output_tokens), (107, 23));
        assert!((first.cost_usd - 0.25).abs() < 1e-9, "{first:?}");
        assert_eq!(first.latency_ms.max, 3_000);
        assert!((first.latency_ms.avg - 2_000.0).abs() < 1e-9);
        assert_eq!(first.latency_ms.p50, None); // SQLite has no percentiles
        assert_eq!(totals.data[1].bucket_start_ms, hour);
        assert_eq!(totals.data.len(), 2);

        let by_agent = aggregate(&db, "acme", &query(GroupBy::Agent, None))
            .await
            .unwrap();
        let keys: Vec<_> = by_agent
            .data
            .iter()
            .map(|b| (b.bucket_start_ms, b.agent.as_deref().unwrap(), b.count))
            .collect();
        assert_eq!(keys, [(0, "support", 2), (hour, "billing", 1)]);
        let billing = aggregate(&db, "acme", &query(GroupBy::Agent, Some("billing")))
            .await
            .unwrap();
        assert_eq!(billing.data.len(), 1);

        let by_model = aggregate(&db, "acme", &query(GroupBy::Model, None))
            .await
            .unwrap();
        assert_eq!(by_model.unit, "generation");
        let keys: Vec<_> = by_model
            .data
            .iter()
            .map(|b| {
                (
                    b.bucket_start_ms,
                    b.model.as_deref().unwrap(),
                    b.count,
                    b.input_tokens,
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                (0, "gpt-4o", 1, 100),
                (0, "smollm2", 1, 7),
                (hour, "gpt-4o", 1, 1)
            ]
        );
        assert!((by_model.data[2].cost_usd - 0.5).abs() < 1e-9);

        // The other tenant sees only its own row; a tenant with none, nothing.
        let globex = aggregate(&db, "globex", &query(GroupBy::Model, None))
            .await
            .unwrap();
        assert_eq!(globex.data.len(), 1);
        assert_eq!(globex.data[0].input_tokens, 1_000);
        let nobody = aggregate(&db, "initech", &query(GroupBy::Tenant, None))
            .await
            .unwrap();
        assert!(nobody.data.is_empty());
    }
}
