//! Tenant and trace context on internal gRPC calls: the caller puts the
//! tenant in the `agentmesh-tenant` metadata entry and the W3C context in
//! `traceparent`; the callee refuses a call without a valid tenant.

use tonic::{Request, Status};

pub const TENANT_METADATA: &str = "agentmesh-tenant";

/// Wraps `message` for an internal call on behalf of `tenant`, with the
/// current trace context.
pub fn outgoing<T>(tenant: &str, message: T) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value = tenant
        .parse()
        .map_err(|_| Status::invalid_argument("tenant: not a valid metadata value"))?;
    request.metadata_mut().insert(TENANT_METADATA, value);
    mesh_telemetry::inject_grpc(request.metadata_mut());
    Ok(request)
}

/// The tenant of an incoming internal call.
pub fn tenant_of<T>(request: &Request<T>) -> Result<String, Status> {
    let tenant = request
        .metadata()
        .get(TENANT_METADATA)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing agentmesh-tenant metadata"))?;
    mesh_bus::names::validate("tenant", tenant)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(tenant.to_owned())
}

/// A span for an incoming call, parented to the caller's trace context.
pub fn server_span<T>(request: &Request<T>, method: &'static str) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc.method = method, otel.kind = "server");
    mesh_telemetry::set_parent(&span, mesh_telemetry::extract_grpc(request.metadata()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_round_trips_and_bad_tenants_are_refused() {
        let request = outgoing("acme", ()).unwrap();
        assert_eq!(tenant_of(&request).unwrap(), "acme");

        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert(TENANT_METADATA, "a.b".parse().unwrap());
        assert_eq!(
            tenant_of(&bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            tenant_of(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
