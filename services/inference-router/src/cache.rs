//! The response cache in Redis for deterministic chat requests: those with
//! `temperature: 0` or an explicit `seed` (and no sampling of several
//! choices, `n` of 1). Keys are per tenant,
//! `agentmesh:<tenant>:router:cache:<hash>`, the hash over the routed model
//! and the request canonicalized (object keys sorted, the `user` field left
//! out as it does not change the answer). `stream` and `stream_options`
//! stay in the hash: a streamed answer is cached as its SSE bytes and
//! replayed event by event, so the replay has the original chunk shapes,
//! its usage chunk when asked for, and `[DONE]`.
//!
//! Only complete answers are stored: a 200 JSON body, or a stream that
//! ended with `[DONE]` and no error event. Redis failures make the request
//! a miss (fail open), counted in `router_cache{result="error"}`. The
//! cache never decides routing or limits.

use std::fmt::Write as _;
use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::routes::RoutesError;

/// Streams larger than this are not cached.
const MAX_ENTRY_BYTES: usize = 1 << 20;

/// The `cache:` section of the route table; absent turns the cache off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub ttl: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
}

fn default_ttl() -> u64 {
    300
}

pub fn validate(raw: Option<RawCache>) -> Result<Option<CacheSpec>, RoutesError> {
    raw.map(|raw| {
        if raw.ttl_seconds == 0 {
            return Err(RoutesError::Invalid {
                path: "cache.ttl_seconds".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(CacheSpec {
            ttl: Duration::from_secs(raw.ttl_seconds),
        })
    })
    .transpose()
}

/// Whether the same request always gets the same answer.
pub fn deterministic(body: &Value) -> bool {
    let greedy = body["temperature"].as_f64() == Some(0.0);
    let seeded = body["seed"].is_number();
    let one_choice = body["n"].as_u64().is_none_or(|n| n == 1);
    (greedy || seeded) && one_choice
}

/// The cache key of `body` routed to `model` for `tenant`.
pub fn key(tenant: &str, model: &str, body: &Value) -> String {
    let mut canonical = String::new();
    let _ = write!(canonical, "{model}\u{0}");
    let mut body = body.clone();
    if let Some(object) = body.as_object_mut() {
        object.remove("user");
    }
    canonicalize(&body, &mut canonical);
    format!("agentmesh:{tenant}:router:cache:{}", hash128(&canonical))
}

/// JSON with object keys sorted at every level, whatever order the client
/// sent them in.
fn canonicalize(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonicalize(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonicalize(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// 128 bits from two independent 64-bit hashes (FNV-1a and SipHash with
/// fixed keys): stable across processes, so every replica finds the same
/// entry; not a defence against crafted collisions, which would only
/// cross-serve one tenant's own answers.
fn hash128(text: &str) -> String {
    let fnv = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    #[allow(deprecated)] // SipHasher: the only std hasher with fixed keys
    let mut sip = std::hash::SipHasher::new();
    text.hash(&mut sip);
    format!("{fnv:016x}{:016x}", sip.finish())
}

#[derive(Clone)]
pub struct Cache {
    redis: Option<Arc<RedisLink>>,
    metrics: Metrics,
    /// Where stores run: the service's tracker, so shutdown waits for them.
    tasks: TaskTracker,
}

impl Cache {
    pub fn new(redis: Option<Arc<RedisLink>>, metrics: Metrics, tasks: TaskTracker) -> Self {
        Self {
            redis,
            metrics,
            tasks,
        }
    }

    /// Whether a lookup can happen at all.
    pub fn enabled(&self) -> bool {
        self.redis.is_some()
    }

    /// The stored answer under `key`; a Redis failure is a miss.
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let redis = self.redis.as_ref()?;
        let found: redis::RedisResult<Option<Vec<u8>>> = async {
            let mut conn = redis.conn().await?;
            redis::cmd("GET").arg(key).query_async(&mut conn).await
        }
        .await;
        match found {
            Ok(Some(bytes)) => {
                self.metrics.cache("hit");
                Some(bytes)
            }
            Ok(None) => {
                self.metrics.cache("miss");
                None
            }
            Err(error) => {
                self.metrics.cache("error");
                tracing::warn!(%error, "response cache lookup failed, serving uncached");
                None
            }
        }
    }

    /// Stores an answer, off the request's path but on the service's
    /// tracker.
    pub fn put(&self, key: String, bytes: Vec<u8>, ttl: Duration) {
        let Some(redis) = self.redis.clone() else {
            return;
        };
        // Called from `Drop` too: with no runtime left (shutdown), skip.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if bytes.len() > MAX_ENTRY_BYTES {
            return;
        }
        let metrics = self.metrics.clone();
        let store = async move {
            let stored: redis::RedisResult<()> = async {
                let mut conn = redis.conn().await?;
                redis::cmd("SET")
                    .arg(&key)
                    .arg(bytes)
                    .arg("EX")
                    .arg(ttl.as_secs().max(1))
                    .query_async(&mut conn)
                    .await
            }
            .await;
            match stored {
                Ok(()) => metrics.cache("store"),
                Err(error) => {
                    metrics.cache("error");
                    tracing::warn!(%error, "response cache store failed");
                }
            }
        };
        self.tasks.spawn_on(store, &runtime);
    }
}

/// Collects a stream's bytes; stores them when the stream ends complete.
pub struct Capture {
    cache: Cache,
    key: String,
    ttl: Duration,
    bytes: Vec<u8>,
}

impl Capture {
    pub fn new(cache: Cache, key: String, ttl: Duration) -> Self {
        Self {
            cache,
            key,
            ttl,
            bytes: Vec::new(),
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.bytes.len() <= MAX_ENTRY_BYTES {
            self.bytes.extend_from_slice(bytes);
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.bytes);
        let complete = text.trim_end().ends_with("data: [DONE]") && !text.contains("event: error");
        if complete {
            let bytes = std::mem::take(&mut self.bytes);
            self.cache
                .put(std::mem::take(&mut self.key), bytes, self.ttl);
        }
    }
}

/// The SSE events of a stored stream, one item each, as they were sent.
pub fn replay_events(bytes: &[u8]) -> Vec<bytes::Bytes> {
    let text = String::from_utf8_lossy(bytes);
    text.split_inclusive("\n\n")
        .map(|event| bytes::Bytes::from(event.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
    use super::*;
    use serde_json::json;

    #[test]
    fn only_greedy_or_seeded_single_choice_requests_are_cached() {
        assert!(deterministic(&json!({"temperature": 0})));
        assert!(deterministic(&json!({"temperature": 0.0, "n": 1})));
        assert!(deterministic(&json!({"seed": 7, "temperature": 0.8})));
        assert!(!deterministic(&json!({"temperature": 0.7})));
        assert!(!deterministic(&json!({})));
        assert!(!deterministic(&json!({"seed": 7, "n": 2})));
    }

    #[test]
    fn keys_ignore_key_order_and_user_but_not_tenant_model_or_stream() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "seed": 1});
        let b: Value = serde_json::from_str(
            r#"{"seed": 1, "user": "u", "messages": [{"content": "x", "role": "user"}], "model": "m"}"#,
        )
        .unwrap();
        assert_eq!(key("t", "m", &a), key("t", "m", &b));
        assert_ne!(key("t", "m", &a), key("u", "m", &a));
        assert_ne!(key("t", "m", &a), key("t", "other", &a));
        let mut streamed = a.clone();
        streamed["stream"] = json!(true);
        assert_ne!(key("t", "m", &a), key("t", "m", &streamed));
        assert!(key("t", "m", &a).starts_with("agentmesh:t:router:cache:"));
    }

    #[test]
    fn replay_splits_the_stored_stream_into_its_events() {
        let events = replay_events(b"data: {\"a\":1}\n\ndata: [DONE]\n\n");
        assert_eq!(events.len(), 2);
        assert_eq!(&events[1][..], b"data: [DONE]\n\n");
    }
}
