//! OTLP/gRPC (4317): `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//! The tenant comes from the `agentmesh-tenant` metadata of the internal
//! caller; a call without it is UNAUTHENTICATED.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::ingest::{IngestError, Receiver};

#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    pub receiver: Receiver,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        match self.receiver.export(&tenant, request.into_inner()).await {
            Ok(partial_success) => Ok(Response::new(ExportTraceServiceResponse {
                partial_success,
            })),
            Err(error @ IngestError::InvalidTenant(_)) => {
                Err(Status::invalid_argument(error.to_string()))
            }
            Err(IngestError::Unavailable(error)) => {
                tracing::warn!(%error, "cannot enqueue spans");
                Err(Status::unavailable(error.to_string()))
            }
        }
    }
}
