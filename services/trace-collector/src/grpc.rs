//! OTLP/gRPC (4317): `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//! Every call carries a service token (the server's layer refuses others).
//! The tenant comes from the `agentmesh-tenant` metadata of the internal
//! caller, or, when it names none (a service's own exporter), from each
//! span's `agentmesh.tenant` attribute ([`crate::span_tenant`]).

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
        let named = request
            .metadata()
            .contains_key(mesh_runtime::grpc::TENANT_METADATA);
        let authenticated = request
            .extensions()
            .get::<mesh_runtime::service_auth::ServiceCaller>()
            .is_some();
        let exported = if !named && authenticated {
            self.receiver
                .export_by_span_tenant(request.into_inner())
                .await
        } else {
            let tenant = mesh_runtime::grpc::tenant_of(&request)?;
            self.receiver.export(&tenant, request.into_inner()).await
        };
        match exported {
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
