//! The limits every listener of a service holds its clients to, and the
//! HTTP server that applies them. A client that is slow, idle, or sends
//! oversized heads must cost a bounded amount of memory and time: headers
//! are capped in size and count and must arrive within a deadline, a
//! request body must arrive within its own deadline, a listener holds a
//! bounded number of connections, and HTTP/2 pings drop peers that went
//! away. gRPC servers get the same caps through [`ServerLimits::grpc`].
//!
//! This module must never bound what a handler sends back: Server-Sent
//! Events and streamed completions are legitimately long, so every deadline
//! here covers reading the request, not writing the response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use http_body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::env::{self, ConfigError, Env};

/// How long an HTTP client of the mesh keeps an idle pooled connection.
/// Below the default [`ServerLimits::header_timeout`] (10 s), after which
/// our servers close an idle keep-alive connection, and below the 5 s of
/// uvicorn (vLLM's server) and Node: a client that kept it longer would
/// sometimes send on a connection the server is closing, and fail with
/// "connection closed before message completed". reqwest's default is 90 s.
pub const CLIENT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// What one listener of a service accepts, read from
/// `AGENTMESH_<SERVICE>_...` by [`ServerLimits::from_env`]; the same values
/// apply to the service's HTTP, gRPC and admin listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// `_MAX_HEADER_BYTES` (default 65536, at least 8192): the request line
    /// and headers of an HTTP/1 request (larger is 431), the header list of
    /// an HTTP/2 or gRPC request.
    pub max_header_bytes: usize,
    /// `_MAX_HEADERS` (default 100): header fields of an HTTP/1 request
    /// (more is 431).
    pub max_headers: usize,
    /// `_HEADER_TIMEOUT_MS` (default 10000): a new connection must send
    /// its first bytes, and an HTTP/1 request its whole head, within this;
    /// an idle HTTP/1 keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// `_BODY_TIMEOUT_MS` (default 60000): an HTTP request body must
    /// arrive whole within this (408 otherwise), counted from the head.
    pub body_timeout: Duration,
    /// `_MAX_CONNECTIONS` (default 4096): open connections per listener;
    /// more wait in the accept backlog.
    pub max_connections: usize,
    /// `_MAX_CONCURRENT_STREAMS` (default 200): streams one HTTP/2 or gRPC
    /// connection may have open.
    pub max_concurrent_streams: u32,
    /// `_KEEPALIVE_INTERVAL_MS` (default 30000) and `_KEEPALIVE_TIMEOUT_MS`
    /// (default 10000): HTTP/2 and gRPC connections are pinged this often
    /// and closed when a ping is not answered in time (a peer that went
    /// away without closing).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// `_GRPC_TIMEOUT_MS` (default 600000): a gRPC handler must answer
    /// (unary) or start its stream within this; a shorter `grpc-timeout`
    /// from the caller wins.
    pub grpc_timeout: Duration,
    /// `_GRPC_CONCURRENCY_PER_CONNECTION` (default 200): gRPC handlers one
    /// connection may run at once; more wait.
    pub grpc_concurrency_per_connection: usize,
    /// `_GRPC_MAX_RESPONSE_BYTES` (default 67108864): the largest gRPC
    /// message a service sends (the largest it accepts is each service's
    /// own `_MAX_MESSAGE_BYTES` or `_MAX_BODY_BYTES`).
    pub grpc_max_response_bytes: usize,
}

/// hyper's floor for the HTTP/1 read buffer, which holds the head.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_concurrent_streams: 200,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            grpc_timeout: Duration::from_secs(600),
            grpc_concurrency_per_connection: 200,
            grpc_max_response_bytes: 64 * 1024 * 1024,
        }
    }
}

impl ServerLimits {
    /// Reads `{prefix}MAX_HEADER_BYTES` and the others (`prefix` is the
    /// service's, with its trailing underscore: `AGENTMESH_GATEWAY_`).
    pub fn from_env(env: &Env, prefix: &str) -> Result<Self, ConfigError> {
        let d = Self::default();
        let var = |name: &str| format!("{prefix}{name}");
        let limits = Self {
            max_header_bytes: env::parse_or(env, &var("MAX_HEADER_BYTES"), d.max_header_bytes)?,
            max_headers: env::parse_or(env, &var("MAX_HEADERS"), d.max_headers)?,
            header_timeout: env::millis_or(env, &var("HEADER_TIMEOUT_MS"), d.header_timeout)?,
            body_timeout: env::millis_or(env, &var("BODY_TIMEOUT_MS"), d.body_timeout)?,
            max_connections: env::parse_or(env, &var("MAX_CONNECTIONS"), d.max_connections)?,
            max_concurrent_streams: env::parse_or(
                env,
                &var("MAX_CONCURRENT_STREAMS"),
                d.max_concurrent_streams,
            )?,
            keepalive_interval: env::millis_or(
                env,
                &var("KEEPALIVE_INTERVAL_MS"),
                d.keepalive_interval,
            )?,
            keepalive_timeout: env::millis_or(
                env,
                &var("KEEPALIVE_TIMEOUT_MS"),
                d.keepalive_timeout,
            )?,
            grpc_timeout: env::millis_or(env, &var("GRPC_TIMEOUT_MS"), d.grpc_timeout)?,
            grpc_concurrency_per_connection: env::parse_or(
                env,
                &var("GRPC_CONCURRENCY_PER_CONNECTION"),
                d.grpc_concurrency_per_connection,
            )?,
            grpc_max_response_bytes: env::parse_or(
                env,
                &var("GRPC_MAX_RESPONSE_BYTES"),
                d.grpc_max_response_bytes,
            )?,
        };
        limits.validate(prefix)?;
        Ok(limits)
    }

    /// Refuses values the servers cannot run with, naming the variable
    /// (hyper panics on a head buffer under [`MIN_HEADER_BYTES`]; a zero
    /// deadline or cap would refuse every client).
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let invalid = |name: &str, reason: String| {
            Err(ConfigError::Invalid {
                var: format!("{prefix}{name}"),
                reason,
            })
        };
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return invalid(
                "MAX_HEADER_BYTES",
                format!("must be at least {MIN_HEADER_BYTES}"),
            );
        }
        if u32::try_from(self.max_header_bytes).is_err() {
            return invalid("MAX_HEADER_BYTES", format!("must be at most {}", u32::MAX));
        }
        for (name, zero) in [
            ("MAX_HEADERS", self.max_headers == 0),
            ("HEADER_TIMEOUT_MS", self.header_timeout.is_zero()),
            ("BODY_TIMEOUT_MS", self.body_timeout.is_zero()),
            ("MAX_CONNECTIONS", self.max_connections == 0),
            ("MAX_CONCURRENT_STREAMS", self.max_concurrent_streams == 0),
            ("KEEPALIVE_INTERVAL_MS", self.keepalive_interval.is_zero()),
            ("KEEPALIVE_TIMEOUT_MS", self.keepalive_timeout.is_zero()),
            ("GRPC_TIMEOUT_MS", self.grpc_timeout.is_zero()),
            (
                "GRPC_CONCURRENCY_PER_CONNECTION",
                self.grpc_concurrency_per_connection == 0,
            ),
            ("GRPC_MAX_RESPONSE_BYTES", self.grpc_max_response_bytes == 0),
        ] {
            if zero {
                return invalid(name, "must be at least 1".to_owned());
            }
        }
        if self.max_connections > Semaphore::MAX_PERMITS {
            return invalid(
                "MAX_CONNECTIONS",
                format!("must be at most {}", Semaphore::MAX_PERMITS),
            );
        }
        Ok(())
    }

    /// A tonic server builder with these limits: header list size, streams
    /// and handlers per connection, the handler deadline and keep-alive
    /// pings. The per-message sizes are set on each service, since tonic
    /// sets them there.
    pub fn grpc(&self) -> tonic::transport::Server {
        tonic::transport::Server::builder()
            .http2_max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(self.max_concurrent_streams)
            .concurrency_limit_per_connection(self.grpc_concurrency_per_connection)
            .timeout(self.grpc_timeout)
            .http2_keepalive_interval(Some(self.keepalive_interval))
            .http2_keepalive_timeout(Some(self.keepalive_timeout))
    }
}

// === HTTP ===

/// Serves `app` on `listener` with `limits` until `stop`, then lets open
/// connections finish their requests (graceful shutdown) before returning.
///
/// Why not `axum::serve`: it hides hyper's builder, so no header deadline,
/// no head size and no connection cap could be set.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: ServerLimits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = app.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_deadline,
    ));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let builder = Arc::new(builder);
    let connections = TaskTracker::new();
    let mut accept = Admission::new(listener, &limits);
    while let Some((stream, permit, peer)) = accept.next(&stop).await {
        let (builder, app, stop) = (builder.clone(), app.clone(), stop.clone());
        let header_timeout = limits.header_timeout;
        connections.spawn(async move {
            if !first_bytes(&stream, header_timeout).await {
                tracing::debug!(%peer, "connection sent nothing in time; closed");
                return;
            }
            let io = TokioIo::new(Admitted::new(stream, permit));
            let service = hyper::service::service_fn(move |request| {
                tower::ServiceExt::oneshot(app.clone(), request)
            });
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "http connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// The answer to a request whose body did not arrive in time.
fn body_timed_out(timeout: Duration) -> Response {
    let body = serde_json::json!({"error": {
        "code": "request_timeout",
        "message": format!("body: not received within {} ms", timeout.as_millis()),
        "field": "body",
    }});
    (
        StatusCode::REQUEST_TIMEOUT,
        // The rest of the body may still be on its way: the connection
        // cannot carry another request.
        [(header::CONNECTION, "close")],
        axum::Json(body),
    )
        .into_response()
}

/// Gives the request body a deadline: reading it fails once `timeout` has
/// passed since the head arrived, and the answer is then 408 whatever the
/// handler made of the failed read. Requests without a body pass as they
/// are, and nothing here touches the response body.
async fn body_deadline(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::Acquire) {
        tracing::debug!(
            timeout_ms = timeout.as_millis(),
            "request body not received in time"
        );
        return body_timed_out(timeout);
    }
    response
}

/// A request body that fails once its deadline passes.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        // The deadline first: a body that trickles in steadily must not
        // keep it from firing.
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(
                "request body not received in time",
            ))));
        }
        Pin::new(&mut this.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

// === Connections ===

/// Accepts connections while fewer than the cap are open; past the cap new
/// clients wait in the kernel's backlog instead of costing a task and a
/// buffer each.
struct Admission {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    cap: usize,
}

impl Admission {
    fn new(listener: TcpListener, limits: &ServerLimits) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            cap: limits.max_connections,
        }
    }

    /// The next connection and its slot, or `None` once `stop` fires.
    async fn next(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(TcpStream, OwnedSemaphorePermit, SocketAddr)> {
        loop {
            if self.slots.available_permits() == 0 {
                tracing::warn!(
                    max_connections = self.cap,
                    "connection limit reached; new connections wait"
                );
            }
            let permit = tokio::select! {
                () = stop.cancelled() => return None,
                permit = self.slots.clone().acquire_owned() => permit.ok()?,
            };
            let accepted = tokio::select! {
                () = stop.cancelled() => return None,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    // Streamed responses are many small writes; with Nagle
                    // and delayed ACKs each one can stall for ~40 ms.
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(%error, "cannot set TCP_NODELAY");
                    }
                    return Some((stream, permit, peer));
                }
                Err(error) if is_connection_error(&error) => {}
                Err(error) => {
                    // Out of file descriptors and the like: retrying at
                    // once would spin.
                    tracing::error!(%error, "accept failed; retrying in 1 s");
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The HTTP/2 connection preface; a client that starts with a prefix of it
/// has not yet said which protocol it speaks.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the client has sent enough to choose its protocol (the
/// HTTP/2 preface, or anything else), for at most `timeout`. False when it
/// closed or sent too little in time. hyper's own deadlines start only
/// after this point: without it a client that connects and says nothing
/// would hold its connection forever.
async fn first_bytes(stream: &TcpStream, timeout: Duration) -> bool {
    let wait = async {
        let mut buf = [0_u8; H2_PREFACE.len()];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // A prefix of the preface: peek would return the same bytes
                // at once, so wait a little for the rest.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

/// A connection that holds its listener slot until it is dropped.
pub struct Admitted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Admitted {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        Self {
            stream,
            _slot: slot,
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// The connections of a gRPC listener under `limits`: capped in number, and
/// only those that sent their first bytes within the header deadline reach
/// tonic (whose HTTP/2 handshake has no deadline of its own). Ends when
/// `stop` fires.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: &ServerLimits,
    stop: CancellationToken,
) -> impl tokio_stream::Stream<Item = Result<Admitted, Infallible>> + use<> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let mut accept = Admission::new(listener, limits);
    let timeout = limits.header_timeout;
    tokio::spawn(async move {
        let waiting = TaskTracker::new();
        while let Some((stream, permit, peer)) = accept.next(&stop).await {
            let sender = sender.clone();
            waiting.spawn(async move {
                if first_bytes(&stream, timeout).await {
                    let _ = sender.send(Ok(Admitted::new(stream, permit)));
                } else {
                    tracing::debug!(%peer, "grpc connection sent nothing in time; closed");
                }
            });
        }
        // Connections still deciding are dropped with the listener.
        waiting.close();
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(
            ServerLimits::from_env(&Env::new(), "AGENTMESH_X_").unwrap(),
            ServerLimits::default()
        );
        let limits = ServerLimits::from_env(
            &env(&[
                ("AGENTMESH_X_HEADER_TIMEOUT_MS", "2000"),
                ("AGENTMESH_X_MAX_HEADER_BYTES", "8192"),
                ("AGENTMESH_X_MAX_CONNECTIONS", "3"),
            ]),
            "AGENTMESH_X_",
        )
        .unwrap();
        assert_eq!(limits.header_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_header_bytes, 8192);
        assert_eq!(limits.max_connections, 3);
    }

    #[test]
    fn unusable_values_name_the_variable() {
        for (var, value) in [
            ("AGENTMESH_X_MAX_HEADER_BYTES", "4096"),
            ("AGENTMESH_X_HEADER_TIMEOUT_MS", "0"),
            ("AGENTMESH_X_BODY_TIMEOUT_MS", "0"),
            ("AGENTMESH_X_MAX_CONNECTIONS", "0"),
            ("AGENTMESH_X_GRPC_CONCURRENCY_PER_CONNECTION", "0"),
            ("AGENTMESH_X_KEEPALIVE_TIMEOUT_MS", "soon"),
        ] {
            let err = ServerLimits::from_env(&env(&[(var, value)]), "AGENTMESH_X_").unwrap_err();
            assert!(err.to_string().starts_with(var), "{var}={value}: {err}");
        }
    }

    /// Serves a small app under `limits`: `/echo` returns its body,
    /// `/slow` answers after 600 ms.
    async fn serve(limits: ServerLimits) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = axum::Router::new()
            .route(
                "/echo",
                axum::routing::post(|body: Bytes| async move { body }),
            )
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                    "late"
                }),
            );
        tokio::spawn(serve_http(listener, app, limits, stop.clone()));
        (addr, stop)
    }

    /// Writes `request` and reads until the server closes; panics when it
    /// has not closed after 10 s.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let mut buf = [0_u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close the connection");
        String::from_utf8_lossy(&answer).into_owned()
    }

    fn short() -> ServerLimits {
        ServerLimits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            max_header_bytes: MIN_HEADER_BYTES,
            ..ServerLimits::default()
        }
    }

    #[tokio::test]
    async fn a_stalled_body_is_408_and_a_whole_one_is_served() {
        let (addr, _stop) = serve(short()).await;
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"field\":\"body\""), "{answer}");
        let answer = exchange(
            addr,
            b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("abc"), "{answer}");
    }

    #[tokio::test]
    async fn an_answer_may_take_longer_than_the_request_deadlines() {
        let (addr, _stop) = serve(short()).await;
        let answer = exchange(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("late"), "{answer}");
    }

    #[tokio::test]
    async fn oversized_heads_are_431_and_idle_connections_close() {
        let (addr, _stop) = serve(short()).await;
        let big = format!(
            "GET /slow HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(2 * MIN_HEADER_BYTES)
        );
        let answer = exchange(addr, big.as_bytes()).await;
        // hyper answers 431 unless the reset of the unread rest won.
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        let many: String = (0..150).map(|i| format!("X-{i}: m\r\n")).collect();
        let answer = exchange(
            addr,
            format!("GET /slow HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        // Nothing sent at all: closed after the header deadline, unanswered.
        assert_eq!(exchange(addr, b"").await, "");
    }

    #[tokio::test]
    async fn a_silent_connection_is_not_admitted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(!first_bytes(&server, Duration::from_millis(100)).await);
    }

    #[tokio::test]
    async fn first_bytes_tell_http1_from_a_partial_preface() {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(first_bytes(&server, Duration::from_secs(5)).await);

        // Half the HTTP/2 preface, then silence: not enough to choose.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        assert!(!first_bytes(&server, Duration::from_millis(200)).await);
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        assert!(first_bytes(&server, Duration::from_secs(5)).await);
    }
}
