//! The OpenAI-compatible HTTP face: `/v1/chat/completions` (streamed or
//! not), `/v1/embeddings` and `/v1/models`, routed by the route table (`x-model-id` over the
//! body's `model`, `x-session-id` for affinity) with every request field
//! passed through untouched. Errors use OpenAI's error shape.
//!
//! Around dispatch: the tenant (`agentmesh-tenant`) is charged against its
//! limits first (429 `tenant_rate_limited` with `Retry-After`), then a
//! deterministic chat request is looked up in the response cache
//! (`x-agentmesh-cache: hit|miss`), and the answer's usage is accounted
//! when it ends.
//!
//! Streaming contract: once bytes reach the client, a backend stream that
//! breaks or ends without `[DONE]` ends with an explicit SSE error event,
//! never a silent truncation.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::json;

use std::sync::Arc;
use std::time::Duration;

use crate::admission::AdmitError;
use crate::backend::{BackendError, Target, error_message};
use crate::cache::{self, Cache, Capture};
use crate::limits::{self, Decision, Limiter, Reservation, UsageTap, settle};
use crate::metrics::Metrics;
use crate::pool::{Answer, Call, DispatchError, Router as RouteTable};
use crate::usage::{Accounting, Generation, Meter};

/// Routes by this header over the body's `model` when present.
pub const MODEL_HEADER: &str = "x-model-id";
/// Session affinity key.
pub const SESSION_HEADER: &str = "x-session-id";
/// `hit` on an answer from the response cache, `miss` on a cacheable one
/// that was not (and is now stored).
pub const CACHE_HEADER: &str = "x-agentmesh-cache";

/// The tenant a request is charged to; the gateway and workers send it.
pub const TENANT_HEADER: &str = "agentmesh-tenant";
/// The tenant of a request without [`TENANT_HEADER`].
pub const DEFAULT_TENANT: &str = "default";

#[derive(Clone)]
pub struct HttpState {
    pub router: Arc<RouteTable>,
    pub metrics: Metrics,
    pub limiter: Limiter,
    pub cache: Cache,
}

pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

/// An error in OpenAI's shape.
pub fn openai_error(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    openai_error_code(status, kind, message, param, None)
}

fn openai_error_code(
    status: StatusCode,
    kind: &str,
    message: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {"message": message, "type": kind, "param": param, "code": code}
        })),
    )
        .into_response()
}

/// The tenant of a request: [`TENANT_HEADER`], else [`DEFAULT_TENANT`].
#[allow(clippy::result_large_err)] // the Err is the finished 400 answer
fn tenant_of(headers: &HeaderMap) -> Result<String, Response> {
    match header_str(headers, TENANT_HEADER) {
        None => Ok(DEFAULT_TENANT.to_owned()),
        Some(tenant) => match mesh_bus::names::validate("tenant", tenant) {
            Ok(()) => Ok(tenant.to_owned()),
            Err(error) => Err(openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("{TENANT_HEADER}: {error}"),
                None,
            )),
        },
    }
}

/// Whole seconds until a refused request would fit, at least 1.
pub fn retry_after_secs(retry_after: std::time::Duration) -> u64 {
    retry_after
        .as_millis()
        .div_ceil(1000)
        .max(1)
        .try_into()
        .unwrap_or(u64::MAX)
}

/// A tenant limit's 429: `code: "tenant_rate_limited"` tells it apart from
/// a backend's own 429 (passed through with the backend's code).
fn tenant_limited(retry_after: std::time::Duration, kind: &str) -> Response {
    let secs = retry_after_secs(retry_after);
    let mut response = openai_error_code(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        &format!("tenant {kind} per minute limit reached, retry in {secs}s"),
        None,
        Some("tenant_rate_limited"),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Charges the request to its tenant; the `Err` is the answer to send.
async fn admit(
    state: &HttpState,
    tenant: &str,
    estimate: impl FnOnce(u64) -> u64,
) -> Result<Option<Reservation>, Response> {
    let table = state.router.table();
    let tenants = &table.spec.tenants;
    match state
        .limiter
        .admit(tenants, tenant, estimate(tenants.default_max_tokens))
        .await
    {
        Decision::Allowed(reservation) => Ok(reservation),
        Decision::Limited { retry_after, kind } => Err(tenant_limited(retry_after, kind)),
    }
}

fn backend_error_response(error: BackendError) -> Response {
    match error {
        BackendError::Status { status, body } => {
            // Pass the backend's own error through; it is already OpenAI-shaped
            // for OpenAI-compatible servers.
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        BackendError::Timeout(_) => openai_error(
            StatusCode::GATEWAY_TIMEOUT,
            "server_error",
            &error.to_string(),
            None,
        ),
        BackendError::Unreachable(_) | BackendError::Connect(_) => openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            &error.to_string(),
            None,
        ),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The answer to a request no backend could serve.
pub fn dispatch_error_response(error: DispatchError) -> Response {
    match error {
        DispatchError::NoRoute { .. } => openai_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &error.to_string(),
            Some("model"),
        ),
        DispatchError::Admission(error) => admission_error_response(&error),
        DispatchError::NoBackend { .. } => {
            let mut response = openai_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                &error.to_string(),
                None,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        DispatchError::Backend(error) => backend_error_response(error),
    }
}

/// `/v1/embeddings`: routed like chat by `model` (or `x-model-id`) and
/// passed through untouched; the backend's answer, usage included, is
/// relayed as it is.
async fn embeddings(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("request body is not valid JSON: {e}"),
                None,
            );
        }
    };
    if value["model"].as_str().is_none_or(str::is_empty) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: a non-empty string is required",
            Some("model"),
        );
    }
    let input_ok = match &value["input"] {
        serde_json::Value::String(_) => true,
        serde_json::Value::Array(items) => !items.is_empty(),
        _ => false,
    };
    if !input_ok {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "input: a string or a non-empty array is required",
            Some("input"),
        );
    }
    let prompt = limits::prompt_estimate(body.len());
    let tenant = match tenant_of(&headers) {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let reservation = match admit(&state, &tenant, |_| prompt).await {
        Ok(reservation) => reservation,
        Err(response) => {
            state.metrics.request("embeddings", "rate_limited");
            return response;
        }
    };
    let body_model = value["model"].as_str().unwrap_or_default();
    let routed_model = header_str(&headers, MODEL_HEADER).unwrap_or(body_model);
    let meter = meter(&state, &tenant, routed_model, "embeddings");
    let call = Call {
        model: routed_model,
        session: header_str(&headers, SESSION_HEADER),
        path: "/v1/embeddings",
        body: body.clone(),
        streaming: false,
    };
    let dispatched = match state.router.dispatch(call).await {
        Ok(dispatched) => dispatched,
        Err(error) => {
            settle(&state.limiter, reservation, 0);
            state
                .metrics
                .request("embeddings", dispatch_outcome(&error));
            return dispatch_error_response(error);
        }
    };
    state.metrics.request("embeddings", "ok");
    match dispatched.answer {
        Answer::Whole(response) => {
            let mut accounting = Accounting::new(
                state.limiter.clone(),
                reservation,
                UsageTap::new(prompt),
                meter,
            );
            relay_whole(response, dispatched.hold, &mut accounting.tap, None).await
        }
        // The pool streams only when asked to, and this call did not ask.
        Answer::Stream(_) => openai_error(
            StatusCode::BAD_GATEWAY,
            "server_error",
            "model backend streamed an embeddings answer",
            None,
        ),
    }
}

fn meter(state: &HttpState, tenant: &str, model: &str, operation: &'static str) -> Meter {
    let table = state.router.table();
    Meter::new(
        &state.metrics,
        &table.spec.prices,
        tenant,
        model,
        operation,
        Generation::Router,
    )
}

fn dispatch_outcome(error: &DispatchError) -> &'static str {
    match error {
        DispatchError::Admission(_) => "rejected",
        _ => "error",
    }
}

/// Relays a whole JSON answer, holding the backend slot until it is read;
/// stores it in the cache when `store` names where.
async fn relay_whole(
    response: reqwest::Response,
    hold: crate::pool::Hold,
    tap: &mut UsageTap,
    store: Option<(Cache, String, Duration)>,
) -> Response {
    let result = response.bytes().await;
    drop(hold);
    match result {
        Ok(bytes) => {
            tap.feed_json(&bytes);
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                bytes.clone(),
            )
                .into_response();
            if let Some((cache, key, ttl)) = store {
                cache.put(key, bytes.to_vec(), ttl);
                response
                    .headers_mut()
                    .insert(CACHE_HEADER, HeaderValue::from_static("miss"));
            }
            response
        }
        Err(e) => openai_error(
            StatusCode::BAD_GATEWAY,
            "server_error",
            &format!("model backend response broke: {e}"),
            None,
        ),
    }
}

async fn chat_completions(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("request body is not valid JSON: {e}"),
                None,
            );
        }
    };
    if !value.is_object() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "request body must be a JSON object",
            None,
        );
    }
    if value["model"].as_str().is_none_or(str::is_empty) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: a non-empty string is required",
            Some("model"),
        );
    }
    if value["messages"].as_array().is_none_or(Vec::is_empty) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "messages: a non-empty array is required",
            Some("messages"),
        );
    }
    let streaming = value["stream"].as_bool().unwrap_or(false);
    let api = if streaming { "chat_stream" } else { "chat" };
    let prompt = limits::prompt_estimate(body.len());
    let tenant = match tenant_of(&headers) {
        Ok(tenant) => tenant,
        Err(response) => return response,
    };
    let reservation = match admit(&state, &tenant, |default_max| {
        limits::estimate_tokens(&value, body.len(), default_max)
    })
    .await
    {
        Ok(reservation) => reservation,
        Err(response) => {
            state.metrics.request(api, "rate_limited");
            return response;
        }
    };
    let body_model = value["model"].as_str().unwrap_or_default();
    let routed_model = header_str(&headers, MODEL_HEADER).unwrap_or(body_model);
    // Deterministic requests are answered from the cache when they can be;
    // a hit uses no model tokens, so its reservation is refunded whole.
    let cached = state.router.table().spec.cache.as_ref().and_then(|spec| {
        (state.cache.enabled() && cache::deterministic(&value))
            .then(|| (cache::key(&tenant, routed_model, &value), spec.ttl))
    });
    if let Some((key, _)) = &cached
        && let Some(stored) = state.cache.get(key).await
    {
        settle(&state.limiter, reservation, 0);
        state.metrics.request(api, "cache_hit");
        return replay(stored, streaming);
    }
    let meter = meter(&state, &tenant, routed_model, "chat");
    let call = Call {
        model: routed_model,
        session: header_str(&headers, SESSION_HEADER),
        path: "/v1/chat/completions",
        body: body.clone(),
        streaming,
    };
    let dispatched = match state.router.dispatch(call).await {
        Ok(dispatched) => dispatched,
        Err(error) => {
            settle(&state.limiter, reservation, 0);
            state.metrics.request(api, dispatch_outcome(&error));
            return dispatch_error_response(error);
        }
    };
    state.metrics.request(api, "ok");
    let hold = dispatched.hold;
    let mut accounting = Accounting::new(
        state.limiter.clone(),
        reservation,
        UsageTap::new(prompt),
        meter,
    );
    let upstream = match dispatched.answer {
        Answer::Whole(response) => {
            let store = cached.map(|(key, ttl)| (state.cache.clone(), key, ttl));
            return relay_whole(response, hold, &mut accounting.tap, store).await;
        }
        Answer::Stream(stream) => stream,
    };
    // The backend slot is held until the stream ends or the client leaves;
    // the tokens are settled then, from the usage chunk or the deltas.
    // What the client gets, error events included: a stream that did not
    // end cleanly is not stored.
    let cache_state = if cached.is_some() { "miss" } else { "" };
    let mut capture = cached.map(|(key, ttl)| Capture::new(state.cache.clone(), key, ttl));
    let body = Body::from_stream(guard_stream_end(upstream).map(move |item| {
        let _slot = &hold;
        if let Ok(bytes) = &item {
            accounting.tap.feed_sse(bytes);
            if let Some(capture) = &mut capture {
                capture.feed(bytes);
            }
        }
        item
    }));
    let mut response = sse_response(body);
    if !cache_state.is_empty() {
        response
            .headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(cache_state));
    }
    response
}

fn sse_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A cached answer: the stored JSON, or the stored stream replayed event by
/// event.
fn replay(stored: Vec<u8>, streaming: bool) -> Response {
    let mut response = if streaming {
        let events = cache::replay_events(&stored);
        sse_response(Body::from_stream(futures::stream::iter(
            events.into_iter().map(Ok::<_, std::io::Error>),
        )))
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            stored,
        )
            .into_response()
    };
    response
        .headers_mut()
        .insert(CACHE_HEADER, HeaderValue::from_static("hit"));
    response
}

/// Passes SSE bytes through; if the upstream fails or ends without a
/// complete `data: [DONE]` event, appends an SSE error event instead of
/// ending quietly.
pub(crate) fn guard_stream_end<S>(
    upstream: S,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    S: futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    struct St<S> {
        upstream: std::pin::Pin<Box<S>>,
        watch: DoneWatch,
        done: bool,
    }
    let state = St {
        upstream: Box::pin(upstream),
        watch: DoneWatch::default(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.upstream.next().await {
            Some(Ok(bytes)) => {
                st.watch.feed(&bytes);
                Some((Ok(bytes), st))
            }
            Some(Err(e)) => {
                st.done = true;
                Some((
                    Ok(sse_error(&format!("model backend stream broke: {e}"))),
                    st,
                ))
            }
            None => {
                st.done = true;
                if st.watch.done {
                    None
                } else {
                    Some((
                        Ok(sse_error("model backend stream ended before [DONE]")),
                        st,
                    ))
                }
            }
        }
    })
}

/// Whether an SSE stream has sent its `[DONE]` event, read as the bytes
/// pass with the SSE line rules the gRPC face parses by (LF, CRLF or CR
/// ends a line, a blank line ends an event, `data:` lines join, comments
/// and other fields do not count). Text that merely contains `[DONE]` (a
/// comment, a delta's content) does not end a stream: a substring check
/// took a truncated answer for a complete one (the router_sse fuzz target).
/// Holds at most a few bytes: a longer line cannot be `data: [DONE]`.
#[derive(Debug, Default)]
pub(crate) struct DoneWatch {
    line: Vec<u8>,
    line_too_long: bool,
    /// The current event's data so far, when it could still be `[DONE]`.
    data: Option<Vec<u8>>,
    data_too_long: bool,
    after_cr: bool,
    pub(crate) done: bool,
}

impl DoneWatch {
    const MAX: usize = 64;

    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.done {
                return;
            }
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\r' | b'\n' => {
                    self.after_cr = b == b'\r';
                    self.end_line();
                }
                _ => {
                    self.after_cr = false;
                    if self.line.len() < Self::MAX {
                        self.line.push(b);
                    } else {
                        self.line_too_long = true;
                    }
                }
            }
        }
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let too_long = std::mem::take(&mut self.line_too_long);
        if line.is_empty() && !too_long {
            let data = self.data.take();
            let too_long = std::mem::take(&mut self.data_too_long);
            self.done = !too_long && data.is_some_and(|d| d.trim_ascii() == b"[DONE]");
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&line[..], &[][..]),
        };
        if field != b"data" {
            return;
        }
        let value = value.strip_prefix(b" ").unwrap_or(value);
        // Data lines join with a line feed, as the SSE parser joins them.
        let data = match &mut self.data {
            Some(data) => {
                data.push(b'\n');
                data
            }
            None => self.data.insert(Vec::new()),
        };
        if too_long || data.len() + value.len() > Self::MAX {
            self.data_too_long = true;
        } else {
            data.extend_from_slice(value);
        }
    }
}

fn sse_error(message: &str) -> Bytes {
    let event = json!({"error": {"message": message, "type": "server_error", "param": null, "code": "stream_interrupted"}});
    Bytes::from(format!("event: error\ndata: {event}\n\n"))
}

async fn models(State(state): State<HttpState>) -> Response {
    let table = state.router.table();
    if table.spec.from_file {
        // What the route table serves, not what one backend happens to.
        let data: Vec<_> = table
            .spec
            .models()
            .map(|id| json!({"id": id, "object": "model", "owned_by": "agentmesh"}))
            .collect();
        return axum::Json(json!({"object": "list", "data": data})).into_response();
    }
    // One backend: its own list, as before route tables.
    let Some((pool, backend)) = table
        .pools
        .values()
        .next()
        .and_then(|p| Some((p, p.backends.first()?)))
    else {
        return openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "no backend",
            None,
        );
    };
    let limits = &pool.spec.limits;
    let target = Target {
        base: backend.url(),
        api_key: backend.api_key(),
        first_byte: limits.ttft_deadline,
        total: limits.request_timeout,
    };
    match state.router.client().get(&target, "/v1/models").await {
        Ok(response) => match response.bytes().await {
            Ok(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                bytes,
            )
                .into_response(),
            Err(e) => openai_error(
                StatusCode::BAD_GATEWAY,
                "server_error",
                &e.to_string(),
                None,
            ),
        },
        Err(error) => backend_error_response(error),
    }
}

fn admission_error_response(error: &AdmitError) -> Response {
    let mut response = match error {
        AdmitError::QueueFull { .. } => openai_error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            &error.to_string(),
            None,
        ),
        AdmitError::Timeout { .. } | AdmitError::NotReady { .. } => openai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            &error.to_string(),
            None,
        ),
    };
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Used by the gRPC face to turn a backend error body into a message.
pub fn describe_backend_error(error: &BackendError) -> String {
    match error {
        BackendError::Status { status, body } => format!(
            "model backend answered {status}: {}",
            error_message(body)
                .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(stream: &[u8], cut: usize) -> bool {
        let mut watch = DoneWatch::default();
        let (a, b) = stream.split_at(cut.min(stream.len()));
        watch.feed(a);
        watch.feed(b);
        watch.done
    }

    /// Only a complete `[DONE]` event ends a stream; `[DONE]` in a comment
    /// or in content, or a `[DONE]` event cut before its blank line, does
    /// not (the router_sse fuzz target found the comment case).
    #[test]
    fn only_a_done_event_completes_a_stream() {
        for (stream, complete) in [
            (&b"data: {\"a\":1}\n\ndata: [DONE]\n\n"[..], true),
            (b"data:[DONE]\r\n\r\n", true),
            (b"data: [DONE]\r\rdata: more\n\n", true),
            (b"data: x\n\n: {\"cho[DONE]\n\n", false),
            (b"data: {\"content\":\"[DONE]\"}\n\n", false),
            (b"data: [DONE]\n", false),
            (b"data: [DONE]\ndata: x\n\n", false),
            (b"event: done\n\n", false),
        ] {
            for cut in 0..stream.len() {
                assert_eq!(
                    done(stream, cut),
                    complete,
                    "{:?}",
                    String::from_utf8_lossy(stream)
                );
            }
        }
        let long = format!("data: [DONE]{}x\n\n", " ".repeat(100));
        assert!(!done(long.as_bytes(), 0));
    }
}
