//! Tenant and trace context on internal gRPC calls: the caller puts the
//! tenant in the `agentmesh-tenant` metadata entry, its service token in
//! `agentmesh-service-token` and the W3C context in `traceparent`; the
//! callee honours the tenant only on a call its server layer authenticated
//! ([`crate::service_auth`]), and refuses a call without a valid tenant.

use tonic::{Request, Status};

use crate::service_auth::{ServiceCaller, TOKEN_HEADER};

pub const TENANT_METADATA: &str = "agentmesh-tenant";

/// Who makes a change, for the orchestrator's audit log: the gateway sets
/// it to the token's subject, or `apikey:<id>` for an API key.
pub const ACTOR_METADATA: &str = "agentmesh-actor";

/// The span attribute that names the tenant a span was recorded for: the
/// trace-collector files an internal service's spans under it.
pub use mesh_telemetry::TENANT_ATTRIBUTE;

/// Wraps `message` for an internal call on behalf of `tenant`, with this
/// process's service token and the current trace context.
pub fn outgoing<T>(tenant: &str, message: T) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    let value = tenant
        .parse()
        .map_err(|_| Status::invalid_argument("tenant: not a valid metadata value"))?;
    request.metadata_mut().insert(TENANT_METADATA, value);
    let token = crate::service_auth::token()?;
    request.metadata_mut().insert(
        TOKEN_HEADER,
        token
            .parse()
            .map_err(|_| Status::internal("service token is not a valid metadata value"))?,
    );
    mesh_telemetry::inject_grpc(request.metadata_mut());
    Ok(request)
}

/// The tenant of an incoming internal call: only a call that carried a
/// valid service token may name one.
pub fn tenant_of<T>(request: &Request<T>) -> Result<String, Status> {
    if request.extensions().get::<ServiceCaller>().is_none() {
        return Err(Status::unauthenticated(format!(
            "{TENANT_METADATA} is honoured only on calls with a valid {TOKEN_HEADER}"
        )));
    }
    let tenant = request
        .metadata()
        .get(TENANT_METADATA)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::unauthenticated("missing agentmesh-tenant metadata"))?;
    mesh_bus::names::validate("tenant", tenant)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(tenant.to_owned())
}

/// A span for an incoming call, parented to the caller's trace context and
/// marked with the caller's tenant when the call is authenticated.
pub fn server_span<T>(request: &Request<T>, method: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc",
        rpc.method = method,
        otel.kind = "server",
        agentmesh.tenant = tracing::field::Empty
    );
    if let Ok(tenant) = tenant_of(request) {
        span.record(TENANT_ATTRIBUTE, tenant.as_str());
    }
    mesh_telemetry::set_parent(&span, mesh_telemetry::extract_grpc(request.metadata()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticated<T>(mut request: Request<T>) -> Request<T> {
        request.extensions_mut().insert(ServiceCaller {
            service: "test".to_owned(),
        });
        request
    }

    #[test]
    fn tenant_round_trips_and_bad_tenants_are_refused() {
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert(TENANT_METADATA, "acme".parse().unwrap());
        // Without the mark of the server layer the tenant is not honoured.
        assert_eq!(
            tenant_of(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(tenant_of(&authenticated(request)).unwrap(), "acme");

        let mut bad = Request::new(());
        bad.metadata_mut()
            .insert(TENANT_METADATA, "a.b".parse().unwrap());
        assert_eq!(
            tenant_of(&authenticated(bad)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            tenant_of(&authenticated(Request::new(())))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
