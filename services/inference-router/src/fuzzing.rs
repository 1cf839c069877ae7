//! Entry points for the fuzz targets (`tests/fuzz`): the router's own
//! parsers of what model servers, clients and operators send, reachable
//! without a server, a backend or Redis. Not an API: nothing in the mesh
//! calls this module.

use bytes::Bytes;
use futures::StreamExt as _;
use mesh_proto::ChatChunk;

pub use crate::cache::{deterministic, key as cache_key, replay_events};
pub use crate::limits::{UsageTap, estimate_tokens, prompt_estimate};
pub use crate::routes::{CATCH_ALL, TableSpec};

/// What the gRPC face relays for an upstream SSE body that arrives in
/// `chunks`: the chunks, usage and the final error, as a worker receives
/// them (each error as its gRPC code and message).
pub fn relay_sse(chunks: Vec<Vec<u8>>) -> Vec<Result<ChatChunk, (tonic::Code, String)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let upstream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ChatChunk, tonic::Status>>(64);
        let received = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|item| item.map_err(|s| (s.code(), s.message().to_owned())))
            .collect::<Vec<_>>();
        let ((), received) = futures::join!(crate::grpc::pump(upstream, None, tx), received);
        received
    })
}

/// What the HTTP face passes on for an upstream SSE body that arrives in
/// `chunks` and then ends: the same bytes, plus an SSE error event when the
/// stream ended before `data: [DONE]`.
pub fn guard_sse(chunks: Vec<Vec<u8>>) -> Vec<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    runtime.block_on(async move {
        let upstream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, reqwest::Error>(Bytes::from(c))),
        );
        let mut out = Vec::new();
        let mut guarded = std::pin::pin!(crate::openai::guard_stream_end(upstream));
        while let Some(item) = guarded.next().await {
            match item {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) => panic!("guard_stream_end yields no errors: {e}"),
            }
        }
        out
    })
}

/// Parses and validates a route table as the router loads its file, with
/// the defaults of an empty environment.
pub fn parse_routes(text: &str) -> Result<TableSpec, crate::routes::RoutesError> {
    let env = mesh_runtime::env::Env::new();
    let config = crate::config::Config::from_env(&env).expect("the default config");
    crate::routes::parse(text, &config, &env)
}
