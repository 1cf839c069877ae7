//! The gRPC messages as OpenAI JSON and back: a `ChatRequest` becomes a
//! chat-completions body (tools, tool turns, `tool_choice`), a streamed
//! chunk becomes a `ChatChunk` (text and tool-call deltas), an
//! `EmbedRequest` becomes an embeddings body and its answer an
//! `EmbedResponse`. Pure conversions: no I/O, no routing. Bad input is
//! INVALID_ARGUMENT whose message starts with the field's path.

use mesh_proto::{
    ChatChunk, ChatMessage, ChatRequest, ChatUsage, EmbedRequest, EmbedResponse, Embedding,
    ToolCallDelta, ToolDefinition,
};
use serde_json::json;
use tonic::Status;

/// The OpenAI chat body of a gRPC request. JSON carried as text
/// (`parameters_json`, `tool_choice_json`) is parsed here, so bad JSON is
/// the caller's error naming its field, never a backend's 400.
pub fn chat_body(req: &ChatRequest) -> Result<serde_json::Value, Status> {
    if req.model.is_empty() {
        return Err(Status::invalid_argument("model: must not be empty"));
    }
    if req.messages.is_empty() {
        return Err(Status::invalid_argument("messages: must not be empty"));
    }
    let messages = req
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| message_json(i, m))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = json!({
        "model": req.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if !req.tools.is_empty() {
        let tools = req
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| tool_json(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        body["tools"] = json!(tools);
    }
    if !req.tool_choice_json.trim().is_empty() {
        let choice: serde_json::Value = serde_json::from_str(&req.tool_choice_json)
            .map_err(|e| Status::invalid_argument(format!("tool_choice_json: not JSON: {e}")))?;
        let valid = match &choice {
            serde_json::Value::String(s) => ["none", "auto", "required"].contains(&s.as_str()),
            serde_json::Value::Object(_) => choice["function"]["name"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            _ => false,
        };
        if !valid {
            return Err(Status::invalid_argument(
                "tool_choice_json: must be \"none\", \"auto\", \"required\" or {\"type\":\"function\",\"function\":{\"name\":...}}",
            ));
        }
        body["tool_choice"] = choice;
    }
    if let Some(p) = req.parallel_tool_calls {
        body["parallel_tool_calls"] = json!(p);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(m) = req.max_tokens {
        body["max_tokens"] = json!(m);
    }
    if let Some(s) = req.seed {
        body["seed"] = json!(s);
    }
    if !req.stop.is_empty() {
        body["stop"] = json!(req.stop);
    }
    if !req.user.is_empty() {
        body["user"] = json!(req.user);
    }
    Ok(body)
}

/// One message as OpenAI has it: an assistant turn's `tool_calls` with
/// `content: null` when it said nothing else, a tool turn's `tool_call_id`.
fn message_json(i: usize, m: &ChatMessage) -> Result<serde_json::Value, Status> {
    if m.role.is_empty() {
        return Err(Status::invalid_argument(format!(
            "messages[{i}].role: must not be empty"
        )));
    }
    let mut message = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        let calls = m
            .tool_calls
            .iter()
            .enumerate()
            .map(|(j, c)| {
                if c.id.is_empty() || c.name.is_empty() {
                    return Err(Status::invalid_argument(format!(
                        "messages[{i}].tool_calls[{j}]: id and name must not be empty"
                    )));
                }
                Ok(json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }))
            })
            .collect::<Result<Vec<_>, _>>()?;
        message["tool_calls"] = json!(calls);
        if m.content.is_empty() {
            message["content"] = serde_json::Value::Null;
        }
    }
    if m.role == "tool" && m.tool_call_id.is_empty() {
        return Err(Status::invalid_argument(format!(
            "messages[{i}].tool_call_id: a tool message must name the call it answers"
        )));
    }
    if !m.tool_call_id.is_empty() {
        message["tool_call_id"] = json!(m.tool_call_id);
    }
    if !m.name.is_empty() {
        message["name"] = json!(m.name);
    }
    Ok(message)
}

fn tool_json(i: usize, t: &ToolDefinition) -> Result<serde_json::Value, Status> {
    if t.name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "tools[{i}].name: must not be empty"
        )));
    }
    let mut function = json!({"name": t.name});
    if !t.description.is_empty() {
        function["description"] = json!(t.description);
    }
    if !t.parameters_json.trim().is_empty() {
        let parameters: serde_json::Value =
            serde_json::from_str(&t.parameters_json).map_err(|e| {
                Status::invalid_argument(format!("tools[{i}].parameters_json: not JSON: {e}"))
            })?;
        if !parameters.is_object() {
            return Err(Status::invalid_argument(format!(
                "tools[{i}].parameters_json: must be a JSON Schema object"
            )));
        }
        function["parameters"] = parameters;
    }
    Ok(json!({"type": "function", "function": function}))
}

/// One SSE `data:` payload of a chat.completion.chunk as a ChatChunk.
pub fn chunk_of(value: &serde_json::Value) -> ChatChunk {
    let choice = &value["choices"][0];
    ChatChunk {
        delta: choice["delta"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        finish_reason: choice["finish_reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        usage: value["usage"].as_object().map(|u| ChatUsage {
            prompt_tokens: u
                .get("prompt_tokens")
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
            completion_tokens: u
                .get("completion_tokens")
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
        }),
        model: value["model"].as_str().unwrap_or_default().to_owned(),
        tool_calls: choice["delta"]["tool_calls"]
            .as_array()
            .map(|calls| calls.iter().map(tool_call_delta).collect())
            .unwrap_or_default(),
    }
}

/// One `delta.tool_calls[]` piece; a missing `index` is the first call
/// (servers that send whole calls in one chunk may leave it out).
fn tool_call_delta(call: &serde_json::Value) -> ToolCallDelta {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    ToolCallDelta {
        index: call["index"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0),
        id: text(&call["id"]),
        name: text(&call["function"]["name"]),
        arguments: text(&call["function"]["arguments"]),
    }
}

/// The OpenAI embeddings body of an `EmbedRequest`; vectors as floats.
pub fn embed_body(req: &EmbedRequest) -> Result<serde_json::Value, Status> {
    if req.model.is_empty() {
        return Err(Status::invalid_argument("model: must not be empty"));
    }
    if req.input.is_empty() {
        return Err(Status::invalid_argument("input: must not be empty"));
    }
    if let Some(i) = req.input.iter().position(String::is_empty) {
        return Err(Status::invalid_argument(format!(
            "input[{i}]: must not be empty"
        )));
    }
    let mut body = json!({
        "model": req.model,
        "input": req.input,
        "encoding_format": "float",
    });
    match req.dimensions {
        Some(0) => {
            return Err(Status::invalid_argument("dimensions: must be at least 1"));
        }
        Some(d) => body["dimensions"] = json!(d),
        None => {}
    }
    if !req.user.is_empty() {
        body["user"] = json!(req.user);
    }
    Ok(body)
}

/// A backend's embeddings answer as an `EmbedResponse`, sorted by index;
/// `inputs` vectors are expected, each of numbers.
pub fn embed_response(bytes: &[u8], inputs: usize) -> Result<EmbedResponse, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let data = value["data"].as_array().ok_or("no data array")?;
    let mut out = Vec::with_capacity(data.len());
    for (i, item) in data.iter().enumerate() {
        let values = item["embedding"]
            .as_array()
            .ok_or_else(|| format!("data[{i}].embedding is not an array of numbers"))?
            .iter()
            .map(|v| v.as_f64().map(|f| f as f32))
            .collect::<Option<Vec<f32>>>()
            .ok_or_else(|| format!("data[{i}].embedding is not an array of numbers"))?;
        let index = item["index"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::try_from(i).unwrap_or(u32::MAX));
        out.push(Embedding { index, values });
    }
    if out.len() != inputs {
        return Err(format!("{} vectors for {inputs} inputs", out.len()));
    }
    out.sort_by_key(|e| e.index);
    let usage = value["usage"].as_object().map(|u| {
        let prompt = u
            .get("prompt_tokens")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        ChatUsage {
            prompt_tokens: prompt,
            completion_tokens: 0,
        }
    });
    Ok(EmbedResponse {
        data: out,
        model: value["model"].as_str().unwrap_or_default().to_owned(),
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits;

    #[test]
    fn chunk_parsing_reads_delta_finish_and_usage() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"model":"m","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#,
        )
        .unwrap();
        let c = chunk_of(&v);
        assert_eq!(
            (c.delta.as_str(), c.finish_reason.as_str(), c.model.as_str()),
            ("hi", "", "m")
        );
        assert!(c.usage.is_none());
        let v: serde_json::Value = serde_json::from_str(
            r#"{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
        )
        .unwrap();
        let u = chunk_of(&v).usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 5));
    }

    #[test]
    fn request_body_passes_parameters() {
        let body = chat_body(&ChatRequest {
            model: "m".into(),
            messages: vec![mesh_proto::ChatMessage {
                role: "user".into(),
                content: "x".into(),
                ..Default::default()
            }],
            temperature: Some(0.5),
            max_tokens: Some(7),
            seed: Some(42),
            stop: vec!["\n".into()],
            request_id: "t:1".into(),
            user: "end-user-7".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(body["user"], "end-user-7", "user passes through");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["seed"], 42);
        assert_eq!(body["stop"][0], "\n");
        assert_eq!(body["temperature"], 0.5);
    }

    fn tool_request() -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![
                ChatMessage {
                    role: "user".into(),
                    content: "weather in Paris?".into(),
                    ..Default::default()
                },
                ChatMessage {
                    role: "assistant".into(),
                    tool_calls: vec![mesh_proto::ToolCall {
                        id: "call_1".into(),
                        name: "weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }],
                    ..Default::default()
                },
                ChatMessage {
                    role: "tool".into(),
                    content: "sunny".into(),
                    tool_call_id: "call_1".into(),
                    name: "weather".into(),
                    ..Default::default()
                },
            ],
            tools: vec![
                ToolDefinition {
                    name: "weather".into(),
                    description: "current weather".into(),
                    parameters_json: r#"{"type":"object","properties":{"city":{"type":"string"}}}"#
                        .into(),
                },
                ToolDefinition {
                    name: "noop".into(),
                    ..Default::default()
                },
            ],
            tool_choice_json: r#"{"type":"function","function":{"name":"weather"}}"#.into(),
            parallel_tool_calls: Some(false),
            ..Default::default()
        }
    }

    #[test]
    fn tools_and_tool_turns_become_openai_json() {
        let body = chat_body(&tool_request()).unwrap();
        assert_eq!(body["tools"][0]["type"], "function");
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
        assert_eq!(
            body["tools"][0]["function"]["description"],
            "current weather"
        );
        assert_eq!(
            body["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert!(body["tools"][1]["function"].get("parameters").is_none());
        assert_eq!(body["tool_choice"]["function"]["name"], "weather");
        assert_eq!(body["parallel_tool_calls"], false);
        let assistant = &body["messages"][1];
        assert!(
            assistant["content"].is_null(),
            "a pure tool call has no text"
        );
        assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
        assert_eq!(assistant["tool_calls"][0]["type"], "function");
        assert_eq!(
            assistant["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        let tool = &body["messages"][2];
        assert_eq!(
            (tool["tool_call_id"].as_str(), tool["name"].as_str()),
            (Some("call_1"), Some("weather"))
        );
        assert!(body["messages"][0].get("tool_call_id").is_none());
        let auto = chat_body(&ChatRequest {
            tool_choice_json: "\"required\"".into(),
            ..tool_request()
        })
        .unwrap();
        assert_eq!(auto["tool_choice"], "required");
    }

    #[test]
    fn bad_tool_json_is_invalid_argument_naming_the_field() {
        type Spoil = fn(&mut ChatRequest);
        let cases: [(Spoil, &str); 6] = [
            (
                |r| r.tools[1].parameters_json = "{oops".into(),
                "tools[1].parameters_json",
            ),
            (
                |r| r.tools[0].parameters_json = "[1]".into(),
                "tools[0].parameters_json",
            ),
            (|r| r.tools[1].name = String::new(), "tools[1].name"),
            (|r| r.tool_choice_json = "{".into(), "tool_choice_json"),
            (
                |r| r.tool_choice_json = "\"sometimes\"".into(),
                "tool_choice_json",
            ),
            (
                |r| r.messages[2].tool_call_id = String::new(),
                "messages[2].tool_call_id",
            ),
        ];
        for (spoil, field) in cases {
            let mut request = tool_request();
            spoil(&mut request);
            let status = chat_body(&request).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{field}");
            assert!(
                status.message().starts_with(field),
                "{field}: {}",
                status.message()
            );
        }
    }

    #[test]
    fn streamed_tool_call_pieces_become_deltas() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"model":"m","choices":[{"index":0,"delta":{"tool_calls":[
                {"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}},
                {"index":1,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}]}"#,
        )
        .unwrap();
        let c = chunk_of(&v);
        assert_eq!(c.delta, "");
        assert_eq!(c.tool_calls.len(), 2);
        assert_eq!(
            (
                c.tool_calls[0].index,
                c.tool_calls[0].id.as_str(),
                c.tool_calls[0].name.as_str()
            ),
            (0, "call_1", "weather")
        );
        assert_eq!(
            (c.tool_calls[1].index, c.tool_calls[1].arguments.as_str()),
            (1, "{\"ci")
        );
    }

    #[test]
    fn tools_count_in_the_token_estimate_and_the_cache_key() {
        let plain = ChatRequest {
            tools: Vec::new(),
            tool_choice_json: String::new(),
            ..tool_request()
        };
        let with = chat_body(&tool_request()).unwrap();
        let without = chat_body(&plain).unwrap();
        let len = |v: &serde_json::Value| serde_json::to_vec(v).unwrap().len();
        assert!(
            limits::estimate_tokens(&with, len(&with), 16)
                > limits::estimate_tokens(&without, len(&without), 16)
        );
        assert_ne!(
            crate::cache::key("t", "m", &with),
            crate::cache::key("t", "m", &without)
        );
    }

    #[test]
    fn embed_requests_are_validated_and_answers_read_in_order() {
        let req = EmbedRequest {
            model: "e".into(),
            input: vec!["a".into(), "b c".into()],
            dimensions: Some(8),
            user: "u".into(),
        };
        let body = embed_body(&req).unwrap();
        assert_eq!(body["input"][1], "b c");
        assert_eq!(body["dimensions"], 8);
        assert_eq!(body["encoding_format"], "float");
        for (spoil, field) in [
            (
                EmbedRequest {
                    input: vec![],
                    ..req.clone()
                },
                "input",
            ),
            (
                EmbedRequest {
                    input: vec!["a".into(), String::new()],
                    ..req.clone()
                },
                "input[1]",
            ),
            (
                EmbedRequest {
                    dimensions: Some(0),
                    ..req.clone()
                },
                "dimensions",
            ),
            (
                EmbedRequest {
                    model: String::new(),
                    ..req.clone()
                },
                "model",
            ),
        ] {
            let status = embed_body(&spoil).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{field}: {status:?}");
        }
        let answer = br#"{"model":"e","data":[{"index":1,"embedding":[0.5]},{"index":0,"embedding":[1,2]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        let response = embed_response(answer, 2).unwrap();
        assert_eq!(response.data[0].values, vec![1.0, 2.0]);
        assert_eq!(response.data[1].values, vec![0.5]);
        assert_eq!(response.usage.unwrap().prompt_tokens, 3);
        assert!(embed_response(answer, 3).is_err());
        assert!(embed_response(br#"{"data":[{"embedding":"AAAA"}]}"#, 1).is_err());
    }
}
