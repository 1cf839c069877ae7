//! The admin HTTP face of a service: `/healthz` (alive), `/readyz` (its
//! dependencies answer) and `/metrics` (Prometheus text). Readiness also
//! drives the gRPC health service, so both faces agree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use mesh_telemetry::Registry;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Starts NOT ready; a service flips it once NATS, its database and its
/// other dependencies answer, and back while it drains.
#[derive(Clone)]
pub struct Readiness {
    ready: Arc<AtomicBool>,
    health: HealthReporter,
    service: &'static str,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness")
            .field("service", &self.service)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Readiness {
    /// `service` is the fully qualified gRPC service name reported by gRPC
    /// health (for example `agentmesh.v1.ControlPlane`).
    pub fn new(health: HealthReporter, service: &'static str) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            health,
            service,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub async fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health.set_service_status(self.service, status).await;
        // The empty name is the server as a whole.
        self.health.set_service_status("", status).await;
    }
}

#[derive(Clone)]
struct AdminState {
    readiness: Readiness,
    registry: Arc<Registry>,
}

pub fn admin_router(readiness: Readiness, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            readiness,
            registry,
        })
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    match mesh_telemetry::encode_metrics(&state.registry) {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "metrics encoding failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Binds `addr` and serves the admin router under `limits` until `shutdown`. Returns the
/// bound address (port 0 picks a free one) and the serving future.
pub async fn serve_admin(
    addr: SocketAddr,
    readiness: Readiness,
    registry: Arc<Registry>,
    limits: crate::server::ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = admin_router(readiness, registry);
    Ok((
        bound,
        crate::server::serve_http(listener, app, limits, shutdown),
    ))
}
