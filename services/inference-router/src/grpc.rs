//! The internal `InferenceService` used by agent workers: one chat request
//! in, a stream of deltas out, over the backend's OpenAI SSE stream.
//! Usage is always requested (`stream_options.include_usage`).
//!
//! A stream that breaks, or ends without `[DONE]`, ends with UNAVAILABLE,
//! never with a clean end-of-stream: the worker must not mistake a
//! truncated answer for a complete one.

use std::pin::Pin;
use std::time::Instant;

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use mesh_proto::inference_service_server::InferenceService;
use mesh_proto::{ChatChunk, ChatMessage, ChatRequest, ChatUsage, ToolCallDelta, ToolDefinition};
use serde_json::json;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use std::sync::Arc;

use crate::admission::AdmitError;
use crate::backend::BackendError;
use crate::limits::{self, Decision, Limiter, UsageTap, settle};
use crate::metrics::Metrics;
use crate::openai::{MODEL_HEADER, SESSION_HEADER, describe_backend_error};
use crate::pool::{Answer, Call, DispatchError, Router};
use crate::usage::{Accounting, Meter};

pub struct InferenceGrpc {
    pub router: Arc<Router>,
    pub metrics: Metrics,
    pub limiter: Limiter,
}

fn dispatch_status(error: &DispatchError) -> Status {
    match error {
        DispatchError::NoRoute { .. } => Status::not_found(error.to_string()),
        // Retryable for the worker: it naks with backoff.
        DispatchError::Admission(AdmitError::QueueFull { .. }) => {
            Status::resource_exhausted(error.to_string())
        }
        DispatchError::Admission(AdmitError::Timeout { .. } | AdmitError::NotReady { .. })
        | DispatchError::NoBackend { .. } => Status::unavailable(error.to_string()),
        DispatchError::Backend(error) => status_of(error),
    }
}

fn metadata_str<'a>(request: &'a Request<ChatRequest>, name: &str) -> Option<&'a str> {
    request
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Status>> + Send>>;

fn status_of(error: &BackendError) -> Status {
    let message = describe_backend_error(error);
    match error {
        BackendError::Unreachable(_) | BackendError::Connect(_) => Status::unavailable(message),
        BackendError::Timeout(_) => Status::deadline_exceeded(message),
        BackendError::Status { status, .. } => match *status {
            429 => Status::resource_exhausted(message),
            404 => Status::not_found(message),
            400 | 413 | 422 => Status::invalid_argument(message),
            401 | 403 => Status::failed_precondition(message),
            _ => Status::unavailable(message),
        },
    }
}

/// The OpenAI chat body of a gRPC request. JSON carried as text
/// (`parameters_json`, `tool_choice_json`) is parsed here, so bad JSON is
/// the caller's error naming its field, never a backend's 400.
fn openai_body(req: &ChatRequest) -> Result<serde_json::Value, Status> {
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
fn chunk_of(value: &serde_json::Value) -> ChatChunk {
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

#[tonic::async_trait]
impl InferenceService for InferenceGrpc {
    type ChatStreamStream = ChunkStream;

    async fn chat_stream(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        let span = mesh_runtime::grpc::server_span(&request, "ChatStream");
        let model_header = metadata_str(&request, MODEL_HEADER).map(str::to_owned);
        let session_header = metadata_str(&request, SESSION_HEADER).map(str::to_owned);
        let req = request.into_inner();
        // The field over the metadata: it is what a worker sets per session.
        let session = Some(req.session_id.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or(session_header);
        tracing::debug!(parent: &span, request_id = %req.request_id, tools = req.tools.len(), "chat stream");
        let started = Instant::now();
        let value = openai_body(&req)?;
        let body = serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?;
        let prompt = limits::prompt_estimate(body.len());
        let table = self.router.table();
        let tenants = &table.spec.tenants;
        let estimate = limits::estimate_tokens(&value, body.len(), tenants.default_max_tokens);
        let reservation = match self.limiter.admit(tenants, &tenant, estimate).await {
            Decision::Allowed(reservation) => reservation,
            Decision::Limited { retry_after, kind } => {
                self.metrics.request("grpc_chat_stream", "rate_limited");
                let secs = crate::openai::retry_after_secs(retry_after);
                let mut status = Status::resource_exhausted(format!(
                    "tenant {kind} per minute limit reached, retry in {secs}s"
                ));
                status.metadata_mut().insert(
                    "retry-after",
                    secs.to_string()
                        .parse()
                        .map_err(|_| Status::internal("retry-after"))?,
                );
                return Err(status);
            }
        };
        let call = Call {
            model: model_header.as_deref().unwrap_or(&req.model),
            session: session.as_deref(),
            path: "/v1/chat/completions",
            body: body.into(),
            streaming: true,
        };
        let dispatched = self.router.dispatch(call).instrument(span.clone()).await;
        let dispatched = match dispatched {
            Ok(d) => d,
            Err(error) => {
                settle(&self.limiter, reservation, 0);
                let outcome = match error {
                    DispatchError::Admission(_) => "rejected",
                    _ => "error",
                };
                self.metrics.request("grpc_chat_stream", outcome);
                tracing::warn!(parent: &span, %tenant, error = %error, "backend call failed");
                return Err(dispatch_status(&error));
            }
        };
        self.metrics.request("grpc_chat_stream", "ok");
        let metrics = self.metrics.clone();
        let admitted = dispatched.hold;
        let bytes = match dispatched.answer {
            Answer::Stream(stream) => stream,
            Answer::Whole(response) => Box::pin(response.bytes_stream()),
        };
        let mut events = bytes.eventsource();
        let routed_model = model_header.as_deref().unwrap_or(&req.model);
        let meter = Meter::new(
            &self.metrics,
            &table.spec.prices,
            &tenant,
            routed_model,
            "chat",
        );
        let mut accounting = Accounting::new(
            self.limiter.clone(),
            reservation,
            UsageTap::new(prompt),
            meter,
        );
        let stream = async_stream_of(move |tx| async move {
            let _slot = admitted;
            let mut first = true;
            let mut content_chunks = 0u64;
            let mut usage_seen = false;
            loop {
                match events.next().await {
                    Some(Ok(event)) => {
                        accounting.tap.feed_event(event.data.as_bytes());
                        if event.data.trim() == "[DONE]" {
                            if !usage_seen {
                                // Servers that ignore `stream_options.include_usage`
                                // (llama.cpp's) send no usage: count the streamed
                                // chunks, one token each in practice; prompt tokens
                                // stay unknown (0).
                                let usage = ChatUsage {
                                    prompt_tokens: 0,
                                    completion_tokens: content_chunks,
                                };
                                let _ = tx
                                    .send(Ok(ChatChunk {
                                        usage: Some(usage),
                                        ..Default::default()
                                    }))
                                    .await;
                            }
                            return;
                        }
                        if event.event == "error" {
                            let _ = tx
                                .send(Err(Status::unavailable(format!(
                                    "model backend stream error: {}",
                                    event.data
                                ))))
                                .await;
                            return;
                        }
                        let value: serde_json::Value = match serde_json::from_str(&event.data) {
                            Ok(v) => v,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(Status::unavailable(format!(
                                        "model backend sent a malformed chunk: {e}"
                                    ))))
                                    .await;
                                return;
                            }
                        };
                        if value.get("error").is_some() {
                            let _ = tx
                                .send(Err(Status::unavailable(format!(
                                    "model backend stream error: {}",
                                    value["error"]
                                ))))
                                .await;
                            return;
                        }
                        let chunk = chunk_of(&value);
                        usage_seen |= chunk.usage.is_some();
                        let produced = !chunk.delta.is_empty() || !chunk.tool_calls.is_empty();
                        if produced {
                            content_chunks += 1;
                        }
                        if first && produced {
                            first = false;
                            metrics
                                .time_to_first_token
                                .observe(started.elapsed().as_secs_f64());
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            return; // the caller went away
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "model backend stream broke: {e}"
                            ))))
                            .await;
                        return;
                    }
                    None => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "model backend stream ended before [DONE]",
                            )))
                            .await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a producer task through a small channel; the task ends
/// when the consumer drops the stream.
fn async_stream_of<F, Fut>(producer: F) -> ChunkStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ChatChunk, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(producer(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let body = openai_body(&ChatRequest {
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
        let body = openai_body(&tool_request()).unwrap();
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
        let auto = openai_body(&ChatRequest {
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
            let status = openai_body(&request).unwrap_err();
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
        let with = openai_body(&tool_request()).unwrap();
        let without = openai_body(&plain).unwrap();
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
    fn backend_statuses_map_to_retryable_or_not() {
        let s = |status| {
            status_of(&BackendError::Status {
                status,
                body: Default::default(),
            })
            .code()
        };
        assert_eq!(s(503), tonic::Code::Unavailable);
        assert_eq!(s(429), tonic::Code::ResourceExhausted);
        assert_eq!(s(400), tonic::Code::InvalidArgument);
        assert_eq!(s(404), tonic::Code::NotFound);
        assert_eq!(
            status_of(&BackendError::Unreachable("x".into())).code(),
            tonic::Code::Unavailable
        );
    }
}
