//! The cross-service test suite, built as ONE test binary.
//!
//! Every scenario lives in its own module below; they share the harness in
//! `mesh-integration`'s library (private NATS servers, fresh PostgreSQL
//! databases, Redis). One binary instead of one per file saves linking the
//! whole mesh two dozen times, which dominates a cold CI run on two cores.
//! Run one module with `cargo test -p mesh-integration --test mesh -- <module>::`.

mod agent_code;
mod agent_loop;
mod agent_mcp;
mod agents_list;
mod api_keys;
mod auth_jwks;
mod autoscale;
mod bad_input;
mod bus;
mod cli_views;
mod console;
mod failures;
mod fairness;
mod gateway_trace_keys;
mod gateway_traces;
mod health;
mod hostile_input;
mod isolation;
mod local_model;
mod mtls;
mod openapi_fuzz;
mod python_sdk;
mod rate_limit;
mod retrieval;
mod retrieval_milvus;
mod roles;
mod router;
mod router_client;
mod router_pools;
mod router_redis;
mod secrets;
mod service_auth;
mod task_path;
mod trace_context;
mod traces;
mod traces_langfuse;
mod traces_langfuse_sdk;
