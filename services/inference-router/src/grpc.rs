//! The internal `InferenceService` used by agent workers: one chat request
//! in, a stream of deltas out, over the backend's OpenAI SSE stream; and
//! embeddings. Usage is always requested (`stream_options.include_usage`).
//! The JSON conversions live in `wire`.
//!
//! Around dispatch, as on the HTTP face: the tenant's limits, then for a
//! deterministic chat request the response cache (shared with the HTTP
//! face: the same key for the same body), whose stored SSE stream is
//! replayed as chunks (`x-agentmesh-cache: hit|miss` in the response
//! metadata), and usage accounting when the answer ends.
//!
//! A stream that breaks, or ends without `[DONE]`, ends with UNAVAILABLE,
//! never with a clean end-of-stream: the worker must not mistake a
//! truncated answer for a complete one.

mod wire;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use mesh_proto::inference_service_server::InferenceService;
use mesh_proto::{ChatChunk, ChatRequest, ChatUsage, EmbedRequest, EmbedResponse};
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::admission::AdmitError;
use crate::backend::BackendError;
use crate::cache::{self, Cache, Capture};
use crate::limits::{self, Decision, Limiter, Reservation, UsageTap, settle};
use crate::metrics::Metrics;
use crate::openai::{CACHE_HEADER, MODEL_HEADER, SESSION_HEADER, describe_backend_error};
use crate::pool::{Answer, Call, DispatchError, Hold, Router, Table};
use crate::usage::{Accounting, Generation, Meter};

pub struct InferenceGrpc {
    pub router: Arc<Router>,
    pub metrics: Metrics,
    pub limiter: Limiter,
    pub cache: Cache,
    /// Where stream producers run, so shutdown waits for them.
    pub tasks: TaskTracker,
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

fn metadata_str<'a, T>(request: &'a Request<T>, name: &str) -> Option<&'a str> {
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

fn dispatch_outcome(error: &DispatchError) -> &'static str {
    match error {
        DispatchError::Admission(_) => "rejected",
        _ => "error",
    }
}

/// What a relayed stream accounts for: its tokens, its backend slot and
/// its time to first token. A replay from the cache has none of them.
pub(crate) struct Live {
    accounting: Accounting,
    _hold: Hold,
    started: Instant,
    metrics: Metrics,
}

impl InferenceGrpc {
    /// Charges the request to its tenant; the `Err` is the refusal.
    async fn admit(
        &self,
        table: &Table,
        tenant: &str,
        estimate: u64,
        api: &str,
    ) -> Result<Option<Reservation>, Status> {
        match self
            .limiter
            .admit(&table.spec.tenants, tenant, estimate)
            .await
        {
            Decision::Allowed(reservation) => Ok(reservation),
            Decision::Limited { retry_after, kind } => {
                self.metrics.request(api, "rate_limited");
                let secs = crate::openai::retry_after_secs(retry_after);
                let mut status = Status::resource_exhausted(format!(
                    "tenant {kind} per minute limit reached, retry in {secs}s"
                ));
                status
                    .metadata_mut()
                    .insert("retry-after", MetadataValue::from(secs));
                Err(status)
            }
        }
    }

    /// Relays an SSE byte stream as chunks, from a producer task under the
    /// service's tracker that ends when the caller drops the stream.
    fn relay<S, E>(&self, bytes: S, live: Option<Live>) -> ChunkStream
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        self.tasks.spawn(pump(bytes, live, tx));
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

/// Reads SSE events into chunks until `[DONE]`, an error, or the caller
/// leaving.
pub(crate) async fn pump<S, E>(
    bytes: S,
    mut live: Option<Live>,
    tx: tokio::sync::mpsc::Sender<Result<ChatChunk, Status>>,
) where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display + Send,
{
    let mut events = bytes.eventsource();
    let mut first = true;
    let mut content_chunks = 0u64;
    let mut usage_seen = false;
    let fail = |message: String| Err(Status::unavailable(message));
    loop {
        let event = match events.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => {
                let _ = tx
                    .send(fail(format!("model backend stream broke: {e}")))
                    .await;
                return;
            }
            None => {
                let _ = tx
                    .send(fail("model backend stream ended before [DONE]".to_owned()))
                    .await;
                return;
            }
        };
        if let Some(live) = &mut live {
            live.accounting.tap.feed_event(event.data.as_bytes());
        }
        if event.data.trim() == "[DONE]" {
            if !usage_seen {
                // Servers that ignore `stream_options.include_usage`
                // (llama.cpp's) send no usage: count the streamed chunks,
                // one token each in practice; prompt tokens stay unknown (0).
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
                .send(fail(format!("model backend stream error: {}", event.data)))
                .await;
            return;
        }
        let value: serde_json::Value = match serde_json::from_str(&event.data) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx
                    .send(fail(format!("model backend sent a malformed chunk: {e}")))
                    .await;
                return;
            }
        };
        if value.get("error").is_some() {
            let _ = tx
                .send(fail(format!(
                    "model backend stream error: {}",
                    value["error"]
                )))
                .await;
            return;
        }
        let chunk = wire::chunk_of(&value);
        usage_seen |= chunk.usage.is_some();
        let produced = !chunk.delta.is_empty() || !chunk.tool_calls.is_empty();
        if produced {
            content_chunks += 1;
            if first && let Some(live) = &live {
                live.metrics
                    .time_to_first_token
                    .observe(live.started.elapsed().as_secs_f64());
            }
            first = false;
        }
        if tx.send(Ok(chunk)).await.is_err() {
            return; // the caller went away
        }
    }
}

#[tonic::async_trait]
impl InferenceService for InferenceGrpc {
    type ChatStreamStream = ChunkStream;

    async fn chat_stream(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::ChatStreamStream>, Status> {
        const API: &str = "grpc_chat_stream";
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
        let value = wire::chat_body(&req)?;
        let body = serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?;
        let prompt = limits::prompt_estimate(body.len());
        let table = self.router.table();
        let estimate =
            limits::estimate_tokens(&value, body.len(), table.spec.tenants.default_max_tokens);
        let reservation = self.admit(&table, &tenant, estimate, API).await?;
        let routed_model = model_header.as_deref().unwrap_or(&req.model);
        // Deterministic requests are answered from the cache when they can
        // be; a hit uses no model tokens, so its reservation is refunded.
        let cached = table.spec.cache.as_ref().and_then(|spec| {
            (self.cache.enabled() && cache::deterministic(&value))
                .then(|| (cache::key(&tenant, routed_model, &value), spec.ttl))
        });
        if let Some((key, _)) = &cached
            && let Some(stored) = self.cache.get(key).await
        {
            settle(&self.limiter, reservation, 0);
            self.metrics.request(API, "cache_hit");
            let events = futures::stream::iter(
                cache::replay_events(&stored)
                    .into_iter()
                    .map(Ok::<_, std::io::Error>),
            );
            let mut response = Response::new(self.relay(events, None));
            response
                .metadata_mut()
                .insert(CACHE_HEADER, MetadataValue::from_static("hit"));
            return Ok(response);
        }
        let call = Call {
            model: routed_model,
            session: session.as_deref(),
            path: "/v1/chat/completions",
            body: body.into(),
            streaming: true,
        };
        let dispatched = match self.router.dispatch(call).instrument(span.clone()).await {
            Ok(d) => d,
            Err(error) => {
                settle(&self.limiter, reservation, 0);
                self.metrics.request(API, dispatch_outcome(&error));
                tracing::warn!(parent: &span, %tenant, error = %error, "backend call failed");
                return Err(dispatch_status(&error));
            }
        };
        self.metrics.request(API, "ok");
        let bytes = match dispatched.answer {
            Answer::Stream(stream) => stream,
            Answer::Whole(response) => Box::pin(response.bytes_stream()),
        };
        // What the backend sent, stored when it ended complete (`[DONE]`,
        // no error event) as the HTTP face stores it.
        let cache_state = if cached.is_some() { "miss" } else { "" };
        let mut capture = cached.map(|(key, ttl)| Capture::new(self.cache.clone(), key, ttl));
        let bytes = bytes.map(move |item| {
            if let (Ok(chunk), Some(capture)) = (&item, &mut capture) {
                capture.feed(chunk);
            }
            item
        });
        let meter = Meter::new(
            &self.metrics,
            &table.spec.prices,
            &tenant,
            routed_model,
            "chat",
            Generation::Caller,
        );
        let live = Live {
            accounting: Accounting::new(
                self.limiter.clone(),
                reservation,
                UsageTap::new(prompt),
                meter,
            ),
            _hold: dispatched.hold,
            started,
            metrics: self.metrics.clone(),
        };
        let mut response = Response::new(self.relay(Box::pin(bytes), Some(live)));
        if !cache_state.is_empty() {
            response
                .metadata_mut()
                .insert(CACHE_HEADER, MetadataValue::from_static(cache_state));
        }
        Ok(response)
    }

    async fn embed(
        &self,
        request: Request<EmbedRequest>,
    ) -> Result<Response<EmbedResponse>, Status> {
        const API: &str = "grpc_embed";
        let tenant = mesh_runtime::grpc::tenant_of(&request)?;
        let span = mesh_runtime::grpc::server_span(&request, "Embed");
        let model_header = metadata_str(&request, MODEL_HEADER).map(str::to_owned);
        let session = metadata_str(&request, SESSION_HEADER).map(str::to_owned);
        let req = request.into_inner();
        let value = wire::embed_body(&req)?;
        let body = serde_json::to_vec(&value).map_err(|e| Status::internal(e.to_string()))?;
        let prompt = limits::prompt_estimate(body.len());
        let table = self.router.table();
        let reservation = self.admit(&table, &tenant, prompt, API).await?;
        let routed_model = model_header.as_deref().unwrap_or(&req.model);
        let call = Call {
            model: routed_model,
            session: session.as_deref(),
            path: "/v1/embeddings",
            body: body.into(),
            streaming: false,
        };
        let dispatched = match self.router.dispatch(call).instrument(span.clone()).await {
            Ok(d) => d,
            Err(error) => {
                settle(&self.limiter, reservation, 0);
                self.metrics.request(API, dispatch_outcome(&error));
                tracing::warn!(parent: &span, %tenant, error = %error, "backend call failed");
                return Err(dispatch_status(&error));
            }
        };
        let meter = Meter::new(
            &self.metrics,
            &table.spec.prices,
            &tenant,
            routed_model,
            "embeddings",
            Generation::Caller,
        );
        let mut accounting = Accounting::new(
            self.limiter.clone(),
            reservation,
            UsageTap::new(prompt),
            meter,
        );
        let Answer::Whole(response) = dispatched.answer else {
            // The pool streams only when asked to, and this call did not ask.
            self.metrics.request(API, "error");
            return Err(Status::unavailable(
                "model backend streamed an embeddings answer",
            ));
        };
        let bytes = response.bytes().await;
        drop(dispatched.hold);
        let bytes = bytes.map_err(|e| {
            self.metrics.request(API, "error");
            Status::unavailable(format!("model backend response broke: {e}"))
        })?;
        accounting.tap.feed_json(&bytes);
        let answer = wire::embed_response(&bytes, req.input.len()).map_err(|e| {
            self.metrics.request(API, "error");
            Status::unavailable(format!("model backend sent bad embeddings: {e}"))
        })?;
        self.metrics.request(API, "ok");
        Ok(Response::new(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
