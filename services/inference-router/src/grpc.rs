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
use mesh_proto::{ChatChunk, ChatRequest, ChatUsage};
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
        DispatchError::Admission(AdmitError::Timeout { .. }) | DispatchError::NoBackend { .. } => {
            Status::unavailable(error.to_string())
        }
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
        BackendError::Unreachable(_) => Status::unavailable(message),
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

fn openai_body(req: &ChatRequest) -> serde_json::Value {
    let mut body = json!({
        "model": req.model,
        "messages": req.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "stream": true,
        "stream_options": {"include_usage": true},
    });
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
    if !req.request_id.is_empty() {
        body["user"] = json!(req.request_id);
    }
    body
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
        let session = metadata_str(&request, SESSION_HEADER).map(str::to_owned);
        let req = request.into_inner();
        if req.model.is_empty() {
            return Err(Status::invalid_argument("model: must not be empty"));
        }
        if req.messages.is_empty() {
            return Err(Status::invalid_argument("messages: must not be empty"));
        }
        let started = Instant::now();
        let value = openai_body(&req);
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
                        if !chunk.delta.is_empty() {
                            content_chunks += 1;
                        }
                        if first && !chunk.delta.is_empty() {
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
            ..Default::default()
        });
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["seed"], 42);
        assert_eq!(body["stop"][0], "\n");
        assert_eq!(body["temperature"], 0.5);
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
