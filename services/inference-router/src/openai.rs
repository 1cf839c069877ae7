//! The OpenAI-compatible HTTP face: `/v1/chat/completions` (streamed or
//! not) and `/v1/models`, proxied to the backend with every request field
//! passed through untouched. Errors use OpenAI's error shape.
//!
//! Streaming contract: once bytes reach the client, a backend stream that
//! breaks or ends without `[DONE]` ends with an explicit SSE error event,
//! never a silent truncation.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde_json::json;

use crate::admission::{AdmitError, Pool};
use crate::backend::{Backend, BackendError, error_message};
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct HttpState {
    pub backend: Backend,
    pub pool: Pool,
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

async fn chat_completions(State(state): State<HttpState>, body: Bytes) -> Response {
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
    let admitted = match state.pool.admit().await {
        Ok(admitted) => admitted,
        Err(error) => {
            state.metrics.request(api, "rejected");
            return admission_error_response(&error);
        }
    };
    let response = match state.backend.post_json("/v1/chat/completions", body).await {
        Ok(response) => response,
        Err(error) => {
            state.metrics.request(api, "error");
            return backend_error_response(error);
        }
    };
    state.metrics.request(api, "ok");
    if !streaming {
        return match response.bytes().await {
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
    let upstream = response.bytes_stream();
    // The backend slot is held until the stream ends or the client leaves.
    let body = Body::from_stream(guard_stream_end(upstream).map(move |item| {
        let _slot = &admitted;
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
    match state.backend.get("/v1/models").await {
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
