//! A local HTTP service for `api` tools that records every call, so tests
//! and the `agent-loop` bench see exactly what the worker sent: path,
//! idempotency key, bearer token, body.
//!
//! Routes: `/add` and `/mul` (`{"a","b"}` -> `{"result"}`), `/flaky` (503
//! for the first `fail_first` calls of each idempotency key), `/slow`
//! (answers after `slow`), `/big` (a body of `big_bytes`), `/block` (waits
//! until [`ToolServer::release`]), `/whoami` (echoes whether a bearer token
//! came).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub idempotency_key: String,
    pub authorization: Option<String>,
    pub body: Value,
    pub query: String,
}

#[derive(Clone)]
pub struct ToolServerOptions {
    pub fail_first: usize,
    pub slow: Duration,
    pub big_bytes: usize,
}

impl Default for ToolServerOptions {
    fn default() -> Self {
        Self {
            fail_first: 2,
            slow: Duration::from_secs(3),
            big_bytes: 2 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
struct Shared {
    calls: Arc<Mutex<Vec<Call>>>,
    attempts: Arc<Mutex<HashMap<String, usize>>>,
    released: Arc<tokio::sync::Notify>,
    open: Arc<std::sync::atomic::AtomicBool>,
    options: ToolServerOptions,
}

pub struct ToolServer {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl ToolServer {
    pub async fn start(options: ToolServerOptions) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            calls: Default::default(),
            attempts: Default::default(),
            released: Default::default(),
            open: Default::default(),
            options,
        };
        let app = axum::Router::new()
            .route("/{*path}", any(handle))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(until.cancelled_owned())
                .await;
        });
        Ok(Self { addr, shared, stop })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn calls(&self) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path == path)
            .collect()
    }

    /// Lets every `/block` call, waiting or future, answer.
    pub fn release(&self) {
        self.shared
            .open
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.released.notify_waiters();
    }
}

impl Drop for ToolServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn handle(
    State(shared): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let call = Call {
        path: uri.path().to_owned(),
        idempotency_key: header("idempotency-key").unwrap_or_default(),
        authorization: header("authorization"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        query: uri.query().unwrap_or_default().to_owned(),
    };
    if let Ok(mut calls) = shared.calls.lock() {
        calls.push(call.clone());
    }
    let number = |field: &str| call.body[field].as_f64().unwrap_or_default();
    match call.path.as_str() {
        "/add" => Json(json!({"result": number("a") + number("b")})).into_response(),
        "/mul" => Json(json!({"result": number("a") * number("b")})).into_response(),
        "/flaky" => {
            let seen = {
                let mut attempts = shared.attempts.lock().unwrap_or_else(|p| p.into_inner());
                let n = attempts.entry(call.idempotency_key.clone()).or_default();
                *n += 1;
                *n
            };
            if seen <= shared.options.fail_first {
                (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
            } else {
                Json(json!({"ok": true, "attempt": seen})).into_response()
            }
        }
        "/slow" => {
            tokio::time::sleep(shared.options.slow).await;
            Json(json!({"slow": true})).into_response()
        }
        "/big" => "x".repeat(shared.options.big_bytes).into_response(),
        "/block" => {
            let released = shared.released.notified();
            if !shared.open.load(std::sync::atomic::Ordering::SeqCst) {
                released.await;
            }
            Json(json!({"unblocked": true})).into_response()
        }
        "/whoami" => Json(json!({"authenticated": call.authorization.is_some()})).into_response(),
        "/not-found" => (StatusCode::NOT_FOUND, "no such thing").into_response(),
        _ => (StatusCode::NOT_FOUND, "unknown tool route").into_response(),
    }
}
