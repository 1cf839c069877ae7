//! The query API over gRPC: `agentmesh.v1.TraceQuery` (ListTraces,
//! GetTrace, Aggregates) on the internal gRPC port, for the tenant named by
//! the caller's `agentmesh-tenant` metadata (the gateway serves the same
//! service publicly, tenant from the token).
//!
//! It must never grow a second implementation of the queries: filters,
//! cursor, tree and aggregates are [`store::list`], [`store::get`] and
//! [`aggregates::aggregate`], exactly as the REST handlers call them; this
//! module only converts messages and names the proto's fields in errors.

use mesh_proto as pb;
use mesh_proto::trace_query_server::TraceQuery;
use sea_orm::DatabaseConnection;
use tonic::{Request, Response, Status};

use crate::aggregates::{self, AggregateParams};
use crate::scores::ScoreView;
use crate::store::{self, ObservationNode, QueryError, TraceFilter, TraceSummary, TraceTree};

/// The limits the REST face applies too (see [`crate::Config`]).
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub default_page_size: u64,
    pub max_page_size: u64,
    pub aggregate_default_range_ms: i64,
    pub aggregate_max_buckets: i64,
    pub max_tree_depth: usize,
}

#[derive(Debug, Clone)]
pub struct TraceQueryGrpc {
    pub db: DatabaseConnection,
    pub limits: QueryLimits,
}

fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Status {
    tracing::error!(%error, "{what} failed");
    Status::unavailable("database unavailable")
}

fn non_empty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// The filter and page of a list request, validated against `limits`.
pub fn list_params(
    req: pb::ListTracesRequest,
    limits: &QueryLimits,
) -> Result<(TraceFilter, u64, Option<String>), Status> {
    let limit = match u64::from(req.page_size) {
        0 => limits.default_page_size,
        n if n > limits.max_page_size => {
            return Err(Status::invalid_argument(format!(
                "page_size: must be at most {}",
                limits.max_page_size
            )));
        }
        n => n,
    };
    if req.min_cost.is_some_and(|c| !c.is_finite()) {
        return Err(Status::invalid_argument(
            "min_cost: must be a finite number",
        ));
    }
    let filter = TraceFilter {
        agent: non_empty(req.agent),
        session_id: non_empty(req.session_id),
        user_id: non_empty(req.user_id),
        from_ms: req.from_ms,
        to_ms: req.to_ms,
        status: non_empty(req.status),
        min_latency_ms: req.min_latency_ms,
        min_cost: req.min_cost,
    };
    Ok((filter, limit, non_empty(req.page_token)))
}

/// A trace id as the store keys it: 32 lowercase hex digits.
pub fn trace_id(raw: &str) -> Result<String, Status> {
    let id = raw.to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument("trace_id: must be 32 hex digits"));
    }
    Ok(id)
}

pub fn summary(t: TraceSummary) -> pb::TraceSummary {
    pb::TraceSummary {
        trace_id: t.trace_id,
        name: t.name.unwrap_or_default(),
        agent: t.agent.unwrap_or_default(),
        session_id: t.session_id.unwrap_or_default(),
        user_id: t.user_id.unwrap_or_default(),
        start_ms: t.start_ms,
        end_ms: t.end_ms,
        latency_ms: t.latency_ms,
        observation_count: t.observation_count,
        error_count: t.error_count,
        input_tokens: t.input_tokens,
        output_tokens: t.output_tokens,
        total_tokens: t.total_tokens,
        total_cost_usd: t.total_cost_usd,
    }
}

/// Recursive like the tree itself, which is nested at most
/// `max_tree_depth` levels (see [`store::build_tree`]).
fn observation(o: ObservationNode) -> pb::TraceObservation {
    pb::TraceObservation {
        span_id: o.span_id,
        parent_span_id: o.parent_span_id.unwrap_or_default(),
        name: o.name,
        r#type: o.kind,
        start_ms: o.start_ms,
        end_ms: o.end_ms,
        latency_ms: o.latency_ms,
        status_code: o.status_code,
        status_message: o.status_message.unwrap_or_default(),
        level: o.level,
        model: o.model.unwrap_or_default(),
        input_tokens: o.input_tokens,
        output_tokens: o.output_tokens,
        total_input_tokens: o.total_input_tokens,
        total_output_tokens: o.total_output_tokens,
        input_cost_usd: o.input_cost_usd,
        output_cost_usd: o.output_cost_usd,
        cost_usd: o.cost_usd,
        total_cost_usd: o.total_cost_usd,
        attributes_json: o.attributes.to_string(),
        completion_start_ms: o.completion_start_ms,
        time_to_first_token_ms: o.time_to_first_token_ms,
        input_json: o.input.map(|v| v.to_string()).unwrap_or_default(),
        output_json: o.output.map(|v| v.to_string()).unwrap_or_default(),
        depth_capped: o.depth_capped,
        children: o.children.into_iter().map(observation).collect(),
    }
}

fn score(s: ScoreView) -> pb::TraceScore {
    let value = match s.value {
        serde_json::Value::Number(n) => n.as_f64().map(pb::trace_score::Value::NumericValue),
        serde_json::Value::String(text) => Some(pb::trace_score::Value::StringValue(text)),
        _ => None,
    };
    pb::TraceScore {
        id: s.id,
        trace_id: s.trace_id,
        observation_id: s.observation_id.unwrap_or_default(),
        name: s.name,
        value,
        data_type: s.data_type.to_owned(),
        comment: s.comment.unwrap_or_default(),
        created_at_ms: s.created_at_ms,
    }
}

pub fn tree(t: TraceTree) -> pb::TraceTree {
    pb::TraceTree {
        trace: Some(summary(t.trace)),
        observations: t.observations.into_iter().map(observation).collect(),
        scores: t.scores.into_iter().map(score).collect(),
    }
}

/// The REST parameters of the same query (validated by the same code).
pub fn aggregate_params(req: pb::TraceAggregatesRequest) -> AggregateParams {
    AggregateParams {
        by: non_empty(req.by),
        interval: non_empty(req.interval),
        from_ms: req.from_ms,
        to_ms: req.to_ms,
        agent: non_empty(req.agent),
        model: non_empty(req.model),
    }
}

pub fn aggregates_response(a: aggregates::Aggregates) -> pb::TraceAggregatesResponse {
    pb::TraceAggregatesResponse {
        by: a.by.name().to_owned(),
        unit: a.unit.to_owned(),
        interval_ms: a.interval_ms,
        from_ms: a.from_ms,
        to_ms: a.to_ms,
        buckets: a
            .data
            .into_iter()
            .map(|b| pb::TraceAggregateBucket {
                bucket_start_ms: b.bucket_start_ms,
                agent: b.agent.unwrap_or_default(),
                model: b.model.unwrap_or_default(),
                count: b.count,
                errors: b.errors,
                latency: Some(pb::TraceLatency {
                    p50_ms: b.latency_ms.p50,
                    p95_ms: b.latency_ms.p95,
                    avg_ms: b.latency_ms.avg,
                    max_ms: b.latency_ms.max,
                }),
                input_tokens: b.input_tokens,
                output_tokens: b.output_tokens,
                total_tokens: b.total_tokens,
                cost_usd: b.cost_usd,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl TraceQuery for TraceQueryGrpc {
    async fn list_traces(
        &self,
        request: Request<pb::ListTracesRequest>,
    ) -> Result<Response<pb::ListTracesResponse>, Status> {
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        let (filter, limit, cursor) = list_params(request.into_inner(), &self.limits)?;
        match store::list(&self.db, &tenant, &filter, limit, cursor.as_deref()).await {
            Ok(page) => Ok(Response::new(pb::ListTracesResponse {
                traces: page.data.into_iter().map(summary).collect(),
                next_page_token: page.next_cursor.unwrap_or_default(),
            })),
            Err(QueryError::BadCursor) => Err(Status::invalid_argument("page_token: malformed")),
            Err(error @ (QueryError::BadStatus | QueryError::FilterTooLong(_))) => {
                Err(Status::invalid_argument(error.to_string()))
            }
            Err(QueryError::Db(error)) => Err(unavailable("list traces", &error)),
        }
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::TraceTree>, Status> {
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        let id = trace_id(&request.into_inner().trace_id)?;
        match store::get(&self.db, &tenant, &id, self.limits.max_tree_depth).await {
            Ok(Some(t)) => Ok(Response::new(tree(t))),
            // Another tenant's trace is indistinguishable from a missing one.
            Ok(None) => Err(Status::not_found(format!("trace {id} not found"))),
            Err(error) => Err(unavailable("get trace", &error)),
        }
    }

    async fn aggregates(
        &self,
        request: Request<pb::TraceAggregatesRequest>,
    ) -> Result<Response<pb::TraceAggregatesResponse>, Status> {
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        let query = aggregate_params(request.into_inner())
            .validate(
                store::now_ms(),
                self.limits.aggregate_default_range_ms,
                self.limits.aggregate_max_buckets,
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match aggregates::aggregate(&self.db, &tenant, &query).await {
            Ok(a) => Ok(Response::new(aggregates_response(a))),
            Err(error) => Err(unavailable("aggregate traces", &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits {
            default_page_size: 50,
            max_page_size: 100,
            aggregate_default_range_ms: 1,
            aggregate_max_buckets: 1,
            max_tree_depth: 8,
        }
    }

    #[test]
    fn list_parameters_map_to_the_rest_filter_and_name_the_field() {
        let (filter, limit, cursor) = list_params(
            pb::ListTracesRequest {
                agent: "support".into(),
                min_cost: Some(0.5),
                from_ms: Some(0),
                ..Default::default()
            },
            &limits(),
        )
        .unwrap();
        assert_eq!(limit, 50);
        assert_eq!(cursor, None);
        assert_eq!(filter.agent.as_deref(), Some("support"));
        assert_eq!(filter.session_id, None);
        assert_eq!((filter.from_ms, filter.min_cost), (Some(0), Some(0.5)));
        let too_big = list_params(
            pb::ListTracesRequest {
                page_size: 101,
                ..Default::default()
            },
            &limits(),
        )
        .unwrap_err();
        assert_eq!(too_big.code(), tonic::Code::InvalidArgument);
        assert!(too_big.message().starts_with("page_size:"), "{too_big:?}");
        let nan = list_params(
            pb::ListTracesRequest {
                min_cost: Some(f64::NAN),
                ..Default::default()
            },
            &limits(),
        )
        .unwrap_err();
        assert!(nan.message().starts_with("min_cost:"), "{nan:?}");
        assert!(
            trace_id("xyz")
                .unwrap_err()
                .message()
                .starts_with("trace_id:")
        );
        assert_eq!(
            trace_id("0AF7651916CD43DD8448EB211C80319C").unwrap(),
            "0af7651916cd43dd8448eb211c80319c"
        );
    }
}
