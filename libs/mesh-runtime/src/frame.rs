//! The frame every service starts with: a [`Supervisor`] for its
//! components, [`Readiness`] that drives both `/readyz` and gRPC health,
//! the admin listener (`/healthz`, `/readyz`, `/metrics`), and helpers to
//! serve gRPC and HTTP until the service stops, every listener under the
//! service's [`ServerLimits`]. A service's `start` builds the frame, adds its
//! own components, then calls [`ServiceFrame::ready`].

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_telemetry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::server::{HealthReporter, HealthService};

use crate::server::ServerLimits;
use crate::service_auth::GrpcAuthLayer;
use crate::{Readiness, Stopped, Supervisor};

/// The gRPC health service (`grpc.health.v1.Health`).
pub type HealthGrpc = tonic_health::pb::health_server::HealthServer<HealthService>;

/// A gRPC server of the mesh: tonic's router behind the service
/// authentication layer.
pub type GrpcRouter = tonic::transport::server::Router<
    tower::layer::util::Stack<GrpcAuthLayer, tower::layer::util::Identity>,
>;

#[derive(Debug)]
pub struct ServiceFrame {
    supervisor: Supervisor,
    readiness: Readiness,
    reporter: HealthReporter,
    /// Connections that must be up for the service to be ready.
    required: Vec<mesh_bus::Bus>,
    /// What [`ServiceFrame::grpc`] checks callers with.
    service_verifier: Option<mesh_auth::service::ServiceVerifier>,
    /// Mutual TLS of [`ServiceFrame::spawn_grpc`], when configured.
    tls: Option<crate::tls::MeshTls>,
    /// What every listener of the service holds its clients to.
    limits: ServerLimits,
    pub admin_addr: SocketAddr,
}

/// How often readiness re-checks the required connections.
const READINESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl ServiceFrame {
    /// Binds the admin listener and starts serving it; the service is NOT
    /// ready until [`ServiceFrame::ready`].
    pub async fn start(
        grpc_service: &'static str,
        admin_listen: SocketAddr,
        limits: ServerLimits,
        registry: Registry,
        shutdown: &CancellationToken,
    ) -> std::io::Result<Self> {
        let reporter = HealthReporter::new();
        let readiness = Readiness::new(reporter.clone(), grpc_service);
        let supervisor = Supervisor::new(shutdown);
        let (admin_addr, admin) = crate::serve_admin(
            admin_listen,
            readiness.clone(),
            Arc::new(registry),
            limits.clone(),
            supervisor.stop(),
        )
        .await?;
        supervisor.spawn("admin", admin);
        Ok(Self {
            supervisor,
            readiness,
            reporter,
            required: Vec::new(),
            service_verifier: None,
            tls: None,
            limits,
            admin_addr,
        })
    }

    /// The token components stop on.
    pub fn stop(&self) -> CancellationToken {
        self.supervisor.stop()
    }

    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// The limits the service's listeners apply.
    pub fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    /// Sets up service authentication for `service` (see
    /// [`crate::service_auth::init`]): its outgoing calls carry its token
    /// from now on, [`ServiceFrame::grpc`] checks callers, and
    /// [`ServiceFrame::spawn_grpc`] requires mutual TLS when `shared`
    /// configures it. Returns the verifier, for an internal HTTP face.
    pub fn service_auth(
        &mut self,
        shared: &crate::SharedConfig,
        service: &str,
    ) -> Result<mesh_auth::service::ServiceVerifier, crate::ConfigError> {
        let verifier = crate::service_auth::init(shared, service)?;
        self.service_verifier = Some(verifier.clone());
        self.tls = shared.tls.clone();
        Ok(verifier)
    }

    /// An internal gRPC server builder with the health service already
    /// added: every call but health needs a service token (none is
    /// accepted unless [`ServiceFrame::service_auth`] ran first).
    pub fn grpc(&self) -> GrpcRouter {
        self.limits
            .grpc()
            .layer(GrpcAuthLayer::internal(self.service_verifier.clone()))
            .add_service(self.health())
    }

    /// The gateway's public gRPC server: callers bring user credentials,
    /// which its handlers check.
    pub fn public_grpc(&self) -> GrpcRouter {
        self.limits
            .grpc()
            .layer(GrpcAuthLayer::public())
            .add_service(self.health())
    }

    fn health(&self) -> HealthGrpc {
        HealthGrpc::new(HealthService::from_health_reporter(self.reporter.clone()))
    }

    /// Serves `router` on `listener` until the service stops (connections
    /// capped and given the header deadline by
    /// [`crate::server::grpc_incoming`]).
    /// Internal: over mutual TLS when configured (a client without a
    /// certificate of the mesh CA never reaches HTTP/2), plain otherwise.
    pub fn spawn_grpc(&self, listener: TcpListener, router: GrpcRouter) {
        let Some(tls) = &self.tls else {
            return self.spawn_public_grpc(listener, router);
        };
        let incoming = crate::server::grpc_incoming(listener, &self.limits, self.stop());
        let serve = router
            .serve_with_incoming_shutdown(tls.accept(incoming), self.stop().cancelled_owned());
        self.supervisor.spawn("grpc", serve);
    }

    /// [`ServiceFrame::spawn_grpc`] without mesh TLS whatever the
    /// configuration: the gateway's public face, whose callers are users
    /// holding no mesh certificate (public TLS ends at the ingress).
    pub fn spawn_public_grpc(&self, listener: TcpListener, router: GrpcRouter) {
        let incoming = crate::server::grpc_incoming(listener, &self.limits, self.stop());
        let serve = router.serve_with_incoming_shutdown(incoming, self.stop().cancelled_owned());
        self.supervisor.spawn("grpc", serve);
    }

    /// Serves an axum app on `listener` until the service stops.
    pub fn spawn_http(&self, listener: TcpListener, app: axum::Router) {
        let serve = crate::server::serve_http(listener, app, self.limits.clone(), self.stop());
        self.supervisor.spawn("http", serve);
    }

    /// The service is ready only while this NATS connection is up: a
    /// replica that lost the bus leaves the load balancer until it is back.
    pub fn require_bus(&mut self, bus: &mesh_bus::Bus) {
        self.required.push(bus.clone());
    }

    /// Marks the service ready (and unready again when it starts to stop,
    /// or while a required connection is down); returns the handle to wait
    /// on.
    pub async fn ready(self) -> Stopped {
        self.readiness.set(true).await;
        if !self.required.is_empty() {
            let (readiness, required, stop) = (
                self.readiness.clone(),
                self.required,
                self.supervisor.stop(),
            );
            self.supervisor.spawn("readiness", async move {
                let mut tick = tokio::time::interval(READINESS_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return Ok::<(), std::convert::Infallible>(()),
                        _ = tick.tick() => {}
                    }
                    let up = required.iter().all(mesh_bus::Bus::is_connected);
                    if up != readiness.is_ready() && !stop.is_cancelled() {
                        tracing::warn!(ready = up, "readiness changed with the bus connection");
                        readiness.set(up).await;
                    }
                }
            });
        }
        self.supervisor.unready_on_stop(self.readiness);
        self.supervisor.finish()
    }
}

/// Binds `addr`, naming what it is for in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {what} listener on {addr}: {e}")))
}
