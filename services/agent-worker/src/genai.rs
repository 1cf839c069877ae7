//! What the worker's spans say in the OpenTelemetry GenAI conventions: the
//! provider name, the prompt and completion as `gen_ai.input.messages` /
//! `gen_ai.output.messages` JSON, and a low-cardinality `error.type`.
//!
//! Content is built here only for an agent whose spec sets
//! `recordContent`; callers must never record it otherwise. Pure
//! functions, so the shapes are tested without a collector.

use mesh_proto::{ChatMessage, ToolCall};
use serde_json::{Value, json};

/// The span attribute of the time the first token arrived (RFC 3339), the
/// name Langfuse maps to a generation's `completionStartTime`; the
/// trace-collector reads it the same way.
pub const COMPLETION_START_TIME: &str = "langfuse.observation.completion_start_time";
/// The conventions' time to first chunk of a streamed response, seconds
/// from the request (the trace-collector prefers it: same clock as the
/// span's start).
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";

/// `gen_ai.provider.name` of an agent's `model.provider`: the conventions'
/// well-known value where one applies (`openai`, `gcp.gemini`,
/// `aws.bedrock`, ...), else the configured name in lowercase; an unset
/// provider means the mesh's own inference-router.
pub fn provider_name(configured: &str) -> String {
    let name = configured.trim().to_ascii_lowercase();
    let known = match name.as_str() {
        "" => "agentmesh",
        "openai" => "openai",
        "anthropic" => "anthropic",
        "azure" | "azure_openai" | "azure-openai" | "azure.ai.openai" => "azure.ai.openai",
        "azure.ai.inference" => "azure.ai.inference",
        "bedrock" | "aws" | "aws-bedrock" | "aws.bedrock" => "aws.bedrock",
        "cohere" => "cohere",
        "deepseek" => "deepseek",
        "gemini" | "google" | "gcp.gemini" => "gcp.gemini",
        "vertex" | "vertexai" | "vertex_ai" | "gcp.vertex_ai" => "gcp.vertex_ai",
        "gcp.gen_ai" => "gcp.gen_ai",
        "groq" => "groq",
        "watsonx" | "ibm.watsonx.ai" => "ibm.watsonx.ai",
        "mistral" | "mistralai" | "mistral_ai" => "mistral_ai",
        "perplexity" => "perplexity",
        "xai" | "x.ai" | "x_ai" | "grok" => "x_ai",
        _ => return name,
    };
    known.to_owned()
}

/// `text` cut to at most `max_chars` characters, the cut marked, so one
/// huge message cannot make a span too large to export.
pub fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((at, _)) => format!(
            "{}…[{} more bytes]",
            &text[..at],
            text.len().saturating_sub(at)
        ),
    }
}

/// Tool-call arguments as JSON where they parse (the conventions want the
/// object), else as the text the model wrote.
fn arguments(text: &str, max_chars: usize) -> Value {
    if text.len() <= max_chars
        && let Ok(value) = serde_json::from_str::<Value>(text)
    {
        return value;
    }
    Value::String(cut(text, max_chars))
}

fn tool_call_part(call: &ToolCall, max_chars: usize) -> Value {
    json!({
        "type": "tool_call",
        "id": call.id,
        "name": call.name,
        "arguments": arguments(&call.arguments, max_chars),
    })
}

/// `gen_ai.input.messages`: the chat history sent to the model, each
/// message's text, tool calls and tool results as parts.
pub fn input_messages(messages: &[ChatMessage], max_chars: usize) -> String {
    let messages: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut parts = Vec::new();
            if m.role == "tool" {
                parts.push(json!({
                    "type": "tool_call_response",
                    "id": m.tool_call_id,
                    "result": cut(&m.content, max_chars),
                }));
            } else if !m.content.is_empty() {
                parts.push(json!({"type": "text", "content": cut(&m.content, max_chars)}));
            }
            parts.extend(m.tool_calls.iter().map(|c| tool_call_part(c, max_chars)));
            let mut message = json!({"role": m.role, "parts": parts});
            if !m.name.is_empty() && m.role != "tool" {
                message["name"] = Value::String(m.name.clone());
            }
            message
        })
        .collect();
    Value::Array(messages).to_string()
}

/// `gen_ai.output.messages`: the one assistant message of a completion.
pub fn output_messages(
    content: &str,
    calls: &[ToolCall],
    finish_reason: &str,
    max_chars: usize,
) -> String {
    let mut parts = Vec::new();
    if !content.is_empty() {
        parts.push(json!({"type": "text", "content": cut(content, max_chars)}));
    }
    parts.extend(calls.iter().map(|c| tool_call_part(c, max_chars)));
    // The conventions name OpenAI's `tool_calls` in the singular.
    let finish_reason = match finish_reason {
        "tool_calls" => "tool_call",
        other => other,
    };
    json!([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}]).to_string()
}

/// `error.type` of a failed gRPC call: the status code's name.
pub fn grpc_error_type(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
    use super::*;

    #[test]
    fn providers_map_to_well_known_names_else_the_configured_one() {
        assert_eq!(provider_name("OpenAI"), "openai");
        assert_eq!(provider_name("azure"), "azure.ai.openai");
        assert_eq!(provider_name("gemini"), "gcp.gemini");
        assert_eq!(provider_name("bedrock"), "aws.bedrock");
        assert_eq!(provider_name("mistral"), "mistral_ai");
        assert_eq!(provider_name(" vLLM "), "vllm");
        assert_eq!(provider_name(""), "agentmesh");
    }

    #[test]
    fn cuts_on_a_character_boundary_and_says_how_much() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 2), "hé…[3 more bytes]");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn messages_follow_the_conventions_shape() {
        let call = ToolCall {
            id: "c1".to_owned(),
            name: "weather".to_owned(),
            arguments: r#"{"city":"Paris"}"#.to_owned(),
        };
        let history = vec![
            ChatMessage {
                role: "system".to_owned(),
                content: "be brief".to_owned(),
                ..Default::default()
            },
            ChatMessage {
                role: "assistant".to_owned(),
                tool_calls: vec![call.clone()],
                ..Default::default()
            },
            ChatMessage {
                role: "tool".to_owned(),
                content: "sunny".to_owned(),
                tool_call_id: "c1".to_owned(),
                name: "weather".to_owned(),
                ..Default::default()
            },
        ];
        let input: Value = serde_json::from_str(&input_messages(&history, 100)).unwrap();
        assert_eq!(
            input,
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1",
                    "name": "weather", "arguments": {"city": "Paris"}}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1",
                    "result": "sunny"}]},
            ])
        );
        let output: Value =
            serde_json::from_str(&output_messages("", &[call], "tool_calls", 100)).unwrap();
        assert_eq!(output[0]["finish_reason"], "tool_call");
        assert_eq!(output[0]["parts"][0]["arguments"]["city"], "Paris");
        // Over the limit, arguments are cut text rather than broken JSON.
        let long = ToolCall {
            arguments: format!(r#"{{"q":"{}"}}"#, "x".repeat(50)),
            ..Default::default()
        };
        let output: Value =
            serde_json::from_str(&output_messages("done", &[long], "stop", 10)).unwrap();
        assert_eq!(output[0]["parts"][0]["content"], "done");
        assert!(
            output[0]["parts"][1]["arguments"]
                .as_str()
                .unwrap()
                .starts_with(r#"{"q":"xxxx…["#)
        );
    }
}
