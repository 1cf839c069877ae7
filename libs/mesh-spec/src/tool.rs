//! The Tool resource: what a tool is (`type` and its typed `config`), what
//! the model sees (`description`, `parameters` as JSON Schema), and how it is
//! called (`timeout`, `retries`, `authentication`).

use std::collections::BTreeMap;

use mesh_proto::{ToolAuthentication, ToolSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SpecLimits;
use crate::duration::{format_duration_ms, parse_duration_ms};
use crate::error::{FieldError, from_serde, join};

/// Every tool type the resource model knows.
pub const TOOL_TYPES: &[&str] = &["api", "retrieval", "code", "human", "mcp", "agent"];

/// The tool types this release's worker can run. Applying a tool of another
/// known type is refused with a clear error rather than accepted and failed
/// later, at the first call.
pub const IMPLEMENTED_TOOL_TYPES: &[&str] = &["api", "code", "human", "mcp", "retrieval", "agent"];

/// `spec` of a Tool resource, and of an agent's inline tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ToolSpecDoc {
    /// One of `api`, `retrieval`, `code`, `human`, `mcp`, `agent`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the model reads to decide when to call the tool.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments (an object schema). Arguments are
    /// validated against it before the tool is called.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    /// The type's settings (see `ApiConfig`, ...).
    #[serde(default = "empty_object")]
    pub config: Value,
    /// Per attempt, e.g. `10s`; the worker's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Extra attempts after a 5xx or a timeout, with jittered backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<AuthenticationDoc>,
}

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// How the worker authenticates to the tool. Only the reference is stored;
/// the worker reads the secret when it calls the tool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthenticationDoc {
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer_token: SecretRef,
}

/// Where the worker finds a secret: exactly one of `env` and `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// `NAME` of a tool secret: the worker's variable `AGENTMESH_TOOL_SECRET_<NAME>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file on the worker under its tool secrets folder for this tenant (a mounted Secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `config` of an `api` tool: an HTTP call whose JSON body is the validated
/// arguments (or, for GET and DELETE, whose query string is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// `http://` or `https://` URL.
    pub endpoint: String,
    /// GET, POST, PUT, PATCH or DELETE (default POST).
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers (not `Authorization`: use `authentication`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Responses larger than this are a tool error (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<u64>,
}

fn default_method() -> String {
    "POST".to_owned()
}

/// `config` of a `code` tool: Python 3 source that the model writes, run
/// by the worker in a sandbox (bubblewrap: no network, the system's
/// programs read-only, a private writable `/work`, its own pid namespace;
/// rlimits on CPU time, memory, processes and file size; the tool's
/// `timeout` is the wall time). The model calls the tool with
/// `{"code": "<python source>"}`; what the program prints on stdout (and
/// stderr, marked) is the result, and a program that fails or hits a limit
/// is a tool error that says which. Leave `parameters` out: the worker
/// offers the `code` argument itself (`CODE_PARAMETERS`); a `parameters`
/// schema, when given, must declare `code` as a string. Every limit below
/// is capped by the worker's maximum (`AGENTMESH_WORKER_CODE_MAX_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CodeConfig {
    /// `python` (the only language).
    #[serde(default = "default_language")]
    pub language: String,
    /// CPU seconds of each process of the program (default 5); past it the
    /// process is stopped (SIGXCPU, then SIGKILL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<u32>,
    /// Address space of each process, in MiB (default 256, at least 32): a
    /// larger allocation fails inside the program (`MemoryError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    /// Processes (and threads) the program may run at once, itself
    /// included (default 16): `fork` fails past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
}

/// The arguments of every `code` tool, as the model is offered them.
pub const CODE_PARAMETERS: &str = r#"{"type":"object","properties":{"code":{"type":"string","description":"Python 3 source to run. Print the result to stdout. No network; only /work and /tmp are writable; CPU, memory, process and output limits apply."}},"required":["code"],"additionalProperties":false}"#;

/// Whether a `parameters` schema is what the spec gets when it sets none.
pub fn is_default_parameters(parameters_json: &str) -> bool {
    let text = parameters_json.trim();
    text.is_empty() || serde_json::from_str::<Value>(text).is_ok_and(|v| v == empty_object_schema())
}

fn default_language() -> String {
    "python".to_owned()
}

/// `config` of a `human` tool: the task waits for an approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HumanConfig {
    /// How long to wait, e.g. `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// `reject` (default) or `approve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
}

/// `config` of an `mcp` tool: one tool of an MCP server, reached over
/// Streamable HTTP. A task opens one MCP session for the tool (initialize,
/// `tools/list`) and calls the tool by name (`tools/call`, with the call's
/// idempotency key in `_meta`). The model sees this Tool's `description`
/// and `parameters`; leave `parameters` out to pass the arguments through
/// for the server to check against its own input schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct McpConfig {
    /// The server's MCP endpoint, `http://` or `https://` (e.g.
    /// `http://tools:8000/mcp`).
    pub url: String,
    /// The tool's name on the server (default: this Tool's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// `config` of an `agent` tool: another agent of the tenant as a sub-task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentToolConfig {
    pub agent: String,
}

/// `config` of a `retrieval` tool: search a collection of the tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrievalConfig {
    pub collection: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// `vector`, `keyword` or `hybrid` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A tool's config, typed by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolConfig {
    Api(ApiConfig),
    Code(CodeConfig),
    Human(HumanConfig),
    Mcp(McpConfig),
    Agent(AgentToolConfig),
    Retrieval(RetrievalConfig),
}

impl ToolConfig {
    /// Parses `config_json` for `kind`; errors name `config.<field>`.
    pub fn parse(kind: &str, config_json: &str) -> Result<Self, FieldError> {
        let text = if config_json.trim().is_empty() {
            "{}"
        } else {
            config_json
        };
        fn typed<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, FieldError> {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| from_serde("config", e))
        }
        Ok(match kind {
            "api" => Self::Api(typed(text)?),
            "code" => Self::Code(typed(text)?),
            "human" => Self::Human(typed(text)?),
            "mcp" => Self::Mcp(typed(text)?),
            "agent" => Self::Agent(typed(text)?),
            "retrieval" => Self::Retrieval(typed(text)?),
            other => {
                return Err(FieldError::new(
                    "type",
                    format!(
                        "{other:?} is not a tool type (one of {})",
                        TOOL_TYPES.join(", ")
                    ),
                ));
            }
        })
    }

    /// The config with its defaults filled in, as stored and shown.
    pub fn to_json(&self) -> String {
        let value = match self {
            Self::Api(c) => serde_json::to_string(c),
            Self::Code(c) => serde_json::to_string(c),
            Self::Human(c) => serde_json::to_string(c),
            Self::Mcp(c) => serde_json::to_string(c),
            Self::Agent(c) => serde_json::to_string(c),
            Self::Retrieval(c) => serde_json::to_string(c),
        };
        value.unwrap_or_default()
    }

    /// The JSON Schema of each type's config, for the published schema.
    pub fn schemas() -> Vec<(&'static str, Value)> {
        fn of<T: JsonSchema>() -> Value {
            serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
        }
        vec![
            ("api", of::<ApiConfig>()),
            ("code", of::<CodeConfig>()),
            ("human", of::<HumanConfig>()),
            ("mcp", of::<McpConfig>()),
            ("agent", of::<AgentToolConfig>()),
            ("retrieval", of::<RetrievalConfig>()),
        ]
    }
}

// === conversion ===

impl ToolSpecDoc {
    /// The protobuf spec; fails only on a malformed `timeout`.
    pub fn to_proto(&self) -> Result<ToolSpec, FieldError> {
        let timeout_ms = match &self.timeout {
            None => 0,
            Some(text) => parse_duration_ms(text).ok_or_else(|| {
                FieldError::new(
                    "timeout",
                    format!("{text:?} is not a duration like 10s or 500ms"),
                )
            })?,
        };
        Ok(ToolSpec {
            r#type: self.kind.clone(),
            description: self.description.clone(),
            parameters_json: self.parameters.to_string(),
            config_json: self.config.to_string(),
            timeout_ms,
            retries: self.retries.unwrap_or(0),
            authentication: self.authentication.as_ref().map(|a| ToolAuthentication {
                bearer_env: a.bearer_token.env.clone().unwrap_or_default(),
                bearer_file: a.bearer_token.file.clone().unwrap_or_default(),
            }),
        })
    }

    pub fn from_proto(spec: &ToolSpec) -> Self {
        let json = |text: &str, empty: fn() -> Value| {
            if text.trim().is_empty() {
                empty()
            } else {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
            }
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            kind: spec.r#type.clone(),
            description: spec.description.clone(),
            parameters: json(&spec.parameters_json, empty_object_schema),
            config: json(&spec.config_json, empty_object),
            timeout: (spec.timeout_ms > 0).then(|| format_duration_ms(spec.timeout_ms)),
            retries: (spec.retries > 0).then_some(spec.retries),
            authentication: spec.authentication.as_ref().map(|a| AuthenticationDoc {
                bearer_token: SecretRef {
                    env: non_empty(&a.bearer_env),
                    file: non_empty(&a.bearer_file),
                },
            }),
        }
    }
}

// === validation ===

/// Tool names are OpenAI function names: `[A-Za-z0-9_-]{1,64}`.
pub fn validate_tool_name(path: &str, name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            path,
            format!("{name:?} must be 1 to 64 letters, digits, '_' or '-'"),
        ))
    }
}

/// Checks a tool spec; errors are under `path` (`spec` for a Tool resource,
/// `spec.tools[2].spec` for an inline tool).
pub fn validate_tool_spec(
    path: &str,
    spec: &ToolSpec,
    limits: &SpecLimits,
) -> Result<ToolConfig, FieldError> {
    validate_tool_spec_inner(spec, limits).map_err(|e| e.under(path))
}

fn validate_tool_spec_inner(
    spec: &ToolSpec,
    limits: &SpecLimits,
) -> Result<ToolConfig, FieldError> {
    if !TOOL_TYPES.contains(&spec.r#type.as_str()) {
        return Err(FieldError::new(
            "type",
            format!(
                "{:?} is not a tool type (one of {})",
                spec.r#type,
                TOOL_TYPES.join(", ")
            ),
        ));
    }
    if spec.description.len() > limits.max_tool_description_bytes {
        return Err(FieldError::new(
            "description",
            format!(
                "{} bytes exceeds the limit of {}",
                spec.description.len(),
                limits.max_tool_description_bytes
            ),
        ));
    }
    for (field, text) in [
        ("parameters", &spec.parameters_json),
        ("config", &spec.config_json),
    ] {
        if text.len() > limits.max_tool_document_bytes {
            return Err(FieldError::new(
                field,
                format!(
                    "{} bytes of JSON exceeds the limit of {}",
                    text.len(),
                    limits.max_tool_document_bytes
                ),
            ));
        }
    }
    ArgumentsValidator::new(&spec.parameters_json)?;
    let config = ToolConfig::parse(&spec.r#type, &spec.config_json)?;
    validate_config(&config)?;
    if matches!(config, ToolConfig::Code(_)) && !is_default_parameters(&spec.parameters_json) {
        let parameters: Value = serde_json::from_str(&spec.parameters_json).unwrap_or_default();
        if parameters["properties"]["code"]["type"] != "string" {
            return Err(FieldError::new(
                "parameters.properties.code",
                "a code tool takes its source as the string argument `code` (leave parameters out to get it)",
            ));
        }
    }
    if !IMPLEMENTED_TOOL_TYPES.contains(&spec.r#type.as_str()) {
        return Err(FieldError::new(
            "type",
            format!(
                "{:?} tools are not available in this release yet (available: {})",
                spec.r#type,
                IMPLEMENTED_TOOL_TYPES.join(", ")
            ),
        ));
    }
    if spec.timeout_ms > limits.max_tool_timeout_ms {
        return Err(FieldError::new(
            "timeout",
            format!("at most {}", format_duration_ms(limits.max_tool_timeout_ms)),
        ));
    }
    if spec.retries > limits.max_tool_retries {
        return Err(FieldError::new(
            "retries",
            format!("at most {}", limits.max_tool_retries),
        ));
    }
    if let Some(auth) = &spec.authentication {
        match (auth.bearer_env.is_empty(), auth.bearer_file.is_empty()) {
            (false, true) => {
                let ok = auth
                    .bearer_env
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !auth.bearer_env.as_bytes()[0].is_ascii_digit();
                if !ok {
                    return Err(FieldError::new(
                        "authentication.bearerToken.env",
                        format!("{:?} is not an environment variable name", auth.bearer_env),
                    ));
                }
            }
            (true, false) => {
                if !auth.bearer_file.starts_with('/') {
                    return Err(FieldError::new(
                        "authentication.bearerToken.file",
                        "must be an absolute path",
                    ));
                }
            }
            _ => {
                return Err(FieldError::new(
                    "authentication.bearerToken",
                    "set exactly one of env and file",
                ));
            }
        }
    }
    Ok(config)
}

fn validate_config(config: &ToolConfig) -> Result<(), FieldError> {
    match config {
        ToolConfig::Api(api) => {
            let url = url::Url::parse(&api.endpoint).map_err(|e| {
                FieldError::new(
                    "config.endpoint",
                    format!("{:?} is not a URL: {e}", api.endpoint),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(FieldError::new(
                    "config.endpoint",
                    "must be an http:// or https:// URL with a host",
                ));
            }
            if !matches!(
                api.method.as_str(),
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
            ) {
                return Err(FieldError::new(
                    "config.method",
                    format!(
                        "{:?} is not one of GET, POST, PUT, PATCH, DELETE",
                        api.method
                    ),
                ));
            }
            for name in api.headers.keys() {
                let path = format!("config.headers.{name}");
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(FieldError::new(path, "is not a valid header name"));
                }
                if name.eq_ignore_ascii_case("authorization") {
                    return Err(FieldError::new(
                        path,
                        "put credentials in authentication.bearerToken (a secret reference), not in the spec",
                    ));
                }
            }
            if api.max_response_bytes == Some(0) {
                return Err(FieldError::new(
                    "config.maxResponseBytes",
                    "must be at least 1",
                ));
            }
        }
        ToolConfig::Human(human) => {
            if let Some(t) = &human.timeout
                && parse_duration_ms(t).is_none()
            {
                return Err(FieldError::new(
                    "config.timeout",
                    format!("{t:?} is not a duration like 24h"),
                ));
            }
            if let Some(o) = &human.on_timeout
                && !matches!(o.as_str(), "approve" | "reject")
            {
                return Err(FieldError::new(
                    "config.onTimeout",
                    "must be approve or reject",
                ));
            }
        }
        ToolConfig::Code(code) => {
            if code.language != "python" {
                return Err(FieldError::new(
                    "config.language",
                    "only python is supported",
                ));
            }
            for (field, value, least) in [
                ("config.cpuSeconds", code.cpu_seconds, 1),
                ("config.memoryMb", code.memory_mb, 32),
                ("config.maxProcesses", code.max_processes, 1),
            ] {
                if value.is_some_and(|v| v < least) {
                    return Err(FieldError::new(field, format!("must be at least {least}")));
                }
            }
        }
        ToolConfig::Mcp(mcp) => {
            let url = url::Url::parse(&mcp.url).map_err(|e| {
                FieldError::new("config.url", format!("{:?} is not a URL: {e}", mcp.url))
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(FieldError::new(
                    "config.url",
                    "must be an http:// or https:// URL with a host",
                ));
            }
            if mcp.tool.as_deref().is_some_and(str::is_empty) {
                return Err(FieldError::new(
                    "config.tool",
                    "must name a tool of the server (or be left out)",
                ));
            }
        }
        ToolConfig::Agent(agent) => {
            if agent.agent.is_empty() {
                return Err(FieldError::new("config.agent", "must name an agent"));
            }
        }
        ToolConfig::Retrieval(r) => {
            if r.collection.is_empty() {
                return Err(FieldError::new(
                    "config.collection",
                    "must name a collection",
                ));
            }
            if let Some(m) = &r.mode
                && !matches!(m.as_str(), "vector" | "keyword" | "hybrid")
            {
                return Err(FieldError::new(
                    "config.mode",
                    "must be vector, keyword or hybrid",
                ));
            }
        }
    }
    Ok(())
}

/// Validates a tool call's arguments against the tool's `parameters`
/// schema, so that a tool is never called with arguments it did not declare.
pub struct ArgumentsValidator {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for ArgumentsValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArgumentsValidator")
    }
}

impl ArgumentsValidator {
    /// Compiles a parameters schema; errors name `parameters`.
    pub fn new(parameters_json: &str) -> Result<Self, FieldError> {
        let schema: Value = if parameters_json.trim().is_empty() {
            empty_object_schema()
        } else {
            serde_json::from_str(parameters_json)
                .map_err(|e| FieldError::new("parameters", format!("not valid JSON: {e}")))?
        };
        if !schema.is_object() {
            return Err(FieldError::new(
                "parameters",
                "must be a JSON Schema object",
            ));
        }
        if let Some(t) = schema.get("type")
            && t != "object"
        {
            return Err(FieldError::new(
                "parameters.type",
                "must be \"object\": tool arguments are an object",
            ));
        }
        let validator = jsonschema::validator_for(&schema).map_err(|e| {
            let at = e.schema_path().to_string();
            let path = if at.is_empty() || at == "/" {
                "parameters".to_owned()
            } else {
                join("parameters", &at.trim_start_matches('/').replace('/', "."))
            };
            FieldError::new(path, format!("not a valid JSON Schema: {e}"))
        })?;
        Ok(Self { validator })
    }

    /// Parses and checks arguments as the model wrote them; the error is
    /// what the model is told, so it can correct the call.
    pub fn check(&self, arguments: &str) -> Result<Value, String> {
        let text = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("arguments are not valid JSON: {e}"))?;
        if !value.is_object() {
            return Err("arguments must be a JSON object".to_owned());
        }
        let errors: Vec<String> = self
            .validator
            .iter_errors(&value)
            .take(5)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(value)
        } else {
            Err(format!(
                "arguments do not match the tool's parameters: {}",
                errors.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ToolSpec {
        let doc: ToolSpecDoc = serde_yaml::from_str(yaml).unwrap();
        doc.to_proto().unwrap()
    }

    #[test]
    fn a_valid_api_tool_round_trips() {
        let s = spec(
            "type: api\ndescription: weather\nparameters: {type: object, properties: {city: {type: string}}, required: [city]}\nconfig: {endpoint: 'http://127.0.0.1:9/w', method: GET}\ntimeout: 5s\nretries: 2\nauthentication: {bearerToken: {env: WEATHER_TOKEN}}\n",
        );
        let config = validate_tool_spec("spec", &s, &SpecLimits::default()).unwrap();
        assert!(matches!(config, ToolConfig::Api(ref a) if a.method == "GET"));
        assert_eq!(s.timeout_ms, 5000);
        let back = ToolSpecDoc::from_proto(&s).to_proto().unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn errors_name_the_field() {
        let limits = SpecLimits::default();
        let cases = [
            (
                "type: api\nconfig: {endpoint: 'ftp://x/y'}\n",
                "spec.config.endpoint",
            ),
            ("type: api\nconfig: {endpont: 'http://x'}\n", "spec.config"),
            (
                "type: api\nconfig: {endpoint: 'http://x', method: FETCH}\n",
                "spec.config.method",
            ),
            (
                "type: api\nconfig: {endpoint: 'http://x', headers: {Authorization: 'Bearer s3cret'}}\n",
                "spec.config.headers.Authorization",
            ),
            (
                "type: api\nparameters: {type: array}\nconfig: {endpoint: 'http://x'}\n",
                "spec.parameters.type",
            ),
            (
                "type: api\nparameters: {type: object, properties: {a: {type: 12}}}\nconfig: {endpoint: 'http://x'}\n",
                "spec.parameters",
            ),
            (
                "type: api\nconfig: {endpoint: 'http://x'}\nauthentication: {bearerToken: {}}\n",
                "spec.authentication.bearerToken",
            ),
            (
                "type: api\nconfig: {endpoint: 'http://x'}\nretries: 99\n",
                "spec.retries",
            ),
            ("type: shell\n", "spec.type"),
            (
                "type: code\nconfig: {language: ruby}\n",
                "spec.config.language",
            ),
            (
                "type: code\nconfig: {memoryMb: 8}\n",
                "spec.config.memoryMb",
            ),
            (
                "type: code\nparameters: {type: object, properties: {src: {type: string}}}\n",
                "spec.parameters.properties.code",
            ),
            (
                "type: mcp\nconfig: {url: 'ftp://x/mcp'}\n",
                "spec.config.url",
            ),
            (
                "type: mcp\nconfig: {url: 'http://x/mcp', tool: ''}\n",
                "spec.config.tool",
            ),
        ];
        for (yaml, path) in cases {
            let err = validate_tool_spec("spec", &spec(yaml), &limits).unwrap_err();
            assert!(err.path.starts_with(path), "{yaml}: got {err}");
        }
        let err = serde_yaml::from_str::<ToolSpecDoc>("type: api\ntimeout: soon\n")
            .unwrap()
            .to_proto()
            .unwrap_err();
        assert_eq!(err.path, "timeout");
    }

    #[test]
    fn a_code_tool_takes_its_source_as_code() {
        let limits = SpecLimits::default();
        let config = validate_tool_spec("spec", &spec("type: code\n"), &limits).unwrap();
        assert!(matches!(config, ToolConfig::Code(ref c) if c.language == "python"));
        let custom = spec(
            "type: code\nparameters: {type: object, properties: {code: {type: string, description: maths}}, required: [code]}\nconfig: {cpuSeconds: 2, memoryMb: 64, maxProcesses: 4}\n",
        );
        validate_tool_spec("spec", &custom, &limits).unwrap();
        assert!(is_default_parameters(&spec("type: code\n").parameters_json));
        assert!(!is_default_parameters(&custom.parameters_json));
        let v = ArgumentsValidator::new(CODE_PARAMETERS).unwrap();
        assert!(v.check(r#"{"code": "print(1)"}"#).is_ok());
        assert!(v.check("{}").unwrap_err().contains("code"));
        assert!(v.check(r#"{"code": 1}"#).is_err());
        assert!(v.check(r#"{"code": "1", "shell": "sh"}"#).is_err());
    }

    #[test]
    fn arguments_are_checked_against_the_schema() {
        let v = ArgumentsValidator::new(
            r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#,
        )
        .unwrap();
        assert_eq!(v.check(r#"{"n": 3}"#).unwrap()["n"], 3);
        assert!(v.check(r#"{"n": "three"}"#).unwrap_err().contains("/n"));
        assert!(v.check("{}").unwrap_err().contains("required"));
        assert!(v.check("[1]").unwrap_err().contains("object"));
        assert!(v.check("{nope").unwrap_err().contains("JSON"));
    }
}
