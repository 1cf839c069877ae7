//! Per-tenant limits on requests/min and tokens/min, held in Redis so every
//! router replica enforces the same budget.
//!
//! Algorithm: GCRA (the generic cell rate algorithm) with a cost. Each
//! tenant and kind (`requests`, `tokens`) has one key holding its
//! theoretical arrival time (TAT, in ms). A limit of `L` per minute emits
//! one unit every `60000 / L` ms and tolerates a burst of the whole minute's
//! budget. A request costing `c` units is admitted when
//! `max(TAT, now) + c * interval - now <= 60000`, and then moves the TAT
//! there. Both kinds are checked and committed by one Lua script, so a
//! request is either charged on both or on neither, atomically across
//! replicas. `Retry-After` is the time until the request would fit.
//!
//! Token budgets reserve an estimate up front (the request's `max_tokens`,
//! else the configured default, plus a prompt estimate of one token per
//! four bytes of the body) and are reconciled with the real usage when the
//! answer ends: the difference moves the TAT back (a refund) or forward.
//! A reservation above the whole minute's budget is capped at it, so a
//! large request waits for an empty bucket rather than being refused
//! forever.
//!
//! Limits are off when `REDIS_URL` is unset. When Redis fails, requests
//! pass (fail open) and `router_ratelimit_errors` counts it: the limiter
//! protects capacity, it must not become the outage. Nothing here decides
//! routing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::routes::RoutesError;

/// Limits of one tenant; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TenantLimit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

/// The `tenants:` section of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantsSpec {
    pub defaults: TenantLimit,
    pub overrides: BTreeMap<String, TenantLimit>,
    /// Completion tokens reserved when a request names no `max_tokens`.
    pub default_max_tokens: u64,
}

impl Default for TenantsSpec {
    fn default() -> Self {
        Self {
            defaults: TenantLimit::default(),
            overrides: BTreeMap::new(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }
}

const DEFAULT_MAX_TOKENS: u64 = 256;

impl TenantsSpec {
    /// The limits of `tenant`: its override's fields, else the defaults'.
    pub fn limit(&self, tenant: &str) -> TenantLimit {
        match self.overrides.get(tenant) {
            Some(o) => TenantLimit {
                requests_per_minute: o.requests_per_minute.or(self.defaults.requests_per_minute),
                tokens_per_minute: o.tokens_per_minute.or(self.defaults.tokens_per_minute),
            },
            None => self.defaults,
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTenants {
    #[serde(default)]
    defaults: RawLimit,
    #[serde(default)]
    overrides: BTreeMap<String, RawLimit>,
    default_max_tokens: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
}

fn limit_of(raw: &RawLimit, at: &str) -> Result<TenantLimit, RoutesError> {
    for (field, value) in [
        ("requests_per_minute", raw.requests_per_minute),
        ("tokens_per_minute", raw.tokens_per_minute),
    ] {
        if value == Some(0) {
            return Err(RoutesError::Invalid {
                path: format!("{at}.{field}"),
                reason: "must be at least 1 (leave it out for no limit)".to_owned(),
            });
        }
    }
    Ok(TenantLimit {
        requests_per_minute: raw.requests_per_minute,
        tokens_per_minute: raw.tokens_per_minute,
    })
}

pub fn validate(raw: Option<RawTenants>) -> Result<TenantsSpec, RoutesError> {
    let raw = raw.unwrap_or_default();
    let mut overrides = BTreeMap::new();
    for (tenant, limit) in &raw.overrides {
        let at = format!("tenants.overrides.{tenant}");
        if let Err(error) = mesh_bus::names::validate("tenant", tenant) {
            return Err(RoutesError::Invalid {
                path: at,
                reason: error.to_string(),
            });
        }
        overrides.insert(tenant.clone(), limit_of(limit, &at)?);
    }
    if raw.default_max_tokens == Some(0) {
        return Err(RoutesError::Invalid {
            path: "tenants.default_max_tokens".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(TenantsSpec {
        defaults: limit_of(&raw.defaults, "tenants.defaults")?,
        overrides,
        default_max_tokens: raw.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
    })
}

/// The token estimate reserved for a request body: completion budget plus
/// one prompt token per four bytes of the body (an over-estimate on
/// purpose: reconciliation refunds the difference).
pub fn estimate_tokens(body: &serde_json::Value, raw_len: usize, default_max: u64) -> u64 {
    let completion = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .unwrap_or(default_max);
    let n = body["n"].as_u64().unwrap_or(1).max(1);
    // Saturating: a client may ask for u64::MAX tokens, which must reserve
    // the most, not wrap around to almost nothing.
    completion
        .saturating_mul(n)
        .saturating_add(prompt_estimate(raw_len))
}

/// One prompt token per four bytes of the request body.
pub fn prompt_estimate(raw_len: usize) -> u64 {
    (raw_len as u64).div_ceil(4)
}

/// Counts the tokens a relayed answer used: `usage.total_tokens` when the
/// backend reports it (the whole body, or a stream's usage chunk), else the
/// prompt estimate plus one token per streamed content delta.
#[derive(Debug)]
pub struct UsageTap {
    line: Vec<u8>,
    /// `(prompt, completion)` as the backend reported them.
    reported: Option<(u64, u64)>,
    deltas: u64,
    prompt_estimate: u64,
}

impl UsageTap {
    pub fn new(prompt_estimate: u64) -> Self {
        Self {
            line: Vec::new(),
            reported: None,
            deltas: 0,
            prompt_estimate,
        }
    }

    /// Feeds SSE bytes as they pass.
    pub fn feed_sse(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                if let Some(data) = line.strip_prefix(b"data:") {
                    self.feed_event(data);
                }
            } else if self.line.len() < 1 << 20 {
                self.line.push(b);
            }
        }
    }

    /// One SSE event's data.
    pub fn feed_event(&mut self, data: &[u8]) {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
            return;
        };
        if let Some(usage) = usage_of(&value) {
            self.reported = Some(usage);
        }
        if let Some(choices) = value["choices"].as_array() {
            self.deltas += choices
                .iter()
                .filter(|c| {
                    c["delta"]["content"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty())
                        || c["delta"]["tool_calls"].is_array()
                })
                .count() as u64;
        }
    }

    /// A whole JSON answer.
    pub fn feed_json(&mut self, bytes: &[u8]) {
        if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            self.reported = usage_of(&value);
        }
    }

    pub fn used(&self) -> u64 {
        match self.reported {
            // A backend's report is not trusted to fit: saturate.
            Some((prompt, completion)) => prompt.saturating_add(completion),
            None => self.prompt_estimate.saturating_add(self.deltas),
        }
    }

    /// The usage to account: `(prompt, completion)` as reported, else no
    /// prompt count (an estimate is no usage) and the counted deltas.
    pub fn usage(&self) -> (Option<u64>, u64) {
        match self.reported {
            Some((prompt, completion)) => (Some(prompt), completion),
            None => (None, self.deltas),
        }
    }
}

fn usage_of(value: &serde_json::Value) -> Option<(u64, u64)> {
    let usage = value.get("usage")?.as_object()?;
    let prompt = usage.get("prompt_tokens")?.as_u64()?;
    let completion = usage
        .get("completion_tokens")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some((prompt, completion))
}

/// Checks and commits every `(key, cost, limit_per_minute)` or none; answers
/// `{0, 0}` when admitted, else `{ms until it would be, 1-based index of the
/// key that refused}`. A cost below
/// zero (reconciliation) always commits, moving the TAT back but never
/// before now.
const GCRA: &str = r"
local now = tonumber(ARGV[1])
local period = 60000
local check = ARGV[2] == '1'
local n = #KEYS
local tats = {}
local wait = 0
local worst = 0
for i = 1, n do
  local cost = tonumber(ARGV[1 + 2 * i])
  local interval = period / tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + cost * interval
  if new_tat < now then new_tat = now end
  if check and new_tat - now > period then
    local w = new_tat - now - period
    if w > wait then wait = w; worst = i end
  end
  tats[i] = new_tat
end
if wait > 0 then return {math.ceil(wait), worst} end
for i = 1, n do
  local ttl = math.ceil(tats[i] - now)
  if ttl > 0 then
    redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', ttl)
  else
    redis.call('DEL', KEYS[i])
  end
end
return {0, 0}
";

/// What a request was charged, to reconcile when it ends.
#[derive(Debug, Clone)]
pub struct Reservation {
    tenant: String,
    tokens_per_minute: u64,
    reserved: u64,
}

#[derive(Debug)]
pub enum Decision {
    /// Admitted; reconcile the reservation (if any) with the real usage.
    Allowed(Option<Reservation>),
    Limited {
        retry_after: Duration,
        kind: &'static str,
    },
}

#[derive(Clone)]
pub struct Limiter {
    inner: Option<Arc<RedisLink>>,
    metrics: Metrics,
    /// Where reconciliations run: the service's tracker, so shutdown waits
    /// for the refunds of the answers it drained.
    tasks: TaskTracker,
}

impl Limiter {
    /// A limiter over `redis`; `None` turns limits off.
    pub fn new(redis: Option<Arc<RedisLink>>, metrics: Metrics, tasks: TaskTracker) -> Self {
        Self {
            inner: redis,
            metrics,
            tasks,
        }
    }

    /// Charges one request and `estimate` tokens to `tenant`.
    pub async fn admit(&self, spec: &TenantsSpec, tenant: &str, estimate: u64) -> Decision {
        let Some(inner) = &self.inner else {
            return Decision::Allowed(None);
        };
        let limit = spec.limit(tenant);
        let mut keys = Vec::new();
        let mut args = Vec::new();
        if let Some(rpm) = limit.requests_per_minute {
            keys.push(key(tenant, "requests"));
            args.push((1i64, rpm));
        }
        let reservation = limit.tokens_per_minute.map(|tpm| {
            let reserved = estimate.min(tpm);
            keys.push(key(tenant, "tokens"));
            args.push((i64::try_from(reserved).unwrap_or(i64::MAX), tpm));
            Reservation {
                tenant: tenant.to_owned(),
                tokens_per_minute: tpm,
                reserved,
            }
        });
        if keys.is_empty() {
            return Decision::Allowed(None);
        }
        match inner.run(&keys, true, &args).await {
            Ok((0, _)) => Decision::Allowed(reservation),
            Ok((wait_ms, index)) => {
                let refused = usize::try_from(index - 1)
                    .ok()
                    .and_then(|i| keys.get(i))
                    .map(String::as_str)
                    .unwrap_or_default();
                let kind = if refused.ends_with(":requests") {
                    "requests"
                } else {
                    "tokens"
                };
                self.metrics.ratelimited(kind);
                Decision::Limited {
                    retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0)),
                    kind,
                }
            }
            Err(error) => {
                self.metrics.ratelimit_error();
                tracing::warn!(%error, %tenant, "tenant limit check failed, letting the request through");
                Decision::Allowed(None)
            }
        }
    }

    /// Settles a reservation with the tokens really used.
    pub async fn reconcile(&self, reservation: Reservation, used: u64) {
        let Some(inner) = &self.inner else { return };
        let delta = i64::try_from(used.min(reservation.tokens_per_minute)).unwrap_or(i64::MAX)
            - i64::try_from(reservation.reserved).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        let keys = [key(&reservation.tenant, "tokens")];
        if let Err(error) = inner
            .run(&keys, false, &[(delta, reservation.tokens_per_minute)])
            .await
        {
            self.metrics.ratelimit_error();
            tracing::warn!(%error, tenant = %reservation.tenant, "token reconciliation failed");
        }
    }
}

/// Settles a reservation once the answer's usage is known, off the
/// request's path but on the service's tracker; a failure is logged and
/// counted by the limiter.
pub fn settle(limiter: &Limiter, reservation: Option<Reservation>, used: u64) {
    // Called from `Drop`: with no runtime left, the reservation simply
    // expires with its key.
    if let (Some(reservation), Ok(runtime)) = (reservation, tokio::runtime::Handle::try_current()) {
        let task = limiter.clone();
        limiter.tasks.spawn_on(
            async move { task.reconcile(reservation, used).await },
            &runtime,
        );
    }
}

fn key(tenant: &str, kind: &str) -> String {
    format!("agentmesh:{tenant}:router:limit:{kind}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

/// The GCRA script over the shared link.
impl RedisLink {
    async fn run(
        &self,
        keys: &[String],
        check: bool,
        args: &[(i64, u64)],
    ) -> redis::RedisResult<(i64, i64)> {
        let mut conn = self.conn().await?;
        // EVAL rather than EVALSHA: the script is small, and this needs no
        // SCRIPT LOAD bookkeeping across Redis restarts.
        let mut eval = redis::cmd("EVAL");
        eval.arg(GCRA).arg(keys.len());
        for k in keys {
            eval.arg(k);
        }
        eval.arg(now_ms()).arg(if check { "1" } else { "0" });
        for (cost, limit) in args {
            eval.arg(*cost).arg(*limit);
        }
        eval.query_async(&mut conn).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report
    use super::*;

    #[test]
    fn overrides_fall_back_to_defaults_field_by_field() {
        let raw: RawTenants = serde_yaml::from_str(
            "defaults: {requests_per_minute: 10, tokens_per_minute: 1000}\n\
             overrides: {acme: {tokens_per_minute: 5}}\n",
        )
        .unwrap();
        let spec = validate(Some(raw)).unwrap();
        assert_eq!(
            spec.limit("acme"),
            TenantLimit {
                requests_per_minute: Some(10),
                tokens_per_minute: Some(5)
            }
        );
        assert_eq!(spec.limit("other"), spec.defaults);
        assert_eq!(spec.default_max_tokens, DEFAULT_MAX_TOKENS);
    }

    #[test]
    fn zero_limits_and_bad_names_are_rejected_with_their_path() {
        let raw: RawTenants =
            serde_yaml::from_str("overrides: {acme: {requests_per_minute: 0}}").unwrap();
        let err = validate(Some(raw)).unwrap_err().to_string();
        assert!(
            err.starts_with("tenants.overrides.acme.requests_per_minute"),
            "{err}"
        );
        let raw: RawTenants = serde_yaml::from_str("overrides: {\"a.b\": {}}").unwrap();
        assert!(validate(Some(raw)).is_err());
    }

    #[test]
    fn the_tap_prefers_reported_usage_and_counts_deltas_without_it() {
        let mut tap = UsageTap::new(5);
        tap.feed_sse(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choi");
        tap.feed_sse(b"ces\":[{\"delta\":{\"content\":\"b\"}}]}\n\n");
        assert_eq!(tap.used(), 7);
        tap.feed_sse(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n");
        assert_eq!(tap.used(), 5);
        let mut whole = UsageTap::new(9);
        whole.feed_json(br#"{"usage":{"prompt_tokens":4}}"#);
        assert_eq!(whole.used(), 4);
    }

    /// A client's `max_tokens` near u64::MAX overflowed the estimate (the
    /// router_request fuzz target: a panic in debug builds, a wrap to a tiny
    /// reservation in release), and so did a backend's reported usage.
    #[test]
    fn huge_token_counts_saturate() {
        let body = serde_json::json!({"max_completion_tokens": u64::MAX, "n": 3});
        assert_eq!(estimate_tokens(&body, 100, 1024), u64::MAX);
        let mut tap = UsageTap::new(10);
        tap.feed_sse(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":9}}\n\n");
        assert_eq!(tap.used(), u64::MAX);
    }

    #[test]
    fn the_estimate_covers_completion_and_prompt() {
        let body = serde_json::json!({"max_tokens": 10, "n": 2});
        assert_eq!(estimate_tokens(&body, 40, 99), 20 + 10);
        assert_eq!(estimate_tokens(&serde_json::json!({}), 3, 99), 99 + 1);
    }
}
