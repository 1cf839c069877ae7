//! HTTP routes and request handling: admission, simulated timing, streaming.
//!
//! A request holds a generation slot (a semaphore permit) from admission
//! until its last byte is produced; for streams the permit lives inside the
//! body stream, so a client that hangs up frees its slot. Handlers must
//! never panic on input: everything a client sends ends as a response.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{StreamExt as _, stream};
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::sync::CancellationToken;

use crate::config::{FailureMode, SimConfig};
use crate::generate::{Completion, Tokens, prompt_tokens};
use crate::metrics::{self, Metrics};
use crate::openai::{
    ApiError, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice, ChunkChoice, Delta,
    Usage, ValidChat,
};

struct AppState {
    config: SimConfig,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Chat requests seen so far, for [`FailureMode::FirstN`].
    requests_seen: AtomicU64,
    metrics: Metrics,
    started_at: u64,
    /// When the simulated model has loaded ([`SimConfig::startup_delay`]).
    ready_at: Instant,
    /// Ends injected hangs when the server stops.
    shutdown: CancellationToken,
}

/// Builds the simulator's routes for `config`; `shutdown` releases
/// requests held by an injected timeout.
pub fn router(config: SimConfig, shutdown: CancellationToken) -> Router {
    let state = Arc::new(AppState {
        slots: Arc::new(Semaphore::new(config.max_concurrency)),
        waiting: AtomicUsize::new(0),
        requests_seen: AtomicU64::new(0),
        metrics: Metrics::new(&config.model),
        started_at: unix_now(),
        ready_at: Instant::now() + config.startup_delay,
        shutdown,
        config,
    });
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .route("/metrics", get(render_metrics))
        // `/health` is vLLM's probe path, `/healthz` agentmesh's.
        .route("/health", get(health))
        .route("/healthz", get(health))
        .with_state(state)
}

/// 503 while the model loads, like vLLM's and TGI's probes.
async fn health(State(state): State<Arc<AppState>>) -> StatusCode {
    if state.loading() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

impl AppState {
    fn loading(&self) -> bool {
        Instant::now() < self.ready_at
    }

    /// Requests holding a generation slot now.
    fn running(&self) -> usize {
        self.config
            .max_concurrency
            .saturating_sub(self.slots.available_permits())
    }

    /// `base` stretched by the load now ([`SimConfig::loaded`]).
    fn loaded(&self, base: Duration) -> Duration {
        self.config.loaded(base, self.running())
    }
}

/// The answer while the model loads.
fn loading() -> ApiError {
    ApiError {
        message: "the model is still loading".to_owned(),
        ..ApiError::injected(503)
    }
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    if state.loading() {
        return loading().into_response();
    }
    let body = serde_json::json!({
        "object": "list",
        "data": [{
            "id": state.config.model,
            "object": "model",
            "created": state.started_at,
            "owned_by": "agentmesh-model-sim",
            "root": state.config.model,
            "max_model_len": crate::openai::MAX_TOKENS_LIMIT,
        }],
    });
    axum::Json(body).into_response()
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> Response {
    let max = state.config.max_concurrency;
    let running = max.saturating_sub(state.slots.available_permits());
    let waiting = state.waiting.load(Ordering::SeqCst);
    let text = state.metrics.render(running, waiting, max);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match handle_chat(state, body).await {
        Ok(response) => response,
        Err(err) => {
            tracing::debug!(status = %err.status, message = %err.message, "chat completion rejected");
            err.into_response()
        }
    }
}

/// Embeddings are computed at once: no generation slot, no simulated
/// latency, but injected failures apply as for chat.
async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        hang_if_injected(&state).await?;
        inject_failure(&state)
    }
    .await
    .and_then(|()| {
        body.map_err(|rejection| ApiError {
            status: rejection.status(),
            ..ApiError::invalid(rejection.body_text(), None)
        })
    })
    .and_then(|body| crate::embed::respond(&body, &state.config.model, state.config.embedding_dim));
    match answer {
        Ok(value) => axum::Json(value).into_response(),
        Err(err) => err.into_response(),
    }
}

async fn handle_chat(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    // Injected failures come first: a broken server does not read the body.
    hang_if_injected(&state).await?;
    inject_failure(&state)?;
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        ..ApiError::invalid(rejection.body_text(), None)
    })?;
    let chat = ChatRequest::parse(&body)?.validate(&state.config.model)?;

    let permit = admit(&state).await?;
    let job = Job::new(&state, chat, arrived);
    state.metrics.add_prompt_tokens(job.prompt_tokens);
    tracing::debug!(
        stream = job.stream,
        completion_tokens = job.completion.generated,
        prompt_tokens = job.prompt_tokens,
        "chat completion admitted"
    );
    if job.stream {
        Ok(stream_response(state, job, permit))
    } else {
        Ok(complete(&state, job, permit).await)
    }
}

/// A loading model answers 503; an injected timeout holds the request,
/// without a byte of answer, until the client leaves (dropping this
/// future) or the server stops.
async fn hang_if_injected(state: &AppState) -> Result<(), ApiError> {
    if state.loading() {
        return Err(loading());
    }
    let hang = match state.config.failure {
        FailureMode::Timeout => true,
        FailureMode::TimeoutFirstN(n) => {
            state.requests_seen.fetch_add(1, Ordering::SeqCst) < u64::from(n)
        }
        FailureMode::TimeoutEvery(n) => nth(state, n),
        _ => false,
    };
    if hang {
        tracing::info!("simulating a request that never answers");
        state.shutdown.cancelled().await;
        return Err(shutting_down());
    }
    Ok(())
}

fn inject_failure(state: &AppState) -> Result<(), ApiError> {
    match state.config.failure {
        FailureMode::Always(status) => Err(ApiError::injected(status)),
        FailureMode::FirstN(n, status) => {
            let seen = state.requests_seen.fetch_add(1, Ordering::SeqCst);
            if seen < u64::from(n) {
                Err(ApiError::injected(status))
            } else {
                Ok(())
            }
        }
        FailureMode::Every(n, status) => {
            if nth(state, n) {
                Err(ApiError::injected(status))
            } else {
                Ok(())
            }
        }
        FailureMode::None
        | FailureMode::BreakStreamAfter(_)
        | FailureMode::Timeout
        | FailureMode::TimeoutFirstN(_)
        | FailureMode::TimeoutEvery(_) => Ok(()),
    }
}

/// Counts a request; whether it is the `n`th, `2n`th, ... one.
fn nth(state: &AppState, n: u32) -> bool {
    let seen = state.requests_seen.fetch_add(1, Ordering::SeqCst) + 1;
    seen.is_multiple_of(u64::from(n.max(1)))
}

/// Takes a generation slot, queueing for one while fewer than `max_waiting`
/// requests are queued; a full queue answers 429 at once.
async fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    match Arc::clone(&state.slots).try_acquire_owned() {
        Ok(permit) => return Ok(permit),
        Err(TryAcquireError::NoPermits) => {}
        Err(TryAcquireError::Closed) => return Err(shutting_down()),
    }
    let _waiting = WaitingSlot::enter(&state.waiting, state.config.max_waiting)
        .ok_or_else(ApiError::overloaded)?;
    Arc::clone(&state.slots)
        .acquire_owned()
        .await
        .map_err(|_closed| shutting_down())
}

fn shutting_down() -> ApiError {
    ApiError::injected(503)
}

/// Counts one queued request; the count drops when this does, including
/// when the client hangs up while queued.
struct WaitingSlot<'a>(&'a AtomicUsize);

impl<'a> WaitingSlot<'a> {
    fn enter(waiting: &'a AtomicUsize, max_waiting: usize) -> Option<Self> {
        waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max_waiting).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for WaitingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An admitted request, ready to generate.
struct Job {
    id: String,
    created: u64,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u32,
    /// Generated up front: the text is deterministic, only its delivery is
    /// paced.
    completion: Completion,
    arrived: Instant,
    /// `(call id, function name, arguments)` of the tool calls answered
    /// instead of text (a forced `tool_choice`, or a script's turn).
    tool_calls: Vec<(String, String, String)>,
}

impl Job {
    fn new(state: &AppState, chat: ValidChat, arrived: Instant) -> Self {
        let call_id = || format!("call_{}", uuid::Uuid::new_v4().simple());
        let script = crate::script::reply(&chat.messages);
        let (completion, tool_calls) = match (&chat.forced_tool, script) {
            (Some(name), _) => {
                let arguments = scripted_arguments(&chat.messages);
                let text = arguments.text();
                (arguments, vec![(call_id(), name.clone(), text)])
            }
            (None, Some(reply)) if !reply.tool_calls.is_empty() => (
                Completion {
                    pieces: vec![String::new()],
                    generated: 1,
                    finish_reason: "tool_calls",
                },
                reply
                    .tool_calls
                    .into_iter()
                    .map(|(name, arguments)| (call_id(), name, arguments))
                    .collect(),
            ),
            (None, Some(reply)) => (scripted_text(&reply.content), Vec::new()),
            (None, None) => (
                Tokens::new(&chat.messages, chat.seed).complete(
                    chat.max_tokens.unwrap_or(state.config.default_max_tokens),
                    &chat.stop,
                ),
                Vec::new(),
            ),
        };
        Self {
            id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            created: unix_now(),
            stream: chat.stream,
            include_usage: chat.include_usage,
            prompt_tokens: prompt_tokens(&chat.messages),
            completion,
            arrived,
            tool_calls,
        }
    }

    /// The `tool_calls` of a message (`index` is set for stream deltas).
    fn tool_calls(&self, index: bool) -> Option<serde_json::Value> {
        if self.tool_calls.is_empty() {
            return None;
        }
        let calls = self
            .tool_calls
            .iter()
            .enumerate()
            .map(|(i, (id, name, arguments))| {
                let mut call = serde_json::json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                });
                if index {
                    call["index"] = i.into();
                }
                call
            })
            .collect();
        Some(serde_json::Value::Array(calls))
    }
}

/// A script's text answer, streamed a word at a time.
fn scripted_text(content: &str) -> Completion {
    let mut pieces: Vec<String> = content.split_inclusive(' ').map(str::to_owned).collect();
    if pieces.is_empty() {
        pieces.push(String::new());
    }
    Completion {
        generated: u32::try_from(pieces.len()).unwrap_or(u32::MAX),
        pieces,
        finish_reason: "stop",
    }
}

/// A scripted tool call's arguments: the last user message's text, as
/// `{"input": ...}`, in one piece, counted as one token per word.
fn scripted_arguments(messages: &[crate::openai::Message]) -> Completion {
    let input = messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .and_then(|m| m.content.as_ref())
        .map(|c| c.text())
        .unwrap_or_default();
    let words = u32::try_from(input.split_whitespace().count()).unwrap_or(u32::MAX);
    Completion {
        pieces: vec![serde_json::json!({ "input": input }).to_string()],
        generated: words.max(1),
        finish_reason: "tool_calls",
    }
}

/// Answers a non-streaming request after the time the whole generation
/// would take.
async fn complete(state: &AppState, job: Job, permit: OwnedSemaphorePermit) -> Response {
    let config = &state.config;
    sleep(state.loaded(config.ttft)).await;
    state
        .metrics
        .observe_time_to_first_token(job.arrived.elapsed().as_secs_f64());
    let generated = job.completion.generated;
    sleep(
        state
            .loaded(config.inter_token)
            .saturating_mul(generated.saturating_sub(1)),
    )
    .await;

    let content = job.completion.text();
    let completion = ChatCompletion {
        id: &job.id,
        object: "chat.completion",
        created: job.created,
        model: &config.model,
        choices: [Choice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: job.tool_calls.is_empty().then_some(content.as_str()),
                tool_calls: job.tool_calls(false),
            },
            logprobs: None,
            finish_reason: job.completion.finish_reason,
        }],
        usage: Usage::new(job.prompt_tokens, generated),
    };
    let json = match serde_json::to_vec(&completion) {
        Ok(json) => json,
        Err(err) => {
            tracing::error!(error = %err, "failed to serialize chat completion");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    drop(permit);

    if let FailureMode::BreakStreamAfter(_) = config.failure {
        // Send half the document, then fail the body so the connection is
        // cut mid-response.
        tracing::info!(id = %job.id, "simulating a broken response");
        let half = json.len() / 2;
        let half = Bytes::from(json).slice(..half);
        let body = stream::once(async { Ok::<_, io::Error>(half) }).chain(stream::once(async {
            sleep(BREAK_PAUSE).await;
            Err(broken_stream())
        }));
        return (
            [(header::CONTENT_TYPE, "application/json")],
            Body::from_stream(body),
        )
            .into_response();
    }

    state.metrics.add_generation_tokens(generated);
    state.metrics.finish_request(
        job.completion.finish_reason,
        job.arrived.elapsed().as_secs_f64(),
    );
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// How long a broken response waits before cutting the connection, so
/// what it sent reaches the client first.
const BREAK_PAUSE: Duration = Duration::from_millis(5);

fn broken_stream() -> io::Error {
    io::Error::other("simulated broken stream")
}

/// Answers a streaming request with server-sent events, one chunk per
/// token, exactly as OpenAI and vLLM frame them.
fn stream_response(state: Arc<AppState>, job: Job, permit: OwnedSemaphorePermit) -> Response {
    let break_after = match state.config.failure {
        FailureMode::BreakStreamAfter(tokens) => Some(tokens),
        _ => None,
    };
    let events = EventStream {
        state,
        job,
        break_after,
        sent: 0,
        phase: Phase::Role,
        _permit: permit,
    };
    let body = stream::unfold(events, |mut events| async move {
        let frame = events.next_frame().await?;
        Some((frame, events))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Role,
    Tokens,
    Usage,
    Done,
    Ended,
}

/// The state of one server-sent-event stream. Owns the request's
/// generation slot, so dropping the stream frees it.
struct EventStream {
    state: Arc<AppState>,
    job: Job,
    break_after: Option<u32>,
    /// Pieces of the completion sent so far.
    sent: usize,
    phase: Phase,
    _permit: OwnedSemaphorePermit,
}

impl EventStream {
    async fn next_frame(&mut self) -> Option<io::Result<Bytes>> {
        match self.phase {
            Phase::Role => {
                // Like vLLM, the first chunk (the role) comes with the first
                // token, after prefill: a head alone says nothing of TTFT.
                sleep(self.state.loaded(self.state.config.ttft)).await;
                self.phase = Phase::Tokens;
                let delta = Delta {
                    role: Some("assistant"),
                    content: Some(""),
                    tool_calls: None,
                };
                Some(self.chunk(delta, None))
            }
            Phase::Tokens => Some(self.token_or_finish().await),
            Phase::Usage => {
                self.phase = Phase::Done;
                let usage = Usage::new(self.job.prompt_tokens, self.job.completion.generated);
                Some(event(&ChatChunk {
                    choices: Vec::new(),
                    usage: Some(Some(usage)),
                    ..self.chunk_frame()
                }))
            }
            Phase::Done => {
                self.phase = Phase::Ended;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            Phase::Ended => None,
        }
    }

    async fn token_or_finish(&mut self) -> io::Result<Bytes> {
        let pieces = &self.job.completion.pieces;
        let limit = self
            .break_after
            .map_or(pieces.len(), |n| pieces.len().min(n as usize));
        if self.sent < limit {
            let config = &self.state.config;
            if self.sent == 0 {
                // The time to first token was spent before the role chunk.
                self.state
                    .metrics
                    .observe_time_to_first_token(self.job.arrived.elapsed().as_secs_f64());
            } else {
                sleep(self.state.loaded(config.inter_token)).await;
            }
            self.state.metrics.add_generation_tokens(1);
            let index = self.sent;
            self.sent += 1;
            let tool_calls = self.job.tool_calls(true);
            let delta = Delta {
                role: None,
                content: tool_calls
                    .is_none()
                    .then_some(self.job.completion.pieces[index].as_str()),
                tool_calls,
            };
            return self.chunk(delta, None);
        }
        if self.break_after.is_some() {
            // Break where the next token would have come. The pause also
            // lets the server flush what was sent, so the client sees the
            // tokens before the cut rather than a failed request.
            sleep(self.state.config.inter_token.max(BREAK_PAUSE)).await;
            tracing::info!(id = %self.job.id, tokens = self.sent, "simulating a broken stream");
            self.phase = Phase::Ended;
            return Err(broken_stream());
        }
        self.phase = if self.job.include_usage {
            Phase::Usage
        } else {
            Phase::Done
        };
        // Pieces cut by a stop sequence do not cover every generated token.
        let unsent = self
            .job
            .completion
            .generated
            .saturating_sub(self.sent_u32());
        self.state.metrics.add_generation_tokens(unsent);
        self.state.metrics.finish_request(
            self.job.completion.finish_reason,
            self.job.arrived.elapsed().as_secs_f64(),
        );
        self.chunk(Delta::default(), Some(self.job.completion.finish_reason))
    }

    fn sent_u32(&self) -> u32 {
        u32::try_from(self.sent).unwrap_or(u32::MAX)
    }

    /// A chunk with one choice.
    fn chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> io::Result<Bytes> {
        event(&ChatChunk {
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            ..self.chunk_frame()
        })
    }

    /// The fields every chunk of this stream shares.
    fn chunk_frame(&self) -> ChatChunk<'_> {
        ChatChunk {
            id: &self.job.id,
            object: "chat.completion.chunk",
            created: self.job.created,
            model: &self.state.config.model,
            choices: Vec::new(),
            // OpenAI sends `"usage": null` on every chunk once usage is
            // requested, and omits the field otherwise.
            usage: self.job.include_usage.then_some(None),
        }
    }
}

/// Frames one server-sent event.
fn event(chunk: &impl Serialize) -> io::Result<Bytes> {
    let json = serde_json::to_string(chunk).map_err(io::Error::other)?;
    Ok(Bytes::from(format!("data: {json}\n\n")))
}

/// Sleeps unless `duration` is zero, so a zero-latency simulator never
/// yields to the timer.
async fn sleep(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
