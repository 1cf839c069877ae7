//! The OpenAI chat-completions wire format, as vLLM speaks it.
//!
//! Requests are parsed leniently (unknown fields are ignored, `null` means
//! absent) and then validated, so bad input always becomes a 4xx
//! [`ApiError`] naming the field, never a panic or a 500. This module only
//! describes the wire; it must not know about timing or concurrency.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// Longest completion one request may ask for; stands in for vLLM's
/// `max_model_len` check so a typo cannot make the simulator build a
/// gigabyte string.
pub const MAX_TOKENS_LIMIT: u32 = 32_768;

/// Roles OpenAI accepts in `messages`.
const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

// === request ===

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Option<Vec<Message>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stop: Option<Stop>,
    pub tools: Option<Vec<serde_json::Value>>,
    pub tool_choice: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    /// `null` is legal for an assistant message that only carries tool calls.
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One element of an array `content`; only text parts carry words, other
/// kinds (images, audio) are accepted and contribute nothing.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Content {
    /// The text a model would read: a string as is, text parts joined by
    /// spaces.
    pub fn text(&self) -> String {
        match self {
            Content::Text(text) => text.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|part| part.kind == "text")
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// A request that passed validation, reduced to what generation needs.
#[derive(Debug)]
pub struct ValidChat {
    pub messages: Vec<Message>,
    pub stream: bool,
    pub include_usage: bool,
    /// `None` when the request did not say; the server applies its default.
    pub max_tokens: Option<u32>,
    pub seed: Option<i64>,
    pub stop: Vec<String>,
    /// The function `tool_choice` names: the simulator answers with a
    /// scripted call to it instead of text.
    pub forced_tool: Option<String>,
}

impl ChatRequest {
    /// Parses a request body; anything that is not a chat request becomes a
    /// 400 whose `param` is the offending field where serde can tell.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|err| {
            ApiError::invalid(format!("request body is not valid JSON: {err}"), None)
        })?;
        // serde would read an array as a struct's fields in order; OpenAI
        // wants an object.
        if !value.is_object() {
            return Err(ApiError::invalid(
                "request body must be a JSON object",
                None,
            ));
        }
        serde_path_to_error::deserialize(value).map_err(|err| {
            // "." is serde_path_to_error's name for the document root.
            let path = err.path().to_string();
            let param = (path != ".").then_some(path.as_str());
            ApiError::invalid(format!("invalid request body: {}", err.inner()), param)
        })
    }

    /// Checks the request against `served_model`; on success returns what
    /// generation needs.
    pub fn validate(self, served_model: &str) -> Result<ValidChat, ApiError> {
        // vLLM serves the request with its only model when `model` is absent.
        if let Some(model) = &self.model
            && model != served_model
        {
            return Err(ApiError::model_not_found(model));
        }
        let messages = match self.messages {
            Some(messages) if !messages.is_empty() => messages,
            Some(_) => {
                return Err(ApiError::invalid(
                    "messages must not be empty",
                    Some("messages"),
                ));
            }
            None => return Err(ApiError::invalid("messages is required", Some("messages"))),
        };
        for (i, message) in messages.iter().enumerate() {
            if !ROLES.contains(&message.role.as_str()) {
                return Err(ApiError::invalid(
                    format!(
                        "unknown role {:?}, expected one of {}",
                        message.role,
                        ROLES.join(", ")
                    ),
                    Some(&format!("messages[{i}].role")),
                ));
            }
        }

        let stream = self.stream.unwrap_or(false);
        if self.stream_options.is_some() && !stream {
            return Err(ApiError::invalid(
                "stream_options is only allowed when stream is true",
                Some("stream_options"),
            ));
        }
        let include_usage = self
            .stream_options
            .and_then(|options| options.include_usage)
            .unwrap_or(false);

        // The newer name wins when a client sends both.
        let (max_tokens, max_tokens_param) = match (self.max_completion_tokens, self.max_tokens) {
            (Some(n), _) => (Some(n), "max_completion_tokens"),
            (None, n) => (n, "max_tokens"),
        };
        if let Some(n) = max_tokens
            && !(1..=MAX_TOKENS_LIMIT).contains(&n)
        {
            return Err(ApiError::invalid(
                format!("{max_tokens_param} must be between 1 and {MAX_TOKENS_LIMIT}, got {n}"),
                Some(max_tokens_param),
            ));
        }

        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(ApiError::invalid(
                format!("temperature must be between 0 and 2, got {t}"),
                Some("temperature"),
            ));
        }
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::invalid(
                format!("only n=1 is supported, got {n}"),
                Some("n"),
            ));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(stop)) => vec![stop],
            Some(Stop::Many(stops)) if stops.len() <= 4 => stops,
            Some(Stop::Many(_)) => {
                return Err(ApiError::invalid(
                    "stop accepts at most 4 sequences",
                    Some("stop"),
                ));
            }
        };
        if let Some(tools) = &self.tools {
            for (i, tool) in tools.iter().enumerate() {
                let named = tool
                    .pointer("/function/name")
                    .and_then(|name| name.as_str())
                    .is_some_and(|name| !name.is_empty());
                if tool.get("type").and_then(|t| t.as_str()) != Some("function") || !named {
                    return Err(ApiError::invalid(
                        "a tool must have type \"function\" and a function.name",
                        Some(&format!("tools[{i}]")),
                    ));
                }
            }
        }
        let mut forced_tool = None;
        if let Some(choice) = &self.tool_choice {
            if let Some(name) = choice["function"]["name"].as_str() {
                let offered = self
                    .tools
                    .iter()
                    .flatten()
                    .any(|tool| tool["function"]["name"].as_str() == Some(name));
                if !offered {
                    return Err(ApiError::invalid(
                        format!("tool_choice names {name:?}, which is not in tools"),
                        Some("tool_choice"),
                    ));
                }
                forced_tool = Some(name.to_owned());
            }
            let valid = match choice {
                serde_json::Value::String(s) => ["none", "auto", "required"].contains(&s.as_str()),
                serde_json::Value::Object(_) => true,
                _ => false,
            };
            if !valid {
                return Err(ApiError::invalid(
                    "tool_choice must be \"none\", \"auto\", \"required\" or an object",
                    Some("tool_choice"),
                ));
            }
        }

        Ok(ValidChat {
            messages,
            stream,
            include_usage,
            max_tokens,
            seed: self.seed,
            stop,
            forced_tool,
        })
    }
}

// === responses ===

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ChatCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: [Choice<'a>; 1],
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub struct Choice<'a> {
    pub index: u32,
    pub message: AssistantMessage<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: &'static str,
}

#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    pub role: &'static str,
    /// `null` when the message is a tool call.
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
pub struct ChatChunk<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: Vec<ChunkChoice<'a>>,
    /// Absent unless the client asked for usage; then `null` on every chunk
    /// but the last, as OpenAI does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

#[derive(Debug, Serialize)]
pub struct ChunkChoice<'a> {
    pub index: u32,
    pub delta: Delta<'a>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<&'static str>,
}

#[derive(Debug, Default, Serialize)]
pub struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
}

// === errors ===

/// An error answered in OpenAI's shape:
/// `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    /// A 400 blamed on `param`.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_owned),
            code: None,
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("the model `{model}` does not exist"),
            kind: "invalid_request_error",
            param: Some("model".to_owned()),
            code: Some("model_not_found"),
        }
    }

    pub fn overloaded() -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many requests waiting, try again later".to_owned(),
            kind: "rate_limit_error",
            param: None,
            code: Some("rate_limit_exceeded"),
        }
    }

    /// The answer of [`crate::FailureMode::Always`] and
    /// [`crate::FailureMode::FirstN`].
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if status.is_server_error() {
            "server_error"
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            "rate_limit_error"
        } else {
            "invalid_request_error"
        };
        Self {
            status,
            message: format!("simulated failure with status {}", status.as_u16()),
            kind,
            param: None,
            code: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(body: &str) -> Result<ValidChat, ApiError> {
        ChatRequest::parse(body.as_bytes())?.validate("sim")
    }

    #[test]
    fn minimal_request_is_valid_and_unknown_fields_are_ignored() {
        let chat = validate(
            r#"{"model":"sim","messages":[{"role":"user","content":"hi"}],
                "frequency_penalty":0.5,"user":"abc","stop":null}"#,
        )
        .expect("valid");
        assert!(!chat.stream);
        assert_eq!(chat.max_tokens, None);
        assert_eq!(chat.messages.len(), 1);
    }

    #[test]
    fn content_parts_keep_only_text() {
        let chat = validate(
            r#"{"messages":[{"role":"user","content":[
                {"type":"text","text":"one two"},
                {"type":"image_url","image_url":{"url":"x"}},
                {"type":"text","text":"three"}]}]}"#,
        )
        .expect("valid");
        let text = chat.messages[0].content.as_ref().expect("content").text();
        assert_eq!(text, "one two three");
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let chat = validate(
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":3,"max_completion_tokens":7}"#,
        )
        .expect("valid");
        assert_eq!(chat.max_tokens, Some(7));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{", None, StatusCode::BAD_REQUEST),
            (r#"{"messages":[]} trailing"#, None, StatusCode::BAD_REQUEST),
            ("[1,2]", None, StatusCode::BAD_REQUEST),
            (
                r#"{"model":"sim"}"#,
                Some("messages"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[]}"#,
                Some("messages"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"robot","content":"x"}]}"#,
                Some("messages[0].role"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}"#,
                Some("max_tokens"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                Some("max_tokens"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#,
                Some("n"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"temperature":3}"#,
                Some("temperature"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}"#,
                Some("stream_options"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]}"#,
                Some("tools[0]"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
                Some("tool_choice"),
                StatusCode::BAD_REQUEST,
            ),
            (
                r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
                Some("model"),
                StatusCode::NOT_FOUND,
            ),
        ];
        for (body, param, status) in cases {
            let err = validate(body).expect_err(body);
            assert_eq!(err.param.as_deref(), param, "{body}: {}", err.message);
            assert_eq!(err.status, status, "{body}");
        }
    }

    #[test]
    fn wrong_model_has_openai_code() {
        let err = validate(r#"{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}"#)
            .expect_err("wrong model");
        assert_eq!(err.code, Some("model_not_found"));
    }

    #[test]
    fn injected_status_keeps_its_code() {
        assert_eq!(
            ApiError::injected(503).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ApiError::injected(503).kind, "server_error");
        assert_eq!(ApiError::injected(429).kind, "rate_limit_error");
    }

    #[test]
    fn chunk_usage_is_absent_null_or_present() {
        let mut chunk = ChatChunk {
            id: "c",
            object: "chat.completion.chunk",
            created: 0,
            model: "m",
            choices: Vec::new(),
            usage: None,
        };
        let json = serde_json::to_value(&chunk).expect("serialize");
        assert!(json.get("usage").is_none());
        chunk.usage = Some(None);
        let json = serde_json::to_value(&chunk).expect("serialize");
        assert!(json["usage"].is_null() && json.get("usage").is_some());
        chunk.usage = Some(Some(Usage::new(2, 3)));
        let json = serde_json::to_value(&chunk).expect("serialize");
        assert_eq!(json["usage"]["total_tokens"], 5);
    }
}
