//! Service authentication at the edges of a service: the tower layer every
//! internal gRPC server runs behind, the axum middleware of the two
//! internal HTTP faces that trust an `agentmesh-tenant` header (the
//! router's OpenAI face, the collector's OTLP/HTTP and query face), and the
//! token internal clients attach (see [`crate::grpc::outgoing`]).
//!
//! The credential is a short-lived token signed with the mesh key
//! ([`mesh_auth::service`] says why one HS256 key, and which variables
//! configure it), sent in the `agentmesh-service-token` header. A call
//! that passes is marked with a [`ServiceCaller`] extension; the tenant
//! metadata is honoured only on a call carrying that mark, so a server
//! that somehow lacked the layer would still refuse a bare tenant.
//!
//! What stays open, and why: gRPC health (`grpc.health.v1.Health`, probed by
//! kubelets and load balancers that hold no key) and the admin port
//! (`/healthz`, `/readyz`, `/metrics`, served by [`crate::admin`], outside
//! these layers). This module must never log a token.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::response::IntoResponse as _;
use mesh_auth::AuthError;
use mesh_auth::service::{SERVICE_TOKEN_HEADER, ServiceVerifier};

use crate::{ConfigError, SharedConfig};

pub use mesh_auth::service::SERVICE_TOKEN_HEADER as TOKEN_HEADER;

/// gRPC paths served without a token.
pub const UNAUTHENTICATED_GRPC_PREFIXES: &[&str] = &["/grpc.health.v1.Health/"];

/// The verified caller of an internal request (an extension on the
/// request, set by the layers here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceCaller {
    /// The `sub` of its token.
    pub service: String,
}

/// Installs `service`'s credential for this process (what
/// [`crate::grpc::outgoing`] and [`token`] sign with) and returns the
/// verifier its servers check callers with. Fails when no key is
/// configured: internal calls are never unauthenticated.
pub fn init(shared: &SharedConfig, service: &str) -> Result<ServiceVerifier, ConfigError> {
    let config = shared
        .service_auth
        .as_ref()
        .ok_or_else(|| ConfigError::Missing {
            var: format!(
                "{} (or {}; `agentmesh up` generates one)",
                mesh_auth::service::KEY_VAR,
                mesh_auth::service::KEY_FILE_VAR
            ),
        })?;
    mesh_auth::service::install(config.credential(service));
    Ok(config.verifier())
}

/// A fresh token of this process's credential, for an internal HTTP call
/// (put it in [`TOKEN_HEADER`]).
pub fn token() -> Result<String, ServiceAuthError> {
    mesh_auth::service::installed()
        .ok_or(ServiceAuthError::NotInstalled)?
        .token()
        .map_err(ServiceAuthError::Sign)
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceAuthError {
    #[error("no service credential in this process (service_auth::init was not called)")]
    NotInstalled,
    #[error("sign service token: {0}")]
    Sign(AuthError),
}

impl From<ServiceAuthError> for tonic::Status {
    fn from(error: ServiceAuthError) -> Self {
        tonic::Status::internal(error.to_string())
    }
}

/// The caller named by the token in `headers`, or why there is none.
fn authenticate(
    verifier: Option<&ServiceVerifier>,
    headers: &http::HeaderMap,
) -> Result<ServiceCaller, String> {
    let Some(verifier) = verifier else {
        return Err("service authentication is not configured on this server".to_owned());
    };
    let value = match headers.get(SERVICE_TOKEN_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => return Err(format!("{SERVICE_TOKEN_HEADER}: not a valid header value")),
    };
    match verifier.verify_header(value) {
        Ok(service) => Ok(ServiceCaller { service }),
        Err(AuthError::MissingToken) => Err(format!(
            "missing {SERVICE_TOKEN_HEADER}: internal calls need a service token"
        )),
        Err(error) => Err(format!("{SERVICE_TOKEN_HEADER}: {error}")),
    }
}

// === impl GrpcAuthLayer ===

#[derive(Debug, Clone)]
enum Mode {
    /// Every call but health needs a valid token.
    Internal(Option<ServiceVerifier>),
    /// The gateway's public face: callers bring user credentials, checked
    /// by its handlers.
    Public,
}

/// The layer of a gRPC server: see the module docs.
#[derive(Debug, Clone)]
pub struct GrpcAuthLayer {
    mode: Mode,
}

impl GrpcAuthLayer {
    /// Internal server; without a verifier it refuses every call but
    /// health (fail closed).
    pub fn internal(verifier: Option<ServiceVerifier>) -> Self {
        Self {
            mode: Mode::Internal(verifier),
        }
    }

    pub fn public() -> Self {
        Self { mode: Mode::Public }
    }
}

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth {
            inner,
            mode: self.mode.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    mode: Mode,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Mode::Internal(verifier) = &self.mode else {
            return Box::pin(self.inner.call(request));
        };
        let path = request.uri().path();
        if UNAUTHENTICATED_GRPC_PREFIXES
            .iter()
            .any(|open| path.starts_with(open))
        {
            return Box::pin(self.inner.call(request));
        }
        match authenticate(verifier.as_ref(), request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(message) => {
                tracing::debug!(path, reason = %message, "internal call refused");
                let response = tonic::Status::unauthenticated(message).into_http();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

// === HTTP faces ===

/// Guards an internal HTTP face whose handlers trust `agentmesh-tenant`:
/// a request naming a tenant must carry a valid service token, a request
/// with a token is refused when the token is bad, and a valid one marks
/// the request with [`ServiceCaller`]. A request with neither passes
/// (the router then serves its default tenant; the collector's handlers
/// answer 401 for a missing tenant). `open_paths` are left alone entirely
/// (the collector's Langfuse route authenticates with its own Basic auth).
pub fn guard_tenant_header(
    router: axum::Router,
    verifier: ServiceVerifier,
    open_paths: &'static [&'static str],
) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |mut request: axum::extract::Request, next: axum::middleware::Next| {
            let verifier = verifier.clone();
            async move {
                if open_paths.contains(&request.uri().path()) {
                    return next.run(request).await;
                }
                let has_token = request.headers().contains_key(SERVICE_TOKEN_HEADER);
                let has_tenant = request.headers().contains_key(crate::grpc::TENANT_METADATA);
                if !has_token && !has_tenant {
                    return next.run(request).await;
                }
                match authenticate(Some(&verifier), request.headers()) {
                    Ok(caller) => {
                        request.extensions_mut().insert(caller);
                        next.run(request).await
                    }
                    Err(message) => {
                        let message = if has_token {
                            message
                        } else {
                            format!(
                                "{}: honoured only with a valid {SERVICE_TOKEN_HEADER} ({message})",
                                crate::grpc::TENANT_METADATA
                            )
                        };
                        unauthenticated(message)
                    }
                }
            }
        },
    ))
}

/// 401 with an OpenAI-style error body (what both faces' clients parse).
fn unauthenticated(message: String) -> axum::response::Response {
    (
        http::StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": {"message": message, "type": "unauthenticated", "code": "unauthenticated"}
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_auth::service::{ServiceAuthConfig, ServiceKey};
    use tower::{Layer as _, Service as _, ServiceExt as _};

    fn config() -> ServiceAuthConfig {
        ServiceAuthConfig::new(ServiceKey::new("runtime-unit-test-key-0123456789abcdef").unwrap())
    }

    /// An inner service that answers 200 with the caller it saw.
    fn echo() -> impl tower::Service<
        http::Request<()>,
        Response = http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future = std::future::Ready<
            Result<http::Response<tonic::body::Body>, std::convert::Infallible>,
        >,
    > + Clone {
        tower::service_fn(|request: http::Request<()>| {
            let caller = request
                .extensions()
                .get::<ServiceCaller>()
                .map(|c| c.service.clone())
                .unwrap_or_default();
            std::future::ready(Ok(http::Response::builder()
                .header("caller", caller)
                .body(tonic::body::Body::default())
                .unwrap()))
        })
    }

    async fn call(
        layer: &GrpcAuthLayer,
        path: &str,
        token: Option<&str>,
    ) -> http::Response<tonic::body::Body> {
        let mut request = http::Request::builder().uri(path);
        if let Some(token) = token {
            request = request.header(SERVICE_TOKEN_HEADER, token);
        }
        let mut service = layer.layer(echo());
        service.ready().await.unwrap();
        service.call(request.body(()).unwrap()).await.unwrap()
    }

    fn grpc_code(response: &http::Response<tonic::body::Body>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn internal_grpc_needs_a_valid_token_except_health() {
        let config = config();
        let layer = GrpcAuthLayer::internal(Some(config.verifier()));
        let token = config.credential("gateway").token().unwrap();

        let ok = call(
            &layer,
            "/agentmesh.v1.ControlPlane/SubmitTask",
            Some(&token),
        )
        .await;
        assert_eq!(ok.headers()["caller"], "gateway");

        // 16 is UNAUTHENTICATED.
        let missing = call(&layer, "/agentmesh.v1.ControlPlane/SubmitTask", None).await;
        assert_eq!(grpc_code(&missing), Some("16"));
        let bad = call(
            &layer,
            "/agentmesh.v1.ControlPlane/SubmitTask",
            Some("x.y.z"),
        )
        .await;
        assert_eq!(grpc_code(&bad), Some("16"));

        let health = call(&layer, "/grpc.health.v1.Health/Check", None).await;
        assert_eq!(grpc_code(&health), None);

        let unconfigured = GrpcAuthLayer::internal(None);
        let refused = call(
            &unconfigured,
            "/agentmesh.v1.ControlPlane/SubmitTask",
            Some(&token),
        )
        .await;
        assert_eq!(grpc_code(&refused), Some("16"));

        let public = call(
            &GrpcAuthLayer::public(),
            "/agentmesh.v1.TaskService/Submit",
            None,
        )
        .await;
        assert_eq!(grpc_code(&public), None);
    }
}
