//! The OpenAI-compatible HTTP face: `/v1/chat/completions` (streamed or
//! not) and `/v1/models`, routed by the route table (`x-model-id` over the
//! body's `model`, `x-session-id` for affinity) with every request field
//! passed through untouched. Errors use OpenAI's error shape.
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

use crate::admission::AdmitError;
use crate::backend::{BackendError, Target, error_message};
use crate::metrics::Metrics;
use crate::pool::{Answer, Call, DispatchError, Router as RouteTable};

/// Routes by this header over the body's `model` when present.
pub const MODEL_HEADER: &str = "x-model-id";
/// Session affinity key.
pub const SESSION_HEADER: &str = "x-session-id";

#[derive(Clone)]
pub struct HttpState {
    pub router: Arc<RouteTable>,
    pub metrics: Metrics,
}

pub fn router(state: HttpState, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
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
    (
        status,
        axum::Json(json!({
            "error": {"message": message, "type": kind, "param": param, "code": null}
        })),
    )
        .into_response()
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
        BackendError::Unreachable(_) => openai_error(
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
    let body_model = value["model"].as_str().unwrap_or_default();
    let call = Call {
        model: header_str(&headers, MODEL_HEADER).unwrap_or(body_model),
        session: header_str(&headers, SESSION_HEADER),
        path: "/v1/chat/completions",
        body: body.clone(),
        streaming,
    };
    let dispatched = match state.router.dispatch(call).await {
        Ok(dispatched) => dispatched,
        Err(error) => {
            let outcome = match error {
                DispatchError::Admission(_) => "rejected",
                _ => "error",
            };
            state.metrics.request(api, outcome);
            return dispatch_error_response(error);
        }
    };
    state.metrics.request(api, "ok");
    let hold = dispatched.hold;
    let upstream = match dispatched.answer {
        Answer::Whole(response) => {
            let result = response.bytes().await;
            drop(hold);
            return match result {
                Ok(bytes) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json")],
                    bytes,
                )
                    .into_response(),
                Err(e) => openai_error(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    &format!("model backend response broke: {e}"),
                    None,
                ),
            };
        }
        Answer::Stream(stream) => stream,
    };
    // The backend slot is held until the stream ends or the client leaves.
    let body = Body::from_stream(guard_stream_end(upstream).map(move |item| {
        let _slot = &hold;
        item
    }));
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

/// Passes SSE bytes through; if the upstream fails or ends without
/// `data: [DONE]`, appends an SSE error event instead of ending quietly.
fn guard_stream_end<S>(upstream: S) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    S: futures::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static,
{
    struct St<S> {
        upstream: std::pin::Pin<Box<S>>,
        tail: Vec<u8>,
        done: bool,
    }
    let state = St {
        upstream: Box::pin(upstream),
        tail: Vec::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        match st.upstream.next().await {
            Some(Ok(bytes)) => {
                // Remember the last few bytes to recognise `[DONE]` even when
                // it straddles two chunks.
                st.tail.extend_from_slice(&bytes);
                if st.tail.len() > 64 {
                    st.tail.drain(..st.tail.len() - 64);
                }
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
                let text = String::from_utf8_lossy(&st.tail);
                if text.contains("[DONE]") {
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
        AdmitError::Timeout { .. } => openai_error(
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
