//! The Agent resource: model, prompt, tools, memory, loop bounds,
//! concurrency per session, scaling and pod resources.

use mesh_proto::{AgentMemory, AgentResources, AgentSpec, AgentTool, ConcurrencyPolicy};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::SpecLimits;
use crate::duration::{format_duration_ms, parse_duration_ms};
use crate::error::FieldError;
use crate::tool::{ToolSpecDoc, validate_tool_name, validate_tool_spec};

/// `spec` of an Agent resource (the body of `PUT /v1/agents/{name}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSpecDoc {
    /// A model name as the inference-router serves it, or the full form.
    pub model: ModelRef,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_prompt: String,
    /// Shorthand for `model.temperature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Shorthand for `model.maxTokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<AgentToolDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryDoc>,
    /// Upper bound of model calls in one task (default: the worker's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// What a new task of a session does while another of it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<mesh_scaling::AgentScaling>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesDoc>,
    /// Record prompts and completions on spans (off by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub record_content: bool,
}

/// `model: name` or `model: {name, provider, temperature, maxTokens, fallbacks}`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelRef {
    Name(String),
    Full(ModelDoc),
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(deserializer)? {
            Value::String(name) => Ok(Self::Name(name)),
            value @ Value::Object(_) => serde_json::from_value(value)
                .map(Self::Full)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected a model name or an object with name, provider, temperature, maxTokens, fallbacks",
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Models tried in order when `name` fails before its first byte.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

/// A tool of the agent: `{ref: weather}` names a Tool resource of the
/// tenant (its current version is pinned when a task is submitted);
/// `{name: calc, spec: {...}}` declares one inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentToolDoc {
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ToolSpecDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MemoryDoc {
    /// `redis`: the turns of a session, kept in Redis.
    #[serde(rename = "type")]
    pub kind: String,
    /// How long a session is remembered after its last turn, e.g. `24h`.
    pub ttl: String,
    /// Messages kept per session (a turn is two).
    pub max_history: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyDoc {
    Enqueue,
    Reject,
    Interrupt,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesDoc {
    #[serde(default, skip_serializing_if = "Quantities::is_empty")]
    pub requests: Quantities,
    #[serde(default, skip_serializing_if = "Quantities::is_empty")]
    pub limits: Quantities,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
}

impl Quantities {
    fn is_empty(&self) -> bool {
        self.cpu.is_empty() && self.memory.is_empty()
    }
}

// === conversion ===

impl AgentSpecDoc {
    /// The protobuf spec; errors name the field under `spec`.
    pub fn to_proto(&self) -> Result<AgentSpec, FieldError> {
        let (model, provider, mut temperature, mut max_tokens, fallbacks) = match &self.model {
            ModelRef::Name(name) => (name.clone(), String::new(), None, None, Vec::new()),
            ModelRef::Full(m) => (
                m.name.clone(),
                m.provider.clone(),
                m.temperature,
                m.max_tokens,
                m.fallbacks.clone(),
            ),
        };
        if self.temperature.is_some() {
            if temperature.is_some() {
                return Err(FieldError::new(
                    "spec.temperature",
                    "set it here or in model.temperature, not both",
                ));
            }
            temperature = self.temperature;
        }
        if self.max_tokens.is_some() {
            if max_tokens.is_some() {
                return Err(FieldError::new(
                    "spec.maxTokens",
                    "set it here or in model.maxTokens, not both",
                ));
            }
            max_tokens = self.max_tokens;
        }
        let mut tools = Vec::with_capacity(self.tools.len());
        for (i, tool) in self.tools.iter().enumerate() {
            let inline = match &tool.spec {
                Some(spec) => Some(
                    spec.to_proto()
                        .map_err(|e| e.under(&format!("spec.tools[{i}].spec")))?,
                ),
                None => None,
            };
            tools.push(AgentTool {
                r#ref: tool.reference.clone().unwrap_or_default(),
                name: tool.name.clone().unwrap_or_default(),
                inline,
            });
        }
        let memory = match &self.memory {
            None => None,
            Some(m) => Some(AgentMemory {
                r#type: m.kind.clone(),
                ttl_seconds: parse_duration_ms(&m.ttl).ok_or_else(|| {
                    FieldError::new(
                        "spec.memory.ttl",
                        format!("{:?} is not a duration like 24h", m.ttl),
                    )
                })? / 1000,
                max_history: m.max_history,
            }),
        };
        Ok(AgentSpec {
            model,
            system_prompt: self.system_prompt.clone(),
            temperature,
            max_tokens,
            scaling: self.scaling.as_ref().map(Into::into),
            provider,
            fallback_models: fallbacks,
            tools,
            memory,
            max_steps: self.max_steps.unwrap_or(0),
            concurrency: match self.concurrency.unwrap_or(ConcurrencyDoc::Enqueue) {
                ConcurrencyDoc::Enqueue => ConcurrencyPolicy::Enqueue,
                ConcurrencyDoc::Reject => ConcurrencyPolicy::Reject,
                ConcurrencyDoc::Interrupt => ConcurrencyPolicy::Interrupt,
            } as i32,
            resources: self.resources.as_ref().map(|r| AgentResources {
                cpu_request: r.requests.cpu.clone(),
                cpu_limit: r.limits.cpu.clone(),
                memory_request: r.requests.memory.clone(),
                memory_limit: r.limits.memory.clone(),
            }),
            record_content: self.record_content,
        })
    }

    pub fn from_proto(spec: &AgentSpec) -> Self {
        let full = !spec.provider.is_empty() || !spec.fallback_models.is_empty();
        let model = if full {
            ModelRef::Full(ModelDoc {
                name: spec.model.clone(),
                provider: spec.provider.clone(),
                temperature: spec.temperature,
                max_tokens: spec.max_tokens,
                fallbacks: spec.fallback_models.clone(),
            })
        } else {
            ModelRef::Name(spec.model.clone())
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            model,
            system_prompt: spec.system_prompt.clone(),
            temperature: if full { None } else { spec.temperature },
            max_tokens: if full { None } else { spec.max_tokens },
            tools: spec
                .tools
                .iter()
                .map(|t| AgentToolDoc {
                    reference: non_empty(&t.r#ref),
                    name: non_empty(&t.name),
                    spec: t.inline.as_ref().map(ToolSpecDoc::from_proto),
                })
                .collect(),
            memory: spec.memory.as_ref().map(|m| MemoryDoc {
                kind: m.r#type.clone(),
                ttl: format_duration_ms(m.ttl_seconds.saturating_mul(1000)),
                max_history: m.max_history,
            }),
            max_steps: (spec.max_steps > 0).then_some(spec.max_steps),
            concurrency: match ConcurrencyPolicy::try_from(spec.concurrency).unwrap_or_default() {
                ConcurrencyPolicy::Enqueue => None,
                ConcurrencyPolicy::Reject => Some(ConcurrencyDoc::Reject),
                ConcurrencyPolicy::Interrupt => Some(ConcurrencyDoc::Interrupt),
            },
            scaling: spec.scaling.as_ref().map(Into::into),
            resources: spec.resources.as_ref().map(|r| ResourcesDoc {
                requests: Quantities {
                    cpu: r.cpu_request.clone(),
                    memory: r.memory_request.clone(),
                },
                limits: Quantities {
                    cpu: r.cpu_limit.clone(),
                    memory: r.memory_limit.clone(),
                },
            }),
            record_content: spec.record_content,
        }
    }
}

// === validation ===

/// Checks what the backbone's checks (model, prompt, sampling, scaling) do
/// not: tools, memory, loop bounds, concurrency, fallbacks and resources.
pub fn validate_agent_spec(spec: &AgentSpec, limits: &SpecLimits) -> Result<(), FieldError> {
    if spec.fallback_models.len() > limits.max_fallback_models {
        return Err(FieldError::new(
            "spec.model.fallbacks",
            format!("at most {} models", limits.max_fallback_models),
        ));
    }
    for (i, m) in spec.fallback_models.iter().enumerate() {
        if m.trim().is_empty() {
            return Err(FieldError::new(
                format!("spec.model.fallbacks[{i}]"),
                "must not be empty",
            ));
        }
    }
    if spec.tools.len() > limits.max_tools {
        return Err(FieldError::new(
            "spec.tools",
            format!("at most {} tools", limits.max_tools),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, tool) in spec.tools.iter().enumerate() {
        let at = format!("spec.tools[{i}]");
        let name = match (tool.r#ref.is_empty(), &tool.inline) {
            (false, None) => {
                validate_tool_name(&format!("{at}.ref"), &tool.r#ref)?;
                if !tool.name.is_empty() && tool.name != tool.r#ref {
                    return Err(FieldError::new(
                        format!("{at}.name"),
                        "a referenced tool keeps its resource's name",
                    ));
                }
                tool.r#ref.clone()
            }
            (true, Some(inline)) => {
                validate_tool_name(&format!("{at}.name"), &tool.name)?;
                validate_tool_spec(&format!("{at}.spec"), inline, limits)?;
                tool.name.clone()
            }
            _ => {
                return Err(FieldError::new(
                    at,
                    "set either ref (a Tool resource) or name and spec (an inline tool)",
                ));
            }
        };
        if !names.insert(name.clone()) {
            return Err(FieldError::new(at, format!("a second tool named {name:?}")));
        }
    }
    if let Some(memory) = &spec.memory {
        match memory.r#type.as_str() {
            "redis" => {}
            other => {
                return Err(FieldError::new(
                    "spec.memory.type",
                    format!("{other:?} is not a memory type (redis)"),
                ));
            }
        }
        if memory.ttl_seconds == 0 || memory.ttl_seconds > limits.max_memory_ttl_seconds {
            return Err(FieldError::new(
                "spec.memory.ttl",
                format!(
                    "must be between 1s and {}",
                    format_duration_ms(limits.max_memory_ttl_seconds * 1000)
                ),
            ));
        }
        if memory.max_history == 0 || memory.max_history > limits.max_memory_history {
            return Err(FieldError::new(
                "spec.memory.maxHistory",
                format!("must be between 1 and {}", limits.max_memory_history),
            ));
        }
    }
    if spec.max_steps > limits.max_steps {
        return Err(FieldError::new(
            "spec.maxSteps",
            format!("at most {}", limits.max_steps),
        ));
    }
    if ConcurrencyPolicy::try_from(spec.concurrency).is_err() {
        return Err(FieldError::new(
            "spec.concurrency",
            "must be enqueue, reject or interrupt",
        ));
    }
    if let Some(r) = &spec.resources {
        for (field, value, memory) in [
            ("spec.resources.requests.cpu", &r.cpu_request, false),
            ("spec.resources.limits.cpu", &r.cpu_limit, false),
            ("spec.resources.requests.memory", &r.memory_request, true),
            ("spec.resources.limits.memory", &r.memory_limit, true),
        ] {
            if !value.is_empty() && !is_quantity(value, memory) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{value:?} is not a Kubernetes quantity like {}",
                        if memory { "512Mi" } else { "500m" }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A Kubernetes quantity as agents use them: a decimal number and a suffix
/// (`m` for CPU; `Ki`..`Ei`, `k`..`E` for memory).
fn is_quantity(text: &str, memory: bool) -> bool {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number_ok = !number.is_empty() && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let suffix_ok = if memory {
        matches!(
            suffix,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
        )
    } else {
        matches!(suffix, "" | "m")
    };
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(yaml: &str) -> Result<AgentSpec, FieldError> {
        let doc: AgentSpecDoc = serde_yaml::from_str(yaml).unwrap();
        doc.to_proto()
    }

    #[test]
    fn full_spec_round_trips_and_validates() {
        let yaml = r#"
model: {name: sim-model, provider: vllm, temperature: 0.2, maxTokens: 256, fallbacks: [small-model]}
systemPrompt: You help.
tools:
  - ref: weather
  - name: calc
    spec:
      type: api
      description: adds numbers
      parameters: {type: object, properties: {a: {type: number}}}
      config: {endpoint: "http://127.0.0.1:1/add"}
memory: {type: redis, ttl: 24h, maxHistory: 20}
maxSteps: 8
concurrency: reject
resources: {requests: {cpu: 250m, memory: 256Mi}, limits: {memory: 1Gi}}
"#;
        let spec = proto(yaml).unwrap();
        validate_agent_spec(&spec, &SpecLimits::default()).unwrap();
        assert_eq!(spec.memory.as_ref().unwrap().ttl_seconds, 86_400);
        assert_eq!(spec.concurrency, ConcurrencyPolicy::Reject as i32);
        let again = AgentSpecDoc::from_proto(&spec).to_proto().unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn short_form_model_is_accepted() {
        let spec = proto("model: m\ntemperature: 0.5\nmaxTokens: 9\n").unwrap();
        assert_eq!(
            (spec.model.as_str(), spec.temperature, spec.max_tokens),
            ("m", Some(0.5), Some(9))
        );
        assert_eq!(
            proto("model: {name: m, temperature: 1}\ntemperature: 0.5\n")
                .unwrap_err()
                .path,
            "spec.temperature"
        );
    }

    #[test]
    fn errors_name_the_field_path() {
        let limits = SpecLimits::default();
        let cases = [
            (
                "model: m\ntools: [{ref: a}, {name: b, spec: {type: api, config: {endpoint: 'nope'}}}]\n",
                "spec.tools[1].spec.config.endpoint",
            ),
            ("model: m\ntools: [{ref: a}, {ref: a}]\n", "spec.tools[1]"),
            ("model: m\ntools: [{name: b}]\n", "spec.tools[0]"),
            (
                "model: m\ntools: [{ref: 'has space'}]\n",
                "spec.tools[0].ref",
            ),
            (
                "model: m\nmemory: {type: redis, ttl: 1h, maxHistory: 0}\n",
                "spec.memory.maxHistory",
            ),
            (
                "model: m\nmemory: {type: disk, ttl: 1h, maxHistory: 3}\n",
                "spec.memory.type",
            ),
            ("model: m\nmaxSteps: 1000\n", "spec.maxSteps"),
            (
                "model: m\nresources: {limits: {memory: lots}}\n",
                "spec.resources.limits.memory",
            ),
        ];
        for (yaml, path) in cases {
            let err = validate_agent_spec(&proto(yaml).unwrap(), &limits).unwrap_err();
            assert_eq!(err.path, path, "{yaml}: {err}");
        }
        assert_eq!(
            proto("model: m\nmemory: {type: redis, ttl: forever, maxHistory: 3}\n")
                .unwrap_err()
                .path,
            "spec.memory.ttl"
        );
    }
}
