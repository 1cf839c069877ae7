//! Test harness for cross-service tests and benchmarks: a private NATS
//! JetStream server (2.10+) on a free port with a temporary store, a fresh
//! PostgreSQL database per run, and the services started in-process on
//! free ports, each with its own shutdown token so a test can stop, kill
//! or restart one of them.

pub mod client;
pub mod infra;
pub mod mesh;
pub mod milvus;
pub mod retrieval;
pub mod tool_server;

pub use client::RestClient;
pub use infra::{Nats, fresh_postgres};
pub use mesh::{IsolatedWorker, Mesh, MeshOptions, WorkerReplicas, postgres_mesh};

/// The secret tests sign tokens with.
pub const TEST_JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
