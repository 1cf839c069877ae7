//! What every agentmesh service shares at runtime: configuration read from
//! an environment map, the admin HTTP server (`/healthz`, `/readyz`,
//! `/metrics`) with gRPC health kept in step, the error-code mapping to gRPC
//! and HTTP, tenant metadata on internal gRPC calls, optional mutual TLS on
//! internal gRPC, and shutdown signals.
//!
//! Nothing here knows about a particular service.

pub mod admin;
pub mod env;
pub mod error;
pub mod frame;
pub mod grpc;
pub mod queue_service;
pub mod server;
pub mod service_auth;
pub mod shutdown;
pub mod supervisor;
pub mod tls;

pub use admin::{Readiness, serve_admin};
pub use env::{ConfigError, Env, SharedConfig};
pub use error::ErrorCode;
pub use frame::ServiceFrame;
pub use server::ServerLimits;
pub use supervisor::{Stopped, Supervisor};
