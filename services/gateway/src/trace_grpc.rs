//! Traces for public gRPC callers: `agentmesh.v1.TraceQuery` (ListTraces,
//! GetTrace, Aggregates), the same messages as the trace-collector's
//! internal query API, proxied to it on behalf of the caller's tenant,
//! which comes from the token and nowhere else. Roles are those of the REST
//! routes (`viewer` and up); the collector's answers, errors included, are
//! relayed as they are (its INVALID_ARGUMENT messages name the field).

use mesh_proto as pb;
use mesh_proto::trace_query_client::TraceQueryClient;
use mesh_proto::trace_query_server::TraceQuery;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::Operation;
use crate::state::AppState;

/// A lazy channel to the trace-collector's gRPC port
/// (`AGENTMESH_GATEWAY_TRACES_GRPC_URL`), over mesh TLS when `tls` is set.
pub fn client(
    url: &str,
    tls: Option<&mesh_runtime::tls::MeshTls>,
) -> Result<TraceQueryClient<Channel>, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = mesh_runtime::tls::connect_lazy(endpoint, tls);
    // A trace tree of many observations is far above tonic's 4 MiB default.
    Ok(TraceQueryClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

pub struct PublicTraces {
    pub state: AppState,
    pub collector: TraceQueryClient<Channel>,
}

impl PublicTraces {
    /// The caller's tenant, once its token allows `op`; then the request
    /// to the collector for that tenant, bounded by the upstream timeout.
    fn upstream<T>(&self, request: Request<T>, op: Operation) -> Result<Request<T>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let principal = self
            .state
            .authorize(header, op)
            .map_err(|e| e.to_status())?;
        let mut upstream = mesh_runtime::grpc::outgoing(&principal.tenant, request.into_inner())?;
        upstream.set_timeout(self.state.config.upstream_timeout);
        Ok(upstream)
    }
}

fn relay(status: Status) -> Status {
    if matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    ) {
        tracing::warn!(code = ?status.code(), message = %status.message(), "trace-collector call failed");
        return Status::unavailable("the trace store is unavailable");
    }
    status
}

#[tonic::async_trait]
impl TraceQuery for PublicTraces {
    async fn list_traces(
        &self,
        request: Request<pb::ListTracesRequest>,
    ) -> Result<Response<pb::ListTracesResponse>, Status> {
        let upstream = self.upstream(request, Operation::ListTraces)?;
        self.collector
            .clone()
            .list_traces(upstream)
            .await
            .map_err(relay)
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::TraceTree>, Status> {
        let upstream = self.upstream(request, Operation::GetTrace)?;
        self.collector
            .clone()
            .get_trace(upstream)
            .await
            .map_err(relay)
    }

    async fn aggregates(
        &self,
        request: Request<pb::TraceAggregatesRequest>,
    ) -> Result<Response<pb::TraceAggregatesResponse>, Status> {
        let upstream = self.upstream(request, Operation::TraceAggregates)?;
        self.collector
            .clone()
            .aggregates(upstream)
            .await
            .map_err(relay)
    }
}
