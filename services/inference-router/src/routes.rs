//! The route table: which pool of backends serves a model, with what
//! strategy and limits, and where a request goes when its pool fails.
//! Read from a YAML file (`AGENTMESH_ROUTER_ROUTES_FILE`, documented in
//! `routes.example.yaml`), or built from `AGENTMESH_ROUTER_BACKEND_URL`
//! alone as one pool `default` serving every model.
//!
//! Validation names the path of the bad field (`pools.gpu.backends[1].url:
//! ...`). A file never holds an API key itself, only the name of the
//! environment variable that does. This module does no I/O besides reading
//! the file, and holds no runtime state.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mesh_runtime::env::Env;
use serde::Deserialize;

use crate::config::Config;

/// A route-table file that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoutesError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> RoutesError {
    RoutesError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    RoundRobin,
    LeastOutstanding,
    EwmaTtft,
    QueueAware,
}

/// The model name that matches every model without a route of its own.
pub const CATCH_ALL: &str = "*";

#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub pools: BTreeMap<String, PoolSpec>,
    pub routes: BTreeMap<String, RouteSpec>,
    pub retry: RetrySpec,
    pub tenants: crate::limits::TenantsSpec,
    pub cache: Option<crate::cache::CacheSpec>,
    pub prices: BTreeMap<String, crate::usage::Price>,
    /// Built from a file (then `/v1/models` lists the routes) rather than
    /// from the one `BACKEND_URL`.
    pub from_file: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub strategy: Strategy,
    pub backends: Vec<BackendSpec>,
    pub limits: Limits,
    pub ejection: Ejection,
    /// Weight of a new TTFT sample in the `ewma_ttft` average.
    pub ewma_alpha: f64,
    /// How often `queue_aware` scrapes each backend's `/metrics`.
    pub scrape_interval: Duration,
    pub health: HealthSpec,
}

/// The readiness probe of a pool's backends: `GET path` every `interval`.
/// An answer below 500 is ready (404 too: a server without the path is up);
/// a 5xx, a refused connection or no answer is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
}

#[derive(Clone, PartialEq)]
pub struct BackendSpec {
    pub url: String,
    pub weight: u32,
    pub api_key: Option<String>,
}

impl std::fmt::Debug for BackendSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSpec")
            .field("url", &self.url)
            .field("weight", &self.weight)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Requests one backend runs at once; the pool admits the sum.
    pub max_concurrent: usize,
    pub queue_length: usize,
    pub queue_timeout: Duration,
    pub request_timeout: Duration,
    /// Deadline for the first byte: the response head, and for a stream its
    /// first chunk. Past it the request fails over.
    pub ttft_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failures that eject a backend; 0 never ejects.
    pub consecutive_failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// Pools and their split weights; one entry when there is no split.
    pub split: Vec<(String, u32)>,
    pub fallback: Vec<Fallback>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallback {
    Pool(String),
    /// Another model's route (its primary pool), with `model` rewritten.
    Model(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySpec {
    /// Tries per request, the first included, across all pools.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

// === the file format ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    /// Per-tenant limits (`limits.rs`).
    #[serde(default)]
    tenants: Option<crate::limits::RawTenants>,
    /// The response cache (`cache.rs`); absent turns it off.
    #[serde(default)]
    cache: Option<crate::cache::RawCache>,
    /// USD per million tokens per model (`usage.rs`).
    #[serde(default)]
    prices: BTreeMap<String, crate::usage::RawPrice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    #[serde(default = "default_attempts")]
    max_attempts: u32,
    #[serde(default = "default_backoff_base")]
    backoff_base_ms: u64,
    #[serde(default = "default_backoff_max")]
    backoff_max_ms: u64,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            backoff_base_ms: default_backoff_base(),
            backoff_max_ms: default_backoff_max(),
        }
    }
}

fn default_attempts() -> u32 {
    3
}
fn default_backoff_base() -> u64 {
    25
}
fn default_backoff_max() -> u64 {
    1_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    #[serde(default = "default_strategy")]
    strategy: Strategy,
    #[serde(default)]
    backends: Vec<RawBackend>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    ejection: RawEjection,
    #[serde(default = "default_alpha")]
    ewma_alpha: f64,
    #[serde(default = "default_scrape")]
    scrape_interval_ms: u64,
    #[serde(default)]
    health: RawHealth,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    path: Option<String>,
    interval_ms: Option<u64>,
}

fn default_strategy() -> Strategy {
    Strategy::LeastOutstanding
}
fn default_alpha() -> f64 {
    0.3
}
fn default_scrape() -> u64 {
    1_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    url: String,
    #[serde(default = "one")]
    weight: u32,
    api_key_env: Option<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_concurrent: Option<usize>,
    queue_length: Option<usize>,
    queue_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    ttft_deadline_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEjection {
    #[serde(default = "default_failures")]
    consecutive_failures: u32,
    #[serde(default = "default_cooldown")]
    cooldown_ms: u64,
}

impl Default for RawEjection {
    fn default() -> Self {
        Self {
            consecutive_failures: default_failures(),
            cooldown_ms: default_cooldown(),
        }
    }
}

fn default_failures() -> u32 {
    5
}
fn default_cooldown() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    pool: Option<String>,
    #[serde(default)]
    split: Vec<RawSplit>,
    #[serde(default)]
    fallback: Vec<RawFallback>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    pool: String,
    weight: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    pool: Option<String>,
    model: Option<String>,
}

// === loading ===

/// The table for a config without a routes file: pool `default` with the
/// one backend, every model routed to it, no retries and no ejection, so
/// it behaves exactly like the single-backend router.
pub fn single_backend(config: &Config) -> TableSpec {
    let pool = PoolSpec {
        strategy: Strategy::RoundRobin,
        backends: vec![BackendSpec {
            url: config.backend_url.clone(),
            weight: 1,
            api_key: config.backend_api_key.clone(),
        }],
        limits: Limits {
            max_concurrent: config.max_concurrency,
            queue_length: config.max_queue,
            queue_timeout: config.queue_timeout,
            request_timeout: config.request_timeout,
            ttft_deadline: config.first_byte_timeout,
        },
        ejection: Ejection {
            consecutive_failures: 0,
            cooldown: Duration::ZERO,
        },
        ewma_alpha: default_alpha(),
        scrape_interval: Duration::from_millis(default_scrape()),
        health: HealthSpec {
            path: config.health_path.clone(),
            interval: config.health_interval,
        },
    };
    TableSpec {
        pools: BTreeMap::from([("default".to_owned(), pool)]),
        routes: BTreeMap::from([(
            CATCH_ALL.to_owned(),
            RouteSpec {
                split: vec![("default".to_owned(), 1)],
                fallback: Vec::new(),
            },
        )]),
        retry: RetrySpec {
            max_attempts: 1,
            backoff_base: Duration::ZERO,
            backoff_max: Duration::ZERO,
        },
        tenants: crate::limits::TenantsSpec::default(),
        cache: None,
        prices: BTreeMap::new(),
        from_file: false,
    }
}

/// Reads and validates the routes file; pool limits left out default to
/// the config's `MAX_*` / `*_TIMEOUT_MS` values.
pub fn load_file(path: &Path, config: &Config, env: &Env) -> Result<TableSpec, RoutesError> {
    let text = std::fs::read_to_string(path).map_err(|e| RoutesError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text, config, env)
}

pub fn parse(text: &str, config: &Config, env: &Env) -> Result<TableSpec, RoutesError> {
    let raw: RawTable = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!("line {} column {}", l.line(), l.column()))
            .unwrap_or_else(|| "document".to_owned());
        invalid(at, e.to_string())
    })?;
    validate(raw, config, env)
}

fn validate(raw: RawTable, config: &Config, env: &Env) -> Result<TableSpec, RoutesError> {
    if raw.pools.is_empty() {
        return Err(invalid("pools", "at least one pool is required"));
    }
    if raw.routes.is_empty() {
        return Err(invalid(
            "routes",
            "at least one route is required (\"*\" matches every model)",
        ));
    }
    if raw.retry.max_attempts == 0 {
        return Err(invalid("retry.max_attempts", "must be at least 1"));
    }
    if raw.retry.backoff_base_ms > raw.retry.backoff_max_ms {
        return Err(invalid(
            "retry.backoff_base_ms",
            "must not exceed retry.backoff_max_ms",
        ));
    }
    let mut pools = BTreeMap::new();
    for (name, pool) in raw.pools {
        let spec = validate_pool(&name, pool, config, env)?;
        pools.insert(name, spec);
    }
    let mut routes = BTreeMap::new();
    let models: Vec<String> = raw.routes.keys().cloned().collect();
    for (model, route) in raw.routes {
        let at = format!("routes.{model}");
        let split = match (route.pool, route.split.is_empty()) {
            (Some(_), false) => {
                return Err(invalid(at, "give either pool or split, not both"));
            }
            (None, true) => return Err(invalid(at, "needs a pool or a split")),
            (Some(pool), true) => {
                known_pool(&pools, &pool, &format!("{at}.pool"))?;
                vec![(pool, 1)]
            }
            (None, false) => {
                for (i, s) in route.split.iter().enumerate() {
                    known_pool(&pools, &s.pool, &format!("{at}.split[{i}].pool"))?;
                }
                if route.split.iter().all(|s| s.weight == 0) {
                    return Err(invalid(
                        format!("{at}.split"),
                        "at least one weight must be above 0",
                    ));
                }
                route
                    .split
                    .into_iter()
                    .map(|s| (s.pool, s.weight))
                    .collect()
            }
        };
        let mut fallback = Vec::new();
        for (i, f) in route.fallback.into_iter().enumerate() {
            let fat = format!("{at}.fallback[{i}]");
            fallback.push(match (f.pool, f.model) {
                (Some(pool), None) => {
                    known_pool(&pools, &pool, &format!("{fat}.pool"))?;
                    Fallback::Pool(pool)
                }
                (None, Some(other)) => {
                    if other == model || other == CATCH_ALL || !models.contains(&other) {
                        return Err(invalid(
                            format!("{fat}.model"),
                            format!("{other:?} is not another model with a route"),
                        ));
                    }
                    Fallback::Model(other)
                }
                _ => return Err(invalid(fat, "give exactly one of pool or model")),
            });
        }
        routes.insert(model, RouteSpec { split, fallback });
    }
    Ok(TableSpec {
        pools,
        routes,
        retry: RetrySpec {
            max_attempts: raw.retry.max_attempts,
            backoff_base: Duration::from_millis(raw.retry.backoff_base_ms),
            backoff_max: Duration::from_millis(raw.retry.backoff_max_ms),
        },
        tenants: crate::limits::validate(raw.tenants)?,
        cache: crate::cache::validate(raw.cache)?,
        prices: crate::usage::validate(raw.prices)?,
        from_file: true,
    })
}

fn known_pool(pools: &BTreeMap<String, PoolSpec>, pool: &str, at: &str) -> Result<(), RoutesError> {
    if pools.contains_key(pool) {
        Ok(())
    } else {
        Err(invalid(at, format!("no pool named {pool:?}")))
    }
}

fn validate_pool(
    name: &str,
    pool: RawPool,
    config: &Config,
    env: &Env,
) -> Result<PoolSpec, RoutesError> {
    let at = format!("pools.{name}");
    if pool.backends.is_empty() {
        return Err(invalid(
            format!("{at}.backends"),
            "at least one backend is required",
        ));
    }
    let mut backends = Vec::new();
    for (i, b) in pool.backends.into_iter().enumerate() {
        let bat = format!("{at}.backends[{i}]");
        if !(b.url.starts_with("http://") || b.url.starts_with("https://")) {
            return Err(invalid(
                format!("{bat}.url"),
                format!("{:?} is not an http(s) URL", b.url),
            ));
        }
        let url = b.url.trim_end_matches('/').to_owned();
        if backends.iter().any(|x: &BackendSpec| x.url == url) {
            return Err(invalid(
                format!("{bat}.url"),
                format!("{url:?} is listed twice"),
            ));
        }
        if b.weight == 0 {
            return Err(invalid(format!("{bat}.weight"), "must be at least 1"));
        }
        let api_key = match b.api_key_env {
            None => None,
            Some(var) => Some(
                env.get(&var)
                    .cloned()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        invalid(
                            format!("{bat}.api_key_env"),
                            format!("environment variable {var} is not set"),
                        )
                    })?,
            ),
        };
        backends.push(BackendSpec {
            url,
            weight: b.weight,
            api_key,
        });
    }
    let ms = Duration::from_millis;
    let limits = Limits {
        max_concurrent: pool.limits.max_concurrent.unwrap_or(config.max_concurrency),
        queue_length: pool.limits.queue_length.unwrap_or(config.max_queue),
        queue_timeout: pool
            .limits
            .queue_timeout_ms
            .map_or(config.queue_timeout, ms),
        request_timeout: pool
            .limits
            .request_timeout_ms
            .map_or(config.request_timeout, ms),
        ttft_deadline: pool
            .limits
            .ttft_deadline_ms
            .map_or(config.first_byte_timeout, ms),
    };
    if limits.max_concurrent == 0 {
        return Err(invalid(
            format!("{at}.limits.max_concurrent"),
            "must be at least 1",
        ));
    }
    if limits.ttft_deadline.is_zero() || limits.request_timeout.is_zero() {
        return Err(invalid(
            format!("{at}.limits"),
            "ttft_deadline_ms and request_timeout_ms must be above 0",
        ));
    }
    if !(pool.ewma_alpha > 0.0 && pool.ewma_alpha <= 1.0) {
        return Err(invalid(format!("{at}.ewma_alpha"), "must be in (0, 1]"));
    }
    if pool.scrape_interval_ms == 0 {
        return Err(invalid(
            format!("{at}.scrape_interval_ms"),
            "must be above 0",
        ));
    }
    let health = HealthSpec {
        path: pool
            .health
            .path
            .unwrap_or_else(|| config.health_path.clone()),
        interval: pool.health.interval_ms.map_or(config.health_interval, ms),
    };
    if !health.path.starts_with('/') {
        return Err(invalid(format!("{at}.health.path"), "must start with /"));
    }
    if health.interval.is_zero() {
        return Err(invalid(
            format!("{at}.health.interval_ms"),
            "must be above 0",
        ));
    }
    Ok(PoolSpec {
        health,
        strategy: pool.strategy,
        backends,
        limits,
        ejection: Ejection {
            consecutive_failures: pool.ejection.consecutive_failures,
            cooldown: ms(pool.ejection.cooldown_ms),
        },
        ewma_alpha: pool.ewma_alpha,
        scrape_interval: ms(pool.scrape_interval_ms),
    })
}

impl TableSpec {
    /// The pools to try for `model`, in order, each with the model name to
    /// send when it differs from the request's. `roll` in `0..u64::MAX`
    /// picks among a weighted split. `None` when no route matches.
    pub fn plan(&self, model: &str, roll: u64) -> Option<Vec<(String, Option<String>)>> {
        let route = self
            .routes
            .get(model)
            .or_else(|| self.routes.get(CATCH_ALL))?;
        let mut steps = vec![(pick_split(&route.split, roll), None)];
        for f in &route.fallback {
            match f {
                Fallback::Pool(pool) => steps.push((pool.clone(), None)),
                Fallback::Model(other) => {
                    if let Some(r) = self.routes.get(other) {
                        steps.push((pick_split(&r.split, roll), Some(other.clone())));
                    }
                }
            }
        }
        Some(steps)
    }

    /// The models the table names (not the catch-all).
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.routes
            .keys()
            .map(String::as_str)
            .filter(|m| *m != CATCH_ALL)
    }
}

fn pick_split(split: &[(String, u32)], roll: u64) -> String {
    let weights: Vec<u32> = split.iter().map(|(_, w)| *w).collect();
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    let index = crate::select::weighted(&weights, roll % total.max(1)).unwrap_or(0);
    split[index].0.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::ephemeral(
            mesh_runtime::SharedConfig::from_env(&Env::new()).unwrap(),
            "http://127.0.0.1:1",
        )
        .unwrap()
    }

    fn err(text: &str) -> String {
        parse(text, &config(), &Env::new()).unwrap_err().to_string()
    }

    const GOOD: &str = r#"
retry: {max_attempts: 4, backoff_base_ms: 10, backoff_max_ms: 100}
pools:
  gpu:
    strategy: queue_aware
    backends:
      - url: http://a:8000/
      - {url: http://b:8000, weight: 3, api_key_env: B_KEY}
    limits: {max_concurrent: 8, ttft_deadline_ms: 500}
    ejection: {consecutive_failures: 2, cooldown_ms: 100}
  cpu:
    backends: [{url: http://c:8000}]
routes:
  llama:
    split: [{pool: gpu, weight: 80}, {pool: cpu, weight: 20}]
    fallback: [{pool: cpu}, {model: small}]
  small: {pool: cpu}
  "*": {pool: cpu}
"#;

    #[test]
    fn a_good_file_parses_with_defaults_filled_in() {
        let env = Env::from([("B_KEY".to_owned(), "secret".to_owned())]);
        let t = parse(GOOD, &config(), &env).unwrap();
        let gpu = &t.pools["gpu"];
        assert_eq!(gpu.strategy, Strategy::QueueAware);
        assert_eq!(gpu.backends[0].url, "http://a:8000");
        assert_eq!(gpu.backends[1].weight, 3);
        assert_eq!(gpu.backends[1].api_key.as_deref(), Some("secret"));
        assert!(!format!("{gpu:?}").contains("secret"), "keys never print");
        assert_eq!(gpu.limits.max_concurrent, 8);
        assert_eq!(gpu.limits.ttft_deadline, Duration::from_millis(500));
        assert_eq!(gpu.limits.queue_length, config().max_queue);
        assert_eq!(t.pools["cpu"].strategy, Strategy::LeastOutstanding);
        assert_eq!(t.retry.max_attempts, 4);
        let plan = t.plan("llama", 0).unwrap();
        assert_eq!(
            plan,
            vec![
                ("gpu".to_owned(), None),
                ("cpu".to_owned(), None),
                ("cpu".to_owned(), Some("small".to_owned()))
            ]
        );
        assert_eq!(t.plan("llama", 85).unwrap()[0].0, "cpu", "the 20% side");
        assert_eq!(t.plan("unknown", 0).unwrap()[0].0, "cpu", "catch-all");
        assert_eq!(t.models().collect::<Vec<_>>(), vec!["llama", "small"]);
    }

    #[test]
    fn errors_name_the_path() {
        let cases = [
            (
                "pools: {gpu: {backends: [{url: http://a}, {url: ftp://b}]}}\nroutes: {m: {pool: gpu}}",
                "pools.gpu.backends[1].url: \"ftp://b\" is not an http(s) URL",
            ),
            (
                "pools: {gpu: {backends: [{url: http://a}]}}\nroutes: {m: {pool: cpu}}",
                "routes.m.pool: no pool named \"cpu\"",
            ),
            (
                "pools: {gpu: {backends: [{url: http://a, api_key_env: NOPE}]}}\nroutes: {m: {pool: gpu}}",
                "pools.gpu.backends[0].api_key_env: environment variable NOPE is not set",
            ),
            (
                "pools: {gpu: {backends: []}}\nroutes: {m: {pool: gpu}}",
                "pools.gpu.backends: at least one backend is required",
            ),
            (
                "pools: {gpu: {backends: [{url: http://a}]}}\nroutes: {m: {pool: gpu, fallback: [{model: x}]}}",
                "routes.m.fallback[0].model: \"x\" is not another model with a route",
            ),
            (
                "pools: {gpu: {backends: [{url: http://a}]}}\nroutes: {m: {split: [{pool: gpu, weight: 0}]}}",
                "routes.m.split: at least one weight must be above 0",
            ),
            (
                "pools: {gpu: {strategy: random, backends: [{url: http://a}]}}\nroutes: {m: {pool: gpu}}",
                "unknown variant `random`",
            ),
            (
                "pools: {gpu: {backends: [{url: http://a, key: sk-123}]}}\nroutes: {m: {pool: gpu}}",
                "unknown field `key`",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text}\n got: {got}\nwant: {want}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_accepted_or_rejected_never_a_panic(text in "\\PC{0,200}") {
            let _ = parse(&text, &config(), &Env::new());
        }
    }

    #[test]
    fn the_example_file_is_valid() {
        let env = Env::from([("VLLM_API_KEY".to_owned(), "k".to_owned())]);
        let t = parse(include_str!("../routes.example.yaml"), &config(), &env).unwrap();
        assert_eq!(t.pools.len(), 3);
        assert_eq!(t.pools["gpu"].strategy, Strategy::QueueAware);
        assert_eq!(
            t.plan("llama-3.1-70b", 0).unwrap().last(),
            Some(&("small".to_owned(), Some("llama-3.1-8b".to_owned())))
        );
        assert_eq!(t.tenants.limit("acme").tokens_per_minute, Some(1_000_000));
        assert_eq!(t.tenants.limit("acme").requests_per_minute, Some(600));
        assert_eq!(t.cache.as_ref().unwrap().ttl, Duration::from_secs(300));
        assert_eq!(t.prices["llama-3.1-8b"].output_per_1m, 0.08);
    }

    #[test]
    fn bad_tenants_cache_and_prices_sections_name_their_field() {
        let base = "pools: {p: {backends: [{url: \"http://h:1\"}]}}\nroutes: {\"*\": {pool: p}}\n";
        for (section, path) in [
            (
                "tenants: {defaults: {tokens_per_minute: 0}}",
                "tenants.defaults.tokens_per_minute",
            ),
            ("tenants: {defaults: {per_hour: 5}}", "line"),
            ("cache: {ttl_seconds: 0}", "cache.ttl_seconds"),
            ("prices: {m: {input_per_1m: -2}}", "prices.m.input_per_1m"),
        ] {
            let err = parse(&format!("{base}{section}\n"), &config(), &Env::new())
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(path), "{section}: {err}");
        }
    }

    #[test]
    fn health_probes_default_from_the_config_and_bad_ones_name_their_field() {
        let base =
            "routes: {\"*\": {pool: p}}\npools:\n  p:\n    backends: [{url: \"http://h:1\"}]\n";
        let t = parse(base, &config(), &Env::new()).unwrap();
        assert_eq!(
            t.pools["p"].health,
            HealthSpec {
                path: "/health".to_owned(),
                interval: Duration::from_secs(1)
            }
        );
        let t = parse(
            &format!("{base}    health: {{path: /ready, interval_ms: 250}}\n"),
            &config(),
            &Env::new(),
        )
        .unwrap();
        assert_eq!(t.pools["p"].health.path, "/ready");
        assert_eq!(t.pools["p"].health.interval, Duration::from_millis(250));
        for (health, path) in [
            ("{path: ready}", "pools.p.health.path"),
            ("{interval_ms: 0}", "pools.p.health.interval_ms"),
        ] {
            let err = parse(
                &format!("{base}    health: {health}\n"),
                &config(),
                &Env::new(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(path), "{health}: {err}");
        }
    }

    #[test]
    fn the_single_backend_table_routes_everything_to_default() {
        let t = single_backend(&config());
        assert_eq!(
            t.plan("anything", 7).unwrap(),
            vec![("default".to_owned(), None)]
        );
        assert_eq!(t.retry.max_attempts, 1, "no retries: behaves as before");
        assert_eq!(t.pools["default"].ejection.consecutive_failures, 0);
    }
}
