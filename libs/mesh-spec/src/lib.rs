//! The Agent and Tool resources as users write them: Kubernetes-style
//! documents (`apiVersion: agentmesh.dev/v1alpha1`, `kind`, `metadata`,
//! `spec`) in YAML or JSON.
//!
//! This crate is the one place that knows their shape: the typed documents
//! ([`AgentSpecDoc`], [`ToolSpecDoc`]), their conversion to and from the
//! protobuf resources the services exchange, the validation every apply goes
//! through (errors name the field as the user wrote it:
//! `spec.tools[1].spec.config.endpoint: ...`), the typed settings of each
//! tool type, and the JSON Schema published by the API and kept in
//! `libs/mesh-spec/schemas/`.
//!
//! It never reads secrets: a tool's authentication is a reference (an
//! environment variable or a file name) that only the worker resolves.

mod agent;
mod duration;
mod error;
pub mod manifest;
pub mod schema;
mod tool;

pub use agent::{
    AgentSpecDoc, AgentToolDoc, ConcurrencyDoc, MemoryDoc, ModelDoc, ModelRef, ResourcesDoc,
    validate_agent_spec,
};
pub use duration::{format_duration_ms, parse_duration_ms};
pub use error::FieldError;
pub use tool::{
    AgentToolConfig, ApiConfig, ArgumentsValidator, AuthenticationDoc, CODE_PARAMETERS, CodeConfig,
    HumanConfig, IMPLEMENTED_TOOL_TYPES, McpConfig, RetrievalConfig, SecretRef, TOOL_TYPES,
    ToolConfig, ToolSpecDoc, is_default_parameters, validate_tool_name, validate_tool_spec,
};

/// The API version of every resource document.
pub const API_VERSION: &str = "agentmesh.dev/v1alpha1";

/// Bounds on what a spec may declare. Every field is a limit an operator
/// can raise or lower (the orchestrator reads them from its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecLimits {
    pub max_tools: usize,
    pub max_steps: u32,
    pub max_tool_description_bytes: usize,
    /// Size of a tool's parameters schema or config, as JSON text.
    pub max_tool_document_bytes: usize,
    pub max_tool_timeout_ms: u64,
    pub max_tool_retries: u32,
    pub max_memory_history: u32,
    pub max_memory_ttl_seconds: u64,
    pub max_fallback_models: usize,
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self {
            max_tools: 64,
            max_steps: 100,
            max_tool_description_bytes: 4 * 1024,
            max_tool_document_bytes: 64 * 1024,
            max_tool_timeout_ms: 15 * 60 * 1000,
            max_tool_retries: 10,
            max_memory_history: 1000,
            max_memory_ttl_seconds: 90 * 24 * 3600,
            max_fallback_models: 8,
        }
    }
}
